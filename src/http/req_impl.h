/*
 * req_impl.h - the inside of struct http_req, shared by server.c (which builds it) and
 * request.c (which reads and answers it). Nothing outside src/http/ includes this.
 */
#ifndef CREWD_HTTP_REQ_IMPL_H
#define CREWD_HTTP_REQ_IMPL_H

#include <event2/http.h>
#include <jansson.h>
#include <event2/keyvalq_struct.h>

#include "http/router.h"

struct http_server;

struct http_req {
    struct evhttp_request *ev;
    struct http_server *server;
    unsigned method;
    char *path;                              /* raw path, owned */
    char *decoded[HTTP_ROUTER_MAX_SEGMENTS]; /* decoded segments, owned */
    struct http_path segs;                   /* views of decoded[] for the router */
    struct http_match match;
    struct evkeyvalq query; /* decoded query parameters */
    bool query_parsed;
    const char *origin; /* allowed Origin to echo in CORS headers, or NULL */
    bool close;         /* answer with Connection: close */
};

/* Implemented in server.c, used by request.c. */
bool http_server_cors_enabled(const struct http_server *srv);
/* {"message": msg, "status": status} (the phrase when msg is not UTF-8); NULL when out of
 * memory. */
json_t *http_error_json(int status, const char *msg);
/* `body` (stolen, may be NULL) as JSON text plus a newline; NULL when out of memory. */
struct evbuffer *http_json_buffer(json_t *body);
/* Status line and headers only, then close: for when memory ran out mid-reply. */
void http_reply_bare_500(struct evhttp_request *ev);
int http_server_json_max_depth(const struct http_server *srv);
/* Tells the server's on_reply hook (if any) that `req` is being answered with `status`. */
void http_server_note_reply(const struct http_server *srv, const struct http_req *req,
                            int status);

/* Frees everything req owns (not the evhttp request, which libevent owns). */
void http_req_free(struct http_req *req);

/* Headers every reply carries (request.c): CORS, Vary, and Connection: close when asked. */
void http_reply_add_common_headers(struct http_req *req);

/* The server's open streams (stream.c), linked through the streams themselves so that
 * opening and closing one costs O(1) and no allocation. Owned by the server. */
struct http_stream;
struct http_stream_list {
    struct http_stream *head;
    size_t n;
};
struct http_stream_list *http_server_stream_list(struct http_server *srv);
/* Closes every stream of `list`, calling each on_close (stream.c); http_server_free calls it
 * before freeing the connections. */
void http_streams_close_all(struct http_stream_list *list);

#endif
