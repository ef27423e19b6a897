/*
 * test_store_pg.c - the PostgreSQL store backend against a real, throwaway PostgreSQL cluster
 * (scripts/pg-cluster.sh, started once for the group in a temporary directory).
 *
 * Checks the same semantics a SQLite backend test checks (store.h is the contract), plus what
 * only a shared server has: migrations under the advisory lock, a refused newer schema,
 * reconnecting after a lost connection, and no password in a connection error. Each test
 * starts from an empty database (tables dropped) and closes everything it opened.
 *
 * The test opens the backend with store_pg_open() directly; store_open()'s URL dispatch is
 * covered by test_store_sqlite.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "store/store.h"
#include "store/store_pg.h"

struct cluster {
    char dir[64];
    char url[256];
};

/* The group's cluster; each test gets `struct store *` as its state. */
static struct cluster g_cluster;

/* ---- helpers --------------------------------------------------------------------------- */

/* Runs SQL on an admin connection of its own; returns the first column of the first row
 * (malloc'd) when there is one, NULL otherwise. Fails the test on an SQL error. */
static char *admin_query(const char *sql)
{
    PGconn *conn = PQconnectdb(g_cluster.url);
    assert_int_equal(PQstatus(conn), CONNECTION_OK);
    PGresult *res = PQexec(conn, sql);
    ExecStatusType st = PQresultStatus(res);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fail_msg("admin query failed: %s: %s", sql, PQerrorMessage(conn));
    char *value = NULL;
    if (st == PGRES_TUPLES_OK && PQntuples(res) > 0 && !PQgetisnull(res, 0, 0))
        value = strdup(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(conn);
    return value;
}

static void admin_exec(const char *sql)
{
    free(admin_query(sql));
}

static struct store *open_store(void)
{
    struct store *st = NULL;
    struct err e = {0};
    int rc = store_pg_open(g_cluster.url, &st, &e);
    if (rc != 0)
        fail_msg("store_pg_open: %s", err_text(&e));
    assert_non_null(st);
    assert_string_equal(st->ops->kind, "postgres");
    return st;
}

/* A crew with every field set; strings point into static storage (the store borrows them). */
static struct store_crew make_crew(const char *id, const char *name, int64_t created_ms)
{
    struct store_crew c = {0};
    snprintf(c.crew_id, sizeof c.crew_id, "%s", id);
    c.name = (char *)name;
    c.description = (char *)"a crew for tests";
    c.execution_mode = (char *)"sequential";
    c.agent_count = 2;
    /* Odd spacing, key order and non-ASCII text: must come back byte for byte (not JSONB). */
    c.definition =
        (char *)"{ \"name\" : \"x\",\"agents\":[ {\"role\":\"r\u00e9sum\u00e9 \u2713\"} ],"
                "\"a\":1.0 }";
    c.plan = (char *)"{\"order\":[\"r\"],\"z\":null}";
    clock_rfc3339(created_ms, c.created_at);
    clock_rfc3339(created_ms, c.updated_at);
    return c;
}

static void new_id(char out[ID_UUID_LEN])
{
    assert_int_equal(id_uuid4(out), 0);
}

static void assert_crew_equal(const struct store_crew *want, const struct store_crew *got,
                              bool full)
{
    assert_string_equal(got->crew_id, want->crew_id);
    assert_string_equal(got->name, want->name);
    if (want->description == NULL)
        assert_null(got->description);
    else
        assert_string_equal(got->description, want->description);
    assert_string_equal(got->execution_mode, want->execution_mode);
    assert_int_equal(got->agent_count, want->agent_count);
    if (full) {
        assert_string_equal(got->definition, want->definition);
        assert_string_equal(got->plan, want->plan);
    } else {
        assert_null(got->definition);
        assert_null(got->plan);
    }
    assert_string_equal(got->created_at, want->created_at);
    assert_string_equal(got->updated_at, want->updated_at);
}

/* ---- fixtures -------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_cluster.dir, sizeof g_cluster.dir, "/tmp/crewd-pgtest-XXXXXX");
    if (mkdtemp(g_cluster.dir) == NULL)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s/scripts/pg-cluster.sh' start '%s'", CREWD_SOURCE_DIR,
             g_cluster.dir);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    char *line = fgets(g_cluster.url, sizeof g_cluster.url, p);
    int status = pclose(p);
    if (line == NULL || status != 0) {
        fprintf(stderr, "pg-cluster.sh start failed (status %d)\n", status);
        return -1;
    }
    g_cluster.url[strcspn(g_cluster.url, "\n")] = '\0';
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s/scripts/pg-cluster.sh' stop '%s'", CREWD_SOURCE_DIR,
             g_cluster.dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Each test: an empty database (no tables), then a freshly opened (so migrated) store. */
static int test_setup(void **state)
{
    admin_exec("DROP TABLE IF EXISTS crews, jobs, job_steps, memory, tools, agent_classes,"
               " job_events, webhook_deliveries, schema_version");
    *state = open_store();
    return 0;
}

static int test_teardown(void **state)
{
    struct store *st = *state;
    if (st != NULL)
        st->ops->close(st);
    return 0;
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_insert_get(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    new_id(id);
    struct store_crew c = make_crew(id, "alpha", 1764000000123);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);

    const struct {
        const char *ident;
        enum store_lookup how;
    } lookups[] = {
        {"alpha", STORE_BY_NAME},
        {id, STORE_BY_ID},
        {"alpha", STORE_BY_NAME_OR_ID},
        {id, STORE_BY_NAME_OR_ID},
    };
    for (size_t i = 0; i < sizeof lookups / sizeof lookups[0]; i++) {
        struct store_crew *got = NULL;
        assert_int_equal(store_crew_get(st, lookups[i].ident, lookups[i].how, &got, &e), 0);
        assert_crew_equal(&c, got, true);
        store_crew_free(got);
    }

    /* A NULL description stays NULL; an empty one stays empty. */
    char id2[ID_UUID_LEN], id3[ID_UUID_LEN];
    new_id(id2);
    new_id(id3);
    struct store_crew d = make_crew(id2, "nodesc", 1764000000124);
    d.description = NULL;
    assert_int_equal(store_crew_insert(st, &d, &e), 0);
    struct store_crew f = make_crew(id3, "emptydesc", 1764000000125);
    f.description = (char *)"";
    assert_int_equal(store_crew_insert(st, &f, &e), 0);
    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(st, "nodesc", STORE_BY_NAME, &got, &e), 0);
    assert_crew_equal(&d, got, true);
    store_crew_free(got);
    assert_int_equal(store_crew_get(st, "emptydesc", STORE_BY_NAME, &got, &e), 0);
    assert_crew_equal(&f, got, true);
    store_crew_free(got);
}

static void test_name_wins_over_id(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id_a[ID_UUID_LEN], id_b[ID_UUID_LEN];
    new_id(id_a);
    new_id(id_b);
    struct store_crew b = make_crew(id_b, "beta", 1764000000000);
    /* Crew a is *named* after crew b's id. */
    struct store_crew a = make_crew(id_a, id_b, 1764000001000);
    assert_int_equal(store_crew_insert(st, &b, &e), 0);
    assert_int_equal(store_crew_insert(st, &a, &e), 0);

    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(st, id_b, STORE_BY_NAME_OR_ID, &got, &e), 0);
    assert_string_equal(got->crew_id, id_a);
    store_crew_free(got);
    assert_int_equal(store_crew_get(st, id_b, STORE_BY_ID, &got, &e), 0);
    assert_string_equal(got->crew_id, id_b);
    store_crew_free(got);
}

static void test_non_uuid_ident(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    new_id(id);
    struct store_crew c = make_crew(id, "my crew; 'quoted'", 1764000000000);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(st, "my crew; 'quoted'", STORE_BY_NAME_OR_ID, &got, &e), 0);
    assert_string_equal(got->crew_id, id);
    store_crew_free(got);
    /* Neither form of miss may turn into an SQL error from a ::uuid cast. */
    e = (struct err){0};
    assert_int_equal(store_crew_get(st, "not-a-uuid", STORE_BY_NAME_OR_ID, &got, &e),
                     ERR_NOT_FOUND);
    assert_null(got);
    assert_int_equal(store_crew_get(st, "not-a-uuid", STORE_BY_ID, &got, &e), ERR_NOT_FOUND);
    assert_null(got);
}

static void test_conflicts(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN], id2[ID_UUID_LEN];
    new_id(id);
    new_id(id2);
    struct store_crew c = make_crew(id, "alpha", 1764000000000);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);

    struct store_crew same_name = make_crew(id2, "alpha", 1764000000000);
    assert_int_equal(store_crew_insert(st, &same_name, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "name: a crew named 'alpha' already exists");

    e = (struct err){0};
    struct store_crew same_id = make_crew(id, "other", 1764000000000);
    assert_int_equal(store_crew_insert(st, &same_id, &e), ERR_CONFLICT);
    char want[128];
    snprintf(want, sizeof want, "crew_id: a crew with id '%s' already exists", id);
    assert_string_equal(e.msg, want);

    /* The failed inserts left nothing behind and the store still works. */
    struct store_crew_page page = {0};
    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.total, 1);
    store_crew_page_cleanup(&page);
}

static void test_update(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN], id2[ID_UUID_LEN];
    new_id(id);
    new_id(id2);
    struct store_crew c = make_crew(id, "alpha", 1764000000000);
    struct store_crew other = make_crew(id2, "taken", 1764000000001);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
    assert_int_equal(store_crew_insert(st, &other, &e), 0);

    struct store_crew u = c;
    u.name = (char *)"alpha2";
    u.description = NULL;
    u.execution_mode = (char *)"flow";
    u.agent_count = 5;
    u.definition = (char *)"{\"new\":true}";
    u.plan = (char *)"{\"p\":2}";
    clock_rfc3339(1999999999999, u.created_at); /* must be ignored */
    clock_rfc3339(1764000099999, u.updated_at);
    assert_int_equal(store_crew_update(st, &u, &e), 0);

    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(st, id, STORE_BY_ID, &got, &e), 0);
    struct store_crew want = u;
    memcpy(want.created_at, c.created_at, sizeof want.created_at);
    assert_crew_equal(&want, got, true);
    store_crew_free(got);
    assert_int_equal(store_crew_get(st, "alpha", STORE_BY_NAME, &got, &e), ERR_NOT_FOUND);

    /* A name that belongs to another crew. */
    u.name = (char *)"taken";
    e = (struct err){0};
    assert_int_equal(store_crew_update(st, &u, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "name: a crew named 'taken' already exists");

    /* Keeping one's own name is no conflict. */
    u.name = (char *)"alpha2";
    assert_int_equal(store_crew_update(st, &u, &e), 0);

    /* Unknown ids, UUID or not. */
    char missing[ID_UUID_LEN];
    new_id(missing);
    struct store_crew m = make_crew(missing, "ghost", 1764000000000);
    assert_int_equal(store_crew_update(st, &m, &e), ERR_NOT_FOUND);
    struct store_crew bad = make_crew("nope", "ghost", 1764000000000);
    assert_int_equal(store_crew_update(st, &bad, &e), ERR_NOT_FOUND);
}

static void test_not_found(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    new_id(id);
    struct store_crew *got = (struct store_crew *)&e; /* must be reset to NULL */
    assert_int_equal(store_crew_get(st, "nobody", STORE_BY_NAME, &got, &e), ERR_NOT_FOUND);
    assert_null(got);
    assert_int_equal(store_crew_get(st, id, STORE_BY_ID, &got, &e), ERR_NOT_FOUND);
    assert_int_equal(store_crew_get(st, id, STORE_BY_NAME_OR_ID, &got, &e), ERR_NOT_FOUND);
    assert_int_equal(store_crew_get(st, "nobody", STORE_BY_NAME_OR_ID, &got, &e), ERR_NOT_FOUND);
    assert_null(got);
    assert_int_equal(store_crew_delete(st, id, &e), ERR_NOT_FOUND);
    assert_int_equal(store_crew_delete(st, "nobody", &e), ERR_NOT_FOUND);
}

static void test_list(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    /* Inserted out of order; "d" and "c" share a created_at and keep their insertion order
     * ("d" first), although "c" has the smaller crew_id. */
    const char *ids[5] = {
        "00000000-0000-4000-8000-000000000005", "00000000-0000-4000-8000-000000000001",
        "00000000-0000-4000-8000-00000000000b", "00000000-0000-4000-8000-00000000000a",
        "00000000-0000-4000-8000-000000000003",
    };
    const int64_t created[5] = {1764000005000, 1764000001000, 1764000003000, 1764000003000,
                                1764000000000};
    const char *names[5] = {"e", "b", "d", "c", "a"};
    struct store_crew crews[5];
    for (int i = 0; i < 5; i++) {
        crews[i] = make_crew(ids[i], names[i], created[i]);
        assert_int_equal(store_crew_insert(st, &crews[i], &e), 0);
    }
    const int order[5] = {4, 1, 2, 3, 0}; /* a b d c e */

    struct store_crew_page page = {0};
    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.total, 5);
    assert_int_equal(page.n, 5);
    for (int i = 0; i < 5; i++)
        assert_crew_equal(&crews[order[i]], page.items[i], false);
    store_crew_page_cleanup(&page);

    for (long off = 0; off < 5; off += 2) {
        assert_int_equal(store_crew_list(st, 2, off, &page, &e), 0);
        assert_int_equal(page.total, 5);
        assert_int_equal(page.n, off == 4 ? 1 : 2);
        for (size_t i = 0; i < page.n; i++)
            assert_string_equal(page.items[i]->name, names[order[off + (long)i]]);
        store_crew_page_cleanup(&page);
    }

    /* Past the end: no rows, total still known. */
    assert_int_equal(store_crew_list(st, 2, 10, &page, &e), 0);
    assert_int_equal(page.n, 0);
    assert_null(page.items);
    assert_int_equal(page.total, 5);
    store_crew_page_cleanup(&page);

    /* limit 0: just the total; a negative limit or offset: refused, as on SQLite. */
    assert_int_equal(store_crew_list(st, 0, 0, &page, &e), 0);
    assert_int_equal(page.n, 0);
    assert_int_equal(page.total, 5);
    store_crew_page_cleanup(&page);
    assert_int_equal(store_crew_list(st, -1, 1, &page, &e), ERR_INVALID);
    assert_int_equal(store_crew_list(st, 1, -1, &page, &e), ERR_INVALID);
    assert_int_equal(page.n, 0);
}

static void test_list_empty(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    struct store_crew_page page = {0};
    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.n, 0);
    assert_int_equal(page.total, 0);
    store_crew_page_cleanup(&page);
}

static void test_delete(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN], id2[ID_UUID_LEN];
    new_id(id);
    new_id(id2);
    struct store_crew c = make_crew(id, "alpha", 1764000000000);
    struct store_crew d = make_crew(id2, "beta", 1764000000001);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
    assert_int_equal(store_crew_insert(st, &d, &e), 0);
    assert_int_equal(store_crew_delete(st, id, &e), 0);
    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(st, id, STORE_BY_ID, &got, &e), ERR_NOT_FOUND);
    assert_int_equal(store_crew_delete(st, id, &e), ERR_NOT_FOUND);
    struct store_crew_page page = {0};
    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.total, 1);
    assert_string_equal(page.items[0]->crew_id, id2);
    store_crew_page_cleanup(&page);
    /* The freed name can be used again. */
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
}

static void test_reopen_persists(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    new_id(id);
    struct store_crew c = make_crew(id, "durable", 1764000000000);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
    st->ops->close(st);
    *state = st = open_store();
    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(st, "durable", STORE_BY_NAME, &got, &e), 0);
    assert_crew_equal(&c, got, true);
    store_crew_free(got);
}

static void test_schema_version(void **state)
{
    (void)state;
    char *v = admin_query("SELECT string_agg(version::text, ',' ORDER BY version)"
                          " FROM schema_version");
    assert_string_equal(v, "1,2,3,4,5,6,7");
    free(v);
    /* A second open (the first is still open) migrates nothing. */
    struct store *again = open_store();
    again->ops->close(again);
    v = admin_query("SELECT count(*) FROM schema_version");
    assert_string_equal(v, "7");
    free(v);
    v = admin_query("SELECT count(*) FROM pg_indexes WHERE indexname IN"
                    " ('crews_created_idx', 'jobs_claim_idx', 'jobs_owner_idx',"
                    " 'memory_conversation_idx', 'jobs_created_idx', 'jobs_crew_created_idx',"
                    " 'jobs_status_created_idx', 'jobs_finished_idx', 'jobs_idempotency_key_idx',"
                    " 'job_events_pkey', 'webhook_deliveries_pkey', 'webhook_deliveries_due_idx')");
    assert_string_equal(v, "12");
    free(v);
}

static void test_newer_schema_refused(void **state)
{
    (void)state;
    admin_exec("INSERT INTO schema_version (version) VALUES (8)");
    struct store *st = (struct store *)&st; /* must be reset to NULL */
    struct err e = {0};
    assert_int_equal(store_pg_open(g_cluster.url, &st, &e), ERR_STORE);
    assert_null(st);
    assert_non_null(strstr(e.msg, "schema version 8"));
    /* Nothing was changed by the refusal. */
    char *v = admin_query("SELECT count(*) FROM schema_version");
    assert_string_equal(v, "8");
    free(v);
}

/* Several processes opening a fresh database together: one migrates, none fails. */
static void test_concurrent_migration(void **state)
{
    struct store *st = *state;
    st->ops->close(st);
    *state = NULL;
    admin_exec("DROP TABLE IF EXISTS crews, jobs, job_steps, memory, tools, agent_classes,"
               " job_events, webhook_deliveries, schema_version");
    enum { N_PROCS = 4 };
    pid_t pids[N_PROCS];
    for (int i = 0; i < N_PROCS; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct store *child = NULL;
            struct err e = {0};
            int rc = store_pg_open(g_cluster.url, &child, &e);
            if (rc != 0)
                fprintf(stderr, "child open: %s\n", err_text(&e));
            else
                child->ops->close(child);
            _exit(rc == 0 ? 0 : 1);
        }
    }
    for (int i = 0; i < N_PROCS; i++) {
        int status = 0;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
    char *v = admin_query("SELECT count(*) FROM schema_version");
    assert_string_equal(v, "7");
    free(v);
}

static void test_timestamps_round_trip(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    const char *stamps[] = {
        "2026-11-24T10:30:00.123Z", "2026-11-24T10:30:00.000Z", "1999-12-31T23:59:59.999Z",
        "2024-02-29T00:00:00.001Z", "1970-01-01T00:00:00.000Z",
    };
    for (size_t i = 0; i < sizeof stamps / sizeof stamps[0]; i++) {
        char id[ID_UUID_LEN], name[16];
        new_id(id);
        snprintf(name, sizeof name, "t%zu", i);
        struct store_crew c = make_crew(id, name, 0);
        snprintf(c.created_at, sizeof c.created_at, "%s", stamps[i]);
        snprintf(c.updated_at, sizeof c.updated_at, "%s", stamps[(i + 1) % 5]);
        assert_int_equal(store_crew_insert(st, &c, &e), 0);
        struct store_crew *got = NULL;
        assert_int_equal(store_crew_get(st, id, STORE_BY_ID, &got, &e), 0);
        assert_string_equal(got->created_at, c.created_at);
        assert_string_equal(got->updated_at, c.updated_at);
        store_crew_free(got);
    }
    /* The session's time zone must not leak into the form. */
    admin_exec("ALTER DATABASE postgres SET timezone TO 'Asia/Kolkata'");
    struct store *other = open_store();
    struct store_crew *got = NULL;
    assert_int_equal(store_crew_get(other, "t0", STORE_BY_NAME, &got, &e), 0);
    assert_string_equal(got->created_at, stamps[0]);
    store_crew_free(got);
    other->ops->close(other);
    admin_exec("ALTER DATABASE postgres RESET timezone");
}

static void test_invalid_values(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    new_id(id);
    struct store_crew c = make_crew("not-a-uuid", "x", 1764000000000);
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_INVALID);
    c = make_crew(id, "x", 1764000000000);
    c.agent_count = 1L << 40;
    /* Values crewd itself produced: a failure is the store's (ERR_STORE, a 500), not the
     * client's. */
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_STORE);
    c = make_crew(id, "x", 1764000000000);
    snprintf(c.created_at, sizeof c.created_at, "yesterday-ish");
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_STORE);
    /* The store is usable afterwards. */
    c = make_crew(id, "x", 1764000000000);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
}

static void test_reconnect(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    new_id(id);
    struct store_crew c = make_crew(id, "alpha", 1764000000000);
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
    admin_exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE datname = 'postgres' AND pid <> pg_backend_pid()"
               " AND backend_type = 'client backend'");
    /* The call that finds the connection dead reports it; the next one reconnects (and
     * prepares its statements again). */
    struct store_crew *got = NULL;
    int rc = store_crew_get(st, "alpha", STORE_BY_NAME, &got, &e);
    if (rc != 0) {
        assert_int_equal(rc, ERR_STORE);
        assert_null(got);
        rc = store_crew_get(st, "alpha", STORE_BY_NAME, &got, &e);
    }
    assert_int_equal(rc, 0);
    assert_string_equal(got->crew_id, id);
    store_crew_free(got);
}

static void test_connect_error_hides_password(void **state)
{
    (void)state;
    const char *urls[] = {
        "postgresql://crewd:s3cretPW@/postgres?host=/nonexistent-crewd-dir",
        "postgresql:///postgres?host=/nonexistent-crewd-dir&user=x&password=s3cretPW",
        /* A malformed percent escape that libpq quotes back in its error. */
        "postgresql://crewd:s3cretPW%zz@/postgres?host=/nonexistent-crewd-dir",
        "postgresql:///postgres?password=s3cretPW%zz&host=/nonexistent-crewd-dir",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        struct store *st = (struct store *)&st;
        struct err e = {0};
        assert_int_equal(store_pg_open(urls[i], &st, &e), ERR_STORE);
        assert_null(st);
        assert_true(e.msg[0] != '\0');
        if (strstr(e.msg, "s3cretPW") != NULL)
            fail_msg("password in message: %s", e.msg);
    }
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)
    const struct CMUnitTest tests[] = {
        T(test_insert_get),
        T(test_name_wins_over_id),
        T(test_non_uuid_ident),
        T(test_conflicts),
        T(test_update),
        T(test_not_found),
        T(test_list),
        T(test_list_empty),
        T(test_delete),
        T(test_reopen_persists),
        T(test_schema_version),
        T(test_newer_schema_refused),
        T(test_concurrent_migration),
        T(test_timestamps_round_trip),
        T(test_invalid_values),
        T(test_reconnect),
        cmocka_unit_test(test_connect_error_hides_password),
    };
#undef T
    return cmocka_run_group_tests_name("store_pg", tests, group_setup, group_teardown);
}
