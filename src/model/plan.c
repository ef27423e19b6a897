/*
 * plan.c - the compile step of plan.h: crew_def -> plan (providers resolved, tools merged,
 * flow graph checked and ordered), and the plan's JSON form as stored next to its crew.
 * plan_from_json trusts nothing: it reads what a database gave back, and a plan that passes
 * it is one the engine can walk without bounds checks of its own.
 */
#include "model/plan.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "core/utf8.h"
#include "llm/provider.h"
#include "model/model_util.h"

#define KEY_QUOTE_MAX 64
#define CYCLE_MSG_MAX 360
#define PLAN_MODEL_MAX 255
/* Bounds for reading back; generous, since a plan was built from a validated definition. */
#define PLAN_TOOLS_MAX 1024
#define PLAN_TEXT_MAX SIZE_MAX

void plan_free(struct plan *plan)
{
    if (plan == NULL)
        return;
    for (size_t i = 0; plan->agents != NULL && i < plan->n_agents; i++) {
        struct plan_agent *a = &plan->agents[i];
        free(a->key);
        free(a->agent_id);
        free(a->agent_class);
        free(a->provider);
        free(a->model);
        free(a->base_url);
        free(a->api_key_env);
        free(a->system_prompt);
        model_free_strings(a->tools, a->n_tools);
        free(a->preds);
        free(a->succs);
    }
    free(plan->agents);
    free(plan->order);
    free(plan->finals);
    free(plan);
}

/* strdup that treats NULL as "absent"; false only when memory ran out. */
static bool dup_opt(char **out, const char *s)
{
    *out = NULL;
    if (s == NULL)
        return true;
    *out = strdup(s);
    return *out != NULL;
}

static const char *cfg_string(const json_t *cfg, const char *key)
{
    return json_string_value(json_object_get(cfg, key));
}

/* ---- compile: agents ---- */

static int compile_agent(const struct crew_def *def, size_t i, const char *default_provider,
                         struct plan_agent *pa, struct err *e)
{
    int rc = 0;
    const struct crew_agent *ag = &def->agents[i];
    const json_t *cfg = ag->config;
    struct llm_choice choice = {
        .llm = cfg_string(cfg, "llm"),
        .model = cfg_string(cfg, "model"),
        .base_url = cfg_string(cfg, "base_url"),
    };
    struct llm_resolved res;
    struct err inner = {0};

    rc = llm_resolve(&choice, default_provider, &res, &inner);
    if (rc != 0) {
        rc = err_set(e, rc, "agents[%zu].config.%s", i, err_text(&inner));
        goto out;
    }
    const char *key_env = cfg_string(cfg, "api_key_env");
    if (key_env == NULL)
        key_env = res.provider->api_key_env;
    if (!dup_opt(&pa->key, ag->key) || !dup_opt(&pa->agent_id, ag->agent_id) ||
        /* The behaviour's class: a custom class runs as its base (the definition keeps the
         * custom name), so the engine and jobs.c only ever see built-in classes. */
        !dup_opt(&pa->agent_class, ag->base_class ? ag->base_class : ag->agent_class) ||
        !dup_opt(&pa->provider, res.provider->name) || !dup_opt(&pa->model, res.model) ||
        !dup_opt(&pa->base_url, choice.base_url) || !dup_opt(&pa->api_key_env, key_env) ||
        /* an empty system prompt is no system prompt (no empty system message is sent) */
        !dup_opt(&pa->system_prompt,
                 ag->system_prompt && ag->system_prompt[0] ? ag->system_prompt : NULL)) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    pa->has_inline_key = json_is_string(json_object_get(cfg, "api_key"));
    const json_t *v = json_object_get(cfg, "temperature");
    pa->temperature = json_is_number(v) ? json_number_value(v) : -1.0;
    v = json_object_get(cfg, "max_tokens");
    pa->max_tokens = json_is_integer(v) ? (long)json_integer_value(v) : 0;
    v = json_object_get(cfg, "timeout");
    pa->timeout_s = json_is_number(v) ? json_number_value(v) : 0.0;

    size_t cap = ag->n_tools + def->n_shared_tools;
    if (cap > 0) {
        pa->tools = calloc(cap, sizeof *pa->tools);
        if (pa->tools == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t t = 0; t < cap; t++) {
        const char *name = t < ag->n_tools ? ag->tools[t] : def->shared_tools[t - ag->n_tools];
        bool seen = false;
        for (size_t j = 0; j < pa->n_tools && !seen; j++)
            seen = strcmp(pa->tools[j], name) == 0;
        if (seen)
            continue;
        if (!dup_opt(&pa->tools[pa->n_tools], name)) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
        pa->n_tools++;
    }
out:
    return rc;
}

/* ---- compile: graph ---- */

/* Appends "key" (cut on a UTF-8 boundary) to a bounded message buffer. */
static void msg_append(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t n = utf8_prefix_len(s, strlen(s), KEY_QUOTE_MAX);
    if (*len + n + 1 > cap)
        return;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

/*
 * Kahn's algorithm left these nodes unplaced, and each of them still has an unplaced
 * predecessor; walking predecessors from the first one must therefore revisit a node, and
 * the nodes between the two visits are a cycle. Reported forwards, starting at its agent
 * defined first, so the same graph always gives the same message.
 */
static int report_cycle(const struct plan *plan, const bool *placed, struct err *e)
{
    int rc = 0;
    size_t n = plan->n_agents;
    long *pos = malloc(n * sizeof *pos);
    size_t *walk = malloc(n * sizeof *walk);
    if (pos == NULL || walk == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        pos[i] = -1;
    size_t cur = 0;
    while (cur < n && placed[cur])
        cur++;
    size_t len = 0;
    while (cur < n && pos[cur] < 0) {
        pos[cur] = (long)len;
        walk[len++] = cur;
        const struct plan_agent *a = &plan->agents[cur];
        size_t next = n;
        for (size_t j = 0; j < a->n_preds && next == n; j++) {
            if (!placed[a->preds[j]])
                next = a->preds[j];
        }
        cur = next;
    }
    if (cur >= n) {
        rc = err_set(e, ERR_INTERNAL, "flow_relations: cycle detection lost its way");
        goto out;
    }
    /* walk[pos[cur]..len) follows edges backwards; reversed, it is the cycle. */
    size_t start = (size_t)pos[cur], clen = len - start;
    size_t first = 0;
    for (size_t k = 1; k < clen; k++) {
        if (walk[start + k] < walk[start + first])
            first = k;
    }
    char msg[CYCLE_MSG_MAX];
    size_t mlen = 0;
    msg[0] = '\0';
    bool cut = false;
    for (size_t k = 0; k <= clen; k++) {
        /* Forward index k: reversed walk, rotated to begin at `first`. */
        size_t back = (first + clen - (k % clen)) % clen;
        size_t node = walk[start + back];
        if (mlen + KEY_QUOTE_MAX + 8 > sizeof msg) {
            cut = true;
            break;
        }
        if (k > 0)
            msg_append(msg, sizeof msg, &mlen, " -> ");
        msg_append(msg, sizeof msg, &mlen, plan->agents[node].key);
    }
    if (cut)
        msg_append(msg, sizeof msg, &mlen, " -> ...");
    rc = err_set(e, ERR_INVALID, "flow_relations: cycle between agents: %s", msg);
out:
    free(pos);
    free(walk);
    return rc;
}

/* Fills preds/succs from an n x n adjacency matrix, in definition order. */
static int fill_edges(struct plan *plan, const bool *adj, struct err *e)
{
    size_t n = plan->n_agents;
    for (size_t i = 0; i < n; i++) {
        struct plan_agent *a = &plan->agents[i];
        size_t np = 0, ns = 0;
        for (size_t j = 0; j < n; j++) {
            np += adj[j * n + i];
            ns += adj[i * n + j];
        }
        if ((np && (a->preds = calloc(np, sizeof *a->preds)) == NULL) ||
            (ns && (a->succs = calloc(ns, sizeof *a->succs)) == NULL))
            return err_set(e, ERR_NOMEM, "out of memory");
        for (size_t j = 0; j < n; j++) {
            if (adj[j * n + i])
                a->preds[a->n_preds++] = j;
            if (adj[i * n + j])
                a->succs[a->n_succs++] = j;
        }
    }
    return 0;
}

/* Kahn's algorithm, always taking the ready agent defined first: the order a user reads. */
static int topo_order(struct plan *plan, struct err *e)
{
    int rc = 0;
    size_t n = plan->n_agents;
    size_t *indeg = calloc(n, sizeof *indeg);
    bool *placed = calloc(n, sizeof *placed);
    if (indeg == NULL || placed == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        indeg[i] = plan->agents[i].n_preds;
    for (size_t k = 0; k < n; k++) {
        size_t pick = n;
        for (size_t i = 0; i < n && pick == n; i++) {
            if (!placed[i] && indeg[i] == 0)
                pick = i;
        }
        if (pick == n) {
            rc = report_cycle(plan, placed, e);
            goto out;
        }
        placed[pick] = true;
        plan->order[k] = pick;
        const struct plan_agent *a = &plan->agents[pick];
        for (size_t j = 0; j < a->n_succs; j++)
            indeg[a->succs[j]]--;
    }
out:
    free(indeg);
    free(placed);
    return rc;
}

static int compile_graph(const struct crew_def *def, struct plan *plan, struct err *e)
{
    int rc = 0;
    size_t n = plan->n_agents;
    bool *adj = NULL;
    if (n > SIZE_MAX / n) {
        rc = err_set(e, ERR_INVALID, "agents: too many");
        goto out;
    }
    adj = calloc(n * n, sizeof *adj);
    if (adj == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t r = 0; r < def->n_relations; r++) {
        const struct crew_relation *rel = &def->relations[r];
        for (size_t s = 0; s < rel->n_sources; s++) {
            for (size_t t = 0; t < rel->n_targets; t++) {
                if (rel->sources[s] >= n || rel->targets[t] >= n) {
                    rc =
                        err_set(e, ERR_INVALID, "flow_relations[%zu]: agent index out of range", r);
                    goto out;
                }
                adj[rel->sources[s] * n + rel->targets[t]] = true;
            }
        }
    }
    if ((rc = fill_edges(plan, adj, e)) != 0)
        goto out;
    rc = topo_order(plan, e);
out:
    free(adj);
    return rc;
}

static int fill_finals(struct plan *plan, struct err *e)
{
    plan->n_finals = 0;
    plan->finals = calloc(plan->n_agents, sizeof *plan->finals);
    if (plan->finals == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < plan->n_agents; i++) {
        if (plan->agents[i].n_succs == 0)
            plan->finals[plan->n_finals++] = i;
    }
    return 0;
}

int plan_check_llm_policy(const struct plan *plan, const struct plan_llm_policy *policy,
                          struct err *e)
{
    for (size_t i = 0; i < plan->n_agents; i++) {
        const struct plan_agent *a = &plan->agents[i];
        if (a->base_url != NULL) {
            char host[URL_HOST_MAX];
            struct err inner = {0};
            if (url_http_host(a->base_url, "base_url", URL_USERINFO_OK, host, &inner) != 0)
                return err_set(e, ERR_INVALID, "agents[%zu].config.%s", i, err_text(&inner));
            if (!url_host_allowed(host, policy->base_url_hosts, policy->n_base_url_hosts))
                return err_set(e, ERR_INVALID,
                               "agents[%zu].config.base_url: host '%.*s' is not on the "
                               "server's --llm-base-url-allow list (LLM calls, with the "
                               "server's provider keys, go only to hosts the operator allows)",
                               i, (int)utf8_prefix_len(host, strlen(host), 100), host);
        }
        /* A provider's key goes to that provider only (its endpoint, or a base_url the
         * operator allows): not to another provider, nor to a local server's port, which
         * any local user could bind. Other variables only when the operator lists them. */
        const char *env = a->api_key_env;
        const struct llm_provider_info *own = llm_provider_find(a->provider);
        if (env != NULL && !(own != NULL && own->api_key_env != NULL &&
                             strcmp(env, own->api_key_env) == 0)) {
            bool listed = false;
            for (size_t k = 0; k < policy->n_key_envs && !listed; k++)
                listed = strcmp(env, policy->key_envs[k]) == 0;
            if (!listed)
                return err_set(e, ERR_INVALID,
                               "agents[%zu].config.api_key_env: '%.*s' is neither provider "
                               "'%s''s own key variable nor on the server's "
                               "--llm-key-env-allow list",
                               i, (int)utf8_prefix_len(env, strlen(env), 100), env,
                               a->provider ? a->provider : "?");
        }
    }
    return 0;
}

int plan_compile(const struct crew_def *def, const struct plan_opts *opts, struct plan **out,
                 struct err *e)
{
    int rc = 0;
    const char *default_provider =
        opts && opts->default_provider ? opts->default_provider : "openai";
    struct plan *plan = calloc(1, sizeof *plan);
    *out = NULL;
    if (plan == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    plan->version = PLAN_VERSION;
    plan->mode = def->mode;
    plan->max_parallel_tasks = def->max_parallel_tasks;
    if (def->n_agents == 0) {
        rc = err_set(e, ERR_INVALID, "agents: at least one agent is required");
        goto out;
    }
    plan->agents = calloc(def->n_agents, sizeof *plan->agents);
    plan->order = calloc(def->n_agents, sizeof *plan->order);
    if (plan->agents == NULL || plan->order == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    plan->n_agents = def->n_agents;
    for (size_t i = 0; i < def->n_agents; i++) {
        rc = compile_agent(def, i, default_provider, &plan->agents[i], e);
        if (rc != 0)
            goto out;
    }
    plan->has_graph = def->n_relations > 0;
    if (plan->has_graph) {
        rc = compile_graph(def, plan, e);
    } else {
        for (size_t i = 0; i < plan->n_agents; i++)
            plan->order[i] = i;
    }
    if (rc == 0)
        rc = fill_finals(plan, e);
    if (rc == 0 && opts != NULL && opts->policy != NULL)
        rc = plan_check_llm_policy(plan, opts->policy, e);
    if (rc != 0)
        goto out;
    *out = plan;
    plan = NULL;
out:
    plan_free(plan);
    return rc;
}

/* ---- JSON out ---- */

static json_t *index_array(const size_t *idx, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_integer((json_int_t)idx[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

static json_t *agent_to_json(const struct plan_agent *a)
{
    json_t *o = json_object();
    json_t *tools = json_array();
    bool ok = o != NULL && tools != NULL;
    for (size_t i = 0; ok && i < a->n_tools; i++)
        ok = json_array_append_new(tools, json_string(a->tools[i])) == 0;
    ok = ok && model_put(o, "key", json_string(a->key)) &&
         model_put(o, "agent_id", json_string(a->agent_id)) &&
         model_put(o, "agent_class", json_string(a->agent_class)) &&
         model_put(o, "provider", json_string(a->provider)) &&
         model_put(o, "model", json_string(a->model)) &&
         model_put(o, "base_url", model_string_or_null(a->base_url)) &&
         model_put(o, "api_key_env", model_string_or_null(a->api_key_env)) &&
         model_put(o, "has_inline_key", json_boolean(a->has_inline_key)) &&
         model_put(o, "system_prompt", model_string_or_null(a->system_prompt));
    if (ok) {
        ok = model_put(o, "tools", tools);
        tools = NULL;
    }
    ok =
        ok &&
        model_put(o, "temperature", a->temperature < 0 ? json_null() : json_real(a->temperature)) &&
        model_put(o, "max_tokens",
                  a->max_tokens == 0 ? json_null() : json_integer((json_int_t)a->max_tokens)) &&
        model_put(o, "timeout_s", a->timeout_s == 0 ? json_null() : json_real(a->timeout_s)) &&
        model_put(o, "preds", index_array(a->preds, a->n_preds)) &&
        model_put(o, "succs", index_array(a->succs, a->n_succs));
    json_decref(tools);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *plan_to_json(const struct plan *plan)
{
    json_t *o = json_object();
    json_t *agents = json_array();
    bool ok = o != NULL && agents != NULL;
    for (size_t i = 0; ok && i < plan->n_agents; i++)
        ok = json_array_append_new(agents, agent_to_json(&plan->agents[i])) == 0;
    ok = ok && model_put(o, "version", json_integer(plan->version)) &&
         model_put(o, "execution_mode", json_string(crew_mode_name(plan->mode))) &&
         model_put(o, "max_parallel_tasks", json_integer(plan->max_parallel_tasks)) &&
         model_put(o, "has_graph", json_boolean(plan->has_graph));
    if (ok) {
        ok = model_put(o, "agents", agents);
        agents = NULL;
    }
    ok = ok && model_put(o, "order", index_array(plan->order, plan->n_agents)) &&
         model_put(o, "finals", index_array(plan->finals, plan->n_finals));
    json_decref(agents);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- JSON in ---- */

static const char *const plan_fields[] = {
    "version", "execution_mode", "max_parallel_tasks", "has_graph", "agents", "order", "finals"};
static const char *const plan_agent_fields[] = {
    "key",         "agent_id",    "agent_class",    "provider",      "model",
    "base_url",    "api_key_env", "has_inline_key", "system_prompt", "tools",
    "temperature", "max_tokens",  "timeout_s",      "preds",         "succs"};

static int only_fields(const json_t *obj, const char *const *known, size_t n, const char *where,
                       struct err *e)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(k, known[i]) == 0;
        if (!found)
            return err_set(e, ERR_INVALID, "plan: %s: unknown field", where);
    }
    return 0;
}

/* A string without NUL, 1..max bytes (or NULL allowed when `nullable`). */
static int get_str(const json_t *obj, const char *key, bool nullable, size_t max, const char *where,
                   char **out, struct err *e)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    /* An empty string where null is allowed reads as null: plans stored before compile
     * dropped an empty system_prompt hold "" there (a crew that could not run). */
    if (nullable && (json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v))
        return err_set(e, ERR_INVALID, "plan: %s.%s: expected a non-empty string%s", where, key,
                       nullable ? " or null" : "");
    *out = strdup(json_string_value(v));
    return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
}

/* An array of strictly increasing indexes below n: definition order, no duplicates. */
static int get_indexes(const json_t *v, size_t n, size_t max_count, const char *where, size_t **out,
                       size_t *n_out, struct err *e)
{
    *out = NULL;
    *n_out = 0;
    if (!json_is_array(v) || json_array_size(v) > max_count)
        return err_set(e, ERR_INVALID, "plan: %s: expected an array of at most %zu indexes", where,
                       max_count);
    size_t count = json_array_size(v);
    if (count == 0)
        return 0;
    size_t *idx = calloc(count, sizeof *idx);
    if (idx == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    *out = idx;
    for (size_t i = 0; i < count; i++) {
        const json_t *x = json_array_get(v, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 ||
            (uint64_t)json_integer_value(x) >= n)
            return err_set(e, ERR_INVALID, "plan: %s[%zu]: expected an index below %zu", where, i,
                           n);
        idx[i] = (size_t)json_integer_value(x);
        *n_out = i + 1;
    }
    return 0;
}

static int check_sorted(const size_t *idx, size_t n, const char *where, struct err *e)
{
    for (size_t i = 1; i < n; i++) {
        if (idx[i] <= idx[i - 1])
            return err_set(e, ERR_INVALID, "plan: %s: indexes not in definition order", where);
    }
    return 0;
}

static int agent_from_json(const json_t *o, size_t i, size_t n, struct plan_agent *a, struct err *e)
{
    int rc = 0;
    char where[64];
    snprintf(where, sizeof where, "agents[%zu]", i);
    if (!json_is_object(o)) {
        rc = err_set(e, ERR_INVALID, "plan: %s: expected an object", where);
        goto out;
    }
    if ((rc = only_fields(o, plan_agent_fields,
                          sizeof plan_agent_fields / sizeof plan_agent_fields[0], where, e)) ||
        (rc = get_str(o, "key", false, CREW_MAX_NAME_BYTES, where, &a->key, e)) ||
        (rc = get_str(o, "agent_id", false, CREW_MAX_NAME_BYTES, where, &a->agent_id, e)) ||
        (rc = get_str(o, "agent_class", false, 64, where, &a->agent_class, e)) ||
        (rc = get_str(o, "provider", false, 64, where, &a->provider, e)) ||
        (rc = get_str(o, "model", false, PLAN_MODEL_MAX, where, &a->model, e)) ||
        (rc = get_str(o, "base_url", true, PLAN_TEXT_MAX, where, &a->base_url, e)) ||
        (rc = get_str(o, "api_key_env", true, 256, where, &a->api_key_env, e)) ||
        (rc = get_str(o, "system_prompt", true, PLAN_TEXT_MAX, where, &a->system_prompt, e)))
        goto out;
    const struct llm_provider_info *prov = llm_provider_find(a->provider);
    if (prov == NULL || strcmp(prov->name, a->provider) != 0) {
        rc = err_set(e, ERR_INVALID, "plan: %s.provider: not a canonical provider name", where);
        goto out;
    }
    const json_t *v = json_object_get(o, "has_inline_key");
    if (!json_is_boolean(v)) {
        rc = err_set(e, ERR_INVALID, "plan: %s.has_inline_key: expected a boolean", where);
        goto out;
    }
    a->has_inline_key = json_is_true(v);

    v = json_object_get(o, "tools");
    if (!json_is_array(v) || json_array_size(v) > PLAN_TOOLS_MAX) {
        rc = err_set(e, ERR_INVALID, "plan: %s.tools: expected an array of at most %d names", where,
                     PLAN_TOOLS_MAX);
        goto out;
    }
    if (json_array_size(v) > 0) {
        a->tools = calloc(json_array_size(v), sizeof *a->tools);
        if (a->tools == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t t = 0; t < json_array_size(v); t++) {
        const json_t *s = json_array_get(v, t);
        if (!json_is_string(s) || json_string_length(s) == 0 || json_string_length(s) > 64 ||
            strlen(json_string_value(s)) != json_string_length(s)) {
            rc = err_set(e, ERR_INVALID, "plan: %s.tools[%zu]: expected a tool name", where, t);
            goto out;
        }
        for (size_t j = 0; j < a->n_tools; j++) {
            if (strcmp(a->tools[j], json_string_value(s)) == 0) {
                rc = err_set(e, ERR_INVALID, "plan: %s.tools[%zu]: duplicate", where, t);
                goto out;
            }
        }
        if ((a->tools[t] = strdup(json_string_value(s))) == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
        a->n_tools = t + 1;
    }

    v = json_object_get(o, "temperature");
    if (json_is_null(v)) {
        a->temperature = -1.0;
    } else if (json_is_number(v) && json_number_value(v) >= 0.0 && json_number_value(v) <= 2.0) {
        a->temperature = json_number_value(v);
    } else {
        rc = err_set(e, ERR_INVALID, "plan: %s.temperature: expected null or 0..2", where);
        goto out;
    }
    v = json_object_get(o, "max_tokens");
    if (json_is_null(v)) {
        a->max_tokens = 0;
    } else if (json_is_integer(v) && json_integer_value(v) >= 1 &&
               json_integer_value(v) <= 1000000) {
        a->max_tokens = (long)json_integer_value(v);
    } else {
        rc = err_set(e, ERR_INVALID, "plan: %s.max_tokens: expected null or 1..1000000", where);
        goto out;
    }
    v = json_object_get(o, "timeout_s");
    if (json_is_null(v)) {
        a->timeout_s = 0.0;
    } else if (json_is_number(v) && json_number_value(v) > 0.0 && json_number_value(v) <= 86400.0) {
        a->timeout_s = json_number_value(v);
    } else {
        rc = err_set(e, ERR_INVALID, "plan: %s.timeout_s: expected null or (0, 86400]", where);
        goto out;
    }

    char sub[80];
    snprintf(sub, sizeof sub, "%s.preds", where);
    if ((rc = get_indexes(json_object_get(o, "preds"), n, n, sub, &a->preds, &a->n_preds, e)) ||
        (rc = check_sorted(a->preds, a->n_preds, sub, e)))
        goto out;
    snprintf(sub, sizeof sub, "%s.succs", where);
    if ((rc = get_indexes(json_object_get(o, "succs"), n, n, sub, &a->succs, &a->n_succs, e)) ||
        (rc = check_sorted(a->succs, a->n_succs, sub, e)))
        goto out;
out:
    return rc;
}

/* The graph must be what plan_compile could have built: edges seen from both ends, no
 * self-loops, `order` a topological order, `finals` exactly the agents without successors. */
static int check_graph(const struct plan *plan, struct err *e)
{
    int rc = 0;
    size_t n = plan->n_agents;
    long *pos = malloc(n * sizeof *pos);
    if (pos == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        pos[i] = -1;
    for (size_t k = 0; k < n; k++) {
        if (pos[plan->order[k]] >= 0) {
            rc = err_set(e, ERR_INVALID, "plan: order: not a permutation of the agents");
            goto out;
        }
        pos[plan->order[k]] = (long)k;
    }
    size_t n_edges = 0;
    for (size_t i = 0; i < n; i++) {
        const struct plan_agent *a = &plan->agents[i];
        for (size_t s = 0; s < a->n_succs; s++) {
            size_t j = a->succs[s];
            const struct plan_agent *b = &plan->agents[j];
            bool back = false;
            for (size_t p = 0; p < b->n_preds && !back; p++)
                back = b->preds[p] == i;
            if (j == i || !back || pos[i] >= pos[j]) {
                rc = err_set(e, ERR_INVALID, "plan: agents[%zu].succs: inconsistent edge to %zu", i,
                             j);
                goto out;
            }
            n_edges++;
        }
    }
    size_t n_preds = 0;
    for (size_t i = 0; i < n; i++)
        n_preds += plan->agents[i].n_preds;
    /* Every succ edge has its pred; equal counts with no duplicates means the converse. */
    if (n_preds != n_edges) {
        rc = err_set(e, ERR_INVALID, "plan: preds and succs disagree");
        goto out;
    }
    if (plan->has_graph != (n_edges > 0)) {
        rc = err_set(e, ERR_INVALID, "plan: has_graph disagrees with the edges");
        goto out;
    }
    for (size_t k = 0; !plan->has_graph && k < n; k++) {
        if (plan->order[k] != k) {
            rc = err_set(e, ERR_INVALID, "plan: order: must be definition order without graph");
            goto out;
        }
    }
    size_t f = 0;
    for (size_t i = 0; i < n; i++) {
        if (plan->agents[i].n_succs != 0)
            continue;
        if (f >= plan->n_finals || plan->finals[f] != i) {
            rc = err_set(e, ERR_INVALID, "plan: finals: must list the agents without successors");
            goto out;
        }
        f++;
    }
    if (f != plan->n_finals) {
        rc = err_set(e, ERR_INVALID, "plan: finals: must list the agents without successors");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < i; j++) {
            if (strcmp(plan->agents[i].key, plan->agents[j].key) == 0) {
                rc = err_set(e, ERR_INVALID, "plan: agents[%zu].key: duplicate", i);
                goto out;
            }
        }
    }
out:
    free(pos);
    return rc;
}

int plan_from_json(const json_t *in, struct plan **out, struct err *e)
{
    int rc = 0;
    const json_t *v;
    struct plan *plan = calloc(1, sizeof *plan);
    *out = NULL;
    if (plan == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (!json_is_object(in)) {
        rc = err_set(e, ERR_INVALID, "plan: expected an object");
        goto out;
    }
    if ((rc = only_fields(in, plan_fields, sizeof plan_fields / sizeof plan_fields[0], "plan",
                          e)) != 0)
        goto out;
    v = json_object_get(in, "version");
    if (!json_is_integer(v) || json_integer_value(v) < 1) {
        rc = err_set(e, ERR_INVALID, "plan: version: expected a positive integer");
        goto out;
    }
    if (json_integer_value(v) > PLAN_VERSION) {
        rc = err_set(e, ERR_INVALID, "plan: version %lld is newer than this server's %d",
                     (long long)json_integer_value(v), PLAN_VERSION);
        goto out;
    }
    plan->version = (int)json_integer_value(v);
    v = json_object_get(in, "execution_mode");
    if (!json_is_string(v) || crew_mode_parse(json_string_value(v), &plan->mode) != 0) {
        rc = err_set(e, ERR_INVALID, "plan: execution_mode: expected a known mode");
        goto out;
    }
    v = json_object_get(in, "max_parallel_tasks");
    if (!json_is_integer(v) || json_integer_value(v) < 1 ||
        json_integer_value(v) > CREW_MAX_PARALLEL_TASKS) {
        rc = err_set(e, ERR_INVALID, "plan: max_parallel_tasks: expected 1..%d",
                     CREW_MAX_PARALLEL_TASKS);
        goto out;
    }
    plan->max_parallel_tasks = (long)json_integer_value(v);
    v = json_object_get(in, "has_graph");
    if (!json_is_boolean(v)) {
        rc = err_set(e, ERR_INVALID, "plan: has_graph: expected a boolean");
        goto out;
    }
    plan->has_graph = json_is_true(v);

    v = json_object_get(in, "agents");
    if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > CREW_MAX_AGENTS) {
        rc = err_set(e, ERR_INVALID, "plan: agents: expected an array of 1..%d agents",
                     CREW_MAX_AGENTS);
        goto out;
    }
    size_t n = json_array_size(v);
    plan->agents = calloc(n, sizeof *plan->agents);
    if (plan->agents == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    plan->n_agents = n;
    for (size_t i = 0; i < n; i++) {
        rc = agent_from_json(json_array_get(v, i), i, n, &plan->agents[i], e);
        if (rc != 0)
            goto out;
    }

    size_t n_order = 0;
    v = json_object_get(in, "order");
    if (!json_is_array(v) || json_array_size(v) != n) {
        rc = err_set(e, ERR_INVALID, "plan: order: expected one index per agent");
        goto out;
    }
    if ((rc = get_indexes(v, n, n, "order", &plan->order, &n_order, e)) != 0)
        goto out;
    if ((rc = get_indexes(json_object_get(in, "finals"), n, n, "finals", &plan->finals,
                          &plan->n_finals, e)) != 0)
        goto out;
    if ((rc = check_graph(plan, e)) != 0)
        goto out;
    *out = plan;
    plan = NULL;
out:
    plan_free(plan);
    return rc;
}
