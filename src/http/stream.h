/*
 * stream.h - replies whose body is written over time (the base of Server-Sent Events).
 *
 * A handler that calls http_stream_start instead of an http_reply_* sends its status and
 * headers at once and then the body piece by piece, with HTTP/1.1 chunked encoding, until it
 * ends the stream or the peer goes away. The server keeps the open streams on an intrusive
 * list (no timer or thread per stream) so that it can count them and close them when it is
 * freed. What the bytes mean (SSE framing, heartbeats) is the caller's business.
 *
 * Everything here runs on the loop thread. docs/internals/http.md says how a closed peer is
 * detected and what the limits are.
 */
#ifndef CREWD_HTTP_STREAM_H
#define CREWD_HTTP_STREAM_H

#include <stddef.h>

#include "core/err.h"
#include "http/request.h"
#include "http/server.h"

/* Bytes a stream may hold for a slow reader before http_stream_write says ERR_BUSY. */
#define HTTP_STREAM_MAX_BUFFERED_BYTES (1024 * 1024)
/* Bytes the peer may send during a stream (it has no reason to) before crewd stops reading
 * them; see docs/internals/http.md for what that costs close detection. */
#define HTTP_STREAM_MAX_INPUT_BYTES (64 * 1024)

struct http_stream;

/* The peer went away (closed socket, reset, write error, idle timeout) or the server is being
 * freed. Called once, from the loop; the stream is freed as soon as it returns, so the callback
 * must forget `s` and must not call http_stream_write or http_stream_end on it. */
typedef void (*http_stream_close_cb)(struct http_stream *s, void *arg);

/*
 * Starts a reply whose body is written over time: sends `status` (one that has a body: not
 * 1xx, 204 or 304) with the headers added by http_reply_header, the server's CORS headers,
 * Content-Type `content_type`, Cache-Control: no-cache and X-Accel-Buffering: no. HTTP/1.1
 * peers get chunked encoding; HTTP/1.0 peers get a body that ends with the connection. A HEAD
 * gets the headers only: later writes are accepted and dropped.
 *
 * Consumes req: no http_reply_* may follow, whatever the outcome. Returns the stream, or NULL
 * when memory ran out (req has then been answered with a 500 JSON error) or the peer is
 * already gone; on_close is never called for a stream that was not returned.
 *
 * A stream on which nothing is written for the server's idle timeout (http_server_opts
 * .timeout_s) is closed as a dead peer would be: write at least every timeout/2.
 */
struct http_stream *http_stream_start(struct http_req *req, int status, const char *content_type,
                                      http_stream_close_cb on_close, void *arg);

/* Queues `len` bytes (copied) as one chunk. Returns 0 (also for len 0, which sends nothing),
 * ERR_BUSY when more than HTTP_STREAM_MAX_BUFFERED_BYTES already wait for the peer (a reader
 * too slow to keep up: nothing was queued and the caller should end the stream), or ERR_NOMEM.
 * The peer's departure is reported through on_close, never here. */
int http_stream_write(struct http_stream *s, const void *buf, size_t len);

/* Everything written so far has been handed to the kernel: a writer that stopped at a
 * budget (http_stream_buffered) may write again. Called from the loop, with the arg given to
 * http_stream_start, from inside evhttp's write callback: it may write, but must not end or
 * abort the stream (schedule that for a later turn). */
typedef void (*http_stream_drain_cb)(struct http_stream *s, void *arg);
/* Sets (or, NULL, clears) the drain callback. It fires after a write once the output is
 * empty again, so only a stream that has written since can expect it. */
void http_stream_set_drain_cb(struct http_stream *s, http_stream_drain_cb on_drain);

/* Bytes queued and not yet handed to the kernel, chunk framing included. */
size_t http_stream_buffered(const struct http_stream *s);

/* Ends the reply (the terminating chunk, sent after what is queued) and frees the stream;
 * on_close is not called. The connection is then kept alive for the next request as usual. */
void http_stream_end(struct http_stream *s);

/* Drops what is still queued, closes the connection at once and frees the stream; on_close
 * is not called. For a reader too slow to keep up (ERR_BUSY): ending it normally would
 * leave its backlog buffered until it drained or timed out, outside any cap. */
void http_stream_abort(struct http_stream *s);

/* Open streams on the server (the API counts its own event streams; this is the HTTP
 * layer's view, used by its tests). */
size_t http_server_streams(const struct http_server *srv);

#endif
