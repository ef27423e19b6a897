/*
 * metrics.c - GET /metrics: Prometheus text format 0.0.4, open like /healthz. The counters
 * and histograms (HTTP, LLM) are kept as things happen (obs/obs.c); the gauges that describe
 * the store and this instance are read here, at scrape time: job counts per status, the
 * queue depth, pending webhook deliveries, jobs running here, open event streams and the
 * loop's lag. A store that does not answer sets crewd_store_up 0 and drops the store's
 * gauges rather than showing stale figures.
 */
#include <stdlib.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"
#include "jobs/jobs.h"
#include "obs/obs.h"
#include "store/store.h"

#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
/* The store's figures are read at most once per this many ms and reused in between: the
 * endpoint is open to anyone, and the counts scan the jobs table on the loop, so a flood of
 * scrapes must not become a flood of scans (as /healthz does with its ping). Loop thread. */
#define METRICS_STORE_REUSE_MS 1000

static void set_store_gauges(const struct api_ctx *ctx, const struct obs_gauges *g)
{
    static int64_t read_at_ms; /* clock_mono_ms of the last read; 0: none yet */
    int64_t now = clock_mono_ms();
    if (read_at_ms != 0 && now - read_at_ms < METRICS_STORE_REUSE_MS)
        return;
    read_at_ms = now;
    long counts[5] = {0}, deliveries = 0;
    struct err e = {0};
    bool up = store_job_counts(ctx->store, counts, &e) == 0 &&
              store_delivery_pending_count(ctx->store, &deliveries, &e) == 0;
    metrics_gauge_set(g->store_up, NULL, up ? 1 : 0);
    metrics_family_clear(g->jobs);
    metrics_family_clear(g->queue_depth);
    metrics_family_clear(g->deliveries_pending);
    if (!up) {
        log_warn("metrics", "store figures unavailable: %s", err_text(&e));
        return;
    }
    for (int s = STORE_JOB_PENDING; s <= STORE_JOB_CANCELLED; s++) {
        const char *status[1] = {store_job_status_name((enum store_job_status)s)};
        metrics_gauge_set(g->jobs, status, (double)counts[s]);
    }
    metrics_gauge_set(g->queue_depth, NULL, (double)counts[STORE_JOB_PENDING]);
    metrics_gauge_set(g->deliveries_pending, NULL, (double)deliveries);
}

void api_metrics_get(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    if (ctx->obs == NULL) {
        http_reply_error(req, 404, "metrics are not enabled");
        return;
    }
    const struct obs_gauges *g = obs_gauges(ctx->obs);
    set_store_gauges(ctx, g);
    metrics_gauge_set(g->running_here, NULL, (double)(ctx->jobs ? jobs_running(ctx->jobs) : 0));
    metrics_gauge_set(g->loop_lag, NULL, (double)obs_loop_lag_ms(ctx->obs) / 1000.0);
    metrics_gauge_set(g->event_streams, NULL, (double)api_sse_streams(ctx->sse));
    char *text = NULL;
    size_t len = 0;
    if (metrics_render(obs_metrics(ctx->obs), &text, &len) != 0) {
        struct err e = {0};
        err_set(&e, ERR_NOMEM, "out of memory rendering the metrics");
        api_reply_err(req, &e);
        return;
    }
    http_reply_text(req, 200, METRICS_CONTENT_TYPE, text, len);
    free(text);
}
