/*
 * crew.c - CrewDefinition JSON <-> struct crew_def (crew.h). This is the one door through
 * which a definition enters crewd, so every field is checked here and every message starts
 * with the JSON path of the field at fault. Graph checks (cycles, order) are the compile
 * step's (plan.c); provider names are resolved there too, so this file only checks types.
 */
#include "model/crew.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/url.h"
#include "core/utf8.h"
#include "model/model_util.h"
#include "tools/registry.h"

#define TOP_FIELDS                                                                                 \
    "crew_id, name, description, execution_mode, agents, flow_relations, shared_tools, "           \
    "max_parallel_tasks, metadata, created_at, updated_at"
#define AGENT_FIELDS "agent_id, agent_class, name, config, tools, system_prompt"
#define RELATION_FIELDS "source, target"
#define AGENT_CLASSES "BaseAgent, Agent, BasicAgent, Chatbot"

/* Bytes of a client's string quoted back in a message; keeps messages well under
 * ERR_MSG_MAX so the fixed text around them is never cut. */
#define QUOTE_MAX 64
#define LIST_MAX 240
#define API_KEY_ENV_MAX 128
#define PATH_MAX_LEN 160

static const char *const top_fields[] = {
    "crew_id",  "name",           "description",  "execution_mode",
    "agents",   "flow_relations", "shared_tools", "max_parallel_tasks",
    "metadata", "created_at",     "updated_at",
};
static const char *const agent_fields[] = {"agent_id", "agent_class", "name",
                                           "config",   "tools",       "system_prompt"};
static const char *const relation_fields[] = {"source", "target"};
static const char *const agent_classes[] = {"BaseAgent", "Agent", "BasicAgent", "Chatbot"};
static const char *const reserved_names[] = {"execute", "job", "jobs"};
static const char *const mode_names[] = {"sequential", "parallel", "flow", "loop"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

const char *crew_mode_name(enum crew_mode mode)
{
    if ((unsigned)mode < COUNT(mode_names))
        return mode_names[mode];
    return "sequential";
}

int crew_mode_parse(const char *s, enum crew_mode *out)
{
    for (size_t i = 0; s != NULL && i < COUNT(mode_names); i++) {
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (enum crew_mode)i;
            return 0;
        }
    }
    return ERR_INVALID;
}

/* ---- message helpers ---- */

/* Copies at most QUOTE_MAX bytes of `s`, never cutting a UTF-8 sequence: the message goes
 * back to the client inside a JSON string, which jansson refuses to build from bad UTF-8. */
static const char *quote(char buf[QUOTE_MAX + 4], const char *s)
{
    size_t full = strlen(s), len = utf8_prefix_len(s, full, QUOTE_MAX);
    bool cut = len < full;
    memcpy(buf, s, len);
    if (cut)
        memcpy(buf + len, "...", 4);
    else
        buf[len] = '\0';
    return buf;
}

/* A bounded "a, b, c" list for messages. */
struct namelist {
    char buf[LIST_MAX + 8];
    size_t len;
    bool full;
};

static void namelist_add(struct namelist *nl, const char *name)
{
    if (nl->full)
        return;
    char q[QUOTE_MAX + 4];
    quote(q, name);
    size_t need = (nl->len ? 2 : 0) + strlen(q);
    if (nl->len + need > LIST_MAX) {
        memcpy(nl->buf + nl->len, nl->len ? ", ..." : "...", nl->len ? 6 : 4);
        nl->full = true;
        return;
    }
    nl->len += (size_t)snprintf(nl->buf + nl->len, sizeof nl->buf - nl->len, "%s%s",
                                nl->len ? ", " : "", q);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    }
    return "unknown";
}

static int type_error(struct err *e, const char *path, const char *expected, const json_t *got)
{
    return err_set(e, ERR_INVALID, "%s: expected %s, got %s", path, expected, type_name(got));
}

static bool in_list(const char *s, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, list[i]) == 0)
            return true;
    }
    return false;
}

/* Unknown fields are refused rather than ignored: a misspelt "execution_mod" silently
 * running sequentially is worse than a 400. */
static int check_fields(const json_t *obj, const char *prefix, const char *const *known,
                        size_t n_known, const char *known_text, struct err *e)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!in_list(k, known, n_known)) {
            char q[QUOTE_MAX + 4];
            return err_set(e, ERR_INVALID, "%s%s: unknown field (known: %s)", prefix, quote(q, k),
                           known_text);
        }
    }
    return 0;
}

static bool has_nul(const json_t *s)
{
    return strlen(json_string_value(s)) != json_string_length(s);
}

/* Names and ids: printed in logs and used in URLs and prompts, so no control characters. */
static int check_label(const json_t *v, const char *path, bool forbid_slash, struct err *e)
{
    if (!json_is_string(v))
        return type_error(e, path, "a string", v);
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0)
        return err_set(e, ERR_INVALID, "%s: must not be empty", path);
    if (len > CREW_MAX_NAME_BYTES)
        return err_set(e, ERR_INVALID, "%s: longer than %d bytes", path, CREW_MAX_NAME_BYTES);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        /* C0, DEL, and C1 (U+0080..U+009F, encoded 0xC2 0x80..0x9F). */
        bool c1 = c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
                  (unsigned char)s[i + 1] <= 0x9f;
        if (c < 0x20 || c == 0x7f || c1)
            return err_set(e, ERR_INVALID, "%s: must not contain control characters", path);
        if (forbid_slash && c == '/')
            return err_set(e, ERR_INVALID, "%s: must not contain '/'", path);
    }
    return 0;
}

/* A free text field (description, system_prompt): string or null; only NUL is refused. */
static int get_text(const json_t *v, const char *path, char **out, struct err *e)
{
    *out = NULL;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return type_error(e, path, "a string or null", v);
    if (has_nul(v))
        return err_set(e, ERR_INVALID, "%s: must not contain NUL characters", path);
    *out = strdup(json_string_value(v));
    return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
}

static int dup_into(char **out, const char *s, struct err *e)
{
    *out = strdup(s);
    return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
}

/* ---- tools ---- */

static int parse_tool_list(const json_t *v, const char *path, const struct tool_registry *reg,
                           char ***out, size_t *n_out, struct err *e)
{
    int rc = 0;
    *out = NULL;
    *n_out = 0;
    if (v == NULL || json_is_null(v))
        goto out;
    if (!json_is_array(v)) {
        rc = type_error(e, path, "an array of tool names or null", v);
        goto out;
    }
    size_t n = json_array_size(v);
    if (n == 0)
        goto out;
    char **list = calloc(n, sizeof *list);
    if (list == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    *out = list;
    for (size_t i = 0; i < n; i++) {
        const json_t *t = json_array_get(v, i);
        char ipath[PATH_MAX_LEN];
        snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
        if (!json_is_string(t)) {
            rc = type_error(e, ipath, "a string", t);
            goto out;
        }
        const char *name = json_string_value(t);
        if (has_nul(t) || tool_registry_find(reg, name) == NULL) {
            char known[LIST_MAX + 8];
            char q[QUOTE_MAX + 4];
            tool_registry_names(reg, known, sizeof known);
            rc = err_set(e, ERR_INVALID, "%s: unknown tool '%s' (known: %s)", ipath, quote(q, name),
                         known);
            goto out;
        }
        for (size_t j = 0; j < *n_out; j++) {
            if (strcmp(list[j], name) == 0) {
                rc = err_set(e, ERR_INVALID, "%s: tool '%s' is listed twice", ipath, name);
                goto out;
            }
        }
        rc = dup_into(&list[i], name, e);
        if (rc != 0)
            goto out;
        *n_out = i + 1;
    }
out:
    return rc;
}

/* ---- agent config ---- */

static bool is_env_name(const char *s, size_t len)
{
    if (len == 0 || len > API_KEY_ENV_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

/* Only the keys crewd itself reads are typed; the rest passes through for agent classes
 * that understand them. A null value means "not set", as Python clients often send it. */
static int check_config(const json_t *cfg, const char *p, struct err *e)
{
    char path[PATH_MAX_LEN];
    const json_t *v;

#define CFG_PATH(key) (snprintf(path, sizeof path, "%s.%s", p, key), path)
    if ((v = json_object_get(cfg, "llm")) != NULL && !json_is_null(v)) {
        if (!json_is_string(v))
            return type_error(e, CFG_PATH("llm"), "a string", v);
        if (json_string_length(v) == 0 || has_nul(v))
            return err_set(e, ERR_INVALID, "%s: must name a provider", CFG_PATH("llm"));
    }
    if ((v = json_object_get(cfg, "model")) != NULL && !json_is_null(v)) {
        if (!json_is_string(v))
            return type_error(e, CFG_PATH("model"), "a string", v);
        if (json_string_length(v) == 0 || has_nul(v))
            return err_set(e, ERR_INVALID, "%s: must not be empty", CFG_PATH("model"));
    }
    if ((v = json_object_get(cfg, "temperature")) != NULL && !json_is_null(v)) {
        if (!json_is_number(v))
            return type_error(e, CFG_PATH("temperature"), "a number", v);
        double t = json_number_value(v);
        if (!(t >= 0.0 && t <= 2.0))
            return err_set(e, ERR_INVALID, "%s: must be between 0 and 2", CFG_PATH("temperature"));
    }
    if ((v = json_object_get(cfg, "max_tokens")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v))
            return type_error(e, CFG_PATH("max_tokens"), "an integer", v);
        json_int_t m = json_integer_value(v);
        if (m < 1 || m > 1000000)
            return err_set(e, ERR_INVALID, "%s: must be between 1 and 1000000",
                           CFG_PATH("max_tokens"));
    }
    if ((v = json_object_get(cfg, "base_url")) != NULL && !json_is_null(v)) {
        if (!json_is_string(v))
            return type_error(e, CFG_PATH("base_url"), "a string", v);
        const char *u = json_string_value(v);
        if (has_nul(v) || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0))
            return err_set(e, ERR_INVALID, "%s: must start with http:// or https://",
                           CFG_PATH("base_url"));
    }
    if ((v = json_object_get(cfg, "api_key_env")) != NULL && !json_is_null(v)) {
        if (!json_is_string(v))
            return type_error(e, CFG_PATH("api_key_env"), "a string", v);
        if (!is_env_name(json_string_value(v), json_string_length(v)))
            return err_set(e, ERR_INVALID,
                           "%s: must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*, "
                           "at most %d bytes)",
                           CFG_PATH("api_key_env"), API_KEY_ENV_MAX);
    }
    if ((v = json_object_get(cfg, "timeout")) != NULL && !json_is_null(v)) {
        if (!json_is_number(v))
            return type_error(e, CFG_PATH("timeout"), "a number of seconds", v);
        double t = json_number_value(v);
        if (!(t > 0.0 && t <= 86400.0))
            return err_set(e, ERR_INVALID, "%s: must be more than 0 and at most 86400 seconds",
                           CFG_PATH("timeout"));
    }
    if ((v = json_object_get(cfg, "memory")) != NULL && !json_is_null(v) && !json_is_boolean(v))
        return type_error(e, CFG_PATH("memory"), "true or false", v);
    if ((v = json_object_get(cfg, "max_context_turns")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v))
            return type_error(e, CFG_PATH("max_context_turns"), "an integer", v);
        json_int_t m = json_integer_value(v);
        if (m < 1 || m > CREW_MAX_CONTEXT_TURNS)
            return err_set(e, ERR_INVALID, "%s: must be between 1 and %d",
                           CFG_PATH("max_context_turns"), CREW_MAX_CONTEXT_TURNS);
    }
    if ((v = json_object_get(cfg, "max_tool_iterations")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v))
            return type_error(e, CFG_PATH("max_tool_iterations"), "an integer", v);
        json_int_t m = json_integer_value(v);
        if (m < 0 || m > CREW_MAX_TOOL_ITERATIONS)
            return err_set(e, ERR_INVALID, "%s: must be between 0 and %d",
                           CFG_PATH("max_tool_iterations"), CREW_MAX_TOOL_ITERATIONS);
    }
    if ((v = json_object_get(cfg, "api_key")) != NULL && !json_is_null(v)) {
        if (!json_is_string(v))
            return type_error(e, CFG_PATH("api_key"), "a string", v);
        if (has_nul(v))
            return err_set(e, ERR_INVALID, "%s: must not contain NUL characters",
                           CFG_PATH("api_key"));
    }
#undef CFG_PATH
    return 0;
}

/* ---- agents ---- */

static const struct crew_class *find_class(const struct crew_classes *classes, const char *name)
{
    for (size_t i = 0; classes != NULL && i < classes->n; i++)
        if (strcmp(classes->items[i]->name, name) == 0)
            return classes->items[i];
    return NULL;
}

/* "BaseAgent, Agent, BasicAgent, Chatbot, Mine, ..." for the unknown-class message. */
static void class_names(const struct crew_classes *classes, char *buf, size_t len)
{
    size_t used = (size_t)snprintf(buf, len, "%s", AGENT_CLASSES);
    for (size_t i = 0; classes != NULL && i < classes->n && used < len; i++) {
        int w = snprintf(buf + used, len - used, ", %s", classes->items[i]->name);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

/* The expansion of crew_def_parse_with, on an agent whose own fields are parsed. */
static int expand_class(const struct crew_class *c, const char *p,
                        const struct tool_registry *reg, struct crew_agent *ag, struct err *e)
{
    json_t *cfg = json_deep_copy(c->config);
    if (cfg == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    const char *k;
    json_t *v;
    json_object_foreach(ag->config, k, v)
    {
        if (!json_is_null(v) && json_object_set(cfg, k, v) != 0) {
            json_decref(cfg);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
    }
    json_decref(ag->config);
    ag->config = cfg;
    /* "" is no prompt (as at compile): clients that default the field to "" get the class's */
    if ((ag->system_prompt == NULL || ag->system_prompt[0] == '\0') && c->system_prompt != NULL) {
        free(ag->system_prompt);
        ag->system_prompt = NULL;
        if (dup_into(&ag->system_prompt, c->system_prompt, e) != 0)
            return ERR_NOMEM;
    }
    if (c->n_tools > 0) {
        char **list = calloc(c->n_tools + ag->n_tools, sizeof *list);
        size_t n = 0;
        if (list == NULL)
            return err_set(e, ERR_NOMEM, "out of memory");
        for (size_t t = 0; t < c->n_tools + ag->n_tools; t++) {
            const char *name = t < c->n_tools ? c->tools[t] : ag->tools[t - c->n_tools];
            if (t < c->n_tools && tool_registry_find(reg, name) == NULL) {
                model_free_strings(list, n);
                return err_set(e, ERR_INVALID,
                               "%s.agent_class: class '%s' lists tool '%s', which no longer "
                               "exists; replace the class or define the tool",
                               p, c->name, name);
            }
            bool seen = false;
            for (size_t j = 0; j < n && !seen; j++)
                seen = strcmp(list[j], name) == 0;
            if (!seen && (list[n++] = strdup(name)) == NULL) {
                model_free_strings(list, n);
                return err_set(e, ERR_NOMEM, "out of memory");
            }
        }
        model_free_strings(ag->tools, ag->n_tools);
        ag->tools = list;
        ag->n_tools = n;
    }
    free(ag->base_class);
    ag->base_class = NULL;
    return dup_into(&ag->base_class, c->base, e);
}

static int parse_agent(const json_t *a, size_t i, const struct tool_registry *reg,
                       const struct crew_classes *classes, struct crew_agent *ag, struct err *e)
{
    const struct crew_class *custom = NULL;
    int rc = 0;
    char p[PATH_MAX_LEN], path[PATH_MAX_LEN];
    snprintf(p, sizeof p, "agents[%zu]", i);

    if (!json_is_object(a)) {
        rc = type_error(e, p, "an object", a);
        goto out;
    }
    snprintf(path, sizeof path, "%s.", p);
    rc = check_fields(a, path, agent_fields, COUNT(agent_fields), AGENT_FIELDS, e);
    if (rc != 0)
        goto out;

    const json_t *v = json_object_get(a, "agent_id");
    snprintf(path, sizeof path, "%s.agent_id", p);
    if (v == NULL || json_is_null(v)) {
        rc = err_set(e, ERR_INVALID, "%s: required", path);
        goto out;
    }
    if ((rc = check_label(v, path, false, e)) != 0 ||
        (rc = dup_into(&ag->agent_id, json_string_value(v), e)) != 0)
        goto out;

    v = json_object_get(a, "agent_class");
    snprintf(path, sizeof path, "%s.agent_class", p);
    if (v == NULL || json_is_null(v)) {
        rc = dup_into(&ag->agent_class, "BaseAgent", e);
    } else if (!json_is_string(v)) {
        rc = type_error(e, path, "a string", v);
    } else if (has_nul(v) ||
               (!in_list(json_string_value(v), agent_classes, COUNT(agent_classes)) &&
                (custom = find_class(classes, json_string_value(v))) == NULL)) {
        char q[QUOTE_MAX + 4];
        char known[LIST_MAX + 8];
        class_names(classes, known, sizeof known);
        rc = err_set(e, ERR_INVALID, "%s: unknown class '%s' (known: %s)", path,
                     quote(q, json_string_value(v)), known);
    } else {
        rc = dup_into(&ag->agent_class, json_string_value(v), e);
    }
    if (rc != 0 || (rc = dup_into(&ag->base_class, ag->agent_class, e)) != 0)
        goto out;

    v = json_object_get(a, "name");
    snprintf(path, sizeof path, "%s.name", p);
    if (v != NULL && !json_is_null(v)) {
        if ((rc = check_label(v, path, false, e)) != 0 ||
            (rc = dup_into(&ag->name, json_string_value(v), e)) != 0)
            goto out;
    }
    ag->key = ag->name ? ag->name : ag->agent_id;

    v = json_object_get(a, "config");
    snprintf(path, sizeof path, "%s.config", p);
    if (v == NULL || json_is_null(v)) {
        ag->config = json_object();
    } else if (!json_is_object(v)) {
        rc = type_error(e, path, "an object or null", v);
        goto out;
    } else {
        if ((rc = check_config(v, path, e)) != 0)
            goto out;
        ag->config = json_deep_copy(v);
    }
    if (ag->config == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }

    snprintf(path, sizeof path, "%s.tools", p);
    rc = parse_tool_list(json_object_get(a, "tools"), path, reg, &ag->tools, &ag->n_tools, e);
    if (rc != 0)
        goto out;

    snprintf(path, sizeof path, "%s.system_prompt", p);
    rc = get_text(json_object_get(a, "system_prompt"), path, &ag->system_prompt, e);
    if (rc == 0 && custom != NULL)
        rc = expand_class(custom, p, reg, ag, e);
out:
    return rc;
}

/* ---- relations ---- */

static int unknown_agent(const struct crew_def *def, const char *path, const char *name,
                         struct err *e)
{
    struct namelist nl = {.len = 0};
    nl.buf[0] = '\0';
    for (size_t i = 0; i < def->n_agents; i++)
        namelist_add(&nl, def->agents[i].key);
    char q[QUOTE_MAX + 4];
    return err_set(e, ERR_INVALID, "%s: unknown agent '%s' (known: %s)", path, quote(q, name),
                   nl.buf);
}

static int resolve_name(const struct crew_def *def, const json_t *v, const char *path, size_t *idx,
                        struct err *e)
{
    if (!json_is_string(v))
        return type_error(e, path, "an agent name", v);
    if (json_string_length(v) == 0)
        return err_set(e, ERR_INVALID, "%s: must not be empty", path);
    long found = has_nul(v) ? -1 : crew_def_find_agent(def, json_string_value(v));
    if (found < 0)
        return unknown_agent(def, path, json_string_value(v), e);
    *idx = (size_t)found;
    return 0;
}

/* One side of a relation: a name or a non-empty list of names; the same agent named twice
 * (perhaps once by key, once by agent_id) is kept once. */
static int parse_side(const struct crew_def *def, const json_t *v, const char *path, size_t **out,
                      size_t *n_out, struct err *e)
{
    int rc = 0;
    size_t n = json_is_array(v) ? json_array_size(v) : 1;
    *out = NULL;
    *n_out = 0;
    if (v == NULL) {
        rc = err_set(e, ERR_INVALID, "%s: required", path);
        goto out;
    }
    if (!json_is_array(v) && !json_is_string(v)) {
        rc = type_error(e, path, "an agent name or an array of names", v);
        goto out;
    }
    if (n == 0) {
        rc = err_set(e, ERR_INVALID, "%s: must name at least one agent", path);
        goto out;
    }
    if (n > CREW_MAX_AGENTS) {
        rc = err_set(e, ERR_INVALID, "%s: at most %d names", path, CREW_MAX_AGENTS);
        goto out;
    }
    size_t *idx = calloc(n, sizeof *idx);
    if (idx == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    *out = idx;
    for (size_t i = 0; i < n; i++) {
        size_t k;
        if (json_is_array(v)) {
            char ipath[PATH_MAX_LEN];
            snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
            rc = resolve_name(def, json_array_get(v, i), ipath, &k, e);
        } else {
            rc = resolve_name(def, v, path, &k, e);
        }
        if (rc != 0)
            goto out;
        bool seen = false;
        for (size_t j = 0; j < *n_out; j++)
            seen = seen || idx[j] == k;
        if (!seen)
            idx[(*n_out)++] = k;
    }
out:
    return rc;
}

static int parse_relations(const json_t *v, struct crew_def *def, struct err *e)
{
    int rc = 0;
    if (v == NULL || json_is_null(v))
        goto out;
    if (!json_is_array(v)) {
        rc = type_error(e, "flow_relations", "an array or null", v);
        goto out;
    }
    size_t n = json_array_size(v);
    if (n > CREW_MAX_RELATIONS) {
        rc = err_set(e, ERR_INVALID, "flow_relations: at most %d relations", CREW_MAX_RELATIONS);
        goto out;
    }
    if (n == 0)
        goto out;
    def->relations = calloc(n, sizeof *def->relations);
    if (def->relations == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    def->n_relations = n;
    size_t refs = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *r = json_array_get(v, i);
        struct crew_relation *rel = &def->relations[i];
        char p[PATH_MAX_LEN], path[PATH_MAX_LEN];
        snprintf(p, sizeof p, "flow_relations[%zu]", i);
        if (!json_is_object(r)) {
            rc = type_error(e, p, "an object with source and target", r);
            goto out;
        }
        snprintf(path, sizeof path, "%s.", p);
        rc = check_fields(r, path, relation_fields, COUNT(relation_fields), RELATION_FIELDS, e);
        if (rc != 0)
            goto out;
        const json_t *src = json_object_get(r, "source"), *dst = json_object_get(r, "target");
        refs += (json_is_array(src) ? json_array_size(src) : 1) +
                (json_is_array(dst) ? json_array_size(dst) : 1);
        if (refs > CREW_MAX_RELATION_REFS) {
            rc = err_set(e, ERR_INVALID,
                         "flow_relations: more than %d agent names in all (name each edge once)",
                         CREW_MAX_RELATION_REFS);
            goto out;
        }
        snprintf(path, sizeof path, "%s.source", p);
        rc = parse_side(def, src, path, &rel->sources, &rel->n_sources, e);
        if (rc != 0)
            goto out;
        snprintf(path, sizeof path, "%s.target", p);
        rc = parse_side(def, dst, path, &rel->targets, &rel->n_targets, e);
        if (rc != 0)
            goto out;
    }
out:
    return rc;
}

/* ---- the definition ---- */

static int parse_name(const json_t *v, struct crew_def *def, struct err *e)
{
    if (v == NULL || json_is_null(v))
        return err_set(e, ERR_INVALID, "name: required");
    int rc = check_label(v, "name", true, e);
    if (rc != 0)
        return rc;
    const char *s = json_string_value(v);
    if (id_is_uuid(s))
        return err_set(e, ERR_INVALID,
                       "name: must not have the form of a UUID (UUIDs are looked up as "
                       "crew_id)");
    if (in_list(s, reserved_names, COUNT(reserved_names)))
        return err_set(e, ERR_INVALID, "name: '%s' is reserved (it is a path of the API)", s);
    /* HTTP clients normalize "/api/v1/crew/.." away before sending, so such a crew could
     * never be reached by name in a path. */
    if (strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return err_set(e, ERR_INVALID, "name: '%s' cannot be used in a URL path", s);
    return dup_into(&def->name, s, e);
}

static int parse_agents(const json_t *v, const struct tool_registry *reg,
                        const struct crew_classes *classes, struct crew_def *def, struct err *e)
{
    int rc = 0;
    if (v == NULL || json_is_null(v)) {
        rc = err_set(e, ERR_INVALID, "agents: required (at least one agent)");
        goto out;
    }
    if (!json_is_array(v)) {
        rc = type_error(e, "agents", "an array", v);
        goto out;
    }
    size_t n = json_array_size(v);
    if (n == 0) {
        rc = err_set(e, ERR_INVALID, "agents: at least one agent is required");
        goto out;
    }
    if (n > CREW_MAX_AGENTS) {
        rc = err_set(e, ERR_INVALID, "agents: at most %d agents", CREW_MAX_AGENTS);
        goto out;
    }
    def->agents = calloc(n, sizeof *def->agents);
    if (def->agents == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    def->n_agents = n;
    for (size_t i = 0; i < n; i++) {
        rc = parse_agent(json_array_get(v, i), i, reg, classes, &def->agents[i], e);
        if (rc != 0)
            goto out;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(def->agents[j].key, def->agents[i].key) == 0) {
                char q[QUOTE_MAX + 4];
                rc = err_set(e, ERR_INVALID,
                             "agents[%zu]: key '%s' is already used by agents[%zu] (an "
                             "agent's key is its name if given, else its agent_id)",
                             i, quote(q, def->agents[i].key), j);
                goto out;
            }
        }
    }
out:
    return rc;
}

int crew_def_parse(const json_t *in, const struct tool_registry *tools, struct crew_def **out,
                   struct err *e)
{
    return crew_def_parse_with(in, tools, NULL, out, e);
}

int crew_def_parse_with(const json_t *in, const struct tool_registry *tools,
                        const struct crew_classes *classes, struct crew_def **out,
                        struct err *e)
{
    int rc = 0;
    const json_t *v;
    struct crew_def *def = calloc(1, sizeof *def);
    *out = NULL;
    if (def == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    def->max_parallel_tasks = CREW_DEFAULT_PARALLEL_TASKS;

    if (!json_is_object(in)) {
        rc = err_set(e, ERR_INVALID, "crew definition: expected an object, got %s",
                     in ? type_name(in) : "nothing");
        goto out;
    }
    rc = check_fields(in, "", top_fields, COUNT(top_fields), TOP_FIELDS, e);
    if (rc != 0)
        goto out;

    v = json_object_get(in, "crew_id");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            rc = type_error(e, "crew_id", "a UUID string or null", v);
            goto out;
        }
        if (has_nul(v) || !id_is_uuid(json_string_value(v))) {
            rc = err_set(e, ERR_INVALID, "crew_id: must be a UUID (or left out)");
            goto out;
        }
        id_canonical(json_string_value(v), def->crew_id);
    }

    if ((rc = parse_name(json_object_get(in, "name"), def, e)) != 0)
        goto out;
    if ((rc = get_text(json_object_get(in, "description"), "description", &def->description, e)) !=
        0)
        goto out;

    v = json_object_get(in, "execution_mode");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_string(v)) {
            rc = type_error(e, "execution_mode", "a string", v);
            goto out;
        }
        if (has_nul(v) || crew_mode_parse(json_string_value(v), &def->mode) != 0) {
            char q[QUOTE_MAX + 4];
            rc = err_set(e, ERR_INVALID,
                         "execution_mode: unknown mode '%s' (known: sequential, parallel, "
                         "flow, loop)",
                         quote(q, json_string_value(v)));
            goto out;
        }
    }

    if ((rc = parse_agents(json_object_get(in, "agents"), tools, classes, def, e)) != 0)
        goto out;
    if ((rc = parse_relations(json_object_get(in, "flow_relations"), def, e)) != 0)
        goto out;
    if (def->mode == CREW_MODE_FLOW && def->n_relations == 0) {
        rc = err_set(e, ERR_INVALID, "flow_relations: required when execution_mode is 'flow'");
        goto out;
    }
    rc = parse_tool_list(json_object_get(in, "shared_tools"), "shared_tools", tools,
                         &def->shared_tools, &def->n_shared_tools, e);
    if (rc != 0)
        goto out;

    v = json_object_get(in, "max_parallel_tasks");
    if (v != NULL && !json_is_null(v)) {
        if (!json_is_integer(v)) {
            rc = type_error(e, "max_parallel_tasks", "an integer", v);
            goto out;
        }
        json_int_t m = json_integer_value(v);
        if (m < 1 || m > CREW_MAX_PARALLEL_TASKS) {
            rc = err_set(e, ERR_INVALID, "max_parallel_tasks: must be between 1 and %d",
                         CREW_MAX_PARALLEL_TASKS);
            goto out;
        }
        def->max_parallel_tasks = (long)m;
    }

    v = json_object_get(in, "metadata");
    if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
        rc = type_error(e, "metadata", "an object or null", v);
        goto out;
    }
    def->metadata = json_is_object(v) ? json_deep_copy(v) : json_object();
    if (def->metadata == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }

    *out = def;
    def = NULL;
out:
    crew_def_free(def);
    return rc;
}

void crew_def_free(struct crew_def *def)
{
    if (def == NULL)
        return;
    free(def->name);
    free(def->description);
    for (size_t i = 0; def->agents != NULL && i < def->n_agents; i++) {
        struct crew_agent *a = &def->agents[i];
        free(a->agent_id);
        free(a->agent_class);
        free(a->base_class);
        free(a->name);
        json_decref(a->config);
        model_free_strings(a->tools, a->n_tools);
        free(a->system_prompt);
    }
    free(def->agents);
    for (size_t i = 0; def->relations != NULL && i < def->n_relations; i++) {
        free(def->relations[i].sources);
        free(def->relations[i].targets);
    }
    free(def->relations);
    model_free_strings(def->shared_tools, def->n_shared_tools);
    json_decref(def->metadata);
    free(def);
}

long crew_def_find_agent(const struct crew_def *def, const char *name)
{
    if (def == NULL || name == NULL)
        return -1;
    /* Agents not yet parsed (during parsing) have NULL keys; skip them. */
    for (size_t i = 0; i < def->n_agents; i++) {
        if (def->agents[i].key != NULL && strcmp(def->agents[i].key, name) == 0)
            return (long)i;
    }
    for (size_t i = 0; i < def->n_agents; i++) {
        if (def->agents[i].agent_id != NULL && strcmp(def->agents[i].agent_id, name) == 0)
            return (long)i;
    }
    return -1;
}

/* ---- custom agent classes ---- */

static const char *const class_fields[] = {"name", "base", "config", "system_prompt", "tools",
                                           "builtin", "created_at", "updated_at"};
#define CLASS_FIELDS "name, base, config, system_prompt, tools"

bool crew_class_is_builtin(const char *name)
{
    return name != NULL && in_list(name, agent_classes, COUNT(agent_classes));
}

void crew_class_free(struct crew_class *c)
{
    if (c == NULL)
        return;
    free(c->name);
    free(c->base);
    json_decref(c->config);
    model_free_strings(c->tools, c->n_tools);
    free(c->system_prompt);
    free(c);
}

int crew_class_parse(const json_t *in, const struct tool_registry *tools, struct crew_class **out,
                     struct err *e)
{
    int rc = 0;
    struct crew_class *c = calloc(1, sizeof *c);
    *out = NULL;
    if (c == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!json_is_object(in)) {
        rc = err_set(e, ERR_INVALID, "agent class: expected an object, got %s",
                     in ? type_name(in) : "nothing");
        goto out;
    }
    if ((rc = check_fields(in, "", class_fields, COUNT(class_fields), CLASS_FIELDS, e)) != 0)
        goto out;
    const json_t *v = json_object_get(in, "name");
    const char *name = json_string_value(v);
    bool ok = name != NULL && !has_nul(v) && json_string_length(v) >= 1 &&
              json_string_length(v) <= 64;
    for (size_t i = 0; ok && name[i] != '\0'; i++) {
        char ch = name[i];
        ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '-';
    }
    if (!ok) {
        rc = err_set(e, ERR_INVALID, "name: required, must match [a-zA-Z0-9_-]{1,64}");
        goto out;
    }
    if (crew_class_is_builtin(name)) {
        rc = err_set(e, ERR_INVALID, "name: '%s' is a built-in class (%s); choose another name",
                     name, AGENT_CLASSES);
        goto out;
    }
    if ((rc = dup_into(&c->name, name, e)) != 0)
        goto out;
    v = json_object_get(in, "base");
    const char *base = (v == NULL || json_is_null(v)) ? "BaseAgent" : json_string_value(v);
    if (base == NULL || (json_is_string(v) && has_nul(v)) ||
        (strcmp(base, "BaseAgent") != 0 && strcmp(base, "Chatbot") != 0)) {
        rc = err_set(e, ERR_INVALID, "base: must be \"BaseAgent\" (the default) or \"Chatbot\"");
        goto out;
    }
    if ((rc = dup_into(&c->base, base, e)) != 0)
        goto out;
    v = json_object_get(in, "config");
    if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
        rc = type_error(e, "config", "an object or null", v);
        goto out;
    }
    if (json_is_object(v) && (rc = check_config(v, "config", e)) != 0)
        goto out;
    c->config = json_is_object(v) ? json_deep_copy(v) : json_object();
    if (c->config == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    v = json_object_get(in, "tools");
    if (tools != NULL) {
        rc = parse_tool_list(v, "tools", tools, &c->tools, &c->n_tools, e);
    } else if (v != NULL && !json_is_null(v)) {
        /* Loaded for a crew: the names were checked when the class was put. */
        if (!json_is_array(v)) {
            rc = type_error(e, "tools", "an array of tool names or null", v);
            goto out;
        }
        size_t n = json_array_size(v);
        if (n > 0 && (c->tools = calloc(n, sizeof *c->tools)) == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n && rc == 0; i++) {
            const char *t = json_string_value(json_array_get(v, i));
            if (t == NULL)
                rc = err_set(e, ERR_INVALID, "tools[%zu]: must be a string", i);
            else if ((rc = dup_into(&c->tools[i], t, e)) == 0)
                c->n_tools = i + 1;
        }
    }
    if (rc != 0)
        goto out;
    if ((rc = get_text(json_object_get(in, "system_prompt"), "system_prompt", &c->system_prompt,
                       e)) != 0)
        goto out;
    *out = c;
    c = NULL;
out:
    crew_class_free(c);
    return rc;
}

json_t *crew_class_to_json(const struct crew_class *c, int flags)
{
    json_t *o = json_object();
    json_t *cfg =
        (flags & CREW_JSON_REDACTED) ? crew_config_redact(c->config) : json_deep_copy(c->config);
    bool ok = o != NULL && model_put(o, "name", json_string(c->name)) &&
              model_put(o, "base", json_string(c->base));
    if (ok)
        ok = model_put(o, "config", cfg);
    else
        json_decref(cfg);
    ok = ok && model_put(o, "system_prompt", model_string_or_null(c->system_prompt)) &&
         model_put(o, "tools", model_string_array(c->tools, c->n_tools));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- JSON out ---- */

/* Adds `v` (a new reference, possibly NULL) under `key`, consuming it even on failure (as
 * json_object_set_new does); false when anything failed. */

static json_t *side_json(const struct crew_def *def, const size_t *idx, size_t n)
{
    if (n == 1)
        return json_string(def->agents[idx[0]].key);
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_string(def->agents[idx[i]].key)) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *agent_json(const struct crew_agent *ag, int flags)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_t *cfg =
        (flags & CREW_JSON_REDACTED) ? crew_config_redact(ag->config) : json_deep_copy(ag->config);
    bool ok = model_put(o, "agent_id", json_string(ag->agent_id)) &&
              model_put(o, "agent_class", json_string(ag->agent_class)) &&
              model_put(o, "name", model_string_or_null(ag->name));
    if (ok)
        ok = model_put(o, "config", cfg); /* consumes cfg */
    else
        json_decref(cfg);
    ok = ok && model_put(o, "tools", model_string_array(ag->tools, ag->n_tools)) &&
         model_put(o, "system_prompt", model_string_or_null(ag->system_prompt));
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *crew_def_to_json(const struct crew_def *def, const char *crew_id, const char *created_at,
                         const char *updated_at, int flags)
{
    json_t *o = json_object();
    json_t *agents = json_array();
    json_t *rels = json_array();
    bool ok = o != NULL && agents != NULL && rels != NULL;

    for (size_t i = 0; ok && i < def->n_agents; i++)
        ok = json_array_append_new(agents, agent_json(&def->agents[i], flags)) == 0;
    for (size_t i = 0; ok && i < def->n_relations; i++) {
        const struct crew_relation *r = &def->relations[i];
        json_t *ro = json_object();
        ok = ro != NULL && model_put(ro, "source", side_json(def, r->sources, r->n_sources)) &&
             model_put(ro, "target", side_json(def, r->targets, r->n_targets));
        ok = ok && json_array_append(rels, ro) == 0;
        json_decref(ro);
    }
    if (ok && crew_id != NULL)
        ok = model_put(o, "crew_id", json_string(crew_id));
    ok = ok && model_put(o, "name", json_string(def->name)) &&
         model_put(o, "description", model_string_or_null(def->description)) &&
         model_put(o, "execution_mode", json_string(crew_mode_name(def->mode)));
    if (ok) {
        ok = model_put(o, "agents", agents); /* consumes agents, even on failure */
        agents = NULL;
    }
    if (ok) {
        ok = model_put(o, "flow_relations", rels);
        rels = NULL;
    }
    ok = ok &&
         model_put(o, "shared_tools", model_string_array(def->shared_tools, def->n_shared_tools)) &&
         model_put(o, "max_parallel_tasks", json_integer(def->max_parallel_tasks)) &&
         model_put(o, "metadata", json_deep_copy(def->metadata));
    if (ok && created_at != NULL)
        ok = model_put(o, "created_at", json_string(created_at));
    if (ok && updated_at != NULL)
        ok = model_put(o, "updated_at", json_string(updated_at));
    if (!ok) {
        json_decref(agents);
        json_decref(rels);
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- secrets ---- */

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle), h = strlen(hay);
    for (size_t i = 0; i + n <= h; i++) {
        if (strncasecmp(hay + i, needle, n) == 0)
            return true;
    }
    return false;
}

static bool ends_with_ci(const char *s, const char *suffix)
{
    size_t n = strlen(suffix), len = strlen(s);
    return len >= n && strcasecmp(s + len - n, suffix) == 0;
}

bool crew_config_key_is_secret(const char *key)
{
    static const char *const parts[] = {"password",      "passwd",    "secret",      "api_key",
                                        "apikey",        "api-key",   "private_key", "credential",
                                        "authorization", "passphrase"};
    if (key == NULL)
        return false;
    /* "api_key_env" names a variable, it does not hold the key. */
    if (ends_with_ci(key, "_env"))
        return false;
    for (size_t i = 0; i < COUNT(parts); i++) {
        if (contains_ci(key, parts[i]))
            return true;
    }
    /* Suffixes catch the spellings of every SDK (access_token, accessToken, openai_key,
     * apiKey, x-goog-api-key) at the price of redacting a harmless key now and then; a
     * leaked secret costs more than a hidden cache_key. Not a bare "token" substring:
     * max_tokens and total_tokens only count tokens. */
    return ends_with_ci(key, "key") || ends_with_ci(key, "token") || contains_ci(key, "bearer") ||
           strcasecmp(key, "auth") == 0;
}

static json_t *redact(const json_t *v)
{
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        json_t *child;
        json_object_foreach((json_t *)v, k, child)
        {
            if (o == NULL)
                return NULL;
            json_t *c = crew_config_key_is_secret(k) ? json_string("***") : redact(child);
            if (json_object_set_new(o, k, c) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        for (size_t i = 0; a != NULL && i < json_array_size(v); i++) {
            if (json_array_append_new(a, redact(json_array_get(v, i))) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    if (json_is_string(v) && strstr(json_string_value(v), "://") != NULL) {
        /* A URL (base_url, a proxy) may carry a password or a key in its query. */
        char *shown = url_redact_secrets(json_string_value(v));
        json_t *s = shown ? json_string(shown) : NULL;
        free(shown);
        return s;
    }
    return json_deep_copy(v);
}

json_t *crew_config_redact(const json_t *config)
{
    if (config == NULL)
        return NULL;
    return redact(config);
}
