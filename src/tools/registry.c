/*
 * registry.c - the tool registry behind registry.h: a growable array of tool_def, filled
 * with the built-in tools at creation, plus the user tools of the API, whose strings are
 * owned here. Lookups are linear because a registry holds a handful of tools and is only
 * read at create time and when an agent step starts; the built-ins' code lives in runner.c.
 */
#include "tools/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL_NAME_MAX 64

struct tool_registry {
    struct tool_def *tools;
    size_t n;
    size_t cap;
    /* (user tools own their strings; replace and remove free them at once) */
};

/* The built-ins (runner.c holds their code). `current_time` and `http_get` are the names of
 * the first release, kept as aliases of `datetime` and `http_request` for the crews that
 * already list them; each keeps a schema of its own (http_get has no method and no body). */
#define TZ_SCHEMA                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"timezone\":{\"type\":\"string\","                 \
    "\"description\":\"IANA time zone such as Europe/Madrid; UTC when absent\"}},"              \
    "\"additionalProperties\":false}"
static const struct builtin {
    const char *name, *description, *params_schema;
} builtin_tools[] = {
    {"calculator",
     "Evaluate an arithmetic expression: numbers (decimals, exponents), + - * / % ^, "
     "parentheses, unary minus, sqrt abs min max round floor ceil log exp sin cos tan, pi, e.",
     "{\"type\":\"object\",\"properties\":{\"expression\":{\"type\":\"string\"}},"
     "\"required\":[\"expression\"],\"additionalProperties\":false}"},
    {"datetime",
     "The current date and time (ISO 8601 with offset, zone and weekday), in UTC or in the "
     "given IANA time zone.",
     TZ_SCHEMA},
    {"current_time", "Alias of datetime: the current date and time, in UTC or in the given IANA "
                     "time zone.",
     TZ_SCHEMA},
    {"http_request",
     "Send an HTTP GET or POST to an allowed host and return \"HTTP <status>\" and the reply "
     "body as text. Redirects are not followed.",
     "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\"},"
     "\"method\":{\"type\":\"string\",\"enum\":[\"GET\",\"POST\"]},"
     "\"headers\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}},"
     "\"body\":{\"type\":\"string\"}},"
     "\"required\":[\"url\"],\"additionalProperties\":false}"},
    {"http_get", "Alias of http_request with method GET: fetch a URL and return the body as text.",
     "{\"type\":\"object\",\"properties\":{\"url\":{\"type\":\"string\"},"
     "\"headers\":{\"type\":\"object\",\"additionalProperties\":{\"type\":\"string\"}}},"
     "\"required\":[\"url\"],\"additionalProperties\":false}"},
    {"json_query", "Extract a value from JSON text by a dotted path (a.b.0.c); an empty path "
                   "returns the whole document.",
     "{\"type\":\"object\",\"properties\":{\"json\":{\"type\":\"string\"},"
     "\"path\":{\"type\":\"string\"}},\"required\":[\"json\",\"path\"],"
     "\"additionalProperties\":false}"},
};

/* Providers' tool APIs all accept ^[a-zA-Z0-9_-]{1,64}$; anything else would fail later,
 * at the first LLM call, so refuse it at registration. */
static bool name_is_valid(const char *name)
{
    if (name == NULL)
        return false;
    size_t len = strlen(name);
    if (len == 0 || len > TOOL_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

int tool_registry_new(struct tool_registry **out)
{
    int rc = 0;
    struct tool_registry *reg = calloc(1, sizeof *reg);
    *out = NULL;
    if (reg == NULL) {
        rc = ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < sizeof builtin_tools / sizeof builtin_tools[0]; i++) {
        const struct builtin *b = &builtin_tools[i];
        struct tool_def def = {.name = b->name,
                               .description = b->description,
                               .params_schema = b->params_schema,
                               .origin = TOOL_BUILTIN};
        rc = tool_registry_add(reg, &def, NULL);
        if (rc != 0)
            goto out;
    }
    *out = reg;
    reg = NULL;
out:
    tool_registry_free(reg);
    return rc;
}

/* Frees the strings a user tool owns. */
static void user_strings_free(struct tool_def *d)
{
    free((char *)d->name);
    free((char *)d->description);
    free((char *)d->params_schema);
    free((char *)d->url);
    free((char *)d->headers_json);
}

void tool_registry_free(struct tool_registry *reg)
{
    if (reg == NULL)
        return;
    for (size_t i = 0; i < reg->n; i++)
        if (reg->tools[i].origin == TOOL_USER)
            user_strings_free(&reg->tools[i]);
    free(reg->tools);
    free(reg);
}

bool tool_registry_is_builtin(const char *name)
{
    for (size_t i = 0; name != NULL && i < sizeof builtin_tools / sizeof builtin_tools[0]; i++)
        if (strcmp(builtin_tools[i].name, name) == 0)
            return true;
    return false;
}

static char *dup_opt(const char *s, bool *nomem)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *nomem = true;
    return d;
}


/* Room for one more tool. */
static int tools_reserve(struct tool_registry *reg)
{
    if (reg->n < reg->cap)
        return 0;
    size_t cap = reg->cap ? reg->cap * 2 : 8;
    struct tool_def *grown = realloc(reg->tools, cap * sizeof *grown);
    if (grown == NULL)
        return ERR_NOMEM;
    reg->tools = grown;
    reg->cap = cap;
    return 0;
}

int tool_registry_put_user(struct tool_registry *reg, const struct tool_def *def,
                           bool *replaced, struct err *e)
{
    if (reg == NULL || def == NULL)
        return err_set(e, ERR_INVALID, "tool: missing definition");
    if (!name_is_valid(def->name))
        return err_set(e, ERR_INVALID, "tool name: must match [a-zA-Z0-9_-]{1,64}");
    if (tool_registry_is_builtin(def->name))
        return err_set(e, ERR_CONFLICT, "tool '%s' is a built-in tool", def->name);
    if (def->description == NULL || def->params_schema == NULL || def->url == NULL)
        return err_set(e, ERR_INVALID, "tool '%s': description, schema and url are required",
                       def->name);
    struct tool_def *old = (struct tool_def *)tool_registry_find(reg, def->name);
    /* Everything that can fail comes first, so a failure leaves the registry as it was. */
    bool nomem = old == NULL && tools_reserve(reg) != 0;
    struct tool_def copy = {
        .name = old ? NULL : dup_opt(def->name, &nomem),
        .description = dup_opt(def->description, &nomem),
        .params_schema = dup_opt(def->params_schema, &nomem),
        .origin = TOOL_USER,
        .url = dup_opt(def->url, &nomem),
        .post = def->post,
        .headers_json = dup_opt(def->headers_json, &nomem),
        .timeout_ms = def->timeout_ms,
    };
    if (nomem) {
        user_strings_free(&copy);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (old != NULL) {
        /* The name is kept (the same bytes); the rest is freed. */
        copy.name = old->name;
        free((char *)old->description);
        free((char *)old->params_schema);
        free((char *)old->url);
        free((char *)old->headers_json);
        *old = copy;
    } else {
        reg->tools[reg->n++] = copy;
    }
    if (replaced != NULL)
        *replaced = old != NULL;
    return 0;
}

int tool_registry_remove_user(struct tool_registry *reg, const char *name, struct err *e)
{
    if (tool_registry_is_builtin(name))
        return err_set(e, ERR_CONFLICT, "tool '%s' is a built-in tool and cannot be removed",
                       name);
    size_t i = 0;
    while (reg != NULL && name != NULL && i < reg->n && strcmp(reg->tools[i].name, name) != 0)
        i++;
    if (reg == NULL || name == NULL || i == reg->n || reg->tools[i].origin != TOOL_USER)
        return err_set(e, ERR_NOT_FOUND, "unknown tool '%.64s'", name ? name : "");
    struct tool_def *d = &reg->tools[i];
    free((char *)d->name);
    free((char *)d->description);
    free((char *)d->params_schema);
    free((char *)d->url);
    free((char *)d->headers_json);
    memmove(d, d + 1, (reg->n - i - 1) * sizeof *d);
    reg->n--;
    return 0;
}

int tool_registry_add(struct tool_registry *reg, const struct tool_def *def, struct err *e)
{
    int rc = 0;
    if (reg == NULL || def == NULL) {
        rc = err_set(e, ERR_INVALID, "tool: missing definition");
        goto out;
    }
    if (!name_is_valid(def->name)) {
        rc = err_set(e, ERR_INVALID, "tool name: must match [a-zA-Z0-9_-]{1,64}");
        goto out;
    }
    if (tool_registry_find(reg, def->name) != NULL) {
        rc = err_set(e, ERR_CONFLICT, "tool '%s' is already registered", def->name);
        goto out;
    }
    if (reg->n == reg->cap) {
        size_t cap = reg->cap ? reg->cap * 2 : 8;
        struct tool_def *grown = realloc(reg->tools, cap * sizeof *grown);
        if (grown == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
        reg->tools = grown;
        reg->cap = cap;
    }
    reg->tools[reg->n++] = *def;
out:
    return rc;
}

const struct tool_def *tool_registry_find(const struct tool_registry *reg, const char *name)
{
    if (reg == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < reg->n; i++) {
        if (strcmp(reg->tools[i].name, name) == 0)
            return &reg->tools[i];
    }
    return NULL;
}

size_t tool_registry_count(const struct tool_registry *reg)
{
    return reg ? reg->n : 0;
}

const struct tool_def *tool_registry_at(const struct tool_registry *reg, size_t i)
{
    if (reg == NULL || i >= reg->n)
        return NULL;
    return &reg->tools[i];
}

void tool_registry_names(const struct tool_registry *reg, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return;
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; reg != NULL && i < reg->n && used < len; i++) {
        int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", reg->tools[i].name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}
