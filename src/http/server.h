/*
 * server.h - crewd's HTTP/1.1 front door on libevent's evhttp.
 *
 * Before any handler runs, the server enforces what every route needs: size limits (body,
 * headers), one unambiguous body length (two different Content-Length headers, or one with
 * Transfer-Encoding, are refused and the connection closed), JSON-only bodies (415), UTF-8
 * paths and query values, API-key auth on /api/ routes, CORS preflight, and 404/405 from the
 * route table. Every answer, including those libevent itself produces, is a JSON body
 * {"message", "status"} (docs/internals/http.md explains how libevent's are replaced).
 *
 * Runs on the loop thread; knows nothing of crews.
 */
#ifndef CREWD_HTTP_SERVER_H
#define CREWD_HTTP_SERVER_H

#include <event2/event.h>
#include <stddef.h>

#include "core/err.h"
#include "http/router.h"

#define HTTP_DEFAULT_MAX_BODY_BYTES (1024 * 1024)
#define HTTP_DEFAULT_MAX_HEADER_BYTES (16 * 1024)
#define HTTP_DEFAULT_TIMEOUT_S 60

/* Told of every reply the server sends: `route` is the matched route's pattern, or
 * "unmatched" when the request was answered without a route (404, 405, 401, 413, an
 * OPTIONS, libevent's own errors); `method` is "GET", ... (http_method_name). Loop thread. */
typedef void (*http_reply_cb)(void *arg, const char *route, const char *method, int status);

struct http_server_opts {
    const char *host;            /* numeric address to bind, e.g. "127.0.0.1" */
    int port;                    /* 0: any free port (see http_server_port) */
    size_t max_body_bytes;       /* 0: HTTP_DEFAULT_MAX_BODY_BYTES */
    size_t max_header_bytes;     /* 0: HTTP_DEFAULT_MAX_HEADER_BYTES */
    int json_max_depth;          /* 0: JSON_DEPTH_DEFAULT_MAX */
    int timeout_s;               /* idle connection timeout; 0: HTTP_DEFAULT_TIMEOUT_S */
    const char *const *api_keys; /* when n_api_keys > 0, /api/ needs "Bearer <key>" */
    size_t n_api_keys;
    const char *const *cors_origins; /* "*" allows any origin */
    size_t n_cors_origins;
    const struct http_route *routes; /* borrowed; must outlive the server */
    size_t n_routes;
    void *handler_arg; /* passed to every handler */
    http_reply_cb on_reply; /* optional (metrics) */
    void *on_reply_arg;
};

struct http_server;

/* Binds and starts serving on `base`. The strings and arrays of `opts` are copied, except
 * routes. Returns 0, ERR_IO (bind failed, message says why), ERR_INVALID, or ERR_NOMEM. */
int http_server_new(struct event_base *base, const struct http_server_opts *opts,
                    struct http_server **out, struct err *e);

/* The port actually bound (useful after asking for port 0). */
int http_server_port(const struct http_server *srv);

/* Stops accepting connections (graceful shutdown: a load balancer sends new clients
 * elsewhere); connections already open are still served. NULL-safe. */
void http_server_stop_accepting(struct http_server *srv);

/* Closes the listener and every connection. NULL-safe. */
void http_server_free(struct http_server *srv);

#endif
