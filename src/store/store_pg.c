/*
 * store_pg.c - the PostgreSQL backend of store.h, for several crewd instances sharing one
 * database.
 *
 * One libpq connection, synchronous calls, every statement prepared once at open (and again
 * after a reconnect). Migrations run at open, each in its own transaction under a fixed
 * advisory lock so that instances starting together migrate once. libpq's codes and SQLSTATEs
 * are translated into the err.h table here and go no further.
 *
 * Timestamps are TIMESTAMPTZ columns (so SQL can order and compare them) that go in as the
 * RFC 3339 strings of store_crew and come out through to_char() in exactly the API's form
 * "YYYY-MM-DDTHH:MM:SS.mmmZ". Formatting in SQL rather than parsing in C keeps the output
 * independent of the session's DateStyle and TimeZone and needs no timegm(), which POSIX lacks;
 * an input with milliseconds round-trips byte for byte because TIMESTAMPTZ keeps microseconds.
 * The definition and plan are TEXT, not JSONB, so the stored JSON comes back byte for byte.
 *
 * Used by one thread at a time, like every store.
 */
#include "store/store_pg.h"

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/url.h"

/* pg_advisory_xact_lock key serialising migrations: "crewd" in ASCII (0x6372657764), the same
 * for every build and instance. */
#define PG_MIGRATE_LOCK_KEY "427121014628"

struct pg_store {
    struct store base; /* first: a struct store * is a struct pg_store * */
    PGconn *conn;
};

/* ---- migrations ------------------------------------------------------------------------ */

/* Migration N is pg_migrations[N - 1]: statements run in order inside one transaction. */
static const char *const pg_migration_1[] = {
    "CREATE TABLE crews ("
    " crew_id UUID NOT NULL,"
    " name TEXT NOT NULL,"
    " description TEXT,"
    " execution_mode TEXT NOT NULL,"
    " agent_count INTEGER NOT NULL,"
    " definition TEXT NOT NULL,"
    " plan TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " updated_at TIMESTAMPTZ NOT NULL,"
    /* Insertion order: the list's tie-break between crews created in the same millisecond. */
    " seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    /* Named, because the conflict message is chosen by constraint name. */
    " CONSTRAINT crews_pkey PRIMARY KEY (crew_id),"
    " CONSTRAINT crews_name_key UNIQUE (name))",
    "CREATE INDEX crews_created_idx ON crews (created_at, seq)",
    NULL,
};

/*
 * 2: the job queue (DESIGN.md decision 2) and its checkpoints (decision 3). No foreign key to
 * crews: a job carries snapshots of its crew and outlives it. seq is the FIFO order. The
 * lease deadline is epoch milliseconds, so a claim compares integers given by the caller
 * rather than the server's clock. The claim index holds only live rows and serves the
 * claim's "pending, or running with an expired lease, ORDER BY seq" as one ordered scan:
 * the planner proves the query's condition implies the index predicate. It visits the
 * running jobs older than the first pending one (few: the ones in flight) and stops after
 * `max` matches, however many jobs wait or are finished. The owner index serves renew and
 * release. job_steps.seq is the order a step was first written; a replaced step keeps it.
 */
static const char *const pg_migration_2[] = {
    "CREATE TABLE jobs ("
    " job_id UUID NOT NULL,"
    " seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    " crew_id UUID NOT NULL,"
    " crew_name TEXT NOT NULL,"
    " status TEXT NOT NULL,"
    " execution_mode TEXT NOT NULL,"
    " request TEXT NOT NULL,"
    " definition TEXT NOT NULL,"
    " plan TEXT NOT NULL,"
    " metadata TEXT NOT NULL,"
    " result TEXT,"
    " error TEXT,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " started_at TIMESTAMPTZ,"
    " completed_at TIMESTAMPTZ,"
    " lease_owner TEXT,"
    " lease_expires_ms BIGINT,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " CONSTRAINT jobs_pkey PRIMARY KEY (job_id),"
    " CONSTRAINT jobs_status_check CHECK (status IN"
    " ('pending', 'running', 'completed', 'failed', 'cancelled')))",
    "CREATE INDEX jobs_claim_idx ON jobs (seq) WHERE status IN ('pending', 'running')",
    "CREATE INDEX jobs_owner_idx ON jobs (lease_owner) WHERE status = 'running'",
    "CREATE TABLE job_steps ("
    " job_id UUID NOT NULL,"
    " key TEXT NOT NULL,"
    " data TEXT NOT NULL,"
    " seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    " created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
    " CONSTRAINT job_steps_pkey PRIMARY KEY (job_id, key))",
    NULL,
};

/*
 * 3: conversation memory, one row per turn; seq (an identity) is the append order. The index
 * holds the four keys then seq, so "the newest n" is a backward scan of n entries and the
 * trim finds its bound the same way. crew_id is TEXT here, unlike the crews' and jobs' UUID:
 * the keys are compared as the caller gives them, so no cast can fail and the contract is
 * the same as SQLite's. user_id and session_id are '' for none, never NULL. No foreign key
 * to crews, like the jobs. The primary key gives DELETE a replica identity.
 */
static const char *const pg_migration_3[] = {
    "CREATE TABLE memory ("
    " seq BIGINT GENERATED ALWAYS AS IDENTITY,"
    " crew_id TEXT NOT NULL,"
    " agent_key TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " session_id TEXT NOT NULL,"
    " role TEXT NOT NULL,"
    " content TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " CONSTRAINT memory_pkey PRIMARY KEY (seq),"
    " CONSTRAINT memory_role_check CHECK (role IN ('user', 'assistant')))",
    "CREATE INDEX memory_conversation_idx ON memory"
    " (crew_id, agent_key, user_id, session_id, seq)",
    NULL,
};

/*
 * 4: the catalogs of user-defined HTTP tools and custom agent classes, keyed by name. The
 * definition is TEXT (JSON, secrets included), read back byte for byte. Crews do not
 * reference these rows: a crew is expanded from them when it is created.
 */
static const char *const pg_migration_4[] = {
    "CREATE TABLE tools ("
    " name TEXT NOT NULL,"
    " definition TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " updated_at TIMESTAMPTZ NOT NULL,"
    " CONSTRAINT tools_pkey PRIMARY KEY (name))",
    "CREATE TABLE agent_classes ("
    " name TEXT NOT NULL,"
    " definition TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " updated_at TIMESTAMPTZ NOT NULL,"
    " CONSTRAINT agent_classes_pkey PRIMARY KEY (name))",
    NULL,
};

/*
 * 5: the job list and retention. The list reads one index backwards in its order
 * (created_at, seq) and stops after the page: jobs_created_idx for all jobs, the crew and
 * status indexes for a filter. The purge walks the finished jobs by their end (completed_at
 * is set exactly when a job ends); the partial index leaves the live rows out.
 */
static const char *const pg_migration_5[] = {
    "CREATE INDEX jobs_created_idx ON jobs (created_at, seq)",
    "CREATE INDEX jobs_crew_created_idx ON jobs (crew_id, created_at, seq)",
    "CREATE INDEX jobs_status_created_idx ON jobs (status, created_at, seq)",
    "CREATE INDEX jobs_finished_idx ON jobs (completed_at) WHERE completed_at IS NOT NULL",
    NULL,
};

/*
 * 6: the Idempotency-Key of execute. The key is unique among the jobs that have one (a
 * partial unique index: most jobs have none, and the insert's conflict names it);
 * request_hash is the SHA-256 of the request body (hex). Deleting the row frees the key.
 */
static const char *const pg_migration_6[] = {
    "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT, ADD COLUMN request_hash TEXT",
    "CREATE UNIQUE INDEX jobs_idempotency_key_idx ON jobs (idempotency_key)"
    " WHERE idempotency_key IS NOT NULL",
    NULL,
};

/*
 * 7: events and webhooks (DESIGN.md decision 4). A job's events are numbered 1, 2, ... (seq,
 * dense), read in order by SSE streams; a delivery row per event the job's webhook asked
 * for, with its retry state and lease. The job keeps its webhook's url, secret and event
 * mask (0: none).
 */
static const char *const pg_migration_7[] = {
    "ALTER TABLE jobs ADD COLUMN webhook_url TEXT, ADD COLUMN webhook_secret TEXT,"
    " ADD COLUMN webhook_mask BIGINT NOT NULL DEFAULT 0",
    "CREATE TABLE job_events ("
    " job_id UUID NOT NULL,"
    " seq BIGINT NOT NULL,"
    " type TEXT NOT NULL,"
    " data TEXT NOT NULL,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " CONSTRAINT job_events_pkey PRIMARY KEY (job_id, seq))",
    "CREATE TABLE webhook_deliveries ("
    " job_id UUID NOT NULL,"
    " seq BIGINT NOT NULL,"
    " type TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms BIGINT NOT NULL,"
    " lease_owner TEXT,"
    " lease_expires_ms BIGINT NOT NULL DEFAULT 0,"
    " last_status INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " created_at TIMESTAMPTZ NOT NULL,"
    " updated_at TIMESTAMPTZ NOT NULL,"
    " CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (job_id, seq))",
    "CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_ms)"
    " WHERE state = 'pending'",
    NULL,
};

static const char *const *const pg_migrations[] = {pg_migration_1, pg_migration_2, pg_migration_3,
                                                   pg_migration_4, pg_migration_5, pg_migration_6,
                                                   pg_migration_7};

_Static_assert(sizeof pg_migrations / sizeof pg_migrations[0] == STORE_SCHEMA_VERSION,
               "one migration per schema version");

/* ---- prepared statements --------------------------------------------------------------- */

/* The columns every crew read returns, in the order pg_row_to_crew() expects. */
#define PG_TS_FMT "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"
#define PG_CREW_COLS                                                                               \
    "crew_id::text, name, description, execution_mode, agent_count, definition, plan, "            \
    "to_char(created_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS created_rfc3339, "                   \
    "to_char(updated_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS updated_rfc3339"

/* The columns every job read returns, in the order pg_row_to_job() expects. */
#define PG_JOB_COLS                                                                                \
    "job_id::text AS job_id, crew_id::text AS crew_id, crew_name, status, execution_mode,"        \
    " request, definition, plan, metadata, result, error,"                                         \
    " to_char(created_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS created_rfc3339,"                   \
    " to_char(started_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS started_rfc3339,"                   \
    " to_char(completed_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS completed_rfc3339, attempts,"    \
    " idempotency_key, request_hash, webhook_url, webhook_secret, webhook_mask"

/* The columns of a claimed delivery (pg_row_to_delivery()): the row (alias c), its event's
 * data and time (ev) and its job's webhook (j). The list's leave out data, url and secret. */
#define PG_DELIVERY_HEAD                                                                           \
    "c.job_id::text AS job_id, c.seq, c.type, c.state, c.attempts, c.next_attempt_ms,"           \
    " c.last_status, c.last_error,"
#define PG_DELIVERY_TAIL                                                                           \
    " to_char(c.created_at AT TIME ZONE 'UTC', " PG_TS_FMT "),"                                     \
    " to_char(c.updated_at AT TIME ZONE 'UTC', " PG_TS_FMT ")"
#define PG_DELIVERY_COLS                                                                           \
    PG_DELIVERY_HEAD " ev.data, to_char(ev.created_at AT TIME ZONE 'UTC', " PG_TS_FMT "),"        \
    " j.webhook_url, j.webhook_secret," PG_DELIVERY_TAIL
#define PG_DELIVERY_LIST_COLS                                                                      \
    PG_DELIVERY_HEAD " NULL, to_char(ev.created_at AT TIME ZONE 'UTC', " PG_TS_FMT "),"           \
    " NULL, NULL," PG_DELIVERY_TAIL

/* The conversation a memory statement is about: parameters $1..$4. */
#define PG_MEMORY_KEY "crew_id = $1 AND agent_key = $2 AND user_id = $3 AND session_id = $4"

/* pg_advisory_xact_lock namespace of memory appends: "crew" in ASCII. The two-key form's
 * space does not overlap the one-key form of PG_MIGRATE_LOCK_KEY. */
#define PG_MEMORY_LOCK_NS "1668441463"

/* Shared by both finish statements: $1 job_id, $2 status, $3 result, $4 error, $5 time. */
#define PG_FINISH_SET                                                                              \
    "UPDATE jobs SET status = $2, result = $3, error = $4, completed_at = $5::timestamptz,"       \
    " lease_owner = NULL, lease_expires_ms = NULL WHERE job_id = $1::uuid"
/* What a finish returns: the mask that says whether the terminal event gets a delivery. */
#define PG_FINISH_RETURNING " RETURNING webhook_mask"

enum pg_stmt {
    PG_INSERT,
    PG_UPDATE,
    PG_GET_BY_NAME,
    PG_GET_BY_ID,
    PG_GET_BY_NAME_OR_ID,
    PG_LIST,
    PG_DELETE,
    PG_JOB_INSERT,
    PG_JOB_GET,
    PG_JOB_BY_KEY,
    PG_JOB_STATUS,
    PG_JOB_CLAIM,
    PG_JOB_RENEW,
    PG_JOB_RELEASE,
    PG_STEP_PUT,
    PG_STEPS_GET,
    PG_JOB_FINISH_OWNED,
    PG_JOB_FINISH_ANY,
    PG_JOB_DELETE,
    PG_JOB_PURGE,
    PG_JOB_FENCE,
    PG_EVENT_INSERT,
    PG_EVENT_LIST,
    PG_DELIVERY_CLAIM,
    PG_DELIVERY_DONE,
    PG_DELIVERY_EXISTS,
    PG_DELIVERY_RELEASE,
    PG_DELIVERY_LIST,
    PG_MEMORY_GET,
    PG_MEMORY_LOCK,
    PG_MEMORY_INSERT,
    PG_MEMORY_TRIM,
    PG_MEMORY_CLEAR,
    /* The catalogs: one block of PG_NAMED_N_ statements per catalog (pg_named_stmt()). */
    PG_NAMED_FIRST_,
    PG_N_STMTS = PG_NAMED_FIRST_ + 2 * 4,
};

enum pg_named_op { PG_NAMED_GET, PG_NAMED_LIST, PG_NAMED_PUT, PG_NAMED_DELETE, PG_NAMED_N_ };
_Static_assert(PG_NAMED_N_ == 4, "PG_N_STMTS counts 4 statements per catalog");

#define PG_NAMED_COLS                                                                              \
    "name, definition, to_char(created_at AT TIME ZONE 'UTC', " PG_TS_FMT "),"                    \
    " to_char(updated_at AT TIME ZONE 'UTC', " PG_TS_FMT ")"
/* The put is one statement, so two instances putting the same name at once cannot both
 * insert; xmax is 0 exactly on a row version this statement inserted, not updated. */
#define PG_NAMED_SQL(table)                                                                        \
    {"crewd_" table "_get", "SELECT " PG_NAMED_COLS " FROM " table " WHERE name = $1"},            \
        {"crewd_" table "_list", "SELECT " PG_NAMED_COLS " FROM " table " ORDER BY name COLLATE \"C\""}, \
        {"crewd_" table "_put",                                                                    \
         "INSERT INTO " table " (name, definition, created_at, updated_at)"                        \
         " VALUES ($1, $2, $3::timestamptz, $3::timestamptz)"                                      \
         " ON CONFLICT (name) DO UPDATE SET definition = EXCLUDED.definition,"                     \
         " updated_at = EXCLUDED.updated_at RETURNING (xmax = 0) AS inserted"},                    \
        {"crewd_" table "_delete", "DELETE FROM " table " WHERE name = $1"}

/* Indexed by enum store_catalog, then enum pg_named_op. */
static const struct {
    const char *name;
    const char *sql;
} pg_named_stmts[2][PG_NAMED_N_] = {{PG_NAMED_SQL("tools")}, {PG_NAMED_SQL("agent_classes")}};

static const struct {
    const char *name;
    const char *sql;
} pg_stmts[PG_N_STMTS] = {
    [PG_INSERT] = {"crewd_crew_insert",
                   "INSERT INTO crews (crew_id, name, description, execution_mode, agent_count,"
                   " definition, plan, created_at, updated_at)"
                   " VALUES ($1::uuid, $2, $3, $4, $5::integer, $6, $7, $8::timestamptz,"
                   " $9::timestamptz)"},
    [PG_UPDATE] = {"crewd_crew_update",
                   "UPDATE crews SET name = $2, description = $3, execution_mode = $4,"
                   " agent_count = $5::integer, definition = $6, plan = $7,"
                   " updated_at = $8::timestamptz WHERE crew_id = $1::uuid"},
    [PG_GET_BY_NAME] = {"crewd_crew_get_by_name",
                        "SELECT " PG_CREW_COLS " FROM crews WHERE name = $1"},
    [PG_GET_BY_ID] = {"crewd_crew_get_by_id",
                      "SELECT " PG_CREW_COLS " FROM crews WHERE crew_id = $1::uuid"},
    /* One round trip: $2 is NULL when the ident is no UUID, and a name match sorts first. */
    [PG_GET_BY_NAME_OR_ID] = {"crewd_crew_get_by_name_or_id",
                              "SELECT " PG_CREW_COLS " FROM crews"
                              " WHERE name = $1 OR crew_id = $2::uuid"
                              " ORDER BY (name = $1) DESC LIMIT 1"},
    /* The count and the page come from one snapshot; the LEFT JOIN keeps one row (with NULL
     * crew columns) when the page is empty, so the total still arrives. The inner ORDER BY
     * names the table so that it sorts by the TIMESTAMPTZ column and seq (the index), not
     * by the same-named text outputs. */
    [PG_LIST] = {"crewd_crew_list",
                 "SELECT c.*, t.total FROM (SELECT count(*) AS total FROM crews) t"
                 " LEFT JOIN LATERAL (SELECT " PG_CREW_COLS ", created_at AS k1, seq AS k2"
                 " FROM crews ORDER BY crews.created_at, crews.seq"
                 " LIMIT $1::bigint OFFSET $2::bigint)"
                 " c ON true ORDER BY c.k1, c.k2"},
    [PG_DELETE] = {"crewd_crew_delete", "DELETE FROM crews WHERE crew_id = $1::uuid"},
    [PG_JOB_INSERT] = {"crewd_job_insert",
                       "INSERT INTO jobs (job_id, crew_id, crew_name, status, execution_mode,"
                       " request, definition, plan, metadata, created_at, idempotency_key,"
                       " request_hash, webhook_url, webhook_secret, webhook_mask)"
                       " VALUES ($1::uuid, $2::uuid, $3, 'pending', $4, $5, $6, $7, $8,"
                       " $9::timestamptz, $10, $11, $12, $13, $14::bigint)"},
    [PG_JOB_GET] = {"crewd_job_get", "SELECT " PG_JOB_COLS " FROM jobs WHERE job_id = $1::uuid"},
    [PG_JOB_BY_KEY] = {"crewd_job_by_key",
                       "SELECT " PG_JOB_COLS " FROM jobs WHERE idempotency_key = $1"},
    [PG_JOB_STATUS] = {"crewd_job_status", "SELECT status FROM jobs WHERE job_id = $1::uuid"},
    /*
     * One statement: $1 owner, $2 now_ms, $3 lease deadline, $4 started_at, $5 max. SKIP
     * LOCKED lets claimers on other instances pass each other instead of queueing on the
     * same rows; a row another claimer updated meanwhile is re-checked (READ COMMITTED) and
     * dropped when its new version is no longer claimable, so no job is taken twice. The
     * CTE evaluates the locking SELECT exactly once; RETURNING has no order, hence the
     * final sort.
     */
    [PG_JOB_CLAIM] = {"crewd_job_claim",
                      "WITH picked AS (SELECT job_id FROM jobs"
                      " WHERE status = 'pending'"
                      " OR (status = 'running' AND lease_expires_ms < $2::bigint)"
                      " ORDER BY seq LIMIT $5::bigint FOR UPDATE SKIP LOCKED),"
                      " claimed AS (UPDATE jobs SET status = 'running', lease_owner = $1,"
                      " lease_expires_ms = $3::bigint,"
                      " started_at = COALESCE(started_at, $4::timestamptz),"
                      " attempts = attempts + 1"
                      " WHERE job_id IN (SELECT job_id FROM picked)"
                      " RETURNING " PG_JOB_COLS ", seq AS claim_seq)"
                      " SELECT * FROM claimed ORDER BY claim_seq"},
    /* Renew and release lock their rows in job_id order, the order every multi-job writer
     * uses (store.h): an instance's batch of events locks the rows of jobs it believes it
     * holds, which may meanwhile be another's, and two writers locking the same rows in
     * different orders would deadlock (PostgreSQL then aborts one of them). */
    [PG_JOB_RENEW] = {"crewd_job_renew", "UPDATE jobs SET lease_expires_ms = $2::bigint"
                                         " WHERE job_id IN (SELECT job_id FROM jobs"
                                         " WHERE status = 'running' AND lease_owner = $1"
                                         " ORDER BY job_id FOR UPDATE)"},
    /* The owner is cleared too, so that a late write of the instance that let go is fenced
     * off even before another instance claims the job. */
    [PG_JOB_RELEASE] = {"crewd_job_release",
                        "UPDATE jobs SET lease_owner = NULL, lease_expires_ms = 0"
                        " WHERE job_id IN (SELECT job_id FROM jobs"
                        " WHERE status = 'running' AND lease_owner = $1"
                        " AND ($2::uuid IS NULL OR job_id = $2::uuid)"
                        " ORDER BY job_id FOR UPDATE)"},
    /* FOR SHARE makes the fence exact: a claim of this job in flight is waited for, and
     * the row is re-checked against its new owner before anything is written. */
    [PG_STEP_PUT] = {"crewd_step_put",
                     "INSERT INTO job_steps (job_id, key, data)"
                     " SELECT job_id, $3, $4 FROM jobs WHERE job_id = $1::uuid"
                     " AND status = 'running' AND lease_owner = $2 FOR SHARE"
                     " ON CONFLICT (job_id, key) DO UPDATE SET data = EXCLUDED.data"},
    [PG_STEPS_GET] = {"crewd_steps_get",
                      "SELECT key, data FROM job_steps WHERE job_id = $1::uuid ORDER BY seq"},
    [PG_JOB_FINISH_OWNED] = {"crewd_job_finish_owned",
                             PG_FINISH_SET " AND status = 'running' AND lease_owner = $6"
                             PG_FINISH_RETURNING},
    [PG_JOB_FINISH_ANY] = {"crewd_job_finish_any",
                           PG_FINISH_SET " AND status IN ('pending', 'running')"
                           PG_FINISH_RETURNING},
    /* One statement: the job and its checkpoints, events and deliveries go together, and
     * only a finished job. */
    [PG_JOB_DELETE] = {"crewd_job_delete",
                       "WITH j AS (DELETE FROM jobs WHERE job_id = $1::uuid"
                       " AND status NOT IN ('pending', 'running') RETURNING job_id),"
                       " s AS (DELETE FROM job_steps WHERE job_id IN (SELECT job_id FROM j)),"
                       " e AS (DELETE FROM job_events WHERE job_id IN (SELECT job_id FROM j)),"
                       " d AS (DELETE FROM webhook_deliveries"
                       " WHERE job_id IN (SELECT job_id FROM j))"
                       " SELECT count(*) FROM j"},
    /* $1 cutoff, $2 batch. SKIP LOCKED: two instances purging at once take different
     * rows instead of waiting on each other. */
    [PG_JOB_PURGE] = {"crewd_job_purge",
                      "WITH v AS (SELECT job_id FROM jobs WHERE completed_at IS NOT NULL"
                      " AND completed_at < $1::timestamptz"
                      " AND status NOT IN ('pending', 'running')"
                      " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w"
                      " WHERE w.job_id = jobs.job_id AND w.state = 'pending')"
                      " ORDER BY completed_at LIMIT $2::bigint FOR UPDATE SKIP LOCKED),"
                      " s AS (DELETE FROM job_steps WHERE job_id IN (SELECT job_id FROM v)),"
                      " e AS (DELETE FROM job_events WHERE job_id IN (SELECT job_id FROM v)),"
                      " d AS (DELETE FROM webhook_deliveries"
                      " WHERE job_id IN (SELECT job_id FROM v)),"
                      " j AS (DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM v)"
                      " RETURNING 1)"
                      " SELECT count(*) FROM j"},
    /*
     * $1 job_id, $2 owner (NULL: no fence): the job's webhook mask and whether the fence
     * holds. FOR UPDATE holds the row until the transaction ends, which is what makes event
     * numbers unique: a second append (or a finish, whose UPDATE takes the same lock) to the
     * job waits here, and its next statement, under READ COMMITTED a new snapshot, sees the
     * first one's event. The fence is read from the row version the lock returned.
     */
    [PG_JOB_FENCE] = {"crewd_job_fence",
                      "SELECT webhook_mask, ($2::text IS NULL OR (status = 'running'"
                      " AND lease_owner = $2::text)) FROM jobs WHERE job_id = $1::uuid"
                      " FOR UPDATE"},
    /* $1 job_id, $2 type, $3 data, $4 created_at, $5 now_ms (the delivery is due at once),
     * $6 whether the webhook asked for the type. Run after PG_JOB_FENCE or a finish in the
     * same transaction (never in one statement with them: its snapshot would predate the
     * lock wait and could miss the event of the append it waited for). */
    [PG_EVENT_INSERT] = {"crewd_event_insert",
                         "WITH ev AS (INSERT INTO job_events (job_id, seq, type, data, created_at)"
                         " SELECT $1::uuid, COALESCE(max(seq), 0) + 1, $2, $3, $4::timestamptz"
                         " FROM job_events WHERE job_id = $1::uuid RETURNING seq),"
                         " d AS (INSERT INTO webhook_deliveries (job_id, seq, type, state,"
                         " attempts, next_attempt_ms, lease_expires_ms, created_at, updated_at)"
                         " SELECT $1::uuid, seq, $2, 'pending', 0, $5::bigint, 0,"
                         " $4::timestamptz, $4::timestamptz FROM ev WHERE $6::boolean)"
                         " SELECT seq FROM ev"},
    /* One statement, one snapshot: the job's status rides on every row, and the LEFT JOIN
     * keeps one row (event columns NULL) when there are no events, so "no such job" (no
     * row) is told from "no events". */
    [PG_EVENT_LIST] = {"crewd_event_list",
                       "SELECT j.status, e.seq, e.type, e.data,"
                       " to_char(e.created_at AT TIME ZONE 'UTC', " PG_TS_FMT ")"
                       " FROM jobs j LEFT JOIN LATERAL (SELECT seq, type, data, created_at"
                       " FROM job_events WHERE job_id = j.job_id AND seq > $2::bigint"
                       " ORDER BY seq LIMIT $3::bigint) e ON true"
                       " WHERE j.job_id = $1::uuid ORDER BY e.seq"},
    /*
     * $1 owner, $2 now_ms, $3 lease deadline, $4 updated_at, $5 max. As the job claim: SKIP
     * LOCKED lets claimers pass each other, and a row another claimer leased meanwhile is
     * re-checked and dropped, so none is claimed twice. A lease is live until its deadline
     * has passed. The final join reads each row's event and webhook in the same snapshot.
     */
    [PG_DELIVERY_CLAIM] = {"crewd_delivery_claim",
                           "WITH picked AS (SELECT job_id, seq FROM webhook_deliveries"
                           " WHERE state = 'pending' AND next_attempt_ms <= $2::bigint"
                           " AND (lease_owner IS NULL OR lease_expires_ms < $2::bigint)"
                           " ORDER BY next_attempt_ms, created_at, job_id, seq"
                           " LIMIT $5::bigint FOR UPDATE SKIP LOCKED),"
                           " c AS (UPDATE webhook_deliveries w SET lease_owner = $1,"
                           " lease_expires_ms = $3::bigint, attempts = w.attempts + 1,"
                           " updated_at = $4::timestamptz FROM picked p"
                           " WHERE w.job_id = p.job_id AND w.seq = p.seq RETURNING w.*)"
                           " SELECT " PG_DELIVERY_COLS " FROM c"
                           " JOIN job_events ev ON ev.job_id = c.job_id AND ev.seq = c.seq"
                           " JOIN jobs j ON j.job_id = c.job_id"
                           " ORDER BY c.next_attempt_ms, c.created_at, c.job_id, c.seq"},
    /* $1 job_id, $2 seq, $3 owner, $4 state, $5 next attempt (pending only), $6 HTTP
     * status, $7 error, $8 updated_at. Fenced on the lease owner in the same statement. */
    [PG_DELIVERY_DONE] = {"crewd_delivery_done",
                          "UPDATE webhook_deliveries SET state = $4::text,"
                          " attempts = CASE WHEN $9::integer > 0 THEN $9::integer"
                          " ELSE attempts END,"
                          " next_attempt_ms = CASE WHEN $4::text = 'pending' THEN $5::bigint"
                          " ELSE next_attempt_ms END, last_status = $6::integer,"
                          " last_error = $7, lease_owner = NULL, lease_expires_ms = 0,"
                          " updated_at = $8::timestamptz"
                          " WHERE job_id = $1::uuid AND seq = $2::bigint AND lease_owner = $3"},
    [PG_DELIVERY_EXISTS] = {"crewd_delivery_exists",
                            "SELECT 1 FROM webhook_deliveries"
                            " WHERE job_id = $1::uuid AND seq = $2::bigint"},
    /* Only pending rows hold leases (done clears them): the partial index serves the scan. */
    [PG_DELIVERY_RELEASE] = {"crewd_delivery_release",
                             "UPDATE webhook_deliveries SET lease_owner = NULL,"
                             " lease_expires_ms = 0 WHERE state = 'pending' AND lease_owner = $1"},
    /* As the event list: one snapshot, one row with NULL columns when the job has none. */
    [PG_DELIVERY_LIST] = {"crewd_delivery_list",
                          "SELECT d.* FROM jobs j LEFT JOIN LATERAL (SELECT "
                          PG_DELIVERY_LIST_COLS " FROM webhook_deliveries c"
                          " LEFT JOIN job_events ev ON ev.job_id = c.job_id AND ev.seq = c.seq"
                          " WHERE c.job_id = j.job_id) d ON true"
                          " WHERE j.job_id = $1::uuid ORDER BY d.seq"},
    [PG_MEMORY_GET] = {"crewd_memory_get",
                       "SELECT role, content,"
                       " to_char(created_at AT TIME ZONE 'UTC', " PG_TS_FMT ")"
                       " FROM memory WHERE " PG_MEMORY_KEY " ORDER BY seq DESC LIMIT $5::bigint"},
    /* Serializes the appends to one conversation (other conversations only on a hash
     * collision): under READ COMMITTED two appends would otherwise draw interleaved seq
     * values and each trim would count without the other's turns. */
    [PG_MEMORY_LOCK] = {"crewd_memory_lock",
                        "SELECT pg_advisory_xact_lock(" PG_MEMORY_LOCK_NS ","
                        " hashtext(concat_ws(chr(31), $1::text, $2::text, $3::text, $4::text)))"},
    [PG_MEMORY_INSERT] = {"crewd_memory_insert",
                          "INSERT INTO memory (crew_id, agent_key, user_id, session_id, role,"
                          " content, created_at)"
                          " VALUES ($1, $2, $3, $4, $5, $6, $7::timestamptz)"},
    /* $5 keep_turns (> 0): every turn at or below the (keep + 1)-th newest goes; with no
     * such turn the bound is NULL and nothing matches. */
    [PG_MEMORY_TRIM] = {"crewd_memory_trim",
                        "DELETE FROM memory WHERE " PG_MEMORY_KEY " AND seq <= (SELECT seq"
                        " FROM memory WHERE " PG_MEMORY_KEY
                        " ORDER BY seq DESC OFFSET $5::bigint LIMIT 1)"},
    [PG_MEMORY_CLEAR] = {"crewd_memory_clear", "DELETE FROM memory WHERE " PG_MEMORY_KEY},
};

/* ---- errors ---------------------------------------------------------------------------- */

/* libpq messages end with a newline (sometimes several lines); keep the first line. */
static void pg_first_line(const char *msg, char *out, size_t cap)
{
    size_t n = strcspn(msg ? msg : "", "\n");
    if (n >= cap)
        n = cap - 1;
    memcpy(out, msg ? msg : "", n);
    out[n] = '\0';
}

/* Overwrites every occurrence of `secret` (when non-empty) in `msg` with asterisks. */
static void pg_redact(char *msg, const char *secret, size_t secret_len)
{
    if (secret == NULL || secret_len == 0)
        return;
    for (char *p = msg; (p = strstr(p, secret)) != NULL;) {
        /* strstr needs a NUL-terminated needle; callers pass one of exactly secret_len. */
        memset(p, '*', secret_len);
        p += secret_len;
    }
}

/*
 * libpq does not echo a password in its connection errors, but a malformed URI is quoted in
 * part ("invalid percent-encoded token: ..."), which could include one. Mask the password
 * wherever it may be written: as libpq parsed it, and raw from the URI's userinfo and query.
 */
static void pg_scrub_conn_msg(char *msg, const char *url)
{
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    if (opts != NULL) {
        for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
            if (strcmp(o->keyword, "password") == 0 && o->val != NULL)
                pg_redact(msg, o->val, strlen(o->val));
        }
        PQconninfoFree(opts);
    }
    char raw[ERR_MSG_MAX];
    const char *user;
    size_t user_len;
    if (url_userinfo(url, &user, &user_len)) {
        const char *colon = memchr(user, ':', user_len);
        size_t n = colon ? user_len - (size_t)(colon + 1 - user) : 0;
        if (colon != NULL && n < sizeof raw) {
            memcpy(raw, colon + 1, n);
            raw[n] = '\0';
            pg_redact(msg, raw, n);
        }
    }
    for (const char *p = strstr(url, "password="); p != NULL; p = strstr(p + 1, "password=")) {
        const char *v = p + strlen("password=");
        size_t n = strcspn(v, "&");
        if (n < sizeof raw) {
            memcpy(raw, v, n);
            raw[n] = '\0';
            pg_redact(msg, raw, n);
        }
    }
}

/* Translates a failed result (or a NULL one: out of memory or connection lost) to err.h. */
static int pg_fail(struct pg_store *s, const PGresult *res, const char *what, struct err *e)
{
    char line[ERR_MSG_MAX];
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    pg_first_line(primary ? primary : PQerrorMessage(s->conn), line, sizeof line);
    /* Data exceptions (class 22, a malformed timestamp) are ERR_STORE like the rest: every
     * value a row carries was generated or validated by crewd before it reached the store. */
    if (res == NULL && PQstatus(s->conn) != CONNECTION_BAD)
        return err_set(e, ERR_NOMEM, "store: %s: out of memory", what);
    return err_set(e, ERR_STORE, "store: postgres: %s: %s", what, line[0] ? line : "failed");
}

/* ERR_CONFLICT naming the field whose unique constraint `res` violated, or pg_fail(). */
static int pg_fail_write(struct pg_store *s, const PGresult *res, const struct store_crew *crew,
                         const char *what, struct err *e)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (state == NULL || strcmp(state, "23505") != 0)
        return pg_fail(s, res, what, e);
    const char *constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
    if (constraint != NULL && strcmp(constraint, "crews_pkey") == 0)
        return err_set(e, ERR_CONFLICT, "crew_id: a crew with id '%s' already exists",
                       crew->crew_id);
    return err_set(e, ERR_CONFLICT, "name: a crew named '%s' already exists", crew->name);
}

/* libpq prints server notices ("relation ... already exists, skipping") to stderr by default;
 * they are routine here, so they go to the log at debug level instead. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    char line[ERR_MSG_MAX];
    pg_first_line(message, line, sizeof line);
    log_debug("store", "postgres: %s", line);
}

/* ---- connection ------------------------------------------------------------------------ */

static int pg_prepare_all(struct pg_store *s, struct err *e)
{
    int rc = 0;
    for (int i = 0; i < PG_N_STMTS && rc == 0; i++) {
        const char *name, *sql;
        if (i < PG_NAMED_FIRST_) {
            name = pg_stmts[i].name;
            sql = pg_stmts[i].sql;
        } else {
            name = pg_named_stmts[(i - PG_NAMED_FIRST_) / PG_NAMED_N_]
                                 [(i - PG_NAMED_FIRST_) % PG_NAMED_N_].name;
            sql = pg_named_stmts[(i - PG_NAMED_FIRST_) / PG_NAMED_N_]
                                [(i - PG_NAMED_FIRST_) % PG_NAMED_N_].sql;
        }
        PGresult *res = PQprepare(s->conn, name, sql, 0, NULL);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = pg_fail(s, res, "prepare", e);
        PQclear(res);
    }
    return rc;
}

/*
 * A connection that dropped (server restart, failover) is re-established once before a call,
 * so that one lost connection does not make the store useless until crewd restarts. Prepared
 * statements live in the session and are prepared again.
 */
static int pg_ensure_conn(struct pg_store *s, struct err *e)
{
    if (PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    PQreset(s->conn);
    if (PQstatus(s->conn) != CONNECTION_OK) {
        char line[ERR_MSG_MAX];
        pg_first_line(PQerrorMessage(s->conn), line, sizeof line);
        /* The URL is gone by now; the password libpq holds is what must not show. */
        const char *pw = PQpass(s->conn);
        if (pw != NULL)
            pg_redact(line, pw, strlen(pw));
        return err_set(e, ERR_STORE, "store: postgres: reconnect failed: %s", line);
    }
    if (PQsetClientEncoding(s->conn, "UTF8") != 0)
        return pg_fail(s, NULL, "set client encoding", e);
    return pg_prepare_all(s, e);
}

/* Runs a parameterless command expecting no rows (DDL, BEGIN, COMMIT). */
static int pg_exec(struct pg_store *s, const char *sql, const char *what, struct err *e)
{
    PGresult *res = PQexec(s->conn, sql);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = pg_fail(s, res, what, e);
    PQclear(res);
    return rc;
}

/*
 * One step of migration, in one transaction under the advisory lock: creates schema_version
 * if needed, reads the current version, refuses a newer database, applies the next migration.
 * *done is set when the database is at STORE_SCHEMA_VERSION.
 */
static int pg_migrate_step(struct pg_store *s, bool *done, struct err *e)
{
    int rc = pg_exec(s, "BEGIN", "migrate: begin", e);
    PGresult *res = NULL;
    if (rc != 0)
        goto out;
    /* Taken before the CREATE TABLE IF NOT EXISTS, which is not safe against a concurrent
     * CREATE of the same table. */
    rc = pg_exec(s, "SELECT pg_advisory_xact_lock(" PG_MIGRATE_LOCK_KEY ")", "migrate: lock", e);
    if (rc != 0)
        goto out;
    rc = pg_exec(s,
                 "CREATE TABLE IF NOT EXISTS schema_version ("
                 " version INTEGER PRIMARY KEY,"
                 " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                 "migrate: schema_version", e);
    if (rc != 0)
        goto out;
    res = PQexec(s->conn, "SELECT COALESCE(max(version), 0) FROM schema_version");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = pg_fail(s, res, "migrate: read version", e);
        goto out;
    }
    long version = strtol(PQgetvalue(res, 0, 0), NULL, 10);
    if (version > STORE_SCHEMA_VERSION) {
        rc = err_set(e, ERR_STORE,
                     "store: postgres: the database is at schema version %ld, newer than this "
                     "crewd's %d; run a newer crewd",
                     version, STORE_SCHEMA_VERSION);
        goto out;
    }
    if (version == STORE_SCHEMA_VERSION) {
        *done = true;
        rc = pg_exec(s, "COMMIT", "migrate: commit", e);
        goto out;
    }
    for (const char *const *sql = pg_migrations[version]; *sql != NULL; sql++) {
        rc = pg_exec(s, *sql, "migrate", e);
        if (rc != 0) {
            err_prefix(e, "migration %ld", version + 1);
            goto out;
        }
    }
    char insert[96];
    snprintf(insert, sizeof insert, "INSERT INTO schema_version (version) VALUES (%ld)",
             version + 1);
    rc = pg_exec(s, insert, "migrate: record version", e);
    if (rc != 0)
        goto out;
    rc = pg_exec(s, "COMMIT", "migrate: commit", e);
out:
    PQclear(res);
    if (rc != 0 && PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(s->conn, "ROLLBACK");
        PQclear(rb);
    }
    return rc;
}

static int pg_migrate(struct pg_store *s, struct err *e)
{
    bool done = false;
    int rc = 0;
    /* Bounded: each step either applies one migration or finishes. */
    for (int i = 0; i <= STORE_SCHEMA_VERSION && rc == 0 && !done; i++)
        rc = pg_migrate_step(s, &done, e);
    if (rc == 0 && !done)
        rc = err_set(e, ERR_INTERNAL, "store: postgres: migrations did not converge");
    return rc;
}

/* ---- rows ------------------------------------------------------------------------------ */

static int pg_dup_field(const PGresult *res, int row, int col, char **out)
{
    *out = NULL;
    if (PQgetisnull(res, row, col))
        return 0;
    *out = strdup(PQgetvalue(res, row, col));
    return *out ? 0 : ERR_NOMEM;
}

static int pg_copy_fixed(const PGresult *res, int row, int col, char *out, size_t cap)
{
    const char *v = PQgetvalue(res, row, col);
    size_t n = strlen(v);
    if (n >= cap)
        return ERR_STORE;
    memcpy(out, v, n + 1);
    return 0;
}

/* Builds a row from columns first..first+8 (PG_CREW_COLS); `full` includes definition and plan. */
static int pg_row_to_crew(const PGresult *res, int row, int first, bool full,
                          struct store_crew **out, struct err *e)
{
    int rc = 0;
    struct store_crew *crew = calloc(1, sizeof *crew);
    *out = NULL;
    if (crew == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    if (pg_copy_fixed(res, row, first + 0, crew->crew_id, sizeof crew->crew_id) != 0 ||
        pg_copy_fixed(res, row, first + 7, crew->created_at, sizeof crew->created_at) != 0 ||
        pg_copy_fixed(res, row, first + 8, crew->updated_at, sizeof crew->updated_at) != 0) {
        rc = err_set(e, ERR_STORE, "store: postgres: unexpected crew_id or timestamp form");
        goto out;
    }
    if (pg_dup_field(res, row, first + 1, &crew->name) != 0 ||
        pg_dup_field(res, row, first + 2, &crew->description) != 0 ||
        pg_dup_field(res, row, first + 3, &crew->execution_mode) != 0 ||
        (full && pg_dup_field(res, row, first + 5, &crew->definition) != 0) ||
        (full && pg_dup_field(res, row, first + 6, &crew->plan) != 0)) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    crew->agent_count = strtol(PQgetvalue(res, row, first + 4), NULL, 10);
    *out = crew;
    crew = NULL;
out:
    store_crew_free(crew);
    return rc;
}

/* ---- store_ops ------------------------------------------------------------------------- */

/* Parameters $1..$8 shared by insert and update (insert adds created_at as $9 after them). */
static void pg_crew_params(const struct store_crew *crew, char *agent_count, size_t cap,
                           const char *params[9])
{
    snprintf(agent_count, cap, "%ld", crew->agent_count);
    params[0] = crew->crew_id;
    params[1] = crew->name;
    params[2] = crew->description;
    params[3] = crew->execution_mode;
    params[4] = agent_count;
    params[5] = crew->definition;
    params[6] = crew->plan;
}

static int pg_crew_insert(struct store *st, const struct store_crew *crew, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        goto out;
    if (!id_is_uuid(crew->crew_id)) {
        rc = err_set(e, ERR_INVALID, "crew_id: '%s' is not a UUID", crew->crew_id);
        goto out;
    }
    char agent_count[24];
    const char *params[9];
    pg_crew_params(crew, agent_count, sizeof agent_count, params);
    params[7] = crew->created_at;
    params[8] = crew->updated_at;
    res = PQexecPrepared(s->conn, pg_stmts[PG_INSERT].name, 9, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = pg_fail_write(s, res, crew, "insert crew", e);
out:
    PQclear(res);
    return rc;
}

static int pg_crew_update(struct store *st, const struct store_crew *crew, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        goto out;
    /* No row can have an id that is not a UUID; the ::uuid cast would fail instead. */
    if (!id_is_uuid(crew->crew_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", crew->crew_id);
        goto out;
    }
    char agent_count[24];
    const char *params[9];
    pg_crew_params(crew, agent_count, sizeof agent_count, params);
    params[7] = crew->updated_at;
    res = PQexecPrepared(s->conn, pg_stmts[PG_UPDATE].name, 8, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_fail_write(s, res, crew, "update crew", e);
        goto out;
    }
    if (strcmp(PQcmdTuples(res), "0") == 0)
        rc = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", crew->crew_id);
out:
    PQclear(res);
    return rc;
}

static int pg_crew_get(struct store *st, const char *ident, enum store_lookup how,
                       struct store_crew **out, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    *out = NULL;
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        goto out;
    /* A non-UUID ident can only be a name: never let it reach a ::uuid cast. */
    bool is_uuid = id_is_uuid(ident);
    enum pg_stmt stmt;
    const char *params[2] = {ident, is_uuid ? ident : NULL};
    int n_params = 1;
    switch (how) {
    case STORE_BY_NAME:
        stmt = PG_GET_BY_NAME;
        break;
    case STORE_BY_ID:
        stmt = PG_GET_BY_ID;
        if (!is_uuid) {
            rc = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", ident);
            goto out;
        }
        break;
    case STORE_BY_NAME_OR_ID:
    default:
        stmt = PG_GET_BY_NAME_OR_ID;
        n_params = 2;
        break;
    }
    res = PQexecPrepared(s->conn, pg_stmts[stmt].name, n_params, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "get crew", e);
        goto out;
    }
    if (PQntuples(res) == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", ident);
        goto out;
    }
    rc = pg_row_to_crew(res, 0, 0, true, out, e);
out:
    PQclear(res);
    return rc;
}

static int pg_crew_list(struct store *st, long limit, long offset, struct store_crew_page *out,
                        struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_crew_page page = {0};
    *out = page;
    int rc = 0;
    if (limit < 0 || offset < 0) {
        rc = err_set(e, ERR_INVALID, "store: limit and offset must not be negative");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char limit_s[24], offset_s[24];
    snprintf(limit_s, sizeof limit_s, "%ld", limit);
    snprintf(offset_s, sizeof offset_s, "%ld", offset);
    const char *params[2] = {limit_s, offset_s};
    res = PQexecPrepared(s->conn, pg_stmts[PG_LIST].name, 2, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
        rc = pg_fail(s, res, "list crews", e);
        goto out;
    }
    int n_rows = PQntuples(res);
    int total_col = PQnfields(res) - 1;
    page.total = strtol(PQgetvalue(res, 0, total_col), NULL, 10);
    /* An empty page is one row whose crew columns are NULL. */
    if (n_rows == 1 && PQgetisnull(res, 0, 0))
        n_rows = 0;
    if (n_rows > 0) {
        page.items = calloc((size_t)n_rows, sizeof(struct store_crew *));
        if (page.items == NULL) {
            rc = err_set(e, ERR_NOMEM, "store: out of memory");
            goto out;
        }
    }
    for (int i = 0; i < n_rows; i++) {
        rc = pg_row_to_crew(res, i, 0, false, &page.items[i], e);
        if (rc != 0)
            goto out;
        page.n++;
    }
    *out = page;
    page = (struct store_crew_page){0};
out:
    store_crew_page_cleanup(&page);
    PQclear(res);
    return rc;
}

static int pg_crew_delete(struct store *st, const char *crew_id, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        goto out;
    if (!id_is_uuid(crew_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", crew_id);
        goto out;
    }
    const char *params[1] = {crew_id};
    res = PQexecPrepared(s->conn, pg_stmts[PG_DELETE].name, 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_fail(s, res, "delete crew", e);
        goto out;
    }
    if (strcmp(PQcmdTuples(res), "0") == 0)
        rc = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", crew_id);
out:
    PQclear(res);
    return rc;
}

/* ---- jobs ------------------------------------------------------------------------------ */

/* The checks the NOT NULL constraints and UUID casts would make, and the contract's "must
 * be empty", with messages a caller can act on. */
static int pg_job_check(const struct store_job *j, struct err *e)
{
    if (j == NULL)
        return err_set(e, ERR_INVALID, "store: no job given");
    if (!id_is_uuid(j->job_id))
        return err_set(e, ERR_INVALID, "job_id: '%s' is not a UUID", j->job_id);
    if (!id_is_uuid(j->crew_id))
        return err_set(e, ERR_INVALID, "crew_id: '%s' is not a UUID", j->crew_id);
    if (j->crew_name == NULL || j->execution_mode == NULL)
        return err_set(e, ERR_INVALID, "store: crew_name and execution_mode are required");
    if (j->request == NULL || j->definition == NULL || j->plan == NULL)
        return err_set(e, ERR_INVALID, "store: request, definition and plan are required");
    if (j->created_at[0] == '\0')
        return err_set(e, ERR_INVALID, "store: created_at is required");
    if (j->result != NULL || j->error != NULL || j->started_at[0] != '\0' ||
        j->completed_at[0] != '\0')
        return err_set(e, ERR_INVALID,
                       "store: a new job has no result, error, started_at or completed_at");
    if ((j->idempotency_key == NULL) != (j->request_hash == NULL) ||
        (j->idempotency_key != NULL && j->idempotency_key[0] == '\0'))
        return err_set(e, ERR_INVALID,
                       "store: idempotency_key and request_hash go together, key non-empty");
    return store_job_webhook_check(j, e);
}

static int pg_job_insert(struct store *st, const struct store_job *job, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = pg_job_check(job, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char mask_s[24];
    snprintf(mask_s, sizeof mask_s, "%ld", job->webhook_mask);
    const char *params[14] = {job->job_id,    job->crew_id,    job->crew_name,
                              job->execution_mode, job->request, job->definition,
                              job->plan,      job->metadata ? job->metadata : "{}",
                              job->created_at, job->idempotency_key, job->request_hash,
                              job->webhook_url, job->webhook_secret, mask_s};
    res = PQexecPrepared(s->conn, pg_stmts[PG_JOB_INSERT].name, 14, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        const char *constraint = res ? PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME) : NULL;
        if (state != NULL && strcmp(state, "23505") == 0 && constraint != NULL &&
            strcmp(constraint, "jobs_idempotency_key_idx") == 0)
            rc = err_set(e, ERR_CONFLICT, "idempotency_key: a job with key '%s' already exists",
                         job->idempotency_key);
        else if (state != NULL && strcmp(state, "23505") == 0)
            rc = err_set(e, ERR_CONFLICT, "job_id: a job with id '%s' already exists",
                         job->job_id);
        else
            rc = pg_fail(s, res, "insert job", e);
    }
out:
    PQclear(res);
    return rc;
}

/* The listing's columns: PG_JOB_COLS without the large texts (request, definition, plan,
 * result) and the webhook, which come back NULL (mask 0). */
#define PG_JOB_LIST_COLS                                                                           \
    "job_id::text AS job_id, crew_id::text AS crew_id, crew_name, status, execution_mode,"        \
    " NULL, NULL, NULL, metadata, NULL, error,"                                                    \
    " to_char(created_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS created_rfc3339,"                   \
    " to_char(started_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS started_rfc3339,"                   \
    " to_char(completed_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS completed_rfc3339, attempts,"    \
    " idempotency_key, request_hash, NULL, NULL, 0"

/* Builds a job from row `row` of a PG_JOB_COLS result. */
static int pg_row_to_job(const PGresult *res, int row, struct store_job **out, struct err *e)
{
    int rc = 0;
    struct store_job *j = calloc(1, sizeof *j);
    *out = NULL;
    if (j == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    if (store_job_status_parse(PQgetvalue(res, row, 3), &j->status) != 0 ||
        pg_copy_fixed(res, row, 0, j->job_id, sizeof j->job_id) != 0 ||
        pg_copy_fixed(res, row, 1, j->crew_id, sizeof j->crew_id) != 0 ||
        pg_copy_fixed(res, row, 11, j->created_at, sizeof j->created_at) != 0 ||
        pg_copy_fixed(res, row, 12, j->started_at, sizeof j->started_at) != 0 ||
        pg_copy_fixed(res, row, 13, j->completed_at, sizeof j->completed_at) != 0) {
        rc = err_set(e, ERR_STORE, "store: postgres: unexpected job status, id or timestamp");
        goto out;
    }
    if (pg_dup_field(res, row, 2, &j->crew_name) != 0 ||
        pg_dup_field(res, row, 4, &j->execution_mode) != 0 ||
        pg_dup_field(res, row, 5, &j->request) != 0 ||
        pg_dup_field(res, row, 6, &j->definition) != 0 ||
        pg_dup_field(res, row, 7, &j->plan) != 0 ||
        pg_dup_field(res, row, 8, &j->metadata) != 0 ||
        pg_dup_field(res, row, 9, &j->result) != 0 ||
        pg_dup_field(res, row, 10, &j->error) != 0 ||
        pg_dup_field(res, row, 15, &j->idempotency_key) != 0 ||
        pg_dup_field(res, row, 16, &j->request_hash) != 0 ||
        pg_dup_field(res, row, 17, &j->webhook_url) != 0 ||
        pg_dup_field(res, row, 18, &j->webhook_secret) != 0) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    j->attempts = strtol(PQgetvalue(res, row, 14), NULL, 10);
    j->webhook_mask = strtol(PQgetvalue(res, row, 19), NULL, 10);
    *out = j;
    j = NULL;
out:
    store_job_free(j);
    return rc;
}

/* One job row by prepared statement `id` and its one parameter; ERR_NOT_FOUND (no message)
 * when there is none, so that each caller says what was looked for. */
static int pg_job_by(struct pg_store *s, enum pg_stmt id, const char *param, const char *what,
                     struct store_job **out, struct err *e)
{
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        return rc;
    const char *params[1] = {param};
    PGresult *res = PQexecPrepared(s->conn, pg_stmts[id].name, 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = pg_fail(s, res, what, e);
    else if (PQntuples(res) == 0)
        rc = ERR_NOT_FOUND;
    else
        rc = pg_row_to_job(res, 0, out, e);
    PQclear(res);
    return rc;
}

static int pg_job_get(struct store *st, const char *job_id, struct store_job **out,
                      struct err *e)
{
    *out = NULL;
    /* No row can have an id that is not a UUID; never let one reach the ::uuid cast. */
    int rc = job_id != NULL && id_is_uuid(job_id)
                 ? pg_job_by((struct pg_store *)st, PG_JOB_GET, job_id, "get job", out, e)
                 : ERR_NOT_FOUND;
    return rc == ERR_NOT_FOUND
               ? err_set(e, rc, "job '%s' not found", job_id ? job_id : "")
               : rc;
}

static int pg_job_find_by_key(struct store *st, const char *key, struct store_job **out,
                              struct err *e)
{
    *out = NULL;
    if (key == NULL || key[0] == '\0')
        return err_set(e, ERR_INVALID, "store: no idempotency key given");
    int rc = pg_job_by((struct pg_store *)st, PG_JOB_BY_KEY, key, "find job by idempotency key",
                       out, e);
    return rc == ERR_NOT_FOUND ? err_set(e, rc, "no job with idempotency key '%s'", key) : rc;
}

static int pg_job_claim(struct store *st, const char *owner, long long now_ms,
                        long long lease_ms, size_t max, struct store_job_batch *out,
                        struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_job_batch batch = {0};
    *out = batch;
    int rc = 0;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0) {
        rc = err_set(e, ERR_INVALID, "store: a claim needs an owner and a positive lease");
        goto out;
    }
    if (max == 0)
        goto out;
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char now_s[24], deadline_s[24], max_s[24], started[CLOCK_RFC3339_LEN];
    snprintf(now_s, sizeof now_s, "%lld", now_ms);
    snprintf(deadline_s, sizeof deadline_s, "%lld", now_ms + lease_ms);
    snprintf(max_s, sizeof max_s, "%zu", max);
    clock_rfc3339(now_ms, started);
    const char *params[5] = {owner, now_s, deadline_s, started, max_s};
    res = PQexecPrepared(s->conn, pg_stmts[PG_JOB_CLAIM].name, 5, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "claim jobs", e);
        goto out;
    }
    int n_rows = PQntuples(res);
    if (n_rows == 0)
        goto out;
    batch.items = calloc((size_t)n_rows, sizeof *batch.items);
    if (batch.items == NULL) {
        /* Committed: the jobs come back on a claim once the lease expires. */
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    for (int i = 0; i < n_rows; i++) {
        if ((rc = pg_row_to_job(res, i, &batch.items[i], e)) != 0)
            goto out;
        batch.n++;
    }
    *out = batch;
    batch = (struct store_job_batch){0};
out:
    store_job_batch_cleanup(&batch);
    PQclear(res);
    return rc;
}

/* Runs a statement whose parameters are all given and that returns no rows. */
static int pg_command(struct pg_store *s, enum pg_stmt stmt, int n_params, const char **params,
                      const char *what, PGresult **res_out, struct err *e)
{
    PGresult *res = PQexecPrepared(s->conn, pg_stmts[stmt].name, n_params, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = pg_fail(s, res, what, e);
    if (rc == 0 && res_out != NULL) {
        *res_out = res;
        res = NULL;
    }
    PQclear(res);
    return rc;
}

static int pg_job_renew(struct store *st, const char *owner, long long now_ms, long long lease_ms,
                        struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0)
        return err_set(e, ERR_INVALID, "store: a renewal needs an owner and a positive lease");
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        return rc;
    char deadline_s[24];
    snprintf(deadline_s, sizeof deadline_s, "%lld", now_ms + lease_ms);
    const char *params[2] = {owner, deadline_s};
    return pg_command(s, PG_JOB_RENEW, 2, params, "renew leases", NULL, e);
}

static int pg_job_release(struct store *st, const char *owner, const char *job_id,
                          struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    if (owner == NULL || owner[0] == '\0')
        return err_set(e, ERR_INVALID, "store: no lease owner given");
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        return rc;
    const char *params[2] = {owner, job_id};
    return pg_command(s, PG_JOB_RELEASE, 2, params, "release leases", NULL, e);
}

/*
 * Explains a fenced write that changed nothing: ERR_NOT_FOUND when the job does not exist,
 * else ERR_CONFLICT, saying that the lease is lost (`owned`: the write named an owner) or
 * which terminal status the job already has.
 */
static int pg_fence_fail(struct pg_store *s, const char *job_id, bool owned, struct err *e)
{
    const char *params[1] = {job_id};
    PGresult *res =
        PQexecPrepared(s->conn, pg_stmts[PG_JOB_STATUS].name, 1, params, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = pg_fail(s, res, "read job status", e);
    else if (PQntuples(res) == 0)
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
    else if (owned)
        rc = err_set(e, ERR_CONFLICT, "job '%s' is no longer leased to this instance", job_id);
    else
        rc = err_set(e, ERR_CONFLICT, "job already %s", PQgetvalue(res, 0, 0));
    PQclear(res);
    return rc;
}

/* Ends a transaction that failed part way, unless the connection is gone (nothing to end). */
static void pg_rollback(struct pg_store *s)
{
    if (PQstatus(s->conn) == CONNECTION_OK && PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(s->conn, "ROLLBACK");
        PQclear(rb);
    }
}

/*
 * Inside a transaction: locks the job's row (PG_JOB_FENCE) and reads its webhook mask,
 * after checking the fence on `owner` (NULL: none) with pg_fence_fail's words.
 */
static int pg_job_fence(struct pg_store *s, const char *job_id, const char *owner,
                        long long *mask, struct err *e)
{
    const char *params[2] = {job_id, owner};
    PGresult *res = PQexecPrepared(s->conn, pg_stmts[PG_JOB_FENCE].name, 2, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = pg_fail(s, res, "lock job", e);
    else if (PQntuples(res) == 0)
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
    else if (strcmp(PQgetvalue(res, 0, 1), "t") != 0)
        rc = err_set(e, ERR_CONFLICT, "job '%s' is no longer leased to this instance", job_id);
    else
        *mask = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return rc;
}

/* Inside a transaction that holds the job's row lock: appends `ev` as the job's next event,
 * and its delivery when `mask` asks for the type; *seq (may be NULL) gets its number. */
static int pg_event_write(struct pg_store *s, const char *job_id, long long mask,
                          const struct store_event_in *ev, long long now_ms, long long *seq,
                          struct err *e)
{
    char now[CLOCK_RFC3339_LEN], now_s[24];
    clock_rfc3339(now_ms, now);
    snprintf(now_s, sizeof now_s, "%lld", now_ms);
    const char *params[6] = {job_id, store_event_type_name(ev->type), ev->data, now, now_s,
                             (mask & STORE_EV_BIT(ev->type)) != 0 ? "t" : "f"};
    PGresult *res =
        PQexecPrepared(s->conn, pg_stmts[PG_EVENT_INSERT].name, 6, params, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        rc = pg_fail(s, res, "append event", e);
    else if (seq != NULL)
        *seq = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return rc;
}

/* Without an event, one fenced statement. With one, a transaction that locks the job first
 * (the fence and the event's number), then writes the step and the event: both or neither. */
static int pg_job_step_put(struct store *st, const char *job_id, const char *owner,
                           const char *key, const char *data, const struct store_event_in *ev,
                           long long now_ms, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = 0;
    if (job_id == NULL || owner == NULL || key == NULL || data == NULL) {
        rc = err_set(e, ERR_INVALID, "store: job_id, owner, key and data are required");
        goto out;
    }
    if (ev != NULL && (rc = store_event_check(ev, e)) != 0)
        goto out;
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    long long mask = 0;
    if (ev != NULL && ((rc = pg_exec(s, "BEGIN", "put step: begin", e)) != 0 ||
                       (rc = pg_job_fence(s, job_id, owner, &mask, e)) != 0))
        goto out;
    const char *params[4] = {job_id, owner, key, data};
    if ((rc = pg_command(s, PG_STEP_PUT, 4, params, "put step", &res, e)) != 0)
        goto out;
    if (strcmp(PQcmdTuples(res), "0") == 0) {
        rc = pg_fence_fail(s, job_id, true, e);
        goto out;
    }
    if (ev != NULL && ((rc = pg_event_write(s, job_id, mask, ev, now_ms, NULL, e)) != 0 ||
                       (rc = pg_exec(s, "COMMIT", "put step: commit", e)) != 0))
        goto out;
out:
    PQclear(res);
    if (rc != 0)
        pg_rollback(s);
    return rc;
}

static int pg_job_steps_get(struct store *st, const char *job_id, struct store_step_list *out,
                            struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_step_list list = {0};
    *out = list;
    int rc = 0;
    if (job_id == NULL) {
        rc = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id))
        goto out; /* no such job, so no steps */
    const char *params[1] = {job_id};
    res = PQexecPrepared(s->conn, pg_stmts[PG_STEPS_GET].name, 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "get steps", e);
        goto out;
    }
    int n_rows = PQntuples(res);
    if (n_rows == 0)
        goto out;
    list.items = calloc((size_t)n_rows, sizeof *list.items);
    if (list.items == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    for (int i = 0; i < n_rows; i++) {
        struct store_step *step = &list.items[i];
        list.n++; /* counted first, so that cleanup frees a half-copied step */
        if (pg_dup_field(res, i, 0, &step->key) != 0 || pg_dup_field(res, i, 1, &step->data) != 0) {
            rc = err_set(e, ERR_NOMEM, "store: out of memory");
            goto out;
        }
    }
    *out = list;
    list = (struct store_step_list){0};
out:
    store_step_list_cleanup(&list);
    PQclear(res);
    return rc;
}

/* The status change and the terminal event in one transaction. The UPDATE locks the job's
 * row as PG_JOB_FENCE does, so the event's number is drawn under the same lock as an
 * append's; only a finish that changed the row writes an event. */
static int pg_job_finish(struct store *st, const char *job_id, const char *owner,
                         enum store_job_status status, const char *result, const char *error,
                         long long now_ms, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_event_in ev = {0};
    char *data = NULL;
    int rc = 0;
    if (job_id == NULL) {
        rc = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((rc = store_finish_event(status, error, &ev.type, &data, e)) != 0)
        goto out;
    ev.data = data;
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    char completed[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, completed);
    const char *params[6] = {job_id, store_job_status_name(status), result, error, completed,
                             owner};
    enum pg_stmt stmt = owner ? PG_JOB_FINISH_OWNED : PG_JOB_FINISH_ANY;
    if ((rc = pg_exec(s, "BEGIN", "finish job: begin", e)) != 0)
        goto out;
    res = PQexecPrepared(s->conn, pg_stmts[stmt].name, owner ? 6 : 5, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "finish job", e);
        goto out;
    }
    if (PQntuples(res) == 0) {
        rc = pg_fence_fail(s, job_id, owner != NULL, e);
        goto out;
    }
    long long mask = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    if ((rc = pg_event_write(s, job_id, mask, &ev, now_ms, NULL, e)) != 0 ||
        (rc = pg_exec(s, "COMMIT", "finish job: commit", e)) != 0)
        goto out;
out:
    PQclear(res);
    if (rc != 0)
        pg_rollback(s);
    free(data);
    return rc;
}

/*
 * The filter's four shapes are sent as text with their values (PQexecParams), so each is
 * planned for what it filters on and reads that filter's index; one prepared statement
 * with "$1 IS NULL OR" could settle on a generic plan that uses none. The total rides on
 * every row through the LEFT JOIN, as in the crew list, so both come from one snapshot.
 */
static int pg_job_list(struct store *st, const struct store_job_filter *filter, long limit,
                       long offset, struct store_job_page *out, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_job_page page = {0};
    *out = page;
    int rc = 0;
    if (filter == NULL || limit < 0 || offset < 0) {
        rc = err_set(e, ERR_INVALID, "store: limit and offset must not be negative");
        goto out;
    }
    const char *status = filter->any_status ? NULL : store_job_status_name(filter->status);
    if (!filter->any_status && status == NULL) {
        rc = err_set(e, ERR_INVALID, "store: unknown job status");
        goto out;
    }
    /* No row has a crew_id that is not a UUID; never let one reach the ::uuid cast. */
    bool none = filter->crew_id != NULL && !id_is_uuid(filter->crew_id);
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char where[128];
    snprintf(where, sizeof where, "%s%s%s", filter->crew_id || status ? " WHERE " : "",
             filter->crew_id ? "crew_id = $3::uuid" : "",
             status ? (filter->crew_id ? " AND status = $4" : "status = $4") : "");
    char sql[1200];
    snprintf(sql, sizeof sql,
             "SELECT c.*, t.total FROM (SELECT count(*) AS total FROM jobs%s) t"
             " LEFT JOIN LATERAL (SELECT " PG_JOB_LIST_COLS ", created_at AS k1, seq AS k2"
             " FROM jobs%s ORDER BY jobs.created_at DESC, jobs.seq DESC"
             " LIMIT $1::bigint OFFSET $2::bigint) c ON true ORDER BY c.k1 DESC, c.k2 DESC",
             where, where);
    char limit_s[24], offset_s[24];
    snprintf(limit_s, sizeof limit_s, "%ld", none ? 0L : limit);
    snprintf(offset_s, sizeof offset_s, "%ld", offset);
    const char *params[4] = {limit_s, offset_s, none ? NULL : filter->crew_id, status};
    /* Typed, so that a parameter the text does not use (no filter) is no error:
     * int8, int8, uuid, text. */
    const Oid types[4] = {20, 20, 2950, 25};
    if (!none) {
        res = PQexecParams(s->conn, sql, 4, types, params, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) < 1) {
            rc = pg_fail(s, res, "list jobs", e);
            goto out;
        }
    }
    int n_rows = none ? 0 : PQntuples(res);
    page.total = none ? 0 : strtol(PQgetvalue(res, 0, PQnfields(res) - 1), NULL, 10);
    /* An empty page is one row whose job columns are NULL. */
    if (n_rows == 1 && PQgetisnull(res, 0, 0))
        n_rows = 0;
    if (n_rows > 0 && (page.items = calloc((size_t)n_rows, sizeof *page.items)) == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    for (int i = 0; i < n_rows; i++) {
        if ((rc = pg_row_to_job(res, i, &page.items[i], e)) != 0)
            goto out;
        page.n++;
    }
    *out = page;
    page = (struct store_job_page){0};
out:
    store_job_page_cleanup(&page);
    PQclear(res);
    return rc;
}

static int pg_job_delete(struct store *st, const char *job_id, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = 0;
    if (job_id == NULL) {
        rc = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    const char *params[1] = {job_id};
    res = PQexecPrepared(s->conn, pg_stmts[PG_JOB_DELETE].name, 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = pg_fail(s, res, "delete job", e);
        goto out;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "0") == 0) {
        /* Not there, or still live: the status says which. */
        if ((rc = pg_fence_fail(s, job_id, false, e)) == ERR_CONFLICT) {
            char msg[ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", e->msg);
            err_set(e, ERR_CONFLICT, "job is %s", msg + strlen("job already "));
        }
    }
out:
    PQclear(res);
    return rc;
}

static int pg_job_purge(struct store *st, long long older_than_ms, size_t max_rows,
                        size_t *n_deleted, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = 0;
    if (max_rows == 0) {
        rc = err_set(e, ERR_INVALID, "store: a purge deletes at least one row per call");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char cutoff[CLOCK_RFC3339_LEN], max_s[24];
    clock_rfc3339(older_than_ms, cutoff);
    snprintf(max_s, sizeof max_s, "%zu", max_rows);
    const char *params[2] = {cutoff, max_s};
    res = PQexecPrepared(s->conn, pg_stmts[PG_JOB_PURGE].name, 2, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = pg_fail(s, res, "purge jobs", e);
        goto out;
    }
    if (n_deleted != NULL)
        *n_deleted = (size_t)strtoull(PQgetvalue(res, 0, 0), NULL, 10);
out:
    PQclear(res);
    return rc;
}

/* ---- events and webhook deliveries -------------------------------------------------- */

/* A count from the caller as a bigint parameter: above INT64_MAX means "all" anyway. */
static void pg_count_arg(size_t n, char *buf, size_t cap)
{
    if (n > (size_t)INT64_MAX)
        n = (size_t)INT64_MAX;
    snprintf(buf, cap, "%zu", n);
}

/* One transaction; per item the job's row lock (the fence, the mask, and the right to draw
 * the next number), then the event and its delivery. */
static int pg_event_append_batch(struct store *st, const char *owner,
                                 struct store_event_item *items, size_t n, long long now_ms,
                                 struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].job_id == NULL)
            return err_set(e, ERR_INVALID, "store: no job_id given");
        if ((rc = store_event_check(&items[i].ev, e)) != 0)
            return rc;
    }
    if (n == 0)
        return 0;
    if ((rc = pg_ensure_conn(s, e)) != 0 ||
        (rc = pg_exec(s, "BEGIN", "append events: begin", e)) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        long long mask = 0;
        struct err fe = {0};
        if (!id_is_uuid(items[i].job_id)) {
            items[i].rc = ERR_NOT_FOUND;
            continue;
        }
        items[i].rc = pg_job_fence(s, items[i].job_id, owner, &mask, &fe);
        if (items[i].rc == ERR_CONFLICT || items[i].rc == ERR_NOT_FOUND)
            continue;
        if (items[i].rc != 0) {
            *e = fe;
            rc = items[i].rc;
            goto out;
        }
        if ((rc = pg_event_write(s, items[i].job_id, mask, &items[i].ev, now_ms, &items[i].seq,
                                 e)) != 0)
            goto out;
    }
    rc = pg_exec(s, "COMMIT", "append events: commit", e);
out:
    if (rc != 0)
        pg_rollback(s);
    return rc;
}

static int pg_event_list(struct store *st, const char *job_id, long long after_seq, size_t limit,
                         struct store_event_list *out, enum store_job_status *status,
                         struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_event_list l = {0};
    *out = l;
    int rc = 0;
    if (job_id == NULL || limit == 0) {
        rc = err_set(e, ERR_INVALID, "store: an event list needs a job_id and a limit above 0");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    char after_s[24], limit_s[24];
    snprintf(after_s, sizeof after_s, "%lld", after_seq);
    pg_count_arg(limit, limit_s, sizeof limit_s);
    const char *params[3] = {job_id, after_s, limit_s};
    res = PQexecPrepared(s->conn, pg_stmts[PG_EVENT_LIST].name, 3, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "list events", e);
        goto out;
    }
    int n_rows = PQntuples(res);
    if (n_rows == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    enum store_job_status now_status;
    if (store_job_status_parse(PQgetvalue(res, 0, 0), &now_status) != 0) {
        rc = err_set(e, ERR_STORE, "store: postgres: unexpected job status");
        goto out;
    }
    /* No events: one row whose event columns are NULL. */
    if (n_rows == 1 && PQgetisnull(res, 0, 1))
        n_rows = 0;
    if (n_rows > 0 && (l.items = calloc((size_t)n_rows, sizeof *l.items)) == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    for (int i = 0; i < n_rows; i++) {
        struct store_event *ev = &l.items[i];
        l.n++; /* counted first, so that cleanup frees a half-copied event */
        ev->seq = strtoll(PQgetvalue(res, i, 1), NULL, 10);
        if (store_event_type_parse(PQgetvalue(res, i, 2), &ev->type) != 0 ||
            pg_copy_fixed(res, i, 4, ev->created_at, sizeof ev->created_at) != 0) {
            rc = err_set(e, ERR_STORE, "store: postgres: unexpected event type or timestamp");
            goto out;
        }
        if (pg_dup_field(res, i, 3, &ev->data) != 0) {
            rc = err_set(e, ERR_NOMEM, "store: out of memory");
            goto out;
        }
    }
    if (status != NULL)
        *status = now_status;
    *out = l;
    l = (struct store_event_list){0};
out:
    store_event_list_cleanup(&l);
    PQclear(res);
    return rc;
}

/* Builds a delivery from row `row` of a PG_DELIVERY_COLS (or PG_DELIVERY_LIST_COLS) result. */
static int pg_row_to_delivery(const PGresult *res, int row, struct store_delivery **out,
                              struct err *e)
{
    int rc = 0;
    struct store_delivery *d = calloc(1, sizeof *d);
    *out = NULL;
    if (d == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    if (store_event_type_parse(PQgetvalue(res, row, 2), &d->type) != 0 ||
        store_delivery_state_parse(PQgetvalue(res, row, 3), &d->state) != 0 ||
        pg_copy_fixed(res, row, 0, d->job_id, sizeof d->job_id) != 0 ||
        pg_copy_fixed(res, row, 9, d->event_created_at, sizeof d->event_created_at) != 0 ||
        pg_copy_fixed(res, row, 12, d->created_at, sizeof d->created_at) != 0 ||
        pg_copy_fixed(res, row, 13, d->updated_at, sizeof d->updated_at) != 0) {
        rc = err_set(e, ERR_STORE, "store: postgres: unexpected delivery type, state or timestamp");
        goto out;
    }
    if (pg_dup_field(res, row, 7, &d->last_error) != 0 ||
        pg_dup_field(res, row, 8, &d->event_data) != 0 ||
        pg_dup_field(res, row, 10, &d->url) != 0 || pg_dup_field(res, row, 11, &d->secret) != 0) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    d->seq = strtoll(PQgetvalue(res, row, 1), NULL, 10);
    d->attempts = strtol(PQgetvalue(res, row, 4), NULL, 10);
    d->next_attempt_ms = strtoll(PQgetvalue(res, row, 5), NULL, 10);
    d->last_status = (int)strtol(PQgetvalue(res, row, 6), NULL, 10);
    *out = d;
    d = NULL;
out:
    store_delivery_free(d);
    return rc;
}

/* Copies rows first.. of a delivery result into a new list in *out. */
static int pg_deliveries_from(const PGresult *res, int first, struct store_delivery_list *out,
                              struct err *e)
{
    struct store_delivery_list l = {0};
    int n_rows = PQntuples(res) - first, rc = 0;
    if (n_rows > 0 && (l.items = calloc((size_t)n_rows, sizeof *l.items)) == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    for (int i = 0; i < n_rows; i++) {
        if ((rc = pg_row_to_delivery(res, first + i, &l.items[i], e)) != 0)
            goto out;
        l.n++;
    }
    *out = l;
    l = (struct store_delivery_list){0};
out:
    store_delivery_list_cleanup(&l);
    return rc;
}

static int pg_delivery_claim(struct store *st, const char *owner, long long now_ms,
                             long long lease_ms, size_t max, struct store_delivery_list *out,
                             struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    *out = (struct store_delivery_list){0};
    int rc = 0;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0) {
        rc = err_set(e, ERR_INVALID, "store: a claim needs an owner and a positive lease");
        goto out;
    }
    if (max == 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char now_s[24], deadline_s[24], max_s[24], now[CLOCK_RFC3339_LEN];
    snprintf(now_s, sizeof now_s, "%lld", now_ms);
    snprintf(deadline_s, sizeof deadline_s, "%lld", now_ms + lease_ms);
    pg_count_arg(max, max_s, sizeof max_s);
    clock_rfc3339(now_ms, now);
    const char *params[5] = {owner, now_s, deadline_s, now, max_s};
    res = PQexecPrepared(s->conn, pg_stmts[PG_DELIVERY_CLAIM].name, 5, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "claim deliveries", e);
        goto out;
    }
    /* Committed: on failure here the leases expire and the rows come back to a claim. */
    rc = pg_deliveries_from(res, 0, out, e);
out:
    PQclear(res);
    return rc;
}

static int pg_delivery_done(struct store *st, const char *job_id, long long seq,
                            const char *owner, enum store_delivery_state state, long attempts,
                            long long next_attempt_ms, int http_status, const char *error,
                            long long now_ms, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    const char *state_name = store_delivery_state_name(state);
    int rc = 0;
    if (job_id == NULL || owner == NULL || owner[0] == '\0' || state_name == NULL) {
        rc = err_set(e, ERR_INVALID, "store: a delivery outcome needs a job_id, an owner and a"
                                     " known state");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "delivery %lld of job '%s' not found", seq, job_id);
        goto out;
    }
    char seq_s[24], next_s[24], status_s[16], attempts_s[24], now[CLOCK_RFC3339_LEN];
    snprintf(seq_s, sizeof seq_s, "%lld", seq);
    snprintf(next_s, sizeof next_s, "%lld", next_attempt_ms);
    snprintf(status_s, sizeof status_s, "%d", http_status);
    snprintf(attempts_s, sizeof attempts_s, "%ld", attempts > 0 && attempts <= INT32_MAX ? attempts : 0);
    clock_rfc3339(now_ms, now);
    const char *params[9] = {job_id, seq_s,    owner, state_name, next_s,
                             status_s, error, now,  attempts_s};
    if ((rc = pg_command(s, PG_DELIVERY_DONE, 9, params, "record delivery", &res, e)) != 0)
        goto out;
    if (strcmp(PQcmdTuples(res), "0") != 0)
        goto out;
    /* Nothing changed: gone, or leased to someone else (or to nobody) now. */
    PQclear(res);
    res = PQexecPrepared(s->conn, pg_stmts[PG_DELIVERY_EXISTS].name, 2, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK)
        rc = pg_fail(s, res, "read delivery", e);
    else if (PQntuples(res) == 0)
        rc = err_set(e, ERR_NOT_FOUND, "delivery %lld of job '%s' not found", seq, job_id);
    else
        rc = err_set(e, ERR_CONFLICT,
                     "delivery %lld of job '%s' is no longer leased to this instance", seq,
                     job_id);
out:
    PQclear(res);
    return rc;
}

static int pg_delivery_release(struct store *st, const char *owner, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    if (owner == NULL || owner[0] == '\0')
        return err_set(e, ERR_INVALID, "store: no lease owner given");
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        return rc;
    const char *params[1] = {owner};
    return pg_command(s, PG_DELIVERY_RELEASE, 1, params, "release deliveries", NULL, e);
}

static int pg_delivery_list(struct store *st, const char *job_id, struct store_delivery_list *out,
                            struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    *out = (struct store_delivery_list){0};
    int rc = 0;
    if (job_id == NULL) {
        rc = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    if (!id_is_uuid(job_id)) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    const char *params[1] = {job_id};
    res = PQexecPrepared(s->conn, pg_stmts[PG_DELIVERY_LIST].name, 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "list deliveries", e);
        goto out;
    }
    if (PQntuples(res) == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    /* No deliveries: one row whose columns are NULL. */
    rc = pg_deliveries_from(res, PQgetisnull(res, 0, 0) ? 1 : 0, out, e);
out:
    PQclear(res);
    return rc;
}

/* ---- conversation memory --------------------------------------------------------------- */

/* The conversation as parameters $1..$4; a NULL user or session is the conversation of "". */
static void pg_memory_key(const char *params[4], const char *crew_id, const char *agent_key,
                          const char *user_id, const char *session_id)
{
    params[0] = crew_id;
    params[1] = agent_key;
    params[2] = user_id ? user_id : "";
    params[3] = session_id ? session_id : "";
}

static int pg_memory_get(struct store *st, const char *crew_id, const char *agent_key,
                         const char *user_id, const char *session_id, size_t max_turns,
                         struct store_turn_list *out, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_turn_list list = {0};
    *out = list;
    int rc = store_memory_check(crew_id, agent_key, NULL, 0, e);
    if (rc != 0 || max_turns == 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char max_s[24];
    pg_count_arg(max_turns, max_s, sizeof max_s);
    const char *params[5];
    pg_memory_key(params, crew_id, agent_key, user_id, session_id);
    params[4] = max_s;
    res = PQexecPrepared(s->conn, pg_stmts[PG_MEMORY_GET].name, 5, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "get memory", e);
        goto out;
    }
    int n_rows = PQntuples(res);
    if (n_rows == 0)
        goto out;
    list.items = calloc((size_t)n_rows, sizeof *list.items);
    if (list.items == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    /* The rows come newest first (the index scanned backwards); the list is oldest first. */
    for (int i = 0; i < n_rows; i++) {
        struct store_turn *t = &list.items[list.n];
        int row = n_rows - 1 - i;
        list.n++; /* counted first, so that cleanup frees a half-copied turn */
        if (pg_copy_fixed(res, row, 2, t->created_at, sizeof t->created_at) != 0) {
            rc = err_set(e, ERR_STORE, "store: postgres: unexpected timestamp form");
            goto out;
        }
        if (pg_dup_field(res, row, 0, &t->role) != 0 ||
            pg_dup_field(res, row, 1, &t->content) != 0) {
            rc = err_set(e, ERR_NOMEM, "store: out of memory");
            goto out;
        }
    }
    *out = list;
    list = (struct store_turn_list){0};
out:
    store_turn_list_cleanup(&list);
    PQclear(res);
    return rc;
}

/* One transaction: the conversation's lock, the inserts, the trim. A round trip each, fine
 * for the two turns of an exchange. */
static int pg_memory_append(struct store *st, const char *crew_id, const char *agent_key,
                            const char *user_id, const char *session_id,
                            const struct store_turn *turns, size_t n, size_t keep_turns,
                            long long now_ms, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = store_memory_check(crew_id, agent_key, turns, n, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char created[CLOCK_RFC3339_LEN], keep_s[24];
    clock_rfc3339(now_ms, created);
    pg_count_arg(keep_turns, keep_s, sizeof keep_s);
    const char *params[7];
    pg_memory_key(params, crew_id, agent_key, user_id, session_id);
    if ((rc = pg_exec(s, "BEGIN", "append memory: begin", e)) != 0)
        goto out;
    res = PQexecPrepared(s->conn, pg_stmts[PG_MEMORY_LOCK].name, 4, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "append memory: lock", e);
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        params[4] = turns[i].role;
        params[5] = turns[i].content;
        params[6] = created;
        if ((rc = pg_command(s, PG_MEMORY_INSERT, 7, params, "append memory", NULL, e)) != 0)
            goto out;
    }
    if (keep_turns > 0) {
        params[4] = keep_s;
        if ((rc = pg_command(s, PG_MEMORY_TRIM, 5, params, "trim memory", NULL, e)) != 0)
            goto out;
    }
    rc = pg_exec(s, "COMMIT", "append memory: commit", e);
out:
    PQclear(res);
    if (rc != 0 && PQstatus(s->conn) == CONNECTION_OK &&
        PQtransactionStatus(s->conn) != PQTRANS_IDLE) {
        PGresult *rb = PQexec(s->conn, "ROLLBACK");
        PQclear(rb);
    }
    return rc;
}

static int pg_memory_clear(struct store *st, const char *crew_id, const char *agent_key,
                           const char *user_id, const char *session_id, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = store_memory_check(crew_id, agent_key, NULL, 0, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    const char *params[4];
    pg_memory_key(params, crew_id, agent_key, user_id, session_id);
    if ((rc = pg_command(s, PG_MEMORY_CLEAR, 4, params, "clear memory", &res, e)) != 0)
        goto out;
    if (strcmp(PQcmdTuples(res), "0") == 0)
        rc = err_set(e, ERR_NOT_FOUND, "conversation not found");
out:
    PQclear(res);
    return rc;
}

/* ---- catalogs (tools, agent classes) ---------------------------------------------------- */

static const char *pg_named_name(enum store_catalog c, enum pg_named_op op)
{
    return pg_named_stmts[c][op].name;
}

static int pg_row_to_named(const PGresult *res, int row, struct store_named **out, struct err *e)
{
    int rc = 0;
    struct store_named *r = calloc(1, sizeof *r);
    *out = NULL;
    if (r == NULL || pg_dup_field(res, row, 0, &r->name) != 0 ||
        pg_dup_field(res, row, 1, &r->definition) != 0 || r->name == NULL ||
        r->definition == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    if (pg_copy_fixed(res, row, 2, r->created_at, sizeof r->created_at) != 0 ||
        pg_copy_fixed(res, row, 3, r->updated_at, sizeof r->updated_at) != 0) {
        rc = err_set(e, ERR_STORE, "store: postgres: unexpected timestamp form");
        goto out;
    }
    *out = r;
    r = NULL;
out:
    store_named_free(r);
    return rc;
}

static int pg_named_put(struct store *st, enum store_catalog c, const char *name,
                        const char *definition, long long now_ms, bool *created, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = store_named_check(c, name, definition, true, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    char now[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, now);
    const char *params[3] = {name, definition, now};
    res = PQexecPrepared(s->conn, pg_named_name(c, PG_NAMED_PUT), 3, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = pg_fail(s, res, "put", e);
        goto out;
    }
    if (created != NULL)
        *created = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
out:
    PQclear(res);
    return rc;
}

static int pg_named_get(struct store *st, enum store_catalog c, const char *name,
                        struct store_named **out, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    *out = NULL;
    int rc = store_named_check(c, name, NULL, false, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    const char *params[1] = {name};
    res = PQexecPrepared(s->conn, pg_named_name(c, PG_NAMED_GET), 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "get", e);
        goto out;
    }
    if (PQntuples(res) == 0) {
        rc = err_set(e, ERR_NOT_FOUND, "%s '%s' not found", store_catalog_noun(c), name);
        goto out;
    }
    rc = pg_row_to_named(res, 0, out, e);
out:
    PQclear(res);
    return rc;
}

static int pg_named_list(struct store *st, enum store_catalog c, struct store_named_list *out,
                         struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    struct store_named_list l = {0};
    *out = l;
    int rc = store_named_check(c, "-", NULL, false, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    res = PQexecPrepared(s->conn, pg_named_name(c, PG_NAMED_LIST), 0, NULL, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "list", e);
        goto out;
    }
    int n = PQntuples(res);
    if (n > 0 && (l.items = calloc((size_t)n, sizeof *l.items)) == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    for (int i = 0; i < n; i++) {
        if ((rc = pg_row_to_named(res, i, &l.items[i], e)) != 0)
            goto out;
        l.n++;
    }
    *out = l;
    l = (struct store_named_list){0};
out:
    store_named_list_cleanup(&l);
    PQclear(res);
    return rc;
}

static int pg_named_delete(struct store *st, enum store_catalog c, const char *name,
                           struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    int rc = store_named_check(c, name, NULL, false, e);
    if (rc != 0 || (rc = pg_ensure_conn(s, e)) != 0)
        goto out;
    const char *params[1] = {name};
    res = PQexecPrepared(s->conn, pg_named_name(c, PG_NAMED_DELETE), 1, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        rc = pg_fail(s, res, "delete", e);
        goto out;
    }
    if (strcmp(PQcmdTuples(res), "0") == 0)
        rc = err_set(e, ERR_NOT_FOUND, "%s '%s' not found", store_catalog_noun(c), name);
out:
    PQclear(res);
    return rc;
}

static void pg_close(struct store *st)
{
    struct pg_store *s = (struct pg_store *)st;
    if (s == NULL)
        return;
    PQfinish(s->conn);
    free(s);
}

/* ---- observability: counts and a ping for /metrics and /healthz ---- */

/* Unprepared (PQexec): a scrape or a health check runs these a few times a minute. */
static int pg_job_counts(struct store *st, long counts[5], struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    for (int i = 0; i < 5; i++)
        counts[i] = 0;
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        goto out;
    res = PQexec(s->conn, "SELECT status, count(*) FROM jobs GROUP BY status");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = pg_fail(s, res, "job counts", e);
        goto out;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        enum store_job_status status;
        if (store_job_status_parse(PQgetvalue(res, i, 0), &status) == 0)
            counts[status] = strtol(PQgetvalue(res, i, 1), NULL, 10);
    }
out:
    PQclear(res);
    return rc;
}

static int pg_delivery_pending_count(struct store *st, long *out, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    PGresult *res = NULL;
    *out = 0;
    int rc = pg_ensure_conn(s, e);
    if (rc != 0)
        goto out;
    res = PQexec(s->conn, "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = pg_fail(s, res, "pending deliveries", e);
        goto out;
    }
    *out = strtol(PQgetvalue(res, 0, 0), NULL, 10);
out:
    PQclear(res);
    return rc;
}

/* A round trip to the server: fails when it is down or the connection is lost (one
 * reconnect is tried first, as for every call). */
static int pg_ping(struct store *st, struct err *e)
{
    struct pg_store *s = (struct pg_store *)st;
    int rc = pg_ensure_conn(s, e);
    if (rc == 0)
        rc = pg_exec(s, "SELECT 1", "ping", e);
    return rc;
}

static const struct store_ops pg_ops = {
    .kind = "postgres",
    .crew_insert = pg_crew_insert,
    .crew_update = pg_crew_update,
    .crew_get = pg_crew_get,
    .crew_list = pg_crew_list,
    .crew_delete = pg_crew_delete,
    .job_insert = pg_job_insert,
    .job_get = pg_job_get,
    .job_find_by_key = pg_job_find_by_key,
    .job_claim = pg_job_claim,
    .job_renew = pg_job_renew,
    .job_release = pg_job_release,
    .job_step_put = pg_job_step_put,
    .job_steps_get = pg_job_steps_get,
    .job_finish = pg_job_finish,
    .job_list = pg_job_list,
    .job_delete = pg_job_delete,
    .job_purge = pg_job_purge,
    .event_append_batch = pg_event_append_batch,
    .event_list = pg_event_list,
    .delivery_claim = pg_delivery_claim,
    .delivery_done = pg_delivery_done,
    .delivery_release = pg_delivery_release,
    .delivery_list = pg_delivery_list,
    .job_counts = pg_job_counts,
    .delivery_pending_count = pg_delivery_pending_count,
    .ping = pg_ping,
    .memory_get = pg_memory_get,
    .memory_append = pg_memory_append,
    .memory_clear = pg_memory_clear,
    .named_put = pg_named_put,
    .named_get = pg_named_get,
    .named_list = pg_named_list,
    .named_delete = pg_named_delete,
    .close = pg_close,
};

int store_pg_open(const char *url, struct store **out, struct err *e)
{
    int rc = 0;
    *out = NULL;
    struct pg_store *s = NULL;
    const char *user;
    size_t user_len;
    /* libpq ends the authority at the first '/', so a password with an unencoded '/' is read
     * as host and port and quoted back in the connection error. Refuse it before connecting,
     * without echoing any of it. */
    if (url_userinfo(url, &user, &user_len) && memchr(user, '/', user_len) != NULL) {
        rc = err_set(e, ERR_INVALID,
                     "store: postgres: the user or password in the URL contains '/'; "
                     "percent-encode it as %%2F");
        goto out;
    }
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    s->base.ops = &pg_ops;
    /* Bounds on a database that stops answering: every store call runs on the loop, so an
     * unbounded connect (the OS's ~2 min) or a half-open connection (TCP retransmits) would
     * stall the whole server. The defaults come before the URL (expand_dbname), so that a URL
     * naming any of them wins. */
    static const char *const keys[] = {"connect_timeout", "keepalives", "keepalives_idle",
                                       "keepalives_interval", "keepalives_count",
                                       "tcp_user_timeout", "options", "dbname", NULL};
    const char *const vals[] = {"5", "1", "10", "5", "3", "30000",
                                "-c statement_timeout=30000", url, NULL};
    s->conn = PQconnectdbParams(keys, vals, 1);
    if (s->conn == NULL) {
        rc = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        char line[ERR_MSG_MAX];
        pg_first_line(PQerrorMessage(s->conn), line, sizeof line);
        pg_scrub_conn_msg(line, url);
        rc = err_set(e, ERR_STORE, "store: postgres: cannot connect: %s", line);
        goto out;
    }
    PQsetNoticeProcessor(s->conn, pg_notice, NULL);
    /* Text goes in and out as UTF-8 bytes whatever the server's default client encoding. */
    if (PQsetClientEncoding(s->conn, "UTF8") != 0) {
        rc = pg_fail(s, NULL, "set client encoding", e);
        goto out;
    }
    rc = pg_migrate(s, e);
    if (rc != 0)
        goto out;
    rc = pg_prepare_all(s, e);
    if (rc != 0)
        goto out;
    *out = &s->base;
    s = NULL;
out:
    if (s != NULL)
        pg_close(&s->base);
    return rc;
}
