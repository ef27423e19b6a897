/*
 * test_store_catalog.c - the catalogs of store.h (named_put/get/list/delete, under the names
 * store_tool_* and store_agent_class_*): user-defined tools and custom agent classes. One
 * contract run against both backends, as test_store_memory.c does: the same tests as a group
 * on a SQLite file and as a group on a throwaway PostgreSQL cluster (scripts/pg-cluster.sh).
 * Each test starts from an empty, freshly migrated database and closes what it opened.
 * Times are fixed numbers given as now_ms, never the clock.
 *
 * Plus the upgrade of a version-3 database (the catalog tables dropped behind the store's
 * back and the version row removed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "store/store.h"

/* 2025-11-24T16:00:00.000Z: every test's "now". */
#define T0 1764000000000LL


/* ---- backends -------------------------------------------------------------------------- */

#define BACKENDS_TAG "cat"
#include "backends.h"

/* ---- tests ----------------------------------------------------------------------------- */

#define T1 (T0 + 1000)

static void put_ok(struct store *st, enum store_catalog c, const char *name, const char *def,
                   long long now_ms, bool expect_created)
{
    struct err e = {0};
    bool created = !expect_created;
    if (st->ops->named_put(st, c, name, def, now_ms, &created, &e) != 0)
        fail_msg("put %s: %s", name, err_text(&e));
    assert_int_equal(created, expect_created);
}

static struct store_named *get_ok(struct store *st, enum store_catalog c, const char *name)
{
    struct err e = {0};
    struct store_named *r = NULL;
    if (st->ops->named_get(st, c, name, &r, &e) != 0)
        fail_msg("get %s: %s", name, err_text(&e));
    assert_non_null(r);
    assert_string_equal(r->name, name);
    return r;
}

static void test_empty(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    struct store_named_list l = {.n = 99};
    assert_int_equal(store_tool_list(st, &l, &e), 0);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    struct store_named *r = (struct store_named *)&r;
    assert_int_equal(store_tool_get(st, "nope", &r, &e), ERR_NOT_FOUND);
    assert_null(r);
    assert_string_equal(e.msg, "tool 'nope' not found");
    assert_int_equal(store_agent_class_delete(st, "nope", &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "agent class 'nope' not found");
}

static void test_put_get_replace(void **state)
{
    struct store *st = *state;
    bool created = false;
    struct err e = {0};
    assert_int_equal(store_tool_put(st, "weather", "{\"v\":1}", T0, &created, &e), 0);
    assert_true(created);
    struct store_named *r = get_ok(st, STORE_TOOLS, "weather");
    assert_string_equal(r->definition, "{\"v\":1}");
    assert_string_equal(r->created_at, "2025-11-24T16:00:00.000Z");
    assert_string_equal(r->updated_at, "2025-11-24T16:00:00.000Z");
    store_named_free(r);

    /* A replace keeps created_at and moves updated_at. */
    assert_int_equal(store_tool_put(st, "weather", "{\"v\":2}", T1, &created, &e), 0);
    assert_false(created);
    r = get_ok(st, STORE_TOOLS, "weather");
    assert_string_equal(r->definition, "{\"v\":2}");
    assert_string_equal(r->created_at, "2025-11-24T16:00:00.000Z");
    assert_string_equal(r->updated_at, "2025-11-24T16:00:01.000Z");
    store_named_free(r);

    /* created may be NULL. */
    assert_int_equal(store_tool_put(st, "weather", "{\"v\":3}", T1, NULL, &e), 0);
}

static void test_list_order(void **state)
{
    struct store *st = *state;
    /* Byte order, not the locale's: upper case before lower case, '-' before digits. */
    put_ok(st, STORE_TOOLS, "b", "{}", T0, true);
    put_ok(st, STORE_TOOLS, "a-1", "{}", T0, true);
    put_ok(st, STORE_TOOLS, "Z", "{}", T0, true);
    put_ok(st, STORE_TOOLS, "a1", "{\"x\":\"\\u00e9t\\u00e9\"}", T1, true);
    struct err e = {0};
    struct store_named_list l = {0};
    assert_int_equal(store_tool_list(st, &l, &e), 0);
    assert_int_equal(l.n, 4);
    assert_string_equal(l.items[0]->name, "Z");
    assert_string_equal(l.items[1]->name, "a-1");
    assert_string_equal(l.items[2]->name, "a1");
    assert_string_equal(l.items[3]->name, "b");
    assert_string_equal(l.items[2]->definition, "{\"x\":\"\\u00e9t\\u00e9\"}");
    assert_string_equal(l.items[2]->created_at, "2025-11-24T16:00:01.000Z");
    store_named_list_cleanup(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    store_named_list_cleanup(NULL);
}

static void test_delete(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    put_ok(st, STORE_TOOLS, "t", "{}", T0, true);
    assert_int_equal(store_tool_delete(st, "t", &e), 0);
    struct store_named *r = NULL;
    assert_int_equal(store_tool_get(st, "t", &r, &e), ERR_NOT_FOUND);
    assert_int_equal(store_tool_delete(st, "t", &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "tool 't' not found");
    /* Put again after a delete: a new row. */
    put_ok(st, STORE_TOOLS, "t", "{}", T1, true);
    r = get_ok(st, STORE_TOOLS, "t");
    assert_string_equal(r->created_at, "2025-11-24T16:00:01.000Z");
    store_named_free(r);
}

static void test_catalogs_are_separate(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    put_ok(st, STORE_TOOLS, "same", "{\"kind\":\"tool\"}", T0, true);
    put_ok(st, STORE_AGENT_CLASSES, "same", "{\"kind\":\"class\"}", T0, true);
    struct store_named *r = get_ok(st, STORE_AGENT_CLASSES, "same");
    assert_string_equal(r->definition, "{\"kind\":\"class\"}");
    store_named_free(r);
    assert_int_equal(store_agent_class_delete(st, "same", &e), 0);
    r = get_ok(st, STORE_TOOLS, "same");
    assert_string_equal(r->definition, "{\"kind\":\"tool\"}");
    store_named_free(r);
    struct store_named_list l = {0};
    assert_int_equal(store_agent_class_list(st, &l, &e), 0);
    assert_int_equal(l.n, 0);
}

static void test_invalid(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    struct store_named *r = NULL;
    assert_int_equal(store_tool_put(st, NULL, "{}", T0, NULL, &e), ERR_INVALID);
    assert_string_equal(e.msg, "store: a tool needs a name");
    assert_int_equal(store_tool_put(st, "", "{}", T0, NULL, &e), ERR_INVALID);
    assert_int_equal(store_agent_class_put(st, "x", NULL, T0, NULL, &e), ERR_INVALID);
    assert_string_equal(e.msg, "store: agent class 'x' has no definition");
    assert_int_equal(store_tool_get(st, "", &r, &e), ERR_INVALID);
    assert_int_equal(store_tool_delete(st, NULL, &e), ERR_INVALID);
    assert_int_equal(st->ops->named_get(st, (enum store_catalog)7, "x", &r, &e), ERR_INVALID);
    assert_null(r);
}

static void test_large_definition(void **state)
{
    struct store *st = *state;
    size_t n = 300 * 1024;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, 'x', n);
    big[0] = '"';
    big[n - 1] = '"';
    big[n] = '\0';
    put_ok(st, STORE_AGENT_CLASSES, "big", big, T0, true);
    struct store_named *r = get_ok(st, STORE_AGENT_CLASSES, "big");
    assert_string_equal(r->definition, big);
    store_named_free(r);
    free(big);
}

/* A version-3 database (no catalogs) is moved to version 4 and on to the last at open, its
 * rows kept. */
static void test_upgrade_from_v3(void **state)
{
    store_close(*state);
    *state = NULL;
    g_be->exec("DROP TABLE tools; DROP TABLE agent_classes;"
               " DELETE FROM schema_version WHERE version >= 4;"
               /* and migration 5's indexes, under either backend's names */
               " DROP INDEX IF EXISTS jobs_created; DROP INDEX IF EXISTS jobs_created_idx;"
               " DROP INDEX IF EXISTS jobs_crew_created; DROP INDEX IF EXISTS jobs_crew_created_idx;"
               " DROP INDEX IF EXISTS jobs_status_created; DROP INDEX IF EXISTS jobs_status_created_idx;"
               " DROP INDEX IF EXISTS jobs_finished; DROP INDEX IF EXISTS jobs_finished_idx;"
               /* and migration 6's columns and index */
               " DROP INDEX IF EXISTS jobs_idempotency_key;"
               " DROP INDEX IF EXISTS jobs_idempotency_key_idx;"
               " ALTER TABLE jobs DROP COLUMN idempotency_key;"
               " ALTER TABLE jobs DROP COLUMN request_hash;"
               /* and migration 7's tables and columns */
               " DROP TABLE job_events; DROP TABLE webhook_deliveries;"
               " ALTER TABLE jobs DROP COLUMN webhook_url;"
               " ALTER TABLE jobs DROP COLUMN webhook_secret;"
               " ALTER TABLE jobs DROP COLUMN webhook_mask;"
               "INSERT INTO crews (crew_id, name, execution_mode, agent_count, definition, plan,"
               " created_at, updated_at) VALUES ('0b8e7c1a-0000-4000-8000-0000000000c1',"
               " 'old-crew', 'sequential', 1, '{}', '{}', '2025-11-01T00:00:00.001Z',"
               " '2025-11-01T00:00:00.001Z')");
    struct store *st = open_store();
    *state = st;
    struct err e = {0};
    struct store_crew *crew = NULL;
    assert_int_equal(store_crew_get(st, "old-crew", STORE_BY_NAME, &crew, &e), 0);
    store_crew_free(crew);
    put_ok(st, STORE_TOOLS, "t", "{}", T0, true);
    put_ok(st, STORE_AGENT_CLASSES, "c", "{}", T0, true);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest contract[] = {
        T(test_empty),           T(test_put_get_replace),
        T(test_list_order),      T(test_delete),
        T(test_catalogs_are_separate), T(test_invalid),
        T(test_large_definition), T(test_upgrade_from_v3),
    };
    int failed = cmocka_run_group_tests_name("store catalog: sqlite", contract,
                                             sqlite_group_setup, sqlite_group_teardown);
    failed += cmocka_run_group_tests_name("store catalog: postgres", contract, pg_group_setup,
                                          pg_group_teardown);
    return failed;
}
