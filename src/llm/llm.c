/*
 * llm.c - the asynchronous LLM client of llm.h: libcurl's multi "socket" interface driven by
 * the caller's libevent loop (curl's hiperfifo pattern), retries with backoff, error
 * classification. The bytes of each provider's protocol live in the wires (wire.h,
 * llm_openai.c); this file never looks inside a body except to hand it to a wire.
 *
 * Shape (docs/internals/llm.md has the long version):
 * - A call is in exactly one place, by state: its host's `queued` FIFO (waiting to be added
 *   to the multi handle), `running` (added), `backoff` (waiting on its retry timer), `finished`
 *   (transfer over, not yet judged), `zombies` (cancelled while libcurl was on the stack), or
 *   nowhere while its done callback runs.
 * - libcurl runs on the loop through core/curl_loop.h (shared with the tool runner).
 * - A zero-timeout event adds at most add_batch queued transfers per loop turn, and no more
 *   per host than max_host_connections (libcurl only ever holds transfers it may start).
 * - User code (on_done, on_delta) may start calls, cancel other calls or free the client, so:
 *   on_done runs only from process_finished(), outside libcurl, re-reading the list head after
 *   each callback; a cancel while libcurl is on the stack (from on_delta) parks the call as a
 *   zombie that is removed once curl_multi_socket_action has returned; llm_client_free from
 *   a callback is deferred until the outermost event callback of the client returns.
 * Everything runs on the loop thread.
 */
#include "llm/llm.h"

#include "core/clock.h"
#include "core/curl_loop.h"
#include "core/dlist.h"
#include "core/log.h"
#include "core/utf8.h"
#include "llm/provider.h"
#include "llm/wire.h"
#include "obs/obs.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DEF_MAX_HOST_CONNECTIONS 64
#define DEF_MAX_TOTAL_CONNECTIONS 1024
#define DEF_ADD_BATCH 64
#define LIMIT_LOOKAHEAD 256 /* queued calls of one host looked at past a limited provider's */
#define DEF_TIMEOUT_MS 120000
#define DEF_CONNECT_TIMEOUT_MS 10000
#define DEF_MAX_ATTEMPTS 3
#define DEF_BACKOFF_BASE_MS 500
#define DEF_BACKOFF_MAX_MS 30000
#define DEF_MAX_REPLY_BYTES ((size_t)8 << 20)

enum call_state {
    CALL_QUEUED,
    CALL_RUNNING,
    CALL_BACKOFF,
    CALL_FINISHED,
    CALL_ZOMBIE,
    CALL_JUDGING,     /* complete_attempt holds it (in no list) */
    CALL_DISPATCHING, /* its on_done runs (in no list) */
};

struct call_list {
    struct llm_call *head, *tail;
};

/*
 * One per host:port with calls. Calls wait in their host's queue until the host has fewer
 * than max_host_connections transfers in libcurl: handing libcurl more than it may connect
 * parks them in its pending list, which it walks on every finished transfer (quadratic with
 * thousands of calls queued for one host; measured: 10,000 jobs on one fake server spent
 * most of the loop's time there).
 */
struct host_slot {
    struct host_slot *prev, *next;
    char key[300];   /* host:port */
    long in_multi;   /* transfers of this host in libcurl now */
    size_t n_calls;  /* calls pointing here; the slot goes when it drops to 0 */
    struct call_list queued;
};

/*
 * A provider's shared limit (struct llm_limit). Requests per minute are a token bucket that
 * holds at most one second's worth (at least 1), refilled continuously: smooth, never over
 * the rate in any minute, and no burst of a whole minute's requests at start-up.
 */
struct prov_limit {
    char provider[32];
    long max_concurrent;
    long rpm;
    long in_flight; /* this provider's transfers in libcurl */
    double tokens;
    int64_t refilled_ms;
};

struct llm_client {
    struct event_base *base;
    CURLM *multi;
    struct curl_loop loop; /* libcurl's sockets and timer on the event loop */
    struct event *add_ev;   /* zero-timeout: add the next batch of queued transfers */
    struct llm_client_opts o;
    struct call_list running, backoff, finished, zombies;
    struct host_slot *hosts; /* each holds its queued calls */
    long in_multi;           /* transfers in libcurl, all hosts */
    size_t n_queued;         /* calls in the hosts' queues, all hosts */
    struct prov_limit limits[LLM_MAX_LIMITS];
    size_t n_limits;
    struct event *limit_ev; /* admission again when a rate-limited provider has a token */
    size_t n_calls; /* started, not yet delivered or cancelled */
    int in_curl;    /* > 0 while curl_multi_socket_action is on the stack */
    int busy;       /* > 0 while one of our event callbacks is on the stack */
    bool dying;     /* llm_client_free was called from inside a callback */
    uint64_t rng;
};

struct llm_call {
    struct llm_client *client;
    struct llm_call *prev, *next;
    enum call_state state;
    const struct llm_wire *wire;
    char provider[32];
    char host_port[300];
    struct host_slot *host; /* NULL until the call is set up */
    struct prov_limit *limit; /* NULL: its provider has no limit */
    bool in_multi;          /* its easy handle is in the multi handle */
    char *api_key; /* only to scrub it from messages; wiped on free */
    struct llm_wire_http http;
    struct curl_slist *headers;
    CURL *easy;
    struct event *retry_ev;
    struct llm_call_opts opts;
    bool stream_req;
    long timeout_ms;
    int attempts;
    int64_t start_ms;
    long last_status;

    /* per attempt */
    char errbuf[CURL_ERROR_SIZE];
    CURLcode result;
    struct llm_buf body;
    size_t received;
    struct llm_stream *stream;
    bool decided;   /* the first body byte came: streaming chosen or not */
    bool streaming; /* this attempt's body goes to the stream parser */
    bool sse_type;  /* Content-Type: text/event-stream */
    bool emitted_delta;
    long retry_after_ms;   /* retry-after-ms header; -1: none */
    long retry_after_s_ms; /* Retry-After header, in ms; -1: none */
    bool cancelled;        /* cancelled from an on_delta while CALL_JUDGING */
    int abort_rc;          /* the write callback stopped the transfer */
    struct err abort_err;
};

/* ---- lists ---- */

static struct call_list *list_of(struct llm_call *call, enum call_state st)
{
    struct llm_client *c = call->client;
    switch (st) {
    case CALL_QUEUED:
        return &call->host->queued;
    case CALL_RUNNING:
        return &c->running;
    case CALL_BACKOFF:
        return &c->backoff;
    case CALL_FINISHED:
        return &c->finished;
    case CALL_ZOMBIE:
        return &c->zombies;
    case CALL_JUDGING:
    case CALL_DISPATCHING:
        break;
    }
    return NULL;
}

static void call_unlink(struct llm_call *call)
{
    struct call_list *l = list_of(call, call->state);
    if (l == NULL)
        return;
    if (call->state == CALL_QUEUED)
        call->client->n_queued--;
    if (call->prev)
        call->prev->next = call->next;
    else
        l->head = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        l->tail = call->prev;
    call->prev = call->next = NULL;
}

static void call_push(struct llm_call *call, enum call_state st)
{
    call->state = st;
    struct call_list *l = list_of(call, st);
    if (l == NULL)
        return;
    if (st == CALL_QUEUED)
        call->client->n_queued++;
    call->prev = l->tail;
    call->next = NULL;
    if (l->tail)
        l->tail->next = call;
    else
        l->head = call;
    l->tail = call;
}

static void call_move(struct llm_call *call, enum call_state st)
{
    call_unlink(call);
    call_push(call, st);
}

/* ---- small helpers ---- */

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n-- > 0)
        *v++ = 0;
}

static uint64_t rng_next(struct llm_client *c)
{
    /* splitmix64: jitter needs spread, not secrecy. */
    uint64_t z = (c->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Replaces every occurrence of the call's API key in e->msg (a provider may echo it). */
static void scrub_key(const struct llm_call *call, struct err *e)
{
    if (call->api_key == NULL || call->api_key[0] == '\0')
        return;
    size_t klen = strlen(call->api_key);
    char *hit;
    while ((hit = strstr(e->msg, call->api_key)) != NULL) {
        char rest[ERR_MSG_MAX];
        snprintf(rest, sizeof rest, "%s", hit + klen);
        *hit = '\0';
        size_t used = strlen(e->msg);
        snprintf(e->msg + used, sizeof e->msg - used, "[redacted]%s", rest);
    }
    utf8_trim_cut(e->msg);
}

static void schedule_add(struct llm_client *c)
{
    if (!evtimer_pending(c->add_ev, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(c->add_ev, &zero);
    }
}

/* Takes the call's transfer out of libcurl (closing its connection if it was mid-way) and
 * lets its host admit the next queued call. */
static void multi_remove(struct llm_call *call)
{
    struct llm_client *c = call->client;
    if (!call->in_multi)
        return;
    curl_multi_remove_handle(c->multi, call->easy);
    call->in_multi = false;
    call->host->in_multi--;
    c->in_multi--;
    if (call->limit != NULL)
        call->limit->in_flight--;
    /* Any host may be waiting: this one for its own cap, the others for the total one. */
    if (c->n_queued > 0)
        schedule_add(c);
}

static struct host_slot *host_get(struct llm_client *c, const char *key)
{
    for (struct host_slot *h = c->hosts; h != NULL; h = h->next)
        if (strcmp(h->key, key) == 0)
            return h;
    struct host_slot *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    snprintf(h->key, sizeof h->key, "%s", key);
    DLIST_PUSH(c->hosts, h);
    return h;
}

static void host_release(struct llm_client *c, struct host_slot *h)
{
    if (h == NULL || --h->n_calls > 0)
        return;
    DLIST_REMOVE(c->hosts, h);
    free(h);
}

static void call_free(struct llm_call *call)
{
    if (call == NULL)
        return;
    host_release(call->client, call->host);
    if (call->easy != NULL)
        curl_easy_cleanup(call->easy);
    if (call->retry_ev != NULL)
        event_free(call->retry_ev);
    for (struct curl_slist *h = call->headers; h != NULL; h = h->next)
        wipe(h->data, strlen(h->data));
    curl_slist_free_all(call->headers);
    llm_wire_http_cleanup(&call->http);
    if (call->api_key != NULL) {
        wipe(call->api_key, strlen(call->api_key));
        free(call->api_key);
    }
    llm_buf_free(&call->body);
    if (call->stream != NULL)
        call->wire->stream_free(call->stream);
    free(call);
}

/* ---- client lifetime ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void reap_zombies(struct llm_client *c)
{
    struct llm_call *call;
    while ((call = c->zombies.head) != NULL) {
        call_unlink(call);
        call->state = CALL_DISPATCHING; /* in no list */
        multi_remove(call);
        call_free(call);
    }
}

static void cancel_all(struct llm_client *c)
{
    /* Cancelling a host's last call frees the host: look for a queued call anew each time. */
    for (;;) {
        struct host_slot *h = c->hosts;
        while (h != NULL && h->queued.head == NULL)
            h = h->next;
        if (h == NULL)
            break;
        llm_call_cancel(h->queued.head);
    }
    struct call_list *lists[] = {&c->running, &c->backoff, &c->finished};
    for (size_t i = 0; i < sizeof lists / sizeof lists[0]; i++) {
        while (lists[i]->head != NULL)
            llm_call_cancel(lists[i]->head);
    }
}

static void client_destroy(struct llm_client *c)
{
    cancel_all(c);
    reap_zombies(c);
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi); /* closes the cached connections */
    curl_loop_cleanup(&c->loop);
    if (c->add_ev)
        event_free(c->add_ev);
    if (c->limit_ev)
        event_free(c->limit_ev);
    free(c);
}

static void busy_enter(struct llm_client *c)
{
    c->busy++;
}

/* Must be the last thing an event callback does: it may free the client. */
static void busy_leave(struct llm_client *c)
{
    if (--c->busy == 0 && c->dying)
        client_destroy(c);
}

void llm_client_free(struct llm_client *client)
{
    if (client == NULL)
        return;
    if (client->busy > 0) {
        /* From inside a callback: silence every call now, free on the way out. */
        client->dying = true;
        cancel_all(client);
        return;
    }
    client_destroy(client);
}

size_t llm_client_active(const struct llm_client *client)
{
    return client ? client->n_calls : 0;
}

/* ---- outcome of an attempt ---- */

/* The wait the server asked for (retry-after-ms, else Retry-After), or -1. */
static long server_wait_ms(const struct llm_call *call)
{
    return call->retry_after_ms >= 0 ? call->retry_after_ms : call->retry_after_s_ms;
}

/* The wait before the next attempt: the server's, else exponential backoff with jitter. -1
 * when the server asks for longer than the cap: an attempt before then would be refused
 * again and spend quota, so the call fails instead. */
static long backoff_delay(struct llm_call *call)
{
    struct llm_client *c = call->client;
    long max = c->o.backoff_max_ms;
    long asked = server_wait_ms(call);
    if (asked >= 0)
        return asked <= max ? asked : -1;
    long d = c->o.backoff_base_ms;
    for (int i = 1; i < call->attempts && d < max; i++)
        d *= 2;
    if (d > max)
        d = max;
    /* Uniform jitter in [50%, 100%] so that calls failing together do not retry together. */
    double f = 0.5 + 0.5 * (double)(rng_next(c) >> 11) / 9007199254740992.0;
    return (long)((double)d * f);
}

/* glibc declares the GNU strerror_r (returns char *) or the XSI one (returns int) depending on
 * feature macros other headers may set; _Generic picks the matching reader. */
static const char *strerror_xsi(int rc, const char *buf)
{
    return rc == 0 ? buf : "";
}

static const char *strerror_gnu(const char *p, const char *buf)
{
    return p ? p : "";
}

#define errno_text(err, buf, cap)                                                                  \
    _Generic(strerror_r((err), (buf), (cap)), int: strerror_xsi, char *: strerror_gnu)(          \
        strerror_r((err), (buf), (cap)), (buf))

static void classify_curl(struct llm_call *call, struct err *e, bool *retryable)
{
    CURLcode r = call->result;
    const char *text = call->errbuf[0] ? call->errbuf : curl_easy_strerror(r);
    long os_errno = 0;
    char oserr[128] = "";
    curl_easy_getinfo(call->easy, CURLINFO_OS_ERRNO, &os_errno);
    const char *os_text = os_errno != 0 ? errno_text((int)os_errno, oserr, sizeof oserr) : "";

    switch (r) {
    case CURLE_OPERATION_TIMEDOUT: {
        *retryable = true;
        curl_off_t connect_us = 0;
        curl_easy_getinfo(call->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        if (connect_us == 0)
            /* Whichever bound was the shorter ran out: the connect timeout, or the
             * attempt's own (config.timeout) that also covers connecting. */
            err_set(e, ERR_IO, "%s: cannot connect to %s: timed out after %ld ms", call->provider,
                    call->host_port,
                    call->timeout_ms > 0 && call->timeout_ms < call->client->o.connect_timeout_ms
                        ? call->timeout_ms
                        : call->client->o.connect_timeout_ms);
        else
            err_set(e, ERR_IO, "%s: timed out after %ld ms", call->provider, call->timeout_ms);
        return;
    }
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_SSL_CONNECT_ERROR:
        *retryable = true;
        err_set(e, ERR_IO, "%s: cannot connect to %s: %s", call->provider, call->host_port,
                r == CURLE_COULDNT_CONNECT && os_text[0] ? os_text : text);
        return;
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        *retryable = true;
        err_set(e, ERR_IO, "%s: connection to %s failed: %s", call->provider, call->host_port,
                text);
        return;
    default:
        *retryable = false;
        err_set(e, ERR_IO, "%s: request failed: %s", call->provider, text);
        return;
    }
}

static void deliver(struct llm_call *call, int rc, struct llm_response *resp, struct err *e,
                    bool retryable)
{
    struct llm_client *c = call->client;
    call_unlink(call);
    call->state = CALL_DISPATCHING;
    c->n_calls--;
    struct llm_call_info info = {
        .attempts = call->attempts,
        .http_status = call->last_status,
        .retryable = retryable,
        .latency_s = (double)(clock_mono_ms() - call->start_ms) / 1000.0,
    };
    if (rc != 0) {
        scrub_key(call, e);
        log_debug("llm", "%s: call failed after %d attempt(s): %s", call->provider, call->attempts,
                  e->msg);
    }
    /* Metrics count the whole call (every attempt, backoff and queueing), once, as the
     * caller sees it; a cancelled call never gets here and is not counted. */
    if (c->o.obs != NULL) {
        struct obs_tokens t = {0};
        if (rc == 0 && resp != NULL)
            t = (struct obs_tokens){.input = resp->usage.prompt_tokens,
                                    .output = resp->usage.completion_tokens,
                                    .cached = resp->usage.cached_tokens,
                                    .reasoning = resp->usage.reasoning_tokens};
        obs_llm_call(c->o.obs, call->provider, rc == 0, info.latency_s, rc == 0 ? &t : NULL);
    }
    call->opts.on_done(call->opts.arg, rc, rc == 0 ? resp : NULL, e, &info);
    if (rc != 0)
        llm_response_free(resp);
    call_free(call);
}

static void stream_delta(void *arg, const char *text, size_t len);

/* Judges a finished attempt: success, a retry on the backoff timer, or a failure. */
static void complete_attempt(struct llm_call *call)
{
    struct llm_client *c = call->client;
    struct err e = {0};
    struct llm_response *resp = NULL;
    bool retryable = false;
    int rc;
    long status = 0;
    curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
    call->last_status = status;
    call_unlink(call);
    call->state = CALL_JUDGING;

    if (call->abort_rc != 0) {
        rc = call->abort_rc;
        e = call->abort_err;
    } else if (call->result != CURLE_OK) {
        rc = ERR_IO;
        classify_curl(call, &e, &retryable);
    } else if (status >= 200 && status < 300) {
        if (call->streaming) {
            /* The last event may still hold a delta, and on_delta may cancel this call or
             * free the client: then the call is only released here. */
            rc = call->wire->stream_end(call->stream, stream_delta, call, &resp, &e);
            /* A client freed from on_delta silenced its calls, but not this one, which is on
             * no list while it is judged. */
            if (call->cancelled || c->dying) {
                llm_response_free(resp);
                call_free(call);
                return;
            }
            retryable = rc == ERR_IO; /* cut short: like a partial transfer */
        } else {
            rc = call->wire->parse_reply(call->body.data ? call->body.data : "", call->body.len,
                                         &resp, &e);
        }
        if (rc != 0)
            err_prefix(&e, "%s", call->provider);
    } else {
        char msg[LLM_WIRE_ERRMSG_MAX + 1];
        size_t n = call->wire->error_message(call->body.data, call->body.len, msg, sizeof msg);
        rc = ERR_IO;
        if (n > 0)
            err_set(&e, ERR_IO, "%s: HTTP %ld: %s", call->provider, status, msg);
        else
            err_set(&e, ERR_IO, "%s: HTTP %ld", call->provider, status);
        retryable = status == 408 || status == 409 || status == 429 || status >= 500;
    }

    /* Text already streamed to the caller cannot be taken back, so such a call is not
     * retried: the caller sees the failure and decides. */
    long delay = 0;
    if (rc != 0 && retryable && !call->emitted_delta && call->attempts < c->o.max_attempts &&
        (delay = backoff_delay(call)) < 0) {
        char why[ERR_MSG_MAX];
        snprintf(why, sizeof why, "%s (not retried: the provider asks to wait %ld ms, more "
                                  "than the %ld ms crewd waits)",
                 e.msg, server_wait_ms(call), c->o.backoff_max_ms);
        utf8_trim_cut(why);
        err_set(&e, e.code, "%s", why);
        retryable = false;
    }
    if (rc != 0 && retryable && !call->emitted_delta && call->attempts < c->o.max_attempts) {
        scrub_key(call, &e);
        log_debug("llm", "%s: attempt %d failed (%s); retrying in %ld ms", call->provider,
                  call->attempts, e.msg, delay);
        call_move(call, CALL_BACKOFF);
        struct timeval tv = {delay / 1000, (delay % 1000) * 1000};
        evtimer_add(call->retry_ev, &tv);
        return;
    }
    deliver(call, rc, resp, &e, retryable);
}

/* Runs done callbacks. The head is re-read after each one: a callback may cancel any other
 * finished call or start new ones. */
static void process_finished(struct llm_client *c)
{
    struct llm_call *call;
    while (!c->dying && (call = c->finished.head) != NULL)
        complete_attempt(call);
}

/* After libcurl returned: drop cancelled transfers, collect finished ones, judge them. */
static void after_curl(struct llm_client *c)
{
    reap_zombies(c);
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        char *priv = NULL;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg is invalid after remove_handle */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        struct llm_call *call = (struct llm_call *)(void *)priv;
        if (call == NULL) {
            curl_multi_remove_handle(c->multi, easy);
            continue;
        }
        multi_remove(call);
        call->result = result;
        call_move(call, CALL_FINISHED);
    }
    process_finished(c);
}

/* ---- libcurl <-> libevent ---- */

/* A socket of ours is ready or libcurl's timer fired (core/curl_loop.h). */
static void drive(void *arg, curl_socket_t fd, int action)
{
    struct llm_client *c = arg;
    int running = 0;
    busy_enter(c);
    c->in_curl++;
    curl_multi_socket_action(c->multi, fd, action, &running);
    c->in_curl--;
    after_curl(c);
    busy_leave(c);
}

/* ---- attempts ---- */

static void stream_delta(void *arg, const char *text, size_t len)
{
    struct llm_call *call = arg;
    if ((call->state != CALL_RUNNING && call->state != CALL_JUDGING) || call->cancelled ||
        call->client->dying)
        return; /* cancelled by an earlier delta of the same chunk */
    call->emitted_delta = true;
    if (call->opts.on_delta != NULL)
        call->opts.on_delta(call->opts.arg, text, len);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct llm_call *call = userdata;
    struct llm_client *c = call->client;
    size_t n = size * nmemb;
    if (call->state != CALL_RUNNING || c->dying)
        return 0;
    if (n > c->o.max_reply_bytes - call->received) {
        call->abort_rc = err_set(&call->abort_err, ERR_TOO_LARGE,
                                 "%s: reply larger than %zu bytes (max_reply_bytes)",
                                 call->provider, c->o.max_reply_bytes);
        return 0;
    }
    call->received += n;
    if (!call->decided) {
        long status = 0;
        curl_easy_getinfo(call->easy, CURLINFO_RESPONSE_CODE, &status);
        call->decided = true;
        /* A server that ignores "stream" and answers JSON gets parsed as a whole reply. */
        call->streaming = call->stream_req && call->sse_type && status >= 200 && status < 300;
    }
    if (call->streaming) {
        struct err e = {0};
        int rc = call->wire->stream_feed(call->stream, ptr, n, stream_delta, call, &e);
        if (call->state != CALL_RUNNING || c->dying)
            return 0; /* on_delta cancelled this call or freed the client */
        if (rc != 0) {
            err_prefix(&e, "%s", call->provider);
            call->abort_rc = rc;
            call->abort_err = e;
            return 0;
        }
        return n;
    }
    if (llm_buf_append(&call->body, ptr, n) != 0) {
        call->abort_rc = err_set(&call->abort_err, ERR_NOMEM, "%s: out of memory reading the reply",
                                 call->provider);
        return 0;
    }
    return n;
}

static bool header_is(const char *line, size_t len, const char *name, const char **value,
                      size_t *vlen)
{
    size_t nlen = strlen(name);
    if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen) != 0)
        return false;
    const char *v = line + nlen + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *value = v;
    *vlen = (size_t)(end - v);
    return true;
}

/* Only the headers the client acts on are read; nothing is stored, so nothing grows. */
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct llm_call *call = userdata;
    size_t n = size * nitems;
    const char *v;
    size_t vlen;
    char tmp[128];

    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after a 100 Continue, say): forget the previous one's headers. */
        call->retry_after_ms = call->retry_after_s_ms = -1;
        call->sse_type = false;
        return n;
    }
    if (header_is(buf, n, "retry-after-ms", &v, &vlen)) {
        llm_copy_bounded(tmp, sizeof tmp, v, vlen, sizeof tmp - 1);
        char *end;
        double ms = strtod(tmp, &end);
        if (end != tmp && ms >= 0 && ms < 1e9)
            call->retry_after_ms = (long)(ms + 0.999);
    } else if (header_is(buf, n, "retry-after", &v, &vlen)) {
        llm_copy_bounded(tmp, sizeof tmp, v, vlen, sizeof tmp - 1);
        char *end;
        long secs = strtol(tmp, &end, 10);
        if (end != tmp && *end == '\0') {
            if (secs >= 0)
                call->retry_after_s_ms = secs > 1000000 ? 1000000000L : secs * 1000;
        } else {
            time_t at = curl_getdate(tmp, NULL); /* an HTTP date */
            if (at != (time_t)-1) {
                double d = difftime(at, time(NULL));
                call->retry_after_s_ms = d <= 0 ? 0 : d > 1e6 ? 1000000000L : (long)d * 1000;
            }
        }
    } else if (header_is(buf, n, "content-type", &v, &vlen)) {
        call->sse_type = vlen >= 17 && strncasecmp(v, "text/event-stream", 17) == 0;
    }
    return n;
}

static int begin_attempt(struct llm_call *call, struct err *e)
{
    struct llm_client *c = call->client;
    call->attempts++;
    call->errbuf[0] = '\0';
    call->result = CURLE_OK;
    llm_buf_reset(&call->body);
    call->received = 0;
    call->decided = call->streaming = call->sse_type = false;
    call->retry_after_ms = call->retry_after_s_ms = -1;
    call->abort_rc = 0;
    memset(&call->abort_err, 0, sizeof call->abort_err);
    if (call->stream != NULL) {
        call->wire->stream_free(call->stream);
        call->stream = NULL;
    }
    if (call->stream_req && call->wire->stream_new(&call->stream) != 0)
        return err_set(e, ERR_NOMEM, "%s: out of memory", call->provider);
    if (curl_multi_add_handle(c->multi, call->easy) != CURLM_OK)
        return err_set(e, ERR_INTERNAL, "%s: libcurl refused the transfer", call->provider);
    call->in_multi = true;
    call->host->in_multi++;
    c->in_multi++;
    if (call->limit != NULL) {
        call->limit->in_flight++;
        call->limit->tokens -= 1.0;
    }
    return 0;
}

/* Whether `call` may start now under its provider's limit; when the rate is what stops it,
 * *wait_ms says when the next request is allowed. */
static bool limit_allows(struct prov_limit *l, long *wait_ms)
{
    if (l == NULL)
        return true;
    if (l->max_concurrent > 0 && l->in_flight >= l->max_concurrent)
        return false; /* a transfer ending re-arms admission */
    if (l->rpm <= 0)
        return true;
    double per_ms = (double)l->rpm / 60000.0;
    double cap = (double)l->rpm / 60.0 < 1.0 ? 1.0 : (double)l->rpm / 60.0;
    int64_t now = clock_mono_ms();
    l->tokens += (double)(now - l->refilled_ms) * per_ms;
    if (l->tokens > cap)
        l->tokens = cap;
    l->refilled_ms = now;
    if (l->tokens >= 1.0)
        return true;
    long w = (long)((1.0 - l->tokens) / per_ms) + 1;
    if (*wait_ms < 0 || w < *wait_ms)
        *wait_ms = w;
    return false;
}

static void on_limit(evutil_socket_t fd, short what, void *arg)
{
    schedule_add(arg);
}

static void on_add(evutil_socket_t fd, short what, void *arg)
{
    struct llm_client *c = arg;
    busy_enter(c);
    /* Each host admits calls up to its connection cap, all hosts up to the total cap, at
     * most add_batch per loop turn. A call that cannot start (out of memory) is finished
     * with its error and does not hold the host's place. */
    int budget = c->o.add_batch;
    bool more = false;
    long wait_ms = -1;
    for (struct host_slot *h = c->hosts; h != NULL; h = h->next) {
        bool limited = false;
        while (h->queued.head != NULL && h->in_multi < c->o.max_host_connections &&
               c->in_multi < c->o.max_total_connections) {
            /* The first call whose provider is under its limit: one host may serve several
             * providers (a local gateway), and a limited one must not hold up the others.
             * Calls keep their order within a provider. The look-ahead is bounded. */
            struct llm_call *call = h->queued.head;
            int looked = 0;
            while (call != NULL && !limit_allows(call->limit, &wait_ms))
                call = ++looked < LIMIT_LOOKAHEAD ? call->next : NULL;
            if (call == NULL) {
                limited = true;
                break;
            }
            if (budget-- <= 0)
                break;
            struct err e = {0};
            call_move(call, CALL_RUNNING);
            if (begin_attempt(call, &e) != 0) {
                call->abort_rc = e.code;
                call->abort_err = e;
                call_move(call, CALL_FINISHED);
            }
        }
        if (!limited && h->queued.head != NULL && h->in_multi < c->o.max_host_connections &&
            c->in_multi < c->o.max_total_connections)
            more = true;
    }
    if (wait_ms >= 0) {
        struct timeval tv = {wait_ms / 1000, (wait_ms % 1000) * 1000};
        evtimer_add(c->limit_ev, &tv);
    }
    if (more)
        schedule_add(c); /* the rest next loop turn, after other events had theirs */
    /* Round robin: the host served first this turn goes last, so that hosts early in the
     * list cannot take the whole total cap or batch turn after turn. */
    struct host_slot *first = c->hosts;
    if (first != NULL && first->next != NULL) {
        c->hosts = first->next;
        c->hosts->prev = NULL;
        struct host_slot *last = c->hosts;
        while (last->next != NULL)
            last = last->next;
        last->next = first;
        first->prev = last;
        first->next = NULL;
    }
    process_finished(c);
    busy_leave(c);
}

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
    struct llm_call *call = arg;
    call_move(call, CALL_QUEUED);
    schedule_add(call->client);
}

/* ---- public ---- */

int llm_client_new(struct event_base *base, const struct llm_client_opts *opts,
                   struct llm_client **out, struct err *e)
{
    int rc = 0;
    struct llm_client *c = NULL;
    *out = NULL;

    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return err_set(e, ERR_INTERNAL, "llm: curl_global_init failed: %s",
                       curl_easy_strerror(curl_init_rc));

    c = calloc(1, sizeof *c);
    if (c == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    c->base = base;
    if (opts != NULL)
        c->o = *opts;
    if (c->o.max_host_connections <= 0)
        c->o.max_host_connections = DEF_MAX_HOST_CONNECTIONS;
    if (c->o.max_total_connections <= 0)
        c->o.max_total_connections = DEF_MAX_TOTAL_CONNECTIONS;
    if (c->o.add_batch <= 0)
        c->o.add_batch = DEF_ADD_BATCH;
    if (c->o.default_timeout_ms <= 0)
        c->o.default_timeout_ms = DEF_TIMEOUT_MS;
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = DEF_CONNECT_TIMEOUT_MS;
    if (c->o.max_attempts <= 0)
        c->o.max_attempts = DEF_MAX_ATTEMPTS;
    if (c->o.backoff_base_ms <= 0)
        c->o.backoff_base_ms = DEF_BACKOFF_BASE_MS;
    if (c->o.backoff_max_ms <= 0)
        c->o.backoff_max_ms = DEF_BACKOFF_MAX_MS;
    if (c->o.max_reply_bytes == 0)
        c->o.max_reply_bytes = DEF_MAX_REPLY_BYTES;
    c->rng = (uint64_t)clock_mono_ms() ^ (uint64_t)(uintptr_t)c;
    for (size_t i = 0; opts != NULL && i < opts->n_limits; i++) {
        const struct llm_limit *l = &opts->limits[i];
        if (c->n_limits == LLM_MAX_LIMITS || l->provider == NULL)
            break;
        struct prov_limit *pl = &c->limits[c->n_limits++];
        snprintf(pl->provider, sizeof pl->provider, "%s", l->provider);
        pl->max_concurrent = l->max_concurrent;
        pl->rpm = l->requests_per_minute;
        pl->tokens = 1.0; /* the first request may go at once */
        pl->refilled_ms = clock_mono_ms();
    }
    c->o.limits = NULL; /* copied above; the caller's array is not kept */
    c->o.n_limits = 0;

    c->multi = curl_multi_init();
    c->add_ev = evtimer_new(base, on_add, c);
    c->limit_ev = evtimer_new(base, on_limit, c);
    if (c->multi == NULL || c->add_ev == NULL || c->limit_ev == NULL ||
        curl_loop_init(&c->loop, base, c->multi, drive, c, e) != 0) {
        rc = err_set(e, ERR_INTERNAL, "llm: cannot set up libcurl on the loop");
        goto out;
    }
    curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, c->o.max_host_connections);
    curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, c->o.max_total_connections);
    /* The connection cache holds every connection the caps allow, so none goes cold. */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, c->o.max_total_connections);
    *out = c;
    c = NULL;
out:
    if (c != NULL)
        client_destroy(c);
    return rc;
}

static const struct llm_wire *wire_for(const char *provider)
{
    static const struct {
        const char *provider;
        const struct llm_wire *wire;
    } table[] = {
        {"openai", &llm_wire_openai},       {"groq", &llm_wire_openai},
        {"ollama", &llm_wire_openai},       {"openrouter", &llm_wire_openai},
        {"deepseek", &llm_wire_openai},     {"vllm", &llm_wire_openai},
        {"llamacpp", &llm_wire_openai},     {"anthropic", &llm_wire_anthropic},
        {"google", &llm_wire_gemini},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(provider, table[i].provider) == 0)
            return table[i].wire;
    }
    return NULL;
}

/* "host:port" of the URL, for connection errors; also rejects what is not http(s). */
static int url_host_port(struct llm_call *call, struct err *e)
{
    int rc = 0;
    char *scheme = NULL, *host = NULL, *port = NULL;
    CURLU *u = curl_url();
    if (u == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, call->http.url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK) {
        rc = err_set(e, ERR_INVALID, "%s: base_url is not a valid URL", call->provider);
        goto out;
    }
    if (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0) {
        rc = err_set(e, ERR_INVALID, "%s: base_url must be http or https", call->provider);
        goto out;
    }
    snprintf(call->host_port, sizeof call->host_port, "%s:%s", host, port);
    utf8_trim_cut(call->host_port);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

static int setup_easy(struct llm_call *call, struct err *e)
{
    struct llm_client *c = call->client;
    call->easy = curl_easy_init();
    if (call->easy == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < call->http.n_headers; i++) {
        struct curl_slist *h = curl_slist_append(call->headers, call->http.headers[i]);
        if (h == NULL)
            return err_set(e, ERR_NOMEM, "out of memory");
        call->headers = h;
    }
    /* No "Expect: 100-continue" round trip for large bodies. */
    struct curl_slist *h = curl_slist_append(call->headers, "Expect:");
    if (h == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    call->headers = h;

    CURL *x = call->easy;
    CURLcode r = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (r == CURLE_OK)                                                                         \
            r = curl_easy_setopt(x, opt, val);                                                     \
    } while (0)
    SET(CURLOPT_URL, call->http.url);
    SET(CURLOPT_HTTPHEADER, call->headers);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->http.body_len);
    SET(CURLOPT_POSTFIELDS, call->http.body);
    SET(CURLOPT_PRIVATE, (void *)call);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, call->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, c->o.connect_timeout_ms);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, (void *)call);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)call);
    SET(CURLOPT_ERRORBUFFER, call->errbuf);
    SET(CURLOPT_ACCEPT_ENCODING, ""); /* decoded bytes count against max_reply_bytes */
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_USERAGENT, "crewd/" CREWD_VERSION);
    /* Never follow a redirect: the Authorization header would go with it. */
    SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
#undef SET
    if (r != CURLE_OK)
        return err_set(e, ERR_INTERNAL, "%s: libcurl option refused: %s", call->provider,
                       curl_easy_strerror(r));
    return 0;
}

int llm_call_start(struct llm_client *client, const struct llm_request *req,
                   const struct llm_call_opts *opts, struct llm_call **out, struct err *e)
{
    int rc = 0;
    struct llm_call *call = NULL;
    bool nomem = false;
    if (out != NULL)
        *out = NULL;

    if (client == NULL || client->dying || req == NULL || opts == NULL || opts->on_done == NULL)
        return err_set(e, ERR_INVALID, "llm: client, request and on_done are required");
    const struct llm_provider_info *prov = llm_provider_find(req->provider);
    if (prov == NULL)
        return err_set(
            e, ERR_UNSUPPORTED, "llm: unknown provider '%.*s'",
            req->provider ? (int)utf8_prefix_len(req->provider, strlen(req->provider), 64) : 6,
            req->provider ? req->provider : "(none)");
    const struct llm_wire *wire = wire_for(prov->name);
    if (wire == NULL)
        return err_set(e, ERR_UNSUPPORTED, "%s: not supported by this build yet", prov->name);

    call = calloc(1, sizeof *call);
    if (call == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    call->client = client;
    call->state = CALL_DISPATCHING; /* in no list until queued */
    call->wire = wire;
    call->opts = *opts;
    call->stream_req = req->stream;
    call->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : client->o.default_timeout_ms;
    snprintf(call->provider, sizeof call->provider, "%s", prov->name);

    rc = wire->build(req, req->base_url ? req->base_url : prov->default_base_url, &call->http, e);
    if (rc != 0) {
        err_prefix(e, "%s", call->provider);
        goto out;
    }
    if (req->api_key != NULL && req->api_key[0] != '\0') {
        call->api_key = llm_strdup(req->api_key, &nomem);
        if (nomem) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    rc = url_host_port(call, e);
    if (rc != 0)
        goto out;
    if ((call->host = host_get(client, call->host_port)) == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    call->host->n_calls++;
    for (size_t i = 0; i < client->n_limits; i++)
        if (strcmp(client->limits[i].provider, call->provider) == 0)
            call->limit = &client->limits[i];
    rc = setup_easy(call, e);
    if (rc != 0)
        goto out;
    call->retry_ev = evtimer_new(client->base, on_retry, call);
    if (call->retry_ev == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    call->start_ms = clock_mono_ms();
    call_push(call, CALL_QUEUED);
    client->n_calls++;
    schedule_add(client);
    if (out != NULL)
        *out = call;
    call = NULL;
out:
    call_free(call);
    return rc;
}

void llm_call_cancel(struct llm_call *call)
{
    if (call == NULL)
        return;
    struct llm_client *c = call->client;
    switch (call->state) {
    case CALL_DISPATCHING: /* its own callback is running: the contract forbids this */
    case CALL_ZOMBIE:
        return;
    case CALL_JUDGING: /* from its on_delta during the stream's end: complete_attempt frees it */
        if (!call->cancelled) {
            call->cancelled = true;
            c->n_calls--;
        }
        return;
    case CALL_RUNNING:
        c->n_calls--;
        if (c->in_curl > 0) {
            /* libcurl is on the stack (we are in an on_delta): it cannot take a handle away
             * now; the call is removed as soon as curl_multi_socket_action returns. */
            call_move(call, CALL_ZOMBIE);
            return;
        }
        call_unlink(call);
        /* Removing a handle mid-transfer closes its connection: the server sees it go. */
        multi_remove(call);
        call_free(call);
        return;
    case CALL_BACKOFF:
    case CALL_QUEUED:
    case CALL_FINISHED:
        c->n_calls--;
        call_unlink(call);
        call_free(call);
        return;
    }
}
