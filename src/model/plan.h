/*
 * plan.h - the compile step (DESIGN.md decision 5): a validated crew_def becomes a plan the
 * job engine executes without looking at JSON definitions again.
 *
 * Compiling resolves each agent's key, provider and model (llm/provider.h), merges shared
 * tools into each agent's list, and turns flow relations into a graph: predecessors and
 * successors per agent, a topological order, and the final agents (no successors). A cycle is
 * refused with ERR_INVALID naming the agents in it ("flow_relations: cycle a -> b -> a").
 * The graph is built whenever relations are given, whatever the mode, because a job may
 * override the mode to "flow" at execute time.
 *
 * A plan is stored next to its crew as JSON (plan_to_json / plan_from_json) so that the engine
 * reads it back without recompiling. Plans are immutable once built and may be shared
 * read-only between threads.
 */
#ifndef CREWD_MODEL_PLAN_H
#define CREWD_MODEL_PLAN_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "model/crew.h"

#define PLAN_VERSION 1

struct plan_agent {
    char *key; /* the agent's key in the crew (name, else agent_id) */
    char *agent_id;
    char *agent_class;
    char *provider;      /* canonical provider name (llm/provider.h) */
    char *model;         /* resolved model name */
    char *base_url;      /* NULL: the provider's default endpoint */
    char *api_key_env;   /* environment variable holding the key; NULL for keyless (ollama) */
    bool has_inline_key; /* config.api_key was given (its value stays in the definition) */
    char *system_prompt; /* NULL when none */
    char **tools;        /* agent tools then shared tools, without duplicates */
    size_t n_tools;
    double temperature; /* < 0 when not set (the job's kwargs or provider default apply) */
    long max_tokens;    /* 0 when not set */
    double timeout_s;   /* 0 when not set */
    size_t *preds;      /* flow sources of this agent, in definition order */
    size_t n_preds;
    size_t *succs; /* flow targets of this agent */
    size_t n_succs;
};

struct plan {
    int version; /* PLAN_VERSION */
    enum crew_mode mode;
    long max_parallel_tasks;
    struct plan_agent *agents; /* in definition order */
    size_t n_agents;
    bool has_graph; /* flow relations were given */
    size_t *order;  /* topological order (definition order when no graph) */
    size_t *finals; /* agents without successors, in definition order */
    size_t n_finals;
};

/*
 * Where agents' LLM calls may go, and which of the server's environment variables they may
 * send there as keys: the operator's (--llm-base-url-allow, --llm-key-env-allow). Without
 * it, a crew's author could point an agent's base_url at a server of theirs and name any
 * variable (the store's password, crewd's API keys) in api_key_env, or just receive the
 * provider's key.
 */
struct plan_llm_policy {
    const char *const *base_url_hosts; /* hosts base_url may name (url_host_allowed) */
    size_t n_base_url_hosts;
    const char *const *key_envs; /* api_key_env may name these besides its provider's own */
    size_t n_key_envs;
};

struct plan_opts {
    const char *default_provider; /* used when neither llm nor the model name decides */
    const struct plan_llm_policy *policy; /* NULL: not checked (tests of the compiler) */
};

/* Returns 0, ERR_INVALID (message names the field), or ERR_NOMEM. */
int plan_compile(const struct crew_def *def, const struct plan_opts *opts, struct plan **out,
                 struct err *e);
void plan_free(struct plan *plan);

/* Checks every agent's base_url and api_key_env against the policy: 0, or ERR_INVALID with
 * a message naming the agent's field ("agents[0].config.base_url: ..."). plan_compile does
 * this when given a policy; a stored plan is checked again before it runs, since the
 * operator's lists may have changed since. */
int plan_check_llm_policy(const struct plan *plan, const struct plan_llm_policy *policy,
                          struct err *e);

/* New reference, or NULL on allocation failure. Holds no secrets. */
json_t *plan_to_json(const struct plan *plan);
/* Returns 0, ERR_INVALID for a malformed or newer-version plan, or ERR_NOMEM. */
int plan_from_json(const json_t *in, struct plan **out, struct err *e);

#endif
