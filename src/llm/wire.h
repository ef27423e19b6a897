/*
 * wire.h - internal to llm/: the provider wire vtable, and the small helpers the wire files
 * share (a bounded byte buffer, an SSE line splitter, the reply accumulator, the request
 * pieces that do not depend on a wire's JSON shapes).
 *
 * llm.c owns transport (libcurl on the loop, retries, error classification); a wire owns the
 * bytes: it turns a struct llm_request into an HTTP request (URL, headers, body), a reply body
 * into a struct llm_response, an error body into a message, and streamed bytes into deltas
 * plus a final response. A wire never sees a socket, so each one is unit-tested and fuzzed
 * without a network. Adding a provider is one file that defines a `struct llm_wire` and one
 * line in wire_for() (llm.c).
 *
 * Messages a wire puts in `struct err` carry no provider prefix ("reply is not valid JSON");
 * the client adds "<provider>: " because one wire serves several providers (openai, groq,
 * ollama). Return codes: ERR_INVALID for a request that cannot be built or a reply that does
 * not parse, ERR_IO for an error the provider reported inside a 200 reply or stream,
 * ERR_TOO_LARGE for an SSE line over the limit, ERR_NOMEM.
 */
#ifndef CREWD_LLM_WIRE_H
#define CREWD_LLM_WIRE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "llm/llm.h"

#define LLM_WIRE_MAX_HEADERS 8
#define LLM_WIRE_ERRMSG_MAX 300       /* bytes of a provider's error message kept in e.msg */
#define LLM_SSE_MAX_LINE (1 << 20)    /* one SSE line (one event's data) */
#define LLM_STREAM_MAX_TOOL_CALLS 128 /* tool calls in one reply, streamed or not */

/* The HTTP request a wire builds. Header strings are "Name: value"; the Authorization header
 * holds the API key, so llm_wire_http_cleanup wipes every header before freeing it. */
struct llm_wire_http {
    char *url;
    char *headers[LLM_WIRE_MAX_HEADERS];
    size_t n_headers;
    char *body;
    size_t body_len;
};

void llm_wire_http_cleanup(struct llm_wire_http *h); /* NULL-safe; leaves *h zeroed */

/* Streamed-reply state of one attempt; each wire defines its own, beginning with a struct
 * llm_acc (below). */
struct llm_stream;

struct llm_wire {
    const char *name; /* "openai-chat" */

    /* Fills *out from req; `base_url` is already resolved (request or provider default). */
    int (*build)(const struct llm_request *req, const char *base_url, struct llm_wire_http *out,
                 struct err *e);

    /* Parses a complete 2xx reply body. *out is a new response on success, NULL otherwise. */
    int (*parse_reply)(const char *body, size_t len, struct llm_response **out, struct err *e);

    /* Copies the provider's message out of an error body into buf (NUL-terminated, at most
     * LLM_WIRE_ERRMSG_MAX bytes, never cut inside a UTF-8 character). Returns its length,
     * 0 when the body holds no usable message. */
    size_t (*error_message)(const char *body, size_t len, char *buf, size_t cap);

    /* Streaming: new state per attempt; feed any split of the bytes (deltas go to on_delta,
     * which may be NULL); end flushes a last event that lacked its blank line (its deltas go
     * to on_delta too), checks the stream was complete and yields the response. After
     * an error from feed, the stream is dead: only free is valid. */
    int (*stream_new)(struct llm_stream **out);
    int (*stream_feed)(struct llm_stream *s, const char *data, size_t len, llm_delta_cb on_delta,
                       void *arg, struct err *e);
    int (*stream_end)(struct llm_stream *s, llm_delta_cb on_delta, void *arg,
                      struct llm_response **out, struct err *e);
    void (*stream_free)(struct llm_stream *s); /* NULL-safe */
};

extern const struct llm_wire llm_wire_openai;    /* llm_openai.c: openai, groq, ollama */
extern const struct llm_wire llm_wire_anthropic; /* llm_anthropic.c: anthropic */
extern const struct llm_wire llm_wire_gemini;    /* llm_gemini.c: google */

/* ---- shared helpers (llm_util.c) ---- */

/* A growable byte buffer, always NUL-terminated when data != NULL. */
struct llm_buf {
    char *data;
    size_t len, cap;
};

int llm_buf_append(struct llm_buf *b, const char *data, size_t len); /* 0 or ERR_NOMEM */
void llm_buf_reset(struct llm_buf *b);                               /* keeps the memory */
void llm_buf_free(struct llm_buf *b);
char *llm_buf_steal(struct llm_buf *b); /* the data ("" if empty) or NULL on ENOMEM */

/*
 * A text/event-stream splitter (WHATWG "server-sent events" framing): lines end with LF, CRLF
 * or CR; "data:" lines of one event are joined with LF; a blank line dispatches the event;
 * comments and the fields "id" and "retry" are ignored. A line longer than max_line fails with
 * ERR_TOO_LARGE before it is buffered whole.
 */
typedef int (*llm_sse_event_cb)(void *arg, const char *event, const char *data, size_t len,
                                struct err *e);

struct llm_sse {
    struct llm_buf line;
    struct llm_buf data;
    char event[64];
    bool have_data;
    bool after_cr; /* the previous byte was CR: a following LF belongs to the same line end */
    size_t max_line;
};

void llm_sse_init(struct llm_sse *s, size_t max_line);
void llm_sse_cleanup(struct llm_sse *s);
/* Feeds bytes; calls `cb` per complete event. Stops at the first non-zero return of cb. */
int llm_sse_feed(struct llm_sse *s, const char *buf, size_t len, llm_sse_event_cb cb, void *arg,
                 struct err *e);

/* Copies at most `max` bytes of s[0..len) into buf (cap bytes) without cutting a UTF-8
 * character; returns the length copied. */
size_t llm_copy_bounded(char *buf, size_t cap, const char *s, size_t len, size_t max);

/* Duplicates a string (NULL for NULL). Sets *failed on ENOMEM. */
char *llm_strdup(const char *s, bool *failed);

/* ---- reply reading helpers the wires share ---- */

/* A copy of v when it is a JSON string, else NULL. Sets *failed on ENOMEM. */
char *llm_json_strdup(const json_t *v, bool *failed);

/* When v is a JSON string, *slot becomes a copy of it (the old value freed); otherwise *slot
 * is left alone (a stream repeats a field only in some events). 0 or ERR_NOMEM. */
int llm_json_replace(char **slot, const json_t *v);

/* A non-negative integer field of o, else 0 (absent, negative, not an integer). */
long llm_json_count(const json_t *o, const char *key);

/* ERR_IO "error in <where>: <msg>" for an error the provider put in a 200 reply or a stream;
 * len is the message's length, 0 for none ("(no message)"). Returns ERR_IO. */
int llm_error_in(struct err *e, const char *where, const char *msg, size_t len);

/* The message of an error object {"error": {"message": "..."}}, {"error": "..."} or
 * {"message": "..."} (Anthropic's and Gemini's shapes, and what proxies send), copied into buf
 * as error_message does; 0 when root holds none. */
size_t llm_error_object_message(const json_t *root, char *buf, size_t cap);

/* The body of a wire's error_message: a JSON object's message as `message_of` finds it (for
 * instance llm_error_object_message), other JSON none, and a body that is not JSON (a proxy's
 * page) its first line when that is UTF-8 text and not HTML. */
size_t llm_error_body_message(const char *body, size_t len, char *buf, size_t cap,
                              size_t (*message_of)(const json_t *root, char *buf, size_t cap));

/* ---- request building helpers the wires share ---- */

/* Inside a builder with `int rc`, `struct err *e` and an `out:` label. */
#define NOMEM_IF(cond)                                                                             \
    do {                                                                                           \
        if (cond) {                                                                                \
            rc = err_set(e, ERR_NOMEM, "out of memory");                                           \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* Appends v to arr and forgets v: jansson takes it whatever happens (it frees v when the
 * append fails), so v must not be released again on the way out. */
#define APPEND_NEW(arr, v)                                                                         \
    do {                                                                                           \
        int append_rc_ = json_array_append_new((arr), (v));                                        \
        (v) = NULL;                                                                                \
        NOMEM_IF(append_rc_ != 0);                                                                 \
    } while (0)

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        rc = (expr);                                                                               \
        if (rc != 0)                                                                               \
            goto out;                                                                              \
    } while (0)

/* A new JSON string of v, or NULL with e set ("<field>: not valid UTF-8", or ERR_NOMEM). */
json_t *llm_json_string(const char *v, struct err *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* o[key] = v (a new reference, stolen even on failure); 0, or the code already in e (a NULL
 * v from a failed llm_json_string), or ERR_NOMEM. */
int llm_json_set(json_t *o, const char *key, json_t *v, struct err *e);

/* The opening of every build, *out already zeroed: checks what every request needs (a model,
 * a message, a base_url, header-safe base_url and api_key), then sets out->url to base_url
 * without its trailing slashes followed by the NULL-terminated path parts. 0, ERR_INVALID
 * (the same messages on every wire) or ERR_NOMEM. A wire that checks more of the model does
 * so first. */
int llm_wire_prepare(const struct llm_request *req, const char *base_url, struct llm_wire_http *out,
                     struct err *e, ...) __attribute__((sentinel));

/* A new array of req's tools, build_tool making tool i's wire object. 0, build_tool's code or
 * ERR_NOMEM; *out is left alone on failure. */
int llm_tools_array(const struct llm_request *req,
                    int (*build_tool)(const struct llm_tool_def *t, size_t i, json_t **out,
                                      struct err *e),
                    json_t **out, struct err *e);

/* A new {"name", "description", <schema_key>} object for tool i: the description is
 * no_description when the tool has none (NULL: left out); the schema is t->parameters,
 * borrowed, left out when NULL. ERR_INVALID "tools[i].name: required", "...: not valid UTF-8",
 * "tools[i].parameters: must be an object"; or ERR_NOMEM. */
int llm_tool_decl(const struct llm_tool_def *t, size_t i, const char *no_description,
                  const char *schema_key, json_t **out, struct err *e);

/* For the wires that send a tool call's arguments as an object (llm_tool_args): ERR_INVALID
 * unless call k of message i has an id and a name and its arguments are UTF-8. */
int llm_tool_call_check(const struct llm_tool_call *tc, size_t i, size_t k, struct err *e);

/* The arguments text as a new JSON object: the object it holds, {} when NULL or blank, else
 * {"_raw": "<text>"}. args must be UTF-8. NULL on ENOMEM. */
json_t *llm_tool_args(const char *args);

/* Appends system message i to system, after a blank line when it holds text already (for the
 * wires with one system text instead of system turns). ERR_INVALID when the content is missing
 * or not UTF-8, or ERR_NOMEM. */
int llm_system_append(struct llm_buf *system, const struct llm_message *m, size_t i, struct err *e);

/* True when s holds a C0 control character or DEL (not allowed in a header value). */
bool llm_has_ctl(const char *s);

/* Adds the header line "name: value" (value may be a secret: llm_wire_http_cleanup wipes
 * it). 0, ERR_NOMEM, or ERR_INTERNAL past LLM_WIRE_MAX_HEADERS. */
int llm_wire_add_header(struct llm_wire_http *out, const char *name, const char *value);

/* ---- the reply accumulator (llm_stream.c) ----
 *
 * What a streamed reply adds up to is the same on every wire: text, tool calls assembled from
 * fragments keyed by the provider's index, a finish reason, a model, usage. Each wire keeps
 * only its event parsing; Gemini also reads a whole reply into one (its reply is one stream
 * event). */

/* A tool call being assembled. The response gets id and name as they stand (empty strings
 * when nothing came) and args, or init_args when no fragment came, or "{}". */
struct llm_acc_tool {
    long index;
    struct llm_buf id, name, args;
    char *init_args;
};

struct llm_acc {
    struct llm_sse sse;
    llm_sse_event_cb on_event; /* the wire's event parser, given the stream */
    const char *end_name;      /* what a complete stream ends with, for the error message */
    struct llm_buf text;
    struct llm_acc_tool *tools;
    size_t n_tools;
    char *finish_reason;
    char *model;
    struct llm_usage usage;
    bool done;             /* the wire's end marker was seen */
    bool dead;             /* a feed failed: only free is valid */
    llm_delta_cb on_delta; /* set only while a feed runs */
    void *arg;
};

void llm_acc_init(struct llm_acc *a);
void llm_acc_cleanup(struct llm_acc *a); /* leaves *a zeroed */

/* Appends a text delta (a JSON string; anything else or "" is ignored) and passes it to
 * on_delta. 0 or ERR_NOMEM. */
int llm_acc_text(struct llm_acc *a, const json_t *v);

/* The tool call with this index, or NULL. */
struct llm_acc_tool *llm_acc_find_tool(struct llm_acc *a, long index);

/* Adds an empty tool call with this index. Past LLM_STREAM_MAX_TOOL_CALLS fails with
 * ERR_INVALID "<where> has more than N tool calls"; or ERR_NOMEM. */
int llm_acc_add_tool(struct llm_acc *a, long index, const char *where, struct llm_acc_tool **out,
                     struct err *e);

/* Moves what a holds into a new response, tool calls sorted by index. *out is left alone on
 * failure (ERR_NOMEM). */
int llm_acc_response(struct llm_acc *a, struct llm_response **out, struct err *e);

/*
 * The stream entries of a wire. Each wire's struct llm_stream begins with its struct llm_acc
 * (h2o's `super`; each wire checks it with a _Static_assert), so feed, end and free are these
 * functions. llm_stream_new allocates `size` zeroed bytes; the SSE events of a feed go to
 * on_event with the stream as arg. llm_stream_feed marks the stream dead on error.
 * llm_stream_end is llm_stream_flush then llm_acc_response.
 */
int llm_stream_new(size_t size, llm_sse_event_cb on_event, const char *end_name,
                   struct llm_stream **out);
int llm_stream_feed(struct llm_stream *s, const char *data, size_t len, llm_delta_cb on_delta,
                    void *arg, struct err *e);
int llm_stream_end(struct llm_stream *s, llm_delta_cb on_delta, void *arg,
                   struct llm_response **out, struct err *e);
void llm_stream_free(struct llm_stream *s);

/* The first half of stream_end: feeds a last event that lacked its blank line, then fails
 * with ERR_IO "stream ended before <end_name>" unless the end marker or a finish reason came. */
int llm_stream_flush(struct llm_stream *s, llm_delta_cb on_delta, void *arg, struct err *e);

#endif
