/*
 * registry.h - the ToolManager's registry: the named tools an agent may list in `tools`.
 *
 * The registry knows the tools' names, descriptions and argument schemas, so that crew
 * definitions can be validated at create time and an LLM can be told what it may call; the
 * built-ins' code is in runner.h (tool_runner_invoke), which also checks arguments against
 * these schemas. A registry is built once at start-up and read-only afterwards,
 * so it may be shared between threads.
 */
#ifndef CREWD_TOOLS_REGISTRY_H
#define CREWD_TOOLS_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct tool_def {
    const char *name; /* [a-zA-Z0-9_-]{1,64}, as every provider's tool API requires */
    const char *description;
    const char *params_schema; /* JSON Schema of the arguments, as JSON text */
};

struct tool_registry;

/* A registry holding the built-in tools. Returns 0 or ERR_NOMEM. */
int tool_registry_new(struct tool_registry **out);
void tool_registry_free(struct tool_registry *reg);

/* Adds a tool (the strings are borrowed and must outlive the registry). Returns 0,
 * ERR_INVALID for a bad name, ERR_CONFLICT for a duplicate, or ERR_NOMEM. */
int tool_registry_add(struct tool_registry *reg, const struct tool_def *def, struct err *e);

/* The tool called `name` (exact match), or NULL. */
const struct tool_def *tool_registry_find(const struct tool_registry *reg, const char *name);

size_t tool_registry_count(const struct tool_registry *reg);
const struct tool_def *tool_registry_at(const struct tool_registry *reg, size_t i);

/* Writes "a, b, c" (registration order) into buf, truncated to len. For error messages. */
void tool_registry_names(const struct tool_registry *reg, char *buf, size_t len);

#endif
