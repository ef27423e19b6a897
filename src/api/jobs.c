/*
 * jobs.c - the job routes (the seed's execute and job-status endpoints, API.md section 1,
 * and from section 4: GET /api/v1/crew/job/{id}, the job list, cancel, delete and the
 * job's webhook deliveries).
 *
 * Execute validates in API.md's order, snapshots the crew's definition and plan into a
 * pending job row, wakes the job manager and answers 202: it never runs anything itself
 * (DESIGN.md decision 2). The status routes and the list read job rows; cancel and delete
 * go through the job manager, which holds the runs.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/json_text.h"
#include "core/utf8.h"
#include "engine/crew_run.h"
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

#define IDEMPOTENCY_KEY_MAX 255

/* The Idempotency-Key header: 0 and *out (NULL when absent), or ERR_INVALID. */
static int idempotency_key(struct http_req *req, const char **out, struct err *e)
{
    const char *key = http_req_header(req, "Idempotency-Key");
    *out = key;
    if (key == NULL)
        return 0;
    size_t n = strlen(key);
    bool ok = n >= 1 && n <= IDEMPOTENCY_KEY_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = key[i] >= 0x20 && key[i] <= 0x7e;
    if (!ok)
        return err_set(e, ERR_INVALID, "Idempotency-Key must be 1 to %d printable ASCII characters",
                       IDEMPOTENCY_KEY_MAX);
    return 0;
}

/* The SHA-256 of the raw request body as 64 lowercase hex digits. */
static int body_hash(struct http_req *req, char out[2 * 32 + 1], struct err *e)
{
    size_t len;
    const unsigned char *body = http_req_body(req, &len);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (EVP_Digest(body ? (const void *)body : (const void *)"", len, md, &md_len, EVP_sha256(),
                   NULL) != 1 ||
        md_len != 32)
        return err_set(e, ERR_INTERNAL, "SHA-256 of the request body failed");
    static const char hex[] = "0123456789abcdef";
    for (unsigned int i = 0; i < md_len; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 0xf];
    }
    out[2 * md_len] = '\0';
    return 0;
}

/* The 202 of execute for `job`; `status` is the job's status now. */
static json_t *accepted_json(const struct store_job *job)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "job_id", job->job_id, "crew_id",
                     job->crew_id, "crew_name", job->crew_name, "status",
                     store_job_status_name(job->status), "message", "Crew execution started",
                     "created_at", job->created_at, "execution_mode", job->execution_mode);
}

/*
 * A request whose Idempotency-Key a job already carries: the same body answers that job's
 * 202 again (its current status) and creates nothing; another body is a 422. Returns true
 * when it answered, false when no job has the key (*e ERR_NOT_FOUND) or the lookup failed
 * (answered too: true).
 */
static bool replay(struct http_req *req, const struct api_ctx *ctx, const char *key,
                   const char *hash)
{
    struct err e = {0};
    struct store_job *job = NULL;
    int rc = store_job_find_by_key(ctx->store, key, &job, &e);
    if (rc == ERR_NOT_FOUND)
        return false;
    if (rc != 0) {
        api_reply_err(req, &e);
        return true;
    }
    if (job->request_hash == NULL || strcmp(job->request_hash, hash) != 0) {
        err_set(&e, ERR_MISMATCH, "Idempotency-Key '%s' was used with another request body", key);
        api_reply_err(req, &e);
    } else {
        http_reply_header(req, "Idempotent-Replayed", "true");
        http_reply_json(req, 202, accepted_json(job));
    }
    store_job_free(job);
    return true;
}

static void execute(struct http_req *req, const struct api_ctx *ctx, const char *path_crew)
{
    struct err e = {0};
    json_t *body = NULL, *plan_json = NULL;
    struct store_crew *crew = NULL;
    struct plan *plan = NULL;
    struct job_request *jr = NULL;
    struct job_webhook hook = {0};
    struct store_job job = {0};
    char *request_text = NULL, *metadata_text = NULL;
    const char *key = NULL;
    char hash[2 * 32 + 1];

    /* The key first: a replay answers what the first request got, before any validation
     * (the crew may be gone since). A request that was refused stored nothing, so its
     * replay is validated again. */
    if (idempotency_key(req, &key, &e) != 0 || (key != NULL && body_hash(req, hash, &e) != 0)) {
        api_reply_err(req, &e);
        goto out;
    }
    if (key != NULL && replay(req, ctx, key, hash))
        goto out;

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
    /* The crew was checked when written, maybe under other lists than the server's now. */
    if ((ctx->llm_policy != NULL && plan_check_llm_policy(plan, ctx->llm_policy, &e) != 0) ||
        job_request_parse(body, plan, &jr, &e) != 0 ||
        job_webhook_parse(body, ctx->webhook_policy, &hook, &e) != 0) {
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
    /* The webhook goes to its own columns, never into `request`: the secret stays out of
     * every reply. */
    job.webhook_url = hook.url;
    job.webhook_secret = hook.secret;
    job.webhook_mask = hook.mask;
    clock_rfc3339_now(job.created_at);
    if (key != NULL) {
        job.idempotency_key = (char *)key;
        job.request_hash = hash;
    }
    if (store_job_insert(ctx->store, &job, &e) != 0) {
        /* Another request with the key (on another instance) inserted first: the unique
         * index decided, answer as its replay. */
        if (key != NULL && e.code == ERR_CONFLICT &&
            strncmp(e.msg, "idempotency_key", strlen("idempotency_key")) == 0 &&
            replay(req, ctx, key, hash))
            goto out;
        api_reply_err(req, &e);
        goto out;
    }
    jobs_wake(ctx->jobs);
    http_reply_json(req, 202, accepted_json(&job));
out:
    free(request_text);
    free(metadata_text);
    job_webhook_cleanup(&hook);
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

#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000

/* GET /api/v1/crew/jobs?crew_id=&status=&limit=&offset=: newest first, without results. */
void api_jobs_list(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    struct store_crew *crew = NULL;
    struct store_job_page page = {0};
    struct store_job_filter f = {.any_status = true};
    char idbuf[ID_UUID_LEN];
    long limit, offset;
    const char *status = http_req_query(req, "status");
    const char *ident = http_req_query(req, "crew_id");
    if (status != NULL && store_job_status_parse(status, &f.status) != 0) {
        http_reply_error(req, 400,
                         "status: '%.*s' is not one of pending, running, completed, failed, "
                         "cancelled",
                         QUOTED(status));
        goto out;
    }
    f.any_status = status == NULL;
    if (api_query_long(req, "limit", LIST_DEFAULT_LIMIT, 1, LIST_MAX_LIMIT, &limit, &e) != 0 ||
        api_query_long(req, "offset", 0, 0, 1L << 40, &offset, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    if (ident != NULL && ident[0] != '\0') {
        /* A name or an id, like every crew route; the id of a crew deleted since still
         * selects its jobs, which outlive it. */
        bool is_id = id_canonical(ident, idbuf);
        int rc = store_crew_get(ctx->store, is_id ? idbuf : ident, STORE_BY_NAME_OR_ID, &crew,
                                &e);
        if (rc == 0)
            memcpy(idbuf, crew->crew_id, ID_UUID_LEN);
        else if (rc != ERR_NOT_FOUND || !is_id) {
            api_reply_err(req, &e);
            goto out;
        }
        f.crew_id = idbuf;
    }
    if (store_job_list(ctx->store, &f, limit, offset, &page, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    json_t *items = json_array();
    int64_t now = clock_now_ms();
    for (size_t i = 0; items != NULL && i < page.n; i++) {
        json_t *o = job_status_json(page.items[i], now, false);
        if (o == NULL || json_array_append_new(items, o) != 0) {
            json_decref(items);
            items = NULL;
        }
    }
    if (items == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory listing jobs");
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 200,
                    json_pack("{s:o, s:I, s:I, s:I}", "jobs", items, "total",
                              (json_int_t)page.total, "limit", (json_int_t)limit, "offset",
                              (json_int_t)offset));
out:
    store_job_page_cleanup(&page);
    store_crew_free(crew);
}

bool api_path_job(struct http_req *req, char idbuf[])
{
    const char *job_id = http_req_param(req, 0);
    if (id_canonical(job_id, idbuf))
        return true;
    http_reply_error(req, 404, "job '%.*s' not found", QUOTED(job_id));
    return false;
}

/* POST /api/v1/crew/job/{job_id}/cancel: 200 with the job's status body, 409 if it had
 * ended, 404 if unknown. */
void api_jobs_cancel(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    char idbuf[ID_UUID_LEN];
    if (!api_path_job(req, idbuf))
        return;
    int rc = ctx->jobs ? jobs_cancel(ctx->jobs, idbuf, &e)
                       : store_job_finish(ctx->store, idbuf, NULL, STORE_JOB_CANCELLED, NULL,
                                          CREW_RUN_CANCEL_ERROR, clock_now_ms(), &e);
    if (rc != 0) {
        api_reply_err(req, &e); /* ERR_CONFLICT: "job already completed" */
        return;
    }
    reply_status(req, ctx, idbuf);
}

/* DELETE /api/v1/crew/job/{job_id}: cancels it if it has not ended, then removes it. */
void api_jobs_delete(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    char idbuf[ID_UUID_LEN];
    if (!api_path_job(req, idbuf))
        return;
    int rc;
    if (ctx->jobs != NULL) {
        rc = jobs_delete(ctx->jobs, idbuf, &e);
    } else {
        rc = store_job_finish(ctx->store, idbuf, NULL, STORE_JOB_CANCELLED, NULL,
                              CREW_RUN_CANCEL_ERROR, clock_now_ms(), &e);
        if (rc == 0 || rc == ERR_CONFLICT)
            rc = store_job_delete(ctx->store, idbuf, &e);
    }
    if (rc != 0) {
        api_reply_err(req, &e);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s, s:s}", "message", "Job deleted", "job_id", idbuf));
}

/* GET /api/v1/crew/job/{job_id}/webhooks: the job's webhook deliveries, by event seq. */
void api_jobs_webhooks(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    struct store_delivery_list list = {0};
    char idbuf[ID_UUID_LEN];
    if (!api_path_job(req, idbuf))
        return;
    if (store_delivery_list(ctx->store, idbuf, &list, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; items != NULL && i < list.n; i++) {
        const struct store_delivery *d = list.items[i];
        char next[CLOCK_RFC3339_LEN];
        clock_rfc3339(d->next_attempt_ms, next);
        json_t *o = json_pack(
            "{s:I, s:s?, s:s?, s:I, s:o, s:s?, s:o, s:s}", "seq", (json_int_t)d->seq, "type",
            store_event_type_name(d->type), "state", store_delivery_state_name(d->state),
            "attempts", (json_int_t)d->attempts, "last_status",
            d->last_status ? json_integer(d->last_status) : json_null(), "last_error",
            d->last_error, "next_attempt_at",
            d->state == STORE_DELIVERY_PENDING ? json_string(next) : json_null(), "updated_at",
            d->updated_at);
        if (o == NULL || json_array_append_new(items, o) != 0) {
            json_decref(items);
            items = NULL;
        }
    }
    store_delivery_list_cleanup(&list);
    if (items == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory listing deliveries");
        api_reply_err(req, &e);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o}", "deliveries", items));
}
