/*
 * crew_run.h - AgentCrew: one job's execution of a compiled plan, as a state machine on the
 * event loop (DESIGN.md decisions 1 and 3).
 *
 * A run starts the agent steps its mode allows (sequential: one at a time; parallel: up to
 * max_parallel_tasks; flow: every agent whose sources are all done; loop: the sequence, then
 * a YES/NO condition check, pass after pass), each an LLM call through llm/llm.h. When a step
 * finishes, its record goes to the checkpoint hook (the job manager writes it to the store)
 * BEFORE anything that depends on it starts. A run given the checkpoints of an earlier,
 * interrupted run replays them instead of calling the LLM again, so a resumed job repeats
 * no finished step. When every step is done (and the optional synthesis call), the run
 * builds the CrewResult of API.md and calls the done hook once.
 *
 * Step keys in the store: "agent:<index>" (sequential, parallel, flow), "loop:<pass>:<pos>",
 * "judge:<pass>", "synthesis". Each step that calls an LLM reports agent.started, its tool
 * calls, its streamed text (when the request asks for streaming; coalesced, at most one
 * agent.delta per step every DELTA_FLUSH_MS) and its end, for the job's events (DESIGN.md
 * decision 4). Everything runs on the loop thread.
 */
#ifndef CREWD_ENGINE_CREW_RUN_H
#define CREWD_ENGINE_CREW_RUN_H

#include <event2/event.h>
#include <jansson.h>
#include <stdint.h>

#include "core/err.h"
#include "store/store.h"

struct plan;
struct job_request;
struct llm_client;
struct store_step_list;

enum crew_run_status {
    CREW_RUN_COMPLETED = 0, /* no agent failed */
    CREW_RUN_PARTIAL,       /* some failed or were skipped */
    CREW_RUN_FAILED,        /* every agent failed */
    CREW_RUN_CANCELLED,     /* crew_run_cancel: stopped, the result keeps what finished */
};

/* The error a cancelled run reports. */
#define CREW_RUN_CANCEL_ERROR "cancelled by the client"

/* "completed", "partial", "failed", "cancelled". */
const char *crew_run_status_name(enum crew_run_status s);

struct crew_run_hooks {
    /* Persists a finished step (data borrowed) together with its event (agent.completed or
     * agent.failed, ev_data borrowed): both or neither. Nonzero (with e set) abandons the
     * run: the lease was lost or the store failed, and nothing may be built on an unsaved
     * step. */
    int (*checkpoint)(void *arg, const char *key, const json_t *data,
                      enum store_event_type ev_type, const json_t *ev_data, struct err *e);
    /* Optional: a progress event (agent.started, agent.delta, agent.tool_call; data
     * borrowed). Best effort: the run goes on whatever becomes of it. */
    void (*event)(void *arg, enum store_event_type type, const json_t *data);
    /*
     * The run is over. rc 0: `result` (a new reference, stolen) is the CrewResult and
     * `status` its overall status; `error` a summary when status is FAILED, else NULL.
     * rc != 0: the run was abandoned (e says why); result is NULL. The hook may free the
     * run (crew_run_free); nothing touches the run after it returns.
     */
    void (*done)(void *arg, int rc, enum crew_run_status status, json_t *result,
                 const char *error, const struct err *e);
    void *arg;
};

struct agent_tools;
struct llm_prices;

struct store;

struct crew_run_env {
    struct event_base *base;
    struct llm_client *llm;
    struct store *store; /* conversation memory; NULL: none */
    const struct agent_tools *tools;            /* NULL: agents' tools are not offered */
    const struct llm_prices *prices;            /* NULL: usage carries no cost */
    const char *(*getenv_fn)(const char *name); /* reads API key variables */
};

struct crew_run_spec {
    const struct plan *plan;           /* borrowed for the run's life */
    const struct job_request *req;     /* borrowed for the run's life */
    char *const *inline_keys;          /* per agent: config.api_key, or NULL; borrowed */
    const int *tool_rounds;             /* per agent: config.max_tool_iterations, or -1 for
                                           the default; NULL: all default; borrowed */
    const int *context_turns;           /* per agent: exchanges of conversation memory to
                                           use and keep, 0 for none; NULL: none; borrowed */
    const char *crew_id;                /* memory is kept per crew, agent, user, session */
    const struct store_step_list *done; /* checkpoints of an earlier run, or NULL; read
                                           during crew_run_new only */
    int64_t started_ms;                 /* the job's started_at, for total_time */
};

struct crew_run;

/* Returns 0, ERR_INVALID (a stored checkpoint that does not parse), or ERR_NOMEM. */
int crew_run_new(const struct crew_run_env *env, const struct crew_run_spec *spec,
                 const struct crew_run_hooks *hooks, struct crew_run **out, struct err *e);

/* Schedules the first steps; hooks are called later, from the loop, never from here. */
void crew_run_start(struct crew_run *run);

/*
 * Stops the run now, the way the job's timeout does: aborts its LLM and tool calls in flight
 * (their connections are closed), starts nothing more, and ends the run with what finished:
 * the done hook is called with rc 0, status CREW_RUN_CANCELLED, the CrewResult of the steps
 * that finished (metadata.cancelled true) and error CREW_RUN_CANCEL_ERROR. Unlike every
 * other hook call, this one happens from inside crew_run_cancel, which must therefore be
 * the caller's last use of the run (the hook may free it). No-op on a run that has already
 * reported; NULL-safe.
 */
void crew_run_cancel(struct crew_run *run);

/*
 * Graceful shutdown: starts nothing more, while the steps in flight run to their end and are
 * checkpointed as usual (their hooks are called). The run then waits, never calling its done
 * hook, for crew_run_free once crew_run_active() is 0 (or the caller's patience is over); the
 * job resumes from those checkpoints at its next claim, repeating no call that had finished.
 * NULL-safe.
 */
void crew_run_drain(struct crew_run *run);

/* Aborts the LLM calls in flight; no hook is called afterwards. NULL-safe. */
void crew_run_free(struct crew_run *run);

/* LLM calls this run has in flight. */
size_t crew_run_active(const struct crew_run *run);

#endif
