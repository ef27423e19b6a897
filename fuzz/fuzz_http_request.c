/*
 * fuzz_http_request.c - raw bytes from a client, through the whole front door: libevent's
 * HTTP parser, crewd's checks (framing, decoding, limits, auth, routing), its replacement of
 * libevent's error pages, and the crew API handlers over an in-memory SQLite store.
 *
 * One server lives for the whole run on 127.0.0.1:0; each input is one TCP connection that
 * writes the bytes, half-closes, and reads until the server closes. A server that does not
 * close within 10 s is a hang and aborts the run.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "core/log.h"
#include "http/server.h"
#include "store/store.h"
#include "tools/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct harness {
    struct event_base *base;
    struct store *store;
    struct tool_registry *tools;
    struct api_ctx ctx;
    struct http_server *server;
    long inputs;
};

static void harness_init(struct harness *h)
{
    struct err e = {0};
    log_set_level(LOG_ERROR);
    h->base = event_base_new();
    if (h->base == NULL || store_open("sqlite::memory:", &h->store, &e) != 0 ||
        tool_registry_new(&h->tools) != 0) {
        fprintf(stderr, "fuzz_http_request: set-up failed: %s\n", err_text(&e));
        abort();
    }
    h->ctx = (struct api_ctx){.store = h->store, .tools = h->tools, .default_provider = "openai"};
    static const char *const keys[] = {"fuzz-key"};
    static const char *const origins[] = {"http://app.example"};
    struct http_server_opts opts = {
        .host = "127.0.0.1",
        .max_body_bytes = 16 * 1024,
        .max_header_bytes = 4 * 1024,
        .timeout_s = 5,
        /* Keys only guard /api/ when an input sends the right one, which the corpus does. */
        .api_keys = keys,
        .n_api_keys = 1,
        .cors_origins = origins,
        .n_cors_origins = 1,
        .handler_arg = &h->ctx,
    };
    opts.routes = api_routes(&opts.n_routes);
    if (http_server_new(h->base, &opts, &h->server, &e) != 0) {
        fprintf(stderr, "fuzz_http_request: %s\n", err_text(&e));
        abort();
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct event_base *base = arg;
    if (what & EV_TIMEOUT) {
        fprintf(stderr, "fuzz_http_request: the server neither answered nor closed in 10 s\n");
        abort();
    }
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n <= 0)
        event_base_loopbreak(base);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct harness h;
    if (h.base == NULL)
        harness_init(&h);
    if (size > 64 * 1024)
        return 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)http_server_port(h.server))};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("fuzz_http_request: connect");
        abort();
    }
    /* Loopback buffers hold 64 KiB, so a blocking write cannot wait on the server here. */
    size_t off = 0;
    while (off < size) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server closed early: that is an answer too */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    evutil_make_socket_nonblocking(fd);
    struct event *ev = event_new(h.base, fd, EV_READ | EV_PERSIST, on_readable, h.base);
    struct timeval limit = {10, 0};
    event_add(ev, &limit);
    event_base_dispatch(h.base);
    event_free(ev);
    close(fd);
    h.inputs++;
    return 0;
}
