/*
 * store.h - the storage interface: one header, several backends (SQLite's VFS idea).
 *
 * store_open() picks the backend from the URL: "sqlite:PATH" (the default, embedded) or
 * "postgres://..." / "postgresql://..." (shared by several instances). Every backend keeps a
 * schema_version table and applies its migrations in order at open.
 *
 * It holds the crew registry and the job queue (DESIGN.md decision 2: the store is the
 * queue): jobs are inserted pending, claimed FIFO with a lease by one instance's job manager,
 * checkpointed step by step (decision 3), and finished. Every write of a claimed job is
 * fenced on its lease owner, so an instance that lost a lease cannot overwrite the work of
 * the one that took the job over. It also keeps the agents' conversation memory: per
 * (crew, agent, user, session), an ordered list of turns, trimmed to the newest N on append.
 * And two small catalogs keyed by name: the user-defined HTTP tools and the custom agent
 * classes (PUT /api/v1/tools, PUT /api/v1/agents), each row a name and a JSON definition.
 * Each job has an event history (DESIGN.md decision 4): a dense sequence 1, 2, 3, ... of
 * typed events, the one source of SSE streams, webhooks and the execution log. An event
 * whose type the job's webhook asked for gets a delivery row in the same transaction, so a
 * webhook cannot miss an event nor outlive a crash before it is sent.
 * Calls are synchronous and made from the loop thread:
 * single-row statements on a local WAL database cost tens of microseconds.
 *
 * A store is used by one thread at a time (the loop thread).
 */
#ifndef CREWD_STORE_STORE_H
#define CREWD_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"

/* One crew row. Strings are owned by the row (store_crew_free). */
struct store_crew {
    char crew_id[ID_UUID_LEN];
    char *name;
    char *description;    /* NULL when none */
    char *execution_mode; /* "sequential", ... */
    long agent_count;
    char *definition; /* normalized definition, JSON text, secrets included */
    char *plan;       /* compiled plan, JSON text */
    char created_at[CLOCK_RFC3339_LEN];
    char updated_at[CLOCK_RFC3339_LEN];
};

void store_crew_free(struct store_crew *crew);

/* A page of crews for listing: rows hold no definition and no plan (both NULL). */
struct store_crew_page {
    struct store_crew **items;
    size_t n;
    long total; /* crews in the store, regardless of the page */
};

void store_crew_page_cleanup(struct store_crew_page *page);

enum store_lookup {
    STORE_BY_NAME_OR_ID = 0, /* name first, then crew_id (API.md: lookup by identifier) */
    STORE_BY_NAME,
    STORE_BY_ID,
};

enum store_job_status {
    STORE_JOB_PENDING = 0,
    STORE_JOB_RUNNING,
    STORE_JOB_COMPLETED,
    STORE_JOB_FAILED,
    STORE_JOB_CANCELLED,
};

/* "pending", "running", ...; NULL for a value outside the enum. */
const char *store_job_status_name(enum store_job_status s);
/* 0 and *out, or ERR_INVALID for an unknown name. */
int store_job_status_parse(const char *name, enum store_job_status *out);

/*
 * One job row. Strings are owned by the row (store_job_free). The crew's definition and plan
 * are snapshots taken at execute time, so that replacing or deleting the crew does not
 * change or break jobs already accepted.
 */
struct store_job {
    char job_id[ID_UUID_LEN];
    char crew_id[ID_UUID_LEN];
    char *crew_name;
    enum store_job_status status;
    char *execution_mode; /* the mode this job runs in (the request's override or the crew's) */
    char *request;        /* JSON text: the normalized execute body (query, kwargs, ...) */
    char *definition;     /* JSON text: the crew definition snapshot, secrets included */
    char *plan;           /* JSON text: the compiled plan snapshot */
    char *metadata;       /* JSON text object; "{}" when none */
    char *result;         /* JSON text of the CrewResult; NULL until finished */
    char *error;          /* NULL unless failed or cancelled */
    char created_at[CLOCK_RFC3339_LEN];
    char started_at[CLOCK_RFC3339_LEN];   /* "" until first claimed */
    char completed_at[CLOCK_RFC3339_LEN]; /* "" until terminal */
    long attempts; /* times the job was claimed (1 on the first run; more after recoveries) */
    /* The execute request's Idempotency-Key header and the SHA-256 of its body (64 lowercase
     * hex digits); both NULL when the request had no key. Keys are unique across the jobs in
     * the store: deleting or purging the job frees its key. */
    char *idempotency_key;
    char *request_hash;
    /* The execute request's webhook: where to POST, the signing secret, and which event
     * types (a mask of STORE_EV_BIT()). webhook_mask 0 means no webhook (url and secret
     * NULL). Stored with the job so a delivery after a restart still knows them; never
     * part of an API reply. */
    char *webhook_url;
    char *webhook_secret;
    long webhook_mask;
};

void store_job_free(struct store_job *job);

/* The jobs one claim took. */
struct store_job_batch {
    struct store_job **items;
    size_t n;
};

void store_job_batch_cleanup(struct store_job_batch *batch);

/* A page of jobs for listing: rows hold every field but request, definition and plan
 * (NULL) and result (NULL). */
struct store_job_page {
    struct store_job **items; /* newest first; NULL when n is 0 */
    size_t n;
    long total; /* jobs matching the filter, regardless of the page */
};

void store_job_page_cleanup(struct store_job_page *page);

/* What job_list selects: NULL crew_id is any crew (compared as stored: lowercase UUID),
 * any_status true is any status. */
struct store_job_filter {
    const char *crew_id;
    bool any_status;
    enum store_job_status status;
};

/* The types of a job's events (API.md section 4). */
enum store_event_type {
    STORE_EV_JOB_STARTED = 0, /* claimed and (re)started; data {"attempt"} */
    STORE_EV_AGENT_STARTED,
    STORE_EV_AGENT_DELTA, /* streamed text */
    STORE_EV_AGENT_TOOL_CALL,
    STORE_EV_AGENT_COMPLETED,
    STORE_EV_AGENT_FAILED,
    STORE_EV_JOB_COMPLETED, /* the last three are terminal: job_finish appends them */
    STORE_EV_JOB_FAILED,
    STORE_EV_JOB_CANCELLED,
    STORE_EV_COUNT_
};

#define STORE_EV_BIT(t) (1L << (t))
#define STORE_EV_TERMINAL_MASK                                                                     \
    (STORE_EV_BIT(STORE_EV_JOB_COMPLETED) | STORE_EV_BIT(STORE_EV_JOB_FAILED) |                   \
     STORE_EV_BIT(STORE_EV_JOB_CANCELLED))
#define STORE_EV_ALL_MASK (STORE_EV_BIT(STORE_EV_COUNT_) - 1)

/* "job.started", "agent.delta", ...; NULL outside the enum. */
const char *store_event_type_name(enum store_event_type t);
/* 0 and *out, or ERR_INVALID for an unknown name. */
int store_event_type_parse(const char *name, enum store_event_type *out);

/* An event to append: its type and its data (JSON object text, borrowed). */
struct store_event_in {
    enum store_event_type type;
    const char *data;
};

/* One item of event_append_batch: the job, its event, and (out) how it went. */
struct store_event_item {
    const char *job_id;
    struct store_event_in ev;
    int rc;       /* out: 0 appended, ERR_CONFLICT (not leased to the owner), ERR_NOT_FOUND */
    long long seq; /* out: the event's number when appended */
};

/* An event read back; strings owned by the list. */
struct store_event {
    long long seq; /* 1, 2, 3, ... per job, no gaps */
    enum store_event_type type;
    char *data; /* JSON object text */
    char created_at[CLOCK_RFC3339_LEN];
};

struct store_event_list {
    struct store_event *items; /* by seq, ascending; NULL when n is 0 */
    size_t n;
};

void store_event_list_cleanup(struct store_event_list *l);

/* Webhook deliveries: one row per (job, event) the job's webhook asked for. */
enum store_delivery_state {
    STORE_DELIVERY_PENDING = 0, /* to send, or to send again at next_attempt_ms */
    STORE_DELIVERY_DELIVERED,   /* the receiver answered 2xx */
    STORE_DELIVERY_FAILED,      /* given up after the last attempt */
};

/* "pending", "delivered", "failed"; NULL outside the enum. */
const char *store_delivery_state_name(enum store_delivery_state s);
/* 0 and *out, or ERR_INVALID for an unknown name. */
int store_delivery_state_parse(const char *name, enum store_delivery_state *out);

/* A delivery, as claimed (every field) or listed (url, secret and event_data NULL). */
struct store_delivery {
    char job_id[ID_UUID_LEN];
    long long seq; /* the event's */
    enum store_event_type type;
    enum store_delivery_state state;
    long attempts;            /* attempts made, counting the one a claim starts */
    long long next_attempt_ms; /* when a pending delivery is due */
    int last_status;          /* the receiver's HTTP status at the last attempt; 0: none */
    char *last_error;         /* NULL when none */
    char *event_data;         /* the event's data (JSON object text) */
    char event_created_at[CLOCK_RFC3339_LEN];
    char *url;    /* the job's webhook_url */
    char *secret; /* the job's webhook_secret */
    char created_at[CLOCK_RFC3339_LEN];
    char updated_at[CLOCK_RFC3339_LEN];
};

void store_delivery_free(struct store_delivery *d);

struct store_delivery_list {
    struct store_delivery **items;
    size_t n;
};

void store_delivery_list_cleanup(struct store_delivery_list *l);

/* One checkpoint: a finished step of a job (engine-defined key, JSON text). */
struct store_step {
    char *key;
    char *data;
};

struct store_step_list {
    struct store_step *items; /* in the order they were first written */
    size_t n;
};

void store_step_list_cleanup(struct store_step_list *list);

/*
 * One turn of a conversation kept in memory. role is "user" or "assistant". Rows read back
 * own their strings (store_turn_list_cleanup); turns given to memory_append are borrowed and
 * their created_at is ignored (the store sets it from now_ms).
 */
struct store_turn {
    char *role;
    char *content;
    char created_at[CLOCK_RFC3339_LEN];
};

struct store_turn_list {
    struct store_turn *items; /* oldest first; NULL when n is 0 */
    size_t n;
};

void store_turn_list_cleanup(struct store_turn_list *l);

/* The argument checks every backend's memory calls make, with the same messages: 0, or
 * ERR_INVALID when crew_id or agent_key is NULL or empty, or a turn (turns[0..n), none
 * when n is 0) has no content or a role other than "user" or "assistant". */
int store_memory_check(const char *crew_id, const char *agent_key, const struct store_turn *turns,
                       size_t n, struct err *e);

/*
 * One entry of a catalog (a user tool or a custom agent class): a name and its definition as
 * JSON text, secrets included. Rows read back own their strings (store_named_free).
 */
struct store_named {
    char *name;
    char *definition;
    char created_at[CLOCK_RFC3339_LEN];
    char updated_at[CLOCK_RFC3339_LEN];
};

void store_named_free(struct store_named *row);

struct store_named_list {
    struct store_named **items; /* ordered by name (byte order); NULL when n is 0 */
    size_t n;
};

void store_named_list_cleanup(struct store_named_list *l);

/* The catalogs of store_named rows; the ops below take one of these. */
enum store_catalog {
    STORE_TOOLS = 0,     /* table tools: user-defined HTTP tools */
    STORE_AGENT_CLASSES, /* table agent_classes: custom agent classes */
};

/* "tool", "agent class": the noun of the catalog's messages ("tool 'x' not found"). */
const char *store_catalog_noun(enum store_catalog c);

/* The argument checks every backend's catalog calls make, with the same messages: 0, or
 * ERR_INVALID for an unknown catalog, a NULL or empty name, or (put) a NULL definition. */
int store_named_check(enum store_catalog c, const char *name, const char *definition,
                      bool put, struct err *e);

/* The checks every backend's job_insert makes of the webhook fields, with the same
 * messages: 0, or ERR_INVALID when webhook_mask is 0 but a url or secret is given, when a
 * mask has bits outside STORE_EV_ALL_MASK, or when a mask is set without a non-empty url
 * and secret. */
int store_job_webhook_check(const struct store_job *j, struct err *e);

/* The checks every backend makes of an event to append, with the same messages: 0, or
 * ERR_INVALID when ev is NULL, its type is outside the enum or its data is NULL. */
int store_event_check(const struct store_event_in *ev, struct err *e);

/* The terminal event job_finish appends for `status` (completed, failed or cancelled): its
 * type in *type and its data {"status": "<status>", "error": <error or null>} as new JSON
 * text in *data (the caller frees it). ERR_INVALID for another status, ERR_NOMEM. */
int store_finish_event(enum store_job_status status, const char *error,
                       enum store_event_type *type, char **data, struct err *e);

struct store;

struct store_ops {
    const char *kind; /* "sqlite", "postgres" */
    /* ERR_CONFLICT (message names the field) when the name or crew_id is taken. */
    int (*crew_insert)(struct store *st, const struct store_crew *crew, struct err *e);
    /* Replaces every field but crew_id and created_at of the row with crew->crew_id.
     * ERR_NOT_FOUND if no such row; ERR_CONFLICT if the new name belongs to another crew. */
    int (*crew_update)(struct store *st, const struct store_crew *crew, struct err *e);
    /* ERR_NOT_FOUND ("crew 'X' not found") when nothing matches; *out is a new row
     * otherwise. Ids are compared as stored (lowercase); callers canonicalize them. */
    int (*crew_get)(struct store *st, const char *ident, enum store_lookup how,
                    struct store_crew **out, struct err *e);
    /* Ordered by created_at, then insertion order. limit and offset >= 0 (ERR_INVALID
     * otherwise); limit 0 gives an empty page with the total. */
    int (*crew_list)(struct store *st, long limit, long offset, struct store_crew_page *out,
                     struct err *e);
    /* ERR_NOT_FOUND if no such row. */
    int (*crew_delete)(struct store *st, const char *crew_id, struct err *e);

    /* Jobs. Times given as now_ms are milliseconds since the epoch (clock_now_ms()); leases
     * are kept as such numbers, RFC 3339 texts are derived from now_ms. */

    /* Inserts a job in status pending (job->status is ignored; result/error/started_at/
     * completed_at must be empty). ERR_CONFLICT if the job_id exists ("job_id: ..."), or
     * if idempotency_key (NULL: none) is already a job's ("idempotency_key: ..."). A key
     * needs a request_hash and a hash needs a key (ERR_INVALID). */
    int (*job_insert)(struct store *st, const struct store_job *job, struct err *e);
    /* The job whose idempotency_key is `key`, with every field; ERR_NOT_FOUND ("no job with
     * idempotency key 'X'") when none. */
    int (*job_find_by_key)(struct store *st, const char *key, struct store_job **out,
                           struct err *e);
    /* ERR_NOT_FOUND ("job 'X' not found"), else *out is a new row with every field. */
    int (*job_get)(struct store *st, const char *job_id, struct store_job **out, struct err *e);
    /*
     * Claims up to `max` jobs for `owner`, oldest first (insertion order): pending jobs, and
     * running jobs whose lease expired before now_ms (their owner died). Each claimed job
     * becomes running, leased to `owner` until now_ms + lease_ms, started_at set if it was
     * empty, attempts + 1. The rows come back with every field. Safe against other
     * instances claiming at the same time (no job is claimed twice).
     */
    int (*job_claim)(struct store *st, const char *owner, long long now_ms, long long lease_ms,
                     size_t max, struct store_job_batch *out, struct err *e);
    /* Extends to now_ms + lease_ms the lease of every running job held by `owner`. */
    int (*job_renew)(struct store *st, const char *owner, long long now_ms, long long lease_ms,
                     struct err *e);
    /* Gives up `owner`'s lease on job `job_id`, or on all its jobs when job_id is NULL
     * (graceful shutdown): they stay running with an expired lease and no owner, so the next
     * claim by any instance resumes them, and late writes of `owner` are refused. */
    int (*job_release)(struct store *st, const char *owner, const char *job_id, struct err *e);
    /* Writes (or replaces) the checkpoint `key` of a running job leased to `owner`, and,
     * when ev is not NULL, appends that event in the same transaction (the step's
     * agent.completed or agent.failed: both or neither). ERR_CONFLICT if the job is not
     * running under that owner any more (lease lost). */
    int (*job_step_put)(struct store *st, const char *job_id, const char *owner,
                        const char *key, const char *data, const struct store_event_in *ev,
                        long long now_ms, struct err *e);
    /* Every checkpoint of the job, in the order first written (empty list if none). */
    int (*job_steps_get)(struct store *st, const char *job_id, struct store_step_list *out,
                         struct err *e);
    /* Ends a job: status (completed, failed or cancelled), result (JSON text or NULL),
     * error (or NULL), completed_at from now_ms; the lease is cleared. When owner is not
     * NULL the job must be running under that owner (ERR_CONFLICT otherwise); when owner
     * is NULL the job must not be terminal yet (ERR_CONFLICT "job already <status>").
     * ERR_NOT_FOUND if no such job. In the same transaction it appends the terminal event
     * (job.completed, job.failed or job.cancelled) with data {"status", "error"} (error
     * null when none), and its webhook delivery when the job's mask asks for it: every
     * ended job's history ends with exactly one terminal event. */
    int (*job_finish)(struct store *st, const char *job_id, const char *owner,
                      enum store_job_status status, const char *result, const char *error,
                      long long now_ms, struct err *e);
    /* The jobs `filter` selects, newest first (created_at, then insertion order, both
     * descending), `limit` of them from `offset`, with the count of all that match. limit
     * and offset >= 0 (ERR_INVALID otherwise); limit 0 gives an empty page with the total.
     * A crew_id that is no UUID matches nothing. One snapshot: total and page agree. */
    int (*job_list)(struct store *st, const struct store_job_filter *filter, long limit,
                    long offset, struct store_job_page *out, struct err *e);
    /* Removes a finished (completed, failed or cancelled) job and its checkpoints, events
     * and deliveries in one transaction. ERR_NOT_FOUND if no such job; ERR_CONFLICT ("job is <status>") if it is
     * still pending or running: end it first (job_finish with owner NULL). */
    int (*job_delete)(struct store *st, const char *job_id, struct err *e);
    /* Removes up to max_rows finished jobs whose completed_at is before older_than_ms and
     * that have no pending webhook delivery (one waiting for a retry keeps its job), oldest
     * end first, with their checkpoints, events and deliveries, in one transaction;
     * *n_deleted (may be NULL) says how many. Live jobs are never touched. Call again while it returns max_rows:
     * the batch bounds how long one call holds the store (and the loop). max_rows > 0
     * (ERR_INVALID otherwise). */
    int (*job_purge)(struct store *st, long long older_than_ms, size_t max_rows,
                     size_t *n_deleted, struct err *e);

    /* Jobs per status: counts[s] for each enum store_job_status s (array of 5). */
    int (*job_counts)(struct store *st, long counts[5], struct err *e);

    /*
     * Events. Appends items[0..n) in that order in ONE transaction (many jobs' progress for
     * one commit), each as its job's next event (seq = the last + 1, in items[i].seq), with
     * created_at from now_ms. When owner is not NULL each job must be running under that
     * owner, as for checkpoints: an item whose fence fails, or whose job does not exist,
     * gets rc ERR_CONFLICT or ERR_NOT_FOUND and is skipped; the others are written. When
     * the job's webhook_mask has the type's bit, a pending delivery (due now) is inserted in
     * the same transaction. Returns 0 when the transaction committed (each item's rc says
     * what became of it), else the error (nothing written); ERR_INVALID for a bad item (a
     * type outside the enum, NULL data). Numbers stay unique and dense when another
     * instance appends to the same job at the same time. Items of one job keep their order;
     * PostgreSQL locks the jobs' rows in the order given, so callers give them sorted by
     * job_id (two batches never wait on each other in a cycle). store_event_append is the
     * one-item form.
     */
    int (*event_append_batch)(struct store *st, const char *owner,
                              struct store_event_item *items, size_t n, long long now_ms,
                              struct err *e);
    /* Up to `limit` (> 0) events of the job with seq > after_seq, ascending, and (status,
     * may be NULL) the job's status read in the same snapshot, so a reader that has seen
     * every event of a terminal job knows there will be no more. ERR_NOT_FOUND if no such
     * job. */
    int (*event_list)(struct store *st, const char *job_id, long long after_seq, size_t limit,
                      struct store_event_list *out, enum store_job_status *status,
                      struct err *e);

    /*
     * Webhook deliveries. Claims up to `max` due deliveries for `owner`: pending, with
     * next_attempt_ms <= now_ms and no live lease (another instance's lease expired, or
     * none); each becomes leased to `owner` until now_ms + lease_ms, attempts + 1. Rows come
     * back with every field, oldest due first. No delivery is claimed twice at once.
     */
    int (*delivery_claim)(struct store *st, const char *owner, long long now_ms,
                          long long lease_ms, size_t max, struct store_delivery_list *out,
                          struct err *e);
    /* Records the outcome of an attempt `owner` holds: state DELIVERED, FAILED (given up) or
     * PENDING again at next_attempt_ms (ignored otherwise); http_status (0: none) and error
     * (NULL: none) become last_status and last_error; attempts (> 0; 0 keeps the stored
     * count) becomes the number of attempts made, which a claim that only renewed a lapsed
     * lease of an attempt still running had counted once too often; the lease is cleared and
     * updated_at set from now_ms. ERR_CONFLICT if the delivery is not leased to owner any
     * more; ERR_NOT_FOUND if there is no such delivery (its job deleted or purged). */
    int (*delivery_done)(struct store *st, const char *job_id, long long seq, const char *owner,
                         enum store_delivery_state state, long attempts,
                         long long next_attempt_ms, int http_status, const char *error,
                         long long now_ms, struct err *e);
    /* Gives back every lease `owner` holds (graceful shutdown): the deliveries are due again
     * at once, for any instance. */
    int (*delivery_release)(struct store *st, const char *owner, struct err *e);
    /* Every delivery of the job, by seq (url, secret and event_data NULL); an empty list
     * when none. ERR_NOT_FOUND if no such job. */
    int (*delivery_list)(struct store *st, const char *job_id, struct store_delivery_list *out,
                         struct err *e);
    /* Pending deliveries in the store (for /metrics). */
    int (*delivery_pending_count)(struct store *st, long *out, struct err *e);

    /* A cheap round trip that proves the store answers (for /healthz): 0, or the error. */
    int (*ping)(struct store *st, struct err *e);

    /*
     * Conversation memory. A conversation is named by (crew_id, agent_key, user_id,
     * session_id), compared byte for byte as given (crew_id is any non-empty text, not
     * checked against the crews: memory has no foreign key and outlives a deleted crew).
     * crew_id and agent_key are required (ERR_INVALID when NULL or empty); user_id and
     * session_id may be NULL, which is stored and matched as "": NULL and "" name the same
     * conversation ("no user", "no session").
     */

    /* The last `max_turns` turns of the conversation, oldest first; an empty list (n 0,
     * items NULL) when it has none or max_turns is 0. Use SIZE_MAX for every turn. */
    int (*memory_get)(struct store *st, const char *crew_id, const char *agent_key,
                      const char *user_id, const char *session_id, size_t max_turns,
                      struct store_turn_list *out, struct err *e);
    /* Appends turns[0..n) in that order in one transaction (a user turn and the
     * assistant's answer go together: both or neither, and no other append to the same
     * conversation lands between them), then, in the same transaction, drops all but the
     * newest `keep_turns` turns of that conversation (0: keep all). Each role must be
     * "user" or "assistant" and each content non-NULL (ERR_INVALID, nothing written);
     * created_at is set from now_ms. n 0 only trims. */
    int (*memory_append)(struct store *st, const char *crew_id, const char *agent_key,
                         const char *user_id, const char *session_id,
                         const struct store_turn *turns, size_t n, size_t keep_turns,
                         long long now_ms, struct err *e);
    /* Removes every turn of the conversation; ERR_NOT_FOUND ("conversation not found")
     * when it had none. */
    int (*memory_clear)(struct store *st, const char *crew_id, const char *agent_key,
                        const char *user_id, const char *session_id, struct err *e);

    /*
     * The catalogs (user tools, custom agent classes). Names are compared byte for byte.
     */

    /* Inserts or replaces the row `name` with `definition` in one atomic step. A new row gets
     * created_at and updated_at from now_ms; a replaced one keeps its created_at and gets
     * updated_at from now_ms. *created (may be NULL) tells which happened. */
    int (*named_put)(struct store *st, enum store_catalog c, const char *name,
                     const char *definition, long long now_ms, bool *created, struct err *e);
    /* ERR_NOT_FOUND ("tool 'x' not found"), else *out is a new row. */
    int (*named_get)(struct store *st, enum store_catalog c, const char *name,
                     struct store_named **out, struct err *e);
    /* Every row of the catalog, ordered by name; an empty list when none. */
    int (*named_list)(struct store *st, enum store_catalog c, struct store_named_list *out,
                      struct err *e);
    /* ERR_NOT_FOUND ("tool 'x' not found") when no such row. */
    int (*named_delete)(struct store *st, enum store_catalog c, const char *name, struct err *e);
    void (*close)(struct store *st);
};

struct store {
    const struct store_ops *ops;
};

/*
 * Opens (creating when needed, with the parent directory of a SQLite file) and migrates the
 * store named by `url`. Returns 0, ERR_INVALID for a malformed URL, ERR_UNSUPPORTED for a
 * backend this build lacks, or ERR_STORE/ERR_IO with the backend's message.
 */
int store_open(const char *url, struct store **out, struct err *e);
void store_close(struct store *st);

/* The schema version this build migrates to. */
#define STORE_SCHEMA_VERSION 7 /* 1: crews; 2: jobs and job_steps; 3: memory; 4: tools and
                                  agent_classes; 5: job list and retention indexes;
                                  6: jobs' idempotency_key and request_hash; 7: job_events,
                                  webhook_deliveries, jobs' webhook columns */

static inline int store_crew_insert(struct store *st, const struct store_crew *c, struct err *e)
{
    return st->ops->crew_insert(st, c, e);
}
static inline int store_crew_update(struct store *st, const struct store_crew *c, struct err *e)
{
    return st->ops->crew_update(st, c, e);
}
static inline int store_crew_get(struct store *st, const char *ident, enum store_lookup how,
                                 struct store_crew **out, struct err *e)
{
    return st->ops->crew_get(st, ident, how, out, e);
}
static inline int store_crew_list(struct store *st, long limit, long offset,
                                  struct store_crew_page *out, struct err *e)
{
    return st->ops->crew_list(st, limit, offset, out, e);
}
static inline int store_crew_delete(struct store *st, const char *crew_id, struct err *e)
{
    return st->ops->crew_delete(st, crew_id, e);
}

static inline int store_job_insert(struct store *st, const struct store_job *j, struct err *e)
{
    return st->ops->job_insert(st, j, e);
}
static inline int store_job_find_by_key(struct store *st, const char *key,
                                        struct store_job **out, struct err *e)
{
    return st->ops->job_find_by_key(st, key, out, e);
}
static inline int store_job_get(struct store *st, const char *job_id, struct store_job **out,
                                struct err *e)
{
    return st->ops->job_get(st, job_id, out, e);
}
static inline int store_job_claim(struct store *st, const char *owner, long long now_ms,
                                  long long lease_ms, size_t max, struct store_job_batch *out,
                                  struct err *e)
{
    return st->ops->job_claim(st, owner, now_ms, lease_ms, max, out, e);
}
static inline int store_job_renew(struct store *st, const char *owner, long long now_ms,
                                  long long lease_ms, struct err *e)
{
    return st->ops->job_renew(st, owner, now_ms, lease_ms, e);
}
static inline int store_job_release(struct store *st, const char *owner, const char *job_id,
                                    struct err *e)
{
    return st->ops->job_release(st, owner, job_id, e);
}
static inline int store_job_step_put(struct store *st, const char *job_id, const char *owner,
                                     const char *key, const char *data,
                                     const struct store_event_in *ev, long long now_ms,
                                     struct err *e)
{
    return st->ops->job_step_put(st, job_id, owner, key, data, ev, now_ms, e);
}
static inline int store_job_steps_get(struct store *st, const char *job_id,
                                      struct store_step_list *out, struct err *e)
{
    return st->ops->job_steps_get(st, job_id, out, e);
}
static inline int store_job_finish(struct store *st, const char *job_id, const char *owner,
                                   enum store_job_status status, const char *result,
                                   const char *error, long long now_ms, struct err *e)
{
    return st->ops->job_finish(st, job_id, owner, status, result, error, now_ms, e);
}
static inline int store_job_list(struct store *st, const struct store_job_filter *filter,
                                 long limit, long offset, struct store_job_page *out,
                                 struct err *e)
{
    return st->ops->job_list(st, filter, limit, offset, out, e);
}
static inline int store_job_delete(struct store *st, const char *job_id, struct err *e)
{
    return st->ops->job_delete(st, job_id, e);
}
static inline int store_job_purge(struct store *st, long long older_than_ms, size_t max_rows,
                                  size_t *n_deleted, struct err *e)
{
    return st->ops->job_purge(st, older_than_ms, max_rows, n_deleted, e);
}

static inline int store_job_counts(struct store *st, long counts[5], struct err *e)
{
    return st->ops->job_counts(st, counts, e);
}
/* One event, as event_append_batch appends it: 0 and *seq (may be NULL), or ERR_CONFLICT
 * ("job 'X' is no longer leased to this instance"), ERR_NOT_FOUND ("job 'X' not found"),
 * ERR_INVALID, or the store's error. */
int store_event_append(struct store *st, const char *job_id, const char *owner,
                       const struct store_event_in *ev, long long now_ms, long long *seq,
                       struct err *e);

static inline int store_event_append_batch(struct store *st, const char *owner,
                                           struct store_event_item *items, size_t n,
                                           long long now_ms, struct err *e)
{
    return st->ops->event_append_batch(st, owner, items, n, now_ms, e);
}
static inline int store_event_list(struct store *st, const char *job_id, long long after_seq,
                                   size_t limit, struct store_event_list *out,
                                   enum store_job_status *status, struct err *e)
{
    return st->ops->event_list(st, job_id, after_seq, limit, out, status, e);
}
static inline int store_delivery_claim(struct store *st, const char *owner, long long now_ms,
                                       long long lease_ms, size_t max,
                                       struct store_delivery_list *out, struct err *e)
{
    return st->ops->delivery_claim(st, owner, now_ms, lease_ms, max, out, e);
}
static inline int store_delivery_done(struct store *st, const char *job_id, long long seq,
                                      const char *owner, enum store_delivery_state state,
                                      long attempts, long long next_attempt_ms, int http_status,
                                      const char *error, long long now_ms, struct err *e)
{
    return st->ops->delivery_done(st, job_id, seq, owner, state, attempts, next_attempt_ms,
                                  http_status, error, now_ms, e);
}
static inline int store_delivery_release(struct store *st, const char *owner, struct err *e)
{
    return st->ops->delivery_release(st, owner, e);
}
static inline int store_delivery_list(struct store *st, const char *job_id,
                                      struct store_delivery_list *out, struct err *e)
{
    return st->ops->delivery_list(st, job_id, out, e);
}
static inline int store_delivery_pending_count(struct store *st, long *out, struct err *e)
{
    return st->ops->delivery_pending_count(st, out, e);
}
static inline int store_ping(struct store *st, struct err *e)
{
    return st->ops->ping(st, e);
}

static inline int store_memory_get(struct store *st, const char *crew_id, const char *agent_key,
                                   const char *user_id, const char *session_id, size_t max_turns,
                                   struct store_turn_list *out, struct err *e)
{
    return st->ops->memory_get(st, crew_id, agent_key, user_id, session_id, max_turns, out, e);
}
static inline int store_memory_append(struct store *st, const char *crew_id, const char *agent_key,
                                      const char *user_id, const char *session_id,
                                      const struct store_turn *turns, size_t n, size_t keep_turns,
                                      long long now_ms, struct err *e)
{
    return st->ops->memory_append(st, crew_id, agent_key, user_id, session_id, turns, n, keep_turns,
                                  now_ms, e);
}
static inline int store_memory_clear(struct store *st, const char *crew_id, const char *agent_key,
                                     const char *user_id, const char *session_id, struct err *e)
{
    return st->ops->memory_clear(st, crew_id, agent_key, user_id, session_id, e);
}

/* The catalog ops under the names of what they hold. */
static inline int store_tool_put(struct store *st, const char *name, const char *definition,
                                 long long now_ms, bool *created, struct err *e)
{
    return st->ops->named_put(st, STORE_TOOLS, name, definition, now_ms, created, e);
}
static inline int store_tool_get(struct store *st, const char *name, struct store_named **out,
                                 struct err *e)
{
    return st->ops->named_get(st, STORE_TOOLS, name, out, e);
}
static inline int store_tool_list(struct store *st, struct store_named_list *out, struct err *e)
{
    return st->ops->named_list(st, STORE_TOOLS, out, e);
}
static inline int store_tool_delete(struct store *st, const char *name, struct err *e)
{
    return st->ops->named_delete(st, STORE_TOOLS, name, e);
}
static inline int store_agent_class_put(struct store *st, const char *name,
                                        const char *definition, long long now_ms, bool *created,
                                        struct err *e)
{
    return st->ops->named_put(st, STORE_AGENT_CLASSES, name, definition, now_ms, created, e);
}
static inline int store_agent_class_get(struct store *st, const char *name,
                                        struct store_named **out, struct err *e)
{
    return st->ops->named_get(st, STORE_AGENT_CLASSES, name, out, e);
}
static inline int store_agent_class_list(struct store *st, struct store_named_list *out,
                                         struct err *e)
{
    return st->ops->named_list(st, STORE_AGENT_CLASSES, out, e);
}
static inline int store_agent_class_delete(struct store *st, const char *name, struct err *e)
{
    return st->ops->named_delete(st, STORE_AGENT_CLASSES, name, e);
}

#endif
