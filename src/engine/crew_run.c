/*
 * crew_run.c - see crew_run.h.
 *
 * The heart is advance(): it looks at what is done and starts what the mode allows, in a
 * loop, because a step can finish at once (replayed from a checkpoint, or failed before any
 * call, e.g. no API key) and unblock the next. LLM completions call back into on_llm_done,
 * which checkpoints the step, applies it to the state, and calls advance() again. The done
 * hook is the last thing advance() does: the hook may free the run.
 *
 * Records: each finished step is one JSON object (the checkpoint), and the CrewResult is
 * built from the records alone, so a resumed run and an uninterrupted one give the same
 * result for the same steps.
 */
#include "engine/crew_run.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/dlist.h"
#include "core/log.h"
#include "core/utf8.h"
#include "engine/agent_step.h"
#include "engine/prompt.h"
#include "llm/llm.h"
#include "llm/price.h"
#include "llm/provider.h"
#include "model/job.h"
#include "model/plan.h"
#include "store/store.h"

#define ERROR_SUMMARY_MAX 1000

/* Streamed text is gathered per step and reported at most this often: an event per token
 * would be a store write per token. */
#define DELTA_FLUSH_MS 50

enum step_kind { STEP_AGENT, STEP_JUDGE, STEP_SYNTH };

enum agent_status { AGENT_IDLE = 0, AGENT_RUNNING, AGENT_DONE, AGENT_FAILED, AGENT_SKIPPED };

struct step {
    struct crew_run *run;
    enum step_kind kind;
    size_t agent; /* plan index; for judge/synthesis, the agent whose LLM is used */
    long pass;    /* loop pass (1-based), else 0 */
    size_t pos;   /* position in the loop sequence */
    char key[64];
    char *input;
    const char *provider, *model; /* borrowed from the plan, or model_buf */
    char model_buf[256];
    int64_t t0_ms;
    struct agent_step *as; /* in flight */
    int memory_turns;      /* > 0: an agent step with conversation memory (exchanges kept) */
    struct step *prev, *next; /* the run's list of steps in flight */
    char *delta;              /* streamed text not yet reported */
    size_t delta_len, delta_cap;
};

struct crew_run {
    struct crew_run_env env;
    struct crew_run_spec spec;
    struct crew_run_hooks hooks;
    const struct plan *plan;
    const struct job_request *req;
    json_t *replay; /* key -> record of an earlier run */
    struct event *kick;
    struct event *deadline; /* the job's timeout */
    struct event *delta_flush; /* reports the steps' streamed text (DELTA_FLUSH_MS) */
    bool timed_out;
    bool cancelled; /* crew_run_cancel: ends like a timeout, reported as cancelled */
    bool halted; /* timed out and a step that would need a call was reached, or steps in
                    flight were cut off (they never finish, so nothing after them can run) */
    bool draining; /* crew_run_drain: nothing more starts, the run never reports */
    struct step *active;
    size_t n_active;
    bool finished; /* done hook called (or about to be) */
    bool abandoned;
    struct err abandon_err;

    /* per agent (plan order): status and the latest record */
    enum agent_status *status;
    json_t **rec;
    size_t next; /* sequential/parallel: next agent to start */

    /* loop */
    size_t *seq;
    size_t n_seq;
    long pass;
    size_t pos;
    bool judging;
    bool loop_over;
    json_t *passes; /* array of arrays of records */
    json_t *judges; /* array of judge records */
    const char *stop_reason;

    /* synthesis */
    bool synth_started, synth_done;
    json_t *synth;

    size_t replayed;
};

const char *crew_run_status_name(enum crew_run_status s)
{
    switch (s) {
    case CREW_RUN_COMPLETED:
        return "completed";
    case CREW_RUN_PARTIAL:
        return "partial";
    case CREW_RUN_FAILED:
        return "failed";
    case CREW_RUN_CANCELLED:
        return "cancelled";
    }
    return "failed";
}

static void advance(struct crew_run *run);
static void on_deadline(evutil_socket_t fd, short what, void *arg);

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    advance(arg);
}

/* The text an agent is given as "the query": its own entry of a query object, else the
 * query. */
static const char *task_of(const struct crew_run *run, size_t i)
{
    return run->req->agent_query[i] ? run->req->agent_query[i] : run->req->query_text;
}

static const char *rec_str(const json_t *rec, const char *key)
{
    const char *s = json_string_value(json_object_get(rec, key));
    return s ? s : "";
}

/* What an agent passes on: its output, or when it failed its error text (API.md: a failed
 * agent's error becomes the next input). */
static const char *rec_passed_on(const json_t *rec)
{
    if (json_is_true(json_object_get(rec, "success")))
        return rec_str(rec, "output");
    return rec_str(rec, "error");
}

/* ---- building requests ---------------------------------------------------------------- */

static const char *agent_key_value(const struct crew_run *run, size_t i)
{
    const struct plan_agent *a = &run->plan->agents[i];
    if (run->spec.inline_keys != NULL && run->spec.inline_keys[i] != NULL)
        return run->spec.inline_keys[i];
    if (a->api_key_env != NULL && run->env.getenv_fn != NULL) {
        const char *v = run->env.getenv_fn(a->api_key_env);
        if (v != NULL && v[0] != '\0')
            return v;
    }
    return NULL;
}

static void step_free(struct step *s)
{
    if (s == NULL)
        return;
    free(s->input);
    free(s->delta);
    free(s);
}

/* ---- progress events ------------------------------------------------------------------- */

/* The fields every event of step `s` carries: {"step", "agent"} (agent null for the judge
 * and the synthesis, which are no agent of the crew). NULL when out of memory. */
static json_t *step_event(const struct step *s)
{
    const char *agent = s->kind == STEP_AGENT ? s->run->plan->agents[s->agent].key : NULL;
    json_t *d = json_pack("{s:s,s:s?}", "step", s->key, "agent", agent);
    if (d != NULL && s->pass > 0)
        json_object_set_new(d, "pass", json_integer(s->pass));
    return d;
}

static void emit(struct crew_run *run, enum store_event_type type, json_t *data)
{
    if (data != NULL && run->hooks.event != NULL)
        run->hooks.event(run->hooks.arg, type, data);
    json_decref(data);
}

/* Reports the streamed text `s` holds, as one agent.delta. */
static void flush_delta(struct step *s)
{
    if (s->delta_len == 0)
        return;
    json_t *d = step_event(s);
    if (d != NULL)
        json_object_set_new(d, "text", json_stringn(s->delta, s->delta_len));
    s->delta_len = 0;
    emit(s->run, STORE_EV_AGENT_DELTA, d);
}

static void on_delta_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct crew_run *run = arg;
    for (struct step *s = run->active; s != NULL; s = s->next)
        flush_delta(s);
}

static void on_step_delta(void *arg, const char *text, size_t len)
{
    struct step *s = arg;
    if (len == 0)
        return;
    if (s->delta_len + len > s->delta_cap) {
        size_t cap = s->delta_cap ? s->delta_cap : 256;
        while (cap < s->delta_len + len)
            cap *= 2;
        char *d = realloc(s->delta, cap);
        if (d == NULL)
            return; /* progress only: the answer itself is kept by the LLM client */
        s->delta = d;
        s->delta_cap = cap;
    }
    memcpy(s->delta + s->delta_len, text, len);
    s->delta_len += len;
    if (!evtimer_pending(s->run->delta_flush, NULL)) {
        struct timeval tv = {0, DELTA_FLUSH_MS * 1000};
        evtimer_add(s->run->delta_flush, &tv);
    }
}

static void on_step_tool_call(void *arg, const json_t *entry)
{
    struct step *s = arg;
    flush_delta(s); /* the text the model streamed before it asked for the tool */
    json_t *d = step_event(s);
    if (d != NULL)
        json_object_update(d, (json_t *)entry);
    emit(s->run, STORE_EV_AGENT_TOOL_CALL, d);
}

/* The event a finished step is checkpointed with: agent.completed {output, execution_time,
 * usage, llm_calls} or agent.failed {error, execution_time}. NULL when out of memory. */
static json_t *step_end_event(const struct step *s, const json_t *rec, bool *ok)
{
    *ok = json_is_true(json_object_get(rec, "success"));
    json_t *d = step_event(s);
    if (d == NULL)
        return NULL;
    static const char *const ok_fields[] = {"output", "execution_time", "usage", "llm_calls"};
    static const char *const fail_fields[] = {"error", "execution_time"};
    const char *const *f = *ok ? ok_fields : fail_fields;
    size_t n = *ok ? 4 : 2;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_object_get(rec, f[i]);
        if (v != NULL)
            json_object_set(d, f[i], v);
    }
    return d;
}

static void active_add(struct crew_run *run, struct step *s)
{
    DLIST_PUSH(run->active, s);
    run->n_active++;
}

static void active_remove(struct crew_run *run, struct step *s)
{
    DLIST_REMOVE(run->active, s);
    run->n_active--;
}

static json_t *usage_json(const struct llm_usage *u)
{
    return json_pack("{s:I,s:I,s:I,s:I,s:I}", "prompt_tokens", (json_int_t)u->prompt_tokens,
                     "completion_tokens", (json_int_t)u->completion_tokens, "total_tokens",
                     (json_int_t)u->total_tokens, "cached_tokens", (json_int_t)u->cached_tokens,
                     "reasoning_tokens", (json_int_t)u->reasoning_tokens);
}

/* The record of a finished step: res->rc 0 is a success with res->text. Takes the result's
 * tool calls. */
static json_t *make_record(const struct step *s, struct agent_step_result *res)
{
    const struct crew_run *run = s->run;
    const struct plan_agent *a = &run->plan->agents[s->agent];
    double secs = (double)(clock_mono_ms() - s->t0_ms) / 1000.0;
    bool ok = res->rc == 0;
    json_t *tools = res->tool_calls ? res->tool_calls : json_array();
    res->tool_calls = NULL;
    json_t *usage = usage_json(&res->usage);
    double usd;
    if (usage != NULL && llm_prices_cost(run->env.prices, s->provider, s->model, &res->usage, &usd))
        json_object_set_new(usage, "cost", json_real(usd));
    json_t *r = json_pack("{s:s,s:s,s:I,s:s,s:s?,s:s?,s:b,s:f,s:o,s:I,s:I,s:s,s:s,s:o}",
                          "agent_key", a->key, "agent_id", a->agent_id, "agent_index",
                          (json_int_t)s->agent, "input", s->input ? s->input : "", "output",
                          ok ? (res->text ? res->text : "") : NULL, "error",
                          ok ? NULL : err_text(&res->err), "success", ok, "execution_time",
                          secs < 0 ? 0.0 : secs, "usage", usage, "llm_calls",
                          (json_int_t)res->llm_calls, "attempts", (json_int_t)res->attempts,
                          "llm_provider", s->provider, "model", s->model, "tool_calls", tools);
    if (r == NULL)
        return NULL;
    if (s->pass > 0)
        json_object_set_new(r, "pass", json_integer(s->pass));
    if (s->kind == STEP_JUDGE) {
        int yes = ok ? prompt_judge_says_yes(res->text) : 0;
        json_object_set_new(r, "yes", json_boolean(yes));
    }
    return r;
}

/* The record of a step that failed before any LLM call. */
static json_t *failed_record(const struct step *s, const char *why)
{
    struct agent_step_result res = {.rc = ERR_INVALID};
    err_set(&res.err, ERR_INVALID, "%s", why);
    return make_record(s, &res);
}

/* ---- applying a finished step --------------------------------------------------------- */

static int parse_step_key(const char *key, enum step_kind *kind, long *pass, size_t *idx)
{
    long a = 0, b = 0;
    int n = 0;
    if (strcmp(key, "synthesis") == 0) {
        *kind = STEP_SYNTH;
        return 0;
    }
    if (sscanf(key, "agent:%ld%n", &a, &n) == 1 && key[n] == '\0' && a >= 0) {
        *kind = STEP_AGENT;
        *pass = 0;
        *idx = (size_t)a;
        return 0;
    }
    if (sscanf(key, "loop:%ld:%ld%n", &a, &b, &n) == 2 && key[n] == '\0' && a > 0 && b >= 0) {
        *kind = STEP_AGENT;
        *pass = a;
        *idx = (size_t)b;
        return 0;
    }
    if (sscanf(key, "judge:%ld%n", &a, &n) == 1 && key[n] == '\0' && a > 0) {
        *kind = STEP_JUDGE;
        *pass = a;
        return 0;
    }
    return -1;
}

/* Takes `rec` (stolen) as the outcome of the step identified by kind/agent/pass. */
static void apply_record(struct crew_run *run, enum step_kind kind, size_t agent, long pass,
                         json_t *rec)
{
    bool ok = json_is_true(json_object_get(rec, "success"));
    if (kind == STEP_SYNTH) {
        json_decref(run->synth);
        run->synth = rec;
        run->synth_done = true;
        return;
    }
    if (kind == STEP_JUDGE) {
        json_array_append(run->judges, rec);
        bool yes = ok && json_is_true(json_object_get(rec, "yes"));
        run->judging = false;
        if (!ok) {
            run->loop_over = true;
            run->stop_reason = "condition_check_failed";
        } else if (yes) {
            run->loop_over = true;
            run->stop_reason = "condition_met";
        } else {
            run->pass++;
            run->pos = 0;
        }
        json_decref(rec);
        return;
    }
    run->status[agent] = ok ? AGENT_DONE : AGENT_FAILED;
    json_decref(run->rec[agent]);
    run->rec[agent] = json_incref(rec);
    if (pass > 0) {
        while (json_array_size(run->passes) < (size_t)pass)
            json_array_append_new(run->passes, json_array());
        json_array_append(json_array_get(run->passes, (size_t)pass - 1), rec);
        run->pos++;
    }
    json_decref(rec);
}

/* Abandons the run: cancels everything in flight; advance() reports it. */
static void abandon(struct crew_run *run, const struct err *e)
{
    if (run->abandoned)
        return;
    run->abandoned = true;
    run->abandon_err = *e;
    while (run->active != NULL) {
        struct step *s = run->active;
        active_remove(run, s);
        agent_step_cancel(s->as);
        step_free(s);
    }
}

/* A step is over (from the LLM, or at once). Checkpoints, then applies. */
/* Returns true when the step was checkpointed and applied. */
static bool finish_step(struct step *s, json_t *rec)
{
    struct crew_run *run = s->run;
    struct err e = {0};
    if (rec == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory recording step %s", s->key);
        abandon(run, &e);
        step_free(s);
        return false;
    }
    bool ok;
    json_t *ev = step_end_event(s, rec, &ok);
    if (ev == NULL) {
        json_decref(rec);
        err_set(&e, ERR_NOMEM, "out of memory recording step %s", s->key);
        abandon(run, &e);
        step_free(s);
        return false;
    }
    int rc = run->hooks.checkpoint(run->hooks.arg, s->key, rec,
                                   ok ? STORE_EV_AGENT_COMPLETED : STORE_EV_AGENT_FAILED, ev, &e);
    json_decref(ev);
    if (rc != 0) {
        json_decref(rec);
        abandon(run, &e);
        step_free(s);
        return false;
    }
    apply_record(run, s->kind, s->agent, s->pass, rec);
    step_free(s);
    return true;
}

/* An exchange of a step with memory goes to the conversation, after its checkpoint: a crash
 * in between loses that exchange from the memory, never doubles it. A store error costs the
 * memory, not the job. */
static void remember(struct crew_run *run, size_t agent, char *input, char *answer, int keep)
{
    const struct plan_agent *a = &run->plan->agents[agent];
    char user[] = "user", assistant[] = "assistant";
    struct store_turn turns[2] = {{.role = user, .content = input},
                                  {.role = assistant, .content = answer}};
    struct err e = {0};
    if (store_memory_append(run->env.store, run->spec.crew_id, a->key, run->req->user_id,
                            run->req->session_id, turns, 2, (size_t)keep * 2, clock_now_ms(),
                            &e) != 0)
        log_warn("engine", "agent %s: conversation memory not saved: %s", a->key, err_text(&e));
}

static void on_agent_done(void *arg, struct agent_step_result *res)
{
    struct step *s = arg;
    struct crew_run *run = s->run;
    s->as = NULL; /* the agent step frees itself after this callback */
    active_remove(run, s);
    flush_delta(s); /* its streamed text comes before its end */
    /* What memory needs outlives the step, which finish_step frees. */
    size_t agent = s->agent;
    int keep = s->memory_turns;
    char *input = NULL, *answer = NULL;
    if (keep > 0 && res->rc == 0 && res->text != NULL) {
        input = strdup(s->input ? s->input : "");
        answer = strdup(res->text);
    }
    if (finish_step(s, make_record(s, res)) && input != NULL && answer != NULL)
        remember(run, agent, input, answer, keep);
    free(input);
    free(answer);
    advance(run);
}

/*
 * Starts step `s` (taking it): replayed from a checkpoint if there is one, failed at once if
 * it cannot be sent, else an LLM call. Returns true if it finished synchronously.
 */
static bool start_step(struct crew_run *run, struct step *s, const char *system_prompt,
                       const char *api_key, const char *key_env, const char *base_url,
                       double temperature, long max_tokens, long timeout_ms,
                       char *const *tools, size_t n_tools, int tool_rounds,
                       const struct llm_message *history, size_t n_history)
{
    json_t *old = json_object_get(run->replay, s->key);
    if (old != NULL) {
        json_incref(old);
        json_object_del(run->replay, s->key);
        run->replayed++;
        apply_record(run, s->kind, s->agent, s->pass, old);
        step_free(s);
        return true;
    }
    if (run->timed_out) {
        run->halted = true;
        step_free(s);
        return false;
    }
    s->t0_ms = clock_mono_ms();
    if (s->input == NULL) {
        finish_step(s, NULL);
        return true;
    }
    /* A provider's own endpoint without a key can only answer 401: say what to set. (A
     * base_url may be a local server that needs none.) */
    if (api_key == NULL && base_url == NULL && key_env != NULL) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "no API key for provider '%s': set %s in crewd's environment, or name "
                 "another variable in config.api_key_env",
                 s->provider, key_env);
        finish_step(s, failed_record(s, msg));
        return true;
    }
    struct agent_step_params p = {
        .llm = run->env.llm,
        .tools = run->env.tools,
        .provider = s->provider,
        .model = s->model,
        .base_url = base_url,
        .api_key = api_key,
        .system_prompt = system_prompt,
        .history = history,
        .n_history = n_history,
        .input = s->input,
        .tool_names = tools,
        .n_tool_names = n_tools,
        .max_tool_rounds = tool_rounds,
        .temperature = temperature,
        .max_tokens = max_tokens,
        .timeout_ms = timeout_ms,
        .stream = run->req->stream,
        .on_delta = on_step_delta,
        .on_tool_call = on_step_tool_call,
    };
    struct err e = {0};
    if (agent_step_start(&p, on_agent_done, s, &s->as, &e) != 0) {
        finish_step(s, failed_record(s, err_text(&e)));
        return true;
    }
    active_add(run, s);
    emit(run, STORE_EV_AGENT_STARTED, step_event(s));
    return false;
}

static struct step *step_new(struct crew_run *run, enum step_kind kind, size_t agent, long pass,
                             size_t pos, char *input)
{
    struct step *s = calloc(1, sizeof *s);
    if (s == NULL) {
        free(input);
        return NULL;
    }
    s->run = run;
    s->kind = kind;
    s->agent = agent;
    s->pass = pass;
    s->pos = pos;
    s->input = input;
    s->provider = run->plan->agents[agent].provider;
    s->model = run->plan->agents[agent].model;
    switch (kind) {
    case STEP_AGENT:
        if (pass > 0)
            snprintf(s->key, sizeof s->key, "loop:%ld:%zu", pass, pos);
        else
            snprintf(s->key, sizeof s->key, "agent:%zu", agent);
        break;
    case STEP_JUDGE:
        snprintf(s->key, sizeof s->key, "judge:%ld", pass);
        break;
    case STEP_SYNTH:
        snprintf(s->key, sizeof s->key, "synthesis");
        break;
    }
    return s;
}

/* An agent step with the agent's own LLM settings. Returns true if it finished at once. */
static bool start_agent(struct crew_run *run, size_t i, long pass, size_t pos, char *input)
{
    const struct plan_agent *a = &run->plan->agents[i];
    struct step *s = step_new(run, STEP_AGENT, i, pass, pos, input);
    if (s == NULL) {
        struct err e;
        err_set(&e, ERR_NOMEM, "out of memory starting agent %s", a->key);
        abandon(run, &e);
        return true;
    }
    run->status[i] = AGENT_RUNNING;
    const struct job_request *r = run->req;
    double temp = r->temperature >= 0   ? r->temperature
                  : a->temperature >= 0 ? a->temperature
                                        : JOB_DEFAULT_TEMPERATURE;
    long max_tokens = r->max_tokens > 0   ? r->max_tokens
                      : a->max_tokens > 0 ? a->max_tokens
                                          : JOB_DEFAULT_MAX_TOKENS;
    int rounds = run->spec.tool_rounds != NULL && run->spec.tool_rounds[i] >= 0
                     ? run->spec.tool_rounds[i]
                     : CREW_DEFAULT_TOOL_ITERATIONS;
    /* Conversation memory: the agent's earlier exchanges in this (crew, user, session) come
     * before its input. A replayed step needs none. */
    struct store_turn_list mem = {0};
    struct llm_message *history = NULL;
    size_t n_history = 0;
    /* Only a caller who names a user or a session has a conversation: without either, every
     * caller of the crew would share one, and read each other's exchanges. */
    int keep = run->spec.context_turns != NULL && (r->user_id != NULL || r->session_id != NULL)
                   ? run->spec.context_turns[i]
                   : 0;
    if (keep > 0 && run->env.store != NULL && run->spec.crew_id != NULL &&
        json_object_get(run->replay, s->key) == NULL) {
        struct err e = {0};
        s->memory_turns = keep;
        if (store_memory_get(run->env.store, run->spec.crew_id, a->key, r->user_id,
                             r->session_id, (size_t)keep * 2, &mem, &e) != 0)
            log_warn("engine", "agent %s: conversation memory not read: %s", a->key,
                     err_text(&e));
        else if (mem.n > 0 && (history = calloc(mem.n, sizeof *history)) != NULL) {
            for (size_t k = 0; k < mem.n; k++)
                history[n_history++] = (struct llm_message){
                    .role = strcmp(mem.items[k].role, "assistant") == 0 ? LLM_ROLE_ASSISTANT
                                                                        : LLM_ROLE_USER,
                    .content = mem.items[k].content};
        }
    }
    bool done = start_step(run, s, a->system_prompt, agent_key_value(run, i), a->api_key_env,
                           a->base_url, temp, max_tokens,
                           a->timeout_s > 0 ? (long)(a->timeout_s * 1000) : 0, a->tools,
                           a->n_tools, rounds, history, n_history);
    free(history);
    store_turn_list_cleanup(&mem);
    return done;
}

/* The judge or synthesis call: the first agent's LLM (the judge's may be named by
 * kwargs.condition_llm), without the agent's system prompt. */
static bool start_aux(struct crew_run *run, enum step_kind kind, long pass, char *input)
{
    const struct plan_agent *a = &run->plan->agents[0];
    struct step *s = step_new(run, kind, 0, pass, 0, input);
    if (s == NULL) {
        struct err e;
        err_set(&e, ERR_NOMEM, "out of memory starting the %s call",
                kind == STEP_JUDGE ? "condition" : "synthesis");
        abandon(run, &e);
        return true;
    }
    const char *key = agent_key_value(run, 0);
    const char *key_env = a->api_key_env;
    const char *base_url = a->base_url;
    if (kind == STEP_JUDGE && run->req->condition_llm != NULL) {
        struct llm_choice choice = {.llm = run->req->condition_llm};
        struct llm_resolved res;
        struct err e = {0};
        if (llm_resolve(&choice, a->provider, &res, &e) == 0) {
            s->provider = res.provider->name;
            memcpy(s->model_buf, res.model, sizeof s->model_buf);
            s->model = s->model_buf;
            if (strcmp(res.provider->name, a->provider) != 0) {
                /* Another provider: its own endpoint and key variable. */
                base_url = NULL;
                key_env = res.provider->api_key_env;
                key = key_env && run->env.getenv_fn ? run->env.getenv_fn(key_env) : NULL;
                if (key != NULL && key[0] == '\0')
                    key = NULL;
            }
        }
    }
    double temp = kind == STEP_JUDGE ? 0.0
                  : run->req->temperature >= 0 ? run->req->temperature
                  : a->temperature >= 0        ? a->temperature
                                               : JOB_DEFAULT_TEMPERATURE;
    long max_tokens = kind == STEP_JUDGE ? 16
                      : run->req->max_tokens > 0 ? run->req->max_tokens
                      : a->max_tokens > 0        ? a->max_tokens
                                                 : JOB_DEFAULT_MAX_TOKENS;
    return start_step(run, s, kind == STEP_JUDGE ? PROMPT_JUDGE_SYSTEM : NULL, key, key_env,
                      base_url, temp, max_tokens,
                      a->timeout_s > 0 ? (long)(a->timeout_s * 1000) : 0, NULL, 0, 0, NULL,
                      0);
}

/* ---- the modes ------------------------------------------------------------------------- */

static bool step_sequential(struct crew_run *run)
{
    size_t n = run->plan->n_agents;
    if (run->n_active > 0 || run->next >= n)
        return false;
    size_t i = run->next++;
    char *input;
    if (i == 0) {
        input = strdup(task_of(run, 0));
    } else {
        struct prompt_prior *prior = calloc(i, sizeof *prior);
        if (prior == NULL)
            input = NULL;
        else {
            for (size_t k = 0; k < i; k++)
                prior[k] = (struct prompt_prior){run->plan->agents[k].key,
                                                 rec_passed_on(run->rec[k])};
            input = prompt_sequential(task_of(run, i), prior, i);
            free(prior);
        }
    }
    start_agent(run, i, 0, 0, input);
    return true;
}

static bool step_parallel(struct crew_run *run)
{
    size_t n = run->plan->n_agents;
    if (run->next >= n || run->n_active >= (size_t)run->plan->max_parallel_tasks)
        return false;
    size_t i = run->next++;
    start_agent(run, i, 0, 0, strdup(task_of(run, i)));
    return true;
}

static bool step_flow(struct crew_run *run)
{
    const struct plan *p = run->plan;
    for (size_t k = 0; k < p->n_agents; k++) {
        size_t i = p->order[k];
        if (run->status[i] != AGENT_IDLE)
            continue;
        const struct plan_agent *a = &p->agents[i];
        bool ready = true, doomed = false;
        for (size_t j = 0; j < a->n_preds; j++) {
            enum agent_status ps = run->status[a->preds[j]];
            if (ps == AGENT_FAILED || ps == AGENT_SKIPPED)
                doomed = true;
            else if (ps != AGENT_DONE)
                ready = false;
        }
        if (doomed) {
            /* A failed agent's descendants are skipped; the rest of the graph runs on. */
            run->status[i] = AGENT_SKIPPED;
            return true;
        }
        if (!ready || run->n_active >= (size_t)p->max_parallel_tasks)
            continue;
        char *input;
        if (a->n_preds == 0) {
            input = strdup(task_of(run, i));
        } else {
            struct prompt_prior *src = calloc(a->n_preds, sizeof *src);
            if (src == NULL)
                input = NULL;
            else {
                for (size_t j = 0; j < a->n_preds; j++)
                    src[j] = (struct prompt_prior){p->agents[a->preds[j]].key,
                                                   rec_str(run->rec[a->preds[j]], "output")};
                input = prompt_flow(task_of(run, i), src, a->n_preds);
                free(src);
            }
        }
        start_agent(run, i, 0, 0, input);
        return true;
    }
    return false;
}

/* The records of loop pass `pass` so far. */
static json_t *pass_records(const struct crew_run *run, long pass)
{
    return json_array_get(run->passes, (size_t)pass - 1);
}

static const char *loop_last_output(const struct crew_run *run)
{
    for (long p = run->pass; p >= 1; p--) {
        json_t *recs = pass_records(run, p);
        size_t n = json_array_size(recs);
        if (n > 0)
            return rec_passed_on(json_array_get(recs, n - 1));
    }
    return "";
}

static bool step_loop(struct crew_run *run)
{
    if (run->n_active > 0 || run->loop_over || run->judging)
        return false;
    if (run->pos < run->n_seq) {
        size_t i = run->seq[run->pos];
        char *input;
        if (run->pos == 0) {
            input = run->pass == 1 ? strdup(task_of(run, i))
                                   : prompt_loop_next(task_of(run, i), run->pass - 1,
                                                      loop_last_output(run));
        } else {
            json_t *recs = pass_records(run, run->pass);
            size_t n = json_array_size(recs);
            struct prompt_prior *prior = calloc(n ? n : 1, sizeof *prior);
            if (prior == NULL)
                input = NULL;
            else {
                for (size_t k = 0; k < n; k++) {
                    json_t *r = json_array_get(recs, k);
                    prior[k] = (struct prompt_prior){rec_str(r, "agent_key"), rec_passed_on(r)};
                }
                input = prompt_sequential(task_of(run, i), prior, n);
                free(prior);
            }
        }
        start_agent(run, i, run->pass, run->pos, input);
        return true;
    }
    /* A pass is over. */
    if (run->pass >= run->req->max_iterations) {
        run->loop_over = true;
        run->stop_reason = "max_iterations";
        return true;
    }
    run->judging = true;
    start_aux(run, STEP_JUDGE, run->pass,
              prompt_judge(run->req->condition, loop_last_output(run)));
    return true;
}

static bool mode_over(const struct crew_run *run)
{
    if (run->n_active > 0)
        return false;
    switch (run->req->mode) {
    case CREW_MODE_SEQUENTIAL:
    case CREW_MODE_PARALLEL:
        return run->next >= run->plan->n_agents;
    case CREW_MODE_FLOW:
        for (size_t i = 0; i < run->plan->n_agents; i++)
            if (run->status[i] == AGENT_IDLE || run->status[i] == AGENT_RUNNING)
                return false;
        return true;
    case CREW_MODE_LOOP:
        return run->loop_over;
    }
    return true;
}

/* ---- the result ------------------------------------------------------------------------- */

/* A usage object with every counter at 0. */
static json_t *usage_zero(void)
{
    return json_pack("{s:i,s:i,s:i,s:i,s:i,s:i}", "prompt_tokens", 0, "completion_tokens", 0,
                     "total_tokens", 0, "cached_tokens", 0, "reasoning_tokens", 0, "llm_calls",
                     0);
}

static void add_usage(json_t *total, const json_t *rec)
{
    const json_t *u = json_object_get(rec, "usage");
    static const char *const fields[] = {"prompt_tokens", "completion_tokens", "total_tokens",
                                         "cached_tokens", "reasoning_tokens"};
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
        json_int_t v = json_integer_value(json_object_get(total, fields[k])) +
                       json_integer_value(json_object_get(u, fields[k]));
        json_object_set_new(total, fields[k], json_integer(v));
    }
    json_int_t calls = json_integer_value(json_object_get(total, "llm_calls")) +
                       json_integer_value(json_object_get(rec, "llm_calls"));
    json_object_set_new(total, "llm_calls", json_integer(calls));
    const json_t *cost = json_object_get(u, "cost");
    if (json_is_number(cost)) /* present once any priced call is in the sum */
        json_object_set_new(total, "cost", json_real(json_number_value(json_object_get(total,
                                                                                   "cost")) +
                                                     json_number_value(cost)));
}

/* The records that make the result, in a stable order: agents in definition order, or
 * loop passes in sequence order. */
static json_t *ordered_records(const struct crew_run *run)
{
    json_t *all = json_array();
    if (run->req->mode == CREW_MODE_LOOP) {
        size_t p;
        json_t *recs;
        json_array_foreach(run->passes, p, recs) json_array_extend(all, recs);
    } else {
        for (size_t i = 0; i < run->plan->n_agents; i++)
            if (run->rec[i] != NULL)
                json_array_append(all, run->rec[i]);
    }
    return all;
}

/* The outputs the final output and the synthesis are made of. */
static json_t *final_outputs(const struct crew_run *run)
{
    json_t *outs = json_array(); /* of [key, output] */
    const struct plan *p = run->plan;
    switch (run->req->mode) {
    case CREW_MODE_SEQUENTIAL:
        /* the last output that succeeded (a failed last agent shows in status and errors) */
        for (size_t i = p->n_agents; i-- > 0;)
            if (run->status[i] == AGENT_DONE) {
                json_array_append_new(outs, json_pack("[ss]", p->agents[i].key,
                                                      rec_str(run->rec[i], "output")));
                break;
            }
        break;
    case CREW_MODE_PARALLEL:
        for (size_t i = 0; i < p->n_agents; i++)
            if (run->status[i] == AGENT_DONE)
                json_array_append_new(outs, json_pack("[ss]", p->agents[i].key,
                                                      rec_str(run->rec[i], "output")));
        break;
    case CREW_MODE_FLOW:
        for (size_t k = 0; k < p->n_finals; k++) {
            size_t i = p->finals[k];
            if (run->status[i] == AGENT_DONE)
                json_array_append_new(outs, json_pack("[ss]", p->agents[i].key,
                                                      rec_str(run->rec[i], "output")));
        }
        break;
    case CREW_MODE_LOOP: {
        json_t *recs = pass_records(run, run->pass);
        for (size_t n = json_array_size(recs); n-- > 0;) {
            json_t *r = json_array_get(recs, n);
            if (json_is_true(json_object_get(r, "success"))) {
                json_array_append_new(outs, json_pack("[ss]", rec_str(r, "agent_key"),
                                                      rec_str(r, "output")));
                break;
            }
        }
        break;
    }
    }
    return outs;
}

/* Every completed agent's output, for the synthesis call: definition order, or the last
 * pass in sequence order. */
static struct prompt_prior *synthesis_inputs(const struct crew_run *run, size_t *n)
{
    const struct plan *p = run->plan;
    struct prompt_prior *out = calloc(p->n_agents + run->n_seq + 1, sizeof *out);
    *n = 0;
    if (out == NULL)
        return NULL;
    if (run->req->mode == CREW_MODE_LOOP) {
        json_t *recs = pass_records(run, run->pass);
        size_t k;
        json_t *r;
        json_array_foreach(recs, k, r) if (json_is_true(json_object_get(r, "success")))
            out[(*n)++] = (struct prompt_prior){rec_str(r, "agent_key"), rec_str(r, "output")};
    } else {
        for (size_t i = 0; i < p->n_agents; i++)
            if (run->status[i] == AGENT_DONE)
                out[(*n)++] = (struct prompt_prior){p->agents[i].key,
                                                    rec_str(run->rec[i], "output")};
    }
    return out;
}

static char *join_outputs(const json_t *outs, bool as_json_array)
{
    if (as_json_array) {
        json_t *a = json_array();
        size_t k;
        json_t *o;
        json_array_foreach(outs, k, o) json_array_append(a, json_array_get(o, 1));
        char *s = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        return s;
    }
    size_t len = 1, k;
    json_t *o;
    json_array_foreach(outs, k, o) len += json_string_length(json_array_get(o, 1)) + 2;
    char *s = malloc(len);
    if (s == NULL)
        return NULL;
    size_t at = 0;
    json_array_foreach(outs, k, o)
    {
        const char *t = json_string_value(json_array_get(o, 1));
        size_t tl = strlen(t);
        if (k > 0) {
            memcpy(s + at, "\n\n", 2);
            at += 2;
        }
        memcpy(s + at, t, tl);
        at += tl;
    }
    s[at] = '\0';
    return s;
}

static json_t *build_result(struct crew_run *run, enum crew_run_status *status, char **error)
{
    const struct plan *p = run->plan;
    json_t *recs = ordered_records(run);
    json_t *outs = final_outputs(run);
    json_t *usage = usage_zero();
    json_t *results = json_array(), *agent_ids = json_array(), *response = json_object();
    json_t *agents = json_array(), *errors = json_object(), *log = json_array();
    json_t *metadata = json_pack("{s:s}", "mode", crew_mode_name(run->req->mode));
    size_t k;
    json_t *r;

    json_array_foreach(recs, k, r)
    {
        const char *key = rec_str(r, "agent_key");
        bool ok = json_is_true(json_object_get(r, "success"));
        json_array_append_new(results, json_string(rec_passed_on(r)));
        json_array_append_new(agent_ids, json_string(key));
        json_object_set_new(response, key,
                            json_pack("{s:s,s:s}", "input", rec_str(r, "input"), "output",
                                      rec_passed_on(r)));
        json_t *entry = json_pack(
            "{s:s,s:s,s:O,s:s,s:s,s:s,s:O,s:b,s:O}", "agent_id", rec_str(r, "agent_id"),
            "agent_name", key, "agent_index", json_object_get(r, "agent_index"), "input",
            rec_str(r, "input"), "output", ok ? rec_str(r, "output") : "", "full_output",
            ok ? rec_str(r, "output") : "", "execution_time", json_object_get(r, "execution_time"),
            "success", ok, "error", ok ? json_null() : json_object_get(r, "error"));
        if (entry && json_object_get(r, "pass"))
            json_object_set(entry, "iteration", json_object_get(r, "pass"));
        json_array_append_new(log, entry);
        add_usage(usage, r);
    }
    /* One entry per agent that ran (or was skipped), in definition order. */
    size_t n_done = 0, n_failed = 0;
    for (size_t i = 0; i < p->n_agents; i++) {
        const struct plan_agent *a = &p->agents[i];
        if (run->status[i] == AGENT_IDLE)
            continue; /* not in the loop's sequence */
        json_t *u = usage_zero(), *calls = json_array();
        double secs = 0;
        json_int_t attempts = 0;
        json_array_foreach(recs, k, r)
        {
            if ((size_t)json_integer_value(json_object_get(r, "agent_index")) != i)
                continue;
            secs += json_real_value(json_object_get(r, "execution_time"));
            attempts += json_integer_value(json_object_get(r, "attempts"));
            add_usage(u, r);
            json_t *tc = json_object_get(r, "tool_calls");
            if (json_is_array(tc))
                json_array_extend(calls, tc);
        }
        const char *st = run->status[i] == AGENT_DONE      ? "completed"
                         : run->status[i] == AGENT_FAILED  ? "failed"
                         : run->status[i] == AGENT_RUNNING ? "failed"
                                                           : "skipped";
        json_t *err = json_null();
        if (run->status[i] == AGENT_FAILED) {
            json_decref(err);
            err = json_string(rec_str(run->rec[i], "error"));
            json_object_set(errors, a->key, err);
        } else if (run->status[i] == AGENT_SKIPPED) {
            json_decref(err);
            err = json_string("skipped: a source agent failed or was skipped");
        } else if (run->status[i] == AGENT_RUNNING) {
            json_decref(err);
            err = json_string(run->cancelled ? "stopped: the job was cancelled"
                                             : "stopped: the job timed out");
            json_object_set(errors, a->key, err);
        }
        json_array_append_new(
            agents, json_pack("{s:s,s:s,s:s,s:s,s:f,s:o,s:s,s:o,s:o,s:I}", "agent_id",
                              a->agent_id, "agent_name", a->key, "llm_provider", a->provider,
                              "model", a->model, "execution_time", secs, "tool_calls", calls,
                              "status", st, "error", err, "usage", u, "attempts", attempts));
        if (run->status[i] == AGENT_DONE)
            n_done++;
        else
            n_failed++;
    }

    char *output = join_outputs(outs, run->req->mode == CREW_MODE_PARALLEL &&
                                          run->req->all_results);
    json_t *summary = json_null();
    bool synth_failed = false;
    if (run->synth != NULL) {
        add_usage(usage, run->synth);
        if (json_is_true(json_object_get(run->synth, "success"))) {
            json_object_set_new(metadata, "original_output", json_string(output ? output : ""));
            free(output);
            output = strdup(rec_str(run->synth, "output"));
            json_decref(summary);
            summary = json_string(output ? output : "");
        } else {
            synth_failed = true;
            json_object_set(errors, "synthesis", json_object_get(run->synth, "error"));
        }
    }
    size_t j;
    json_t *jr;
    json_array_foreach(run->judges, j, jr) add_usage(usage, jr);
    if (run->req->mode == CREW_MODE_LOOP) {
        json_object_set_new(metadata, "iterations", json_integer(run->pass));
        json_object_set_new(metadata, "max_iterations", json_integer(run->req->max_iterations));
        /* a loop cut by a cancel or the timeout (in a pass or its check) has no reason yet */
        const char *why = run->stop_reason  ? run->stop_reason
                          : run->cancelled  ? "cancelled"
                          : run->timed_out  ? "timed_out"
                                            : "stopped";
        json_object_set_new(metadata, "stop_reason", json_string(why));
        json_object_set_new(metadata, "condition", json_string(run->req->condition));
        json_t *answers = json_array();
        json_array_foreach(run->judges, j, jr)
        {
            if (json_is_true(json_object_get(jr, "success")))
                json_array_append_new(answers, json_string(rec_str(jr, "output")));
            else {
                json_array_append_new(answers, json_null());
                json_object_set(errors, "condition", json_object_get(jr, "error"));
            }
        }
        json_object_set_new(metadata, "condition_answers", answers);
    }
    if (run->req->mode == CREW_MODE_PARALLEL || run->req->mode == CREW_MODE_FLOW)
        json_object_set_new(metadata, "max_parallel_tasks",
                            json_integer(run->plan->max_parallel_tasks));
    if (run->replayed > 0)
        json_object_set_new(metadata, "resumed_steps", json_integer((json_int_t)run->replayed));

    *status = n_failed == 0   ? (synth_failed ? CREW_RUN_PARTIAL : CREW_RUN_COMPLETED)
              : n_done == 0 ? CREW_RUN_FAILED
                            : CREW_RUN_PARTIAL;
    *error = NULL;
    if (run->cancelled) {
        /* What finished is kept in the result; the job itself was cancelled. */
        *status = CREW_RUN_CANCELLED;
        *error = strdup(CREW_RUN_CANCEL_ERROR);
        json_object_set_new(metadata, "cancelled", json_true());
    } else if (run->timed_out) {
        /* What finished is kept in the result; the job itself failed. */
        char buf[200];
        snprintf(buf, sizeof buf, "job timed out after %g s (%zu of %zu agent(s) finished)",
                 run->req->timeout_s, n_done,
                 run->req->mode == CREW_MODE_LOOP ? run->n_seq : p->n_agents);
        *status = CREW_RUN_FAILED;
        *error = strdup(buf);
        json_object_set_new(metadata, "timed_out", json_true());
    } else if (*status == CREW_RUN_FAILED) {
        char buf[ERROR_SUMMARY_MAX];
        size_t len = (size_t)snprintf(buf, sizeof buf, "every agent failed");
        const char *key;
        json_t *v;
        json_object_foreach(errors, key, v)
        {
            if (len + 8 >= sizeof buf)
                break;
            len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %s: %s",
                                    len == strlen("every agent failed") ? ":" : ";", key,
                                    json_string_value(v) ? json_string_value(v) : "");
            if (len >= sizeof buf)
                len = sizeof buf - 1;
        }
        buf[len] = '\0';
        utf8_trim_cut(buf);
        *error = strdup(buf);
    }
    double total = (double)(clock_now_ms() - run->spec.started_ms) / 1000.0;
    json_t *res = json_pack(
        "{s:s,s:o,s:s,s:f,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "output", output ? output : "",
        "summary", summary, "status", crew_run_status_name(*status), "total_time",
        total < 0 ? 0.0 : total, "results", results, "agent_ids", agent_ids, "response", response,
        "agents", agents, "errors", errors, "execution_log", log, "usage", usage, "metadata",
        metadata);
    free(output);
    json_decref(recs);
    json_decref(outs);
    return res;
}

/* ---- the scheduler ---------------------------------------------------------------------- */

static void advance(struct crew_run *run)
{
    if (run->finished || run->draining)
        return;
    for (;;) {
        /* Past the deadline the scheduler still replays checkpointed steps (a resumed job
         * whose time ran out while it was down keeps what it had done), and stops at the
         * first step that would need a call. */
        if (run->abandoned || run->halted)
            break;
        bool progress = false;
        if (!mode_over(run)) {
            switch (run->req->mode) {
            case CREW_MODE_SEQUENTIAL:
                progress = step_sequential(run);
                break;
            case CREW_MODE_PARALLEL:
                progress = step_parallel(run);
                break;
            case CREW_MODE_FLOW:
                progress = step_flow(run);
                break;
            case CREW_MODE_LOOP:
                progress = step_loop(run);
                break;
            }
            if (progress)
                continue;
            return; /* waiting on calls in flight */
        }
        if (run->req->synthesis_prompt != NULL && !run->synth_started) {
            run->synth_started = true;
            size_t n = 0;
            struct prompt_prior *in = synthesis_inputs(run, &n);
            char *input = in ? prompt_synthesis(run->req->synthesis_prompt, run->req->query_text,
                                                in, n)
                             : NULL;
            free(in);
            start_aux(run, STEP_SYNTH, 0, input);
            continue;
        }
        if (run->synth_started && !run->synth_done)
            return;
        break;
    }
    run->finished = true;
    if (run->abandoned) {
        struct err why = run->abandon_err; /* the hook may free the run */
        run->hooks.done(run->hooks.arg, why.code ? why.code : ERR_INTERNAL, CREW_RUN_FAILED, NULL,
                        NULL, &why);
        return;
    }
    enum crew_run_status st;
    char *error = NULL;
    json_t *res = build_result(run, &st, &error);
    struct err e = {0};
    if (res == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory building the crew result");
        free(error);
        run->hooks.done(run->hooks.arg, ERR_NOMEM, CREW_RUN_FAILED, NULL, NULL, &e);
        return;
    }
    /* The hook may free the run: copy nothing from it afterwards. */
    void (*done)(void *, int, enum crew_run_status, json_t *, const char *, const struct err *) =
        run->hooks.done;
    void *arg = run->hooks.arg;
    done(arg, 0, st, res, error, &e);
    free(error);
}

/* ---- life cycle -------------------------------------------------------------------------- */

int crew_run_new(const struct crew_run_env *env, const struct crew_run_spec *spec,
                 const struct crew_run_hooks *hooks, struct crew_run **out, struct err *e)
{
    struct crew_run *run = calloc(1, sizeof *run);
    *out = NULL;
    if (run == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    run->env = *env;
    run->spec = *spec;
    run->hooks = *hooks;
    run->plan = spec->plan;
    run->req = spec->req;
    run->spec.done = NULL;
    size_t n = run->plan->n_agents;
    run->status = calloc(n, sizeof *run->status);
    run->rec = calloc(n, sizeof *run->rec);
    run->replay = json_object();
    run->passes = json_array();
    run->judges = json_array();
    run->kick = event_new(env->base, -1, 0, on_kick, run);
    run->deadline = evtimer_new(env->base, on_deadline, run);
    run->delta_flush = evtimer_new(env->base, on_delta_flush, run);
    run->pass = 1;
    if (run->req->n_sequence > 0) {
        run->n_seq = run->req->n_sequence;
        run->seq = malloc(run->n_seq * sizeof *run->seq);
        if (run->seq)
            memcpy(run->seq, run->req->sequence, run->n_seq * sizeof *run->seq);
    } else {
        run->n_seq = n;
        run->seq = malloc(n * sizeof *run->seq);
        for (size_t i = 0; run->seq && i < n; i++)
            run->seq[i] = i;
    }
    if (run->status == NULL || run->rec == NULL || run->replay == NULL || run->passes == NULL ||
        run->judges == NULL || run->kick == NULL || run->deadline == NULL ||
        run->delta_flush == NULL || run->seq == NULL) {
        crew_run_free(run);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; spec->done != NULL && i < spec->done->n; i++) {
        const struct store_step *st = &spec->done->items[i];
        enum step_kind kind;
        long pass = 0;
        size_t idx = 0;
        json_error_t jerr;
        json_t *rec = json_loads(st->data, 0, &jerr);
        if (rec == NULL || !json_is_object(rec) || parse_step_key(st->key, &kind, &pass, &idx) != 0 ||
            (kind == STEP_AGENT && pass == 0 && idx >= n)) {
            json_decref(rec);
            crew_run_free(run);
            return err_set(e, ERR_INVALID, "stored checkpoint '%.*s' does not parse",
                           (int)utf8_prefix_len(st->key, strlen(st->key), 64), st->key);
        }
        json_object_set_new(run->replay, st->key, rec);
    }
    *out = run;
    return 0;
}

/* Aborts the steps in flight and ends the run with what finished (timeout and cancel). The
 * cut steps never finish, so the run halts at once: without that a run waiting on a cut
 * synthesis or loop judge would wait forever. With nothing in flight (a resumed job whose
 * time ran out while it was down) it still replays its checkpoints first. */
static void stop_run(struct crew_run *run)
{
    if (run->active != NULL)
        run->halted = true;
    while (run->active != NULL) {
        struct step *s = run->active;
        active_remove(run, s);
        agent_step_cancel(s->as);
        flush_delta(s); /* what the model had streamed is part of the history */
        step_free(s);
    }
    advance(run); /* may free the run: the last thing here */
}

/* The job's time is up: its calls in flight are aborted and it ends with what finished. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct crew_run *run = arg;
    run->timed_out = true;
    stop_run(run);
}

void crew_run_drain(struct crew_run *run)
{
    if (run != NULL)
        run->draining = true;
}

void crew_run_cancel(struct crew_run *run)
{
    if (run == NULL || run->finished)
        return;
    run->cancelled = true;
    run->draining = false; /* a cancel ends the run now, draining or not */
    run->timed_out = true; /* the scheduler's "start no more calls" */
    run->halted = true;    /* and replay nothing more: the client wants it stopped now */
    stop_run(run);
}

void crew_run_start(struct crew_run *run)
{
    struct timeval now = {0, 0};
    event_add(run->kick, &now);
    if (run->req->timeout_s > 0 && run->deadline != NULL) {
        /* From the job's start: a resumed job has only what is left of its time. */
        int64_t left = run->spec.started_ms + (int64_t)(run->req->timeout_s * 1000.0) -
                       clock_now_ms();
        if (left < 0)
            left = 0;
        struct timeval tv = {(time_t)(left / 1000), (suseconds_t)((left % 1000) * 1000)};
        event_add(run->deadline, &tv);
    }
}

size_t crew_run_active(const struct crew_run *run)
{
    return run->n_active;
}

void crew_run_free(struct crew_run *run)
{
    if (run == NULL)
        return;
    while (run->active != NULL) {
        struct step *s = run->active;
        active_remove(run, s);
        agent_step_cancel(s->as);
        step_free(s);
    }
    if (run->kick)
        event_free(run->kick);
    if (run->delta_flush)
        event_free(run->delta_flush);
    if (run->deadline)
        event_free(run->deadline);
    if (run->rec)
        for (size_t i = 0; i < run->plan->n_agents; i++)
            json_decref(run->rec[i]);
    free(run->rec);
    free(run->status);
    free(run->seq);
    json_decref(run->replay);
    json_decref(run->passes);
    json_decref(run->judges);
    json_decref(run->synth);
    free(run);
}
