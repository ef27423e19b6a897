/*
 * test_store_memory.c - the conversation memory of store.h (memory_get, memory_append with
 * trimming, memory_clear), one contract run against both backends as test_store_jobs.c does:
 * the same tests as a group on a SQLite file and as a group on a throwaway PostgreSQL cluster
 * (scripts/pg-cluster.sh). Each test starts from an empty, freshly migrated database and
 * closes what it opened. Times are fixed numbers given as now_ms, never the clock.
 *
 * Plus the upgrade of a version-2 database (made by hand on SQLite, by dropping the memory
 * table on PostgreSQL) and two connections appending to one conversation at once.
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

#define CREW "0b8e7c1a-0000-4000-8000-0000000000c1"
#define CREW_B "0b8e7c1a-0000-4000-8000-0000000000c2"
#define AGENT "researcher"

/* ---- backends -------------------------------------------------------------------------- */

#define BACKENDS_TAG "mem"
#define BACKENDS_PG_RESET_EXTRA ";DROP FUNCTION IF EXISTS memory_boom"
#include "backends.h"

/* ---- helpers --------------------------------------------------------------------------- */

/* A conversation's four keys. */
struct conv {
    const char *crew_id, *agent_key, *user_id, *session_id;
};

static const struct conv DEFAULT_CONV = {CREW, AGENT, "user-1", "session-1"};

/* Appends one exchange: "u<i>" from the user, "a<i>" from the assistant. */
static void exchange_ok(struct store *st, struct conv c, int i, size_t keep, long long now_ms)
{
    char u[32], a[32];
    snprintf(u, sizeof u, "u%d", i);
    snprintf(a, sizeof a, "a%d", i);
    struct store_turn turns[2] = {{.role = (char *)"user", .content = u},
                                  {.role = (char *)"assistant", .content = a}};
    struct err e = {0};
    if (store_memory_append(st, c.crew_id, c.agent_key, c.user_id, c.session_id, turns, 2, keep,
                            now_ms, &e) != 0)
        fail_msg("append %d: %s", i, err_text(&e));
}

static void turn_ok(struct store *st, struct conv c, const char *role, const char *content,
                    size_t keep)
{
    struct store_turn t = {.role = (char *)role, .content = (char *)content};
    struct err e = {0};
    if (store_memory_append(st, c.crew_id, c.agent_key, c.user_id, c.session_id, &t, 1, keep, T0,
                            &e) != 0)
        fail_msg("append %s: %s", content, err_text(&e));
}

static struct store_turn_list get_ok(struct store *st, struct conv c, size_t max)
{
    struct store_turn_list l = {0};
    struct err e = {0};
    if (store_memory_get(st, c.crew_id, c.agent_key, c.user_id, c.session_id, max, &l, &e) != 0)
        fail_msg("get: %s", err_text(&e));
    return l;
}

/* The conversation's contents, newest `max`, joined with ',' (roles are implied by u/a). */
static void contents_are(struct store *st, struct conv c, size_t max, const char *want)
{
    struct store_turn_list l = get_ok(st, c, max);
    char got[4096] = "";
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++)
        n += (size_t)snprintf(got + n, sizeof got - n, "%s%s", i ? "," : "", l.items[i].content);
    if (l.n == 0)
        assert_null(l.items);
    store_turn_list_cleanup(&l);
    assert_string_equal(got, want);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_empty(void **state)
{
    struct store *st = *state;
    struct store_turn_list l = {.items = (struct store_turn *)&l, .n = 7}; /* must be reset */
    struct err e = {0};
    assert_int_equal(store_memory_get(st, CREW, AGENT, "u", "s", 10, &l, &e), 0);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "");
    exchange_ok(st, DEFAULT_CONV, 1, 0, T0);
    /* max_turns 0 is an empty list, not "all". */
    contents_are(st, DEFAULT_CONV, 0, "");
    /* The cleanup accepts NULL and an empty list. */
    store_turn_list_cleanup(NULL);
    store_turn_list_cleanup(&l);
}

static void test_append_get_order(void **state)
{
    struct store *st = *state;
    exchange_ok(st, DEFAULT_CONV, 1, 0, T0);
    exchange_ok(st, DEFAULT_CONV, 2, 0, T0 + 1500);
    /* One append of three turns keeps their order too. */
    struct store_turn three[3] = {
        {.role = (char *)"user", .content = (char *)"u3", .created_at = "ignored"},
        {.role = (char *)"assistant", .content = (char *)"a3"},
        {.role = (char *)"user", .content = (char *)"u4"},
    };
    struct err e = {0};
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", three, 3, 0, T0 + 2000, &e), 0);

    struct store_turn_list l = get_ok(st, DEFAULT_CONV, SIZE_MAX);
    assert_int_equal(l.n, 7);
    const char *roles[] = {"user", "assistant", "user", "assistant", "user", "assistant", "user"};
    const char *contents[] = {"u1", "a1", "u2", "a2", "u3", "a3", "u4"};
    const long long times[] = {T0, T0, T0 + 1500, T0 + 1500, T0 + 2000, T0 + 2000, T0 + 2000};
    for (size_t i = 0; i < l.n; i++) {
        char want[CLOCK_RFC3339_LEN];
        clock_rfc3339(times[i], want);
        assert_string_equal(l.items[i].role, roles[i]);
        assert_string_equal(l.items[i].content, contents[i]);
        assert_string_equal(l.items[i].created_at, want);
    }
    store_turn_list_cleanup(&l);
    assert_int_equal(l.n, 0);
    assert_null(l.items);
}

static void test_max_turns_newest_in_order(void **state)
{
    struct store *st = *state;
    for (int i = 1; i <= 5; i++)
        exchange_ok(st, DEFAULT_CONV, i, 0, T0 + i);
    contents_are(st, DEFAULT_CONV, 1, "a5");
    contents_are(st, DEFAULT_CONV, 3, "a4,u5,a5");
    contents_are(st, DEFAULT_CONV, 4, "u4,a4,u5,a5");
    contents_are(st, DEFAULT_CONV, 10, "u1,a1,u2,a2,u3,a3,u4,a4,u5,a5");
    contents_are(st, DEFAULT_CONV, 11, "u1,a1,u2,a2,u3,a3,u4,a4,u5,a5");
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u1,a1,u2,a2,u3,a3,u4,a4,u5,a5");
}

static void test_keep_turns_trims(void **state)
{
    struct store *st = *state;
    struct conv other = {CREW, AGENT, "user-2", "session-1"};
    exchange_ok(st, other, 1, 0, T0);
    /* Fewer turns than kept: nothing goes. */
    exchange_ok(st, DEFAULT_CONV, 1, 4, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u1,a1");
    exchange_ok(st, DEFAULT_CONV, 2, 4, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u1,a1,u2,a2");
    exchange_ok(st, DEFAULT_CONV, 3, 4, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u2,a2,u3,a3");
    /* An odd limit may split an exchange: the newest turns win. */
    exchange_ok(st, DEFAULT_CONV, 4, 3, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "a3,u4,a4");
    /* 0 keeps everything. */
    exchange_ok(st, DEFAULT_CONV, 5, 0, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "a3,u4,a4,u5,a5");
    /* An append of nothing only trims. */
    struct err e = {0};
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", NULL, 0, 2, T0, &e), 0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u5,a5");
    exchange_ok(st, DEFAULT_CONV, 6, 1, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "a6");
    exchange_ok(st, DEFAULT_CONV, 7, SIZE_MAX, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "a6,u7,a7");
    /* Trimming one conversation leaves the others alone. */
    contents_are(st, other, SIZE_MAX, "u1,a1");
}

static void test_isolated_by_each_key(void **state)
{
    struct store *st = *state;
    const struct conv convs[] = {
        {CREW, AGENT, "user-1", "session-1"},    {CREW_B, AGENT, "user-1", "session-1"},
        {CREW, "writer", "user-1", "session-1"}, {CREW, AGENT, "user-2", "session-1"},
        {CREW, AGENT, "user-1", "session-2"},    {CREW, AGENT, NULL, "session-1"},
        {CREW, AGENT, "user-1", NULL},           {CREW, AGENT, NULL, NULL},
    };
    const size_t n = sizeof convs / sizeof convs[0];
    for (size_t i = 0; i < n; i++)
        exchange_ok(st, convs[i], (int)i, 0, T0);
    for (size_t i = 0; i < n; i++) {
        char want[32];
        snprintf(want, sizeof want, "u%zu,a%zu", i, i);
        contents_are(st, convs[i], SIZE_MAX, want);
    }
    /* NULL and "" name the same conversation, for the user and for the session. */
    contents_are(st, (struct conv){CREW, AGENT, "", "session-1"}, SIZE_MAX, "u5,a5");
    contents_are(st, (struct conv){CREW, AGENT, "user-1", ""}, SIZE_MAX, "u6,a6");
    contents_are(st, (struct conv){CREW, AGENT, "", ""}, SIZE_MAX, "u7,a7");
    turn_ok(st, (struct conv){CREW, AGENT, "", ""}, "user", "via empty", 0);
    contents_are(st, (struct conv){CREW, AGENT, NULL, NULL}, SIZE_MAX, "u7,a7,via empty");
    /* Keys are compared exactly: case and a trailing space make another conversation. */
    contents_are(st, (struct conv){CREW, "Researcher", "user-1", "session-1"}, SIZE_MAX, "");
    contents_are(st, (struct conv){CREW, AGENT, "user-1 ", "session-1"}, SIZE_MAX, "");
}

static void test_clear(void **state)
{
    struct store *st = *state;
    struct conv other = {CREW, AGENT, "user-1", "session-2"};
    exchange_ok(st, DEFAULT_CONV, 1, 0, T0);
    exchange_ok(st, DEFAULT_CONV, 2, 0, T0);
    exchange_ok(st, other, 3, 0, T0);
    struct err e = {0};
    assert_int_equal(store_memory_clear(st, CREW, AGENT, "user-1", "session-1", &e), 0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "");
    contents_are(st, other, SIZE_MAX, "u3,a3");
    assert_int_equal(store_memory_clear(st, CREW, AGENT, "user-1", "session-1", &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "conversation not found");
    /* NULL clears the conversation of "". */
    exchange_ok(st, (struct conv){CREW, AGENT, "", ""}, 4, 0, T0);
    assert_int_equal(store_memory_clear(st, CREW, AGENT, NULL, NULL, &e), 0);
    assert_int_equal(store_memory_clear(st, CREW, AGENT, "", "", &e), ERR_NOT_FOUND);
    /* A cleared conversation starts again. */
    exchange_ok(st, DEFAULT_CONV, 5, 0, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u5,a5");
}

static void test_invalid(void **state)
{
    struct store *st = *state;
    exchange_ok(st, DEFAULT_CONV, 1, 0, T0);
    struct err e = {0};
    struct store_turn bad_role[2] = {{.role = (char *)"user", .content = (char *)"x"},
                                     {.role = (char *)"system", .content = (char *)"y"}};
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", bad_role, 2, 1, T0, &e),
        ERR_INVALID);
    assert_string_equal(e.msg, "store: turn 1: role must be 'user' or 'assistant'");
    struct store_turn no_content[1] = {{.role = (char *)"assistant", .content = NULL}};
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", no_content, 1, 0, T0, &e),
        ERR_INVALID);
    struct store_turn no_role[1] = {{.role = NULL, .content = (char *)"x"}};
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", no_role, 1, 0, T0, &e),
        ERR_INVALID);
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", NULL, 1, 0, T0, &e),
        ERR_INVALID);
    /* Nothing of a refused append was written, and its trim did not run. */
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u1,a1");

    struct store_turn ok[1] = {{.role = (char *)"user", .content = (char *)"x"}};
    struct store_turn_list l = {0};
    assert_int_equal(store_memory_append(st, NULL, AGENT, NULL, NULL, ok, 1, 0, T0, &e),
                     ERR_INVALID);
    assert_int_equal(store_memory_append(st, CREW, "", NULL, NULL, ok, 1, 0, T0, &e), ERR_INVALID);
    assert_int_equal(store_memory_get(st, "", AGENT, NULL, NULL, 5, &l, &e), ERR_INVALID);
    assert_null(l.items);
    assert_int_equal(store_memory_get(st, CREW, NULL, NULL, NULL, 5, &l, &e), ERR_INVALID);
    assert_int_equal(store_memory_clear(st, NULL, AGENT, NULL, NULL, &e), ERR_INVALID);
}

/* A failure in the middle of an append (the second insert refused by a trigger behind the
 * store's back) leaves nothing of it: both turns or neither, and no trim. */
static void test_append_is_atomic(void **state)
{
    struct store *st = *state;
    exchange_ok(st, DEFAULT_CONV, 1, 0, T0);
    if (g_be == &g_sqlite)
        g_be->exec("CREATE TRIGGER memory_boom BEFORE INSERT ON memory"
                   " WHEN NEW.content = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END");
    else
        g_be->exec("CREATE FUNCTION memory_boom() RETURNS trigger LANGUAGE plpgsql AS"
                   " $$BEGIN IF NEW.content = 'boom' THEN RAISE EXCEPTION 'boom refused';"
                   " END IF; RETURN NEW; END$$;"
                   "CREATE TRIGGER memory_boom BEFORE INSERT ON memory"
                   " FOR EACH ROW EXECUTE FUNCTION memory_boom()");
    struct store_turn turns[2] = {{.role = (char *)"user", .content = (char *)"u2"},
                                  {.role = (char *)"assistant", .content = (char *)"boom"}};
    struct err e = {0};
    assert_int_equal(
        store_memory_append(st, CREW, AGENT, "user-1", "session-1", turns, 2, 1, T0, &e),
        ERR_STORE);
    assert_non_null(strstr(e.msg, "boom refused"));
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u1,a1");
    /* The store is usable at once: no transaction was left open. */
    exchange_ok(st, DEFAULT_CONV, 3, 0, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "u1,a1,u3,a3");
}

static void test_utf8_round_trip(void **state)
{
    struct store *st = *state;
    const char *text = "r\u00e9sum\u00e9 \u2713 \u65e5\u672c\u8a9e \U0001F600 e\u0301"
                       " \"quoted\" 'single' back\\slash\ttab\nnewline %s %% \x7f";
    struct conv c = {CREW, "\u00e9crivain", "\u00fcser-\U0001F600", "s\u00e9ssion"};
    turn_ok(st, c, "user", text, 0);
    turn_ok(st, c, "assistant", "", 0); /* an empty answer is a turn too */
    struct store_turn_list l = get_ok(st, c, SIZE_MAX);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.items[0].content, text);
    assert_int_equal(strlen(l.items[0].content), strlen(text));
    assert_string_equal(l.items[1].content, "");
    store_turn_list_cleanup(&l);
    /* Another normalization of the same agent name is another key. */
    contents_are(st, (struct conv){CREW, "e\u0301crivain", c.user_id, c.session_id}, SIZE_MAX, "");
}

static void test_large_content(void **state)
{
    struct store *st = *state;
    enum { LARGE = 100 * 1024 };
    char *big = malloc(LARGE + 1);
    assert_non_null(big);
    /* Varied bytes with multi-byte characters, so that a truncation or shift shows. */
    size_t n = 0;
    for (int i = 0; n + 8 < LARGE; i++)
        n += (size_t)snprintf(big + n, LARGE + 1 - n, "%d\u00e9,", i);
    while (n < LARGE)
        big[n++] = 'z';
    big[LARGE] = '\0';
    struct store_turn turns[2] = {{.role = (char *)"user", .content = (char *)"long please"},
                                  {.role = (char *)"assistant", .content = big}};
    struct err e = {0};
    int rc = store_memory_append(st, CREW, AGENT, NULL, NULL, turns, 2, 10, T0, &e);
    if (rc != 0) {
        free(big);
        fail_msg("append: %s", err_text(&e));
    }
    struct store_turn_list l = {0};
    rc = store_memory_get(st, CREW, AGENT, NULL, NULL, 1, &l, &e);
    bool same = rc == 0 && l.n == 1 && strlen(l.items[0].content) == LARGE &&
                memcmp(l.items[0].content, big, LARGE) == 0;
    store_turn_list_cleanup(&l);
    free(big);
    assert_true(same);
}

/* ---- concurrency: two handles (two connections) appending to one conversation ---------- */

#define N_RACE_EXCHANGES 100

struct appender {
    int id;
    struct store *st;
    size_t keep;
    pthread_barrier_t *start;
    int rc;
    char msg[ERR_MSG_MAX];
};

/* Appends exchanges "u<id>.<k>", "a<id>.<k>". No cmocka assertion here (not the test's
 * thread): a failure is recorded and checked by the main thread. */
static void *appender_main(void *arg)
{
    struct appender *a = arg;
    pthread_barrier_wait(a->start);
    for (int k = 0; k < N_RACE_EXCHANGES; k++) {
        char u[32], r[32];
        snprintf(u, sizeof u, "u%d.%d", a->id, k);
        snprintf(r, sizeof r, "a%d.%d", a->id, k);
        struct store_turn turns[2] = {{.role = (char *)"user", .content = u},
                                      {.role = (char *)"assistant", .content = r}};
        struct err e = {0};
        a->rc = store_memory_append(a->st, CREW, AGENT, "user-1", "session-1", turns, 2, a->keep,
                                    T0 + k, &e);
        if (a->rc != 0) {
            snprintf(a->msg, sizeof a->msg, "append %d: %s", k, err_text(&e));
            return NULL;
        }
    }
    return NULL;
}

/* Two appenders on their own connections, `keep` each; returns the conversation after. */
static struct store_turn_list race(struct store *st, size_t keep)
{
    static struct appender as[2]; /* static: a failed assertion (a longjmp) leaks nothing */
    memset(as, 0, sizeof as);
    pthread_t threads[2];
    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, 2), 0);
    for (int k = 0; k < 2; k++) {
        as[k].id = k;
        as[k].st = open_store();
        as[k].keep = keep;
        as[k].start = &start;
    }
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_create(&threads[k], NULL, appender_main, &as[k]), 0);
    for (int k = 0; k < 2; k++)
        assert_int_equal(pthread_join(threads[k], NULL), 0);
    pthread_barrier_destroy(&start);
    for (int k = 0; k < 2; k++)
        store_close(as[k].st);
    for (int k = 0; k < 2; k++) {
        if (as[k].rc != 0)
            fail_msg("appender %d: %s", k, as[k].msg);
    }
    return get_ok(st, DEFAULT_CONV, SIZE_MAX);
}

/* Each exchange is a user turn directly followed by its answer, and each appender's
 * exchanges come in its order. Returns how many exchanges each appender has in `l`. */
static void check_exchanges(const struct store_turn_list *l, int count[2])
{
    int next[2] = {-1, -1};
    count[0] = count[1] = 0;
    assert_int_equal(l->n % 2, 0);
    for (size_t i = 0; i + 1 < l->n; i += 2) {
        int id, k, id2, k2;
        assert_string_equal(l->items[i].role, "user");
        assert_string_equal(l->items[i + 1].role, "assistant");
        assert_int_equal(sscanf(l->items[i].content, "u%d.%d", &id, &k), 2);
        assert_int_equal(sscanf(l->items[i + 1].content, "a%d.%d", &id2, &k2), 2);
        assert_int_equal(id, id2);
        assert_int_equal(k, k2);
        assert_true(id == 0 || id == 1);
        assert_true(k > next[id]);
        next[id] = k;
        count[id]++;
    }
}

static void test_concurrent_appends(void **state)
{
    struct store *st = *state;
    struct store_turn_list l = race(st, 0);
    int count[2];
    check_exchanges(&l, count);
    size_t n = l.n;
    store_turn_list_cleanup(&l);
    /* keep_turns 0: every turn of both is kept. */
    assert_int_equal(n, 4 * N_RACE_EXCHANGES);
    assert_int_equal(count[0], N_RACE_EXCHANGES);
    assert_int_equal(count[1], N_RACE_EXCHANGES);

    /* Racing trims: the conversation ends with exactly the newest 10 turns, whole exchanges
     * in order, and each appender's last exchange is among them or older than the other's. */
    struct err e = {0};
    assert_int_equal(store_memory_clear(st, CREW, AGENT, "user-1", "session-1", &e), 0);
    l = race(st, 10);
    check_exchanges(&l, count);
    n = l.n;
    bool last_present = false;
    for (size_t i = 0; i < l.n; i++) {
        char want[32];
        for (int k = 0; k < 2; k++) {
            snprintf(want, sizeof want, "a%d.%d", k, N_RACE_EXCHANGES - 1);
            if (strcmp(l.items[i].content, want) == 0)
                last_present = true;
        }
    }
    store_turn_list_cleanup(&l);
    assert_int_equal(n, 10);
    assert_true(last_present);
}

/* ---- migrations -------------------------------------------------------------------------- */

/* The version-2 SQLite schema exactly as the crewd of that version made it, with a crew and a
 * job in it. */
static const char SQLITE_V2[] =
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
    " PRIMARY KEY (job_id, key));"
    "INSERT INTO schema_version VALUES (1, '2025-11-01T00:00:00.000Z');"
    "INSERT INTO schema_version VALUES (2, '2025-11-10T00:00:00.000Z');"
    "PRAGMA journal_mode = WAL;"
    "INSERT INTO crews VALUES ('" CREW "', 'old-crew', NULL, 'sequential', 1,"
    " '{\"name\":\"old-crew\"}', '{}', '2025-11-01T00:00:00.001Z', '2025-11-01T00:00:00.001Z');"
    "INSERT INTO jobs (job_id, crew_id, crew_name, status, execution_mode, request, definition,"
    " plan, metadata, created_at) VALUES ('0b8e7c1a-0000-4000-8000-000000000001', '" CREW "',"
    " 'old-crew', 'pending', 'sequential', '{}', '{}', '{}', '{}', '2025-11-10T00:00:00.001Z');";

/* Opens a version-2 database with this build: migrations 3 and on run, the crew and the job
 * survive (without a webhook, ready for events) and memory works, also after a second open. */
static void upgrade_check(void)
{
    struct store *st = open_store();
    struct store_crew *c = NULL;
    struct err e = {0};
    assert_int_equal(store_crew_get(st, "old-crew", STORE_BY_NAME, &c, &e), 0);
    assert_string_equal(c->crew_id, CREW);
    store_crew_free(c);
    struct store_job *j = NULL;
    assert_int_equal(store_job_get(st, "0b8e7c1a-0000-4000-8000-000000000001", &j, &e), 0);
    assert_int_equal(j->status, STORE_JOB_PENDING);
    assert_int_equal(j->webhook_mask, 0);
    assert_null(j->webhook_url);
    assert_null(j->webhook_secret);
    store_job_free(j);
    struct store_event_in ev = {STORE_EV_JOB_STARTED, "{\"attempt\":1}"};
    long long seq = 0;
    assert_int_equal(
        store_event_append(st, "0b8e7c1a-0000-4000-8000-000000000001", NULL, &ev, T0, &seq, &e),
        0);
    assert_int_equal(seq, 1);
    exchange_ok(st, DEFAULT_CONV, 1, 0, T0);
    store_close(st);
    st = open_store();
    exchange_ok(st, DEFAULT_CONV, 2, 3, T0);
    contents_are(st, DEFAULT_CONV, SIZE_MAX, "a1,u2,a2");
    store_close(st);
}

static void test_upgrade_from_v2_sqlite(void **state)
{
    store_close(*state);
    *state = NULL;
    g_be->reset();
    sqlite_exec(SQLITE_V2);
    upgrade_check();
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    assert_int_equal(sqlite3_open_v2(g_sqlite_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT group_concat(version) || '/' ||"
                                        " (SELECT applied_at FROM schema_version WHERE version = 2)"
                                        " || '/' || (SELECT count(*) FROM sqlite_master"
                                        " WHERE name = 'memory_conversation')"
                                        " FROM schema_version",
                                        -1, &stmt, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(stmt), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(stmt, 0),
                        "1,2,3,4,5,6,7/2025-11-10T00:00:00.000Z/1");
    sqlite3_finalize(stmt);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* PostgreSQL: a version-3 database taken back to what version 2 left, with a crew and a job. */
static void test_upgrade_from_v2_pg(void **state)
{
    store_close(*state);
    *state = NULL;
    pg_exec("DROP TABLE memory, tools, agent_classes; DELETE FROM schema_version WHERE version >= 3;"
            " DROP INDEX IF EXISTS jobs_created_idx; DROP INDEX IF EXISTS jobs_crew_created_idx;"
            " DROP INDEX IF EXISTS jobs_status_created_idx; DROP INDEX IF EXISTS jobs_finished_idx;"
            " ALTER TABLE jobs DROP COLUMN idempotency_key, DROP COLUMN request_hash,"
            " DROP COLUMN webhook_url, DROP COLUMN webhook_secret, DROP COLUMN webhook_mask;"
            " DROP TABLE job_events, webhook_deliveries;"
            "INSERT INTO crews (crew_id, name, execution_mode, agent_count, definition, plan,"
            " created_at, updated_at) VALUES ('" CREW "', 'old-crew', 'sequential', 1,"
            " '{}', '{}', '2025-11-01T00:00:00.001Z', '2025-11-01T00:00:00.001Z');"
            "INSERT INTO jobs (job_id, crew_id, crew_name, status, execution_mode, request,"
            " definition, plan, metadata, created_at) VALUES"
            " ('0b8e7c1a-0000-4000-8000-000000000001', '" CREW "', 'old-crew', 'pending',"
            " 'sequential', '{}', '{}', '{}', '{}', '2025-11-10T00:00:00.001Z')");
    upgrade_check();
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, test_setup, test_teardown)

int main(void)
{
    const struct CMUnitTest contract_sqlite[] = {
        T(test_empty),
        T(test_append_get_order),
        T(test_max_turns_newest_in_order),
        T(test_keep_turns_trims),
        T(test_isolated_by_each_key),
        T(test_clear),
        T(test_invalid),
        T(test_append_is_atomic),
        T(test_utf8_round_trip),
        T(test_large_content),
        T(test_concurrent_appends),
        T(test_upgrade_from_v2_sqlite),
    };
    const struct CMUnitTest contract_pg[] = {
        T(test_empty),
        T(test_append_get_order),
        T(test_max_turns_newest_in_order),
        T(test_keep_turns_trims),
        T(test_isolated_by_each_key),
        T(test_clear),
        T(test_invalid),
        T(test_append_is_atomic),
        T(test_utf8_round_trip),
        T(test_large_content),
        T(test_concurrent_appends),
        T(test_upgrade_from_v2_pg),
    };
    int failed = cmocka_run_group_tests_name("store memory: sqlite", contract_sqlite,
                                             sqlite_group_setup, sqlite_group_teardown);
    failed += cmocka_run_group_tests_name("store memory: postgres", contract_pg, pg_group_setup,
                                          pg_group_teardown);
    return failed;
}
