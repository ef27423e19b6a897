/*
 * test_store_events.c - a job's events and its webhook deliveries (store.h): dense numbering,
 * paging, the terminal event of job_finish, the fences, the delivery lease. One contract run
 * against both backends, as test_store_jobs.c: a group on a SQLite file and a group on a
 * throwaway PostgreSQL cluster, each test on an empty, freshly migrated database. Times are
 * fixed numbers given as now_ms, never the clock, so due times and leases are exact.
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
#include "core/id.h"
#include "store/store.h"

/* 2025-11-24T16:00:00.000Z: every test's "now". */
#define T0 1764000000000LL
#define LEASE 30000LL

#define CREW_ID "0b8e7c1a-0000-4000-8000-0000000000c1"
#define MISSING_ID "0b8e7c1a-0000-4000-8000-0000000000ff"
#define HOOK_URL "https://hooks.example/crewd?x=1"
#define HOOK_SECRET "s3cr\u00e9t"

/* ---- backends -------------------------------------------------------------------------- */

#define BACKENDS_TAG "events"
#include "backends.h"

/* ---- helpers --------------------------------------------------------------------------- */

static void job_id_of(int i, char out[ID_UUID_LEN])
{
    snprintf(out, ID_UUID_LEN, "0b8e7c1a-0000-4000-8000-%012d", i);
}

/* A job with every insertable field set and the webhook `mask` (0: none); strings are
 * literals (the store borrows them). */
static struct store_job job_make(int i, long mask)
{
    struct store_job j = {0};
    job_id_of(i, j.job_id);
    snprintf(j.crew_id, sizeof j.crew_id, "%s", CREW_ID);
    j.crew_name = (char *)"research-crew";
    j.execution_mode = (char *)"sequential";
    j.request = (char *)"{\"query\":\"q\"}";
    j.definition = (char *)"{}";
    j.plan = (char *)"{}";
    clock_rfc3339(T0 - 60000 + i, j.created_at);
    if (mask != 0) {
        j.webhook_url = (char *)HOOK_URL;
        j.webhook_secret = (char *)HOOK_SECRET;
        j.webhook_mask = mask;
    }
    return j;
}

static void insert_ok(struct store *st, int i, long mask)
{
    struct store_job j = job_make(i, mask);
    struct err e = {0};
    if (store_job_insert(st, &j, &e) != 0)
        fail_msg("insert job %d: %s", i, err_text(&e));
}

/* Claims exactly the one pending job for `owner`. */
static void claim_one(struct store *st, const char *owner, long long now_ms)
{
    struct store_job_batch b = {0};
    struct err e = {0};
    if (store_job_claim(st, owner, now_ms, LEASE, 1, &b, &e) != 0)
        fail_msg("claim: %s", err_text(&e));
    assert_int_equal(b.n, 1);
    store_job_batch_cleanup(&b);
}

static long long append_ok(struct store *st, int i, const char *owner, enum store_event_type type,
                           const char *data, long long now_ms)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    struct store_event_in ev = {type, data};
    long long seq = -1;
    struct err e = {0};
    if (store_event_append(st, id, owner, &ev, now_ms, &seq, &e) != 0)
        fail_msg("append to job %d: %s", i, err_text(&e));
    return seq;
}

/* The events of job i after `after`, up to `limit`; the status through *status. */
static struct store_event_list list_ok(struct store *st, int i, long long after, size_t limit,
                                       enum store_job_status *status)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    struct store_event_list l = {0};
    struct err e = {0};
    if (store_event_list(st, id, after, limit, &l, status, &e) != 0)
        fail_msg("event list of job %d: %s", i, err_text(&e));
    return l;
}

/* How many events job i has. */
static size_t n_events(struct store *st, int i)
{
    struct store_event_list l = list_ok(st, i, 0, 1000, NULL);
    size_t n = l.n;
    store_event_list_cleanup(&l);
    return n;
}

static struct store_delivery_list deliveries_ok(struct store *st, int i)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    struct store_delivery_list l = {0};
    struct err e = {0};
    if (store_delivery_list(st, id, &l, &e) != 0)
        fail_msg("delivery list of job %d: %s", i, err_text(&e));
    return l;
}

/* Claims for `owner` and checks that exactly the deliveries `want_seqs` (of job i, in
 * order) came back; returns the list for more checks. */
static struct store_delivery_list claim_is(struct store *st, const char *owner, long long now_ms,
                                           size_t max, int i, const long long *want_seqs,
                                           size_t n_want)
{
    struct store_delivery_list l = {0};
    struct err e = {0};
    if (store_delivery_claim(st, owner, now_ms, LEASE, max, &l, &e) != 0)
        fail_msg("delivery claim by %s: %s", owner, err_text(&e));
    if (l.n != n_want) {
        store_delivery_list_cleanup(&l);
        fail_msg("delivery claim by %s got %zu, wanted %zu", owner, l.n, n_want);
    }
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    for (size_t k = 0; k < n_want; k++) {
        assert_string_equal(l.items[k]->job_id, id);
        assert_int_equal(l.items[k]->seq, want_seqs[k]);
    }
    return l;
}

static int done(struct store *st, int i, long long seq, const char *owner,
                enum store_delivery_state state, long long next_ms, int http, const char *error,
                long long now_ms, struct err *e)
{
    char id[ID_UUID_LEN];
    job_id_of(i, id);
    return store_delivery_done(st, id, seq, owner, state, 0, next_ms, http, error, now_ms, e);
}

/* ---- events ---------------------------------------------------------------------------- */

static void test_dense_seq_and_paging(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, 0);
    claim_one(st, "a", T0);
    const char *data[5] = {"{\"n\":1}", "{\"n\":2, \"t\":\"\u00e9\"}", "{}", "{\"n\":4}",
                           "{\"n\":5}"};
    for (int k = 0; k < 5; k++)
        assert_int_equal(append_ok(st, 1, "a", STORE_EV_AGENT_DELTA, data[k], T0 + k), k + 1);
    /* seq may be NULL. */
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct err e = {0};
    struct store_event_in ev = {STORE_EV_AGENT_COMPLETED, "{\"n\":6}"};
    assert_int_equal(store_event_append(st, id, "a", &ev, T0 + 5, NULL, &e), 0);

    enum store_job_status status = STORE_JOB_FAILED;
    struct store_event_list l = list_ok(st, 1, 0, 100, &status);
    assert_int_equal(status, STORE_JOB_RUNNING);
    assert_int_equal(l.n, 6);
    for (size_t k = 0; k < l.n; k++) {
        char when[CLOCK_RFC3339_LEN];
        clock_rfc3339(T0 + (long long)k, when);
        assert_int_equal(l.items[k].seq, (long long)k + 1);
        assert_string_equal(l.items[k].created_at, when);
        if (k < 5) {
            assert_int_equal(l.items[k].type, STORE_EV_AGENT_DELTA);
            assert_string_equal(l.items[k].data, data[k]);
        }
    }
    assert_int_equal(l.items[5].type, STORE_EV_AGENT_COMPLETED);
    store_event_list_cleanup(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);

    /* Paging: after_seq is exclusive, limit caps the page. */
    l = list_ok(st, 1, 2, 2, NULL);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].seq, 3);
    assert_int_equal(l.items[1].seq, 4);
    store_event_list_cleanup(&l);
    l = list_ok(st, 1, 4, 100, NULL);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].seq, 5);
    store_event_list_cleanup(&l);
    l = list_ok(st, 1, 6, 100, &status);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    assert_int_equal(status, STORE_JOB_RUNNING);

    /* A job with no events: an empty list and its status. */
    insert_ok(st, 2, 0);
    l = list_ok(st, 2, 0, 10, &status);
    assert_int_equal(l.n, 0);
    assert_int_equal(status, STORE_JOB_PENDING);

    /* Numbers are per job. */
    assert_int_equal(append_ok(st, 2, NULL, STORE_EV_JOB_STARTED, "{\"attempt\":1}", T0), 1);
}

static void test_list_and_append_invalid(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, 0);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct err e = {0};
    struct store_event_list l = {0};
    assert_int_equal(store_event_list(st, MISSING_ID, 0, 10, &l, NULL, &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "job '" MISSING_ID "' not found");
    assert_int_equal(store_event_list(st, "no-uuid", 0, 10, &l, NULL, &e), ERR_NOT_FOUND);
    assert_int_equal(store_event_list(st, id, 0, 0, &l, NULL, &e), ERR_INVALID);
    assert_int_equal(store_event_list(st, NULL, 0, 10, &l, NULL, &e), ERR_INVALID);

    struct store_event_in ev = {STORE_EV_AGENT_STARTED, "{}"};
    assert_int_equal(store_event_append(st, MISSING_ID, NULL, &ev, T0, NULL, &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "job '" MISSING_ID "' not found");
    assert_int_equal(store_event_append(st, "no-uuid", NULL, &ev, T0, NULL, &e), ERR_NOT_FOUND);
    assert_int_equal(store_event_append(st, id, NULL, NULL, T0, NULL, &e), ERR_INVALID);
    ev.data = NULL;
    assert_int_equal(store_event_append(st, id, NULL, &ev, T0, NULL, &e), ERR_INVALID);
    ev = (struct store_event_in){STORE_EV_COUNT_, "{}"};
    assert_int_equal(store_event_append(st, id, NULL, &ev, T0, NULL, &e), ERR_INVALID);
    ev.type = (enum store_event_type) - 1;
    assert_int_equal(store_event_append(st, id, NULL, &ev, T0, NULL, &e), ERR_INVALID);
    assert_int_equal(n_events(st, 1), 0);
}

static void test_append_fenced_on_owner(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, STORE_EV_ALL_MASK);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct err e = {0};
    struct store_event_in ev = {STORE_EV_AGENT_STARTED, "{}"};
    /* Pending: nobody owns it yet. */
    assert_int_equal(store_event_append(st, id, "a", &ev, T0, NULL, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "job '0b8e7c1a-0000-4000-8000-000000000001' is no longer leased"
                               " to this instance");
    claim_one(st, "a", T0);
    assert_int_equal(store_event_append(st, id, "b", &ev, T0, NULL, &e), ERR_CONFLICT);
    assert_int_equal(append_ok(st, 1, "a", STORE_EV_AGENT_STARTED, "{}", T0), 1);
    /* a's lease expires and b takes the job over: a is fenced off, b and "no owner" are not. */
    claim_one(st, "b", T0 + LEASE + 1);
    assert_int_equal(store_event_append(st, id, "a", &ev, T0, NULL, &e), ERR_CONFLICT);
    assert_int_equal(append_ok(st, 1, "b", STORE_EV_JOB_STARTED, "{\"attempt\":2}", T0), 2);
    assert_int_equal(append_ok(st, 1, NULL, STORE_EV_AGENT_DELTA, "{}", T0), 3);
    /* Refused appends wrote no event and no delivery. */
    assert_int_equal(n_events(st, 1), 3);
    struct store_delivery_list d = deliveries_ok(st, 1);
    assert_int_equal(d.n, 3);
    store_delivery_list_cleanup(&d);
}

static void assert_terminal(struct store *st, int i, enum store_event_type type, const char *data,
                            enum store_job_status status)
{
    enum store_job_status now = STORE_JOB_PENDING;
    struct store_event_list l = list_ok(st, i, 0, 100, &now);
    assert_int_equal(now, status);
    size_t n_terminal = 0;
    for (size_t k = 0; k < l.n; k++)
        if (STORE_EV_BIT(l.items[k].type) & STORE_EV_TERMINAL_MASK)
            n_terminal++;
    assert_int_equal(n_terminal, 1);
    assert_true(l.n >= 1);
    assert_int_equal(l.items[l.n - 1].type, type);
    assert_string_equal(l.items[l.n - 1].data, data);
    store_event_list_cleanup(&l);
}

static void test_finish_appends_terminal_event(void **state)
{
    struct store *st = *state;
    char id[ID_UUID_LEN];
    struct err e = {0};
    for (int i = 1; i <= 4; i++)
        insert_ok(st, i, 0);
    claim_one(st, "a", T0);
    claim_one(st, "a", T0);
    claim_one(st, "a", T0);
    append_ok(st, 1, "a", STORE_EV_AGENT_COMPLETED, "{}", T0);

    job_id_of(1, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0 + 1, &e), 0);
    assert_terminal(st, 1, STORE_EV_JOB_COMPLETED, "{\"status\":\"completed\",\"error\":null}",
                    STORE_JOB_COMPLETED);
    struct store_event_list l = list_ok(st, 1, 1, 10, NULL);
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339(T0 + 1, when);
    assert_int_equal(l.items[0].seq, 2);
    assert_string_equal(l.items[0].created_at, when);
    store_event_list_cleanup(&l);

    /* The error is escaped as JSON. */
    job_id_of(2, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_FAILED, NULL,
                                      "tool \"x\" said:\nno \u00e9", T0, &e),
                     0);
    assert_terminal(st, 2, STORE_EV_JOB_FAILED,
                    "{\"status\":\"failed\",\"error\":\"tool \\\"x\\\" said:\\nno \u00e9\"}",
                    STORE_JOB_FAILED);

    /* Cancelled without an owner, running (job 3) or still pending (job 4). */
    job_id_of(3, id);
    assert_int_equal(
        store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, "cancelled by user", T0, &e), 0);
    assert_terminal(st, 3, STORE_EV_JOB_CANCELLED,
                    "{\"status\":\"cancelled\",\"error\":\"cancelled by user\"}",
                    STORE_JOB_CANCELLED);
    job_id_of(4, id);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, NULL, T0, &e), 0);
    assert_terminal(st, 4, STORE_EV_JOB_CANCELLED, "{\"status\":\"cancelled\",\"error\":null}",
                    STORE_JOB_CANCELLED);

    /* Refused finishes append nothing: already ended, lease lost, unknown status. */
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, NULL, T0, &e),
                     ERR_CONFLICT);
    assert_string_equal(e.msg, "job already cancelled");
    job_id_of(1, id);
    assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_FAILED, NULL, "late", T0, &e),
                     ERR_CONFLICT);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, NULL, T0, &e),
                     ERR_CONFLICT);
    assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_RUNNING, NULL, NULL, T0, &e),
                     ERR_INVALID);
    assert_int_equal(n_events(st, 1), 2);
    assert_int_equal(n_events(st, 4), 1);
}

static void test_step_put_with_event_is_atomic(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, STORE_EV_BIT(STORE_EV_AGENT_COMPLETED));
    claim_one(st, "a", T0);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct err e = {0};
    struct store_event_in ev = {STORE_EV_AGENT_COMPLETED, "{\"agent\":\"writer\"}"};
    assert_int_equal(store_job_step_put(st, id, "a", "agent:writer", "{\"n\":1}", &ev, T0, &e), 0);
    struct store_event_list l = list_ok(st, 1, 0, 10, NULL);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0].type, STORE_EV_AGENT_COMPLETED);
    assert_string_equal(l.items[0].data, ev.data);
    store_event_list_cleanup(&l);

    /* Refused by the fence: neither the step nor the event nor a delivery. */
    assert_int_equal(store_job_step_put(st, id, "b", "agent:editor", "{}", &ev, T0, &e),
                     ERR_CONFLICT);
    assert_string_equal(e.msg, "job '0b8e7c1a-0000-4000-8000-000000000001' is no longer leased"
                               " to this instance");
    /* An invalid event: nothing either. */
    struct store_event_in bad = {STORE_EV_AGENT_COMPLETED, NULL};
    assert_int_equal(store_job_step_put(st, id, "a", "agent:editor", "{}", &bad, T0, &e),
                     ERR_INVALID);
    struct store_step_list steps = {0};
    assert_int_equal(store_job_steps_get(st, id, &steps, &e), 0);
    assert_int_equal(steps.n, 1);
    assert_string_equal(steps.items[0].key, "agent:writer");
    store_step_list_cleanup(&steps);
    assert_int_equal(n_events(st, 1), 1);
    struct store_delivery_list d = deliveries_ok(st, 1);
    assert_int_equal(d.n, 1);
    store_delivery_list_cleanup(&d);

    /* Without an event, only the step; a missing job is not found either way. */
    assert_int_equal(store_job_step_put(st, id, "a", "agent:editor", "{}", NULL, T0, &e), 0);
    assert_int_equal(n_events(st, 1), 1);
    assert_int_equal(store_job_step_put(st, MISSING_ID, "a", "k", "{}", &ev, T0, &e),
                     ERR_NOT_FOUND);
}

/* ---- webhook columns ------------------------------------------------------------------- */

static void assert_hook(const struct store_job *j, bool set, long mask)
{
    if (set) {
        assert_string_equal(j->webhook_url, HOOK_URL);
        assert_string_equal(j->webhook_secret, HOOK_SECRET);
    } else {
        assert_null(j->webhook_url);
        assert_null(j->webhook_secret);
    }
    assert_int_equal(j->webhook_mask, mask);
}

static void test_webhook_columns_round_trip(void **state)
{
    struct store *st = *state;
    const long mask = STORE_EV_BIT(STORE_EV_AGENT_FAILED) | STORE_EV_TERMINAL_MASK;
    struct store_job in = job_make(1, mask);
    in.idempotency_key = (char *)"k1";
    in.request_hash = (char *)"00";
    struct err e = {0};
    assert_int_equal(store_job_insert(st, &in, &e), 0);
    insert_ok(st, 2, 0);

    struct store_job *j = NULL;
    assert_int_equal(store_job_get(st, in.job_id, &j, &e), 0);
    assert_hook(j, true, mask);
    store_job_free(j);
    assert_int_equal(store_job_find_by_key(st, "k1", &j, &e), 0);
    assert_hook(j, true, mask);
    store_job_free(j);

    struct store_job_batch b = {0};
    assert_int_equal(store_job_claim(st, "a", T0, LEASE, 5, &b, &e), 0);
    assert_int_equal(b.n, 2);
    assert_hook(b.items[0], true, mask);
    assert_hook(b.items[1], false, 0);
    store_job_batch_cleanup(&b);

    /* The listing leaves the webhook out, as request and definition. */
    struct store_job_filter all = {.any_status = true};
    struct store_job_page p = {0};
    assert_int_equal(store_job_list(st, &all, 10, 0, &p, &e), 0);
    assert_int_equal(p.n, 2);
    for (size_t k = 0; k < p.n; k++)
        assert_hook(p.items[k], false, 0);
    store_job_page_cleanup(&p);

    /* The fields go together. */
    struct store_job bad = job_make(3, 0);
    bad.webhook_url = (char *)HOOK_URL;
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3, 0);
    bad.webhook_secret = (char *)HOOK_SECRET;
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3, mask);
    bad.webhook_secret = NULL;
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3, mask);
    bad.webhook_url = (char *)"";
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3, mask);
    bad.webhook_secret = (char *)"";
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3, STORE_EV_BIT(STORE_EV_COUNT_));
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    bad = job_make(3, -1);
    assert_int_equal(store_job_insert(st, &bad, &e), ERR_INVALID);
    assert_int_equal(store_job_get(st, bad.job_id, &j, &e), ERR_NOT_FOUND);
}

/* ---- deliveries ------------------------------------------------------------------------ */

static void test_deliveries_only_for_mask(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, STORE_EV_BIT(STORE_EV_AGENT_COMPLETED) | STORE_EV_TERMINAL_MASK);
    insert_ok(st, 2, 0);
    insert_ok(st, 3, STORE_EV_BIT(STORE_EV_AGENT_DELTA)); /* no terminal bits */
    claim_one(st, "a", T0);
    claim_one(st, "a", T0);
    claim_one(st, "a", T0);
    for (int i = 1; i <= 3; i++) {
        append_ok(st, i, "a", STORE_EV_AGENT_STARTED, "{}", T0);
        append_ok(st, i, "a", STORE_EV_AGENT_COMPLETED, "{\"agent\":\"w\"}", T0 + 1);
        char id[ID_UUID_LEN];
        job_id_of(i, id);
        struct err e = {0};
        assert_int_equal(store_job_finish(st, id, "a", STORE_JOB_COMPLETED, "{}", NULL, T0 + 2, &e),
                         0);
    }

    struct store_delivery_list l = deliveries_ok(st, 1);
    assert_int_equal(l.n, 2);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    const long long want_seq[2] = {2, 3};
    const enum store_event_type want_type[2] = {STORE_EV_AGENT_COMPLETED, STORE_EV_JOB_COMPLETED};
    for (size_t k = 0; k < 2; k++) {
        const struct store_delivery *d = l.items[k];
        char when[CLOCK_RFC3339_LEN];
        clock_rfc3339(T0 + 1 + (long long)k, when);
        assert_string_equal(d->job_id, id);
        assert_int_equal(d->seq, want_seq[k]);
        assert_int_equal(d->type, want_type[k]);
        assert_int_equal(d->state, STORE_DELIVERY_PENDING);
        assert_int_equal(d->attempts, 0);
        assert_int_equal(d->next_attempt_ms, T0 + 1 + (long long)k);
        assert_int_equal(d->last_status, 0);
        assert_null(d->last_error);
        /* Listed rows carry neither the data nor the webhook. */
        assert_null(d->event_data);
        assert_null(d->url);
        assert_null(d->secret);
        assert_string_equal(d->event_created_at, when);
        assert_string_equal(d->created_at, when);
        assert_string_equal(d->updated_at, when);
    }
    store_delivery_list_cleanup(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    l = deliveries_ok(st, 2);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    l = deliveries_ok(st, 3);
    assert_int_equal(l.n, 0);

    struct err e = {0};
    assert_int_equal(store_delivery_list(st, MISSING_ID, &l, &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "job '" MISSING_ID "' not found");
    assert_int_equal(store_delivery_list(st, "no-uuid", &l, &e), ERR_NOT_FOUND);
}

static void test_claim_done_retry(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, STORE_EV_ALL_MASK);
    for (int k = 0; k < 3; k++)
        append_ok(st, 1, NULL, STORE_EV_AGENT_DELTA, k == 1 ? "{\"k\":\"\u00e9\"}" : "{}", T0 + k);
    struct err e = {0};

    /* Not due before its time. */
    struct store_delivery_list l = claim_is(st, "w1", T0 - 1, 5, 1, NULL, 0);
    assert_null(l.items);
    /* Oldest due first, up to max, with every field. */
    l = claim_is(st, "w1", T0 + 10, 2, 1, (long long[]){1, 2}, 2);
    const struct store_delivery *d = l.items[1];
    char when[CLOCK_RFC3339_LEN], now[CLOCK_RFC3339_LEN];
    clock_rfc3339(T0 + 1, when);
    clock_rfc3339(T0 + 10, now);
    assert_int_equal(d->type, STORE_EV_AGENT_DELTA);
    assert_int_equal(d->state, STORE_DELIVERY_PENDING);
    assert_int_equal(d->attempts, 1);
    assert_int_equal(d->next_attempt_ms, T0 + 1);
    assert_string_equal(d->event_data, "{\"k\":\"\u00e9\"}");
    assert_string_equal(d->event_created_at, when);
    assert_string_equal(d->url, HOOK_URL);
    assert_string_equal(d->secret, HOOK_SECRET);
    assert_string_equal(d->created_at, when);
    store_delivery_list_cleanup(&l);
    /* The leased rows are not claimed twice. */
    l = claim_is(st, "w2", T0 + 10, 5, 1, (long long[]){3}, 1);
    store_delivery_list_cleanup(&l);
    l = claim_is(st, "w2", T0 + 10, 5, 1, NULL, 0);

    /* Delivered; and a retry due at T0 + 5000. */
    assert_int_equal(done(st, 1, 1, "w1", STORE_DELIVERY_DELIVERED, 0, 204, NULL, T0 + 20, &e), 0);
    assert_int_equal(
        done(st, 1, 2, "w1", STORE_DELIVERY_PENDING, T0 + 5000, 500, "HTTP 500", T0 + 20, &e), 0);
    /* Not before it is due (and 3 is still w2's). */
    l = claim_is(st, "w3", T0 + 4999, 5, 1, NULL, 0);
    l = claim_is(st, "w3", T0 + 5000, 5, 1, (long long[]){2}, 1);
    assert_int_equal(l.items[0]->attempts, 2);
    assert_int_equal(l.items[0]->last_status, 500);
    assert_string_equal(l.items[0]->last_error, "HTTP 500");
    assert_int_equal(l.items[0]->next_attempt_ms, T0 + 5000);
    store_delivery_list_cleanup(&l);

    /* Only the holder of the lease records the outcome. */
    assert_int_equal(done(st, 1, 2, "w1", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_CONFLICT);
    assert_string_equal(e.msg, "delivery 2 of job '0b8e7c1a-0000-4000-8000-000000000001' is no"
                               " longer leased to this instance");
    assert_int_equal(done(st, 1, 1, "w1", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_CONFLICT); /* done already: no lease left */
    assert_int_equal(done(st, 1, 9, "w1", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_NOT_FOUND);
    assert_int_equal(done(st, 1, 2, "", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_INVALID);
    assert_int_equal(done(st, 1, 2, "w3", (enum store_delivery_state)7, 0, 200, NULL, T0, &e),
                     ERR_INVALID);
    assert_int_equal(
        done(st, 1, 2, "w3", STORE_DELIVERY_FAILED, T0 + 99999, 503, "gave up", T0 + 6000, &e), 0);
    assert_int_equal(done(st, 1, 3, "w2", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0 + 30, &e), 0);

    /* Delivered and failed rows are never claimed again. */
    l = claim_is(st, "w4", T0 + 1000000, 5, 1, NULL, 0);
    l = deliveries_ok(st, 1);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.items[0]->state, STORE_DELIVERY_DELIVERED);
    assert_int_equal(l.items[0]->last_status, 204);
    assert_int_equal(l.items[0]->attempts, 1);
    assert_int_equal(l.items[1]->state, STORE_DELIVERY_FAILED);
    assert_int_equal(l.items[1]->attempts, 2);
    assert_int_equal(l.items[1]->last_status, 503);
    assert_string_equal(l.items[1]->last_error, "gave up");
    assert_int_equal(l.items[1]->next_attempt_ms, T0 + 5000); /* ignored unless pending */
    clock_rfc3339(T0 + 6000, now);
    assert_string_equal(l.items[1]->updated_at, now);
    assert_int_equal(l.items[2]->state, STORE_DELIVERY_DELIVERED);
    store_delivery_list_cleanup(&l);

    assert_int_equal(store_delivery_claim(st, "", T0, LEASE, 1, &l, &e), ERR_INVALID);
    assert_int_equal(store_delivery_claim(st, "w", T0, 0, 1, &l, &e), ERR_INVALID);
    l = claim_is(st, "w", T0, 0, 1, NULL, 0);
}

static void test_expired_lease_and_release(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, STORE_EV_ALL_MASK);
    append_ok(st, 1, NULL, STORE_EV_JOB_STARTED, "{\"attempt\":1}", T0);
    append_ok(st, 1, NULL, STORE_EV_AGENT_STARTED, "{}", T0);
    struct err e = {0};
    struct store_delivery_list l = claim_is(st, "w1", T0, 1, 1, (long long[]){1}, 1);
    store_delivery_list_cleanup(&l);
    /* The lease holds through its deadline, then another instance takes the row over. */
    l = claim_is(st, "w2", T0 + LEASE, 5, 1, (long long[]){2}, 1);
    store_delivery_list_cleanup(&l);
    l = claim_is(st, "w3", T0 + LEASE, 5, 1, NULL, 0);
    l = claim_is(st, "w3", T0 + LEASE + 1, 5, 1, (long long[]){1}, 1);
    assert_int_equal(l.items[0]->attempts, 2);
    store_delivery_list_cleanup(&l);
    assert_int_equal(done(st, 1, 1, "w1", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_CONFLICT);

    /* Released leases are due again at once, for anyone; others' leases stay. */
    assert_int_equal(store_delivery_release(st, "w3", &e), 0);
    assert_int_equal(store_delivery_release(st, "nobody", &e), 0);
    assert_int_equal(store_delivery_release(st, "", &e), ERR_INVALID);
    l = claim_is(st, "w4", T0 + LEASE + 2, 5, 1, (long long[]){1}, 1);
    store_delivery_list_cleanup(&l);
    assert_int_equal(done(st, 1, 1, "w3", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_CONFLICT);
    assert_int_equal(done(st, 1, 2, "w2", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e), 0);
    assert_int_equal(done(st, 1, 1, "w4", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e), 0);
}

/* A claim that only renewed the lapsed lease of an attempt still running counted an attempt
 * that was never made: the outcome sets the real number. */
static void test_done_sets_the_attempts_made(void **state)
{
    struct store *st = *state;
    insert_ok(st, 1, STORE_EV_ALL_MASK);
    append_ok(st, 1, NULL, STORE_EV_JOB_STARTED, "{\"attempt\":1}", T0);
    struct err e = {0};
    struct store_delivery_list l = claim_is(st, "w1", T0, 1, 1, (long long[]){1}, 1);
    store_delivery_list_cleanup(&l);
    l = claim_is(st, "w1", T0 + LEASE + 1, 1, 1, (long long[]){1}, 1);
    assert_int_equal(l.items[0]->attempts, 2); /* the same worker, its attempt still running */
    store_delivery_list_cleanup(&l);
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    assert_int_equal(store_delivery_done(st, id, 1, "w1", STORE_DELIVERY_PENDING, 1, T0 + 5, 500,
                                         "HTTP 500", T0, &e),
                     0);
    l = deliveries_ok(st, 1);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0]->attempts, 1);
    store_delivery_list_cleanup(&l);
    /* 0 keeps the stored count. */
    l = claim_is(st, "w1", T0 + 5, 1, 1, (long long[]){1}, 1);
    store_delivery_list_cleanup(&l);
    assert_int_equal(done(st, 1, 1, "w1", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e), 0);
    l = deliveries_ok(st, 1);
    assert_int_equal(l.items[0]->attempts, 2);
    store_delivery_list_cleanup(&l);
}

/* A job deleted or purged takes its events and deliveries along: a new job under the same
 * id starts from event 1 with no deliveries, and a worker's late outcome finds nothing. */
static void test_delete_and_purge_take_events(void **state)
{
    struct store *st = *state;
    char id[ID_UUID_LEN];
    struct err e = {0};
    for (int i = 1; i <= 2; i++) {
        insert_ok(st, i, STORE_EV_ALL_MASK);
        append_ok(st, i, NULL, STORE_EV_AGENT_STARTED, "{}", T0);
        job_id_of(i, id);
        assert_int_equal(store_job_finish(st, id, NULL, STORE_JOB_CANCELLED, NULL, NULL, T0, &e),
                         0);
    }
    struct store_delivery_list l = claim_is(st, "w", T0, 1, 1, (long long[]){1}, 1);
    store_delivery_list_cleanup(&l);

    job_id_of(1, id);
    assert_int_equal(store_job_delete(st, id, &e), 0);
    struct store_event_list el = {0};
    assert_int_equal(store_event_list(st, id, 0, 10, &el, NULL, &e), ERR_NOT_FOUND);
    assert_int_equal(store_delivery_list(st, id, &l, &e), ERR_NOT_FOUND);
    assert_int_equal(done(st, 1, 1, "w", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e),
                     ERR_NOT_FOUND);
    /* Job 2's rows are untouched. */
    assert_int_equal(n_events(st, 2), 2);
    l = deliveries_ok(st, 2);
    assert_int_equal(l.n, 2);
    store_delivery_list_cleanup(&l);

    /* Retention leaves a job whose deliveries are still to be sent... */
    size_t n = 0;
    assert_int_equal(store_job_purge(st, T0 + 1, 10, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_int_equal(n_events(st, 2), 2);
    /* ...and takes it once they are delivered or given up. */
    l = claim_is(st, "w3", T0 + 10 * LEASE, 10, 2, (long long[]){1, 2}, 2);
    store_delivery_list_cleanup(&l);
    assert_int_equal(done(st, 2, 1, "w3", STORE_DELIVERY_DELIVERED, 0, 200, NULL, T0, &e), 0);
    assert_int_equal(store_job_purge(st, T0 + 1, 10, &n, &e), 0);
    assert_int_equal(n, 0); /* one still pending (leased, not done) */
    assert_int_equal(done(st, 2, 2, "w3", STORE_DELIVERY_FAILED, 0, 500, "x", T0, &e), 0);
    assert_int_equal(store_job_purge(st, T0 + 1, 10, &n, &e), 0);
    assert_int_equal(n, 1);
    /* Nothing of either job is left to claim. */
    l = claim_is(st, "w2", T0 + 10 * LEASE, 10, 1, NULL, 0);
    for (int i = 1; i <= 2; i++) {
        insert_ok(st, i, STORE_EV_ALL_MASK);
        assert_int_equal(n_events(st, i), 0);
        l = deliveries_ok(st, i);
        assert_int_equal(l.n, 0);
        assert_int_equal(append_ok(st, i, NULL, STORE_EV_JOB_STARTED, "{}", T0), 1);
    }
}

/* ---- concurrency: two handles (two connections) appending to one job ------------------ */

#define N_RACE_EVENTS 100

struct appender {
    struct store *st;
    pthread_barrier_t *start;
    long long seqs[N_RACE_EVENTS];
    int rc;
    char msg[ERR_MSG_MAX];
};

/* No cmocka assertion here (not the test's thread): failures are recorded and checked by
 * the main thread. */
static void *appender_main(void *arg)
{
    struct appender *a = arg;
    char id[ID_UUID_LEN];
    job_id_of(1, id);
    struct store_event_in ev = {STORE_EV_AGENT_DELTA, "{\"text\":\"x\"}"};
    pthread_barrier_wait(a->start);
    for (int k = 0; k < N_RACE_EVENTS && a->rc == 0; k++) {
        struct err e = {0};
        if ((a->rc = store_event_append(a->st, id, "a", &ev, T0 + k, &a->seqs[k], &e)) != 0)
            snprintf(a->msg, sizeof a->msg, "%s", err_text(&e));
    }
    return NULL;
}

static void test_concurrent_appends(void **state)
{
    struct store *st = *state;
    /* Every event gets a delivery, so both inserts race. */
    insert_ok(st, 1, STORE_EV_ALL_MASK);
    claim_one(st, "a", T0);
    /* Static, so that a failed assertion (a longjmp) leaks nothing. */
    static struct appender as[2];
    memset(as, 0, sizeof as);
    pthread_t threads[2];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    for (int k = 0; k < 2; k++) {
        as[k].st = open_store();
        as[k].start = &start;
    }
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&threads[k], NULL, appender_main, &as[k]), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(threads[k], NULL), 0);
    pthread_barrier_destroy(&start);
    for (int k = 0; k < 2; k++)
        store_close(as[k].st);

    static int seen[2 * N_RACE_EVENTS + 1];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < 2; k++) {
        if (as[k].rc != 0)
            fail_msg("appender %d: %s", k, as[k].msg);
        for (int m = 0; m < N_RACE_EVENTS; m++) {
            long long s = as[k].seqs[m];
            assert_true(s >= 1 && s <= 2 * N_RACE_EVENTS);
            seen[s]++;
            /* Each appender's own numbers go up. */
            if (m > 0)
                assert_true(s > as[k].seqs[m - 1]);
        }
    }
    for (int s = 1; s <= 2 * N_RACE_EVENTS; s++)
        if (seen[s] != 1)
            fail_msg("seq %d given %d times", s, seen[s]);
    struct store_event_list l = list_ok(st, 1, 0, 1000, NULL);
    assert_int_equal(l.n, 2 * N_RACE_EVENTS);
    for (size_t k = 0; k < l.n; k++)
        assert_int_equal(l.items[k].seq, (long long)k + 1);
    store_event_list_cleanup(&l);
    struct store_delivery_list d = deliveries_ok(st, 1);
    assert_int_equal(d.n, 2 * N_RACE_EVENTS);
    store_delivery_list_cleanup(&d);
}

static void test_names(void **state)
{
    (void)state;
    enum store_event_type t = STORE_EV_JOB_FAILED;
    for (int i = 0; i < STORE_EV_COUNT_; i++) {
        const char *name = store_event_type_name((enum store_event_type)i);
        assert_non_null(name);
        assert_int_equal(store_event_type_parse(name, &t), 0);
        assert_int_equal(t, i);
    }
    assert_null(store_event_type_name(STORE_EV_COUNT_));
    assert_int_equal(store_event_type_parse("job.Started", &t), ERR_INVALID);
    const char *states[] = {"pending", "delivered", "failed"};
    for (int i = 0; i < 3; i++) {
        enum store_delivery_state s = STORE_DELIVERY_FAILED;
        assert_string_equal(store_delivery_state_name((enum store_delivery_state)i), states[i]);
        assert_int_equal(store_delivery_state_parse(states[i], &s), 0);
        assert_int_equal(s, i);
    }
    enum store_delivery_state s = STORE_DELIVERY_PENDING;
    assert_null(store_delivery_state_name((enum store_delivery_state)3));
    assert_int_equal(store_delivery_state_parse(NULL, &s), ERR_INVALID);
    /* The frees accept NULL. */
    store_event_list_cleanup(NULL);
    store_delivery_list_cleanup(NULL);
    store_delivery_free(NULL);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest contract[] = {
        T(test_dense_seq_and_paging),
        T(test_list_and_append_invalid),
        T(test_append_fenced_on_owner),
        T(test_finish_appends_terminal_event),
        T(test_step_put_with_event_is_atomic),
        T(test_webhook_columns_round_trip),
        T(test_deliveries_only_for_mask),
        T(test_claim_done_retry),
        T(test_expired_lease_and_release),
        T(test_done_sets_the_attempts_made),
        T(test_delete_and_purge_take_events),
        T(test_concurrent_appends),
        T(test_names),
    };
    int failed = cmocka_run_group_tests_name("store events: sqlite", contract, sqlite_group_setup,
                                             sqlite_group_teardown);
    failed += cmocka_run_group_tests_name("store events: postgres", contract, pg_group_setup,
                                          pg_group_teardown);
    return failed;
}
