/*
 * backends.h - what the store contract tests share: one group of tests runs on a SQLite file
 * and again on a throwaway PostgreSQL cluster (scripts/pg-cluster.sh), each test on an empty,
 * freshly migrated database. Include once, after <cmocka.h>, <libpq-fe.h> and <sqlite3.h>,
 * with BACKENDS_TAG (a short name for temporary paths) defined, and optionally
 * BACKENDS_PG_RESET_EXTRA (more SQL run when a PostgreSQL test resets, e.g. ";DROP FUNCTION
 * ...").
 */
#ifndef CREWD_TESTS_STORE_BACKENDS_H
#define CREWD_TESTS_STORE_BACKENDS_H

#ifndef BACKENDS_TAG
#error "define BACKENDS_TAG before including backends.h"
#endif
#ifndef BACKENDS_PG_RESET_EXTRA
#define BACKENDS_PG_RESET_EXTRA ""
#endif

/* How a group reaches its database: a fresh one per test, any number of handles on it, and
 * SQL behind the store's back. */
struct backend {
    const char *kind;
    char url[300];
    void (*reset)(void);
    void (*exec)(const char *sql);
};

static struct backend g_sqlite, g_pg;
/* The group running now; set by its group setup. */
static struct backend *g_be;

static char g_sqlite_dir[64];
static char g_sqlite_path[128];
static char g_pg_dir[64];

static void sqlite_remove_files(void)
{
    char side[160];
    unlink(g_sqlite_path);
    snprintf(side, sizeof side, "%s-wal", g_sqlite_path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", g_sqlite_path);
    unlink(side);
}

static void sqlite_exec(const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(g_sqlite_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                     NULL),
                     SQLITE_OK);
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("sqlite exec failed: %s: %s", sql, msg ? msg : "?");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

static int sqlite_group_setup(void **state)
{
    (void)state;
    snprintf(g_sqlite_dir, sizeof g_sqlite_dir, "/tmp/crewd-" BACKENDS_TAG "-XXXXXX");
    if (mkdtemp(g_sqlite_dir) == NULL)
        return -1;
    snprintf(g_sqlite_path, sizeof g_sqlite_path, "%s/" BACKENDS_TAG ".db", g_sqlite_dir);
    g_sqlite.kind = "sqlite";
    snprintf(g_sqlite.url, sizeof g_sqlite.url, "sqlite:%s", g_sqlite_path);
    g_sqlite.reset = sqlite_remove_files;
    g_sqlite.exec = sqlite_exec;
    g_be = &g_sqlite;
    return 0;
}

static int sqlite_group_teardown(void **state)
{
    (void)state;
    sqlite_remove_files();
    return rmdir(g_sqlite_dir) == 0 ? 0 : -1;
}

static void pg_exec(const char *sql)
{
    PGconn *conn = PQconnectdb(g_pg.url);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("admin query failed: %s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
}

static void pg_reset(void)
{
    pg_exec("SET client_min_messages = warning;"
            "DROP TABLE IF EXISTS crews, jobs, job_steps, memory, tools, agent_classes, "
            "job_events, webhook_deliveries, schema_version" BACKENDS_PG_RESET_EXTRA);
}

static int pg_group_setup(void **state)
{
    (void)state;
    snprintf(g_pg_dir, sizeof g_pg_dir, "/tmp/crewd-pg" BACKENDS_TAG "-XXXXXX");
    if (mkdtemp(g_pg_dir) == NULL)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s/scripts/pg-cluster.sh' start '%s'", CREWD_SOURCE_DIR,
             g_pg_dir);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    char *line = fgets(g_pg.url, sizeof g_pg.url, p);
    int status = pclose(p);
    if (line == NULL || status != 0) {
        fprintf(stderr, "pg-cluster.sh start failed (status %d)\n", status);
        return -1;
    }
    g_pg.url[strcspn(g_pg.url, "\n")] = '\0';
    g_pg.kind = "postgres";
    g_pg.reset = pg_reset;
    g_pg.exec = pg_exec;
    g_be = &g_pg;
    return 0;
}

static int pg_group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s/scripts/pg-cluster.sh' stop '%s'", CREWD_SOURCE_DIR,
             g_pg_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct store *open_store(void)
{
    struct store *st = NULL;
    struct err e = {0};
    if (store_open(g_be->url, &st, &e) != 0)
        fail_msg("store_open(%s): %s", g_be->kind, err_text(&e));
    assert_string_equal(st->ops->kind, g_be->kind);
    return st;
}

/* Each test: an empty database, then a freshly opened (so migrated) store as the state. */
static int test_setup(void **state)
{
    g_be->reset();
    *state = open_store();
    return 0;
}

static int test_teardown(void **state)
{
    store_close(*state);
    return 0;
}

#endif
