/*
 * user_tool.h - user-defined HTTP tools (PUT /api/v1/tools): the definition a client sends,
 * checked and normalized; its view with secrets masked; and the registry entry it becomes.
 *
 * A definition is {name, description, parameters, url, method, headers, timeout}. A call of
 * such a tool is an HTTP request made by the runner (runner.h) under the same allowlist and
 * address guard as the http_request tool: POST sends the arguments as a JSON body, GET as
 * query parameters. Nothing here does I/O; the API stores the normalized JSON and puts the
 * entry in the registry, main loads them back at start-up. docs/internals/tools.md.
 */
#ifndef CREWD_TOOLS_USER_TOOL_H
#define CREWD_TOOLS_USER_TOOL_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"
#include "tools/registry.h"

#define USER_TOOL_MAX_DESCRIPTION_BYTES 4096
#define USER_TOOL_MAX_SCHEMA_BYTES (64 * 1024)
#define USER_TOOL_MAX_URL_BYTES 2048
#define USER_TOOL_MAX_HEADERS 32
#define USER_TOOL_MAX_HEADER_BYTES 4096
#define USER_TOOL_MAX_TIMEOUT_S 300

/*
 * Checks `in` (borrowed) and returns in *out a new normalized object with every field:
 * name, description, parameters, url, method ("POST" or "GET"), headers (object, {} when
 * none), timeout (seconds, or null for the runner's default). Returns 0, ERR_INVALID with a
 * message naming the field (a built-in's name is refused here too), or ERR_NOMEM.
 */
int user_tool_parse(const json_t *in, json_t **out, struct err *e);

/* A deep copy of a normalized definition with secret-looking header values (names holding
 * authorization, auth, key, token, secret, password, cookie; case-insensitive) replaced by
 * "***". NULL on allocation failure. */
json_t *user_tool_redact(const json_t *normalized);

/* True for a header name whose value user_tool_redact masks. */
bool user_tool_header_is_secret(const char *name);

/*
 * Fills *def from a normalized definition (borrowed: def's name, description and url point
 * into it) and sets *schema_text and *headers_text to new strings def points to, for the
 * caller to free after tool_registry_put_user copied them. Returns 0 or ERR_NOMEM.
 */
int user_tool_to_def(const json_t *normalized, struct tool_def *def, char **schema_text,
                     char **headers_text, struct err *e);

/* The header rules every http tool applies: a token name (RFC 9110), and not one of the
 * names libcurl or the connection own (Host, Content-Length, ...). */
bool tool_header_name_ok(const char *name);
bool tool_header_reserved(const char *name);

#endif
