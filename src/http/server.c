/*
 * server.c - see server.h. The order of the checks in on_request matters: framing problems
 * (ambiguous length) first, because they make the connection itself untrustworthy; then auth,
 * decided on the decoded path, so that an unauthenticated client learns nothing else; then
 * what can be judged without the route (path encoding, query, size, media type); then
 * routing.
 */
#include "http/server.h"

#include <sys/queue.h> /* before event2/keyvalq_struct.h, for TAILQ_FOREACH */

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "core/json_depth.h"
#include "core/log.h"
#include "core/utf8.h"
#include "http/req_impl.h"
#include "http/request.h"
#include "http/stream.h"

struct http_server {
    struct evhttp *http;
    struct evconnlistener *listener; /* owned by http once bound (evhttp_bind_listener) */
    struct event *accept_resume;     /* re-enables the listener after fd exhaustion */
    struct evhttp_bound_socket *bound; /* the listener as evhttp holds it */
    bool stopped;                    /* http_server_stop_accepting: listener closed */
    int port;
    size_t max_body;
    size_t max_header;
    int json_max_depth;
    unsigned char (*key_hashes)[SHA256_DIGEST_LENGTH]; /* API keys, hashed: see check_auth */
    size_t n_keys;
    char **origins;
    size_t n_origins;
    bool any_origin;
    const struct http_route *routes;
    size_t n_routes;
    void *handler_arg;
    struct http_stream_list streams; /* open streaming replies (stream.c) */
    http_reply_cb on_reply;
    void *on_reply_arg;
};

/*
 * libevent 2.1 answers the errors it detects itself (malformed request line, headers or body
 * over the limits, unknown methods) through evhttp_send_error(), which writes an HTML page and
 * offers no hook (2.2 adds evhttp_set_errorcb). crewd defines evhttp_send_error below; the
 * executable exports it (CMakeLists.txt), so libevent's calls, which go through its PLT, reach
 * this one and every error is JSON. The function has no context argument, hence this pointer
 * to the one server of the process, set by http_server_new and cleared by http_server_free.
 * The listener's error callback (on_accept_error) has the same need for the same reason.
 */
static const struct http_server *libevent_error_ctx;

static void on_accept_error(struct evconnlistener *lev, void *arg);

#define HTTP_LISTEN_BACKLOG 4096
static void on_accept_resume(evutil_socket_t fd, short what, void *arg);

int http_server_json_max_depth(const struct http_server *srv)
{
    return srv->json_max_depth;
}
bool http_server_cors_enabled(const struct http_server *srv)
{
    return srv->n_origins > 0;
}
struct http_stream_list *http_server_stream_list(struct http_server *srv)
{
    return &srv->streams;
}
size_t http_server_streams(const struct http_server *srv)
{
    return srv->streams.n;
}

void http_server_note_reply(const struct http_server *srv, const struct http_req *req,
                            int status)
{
    if (srv == NULL || srv->on_reply == NULL)
        return;
    const char *route = req->match.route ? req->match.route->pattern : "unmatched";
    srv->on_reply(srv->on_reply_arg, route, http_method_name(req->method), status);
}

void http_req_free(struct http_req *req)
{
    if (req == NULL)
        return;
    free(req->path);
    for (size_t i = 0; i < HTTP_ROUTER_MAX_SEGMENTS; i++)
        free(req->decoded[i]);
    if (req->query_parsed)
        evhttp_clear_headers(&req->query);
    free(req);
}

static unsigned method_of(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return HTTP_GET;
    case EVHTTP_REQ_HEAD:
        return HTTP_HEAD;
    case EVHTTP_REQ_PUT:
        return HTTP_PUT;
    case EVHTTP_REQ_POST:
        return HTTP_POST;
    case EVHTTP_REQ_PATCH:
        return HTTP_PATCH;
    case EVHTTP_REQ_DELETE:
        return HTTP_DELETE;
    case EVHTTP_REQ_OPTIONS:
        return HTTP_OPTIONS;
    default:
        return HTTP_OTHER;
    }
}

/* Two Content-Length headers that disagree, or Content-Length with Transfer-Encoding, let a
 * proxy and crewd disagree on where a request ends (request smuggling). libevent reads the
 * first Content-Length, so refuse and close rather than guess. Returns the reason and sets
 * *status, or returns NULL when the framing is unambiguous. */
static const char *ambiguous_length(struct evhttp_request *ev, int *status)
{
    const char *cl = NULL;
    int n_te = 0;
    bool te_chunked = false;
    struct evkeyval *h;
    *status = 400;
    TAILQ_FOREACH(h, evhttp_request_get_input_headers(ev), next)
    {
        if (strcasecmp(h->key, "Content-Length") == 0) {
            if (cl != NULL && strcmp(cl, h->value) != 0)
                return "conflicting Content-Length headers";
            cl = h->value;
        } else if (strcasecmp(h->key, "Transfer-Encoding") == 0) {
            n_te++;
            te_chunked = strcasecmp(h->value, "chunked") == 0;
        }
    }
    if (cl != NULL && n_te > 0)
        return "both Content-Length and Transfer-Encoding given";
    /* libevent decodes exactly "chunked" and reads any other coding ("gzip, chunked") as a
     * request without a body, leaving the body to be parsed as the next request. RFC 9112
     * asks for 501 on a coding the server does not implement. */
    if (n_te > 1 || (n_te == 1 && !te_chunked)) {
        *status = 501;
        return "unsupported Transfer-Encoding (only a single 'chunked' is)";
    }
    return NULL;
}

/* Splits the raw path into percent-decoded segments. Returns 0, 400 (bad encoding) or 404
 * (too many segments, which no route has). */
static int split_path(struct http_req *req, const char **why)
{
    const char *p = req->path;
    if (p[0] != '/') {
        *why = "the request target must be an absolute path";
        return 400;
    }
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 && end == NULL)
            break; /* trailing slash: "/api/v1/crew/" is "/api/v1/crew" */
        if (req->segs.n_seg >= HTTP_ROUTER_MAX_SEGMENTS)
            return 404;
        char raw[2048];
        if (len >= sizeof raw)
            return 404;
        memcpy(raw, p, len);
        raw[len] = '\0';
        size_t dlen = 0;
        char *dec = evhttp_uridecode(raw, 0, &dlen);
        if (dec == NULL) {
            *why = "out of memory";
            return 500;
        }
        req->decoded[req->segs.n_seg] = dec;
        req->segs.seg[req->segs.n_seg++] = dec;
        if (!utf8_valid(dec, dlen)) {
            *why = "the path is not valid UTF-8 once percent-decoded (or holds a NUL)";
            return 400;
        }
        p += len;
    }
    return 0;
}

static int parse_query(struct http_req *req, const char *query, const char **why)
{
    TAILQ_INIT(&req->query);
    req->query_parsed = true;
    if (query == NULL || query[0] == '\0')
        return 0;
    if (evhttp_parse_query_str(query, &req->query) != 0) {
        *why = "malformed query string";
        return 400;
    }
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, &req->query, next)
    {
        if (!utf8_valid(kv->key, strlen(kv->key)) || !utf8_valid(kv->value, strlen(kv->value))) {
            *why = "a query parameter is not valid UTF-8 once percent-decoded";
            return 400;
        }
        /* evhttp decodes %00 into a NUL that strlen() then hides: look for it in the raw. */
    }
    if (strstr(query, "%00") != NULL) {
        *why = "a query parameter holds a NUL byte (%00)";
        return 400;
    }
    return 0;
}

/* Only JSON bodies: "application/json" or a "+json" suffix type, parameters allowed. A body
 * without Content-Type is read as JSON, as older clients of the seed send it so. */
static bool json_media_type(const char *ct)
{
    if (ct == NULL)
        return true;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t len = strcspn(ct, ";");
    while (len > 0 && (ct[len - 1] == ' ' || ct[len - 1] == '\t'))
        len--;
    if (len == 16 && strncasecmp(ct, "application/json", 16) == 0)
        return true;
    if (len > 5 + 12 && strncasecmp(ct, "application/", 12) == 0 &&
        strncasecmp(ct + len - 5, "+json", 5) == 0)
        return true;
    return false;
}

/* Keys are kept as SHA-256 digests and the presented key is hashed too, so the comparison
 * takes the same time whatever the lengths, and CRYPTO_memcmp takes the same time whatever
 * the bytes; every configured key is compared, without an early exit. */
static bool check_auth(const struct http_server *srv, const char *authz)
{
    if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
        return false;
    const char *key = authz + 7;
    while (*key == ' ')
        key++;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)key, strlen(key), digest);
    int ok = 0;
    for (size_t i = 0; i < srv->n_keys; i++)
        ok |= CRYPTO_memcmp(digest, srv->key_hashes[i], sizeof digest) == 0;
    return ok != 0;
}

static const char *allowed_origin(const struct http_server *srv, const char *origin)
{
    if (origin == NULL)
        return NULL;
    if (srv->any_origin)
        return origin;
    for (size_t i = 0; i < srv->n_origins; i++)
        if (strcmp(srv->origins[i], origin) == 0)
            return origin;
    return NULL;
}

/* Sets the Allow header for a path whose routes accept `allowed`; returns its text. */
static const char *set_allow(struct http_req *req, unsigned allowed, char buf[128])
{
    http_methods_format(allowed | HTTP_OPTIONS, buf, 128);
    http_reply_header(req, "Allow", buf);
    return buf;
}

static void add_preflight_headers(struct http_req *req)
{
    http_reply_header(req, "Access-Control-Allow-Methods", "GET, PUT, POST, PATCH, DELETE");
    http_reply_header(req, "Access-Control-Allow-Headers",
                      "Content-Type, Authorization, Idempotency-Key, Last-Event-ID");
    http_reply_header(req, "Access-Control-Max-Age", "600");
}

/* OPTIONS on a known path: Allow, plus the CORS answer to a preflight from an allowed origin. */
static void answer_options(struct http_req *req, unsigned allowed)
{
    char methods[128];
    set_allow(req, allowed, methods);
    if (req->origin != NULL && http_req_header(req, "Access-Control-Request-Method") != NULL)
        add_preflight_headers(req);
    http_reply_empty(req, 204);
}

/* An unauthenticated preflight under /api/: the same answer whatever the path. */
static void answer_preflight(struct http_req *req)
{
    add_preflight_headers(req);
    http_reply_empty(req, 204);
}

/* Freeing the connection from inside libevent's callback instead would leave libevent
 * holding a freed request when the callback returns. */
void http_reply_bare_500(struct evhttp_request *ev)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_clear_headers(out);
    evhttp_add_header(out, "Connection", "close");
    evhttp_send_reply(ev, 500, "Internal Server Error", NULL);
}

static void on_request(struct evhttp_request *ev, void *arg)
{
    struct http_server *srv = arg;
    struct http_req *req = calloc(1, sizeof *req);
    if (req == NULL) {
        http_reply_bare_500(ev);
        return;
    }
    req->ev = ev;
    req->server = srv;
    req->method = method_of(evhttp_request_get_command(ev));
    req->origin = allowed_origin(srv, http_req_header(req, "Origin"));

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(ev);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    req->path = strdup(path && path[0] ? path : "/");
    if (req->path == NULL) {
        req->close = true;
        http_reply_error(req, 500, "out of memory");
        return;
    }

    int status;
    const char *why = ambiguous_length(ev, &status);
    if (why != NULL) {
        req->close = true;
        http_reply_error(req, status, "%s", why);
        return;
    }
    /* The path is decoded first because auth is decided on it; its errors wait until after
     * auth, so that an unauthenticated client learns nothing from them. */
    why = "no such route";
    status = split_path(req, &why);
    /* Decided on the decoded segments, the ones the router matches: a test of the raw path
     * let "/%61pi/v1/crew" through unauthenticated. A CORS preflight carries no credentials
     * by design: a real one (allowed Origin and Access-Control-Request-Method) gets the CORS
     * answer without routing, so that it reveals nothing either. */
    bool api = req->segs.n_seg > 0 && strcmp(req->segs.seg[0], "api") == 0;
    if (api && srv->n_keys > 0) {
        if (req->method == HTTP_OPTIONS && req->origin != NULL &&
            http_req_header(req, "Access-Control-Request-Method") != NULL) {
            answer_preflight(req);
            return;
        }
        if (!check_auth(srv, http_req_header(req, "Authorization"))) {
            http_reply_header(req, "WWW-Authenticate", "Bearer");
            http_reply_error(req, 401,
                             "missing or invalid API key (send Authorization: Bearer KEY)");
            return;
        }
    }
    if (status == 0)
        status = parse_query(req, uri ? evhttp_uri_get_query(uri) : NULL, &why);
    if (status == 404) {
        http_reply_error(req, 404, "no route for %s %s", http_method_name(req->method), req->path);
        return;
    }
    if (status != 0) {
        http_reply_error(req, status, "%s", why);
        return;
    }
    size_t body_len = evbuffer_get_length(evhttp_request_get_input_buffer(ev));
    if (body_len > srv->max_body) {
        req->close = true;
        http_reply_error(req, 413, "request body is %zu bytes; the limit is %zu", body_len,
                         srv->max_body);
        return;
    }
    if (body_len > 0 && !json_media_type(http_req_header(req, "Content-Type"))) {
        http_reply_error(req, 415, "Content-Type must be application/json (got '%s')",
                         http_req_header(req, "Content-Type"));
        return;
    }

    status = http_router_match(srv->routes, srv->n_routes, req->method, &req->segs, &req->match);
    if (req->method == HTTP_OPTIONS && status != 404) {
        answer_options(req, req->match.allowed);
        return;
    }
    if (status == 404) {
        http_reply_error(req, 404, "no route for %s %s", http_method_name(req->method), req->path);
        return;
    }
    if (status == 405) {
        char methods[128];
        http_reply_error(req, 405, "method %s is not allowed on %s (allowed: %s)",
                         http_method_name(req->method), req->path,
                         set_allow(req, req->match.allowed, methods));
        return;
    }
    req->match.route->handler(req, srv->handler_arg);
}

/*
 * When the request line itself could not be parsed, libevent never learnt the client's HTTP
 * version and writes the status line as "HTTP/0.0", which clients reject. Its own error page
 * writer (evhttp_send_page_, not public) sets 1.1 first; the public API has no setter, so the
 * status line, already queued in the connection's output buffer by evhttp_send_reply() and
 * not yet written to the socket, is corrected in place (same length). The reply carries
 * "Connection: close" and its body ends with the connection, which HTTP/1.1 allows.
 */
static void fix_status_line_version(struct evbuffer *wire, size_t start)
{
    static const char bad[] = "HTTP/0.0 ";
    struct evbuffer_ptr pos;
    if (evbuffer_get_length(wire) < start + sizeof bad - 1 ||
        evbuffer_ptr_set(wire, &pos, start, EVBUFFER_PTR_SET) != 0)
        return;
    struct evbuffer_iovec v[2];
    int n = evbuffer_peek(wire, sizeof bad - 1, &pos, v, 2);
    if (n != 1 || v[0].iov_len < sizeof bad - 1 || memcmp(v[0].iov_base, bad, sizeof bad - 1) != 0)
        return;
    memcpy((char *)v[0].iov_base + 5, "1.1", 3);
}

/* See libevent_error_ctx above. The prototype is libevent's own (event2/http.h). */
void evhttp_send_error(struct evhttp_request *ev, int error, const char *reason)
{
    const struct http_server *srv = libevent_error_ctx;
    char msg[256];
    int status = error;
    switch (error) {
    case HTTP_ENTITYTOOLARGE: {
        /* Only bodies get here (libevent reports oversized headers as malformed, below), and
         * a malformed chunk the same way as an oversized chunked body. */
        struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
        size_t max_body = srv ? srv->max_body : HTTP_DEFAULT_MAX_BODY_BYTES;
        if (in != NULL && evhttp_find_header(in, "Transfer-Encoding") != NULL)
            snprintf(msg, sizeof msg,
                     "chunked request body over the limit of %zu bytes, or malformed chunks",
                     max_body);
        else
            snprintf(msg, sizeof msg, "request body over the limit of %zu bytes", max_body);
        break;
    }
    case HTTP_BADREQUEST:
        /* libevent reports oversized header lines as malformed too (EVREQ_HTTP_INVALID_HEADER),
         * so the message names both causes. */
        snprintf(msg, sizeof msg,
                 "malformed HTTP request, or request headers over the limit of %zu bytes",
                 srv ? srv->max_header : (size_t)HTTP_DEFAULT_MAX_HEADER_BYTES);
        break;
    case HTTP_NOTIMPLEMENTED:
        snprintf(msg, sizeof msg, "unsupported HTTP method");
        break;
    case HTTP_EXPECTATIONFAILED:
        snprintf(msg, sizeof msg, "unsupported Expect header (only 100-continue is)");
        break;
    default:
        snprintf(msg, sizeof msg, "%s", reason ? reason : http_status_phrase(error));
        break;
    }
    struct evbuffer *buf = http_json_buffer(http_error_json(status, msg));
    if (buf == NULL) {
        http_reply_bare_500(ev);
        return;
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_clear_headers(out);
    evhttp_add_header(out, "Content-Type", "application/json");
    evhttp_add_header(out, "Connection", "close");
    /* The CORS headers of every other reply, so that a browser client can read why. */
    if (srv != NULL && srv->n_origins > 0) {
        struct evkeyvalq *in = evhttp_request_get_input_headers(ev);
        const char *origin = allowed_origin(srv, in ? evhttp_find_header(in, "Origin") : NULL);
        if (origin != NULL)
            evhttp_add_header(out, "Access-Control-Allow-Origin", origin);
        evhttp_add_header(out, "Vary", "Origin");
    }
    /* Framed explicitly: libevent neither adds Content-Length to a reply to CONNECT nor
     * closes that connection (it expects a tunnel), so the client could not tell where the
     * error ends. A HEAD gets the length without the bytes. */
    char length[32];
    snprintf(length, sizeof length, "%zu", evbuffer_get_length(buf));
    evhttp_add_header(out, "Content-Length", length);
    if (evhttp_request_get_command(ev) == EVHTTP_REQ_HEAD)
        evbuffer_drain(buf, evbuffer_get_length(buf));
    log_debug("http", "libevent-detected error %d -> %d: %s", error, status, msg);
    if (srv != NULL && srv->on_reply != NULL)
        srv->on_reply(srv->on_reply_arg, "unmatched",
                      http_method_name(method_of(evhttp_request_get_command(ev))), status);
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    struct evbuffer *wire = bev ? bufferevent_get_output(bev) : NULL;
    size_t start = wire ? evbuffer_get_length(wire) : 0;
    evhttp_send_reply(ev, status, http_status_phrase(status), buf);
    evbuffer_free(buf);
    if (wire != NULL)
        fix_status_line_version(wire, start);
}

/*
 * accept() fails with EMFILE/ENFILE when the process or the system is out of descriptors.
 * The listening socket stays readable, so without this callback libevent would retry at once,
 * forever: a busy loop that starves every connection already open (seen: 745k failed accepts
 * a second). Pause accepting instead; connections that finish free descriptors meanwhile.
 */
#define ACCEPT_PAUSE_MS 250

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    /* `arg` is the evhttp (evhttp_bind_listener set it), which cannot lead back to the
     * server: use the process's one server, as libevent's error page hook does. */
    const struct http_server *srv = libevent_error_ctx;
    int err = EVUTIL_SOCKET_ERROR();
    if (srv == NULL || srv->listener != lev)
        return;
    log_warn("http", "accept failed: %s; pausing new connections for %d ms",
             evutil_socket_error_to_string(err), ACCEPT_PAUSE_MS);
    evconnlistener_disable(lev);
    struct timeval pause = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(srv->accept_resume, &pause);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct http_server *srv = arg;
    if (!srv->stopped)
        evconnlistener_enable(srv->listener);
}

void http_server_stop_accepting(struct http_server *srv)
{
    if (srv == NULL || srv->stopped)
        return;
    srv->stopped = true;
    evtimer_del(srv->accept_resume);
    /* Closed, not just disabled: a disabled listener still completes handshakes into its
     * backlog, and those clients would wait for nothing instead of trying elsewhere. */
    evhttp_del_accept_socket(srv->http, srv->bound);
    srv->bound = NULL;
    srv->listener = NULL;
}

/* Fills `ss` for a numeric IPv4 or IPv6 address; returns its length, or 0. (libevent's
 * evutil_parse_sockaddr_port refuses port 0, which tests use to get a free port.) */
static int numeric_sockaddr(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (port < 0 || port > 65535)
        return 0;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return (int)sizeof *v4;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return (int)sizeof *v6;
    }
    return 0;
}

int http_server_new(struct event_base *base, const struct http_server_opts *opts,
                    struct http_server **out, struct err *e)
{
    int rc = ERR_NOMEM;
    *out = NULL;
    struct http_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        goto fail;
    srv->max_body = opts->max_body_bytes ? opts->max_body_bytes : HTTP_DEFAULT_MAX_BODY_BYTES;
    srv->max_header =
        opts->max_header_bytes ? opts->max_header_bytes : HTTP_DEFAULT_MAX_HEADER_BYTES;
    srv->json_max_depth = opts->json_max_depth ? opts->json_max_depth : JSON_DEPTH_DEFAULT_MAX;
    srv->routes = opts->routes;
    srv->n_routes = opts->n_routes;
    srv->handler_arg = opts->handler_arg;
    srv->on_reply = opts->on_reply;
    srv->on_reply_arg = opts->on_reply_arg;

    if (opts->n_api_keys > 0) {
        srv->key_hashes = calloc(opts->n_api_keys, sizeof *srv->key_hashes);
        if (srv->key_hashes == NULL)
            goto fail;
        for (size_t i = 0; i < opts->n_api_keys; i++)
            SHA256((const unsigned char *)opts->api_keys[i], strlen(opts->api_keys[i]),
                   srv->key_hashes[i]);
        srv->n_keys = opts->n_api_keys;
    }
    if (opts->n_cors_origins > 0) {
        srv->origins = calloc(opts->n_cors_origins, sizeof *srv->origins);
        if (srv->origins == NULL)
            goto fail;
        for (size_t i = 0; i < opts->n_cors_origins; i++) {
            if (strcmp(opts->cors_origins[i], "*") == 0)
                srv->any_origin = true;
            if ((srv->origins[i] = strdup(opts->cors_origins[i])) == NULL)
                goto fail;
            srv->n_origins = i + 1;
        }
    }

    srv->http = evhttp_new(base);
    if (srv->http == NULL)
        goto fail;
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->max_body);
    evhttp_set_max_headers_size(srv->http, (ev_ssize_t)srv->max_header);
    evhttp_set_timeout(srv->http, opts->timeout_s ? opts->timeout_s : HTTP_DEFAULT_TIMEOUT_S);
    /* Read and discard the rest of an oversized body before closing, so the client gets
     * the 413 instead of a connection reset. */
    evhttp_set_flags(srv->http, EVHTTP_SERVER_LINGERING_CLOSE);
    /* The methods of HTTP that crewd's routes may use reach on_request, which answers 405
     * with an Allow header; libevent answers the others (TRACE, CONNECT, unknown) with 501,
     * through evhttp_send_error below. CONNECT must not get here: libevent writes its reply
     * without Content-Length, so a body would run into the next response. */
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(srv->http, on_request, srv);

    struct sockaddr_storage ss;
    int sslen = numeric_sockaddr(opts->host, opts->port, &ss);
    char where[128];
    snprintf(where, sizeof where, strchr(opts->host, ':') ? "[%s]:%d" : "%s:%d", opts->host,
             opts->port);
    if (sslen == 0) {
        rc = err_set(e, ERR_INVALID, "cannot listen on %s: not a numeric address", where);
        goto fail;
    }
    /* crewd makes the listener itself, rather than evhttp_bind_socket, to own its error
     * callback (see on_accept_error), and its backlog: libevent's default of 128 drops the
     * SYNs of a burst of clients (thousands of event streams reconnecting after a restart),
     * which then wait 1, 3, 7 s for their retransmits. The kernel caps it at somaxconn. */
    srv->listener = evconnlistener_new_bind(
        base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        HTTP_LISTEN_BACKLOG, (struct sockaddr *)&ss, sslen);
    if (srv->listener == NULL) {
        rc = err_set(e, ERR_IO, "cannot listen on %s: %s", where,
                     evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        goto fail;
    }
    srv->accept_resume = evtimer_new(base, on_accept_resume, srv);
    if (srv->accept_resume == NULL)
        goto fail;
    srv->bound = evhttp_bind_listener(srv->http, srv->listener);
    if (srv->bound == NULL)
        goto fail;
    evconnlistener_set_error_cb(srv->listener, on_accept_error);
    /* Linux hands TCP_NODELAY down to accepted sockets. Without it, a reply larger than
     * libevent's 16 KiB single write goes out in two segments and Nagle holds the second
     * until the client's delayed ACK: 40 ms per large reply on a keep-alive connection. */
    int one = 1;
    evutil_socket_t fd = evconnlistener_get_fd(srv->listener);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    socklen_t blen = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &blen) != 0) {
        rc = err_set(e, ERR_IO, "cannot read the bound address");
        goto fail;
    }
    srv->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    libevent_error_ctx = srv;
    *out = srv;
    return 0;
fail:
    if (rc == ERR_NOMEM)
        err_set(e, ERR_NOMEM, "out of memory starting the HTTP server");
    http_server_free(srv);
    return rc;
}

int http_server_port(const struct http_server *srv)
{
    return srv->port;
}

void http_server_free(struct http_server *srv)
{
    if (srv == NULL)
        return;
    if (libevent_error_ctx == srv)
        libevent_error_ctx = NULL;
    if (srv->accept_resume != NULL)
        event_free(srv->accept_resume);
    /* Before evhttp_free, which frees the streams' connections and requests. */
    http_streams_close_all(&srv->streams);
    if (srv->http != NULL)
        evhttp_free(srv->http); /* frees the bound listener too */
    else if (srv->listener != NULL)
        evconnlistener_free(srv->listener);
    for (size_t i = 0; i < srv->n_origins; i++)
        free(srv->origins[i]);
    free(srv->origins);
    free(srv->key_hashes);
    free(srv);
}
