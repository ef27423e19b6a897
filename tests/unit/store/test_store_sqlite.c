/*
 * test_store_sqlite.c - the crew registry on the SQLite backend, reached through store_open()
 * as the daemon reaches it, plus the URL dispatch of store.c. Most tests use ":memory:";
 * the ones about files (persistence, WAL, migrations, parent directory) work in a fresh
 * directory under /tmp that they remove. SQLite is opened directly only to look behind the
 * store's back (schema_version, journal_mode).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "store/store.h"

#define ID_A "0b8e7c1a-0000-4000-8000-00000000000a"
#define ID_B "0b8e7c1a-0000-4000-8000-00000000000b"
#define ID_C "0b8e7c1a-0000-4000-8000-00000000000c"
#define ID_D "0b8e7c1a-0000-4000-8000-00000000000d"
#define ID_E "0b8e7c1a-0000-4000-8000-00000000000e"
#define ID_MISSING "0b8e7c1a-0000-4000-8000-0000000000ff"

#define T1 "2026-11-24T10:30:00.001Z"
#define T2 "2026-11-24T10:30:00.002Z"
#define T3 "2026-11-24T10:30:00.003Z"
#define T9 "2026-11-24T10:30:00.009Z"

/* A crew whose strings point at literals or the caller's buffers (borrowed, never freed). */
static struct store_crew crew_make(const char *id, const char *name, const char *created_at)
{
    struct store_crew c = {0};
    snprintf(c.crew_id, sizeof c.crew_id, "%s", id);
    c.name = (char *)name;
    c.description = (char *)"a crew for tests";
    c.execution_mode = (char *)"sequential";
    c.agent_count = 2;
    c.definition = (char *)"{\"name\":\"x\",\"agents\":[]}";
    c.plan = (char *)"{\"order\":[]}";
    snprintf(c.created_at, sizeof c.created_at, "%s", created_at);
    snprintf(c.updated_at, sizeof c.updated_at, "%s", created_at);
    return c;
}

static struct store *open_ok(const char *url)
{
    struct store *st = NULL;
    struct err e = {0};
    int rc = store_open(url, &st, &e);
    if (rc != 0)
        fail_msg("store_open(%s): %s", url, err_text(&e));
    assert_non_null(st);
    return st;
}

static void insert_ok(struct store *st, const char *id, const char *name, const char *t)
{
    struct store_crew c = crew_make(id, name, t);
    struct err e = {0};
    int rc = store_crew_insert(st, &c, &e);
    if (rc != 0)
        fail_msg("insert %s: %s", name, err_text(&e));
}

/* Gets a crew that must exist and checks it is `want_id`. */
static void get_is(struct store *st, const char *ident, enum store_lookup how, const char *want_id)
{
    struct store_crew *c = NULL;
    struct err e = {0};
    int rc = store_crew_get(st, ident, how, &c, &e);
    if (rc != 0)
        fail_msg("get %s: %s", ident, err_text(&e));
    assert_string_equal(c->crew_id, want_id);
    store_crew_free(c);
}

static void get_missing(struct store *st, const char *ident, enum store_lookup how)
{
    struct store_crew *c = (struct store_crew *)&c; /* must be reset to NULL */
    struct err e = {0};
    assert_int_equal(store_crew_get(st, ident, how, &c, &e), ERR_NOT_FOUND);
    assert_int_equal(e.code, ERR_NOT_FOUND);
    assert_null(c);
    assert_non_null(strstr(e.msg, ident));
}

/* Removes a directory tree made by a test (files and directories only). */
static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char child[4096];
        snprintf(child, sizeof child, "%s/%s", path, de->d_name);
        rm_rf(child);
    }
    closedir(d);
    rmdir(path);
}

/* The test state of file-based tests: a fresh directory under /tmp. */
struct tmp {
    char dir[64];
};

static int tmp_setup(void **state)
{
    struct tmp *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/crewd-store-test-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int tmp_teardown(void **state)
{
    struct tmp *t = *state;
    rm_rf(t->dir);
    free(t);
    return 0;
}

/* Runs one query on a file behind the store's back and returns its first column as text. */
static void peek(const char *path, const char *sql, char *out, size_t cap)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), SQLITE_OK);
    int rc = sqlite3_step(stmt);
    out[0] = '\0';
    if (rc == SQLITE_ROW && sqlite3_column_text(stmt, 0) != NULL)
        snprintf(out, cap, "%s", (const char *)sqlite3_column_text(stmt, 0));
    else
        assert_int_equal(rc, SQLITE_DONE);
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* ---- crews ---- */

static void test_insert_and_get(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    insert_ok(st, ID_A, "alpha", T1);

    struct store_crew *c = NULL;
    struct err e = {0};
    assert_int_equal(store_crew_get(st, "alpha", STORE_BY_NAME, &c, &e), 0);
    assert_string_equal(c->crew_id, ID_A);
    assert_string_equal(c->name, "alpha");
    assert_string_equal(c->description, "a crew for tests");
    assert_string_equal(c->execution_mode, "sequential");
    assert_int_equal(c->agent_count, 2);
    assert_string_equal(c->definition, "{\"name\":\"x\",\"agents\":[]}");
    assert_string_equal(c->plan, "{\"order\":[]}");
    assert_string_equal(c->created_at, T1);
    assert_string_equal(c->updated_at, T1);
    store_crew_free(c);

    get_is(st, ID_A, STORE_BY_ID, ID_A);
    get_is(st, ID_A, STORE_BY_NAME_OR_ID, ID_A);
    get_is(st, "alpha", STORE_BY_NAME_OR_ID, ID_A);
    store_close(st);
}

static void test_null_description_round_trips(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    struct store_crew in = crew_make(ID_A, "alpha", T1);
    in.description = NULL;
    in.agent_count = 1234567890123L;
    struct err e = {0};
    assert_int_equal(store_crew_insert(st, &in, &e), 0);
    struct store_crew *c = NULL;
    assert_int_equal(store_crew_get(st, ID_A, STORE_BY_ID, &c, &e), 0);
    assert_null(c->description);
    assert_int_equal(c->agent_count, 1234567890123L);
    store_crew_free(c);
    store_close(st);
}

static void test_name_wins_over_id(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    insert_ok(st, ID_A, "alpha", T1);
    /* B is named with A's id: an identifier that is both resolves to the name. */
    insert_ok(st, ID_B, ID_A, T2);
    get_is(st, ID_A, STORE_BY_NAME_OR_ID, ID_B);
    get_is(st, ID_A, STORE_BY_NAME, ID_B);
    get_is(st, ID_A, STORE_BY_ID, ID_A);
    get_is(st, ID_B, STORE_BY_NAME_OR_ID, ID_B);
    get_missing(st, ID_B, STORE_BY_NAME);
    store_close(st);
}

static void test_not_found(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    get_missing(st, "nobody", STORE_BY_NAME_OR_ID);
    insert_ok(st, ID_A, "alpha", T1);
    get_missing(st, "nobody", STORE_BY_NAME_OR_ID);
    get_missing(st, "nobody", STORE_BY_NAME);
    get_missing(st, ID_MISSING, STORE_BY_ID);
    get_missing(st, ID_MISSING, STORE_BY_NAME_OR_ID);
    get_missing(st, "alpha", STORE_BY_ID); /* a name is not an id */
    get_missing(st, ID_A, STORE_BY_NAME);  /* nor an id a name */
    store_close(st);
}

static void test_name_conflict(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    insert_ok(st, ID_A, "alpha", T1);
    struct store_crew c = crew_make(ID_B, "alpha", T2);
    struct err e = {0};
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "name: a crew named 'alpha' already exists");
    get_missing(st, ID_B, STORE_BY_ID);
    store_close(st);
}

static void test_id_conflict(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    insert_ok(st, ID_A, "alpha", T1);
    struct store_crew c = crew_make(ID_A, "beta", T2);
    struct err e = {0};
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "crew_id: a crew with id '" ID_A "' already exists");
    get_missing(st, "beta", STORE_BY_NAME);
    /* The store stays usable after a failed statement. */
    insert_ok(st, ID_B, "beta", T2);
    store_close(st);
}

static void test_insert_rejects_missing_fields(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    struct err e = {0};
    struct store_crew c = crew_make(ID_A, "alpha", T1);
    c.name = NULL;
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_INVALID);
    c = crew_make("", "alpha", T1);
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_INVALID);
    c = crew_make(ID_A, "alpha", T1);
    c.plan = NULL;
    assert_int_equal(store_crew_insert(st, &c, &e), ERR_INVALID);
    c = crew_make(ID_A, "alpha", "");
    assert_int_equal(store_crew_update(st, &c, &e), ERR_INVALID);
    store_close(st);
}

static void test_update(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    insert_ok(st, ID_A, "alpha", T1);
    insert_ok(st, ID_B, "beta", T2);

    struct store_crew u = crew_make(ID_A, "gamma", T9); /* created_at T9 must be ignored */
    u.description = NULL;
    u.execution_mode = (char *)"parallel";
    u.agent_count = 5;
    u.definition = (char *)"{\"v\":2}";
    u.plan = (char *)"{\"p\":2}";
    struct err e = {0};
    assert_int_equal(store_crew_update(st, &u, &e), 0);

    struct store_crew *c = NULL;
    assert_int_equal(store_crew_get(st, ID_A, STORE_BY_ID, &c, &e), 0);
    assert_string_equal(c->name, "gamma");
    assert_null(c->description);
    assert_string_equal(c->execution_mode, "parallel");
    assert_int_equal(c->agent_count, 5);
    assert_string_equal(c->definition, "{\"v\":2}");
    assert_string_equal(c->plan, "{\"p\":2}");
    assert_string_equal(c->created_at, T1);
    assert_string_equal(c->updated_at, T9);
    store_crew_free(c);
    get_missing(st, "alpha", STORE_BY_NAME);
    get_is(st, "gamma", STORE_BY_NAME, ID_A);

    /* Keeping its own name is no conflict. */
    assert_int_equal(store_crew_update(st, &u, &e), 0);

    /* Taking another crew's name is one, and changes nothing. */
    u.name = (char *)"beta";
    assert_int_equal(store_crew_update(st, &u, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "name: a crew named 'beta' already exists");
    get_is(st, "gamma", STORE_BY_NAME, ID_A);
    get_is(st, "beta", STORE_BY_NAME, ID_B);

    struct store_crew m = crew_make(ID_MISSING, "delta", T9);
    memset(&e, 0, sizeof e);
    assert_int_equal(store_crew_update(st, &m, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, ID_MISSING));
    get_missing(st, "delta", STORE_BY_NAME);
    store_close(st);
}

static void test_list(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    struct err e = {0};
    struct store_crew_page page = {0};

    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.n, 0);
    assert_int_equal(page.total, 0);
    store_crew_page_cleanup(&page);

    /* Inserted out of time order; C and B share a timestamp, so insertion order (C first)
     * breaks the tie, whatever their ids. */
    insert_ok(st, ID_D, "d", T3);
    insert_ok(st, ID_C, "c", T2);
    insert_ok(st, ID_A, "a", T1);
    insert_ok(st, ID_E, "e", T9);
    insert_ok(st, ID_B, "b", T2);
    const char *order[] = {ID_A, ID_C, ID_B, ID_D, ID_E};

    assert_int_equal(store_crew_list(st, 100, 0, &page, &e), 0);
    assert_int_equal(page.total, 5);
    assert_int_equal(page.n, 5);
    for (size_t i = 0; i < page.n; i++) {
        assert_string_equal(page.items[i]->crew_id, order[i]);
        assert_null(page.items[i]->definition);
        assert_null(page.items[i]->plan);
        assert_non_null(page.items[i]->name);
        assert_string_equal(page.items[i]->execution_mode, "sequential");
    }
    store_crew_page_cleanup(&page);
    assert_null(page.items);
    assert_int_equal(page.n, 0);

    for (long off = 0; off < 6; off += 2) {
        assert_int_equal(store_crew_list(st, 2, off, &page, &e), 0);
        assert_int_equal(page.total, 5);
        assert_int_equal(page.n, off < 4 ? 2 : 1);
        for (size_t i = 0; i < page.n; i++)
            assert_string_equal(page.items[i]->crew_id, order[off + (long)i]);
        store_crew_page_cleanup(&page);
    }

    assert_int_equal(store_crew_list(st, 2, 50, &page, &e), 0);
    assert_int_equal(page.n, 0);
    assert_int_equal(page.total, 5);
    store_crew_page_cleanup(&page);

    assert_int_equal(store_crew_list(st, 0, 0, &page, &e), 0);
    assert_int_equal(page.n, 0);
    assert_int_equal(page.total, 5);
    store_crew_page_cleanup(&page);

    assert_int_equal(store_crew_list(st, -1, 0, &page, &e), ERR_INVALID);
    assert_int_equal(store_crew_list(st, 1, -1, &page, &e), ERR_INVALID);
    assert_null(page.items);

    /* A page larger than the first allocation (16 rows) grows. */
    for (int i = 0; i < 40; i++) {
        char id[ID_UUID_LEN], name[32];
        snprintf(id, sizeof id, "1b8e7c1a-0000-4000-8000-0000000000%02d", i);
        snprintf(name, sizeof name, "bulk-%02d", i);
        insert_ok(st, id, name, T9);
    }
    assert_int_equal(store_crew_list(st, 1000, 0, &page, &e), 0);
    assert_int_equal(page.n, 45);
    assert_int_equal(page.total, 45);
    assert_string_equal(page.items[44]->crew_id, "1b8e7c1a-0000-4000-8000-000000000039");
    store_crew_page_cleanup(&page);
    store_close(st);
}

static void test_delete(void **state)
{
    (void)state;
    struct store *st = open_ok("sqlite::memory:");
    insert_ok(st, ID_A, "alpha", T1);
    insert_ok(st, ID_B, "beta", T2);
    struct err e = {0};
    assert_int_equal(store_crew_delete(st, ID_A, &e), 0);
    get_missing(st, ID_A, STORE_BY_ID);
    get_missing(st, "alpha", STORE_BY_NAME_OR_ID);
    assert_int_equal(store_crew_delete(st, ID_A, &e), ERR_NOT_FOUND);
    assert_non_null(strstr(e.msg, ID_A));
    assert_int_equal(store_crew_delete(st, "alpha", &e), ERR_NOT_FOUND); /* ids only */

    struct store_crew_page page = {0};
    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.total, 1);
    assert_string_equal(page.items[0]->crew_id, ID_B);
    store_crew_page_cleanup(&page);

    /* The name is free again. */
    insert_ok(st, ID_C, "alpha", T3);
    get_is(st, "alpha", STORE_BY_NAME, ID_C);
    store_close(st);
}

/* ---- files, migrations, WAL ---- */

static void test_persistence_and_migrations(void **state)
{
    struct tmp *t = *state;
    char path[256], url[300], answer[64], applied[64];
    /* The parent directory "data" does not exist yet: open creates it. */
    snprintf(path, sizeof path, "%s/data/crewd.db", t->dir);
    snprintf(url, sizeof url, "sqlite:%s", path);

    struct store *st = open_ok(url);
    assert_string_equal(st->ops->kind, "sqlite");
    insert_ok(st, ID_A, "alpha", T1);
    store_close(st);

    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    peek(path, "SELECT group_concat(version) FROM schema_version", answer, sizeof answer);
    assert_string_equal(answer, "1,2,3,4,5,6,7");
    peek(path, "SELECT applied_at FROM schema_version WHERE version = 1", applied, sizeof applied);
    assert_int_equal(strlen(applied), 24);
    peek(path, "PRAGMA journal_mode", answer, sizeof answer);
    assert_string_equal(answer, "wal");

    /* Reopening keeps the rows and applies nothing twice. */
    st = open_ok(url);
    get_is(st, "alpha", STORE_BY_NAME, ID_A);
    insert_ok(st, ID_B, "beta", T2);
    store_close(st);
    peek(path, "SELECT count(*) || ':' || max(version) FROM schema_version", answer, sizeof answer);
    assert_string_equal(answer, "7:7");
    peek(path, "SELECT applied_at FROM schema_version WHERE version = 1", answer, sizeof answer);
    assert_string_equal(answer, applied);

    st = open_ok(url);
    struct store_crew_page page = {0};
    struct err e = {0};
    assert_int_equal(store_crew_list(st, 10, 0, &page, &e), 0);
    assert_int_equal(page.total, 2);
    store_crew_page_cleanup(&page);
    store_close(st);
}

static void test_wal_while_open(void **state)
{
    struct tmp *t = *state;
    char path[256], url[300], answer[64];
    snprintf(path, sizeof path, "%s/crewd.db", t->dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    struct store *st = open_ok(url);
    insert_ok(st, ID_A, "alpha", T1);
    /* A second connection sees the committed row while the store is open (WAL readers). */
    peek(path, "PRAGMA journal_mode", answer, sizeof answer);
    assert_string_equal(answer, "wal");
    peek(path, "SELECT name FROM crews", answer, sizeof answer);
    assert_string_equal(answer, "alpha");
    store_close(st);
}

static void test_newer_schema_refused(void **state)
{
    struct tmp *t = *state;
    char path[256], url[300], answer[16];
    snprintf(path, sizeof path, "%s/crewd.db", t->dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    store_close(open_ok(url));
    peek(path, "INSERT INTO schema_version VALUES (8, '2030-01-01T00:00:00.000Z')", answer,
         sizeof answer);

    struct store *st = (struct store *)&st;
    struct err e = {0};
    assert_int_equal(store_open(url, &st, &e), ERR_STORE);
    assert_null(st);
    assert_string_equal(e.msg, "store: database schema version 8 is newer than this crewd (7)");
    /* Refusing changed nothing. */
    peek(path, "SELECT max(version) FROM schema_version", answer, sizeof answer);
    assert_string_equal(answer, "8");
}

static void test_parent_dir_one_level_only(void **state)
{
    struct tmp *t = *state;
    char url[300];
    snprintf(url, sizeof url, "sqlite:%s/a/b/crewd.db", t->dir);
    struct store *st = NULL;
    struct err e = {0};
    assert_int_equal(store_open(url, &st, &e), ERR_IO);
    assert_null(st);
    assert_non_null(strstr(e.msg, "cannot create directory"));
}

static void test_relative_path(void **state)
{
    struct tmp *t = *state;
    char cwd[4096], path[256];
    /* The test changes directory for the one open (tests run on one thread) and goes back. */
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(t->dir), 0);
    struct store *st = NULL;
    struct err e = {0};
    int rc = store_open("sqlite:rel/crewd.db", &st, &e);
    assert_int_equal(chdir(cwd), 0);
    if (rc != 0)
        fail_msg("store_open: %s", err_text(&e));
    insert_ok(st, ID_A, "alpha", T1);
    store_close(st);
    snprintf(path, sizeof path, "%s/rel/crewd.db", t->dir);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
}

static void test_not_a_database(void **state)
{
    struct tmp *t = *state;
    char path[256], url[300];
    snprintf(path, sizeof path, "%s/junk.db", t->dir);
    snprintf(url, sizeof url, "sqlite:%s", path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 512; i++)
        fputs("this is not a database ", f);
    fclose(f);
    struct store *st = NULL;
    struct err e = {0};
    assert_int_equal(store_open(url, &st, &e), ERR_STORE);
    assert_null(st);
    assert_int_equal(strncmp(e.msg, "store: ", 7), 0);
}

/* ---- store.c: URLs and frees ---- */

static void expect_invalid(const char *url)
{
    struct store *st = (struct store *)&st;
    struct err e = {0};
    assert_int_equal(store_open(url, &st, &e), ERR_INVALID);
    assert_null(st);
    assert_int_equal(strncmp(e.msg, "store: ", 7), 0);
}

static void test_url_errors(void **state)
{
    (void)state;
    expect_invalid("");
    expect_invalid("sqlite:");
    expect_invalid("nonsense");
    expect_invalid("SQLITE:x.db");
    expect_invalid("mysql://crewd@db.example/crewd");

    struct store *st = NULL;
    struct err e = {0};
    assert_int_equal(store_open("mysql://crewd:s3cretPW@db.example/crewd", &st, &e), ERR_INVALID);
    assert_string_equal(e.msg, "store: unknown URL 'mysql://crewd:***@db.example/crewd'"
                               " (use sqlite:PATH or postgres://...)");
    assert_int_equal(store_open("crewd:s3cretPW@db.example", &st, &e), ERR_INVALID);
    assert_null(strstr(e.msg, "s3cretPW"));
    assert_int_equal(store_open("mysql://db.example/crewd?user=u&password=s3cretPW", &st, &e),
                     ERR_INVALID);
    assert_null(strstr(e.msg, "s3cretPW"));
    assert_int_equal(store_open("redis://u:s3c@ret@db.example", &st, &e), ERR_INVALID);
    assert_null(strstr(e.msg, "s3c"));
    assert_null(strstr(e.msg, "ret@"));
    assert_null(st);
}

static void test_postgres_urls_reach_pg(void **state)
{
    (void)state;
    const char *urls[] = {
        "postgres://crewd:s3cretPW@127.0.0.1:1/crewd?connect_timeout=2",
        "postgresql://crewd:s3cretPW@127.0.0.1:1/crewd?connect_timeout=2",
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        struct store *st = NULL;
        struct err e = {0};
        int rc = store_open(urls[i], &st, &e);
        /* Nothing listens on port 1: the PostgreSQL backend was reached and failed to
         * connect, without showing the password. */
        assert_int_equal(rc, ERR_STORE);
        assert_non_null(strstr(e.msg, "cannot connect"));
        assert_null(st);
        assert_null(strstr(e.msg, "s3cretPW"));
    }
}

static void test_frees_accept_null(void **state)
{
    (void)state;
    store_close(NULL);
    store_crew_free(NULL);
    store_crew_page_cleanup(NULL);
    struct store_crew_page page = {0};
    store_crew_page_cleanup(&page);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_insert_and_get),
        cmocka_unit_test(test_null_description_round_trips),
        cmocka_unit_test(test_name_wins_over_id),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_name_conflict),
        cmocka_unit_test(test_id_conflict),
        cmocka_unit_test(test_insert_rejects_missing_fields),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_delete),
        cmocka_unit_test_setup_teardown(test_persistence_and_migrations, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_wal_while_open, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_refused, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_parent_dir_one_level_only, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_relative_path, tmp_setup, tmp_teardown),
        cmocka_unit_test_setup_teardown(test_not_a_database, tmp_setup, tmp_teardown),
        cmocka_unit_test(test_url_errors),
        cmocka_unit_test(test_postgres_urls_reach_pg),
        cmocka_unit_test(test_frees_accept_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
