/*
 * obs.h - crewd's own metrics (the crewd_* families of GET /metrics) and the loop-lag
 * monitor behind /healthz. docs/internals/obs.md lists the metrics.
 *
 * main makes one struct obs and hands it to the modules that report into it: the HTTP
 * server (obs_http_reply, as its on_reply hook), the LLM client (obs_llm_call, once per
 * finished call) and the API (scrape-time gauges, /healthz). It depends on core only; the
 * figures that come from the store or the job manager are set by the API at scrape time.
 *
 * Runs on the loop thread.
 */
#ifndef CREWD_OBS_OBS_H
#define CREWD_OBS_OBS_H

#include <event2/event.h>
#include <stdbool.h>

#include "core/err.h"
#include "obs/metrics.h"

/* The loop-lag timer's period, and how long its worst lateness is remembered. */
#define OBS_LAG_PERIOD_MS 250
#define OBS_LAG_WINDOW_MS 5000

struct obs;

/* What an LLM call used, for crewd_llm_tokens_total. */
struct obs_tokens {
    long input, output, cached, reasoning;
};

/* The families the scrape handler sets (api/metrics.c); owned by the registry. */
struct obs_gauges {
    struct metrics_family *jobs;              /* crewd_jobs{status} */
    struct metrics_family *queue_depth;       /* crewd_queue_depth */
    struct metrics_family *running_here;      /* crewd_jobs_running_here */
    struct metrics_family *deliveries_pending; /* crewd_webhook_deliveries_pending */
    struct metrics_family *loop_lag;          /* crewd_loop_lag_seconds */
    struct metrics_family *store_up;          /* crewd_store_up */
    struct metrics_family *event_streams;     /* crewd_event_streams_open */
};

/* Registers every crewd_* family (crewd_build_info{version} set to 1 at once) and starts
 * the loop-lag timer on `base`. Returns 0 or ERR_NOMEM. */
int obs_new(struct event_base *base, const char *version, struct obs **out, struct err *e);
/* Stops the timer and frees the registry. NULL-safe. */
void obs_free(struct obs *o);

struct metrics *obs_metrics(struct obs *o);
const struct obs_gauges *obs_gauges(struct obs *o);

/* One HTTP reply: `route` is the matched route's pattern or "unmatched"; `method` "GET", ...
 * The signature is the HTTP server's on_reply hook's (http/server.h); `arg` is the obs. */
void obs_http_reply(void *arg, const char *route, const char *method, int status);

/* One finished LLM call, retries and waiting for a connection or a limit included: `ok`,
 * its duration in seconds and (ok only, may be NULL) its token usage. NULL-safe on o. */
void obs_llm_call(struct obs *o, const char *provider, bool ok, double seconds,
                  const struct obs_tokens *tokens);

/* The loop's worst lateness in milliseconds over the last OBS_LAG_WINDOW_MS, counting a
 * timer that is overdue right now. */
long obs_loop_lag_ms(const struct obs *o);

#endif
