/*
 * llm_stream.c - the reply accumulator and the stream entries the wires share (wire.h): the
 * SSE feed with its "dead after an error" rule, text deltas, tool calls assembled by index
 * under LLM_STREAM_MAX_TOOL_CALLS, the completeness check, and the move into a struct
 * llm_response. What an event means (which field is text, which index a fragment belongs to,
 * which marker ends the stream) stays in each wire's file.
 */
#include "llm/wire.h"

#include <stdlib.h>
#include <string.h>

void llm_acc_init(struct llm_acc *a)
{
    memset(a, 0, sizeof *a);
    llm_sse_init(&a->sse, LLM_SSE_MAX_LINE);
}

void llm_acc_cleanup(struct llm_acc *a)
{
    llm_sse_cleanup(&a->sse);
    llm_buf_free(&a->text);
    for (size_t i = 0; i < a->n_tools; i++) {
        llm_buf_free(&a->tools[i].id);
        llm_buf_free(&a->tools[i].name);
        llm_buf_free(&a->tools[i].args);
        free(a->tools[i].init_args);
    }
    free(a->tools);
    free(a->finish_reason);
    free(a->model);
    memset(a, 0, sizeof *a);
}

/* A wire's stream begins with its accumulator (wire.h), so the two share an address. */
static struct llm_acc *acc_of(struct llm_stream *s)
{
    return (struct llm_acc *)(void *)s;
}

int llm_stream_new(size_t size, llm_sse_event_cb on_event, const char *end_name,
                   struct llm_stream **out)
{
    struct llm_acc *a = calloc(1, size);
    if (a == NULL)
        return ERR_NOMEM;
    llm_acc_init(a);
    a->on_event = on_event;
    a->end_name = end_name;
    *out = (struct llm_stream *)(void *)a;
    return 0;
}

void llm_stream_free(struct llm_stream *s)
{
    if (s == NULL)
        return;
    llm_acc_cleanup(acc_of(s));
    free(s);
}

int llm_stream_feed(struct llm_stream *s, const char *data, size_t len, llm_delta_cb on_delta,
                    void *arg, struct err *e)
{
    struct llm_acc *a = acc_of(s);
    if (a->dead)
        return err_set(e, ERR_INVALID, "stream already failed");
    /* The callback is the caller's for this call only: never kept past it. */
    a->on_delta = on_delta;
    a->arg = arg;
    int rc = llm_sse_feed(&a->sse, data, len, a->on_event, s, e);
    a->on_delta = NULL;
    a->arg = NULL;
    if (rc != 0)
        a->dead = true;
    return rc;
}

int llm_stream_flush(struct llm_stream *s, llm_delta_cb on_delta, void *arg, struct err *e)
{
    struct llm_acc *a = acc_of(s);
    /* A last event without its blank line still counts. */
    int rc = llm_stream_feed(s, "\n\n", 2, on_delta, arg, e);
    if (rc != 0)
        return rc;
    /* The finish reason comes just before the end marker, which may be lost with the last
     * bytes (and Gemini sends none): either one makes the reply complete. */
    if (!a->done && a->finish_reason == NULL)
        return err_set(e, ERR_IO, "stream ended before %s", a->end_name);
    return 0;
}

int llm_stream_end(struct llm_stream *s, llm_delta_cb on_delta, void *arg,
                   struct llm_response **out, struct err *e)
{
    *out = NULL;
    int rc = llm_stream_flush(s, on_delta, arg, e);
    if (rc != 0)
        return rc;
    return llm_acc_response(acc_of(s), out, e);
}

int llm_acc_text(struct llm_acc *a, const json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) == 0)
        return 0;
    if (llm_buf_append(&a->text, json_string_value(v), json_string_length(v)) != 0)
        return ERR_NOMEM;
    if (a->on_delta != NULL)
        a->on_delta(a->arg, json_string_value(v), json_string_length(v));
    return 0;
}

struct llm_acc_tool *llm_acc_find_tool(struct llm_acc *a, long index)
{
    for (size_t i = 0; i < a->n_tools; i++) {
        if (a->tools[i].index == index)
            return &a->tools[i];
    }
    return NULL;
}

int llm_acc_add_tool(struct llm_acc *a, long index, const char *where, struct llm_acc_tool **out,
                     struct err *e)
{
    if (a->n_tools >= LLM_STREAM_MAX_TOOL_CALLS)
        return err_set(e, ERR_INVALID, "%s has more than %d tool calls", where,
                       LLM_STREAM_MAX_TOOL_CALLS);
    /* One at a time: a reply holds a handful of calls, and the cap bounds the copies. */
    struct llm_acc_tool *p = realloc(a->tools, (a->n_tools + 1) * sizeof *p);
    if (p == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    a->tools = p;
    struct llm_acc_tool *t = &a->tools[a->n_tools++];
    memset(t, 0, sizeof *t);
    t->index = index;
    *out = t;
    return 0;
}

int llm_acc_response(struct llm_acc *a, struct llm_response **out, struct err *e)
{
    int rc = 0;
    bool nomem = false;
    struct llm_response *r = calloc(1, sizeof *r);
    NOMEM_IF(r == NULL);
    r->text = llm_buf_steal(&a->text);
    NOMEM_IF(r->text == NULL);
    r->finish_reason = a->finish_reason;
    a->finish_reason = NULL;
    r->model = a->model;
    a->model = NULL;
    r->usage = a->usage;
    if (a->n_tools > 0) {
        /* Indexes arrive in order in practice; sort anyway (few entries: insertion sort). */
        for (size_t i = 1; i < a->n_tools; i++) {
            struct llm_acc_tool t = a->tools[i];
            size_t j = i;
            for (; j > 0 && a->tools[j - 1].index > t.index; j--)
                a->tools[j] = a->tools[j - 1];
            a->tools[j] = t;
        }
        r->tool_calls = calloc(a->n_tools, sizeof *r->tool_calls);
        NOMEM_IF(r->tool_calls == NULL);
        for (size_t i = 0; i < a->n_tools; i++) {
            struct llm_acc_tool *t = &a->tools[i];
            struct llm_tool_call *tc = &r->tool_calls[r->n_tool_calls++];
            tc->id = llm_buf_steal(&t->id);
            tc->name = llm_buf_steal(&t->name);
            if (t->args.len > 0) {
                tc->arguments = llm_buf_steal(&t->args);
            } else if (t->init_args != NULL) {
                tc->arguments = t->init_args;
                t->init_args = NULL;
            } else {
                tc->arguments = llm_strdup("{}", &nomem);
            }
            NOMEM_IF(nomem || tc->id == NULL || tc->name == NULL || tc->arguments == NULL);
        }
    }
    *out = r;
    r = NULL;
out:
    llm_response_free(r);
    return rc;
}
