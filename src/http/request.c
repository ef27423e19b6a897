/* request.c - see request.h. */
#include "http/request.h"

#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_depth.h"
#include "core/json_text.h"
#include "core/log.h"
#include "core/utf8.h"
#include "http/req_impl.h"

unsigned http_req_method(const struct http_req *req)
{
    return req->method;
}
const char *http_req_path(const struct http_req *req)
{
    return req->path;
}

const char *http_req_param(const struct http_req *req, size_t i)
{
    return i < req->match.n_params ? req->match.params[i] : NULL;
}

const char *http_req_query(const struct http_req *req, const char *name)
{
    if (!req->query_parsed)
        return NULL;
    return evhttp_find_header(&req->query, name);
}

const char *http_req_header(const struct http_req *req, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(req->ev), name);
}

bool http_req_has_body(const struct http_req *req)
{
    return evbuffer_get_length(evhttp_request_get_input_buffer(req->ev)) > 0;
}

const unsigned char *http_req_body(struct http_req *req, size_t *len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
    *len = evbuffer_get_length(in);
    const unsigned char *body = *len ? evbuffer_pullup(in, -1) : NULL;
    if (body == NULL)
        *len = 0;
    return body;
}

int http_req_body_json(struct http_req *req, json_t **out, struct err *e)
{
    *out = NULL;
    struct evbuffer *in = evhttp_request_get_input_buffer(req->ev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return err_set(e, ERR_INVALID, "request body is required (a JSON object)");
    const char *body = (const char *)evbuffer_pullup(in, -1);
    if (body == NULL)
        return err_set(e, ERR_NOMEM, "out of memory reading the request body");
    int rc = json_depth_check(body, len, http_server_json_max_depth(req->server), e);
    if (rc != 0)
        return rc;
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return err_set(e, ERR_INVALID, "invalid JSON at line %d, column %d: %s", jerr.line,
                       jerr.column, jerr.text);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, ERR_INVALID, "request body must be a JSON object");
    }
    *out = root;
    return 0;
}

void http_reply_header(struct http_req *req, const char *name, const char *value)
{
    evhttp_add_header(evhttp_request_get_output_headers(req->ev), name, value);
}

const char *http_status_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 400 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Headers every reply carries, streams included: CORS for allowed origins, and Connection:
 * close when the request left the connection in a state we do not want to reuse (smuggling
 * attempts). */
void http_reply_add_common_headers(struct http_req *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req->ev);
    if (req->origin != NULL)
        evhttp_add_header(h, "Access-Control-Allow-Origin", req->origin);
    /* Whenever the answer depends on Origin, even by leaving the header out, so that a
     * shared cache does not hand one origin's variant to another. */
    if (http_server_cors_enabled(req->server))
        evhttp_add_header(h, "Vary", "Origin");
    if (req->close)
        evhttp_add_header(h, "Connection", "close");
}

static void send_and_free(struct http_req *req, int status, struct evbuffer *body)
{
    http_reply_add_common_headers(req);
    if (req->method == HTTP_HEAD && body != NULL) {
        /* evhttp 2.1 writes whatever body it is given, HEAD or not: keep the length the GET
         * would have, drop the bytes. */
        char len[32];
        snprintf(len, sizeof len, "%zu", evbuffer_get_length(body));
        http_reply_header(req, "Content-Length", len);
        body = NULL;
    }
    http_server_note_reply(req->server, req, status);
    evhttp_send_reply(req->ev, status, http_status_phrase(status), body);
    log_debug("http", "%s %s -> %d", http_method_name(req->method), req->path, status);
    http_req_free(req);
}

json_t *http_error_json(int status, const char *msg)
{
    json_t *body = json_pack("{s:s, s:i}", "message", msg, "status", status);
    if (body == NULL) /* not valid UTF-8 (a header echoed back): the phrase, not the bytes */
        body = json_pack("{s:s, s:i}", "message", http_status_phrase(status), "status", status);
    return body;
}

struct evbuffer *http_json_buffer(json_t *body)
{
    if (body == NULL)
        return NULL;
    char *text = json_dumps(body, JSON_TEXT_FLAGS);
    json_decref(body);
    struct evbuffer *buf = text ? evbuffer_new() : NULL;
    if (buf != NULL &&
        (evbuffer_add(buf, text, strlen(text)) != 0 || evbuffer_add(buf, "\n", 1) != 0)) {
        evbuffer_free(buf);
        buf = NULL;
    }
    free(text);
    return buf;
}

void http_reply_json(struct http_req *req, int status, json_t *body)
{
    if (body == NULL) {
        /* The handler's json_pack() failed: allocation, since every string it packs was
         * validated UTF-8. Say so rather than send a success with no body. */
        log_error("http", "%s %s: reply body could not be built", http_method_name(req->method),
                  req->path);
        status = 500;
        body = http_error_json(status, "out of memory building the reply");
    }
    struct evbuffer *buf = http_json_buffer(body);
    if (buf == NULL) {
        log_error("http", "out of memory building a reply; closing the connection");
        http_reply_bare_500(req->ev);
        http_req_free(req);
        return;
    }
    http_reply_header(req, "Content-Type", "application/json");
    send_and_free(req, status, buf);
    evbuffer_free(buf);
}

void http_reply_error(struct http_req *req, int status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    utf8_trim_cut(msg);
    http_reply_json(req, status, http_error_json(status, msg));
}

void http_reply_empty(struct http_req *req, int status)
{
    send_and_free(req, status, NULL);
}

void http_reply_text(struct http_req *req, int status, const char *content_type,
                     const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL || evbuffer_add(buf, body, len) != 0) {
        log_error("http", "out of memory building a reply; closing the connection");
        if (buf != NULL)
            evbuffer_free(buf);
        http_reply_bare_500(req->ev);
        http_req_free(req);
        return;
    }
    http_reply_header(req, "Content-Type", content_type);
    send_and_free(req, status, buf);
    evbuffer_free(buf);
}
