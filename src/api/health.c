/* health.c - GET /healthz: liveness for load balancers and scripts; never needs auth. It also
 * says how busy this instance is: jobs running here, and LLM calls in flight or queued. */
#include "api/api.h"
#include "jobs/jobs.h"
#include "store/store.h"

void api_health_get(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s, s:I, s:I}", "status", "ok", "version",
                              CREWD_VERSION, "store", ctx->store->ops->kind, "jobs_running",
                              (json_int_t)(ctx->jobs ? jobs_running(ctx->jobs) : 0),
                              "llm_calls", (json_int_t)(ctx->jobs ? jobs_llm_calls(ctx->jobs) : 0)));
}
