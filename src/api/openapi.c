/*
 * openapi.c - GET /api/v1/openapi.json: the OpenAPI 3.1 document of this build's HTTP API
 * (docs/openapi.json, embedded at build time; see api/openapi.h). It goes through the normal
 * reply path, so CORS headers, HEAD and the request metrics apply as to every route; being
 * under /api/, it needs the API key when keys are configured, like the rest of the API.
 * tests/integration/test_openapi.py checks that the document names exactly the routes of
 * api/api.c's table.
 */
#include "api/api.h"
#include "api/openapi.h"

void api_openapi_get(struct http_req *req, void *arg)
{
    (void)arg;
    http_reply_text(req, 200, "application/json", (const char *)api_openapi_doc,
                    api_openapi_doc_len);
}
