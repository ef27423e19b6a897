/*
 * request.h - what a handler sees of an HTTP request, and the replies it can send.
 *
 * A struct http_req lives from the moment the server has read a whole request until the
 * handler's one reply (http_reply_json / http_reply_error / http_reply_empty) has been
 * handed to libevent; the reply frees it. http_stream_start (stream.h) is the other way to
 * answer: it consumes req the same way. Every reply carries the CORS headers the server's
 * configuration calls for. Everything here runs on the loop thread.
 */
#ifndef CREWD_HTTP_REQUEST_H
#define CREWD_HTTP_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "http/router.h"

struct http_req;

unsigned http_req_method(const struct http_req *req);
/* The request path as received (percent-encoded, without the query). */
const char *http_req_path(const struct http_req *req);
/* The i-th `{capture}` of the matched route, percent-decoded; NULL past the last. */
const char *http_req_param(const struct http_req *req, size_t i);
/* The decoded value of query parameter `name` (first occurrence), or NULL. */
const char *http_req_query(const struct http_req *req, const char *name);
/* A request header (case-insensitive name), or NULL. */
const char *http_req_header(const struct http_req *req, const char *name);

/* True when the request carries a body (of any length > 0). */
bool http_req_has_body(const struct http_req *req);

/* The raw body bytes (not NUL-terminated) and their count in *len; NULL with *len 0 when
 * the body is empty or cannot be read (out of memory). Valid until the reply. */
const unsigned char *http_req_body(struct http_req *req, size_t *len);

/*
 * Parses the body as JSON: nesting capped (core/json_depth.h), duplicate keys and invalid
 * UTF-8 refused, and the top level must be an object. An empty body gives ERR_INVALID
 * "request body is required (a JSON object)". The message of a syntax error carries jansson's
 * line and column. Returns 0 and a new reference in *out, or ERR_INVALID.
 */
int http_req_body_json(struct http_req *req, json_t **out, struct err *e);

/* Adds a response header (copied). Only before the reply. */
void http_reply_header(struct http_req *req, const char *name, const char *value);

/* Sends `body` (stolen) as JSON with `status`, frees req. A NULL body (a json_pack() that
 * failed) becomes a 500 error reply; use http_reply_empty for replies without a body. */
void http_reply_json(struct http_req *req, int status, json_t *body);

/* Sends {"message": <formatted>, "status": status}, frees req. */
void http_reply_error(struct http_req *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends `status` with no body (204), frees req. */
void http_reply_empty(struct http_req *req, int status);

/* Sends body[0..len) (copied) with `status` and that Content-Type, frees req. For the few
 * replies that are not JSON (GET /metrics). */
void http_reply_text(struct http_req *req, int status, const char *content_type,
                     const char *body, size_t len);

/* The reason phrase crewd uses for `status` ("Not Found"). */
const char *http_status_phrase(int status);

#endif
