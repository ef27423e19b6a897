/*
 * job.h - the execute request and the job status body of API.md section 1.
 *
 * job_request_parse() validates an execute body against the crew it names (after the API has
 * checked that crew_id/name and query are present and found the crew): the mode override,
 * loop mode's condition, per-agent query keys, kwargs types. The result is normalized
 * (query object keys become agent keys, kwargs defaults filled in) and kept as JSON in the
 * job row; the engine parses that JSON again with the same function, so what was accepted is
 * exactly what runs.
 *
 * Not thread-safe per object.
 */
#ifndef CREWD_MODEL_JOB_H
#define CREWD_MODEL_JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/err.h"
#include "model/crew.h"

struct plan;
struct store_job;

#define JOB_DEFAULT_MAX_TOKENS 4096
#define JOB_DEFAULT_TEMPERATURE 0.1
#define JOB_DEFAULT_MAX_ITERATIONS 2
#define JOB_MAX_ITERATIONS 100
#define JOB_MAX_TIMEOUT_S (7 * 86400.0)

struct job_request {
    char *query_text;   /* the query when a string; else the entries as "key: task" lines */
    char **agent_query; /* per agent (plan order): its own entry of a query object, or NULL */
    size_t n_agents;
    enum crew_mode mode; /* the override, else the crew's mode */
    char *user_id;       /* NULL when not given */
    char *session_id;
    char *synthesis_prompt;
    /* kwargs */
    long max_tokens;     /* explicit kwargs.max_tokens, else 0 (agent config, then default) */
    double temperature;  /* explicit kwargs.temperature, else < 0 */
    char *condition;     /* loop mode: required */
    char *condition_llm; /* NULL: the first agent's LLM */
    long max_iterations; /* loop mode; default 2 */
    size_t *sequence;    /* loop mode: agent indexes of agent_sequence (default: all) */
    size_t n_sequence;
    bool all_results;
    double timeout_s; /* the whole job, from its start; 0: none */
    bool stream;      /* agents' replies streamed: their text becomes agent.delta events */
    json_t *normalized; /* the request as stored: a new object owned by this struct */
};

/*
 * Validates `body` (an execute body or a stored normalized request) for the crew compiled in
 * `plan`. The caller has checked crew_id/name and query presence already (API.md's order).
 * Returns 0 and a new request, or ERR_INVALID with a message such as
 * "Invalid execution mode: x" or "query: no agent 'x' in this crew (agents: a, b)".
 */
int job_request_parse(const json_t *body, const struct plan *plan, struct job_request **out,
                      struct err *e);
void job_request_free(struct job_request *r);

/*
 * The execute body's "webhook": {"url", "secret", "events"}. It is checked apart from
 * job_request_parse, against the server's allowlist, and kept in the job row's webhook
 * columns, never in the stored request (the secret must not reach any reply or log).
 */
struct job_webhook_policy {
    const char *const *allow_hosts; /* --webhook-allow: hosts, "*.suffix" or "*"; none: no
                                       webhook is accepted */
    size_t n_allow_hosts;
};

struct job_webhook {
    char *url;    /* NULL when the body has no webhook */
    char *secret; /* "whsec_<base64>" or 16..1024 raw key bytes (webhooks/sign.h) */
    long mask;    /* STORE_EV_BIT()s; 0 when no webhook */
};

/*
 * Reads body.webhook (absent or null: *out zeroed, no webhook). Returns 0, ERR_INVALID with
 * a message naming the field ("webhook.events: unknown event type 'x' (known: ...)",
 * "webhook.url: host 'x' is not in the server's webhook allowlist"; never the secret), or
 * ERR_NOMEM. *out is owned by the caller (job_webhook_cleanup) either way.
 */
int job_webhook_parse(const json_t *body, const struct job_webhook_policy *policy,
                      struct job_webhook *out, struct err *e);
void job_webhook_cleanup(struct job_webhook *w);

/*
 * The job status body of API.md: job_id, crew_id, status, elapsed_time (seconds since
 * started_at, until completed_at once terminal; null before it started), created_at,
 * execution_mode, metadata, started_at, completed_at, result (when finished) and error.
 * `now_ms` is the clock for elapsed_time of a running job. NULL when out of memory.
 */
json_t *job_status_json(const struct store_job *job, int64_t now_ms, bool with_result);

#endif
