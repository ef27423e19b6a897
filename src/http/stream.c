/*
 * stream.c - see stream.h. Written against libevent 2.1.12's evhttp, whose streaming calls
 * (evhttp_send_reply_start / _chunk / _end) leave three things to the caller, handled here:
 *
 * - Close detection. A closed peer is seen only while the connection reads. evhttp stops
 *   reading once it has read a request body (evhttp_read_body disables EV_READ); in 2.1.12
 *   evhttp_send_reply_start and each chunk enable EV_READ|EV_WRITE again (seen with
 *   bufferevent_get_enabled; other versions enable EV_WRITE only), with a NULL read callback, so
 *   what the peer sends is only buffered, while its EOF or reset reaches evhttp_error_cb.
 *   That fails the connection: evhttp detaches the unfinished request (req->evcon = NULL,
 *   left for us to free) and frees the connection, whose close callback is ours
 *   (on_conn_close). The stream enables EV_READ itself as well, so that it does not depend
 *   on which libevent it runs on; the tests check that an idle stream sees the close.
 * - The idle timeout. evhttp's timeout is the bufferevent's read and write timeout, and with
 *   EV_READ enabled the read timeout would cut a stream that only writes. Enabling EV_READ
 *   re-adds the read event, which restarts its timer: each write does that.
 * - Who frees what. When the peer goes away the request is ours (see above); when the
 *   server is freed, or after evhttp_send_reply_end, it is libevent's. The stream never
 *   touches the request after either.
 */
#include "http/stream.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version (major, minor) */
#include <stdbool.h>
#include <stdlib.h>

#include "core/log.h"
#include "http/req_impl.h"

struct http_stream {
    struct evhttp_request *ev; /* libevent's; valid while the stream is */
    struct http_stream_list *list;
    struct http_stream *prev, *next; /* on list */
    struct evbuffer *chunk;          /* reused for each write: evhttp moves its bytes out */
    http_stream_close_cb on_close;
    http_stream_drain_cb on_drain;
    void *arg;
};

static void list_add(struct http_stream_list *list, struct http_stream *s)
{
    s->list = list;
    s->prev = NULL;
    s->next = list->head;
    if (list->head != NULL)
        list->head->prev = s;
    list->head = s;
    list->n++;
}

static void list_remove(struct http_stream *s)
{
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        s->list->head = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    s->list->n--;
    s->prev = s->next = NULL;
}

static struct bufferevent *stream_bev(const struct http_stream *s)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(s->ev);
    return evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
}

static void stream_free(struct http_stream *s)
{
    list_remove(s);
    evbuffer_free(s->chunk);
    free(s);
}

/* Calls on_close and frees the stream. The request must no longer be reachable from its
 * connection's close callback. */
static void stream_closed(struct http_stream *s)
{
    http_stream_close_cb cb = s->on_close;
    void *arg = s->arg;
    /* Unlinked before the callback, which may end other streams of the list. */
    list_remove(s);
    s->list = NULL;
    cb(s, arg);
    evbuffer_free(s->chunk);
    free(s);
}

/* libevent's connection close callback: the peer went away (EOF, reset, write error or the
 * idle timeout), or evhttp_free is freeing the connection. */
static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    struct http_stream *s = arg;
    struct evhttp_request *ev = s->ev;
    evhttp_connection_set_closecb(evcon, NULL, NULL);
    /* Detached by evhttp_connection_incoming_fail: nobody else will free it. Still attached
     * (evhttp_free): evhttp_connection_free frees it after this callback. */
    bool ours = evhttp_request_get_connection(ev) == NULL;
    log_debug("http", "stream: peer gone (%zu open)", s->list->n - 1);
    stream_closed(s);
    if (ours)
        evhttp_request_free(ev);
}

struct http_stream *http_stream_start(struct http_req *req, int status, const char *content_type,
                                      http_stream_close_cb on_close, void *arg)
{
    struct evhttp_request *ev = req->ev;
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    if (evcon == NULL) {
        /* The peer left while the handler was deciding; the reply frees the request. */
        http_reply_empty(req, 500);
        return NULL;
    }
    struct http_stream *s = calloc(1, sizeof *s);
    if (s == NULL || (s->chunk = evbuffer_new()) == NULL) {
        free(s);
        log_error("http", "%s %s: out of memory starting a stream", http_method_name(req->method),
                  req->path);
        http_reply_error(req, 500, "out of memory starting the stream");
        return NULL;
    }
    s->ev = ev;
    s->list = http_server_stream_list(req->server);
    s->on_close = on_close;
    s->arg = arg;

    struct evkeyvalq *out = evhttp_request_get_output_headers(ev);
    evhttp_add_header(out, "Content-Type", content_type);
    evhttp_add_header(out, "Cache-Control", "no-cache");
    /* nginx buffers proxied replies by default, which would hold events back. */
    evhttp_add_header(out, "X-Accel-Buffering", "no");
    http_reply_add_common_headers(req);
    if (ev->major == 1 && ev->minor == 0) {
        /* An HTTP/1.0 body without chunked encoding ends with the connection. libevent
         * would answer a keep-alive 1.0 request with "Content-Length: 0" (it counts the
         * body it has, none yet), so the request's keep-alive wish is dropped. */
        evhttp_remove_header(evhttp_request_get_input_headers(ev), "Connection");
        evhttp_remove_header(out, "Connection");
        evhttp_add_header(out, "Connection", "close");
    }
    evhttp_send_reply_start(ev, status, http_status_phrase(status));
    http_server_note_reply(req->server, req, status); /* counted when it starts */
    log_debug("http", "%s %s -> %d (stream)", http_method_name(req->method), req->path, status);
    http_req_free(req);

    /* See the top of the file. The cap keeps a peer that sends while it receives from
     * growing the input buffer: past it libevent stops reading until the stream ends. */
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    bufferevent_setwatermark(bev, EV_READ, 0, HTTP_STREAM_MAX_INPUT_BYTES);
    bufferevent_enable(bev, EV_READ);
    evhttp_connection_set_closecb(evcon, on_conn_close, s);
    list_add(s->list, s);
    return s;
}

/* evhttp: everything queued on the connection went out. */
static void on_written(struct evhttp_connection *evcon, void *arg)
{
    (void)evcon;
    struct http_stream *s = arg;
    if (s->on_drain != NULL)
        s->on_drain(s, s->arg);
}

void http_stream_set_drain_cb(struct http_stream *s, http_stream_drain_cb on_drain)
{
    s->on_drain = on_drain;
}

int http_stream_write(struct http_stream *s, const void *buf, size_t len)
{
    struct bufferevent *bev = stream_bev(s);
    /* A HEAD reply has no body: libevent would keep every chunk in s->chunk, unsent and
     * outside the cap below. */
    if (bev == NULL || len == 0 || evhttp_request_get_command(s->ev) == EVHTTP_REQ_HEAD)
        return 0;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > HTTP_STREAM_MAX_BUFFERED_BYTES)
        return ERR_BUSY;
    if (evbuffer_add(s->chunk, buf, len) != 0) {
        evbuffer_drain(s->chunk, evbuffer_get_length(s->chunk));
        return ERR_NOMEM;
    }
    /* The callback is evhttp's "output written" one: it stays set until the next write on
     * the connection, and http_stream_end's terminating chunk replaces it (HTTP/1.0 streams,
     * which have none, end with the connection), so it never outlives the stream. */
    evhttp_send_reply_chunk_with_cb(s->ev, s->chunk, on_written, s);
    /* Restarts the read timeout: see the top of the file. Unless the input cap suspended
     * reading, in which case this only records the wish. */
    bufferevent_enable(bev, EV_READ);
    return 0;
}

size_t http_stream_buffered(const struct http_stream *s)
{
    struct bufferevent *bev = stream_bev(s);
    return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

void http_stream_end(struct http_stream *s)
{
    if (s == NULL)
        return;
    struct evhttp_connection *evcon = evhttp_request_get_connection(s->ev);
    if (evcon != NULL) {
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        /* Back to evhttp's defaults for the next request on this connection. */
        bufferevent_setwatermark(evhttp_connection_get_bufferevent(evcon), EV_READ, 0, 0);
    }
    /* Queues the terminating chunk; libevent frees the request once it is written, or
     * at once when the connection is already gone. */
    evhttp_send_reply_end(s->ev);
    log_debug("http", "stream: ended (%zu open)", s->list->n - 1);
    stream_free(s);
}

void http_stream_abort(struct http_stream *s)
{
    if (s == NULL)
        return;
    struct evhttp_request *ev = s->ev;
    struct evhttp_connection *evcon = evhttp_request_get_connection(ev);
    log_debug("http", "stream: aborted (%zu open)", s->list->n - 1);
    stream_free(s);
    if (evcon != NULL) {
        evhttp_connection_set_closecb(evcon, NULL, NULL);
        /* Frees the connection with its requests (ours among them) and what it buffered. */
        evhttp_connection_free(evcon);
    } else {
        evhttp_request_free(ev); /* detached: ours (see the top of the file) */
    }
}

void http_streams_close_all(struct http_stream_list *list)
{
    /* The head each time: an on_close may end other streams of the list. */
    while (list->head != NULL) {
        struct http_stream *s = list->head;
        struct evhttp_connection *evcon = evhttp_request_get_connection(s->ev);
        if (evcon != NULL)
            evhttp_connection_set_closecb(evcon, NULL, NULL);
        /* The request stays on its connection, which evhttp_free frees with it. */
        stream_closed(s);
    }
}
