/*
 * jobs.h - JobManager: the store is the queue (DESIGN.md decision 2).
 *
 * The API inserts pending jobs and calls jobs_wake(); the manager claims pending jobs from
 * the store in FIFO order with a lease (at most max_running at once, the rest wait pending),
 * builds a crew_run for each from the plan snapshot in the job row, checkpoints every
 * finished step through the store (fenced on the lease), and writes the result when the run
 * is done. Leases are renewed every third of their length; a job whose owner died (kill -9,
 * power loss) is claimed again once its lease expires and resumes from its checkpoints.
 * Polling every poll_ms also picks up jobs other instances inserted. Every
 * cleanup_interval_ms, finished jobs whose end is older than job_ttl_ms are deleted with
 * their checkpoints, a batch per loop turn.
 *
 * Runs on the loop thread.
 */
#ifndef CREWD_JOBS_JOBS_H
#define CREWD_JOBS_JOBS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "core/id.h"

struct store;
struct llm_client;
struct tool_registry;
struct tool_runner;
struct plan_llm_policy;

struct jobs_opts {
    long max_running;   /* 0: 256 */
    long lease_ms;      /* 0: 30000 */
    long poll_ms;       /* idle poll for other instances' jobs and expired leases; 0: 1000 */
    size_t claim_batch; /* jobs per claim statement; 0: 64 */
    const char *(*getenv_fn)(const char *name); /* API key variables */
    const struct tool_registry *tool_registry;  /* schemas offered to the models */
    struct tool_runner *tool_runner;            /* runs agents' tools; NULL: none offered */
    const struct llm_prices *prices;            /* NULL: no cost in results */
    /* Checked again when a job starts: it may have waited since execute, and the server may
     * have restarted with other lists. NULL: not checked. */
    const struct plan_llm_policy *llm_policy;
    long long job_ttl_ms;     /* finished jobs older than this are deleted; 0: 86400 s */
    long cleanup_interval_ms; /* how often retention runs; 0: 3600 s */
    /* Optional: job `job_id` has new events in the store (a step, its progress, its start or
     * end) or is gone, appended by this instance: event readers look now instead of at their
     * next poll, and so do webhooks when `delivery` says a webhook delivery may have been
     * created with them (the job's webhook asked for one of the types; always true for a
     * cancel, whose job row this instance may not hold). Called from the loop after the
     * store write, possibly inside a jobs_* call: it must only schedule work, never call
     * back into jobs. */
    void (*on_events)(void *arg, const char *job_id, bool delivery);
    void *events_arg;
};

struct jobs;

/* Returns 0, ERR_NOMEM or ERR_INTERNAL. Nothing is claimed before jobs_start. */
int jobs_new(struct event_base *base, struct store *store, struct llm_client *llm,
             const struct jobs_opts *opts, struct jobs **out, struct err *e);

/* Starts claiming (the first claim also picks up jobs an earlier run left behind). */
void jobs_start(struct jobs *jobs);

/* A job was inserted: claim soon (coalesced into one claim per loop turn). */
void jobs_wake(struct jobs *jobs);

/*
 * Graceful shutdown, first half: claims nothing more and lets each run's steps in flight
 * finish and be checkpointed (crew_run_drain), so that the next start repeats none of them.
 * `done(arg)` is called once, from the loop, when no step is in flight any more and every
 * end has been written, or when grace_ms has passed (0: at once); then call jobs_free.
 */
void jobs_drain(struct jobs *jobs, long grace_ms, void (*done)(void *arg), void *arg);

/* Stops: aborts the runs in flight and gives up their leases at once, so that the next
 * start (of this or any instance) resumes them from their checkpoints. NULL-safe. */
void jobs_free(struct jobs *jobs);

/*
 * Cancels job `job_id` (a canonical id). A job running in this instance is stopped now
 * (crew_run_cancel: its LLM and tool calls in flight are aborted) and ends cancelled with what
 * finished in its result. A pending job, or one running on another instance, is ended
 * cancelled in the store (error "cancelled by the client", no result); the other instance
 * notices at its next checkpoint or finish, whose fence fails, and abandons the run: its
 * calls in flight run on until that step ends. Returns 0 when the job is now cancelled,
 * ERR_CONFLICT ("job already <status>") when it had ended before, ERR_NOT_FOUND, or the
 * store's error.
 */
int jobs_cancel(struct jobs *jobs, const char *job_id, struct err *e);

/*
 * Cancels the job as jobs_cancel does if it has not ended, then removes it and its
 * checkpoints from the store. Returns 0, ERR_NOT_FOUND, ERR_BUSY when this instance's slot
 * could not be let go yet (its end is being written), or the store's error.
 */
int jobs_delete(struct jobs *jobs, const char *job_id, struct err *e);

/* Jobs running in this instance now. */
size_t jobs_running(const struct jobs *jobs);

/* LLM calls this instance has in flight or waiting for a connection. */
size_t jobs_llm_calls(const struct jobs *jobs);

/* This instance's lease owner id. */
const char *jobs_owner(const struct jobs *jobs);

/* 0 when the manager's last store write (claim, renewal, checkpoint, end, lease release,
 * retention) succeeded, or none was made yet; otherwise the time (epoch ms) of the first of
 * the failures in a row since the last success (for /healthz). */
long long jobs_store_failing_since(const struct jobs *jobs);

/* The retention settings in force (defaults applied), for GET /api/v1/stats. */
long long jobs_ttl_ms(const struct jobs *jobs);
long jobs_cleanup_interval_ms(const struct jobs *jobs);

#endif
