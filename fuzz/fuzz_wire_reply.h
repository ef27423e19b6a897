/*
 * fuzz_wire_reply.h - the body of the fuzz_llm_*_reply targets, one per LLM wire: the
 * whole-reply parser, the error-body reader, and the streamed-reply parser fed in two pieces
 * split at a point taken from the input (so events straddle feeds). Any outcome but a crash,
 * a leak or a sanitizer report is fine; a success must be a complete response (text never
 * NULL, every tool call named). A target includes this and calls fuzz_wire_reply with its
 * wire.
 */
#ifndef CREWD_FUZZ_WIRE_REPLY_H
#define CREWD_FUZZ_WIRE_REPLY_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm/wire.h"

static void check(const struct llm_response *r)
{
    if (r->text == NULL)
        abort();
    for (size_t i = 0; i < r->n_tool_calls; i++) {
        if (r->tool_calls[i].id == NULL || r->tool_calls[i].name == NULL ||
            r->tool_calls[i].arguments == NULL)
            abort();
    }
}

static void count_delta(void *arg, const char *text, size_t len)
{
    *(size_t *)arg += len;
    if (len > 0 && text == NULL)
        abort();
}

static int fuzz_wire_reply(const struct llm_wire *w, const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct llm_response *r = NULL;
    struct err e = {0};

    if (w->parse_reply(buf, size, &r, &e) == 0)
        check(r);
    llm_response_free(r);
    r = NULL;

    char msg[LLM_WIRE_ERRMSG_MAX + 1];
    size_t n = w->error_message(buf, size, msg, sizeof msg);
    if (n > LLM_WIRE_ERRMSG_MAX || strlen(msg) != n)
        abort();

    struct llm_stream *s = NULL;
    if (w->stream_new(&s) != 0)
        return 0;
    size_t split = size > 0 ? data[0] % (size + 1) : 0;
    size_t delta_bytes = 0;
    int rc = w->stream_feed(s, buf, split, count_delta, &delta_bytes, &e);
    if (rc == 0)
        rc = w->stream_feed(s, buf + split, size - split, count_delta, &delta_bytes, &e);
    if (rc == 0 && w->stream_end(s, count_delta, &delta_bytes, &r, &e) == 0) {
        check(r);
        /* Every delta went into the text (and nothing else did). */
        if (strlen(r->text) != delta_bytes)
            abort();
    }
    llm_response_free(r);
    w->stream_free(s);
    return 0;
}

#endif
