/*
 * store_sqlite.c - the SQLite backend of store.h: one database file in WAL mode, opened by the
 * loop thread and used only by it (hence SQLITE_OPEN_NOMUTEX).
 *
 * Every statement is prepared once at open and reset after each use, so a call costs one
 * sqlite3_step and no parsing. The schema is moved forward by an ordered list of migrations,
 * each applied in its own transaction together with its schema_version row. SQLITE_* codes
 * are translated into the ERR_* table here and never leave this file.
 */
#include "store/store_sqlite.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"

#define MOD "store"

/*
 * Migration N (1-based) is MIGRATIONS[N - 1]. Append only: a released migration never
 * changes, since databases in the field have recorded it as applied.
 */
static const char *const MIGRATIONS[] = {
    /* 1: the crew registry. The index serves the list order: created_at, then rowid, which
     * is insertion order for crews created within the same millisecond. */
    "CREATE TABLE crews ("
    " crew_id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL UNIQUE,"
    " description TEXT,"
    " execution_mode TEXT NOT NULL,"
    " agent_count INTEGER NOT NULL,"
    " definition TEXT NOT NULL,"
    " plan TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL);"
    "CREATE INDEX crews_created ON crews(created_at);",
    /* 2: the job queue (DESIGN.md decision 2) and its checkpoints (decision 3).
     * seq is the rowid: a new row gets max(seq) + 1, so it is above every job still in the
     * table, which is all FIFO needs (AUTOINCREMENT would cost a sqlite_sequence write per
     * insert). No foreign key to crews: a job carries snapshots of its crew and outlives it.
     * Times are RFC 3339 text like the crews'; the lease deadline is epoch milliseconds, so
     * a claim compares integers. The partial indexes hold only live rows (pending, running),
     * so a claim, a renewal or a release costs the same with an empty queue or a table of a
     * million finished jobs: a claim walks the pending jobs in seq order and reads only the
     * running jobs whose deadline passed, not every job in flight. job_steps.seq is the order a step was first written within its
     * job (max + 1 under the write lock); a replaced step keeps it. */
    "CREATE TABLE jobs ("
    " seq INTEGER PRIMARY KEY,"
    " job_id TEXT NOT NULL UNIQUE,"
    " crew_id TEXT NOT NULL,"
    " crew_name TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN"
    " ('pending', 'running', 'completed', 'failed', 'cancelled')),"
    " execution_mode TEXT NOT NULL,"
    " request TEXT NOT NULL,"
    " definition TEXT NOT NULL,"
    " plan TEXT NOT NULL,"
    " metadata TEXT NOT NULL,"
    " result TEXT,"
    " error TEXT,"
    " created_at TEXT NOT NULL,"
    " started_at TEXT,"
    " completed_at TEXT,"
    " lease_owner TEXT,"
    " lease_expires_ms INTEGER,"
    " attempts INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX jobs_pending ON jobs(seq) WHERE status = 'pending';"
    "CREATE INDEX jobs_running_expiry ON jobs(lease_expires_ms) WHERE status = 'running';"
    "CREATE INDEX jobs_running_owner ON jobs(lease_owner) WHERE status = 'running';"
    "CREATE TABLE job_steps ("
    " job_id TEXT NOT NULL,"
    " key TEXT NOT NULL,"
    " data TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " created_at TEXT NOT NULL,"
    " PRIMARY KEY (job_id, key));",
    /* 3: conversation memory, one row per turn. seq is the rowid: a new row gets max + 1,
     * above every turn still in the table, so within a conversation it is the append order
     * (a number freed by a delete may come back, but only above every remaining row). The
     * index holds the four keys then seq (the rowid, which every index carries anyway), so
     * "the newest n" is a backward walk of n entries and the trim finds its bound the same
     * way. user_id and session_id are '' for none, never NULL, so that equality matches
     * "no user" and the index serves it. No foreign key to crews, like the jobs. */
    "CREATE TABLE memory ("
    " seq INTEGER PRIMARY KEY,"
    " crew_id TEXT NOT NULL,"
    " agent_key TEXT NOT NULL,"
    " user_id TEXT NOT NULL,"
    " session_id TEXT NOT NULL,"
    " role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),"
    " content TEXT NOT NULL,"
    " created_at TEXT NOT NULL);"
    "CREATE INDEX memory_conversation ON memory(crew_id, agent_key, user_id, session_id, seq);",
    /* 4: the catalogs of user-defined HTTP tools and custom agent classes, keyed by name.
     * The definition is JSON text (secrets included), read back byte for byte. Crews do not
     * reference these rows: a crew is expanded from them when it is created. */
    "CREATE TABLE tools ("
    " name TEXT PRIMARY KEY,"
    " definition TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL);"
    "CREATE TABLE agent_classes ("
    " name TEXT PRIMARY KEY,"
    " definition TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL);",
    /* 5: the job list and retention. The list walks one index backwards in its order
     * (created_at, then seq: every index ends with the rowid) and stops after the page:
     * jobs_created for all jobs, jobs_crew_created and jobs_status_created for a filter. The
     * purge walks the finished jobs by their end (completed_at is set exactly when a job
     * ends); the partial index leaves the live rows out. */
    "CREATE INDEX jobs_created ON jobs(created_at);"
    "CREATE INDEX jobs_crew_created ON jobs(crew_id, created_at);"
    "CREATE INDEX jobs_status_created ON jobs(status, created_at);"
    "CREATE INDEX jobs_finished ON jobs(completed_at) WHERE completed_at IS NOT NULL;",
    /* 6: the Idempotency-Key of execute. The key is unique among the jobs that have one (a
     * partial index: most jobs have none); request_hash is the SHA-256 of the request body
     * (hex), so a replay with another body is told from a retry. Deleting the row frees the
     * key. */
    "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;"
    "ALTER TABLE jobs ADD COLUMN request_hash TEXT;"
    "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs(idempotency_key)"
    " WHERE idempotency_key IS NOT NULL;",
    /* 7: events and webhooks (DESIGN.md decision 4). A job's events are numbered 1, 2, ...
     * (seq, dense), read in order by SSE streams; a delivery row per event the job's webhook
     * asked for, with its retry state and lease. The job keeps its webhook's url, secret and
     * event mask (0: none). job_events is a rowid table on purpose: its rows are large (an
     * agent's output) and arrive in time order, so they are appended to the table's last
     * page while the (job_id, seq) index takes the scattered keys; WITHOUT ROWID put each row
     * at its random job_id's place (bench_jobs: about 10% fewer steps/s). */
    "ALTER TABLE jobs ADD COLUMN webhook_url TEXT;"
    "ALTER TABLE jobs ADD COLUMN webhook_secret TEXT;"
    "ALTER TABLE jobs ADD COLUMN webhook_mask INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE job_events ("
    " job_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " type TEXT NOT NULL,"
    " data TEXT NOT NULL,"
    " created_at TEXT NOT NULL,"
    " PRIMARY KEY (job_id, seq));"
    "CREATE TABLE webhook_deliveries ("
    " job_id TEXT NOT NULL,"
    " seq INTEGER NOT NULL,"
    " type TEXT NOT NULL,"
    " state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_attempt_ms INTEGER NOT NULL,"
    " lease_owner TEXT,"
    " lease_expires_ms INTEGER NOT NULL DEFAULT 0,"
    " last_status INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " created_at TEXT NOT NULL,"
    " updated_at TEXT NOT NULL,"
    " PRIMARY KEY (job_id, seq));"
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_ms)"
    " WHERE state = 'pending';",
};

_Static_assert(sizeof MIGRATIONS / sizeof MIGRATIONS[0] == STORE_SCHEMA_VERSION,
               "one migration per schema version");

/* Columns of a crew row as read back. Listing reads only the first CREW_LIST_COLS, so the
 * two large JSON columns come last. */
#define CREW_COLS                                                                                  \
    "crew_id, name, description, execution_mode, agent_count, created_at, updated_at,"             \
    " definition, plan"
#define CREW_LIST_COLS 7

/* Columns of a job row as read back (job_from_row); the claim adds seq after them. */
#define JOB_COLS                                                                                   \
    "job_id, crew_id, crew_name, status, execution_mode, request, definition, plan, metadata,"     \
    " result, error, created_at, started_at, completed_at, attempts, idempotency_key,"           \
    " request_hash, webhook_url, webhook_secret, webhook_mask"
#define JOB_N_COLS 20

/* The conversation a memory statement is about: parameters ?1..?4. */
#define MEMORY_KEY "crew_id = ?1 AND agent_key = ?2 AND user_id = ?3 AND session_id = ?4"

/* A job that is still to be finished; the same list guards finish without an owner. */
#define JOB_LIVE "status IN ('pending', 'running')"

/* A finished job that ended before ?1, with no webhook delivery still to be sent (retention
 * must not take a delivery that is waiting for its next attempt). */
#define JOB_PURGEABLE                                                                              \
    "completed_at IS NOT NULL AND completed_at < ?1 AND NOT " JOB_LIVE                             \
    " AND NOT EXISTS (SELECT 1 FROM webhook_deliveries w WHERE w.job_id = jobs.job_id"             \
    " AND w.state = 'pending')"

/* The listing's columns: JOB_COLS without the large texts (request, definition, plan,
 * result) and the webhook, which come back NULL (mask 0). */
#define JOB_LIST_COLS                                                                              \
    "job_id, crew_id, crew_name, status, execution_mode, NULL, NULL, NULL, metadata,"              \
    " NULL, error, created_at, started_at, completed_at, attempts, idempotency_key,"             \
    " request_hash, NULL, NULL, 0"

/* Columns of a delivery as claimed (delivery_from_row): the row, its event's data and time,
 * its job's webhook. DELIVERY_LIST_COLS leaves out the event data, url and secret. */
#define DELIVERY_COLS                                                                              \
    "d.job_id, d.seq, d.type, d.state, d.attempts, d.next_attempt_ms, d.last_status,"            \
    " d.last_error, ev.data, ev.created_at, j.webhook_url, j.webhook_secret, d.created_at,"       \
    " d.updated_at"
#define DELIVERY_LIST_COLS                                                                         \
    "d.job_id, d.seq, d.type, d.state, d.attempts, d.next_attempt_ms, d.last_status,"            \
    " d.last_error, NULL, ev.created_at, NULL, NULL, d.created_at, d.updated_at"

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_CREW_INSERT,
    ST_CREW_UPDATE,
    ST_CREW_BY_NAME,
    ST_CREW_BY_ID,
    ST_CREW_COUNT,
    ST_CREW_PAGE,
    ST_CREW_DELETE,
    ST_BEGIN_IMMEDIATE,
    ST_JOB_INSERT,
    ST_JOB_GET,
    ST_JOB_BY_KEY,
    ST_JOB_STATUS,
    ST_JOB_CLAIM,
    ST_JOB_RENEW,
    ST_JOB_RELEASE,
    ST_STEP_PUT,
    ST_STEPS_GET,
    ST_JOB_FINISH_OWNED,
    ST_JOB_FINISH_ANY,
    ST_JOB_DELETE_STEPS,
    ST_JOB_DELETE,
    ST_JOB_DELETE_EVENTS,
    ST_JOB_DELETE_DELIVERIES,
    ST_JOB_PURGE_STEPS,
    ST_JOB_PURGE_EVENTS,
    ST_JOB_PURGE_DELIVERIES,
    ST_JOB_PURGE,
    ST_JOB_FENCE,
    ST_EVENT_INSERT,
    ST_DELIVERY_INSERT,
    ST_EVENT_LIST,
    ST_DELIVERY_CLAIM,
    ST_DELIVERY_ROW,
    ST_DELIVERY_DONE,
    ST_DELIVERY_EXISTS,
    ST_DELIVERY_RELEASE,
    ST_DELIVERY_LIST,
    ST_MEMORY_GET,
    ST_MEMORY_INSERT,
    ST_MEMORY_TRIM,
    ST_MEMORY_CLEAR,
    /* The catalogs: one block of ST_NAMED_N_ per catalog, in enum store_catalog order. */
    ST_NAMED_FIRST_,
    ST_COUNT_ = ST_NAMED_FIRST_ + 2 * 5
};

/* The statements of one catalog, as offsets from its block (named_stmt()). */
enum named_op { NAMED_GET, NAMED_LIST, NAMED_INSERT, NAMED_UPDATE, NAMED_DELETE, NAMED_N_ };
_Static_assert(NAMED_N_ == 5, "ST_COUNT_ counts 5 statements per catalog");

#define NAMED_COLS "name, definition, created_at, updated_at"
#define NAMED_SQL(table)                                                                           \
    "SELECT " NAMED_COLS " FROM " table " WHERE name = ?1",                                        \
        "SELECT " NAMED_COLS " FROM " table " ORDER BY name",                                      \
        "INSERT INTO " table " (name, definition, created_at, updated_at)"                         \
        " VALUES (?1, ?2, ?3, ?3)",                                                                \
        "UPDATE " table " SET definition = ?2, updated_at = ?3 WHERE name = ?1",                   \
        "DELETE FROM " table " WHERE name = ?1"

/* Indexed by enum store_catalog, then enum named_op. */
static const char *const NAMED_STMT_SQL[2][NAMED_N_] = {{NAMED_SQL("tools")},
                                                         {NAMED_SQL("agent_classes")}};

static const char *const STMT_SQL[ST_COUNT_] = {
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_CREW_INSERT] = "INSERT INTO crews (crew_id, name, description, execution_mode,"
                       " agent_count, definition, plan, created_at, updated_at)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_CREW_UPDATE] = "UPDATE crews SET name = ?2, description = ?3, execution_mode = ?4,"
                       " agent_count = ?5, definition = ?6, plan = ?7, updated_at = ?9"
                       " WHERE crew_id = ?1",
    [ST_CREW_BY_NAME] = "SELECT " CREW_COLS " FROM crews WHERE name = ?1",
    [ST_CREW_BY_ID] = "SELECT " CREW_COLS " FROM crews WHERE crew_id = ?1",
    [ST_CREW_COUNT] = "SELECT count(*) FROM crews",
    [ST_CREW_PAGE] = "SELECT " CREW_COLS " FROM crews ORDER BY created_at, rowid"
                     " LIMIT ?1 OFFSET ?2",
    [ST_CREW_DELETE] = "DELETE FROM crews WHERE crew_id = ?1",
    [ST_BEGIN_IMMEDIATE] = "BEGIN IMMEDIATE",
    [ST_JOB_INSERT] = "INSERT INTO jobs (job_id, crew_id, crew_name, status, execution_mode,"
                      " request, definition, plan, metadata, created_at, idempotency_key,"
                      " request_hash, webhook_url, webhook_secret, webhook_mask)"
                      " VALUES (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12,"
                      " ?13, ?14)",
    [ST_JOB_GET] = "SELECT " JOB_COLS " FROM jobs WHERE job_id = ?1",
    [ST_JOB_BY_KEY] = "SELECT " JOB_COLS " FROM jobs WHERE idempotency_key = ?1",
    [ST_JOB_STATUS] = "SELECT status FROM jobs WHERE job_id = ?1",
    /*
     * ?1 owner, ?2 now_ms, ?3 lease deadline, ?4 started_at text, ?5 max. The candidates
     * are the oldest pending jobs and the oldest running jobs whose lease expired, each
     * taken from its own partial index and limited before they are merged, so the cost
     * does not grow with the queue or the jobs in flight. INDEXED BY pins those indexes:
     * without statistics the planner would rather scan the whole table in rowid order for
     * the running branch, since that order also serves ORDER BY seq. RETURNING gives no order; the caller
     * sorts by seq.
     */
    [ST_JOB_CLAIM] = "UPDATE jobs SET status = 'running', lease_owner = ?1,"
                     " lease_expires_ms = ?3, started_at = coalesce(started_at, ?4),"
                     " attempts = attempts + 1"
                     " WHERE seq IN (SELECT seq FROM"
                     " (SELECT seq FROM jobs INDEXED BY jobs_pending WHERE status = 'pending'"
                     " ORDER BY seq LIMIT ?5)"
                     " UNION ALL SELECT seq FROM"
                     " (SELECT seq FROM jobs INDEXED BY jobs_running_expiry WHERE status = 'running'"
                     " AND lease_expires_ms < ?2 ORDER BY seq LIMIT ?5)"
                     " ORDER BY 1 LIMIT ?5)"
                     " RETURNING " JOB_COLS ", seq",
    [ST_JOB_RENEW] = "UPDATE jobs SET lease_expires_ms = ?2"
                     " WHERE status = 'running' AND lease_owner = ?1",
    /* The owner is cleared too, so that a late write of the instance that let go is fenced
     * off even before another instance claims the job. */
    [ST_JOB_RELEASE] = "UPDATE jobs SET lease_owner = NULL, lease_expires_ms = 0"
                       " WHERE status = 'running' AND lease_owner = ?1"
                       " AND (?2 IS NULL OR job_id = ?2)",
    /* One statement, so the fence and the write are one atomic step under the write lock.
     * The WHERE on the SELECT also keeps SQLite from reading ON CONFLICT as a join. */
    [ST_STEP_PUT] = "INSERT INTO job_steps (job_id, key, data, seq, created_at)"
                    " SELECT ?1, ?3, ?4,"
                    " (SELECT coalesce(max(seq), 0) + 1 FROM job_steps WHERE job_id = ?1), ?5"
                    " WHERE EXISTS (SELECT 1 FROM jobs WHERE job_id = ?1"
                    " AND status = 'running' AND lease_owner = ?2)"
                    " ON CONFLICT (job_id, key) DO UPDATE SET data = excluded.data",
    [ST_STEPS_GET] = "SELECT key, data FROM job_steps WHERE job_id = ?1 ORDER BY seq",
    [ST_JOB_FINISH_OWNED] = "UPDATE jobs SET status = ?3, result = ?4, error = ?5,"
                            " completed_at = ?6, lease_owner = NULL, lease_expires_ms = NULL"
                            " WHERE job_id = ?1 AND status = 'running' AND lease_owner = ?2",
    [ST_JOB_FINISH_ANY] = "UPDATE jobs SET status = ?3, result = ?4, error = ?5,"
                          " completed_at = ?6, lease_owner = NULL, lease_expires_ms = NULL"
                          " WHERE job_id = ?1 AND " JOB_LIVE,
    [ST_JOB_DELETE_STEPS] = "DELETE FROM job_steps WHERE job_id = ?1",
    [ST_JOB_DELETE_EVENTS] = "DELETE FROM job_events WHERE job_id = ?1",
    [ST_JOB_DELETE_DELIVERIES] = "DELETE FROM webhook_deliveries WHERE job_id = ?1",
    [ST_JOB_DELETE] = "DELETE FROM jobs WHERE job_id = ?1 AND NOT " JOB_LIVE,
    /* ?1 the cutoff (RFC 3339 text, which sorts as time: one fixed width, UTC), ?2 the
     * batch. The statements run in one write transaction and pick the same rows (a total
     * order), the job's other rows first and the jobs last. */
    [ST_JOB_PURGE_STEPS] = "DELETE FROM job_steps WHERE job_id IN (SELECT job_id FROM jobs"
                           " WHERE " JOB_PURGEABLE " ORDER BY completed_at, seq LIMIT ?2)",
    [ST_JOB_PURGE_EVENTS] = "DELETE FROM job_events WHERE job_id IN (SELECT job_id FROM jobs"
                            " WHERE " JOB_PURGEABLE " ORDER BY completed_at, seq LIMIT ?2)",
    [ST_JOB_PURGE_DELIVERIES] = "DELETE FROM webhook_deliveries WHERE job_id IN (SELECT job_id"
                                " FROM jobs WHERE " JOB_PURGEABLE
                                " ORDER BY completed_at, seq LIMIT ?2)",
    [ST_JOB_PURGE] = "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs"
                     " WHERE " JOB_PURGEABLE " ORDER BY completed_at, seq LIMIT ?2)",
    /* ?1 job_id, ?2 owner (NULL: no fence): the job's webhook mask and whether the fence
     * holds. Run under the write lock, so the answer stands until the transaction ends. */
    [ST_JOB_FENCE] = "SELECT webhook_mask, ?2 IS NULL OR (status = 'running'"
                     " AND lease_owner = ?2) FROM jobs WHERE job_id = ?1",
    /* ?1 job_id, ?2 type, ?3 data, ?4 created_at. The next number is read from the primary
     * key under the write lock that every append holds, so numbers are dense and unique. */
    [ST_EVENT_INSERT] = "INSERT INTO job_events (job_id, seq, type, data, created_at)"
                        " SELECT ?1, coalesce(max(seq), 0) + 1, ?2, ?3, ?4 FROM job_events"
                        " WHERE job_id = ?1 RETURNING seq",
    /* ?1 job_id, ?2 seq, ?3 type, ?4 now_ms (due at once), ?5 its text. */
    [ST_DELIVERY_INSERT] = "INSERT INTO webhook_deliveries (job_id, seq, type, state, attempts,"
                           " next_attempt_ms, lease_expires_ms, created_at, updated_at)"
                           " VALUES (?1, ?2, ?3, 'pending', 0, ?4, 0, ?5, ?5)",
    [ST_EVENT_LIST] = "SELECT seq, type, data, created_at FROM job_events"
                      " WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    /* ?1 owner, ?2 now_ms, ?3 lease deadline, ?4 updated_at text, ?5 max. Due rows come
     * from the partial index of pending deliveries in its order (next_attempt_ms, then the
     * rowid every index ends with: insertion order); INDEXED BY pins it, as for the job
     * claim. A lease is live until its deadline has passed, as a job's. RETURNING gives no
     * order; the caller sorts. */
    [ST_DELIVERY_CLAIM] = "UPDATE webhook_deliveries SET lease_owner = ?1,"
                          " lease_expires_ms = ?3, attempts = attempts + 1, updated_at = ?4"
                          " WHERE rowid IN (SELECT rowid FROM webhook_deliveries"
                          " INDEXED BY webhook_deliveries_due WHERE state = 'pending'"
                          " AND next_attempt_ms <= ?2"
                          " AND (lease_owner IS NULL OR lease_expires_ms < ?2)"
                          " ORDER BY next_attempt_ms, rowid LIMIT ?5)"
                          " RETURNING rowid, next_attempt_ms",
    [ST_DELIVERY_ROW] = "SELECT " DELIVERY_COLS " FROM webhook_deliveries d"
                        " JOIN job_events ev ON ev.job_id = d.job_id AND ev.seq = d.seq"
                        " JOIN jobs j ON j.job_id = d.job_id WHERE d.rowid = ?1",
    /* ?1 job_id, ?2 seq, ?3 owner, ?4 state, ?5 next attempt (pending only), ?6 HTTP
     * status, ?7 error, ?8 updated_at, ?9 attempts made (0: keep). Fenced on the lease owner
     * in the same statement. */
    [ST_DELIVERY_DONE] = "UPDATE webhook_deliveries SET state = ?4,"
                         " attempts = CASE WHEN ?9 > 0 THEN ?9 ELSE attempts END,"
                         " next_attempt_ms = CASE WHEN ?4 = 'pending' THEN ?5"
                         " ELSE next_attempt_ms END,"
                         " last_status = ?6, last_error = ?7, lease_owner = NULL,"
                         " lease_expires_ms = 0, updated_at = ?8"
                         " WHERE job_id = ?1 AND seq = ?2 AND lease_owner = ?3",
    [ST_DELIVERY_EXISTS] = "SELECT 1 FROM webhook_deliveries WHERE job_id = ?1 AND seq = ?2",
    /* Only pending rows hold leases (done clears them): the partial index serves the scan. */
    [ST_DELIVERY_RELEASE] = "UPDATE webhook_deliveries SET lease_owner = NULL,"
                            " lease_expires_ms = 0 WHERE state = 'pending' AND lease_owner = ?1",
    [ST_DELIVERY_LIST] = "SELECT " DELIVERY_LIST_COLS " FROM webhook_deliveries d"
                         " LEFT JOIN job_events ev ON ev.job_id = d.job_id AND ev.seq = d.seq"
                         " WHERE d.job_id = ?1 ORDER BY d.seq",
    /* ?1..?4 the conversation, as every memory statement numbers it. */
    [ST_MEMORY_GET] = "SELECT role, content, created_at FROM memory"
                      " WHERE " MEMORY_KEY " ORDER BY seq DESC LIMIT ?5",
    [ST_MEMORY_INSERT] = "INSERT INTO memory (crew_id, agent_key, user_id, session_id, role,"
                         " content, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* ?5 keep_turns (> 0): every turn at or below the (keep + 1)-th newest goes; with no
     * such turn the bound is NULL and nothing matches. */
    [ST_MEMORY_TRIM] = "DELETE FROM memory WHERE " MEMORY_KEY " AND seq <= (SELECT seq"
                       " FROM memory WHERE " MEMORY_KEY " ORDER BY seq DESC LIMIT 1 OFFSET ?5)",
    [ST_MEMORY_CLEAR] = "DELETE FROM memory WHERE " MEMORY_KEY,
};

struct store_sqlite {
    struct store base; /* first: a struct store * is a struct store_sqlite * */
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT_];
};

static struct store_sqlite *from_store(struct store *st)
{
    return (struct store_sqlite *)st;
}

/* The ERR_* code for a failed SQLite call (primary or extended code). */
static int code_of(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return ERR_BUSY;
    case SQLITE_NOMEM:
        return ERR_NOMEM;
    case SQLITE_TOOBIG:
        return ERR_TOO_LARGE;
    default:
        return ERR_STORE;
    }
}

/* Records a failed SQLite call on `db` in `e`; returns the translated code. */
static int fail(sqlite3 *db, int rc, struct err *e)
{
    const char *msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    return err_set(e, code_of(rc), "store: %s", msg);
}

/* Makes a statement ready for its next use and drops borrowed bindings, so no read
 * transaction stays open and no pointer to the caller's strings outlives the call. */
static void stmt_done(sqlite3_stmt *stmt)
{
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
}

/* Runs a statement that returns no rows (BEGIN, COMMIT, ...). */
static int run(struct store_sqlite *s, enum stmt_id id, struct err *e)
{
    sqlite3_stmt *stmt = s->stmt[id];
    int rc = sqlite3_step(stmt);
    int ret = 0;
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        ret = fail(s->db, rc, e);
    stmt_done(stmt);
    return ret;
}

/* Binds text borrowed for the duration of the call (SQLITE_STATIC: stmt_done clears it). */
static int bind_text(struct store_sqlite *s, sqlite3_stmt *stmt, int idx, const char *text,
                     struct err *e)
{
    int rc =
        text ? sqlite3_bind_text(stmt, idx, text, -1, SQLITE_STATIC) : sqlite3_bind_null(stmt, idx);
    return rc == SQLITE_OK ? 0 : fail(s->db, rc, e);
}

/* True when `buf` (of `cap` bytes) holds a non-empty NUL-terminated string. */
static bool fixed_str_ok(const char *buf, size_t cap)
{
    return buf[0] != '\0' && memchr(buf, '\0', cap) != NULL;
}

/* The checks SQLite's NOT NULL constraints would make, with messages a caller can act on. */
static int crew_check(const struct store_crew *c, struct err *e)
{
    if (c == NULL)
        return err_set(e, ERR_INVALID, "store: no crew given");
    if (!fixed_str_ok(c->crew_id, sizeof c->crew_id))
        return err_set(e, ERR_INVALID, "store: crew_id is required");
    if (c->name == NULL)
        return err_set(e, ERR_INVALID, "store: name is required");
    if (c->execution_mode == NULL)
        return err_set(e, ERR_INVALID, "store: execution_mode is required");
    if (c->definition == NULL || c->plan == NULL)
        return err_set(e, ERR_INVALID, "store: definition and plan are required");
    if (!fixed_str_ok(c->created_at, sizeof c->created_at) ||
        !fixed_str_ok(c->updated_at, sizeof c->updated_at))
        return err_set(e, ERR_INVALID, "store: created_at and updated_at are required");
    return 0;
}

/* Binds the crew to the insert/update parameters ?1..?9 (the update uses all but ?8). */
static int crew_bind(struct store_sqlite *s, sqlite3_stmt *stmt, const struct store_crew *c,
                     bool with_created, struct err *e)
{
    int rc;
    if ((rc = bind_text(s, stmt, 1, c->crew_id, e)) != 0 ||
        (rc = bind_text(s, stmt, 2, c->name, e)) != 0 ||
        (rc = bind_text(s, stmt, 3, c->description, e)) != 0 ||
        (rc = bind_text(s, stmt, 4, c->execution_mode, e)) != 0 ||
        (rc = bind_text(s, stmt, 6, c->definition, e)) != 0 ||
        (rc = bind_text(s, stmt, 7, c->plan, e)) != 0 ||
        (with_created && (rc = bind_text(s, stmt, 8, c->created_at, e)) != 0) ||
        (rc = bind_text(s, stmt, 9, c->updated_at, e)) != 0)
        return rc;
    rc = sqlite3_bind_int64(stmt, 5, (sqlite3_int64)c->agent_count);
    return rc == SQLITE_OK ? 0 : fail(s->db, rc, e);
}

/*
 * Translates a failed insert or update. A UNIQUE violation is the caller's conflict and names
 * the field: with extended result codes on, SQLite reports the primary key's index as
 * SQLITE_CONSTRAINT_PRIMARYKEY and any other unique index (here only the name's) as
 * SQLITE_CONSTRAINT_UNIQUE. An update never changes crew_id, so it can only see the latter.
 */
static int write_fail(struct store_sqlite *s, int rc, const struct store_crew *c, struct err *e)
{
    if (rc == SQLITE_CONSTRAINT_PRIMARYKEY)
        return err_set(e, ERR_CONFLICT, "crew_id: a crew with id '%s' already exists", c->crew_id);
    if (rc == SQLITE_CONSTRAINT_UNIQUE)
        return err_set(e, ERR_CONFLICT, "name: a crew named '%s' already exists", c->name);
    return fail(s->db, rc, e);
}

static int crew_insert(struct store *st, const struct store_crew *crew, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_CREW_INSERT];
    int ret = crew_check(crew, e);
    if (ret != 0)
        goto out;
    if ((ret = crew_bind(s, stmt, crew, true, e)) != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        ret = write_fail(s, rc, crew, e);
out:
    stmt_done(stmt);
    return ret;
}

static int crew_update(struct store *st, const struct store_crew *crew, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_CREW_UPDATE];
    int ret = crew_check(crew, e);
    if (ret != 0)
        goto out;
    if ((ret = crew_bind(s, stmt, crew, false, e)) != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        ret = write_fail(s, rc, crew, e);
        goto out;
    }
    if (sqlite3_changes(s->db) == 0)
        ret = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", crew->crew_id);
out:
    stmt_done(stmt);
    return ret;
}

/* Copies a text column into a new string; NULL stays NULL only where `nullable`. */
static int col_dup(sqlite3_stmt *stmt, int col, bool nullable, char **out, struct err *e)
{
    *out = NULL;
    const unsigned char *text = sqlite3_column_text(stmt, col);
    if (text == NULL) {
        if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
            return nullable ? 0
                            : err_set(e, ERR_STORE, "store: column %s is NULL",
                                      sqlite3_column_name(stmt, col));
        return err_set(e, ERR_NOMEM, "store: out of memory reading a row");
    }
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return err_set(e, ERR_NOMEM, "store: out of memory reading a row");
    memcpy(copy, text, len);
    copy[len] = '\0';
    *out = copy;
    return 0;
}

/* Copies a short text column into a fixed buffer; a value that does not fit is corruption. */
static int col_fixed(sqlite3_stmt *stmt, int col, char *buf, size_t cap, struct err *e)
{
    const unsigned char *text = sqlite3_column_text(stmt, col);
    size_t len = (size_t)sqlite3_column_bytes(stmt, col);
    if (text == NULL || len == 0 || len >= cap)
        return err_set(e, ERR_STORE, "store: column %s is malformed",
                       sqlite3_column_name(stmt, col));
    memcpy(buf, text, len);
    buf[len] = '\0';
    return 0;
}

/* col_fixed for a column that may be NULL, which reads as "". */
static int col_fixed_opt(sqlite3_stmt *stmt, int col, char *buf, size_t cap, struct err *e)
{
    if (sqlite3_column_type(stmt, col) == SQLITE_NULL) {
        buf[0] = '\0';
        return 0;
    }
    return col_fixed(stmt, col, buf, cap, e);
}

/* Builds a crew from the current row of a CREW_COLS statement; `full` reads the JSON too. */
static int crew_from_row(sqlite3_stmt *stmt, bool full, struct store_crew **out, struct err *e)
{
    *out = NULL;
    int ret = 0;
    struct store_crew *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory reading a crew");
        goto out;
    }
    if ((ret = col_fixed(stmt, 0, c->crew_id, sizeof c->crew_id, e)) != 0 ||
        (ret = col_dup(stmt, 1, false, &c->name, e)) != 0 ||
        (ret = col_dup(stmt, 2, true, &c->description, e)) != 0 ||
        (ret = col_dup(stmt, 3, false, &c->execution_mode, e)) != 0 ||
        (ret = col_fixed(stmt, 5, c->created_at, sizeof c->created_at, e)) != 0 ||
        (ret = col_fixed(stmt, 6, c->updated_at, sizeof c->updated_at, e)) != 0)
        goto out;
    c->agent_count = (long)sqlite3_column_int64(stmt, 4);
    if (full && ((ret = col_dup(stmt, 7, false, &c->definition, e)) != 0 ||
                 (ret = col_dup(stmt, 8, false, &c->plan, e)) != 0))
        goto out;
    *out = c;
    c = NULL;
out:
    store_crew_free(c);
    return ret;
}

/* One lookup: 0 and a crew, ERR_NOT_FOUND (no message), or another error. */
static int crew_lookup(struct store_sqlite *s, enum stmt_id id, const char *ident,
                       struct store_crew **out, struct err *e)
{
    sqlite3_stmt *stmt = s->stmt[id];
    int ret = bind_text(s, stmt, 1, ident, e);
    if (ret != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        ret = crew_from_row(stmt, true, out, e);
    else if (rc == SQLITE_DONE)
        ret = ERR_NOT_FOUND;
    else
        ret = fail(s->db, rc, e);
out:
    stmt_done(stmt);
    return ret;
}

static int crew_get(struct store *st, const char *ident, enum store_lookup how,
                    struct store_crew **out, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    *out = NULL;
    int ret;
    if (ident == NULL) {
        ret = err_set(e, ERR_INVALID, "store: no crew identifier given");
        goto out;
    }
    switch (how) {
    case STORE_BY_NAME_OR_ID:
        /* A name wins over an id: API.md looks crews up by name first. */
        ret = crew_lookup(s, ST_CREW_BY_NAME, ident, out, e);
        if (ret == ERR_NOT_FOUND)
            ret = crew_lookup(s, ST_CREW_BY_ID, ident, out, e);
        break;
    case STORE_BY_NAME:
        ret = crew_lookup(s, ST_CREW_BY_NAME, ident, out, e);
        break;
    case STORE_BY_ID:
        ret = crew_lookup(s, ST_CREW_BY_ID, ident, out, e);
        break;
    default:
        ret = err_set(e, ERR_INVALID, "store: unknown lookup %d", (int)how);
        goto out;
    }
    if (ret == ERR_NOT_FOUND)
        err_set(e, ERR_NOT_FOUND, "crew '%s' not found", ident);
out:
    return ret;
}

/* Appends `c` to the page, growing it by doubling; takes `c` in every case. */
static int page_push(struct store_crew_page *page, size_t *cap, struct store_crew *c, struct err *e)
{
    if (page->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct store_crew **items = realloc(page->items, ncap * sizeof *items);
        if (items == NULL) {
            store_crew_free(c);
            return err_set(e, ERR_NOMEM, "store: out of memory listing crews");
        }
        page->items = items;
        *cap = ncap;
    }
    page->items[page->n++] = c;
    return 0;
}

static int crew_list(struct store *st, long limit, long offset, struct store_crew_page *out,
                     struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *count = s->stmt[ST_CREW_COUNT];
    sqlite3_stmt *page = s->stmt[ST_CREW_PAGE];
    struct store_crew_page p = {0};
    size_t cap = 0;
    bool in_tx = false;
    int ret = 0;
    int rc;
    *out = (struct store_crew_page){0};
    if (limit < 0 || offset < 0) {
        ret = err_set(e, ERR_INVALID, "store: limit and offset must not be negative");
        goto out;
    }
    /* One read transaction, so the total and the page come from the same snapshot. */
    if ((ret = run(s, ST_BEGIN, e)) != 0)
        goto out;
    in_tx = true;
    rc = sqlite3_step(count);
    if (rc != SQLITE_ROW) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    p.total = (long)sqlite3_column_int64(count, 0);
    stmt_done(count);
    if ((rc = sqlite3_bind_int64(page, 1, limit)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(page, 2, offset)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    while ((rc = sqlite3_step(page)) == SQLITE_ROW) {
        struct store_crew *c;
        if ((ret = crew_from_row(page, false, &c, e)) != 0 ||
            (ret = page_push(&p, &cap, c, e)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    stmt_done(page);
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    *out = p;
    p = (struct store_crew_page){0};
out:
    stmt_done(count);
    stmt_done(page);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    store_crew_page_cleanup(&p);
    return ret;
}

static int crew_delete(struct store *st, const char *crew_id, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_CREW_DELETE];
    int ret;
    if (crew_id == NULL) {
        ret = err_set(e, ERR_INVALID, "store: no crew_id given");
        goto out;
    }
    if ((ret = bind_text(s, stmt, 1, crew_id, e)) != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if (sqlite3_changes(s->db) == 0)
        ret = err_set(e, ERR_NOT_FOUND, "crew '%s' not found", crew_id);
out:
    stmt_done(stmt);
    return ret;
}

/* ---- jobs ---- */

/* The checks the NOT NULL constraints would make, and the contract's "must be empty". */
static int job_check(const struct store_job *j, struct err *e)
{
    if (j == NULL)
        return err_set(e, ERR_INVALID, "store: no job given");
    if (!fixed_str_ok(j->job_id, sizeof j->job_id) ||
        !fixed_str_ok(j->crew_id, sizeof j->crew_id))
        return err_set(e, ERR_INVALID, "store: job_id and crew_id are required");
    if (j->crew_name == NULL || j->execution_mode == NULL)
        return err_set(e, ERR_INVALID, "store: crew_name and execution_mode are required");
    if (j->request == NULL || j->definition == NULL || j->plan == NULL)
        return err_set(e, ERR_INVALID, "store: request, definition and plan are required");
    if (!fixed_str_ok(j->created_at, sizeof j->created_at))
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

static int job_insert(struct store *st, const struct store_job *job, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_JOB_INSERT];
    int ret = job_check(job, e);
    if (ret != 0)
        goto out;
    if ((ret = bind_text(s, stmt, 1, job->job_id, e)) != 0 ||
        (ret = bind_text(s, stmt, 2, job->crew_id, e)) != 0 ||
        (ret = bind_text(s, stmt, 3, job->crew_name, e)) != 0 ||
        (ret = bind_text(s, stmt, 4, job->execution_mode, e)) != 0 ||
        (ret = bind_text(s, stmt, 5, job->request, e)) != 0 ||
        (ret = bind_text(s, stmt, 6, job->definition, e)) != 0 ||
        (ret = bind_text(s, stmt, 7, job->plan, e)) != 0 ||
        (ret = bind_text(s, stmt, 8, job->metadata ? job->metadata : "{}", e)) != 0 ||
        (ret = bind_text(s, stmt, 9, job->created_at, e)) != 0 ||
        (ret = bind_text(s, stmt, 10, job->idempotency_key, e)) != 0 ||
        (ret = bind_text(s, stmt, 11, job->request_hash, e)) != 0 ||
        (ret = bind_text(s, stmt, 12, job->webhook_url, e)) != 0 ||
        (ret = bind_text(s, stmt, 13, job->webhook_secret, e)) != 0)
        goto out;
    int rc = sqlite3_bind_int64(stmt, 14, job->webhook_mask);
    if (rc != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    rc = sqlite3_step(stmt);
    /* Two unique indexes: the message of a UNIQUE violation names the column. */
    if (rc == SQLITE_CONSTRAINT_UNIQUE && job->idempotency_key != NULL &&
        strstr(sqlite3_errmsg(s->db), "idempotency_key") != NULL)
        ret = err_set(e, ERR_CONFLICT, "idempotency_key: a job with key '%s' already exists",
                      job->idempotency_key);
    else if (rc == SQLITE_CONSTRAINT_UNIQUE)
        ret = err_set(e, ERR_CONFLICT, "job_id: a job with id '%s' already exists", job->job_id);
    else if (rc != SQLITE_DONE)
        ret = fail(s->db, rc, e);
out:
    stmt_done(stmt);
    return ret;
}

/* Builds a job from the current row of a JOB_COLS statement (full), or JOB_LIST_COLS. */
static int job_from_row(sqlite3_stmt *stmt, bool full, struct store_job **out, struct err *e)
{
    *out = NULL;
    int ret = 0;
    struct store_job *j = calloc(1, sizeof *j);
    if (j == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory reading a job");
        goto out;
    }
    const char *status = (const char *)sqlite3_column_text(stmt, 3);
    if (store_job_status_parse(status, &j->status) != 0) {
        ret = err_set(e, ERR_STORE, "store: job has an unknown status");
        goto out;
    }
    if ((ret = col_fixed(stmt, 0, j->job_id, sizeof j->job_id, e)) != 0 ||
        (ret = col_fixed(stmt, 1, j->crew_id, sizeof j->crew_id, e)) != 0 ||
        (ret = col_dup(stmt, 2, false, &j->crew_name, e)) != 0 ||
        (ret = col_dup(stmt, 4, false, &j->execution_mode, e)) != 0 ||
        (ret = col_dup(stmt, 5, !full, &j->request, e)) != 0 ||
        (ret = col_dup(stmt, 6, !full, &j->definition, e)) != 0 ||
        (ret = col_dup(stmt, 7, !full, &j->plan, e)) != 0 ||
        (ret = col_dup(stmt, 8, false, &j->metadata, e)) != 0 ||
        (ret = col_dup(stmt, 9, true, &j->result, e)) != 0 ||
        (ret = col_dup(stmt, 10, true, &j->error, e)) != 0 ||
        (ret = col_fixed(stmt, 11, j->created_at, sizeof j->created_at, e)) != 0 ||
        (ret = col_fixed_opt(stmt, 12, j->started_at, sizeof j->started_at, e)) != 0 ||
        (ret = col_fixed_opt(stmt, 13, j->completed_at, sizeof j->completed_at, e)) != 0 ||
        (ret = col_dup(stmt, 15, true, &j->idempotency_key, e)) != 0 ||
        (ret = col_dup(stmt, 16, true, &j->request_hash, e)) != 0 ||
        (ret = col_dup(stmt, 17, true, &j->webhook_url, e)) != 0 ||
        (ret = col_dup(stmt, 18, true, &j->webhook_secret, e)) != 0)
        goto out;
    j->attempts = (long)sqlite3_column_int64(stmt, 14);
    j->webhook_mask = (long)sqlite3_column_int64(stmt, 19);
    *out = j;
    j = NULL;
out:
    store_job_free(j);
    return ret;
}

/* One job row by statement `id` and its one text parameter; ERR_NOT_FOUND (no message)
 * when there is none, so that each caller says what was looked for. */
static int job_by(struct store_sqlite *s, enum stmt_id id, const char *param,
                  struct store_job **out, struct err *e)
{
    sqlite3_stmt *stmt = s->stmt[id];
    int ret = bind_text(s, stmt, 1, param, e);
    if (ret == 0) {
        int rc = sqlite3_step(stmt);
        ret = rc == SQLITE_ROW    ? job_from_row(stmt, true, out, e)
              : rc == SQLITE_DONE ? ERR_NOT_FOUND
                                  : fail(s->db, rc, e);
    }
    stmt_done(stmt);
    return ret;
}

static int job_get(struct store *st, const char *job_id, struct store_job **out, struct err *e)
{
    *out = NULL;
    if (job_id == NULL)
        return err_set(e, ERR_INVALID, "store: no job_id given");
    int ret = job_by(from_store(st), ST_JOB_GET, job_id, out, e);
    return ret == ERR_NOT_FOUND ? err_set(e, ret, "job '%s' not found", job_id) : ret;
}

static int job_find_by_key(struct store *st, const char *key, struct store_job **out,
                           struct err *e)
{
    *out = NULL;
    if (key == NULL || key[0] == '\0')
        return err_set(e, ERR_INVALID, "store: no idempotency key given");
    int ret = job_by(from_store(st), ST_JOB_BY_KEY, key, out, e);
    return ret == ERR_NOT_FOUND ? err_set(e, ret, "no job with idempotency key '%s'", key)
                                : ret;
}

/* A claimed job and its place in the queue, sorted before they are handed out. */
struct claimed {
    long long seq;
    struct store_job *job;
};

static int claimed_cmp(const void *a, const void *b)
{
    long long x = ((const struct claimed *)a)->seq, y = ((const struct claimed *)b)->seq;
    return (x > y) - (x < y);
}

/*
 * BEGIN IMMEDIATE takes the write lock before the candidates are read, so two connections
 * (two processes on one file) serialize here and never pick the same job; a deferred
 * transaction could instead fail with SQLITE_BUSY_SNAPSHOT when upgrading its read.
 */
static int job_claim(struct store *st, const char *owner, long long now_ms, long long lease_ms,
                     size_t max, struct store_job_batch *out, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_JOB_CLAIM];
    struct claimed *rows = NULL;
    size_t n = 0;
    bool in_tx = false;
    int ret = 0;
    int rc;
    *out = (struct store_job_batch){0};
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0) {
        ret = err_set(e, ERR_INVALID, "store: a claim needs an owner and a positive lease");
        goto out;
    }
    if (max == 0)
        goto out;
    if (max > INT32_MAX)
        max = INT32_MAX;
    rows = calloc(max, sizeof *rows);
    if (rows == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory claiming jobs");
        goto out;
    }
    char started[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, started);
    if ((ret = bind_text(s, stmt, 1, owner, e)) != 0 ||
        (ret = bind_text(s, stmt, 4, started, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(stmt, 2, now_ms)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 3, now_ms + lease_ms)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 5, (sqlite3_int64)max)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW && n < max) {
        rows[n].seq = sqlite3_column_int64(stmt, JOB_N_COLS);
        if ((ret = job_from_row(stmt, true, &rows[n].job, e)) != 0)
            goto out;
        n++;
    }
    if (rc != SQLITE_DONE) {
        ret = rc == SQLITE_ROW ? err_set(e, ERR_INTERNAL, "store: claim returned too many rows")
                               : fail(s->db, rc, e);
        goto out;
    }
    stmt_done(stmt);
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    qsort(rows, n, sizeof *rows, claimed_cmp);
    if (n > 0) {
        struct store_job **items = malloc(n * sizeof *items);
        if (items == NULL) {
            /* Committed: the jobs are ours and come back on the next claim once the
             * lease expires, like those of an instance that died. */
            ret = err_set(e, ERR_NOMEM, "store: out of memory claiming jobs");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            items[i] = rows[i].job;
        out->items = items;
        out->n = n;
        n = 0;
    }
out:
    stmt_done(stmt);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    for (size_t i = 0; i < n; i++)
        store_job_free(rows[i].job);
    free(rows);
    return ret;
}

/* Runs the renew or release statement for `owner`; ?2 is the new deadline when `with_deadline`. */
static int lease_update(struct store_sqlite *s, enum stmt_id id, const char *owner,
                        bool with_deadline, long long deadline_ms, struct err *e)
{
    sqlite3_stmt *stmt = s->stmt[id];
    int ret;
    if (owner == NULL || owner[0] == '\0') {
        ret = err_set(e, ERR_INVALID, "store: no lease owner given");
        goto out;
    }
    if ((ret = bind_text(s, stmt, 1, owner, e)) != 0)
        goto out;
    int rc;
    if (with_deadline && (rc = sqlite3_bind_int64(stmt, 2, deadline_ms)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        ret = fail(s->db, rc, e);
out:
    stmt_done(stmt);
    return ret;
}

static int job_renew(struct store *st, const char *owner, long long now_ms, long long lease_ms,
                     struct err *e)
{
    if (lease_ms <= 0)
        return err_set(e, ERR_INVALID, "store: a lease must be positive");
    return lease_update(from_store(st), ST_JOB_RENEW, owner, true, now_ms + lease_ms, e);
}

static int job_release(struct store *st, const char *owner, const char *job_id, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_JOB_RELEASE];
    int ret, rc;
    if (owner == NULL || owner[0] == '\0') {
        ret = err_set(e, ERR_INVALID, "store: no lease owner given");
        goto out;
    }
    if ((ret = bind_text(s, stmt, 1, owner, e)) != 0)
        goto out;
    if (job_id != NULL && (ret = bind_text(s, stmt, 2, job_id, e)) != 0)
        goto out;
    if (job_id == NULL && (rc = sqlite3_bind_null(stmt, 2)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if ((rc = sqlite3_step(stmt)) != SQLITE_DONE)
        ret = fail(s->db, rc, e);
out:
    stmt_done(stmt);
    return ret;
}

/*
 * Explains a fenced write that changed nothing: ERR_NOT_FOUND when the job does not exist,
 * else ERR_CONFLICT, saying that the lease is lost (`owned`: the write named an owner) or
 * which terminal status the job already has.
 */
static int fence_fail(struct store_sqlite *s, const char *job_id, bool owned, struct err *e)
{
    sqlite3_stmt *stmt = s->stmt[ST_JOB_STATUS];
    int ret = bind_text(s, stmt, 1, job_id, e);
    if (ret != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
        ret = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
    else if (rc != SQLITE_ROW)
        ret = fail(s->db, rc, e);
    else if (owned)
        ret = err_set(e, ERR_CONFLICT, "job '%s' is no longer leased to this instance", job_id);
    else
        ret = err_set(e, ERR_CONFLICT, "job already %s", sqlite3_column_text(stmt, 0));
out:
    stmt_done(stmt);
    return ret;
}

/*
 * Inside a write transaction: the webhook mask of the job, after checking the fence on
 * `owner` (NULL: none) with fence_fail's words. The write lock is held, so what it finds
 * stays true until the transaction ends.
 */
static int job_fence(struct store_sqlite *s, const char *job_id, const char *owner,
                     long long *mask, struct err *e)
{
    sqlite3_stmt *stmt = s->stmt[ST_JOB_FENCE];
    int ret;
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0 ||
        (ret = bind_text(s, stmt, 2, owner, e)) != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
        ret = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
    else if (rc != SQLITE_ROW)
        ret = fail(s->db, rc, e);
    else if (sqlite3_column_int(stmt, 1) == 0)
        ret = err_set(e, ERR_CONFLICT, "job '%s' is no longer leased to this instance", job_id);
    else
        *mask = sqlite3_column_int64(stmt, 0);
out:
    stmt_done(stmt);
    return ret;
}

/* Inside a write transaction: appends `ev` as the job's next event, and its delivery when
 * `mask` asks for the type; *seq (may be NULL) gets the event's number. */
static int event_write(struct store_sqlite *s, const char *job_id, long long mask,
                       const struct store_event_in *ev, long long now_ms, long long *seq,
                       struct err *e)
{
    sqlite3_stmt *insert = s->stmt[ST_EVENT_INSERT], *delivery = s->stmt[ST_DELIVERY_INSERT];
    const char *type = store_event_type_name(ev->type);
    char now[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, now);
    int ret, rc;
    if ((ret = bind_text(s, insert, 1, job_id, e)) != 0 ||
        (ret = bind_text(s, insert, 2, type, e)) != 0 ||
        (ret = bind_text(s, insert, 3, ev->data, e)) != 0 ||
        (ret = bind_text(s, insert, 4, now, e)) != 0)
        goto out;
    if ((rc = sqlite3_step(insert)) != SQLITE_ROW) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    long long n = sqlite3_column_int64(insert, 0);
    stmt_done(insert);
    if ((mask & STORE_EV_BIT(ev->type)) != 0) {
        if ((ret = bind_text(s, delivery, 1, job_id, e)) != 0 ||
            (ret = bind_text(s, delivery, 3, type, e)) != 0 ||
            (ret = bind_text(s, delivery, 5, now, e)) != 0)
            goto out;
        if ((rc = sqlite3_bind_int64(delivery, 2, n)) != SQLITE_OK ||
            (rc = sqlite3_bind_int64(delivery, 4, now_ms)) != SQLITE_OK ||
            (rc = sqlite3_step(delivery)) != SQLITE_DONE) {
            ret = fail(s->db, rc, e);
            goto out;
        }
    }
    if (seq != NULL)
        *seq = n;
out:
    stmt_done(insert);
    stmt_done(delivery);
    return ret;
}

/* The step and its event in one write transaction: both or neither. */
static int job_step_put(struct store *st, const char *job_id, const char *owner,
                        const char *key, const char *data, const struct store_event_in *ev,
                        long long now_ms, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_STEP_PUT];
    bool in_tx = false;
    int ret;
    if (job_id == NULL || owner == NULL || key == NULL || data == NULL) {
        ret = err_set(e, ERR_INVALID, "store: job_id, owner, key and data are required");
        goto out;
    }
    if (ev != NULL && (ret = store_event_check(ev, e)) != 0)
        goto out;
    char now[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, now);
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0 ||
        (ret = bind_text(s, stmt, 2, owner, e)) != 0 ||
        (ret = bind_text(s, stmt, 3, key, e)) != 0 ||
        (ret = bind_text(s, stmt, 4, data, e)) != 0 ||
        (ret = bind_text(s, stmt, 5, now, e)) != 0)
        goto out;
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    stmt_done(stmt);
    if (sqlite3_changes(s->db) == 0) {
        ret = fence_fail(s, job_id, true, e);
        goto out;
    }
    long long mask = 0;
    if (ev != NULL && ((ret = job_fence(s, job_id, owner, &mask, e)) != 0 ||
                       (ret = event_write(s, job_id, mask, ev, now_ms, NULL, e)) != 0))
        goto out;
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
out:
    stmt_done(stmt);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    return ret;
}

/* Appends a step to the list, growing it by doubling; takes key and data in every case. */
static int steps_push(struct store_step_list *list, size_t *cap, char *key, char *data,
                      struct err *e)
{
    if (list->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct store_step *items = realloc(list->items, ncap * sizeof *items);
        if (items == NULL) {
            free(key);
            free(data);
            return err_set(e, ERR_NOMEM, "store: out of memory reading steps");
        }
        list->items = items;
        *cap = ncap;
    }
    list->items[list->n++] = (struct store_step){.key = key, .data = data};
    return 0;
}

static int job_steps_get(struct store *st, const char *job_id, struct store_step_list *out,
                         struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_STEPS_GET];
    struct store_step_list list = {0};
    size_t cap = 0;
    int ret;
    int rc;
    *out = list;
    if (job_id == NULL) {
        ret = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0)
        goto out;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        char *key, *data = NULL;
        if ((ret = col_dup(stmt, 0, false, &key, e)) != 0 ||
            (ret = col_dup(stmt, 1, false, &data, e)) != 0) {
            free(key);
            goto out;
        }
        if ((ret = steps_push(&list, &cap, key, data, e)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    *out = list;
    list = (struct store_step_list){0};
out:
    stmt_done(stmt);
    store_step_list_cleanup(&list);
    return ret;
}

/* The status change and the terminal event in one write transaction: a job's history ends
 * with exactly one terminal event, and only a finish that changed the row writes one. */
static int job_finish(struct store *st, const char *job_id, const char *owner,
                      enum store_job_status status, const char *result, const char *error,
                      long long now_ms, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    enum stmt_id id = owner ? ST_JOB_FINISH_OWNED : ST_JOB_FINISH_ANY;
    sqlite3_stmt *stmt = s->stmt[id];
    struct store_event_in ev = {0};
    char *data = NULL;
    bool in_tx = false;
    int ret;
    if (job_id == NULL) {
        ret = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((ret = store_finish_event(status, error, &ev.type, &data, e)) != 0)
        goto out;
    ev.data = data;
    char completed[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, completed);
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0 ||
        (ret = bind_text(s, stmt, 2, owner, e)) != 0 ||
        (ret = bind_text(s, stmt, 3, store_job_status_name(status), e)) != 0 ||
        (ret = bind_text(s, stmt, 4, result, e)) != 0 ||
        (ret = bind_text(s, stmt, 5, error, e)) != 0 ||
        (ret = bind_text(s, stmt, 6, completed, e)) != 0)
        goto out;
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    stmt_done(stmt);
    if (sqlite3_changes(s->db) == 0) {
        ret = fence_fail(s, job_id, owner != NULL, e);
        goto out;
    }
    /* The job is ours under the write lock and no longer leased: read its mask unfenced. */
    long long mask = 0;
    if ((ret = job_fence(s, job_id, NULL, &mask, e)) != 0 ||
        (ret = event_write(s, job_id, mask, &ev, now_ms, NULL, e)) != 0)
        goto out;
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
out:
    stmt_done(stmt);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    free(data);
    return ret;
}

static sqlite3_int64 count_arg(size_t n);

/* Appends `j` to the page, growing it by doubling; takes `j` in every case. */
static int job_page_push(struct store_job_page *page, size_t *cap, struct store_job *j,
                         struct err *e)
{
    if (page->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        struct store_job **items = realloc(page->items, ncap * sizeof *items);
        if (items == NULL) {
            store_job_free(j);
            return err_set(e, ERR_NOMEM, "store: out of memory listing jobs");
        }
        page->items = items;
        *cap = ncap;
    }
    page->items[page->n++] = j;
    return 0;
}

/*
 * The filter's four shapes are prepared per call (a listing is rare next to the queue's
 * statements): a WHERE with "?1 IS NULL OR" would keep the planner from the index of the
 * filter. ?1 crew_id, ?2 status, ?3 limit, ?4 offset.
 */
static int job_list(struct store *st, const struct store_job_filter *filter, long limit,
                    long offset, struct store_job_page *out, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *count = NULL, *page = NULL;
    struct store_job_page p = {0};
    size_t cap = 0;
    bool in_tx = false;
    int ret = 0;
    int rc;
    *out = (struct store_job_page){0};
    if (filter == NULL || limit < 0 || offset < 0) {
        ret = err_set(e, ERR_INVALID, "store: limit and offset must not be negative");
        goto out;
    }
    const char *status = filter->any_status ? NULL : store_job_status_name(filter->status);
    if (!filter->any_status && status == NULL) {
        ret = err_set(e, ERR_INVALID, "store: unknown job status");
        goto out;
    }
    char where[128];
    snprintf(where, sizeof where, "%s%s%s", filter->crew_id || status ? " WHERE " : "",
             filter->crew_id ? "crew_id = ?1" : "",
             status ? (filter->crew_id ? " AND status = ?2" : "status = ?2") : "");
    char sql_count[256], sql_page[512];
    snprintf(sql_count, sizeof sql_count, "SELECT count(*), ?1, ?2 FROM jobs%s", where);
    snprintf(sql_page, sizeof sql_page,
             "SELECT " JOB_LIST_COLS ", ?1, ?2 FROM jobs%s"
             " ORDER BY created_at DESC, seq DESC LIMIT ?3 OFFSET ?4",
             where);
    if ((rc = sqlite3_prepare_v2(s->db, sql_count, -1, &count, NULL)) != SQLITE_OK ||
        (rc = sqlite3_prepare_v2(s->db, sql_page, -1, &page, NULL)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if ((ret = bind_text(s, count, 1, filter->crew_id, e)) != 0 ||
        (ret = bind_text(s, count, 2, status, e)) != 0 ||
        (ret = bind_text(s, page, 1, filter->crew_id, e)) != 0 ||
        (ret = bind_text(s, page, 2, status, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(page, 3, limit)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(page, 4, offset)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    /* One read transaction, so the total and the page come from the same snapshot. */
    if ((ret = run(s, ST_BEGIN, e)) != 0)
        goto out;
    in_tx = true;
    if ((rc = sqlite3_step(count)) != SQLITE_ROW) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    p.total = (long)sqlite3_column_int64(count, 0);
    while ((rc = sqlite3_step(page)) == SQLITE_ROW) {
        struct store_job *j;
        if ((ret = job_from_row(page, false, &j, e)) != 0 ||
            (ret = job_page_push(&p, &cap, j, e)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    sqlite3_reset(count);
    sqlite3_reset(page);
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    *out = p;
    p = (struct store_job_page){0};
out:
    sqlite3_finalize(count);
    sqlite3_finalize(page);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    store_job_page_cleanup(&p);
    return ret;
}

static int job_delete(struct store *st, const char *job_id, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *job = s->stmt[ST_JOB_DELETE];
    /* The job's other rows, deleted once the job itself was (it was finished). */
    sqlite3_stmt *rest[3] = {s->stmt[ST_JOB_DELETE_STEPS], s->stmt[ST_JOB_DELETE_EVENTS],
                             s->stmt[ST_JOB_DELETE_DELIVERIES]};
    bool in_tx = false;
    int ret;
    int rc;
    if (job_id == NULL) {
        ret = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    if ((ret = bind_text(s, job, 1, job_id, e)) != 0)
        goto out;
    if ((rc = sqlite3_step(job)) != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if (sqlite3_changes(s->db) == 0) {
        /* Not there, or still live: the status says which. */
        stmt_done(job);
        if ((ret = fence_fail(s, job_id, false, e)) == ERR_CONFLICT) {
            char msg[ERR_MSG_MAX];
            snprintf(msg, sizeof msg, "%s", e->msg);
            /* "job already running" reads wrong for a live job */
            err_set(e, ERR_CONFLICT, "job is %s", msg + strlen("job already "));
        }
        goto out;
    }
    stmt_done(job);
    for (int k = 0; k < 3; k++) {
        if ((ret = bind_text(s, rest[k], 1, job_id, e)) != 0)
            goto out;
        if ((rc = sqlite3_step(rest[k])) != SQLITE_DONE) {
            ret = fail(s->db, rc, e);
            goto out;
        }
        stmt_done(rest[k]);
    }
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
out:
    stmt_done(job);
    for (int k = 0; k < 3; k++)
        stmt_done(rest[k]);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    return ret;
}

static int job_purge(struct store *st, long long older_than_ms, size_t max_rows,
                     size_t *n_deleted, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    /* The jobs last: the others find their rows through them. */
    sqlite3_stmt *all[4] = {s->stmt[ST_JOB_PURGE_STEPS], s->stmt[ST_JOB_PURGE_EVENTS],
                            s->stmt[ST_JOB_PURGE_DELIVERIES], s->stmt[ST_JOB_PURGE]};
    bool in_tx = false;
    int ret = 0;
    int rc;
    size_t n = 0;
    if (max_rows == 0) {
        ret = err_set(e, ERR_INVALID, "store: a purge deletes at least one row per call");
        goto out;
    }
    char cutoff[CLOCK_RFC3339_LEN];
    clock_rfc3339(older_than_ms, cutoff);
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    for (int k = 0; k < 4; k++) {
        if ((ret = bind_text(s, all[k], 1, cutoff, e)) != 0)
            goto out;
        if ((rc = sqlite3_bind_int64(all[k], 2, count_arg(max_rows))) != SQLITE_OK ||
            (rc = sqlite3_step(all[k])) != SQLITE_DONE) {
            ret = fail(s->db, rc, e);
            goto out;
        }
        n = (size_t)sqlite3_changes(s->db);
        stmt_done(all[k]);
    }
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    if (n_deleted != NULL)
        *n_deleted = n;
out:
    for (int k = 0; k < 4; k++)
        stmt_done(all[k]);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    return ret;
}

/* ---- events and webhook deliveries ---- */

/* BEGIN IMMEDIATE takes the write lock before the last number is read, so two connections
 * appending to one job serialize and never draw the same number. */
static int event_append_batch(struct store *st, const char *owner,
                              struct store_event_item *items, size_t n, long long now_ms,
                              struct err *e)
{
    struct store_sqlite *s = from_store(st);
    int ret = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].job_id == NULL)
            return err_set(e, ERR_INVALID, "store: no job_id given");
        if ((ret = store_event_check(&items[i].ev, e)) != 0)
            return ret;
    }
    if (n == 0)
        return 0;
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        return ret;
    for (size_t i = 0; i < n; i++) {
        long long mask = 0;
        struct err fe = {0};
        items[i].rc = job_fence(s, items[i].job_id, owner, &mask, &fe);
        if (items[i].rc == ERR_CONFLICT || items[i].rc == ERR_NOT_FOUND)
            continue;
        if ((ret = items[i].rc) != 0 ||
            (ret = event_write(s, items[i].job_id, mask, &items[i].ev, now_ms, &items[i].seq,
                               e)) != 0) {
            if (ret == items[i].rc)
                *e = fe;
            run(s, ST_ROLLBACK, NULL);
            return ret;
        }
    }
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        run(s, ST_ROLLBACK, NULL);
    return ret;
}

/* One read transaction: the status and the events come from the same snapshot. */
static int event_list(struct store *st, const char *job_id, long long after_seq, size_t limit,
                      struct store_event_list *out, enum store_job_status *status,
                      struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *head = s->stmt[ST_JOB_STATUS], *stmt = s->stmt[ST_EVENT_LIST];
    struct store_event_list l = {0};
    size_t cap = 0;
    bool in_tx = false;
    int ret, rc;
    *out = l;
    if (job_id == NULL || limit == 0) {
        ret = err_set(e, ERR_INVALID, "store: an event list needs a job_id and a limit above 0");
        goto out;
    }
    if ((ret = run(s, ST_BEGIN, e)) != 0)
        goto out;
    in_tx = true;
    if ((ret = bind_text(s, head, 1, job_id, e)) != 0)
        goto out;
    rc = sqlite3_step(head);
    if (rc == SQLITE_DONE) {
        ret = err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
        goto out;
    }
    if (rc != SQLITE_ROW) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    enum store_job_status st_now;
    if (store_job_status_parse((const char *)sqlite3_column_text(head, 0), &st_now) != 0) {
        ret = err_set(e, ERR_STORE, "store: job has an unknown status");
        goto out;
    }
    stmt_done(head);
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(stmt, 2, after_seq)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 3, count_arg(limit))) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (l.n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct store_event *items = realloc(l.items, ncap * sizeof *items);
            if (items == NULL) {
                ret = err_set(e, ERR_NOMEM, "store: out of memory reading events");
                goto out;
            }
            l.items = items;
            cap = ncap;
        }
        struct store_event *ev = &l.items[l.n];
        *ev = (struct store_event){.seq = sqlite3_column_int64(stmt, 0)};
        l.n++; /* counted first, so that cleanup frees a half-read event */
        if (store_event_type_parse((const char *)sqlite3_column_text(stmt, 1), &ev->type) != 0) {
            ret = err_set(e, ERR_STORE, "store: event has an unknown type");
            goto out;
        }
        if ((ret = col_dup(stmt, 2, false, &ev->data, e)) != 0 ||
            (ret = col_fixed(stmt, 3, ev->created_at, sizeof ev->created_at, e)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    stmt_done(stmt);
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    if (status != NULL)
        *status = st_now;
    *out = l;
    l = (struct store_event_list){0};
out:
    stmt_done(head);
    stmt_done(stmt);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    store_event_list_cleanup(&l);
    return ret;
}

/* Builds a delivery from the current row of a DELIVERY_COLS statement (full), or
 * DELIVERY_LIST_COLS. */
static int delivery_from_row(sqlite3_stmt *stmt, bool full, struct store_delivery **out,
                             struct err *e)
{
    *out = NULL;
    int ret = 0;
    struct store_delivery *d = calloc(1, sizeof *d);
    if (d == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory reading a delivery");
        goto out;
    }
    if (store_event_type_parse((const char *)sqlite3_column_text(stmt, 2), &d->type) != 0 ||
        store_delivery_state_parse((const char *)sqlite3_column_text(stmt, 3), &d->state) != 0) {
        ret = err_set(e, ERR_STORE, "store: delivery has an unknown type or state");
        goto out;
    }
    if ((ret = col_fixed(stmt, 0, d->job_id, sizeof d->job_id, e)) != 0 ||
        (ret = col_dup(stmt, 7, true, &d->last_error, e)) != 0 ||
        (ret = col_dup(stmt, 8, !full, &d->event_data, e)) != 0 ||
        (ret = col_fixed_opt(stmt, 9, d->event_created_at, sizeof d->event_created_at, e)) !=
            0 ||
        (ret = col_dup(stmt, 10, !full, &d->url, e)) != 0 ||
        (ret = col_dup(stmt, 11, !full, &d->secret, e)) != 0 ||
        (ret = col_fixed(stmt, 12, d->created_at, sizeof d->created_at, e)) != 0 ||
        (ret = col_fixed(stmt, 13, d->updated_at, sizeof d->updated_at, e)) != 0)
        goto out;
    d->seq = sqlite3_column_int64(stmt, 1);
    d->attempts = (long)sqlite3_column_int64(stmt, 4);
    d->next_attempt_ms = sqlite3_column_int64(stmt, 5);
    d->last_status = sqlite3_column_int(stmt, 6);
    *out = d;
    d = NULL;
out:
    store_delivery_free(d);
    return ret;
}

/* Appends `d` to the list, growing it by doubling; takes `d` in every case. */
static int delivery_push(struct store_delivery_list *l, size_t *cap, struct store_delivery *d,
                         struct err *e)
{
    if (l->n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        struct store_delivery **items = realloc(l->items, ncap * sizeof *items);
        if (items == NULL) {
            store_delivery_free(d);
            return err_set(e, ERR_NOMEM, "store: out of memory reading deliveries");
        }
        l->items = items;
        *cap = ncap;
    }
    l->items[l->n++] = d;
    return 0;
}

/* A claimed delivery's row and due time, sorted before the rows are read. */
struct claimed_delivery {
    long long next_attempt_ms;
    sqlite3_int64 rowid;
};

static int claimed_delivery_cmp(const void *a, const void *b)
{
    const struct claimed_delivery *x = a, *y = b;
    if (x->next_attempt_ms != y->next_attempt_ms)
        return (x->next_attempt_ms > y->next_attempt_ms) - (x->next_attempt_ms < y->next_attempt_ms);
    return (x->rowid > y->rowid) - (x->rowid < y->rowid);
}

/*
 * Under BEGIN IMMEDIATE, like the job claim: the lease is written first (RETURNING names
 * the rows), then each row is read back whole with its event and its job's webhook, in the
 * same transaction.
 */
static int delivery_claim(struct store *st, const char *owner, long long now_ms,
                          long long lease_ms, size_t max, struct store_delivery_list *out,
                          struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *claim = s->stmt[ST_DELIVERY_CLAIM], *row = s->stmt[ST_DELIVERY_ROW];
    struct store_delivery_list l = {0};
    struct claimed_delivery *keys = NULL;
    size_t n = 0, cap = 0;
    bool in_tx = false;
    int ret = 0, rc;
    *out = l;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0) {
        ret = err_set(e, ERR_INVALID, "store: a claim needs an owner and a positive lease");
        goto out;
    }
    if (max == 0)
        goto out;
    if (max > INT32_MAX)
        max = INT32_MAX;
    if ((keys = calloc(max, sizeof *keys)) == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory claiming deliveries");
        goto out;
    }
    char now[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, now);
    if ((ret = bind_text(s, claim, 1, owner, e)) != 0 ||
        (ret = bind_text(s, claim, 4, now, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(claim, 2, now_ms)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(claim, 3, now_ms + lease_ms)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(claim, 5, (sqlite3_int64)max)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    while ((rc = sqlite3_step(claim)) == SQLITE_ROW && n < max) {
        keys[n].rowid = sqlite3_column_int64(claim, 0);
        keys[n].next_attempt_ms = sqlite3_column_int64(claim, 1);
        n++;
    }
    if (rc != SQLITE_DONE) {
        ret = rc == SQLITE_ROW ? err_set(e, ERR_INTERNAL, "store: claim returned too many rows")
                               : fail(s->db, rc, e);
        goto out;
    }
    stmt_done(claim);
    qsort(keys, n, sizeof *keys, claimed_delivery_cmp);
    for (size_t i = 0; i < n; i++) {
        if ((rc = sqlite3_bind_int64(row, 1, keys[i].rowid)) != SQLITE_OK) {
            ret = fail(s->db, rc, e);
            goto out;
        }
        rc = sqlite3_step(row);
        if (rc != SQLITE_ROW) {
            /* A delivery always has its event and its job: they are deleted together. */
            ret = rc == SQLITE_DONE
                      ? err_set(e, ERR_STORE, "store: a delivery has no event or job")
                      : fail(s->db, rc, e);
            goto out;
        }
        struct store_delivery *d;
        if ((ret = delivery_from_row(row, true, &d, e)) != 0 ||
            (ret = delivery_push(&l, &cap, d, e)) != 0)
            goto out;
        stmt_done(row);
    }
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    *out = l;
    l = (struct store_delivery_list){0};
out:
    stmt_done(claim);
    stmt_done(row);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    free(keys);
    store_delivery_list_cleanup(&l);
    return ret;
}

static int delivery_done(struct store *st, const char *job_id, long long seq, const char *owner,
                         enum store_delivery_state state, long attempts,
                         long long next_attempt_ms, int http_status, const char *error,
                         long long now_ms, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_DELIVERY_DONE], *exists = s->stmt[ST_DELIVERY_EXISTS];
    const char *state_name = store_delivery_state_name(state);
    int ret, rc;
    if (job_id == NULL || owner == NULL || owner[0] == '\0' || state_name == NULL) {
        ret = err_set(e, ERR_INVALID, "store: a delivery outcome needs a job_id, an owner and a"
                                      " known state");
        goto out;
    }
    char now[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, now);
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0 ||
        (ret = bind_text(s, stmt, 3, owner, e)) != 0 ||
        (ret = bind_text(s, stmt, 4, state_name, e)) != 0 ||
        (ret = bind_text(s, stmt, 7, error, e)) != 0 ||
        (ret = bind_text(s, stmt, 8, now, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(stmt, 2, seq)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 5, next_attempt_ms)) != SQLITE_OK ||
        (rc = sqlite3_bind_int(stmt, 6, http_status)) != SQLITE_OK ||
        (rc = sqlite3_bind_int64(stmt, 9, attempts > 0 ? attempts : 0)) != SQLITE_OK ||
        (rc = sqlite3_step(stmt)) != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if (sqlite3_changes(s->db) > 0)
        goto out;
    /* Nothing changed: gone, or leased to someone else (or to nobody) now. */
    if ((ret = bind_text(s, exists, 1, job_id, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(exists, 2, seq)) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    rc = sqlite3_step(exists);
    if (rc == SQLITE_DONE)
        ret = err_set(e, ERR_NOT_FOUND, "delivery %lld of job '%s' not found", seq, job_id);
    else if (rc == SQLITE_ROW)
        ret = err_set(e, ERR_CONFLICT,
                      "delivery %lld of job '%s' is no longer leased to this instance", seq,
                      job_id);
    else
        ret = fail(s->db, rc, e);
out:
    stmt_done(stmt);
    stmt_done(exists);
    return ret;
}

static int delivery_release(struct store *st, const char *owner, struct err *e)
{
    return lease_update(from_store(st), ST_DELIVERY_RELEASE, owner, false, 0, e);
}

/* One read transaction: "no such job" and the rows come from the same snapshot. */
static int delivery_list(struct store *st, const char *job_id, struct store_delivery_list *out,
                         struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *head = s->stmt[ST_JOB_STATUS], *stmt = s->stmt[ST_DELIVERY_LIST];
    struct store_delivery_list l = {0};
    size_t cap = 0;
    bool in_tx = false;
    int ret, rc;
    *out = l;
    if (job_id == NULL) {
        ret = err_set(e, ERR_INVALID, "store: no job_id given");
        goto out;
    }
    if ((ret = run(s, ST_BEGIN, e)) != 0)
        goto out;
    in_tx = true;
    if ((ret = bind_text(s, head, 1, job_id, e)) != 0)
        goto out;
    rc = sqlite3_step(head);
    if (rc != SQLITE_ROW) {
        ret = rc == SQLITE_DONE ? err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id)
                                : fail(s->db, rc, e);
        goto out;
    }
    stmt_done(head);
    if ((ret = bind_text(s, stmt, 1, job_id, e)) != 0)
        goto out;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        struct store_delivery *d;
        if ((ret = delivery_from_row(stmt, false, &d, e)) != 0 ||
            (ret = delivery_push(&l, &cap, d, e)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    stmt_done(stmt);
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    *out = l;
    l = (struct store_delivery_list){0};
out:
    stmt_done(head);
    stmt_done(stmt);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    store_delivery_list_cleanup(&l);
    return ret;
}

/* ---- conversation memory ---- */

/* Binds the conversation to ?1..?4; a NULL user or session is the conversation of "". */
static int memory_bind_key(struct store_sqlite *s, sqlite3_stmt *stmt, const char *crew_id,
                           const char *agent_key, const char *user_id, const char *session_id,
                           struct err *e)
{
    int ret;
    if ((ret = bind_text(s, stmt, 1, crew_id, e)) == 0 &&
        (ret = bind_text(s, stmt, 2, agent_key, e)) == 0 &&
        (ret = bind_text(s, stmt, 3, user_id ? user_id : "", e)) == 0)
        ret = bind_text(s, stmt, 4, session_id ? session_id : "", e);
    return ret;
}

/* A count from the caller as an SQL integer: above INT64_MAX means "all" anyway. */
static sqlite3_int64 count_arg(size_t n)
{
    return n > (size_t)INT64_MAX ? INT64_MAX : (sqlite3_int64)n;
}

static int memory_get(struct store *st, const char *crew_id, const char *agent_key,
                      const char *user_id, const char *session_id, size_t max_turns,
                      struct store_turn_list *out, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_MEMORY_GET];
    struct store_turn_list list = {0};
    size_t cap = 0;
    int ret, rc;
    *out = list;
    if ((ret = store_memory_check(crew_id, agent_key, NULL, 0, e)) != 0)
        goto out;
    if (max_turns == 0)
        goto out;
    if ((ret = memory_bind_key(s, stmt, crew_id, agent_key, user_id, session_id, e)) != 0)
        goto out;
    if ((rc = sqlite3_bind_int64(stmt, 5, count_arg(max_turns))) != SQLITE_OK) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    /* Newest first, as the index walks backwards; reversed below. The list grows as rows
     * come, since max_turns may be far above what the conversation holds. */
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (list.n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct store_turn *items = realloc(list.items, ncap * sizeof *items);
            if (items == NULL) {
                ret = err_set(e, ERR_NOMEM, "store: out of memory reading memory");
                goto out;
            }
            list.items = items;
            cap = ncap;
        }
        struct store_turn *t = &list.items[list.n];
        *t = (struct store_turn){0};
        list.n++; /* counted first, so that cleanup frees a half-read turn */
        if ((ret = col_dup(stmt, 0, false, &t->role, e)) != 0 ||
            (ret = col_dup(stmt, 1, false, &t->content, e)) != 0 ||
            (ret = col_fixed(stmt, 2, t->created_at, sizeof t->created_at, e)) != 0)
            goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    for (size_t i = 0; i < list.n / 2; i++) {
        struct store_turn tmp = list.items[i];
        list.items[i] = list.items[list.n - 1 - i];
        list.items[list.n - 1 - i] = tmp;
    }
    *out = list;
    list = (struct store_turn_list){0};
out:
    stmt_done(stmt);
    store_turn_list_cleanup(&list);
    return ret;
}

/*
 * BEGIN IMMEDIATE takes the write lock first, so appends to one file serialize: the turns of
 * one append are contiguous in seq order and the trim counts every committed turn.
 */
static int memory_append(struct store *st, const char *crew_id, const char *agent_key,
                         const char *user_id, const char *session_id,
                         const struct store_turn *turns, size_t n, size_t keep_turns,
                         long long now_ms, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *insert = s->stmt[ST_MEMORY_INSERT];
    sqlite3_stmt *trim = s->stmt[ST_MEMORY_TRIM];
    bool in_tx = false;
    int ret, rc;
    if ((ret = store_memory_check(crew_id, agent_key, turns, n, e)) != 0)
        goto out;
    char created[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, created);
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    for (size_t i = 0; i < n; i++) {
        if ((ret = memory_bind_key(s, insert, crew_id, agent_key, user_id, session_id, e)) != 0 ||
            (ret = bind_text(s, insert, 5, turns[i].role, e)) != 0 ||
            (ret = bind_text(s, insert, 6, turns[i].content, e)) != 0 ||
            (ret = bind_text(s, insert, 7, created, e)) != 0)
            goto out;
        if ((rc = sqlite3_step(insert)) != SQLITE_DONE) {
            ret = fail(s->db, rc, e);
            goto out;
        }
        stmt_done(insert);
    }
    if (keep_turns > 0) {
        if ((ret = memory_bind_key(s, trim, crew_id, agent_key, user_id, session_id, e)) != 0)
            goto out;
        if ((rc = sqlite3_bind_int64(trim, 5, count_arg(keep_turns))) != SQLITE_OK ||
            (rc = sqlite3_step(trim)) != SQLITE_DONE) {
            ret = fail(s->db, rc, e);
            goto out;
        }
        stmt_done(trim);
    }
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
out:
    stmt_done(insert);
    stmt_done(trim);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    return ret;
}

static int memory_clear(struct store *st, const char *crew_id, const char *agent_key,
                        const char *user_id, const char *session_id, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = s->stmt[ST_MEMORY_CLEAR];
    int ret, rc;
    if ((ret = store_memory_check(crew_id, agent_key, NULL, 0, e)) != 0 ||
        (ret = memory_bind_key(s, stmt, crew_id, agent_key, user_id, session_id, e)) != 0)
        goto out;
    if ((rc = sqlite3_step(stmt)) != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if (sqlite3_changes(s->db) == 0)
        ret = err_set(e, ERR_NOT_FOUND, "conversation not found");
out:
    stmt_done(stmt);
    return ret;
}

static void close_store(struct store *st)
{
    struct store_sqlite *s = from_store(st);
    if (s == NULL)
        return;
    for (int i = 0; i < ST_COUNT_; i++)
        sqlite3_finalize(s->stmt[i]);
    /* Every statement is finalized, so this cannot answer SQLITE_BUSY; the last connection
     * to close checkpoints the WAL into the database and removes it. */
    int rc = sqlite3_close(s->db);
    if (rc != SQLITE_OK)
        log_error(MOD, "sqlite close: %s", sqlite3_errstr(rc));
    free(s);
}

/* ---- catalogs (tools, agent classes) ---- */

static sqlite3_stmt *named_stmt(struct store_sqlite *s, enum store_catalog c, enum named_op op)
{
    return s->stmt[ST_NAMED_FIRST_ + (int)c * NAMED_N_ + (int)op];
}

static int named_from_row(sqlite3_stmt *stmt, struct store_named **out, struct err *e)
{
    int ret = 0;
    struct store_named *r = calloc(1, sizeof *r);
    *out = NULL;
    if (r == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory reading a row");
        goto out;
    }
    if ((ret = col_dup(stmt, 0, false, &r->name, e)) != 0 ||
        (ret = col_dup(stmt, 1, false, &r->definition, e)) != 0 ||
        (ret = col_fixed(stmt, 2, r->created_at, sizeof r->created_at, e)) != 0 ||
        (ret = col_fixed(stmt, 3, r->updated_at, sizeof r->updated_at, e)) != 0)
        goto out;
    *out = r;
    r = NULL;
out:
    store_named_free(r);
    return ret;
}

/* UPDATE, and INSERT when nothing was updated, in one write transaction: no other writer
 * lands between the two, so *created is exact. */
static int named_put(struct store *st, enum store_catalog c, const char *name,
                     const char *definition, long long now_ms, bool *created, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    bool in_tx = false, inserted = false;
    int ret, rc;
    if ((ret = store_named_check(c, name, definition, true, e)) != 0)
        return ret;
    sqlite3_stmt *update = named_stmt(s, c, NAMED_UPDATE);
    sqlite3_stmt *insert = named_stmt(s, c, NAMED_INSERT);
    char now[CLOCK_RFC3339_LEN];
    clock_rfc3339(now_ms, now);
    if ((ret = run(s, ST_BEGIN_IMMEDIATE, e)) != 0)
        goto out;
    in_tx = true;
    if ((ret = bind_text(s, update, 1, name, e)) != 0 ||
        (ret = bind_text(s, update, 2, definition, e)) != 0 ||
        (ret = bind_text(s, update, 3, now, e)) != 0)
        goto out;
    if ((rc = sqlite3_step(update)) != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    if (sqlite3_changes(s->db) == 0) {
        if ((ret = bind_text(s, insert, 1, name, e)) != 0 ||
            (ret = bind_text(s, insert, 2, definition, e)) != 0 ||
            (ret = bind_text(s, insert, 3, now, e)) != 0)
            goto out;
        if ((rc = sqlite3_step(insert)) != SQLITE_DONE) {
            ret = fail(s->db, rc, e);
            goto out;
        }
        inserted = true;
    }
    if ((ret = run(s, ST_COMMIT, e)) != 0)
        goto out;
    in_tx = false;
    if (created != NULL)
        *created = inserted;
out:
    stmt_done(update);
    stmt_done(insert);
    if (in_tx)
        run(s, ST_ROLLBACK, NULL);
    return ret;
}

static int named_get(struct store *st, enum store_catalog c, const char *name,
                     struct store_named **out, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    *out = NULL;
    int ret = store_named_check(c, name, NULL, false, e);
    if (ret != 0)
        return ret;
    sqlite3_stmt *stmt = named_stmt(s, c, NAMED_GET);
    if ((ret = bind_text(s, stmt, 1, name, e)) != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        ret = named_from_row(stmt, out, e);
    else if (rc == SQLITE_DONE)
        ret = err_set(e, ERR_NOT_FOUND, "%s '%s' not found", store_catalog_noun(c), name);
    else
        ret = fail(s->db, rc, e);
out:
    stmt_done(stmt);
    return ret;
}

static int named_list(struct store *st, enum store_catalog c, struct store_named_list *out,
                      struct err *e)
{
    struct store_sqlite *s = from_store(st);
    struct store_named_list l = {0};
    size_t cap = 0;
    *out = l;
    int ret = store_named_check(c, "-", NULL, false, e);
    if (ret != 0)
        return ret;
    sqlite3_stmt *stmt = named_stmt(s, c, NAMED_LIST);
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (l.n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct store_named **grown = realloc(l.items, ncap * sizeof *grown);
            if (grown == NULL) {
                ret = err_set(e, ERR_NOMEM, "store: out of memory listing");
                goto out;
            }
            l.items = grown;
            cap = ncap;
        }
        if ((ret = named_from_row(stmt, &l.items[l.n], e)) != 0)
            goto out;
        l.n++;
    }
    if (rc != SQLITE_DONE) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    *out = l;
    l = (struct store_named_list){0};
out:
    stmt_done(stmt);
    store_named_list_cleanup(&l);
    return ret;
}

static int named_delete(struct store *st, enum store_catalog c, const char *name, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    int ret = store_named_check(c, name, NULL, false, e);
    if (ret != 0)
        return ret;
    sqlite3_stmt *stmt = named_stmt(s, c, NAMED_DELETE);
    if ((ret = bind_text(s, stmt, 1, name, e)) != 0)
        goto out;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        ret = fail(s->db, rc, e);
    else if (sqlite3_changes(s->db) == 0)
        ret = err_set(e, ERR_NOT_FOUND, "%s '%s' not found", store_catalog_noun(c), name);
out:
    stmt_done(stmt);
    return ret;
}

/* ---- observability: counts and a ping for /metrics and /healthz ---- */

/*
 * Prepared per call rather than kept in the statement table: a scrape or a health check
 * runs them a few times a minute, and preparing costs microseconds next to that.
 */
static int obs_prepare(struct store_sqlite *s, const char *sql, sqlite3_stmt **out, struct err *e)
{
    int rc = sqlite3_prepare_v2(s->db, sql, -1, out, NULL);
    return rc == SQLITE_OK ? 0 : fail(s->db, rc, e);
}

static int job_counts(struct store *st, long counts[5], struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = NULL;
    int ret, rc;
    for (int i = 0; i < 5; i++)
        counts[i] = 0;
    if ((ret = obs_prepare(s, "SELECT status, count(*) FROM jobs GROUP BY status", &stmt, e)) != 0)
        goto out;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        enum store_job_status status;
        const char *name = (const char *)sqlite3_column_text(stmt, 0);
        if (name != NULL && store_job_status_parse(name, &status) == 0)
            counts[status] = (long)sqlite3_column_int64(stmt, 1);
    }
    if (rc != SQLITE_DONE)
        ret = fail(s->db, rc, e);
out:
    sqlite3_finalize(stmt);
    return ret;
}

static int delivery_pending_count(struct store *st, long *out, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = NULL;
    int ret, rc;
    *out = 0;
    if ((ret = obs_prepare(s, "SELECT count(*) FROM webhook_deliveries WHERE state = 'pending'",
                           &stmt, e)) != 0)
        goto out;
    if ((rc = sqlite3_step(stmt)) != SQLITE_ROW) {
        ret = fail(s->db, rc, e);
        goto out;
    }
    *out = (long)sqlite3_column_int64(stmt, 0);
out:
    sqlite3_finalize(stmt);
    return ret;
}

/* A read through the connection: it proves the file is there and readable. In WAL mode a
 * reader does not wait for another connection's write lock, so a held lock does not fail
 * it (the job manager's failing writes tell that story: jobs_store_failing). */
static int ping(struct store *st, struct err *e)
{
    struct store_sqlite *s = from_store(st);
    sqlite3_stmt *stmt = NULL;
    int ret, rc;
    if ((ret = obs_prepare(s, "SELECT 1 FROM schema_version LIMIT 1", &stmt, e)) != 0)
        goto out;
    if ((rc = sqlite3_step(stmt)) != SQLITE_ROW && rc != SQLITE_DONE)
        ret = fail(s->db, rc, e);
out:
    sqlite3_finalize(stmt);
    return ret;
}

static const struct store_ops SQLITE_OPS = {
    .kind = "sqlite",
    .crew_insert = crew_insert,
    .crew_update = crew_update,
    .crew_get = crew_get,
    .crew_list = crew_list,
    .crew_delete = crew_delete,
    .job_insert = job_insert,
    .job_get = job_get,
    .job_find_by_key = job_find_by_key,
    .job_claim = job_claim,
    .job_renew = job_renew,
    .job_release = job_release,
    .job_step_put = job_step_put,
    .job_steps_get = job_steps_get,
    .job_finish = job_finish,
    .job_list = job_list,
    .job_delete = job_delete,
    .job_purge = job_purge,
    .event_append_batch = event_append_batch,
    .event_list = event_list,
    .delivery_claim = delivery_claim,
    .delivery_done = delivery_done,
    .delivery_release = delivery_release,
    .delivery_list = delivery_list,
    .job_counts = job_counts,
    .delivery_pending_count = delivery_pending_count,
    .ping = ping,
    .memory_get = memory_get,
    .memory_append = memory_append,
    .memory_clear = memory_clear,
    .named_put = named_put,
    .named_get = named_get,
    .named_list = named_list,
    .named_delete = named_delete,
    .close = close_store,
};

/* Creates the directory that will hold `path` when it is missing (one level, like mkdir). */
static int make_parent_dir(const char *path, struct err *e)
{
    const char *slash = strrchr(path, '/');
    char *dir = NULL;
    int ret = 0;
    if (slash == NULL || slash == path)
        goto out; /* the current directory, or "/" */
    size_t len = (size_t)(slash - path);
    dir = malloc(len + 1);
    if (dir == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    memcpy(dir, path, len);
    dir[len] = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        ret = err_set(e, ERR_IO, "store: cannot create directory '%s': %s", dir, strerror(errno));
out:
    free(dir);
    return ret;
}

/* Runs a PRAGMA (or any one statement) and copies the first column of its row, if any. */
static int exec_one(sqlite3 *db, const char *sql, char *answer, size_t cap, struct err *e)
{
    sqlite3_stmt *stmt = NULL;
    int ret = 0;
    if (answer != NULL)
        answer[0] = '\0';
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        ret = fail(db, rc, e);
        goto out;
    }
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW && answer != NULL) {
        const unsigned char *text = sqlite3_column_text(stmt, 0);
        if (text != NULL) {
            size_t len = strnlen((const char *)text, cap - 1);
            memcpy(answer, text, len);
            answer[len] = '\0';
        }
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ret = fail(db, rc, e);
    }
out:
    sqlite3_finalize(stmt);
    return ret;
}

/* The highest schema version recorded, 0 for a new database. */
static int schema_version(sqlite3 *db, long *out, struct err *e)
{
    char answer[32];
    int ret = exec_one(db, "SELECT coalesce(max(version), 0) FROM schema_version", answer,
                       sizeof answer, e);
    if (ret == 0)
        *out = strtol(answer, NULL, 10);
    return ret;
}

/*
 * Brings the schema to STORE_SCHEMA_VERSION, one migration per transaction. The version is
 * read inside BEGIN IMMEDIATE, which takes the write lock, so two processes opening a new
 * database at once cannot both apply the same migration.
 */
static int migrate(sqlite3 *db, struct err *e)
{
    int ret = exec_one(db,
                       "CREATE TABLE IF NOT EXISTS schema_version ("
                       " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
                       NULL, 0, e);
    bool in_tx = false;
    sqlite3_stmt *record = NULL;
    if (ret != 0)
        goto out;
    int rc = sqlite3_prepare_v2(db,
                                "INSERT INTO schema_version (version, applied_at)"
                                " VALUES (?1, ?2)",
                                -1, &record, NULL);
    if (rc != SQLITE_OK) {
        ret = fail(db, rc, e);
        goto out;
    }
    for (;;) {
        long version;
        if ((ret = exec_one(db, "BEGIN IMMEDIATE", NULL, 0, e)) != 0)
            goto out;
        in_tx = true;
        if ((ret = schema_version(db, &version, e)) != 0)
            goto out;
        if (version > STORE_SCHEMA_VERSION) {
            ret = err_set(e, ERR_STORE,
                          "store: database schema version %ld is newer than this crewd (%d)",
                          version, STORE_SCHEMA_VERSION);
            goto out;
        }
        if (version == STORE_SCHEMA_VERSION)
            break;
        long next = version + 1;
        char now[CLOCK_RFC3339_LEN];
        clock_rfc3339_now(now);
        if ((rc = sqlite3_exec(db, MIGRATIONS[next - 1], NULL, NULL, NULL)) != SQLITE_OK ||
            (rc = sqlite3_bind_int64(record, 1, next)) != SQLITE_OK ||
            (rc = sqlite3_bind_text(record, 2, now, -1, SQLITE_STATIC)) != SQLITE_OK ||
            (rc = sqlite3_step(record)) != SQLITE_DONE) {
            ret = err_set(e, code_of(rc), "store: migration %ld: %s", next, sqlite3_errmsg(db));
            goto out;
        }
        stmt_done(record);
        if ((ret = exec_one(db, "COMMIT", NULL, 0, e)) != 0)
            goto out;
        in_tx = false;
        log_debug(MOD, "applied schema migration %ld", next);
    }
    ret = exec_one(db, "COMMIT", NULL, 0, e);
    in_tx = false;
out:
    if (record != NULL)
        stmt_done(record);
    sqlite3_finalize(record);
    if (in_tx)
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return ret;
}

/* The connection settings; see store_sqlite.h for why WAL and synchronous=NORMAL. */
static int configure(sqlite3 *db, bool in_memory, struct err *e)
{
    char mode[16];
    int ret;
    /* Foreign keys are off by default in SQLite and must be asked for on each connection. */
    if ((ret = exec_one(db, "PRAGMA foreign_keys = ON", NULL, 0, e)) != 0 ||
        (ret = exec_one(db, "PRAGMA busy_timeout = 5000", NULL, 0, e)) != 0 ||
        (ret = exec_one(db, "PRAGMA journal_mode = WAL", mode, sizeof mode, e)) != 0 ||
        (ret = exec_one(db, "PRAGMA synchronous = NORMAL", NULL, 0, e)) != 0)
        return ret;
    /* SQLite answers with the mode it kept; a filesystem without shared memory (some
     * network mounts) keeps the rollback journal, where NORMAL would not be crash-safe. */
    if (!in_memory && strcmp(mode, "wal") != 0)
        return err_set(e, ERR_STORE, "store: the database refused WAL mode (journal_mode=%s)",
                       mode);
    return 0;
}

int store_sqlite_open(const char *path, struct store **out, struct err *e)
{
    *out = NULL;
    struct store_sqlite *s = NULL;
    int ret = 0;
    if (path == NULL || path[0] == '\0') {
        ret = err_set(e, ERR_INVALID, "store: empty SQLite path");
        goto out;
    }
    bool in_memory = strcmp(path, ":memory:") == 0;
    if (!in_memory && (ret = make_parent_dir(path, e)) != 0)
        goto out;
    s = calloc(1, sizeof *s);
    if (s == NULL) {
        ret = err_set(e, ERR_NOMEM, "store: out of memory");
        goto out;
    }
    s->base.ops = &SQLITE_OPS;
    int rc = sqlite3_open_v2(
        path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        ret = err_set(e, code_of(rc), "store: cannot open '%s': %s", path,
                      s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto out;
    }
    /* Extended codes tell a primary-key violation from a UNIQUE one (write_fail). */
    sqlite3_extended_result_codes(s->db, 1);
    if ((ret = configure(s->db, in_memory, e)) != 0 || (ret = migrate(s->db, e)) != 0)
        goto out;
    for (int i = 0; i < ST_COUNT_; i++) {
        const char *sql = i < ST_NAMED_FIRST_
                              ? STMT_SQL[i]
                              : NAMED_STMT_SQL[(i - ST_NAMED_FIRST_) / NAMED_N_]
                                              [(i - ST_NAMED_FIRST_) % NAMED_N_];
        rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i], NULL);
        if (rc != SQLITE_OK) {
            ret = fail(s->db, rc, e);
            goto out;
        }
    }
    log_debug(MOD, "opened sqlite database '%s' (schema version %d)", path, STORE_SCHEMA_VERSION);
    *out = &s->base;
    s = NULL;
out:
    if (s != NULL)
        close_store(&s->base);
    return ret;
}
