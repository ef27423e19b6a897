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

static const char *const *const pg_migrations[] = {pg_migration_1};

_Static_assert(sizeof pg_migrations / sizeof pg_migrations[0] == STORE_SCHEMA_VERSION,
               "one migration per schema version");

/* ---- prepared statements --------------------------------------------------------------- */

/* The columns every crew read returns, in the order pg_row_to_crew() expects. */
#define PG_TS_FMT "'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'"
#define PG_CREW_COLS                                                                               \
    "crew_id::text, name, description, execution_mode, agent_count, definition, plan, "            \
    "to_char(created_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS created_rfc3339, "                   \
    "to_char(updated_at AT TIME ZONE 'UTC', " PG_TS_FMT ") AS updated_rfc3339"

enum pg_stmt {
    PG_INSERT,
    PG_UPDATE,
    PG_GET_BY_NAME,
    PG_GET_BY_ID,
    PG_GET_BY_NAME_OR_ID,
    PG_LIST,
    PG_DELETE,
    PG_N_STMTS,
};

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
        PGresult *res = PQprepare(s->conn, pg_stmts[i].name, pg_stmts[i].sql, 0, NULL);
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

static void pg_close(struct store *st)
{
    struct pg_store *s = (struct pg_store *)st;
    if (s == NULL)
        return;
    PQfinish(s->conn);
    free(s);
}

static const struct store_ops pg_ops = {
    .kind = "postgres",
    .crew_insert = pg_crew_insert,
    .crew_update = pg_crew_update,
    .crew_get = pg_crew_get,
    .crew_list = pg_crew_list,
    .crew_delete = pg_crew_delete,
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
    s->conn = PQconnectdb(url);
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
