/*
 * registry.h - the ToolManager's registry: the named tools an agent may list in `tools`.
 *
 * The registry knows the tools' names, descriptions and argument schemas, so that crew
 * definitions can be validated at create time and an LLM can be told what it may call; the
 * built-ins' code is in runner.h (tool_runner_invoke), which also checks arguments against
 * these schemas.
 *
 * Two kinds of tools: the built-ins (strings static, code in runner.c) and the user-defined
 * HTTP tools of PUT /api/v1/tools (tools/user_tool.h), whose strings the registry owns and
 * which are added, replaced and removed while crewd runs. Threads: a registry is touched on
 * the loop thread only (the API changes it there; crew validation, agent steps and the
 * runner read it there).
 *
 * Pointer lifetime: a tool_def pointer from find/at, and its strings, are valid until the
 * next put or remove; readers that keep anything longer copy it (an agent step copies the
 * names, descriptions and schemas it offers its model). So replacing or removing a user tool
 * frees its strings at once, and repeated PUTs cost no memory.
 */
#ifndef CREWD_TOOLS_REGISTRY_H
#define CREWD_TOOLS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

enum tool_origin {
    TOOL_BUILTIN = 0, /* code in runner.c; strings borrowed */
    TOOL_USER,        /* an HTTP endpoint defined through the API; strings owned */
};

struct tool_def {
    const char *name; /* [a-zA-Z0-9_-]{1,64}, as every provider's tool API requires */
    const char *description;
    const char *params_schema; /* JSON Schema of the arguments, as JSON text */
    enum tool_origin origin;
    /* TOOL_USER only: where a call goes (tools/user_tool.h has the rules). */
    const char *url;          /* http(s) URL */
    bool post;                /* POST the arguments as a JSON body; false: GET with a query */
    const char *headers_json; /* JSON object of strings, or NULL for none */
    long timeout_ms;          /* 0: the runner's http timeout */
};

struct tool_registry;

/* A registry holding the built-in tools. Returns 0 or ERR_NOMEM. */
int tool_registry_new(struct tool_registry **out);
void tool_registry_free(struct tool_registry *reg);

/* Adds a tool (the strings are borrowed and must outlive the registry). Returns 0,
 * ERR_INVALID for a bad name, ERR_CONFLICT for a duplicate, or ERR_NOMEM. */
int tool_registry_add(struct tool_registry *reg, const struct tool_def *def, struct err *e);

/*
 * Adds or replaces the user tool def->name, copying every string of `def` (borrowed for the
 * call; def->origin is ignored and set to TOOL_USER). A replaced tool keeps its place in
 * the registration order. *replaced (may be NULL) says which happened. Returns 0,
 * ERR_INVALID (bad name, no description, schema or url), ERR_CONFLICT when the name is a
 * built-in's, or ERR_NOMEM (the registry unchanged).
 */
int tool_registry_put_user(struct tool_registry *reg, const struct tool_def *def,
                           bool *replaced, struct err *e);

/* Removes the user tool `name`. Returns 0, ERR_NOT_FOUND ("unknown tool 'x'") or
 * ERR_CONFLICT when `name` is a built-in (built-ins cannot be removed). */
int tool_registry_remove_user(struct tool_registry *reg, const char *name, struct err *e);

/* True when `name` is one of the built-in tools (whatever the registry holds). */
bool tool_registry_is_builtin(const char *name);

/* The tool called `name` (exact match), or NULL. */
const struct tool_def *tool_registry_find(const struct tool_registry *reg, const char *name);

size_t tool_registry_count(const struct tool_registry *reg);
const struct tool_def *tool_registry_at(const struct tool_registry *reg, size_t i);

/* Writes "a, b, c" (registration order) into buf, truncated to len. For error messages. */
void tool_registry_names(const struct tool_registry *reg, char *buf, size_t len);

#endif
