/*
 * chat.c - the LLM calls of every wire (OpenAI chat completions, Anthropic messages, Gemini
 * generateContent): decides the answer when the request arrives (status, text or tool calls,
 * latency), then sends it at once or when its timer fires, in the wire's format. Validation
 * and documents are the pure functions of reply.c, anthropic.c and gemini.c.
 *
 * Deciding at arrival keeps everything random in arrival order, so a run is reproducible from
 * --seed. A reply waiting on its timer is a `struct fake_pending`; it watches its socket for
 * the client hanging up, which is how tests see that crewd aborted a call.
 *
 * libevent 2.1 lifetime rules this file relies on (http.c):
 *  - after reading a request the connection stops reading (EV_READ disabled) until the reply
 *    is written, so libevent itself never notices a client that goes away while we wait; the
 *    pending reply watches the descriptor with its own event and MSG_PEEK instead;
 *  - evhttp_connection_free() calls the close callback, then frees every request still queued
 *    on the connection: once we free the connection, the request is gone;
 *  - when libevent fails a connection on its own (EOF or timeout seen while writing, or the
 *    whole evhttp being freed), a request not yet answered is detached from it (its
 *    connection becomes NULL) and left to us: the close callback frees it in that case only.
 */
#include "fakellm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "core/json_text.h"

/* A decided answer, ready to be written. */
struct prepared {
    enum fake_wire wire;
    int status;
    bool stream;
    json_t *doc;            /* the JSON body, or the array of chunks when streaming */
    int64_t retry_after_s;  /* -1: no Retry-After */
    int64_t retry_after_ms; /* -1: no retry-after-ms */
};

struct fake_pending {
    struct fake_app *app;
    struct fake_pending *prev, *next;
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *timer;
    struct event *watch; /* readable: the client closed, or sent more (pipelining) */
    uint64_t seq;
    struct prepared prep;
};

static void prepared_cleanup(struct prepared *p)
{
    json_decref(p->doc);
    p->doc = NULL;
}

void fake_set_request_id(struct evhttp_request *req, uint64_t seq)
{
    char id[32];
    snprintf(id, sizeof id, "req_fake_%llu", (unsigned long long)seq);
    evhttp_add_header(evhttp_request_get_output_headers(req), "x-request-id", id);
}

static void send_prepared(struct fake_app *app, struct evhttp_request *req, uint64_t seq,
                          struct prepared *p)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    char num[32];
    if (p->retry_after_ms >= 0) {
        snprintf(num, sizeof num, "%lld", (long long)p->retry_after_ms);
        evhttp_add_header(out, "retry-after-ms", num);
    }
    if (p->retry_after_s >= 0) {
        snprintf(num, sizeof num, "%lld", (long long)p->retry_after_s);
        evhttp_add_header(out, "Retry-After", num);
    }
    if (evhttp_find_header(out, "x-request-id") == NULL)
        fake_set_request_id(req, seq);
    fake_note_status(app, seq, p->status);
    if (!p->stream) {
        json_t *doc = p->doc;
        p->doc = NULL;
        fake_send_json(req, p->status, doc);
        return;
    }
    evhttp_add_header(out, "Content-Type", "text/event-stream; charset=utf-8");
    evhttp_add_header(out, "Cache-Control", "no-cache");
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL) {
        fake_send_json(req, 500, fake_wire_error_json(p->wire, 500, "out of memory", seq));
        return;
    }
    evhttp_send_reply_start(req, 200, "OK");
    /* The framing of each wire: OpenAI "data: X\n\n" then "data: [DONE]"; Anthropic
     * "event: TYPE\ndata: X\n\n"; Gemini (alt=sse) "data: X\r\n\r\n", no terminator. */
    const char *end = p->wire == FAKE_WIRE_GEMINI ? "\r\n\r\n" : "\n\n";
    size_t i;
    json_t *c;
    json_array_foreach(p->doc, i, c)
    {
        char *text = json_dumps(c, JSON_TEXT_FLAGS);
        if (text == NULL)
            break;
        if (p->wire == FAKE_WIRE_ANTHROPIC) {
            const char *type = json_string_value(json_object_get(c, "type"));
            evbuffer_add_printf(buf, "event: %s\n", type ? type : "message");
        }
        evbuffer_add(buf, "data: ", 6);
        evbuffer_add(buf, text, strlen(text));
        evbuffer_add(buf, end, strlen(end));
        free(text);
        evhttp_send_reply_chunk(req, buf);
    }
    if (p->wire == FAKE_WIRE_OPENAI) {
        evbuffer_add(buf, "data: [DONE]\n\n", 14);
        evhttp_send_reply_chunk(req, buf);
    }
    evhttp_send_reply_end(req);
    evbuffer_free(buf);
}

static void pending_unlink(struct fake_pending *p)
{
    struct fake_app *app = p->app;
    if (p->prev)
        p->prev->next = p->next;
    else
        app->pending = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    if (app->stats.in_flight > 0)
        app->stats.in_flight--;
}

static void pending_free(struct fake_pending *p)
{
    if (p->timer)
        event_free(p->timer);
    if (p->watch)
        event_free(p->watch);
    prepared_cleanup(&p->prep);
    free(p);
}

static void mark_closed(struct fake_app *app, uint64_t seq)
{
    app->stats.client_closed++;
    struct fake_log_entry *e = fake_log_find(&app->log, seq);
    if (e != NULL)
        e->client_closed = true;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct fake_pending *p = arg;
    pending_unlink(p);
    evhttp_connection_set_closecb(p->evcon, NULL, NULL);
    send_prepared(p->app, p->req, p->seq, &p->prep);
    pending_free(p);
}

/* The client hung up while its reply waited: forget the reply and drop the connection, which
 * frees the request with it (see the top of the file). */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct fake_pending *p = arg;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        event_add(p->watch, NULL);
        return;
    }
    if (n > 0)
        return; /* a pipelined request: libevent reads it after our reply; stop watching */
    struct evhttp_connection *evcon = p->evcon;
    pending_unlink(p);
    mark_closed(p->app, p->seq);
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    pending_free(p);
    evhttp_connection_free(evcon);
}

/* libevent is freeing the connection on its own (see the top of the file). */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct fake_pending *p = arg;
    pending_unlink(p);
    if (!p->app->stopping)
        mark_closed(p->app, p->seq);
    if (evhttp_request_get_connection(p->req) == NULL)
        evhttp_request_free(p->req);
    pending_free(p);
}

void fake_chat_cancel_all(struct fake_app *app)
{
    while (app->pending != NULL) {
        struct fake_pending *p = app->pending;
        struct evhttp_connection *evcon = p->evcon;
        pending_unlink(p);
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        pending_free(p);
        evhttp_connection_free(evcon);
    }
}

/* "A|B|C": the k-th item (0-based), the last one once past the end. */
static char *seq_item(const char *v, size_t len, uint64_t k)
{
    const char *start = v, *end = v + len;
    for (uint64_t i = 0; i < k; i++) {
        const char *bar = memchr(start, '|', (size_t)(end - start));
        if (bar == NULL)
            break;
        start = bar + 1;
    }
    const char *bar = memchr(start, '|', (size_t)(end - start));
    size_t n = bar ? (size_t)(bar - start) : (size_t)(end - start);
    char *t = malloc(n + 1);
    if (t != NULL) {
        memcpy(t, start, n);
        t[n] = '\0';
    }
    return t;
}

static int decide_status(struct fake_app *app, const struct fake_chat_input *in)
{
    const struct fake_directives *d = &in->d;
    if (d->fail_times >= 0) {
        char key[64 + 1];
        snprintf(key, sizeof key, "%016llx|", (unsigned long long)in->hash);
        size_t klen = strlen(key) + strlen(d->fail_times_text) + 1;
        char *k = malloc(klen);
        if (k == NULL)
            return 500;
        snprintf(k, klen, "%s%s", key, d->fail_times_text);
        uint64_t seen = fake_counters_bump(&app->fail_counters, k);
        free(k);
        if (seen < (uint64_t)d->fail_times)
            return d->status ? d->status : 500;
        return 0;
    }
    if (d->status)
        return d->status;
    if (app->cfg.fail_rate > 0 && app->cfg.n_fail_status > 0 &&
        fake_rand_unit(app) < app->cfg.fail_rate)
        return app->cfg.fail_status[fake_rand(app) % app->cfg.n_fail_status];
    return 0;
}

/* The reply document of the request's wire (a new reference, NULL when out of memory). */
static json_t *reply_doc(const struct fake_chat_input *in, const struct fake_reply *r)
{
    switch (in->wire) {
    case FAKE_WIRE_ANTHROPIC:
        return in->stream ? fake_anthropic_events(r) : fake_anthropic_reply_json(r);
    case FAKE_WIRE_GEMINI:
        /* :streamGenerateContent without alt=sse answers one JSON array of the chunks. */
        return in->stream ? fake_gemini_chunks(r) : fake_gemini_reply_json(r);
    case FAKE_WIRE_OPENAI:
    default:
        return in->stream ? fake_reply_chunks(r, in->include_usage) : fake_reply_json(r);
    }
}

/* Fills `p` for a valid request. Returns 0, or -1 when out of memory. */
static int decide(struct fake_app *app, const struct fake_chat_input *in, uint64_t seq,
                  struct prepared *p)
{
    p->wire = in->wire;
    p->retry_after_s = -1;
    p->retry_after_ms = -1;
    p->stream = false;
    p->status = decide_status(app, in);
    uint64_t n = ++app->n_completions;
    if (p->status != 0) {
        char msg[64];
        snprintf(msg, sizeof msg, "fake error %d", p->status);
        p->doc = fake_wire_error_json(in->wire, p->status, msg, seq);
        if (in->d.retry_after_ms >= 0) {
            p->retry_after_ms = in->d.retry_after_ms;
            p->retry_after_s = (in->d.retry_after_ms + 999) / 1000;
        } else if (p->status == 429) {
            p->retry_after_s = app->cfg.retry_after_s;
        }
        return p->doc ? 0 : -1;
    }
    p->status = 200;
    p->stream = in->stream && (in->wire != FAKE_WIRE_GEMINI || in->sse);
    struct fake_reply r = {
        .n = n,
        .created_s = (int64_t)time(NULL),
        .model = in->model,
        .prompt_tokens = fake_tokens(in->content_bytes),
    };
    char *text = NULL;
    if (in->d.n_tools > 0 && !in->has_tool_message && !in->tools_forbidden) {
        r.tools = in->d.tools;
        r.n_tools = in->d.n_tools;
        size_t len = 0;
        for (size_t i = 0; i < r.n_tools; i++)
            len += strlen(r.tools[i].name) + strlen(r.tools[i].args);
        r.completion_tokens = fake_tokens(len);
    } else {
        if (in->d.reply != NULL) {
            size_t len = strlen(in->d.reply) + 1;
            text = malloc(len);
            if (text)
                memcpy(text, in->d.reply, len);
        } else if (in->d.reply_seq != NULL) {
            uint64_t k = fake_counters_bump(&app->seq_counters, in->d.reply_seq);
            text =
                seq_item(in->d.reply_seq_value, in->d.reply_seq_value_len, k == UINT64_MAX ? 0 : k);
        } else if (in->d.n_tools > 0 && in->tool_results != NULL) {
            size_t len = strlen(in->tool_results) + sizeof "tool results: ";
            text = malloc(len);
            if (text)
                snprintf(text, len, "tool results: %s", in->tool_results);
        } else {
            text = fake_default_text(in);
        }
        if (text == NULL)
            return -1;
        r.text = text;
        r.completion_tokens = fake_tokens(strlen(text));
    }
    p->doc = reply_doc(in, &r);
    free(text);
    return p->doc ? 0 : -1;
}

static int parse_input(json_t *body, const struct fake_route *route, struct fake_chat_input *in,
                       char *err, size_t err_len)
{
    switch (route->wire) {
    case FAKE_WIRE_ANTHROPIC:
        return fake_anthropic_input_parse(body, in, err, err_len);
    case FAKE_WIRE_GEMINI:
        return fake_gemini_input_parse(body, route, in, err, err_len);
    case FAKE_WIRE_OPENAI:
    default:
        return fake_chat_input_parse(body, in, err, err_len);
    }
}

void fake_chat_handle(struct fake_app *app, struct evhttp_request *req, uint64_t seq,
                      json_t *parsed, const struct fake_route *route)
{
    struct fake_chat_input in;
    char err[256];
    struct prepared prep = {0};
    struct fake_pending *p = NULL;
    enum fake_wire wire = route->wire;
    /* The newer wires name the request in every answer (Anthropic's error bodies carry the
     * id too); OpenAI's early 400s stay as they always were. */
    if (wire != FAKE_WIRE_OPENAI)
        fake_set_request_id(req, seq);

    if (parsed == NULL) {
        if (wire == FAKE_WIRE_ANTHROPIC)
            snprintf(err, sizeof err, "There was an error parsing the body of your request: it "
                                      "is not valid JSON");
        else if (wire == FAKE_WIRE_GEMINI)
            snprintf(err, sizeof err, "Invalid JSON payload received.");
        else
            snprintf(err, sizeof err,
                     "We could not parse the JSON body of your request. (HINT: This likely "
                     "means you aren't using your HTTP library correctly.)");
        fake_note_status(app, seq, 400);
        fake_send_json(req, 400, fake_wire_error_json(wire, 400, err, seq));
        return;
    }
    if (parse_input(parsed, route, &in, err, sizeof err) < 0) {
        fake_chat_input_cleanup(&in);
        fake_note_status(app, seq, 400);
        fake_send_json(req, 400, fake_wire_error_json(wire, 400, err, seq));
        return;
    }
    if (++app->stats.in_flight > app->stats.max_in_flight)
        app->stats.max_in_flight = app->stats.in_flight;
    int64_t delay_ms;
    if (decide(app, &in, seq, &prep) < 0)
        goto oom;
    if (in.d.delay_ms >= 0) {
        delay_ms = in.d.delay_ms;
    } else {
        delay_ms = app->cfg.latency_ms;
        if (app->cfg.jitter_ms > 0)
            delay_ms += (int64_t)(fake_rand(app) % (uint64_t)(app->cfg.jitter_ms + 1));
    }
    fake_chat_input_cleanup(&in);

    if (delay_ms <= 0) {
        app->stats.in_flight--;
        send_prepared(app, req, seq, &prep);
        prepared_cleanup(&prep);
        return;
    }
    p = calloc(1, sizeof *p);
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    if (p == NULL || bev == NULL)
        goto oom_pending;
    p->app = app;
    p->req = req;
    p->evcon = evcon;
    p->seq = seq;
    p->prep = prep;
    prep.doc = NULL;
    p->timer = evtimer_new(app->base, on_timer, p);
    p->watch = event_new(app->base, bufferevent_getfd(bev), EV_READ, on_watch, p);
    if (p->timer == NULL || p->watch == NULL)
        goto oom_pending;
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)((delay_ms % 1000) * 1000)};
    evtimer_add(p->timer, &tv);
    event_add(p->watch, NULL);
    p->next = app->pending;
    if (app->pending)
        app->pending->prev = p;
    app->pending = p;
    evhttp_connection_set_closecb(evcon, on_conn_close, p);
    return;

oom_pending:
    if (p != NULL) {
        prep = p->prep;
        p->prep.doc = NULL;
        pending_free(p);
    }
    app->stats.in_flight--;
    send_prepared(app, req, seq, &prep);
    prepared_cleanup(&prep);
    return;
oom:
    fake_chat_input_cleanup(&in);
    prepared_cleanup(&prep);
    app->stats.in_flight--;
    fake_note_status(app, seq, 500);
    fake_send_json(req, 500, fake_wire_error_json(wire, 500, "out of memory", seq));
}
