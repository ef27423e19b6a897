/*
 * llm.h - provider-neutral LLM calls, asynchronous on the event loop (DESIGN.md decision 1).
 *
 * A caller (an agent step in engine/) fills a struct llm_request and starts a call; the
 * client builds the provider's wire request (one file per provider: llm_openai.c, ...),
 * sends it over libcurl's multi interface driven by the libevent loop (no thread per call,
 * connections reused, a per-host connection cap, new transfers added in batches), parses
 * the reply into a struct llm_response and calls the done callback exactly once, from the
 * loop, never from inside llm_call_start. Retryable failures (429, 5xx, timeouts,
 * connection errors) are retried with exponential backoff and jitter, honouring
 * Retry-After / retry-after-ms, up to max_attempts; other 4xx fail at once with the
 * provider's message.
 *
 * Everything here runs on the loop thread. API keys are secrets: they go into the
 * request's auth header and nowhere else (never a log line, never an error message).
 */
#ifndef CREWD_LLM_LLM_H
#define CREWD_LLM_LLM_H

#include <event2/event.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

enum llm_role { LLM_ROLE_SYSTEM, LLM_ROLE_USER, LLM_ROLE_ASSISTANT, LLM_ROLE_TOOL };

struct llm_tool_call {
    char *id;
    char *name;
    char *arguments; /* JSON text, as the model wrote it */
};

/* One message of a conversation. Borrowed by llm_call_start (copied into the wire body). */
struct llm_message {
    enum llm_role role;
    const char *content;                    /* may be NULL for an assistant turn of tool calls */
    const struct llm_tool_call *tool_calls; /* assistant turns only */
    size_t n_tool_calls;
    const char *tool_call_id; /* LLM_ROLE_TOOL only */
};

/* A tool offered to the model. `parameters` is a JSON Schema object (borrowed). */
struct llm_tool_def {
    const char *name;
    const char *description;
    const json_t *parameters;
};

struct llm_request {
    const char *provider; /* canonical name from llm/provider.h ("openai", "groq", "ollama", ...) */
    const char *model;
    const char *base_url; /* NULL: the provider's default endpoint */
    const char *api_key;  /* secret; NULL: no auth header */
    const struct llm_message *messages;
    size_t n_messages;
    const struct llm_tool_def *tools;
    size_t n_tools;
    /* The tools are declared but the model may not call them (tool_choice "none"). Used for
     * the last answer once tool rounds are spent: a conversation that holds tool calls must
     * still declare its tools, or Anthropic and Gemini refuse it. */
    bool tools_forbidden;
    double temperature; /* < 0: not sent */
    long max_tokens;    /* <= 0: not sent */
    long timeout_ms;    /* per attempt; <= 0: the client's default */
    bool stream;        /* ask for a streamed reply (deltas go to llm_call_opts.on_delta) */
};

struct llm_usage {
    long prompt_tokens;
    long completion_tokens;
    long total_tokens;
    long cached_tokens;    /* 0 when the provider does not say */
    long reasoning_tokens; /* 0 when the provider does not say */
};

/* A parsed reply. Owned by whoever receives it; llm_response_free releases it. */
struct llm_response {
    char *text; /* the assistant's text; "" (never NULL) when the reply held only tool calls */
    char *finish_reason; /* NULL when the provider gave none */
    char *model;         /* as the provider reported it; NULL when absent */
    struct llm_tool_call *tool_calls;
    size_t n_tool_calls;
    struct llm_usage usage;
};

void llm_response_free(struct llm_response *resp); /* NULL-safe */

/* What happened on the wire, for accounting and error text (valid during the callback). */
struct llm_call_info {
    int attempts;          /* HTTP attempts made (1 when no retry) */
    long http_status;      /* of the last attempt; 0 when no HTTP reply came */
    bool retryable;        /* the last failure was of a retryable kind */
    double latency_s;      /* from llm_call_start to the callback, retries included */
};

/*
 * The callback of a call: rc is 0 and *resp a new response owned by the callback, or rc is an
 * ERR_* code (resp NULL) and e says why: "openai: HTTP 401: Incorrect API key provided",
 * "openai: timed out after 30000 ms", "openai: cannot connect to 127.0.0.1:9: Connection
 * refused", "openai: reply is not valid JSON". Called exactly once unless the call was
 * cancelled first; the call handle is freed right after the callback returns.
 *
 * The codes, by what went wrong on the last attempt:
 *   ERR_IO        transport or HTTP failure: connect, timeout, connection lost, a non-2xx status
 *                 (message "<provider>: HTTP <status>: <provider's message>", at most ~300
 *                 bytes of it), an error the provider reported inside a 200 reply or stream, a
 *                 stream cut short;
 *   ERR_TOO_LARGE the reply passed max_reply_bytes, or one SSE line passed 1 MiB (not retried);
 *   ERR_INVALID   a 2xx reply that does not parse ("reply is not valid JSON", "reply has no
 *                 choices[0].message", ...; not retried);
 *   ERR_NOMEM, ERR_INTERNAL (libcurl refused the transfer).
 * info->retryable says whether the last failure was of a retried kind (408, 409, 429, 5xx,
 * timeouts, connection errors); such a failure reaches the callback only once max_attempts
 * are spent, or when streamed text had already gone to on_delta (it cannot be taken back, so
 * that call is not retried). The API key is scrubbed from every message ("[redacted]").
 */
typedef void (*llm_done_cb)(void *arg, int rc, struct llm_response *resp, const struct err *e,
                            const struct llm_call_info *info);

/* Streamed text as it arrives (only when request.stream); `text` is valid during the call. */
typedef void (*llm_delta_cb)(void *arg, const char *text, size_t len);

struct llm_call_opts {
    llm_done_cb on_done; /* required */
    llm_delta_cb on_delta; /* optional */
    void *arg;
};

/* A limit shared by every call to one provider (all jobs): calls in flight at once, and
 * HTTP requests per minute (retries count). 0: no limit of that kind. Calls over a limit
 * wait in the client's queue. */
struct llm_limit {
    const char *provider; /* canonical name (llm/provider.h); copied */
    long max_concurrent;
    long requests_per_minute;
};

#define LLM_MAX_LIMITS 16

struct llm_client_opts {
    long max_host_connections;  /* per host; 0: 64 */
    long max_total_connections; /* 0: 1024 */
    int add_batch;              /* transfers added to the multi handle per loop turn; 0: 64 */
    long default_timeout_ms;    /* 0: 120000 */
    long connect_timeout_ms;    /* 0: 10000 */
    int max_attempts;           /* including the first; 0: 3; 1 disables retries */
    long backoff_base_ms;       /* first retry delay before jitter; 0: 500 */
    long backoff_max_ms;        /* cap of one delay (Retry-After included); 0: 30000 */
    size_t max_reply_bytes;     /* a longer reply fails the attempt (not retried); 0: 8 MiB */
    const struct llm_limit *limits; /* per provider; at most LLM_MAX_LIMITS */
    size_t n_limits;
    struct obs *obs; /* told of each finished call (obs/obs.h); NULL: none */
};

struct llm_client;
struct llm_call;
struct obs;

/* Returns 0, ERR_NOMEM, or ERR_INTERNAL (curl could not start). The first call in the process
 * runs curl_global_init (under pthread_once): create the first client before starting other
 * threads that use libcurl. The client lives on `base` and must be freed before it. */
int llm_client_new(struct event_base *base, const struct llm_client_opts *opts,
                   struct llm_client **out, struct err *e);

/* Aborts every call in flight without calling their callbacks (their connections close).
 * May be called from inside a callback of this client: the calls are silenced at once and the
 * memory is released when the client's event callback returns. NULL-safe. */
void llm_client_free(struct llm_client *client);

/*
 * Starts a call. Everything `req` points to is copied (or serialized) before this returns.
 * Returns 0 and the call in *out (may be NULL if the caller does not want the handle), or
 * ERR_UNSUPPORTED for a provider this build does not speak, ERR_INVALID for a request that
 * cannot be sent (no model), ERR_NOMEM; on error no callback will come.
 */
int llm_call_start(struct llm_client *client, const struct llm_request *req,
                   const struct llm_call_opts *opts, struct llm_call **out, struct err *e);

/* Aborts the call (closing its connection if a transfer is in flight); its callback is not
 * called. Must not be called from inside that call's own on_done (it is ignored there); may be
 * called from any other callback, including the call's own on_delta. NULL-safe. */
void llm_call_cancel(struct llm_call *call);

/* Calls in flight or waiting for a retry or a connection slot. */
size_t llm_client_active(const struct llm_client *client);

#endif
