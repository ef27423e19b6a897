/*
 * job.c - execute request validation and normalization, and the job status body. The checks
 * run in API.md's order after the crew is known; messages name the field and the fix.
 */
#include "model/job.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/url.h"
#include "core/utf8.h"
#include "llm/provider.h"
#include "model/model_util.h"
#include "model/plan.h"
#include "store/store.h"
#include "webhooks/sign.h"

/* A "%.*s" pair quoting at most 100 bytes of s without splitting a character. */
#define QUOTED(s) (int)utf8_prefix_len((s), strlen(s), 100), (s)

void job_request_free(struct job_request *r)
{
    if (r == NULL)
        return;
    free(r->query_text);
    model_free_strings(r->agent_query, r->n_agents);
    free(r->user_id);
    free(r->session_id);
    free(r->synthesis_prompt);
    free(r->condition);
    free(r->condition_llm);
    free(r->sequence);
    json_decref(r->normalized);
    free(r);
}

/* The index of the agent whose key, else whose agent_id, is `name`; -1 if none. */
static long find_agent(const struct plan *plan, const char *name)
{
    for (size_t i = 0; i < plan->n_agents; i++)
        if (strcmp(plan->agents[i].key, name) == 0)
            return (long)i;
    for (size_t i = 0; i < plan->n_agents; i++)
        if (strcmp(plan->agents[i].agent_id, name) == 0)
            return (long)i;
    return -1;
}

/* "a, b, c" (the agent keys), for messages; truncated with "..." past `cap` bytes. */
static void agent_list(const struct plan *plan, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < plan->n_agents && len + 4 < cap; i++) {
        int n = snprintf(buf + len, cap - len, "%s%.*s", i ? ", " : "",
                         QUOTED(plan->agents[i].key));
        if (n < 0 || (size_t)n >= cap - len) {
            buf[cap - 4] = '\0';
            utf8_trim_cut(buf);
            len = strlen(buf);
            memcpy(buf + len, "...", 4);
            return;
        }
        len += (size_t)n;
    }
}

static int unknown_agent(const struct plan *plan, const char *field, const char *name,
                         struct err *e)
{
    char list[300];
    agent_list(plan, list, sizeof list);
    return err_set(e, ERR_INVALID, "%s: no agent '%.*s' in this crew (agents: %s)", field,
                   QUOTED(name), list);
}

static int dup_opt_string(const json_t *obj, const char *key, const char *field, char **out,
                          struct err *e)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return err_set(e, ERR_INVALID, "%s: must be a string", field);
    if ((*out = strdup(json_string_value(v))) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    return 0;
}

static const char *const known_fields[] = {
    "crew_id", "name",       "query",    "execution_mode", "user_id", "session_id",
    "kwargs",  "synthesis_prompt", "metadata", "timeout", "stream", "webhook", NULL,
};

static int check_fields(const json_t *body, struct err *e)
{
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)body, key, v)
    {
        bool known = false;
        for (size_t i = 0; known_fields[i] != NULL && !known; i++)
            known = strcmp(key, known_fields[i]) == 0;
        if (!known)
            return err_set(e, ERR_INVALID,
                           "%.*s: unknown field (known: crew_id, name, query, execution_mode, "
                           "user_id, session_id, synthesis_prompt, kwargs, metadata, timeout, "
                           "stream, webhook)",
                           QUOTED(key));
    }
    return 0;
}

/* query: a string, or an object of agent key (or agent_id) -> task. Normalized in place. */
static int parse_query(const json_t *q, const struct plan *plan, struct job_request *r,
                       json_t **norm, struct err *e)
{
    if (json_is_string(q)) {
        if (json_string_length(q) == 0)
            return err_set(e, ERR_INVALID, "query is required");
        if ((r->query_text = strdup(json_string_value(q))) == NULL ||
            (*norm = json_copy((json_t *)q)) == NULL)
            return err_set(e, ERR_NOMEM, "out of memory");
        return 0;
    }
    if (!json_is_object(q) || json_object_size(q) == 0)
        return err_set(e, ERR_INVALID,
                       "query is required (a string, or an object of agent key -> task)");
    if ((*norm = json_object()) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    const char *key;
    const json_t *v;
    size_t text_len = 0;
    json_object_foreach((json_t *)q, key, v)
    {
        long idx = find_agent(plan, key);
        if (idx < 0)
            return unknown_agent(plan, "query", key, e);
        if (!json_is_string(v))
            return err_set(e, ERR_INVALID, "query.%.*s: must be a string (the agent's task)",
                           QUOTED(key));
        if (r->agent_query[idx] != NULL)
            return err_set(e, ERR_INVALID, "query: agent '%.*s' is given two tasks",
                           QUOTED(plan->agents[idx].key));
        if ((r->agent_query[idx] = strdup(json_string_value(v))) == NULL)
            return err_set(e, ERR_NOMEM, "out of memory");
        text_len += strlen(plan->agents[idx].key) + json_string_length(v) + 3;
    }
    /* Stored keyed by agent key, in agent order, so the normalized form is canonical. */
    if ((r->query_text = malloc(text_len + 1)) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    size_t len = 0;
    for (size_t i = 0; i < plan->n_agents; i++) {
        const char *task = r->agent_query[i];
        if (task == NULL)
            continue;
        if (json_object_set_new(*norm, plan->agents[i].key, json_string(task)) != 0)
            return err_set(e, ERR_NOMEM, "out of memory");
        len += (size_t)snprintf(r->query_text + len, text_len + 1 - len, "%s%s: %s",
                                len ? "\n" : "", plan->agents[i].key, task);
    }
    return 0;
}

/* kwargs.agent_sequence: agent keys (or agent_ids), normalized to keys in `norm`. */
static int parse_sequence(const json_t *kw, const struct plan *plan, struct job_request *r,
                          json_t *norm, struct err *e)
{
    const json_t *v;
    if ((v = json_object_get(kw, "agent_sequence")) != NULL && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) == 0 ||
            json_array_size(v) > (size_t)CREW_MAX_AGENTS * 10)
            return err_set(e, ERR_INVALID,
                           "kwargs.agent_sequence: must be a non-empty array of agent keys");
        size_t n = json_array_size(v);
        if ((r->sequence = calloc(n, sizeof *r->sequence)) == NULL)
            return err_set(e, ERR_NOMEM, "out of memory");
        json_t *keys = json_array();
        if (keys == NULL || json_object_set_new(norm, "agent_sequence", keys) != 0)
            return err_set(e, ERR_NOMEM, "out of memory");
        for (size_t i = 0; i < n; i++) {
            const json_t *s = json_array_get(v, i);
            if (!json_is_string(s))
                return err_set(e, ERR_INVALID, "kwargs.agent_sequence[%zu]: must be a string", i);
            long idx = find_agent(plan, json_string_value(s));
            if (idx < 0)
                return unknown_agent(plan, "kwargs.agent_sequence", json_string_value(s), e);
            r->sequence[i] = (size_t)idx;
            if (json_array_append_new(keys, json_string(plan->agents[idx].key)) != 0)
                return err_set(e, ERR_NOMEM, "out of memory");
        }
        r->n_sequence = n;
    }
    return 0;
}

static int parse_kwargs(const json_t *kw, const struct plan *plan, struct job_request *r,
                        json_t *norm, struct err *e)
{
    const json_t *v;
    if ((v = json_object_get(kw, "max_tokens")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > 10000000)
            return err_set(e, ERR_INVALID, "kwargs.max_tokens: must be an integer from 1");
        r->max_tokens = (long)json_integer_value(v);
    }
    if ((v = json_object_get(kw, "temperature")) != NULL && !json_is_null(v)) {
        double t = json_number_value(v);
        if (!json_is_number(v) || !(t >= 0.0 && t <= 2.0))
            return err_set(e, ERR_INVALID, "kwargs.temperature: must be a number from 0 to 2");
        r->temperature = t;
    }
    if ((v = json_object_get(kw, "max_iterations")) != NULL && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > JOB_MAX_ITERATIONS)
            return err_set(e, ERR_INVALID, "kwargs.max_iterations: must be an integer from 1 to %d",
                           JOB_MAX_ITERATIONS);
        r->max_iterations = (long)json_integer_value(v);
    }
    if ((v = json_object_get(kw, "all_results")) != NULL && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return err_set(e, ERR_INVALID, "kwargs.all_results: must be true or false");
        r->all_results = json_is_true(v);
    }
    int rc;
    if ((rc = dup_opt_string(kw, "condition", "kwargs.condition", &r->condition, e)) != 0 ||
        (rc = dup_opt_string(kw, "condition_llm", "kwargs.condition_llm", &r->condition_llm,
                             e)) != 0)
        return rc;
    if (r->condition_llm != NULL) {
        /* Judged now, not when the loop first needs it: a typo is the client's 400. */
        struct llm_choice choice = {.llm = r->condition_llm};
        struct llm_resolved res;
        if ((rc = llm_resolve(&choice, plan->agents[0].provider, &res, e)) != 0) {
            err_prefix(e, "kwargs.condition_llm");
            return rc;
        }
    }
    return 0;
}

int job_request_parse(const json_t *body, const struct plan *plan, struct job_request **out,
                      struct err *e)
{
    struct job_request *r = NULL;
    json_t *qnorm = NULL;
    int rc;
    *out = NULL;
    if (!json_is_object(body))
        return err_set(e, ERR_INVALID, "request body must be a JSON object");
    rc = ERR_NOMEM;
    if ((r = calloc(1, sizeof *r)) == NULL ||
        (r->agent_query = calloc(plan->n_agents, sizeof *r->agent_query)) == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    r->n_agents = plan->n_agents;
    r->temperature = -1.0;
    r->max_iterations = JOB_DEFAULT_MAX_ITERATIONS;
    r->mode = plan->mode;

    /* API.md's order: mode, loop condition, agent names (in the query and the loop's
     * sequence); then types and ranges; then unknown fields. Query presence and the crew
     * were checked by the caller. */
    const json_t *mode = json_object_get(body, "execution_mode");
    if (mode != NULL && !json_is_null(mode)) {
        if (!json_is_string(mode) || crew_mode_parse(json_string_value(mode), &r->mode) != 0) {
            const char *shown = json_is_string(mode) ? json_string_value(mode) : "(not a string)";
            rc = err_set(e, ERR_INVALID,
                         "Invalid execution mode: %.*s (known: sequential, parallel, flow, loop)",
                         QUOTED(shown));
            goto out;
        }
    }
    const json_t *kw = json_object_get(body, "kwargs");
    json_t *kwnorm = (kw != NULL && json_is_object(kw)) ? json_deep_copy(kw) : json_object();
    if (kwnorm == NULL || (r->normalized = json_object()) == NULL ||
        json_object_set_new(r->normalized, "kwargs", kwnorm) != 0) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (r->mode == CREW_MODE_LOOP) {
        const json_t *c = json_is_object(kw) ? json_object_get(kw, "condition") : NULL;
        if (!json_is_string(c) || json_string_length(c) == 0) {
            rc = err_set(e, ERR_INVALID,
                         "loop mode needs kwargs.condition: a non-empty string that an LLM "
                         "judges YES or NO after each pass");
            goto out;
        }
    }
    const json_t *q = json_object_get(body, "query");
    if ((rc = parse_query(q, plan, r, &qnorm, e)) != 0)
        goto out;
    if (json_is_object(kw) && (rc = parse_sequence(kw, plan, r, kwnorm, e)) != 0)
        goto out;
    if (kw != NULL && !json_is_null(kw) && !json_is_object(kw)) {
        rc = err_set(e, ERR_INVALID, "kwargs: must be an object");
        goto out;
    }
    if (json_is_object(kw) && (rc = parse_kwargs(kw, plan, r, kwnorm, e)) != 0)
        goto out;
    if ((rc = dup_opt_string(body, "user_id", "user_id", &r->user_id, e)) != 0 ||
        (rc = dup_opt_string(body, "session_id", "session_id", &r->session_id, e)) != 0 ||
        (rc = dup_opt_string(body, "synthesis_prompt", "synthesis_prompt", &r->synthesis_prompt,
                             e)) != 0)
        goto out;
    const json_t *md = json_object_get(body, "metadata");
    if (md != NULL && !json_is_null(md) && !json_is_object(md)) {
        rc = err_set(e, ERR_INVALID, "metadata: must be an object");
        goto out;
    }
    const json_t *to = json_object_get(body, "timeout");
    if (to != NULL && !json_is_null(to)) {
        double t = json_number_value(to);
        if (!json_is_number(to) || !(t > 0 && t <= JOB_MAX_TIMEOUT_S)) {
            rc = err_set(e, ERR_INVALID,
                         "timeout: must be a number of seconds, more than 0 and at most %.0f",
                         JOB_MAX_TIMEOUT_S);
            goto out;
        }
        r->timeout_s = t;
    }
    const json_t *st = json_object_get(body, "stream");
    if (st != NULL && !json_is_null(st) && !json_is_boolean(st)) {
        rc = err_set(e, ERR_INVALID, "stream: must be true or false");
        goto out;
    }
    r->stream = json_is_true(st);
    if (r->mode != CREW_MODE_LOOP && r->condition != NULL && r->condition[0] == '\0') {
        rc = err_set(e, ERR_INVALID, "kwargs.condition: must not be empty");
        goto out;
    }
    if ((rc = check_fields(body, e)) != 0)
        goto out;

    rc = ERR_NOMEM;
    if (!model_put(r->normalized, "query", qnorm)) {
        qnorm = NULL;
        goto nomem;
    }
    qnorm = NULL;
    if (!model_put(r->normalized, "execution_mode", json_string(crew_mode_name(r->mode))) ||
        !model_put(r->normalized, "user_id", model_string_or_null(r->user_id)) ||
        !model_put(r->normalized, "session_id", model_string_or_null(r->session_id)) ||
        !model_put(r->normalized, "synthesis_prompt", model_string_or_null(r->synthesis_prompt)) ||
        !model_put(r->normalized, "timeout",
                   r->timeout_s > 0 ? json_real(r->timeout_s) : json_null()) ||
        !model_put(r->normalized, "stream", json_boolean(r->stream)) ||
        !model_put(r->normalized, "metadata",
                   md != NULL && json_is_object(md) ? json_deep_copy(md) : json_object()))
        goto nomem;
    *out = r;
    r = NULL;
    rc = 0;
    goto out;
nomem:
    rc = err_set(e, ERR_NOMEM, "out of memory");
out:
    json_decref(qnorm);
    job_request_free(r);
    return rc;
}

void job_webhook_cleanup(struct job_webhook *w)
{
    if (w == NULL)
        return;
    free(w->url);
    if (w->secret != NULL) {
        OPENSSL_cleanse(w->secret, strlen(w->secret));
        free(w->secret);
    }
    memset(w, 0, sizeof *w);
}

/* "job.started, agent.started, ..." for messages. */
static void event_type_list(char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int t = 0; t < STORE_EV_COUNT_ && len < cap; t++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%s", t ? ", " : "",
                                store_event_type_name((enum store_event_type)t));
}

static int parse_webhook_events(const json_t *ev, long *mask, struct err *e)
{
    char known[400];
    if (ev == NULL || json_is_null(ev)) {
        *mask = STORE_EV_TERMINAL_MASK;
        return 0;
    }
    if (!json_is_array(ev) || json_array_size(ev) == 0 || json_array_size(ev) > 64)
        return err_set(e, ERR_INVALID,
                       "webhook.events: must be a non-empty array of event type names, or "
                       "[\"*\"] for all");
    *mask = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(ev, i, v)
    {
        const char *name = json_string_value(v);
        enum store_event_type t;
        if (name == NULL)
            return err_set(e, ERR_INVALID, "webhook.events[%zu]: must be a string", i);
        if (strcmp(name, "*") == 0) {
            *mask |= STORE_EV_ALL_MASK;
            continue;
        }
        if (store_event_type_parse(name, &t) != 0) {
            event_type_list(known, sizeof known);
            return err_set(e, ERR_INVALID,
                           "webhook.events[%zu]: unknown event type '%.*s' (known: %s, or *)", i,
                           QUOTED(name), known);
        }
        *mask |= STORE_EV_BIT(t);
    }
    return 0;
}

int job_webhook_parse(const json_t *body, const struct job_webhook_policy *policy,
                      struct job_webhook *out, struct err *e)
{
    memset(out, 0, sizeof *out);
    const json_t *w = json_object_get(body, "webhook");
    if (w == NULL || json_is_null(w))
        return 0;
    if (!json_is_object(w))
        return err_set(e, ERR_INVALID, "webhook: must be an object {url, secret, events}");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)w, key, v)
    {
        if (strcmp(key, "url") != 0 && strcmp(key, "secret") != 0 && strcmp(key, "events") != 0)
            return err_set(e, ERR_INVALID, "webhook.%.*s: unknown field (known: url, secret, "
                                           "events)",
                           QUOTED(key));
    }
    const json_t *url = json_object_get(w, "url");
    if (!json_is_string(url) || json_string_length(url) == 0)
        return err_set(e, ERR_INVALID, "webhook.url: is required (an http or https URL)");
    if (strlen(json_string_value(url)) != json_string_length(url))
        return err_set(e, ERR_INVALID, "webhook.url: must not contain NUL");
    char host[URL_HOST_MAX];
    int rc = url_http_host(json_string_value(url), "webhook.url", URL_NO_USERINFO, host, e);
    if (rc != 0)
        return rc;
    if (policy == NULL || policy->n_allow_hosts == 0)
        return err_set(e, ERR_INVALID,
                       "webhook: this server allows no webhook hosts (its operator can name "
                       "them with --webhook-allow)");
    if (!url_host_allowed(host, policy->allow_hosts, policy->n_allow_hosts))
        return err_set(e, ERR_INVALID,
                       "webhook.url: host '%.*s' is not in the server's webhook allowlist",
                       QUOTED(host));
    const json_t *secret = json_object_get(w, "secret");
    if (!json_is_string(secret) || json_string_length(secret) == 0)
        return err_set(e, ERR_INVALID,
                       "webhook.secret: is required (whsec_<base64 key>, or 16 to 1024 bytes)");
    if (strlen(json_string_value(secret)) != json_string_length(secret))
        return err_set(e, ERR_INVALID, "webhook.secret: must not contain NUL");
    if ((rc = webhook_secret_key(json_string_value(secret), NULL, NULL, e)) != 0) {
        err_prefix(e, "webhook.secret");
        return rc;
    }
    if ((rc = parse_webhook_events(json_object_get(w, "events"), &out->mask, e)) != 0)
        return rc;
    if ((out->url = strdup(json_string_value(url))) == NULL ||
        (out->secret = strdup(json_string_value(secret))) == NULL) {
        job_webhook_cleanup(out);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    return 0;
}

static json_t *time_or_null(const char *t)
{
    return t[0] != '\0' ? json_string(t) : json_null();
}

json_t *job_status_json(const struct store_job *job, int64_t now_ms, bool with_result)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    json_t *elapsed = json_null();
    int64_t start_ms, end_ms = now_ms;
    if (job->started_at[0] != '\0' && clock_parse_rfc3339(job->started_at, &start_ms) == 0) {
        if (job->completed_at[0] != '\0')
            clock_parse_rfc3339(job->completed_at, &end_ms);
        double s = (double)(end_ms - start_ms) / 1000.0;
        json_decref(elapsed);
        elapsed = json_real(s < 0 ? 0.0 : s);
    }
    json_t *md = job->metadata ? json_loads(job->metadata, 0, NULL) : NULL;
    /* elapsed and md first: model_put steals them even when an earlier put failed. */
    bool ok = model_put(o, "elapsed_time", elapsed) &&
              model_put(o, "metadata", md ? md : json_object()) &&
              model_put(o, "job_id", json_string(job->job_id)) &&
              model_put(o, "crew_id", json_string(job->crew_id)) &&
              model_put(o, "crew_name", model_string_or_null(job->crew_name)) &&
              model_put(o, "status", json_string(store_job_status_name(job->status))) &&
              model_put(o, "created_at", json_string(job->created_at)) &&
              model_put(o, "execution_mode", model_string_or_null(job->execution_mode)) &&
              model_put(o, "started_at", time_or_null(job->started_at)) &&
              model_put(o, "completed_at", time_or_null(job->completed_at)) &&
              model_put(o, "error", model_string_or_null(job->error));
    if (ok && with_result && job->result != NULL) {
        json_t *res = json_loads(job->result, 0, NULL);
        ok = model_put(o, "result", res ? res : json_null());
    }
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}
