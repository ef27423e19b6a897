/*
 * fakellm.h - the pieces of crewd-fakellm, the scripted LLM server (OpenAI, Anthropic and
 * Gemini wires) that the integration tests and benchmarks run crewd against
 * (fakellm/README.md is the user's guide).
 *
 * One process, one libevent loop, one thread: every structure here belongs to the loop and is
 * touched only from its callbacks. Split:
 *   fakellm.c   command line, listener, signals, routing, the /_fake/ control endpoints
 *   chat.c      the LLM calls of every wire: the decision, latency, framing, client hang-ups
 *   reply.c     pure functions: the normalized conversation, directives, hashing, reply text,
 *               OpenAI chat completions validation and JSON / SSE bodies
 *   anthropic.c pure functions: Anthropic Messages validation, normalization and documents
 *   gemini.c    pure functions: Gemini generateContent validation, normalization and documents
 *   reqlog.c    the request log (a capped ring) and the per-key counters of the directives
 * It links crewd_lib only for core/ helpers (utf8, clock, json_text); it uses none of src/http.
 */
#ifndef CREWD_FAKELLM_H
#define CREWD_FAKELLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct evhttp;
struct evhttp_request;
struct evkeyvalq;
struct evconnlistener;
struct event;

#define FAKE_MAX_BODY_BYTES (8u * 1024 * 1024)
#define FAKE_MAX_FAIL_STATUS 8

/* ---- configuration (command line, then POST /_fake/config) ------------------------------ */

struct fake_config {
    int64_t latency_ms;
    int64_t jitter_ms;
    double fail_rate;
    int fail_status[FAKE_MAX_FAIL_STATUS];
    size_t n_fail_status;
    int64_t retry_after_s;
    uint64_t seed;
    size_t max_log;
    bool log_bodies;
};

/* True for the statuses --fail-status and "fail_status" accept: 429, 500, 502, 503, 504. */
bool fake_fail_status_allowed(long status);

/* ---- request log -------------------------------------------------------------------------- */

struct fake_log_entry {
    uint64_t seq;
    char *method;
    char *path;      /* NULL when libevent rejected the request before parsing it */
    json_t *headers; /* object, lowercase names */
    json_t *body;    /* parsed JSON, a string, or NULL (none / not recorded) */
    int status;      /* 0 until answered */
    bool client_closed;
    int64_t received_at_ms;
};

/* A ring of at most `cap` entries, oldest dropped; seq numbers are consecutive within it. */
struct fake_log {
    struct fake_log_entry **ring;
    size_t ring_len; /* allocated slots (grows by doubling up to cap) */
    size_t cap;
    size_t head; /* slot of the oldest entry */
    size_t count;
    uint64_t next_seq; /* starts at 1 */
};

void fake_log_init(struct fake_log *log, size_t cap);
void fake_log_cleanup(struct fake_log *log);
/* Appends an entry (taking ownership of `headers` and `body`, either may be NULL); returns
 * it, or NULL when out of memory (the arguments are then released). The pointer stays valid
 * until the entry is dropped: callers keep the seq and look it up again with _find. */
struct fake_log_entry *fake_log_add(struct fake_log *log, const char *method, const char *path,
                                    json_t *headers, json_t *body, int64_t now_ms);
struct fake_log_entry *fake_log_find(struct fake_log *log, uint64_t seq);
void fake_log_clear(struct fake_log *log);
/* {"requests":[...entries with seq > since...],"total":N} (a new reference). */
json_t *fake_log_json(const struct fake_log *log, uint64_t since);

/* ---- counters keyed by strings (reply_seq and fail_times) --------------------------------- */

struct fake_counter;
struct fake_counters {
    struct fake_counter **buckets;
    size_t n_buckets;
    size_t n_items;
};

void fake_counters_init(struct fake_counters *c);
void fake_counters_cleanup(struct fake_counters *c);
/* The count for `key` before this call, then adds one. UINT64_MAX when out of memory. */
uint64_t fake_counters_bump(struct fake_counters *c, const char *key);
/* The current count for `key` (0 when unseen). */
uint64_t fake_counters_get(const struct fake_counters *c, const char *key);

/* ---- the server --------------------------------------------------------------------------- */

struct fake_pending;

struct fake_stats {
    uint64_t requests; /* every request outside /_fake/ */
    uint64_t by_status[600];
    uint64_t in_flight;
    uint64_t max_in_flight;
    uint64_t client_closed;
};

struct fake_app {
    struct event_base *base;
    struct evhttp *http;
    struct fake_config cfg;
    struct fake_log log;
    struct fake_counters seq_counters;  /* reply_seq: directive -> requests answered */
    struct fake_counters fail_counters; /* fail_times: hash + directive -> requests seen */
    struct fake_stats stats;
    uint64_t prng;                /* splitmix64 state */
    uint64_t n_completions;       /* numbers chatcmpl-fake-<n> */
    struct fake_pending *pending; /* replies waiting on a timer (doubly linked) */
    struct evconnlistener *listener;
    struct event *accept_resume; /* re-enables accepting after EMFILE */
    bool stopping;
};

/* Uniform in [0, 2^64) from the seeded generator. */
uint64_t fake_rand(struct fake_app *app);
/* Uniform in [0, 1). */
double fake_rand_unit(struct fake_app *app);

/* Counts an answered status in the stats and writes it into the log entry `seq`. */
void fake_note_status(struct fake_app *app, uint64_t seq, int status);

/* Sends `body` (consumed) as JSON with `status`; extra headers may be set by the caller on
 * the request's output headers before. */
void fake_send_json(struct evhttp_request *req, int status, json_t *body);
/* {"error":{"message":..., "type":..., "param":null, "code":...}} for `status`. */
json_t *fake_error_json(int status, const char *message);

/* The wire format of an LLM call, chosen by its path (fakellm.c). */
enum fake_wire {
    FAKE_WIRE_OPENAI,    /* POST .../chat/completions */
    FAKE_WIRE_ANTHROPIC, /* POST .../messages */
    FAKE_WIRE_GEMINI,    /* POST .../models/{model}:generateContent | :streamGenerateContent */
};

/* Where an LLM call came in: the wire and, for Gemini, what the path and query say. */
struct fake_route {
    enum fake_wire wire;
    const char *model; /* Gemini: the {model} of the path (NUL-terminated copy owned by the
                          caller); NULL otherwise */
    bool stream;       /* Gemini: :streamGenerateContent */
    bool sse;          /* Gemini: ?alt=sse */
};

/* The error body of `wire` for `status` (a new reference). `seq` names the request (0: none)
 * for the wires whose error bodies carry a request id. */
json_t *fake_wire_error_json(enum fake_wire wire, int status, const char *message, uint64_t seq);

/* chat.c: answers an LLM call already logged as `seq`; `parsed` is its body (borrowed; NULL
 * when it was not JSON). */
void fake_chat_handle(struct fake_app *app, struct evhttp_request *req, uint64_t seq,
                      json_t *parsed, const struct fake_route *route);
/* Sets x-request-id: req_fake_<seq> on the answer. */
void fake_set_request_id(struct evhttp_request *req, uint64_t seq);
/* Cancels every reply still waiting (shutdown). */
void fake_chat_cancel_all(struct fake_app *app);

/* ---- reply.c: pure functions over a parsed request ---------------------------------------- */

#define FAKE_MAX_TOOLS 16

struct fake_tool {
    char *name;
    char *args; /* the ARGS_JSON text, sent as the "arguments" string */
};

struct fake_directives {
    char *reply;                 /* reply=TEXT */
    char *reply_seq;             /* the whole directive text "[[fake:reply_seq=...]]" */
    const char *reply_seq_value; /* points into reply_seq, after '=' up to the "]]" */
    size_t reply_seq_value_len;
    int status;             /* 0: none */
    int64_t retry_after_ms; /* -1: none */
    int64_t fail_times;     /* -1: none */
    char *fail_times_text;  /* the whole directive text */
    int64_t delay_ms;       /* -1: none */
    struct fake_tool tools[FAKE_MAX_TOOLS];
    size_t n_tools;
};

/* The conversation of any wire, normalized: (role, text) in order. Roles are "system",
 * "user", "assistant" and "tool" for the Anthropic and Gemini wires (fakellm/README.md gives
 * the mapping); the OpenAI wire keeps its role strings as sent. The default text, the hash,
 * the directives and the tool follow-up are computed from this alone. */
struct fake_msg {
    char *role;
    size_t role_len;
    char *text; /* NUL-terminated; may hold NULs of its own when the wire allows them */
    size_t len;
};

struct fake_conv {
    struct fake_msg *m;
    size_t n, cap;
    bool oom;
};

/* Appends a message with an empty text (role copied); on failure sets c->oom. */
void fake_conv_add(struct fake_conv *c, const char *role, size_t role_len);
/* Appends bytes to the text of the last message (none: no-op); on failure sets c->oom. */
void fake_conv_append(struct fake_conv *c, const char *s, size_t len);
void fake_conv_free(struct fake_conv *c);

/* What the chat request asks for, extracted once. */
struct fake_chat_input {
    enum fake_wire wire;
    const char *model;
    bool stream;
    bool sse; /* Gemini: stream as text/event-stream (?alt=sse); else one JSON array */
    bool include_usage;
    uint64_t hash;        /* FNV-1a 64 of role "\n" content "\n" for every message */
    size_t content_bytes; /* total bytes of every message's content */
    char *excerpt;        /* of the last user message, cleaned, <= 60 bytes */
    bool has_tool_message;
    bool tools_forbidden; /* tool_choice "none" ({"type":"none"}, functionCallingConfig NONE):
                             tool directives give the tool follow-up text, never calls */
    char *tool_results; /* tool messages after the last assistant message, " | " joined;
                           NULL when there are none */
    struct fake_directives d;
};

/* Validates a chat completion body and fills `in`. Returns 0, or -1 with a message in
 * `err` (the caller answers 400). `in` must be released with fake_chat_input_cleanup either
 * way. */
int fake_chat_input_parse(json_t *body, struct fake_chat_input *in, char *err, size_t err_len);
void fake_chat_input_cleanup(struct fake_chat_input *in);
/* Sets `in` empty (the wire OpenAI, no directive); fake_chat_input_cleanup releases it. */
void fake_chat_input_init(struct fake_chat_input *in);
/* Fills the hash, sizes, excerpt, tool follow-up and directives of `in` from a normalized
 * conversation. Returns 0, or -1 with a message in `err` (a bad directive: 400). */
int fake_chat_input_from_conv(const struct fake_conv *c, struct fake_chat_input *in, char *err,
                              size_t err_len);
/* Checks that every tool directive's ARGS_JSON is a JSON object (empty text counts as {}),
 * as the wires that send the arguments parsed need. Returns 0 or -1 with `err`. */
int fake_tools_need_objects(const struct fake_chat_input *in, char *err, size_t err_len);
/* The ARGS_JSON of a tool as a JSON object (a new reference; NULL when out of memory or not
 * an object). */
json_t *fake_tool_args_object(const struct fake_tool *t);
/* The byte length of the longest prefix of s[0..len) of at most 8 bytes that ends on a
 * character boundary (at least 1 byte when len > 0): the size of a streamed piece. */
size_t fake_stream_piece(const char *s, size_t len);

/* anthropic.c: validates a Messages body and fills `in` (wire Anthropic). Same contract as
 * fake_chat_input_parse. */
int fake_anthropic_input_parse(json_t *body, struct fake_chat_input *in, char *err,
                               size_t err_len);
/* gemini.c: validates a generateContent body and fills `in` (wire Gemini); the model, the
 * streaming and the framing come from the route. Same contract as fake_chat_input_parse. */
int fake_gemini_input_parse(json_t *body, const struct fake_route *route,
                            struct fake_chat_input *in, char *err, size_t err_len);

/* The default reply text "fake-reply <h>: <excerpt>" (malloc'd). */
char *fake_default_text(const struct fake_chat_input *in);

/* What the reply carries: either text or tool calls. */
struct fake_reply {
    uint64_t n; /* chatcmpl-fake-<n> */
    int64_t created_s;
    const char *model;
    const char *text; /* NULL for tool calls */
    const struct fake_tool *tools;
    size_t n_tools;
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
};

/* ceil(len / 4), at least 1. */
uint64_t fake_tokens(size_t len);
/* The chat.completion object (a new reference, NULL when out of memory). */
json_t *fake_reply_json(const struct fake_reply *r);
/* The chat.completion.chunk objects of the streamed reply, in order, as a JSON array (a new
 * reference, NULL when out of memory); the caller frames each as "data: ...\n\n" and ends
 * with "data: [DONE]". */
json_t *fake_reply_chunks(const struct fake_reply *r, bool include_usage);

/* anthropic.c: the Message object, and the stream events in order as a JSON array (each
 * event's "type" is its SSE event name). New references, NULL when out of memory. */
json_t *fake_anthropic_reply_json(const struct fake_reply *r);
json_t *fake_anthropic_events(const struct fake_reply *r);
/* {"type":"error","error":{"type":...,"message":...},"request_id":...} */
json_t *fake_anthropic_error_json(int status, const char *message, uint64_t seq);

/* gemini.c: the GenerateContentResponse, and the streamed ones in order as a JSON array. */
json_t *fake_gemini_reply_json(const struct fake_reply *r);
json_t *fake_gemini_chunks(const struct fake_reply *r);
/* {"error":{"code":...,"message":...,"status":...}} */
json_t *fake_gemini_error_json(int status, const char *message);

#endif
