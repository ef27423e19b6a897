/*
 * jobs.c - see jobs.h.
 *
 * One claim statement per loop turn takes every job inserted since the last one (up to the
 * free slots), which batches the store's work under load; an idle instance costs one claim
 * query per poll. Store errors never lose a job: a run stopped by one gives its lease back
 * (the job resumes from its checkpoints), and an end the store did not take is written again
 * on a timer, the job held meanwhile (see struct job_slot).
 */
#include "jobs/jobs.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/dlist.h"
#include "core/json_text.h"
#include "core/log.h"
#include "engine/agent_step.h"
#include "engine/crew_run.h"
#include "llm/llm.h"
#include "model/job.h"
#include "model/plan.h"
#include "store/store.h"
#include "tools/runner.h"

#define JOBS_DEFAULT_MAX_RUNNING 256
#define JOBS_DEFAULT_LEASE_MS 30000
#define JOBS_DEFAULT_POLL_MS 1000
#define JOBS_DEFAULT_CLAIM_BATCH 64
#define JOBS_DEFAULT_JOB_TTL_MS (86400LL * 1000)
#define JOBS_DEFAULT_CLEANUP_MS (3600L * 1000)
/* Jobs one purge statement deletes: a few milliseconds of store work, after which the loop
 * serves what is ready before the next batch. */
#define JOBS_PURGE_BATCH 256

/*
 * A slot is one job this instance holds the lease of. It stays in the list, counted and
 * renewed, until the store has taken the job's outcome: while its run is going (RUNNING),
 * while its end is being written (FINISHING) or its lease given back (RELEASING), retried
 * on a timer when the store fails. So a job is never left running under this instance's
 * lease with nothing to finish it (renewal would keep it from everyone else).
 */
enum slot_state { SLOT_RUNNING, SLOT_FINISHING, SLOT_RELEASING };

#define RETRY_FIRST_MS 100
#define RETRY_MAX_MS 10000

struct job_slot {
    struct jobs *jobs;
    char job_id[ID_UUID_LEN];
    enum slot_state state;
    struct plan *plan;
    struct job_request *req;
    char **inline_keys; /* per agent */
    int *tool_rounds;   /* per agent: config.max_tool_iterations, -1 when not set */
    int *context_turns; /* per agent: exchanges of memory, 0 when memory is off */
    char crew_id[ID_UUID_LEN];
    long webhook_mask; /* the job's webhook's event types (STORE_EV_BIT); 0: none */
    size_t n_keys;
    struct crew_run *run;
    /* FINISHING: what to write */
    enum store_job_status final_status;
    json_t *result; /* NULL for a job that failed before running */
    char *error;
    struct event *retry_ev;
    long retry_ms;
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
    struct event *purge_ev; /* retention: finished jobs older than job_ttl_ms go */
    bool claim_soon; /* claim_ev is armed with a zero timeout */
    bool started;
    struct job_slot *slots;
    size_t n_running;
    struct agent_tools tools; /* the engine's door to the tool runner */
    /* The outcome of the last store write (for /healthz): failing since this time (epoch
     * ms), 0 while the last one succeeded. */
    long long store_failing_since_ms;
    /* Progress events (job.started, agent.started, .delta, .tool_call) wait here for the
     * end of the loop turn and go to the store together: one commit for all the jobs'
     * progress of a turn instead of one each (see flush_events). */
    struct queued_event *queue;
    size_t n_queue, cap_queue;
    struct event *flush_ev;
    /* jobs_drain: waiting for the steps in flight */
    struct event *drain_ev;
    int64_t drain_deadline_ms;
    void (*drained)(void *arg);
    void *drained_arg;
};

struct queued_event {
    char job_id[ID_UUID_LEN];
    enum store_event_type type;
    char *data;
    bool delivery; /* the job's webhook asked for the type */
    size_t order;  /* keeps a job's events in the order they came */
};

/* Records a store write's outcome. A conflict or a missing row is the store answering. */
static void note_store(struct jobs *jobs, int rc)
{
    if (rc == 0 || rc == ERR_CONFLICT || rc == ERR_NOT_FOUND)
        jobs->store_failing_since_ms = 0;
    else if (jobs->store_failing_since_ms == 0)
        jobs->store_failing_since_ms = clock_now_ms();
}

/* The engine's tool door, on the tool runner: the signatures match, the handle is the
 * runner's call. */
static int door_invoke(void *ctx, const char *name, const char *args_json, agent_tool_done_cb cb,
                       void *arg, void **handle, struct err *e)
{
    struct tool_call *call = NULL;
    int rc = tool_runner_invoke(ctx, name, args_json, cb, arg, &call, e);
    *handle = call;
    return rc;
}

static void door_cancel(void *handle)
{
    tool_call_cancel(handle);
}

static void notify(struct jobs *jobs, const char *job_id, bool delivery)
{
    if (jobs->opts.on_events != NULL)
        jobs->opts.on_events(jobs->opts.events_arg, job_id, delivery);
}

/* Whether the slot's job's webhook asked for events of `type`. */
static bool wants(const struct job_slot *slot, enum store_event_type type)
{
    return (slot->webhook_mask & STORE_EV_BIT(type)) != 0;
}

static enum store_event_type terminal_event(enum store_job_status status)
{
    return status == STORE_JOB_COMPLETED ? STORE_EV_JOB_COMPLETED
           : status == STORE_JOB_FAILED  ? STORE_EV_JOB_FAILED
                                         : STORE_EV_JOB_CANCELLED;
}

static void schedule_claim(struct jobs *jobs, long delay_ms)
{
    if (!jobs->started || jobs->claim_soon)
        return; /* a claim is due this turn: nothing sooner, and not to be put off */
    if (delay_ms == 0)
        jobs->claim_soon = true;
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
    free(slot->tool_rounds);
    free(slot->context_turns);
    json_decref(slot->result);
    free(slot->error);
    if (slot->retry_ev)
        event_free(slot->retry_ev);
    free(slot);
}

static void slot_link(struct jobs *jobs, struct job_slot *slot)
{
    DLIST_PUSH(jobs->slots, slot);
    jobs->n_running++;
}

static void slot_unlink(struct jobs *jobs, struct job_slot *slot)
{
    DLIST_REMOVE(jobs->slots, slot);
    jobs->n_running--;
}

/* The store has the job's outcome (or another instance has the job): the slot goes. */
static void slot_done(struct job_slot *slot, long claim_delay_ms)
{
    struct jobs *jobs = slot->jobs;
    slot_unlink(jobs, slot);
    slot_free(slot);
    schedule_claim(jobs, claim_delay_ms);
}

static void try_store(struct job_slot *slot);
static void flush_events(struct jobs *jobs);
static void flush_events_of(struct jobs *jobs, const char *job_id);

static void on_slot_retry(evutil_socket_t fd, short what, void *arg)
{
    try_store(arg);
}

/* The store failed: try again later, backing off, keeping the lease meanwhile. */
static void retry_later(struct job_slot *slot, const struct err *e)
{
    slot->retry_ms = slot->retry_ms == 0 ? RETRY_FIRST_MS : slot->retry_ms * 2;
    if (slot->retry_ms > RETRY_MAX_MS)
        slot->retry_ms = RETRY_MAX_MS;
    log_error("jobs", "job %s: cannot %s: %s; retrying in %ld ms", slot->job_id,
              slot->state == SLOT_FINISHING ? "record its end" : "give its lease back",
              err_text(e), slot->retry_ms);
    if (slot->retry_ev == NULL &&
        (slot->retry_ev = evtimer_new(slot->jobs->base, on_slot_retry, slot)) == NULL) {
        log_error("jobs", "job %s: out of memory arming a retry; the lease expires at the "
                          "next restart", slot->job_id);
        return;
    }
    struct timeval tv = {slot->retry_ms / 1000, (slot->retry_ms % 1000) * 1000};
    evtimer_add(slot->retry_ev, &tv);
}

/* Writes the slot's end (FINISHING) or gives its lease back (RELEASING). */
static void try_store(struct job_slot *slot)
{
    struct jobs *jobs = slot->jobs;
    struct err e = {0};
    int rc;
    if (slot->state == SLOT_RELEASING) {
        rc = store_job_release(jobs->store, jobs->owner, slot->job_id, &e);
        note_store(jobs, rc);
        if (rc != 0) {
            retry_later(slot, &e);
            return;
        }
        log_info("jobs", "job %s: lease given back; it resumes from its checkpoints",
                 slot->job_id);
        slot_done(slot, jobs->opts.poll_ms); /* not at once: the store just failed */
        return;
    }
    flush_events_of(jobs, slot->job_id); /* the job's progress comes before its end */
    char *text = slot->result ? json_dumps(slot->result, JSON_TEXT_FLAGS) : NULL;
    if (slot->result != NULL && text == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory writing the result");
        retry_later(slot, &e);
        return;
    }
    rc = store_job_finish(jobs->store, slot->job_id, jobs->owner, slot->final_status, text,
                          slot->error, clock_now_ms(), &e);
    free(text);
    note_store(jobs, rc);
    if (rc == ERR_CONFLICT || rc == ERR_NOT_FOUND) {
        /* Another instance took the job over (our lease expired), or it is gone. */
        log_warn("jobs", "job %s: %s; its end is not ours to write", slot->job_id, err_text(&e));
    } else if (rc != 0) {
        retry_later(slot, &e);
        return;
    } else {
        log_info("jobs", "job %s %s", slot->job_id, store_job_status_name(slot->final_status));
        notify(jobs, slot->job_id, wants(slot, terminal_event(slot->final_status)));
    }
    slot_done(slot, 0);
}

/* Ends the slot's job as failed with `why` (a row that cannot run). */
static void finish_failed(struct job_slot *slot, const char *why)
{
    log_error("jobs", "job %s cannot run: %s", slot->job_id, why);
    slot->state = SLOT_FINISHING;
    slot->final_status = STORE_JOB_FAILED;
    free(slot->error);
    slot->error = strdup(why);
    try_store(slot);
}

/* Gives the job back to the queue (its run could not go on because of the store or memory,
 * which may be back later): it resumes from its checkpoints. */
static void release_job(struct job_slot *slot)
{
    slot->state = SLOT_RELEASING;
    try_store(slot);
}

static int on_checkpoint(void *arg, const char *key, const json_t *data,
                         enum store_event_type ev_type, const json_t *ev_data, struct err *e)
{
    struct job_slot *slot = arg;
    flush_events_of(slot->jobs, slot->job_id); /* the step's progress comes before its end */
    char *text = json_dumps(data, JSON_TEXT_FLAGS);
    char *ev_text = json_dumps(ev_data, JSON_TEXT_FLAGS);
    int rc;
    if (text == NULL || ev_text == NULL) {
        rc = err_set(e, ERR_NOMEM, "out of memory writing step %s", key);
    } else {
        struct store_event_in ev = {.type = ev_type, .data = ev_text};
        rc = store_job_step_put(slot->jobs->store, slot->job_id, slot->jobs->owner, key, text,
                                &ev, clock_now_ms(), e);
        note_store(slot->jobs, rc);
    }
    free(text);
    free(ev_text);
    if (rc == 0) {
        log_debug("jobs", "job %s: step %s saved", slot->job_id, key);
        notify(slot->jobs, slot->job_id, wants(slot, ev_type));
    }
    return rc;
}

static int queued_cmp(const void *a, const void *b)
{
    const struct queued_event *x = a, *y = b;
    int c = strcmp(x->job_id, y->job_id);
    return c != 0 ? c : x->order < y->order ? -1 : x->order > y->order;
}

/*
 * Writes the queued progress events in one transaction, fenced on our lease per job, then
 * tells the listeners. Called at the end of a loop turn, and before any write that must come
 * after them in a job's history (a checkpoint and its event, a job's end). Best effort: events
 * of a job we no longer hold are dropped by the fence, and a store error drops the batch
 * (logged); the next checkpoint shows whether the store is back.
 */
static void flush_events(struct jobs *jobs)
{
    size_t n = jobs->n_queue;
    if (n == 0)
        return;
    struct queued_event *q = jobs->queue;
    jobs->queue = NULL;
    jobs->n_queue = jobs->cap_queue = 0;
    /* By job: PostgreSQL locks the jobs' rows in this order (store.h). */
    qsort(q, n, sizeof *q, queued_cmp);
    struct store_event_item *items = calloc(n, sizeof *items);
    struct err e = {0};
    int rc;
    if (items == NULL) {
        rc = err_set(&e, ERR_NOMEM, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++)
            items[i] = (struct store_event_item){
                .job_id = q[i].job_id, .ev = {.type = q[i].type, .data = q[i].data}};
        rc = store_event_append_batch(jobs->store, jobs->owner, items, n, clock_now_ms(), &e);
        note_store(jobs, rc);
    }
    if (rc != 0)
        log_warn("jobs", "%zu progress event(s) not recorded: %s", n, err_text(&e));
    for (size_t i = 0; i < n; i++) {
        bool last_of_job = i + 1 == n || strcmp(q[i].job_id, q[i + 1].job_id) != 0;
        if (rc == 0 && items[i].rc == 0 && last_of_job) {
            bool delivery = false;
            for (size_t k = i + 1; k-- > 0 && strcmp(q[k].job_id, q[i].job_id) == 0;)
                delivery |= q[k].delivery;
            notify(jobs, q[i].job_id, delivery);
        }
        free(q[i].data);
    }
    free(items);
    free(q);
}

/* Before a write that must come after job_id's queued events (its step's end, its own end):
 * flushes the queue if it holds any of them. Other jobs' events keep waiting for the end of
 * the turn, so that a turn with many steps finishing is still one commit of progress. */
static void flush_events_of(struct jobs *jobs, const char *job_id)
{
    for (size_t i = 0; i < jobs->n_queue; i++) {
        if (strcmp(jobs->queue[i].job_id, job_id) == 0) {
            flush_events(jobs);
            return;
        }
    }
}

static void on_flush_events(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush_events(arg);
}

/* Queues a progress event of the slot's job for the end of this loop turn. */
static void append_event(struct job_slot *slot, enum store_event_type type, const json_t *data)
{
    struct jobs *jobs = slot->jobs;
    char *text = json_dumps(data, JSON_TEXT_FLAGS);
    if (text != NULL && jobs->n_queue == jobs->cap_queue) {
        size_t cap = jobs->cap_queue ? jobs->cap_queue * 2 : 64;
        struct queued_event *q = realloc(jobs->queue, cap * sizeof *q);
        if (q == NULL) {
            free(text);
            text = NULL;
        } else {
            jobs->queue = q;
            jobs->cap_queue = cap;
        }
    }
    if (text == NULL) {
        log_warn("jobs", "job %s: event %s not recorded: out of memory", slot->job_id,
                 store_event_type_name(type));
        return;
    }
    struct queued_event *ev = &jobs->queue[jobs->n_queue];
    memcpy(ev->job_id, slot->job_id, ID_UUID_LEN);
    ev->type = type;
    ev->data = text;
    ev->delivery = wants(slot, type);
    ev->order = jobs->n_queue++;
    if (!evtimer_pending(jobs->flush_ev, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(jobs->flush_ev, &zero);
    }
}

static void on_run_event(void *arg, enum store_event_type type, const json_t *data)
{
    append_event(arg, type, data);
}

static void on_done(void *arg, int rc, enum crew_run_status status, json_t *result,
                    const char *error, const struct err *why)
{
    struct job_slot *slot = arg;
    /* The run is over: free it now (allowed from its done hook), keep the slot. */
    crew_run_free(slot->run);
    slot->run = NULL;
    if (rc == ERR_CONFLICT || rc == ERR_NOT_FOUND) {
        /* Another instance took the job over (our lease expired), or the job was ended
         * (cancelled through another instance) or deleted under us: not ours any more. */
        log_warn("jobs", "job %s: %s; run abandoned (taken over, cancelled or deleted "
                         "elsewhere)", slot->job_id, err_text(why));
        json_decref(result);
        slot_done(slot, 0);
        return;
    }
    if (rc != 0) {
        log_error("jobs", "job %s: run stopped: %s", slot->job_id, err_text(why));
        json_decref(result);
        release_job(slot);
        return;
    }
    log_debug("jobs", "job %s: crew result %s", slot->job_id, crew_run_status_name(status));
    slot->state = SLOT_FINISHING;
    slot->final_status = status == CREW_RUN_CANCELLED ? STORE_JOB_CANCELLED
                         : status == CREW_RUN_FAILED  ? STORE_JOB_FAILED
                                                      : STORE_JOB_COMPLETED;
    slot->result = result;
    slot->error = error ? strdup(error) : NULL;
    if (error != NULL && slot->error == NULL)
        log_error("jobs", "job %s: out of memory copying its error: %s", slot->job_id, error);
    try_store(slot);
}

/* What the plan does not carry from each agent's config in the definition snapshot: the
 * inline api_key (a secret: kept in memory only), max_tool_iterations, and memory (on by
 * default for a Chatbot, config.memory either way) with max_context_turns. */
static int read_agent_config(struct job_slot *slot, const char *definition, struct err *e)
{
    size_t n = slot->plan->n_agents;
    if ((slot->inline_keys = calloc(n, sizeof *slot->inline_keys)) == NULL ||
        (slot->tool_rounds = malloc(n * sizeof *slot->tool_rounds)) == NULL ||
        (slot->context_turns = calloc(n, sizeof *slot->context_turns)) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    slot->n_keys = n;
    for (size_t i = 0; i < n; i++) {
        slot->tool_rounds[i] = -1;
        if (strcmp(slot->plan->agents[i].agent_class, "Chatbot") == 0)
            slot->context_turns[i] = CREW_DEFAULT_CONTEXT_TURNS;
    }
    json_t *def = definition ? json_loads(definition, 0, NULL) : NULL;
    json_t *agents = json_object_get(def, "agents");
    int rc = 0;
    for (size_t i = 0; i < n && i < json_array_size(agents); i++) {
        const json_t *cfg = json_object_get(json_array_get(agents, i), "config");
        const json_t *memory = json_object_get(cfg, "memory");
        const json_t *turns = json_object_get(cfg, "max_context_turns");
        if (json_is_boolean(memory))
            slot->context_turns[i] = json_is_true(memory) ? CREW_DEFAULT_CONTEXT_TURNS : 0;
        if (slot->context_turns[i] > 0 && json_is_integer(turns) &&
            json_integer_value(turns) >= 1 && json_integer_value(turns) <= CREW_MAX_CONTEXT_TURNS)
            slot->context_turns[i] = (int)json_integer_value(turns);
        const json_t *rounds = json_object_get(cfg, "max_tool_iterations");
        if (json_is_integer(rounds) && json_integer_value(rounds) >= 0 &&
            json_integer_value(rounds) <= CREW_MAX_TOOL_ITERATIONS)
            slot->tool_rounds[i] = (int)json_integer_value(rounds);
        const char *k = json_string_value(json_object_get(cfg, "api_key"));
        if (k != NULL && k[0] != '\0' && (slot->inline_keys[i] = strdup(k)) == NULL) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
    }
    json_decref(def);
    return rc;
}

static struct job_slot *find_slot(const struct jobs *jobs, const char *job_id)
{
    for (struct job_slot *s = jobs->slots; s != NULL; s = s->next)
        if (strcmp(s->job_id, job_id) == 0)
            return s;
    return NULL;
}

static bool holding(const struct jobs *jobs, const char *job_id)
{
    return find_slot(jobs, job_id) != NULL;
}

/* Builds and starts the run of a claimed job. The slot is linked first, so that whatever
 * happens the job ends, goes back to the queue, or runs: never held with nothing to do. */
static void start_job(struct jobs *jobs, const struct store_job *row)
{
    struct err e = {0};
    struct store_step_list steps = {0};
    struct job_slot *slot = calloc(1, sizeof *slot);
    json_t *plan_json = NULL, *req_json = NULL;
    if (slot == NULL) {
        /* Nothing to hold it with: its lease lapses and a later claim (ours or another
         * instance's) takes it again. */
        log_error("jobs", "job %s: out of memory starting it; it waits for its lease to lapse",
                  row->job_id);
        return;
    }
    slot->jobs = jobs;
    memcpy(slot->job_id, row->job_id, ID_UUID_LEN);
    memcpy(slot->crew_id, row->crew_id, ID_UUID_LEN);
    slot->webhook_mask = row->webhook_mask;
    slot_link(jobs, slot);
    json_error_t jerr;
    plan_json = json_loads(row->plan ? row->plan : "", 0, &jerr);
    req_json = json_loads(row->request ? row->request : "", 0, &jerr);
    if (plan_json == NULL || plan_from_json(plan_json, &slot->plan, &e) != 0) {
        finish_failed(slot, "the job's stored plan does not parse");
        goto out;
    }
    if (jobs->opts.llm_policy != NULL &&
        plan_check_llm_policy(slot->plan, jobs->opts.llm_policy, &e) != 0) {
        finish_failed(slot, err_text(&e));
        goto out;
    }
    if (req_json == NULL || job_request_parse(req_json, slot->plan, &slot->req, &e) != 0) {
        char msg[ERR_MSG_MAX + 64];
        snprintf(msg, sizeof msg, "the job's stored request is invalid: %s", err_text(&e));
        finish_failed(slot, msg);
        goto out;
    }
    /* A job claimed before (its owner died or stopped) may have finished steps. */
    if (read_agent_config(slot, row->definition, &e) != 0 ||
        (row->attempts > 1 && store_job_steps_get(jobs->store, row->job_id, &steps, &e) != 0)) {
        log_error("jobs", "job %s: %s", row->job_id, err_text(&e));
        release_job(slot);
        goto out;
    }
    int64_t started_ms = clock_now_ms();
    if (row->started_at[0] != '\0')
        clock_parse_rfc3339(row->started_at, &started_ms);
    struct crew_run_env env = {.base = jobs->base,
                               .llm = jobs->llm,
                               .store = jobs->store,
                               .prices = jobs->opts.prices,
                               .tools = jobs->opts.tool_runner ? &jobs->tools : NULL,
                               .getenv_fn = jobs->opts.getenv_fn};
    struct crew_run_spec spec = {.plan = slot->plan,
                                 .req = slot->req,
                                 .inline_keys = slot->inline_keys,
                                 .tool_rounds = slot->tool_rounds,
                                 .context_turns = slot->context_turns,
                                 .crew_id = slot->crew_id,
                                 .done = &steps,
                                 .started_ms = started_ms};
    struct crew_run_hooks hooks = {
        .checkpoint = on_checkpoint, .event = on_run_event, .done = on_done, .arg = slot};
    if (crew_run_new(&env, &spec, &hooks, &slot->run, &e) != 0) {
        if (e.code == ERR_INVALID)
            finish_failed(slot, err_text(&e)); /* a stored checkpoint that does not parse */
        else
            release_job(slot);
        goto out;
    }
    if (row->attempts > 1)
        log_info("jobs", "job %s resumed (attempt %ld, %zu step(s) done)", row->job_id,
                 row->attempts, steps.n);
    json_t *started = json_pack("{s:I,s:I}", "attempt", (json_int_t)row->attempts,
                                "steps_done", (json_int_t)steps.n);
    if (started != NULL)
        append_event(slot, STORE_EV_JOB_STARTED, started);
    json_decref(started);
    crew_run_start(slot->run);
out:
    store_step_list_cleanup(&steps);
    json_decref(plan_json);
    json_decref(req_json);
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
    int rc = store_job_claim(jobs->store, jobs->owner, clock_now_ms(), jobs->opts.lease_ms,
                             want, &batch, &e);
    note_store(jobs, rc);
    if (rc != 0) {
        log_error("jobs", "claim failed: %s", err_text(&e));
        schedule_claim(jobs, jobs->opts.poll_ms);
        return;
    }
    size_t got = batch.n;
    for (size_t i = 0; i < batch.n; i++) {
        /* Our own job, claimed back because its lease lapsed while this instance was stalled
         * (a store lock, a long loop turn): the claim renewed it, the run goes on. Running it
         * twice would be invisible to the fences, which compare owners. */
        if (batch.items[i]->attempts > 1 && holding(jobs, batch.items[i]->job_id)) {
            log_warn("jobs", "job %s: lease lapsed while this instance held it; renewed",
                     batch.items[i]->job_id);
            continue;
        }
        start_job(jobs, batch.items[i]);
    }
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
    if (jobs->n_running == 0)
        return;
    int rc = store_job_renew(jobs->store, jobs->owner, clock_now_ms(), jobs->opts.lease_ms, &e);
    note_store(jobs, rc);
    if (rc != 0)
        log_error("jobs", "lease renewal failed: %s", err_text(&e));
}


/* ---- cancel, delete, retention ------------------------------------------------------------ */

int jobs_cancel(struct jobs *jobs, const char *job_id, struct err *e)
{
    /* Running here: stop the run now; its done hook writes the cancelled end (with what
     * finished) under our lease and frees the slot. */
    struct job_slot *slot = find_slot(jobs, job_id);
    if (slot != NULL && slot->state == SLOT_FINISHING)
        /* The run ended; only the store has not taken its end yet (it is retried): the job
         * is over, and its real result must not be replaced by a cancel. */
        return err_set(e, ERR_CONFLICT, "job already %s (its end is being recorded)",
                       store_job_status_name(slot->final_status));
    bool local = slot != NULL && slot->state == SLOT_RUNNING && slot->run != NULL;
    if (local) {
        log_info("jobs", "job %s: cancelling its run", job_id);
        crew_run_cancel(slot->run); /* may free the slot */
    }
    /* Pending, running on another instance, or held here with its end not yet written:
     * end it in the store. The other instance's next checkpoint or finish fails its fence
     * and it abandons the run; a slot of ours that was writing another end drops it when
     * its retry meets the cancelled row. */
    flush_events_of(jobs, job_id);
    int rc = store_job_finish(jobs->store, job_id, NULL, STORE_JOB_CANCELLED, NULL,
                              CREW_RUN_CANCEL_ERROR, clock_now_ms(), e);
    if (rc == ERR_CONFLICT && local) {
        /* Our run's done hook got there first: check that it was the cancel. */
        struct store_job *row = NULL;
        struct err e2 = {0};
        if (store_job_get(jobs->store, job_id, &row, &e2) == 0 &&
            row->status == STORE_JOB_CANCELLED) {
            *e = (struct err){0};
            rc = 0;
        }
        store_job_free(row);
    } else if (rc == 0) {
        log_info("jobs", "job %s cancelled", job_id);
        notify(jobs, job_id, true);
    }
    return rc;
}

int jobs_delete(struct jobs *jobs, const char *job_id, struct err *e)
{
    int rc = jobs_cancel(jobs, job_id, e);
    if (rc != 0 && rc != ERR_CONFLICT) /* ERR_CONFLICT: it had ended already */
        return rc;
    /* The run and its slot must be gone before the row: a slot still writing its end
     * would otherwise retry against nothing. */
    if (holding(jobs, job_id))
        return err_set(e, ERR_BUSY, "job '%s' is still being stopped; try again", job_id);
    *e = (struct err){0};
    if ((rc = store_job_delete(jobs->store, job_id, e)) == 0) {
        log_info("jobs", "job %s deleted", job_id);
        notify(jobs, job_id, false); /* its readers end */
    }
    return rc;
}

static void arm_purge(struct jobs *jobs, long delay_ms)
{
    struct timeval tv = {delay_ms / 1000, (delay_ms % 1000) * 1000};
    evtimer_add(jobs->purge_ev, &tv);
}

static void on_purge(evutil_socket_t fd, short what, void *arg)
{
    struct jobs *jobs = arg;
    struct err e = {0};
    size_t n = 0;
    int rc = store_job_purge(jobs->store, clock_now_ms() - jobs->opts.job_ttl_ms,
                             JOBS_PURGE_BATCH, &n, &e);
    note_store(jobs, rc);
    if (rc != 0) {
        log_error("jobs", "retention: cannot delete old jobs: %s", err_text(&e));
        arm_purge(jobs, jobs->opts.cleanup_interval_ms);
        return;
    }
    if (n > 0)
        log_info("jobs", "retention: %zu finished job(s) older than %lld s deleted", n,
                 jobs->opts.job_ttl_ms / 1000);
    /* A full batch means more are due: the next one after this loop turn. */
    arm_purge(jobs, n == JOBS_PURGE_BATCH ? 0 : jobs->opts.cleanup_interval_ms);
}

#define DRAIN_CHECK_MS 50

/* Whether anything of this instance's jobs is still moving: a step in flight, or an end the
 * store has not taken yet. */
static bool busy(const struct jobs *jobs)
{
    for (const struct job_slot *s = jobs->slots; s != NULL; s = s->next)
        if (s->state == SLOT_FINISHING || (s->run != NULL && crew_run_active(s->run) > 0))
            return true;
    return false;
}

static void on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct jobs *jobs = arg;
    bool over = clock_mono_ms() >= jobs->drain_deadline_ms;
    if (busy(jobs) && !over) {
        struct timeval tv = {0, DRAIN_CHECK_MS * 1000};
        evtimer_add(jobs->drain_ev, &tv);
        return;
    }
    flush_events(jobs);
    if (over && busy(jobs))
        log_info("jobs", "shutdown: grace period over with steps still in flight; they run "
                         "again at the next start");
    else
        log_info("jobs", "shutdown: no step in flight any more");
    void (*done)(void *) = jobs->drained;
    jobs->drained = NULL;
    if (done != NULL)
        done(jobs->drained_arg);
}

void jobs_drain(struct jobs *jobs, long grace_ms, void (*done)(void *arg), void *arg)
{
    jobs->started = false; /* no more claims */
    jobs->claim_soon = false;
    event_del(jobs->claim_ev);
    jobs->drained = done;
    jobs->drained_arg = arg;
    jobs->drain_deadline_ms = clock_mono_ms() + (grace_ms > 0 ? grace_ms : 0);
    size_t n = 0;
    for (struct job_slot *s = jobs->slots; s != NULL; s = s->next) {
        if (s->state == SLOT_RUNNING && s->run != NULL) {
            crew_run_drain(s->run);
            n += crew_run_active(s->run);
        }
    }
    log_info("jobs", "shutdown: %zu step(s) in flight finish within %ld ms", n,
             grace_ms > 0 ? grace_ms : 0);
    struct timeval zero = {0, 0};
    evtimer_add(jobs->drain_ev, &zero);
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
    if (jobs->opts.job_ttl_ms <= 0)
        jobs->opts.job_ttl_ms = JOBS_DEFAULT_JOB_TTL_MS;
    if (jobs->opts.cleanup_interval_ms <= 0)
        jobs->opts.cleanup_interval_ms = JOBS_DEFAULT_CLEANUP_MS;
    jobs->tools = (struct agent_tools){.invoke = door_invoke,
                                       .cancel = door_cancel,
                                       .ctx = jobs->opts.tool_runner,
                                       .registry = jobs->opts.tool_registry};
    if (id_uuid4(jobs->owner) != 0) {
        free(jobs);
        return err_set(e, ERR_INTERNAL, "no randomness available for an instance id");
    }
    jobs->claim_ev = event_new(base, -1, 0, on_claim, jobs);
    jobs->renew_ev = event_new(base, -1, EV_PERSIST, on_renew, jobs);
    jobs->purge_ev = evtimer_new(base, on_purge, jobs);
    jobs->flush_ev = evtimer_new(base, on_flush_events, jobs);
    jobs->drain_ev = evtimer_new(base, on_drain_check, jobs);
    if (jobs->claim_ev == NULL || jobs->renew_ev == NULL || jobs->purge_ev == NULL ||
        jobs->flush_ev == NULL || jobs->drain_ev == NULL) {
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
    /* The first purge after one interval: a restart does not delay retention by more. */
    arm_purge(jobs, jobs->opts.cleanup_interval_ms);
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

long long jobs_store_failing_since(const struct jobs *jobs)
{
    return jobs->store_failing_since_ms;
}

long long jobs_ttl_ms(const struct jobs *jobs)
{
    return jobs->opts.job_ttl_ms;
}

long jobs_cleanup_interval_ms(const struct jobs *jobs)
{
    return jobs->opts.cleanup_interval_ms;
}

void jobs_free(struct jobs *jobs)
{
    if (jobs == NULL)
        return;
    jobs->started = false; /* no more claims */
    flush_events(jobs);
    /* Ends already computed are written if the store takes them now; everything else goes
     * back to the queue below and resumes from its checkpoints at the next start. */
    for (struct job_slot *slot = jobs->slots, *next; slot != NULL; slot = next) {
        next = slot->next;
        if (slot->state == SLOT_FINISHING)
            try_store(slot); /* frees the slot when the store took it */
    }
    size_t n = jobs->n_running;
    while (jobs->slots != NULL) {
        struct job_slot *slot = jobs->slots;
        slot_unlink(jobs, slot);
        slot_free(slot);
    }
    if (n > 0) {
        struct err e = {0};
        if (store_job_release(jobs->store, jobs->owner, NULL, &e) != 0)
            log_error("jobs", "cannot release %zu job lease(s): %s; they resume when the "
                              "leases expire", n, err_text(&e));
        else
            log_info("jobs", "%zu running job(s) released; the next start resumes them", n);
    }
    if (jobs->claim_ev)
        event_free(jobs->claim_ev);
    if (jobs->renew_ev)
        event_free(jobs->renew_ev);
    if (jobs->purge_ev)
        event_free(jobs->purge_ev);
    if (jobs->flush_ev)
        event_free(jobs->flush_ev);
    if (jobs->drain_ev)
        event_free(jobs->drain_ev);
    free(jobs->queue); /* empty: flushed above, and freeing runs queues nothing */
    free(jobs);
}
