/* api.c - the route table and the mapping from error codes to HTTP statuses. */
#include "api/api.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "core/log.h"

/*
 * One table for every route; the first match wins, so literal paths come before the
 * `{crew}` patterns they would also match. The seed's paths are kept as they were (API.md
 * section 1): GET/DELETE on the collection select one crew through ?name= or ?crew_id=,
 * POST on the collection (or on a crew's path) executes, PATCH on the collection or on
 * /job reads a job through ?job_id= or a body {"job_id"}.
 */
static const struct http_route routes[] = {
    {HTTP_GET, "/healthz", api_health_get},
    {HTTP_GET, "/metrics", api_metrics_get},
    {HTTP_GET, "/api/v1/stats", api_stats_get},
    {HTTP_GET, "/api/v1/openapi.json", api_openapi_get},
    {HTTP_GET, "/api/v1/crew", api_crews_list_or_get},
    {HTTP_PUT, "/api/v1/crew", api_crews_create},
    {HTTP_POST, "/api/v1/crew", api_jobs_execute},
    {HTTP_PATCH, "/api/v1/crew", api_jobs_status_by_query},
    {HTTP_DELETE, "/api/v1/crew", api_crews_delete_by_query},
    {HTTP_POST, "/api/v1/crew/execute", api_jobs_execute},
    {HTTP_PATCH, "/api/v1/crew/job", api_jobs_status_by_query},
    {HTTP_GET | HTTP_PATCH, "/api/v1/crew/job/{job}", api_jobs_status},
    {HTTP_DELETE, "/api/v1/crew/job/{job}", api_jobs_delete},
    {HTTP_POST, "/api/v1/crew/job/{job}/cancel", api_jobs_cancel},
    {HTTP_GET, "/api/v1/crew/job/{job}/events", api_jobs_events},
    {HTTP_GET, "/api/v1/crew/job/{job}/webhooks", api_jobs_webhooks},
    {HTTP_GET, "/api/v1/crew/jobs", api_jobs_list},
    {HTTP_GET, "/api/v1/crew/{crew}", api_crews_get},
    {HTTP_PUT, "/api/v1/crew/{crew}", api_crews_update},
    {HTTP_POST, "/api/v1/crew/{crew}", api_jobs_execute_crew},
    {HTTP_DELETE, "/api/v1/crew/{crew}", api_crews_delete},
    {HTTP_GET, "/api/v1/tools", api_tools_list},
    {HTTP_PUT, "/api/v1/tools", api_tools_put},
    {HTTP_GET, "/api/v1/tools/{name}", api_tools_get},
    {HTTP_DELETE, "/api/v1/tools/{name}", api_tools_delete},
    {HTTP_GET, "/api/v1/agents", api_agents_list},
    {HTTP_PUT, "/api/v1/agents", api_agents_put},
    {HTTP_GET, "/api/v1/agents/{name}", api_agents_get},
    {HTTP_DELETE, "/api/v1/agents/{name}", api_agents_delete},
};

const struct http_route *api_routes(size_t *n)
{
    *n = sizeof routes / sizeof routes[0];
    return routes;
}

int api_status_of(int code)
{
    switch (code) {
    case ERR_OK:
        return 200;
    case ERR_INVALID:
        return 400;
    case ERR_UNAUTHORIZED:
        return 401;
    case ERR_NOT_FOUND:
        return 404;
    case ERR_CONFLICT:
        return 409;
    case ERR_TOO_LARGE:
        return 413;
    case ERR_MISMATCH:
        return 422; /* well-formed, but contradicts an earlier request (an Idempotency-Key) */
    case ERR_UNSUPPORTED:
        return 400;
    case ERR_BUSY:
        return 503;
    default:
        return 500; /* NOMEM, IO, STORE, INTERNAL: our fault, not the client's */
    }
}

void api_reply_err(struct http_req *req, const struct err *e)
{
    int status = api_status_of(e->code);
    if (status < 500) {
        http_reply_error(req, status, "%s", err_text(e));
        return;
    }
    /* crewd's own fault: the detail (a backend's host and port, a path on disk) is for the
     * operator's log, not for the client, who gets what happened and that it is logged. */
    log_error("api", "%s %s: %s (%s)", http_method_name(http_req_method(req)), http_req_path(req),
              err_text(e), err_name(e->code));
    if (status == 503)
        http_reply_header(req, "Retry-After", "1");
    http_reply_error(req, status, "%s; the server log has the details", err_default_msg(e->code));
}

/* Parses a non-negative decimal query parameter within [min, max]. */
int api_query_long(struct http_req *req, const char *name, long dflt, long min, long max,
                   long *out, struct err *e)
{
    const char *s = http_req_query(req, name);
    *out = dflt;
    if (s == NULL)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    /* Digits only: strtol alone would also take " 5" and "+5". */
    if (!isdigit((unsigned char)s[0]) || errno != 0 || *end != '\0' || v < min || v > max)
        return err_set(e, ERR_INVALID, "%s: '%s' is not an integer from %ld to %ld", name, s, min,
                       max);
    *out = v;
    return 0;
}
