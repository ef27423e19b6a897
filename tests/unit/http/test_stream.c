/*
 * test_stream.c - streaming replies (http/stream.h) against an in-process server on
 * 127.0.0.1:0, with clients made of raw non-blocking sockets. The loop and the clients run on
 * this one thread: waits drive the loop in 10 ms slices until a condition holds, with a bound.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "http/request.h"
#include "http/server.h"
#include "http/stream.h"

#define MAX_STREAMS 2048
#define MAX_CLIENTS 8
#define CLIENT_BUF (1 << 20)

struct client {
    int fd;
    char *buf; /* everything received, NUL-terminated */
    size_t len;
    bool eof;
};

struct ctx {
    struct event_base *base;
    struct http_server *srv;
    struct http_stream *streams[MAX_STREAMS]; /* NULL once closed or ended */
    size_t n_started;
    size_t n_closed;
    struct client clients[MAX_CLIENTS];
    size_t n_clients;
};

static void on_stream_close(struct http_stream *s, void *arg)
{
    struct ctx *t = arg;
    for (size_t i = 0; i < t->n_started; i++)
        if (t->streams[i] == s)
            t->streams[i] = NULL;
    t->n_closed++;
}

static void handle_stream(struct http_req *req, void *arg)
{
    struct ctx *t = arg;
    assert_true(t->n_started < MAX_STREAMS);
    http_reply_header(req, "X-Test", "yes");
    struct http_stream *s = http_stream_start(req, 200, "text/event-stream", on_stream_close, t);
    assert_non_null(s);
    t->streams[t->n_started++] = s;
}

static void handle_plain(struct http_req *req, void *arg)
{
    http_reply_json(req, 200, json_pack("{s:b}", "ok", 1));
}

static const struct http_route routes[] = {
    {HTTP_GET | HTTP_POST, "/stream", handle_stream},
    {HTTP_GET, "/plain", handle_plain},
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void client_pump(struct client *c)
{
    while (c->fd >= 0 && !c->eof && c->len < CLIENT_BUF - 1) {
        ssize_t n = recv(c->fd, c->buf + c->len, CLIENT_BUF - 1 - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
            c->buf[c->len] = '\0';
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            c->eof = true;
        } else {
            break;
        }
    }
}

/* Runs the loop for 10 ms and lets the clients read (except those that play slow readers).
 * Returns false once `deadline` has passed. */
static bool step(struct ctx *t, double deadline, bool read_clients)
{
    struct timeval slice = {0, 10 * 1000};
    event_base_loopexit(t->base, &slice);
    event_base_dispatch(t->base);
    if (read_clients)
        for (size_t i = 0; i < t->n_clients; i++)
            client_pump(&t->clients[i]);
    return now_s() < deadline;
}

#define WAIT_FOR(t, cond, seconds)                                                                 \
    do {                                                                                           \
        double deadline_ = now_s() + (seconds);                                                    \
        while (!(cond) && step((t), deadline_, true))                                              \
            ;                                                                                      \
        assert_true(cond);                                                                         \
    } while (0)

static struct ctx *ctx_new(int timeout_s)
{
    struct ctx *t = calloc(1, sizeof *t);
    assert_non_null(t);
    t->base = event_base_new();
    assert_non_null(t->base);
    struct http_server_opts opts = {
        .host = "127.0.0.1",
        .timeout_s = timeout_s,
        .routes = routes,
        .n_routes = sizeof routes / sizeof routes[0],
        .handler_arg = t,
    };
    struct err e = {0};
    assert_int_equal(http_server_new(t->base, &opts, &t->srv, &e), 0);
    return t;
}

static void ctx_free(struct ctx *t)
{
    http_server_free(t->srv);
    for (size_t i = 0; i < t->n_clients; i++) {
        if (t->clients[i].fd >= 0)
            close(t->clients[i].fd);
        free(t->clients[i].buf);
    }
    event_base_free(t->base);
    free(t);
}

/* Connects a client and sends `request`; returns it. */
static struct client *client_new(struct ctx *t, const char *request, int rcvbuf)
{
    assert_true(t->n_clients < MAX_CLIENTS);
    struct client *c = &t->clients[t->n_clients++];
    c->buf = calloc(1, CLIENT_BUF);
    assert_non_null(c->buf);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    if (rcvbuf > 0)
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)http_server_port(t->srv))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sin, sizeof sin), 0);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    size_t len = strlen(request);
    assert_int_equal(send(c->fd, request, len, 0), (ssize_t)len);
    return c;
}

static void client_close(struct client *c, bool reset)
{
    if (reset) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(c->fd);
    c->fd = -1;
}

static const char stream_get[] = "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n";

/* Decodes the chunked body after the headers of c->buf into out; returns the number of
 * chunks, or -1 when the framing is wrong. *complete says whether the last chunk came. */
static int dechunk(const char *body, size_t len, char *out, size_t *out_len, bool *complete)
{
    int n = 0;
    size_t pos = 0;
    *out_len = 0;
    *complete = false;
    while (pos < len) {
        char *end;
        unsigned long size = strtoul(body + pos, &end, 16);
        if (end == body + pos || end + 2 > body + len || memcmp(end, "\r\n", 2) != 0)
            return -1;
        pos = (size_t)(end - body) + 2;
        if (pos + size + 2 > len || memcmp(body + pos + size, "\r\n", 2) != 0)
            return -1;
        if (size == 0) {
            *complete = pos + 2 == len;
            return *complete ? n : -1;
        }
        memcpy(out + *out_len, body + pos, size);
        *out_len += size;
        pos += size + 2;
        n++;
    }
    return n;
}

static bool ends_with(const struct client *c, const char *suffix)
{
    size_t n = strlen(suffix);
    return c->len >= n && memcmp(c->buf + c->len - n, suffix, n) == 0;
}

static void test_chunks_in_order_then_end(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t, stream_get, 0);
    WAIT_FOR(t, t->n_started == 1 && strstr(c->buf, "\r\n\r\n") != NULL, 5);
    assert_int_equal(http_server_streams(t->srv), 1);
    assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(c->buf, "Content-Type: text/event-stream\r\n"));
    assert_non_null(strstr(c->buf, "Cache-Control: no-cache\r\n"));
    assert_non_null(strstr(c->buf, "X-Accel-Buffering: no\r\n"));
    assert_non_null(strstr(c->buf, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(c->buf, "X-Test: yes\r\n"));
    assert_null(strstr(c->buf, "Content-Length"));

    struct http_stream *s = t->streams[0];
    char big[3000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)('a' + i % 26);
    assert_int_equal(http_stream_write(s, "hello ", 6), 0);
    assert_int_equal(http_stream_write(s, "", 0), 0); /* nothing: not a last chunk */
    assert_int_equal(http_stream_write(s, "world\n", 6), 0);
    assert_true(http_stream_buffered(s) > 0); /* the loop has not run */
    assert_int_equal(http_stream_write(s, big, sizeof big), 0);
    http_stream_end(s);
    t->streams[0] = NULL;
    assert_int_equal(http_server_streams(t->srv), 0);
    WAIT_FOR(t, ends_with(c, "\r\n0\r\n\r\n"), 5);

    const char *body = strstr(c->buf, "\r\n\r\n") + 4;
    size_t body_len = c->len - (size_t)(body - c->buf);
    char out[4096];
    size_t out_len;
    bool complete;
    assert_int_equal(dechunk(body, body_len, out, &out_len, &complete), 3);
    assert_true(complete);
    assert_int_equal(out_len, 12 + sizeof big);
    assert_memory_equal(out, "hello world\n", 12);
    assert_memory_equal(out + 12, big, sizeof big);
    assert_int_equal(t->n_closed, 0);

    /* The connection is kept alive and serves the next request normally. */
    c->len = 0;
    c->buf[0] = '\0';
    const char plain[] = "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(send(c->fd, plain, strlen(plain), 0), (ssize_t)strlen(plain));
    WAIT_FOR(t, strstr(c->buf, "{\"ok\": true}") != NULL || strstr(c->buf, "{\"ok\":true}") != NULL,
             5);
    assert_non_null(strstr(c->buf, "HTTP/1.1 200 OK\r\n"));
    assert_false(c->eof);
    ctx_free(t);
}

/* Nothing is written: the close must still be seen at once, not at the next write. */
static void test_idle_peer_close_detected(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *a = client_new(t, stream_get, 0);
    struct client *b = client_new(t, stream_get, 0);
    WAIT_FOR(t, t->n_started == 2 && strstr(a->buf, "\r\n\r\n") && strstr(b->buf, "\r\n\r\n"), 5);
    assert_int_equal(http_server_streams(t->srv), 2);

    double t0 = now_s();
    client_close(a, false); /* FIN */
    WAIT_FOR(t, t->n_closed == 1, 1.0);
    double fin_s = now_s() - t0;
    assert_int_equal(http_server_streams(t->srv), 1);

    t0 = now_s();
    client_close(b, true); /* RST */
    WAIT_FOR(t, t->n_closed == 2, 1.0);
    double rst_s = now_s() - t0;
    assert_int_equal(http_server_streams(t->srv), 0);
    assert_null(t->streams[0]);
    assert_null(t->streams[1]);
    print_message("close seen after %.0f ms (FIN), %.0f ms (RST)\n", fin_s * 1e3, rst_s * 1e3);
    ctx_free(t);
}

/* evhttp stops reading once it has read a request body: the stream must read again. */
static void test_idle_peer_close_detected_after_body(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t,
                                  "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                  "application/json\r\nContent-Length: 2\r\n\r\n{}",
                                  0);
    WAIT_FOR(t, t->n_started == 1 && strstr(c->buf, "\r\n\r\n") != NULL, 5);
    double t0 = now_s();
    client_close(c, false);
    WAIT_FOR(t, t->n_closed == 1, 1.0);
    print_message("close seen after %.0f ms\n", (now_s() - t0) * 1e3);
    assert_int_equal(http_server_streams(t->srv), 0);
    ctx_free(t);
}

/* A peer that sends during the stream: past HTTP_STREAM_MAX_INPUT_BYTES crewd stops reading
 * it, so its close is seen at a write instead (the kernel then reports the reset). */
static void test_peer_flooding_input(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t, stream_get, 0);
    WAIT_FOR(t, t->n_started == 1 && strstr(c->buf, "\r\n\r\n") != NULL, 5);
    static char junk[256 * 1024];
    memset(junk, 'j', sizeof junk);
    size_t sent = 0;
    double deadline = now_s() + 5;
    while (sent < sizeof junk && step(t, deadline, true)) {
        ssize_t n = send(c->fd, junk + sent, sizeof junk - sent, 0);
        if (n > 0)
            sent += (size_t)n;
    }
    print_message("peer sent %zu bytes during the stream\n", sent);
    assert_true(sent > HTTP_STREAM_MAX_INPUT_BYTES);
    assert_int_equal(t->n_closed, 0);
    assert_int_equal(http_stream_write(t->streams[0], "data: x\n\n", 9), 0);
    client_close(c, false);
    deadline = now_s() + 2;
    int writes = 0;
    while (t->n_closed == 0 && step(t, deadline, true) && t->n_closed == 0) {
        assert_int_equal(http_stream_write(t->streams[0], ": ping\n\n", 8), 0);
        writes++;
    }
    assert_int_equal(t->n_closed, 1);
    print_message("close seen after %d more write(s)\n", writes);
    ctx_free(t);
}

static void test_server_free_closes_streams(void **state)
{
    struct ctx *t = ctx_new(0);
    for (int i = 0; i < 3; i++)
        client_new(t, stream_get, 0);
    WAIT_FOR(t, t->n_started == 3, 5);
    assert_int_equal(http_stream_write(t->streams[1], "pending", 7), 0);
    assert_int_equal(http_server_streams(t->srv), 3);
    http_server_free(t->srv);
    t->srv = NULL;
    assert_int_equal(t->n_closed, 3);
    for (int i = 0; i < 3; i++)
        assert_null(t->streams[i]);
    /* Leaks would be reported by LeakSanitizer at exit. */
    ctx_free(t);
}

/* A client that never reads: the kernel buffers fill, then the stream's own, then ERR_BUSY. */
static void test_slow_reader_busy(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t, stream_get, 4096);
    WAIT_FOR(t, t->n_started == 1, 5);
    struct http_stream *s = t->streams[0];
    static char piece[16 * 1024];
    memset(piece, 'x', sizeof piece);
    int rc = 0;
    size_t total = 0;
    double deadline = now_s() + 10;
    while (rc == 0 && total < (size_t)256 * 1024 * 1024) {
        rc = http_stream_write(s, piece, sizeof piece);
        if (rc == 0)
            total += sizeof piece;
        assert_true(step(t, deadline, false));
    }
    assert_int_equal(rc, ERR_BUSY);
    assert_true(http_stream_buffered(s) > HTTP_STREAM_MAX_BUFFERED_BYTES);
    assert_true(http_stream_buffered(s) <= HTTP_STREAM_MAX_BUFFERED_BYTES + sizeof piece + 16);
    print_message("ERR_BUSY after %zu bytes written, %zu buffered\n", total,
                  http_stream_buffered(s));
    assert_int_equal(t->n_closed, 0);
    http_stream_end(s);
    t->streams[0] = NULL;
    assert_int_equal(http_server_streams(t->srv), 0);
    client_close(c, true);
    ctx_free(t);
}

/* A slow reader aborted: the stream goes without on_close, the server lets go of its backlog,
 * and the client sees the connection end (after what the kernel had already taken). */
static void test_slow_reader_abort(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t, stream_get, 4096);
    WAIT_FOR(t, t->n_started == 1, 5);
    struct http_stream *s = t->streams[0];
    static char piece[16 * 1024];
    memset(piece, 'x', sizeof piece);
    double deadline = now_s() + 10;
    while (http_stream_write(s, piece, sizeof piece) == 0)
        assert_true(step(t, deadline, false));
    http_stream_abort(s);
    t->streams[0] = NULL;
    assert_int_equal(http_server_streams(t->srv), 0);
    assert_int_equal(t->n_closed, 0);
    /* The client drains what reached it, then meets the end of the connection. */
    static char sink[64 * 1024];
    bool ended = false;
    deadline = now_s() + 10;
    while (!ended && step(t, deadline, false)) {
        for (;;) {
            ssize_t n = recv(c->fd, sink, sizeof sink, 0);
            if (n > 0)
                continue;
            ended = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
            break;
        }
    }
    assert_true(ended);
    client_close(c, false);
    ctx_free(t);
}

/* HEAD: the headers only; writes are accepted and dropped, nothing is kept. */
static void test_head_writes_dropped(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t, "HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    WAIT_FOR(t, t->n_started == 1, 5);
    struct http_stream *s = t->streams[0];
    static char piece[64 * 1024];
    memset(piece, 'x', sizeof piece);
    for (int i = 0; i < 64; i++) /* 4 MiB: past the cap, were it kept */
        assert_int_equal(http_stream_write(s, piece, sizeof piece), 0);
    assert_int_equal(http_stream_buffered(s), 0);
    WAIT_FOR(t, strstr(c->buf, "\r\n\r\n") != NULL, 5);
    assert_null(strstr(c->buf, "xxxx"));
    http_stream_end(s);
    t->streams[0] = NULL;
    client_close(c, false);
    ctx_free(t);
}

/* Idle timeout 1 s: writes every 300 ms keep the stream for 3 s; silence then closes it. */
static void test_idle_timeout(void **state)
{
    struct ctx *t = ctx_new(1);
    struct client *c = client_new(t, stream_get, 0);
    WAIT_FOR(t, t->n_started == 1, 5);
    struct http_stream *s = t->streams[0];
    double end = now_s() + 3.0;
    int writes = 0;
    while (now_s() < end) {
        assert_int_equal(http_stream_write(s, ": ping\n\n", 8), 0);
        writes++;
        double next = now_s() + 0.3;
        while (step(t, next, true))
            ;
        assert_int_equal(t->n_closed, 0);
    }
    assert_int_equal(http_server_streams(t->srv), 1);
    assert_false(c->eof);
    assert_non_null(strstr(c->buf, "8\r\n: ping\n\n\r\n"));
    /* Silence: the idle timeout closes it like a dead peer, within timeout + a margin. */
    double t0 = now_s();
    WAIT_FOR(t, t->n_closed == 1, 3.0);
    print_message("%d writes over 3 s kept the stream; silence closed it after %.2f s\n", writes,
                  now_s() - t0);
    assert_int_equal(http_server_streams(t->srv), 0);
    WAIT_FOR(t, c->eof, 2.0);
    ctx_free(t);
}

/* Many streams at once (2 descriptors each here: both ends live in this process). */
static void test_many_streams(void **state)
{
    enum { N = 2000 };
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_max < 2 * N + 64) {
        print_message("skipped: RLIMIT_NOFILE hard limit %llu\n", (unsigned long long)rl.rlim_max);
        skip();
    }
    if (rl.rlim_cur < 2 * N + 64) {
        rl.rlim_cur = rl.rlim_max;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
    struct ctx *t = ctx_new(0);
    static int fds[N];
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)http_server_port(t->srv))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fds[i] >= 0);
        assert_int_equal(connect(fds[i], (struct sockaddr *)&sin, sizeof sin), 0);
        assert_int_equal(send(fds[i], stream_get, strlen(stream_get), 0),
                         (ssize_t)strlen(stream_get));
        if (i % 64 == 63) /* let the loop accept before the listen backlog fills */
            step(t, now_s() + 1, false);
    }
    WAIT_FOR(t, t->n_started == N, 30);
    assert_int_equal(http_server_streams(t->srv), N);
    double open_s = now_s() - t0;
    t0 = now_s();
    for (int i = 0; i < N; i++)
        assert_int_equal(http_stream_write(t->streams[i], ": ping\n\n", 8), 0);
    double write_s = now_s() - t0;
    for (int i = 0; i < N / 2; i++)
        close(fds[i]);
    WAIT_FOR(t, t->n_closed == N / 2, 5);
    assert_int_equal(http_server_streams(t->srv), N - N / 2);
    print_message("%d streams opened in %.2f s, one write each in %.1f ms\n", N, open_s,
                  write_s * 1e3);
    http_server_free(t->srv);
    t->srv = NULL;
    assert_int_equal(t->n_closed, N);
    for (int i = N / 2; i < N; i++)
        close(fds[i]);
    ctx_free(t);
}

/* HTTP/1.0, even asking for keep-alive: no chunking, the body ends with the connection. */
static void test_http10_body_until_close(void **state)
{
    struct ctx *t = ctx_new(0);
    struct client *c = client_new(t, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0);
    WAIT_FOR(t, t->n_started == 1 && strstr(c->buf, "\r\n\r\n") != NULL, 5);
    assert_null(strstr(c->buf, "Content-Length"));
    assert_null(strstr(c->buf, "Transfer-Encoding"));
    assert_non_null(strstr(c->buf, "Connection: close\r\n"));
    assert_int_equal(http_stream_write(t->streams[0], "data: 1\n\n", 9), 0);
    http_stream_end(t->streams[0]);
    t->streams[0] = NULL;
    WAIT_FOR(t, c->eof, 5);
    assert_true(ends_with(c, "\r\n\r\ndata: 1\n\n"));
    assert_int_equal(t->n_closed, 0);
    ctx_free(t);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunks_in_order_then_end),
        cmocka_unit_test(test_idle_peer_close_detected),
        cmocka_unit_test(test_idle_peer_close_detected_after_body),
        cmocka_unit_test(test_peer_flooding_input),
        cmocka_unit_test(test_server_free_closes_streams),
        cmocka_unit_test(test_slow_reader_busy),
        cmocka_unit_test(test_slow_reader_abort),
        cmocka_unit_test(test_head_writes_dropped),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_http10_body_until_close),
        cmocka_unit_test(test_many_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
