/*
 * test_store_jobs.c - the job queue of store.h (insert, claim with a lease, renew, release,
 * checkpoints, finish), one contract run against both backends: the same tests as a group on
 * a SQLite file and as a group on a throwaway PostgreSQL cluster (scripts/pg-cluster.sh, as
 * test_store_pg.c starts it). Each test starts from an empty, freshly migrated database and
 * closes what it opened. Times are fixed numbers given as now_ms, never the clock, so lease
 * expiry is exact.
 *
 * Plus what only one backend can show: the upgrade of a version-1 database made by hand
 * (SQLite) or by dropping the job tables (PostgreSQL).
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
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "store/store.h"

/* 2025-11-24T16:00:00.000Z: every test's "now". */
#define T0 1764000000000LL
#define LEASE 30000LL

#define CREW_ID "0b8e7c1a-0000-4000-8000-0000000000c1"
#define MISSING_ID "0b8e7c1a-0000-4000-8000-0000000000ff"

/* ---- backends -------------------------------------------------------------------------- */

#define BACKENDS_TAG "jobs"
#include "backends.h"

/* ---- helpers --------------------------------------------------------------------------- */

static void job_id_of(int i, char out[ID_UUID_LEN])
{
    snprintf(out, ID_UUID_LEN, "0b8e7c1a-0000-4000-8000-%012d", i);
}

/* The index a job_id_of() id was made from. */
static int index_of(const char *job_id)
{
    return (int)strtol(job_id + 24, NULL, 10);
}

/* A job with every insertable field set; strings are literals (the store borrows them). */
static struct store_job job_make(int i)
{
    struct store_job j = {0};
    job_id_of(i, j.job_id);
    snprintf(j.crew_id, sizeof j.crew_id, "%s", CREW_ID);
    j.crew_name = (char *)"research-crew";
    j.execution_mode = (char *)"flow";
    /* Odd spacing and non-ASCII: must come back byte for byte. */
    j.request = (char *)"{ \"query\" : \"r\u00e9sum\u00e9 \u2713\", \"kwargs\":{}}";
    j.definition = (char *)"{\"name\":\"research-crew\",\"agents\":[{\"name\":\"a\"}]}";
    j.plan = (char *)"{\"order\":[\"a\"], \"z\":null}";
    j.metadata = (char *)"{\"user\":\"u1\"}";
    clock_rfc3339(T0 - 60000 + i, j.created_at);
    return j;
}

static void insert_ok(struct store *st, int i)
{
    struct store_job j = job_make(i);
    struct err e = {0};
    if (store_job_insert(st, &j, &e) != 0)
        fail_msg("insert job %d: %s", i, err_text(&e));
}

static struct store_job *get_ok(struct store *st, int i)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    struct store_job *j = NULL;
    struct err e = {0};
    if (store_job_get(st, id, &j, &e) != 0)
        fail_msg("get job %d: %s", i, err_text(&e));
    return j;
}

/* Claims and checks that exactly the jobs `want` (indexes, in order) came back. */
static void claim_is(struct store *st, const char *owner, long long now_ms, size_t max,
                     const int *want, size_t n_want)
{
    struct store_job_batch b = {0};
    struct err e = {0};
    if (store_job_claim(st, owner, now_ms, LEASE, max, &b, &e) != 0)
        fail_msg("claim by %s: %s", owner, err_text(&e));
    if (b.n != n_want) {
        store_job_batch_cleanup(&b);
        fail_msg("claim by %s got %zu jobs, wanted %zu", owner, b.n, n_want);
    }
    for (size_t k = 0; k < n_want; k++) {
        assert_int_equal(index_of(b.items[k]->job_id), want[k]);
        assert_int_equal(b.items[k]->status, STORE_JOB_RUNNING);
    }
    if (n_want == 0)
        assert_null(b.items);
    store_job_batch_cleanup(&b);
}

static void step_put_ok(struct store *st, int i, const char *owner, const char *key,
                        const char *data)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    struct err e = {0};
    if (store_job_step_put(st, id, owner, key, data, NULL, 0, &e) != 0)
        fail_msg("step put %d/%s by %s: %s", i, key, owner, err_text(&e));
}

/* A write that the fence must refuse because `owner` lost the job. */
static void assert_lease_lost(int rc, const struct err *e, int i)
{
    char want[128], id[ID_UUID_LEN];
    job_id_of(i, id);
    snprintf(want, sizeof want, "job '%s' is no longer leased to this instance", id);
    assert_int_equal(rc, ERR_CONFLICT);
    assert_string_equal(e->msg, want);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_insert_get_round_trip(void **state)
{
    struct store *st = *state;
    struct store_job in = job_make(1);
    struct err e = {0};
    assert_int_equal(store_job_insert(st, &in, &e), 0);

    struct store_job *j = get_ok(st, 1);
    assert_string_equal(j->job_id, in.job_id);
    assert_string_equal(j->crew_id, CREW_ID);
    assert_string_equal(j->crew_name, in.crew_name);
    assert_int_equal(j->status, STORE_JOB_PENDING);
    assert_string_equal(j->execution_mode, "flow");
    assert_string_equal(j->request, in.request);
    assert_string_equal(j->definition, in.definition);
    assert_string_equal(j->plan, in.plan);
    assert_string_equal(j->metadata, in.metadata);
    assert_null(j->result);
    assert_null(j->error);
    assert_string_equal(j->created_at, in.created_at);
    assert_string_equal(j->started_at, "");
    assert_string_equal(j->completed_at, "");
    assert_int_equal(j->attempts, 0);
    store_job_free(j);

    /* No metadata is stored as an empty object. */
    struct store_job bare = job_make(2);
    bare.metadata = NULL;
    assert_int_equal(store_job_insert(st, &bare, &e), 0);
    j = get_ok(st, 2);
    assert_string_equal(j->metadata, "{}");
    store_job_free(j);
}

static void test_insert_conflict_and_invalid(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    struct store_job dup = job_make(1);
    dup.crew_name = (char *)"another";
    struct err e = {0};
    assert_int_equal(store_job_insert(st, &dup, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, dup.job_id));

    struct store_job bad = job_make(3);
    bad.result = (char *)"{}";
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3);
    snprintf(bad.started_at, sizeof bad.started_at, "%s", bad.created_at);
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3);
    bad.plan = NULL;
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    assert_int_equal(store_job_insert(st, NULL, &e), ERR_INVALID);

    /* Nothing of the refused inserts was written. */
    struct store_job *j = (struct store_job *)&j;
    char id[ID_UUID_LEN];
    job_id_of(3, id);
    assert_int_equal(store_job_get(st, id, &j, &e), ERR_NOT_FOUND);
    assert_null(j);
    j = get_ok(st, 1);
    assert_string_equal(j->crew_name, "research-crew");
    store_job_free(j);
}

static void test_not_found(void **state)
{
    struct store *st = *state;
    struct store_job *j = (struct store_job *)&j; /* must be reset to NULL */
    struct err e = {0};
    assert_int_equal(store_job_get(st, MISSING_ID, &j, &e), ERR_NOT_FOUND);
    assert_null(j);
    assert_string_equal(e.msg, "job '" MISSING_ID "' not found");
    /* An id that is no UUID is simply absent (PostgreSQL must not try to cast it). */
    assert_int_equal(store_job_get(st, "no-such-job", &j, &e), ERR_NOT_FOUND);
    assert_int_equal(store_job_step_put(st, MISSING_ID, "a", "k", "{}", NULL, 0, &e), ERR_NOT_FOUND);
    assert_int_equal(store_job_step_put(st, "nope", "a", "k", "{}", NULL, 0, &e), ERR_NOT_FOUND);
    assert_int_equal(
        store_job_finish(st, MISSING_ID, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e),
        ERR_NOT_FOUND);
    assert_int_equal(
        store_job_finish(st, MISSING_ID, NULL, STORE_JOB_CANCELLED, NULL, "x", T0, &e),
        ERR_NOT_FOUND);
    struct store_step_list steps = {0};
    assert_int_equal(store_job_steps_get(st, MISSING_ID, &steps, &e), 0);
    assert_int_equal(steps.n, 0);
    assert_null(steps.items);
    assert_int_equal(store_job_steps_get(st, "nope", &steps, &e), 0);
    assert_int_equal(steps.n, 0);
}

static void test_claim_fifo_and_max(void **state)
{
    struct store *st = *state;
    /* Inserted out of created_at order: the queue order is insertion order. */
    for (int i = 5; i >= 1; i--)
        insert_ok(st, i);
    claim_is(st, "a", T0, 0, NULL, 0); /* max 0: nothing, no error */
    claim_is(st, "a", T0, 2, (int[]){5, 4}, 2);
    claim_is(st, "b", T0, 10, (int[]){3, 2, 1}, 3);
    claim_is(st, "b", T0, 10, NULL, 0);

    /* The claim sets running, the lease, started_at from now_ms and attempts; the row comes
     * back with every field. */
    struct store_job_batch b = {0};
    struct err e = {0};
    insert_ok(st, 9);
    assert_int_equal(store_job_claim(st, "c", T0 + 5, LEASE, 4, &b, &e), 0);
    assert_int_equal(b.n, 1);
    struct store_job *j = b.items[0];
    struct store_job want = job_make(9);
    char started[CLOCK_RFC3339_LEN];
    clock_rfc3339(T0 + 5, started);
    assert_string_equal(j->job_id, want.job_id);
    assert_string_equal(j->crew_id, want.crew_id);
    assert_string_equal(j->crew_name, want.crew_name);
    assert_int_equal(j->status, STORE_JOB_RUNNING);
    assert_string_equal(j->execution_mode, want.execution_mode);
    assert_string_equal(j->request, want.request);
    assert_string_equal(j->definition, want.definition);
    assert_string_equal(j->plan, want.plan);
    assert_string_equal(j->metadata, want.metadata);
    assert_null(j->result);
    assert_null(j->error);
    assert_string_equal(j->created_at, want.created_at);
    assert_string_equal(j->started_at, started);
    assert_string_equal(j->completed_at, "");
    assert_int_equal(j->attempts, 1);
    store_job_batch_cleanup(&b);
    assert_int_equal(b.n, 0);
    assert_null(b.items);

    /* get agrees with what the claim returned. */
    j = get_ok(st, 9);
    assert_int_equal(j->status, STORE_JOB_RUNNING);
    assert_string_equal(j->started_at, started);
    assert_int_equal(j->attempts, 1);
    store_job_free(j);

    assert_int_equal(store_job_claim(st, "", T0, LEASE, 1, &b, &e), ERR_INVALID);
    assert_int_equal(store_job_claim(st, "a", T0, 0, 1, &b, &e), ERR_INVALID);
}

static void test_expired_lease_reclaimed(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    insert_ok(st, 2);
    claim_is(st, "a", T0, 1, (int[]){1}, 1);

    /* While a's lease lives, b gets only the pending job; at the deadline itself the
     * lease still holds. */
    claim_is(st, "b", T0 + LEASE - 1, 1, (int[]){2}, 1);
    claim_is(st, "b", T0 + LEASE, 5, NULL, 0);

    /* Expired: b takes job 1 over (attempts 2, started_at of the first run kept), and in
     * queue order before anything newer. */
    insert_ok(st, 3);
    struct store_job_batch b = {0};
    struct err e = {0};
    assert_int_equal(store_job_claim(st, "b", T0 + LEASE + 1, LEASE, 5, &b, &e), 0);
    assert_int_equal(b.n, 2);
    assert_int_equal(index_of(b.items[0]->job_id), 1);
    assert_int_equal(index_of(b.items[1]->job_id), 3);
    char started[CLOCK_RFC3339_LEN];
    clock_rfc3339(T0, started);
    assert_int_equal(b.items[0]->attempts, 2);
    assert_string_equal(b.items[0]->started_at, started);
    assert_int_equal(b.items[1]->attempts, 1);
    store_job_batch_cleanup(&b);

    /* The fence: a lost job 1 and can no longer write to it; b can. */
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    assert_lease_lost(store_job_step_put(st, id, "a", "step-1", "{\"stale\":true}", NULL, 0, &e), &e, 1);
    assert_lease_lost(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e), &e,
                      1);
    step_put_ok(st, 1, "b", "step-1", "{\"fresh\":true}");
    struct store_step_list steps = {0};
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 1);
    assert_string_equal(steps.items[0].data, "{\"fresh\":true}");
    store_step_list_cleanup(&steps);
    assert_int_equal(steps.n, 0);
}

static void test_renew(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    insert_ok(st, 2);
    claim_is(st, "a", T0, 1, (int[]){1}, 1);
    claim_is(st, "b", T0, 1, (int[]){2}, 1);
    struct err e = {0};
    /* a renews at T0 + 20 s: its deadline moves to T0 + 50 s; b's stays at T0 + 30 s. */
    assert_int_equal(store_job_renew(st, "a", T0 + 20000, LEASE, &e), 0);
    claim_is(st, "c", T0 + LEASE + 1, 5, (int[]){2}, 1);
    claim_is(st, "c", T0 + 20000 + LEASE, 5, NULL, 0);
    claim_is(st, "c", T0 + 20000 + LEASE + 1, 5, (int[]){1}, 1);
    /* Renewing with nothing held is not an error. */
    assert_int_equal(store_job_renew(st, "nobody", T0, LEASE, &e), 0);
    assert_int_equal(store_job_renew(st, "a", T0, 0, &e), ERR_INVALID);
}

static void test_release(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    insert_ok(st, 2);
    insert_ok(st, 3);
    claim_is(st, "a", T0, 2, (int[]){1, 2}, 2);
    claim_is(st, "b", T0, 1, (int[]){3}, 1);
    struct err e = {0};
    /* One job first: only that one becomes claimable. */
    char one[ID_UUID_LEN];
    job_id_of(1, one);
    assert_int_equal(store_job_release(st, "a", one, &e), 0);
    claim_is(st, "c", T0 + 1, 5, (int[]){1}, 1);
    assert_int_equal(store_job_release(st, "c", one, &e), 0);
    assert_int_equal(store_job_release(st, "a", NULL, &e), 0);

    /* a's jobs stay running and are claimable at once; b's live lease is untouched. */
    struct store_job *j = get_ok(st, 1);
    assert_int_equal(j->status, STORE_JOB_RUNNING);
    store_job_free(j);
    claim_is(st, "c", T0 + 1, 5, (int[]){1, 2}, 2);
    j = get_ok(st, 2);
    assert_int_equal(j->attempts, 2);
    store_job_free(j);

    /* a let go: its late writes are fenced off. */
    char id[ID_UUID_LEN];
    job_id_of(2, id);
    assert_lease_lost(store_job_step_put(st, id, "a", "k", "{}", NULL, 0, &e), &e, 2);
    assert_int_equal(store_job_release(st, "nobody", NULL, &e), 0);
}

static void test_steps(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    insert_ok(st, 2);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct err e = {0};

    /* A pending job has no owner yet: nobody may checkpoint it. */
    assert_lease_lost(store_job_step_put(st, id, "a", "k", "{}", NULL, 0, &e), &e, 1);

    claim_is(st, "a", T0, 2, (int[]){1, 2}, 2);
    step_put_ok(st, 1, "a", "agent:writer", "{\"n\":1}");
    step_put_ok(st, 1, "a", "agent:editor", "{\"n\":2}");
    step_put_ok(st, 1, "a", "agent:critic", "{\"n\":3}");
    step_put_ok(st, 2, "a", "agent:writer", "{\"other\":true}");
    /* Replacing keeps the place of the first write. */
    step_put_ok(st, 1, "a", "agent:writer", "{\"n\":1,\"retry\":\"\u00e9\"}");
    assert_lease_lost(store_job_step_put(st, id, "b", "agent:writer", "{}", NULL, 0, &e), &e, 1);

    struct store_step_list steps = {0};
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 3);
    assert_string_equal(steps.items[0].key, "agent:writer");
    assert_string_equal(steps.items[0].data, "{\"n\":1,\"retry\":\"\u00e9\"}");
    assert_string_equal(steps.items[1].key, "agent:editor");
    assert_string_equal(steps.items[1].data, "{\"n\":2}");
    assert_string_equal(steps.items[2].key, "agent:critic");
    store_step_list_cleanup(&steps);

    job_id_of(2, id);
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 1);
    assert_string_equal(steps.items[0].data, "{\"other\":true}");
    store_step_list_cleanup(&steps);

    /* A finished job keeps its steps and takes no more. */
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e), 0);
    assert_lease_lost(store_job_step_put(st, id, "a", "late", "{}", NULL, 0, &e), &e, 2);
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 1);
    store_step_list_cleanup(&steps);
    assert_int_equal(store_job_step_put(st, id, "a", NULL, "{}", NULL, 0, &e), ERR_INVALID);
}

static void test_finish_with_owner(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    claim_is(st, "a", T0, 1, (int[]){1}, 1);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct err e = {0};
    const char *result = "{\"final_output\":\"done\",\"usage\":{\"tokens\":12}}";
    assert_int_equal(
        store_job_finish(st, id, "a", STORE_JOB_COMPLETED, result, NULL, T0 + 1234, &e), 0);

    struct store_job *j = get_ok(st, 1);
    char started[CLOCK_RFC3339_LEN], completed[CLOCK_RFC3339_LEN];
    clock_rfc3339(T0, started);
    clock_rfc3339(T0 + 1234, completed);
    assert_int_equal(j->status, STORE_JOB_COMPLETED);
    assert_string_equal(j->result, result);
    assert_null(j->error);
    assert_string_equal(j->started_at, started);
    assert_string_equal(j->completed_at, completed);
    assert_int_equal(j->attempts, 1);
    store_job_free(j);

    /* Terminal: no second finish, with or without the owner, and never claimed again. */
    assert_lease_lost(store_job_finish(st, id, "a", STORE_JOB_FAILED, NULL, "x", T0, &e), &e, 1);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, "x", T0, &e),
                     ERR_CONFLICT);
    assert_string_equal(e.msg, "job already completed");
    claim_is(st, "b", T0 + 10 * LEASE, 5, NULL, 0);
    j = get_ok(st, 1);
    assert_int_equal(j->status, STORE_JOB_COMPLETED);
    assert_string_equal(j->result, result);
    store_job_free(j);

    /* Only terminal statuses end a job. */
    insert_ok(st, 2);
    job_id_of(2, id);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_RUNNING, NULL, NULL, T0, &e),
                     ERR_INVALID);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_PENDING, NULL, NULL, T0, &e),
                     ERR_INVALID);
}

static void test_finish_without_owner(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1);
    insert_ok(st, 2);
    struct err e = {0};
    char id[ID_UUID_LEN];

    /* A pending job is cancelled before anyone ran it. */
    job_id_of(1, id);
    assert_int_equal(
        store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, "cancelled by user", T0, &e),
        0);
    struct store_job *j = get_ok(st, 1);
    assert_int_equal(j->status, STORE_JOB_CANCELLED);
    assert_string_equal(j->error, "cancelled by user");
    assert_null(j->result);
    assert_string_equal(j->started_at, "");
    assert_int_equal(j->attempts, 0);
    store_job_free(j);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_FAILED, NULL, "x", T0, &e),
                     ERR_CONFLICT);
    assert_string_equal(e.msg, "job already cancelled");

    /* A running job is ended under its owner's feet (a cancel on another instance): the
     * lease is cleared and the owner's next write is refused. */
    claim_is(st, "a", T0, 5, (int[]){2}, 1);
    job_id_of(2, id);
    assert_int_equal(
        store_job_finish(st, id, NULL, STORE_JOB_FAILED, NULL, "timed out", T0 + 7, &e), 0);
    assert_lease_lost(store_job_step_put(st, id, "a", "k", "{}", NULL, 0, &e), &e, 2);
    assert_lease_lost(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e), &e,
                      2);
    j = get_ok(st, 2);
    assert_int_equal(j->status, STORE_JOB_FAILED);
    assert_string_equal(j->error, "timed out");
    store_job_free(j);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_FAILED, NULL, "x", T0, &e),
                     ERR_CONFLICT);
    assert_string_equal(e.msg, "job already failed");
}


/* Lists with `f`, checks the total and that the page is exactly `want` (indexes, in order). */
static void list_is(struct store *st, const struct store_job_filter *f, long limit, long offset,
                    long total, const int *want, size_t n_want)
{
    struct store_job_page p = {0};
    struct err e = {0};
    if (store_job_list(st, f, limit, offset, &p, &e) != 0)
        fail_msg("list: %s", err_text(&e));
    assert_int_equal(p.total, total);
    if (p.n != n_want) {
        store_job_page_cleanup(&p);
        fail_msg("list got %zu jobs, wanted %zu", p.n, n_want);
    }
    for (size_t k = 0; k < n_want; k++) {
        assert_int_equal(index_of(p.items[k]->job_id), want[k]);
        /* The listing leaves the large texts out. */
        assert_null(p.items[k]->request);
        assert_null(p.items[k]->definition);
        assert_null(p.items[k]->plan);
        assert_null(p.items[k]->result);
        assert_non_null(p.items[k]->crew_name);
        assert_non_null(p.items[k]->metadata);
    }
    if (n_want == 0)
        assert_null(p.items);
    store_job_page_cleanup(&p);
}

#define OTHER_CREW "0b8e7c1a-0000-4000-8000-0000000000c2"

static void test_list(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    /* Jobs 1..5 created in that order; 6 has the same created_at as 5 (insertion order
     * breaks the tie); 3 and 6 belong to another crew. */
    for (int i = 1; i <= 6; i++) {
        struct store_job j = job_make(i);
        if (i == 3 || i == 6)
            snprintf(j.crew_id, sizeof j.crew_id, "%s", OTHER_CREW);
        if (i == 6)
            clock_rfc3339(T0 - 60000 + 5, j.created_at);
        if (store_job_insert(st, &j, &e) != 0)
            fail_msg("insert %d: %s", i, err_text(&e));
    }
    claim_is(st, "a", T0, 2, (int[]){1, 2}, 2);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e), 0);

    struct store_job_filter all = {.any_status = true};
    list_is(st, &all, 100, 0, 6, (int[]){6, 5, 4, 3, 2, 1}, 6);
    list_is(st, &all, 2, 0, 6, (int[]){6, 5}, 2);
    list_is(st, &all, 2, 2, 6, (int[]){4, 3}, 2);
    list_is(st, &all, 2, 5, 6, (int[]){1}, 1);
    list_is(st, &all, 2, 6, 6, NULL, 0);
    list_is(st, &all, 0, 0, 6, NULL, 0);

    struct store_job_filter crew = {.crew_id = CREW_ID, .any_status = true};
    list_is(st, &crew, 100, 0, 4, (int[]){5, 4, 2, 1}, 4);
    struct store_job_filter other = {.crew_id = OTHER_CREW, .any_status = true};
    list_is(st, &other, 1, 1, 2, (int[]){3}, 1);
    struct store_job_filter missing = {.crew_id = MISSING_ID, .any_status = true};
    list_is(st, &missing, 100, 0, 0, NULL, 0);
    struct store_job_filter not_uuid = {.crew_id = "research-crew", .any_status = true};
    list_is(st, &not_uuid, 100, 0, 0, NULL, 0);

    struct store_job_filter pending = {.status = STORE_JOB_PENDING};
    list_is(st, &pending, 100, 0, 4, (int[]){6, 5, 4, 3}, 4);
    struct store_job_filter running = {.status = STORE_JOB_RUNNING};
    list_is(st, &running, 100, 0, 1, (int[]){2}, 1);
    struct store_job_filter done = {.status = STORE_JOB_COMPLETED};
    list_is(st, &done, 100, 0, 1, (int[]){1}, 1);
    struct store_job_filter crew_pending = {.crew_id = CREW_ID, .status = STORE_JOB_PENDING};
    list_is(st, &crew_pending, 100, 0, 2, (int[]){5, 4}, 2);
    struct store_job_filter other_failed = {.crew_id = OTHER_CREW, .status = STORE_JOB_FAILED};
    list_is(st, &other_failed, 100, 0, 0, NULL, 0);

    /* Rows carry their fields. */
    struct store_job_page p = {0};
    assert_int_equal(store_job_list(st, &done, 1, 0, &p, &e), 0);
    assert_int_equal(p.items[0]->status, STORE_JOB_COMPLETED);
    assert_string_equal(p.items[0]->crew_id, CREW_ID);
    assert_string_equal(p.items[0]->crew_name, "research-crew");
    assert_string_equal(p.items[0]->execution_mode, "flow");
    assert_string_equal(p.items[0]->metadata, "{\"user\":\"u1\"}");
    assert_string_not_equal(p.items[0]->started_at, "");
    assert_string_not_equal(p.items[0]->completed_at, "");
    assert_int_equal(p.items[0]->attempts, 1);
    store_job_page_cleanup(&p);
    store_job_page_cleanup(&p); /* twice is harmless */
    store_job_page_cleanup(NULL);

    assert_int_equal(store_job_list(st, &all, -1, 0, &p, &e), ERR_INVALID);
    assert_int_equal(store_job_list(st, &all, 1, -1, &p, &e), ERR_INVALID);
    struct store_job_filter bad = {.status = (enum store_job_status)9};
    assert_int_equal(store_job_list(st, &bad, 1, 0, &p, &e), ERR_INVALID);
    assert_int_equal(p.n, 0);
}

static void test_delete(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    insert_ok(st, 1);
    insert_ok(st, 2);
    insert_ok(st, 3);
    claim_is(st, "a", T0, 2, (int[]){1, 2}, 2);
    step_put_ok(st, 1, "a", "agent:0", "{\"x\":1}");
    step_put_ok(st, 2, "a", "agent:0", "{\"y\":2}");

    /* Live jobs are refused: pending, running. */
    job_id_of(3, id);
    assert_int_equal(store_job_delete(st, id, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "job is pending");
    job_id_of(1, id);
    assert_int_equal(store_job_delete(st, id, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "job is running");

    /* A finished job goes with its checkpoints; the other job's stay. */
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, "{}", "c", T0, &e), 0);
    assert_int_equal(store_job_delete(st, id, &e), 0);
    struct store_job *j = NULL;
    assert_int_equal(store_job_get(st, id, &j, &e), ERR_NOT_FOUND);
    struct store_step_list steps = {0};
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 0);
    store_step_list_cleanup(&steps);
    job_id_of(2, id);
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 1);
    store_step_list_cleanup(&steps);
    /* The owner's late write finds nothing. */
    job_id_of(1, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e),
                     ERR_NOT_FOUND);

    /* Gone, unknown, not a UUID. */
    assert_int_equal(store_job_delete(st, id, &e), ERR_NOT_FOUND);
    char want[80];
    snprintf(want, sizeof want, "job '%s' not found", id);
    assert_string_equal(e.msg, want);
    assert_int_equal(store_job_delete(st, MISSING_ID, &e), ERR_NOT_FOUND);
    assert_int_equal(store_job_delete(st, "nope", &e), ERR_NOT_FOUND);
    assert_int_equal(store_job_delete(st, NULL, &e), ERR_INVALID);
}

static void test_purge(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    for (int i = 1; i <= 7; i++)
        insert_ok(st, i);
    claim_is(st, "a", T0, 6, (int[]){1, 2, 3, 4, 5, 6}, 6);
    for (int i = 1; i <= 6; i++)
        step_put_ok(st, i, "a", "agent:0", "{}");
    /* 1..4 end at T0 + 1000 * i (completed, failed, cancelled, completed); 5 and 6 stay
     * running, 7 pending. */
    enum store_job_status ends[] = {STORE_JOB_COMPLETED, STORE_JOB_FAILED, STORE_JOB_CANCELLED,
                                    STORE_JOB_COMPLETED};
    for (int i = 1; i <= 4; i++) {
        job_id_of(i, id);
        assert_int_equal(store_job_finish(st, id, "a", ends[i - 1], "{}", NULL,
                                          T0 + 1000LL * i, &e),
                         0);
    }
    size_t n = 99;
    /* Nothing ended before T0 + 1000. */
    assert_int_equal(store_job_purge(st, T0 + 1000, 10, &n, &e), 0);
    assert_int_equal(n, 0);
    /* Ended before T0 + 3500: jobs 1..3, in batches of two, oldest end first. */
    assert_int_equal(store_job_purge(st, T0 + 3500, 2, &n, &e), 0);
    assert_int_equal(n, 2);
    struct store_job *j = NULL;
    job_id_of(1, id);
    assert_int_equal(store_job_get(st, id, &j, &e), ERR_NOT_FOUND);
    job_id_of(2, id);
    assert_int_equal(store_job_get(st, id, &j, &e), ERR_NOT_FOUND);
    struct store_step_list steps = {0};
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 0);
    j = get_ok(st, 3);
    store_job_free(j);
    assert_int_equal(store_job_purge(st, T0 + 3500, 2, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_job_purge(st, T0 + 3500, 2, NULL, &e), 0);
    /* Far in the future: job 4 goes; the live ones never do. */
    assert_int_equal(store_job_purge(st, T0 + 86400000LL, 100, &n, &e), 0);
    assert_int_equal(n, 1);
    for (int i = 5; i <= 7; i++) {
        j = get_ok(st, i);
        assert_int_equal(j->status, i == 7 ? STORE_JOB_PENDING : STORE_JOB_RUNNING);
        store_job_free(j);
    }
    job_id_of(5, id);
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 1);
    store_step_list_cleanup(&steps);
    struct store_job_filter all = {.any_status = true};
    list_is(st, &all, 100, 0, 3, (int[]){7, 6, 5}, 3);
    assert_int_equal(store_job_purge(st, T0, 0, &n, &e), ERR_INVALID);
}

#define HASH_A "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
#define HASH_B "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"

/* Idempotency keys: stored and read back, unique among jobs, found by key, freed by a delete
 * or a purge. */
static void test_idempotency_key(void **state)
{
    struct store *st = *state;
    struct err e = {0};
    char id[ID_UUID_LEN];
    /* No key: both NULL, and any number of jobs without one. */
    insert_ok(st, 1);
    insert_ok(st, 2);
    struct store_job *j = get_ok(st, 1);
    assert_null(j->idempotency_key);
    assert_null(j->request_hash);
    store_job_free(j);

    struct store_job k = job_make(3);
    k.idempotency_key = (char *)"order-42 \"x\"";
    k.request_hash = (char *)HASH_A;
    assert_int_equal(store_job_insert(st, &k, &e), 0);
    j = get_ok(st, 3);
    assert_string_equal(j->idempotency_key, "order-42 \"x\"");
    assert_string_equal(j->request_hash, HASH_A);
    store_job_free(j);
    j = NULL;
    assert_int_equal(store_job_find_by_key(st, "order-42 \"x\"", &j, &e), 0);
    assert_string_equal(j->job_id, k.job_id);
    assert_string_equal(j->request, k.request);
    assert_string_equal(j->request_hash, HASH_A);
    store_job_free(j);

    /* The same key on another job: a conflict naming the key, nothing written. */
    struct store_job dup = job_make(4);
    dup.idempotency_key = k.idempotency_key;
    dup.request_hash = (char *)HASH_B;
    assert_int_equal(store_job_insert(st, &dup, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "idempotency_key"));
    job_id_of(4, id);
    assert_int_equal(store_job_get(st, id, &j, &e), ERR_NOT_FOUND);
    /* A duplicate job_id still names the job_id. */
    dup = job_make(3);
    dup.idempotency_key = (char *)"other";
    dup.request_hash = (char *)HASH_B;
    assert_int_equal(store_job_insert(st, &dup, &e), ERR_CONFLICT);
    assert_non_null(strstr(e.msg, "job_id"));
    /* Keys are compared byte for byte. */
    dup = job_make(5);
    dup.idempotency_key = (char *)"ORDER-42 \"x\"";
    dup.request_hash = (char *)HASH_A;
    assert_int_equal(store_job_insert(st, &dup, &e), 0);

    /* A key needs a hash and a hash a key; an empty key is none. */
    struct store_job bad = job_make(6);
    bad.idempotency_key = (char *)"k6";
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(6);
    bad.request_hash = (char *)HASH_A;
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad.idempotency_key = (char *)"";
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);

    /* Unknown key, no key. */
    j = (struct store_job *)&j;
    assert_int_equal(store_job_find_by_key(st, "missing", &j, &e), ERR_NOT_FOUND);
    assert_null(j);
    assert_string_equal(e.msg, "no job with idempotency key 'missing'");
    assert_int_equal(store_job_find_by_key(st, "", &j, &e), ERR_INVALID);
    assert_int_equal(store_job_find_by_key(st, NULL, &j, &e), ERR_INVALID);

    /* The listing carries the key too. */
    struct store_job_filter all = {.any_status = true};
    struct store_job_page p = {0};
    assert_int_equal(store_job_list(st, &all, 100, 0, &p, &e), 0);
    bool seen = false;
    for (size_t i = 0; i < p.n; i++)
        if (index_of(p.items[i]->job_id) == 3) {
            assert_string_equal(p.items[i]->idempotency_key, k.idempotency_key);
            seen = true;
        }
    assert_true(seen);
    store_job_page_cleanup(&p);

    /* Deleting the job frees its key. */
    claim_is(st, "a", T0, 10, (int[]){1, 2, 3, 5}, 4);
    job_id_of(3, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e), 0);
    assert_int_equal(store_job_delete(st, id, &e), 0);
    assert_int_equal(store_job_find_by_key(st, k.idempotency_key, &j, &e), ERR_NOT_FOUND);
    dup = job_make(7);
    dup.idempotency_key = k.idempotency_key;
    dup.request_hash = (char *)HASH_B;
    assert_int_equal(store_job_insert(st, &dup, &e), 0);
    /* And so does a purge. */
    job_id_of(5, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_FAILED, NULL, "x", T0, &e), 0);
    size_t n = 0;
    assert_int_equal(store_job_purge(st, T0 + 1, 10, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(store_job_find_by_key(st, "ORDER-42 \"x\"", &j, &e), ERR_NOT_FOUND);
    dup = job_make(8);
    dup.idempotency_key = (char *)"ORDER-42 \"x\"";
    dup.request_hash = (char *)HASH_B;
    assert_int_equal(store_job_insert(st, &dup, &e), 0);
}

static void test_status_names(void **state)
{
    (void)state;
    const char *names[] = {"pending", "running", "completed", "failed", "cancelled"};
    for (int i = 0; i < 5; i++) {
        enum store_job_status s = STORE_JOB_COMPLETED;
        assert_string_equal(store_job_status_name((enum store_job_status)i), names[i]);
        assert_int_equal(store_job_status_parse(names[i], &s), 0);
        assert_int_equal(s, i);
    }
    enum store_job_status s = STORE_JOB_FAILED;
    assert_null(store_job_status_name((enum store_job_status)5));
    assert_null(store_job_status_name((enum store_job_status)-1));
    assert_int_equal(store_job_status_parse("Pending", &s), ERR_INVALID);
    assert_int_equal(store_job_status_parse("", &s), ERR_INVALID);
    assert_int_equal(store_job_status_parse(NULL, &s), ERR_INVALID);
    assert_int_equal(s, STORE_JOB_FAILED);
    /* The frees accept NULL and empty values. */
    store_job_free(NULL);
    store_job_batch_cleanup(NULL);
    store_step_list_cleanup(NULL);
    struct store_job_batch b = {0};
    store_job_batch_cleanup(&b);
}

static void test_deleted_crew_keeps_jobs(void **state)
{
    struct store *st = *state;
    struct store_crew c = {0};
    snprintf(c.crew_id, sizeof c.crew_id, "%s", CREW_ID);
    c.name = (char *)"research-crew";
    c.execution_mode = (char *)"flow";
    c.definition = (char *)"{}";
    c.plan = (char *)"{}";
    clock_rfc3339(T0, c.created_at);
    clock_rfc3339(T0, c.updated_at);
    struct err e = {0};
    assert_int_equal(store_crew_insert(st, &c, &e), 0);
    insert_ok(st, 1);
    insert_ok(st, 2);
    assert_int_equal(store_crew_delete(st, CREW_ID, &e), 0);

    struct store_job *j = get_ok(st, 1);
    assert_string_equal(j->crew_id, CREW_ID);
    assert_string_equal(j->definition, job_make(1).definition);
    store_job_free(j);
    claim_is(st, "a", T0, 5, (int[]){1, 2}, 2);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    step_put_ok(st, 1, "a", "k", "{}");
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0, &e), 0);
}

/* ---- concurrency: two handles (two connections) claiming one queue ----------------------- */

#define N_RACE_JOBS 200
#define RACE_BATCH 7

struct claimer {
    char owner[16];
    struct store *st;
    pthread_barrier_t *start; /* both threads begin claiming together */
    int claimed[N_RACE_JOBS];
    int n;
    int rc;
    char msg[ERR_MSG_MAX];
};

/* Claims batches until the queue looks empty and finishes each job it got, as a job manager
 * would. No cmocka assertion here (this is not the test's thread): failures are recorded and
 * checked by the main thread. */
static void *claimer_main(void *arg)
{
    struct claimer *c = arg;
    pthread_barrier_wait(c->start);
    for (;;) {
        struct store_job_batch b = {0};
        struct err e = {0};
        c->rc = store_job_claim(c->st, c->owner, T0, LEASE, RACE_BATCH, &b, &e);
        if (c->rc != 0) {
            snprintf(c->msg, sizeof c->msg, "%s", err_text(&e));
            return NULL;
        }
        if (b.n == 0)
            return NULL;
        int prev = -1;
        for (size_t k = 0; k < b.n; k++) {
            int i = index_of(b.items[k]->job_id);
            if (i <= prev || c->n >= N_RACE_JOBS) {
                c->rc = ERR_INTERNAL;
                snprintf(c->msg, sizeof c->msg, "batch out of order or too many jobs");
            } else {
                c->claimed[c->n++] = i;
            }
            prev = i;
            if (c->rc == 0 &&
                (c->rc = store_job_finish(c->st, b.items[k]->job_id, c->owner,
                                          STORE_JOB_COMPLETED, "{}", NULL, T0, &e)) != 0)
                snprintf(c->msg, sizeof c->msg, "finish: %s", err_text(&e));
        }
        store_job_batch_cleanup(&b);
        if (c->rc != 0)
            return NULL;
        /* Time between claims, as a loop turn has: without it SQLite's busy handler, which
         * sleeps before retrying, lets whichever connection holds the lock first drain the
         * whole queue, and the race would show nothing. */
        nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    }
}

static void test_concurrent_claimers(void **state)
{
    struct store *st = *state;
    for (int i = 0; i < N_RACE_JOBS; i++)
        insert_ok(st, i);
    /* Static, so that a failed assertion (a longjmp) leaks nothing. */
    static struct claimer cs[2];
    memset(cs, 0, sizeof cs);
    pthread_t threads[2];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    for (int k = 0; k < 2; k++) {
        snprintf(cs[k].owner, sizeof cs[k].owner, "claimer-%d", k);
        cs[k].st = open_store();
        cs[k].start = &start;
    }
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&threads[k], NULL, claimer_main, &cs[k]), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(threads[k], NULL), 0);
    pthread_barrier_destroy(&start);
    for (int k = 0; k < 2; k++)
        store_close(cs[k].st);

    int seen[N_RACE_JOBS] = {0};
    for (int k = 0; k < 2; k++) {
        if (cs[k].rc != 0)
            fail_msg("%s: %s", cs[k].owner, cs[k].msg);
        for (int m = 0; m < cs[k].n; m++)
            seen[cs[k].claimed[m]]++;
    }
    for (int i = 0; i < N_RACE_JOBS; i++) {
        if (seen[i] != 1)
            fail_msg("job %d claimed %d times", i, seen[i]);
    }
    /* How the work was shared depends on scheduling; shown, not asserted. */
    print_message("%s: claimer-0 took %d jobs, claimer-1 took %d\n", g_be->kind, cs[0].n,
                  cs[1].n);
    assert_int_equal(cs[0].n + cs[1].n, N_RACE_JOBS);
    claim_is(st, "late", T0, N_RACE_JOBS, NULL, 0);
}

/* ---- migrations -------------------------------------------------------------------------- */

/* The version-1 SQLite schema exactly as the crewd of that version made it. */
static const char SQLITE_V1[] =
    "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL);"
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
    "CREATE INDEX crews_created ON crews(created_at);"
    "INSERT INTO schema_version VALUES (1, '2025-11-01T00:00:00.000Z');"
    "PRAGMA journal_mode = WAL;"
    "INSERT INTO crews VALUES ('" CREW_ID "', 'old-crew', NULL, 'sequential', 1,"
    " '{\"name\":\"old-crew\"}', '{}', '2025-11-01T00:00:00.001Z', '2025-11-01T00:00:00.001Z');";

/* Opens a version-1 database with this build: every later migration runs, the crew survives,
 * and the job queue and its events work. */
static void upgrade_check(void)
{
    struct store *st = open_store();
    struct store_crew *c = NULL;
    struct err e = {0};
    assert_int_equal(store_crew_get(st, "old-crew", STORE_BY_NAME, &c, &e), 0);
    assert_string_equal(c->crew_id, CREW_ID);
    assert_string_equal(c->created_at, "2025-11-01T00:00:00.001Z");
    store_crew_free(c);
    insert_ok(st, 1);
    claim_is(st, "a", T0, 1, (int[]){1}, 1);
    step_put_ok(st, 1, "a", "k", "{}");
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    long long seq = 0;
    struct store_event_in ev = {STORE_EV_AGENT_STARTED, "{}"};
    assert_int_equal(store_event_append(st, id, "a", &ev, T0, &seq, &e), 0);
    assert_int_equal(seq, 1);
    store_close(st);
    /* A second open migrates nothing and keeps everything. */
    st = open_store();
    struct store_job *j = get_ok(st, 1);
    assert_int_equal(j->status, STORE_JOB_RUNNING);
    assert_int_equal(j->webhook_mask, 0);
    store_job_free(j);
    struct store_event_list l = {0};
    assert_int_equal(store_event_list(st, id, 0, 10, &l, NULL, &e), 0);
    assert_int_equal(l.n, 1);
    store_event_list_cleanup(&l);
    store_close(st);
}

static void test_upgrade_from_v1_sqlite(void **state)
{
    store_close(*state);
    *state = NULL;
    g_be->reset();
    sqlite_exec(SQLITE_V1);
    upgrade_check();
    /* The version rows, checked behind the store's back. */
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_open_v2(g_sqlite_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT group_concat(version) || '/' ||"
                                        " (SELECT applied_at FROM schema_version WHERE version = 1)"
                                        " FROM schema_version",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0),
                        "1,2,3,4,5,6,7/2025-11-01T00:00:00.000Z");
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* PostgreSQL: a version-2 database taken back to exactly what version 1 left (the job tables
 * and the version row removed), with a crew in it. */
static void test_upgrade_from_v1_pg(void **state)
{
    store_close(*state);
    *state = NULL;
    pg_exec("DROP TABLE jobs, job_steps, memory, tools, agent_classes, job_events,"
            " webhook_deliveries; DELETE FROM schema_version WHERE version >= 2;"
            "INSERT INTO crews (crew_id, name, execution_mode, agent_count, definition, plan,"
            " created_at, updated_at) VALUES ('" CREW_ID "', 'old-crew', 'sequential', 1,"
            " '{}', '{}', '2025-11-01T00:00:00.001Z', '2025-11-01T00:00:00.001Z')");
    upgrade_check();
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest contract_sqlite[] = {
        T(test_insert_get_round_trip),
        T(test_insert_conflict_and_invalid),
        T(test_not_found),
        T(test_claim_fifo_and_max),
        T(test_expired_lease_reclaimed),
        T(test_renew),
        T(test_release),
        T(test_steps),
        T(test_finish_with_owner),
        T(test_finish_without_owner),
        T(test_list),
        T(test_delete),
        T(test_purge),
        T(test_idempotency_key),
        T(test_status_names),
        T(test_deleted_crew_keeps_jobs),
        T(test_concurrent_claimers),
        T(test_upgrade_from_v1_sqlite),
    };
    const struct CMUnitTest contract_pg[] = {
        T(test_insert_get_round_trip),
        T(test_insert_conflict_and_invalid),
        T(test_not_found),
        T(test_claim_fifo_and_max),
        T(test_expired_lease_reclaimed),
        T(test_renew),
        T(test_release),
        T(test_steps),
        T(test_finish_with_owner),
        T(test_finish_without_owner),
        T(test_list),
        T(test_delete),
        T(test_purge),
        T(test_idempotency_key),
        T(test_deleted_crew_keeps_jobs),
        T(test_concurrent_claimers),
        T(test_upgrade_from_v1_pg),
    };
    int failed = cmocka_run_group_tests_name("store jobs: sqlite", contract_sqlite,
                                             sqlite_group_setup, sqlite_group_teardown);
    failed += cmocka_run_group_tests_name("store jobs: postgres", contract_pg, pg_group_setup,
                                          pg_group_teardown);
    return failed;
}
