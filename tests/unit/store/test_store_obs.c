/*
 * test_store_obs.c - the store ops behind /metrics and /healthz (job_counts,
 * delivery_pending_count, ping), one contract run against both backends as the other store
 * tests do (backends.h): a group on a SQLite file and a group on a throwaway PostgreSQL
 * cluster. Each test starts from an empty, freshly migrated database and closes what it
 * opened. Deliveries are inserted behind the store's back, so these tests do not depend on
 * event_append.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "store/store.h"

/* 2025-11-24T16:00:00.000Z: every test's "now". */
#define T0 1764000000000LL
#define LEASE 30000LL
#define CREW_ID "0b8e7c1a-0000-4000-8000-0000000000c1"

/* ---- backends -------------------------------------------------------------------------- */

#define BACKENDS_TAG "obs"
/* Migration 7's tables too, in their own statement (a reset that already names them stays
 * valid). */
#define BACKENDS_PG_RESET_EXTRA ";DROP TABLE IF EXISTS job_events, webhook_deliveries"
#include "backends.h"

/* ---- helpers --------------------------------------------------------------------------- */

static void job_id_of(int i, char out[ID_UUID_LEN])
{
    snprintf(out, ID_UUID_LEN, "0b8e7c1a-0000-4000-8000-%012d", i);
}

static void insert_ok(struct store *st, int i)
{
    struct store_job j = {0};
    job_id_of(i, j.job_id);
    snprintf(j.crew_id, sizeof j.crew_id, "%s", CREW_ID);
    j.crew_name = (char *)"obs-crew";
    j.execution_mode = (char *)"sequential";
    j.request = (char *)"{\"query\":\"q\"}";
    j.definition = (char *)"{\"name\":\"obs-crew\",\"agents\":[{\"name\":\"a\"}]}";
    j.plan = (char *)"{}";
    j.metadata = (char *)"{}";
    clock_rfc3339(T0 - 60000 + i, j.created_at);
    struct err e = {0};
    if (store_job_insert(st, &j, &e) != 0)
        fail_msg("insert job %d: %s", i, err_text(&e));
}

static void finish_ok(struct store *st, int i, const char *owner, enum store_job_status s)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    struct err e = {0};
    if (store_job_finish(st, id, owner, s, NULL, s == STORE_JOB_COMPLETED ? NULL : "x", T0, &e) !=
        0)
        fail_msg("finish job %d: %s", i, err_text(&e));
}

static void counts_are(struct store *st, long pending, long running, long completed, long failed,
                       long cancelled)
{
    long c[5] = {-1, -1, -1, -1, -1};
    struct err e = {0};
    if (store_job_counts(st, c, &e) != 0)
        fail_msg("job_counts: %s", err_text(&e));
    assert_int_equal(c[STORE_JOB_PENDING], pending);
    assert_int_equal(c[STORE_JOB_RUNNING], running);
    assert_int_equal(c[STORE_JOB_COMPLETED], completed);
    assert_int_equal(c[STORE_JOB_FAILED], failed);
    assert_int_equal(c[STORE_JOB_CANCELLED], cancelled);
}

static long pending_deliveries(struct store *st)
{
    long n = -1;
    struct err e = {0};
    if (store_delivery_pending_count(st, &n, &e) != 0)
        fail_msg("delivery_pending_count: %s", err_text(&e));
    return n;
}

/* A delivery row of job i, event seq, in `state`, written behind the store's back. */
static void delivery_row(int i, int seq, const char *state)
{
    char id[ID_UUID_LEN], sql[512];
    job_id_of(i, id);
    snprintf(sql, sizeof sql,
             "INSERT INTO webhook_deliveries (job_id, seq, type, state, next_attempt_ms,"
             " created_at, updated_at) VALUES ('%s', %d, 'job.completed', '%s', 0,"
             " '2025-11-24T16:00:00.000Z', '2025-11-24T16:00:00.000Z')",
             id, seq, state);
    g_be->exec(sql);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_counts_empty(void **state)
{
    struct store *st = *state;
    counts_are(st, 0, 0, 0, 0, 0);
    assert_int_equal(pending_deliveries(st), 0);
}

static void test_job_counts_by_status(void **state)
{
    struct store *st = *state;
    for (int i = 1; i <= 6; i++)
        insert_ok(st, i);
    counts_are(st, 6, 0, 0, 0, 0);
    struct store_job_batch b = {0};
    struct err e = {0};
    if (store_job_claim(st, "owner-a", T0, LEASE, 3, &b, &e) != 0)
        fail_msg("claim: %s", err_text(&e));
    assert_int_equal(b.n, 3); /* jobs 1, 2, 3 */
    store_job_batch_cleanup(&b);
    counts_are(st, 3, 3, 0, 0, 0);
    finish_ok(st, 1, "owner-a", STORE_JOB_COMPLETED);
    finish_ok(st, 2, "owner-a", STORE_JOB_FAILED);
    finish_ok(st, 4, NULL, STORE_JOB_CANCELLED); /* a pending job cancelled */
    counts_are(st, 2, 1, 1, 1, 1);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    if (store_job_delete(st, id, &e) != 0)
        fail_msg("delete: %s", err_text(&e));
    counts_are(st, 2, 1, 0, 1, 1);
}

static void test_delivery_pending_count(void **state)
{
    struct store *st = *state;
    delivery_row(1, 1, "pending");
    delivery_row(1, 2, "delivered");
    delivery_row(1, 3, "pending");
    delivery_row(2, 1, "failed");
    assert_int_equal(pending_deliveries(st), 2);
    g_be->exec("UPDATE webhook_deliveries SET state = 'delivered'");
    assert_int_equal(pending_deliveries(st), 0);
}

static void test_ping(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    for (int i = 0; i < 3; i++)
        assert_int_equal(store_ping(st, &e), 0);
}

/* SQLite: a ping reads through the connection, so a database that lost its tables behind
 * the store's back fails it with the store's message. */
static void test_ping_fails_sqlite(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    g_be->exec("DROP TABLE schema_version");
    assert_int_equal(store_ping(st, &e), ERR_STORE);
    assert_non_null(strstr(e.msg, "store: "));
    assert_non_null(strstr(e.msg, "schema_version"));
}

/* PostgreSQL: a ping is a round trip. The server ending our session fails at most one ping
 * (libpq learns of it then), and the next one reconnects. */
static void test_ping_reconnects_pg(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    assert_int_equal(store_ping(st, &e), 0);
    g_be->exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE pid <> pg_backend_pid() AND datname = current_database()");
    int first = store_ping(st, &e);
    if (first != 0) {
        assert_int_equal(first, ERR_STORE);
        assert_non_null(strstr(e.msg, "store: postgres: "));
    }
    e = (struct err){0};
    if (store_ping(st, &e) != 0)
        fail_msg("ping after reconnect: %s", err_text(&e));
    counts_are(st, 0, 0, 0, 0, 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {
        T(test_counts_empty), T(test_job_counts_by_status), T(test_delivery_pending_count),
        T(test_ping),         T(test_ping_fails_sqlite),
    };
    const struct CMUnitTest pg_tests[] = {
        T(test_counts_empty), T(test_job_counts_by_status), T(test_delivery_pending_count),
        T(test_ping),         T(test_ping_reconnects_pg),
    };
    int failed = cmocka_run_group_tests_name("store obs: sqlite", sqlite_tests,
                                             sqlite_group_setup, sqlite_group_teardown);
    failed += cmocka_run_group_tests_name("store obs: postgres", pg_tests, pg_group_setup,
                                          pg_group_teardown);
    return failed;
}
