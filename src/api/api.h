/*
 * api.h - the AgentCrew REST API (CrewHandler of the seed): the route table and what the
 * handlers share. The only layer that knows both HTTP and crews; it turns requests into
 * model/store calls and results into the bodies of API.md.
 */
#ifndef CREWD_API_API_H
#define CREWD_API_API_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "http/request.h"
#include "http/router.h"

struct jobs;
struct store;
struct event_hub;
struct plan_llm_policy;
struct api_sse;
struct tool_registry;
struct crew_class;
struct job_webhook_policy;
struct obs;

/* The /healthz bounds when api_ctx leaves them 0 (and --health-max-* defaults). */
#define API_HEALTH_DEFAULT_MAX_LOOP_LAG_MS 2000
#define API_HEALTH_DEFAULT_MAX_STORE_MS 1000

/* What every handler needs; owned by main, borrowed by the API for the server's life. */
struct api_ctx {
    struct store *store;
    struct tool_registry *tools; /* changed by the tool routes, on the loop thread */
    const char *default_provider;
    struct jobs *jobs; /* woken after each execute; NULL: jobs wait for the next poll */
    struct api_sse *sse; /* the jobs' event streams; NULL: not served (503) */
    const struct job_webhook_policy *webhook_policy; /* NULL: no webhook is accepted */
    /* Where agents' LLM calls may go and with which keys: crews are checked when written
     * and again at execute (model/plan.h). */
    const struct plan_llm_policy *llm_policy;
    struct obs *obs;   /* metrics and loop lag (/metrics, /healthz); NULL: none */
    long health_max_loop_lag_ms; /* /healthz bounds; 0: the config defaults */
    long health_max_store_ms;
};

/* The event streams (GET .../events, api/events.c): their heartbeat and their cap. */
struct api_sse_opts {
    long heartbeat_ms;  /* a comment line this often on every stream; 0: 15000 */
    size_t max_streams; /* more get 503; 0: 10000 */
};

/* Returns 0 or ERR_NOMEM. The hub is borrowed. */
int api_sse_new(struct event_base *base, struct event_hub *hub, const struct api_sse_opts *o,
                struct api_sse **out, struct err *e);
/* Ends every stream (their readers reconnect elsewhere or later), then frees. NULL-safe. */
void api_sse_free(struct api_sse *sse);
/* Event streams open now. */
size_t api_sse_streams(const struct api_sse *sse);

/* The job id of the path's first capture as a canonical id into idbuf, or false with a 404
 * answered. */
bool api_path_job(struct http_req *req, char idbuf[]);

/* The route table (static). Handlers take a struct api_ctx * as their argument. */
const struct http_route *api_routes(size_t *n);

/* The HTTP status for an ERR_* code: the one place where that mapping lives. */
int api_status_of(int code);

/* Answers with the status of e->code and {"message": err_text(e), "status"}. A 5xx is
 * logged with its detail and answered with the code's generic text only. */
void api_reply_err(struct http_req *req, const struct err *e);

/* Parses the decimal query parameter `name` (digits only) within [min, max] into *out, or
 * leaves `dflt` there when it is absent. ERR_INVALID ("limit: 'x' is not an integer from 1
 * to 1000") otherwise. */
int api_query_long(struct http_req *req, const char *name, long dflt, long min, long max,
                   long *out, struct err *e);

/* Handlers, one file per resource. */
void api_health_get(struct http_req *req, void *arg);
void api_metrics_get(struct http_req *req, void *arg);
void api_stats_get(struct http_req *req, void *arg);
void api_openapi_get(struct http_req *req, void *arg);
void api_crews_create(struct http_req *req, void *arg);
void api_crews_update(struct http_req *req, void *arg);
void api_crews_get(struct http_req *req, void *arg);
void api_crews_list_or_get(struct http_req *req, void *arg);
void api_crews_delete(struct http_req *req, void *arg);
void api_crews_delete_by_query(struct http_req *req, void *arg);
void api_jobs_execute(struct http_req *req, void *arg);
void api_jobs_execute_crew(struct http_req *req, void *arg);
void api_jobs_status(struct http_req *req, void *arg);
void api_jobs_status_by_query(struct http_req *req, void *arg);
void api_jobs_list(struct http_req *req, void *arg);
void api_jobs_cancel(struct http_req *req, void *arg);
void api_jobs_delete(struct http_req *req, void *arg);
void api_jobs_events(struct http_req *req, void *arg);
void api_jobs_webhooks(struct http_req *req, void *arg);
void api_tools_put(struct http_req *req, void *arg);
void api_tools_list(struct http_req *req, void *arg);
void api_tools_get(struct http_req *req, void *arg);
void api_tools_delete(struct http_req *req, void *arg);
void api_agents_put(struct http_req *req, void *arg);
void api_agents_list(struct http_req *req, void *arg);
void api_agents_get(struct http_req *req, void *arg);
void api_agents_delete(struct http_req *req, void *arg);

/* Loads the stored user tools into `reg` at start-up. A row that does not load (unreadable,
 * or its name now a built-in's) is logged and skipped. Returns 0, or ERR_NOMEM / the store's
 * error. */
int api_tools_load(struct store *store, struct tool_registry *reg, struct err *e);

/* The stored custom agent classes, for crew create and replace to expand (an unreadable row
 * is logged and skipped). *out is a new array for api_agents_free. */
int api_agents_load(struct store *store, struct crew_class ***out, size_t *n_out,
                    struct err *e);
void api_agents_free(struct crew_class **items, size_t n);

#endif
