/*
 * runner.h - the ToolManager's runner: executes the built-in tools of a registry, on the
 * caller's libevent loop, for the engine's agent steps.
 *
 * A call goes: tool_runner_invoke(name, arguments as JSON text) -> arguments checked against
 * the tool's schema (registry.h) -> the tool runs (calculator, datetime and json_query at
 * once; http_request as a libcurl transfer on the loop) -> the callback, from the loop, with
 * the text for the model or a message for the model. A tool failing (bad arguments, 1/0, a
 * refused host, a timeout) is a normal outcome delivered through the callback.
 *
 * Threads: a runner and its calls belong to the thread running `base`; everything here is
 * called from that thread only. The datetime tool relies on that (tzclock.h).
 * docs/internals/tools.md has the long version, with the http safety rules.
 */
#ifndef CREWD_TOOLS_RUNNER_H
#define CREWD_TOOLS_RUNNER_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct event_base;
struct tool_registry;
struct tool_runner;
struct tool_call;

#define TOOL_MAX_ARGS_BYTES (64 * 1024) /* arguments JSON text */
#define TOOL_DEF_HTTP_TIMEOUT_MS 10000
#define TOOL_DEF_HTTP_MAX_BYTES ((size_t)1 << 20)

struct tool_runner_opts {
    /* Host names (case-insensitive, exact), "*.example.com" (any subdomain of example.com, not
     * example.com itself) or "*" (any host). Empty: the http tools refuse every host. */
    const char *const *http_allow_hosts;
    size_t n_http_allow_hosts;
    bool http_allow_private; /* allow loopback/private/link-local addresses (tests need it) */
    long http_timeout_ms;    /* whole transfer; 0: TOOL_DEF_HTTP_TIMEOUT_MS */
    size_t http_max_bytes;   /* reply body cap; 0: TOOL_DEF_HTTP_MAX_BYTES (longer replies are
                                cut, and the output says so) */
};

/*
 * `rc` is 0 with `output` (NUL-terminated UTF-8 text for the model), or a negative ERR_* code
 * with `e->msg` a message for the model ("calculator: division by zero") and `output` NULL.
 * `output` and `e` are borrowed for the duration of the callback. The callback may invoke,
 * cancel other calls and free the runner.
 */
typedef void (*tool_done_cb)(void *arg, int rc, const char *output, const struct err *e);

/* A runner over `reg` (borrowed; must outlive the runner). The strings of opts are copied.
 * Returns 0, ERR_NOMEM, or ERR_INTERNAL (libcurl could not start). */
int tool_runner_new(struct event_base *base, const struct tool_registry *reg,
                    const struct tool_runner_opts *opts, struct tool_runner **out, struct err *e);

/* Aborts the calls in flight silently (no callbacks) and frees everything. NULL is fine. */
void tool_runner_free(struct tool_runner *r);

/*
 * Starts the tool `name` with `args_json` (a JSON object as text; NULL or "" means {}).
 * Returns 0 and then calls cb exactly once, from the loop and never from inside this call,
 * unless the call is cancelled first; *out (may be NULL) receives the call, valid until its
 * callback starts or it is cancelled. Every tool-level failure (unknown tool, bad arguments,
 * the tool's own errors) comes through cb. Returns ERR_INVALID (r, name or cb NULL) or
 * ERR_NOMEM without calling cb.
 */
int tool_runner_invoke(struct tool_runner *r, const char *name, const char *args_json,
                       tool_done_cb cb, void *arg, struct tool_call **out, struct err *e);

/* No callback afterwards; frees the call (a transfer in flight is aborted). NULL is fine.
 * Not to be called on a call whose callback has started. */
void tool_call_cancel(struct tool_call *c);

/* Calls started and neither delivered nor cancelled. */
size_t tool_runner_active(const struct tool_runner *r);

#endif
