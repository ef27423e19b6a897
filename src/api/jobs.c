/*
 * jobs.c - the job routes (the seed's execute and job-status endpoints, API.md section 1,
 * and GET /api/v1/crew/job/{id} of section 4).
 *
 * Execute validates in API.md's order, snapshots the crew's definition and plan into a
 * pending job row, wakes the job manager and answers 202: it never runs anything itself
 * (DESIGN.md decision 2). The status routes read the job row.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/json_text.h"
#include "core/utf8.h"
#include "jobs/jobs.h"
#include "model/job.h"
#include "model/plan.h"
#include "store/store.h"

#define QUOTED(s) (int)utf8_prefix_len((s), strlen(s), 100), (s)

/* The identifier of the crew: body crew_id, else body name, else the path's {crew}. */
static const char *crew_ident(const json_t *body, const char *path_crew)
{
    const char *keys[] = {"crew_id", "name"};
    for (size_t i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(body, keys[i]));
        if (s != NULL && s[0] != '\0')
            return s;
    }
    return path_crew;
}

static bool query_present(const json_t *q)
{
    return (json_is_string(q) && json_string_length(q) > 0) ||
           (json_is_object(q) && json_object_size(q) > 0);
}

static void execute(struct http_req *req, const struct api_ctx *ctx, const char *path_crew)
{
    struct err e = {0};
    json_t *body = NULL, *plan_json = NULL;
    struct store_crew *crew = NULL;
    struct plan *plan = NULL;
    struct job_request *jr = NULL;
    struct store_job job = {0};
    char *request_text = NULL, *metadata_text = NULL;

    if (http_req_body_json(req, &body, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    /* API.md's order: crew_id or name, query, the crew itself, then the request's fields. */
    const char *ident = crew_ident(body, path_crew);
    if (ident == NULL) {
        http_reply_error(req, 400, "crew_id or name is required");
        goto out;
    }
    if (!query_present(json_object_get(body, "query"))) {
        http_reply_error(req, 400, "query is required");
        goto out;
    }
    char idbuf[ID_UUID_LEN];
    const char *lookup = id_canonical(ident, idbuf) ? idbuf : ident;
    if (store_crew_get(ctx->store, lookup, STORE_BY_NAME_OR_ID, &crew, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    json_error_t jerr;
    if ((plan_json = json_loads(crew->plan, 0, &jerr)) == NULL ||
        plan_from_json(plan_json, &plan, &e) != 0) {
        err_set(&e, ERR_INTERNAL, "crew '%s': stored plan does not parse", crew->crew_id);
        api_reply_err(req, &e);
        goto out;
    }
    if (job_request_parse(body, plan, &jr, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }

    if (id_uuid4(job.job_id) != 0) {
        err_set(&e, ERR_INTERNAL, "no randomness available for a job id");
        api_reply_err(req, &e);
        goto out;
    }
    memcpy(job.crew_id, crew->crew_id, ID_UUID_LEN);
    job.crew_name = crew->name;
    job.status = STORE_JOB_PENDING;
    job.execution_mode = (char *)crew_mode_name(jr->mode);
    request_text = json_dumps(jr->normalized, JSON_TEXT_FLAGS);
    metadata_text = json_dumps(json_object_get(jr->normalized, "metadata"), JSON_TEXT_FLAGS);
    if (request_text == NULL || metadata_text == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory building the job");
        api_reply_err(req, &e);
        goto out;
    }
    job.request = request_text;
    job.definition = crew->definition;
    job.plan = crew->plan;
    job.metadata = metadata_text;
    clock_rfc3339_now(job.created_at);
    if (store_job_insert(ctx->store, &job, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    jobs_wake(ctx->jobs);
    http_reply_json(req, 202,
                    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "job_id", job.job_id,
                              "crew_id", job.crew_id, "crew_name", crew->name, "status", "pending",
                              "message", "Crew execution started", "created_at", job.created_at,
                              "execution_mode", job.execution_mode));
out:
    free(request_text);
    free(metadata_text);
    job_request_free(jr);
    plan_free(plan);
    json_decref(plan_json);
    store_crew_free(crew);
    json_decref(body);
}

void api_jobs_execute(struct http_req *req, void *arg)
{
    execute(req, arg, NULL);
}

void api_jobs_execute_crew(struct http_req *req, void *arg)
{
    execute(req, arg, http_req_param(req, 0));
}

static void reply_status(struct http_req *req, const struct api_ctx *ctx, const char *job_id)
{
    struct err e = {0};
    struct store_job *job = NULL;
    char idbuf[ID_UUID_LEN];
    if (!id_canonical(job_id, idbuf)) {
        http_reply_error(req, 404, "job '%.*s' not found", QUOTED(job_id));
        return;
    }
    if (store_job_get(ctx->store, idbuf, &job, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    http_reply_json(req, 200, job_status_json(job, clock_now_ms(), true));
    store_job_free(job);
}

/* PATCH /api/v1/crew/job?job_id=X, PATCH /api/v1/crew?job_id=X, or either with a body
 * {"job_id": X}: the seed's clients send all three. */
void api_jobs_status_by_query(struct http_req *req, void *arg)
{
    const char *id = http_req_query(req, "job_id");
    if (id != NULL && id[0] != '\0') {
        reply_status(req, arg, id);
        return;
    }
    if (http_req_has_body(req)) {
        json_t *body = NULL;
        struct err e = {0};
        if (http_req_body_json(req, &body, &e) != 0) {
            api_reply_err(req, &e);
            return;
        }
        const char *bid = json_string_value(json_object_get(body, "job_id"));
        if (bid != NULL && bid[0] != '\0') {
            reply_status(req, arg, bid);
            json_decref(body);
            return;
        }
        json_decref(body);
    }
    http_reply_error(req, 400,
                     "job_id is required (?job_id=, /api/v1/crew/job/{job_id}, or a body "
                     "{\"job_id\": ...})");
}

void api_jobs_status(struct http_req *req, void *arg)
{
    reply_status(req, arg, http_req_param(req, 0));
}
