/*
 * stats.c - GET /api/v1/stats: the seed's JobManager.get_stats and BotManager.get_crew_stats
 * in one body, {"jobs": {...}, "crews": {...}}. Job figures count the whole store (every
 * instance's jobs); running_here is this instance's. Crews are read a page at a time, so a
 * large registry is never one statement's worth of rows in memory at once beyond the reply.
 */
#include <string.h>

#include "api/api.h"
#include "jobs/jobs.h"
#include "store/store.h"

#define STATS_CREW_PAGE 500

/* The modes a crew may have (API.md section 3), always present in crews_by_mode. */
static const char *const MODES[] = {"sequential", "parallel", "flow", "loop"};

static int jobs_stats(const struct api_ctx *ctx, json_t **out, struct err *e)
{
    long counts[5] = {0};
    int rc = store_job_counts(ctx->store, counts, e);
    if (rc != 0)
        return rc;
    long total = 0;
    for (int i = 0; i < 5; i++)
        total += counts[i];
    *out = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "total_jobs",
                     (json_int_t)total, "pending", (json_int_t)counts[STORE_JOB_PENDING],
                     "running", (json_int_t)counts[STORE_JOB_RUNNING], "completed",
                     (json_int_t)counts[STORE_JOB_COMPLETED], "failed",
                     (json_int_t)counts[STORE_JOB_FAILED], "cancelled",
                     (json_int_t)counts[STORE_JOB_CANCELLED], "job_ttl",
                     (json_int_t)(ctx->jobs ? jobs_ttl_ms(ctx->jobs) / 1000 : 0),
                     "cleanup_interval",
                     (json_int_t)(ctx->jobs ? jobs_cleanup_interval_ms(ctx->jobs) / 1000 : 0),
                     "running_here", (json_int_t)(ctx->jobs ? jobs_running(ctx->jobs) : 0));
    return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
}

static int crews_stats(const struct api_ctx *ctx, json_t **out, struct err *e)
{
    json_t *by_mode = json_object(), *list = json_array();
    struct store_crew_page page = {0};
    long offset = 0, total_agents = 0, total = 0;
    int rc = 0;
    *out = NULL;
    if (by_mode == NULL || list == NULL)
        goto nomem;
    for (size_t i = 0; i < sizeof MODES / sizeof MODES[0]; i++)
        if (json_object_set_new(by_mode, MODES[i], json_integer(0)) != 0)
            goto nomem;
    for (;;) {
        if ((rc = store_crew_list(ctx->store, STATS_CREW_PAGE, offset, &page, e)) != 0)
            goto out;
        total = page.total;
        for (size_t i = 0; i < page.n; i++) {
            const struct store_crew *c = page.items[i];
            const char *mode = c->execution_mode ? c->execution_mode : "";
            json_int_t n = json_integer_value(json_object_get(by_mode, mode));
            total_agents += c->agent_count;
            if (json_object_set_new(by_mode, mode, json_integer(n + 1)) != 0 ||
                json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:I}", "name", c->name,
                                                      "crew_id", c->crew_id, "mode", mode,
                                                      "agent_count",
                                                      (json_int_t)c->agent_count)) != 0)
                goto nomem;
        }
        size_t n = page.n;
        store_crew_page_cleanup(&page);
        /* A crew created or deleted between pages shifts the rest by one: the list may
         * then miss or repeat one, as any paged read without a snapshot would. */
        if (n < STATS_CREW_PAGE)
            break;
        offset += (long)n;
    }
    *out = json_pack("{s:I, s:o, s:I, s:o}", "total_crews", (json_int_t)total, "crews_by_mode",
                     by_mode, "total_agents", (json_int_t)total_agents, "crews", list);
    by_mode = list = NULL; /* stolen by json_pack, even when it fails */
    if (*out == NULL)
        goto nomem;
    goto out;
nomem:
    rc = err_set(e, ERR_NOMEM, "out of memory");
out:
    store_crew_page_cleanup(&page);
    json_decref(by_mode);
    json_decref(list);
    return rc;
}

void api_stats_get(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    json_t *jobs = NULL, *crews = NULL;
    if (jobs_stats(ctx, &jobs, &e) != 0 || crews_stats(ctx, &crews, &e) != 0) {
        json_decref(jobs);
        api_reply_err(req, &e);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:o, s:o}", "jobs", jobs, "crews", crews));
}
