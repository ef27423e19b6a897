/*
 * jobs.c - see jobs.h.
 *
 * One claim statement per loop turn takes every job inserted since the last one (up to the
 * free slots), which batches the store's work under load; an idle instance costs one claim
 * query per poll. Store errors are logged and never lose a job: a job the manager could not
 * start or finish stays in the store, and its lease expiring hands it to the next claim.
 */
#include "jobs/jobs.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/json_text.h"
#include "core/log.h"
#include "engine/crew_run.h"
#include "llm/llm.h"
#include "model/job.h"
#include "model/plan.h"
#include "store/store.h"

#define JOBS_DEFAULT_MAX_RUNNING 256
#define JOBS_DEFAULT_LEASE_MS 30000
#define JOBS_DEFAULT_POLL_MS 1000
#define JOBS_DEFAULT_CLAIM_BATCH 64

struct job_slot {
    struct jobs *jobs;
    char job_id[ID_UUID_LEN];
    struct plan *plan;
    struct job_request *req;
    char **inline_keys; /* per agent */
    size_t n_keys;
    struct crew_run *run;
    struct job_slot *prev, *next;
};

struct jobs {
    struct event_base *base;
    struct store *store;
    struct llm_client *llm;
    struct jobs_opts opts;
    char owner[ID_UUID_LEN];
    struct event *claim_ev;
    struct event *renew_ev;
    bool claim_soon; /* claim_ev is armed with a zero timeout */
    bool started;
    struct job_slot *slots;
    size_t n_running;
};

static void schedule_claim(struct jobs *jobs, long delay_ms)
{
    if (!jobs->started)
        return;
    if (delay_ms == 0) {
        if (jobs->claim_soon)
            return;
        jobs->claim_soon = true;
    }
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
    event_add(jobs->claim_ev, &tv); /* re-adding replaces the pending timeout */
}

static void slot_free(struct job_slot *slot)
{
    if (slot == NULL)
        return;
    crew_run_free(slot->run);
    job_request_free(slot->req);
    plan_free(slot->plan);
    for (size_t i = 0; i < slot->n_keys; i++) {
        if (slot->inline_keys[i] != NULL) {
            /* a secret: do not leave it in freed memory */
            memset(slot->inline_keys[i], 0, strlen(slot->inline_keys[i]));
            free(slot->inline_keys[i]);
        }
    }
    free(slot->inline_keys);
    free(slot);
}

static void slot_unlink(struct jobs *jobs, struct job_slot *slot)
{
    if (slot->prev)
        slot->prev->next = slot->next;
    else
        jobs->slots = slot->next;
    if (slot->next)
        slot->next->prev = slot->prev;
    jobs->n_running--;
}

/* Ends a job that cannot run (a row that does not parse): failed, with the reason. */
static void fail_job(struct jobs *jobs, const char *job_id, const char *why)
{
    struct err e = {0};
    log_error("jobs", "job %s cannot run: %s", job_id, why);
    if (store_job_finish(jobs->store, job_id, jobs->owner, STORE_JOB_FAILED, NULL, why,
                         clock_now_ms(), &e) != 0)
        log_error("jobs", "job %s: cannot record its failure: %s", job_id, err_text(&e));
}

static int on_checkpoint(void *arg, const char *key, const json_t *data, struct err *e)
{
    struct job_slot *slot = arg;
    char *text = json_dumps(data, JSON_TEXT_FLAGS);
    if (text == NULL)
        return err_set(e, ERR_NOMEM, "out of memory writing step %s", key);
    int rc = store_job_step_put(slot->jobs->store, slot->job_id, slot->jobs->owner, key, text, e);
    free(text);
    if (rc == 0)
        log_debug("jobs", "job %s: step %s saved", slot->job_id, key);
    return rc;
}

static void on_done(void *arg, int rc, enum crew_run_status status, json_t *result,
                    const char *error, const struct err *why)
{
    struct job_slot *slot = arg;
    struct jobs *jobs = slot->jobs;
    struct err e = {0};
    int64_t now = clock_now_ms();
    if (rc != 0) {
        if (rc == ERR_CONFLICT) {
            /* Another instance took the job over (our lease expired): it is theirs now. */
            log_warn("jobs", "job %s: %s; leaving it to its new owner", slot->job_id,
                     err_text(why));
        } else {
            log_error("jobs", "job %s: %s", slot->job_id, err_text(why));
            char msg[ERR_MSG_MAX + 64];
            snprintf(msg, sizeof msg, "crewd could not run the job: %s", err_default_msg(rc));
            if (store_job_finish(jobs->store, slot->job_id, jobs->owner, STORE_JOB_FAILED, NULL,
                                 msg, now, &e) != 0)
                log_error("jobs", "job %s: cannot record its failure: %s", slot->job_id,
                          err_text(&e));
        }
    } else {
        char *text = json_dumps(result, JSON_TEXT_FLAGS);
        enum store_job_status st =
            status == CREW_RUN_FAILED ? STORE_JOB_FAILED : STORE_JOB_COMPLETED;
        if (text == NULL) {
            log_error("jobs", "job %s: out of memory writing its result", slot->job_id);
        } else if (store_job_finish(jobs->store, slot->job_id, jobs->owner, st, text, error, now,
                                    &e) != 0) {
            log_error("jobs", "job %s: cannot record its result: %s", slot->job_id, err_text(&e));
        } else {
            log_info("jobs", "job %s %s (%s)", slot->job_id, store_job_status_name(st),
                     crew_run_status_name(status));
        }
        free(text);
    }
    json_decref(result);
    slot_unlink(jobs, slot);
    slot_free(slot); /* frees the run: allowed from its done hook */
    schedule_claim(jobs, 0);
}

/* config.api_key of each agent of the definition snapshot (secrets stay in memory only). */
static int read_inline_keys(struct job_slot *slot, const char *definition, struct err *e)
{
    size_t n = slot->plan->n_agents;
    if ((slot->inline_keys = calloc(n, sizeof *slot->inline_keys)) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    slot->n_keys = n;
    json_t *def = definition ? json_loads(definition, 0, NULL) : NULL;
    json_t *agents = json_object_get(def, "agents");
    int rc = 0;
    for (size_t i = 0; i < n && i < json_array_size(agents); i++) {
        const char *k = json_string_value(
            json_object_get(json_object_get(json_array_get(agents, i), "config"), "api_key"));
        if (k != NULL && k[0] != '\0' && (slot->inline_keys[i] = strdup(k)) == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
    }
    json_decref(def);
    return rc;
}

/* Builds and starts the run of a claimed job; on failure the job is failed in the store. */
static void start_job(struct jobs *jobs, const struct store_job *row)
{
    struct err e = {0};
    struct store_step_list steps = {0};
    struct job_slot *slot = calloc(1, sizeof *slot);
    json_t *plan_json = NULL, *req_json = NULL;
    if (slot == NULL) {
        fail_job(jobs, row->job_id, "crewd could not start the job: out of memory");
        return;
    }
    slot->jobs = jobs;
    memcpy(slot->job_id, row->job_id, ID_UUID_LEN);
    json_error_t jerr;
    plan_json = json_loads(row->plan ? row->plan : "", 0, &jerr);
    req_json = json_loads(row->request ? row->request : "", 0, &jerr);
    if (plan_json == NULL || plan_from_json(plan_json, &slot->plan, &e) != 0) {
        fail_job(jobs, row->job_id, "the job's stored plan does not parse");
        goto fail;
    }
    if (req_json == NULL || job_request_parse(req_json, slot->plan, &slot->req, &e) != 0) {
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "the job's stored request is invalid: %s", err_text(&e));
        fail_job(jobs, row->job_id, msg);
        goto fail;
    }
    if (read_inline_keys(slot, row->definition, &e) != 0)
        goto cannot_start;
    /* A job claimed before (its owner died or stopped) may have finished steps. */
    if (row->attempts > 1 && store_job_steps_get(jobs->store, row->job_id, &steps, &e) != 0)
        goto cannot_start;
    int64_t started_ms = clock_now_ms();
    if (row->started_at[0] != '\0')
        clock_parse_rfc3339(row->started_at, &started_ms);
    struct crew_run_env env = {.base = jobs->base, .llm = jobs->llm,
                               .getenv_fn = jobs->opts.getenv_fn};
    struct crew_run_spec spec = {.plan = slot->plan,
                                 .req = slot->req,
                                 .inline_keys = slot->inline_keys,
                                 .done = &steps,
                                 .started_ms = started_ms};
    struct crew_run_hooks hooks = {.checkpoint = on_checkpoint, .done = on_done, .arg = slot};
    if (crew_run_new(&env, &spec, &hooks, &slot->run, &e) != 0) {
        if (e.code == ERR_INVALID) {
            fail_job(jobs, row->job_id, err_text(&e));
            goto fail;
        }
        goto cannot_start;
    }
    store_step_list_cleanup(&steps);
    json_decref(plan_json);
    json_decref(req_json);
    slot->next = jobs->slots;
    if (jobs->slots)
        jobs->slots->prev = slot;
    jobs->slots = slot;
    jobs->n_running++;
    if (row->attempts > 1)
        log_info("jobs", "job %s resumed (attempt %ld, %zu step(s) done)", row->job_id,
                 row->attempts, steps.n);
    crew_run_start(slot->run);
    return;
cannot_start:
    /* Out of memory or a store error reading its checkpoints. Leases are renewed per
     * instance, not per job, so a job left running here would never be handed over: it ends
     * failed with a reason instead, which its client can see. */
    log_error("jobs", "job %s: %s", row->job_id, err_text(&e));
    fail_job(jobs, row->job_id, "crewd could not start the job (see the server log)");
fail:
    store_step_list_cleanup(&steps);
    json_decref(plan_json);
    json_decref(req_json);
    slot_free(slot);
}

static void on_claim(evutil_socket_t fd, short what, void *arg)
{
    struct jobs *jobs = arg;
    jobs->claim_soon = false;
    size_t free_slots = (size_t)jobs->opts.max_running - jobs->n_running;
    if (free_slots == 0)
        return; /* a finishing job schedules the next claim */
    size_t want = free_slots < jobs->opts.claim_batch ? free_slots : jobs->opts.claim_batch;
    struct store_job_batch batch = {0};
    struct err e = {0};
    if (store_job_claim(jobs->store, jobs->owner, clock_now_ms(), jobs->opts.lease_ms, want,
                        &batch, &e) != 0) {
        log_error("jobs", "claim failed: %s", err_text(&e));
        schedule_claim(jobs, jobs->opts.poll_ms);
        return;
    }
    size_t got = batch.n;
    for (size_t i = 0; i < batch.n; i++)
        start_job(jobs, batch.items[i]);
    store_job_batch_cleanup(&batch);
    /* A full batch means more may be waiting: claim again next turn, after the loop has
     * served what is ready (HTTP, LLM replies). */
    schedule_claim(jobs, got == want && jobs->n_running < (size_t)jobs->opts.max_running
                             ? 0
                             : jobs->opts.poll_ms);
}

static void on_renew(evutil_socket_t fd, short what, void *arg)
{
    struct jobs *jobs = arg;
    struct err e = {0};
    if (jobs->n_running > 0 &&
        store_job_renew(jobs->store, jobs->owner, clock_now_ms(), jobs->opts.lease_ms, &e) != 0)
        log_error("jobs", "lease renewal failed: %s", err_text(&e));
}

int jobs_new(struct event_base *base, struct store *store, struct llm_client *llm,
             const struct jobs_opts *opts, struct jobs **out, struct err *e)
{
    struct jobs *jobs = calloc(1, sizeof *jobs);
    *out = NULL;
    if (jobs == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    jobs->base = base;
    jobs->store = store;
    jobs->llm = llm;
    jobs->opts = *opts;
    if (jobs->opts.max_running <= 0)
        jobs->opts.max_running = JOBS_DEFAULT_MAX_RUNNING;
    if (jobs->opts.lease_ms <= 0)
        jobs->opts.lease_ms = JOBS_DEFAULT_LEASE_MS;
    if (jobs->opts.poll_ms <= 0)
        jobs->opts.poll_ms = JOBS_DEFAULT_POLL_MS;
    if (jobs->opts.claim_batch == 0)
        jobs->opts.claim_batch = JOBS_DEFAULT_CLAIM_BATCH;
    if (id_uuid4(jobs->owner) != 0) {
        free(jobs);
        return err_set(e, ERR_INTERNAL, "no randomness available for an instance id");
    }
    jobs->claim_ev = event_new(base, -1, 0, on_claim, jobs);
    jobs->renew_ev = event_new(base, -1, EV_PERSIST, on_renew, jobs);
    if (jobs->claim_ev == NULL || jobs->renew_ev == NULL) {
        jobs_free(jobs);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    *out = jobs;
    return 0;
}

void jobs_start(struct jobs *jobs)
{
    long every = jobs->opts.lease_ms / 3;
    struct timeval tv = {every / 1000, (every % 1000) * 1000};
    event_add(jobs->renew_ev, &tv);
    jobs->started = true;
    schedule_claim(jobs, 0);
}

void jobs_wake(struct jobs *jobs)
{
    if (jobs != NULL)
        schedule_claim(jobs, 0);
}

size_t jobs_running(const struct jobs *jobs)
{
    return jobs->n_running;
}

size_t jobs_llm_calls(const struct jobs *jobs)
{
    return llm_client_active(jobs->llm);
}

const char *jobs_owner(const struct jobs *jobs)
{
    return jobs->owner;
}

void jobs_free(struct jobs *jobs)
{
    if (jobs == NULL)
        return;
    size_t n = jobs->n_running;
    while (jobs->slots != NULL) {
        struct job_slot *slot = jobs->slots;
        slot_unlink(jobs, slot);
        slot_free(slot);
    }
    if (n > 0) {
        struct err e = {0};
        if (store_job_release(jobs->store, jobs->owner, &e) != 0)
            log_error("jobs", "cannot release %zu job lease(s): %s; they resume when the "
                              "leases expire", n, err_text(&e));
        else
            log_info("jobs", "%zu running job(s) released; the next start resumes them", n);
    }
    if (jobs->claim_ev)
        event_free(jobs->claim_ev);
    if (jobs->renew_ev)
        event_free(jobs->renew_ev);
    free(jobs);
}
