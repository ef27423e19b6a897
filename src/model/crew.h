/*
 * crew.h - the CrewDefinition and AgentDefinition of API.md section 2: JSON in, validated C
 * structure out, normalized JSON back.
 *
 * crew_def_parse() is the only door through which a crew definition enters crewd: it checks
 * types, required fields, unknown fields, agent classes, tool names, duplicate agent keys and
 * the names used in flow relations, and fills in defaults. Graph checks (cycles, order) belong
 * to the compile step (plan.h). Messages name the offending field as a JSON path and the fix,
 * e.g. "agents[1].agent_class: unknown class 'Foo' (known: BaseAgent, Agent, BasicAgent,
 * Chatbot)".
 *
 * Not thread-safe per object; a crew_def is owned by whoever parsed it.
 */
#ifndef CREWD_MODEL_CREW_H
#define CREWD_MODEL_CREW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "core/id.h"

struct tool_registry;

enum crew_mode {
    CREW_MODE_SEQUENTIAL = 0,
    CREW_MODE_PARALLEL,
    CREW_MODE_FLOW,
    CREW_MODE_LOOP,
};

/* "sequential", "parallel", "flow", "loop". */
const char *crew_mode_name(enum crew_mode mode);
/* Returns 0, or ERR_INVALID for any other string (exact, lowercase match). */
int crew_mode_parse(const char *s, enum crew_mode *out);

/* Limits on a definition; beyond them the definition is refused with ERR_INVALID. */
#define CREW_MAX_AGENTS 100
#define CREW_MAX_NAME_BYTES 200
#define CREW_MAX_RELATIONS 1000
/* Agent names across all relations. Resolving a name scans the agents, and the definition is
 * parsed on the loop thread: this bounds the worst 1 MiB body to a few milliseconds. */
#define CREW_MAX_RELATION_REFS 10000
#define CREW_MAX_PARALLEL_TASKS 1000
#define CREW_DEFAULT_PARALLEL_TASKS 10
/* config.max_tool_iterations: rounds of tool calls in one agent step */
#define CREW_DEFAULT_TOOL_ITERATIONS 10
#define CREW_MAX_TOOL_ITERATIONS 100
/* Conversation memory (config.memory, on by default for Chatbot): the last
 * config.max_context_turns exchanges of (crew, agent key, user_id, session_id). */
#define CREW_DEFAULT_CONTEXT_TURNS 10
#define CREW_MAX_CONTEXT_TURNS 1000

struct crew_agent {
    char *agent_id;    /* required, non-empty */
    char *agent_class; /* one of the known classes, built-in or custom; default "BaseAgent" */
    char *base_class;  /* the built-in class whose behaviour it has: agent_class itself, or a
                          custom class's base ("BaseAgent" or "Chatbot") */
    char *name;        /* NULL when not given */
    const char *key;   /* name if given, else agent_id (points into this struct) */
    json_t *config;    /* object, owned, never NULL; may hold secrets (api_key) */
    char **tools;      /* names known to the tool registry */
    size_t n_tools;
    char *system_prompt; /* NULL when not given */
};

/* One flow relation, with agent names resolved to indexes into crew_def.agents. */
struct crew_relation {
    size_t *sources;
    size_t n_sources;
    size_t *targets;
    size_t n_targets;
};

struct crew_def {
    char crew_id[ID_UUID_LEN]; /* "" when the client gave none (create generates one) */
    char *name;                /* required, unique across crews (checked by the store) */
    char *description;         /* NULL when not given */
    enum crew_mode mode;       /* default sequential */
    struct crew_agent *agents; /* at least one */
    size_t n_agents;
    struct crew_relation *relations;
    size_t n_relations;
    char **shared_tools;
    size_t n_shared_tools;
    long max_parallel_tasks; /* default 10 */
    json_t *metadata;        /* object, owned, never NULL */
};

/*
 * Validates `in` (borrowed) as a CrewDefinition and returns a new crew_def in `*out`.
 * `tools` (borrowed) is the registry that tool names are checked against.
 * Server-owned fields (`created_at`, `updated_at`) are accepted and ignored; `crew_id`, when
 * present, must be a UUID string.
 * Returns 0, ERR_INVALID (message names the field), or ERR_NOMEM.
 */
int crew_def_parse(const json_t *in, const struct tool_registry *tools, struct crew_def **out,
                   struct err *e);

/*
 * A custom agent class (PUT /api/v1/agents): a name usable as agent_class, the built-in class
 * it behaves as, and defaults for the agents that use it. Owned by whoever parsed it.
 */
struct crew_class {
    char *name;          /* [a-zA-Z0-9_-]{1,64}, not a built-in class */
    char *base;          /* "BaseAgent" or "Chatbot" */
    json_t *config;      /* object, never NULL; may hold secrets */
    char **tools;        /* tool names */
    size_t n_tools;
    char *system_prompt; /* NULL when none */
};

/* The custom classes a definition may name (borrowed). */
struct crew_classes {
    struct crew_class *const *items;
    size_t n;
};

/* True for BaseAgent, Agent, BasicAgent, Chatbot. */
bool crew_class_is_builtin(const char *name);

/*
 * Validates `in` as a class {name, base, config, system_prompt, tools}: config by the rules
 * of an AgentDefinition's config, tools against `tools` (borrowed; NULL: names are not
 * checked, as when classes are loaded for a crew, which checks them at expansion). Returns
 * 0, ERR_INVALID (message names the field), or ERR_NOMEM.
 */
int crew_class_parse(const json_t *in, const struct tool_registry *tools, struct crew_class **out,
                     struct err *e);
void crew_class_free(struct crew_class *c);
/* {name, base, config, system_prompt, tools}; CREW_JSON_REDACTED masks config secrets. New
 * reference or NULL. */
json_t *crew_class_to_json(const struct crew_class *c, int flags);

/*
 * crew_def_parse with custom classes: an agent whose agent_class names one of `classes` (may
 * be NULL) is expanded at once: the class's config under the agent's (the agent's non-null
 * keys win), the class's system_prompt when the agent has none, the class's tools before
 * the agent's (no duplicates; each must be in the registry), base_class the class's base.
 * The agent keeps agent_class = the custom name, so the stored definition records it.
 */
int crew_def_parse_with(const json_t *in, const struct tool_registry *tools,
                        const struct crew_classes *classes, struct crew_def **out,
                        struct err *e);

void crew_def_free(struct crew_def *def);

/* Index of the agent whose key, or failing that whose agent_id, equals `name`; -1 if none.
 * Keys win, so a relation naming another agent's key never resolves to an agent_id. */
long crew_def_find_agent(const struct crew_def *def, const char *name);

enum crew_json_flags {
    CREW_JSON_FULL = 0,         /* everything, secrets included: for the store only */
    CREW_JSON_REDACTED = 1 << 0 /* secret-like config keys replaced by "***": for responses */
};

/*
 * The normalized definition: every field present with its default, flow relations written
 * with agent keys, agent order kept. `crew_id`, `created_at`, `updated_at` are added when
 * the arguments are non-NULL. Returns a new reference, or NULL on allocation failure.
 */
json_t *crew_def_to_json(const struct crew_def *def, const char *crew_id, const char *created_at,
                         const char *updated_at, int flags);

/*
 * True for config keys whose values are secrets, case-insensitive: any key containing
 * password, passwd, passphrase, secret, api_key, apikey, api-key, private_key, credential,
 * authorization or bearer, the key "auth", or any key ending in "key" or "token"
 * (access_token, accessToken, openai_key, apiKey);
 * not keys that only count tokens (max_tokens) and not *_env keys (they name variables).
 */
bool crew_config_key_is_secret(const char *key);

/* Deep copy of `config` with secret-like keys (at any depth) replaced by "***", and the
 * password and query of any URL-like string value masked (core/url.h). */
json_t *crew_config_redact(const json_t *config);

#endif
