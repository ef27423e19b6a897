/*
 * test_llm_client.c - the real LLM client (llm.c) against a real HTTP server inside the test:
 * libevent's evhttp on 127.0.0.1:0, on the same event_base, answering each request from a
 * per-test script and counting the connections it accepts and sees close. Nothing sleeps:
 * each wait runs the loop until a condition holds, under a guard timer that fails the test
 * with a message if it fires.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "llm/llm.h"

#define FIXTURES CREWD_SOURCE_DIR "/tests/fixtures/openai/"
#define GUARD_MS 10000

/* ---- the scripted server ---- */

struct step {
    int status;
    const char *header; /* "Name: value" or NULL */
    const char *body;   /* NULL: the OK body */
    size_t body_len;    /* 0: strlen(body) */
    bool hold;          /* never answer */
    long delay_ms;      /* answer later */
    bool stream;        /* text/event-stream, sent in chunks */
};

#define MAX_CONNS 512

struct srv {
    struct event_base *base;
    struct evhttp *http;
    int port;
    const struct step *steps;
    size_t n_steps;
    int n_requests;
    int n_accepted;
    int open, max_open, n_closed;
    struct conn_rec {
        struct srv *srv;
        struct evhttp_connection *conn;
        struct event *watch; /* EOF watch while a request is held */
        bool closed;
    } seen[MAX_CONNS];
    int n_seen;
    char last_auth[256];
    char last_body[4096];
    int pending_replies;
};

static const char OK_BODY[] =
    "{\"id\":\"c1\",\"object\":\"chat.completion\",\"model\":\"gpt-test\",\"choices\":[{\"index\":"
    "0,"
    "\"message\":{\"role\":\"assistant\",\"content\":\"Hello there\"},\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7,"
    "\"prompt_tokens_details\":{\"cached_tokens\":3}}}";

static char *g_stream_body; /* the recorded "text" stream, loaded once */

static void conn_closed(struct conn_rec *c)
{
    if (c->watch != NULL) {
        event_free(c->watch);
        c->watch = NULL;
    }
    if (c->closed)
        return;
    c->closed = true;
    c->srv->open--;
    c->srv->n_closed++;
}

static void on_conn_close(struct evhttp_connection *conn, void *arg)
{
    struct srv *s = arg;
    for (int i = 0; i < s->n_seen; i++) {
        if (s->seen[i].conn == conn && !s->seen[i].closed)
            conn_closed(&s->seen[i]);
    }
}

/* evhttp 2.1 does not read from a connection whose request awaits its reply, so it would only
 * notice the client leaving at the next write; this watch sees the EOF itself. */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    struct conn_rec *c = arg;
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
        conn_closed(c);
        return;
    }
    event_free(c->watch); /* data, not EOF: evhttp's business */
    c->watch = NULL;
}

static struct bufferevent *on_accept_bev(struct event_base *base, void *arg)
{
    struct srv *s = arg;
    s->n_accepted++;
    return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static void send_step(struct evhttp_request *req, const struct step *st)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    if (st->header != NULL) {
        char name[64];
        const char *colon = strchr(st->header, ':');
        snprintf(name, sizeof name, "%.*s", (int)(colon - st->header), st->header);
        evhttp_add_header(out, name, colon + 2);
    }
    struct evbuffer *buf = evbuffer_new();
    if (st->stream) {
        evhttp_add_header(out, "Content-Type", "text/event-stream");
        evhttp_send_reply_start(req, st->status, "OK");
        /* Uneven chunks so events straddle them. */
        size_t len = strlen(g_stream_body), off = 0, step = 333;
        while (off < len) {
            size_t n = len - off < step ? len - off : step;
            evbuffer_add(buf, g_stream_body + off, n);
            evhttp_send_reply_chunk(req, buf);
            off += n;
        }
        evhttp_send_reply_end(req);
    } else {
        const char *body = st->body ? st->body : OK_BODY;
        size_t len = st->body_len ? st->body_len : strlen(body);
        evhttp_add_header(out, "Content-Type", "application/json");
        evbuffer_add(buf, body, len);
        evhttp_send_reply(req, st->status, "X", buf);
    }
    evbuffer_free(buf);
}

struct delayed {
    struct srv *srv;
    struct evhttp_request *req;
    const struct step *st;
    struct event *ev;
};

static void on_delayed(evutil_socket_t fd, short what, void *arg)
{
    struct delayed *d = arg;
    send_step(d->req, d->st);
    d->srv->pending_replies--;
    event_free(d->ev);
    free(d);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    struct conn_rec *rec = NULL;
    for (int i = 0; i < s->n_seen; i++) {
        if (s->seen[i].conn == conn && !s->seen[i].closed)
            rec = &s->seen[i];
    }
    if (rec == NULL && s->n_seen < MAX_CONNS) {
        rec = &s->seen[s->n_seen++];
        rec->srv = s;
        rec->conn = conn;
        s->open++;
        if (s->open > s->max_open)
            s->max_open = s->open;
        evhttp_connection_set_closecb(conn, on_conn_close, s);
    }
    const char *auth = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    snprintf(s->last_auth, sizeof s->last_auth, "%s", auth ? auth : "");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    if (n >= sizeof s->last_body)
        n = sizeof s->last_body - 1;
    evbuffer_copyout(in, s->last_body, n);
    s->last_body[n] = '\0';

    size_t k = (size_t)s->n_requests < s->n_steps ? (size_t)s->n_requests : s->n_steps - 1;
    s->n_requests++;
    const struct step *st = &s->steps[k];
    if (st->hold) {
        if (rec != NULL && rec->watch == NULL) {
            evutil_socket_t fd = bufferevent_getfd(evhttp_connection_get_bufferevent(conn));
            rec->watch = event_new(s->base, fd, EV_READ, on_watch, rec);
            event_add(rec->watch, NULL);
        }
        return;
    }
    if (st->delay_ms > 0) {
        struct delayed *d = calloc(1, sizeof *d);
        d->srv = s;
        d->req = req;
        d->st = st;
        d->ev = evtimer_new(s->base, on_delayed, d);
        struct timeval tv = {0, st->delay_ms * 1000};
        evtimer_add(d->ev, &tv);
        s->pending_replies++;
        return;
    }
    send_step(req, st);
}

static void srv_start(struct srv *s, struct event_base *base, const struct step *steps,
                      size_t n_steps)
{
    memset(s, 0, sizeof *s);
    s->base = base;
    s->steps = steps;
    s->n_steps = n_steps;
    s->http = evhttp_new(base);
    assert_non_null(s->http);
    evhttp_set_gencb(s->http, on_request, s);
    evhttp_set_bevcb(s->http, on_accept_bev, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    s->port = ntohs(sin.sin_port);
}

/* ---- client side ---- */

struct result {
    int n_done;
    int rc;
    struct err e;
    struct llm_response *resp;
    struct llm_call_info info;
    char deltas[16384];
    size_t n_delta_bytes;
    /* re-entrancy hooks */
    struct llm_client *client;
    struct llm_call *to_cancel;
    struct result *chained;
    const struct llm_request *chain_req;
    struct llm_call *cancel_on_delta; /* cancelled from its first delta */
    bool free_client;                 /* on_done frees r->client */
};

static void on_done(void *arg, int rc, struct llm_response *resp, const struct err *e,
                    const struct llm_call_info *info)
{
    struct result *r = arg;
    r->n_done++;
    r->rc = rc;
    if (e != NULL)
        r->e = *e;
    r->info = *info;
    llm_response_free(r->resp);
    r->resp = resp;
    if (rc == 0)
        assert_non_null(resp);
    else
        assert_null(resp);
    if (r->to_cancel != NULL) {
        llm_call_cancel(r->to_cancel);
        r->to_cancel = NULL;
    }
    if (r->chained != NULL) {
        struct llm_call_opts o = {.on_done = on_done, .arg = r->chained};
        struct err e2 = {0};
        assert_int_equal(llm_call_start(r->client, r->chain_req, &o, NULL, &e2), 0);
        r->chained = NULL;
    }
    if (r->free_client)
        llm_client_free(r->client);
}

static void on_delta(void *arg, const char *text, size_t len)
{
    struct result *r = arg;
    assert_true(r->n_delta_bytes + len < sizeof r->deltas);
    memcpy(r->deltas + r->n_delta_bytes, text, len);
    r->n_delta_bytes += len;
    if (r->cancel_on_delta != NULL) {
        llm_call_cancel(r->cancel_on_delta); /* libcurl is on the stack here */
        r->cancel_on_delta = NULL;
    }
}

static void result_free(struct result *r)
{
    llm_response_free(r->resp);
    r->resp = NULL;
}

typedef bool (*cond_fn)(void *arg);

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Runs the loop until cond(arg) holds; fails after GUARD_MS. */
static void run_until(struct event_base *base, cond_fn cond, void *arg, const char *what)
{
    bool fired = false;
    struct event *guard = evtimer_new(base, on_guard, &fired);
    struct timeval tv = {GUARD_MS / 1000, 0};
    evtimer_add(guard, &tv);
    while (!cond(arg) && !fired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    if (fired)
        fail_msg("timed out after %d ms waiting for: %s", GUARD_MS, what);
}

/* A few loop turns without blocking: lets anything already due happen. */
static void spin(struct event_base *base)
{
    for (int i = 0; i < 20; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

static bool done_1(void *arg)
{
    return ((struct result *)arg)->n_done >= 1;
}

struct fixture {
    struct event_base *base;
    struct srv srv;
    struct llm_client *client;
    char base_url[64];
    struct llm_message msg;
    struct llm_request req;
};

static void fx_start(struct fixture *f, const struct step *steps, size_t n_steps,
                     const struct llm_client_opts *opts)
{
    memset(f, 0, sizeof *f);
    f->base = event_base_new();
    assert_non_null(f->base);
    srv_start(&f->srv, f->base, steps, n_steps);
    struct err e = {0};
    assert_int_equal(llm_client_new(f->base, opts, &f->client, &e), 0);
    snprintf(f->base_url, sizeof f->base_url, "http://127.0.0.1:%d/v1/", f->srv.port);
    f->msg = (struct llm_message){.role = LLM_ROLE_USER, .content = "Hi"};
    f->req = (struct llm_request){.provider = "openai",
                                  .model = "gpt-test",
                                  .base_url = f->base_url,
                                  .api_key = "sk-test-secret-123",
                                  .messages = &f->msg,
                                  .n_messages = 1,
                                  .temperature = -1};
}

static void fx_stop(struct fixture *f)
{
    llm_client_free(f->client);
    evhttp_free(f->srv.http);
    for (int i = 0; i < f->srv.n_seen; i++) {
        if (f->srv.seen[i].watch)
            event_free(f->srv.seen[i].watch);
    }
    event_base_free(f->base);
}

static struct llm_call *start(struct fixture *f, struct result *r)
{
    struct llm_call_opts o = {.on_done = on_done, .on_delta = on_delta, .arg = r};
    struct llm_call *call = NULL;
    struct err e = {0};
    int rc = llm_call_start(f->client, &f->req, &o, &call, &e);
    if (rc != 0)
        fail_msg("llm_call_start: %s", e.msg);
    assert_int_equal(r->n_done, 0); /* never from inside llm_call_start */
    return call;
}

/* ---- tests ---- */

static void test_plain_call(void **state)
{
    static const struct step steps[] = {{.status = 200}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r = {0};
    start(&f, &r);
    assert_int_equal(llm_client_active(f.client), 1);
    run_until(f.base, done_1, &r, "the call's callback");
    assert_int_equal(r.rc, 0);
    assert_string_equal(r.resp->text, "Hello there");
    assert_string_equal(r.resp->model, "gpt-test");
    assert_string_equal(r.resp->finish_reason, "stop");
    assert_int_equal(r.resp->usage.total_tokens, 7);
    assert_int_equal(r.resp->usage.cached_tokens, 3);
    assert_int_equal(r.info.attempts, 1);
    assert_int_equal(r.info.http_status, 200);
    assert_true(r.info.latency_s >= 0);
    assert_string_equal(f.srv.last_auth, "Bearer sk-test-secret-123");
    assert_non_null(strstr(f.srv.last_body, "\"model\":\"gpt-test\""));
    assert_int_equal(llm_client_active(f.client), 0);
    spin(f.base);
    assert_int_equal(r.n_done, 1);
    result_free(&r);
    fx_stop(&f);
}

#define N_MANY 100

struct many {
    struct result r[N_MANY];
};

static bool all_done(void *arg)
{
    struct many *m = arg;
    for (int i = 0; i < N_MANY; i++) {
        if (m->r[i].n_done == 0)
            return false;
    }
    return true;
}

static void test_connection_cap_and_reuse(void **state)
{
    static const struct step steps[] = {{.status = 200, .delay_ms = 5}};
    struct llm_client_opts o = {.max_host_connections = 4, .add_batch = 10};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    struct many *m = calloc(1, sizeof *m);
    for (int i = 0; i < N_MANY; i++)
        start(&f, &m->r[i]);
    assert_int_equal(llm_client_active(f.client), N_MANY);
    run_until(f.base, all_done, m, "100 calls");
    for (int i = 0; i < N_MANY; i++) {
        assert_int_equal(m->r[i].n_done, 1);
        assert_int_equal(m->r[i].rc, 0);
        result_free(&m->r[i]);
    }
    assert_int_equal(f.srv.n_requests, N_MANY);
    print_message("connections: accepted %d, most open at once %d\n", f.srv.n_accepted,
                  f.srv.max_open);
    assert_true(f.srv.max_open <= 4);
    assert_true(f.srv.n_accepted <= 4); /* every connection reused */
    assert_true(f.srv.max_open >= 2);   /* and the calls did run side by side */
    free(m);
    fx_stop(&f);
}

static void test_429_retry_after(void **state)
{
    /* Backoff is set far beyond the guard: only the server's header can make this pass. */
    struct llm_client_opts o = {.backoff_base_ms = 60000, .backoff_max_ms = 60000};
    static const struct step s1[] = {{.status = 429,
                                      .header = "Retry-After: 0",
                                      .body = "{\"error\":{\"message\":\"slow down\"}}"},
                                     {.status = 200}};
    static const struct step s2[] = {{.status = 429, .header = "retry-after-ms: 20", .body = "{}"},
                                     {.status = 200}};
    const struct step *scripts[] = {s1, s2};
    for (int i = 0; i < 2; i++) {
        struct fixture f;
        fx_start(&f, scripts[i], 2, &o);
        struct result r = {0};
        start(&f, &r);
        run_until(f.base, done_1, &r, "a call retried after 429");
        assert_int_equal(r.rc, 0);
        assert_int_equal(r.info.attempts, 2);
        assert_int_equal(f.srv.n_requests, 2);
        assert_string_equal(r.resp->text, "Hello there");
        result_free(&r);
        fx_stop(&f);
    }
}

static void test_retry_after_beyond_the_cap_fails_now(void **state)
{
    /* The provider asks for 120 s; crewd waits at most 5 s: a retry sooner would be refused
     * again and spend quota, so the call fails at once with the reason. */
    struct llm_client_opts o = {.backoff_base_ms = 1, .backoff_max_ms = 5000};
    static const struct step steps[] = {{.status = 429,
                                         .header = "Retry-After: 120",
                                         .body = "{\"error\":{\"message\":\"slow down\"}}"},
                                        {.status = 200}};
    struct fixture f;
    fx_start(&f, steps, 2, &o);
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a 429 asking for 120 s");
    assert_int_equal(r.rc, ERR_IO);
    assert_string_equal(r.e.msg, "openai: HTTP 429: slow down (not retried: the provider asks "
                                 "to wait 120000 ms, more than the 5000 ms crewd waits)");
    assert_int_equal(r.info.attempts, 1);
    assert_false(r.info.retryable);
    assert_int_equal(f.srv.n_requests, 1);
    fx_stop(&f);
}

static void test_400_not_retried(void **state)
{
    static const struct step steps[] = {
        {.status = 400,
         .body = "{\"error\":{\"message\":\"Invalid model: gpt-test\",\"type\":"
                 "\"invalid_request_error\",\"param\":null,\"code\":null}}"},
        {.status = 200}};
    struct fixture f;
    fx_start(&f, steps, 2, NULL);
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a 400");
    assert_int_equal(r.rc, ERR_IO);
    assert_string_equal(r.e.msg, "openai: HTTP 400: Invalid model: gpt-test");
    assert_int_equal(r.info.attempts, 1);
    assert_int_equal(r.info.http_status, 400);
    assert_false(r.info.retryable);
    assert_int_equal(f.srv.n_requests, 1);
    fx_stop(&f);
}

static void test_key_never_in_message(void **state)
{
    static const struct step steps[] = {
        {.status = 401,
         .body = "{\"error\":{\"message\":\"Incorrect API key provided: "
                 "sk-test-secret-123. Check it.\"}}"}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a 401");
    assert_string_equal(r.e.msg,
                        "openai: HTTP 401: Incorrect API key provided: [redacted]. Check it.");
    fx_stop(&f);
}

static void test_500_gives_up(void **state)
{
    static const struct step steps[] = {
        {.status = 500, .body = "{\"error\":{\"message\":\"boom\"}}"}};
    struct llm_client_opts o = {.max_attempts = 3, .backoff_base_ms = 1, .backoff_max_ms = 5};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "three 500s");
    assert_int_equal(r.rc, ERR_IO);
    assert_string_equal(r.e.msg, "openai: HTTP 500: boom");
    assert_int_equal(r.info.attempts, 3);
    assert_true(r.info.retryable);
    assert_int_equal(f.srv.n_requests, 3);
    fx_stop(&f);
}

static void test_timeout(void **state)
{
    static const struct step steps[] = {{.hold = true}};
    struct llm_client_opts o = {.max_attempts = 1};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    f.req.timeout_ms = 100;
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a timeout");
    assert_int_equal(r.rc, ERR_IO);
    assert_string_equal(r.e.msg, "openai: timed out after 100 ms");
    assert_true(r.info.retryable);
    assert_int_equal(r.info.http_status, 0);
    fx_stop(&f);
}

static void test_connection_refused(void **state)
{
    static const struct step steps[] = {{.status = 200}};
    struct llm_client_opts o = {.max_attempts = 1};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    /* A port that was just free and is now closed. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sin;
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    char url[64], want[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1", ntohs(sin.sin_port));
    snprintf(want, sizeof want, "openai: cannot connect to 127.0.0.1:%d: Connection refused",
             ntohs(sin.sin_port));
    f.req.base_url = url;
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a refused connection");
    assert_int_equal(r.rc, ERR_IO);
    assert_string_equal(r.e.msg, want);
    assert_int_equal(r.info.attempts, 1);
    assert_true(r.info.retryable);
    fx_stop(&f);
}

static bool got_request(void *arg)
{
    return ((struct srv *)arg)->n_requests >= 1;
}

static bool one_closed(void *arg)
{
    return ((struct srv *)arg)->n_closed >= 1;
}

static void test_cancel_mid_flight(void **state)
{
    static const struct step steps[] = {{.hold = true}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r = {0};
    struct llm_call *call = start(&f, &r);
    run_until(f.base, got_request, &f.srv, "the server to get the request");
    llm_call_cancel(call);
    assert_int_equal(llm_client_active(f.client), 0);
    run_until(f.base, one_closed, &f.srv, "the server to see the connection close");
    spin(f.base);
    assert_int_equal(r.n_done, 0);
    fx_stop(&f);
}

static void test_reply_too_large(void **state)
{
    static char big[5000];
    memset(big, 'x', sizeof big);
    static const struct step steps[] = {{.status = 200, .body = big, .body_len = sizeof big}};
    struct llm_client_opts o = {.max_reply_bytes = 1000};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "an oversized reply");
    assert_int_equal(r.rc, ERR_TOO_LARGE);
    assert_string_equal(r.e.msg, "openai: reply larger than 1000 bytes (max_reply_bytes)");
    assert_int_equal(r.info.attempts, 1);
    assert_int_equal(f.srv.n_requests, 1);
    fx_stop(&f);
}

static void test_not_json_reply(void **state)
{
    static const struct step steps[] = {{.status = 200, .body = "<html>oops</html>"}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a reply that is not JSON");
    assert_int_equal(r.rc, ERR_INVALID);
    assert_string_equal(r.e.msg, "openai: reply is not valid JSON");
    assert_int_equal(r.info.attempts, 1);
    fx_stop(&f);
}

static void test_streaming(void **state)
{
    static const struct step steps[] = {{.status = 200, .stream = true}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    f.req.stream = true;
    struct result r = {0};
    start(&f, &r);
    run_until(f.base, done_1, &r, "a streamed reply");
    if (r.rc != 0)
        fail_msg("%s", r.e.msg);
    const char *want = "I'm unable to provide real-time weather updates. To get the current "
                       "weather in San Francisco, I recommend checking a reliable weather "
                       "website or a weather app.";
    assert_string_equal(r.resp->text, want);
    assert_int_equal(r.n_delta_bytes, strlen(want));
    assert_memory_equal(r.deltas, want, strlen(want));
    assert_int_equal(r.resp->usage.total_tokens, 44);
    assert_non_null(strstr(f.srv.last_body, "\"stream\":true"));
    result_free(&r);
    fx_stop(&f);
}

static bool both_done(void *arg)
{
    struct result *r = arg;
    return r[0].n_done >= 1 && r[1].n_done >= 1;
}

static void test_callback_starts_call(void **state)
{
    static const struct step steps[] = {{.status = 200}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r[2] = {{0}};
    r[0].client = f.client;
    r[0].chained = &r[1];
    r[0].chain_req = &f.req;
    start(&f, &r[0]);
    run_until(f.base, both_done, r, "a call started from a callback");
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[1].rc, 0);
    spin(f.base);
    assert_int_equal(r[0].n_done, 1);
    assert_int_equal(r[1].n_done, 1);
    assert_int_equal(f.srv.n_requests, 2);
    result_free(&r[0]);
    result_free(&r[1]);
    fx_stop(&f);
}

static void test_callback_cancels_other(void **state)
{
    /* First request answered at once, the second held; the first's callback cancels it. */
    static const struct step steps[] = {{.status = 200, .delay_ms = 20}, {.hold = true}};
    struct llm_client_opts o = {.max_host_connections = 2};
    struct fixture f;
    fx_start(&f, steps, 2, &o);
    struct result a = {0}, b = {0};
    start(&f, &a);
    a.to_cancel = start(&f, &b);
    run_until(f.base, done_1, &a, "the first call");
    run_until(f.base, one_closed, &f.srv, "the cancelled call's connection to close");
    spin(f.base);
    assert_int_equal(a.n_done, 1);
    assert_int_equal(b.n_done, 0);
    assert_int_equal(llm_client_active(f.client), 0);
    result_free(&a);
    fx_stop(&f);
}

static bool n_requests_3(void *arg)
{
    return ((struct srv *)arg)->n_requests >= 3;
}

static bool all_closed_3(void *arg)
{
    return ((struct srv *)arg)->n_closed >= 3;
}

static void test_free_with_calls_in_flight(void **state)
{
    static const struct step steps[] = {{.hold = true}};
    struct llm_client_opts o = {.max_host_connections = 3};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    struct result r[8] = {{0}};
    for (int i = 0; i < 8; i++)
        start(&f, &r[i]); /* 3 in flight, 5 waiting for a connection */
    run_until(f.base, n_requests_3, &f.srv, "three requests in flight");
    llm_client_free(f.client);
    f.client = NULL;
    run_until(f.base, all_closed_3, &f.srv, "the server to see three closes");
    spin(f.base);
    for (int i = 0; i < 8; i++)
        assert_int_equal(r[i].n_done, 0);
    fx_stop(&f);
}

static void test_cancel_from_own_delta(void **state)
{
    static const struct step steps[] = {{.status = 200, .stream = true}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    f.req.stream = true;
    struct result r = {0};
    r.cancel_on_delta = start(&f, &r);
    run_until(f.base, one_closed, &f.srv, "the connection of a call cancelled from on_delta");
    spin(f.base);
    assert_int_equal(r.n_done, 0);
    assert_true(r.n_delta_bytes > 0);
    fx_stop(&f);
}

static bool any_done(void *arg)
{
    struct result *r = arg;
    return r[0].n_done + r[1].n_done + r[2].n_done >= 1;
}

static void test_free_from_callback(void **state)
{
    static const struct step steps[] = {{.status = 200}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        r[i].client = f.client;
        r[i].free_client = true;
        start(&f, &r[i]);
    }
    run_until(f.base, any_done, r, "the first callback");
    f.client = NULL; /* freed by that callback */
    spin(f.base);
    assert_int_equal(r[0].n_done + r[1].n_done + r[2].n_done, 1);
    for (int i = 0; i < 3; i++)
        result_free(&r[i]);
    fx_stop(&f);
}

static void test_unsupported_and_invalid(void **state)
{
    static const struct step steps[] = {{.status = 200}};
    struct fixture f;
    fx_start(&f, steps, 1, NULL);
    struct result r = {0};
    struct llm_call_opts o = {.on_done = on_done, .arg = &r};
    struct err e = {0};
    /* Every provider in provider.c has a wire now; an unknown name is still refused. */
    f.req.provider = "nope";
    assert_int_equal(llm_call_start(f.client, &f.req, &o, NULL, &e), ERR_UNSUPPORTED);
    assert_string_equal(e.msg, "llm: unknown provider 'nope'");
    f.req.provider = "ollama";
    f.req.model = NULL;
    assert_int_equal(llm_call_start(f.client, &f.req, &o, NULL, &e), ERR_INVALID);
    assert_string_equal(e.msg, "ollama: model: required");
    f.req.model = "m";
    f.req.base_url = "ftp://127.0.0.1/v1";
    assert_int_equal(llm_call_start(f.client, &f.req, &o, NULL, &e), ERR_INVALID);
    assert_string_equal(e.msg, "ollama: base_url must be http or https");
    spin(f.base);
    assert_int_equal(r.n_done, 0);
    assert_int_equal(llm_client_active(f.client), 0);
    fx_stop(&f);
}

static int load_stream(void **state)
{
    json_error_t je;
    json_t *rs = json_load_file(FIXTURES "recorded-streams.json", 0, &je);
    assert_non_null(rs);
    const json_t *rec = json_array_get(json_object_get(rs, "recordings"), 0);
    assert_string_equal(json_string_value(json_object_get(rec, "name")), "text");
    g_stream_body = strdup(json_string_value(json_object_get(rec, "sse_raw")));
    json_decref(rs);
    return 0;
}

static int free_stream(void **state)
{
    free(g_stream_body);
    return 0;
}

/* Host A takes the total cap; host B's queued call must still run once A's transfer ends
 * (admission used to be re-armed only for the finishing call's own host). */
static void test_total_cap_shared_by_hosts(void **state)
{
    static const struct step steps[] = {{.status = 200, .delay_ms = 5}};
    struct llm_client_opts o = {.max_host_connections = 1, .max_total_connections = 1};
    struct fixture f;
    fx_start(&f, steps, 1, &o);
    char url2[64];
    snprintf(url2, sizeof url2, "http://localhost:%d/v1/", f.srv.port);
    struct result a = {0}, b = {0};
    start(&f, &a); /* host 127.0.0.1:P */
    struct llm_request r2 = f.req;
    r2.base_url = url2; /* host localhost:P: another host key, same server */
    struct llm_call_opts ob = {.on_done = on_done, .arg = &b};
    struct err e = {0};
    assert_int_equal(llm_call_start(f.client, &r2, &ob, NULL, &e), 0);
    run_until(f.base, done_1, &b, "call on host B");
    run_until(f.base, done_1, &a, "call on host A (queued behind the total cap)");
    result_free(&a);
    result_free(&b);
    fx_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_total_cap_shared_by_hosts),
        cmocka_unit_test(test_plain_call),
        cmocka_unit_test(test_connection_cap_and_reuse),
        cmocka_unit_test(test_429_retry_after),
        cmocka_unit_test(test_retry_after_beyond_the_cap_fails_now),
        cmocka_unit_test(test_400_not_retried),
        cmocka_unit_test(test_key_never_in_message),
        cmocka_unit_test(test_500_gives_up),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_cancel_mid_flight),
        cmocka_unit_test(test_reply_too_large),
        cmocka_unit_test(test_not_json_reply),
        cmocka_unit_test(test_streaming),
        cmocka_unit_test(test_callback_starts_call),
        cmocka_unit_test(test_callback_cancels_other),
        cmocka_unit_test(test_free_with_calls_in_flight),
        cmocka_unit_test(test_cancel_from_own_delta),
        cmocka_unit_test(test_free_from_callback),
        cmocka_unit_test(test_unsupported_and_invalid),
    };
    return cmocka_run_group_tests(tests, load_stream, free_stream);
}
