/*
 * health.c - GET /healthz: liveness for load balancers and scripts; never needs auth. It says
 * how busy this instance is (jobs running here, LLM calls in flight or queued, event streams
 * open) and checks
 * what would stop it from doing its work, answering 503 with "status": "unhealthy" when:
 *   - the store does not answer a ping, or takes longer than health_max_store_ms to;
 *   - the job manager's last store write failed and none succeeded since (a SQLite write
 *     lock held elsewhere, a PostgreSQL server gone: the ping may still pass while no job
 *     can move);
 *   - the event loop ran more than health_max_loop_lag_ms late in the last few seconds.
 * Error texts are generic (the endpoint is open); the detail goes to the log.
 */
#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"
#include "jobs/jobs.h"
#include "obs/obs.h"
#include "store/store.h"

/* The last ping, reused for PING_REUSE_MS: /healthz is open to anyone, and each ping is a
 * store call on the loop (on PostgreSQL a round trip, or a reconnect when the server is
 * gone), so a flood of probes must not become a flood of store calls. Loop thread only. */
#define PING_REUSE_MS 1000

static struct {
    int64_t at_ms; /* clock_mono_ms of the last ping; 0: none yet */
    int rc;
    long latency_ms;
} last_ping;

static json_t *store_check(const struct api_ctx *ctx, bool *ok)
{
    long bound = ctx->health_max_store_ms > 0 ? ctx->health_max_store_ms
                                              : API_HEALTH_DEFAULT_MAX_STORE_MS;
    struct err e = {0};
    int64_t t0 = clock_mono_ms();
    if (last_ping.at_ms == 0 || t0 - last_ping.at_ms >= PING_REUSE_MS) {
        last_ping.rc = store_ping(ctx->store, &e);
        last_ping.latency_ms = (long)(clock_mono_ms() - t0);
        last_ping.at_ms = clock_mono_ms();
        if (last_ping.rc != 0)
            log_warn("health", "store ping failed: %s", err_text(&e));
    }
    int rc = last_ping.rc;
    long latency_ms = last_ping.latency_ms;
    long long failing_since = ctx->jobs ? jobs_store_failing_since(ctx->jobs) : 0;
    char error[160] = "";
    if (rc != 0) {
        snprintf(error, sizeof error, "ping failed: %s", err_default_msg(rc));
    } else if (latency_ms > bound) {
        log_warn("health", "store ping took %ld ms (bound %ld ms)", latency_ms, bound);
        snprintf(error, sizeof error, "ping took %ld ms (bound %ld ms)", latency_ms, bound);
    } else if (failing_since != 0) {
        snprintf(error, sizeof error, "the job manager's store writes fail");
    }
    *ok = error[0] == '\0';
    json_t *check = json_pack("{s:b, s:I}", "ok", *ok, "latency_ms", (json_int_t)latency_ms);
    if (check != NULL && error[0] != '\0')
        json_object_set_new(check, "error", json_string(error));
    if (check != NULL && failing_since != 0) {
        char since[CLOCK_RFC3339_LEN];
        clock_rfc3339(failing_since, since);
        json_object_set_new(check, "writes_failing_since", json_string(since));
    }
    return check;
}

static json_t *loop_check(const struct api_ctx *ctx, bool *ok)
{
    long bound = ctx->health_max_loop_lag_ms > 0 ? ctx->health_max_loop_lag_ms
                                                 : API_HEALTH_DEFAULT_MAX_LOOP_LAG_MS;
    long lag_ms = ctx->obs ? obs_loop_lag_ms(ctx->obs) : 0;
    *ok = lag_ms <= bound;
    if (!*ok)
        log_warn("health", "event loop ran %ld ms late (bound %ld ms)", lag_ms, bound);
    return json_pack("{s:b, s:I}", "ok", *ok, "lag_ms", (json_int_t)lag_ms);
}

void api_health_get(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    bool store_ok, loop_ok;
    json_t *store = store_check(ctx, &store_ok);
    json_t *loop = loop_check(ctx, &loop_ok);
    bool healthy = store_ok && loop_ok;
    http_reply_json(
        req, healthy ? 200 : 503,
        json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:{s:o, s:o}}", "status",
                  healthy ? "ok" : "unhealthy", "version", CREWD_VERSION, "store",
                  ctx->store->ops->kind, "jobs_running",
                  (json_int_t)(ctx->jobs ? jobs_running(ctx->jobs) : 0), "llm_calls",
                  (json_int_t)(ctx->jobs ? jobs_llm_calls(ctx->jobs) : 0), "event_streams",
                  (json_int_t)api_sse_streams(ctx->sse), "checks", "store", store, "loop",
                  loop));
}
