/*
 * events.c - GET /api/v1/crew/job/{job_id}/events: a job's events as Server-Sent Events.
 *
 * Each event is one SSE message: "id: <seq>", "event: <type>" and one "data:" line holding
 * {"seq", "type", "job_id", "created_at", "data"}. A client that reconnects sends the last
 * id it saw in Last-Event-ID (browsers' EventSource does) and gets what came after, nothing
 * twice and nothing lost: the events are read from the store (events/hub.h). A finished job
 * gives its whole history and the stream ends; a client that already has all of a finished
 * job's events gets 204, which tells EventSource to stop reconnecting. While nothing
 * happens, a comment line (": ping") every heartbeat keeps proxies and the server's idle
 * timeout from closing the stream.
 *
 * Writing is paced by the reader: once SSE_WRITE_BUDGET bytes wait for it, the stream takes
 * no more events and its subscription pauses until the output drains (then the hub offers
 * the rest), so a long history goes out at the reader's speed with bounded memory (the
 * budget plus one event). A reader that stops reading altogether is closed by the server's
 * write timeout; it reconnects with Last-Event-ID and catches up from the store.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/dlist.h"
#include "core/id.h"
#include "core/log.h"
#include "core/utf8.h"
#include "events/hub.h"
#include "http/stream.h"
#include "store/store.h"

#define QUOTED(s) (int)utf8_prefix_len((s), strlen(s), 100), (s)

#define SSE_DEFAULT_HEARTBEAT_MS 15000
#define SSE_DEFAULT_MAX_STREAMS 10000
/* Tells EventSource how long to wait before reconnecting after a cut. */
#define SSE_RETRY_MS 1000
/* Bytes waiting for a reader past which its stream takes no more events until they drain:
 * well under the stream layer's cap, which one event of any size may then overshoot. */
#define SSE_WRITE_BUDGET (256 * 1024)

struct sse_stream {
    struct api_sse *sse;
    struct http_stream *hs;
    struct event_sub *sub;
    char job_id[ID_UUID_LEN];
    struct sse_stream *prev, *next;
};

struct api_sse {
    struct event_hub *hub;
    struct api_sse_opts opts;
    struct event *heartbeat;
    struct sse_stream *streams;
    size_t n_streams;
};

static void stream_unlink(struct sse_stream *s)
{
    struct api_sse *sse = s->sse;
    DLIST_REMOVE(sse->streams, s);
    sse->n_streams--;
}

/* Ends the reply and forgets the stream (the subscription is the caller's business). */
static void stream_end(struct sse_stream *s)
{
    stream_unlink(s);
    http_stream_end(s->hs);
    free(s);
}

/* Cuts a reader that cannot keep up: its connection closes at once, its backlog is dropped
 * (the client resumes from the store with Last-Event-ID). */
static void stream_cut(struct sse_stream *s)
{
    log_info("events", "job %s: event reader too slow; stream cut (it resumes with "
                       "Last-Event-ID)", s->job_id);
    stream_unlink(s);
    http_stream_abort(s->hs);
    free(s);
}

/*
 * Writes one event as an SSE message. The stored data is compact JSON (jansson writes no raw
 * newline, strings escape theirs), so it goes into the data line as it is, without parsing
 * it again for every reader. Returns http_stream_write's code.
 */
static int write_event(struct sse_stream *s, const char *job_id, const struct store_event *ev)
{
    const char *type = store_event_type_name(ev->type);
    const char *data = ev->data && ev->data[0] && !strpbrk(ev->data, "\r\n") ? ev->data : "{}";
    size_t len = strlen(data) + 256;
    /* Most events are small: no allocation per event and reader for them. */
    char small[2048];
    char *buf = len <= sizeof small ? small : malloc(len);
    if (buf == NULL)
        return ERR_NOMEM;
    int n = snprintf(buf, len,
                     "id: %lld\nevent: %s\ndata: {\"seq\":%lld,\"type\":\"%s\",\"job_id\":\"%s\","
                     "\"created_at\":\"%s\",\"data\":%s}\n\n",
                     ev->seq, type ? type : "unknown", ev->seq, type ? type : "unknown", job_id,
                     ev->created_at, data);
    int rc = n > 0 && (size_t)n < len ? http_stream_write(s->hs, buf, (size_t)n) : ERR_INTERNAL;
    if (buf != small)
        free(buf);
    return rc;
}

static size_t on_events(void *arg, const struct store_event *evs, size_t n, bool end)
{
    struct sse_stream *s = arg;
    const char *job_id = s->job_id;
    for (size_t i = 0; i < n; i++) {
        if (http_stream_buffered(s->hs) >= SSE_WRITE_BUDGET) {
            return i; /* the hub pauses the subscription; on_drained resumes it */
        }
        if (write_event(s, job_id, &evs[i]) != 0) {
            stream_cut(s);
            return EVENT_SUB_DROP;
        }
    }
    if (end)
        stream_end(s);
    return n;
}

/* The reader took everything written: a stream that stopped at the budget takes more. */
static void on_drained(struct http_stream *hs, void *arg)
{
    (void)hs;
    struct sse_stream *s = arg;
    event_hub_resume(s->sub); /* a no-op unless the hub paused it */
}

/* The peer went away: the server frees the stream after this. */
static void on_close(struct http_stream *hs, void *arg)
{
    (void)hs;
    struct sse_stream *s = arg;
    event_hub_unsubscribe(s->sub);
    stream_unlink(s);
    free(s);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct api_sse *sse = arg;
    static const char ping[] = ": ping\n\n";
    struct sse_stream *next;
    for (struct sse_stream *s = sse->streams; s != NULL; s = next) {
        next = s->next;
        /* Output still waiting keeps the stream from looking idle, and an event of any size
         * may be waiting (a job.completed holding every output): no ping, and no cut for
         * it. A reader that makes no progress at all is closed by the write timeout. */
        if (http_stream_buffered(s->hs) > 0)
            continue;
        if (http_stream_write(s->hs, ping, sizeof ping - 1) != 0) {
            event_hub_unsubscribe(s->sub);
            stream_cut(s);
        }
    }
}

int api_sse_new(struct event_base *base, struct event_hub *hub, const struct api_sse_opts *o,
                struct api_sse **out, struct err *e)
{
    struct api_sse *sse = calloc(1, sizeof *sse);
    *out = NULL;
    if (sse == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    sse->hub = hub;
    sse->opts = *o;
    if (sse->opts.heartbeat_ms <= 0)
        sse->opts.heartbeat_ms = SSE_DEFAULT_HEARTBEAT_MS;
    if (sse->opts.max_streams == 0)
        sse->opts.max_streams = SSE_DEFAULT_MAX_STREAMS;
    if ((sse->heartbeat = event_new(base, -1, EV_PERSIST, on_heartbeat, sse)) == NULL) {
        free(sse);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    struct timeval tv = {sse->opts.heartbeat_ms / 1000, (sse->opts.heartbeat_ms % 1000) * 1000};
    event_add(sse->heartbeat, &tv);
    *out = sse;
    return 0;
}

void api_sse_free(struct api_sse *sse)
{
    if (sse == NULL)
        return;
    while (sse->streams != NULL) {
        struct sse_stream *s = sse->streams;
        event_hub_unsubscribe(s->sub);
        stream_end(s);
    }
    event_free(sse->heartbeat);
    free(sse);
}

size_t api_sse_streams(const struct api_sse *sse)
{
    return sse ? sse->n_streams : 0;
}

/* Last-Event-ID (or ?after= for clients that cannot set headers): the last seq the client
 * has; 0 when absent. False (400 answered) when it is not a non-negative integer. */
static bool read_after(struct http_req *req, long long *after)
{
    const char *v = http_req_header(req, "Last-Event-ID");
    const char *what = "Last-Event-ID";
    if (v == NULL || v[0] == '\0') {
        v = http_req_query(req, "after");
        what = "after";
    }
    *after = 0;
    if (v == NULL || v[0] == '\0')
        return true;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 || n < 0) {
        http_reply_error(req, 400, "%s: '%.*s' is not an event id (a non-negative integer)",
                         what, QUOTED(v));
        return false;
    }
    *after = n;
    return true;
}

void api_jobs_events(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    char idbuf[ID_UUID_LEN];
    long long after;
    if (!api_path_job(req, idbuf) || !read_after(req, &after))
        return;
    if (ctx->sse == NULL) {
        http_reply_error(req, 503, "event streams are not served by this instance");
        return;
    }
    bool head = http_req_method(req) == HTTP_HEAD;
    /* The job must exist; a finished one whose events the client has all: 204. */
    struct store_event_list first = {0};
    enum store_job_status status;
    struct err e = {0};
    if (store_event_list(ctx->store, idbuf, after, 1, &first, &status, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    size_t n_first = first.n;
    store_event_list_cleanup(&first);
    if (n_first == 0 && (status == STORE_JOB_COMPLETED || status == STORE_JOB_FAILED ||
                         status == STORE_JOB_CANCELLED)) {
        http_reply_empty(req, 204);
        return;
    }
    struct api_sse *sse = ctx->sse;
    if (sse->n_streams >= sse->opts.max_streams) {
        http_reply_header(req, "Retry-After", "5");
        http_reply_error(req, 503, "too many event streams open (%zu); try again later",
                         sse->opts.max_streams);
        return;
    }
    struct sse_stream *s = calloc(1, sizeof *s);
    if (s == NULL) {
        http_reply_error(req, 500, "out of memory");
        return;
    }
    s->sse = sse;
    memcpy(s->job_id, idbuf, ID_UUID_LEN);
    if ((s->hs = http_stream_start(req, 200, "text/event-stream", on_close, s)) == NULL) {
        free(s);
        return;
    }
    DLIST_PUSH(sse->streams, s);
    sse->n_streams++;
    if (head) {
        /* The headers are the whole reply: nothing to wait for, no connection to hold. */
        stream_end(s);
        return;
    }
    http_stream_set_drain_cb(s->hs, on_drained);
    char hello[64];
    int n = snprintf(hello, sizeof hello, "retry: %d\n\n", SSE_RETRY_MS);
    int rc = http_stream_write(s->hs, hello, (size_t)n);
    if (rc != 0)
        err_set(&e, rc, "cannot write to the stream");
    else
        rc = event_hub_subscribe(sse->hub, idbuf, after, on_events, s, &s->sub, &e);
    if (rc != 0) {
        log_error("events", "job %s: cannot open its event stream: %s", idbuf, err_text(&e));
        stream_end(s);
    }
}
