/*
 * router.h - matches a method and a decoded path against a table of routes.
 *
 * Patterns are literal segments and `{name}` captures ("/api/v1/crew/{crew}"); a capture
 * matches exactly one non-empty segment. The router knows nothing of crews: the table lives
 * with the API (api/api.c). A path that matches a pattern under another method yields 405
 * and the set of methods that would match (for the Allow header). Read-only after set-up.
 */
#ifndef CREWD_HTTP_ROUTER_H
#define CREWD_HTTP_ROUTER_H

#include <stddef.h>

enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_HEAD = 1 << 1,
    HTTP_PUT = 1 << 2,
    HTTP_POST = 1 << 3,
    HTTP_PATCH = 1 << 4,
    HTTP_DELETE = 1 << 5,
    HTTP_OPTIONS = 1 << 6,
    HTTP_OTHER = 1 << 7,
};

struct http_req;

/* A handler answers with exactly one http_reply_* call on `req` (see request.h). */
typedef void (*http_handler_cb)(struct http_req *req, void *arg);

struct http_route {
    unsigned methods;    /* HTTP_* bits; HEAD is served by GET routes */
    const char *pattern; /* "/a/{x}/b" */
    http_handler_cb handler;
};

#define HTTP_ROUTER_MAX_SEGMENTS 16
#define HTTP_ROUTER_MAX_PARAMS 4

/* The segments of a request path, already percent-decoded (borrowed). */
struct http_path {
    const char *seg[HTTP_ROUTER_MAX_SEGMENTS];
    size_t n_seg;
};

struct http_match {
    const struct http_route *route; /* NULL when nothing matched */
    unsigned allowed;               /* methods of routes whose pattern matched the path */
    const char *params[HTTP_ROUTER_MAX_PARAMS]; /* captures, in pattern order (borrowed) */
    size_t n_params;
};

/*
 * Finds the first route of `routes[0..n)` matching `method` and `path`. Returns 0 with
 * m->route set; 404 when no pattern matches the path; 405 when some pattern matches under
 * other methods (m->allowed lists them).
 */
int http_router_match(const struct http_route *routes, size_t n, unsigned method,
                      const struct http_path *path, struct http_match *m);

/* Writes "GET, HEAD, PUT, OPTIONS" style text for `methods` into buf. */
void http_methods_format(unsigned methods, char *buf, size_t len);

/* "GET" for HTTP_GET, ... */
const char *http_method_name(unsigned method);

#endif
