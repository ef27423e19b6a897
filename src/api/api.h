/*
 * api.h - the AgentCrew REST API (CrewHandler of the seed): the route table and what the
 * handlers share. The only layer that knows both HTTP and crews; it turns requests into
 * model/store calls and results into the bodies of API.md.
 */
#ifndef CREWD_API_API_H
#define CREWD_API_API_H

#include <stddef.h>

#include "core/err.h"
#include "http/request.h"
#include "http/router.h"

struct jobs;
struct store;
struct tool_registry;

/* What every handler needs; owned by main, borrowed by the API for the server's life. */
struct api_ctx {
    struct store *store;
    const struct tool_registry *tools;
    const char *default_provider;
    struct jobs *jobs; /* woken after each execute; NULL: jobs wait for the next poll */
};

/* The route table (static). Handlers take a struct api_ctx * as their argument. */
const struct http_route *api_routes(size_t *n);

/* The HTTP status for an ERR_* code: the one place where that mapping lives. */
int api_status_of(int code);

/* Answers with the status of e->code and {"message": err_text(e), "status"}. A 5xx is
 * logged with its detail and answered with the code's generic text only. */
void api_reply_err(struct http_req *req, const struct err *e);

/* Handlers, one file per resource. */
void api_health_get(struct http_req *req, void *arg);
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

#endif
