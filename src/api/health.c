/* health.c - GET /healthz: liveness for load balancers and scripts; never needs auth. */
#include "api/api.h"
#include "store/store.h"

void api_health_get(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s}", "status", "ok", "version", CREWD_VERSION, "store",
                              ctx->store->ops->kind));
}
