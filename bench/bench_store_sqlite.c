/*
 * bench_store_sqlite.c - throughput of the SQLite crew registry through store.h, as the
 * daemon uses it: one autocommit transaction per insert (WAL, synchronous=NORMAL), lookups
 * by id, by name and by name-or-id, and list pages. The database is a file in a fresh
 * directory under $TMPDIR (default /tmp), removed at the end.
 *
 * Usage: bench_store_sqlite [N_CREWS]   (default 20000)
 * Output: one "store_sqlite.<metric> <value>" line per figure, for scripts to read.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"

#define DEFAULT_CREWS 20000L
#define LIST_PAGE 20

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A deterministic shuffle of lookups, so gets do not walk the B-tree in insertion order. */
static uint64_t next_rand(uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 33;
}

/* A definition of the size a five-agent crew has once normalized (about 2 KB). */
static char *make_definition(size_t *len_out)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    n += (size_t)snprintf(buf + n, cap - n, "{\"execution_mode\":\"sequential\",\"agents\":[");
    for (int i = 0; i < 5 && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n,
                              "%s{\"name\":\"agent_%d\",\"role\":\"researcher\",\"goal\":\"Find "
                              "and summarise the most relevant sources on the topic given by "
                              "the user, citing each one\",\"llm\":{\"provider\":\"openai\","
                              "\"model\":\"gpt-4o-mini\",\"temperature\":0.2,\"max_tokens\":"
                              "2048},\"tools\":[\"web_search\",\"fetch_url\"],\"system_prompt\""
                              ":\"You are a careful researcher. Answer in English, in short "
                              "paragraphs, and never invent a citation.\"}",
                              i ? "," : "", i);
    if (n < cap)
        n += (size_t)snprintf(buf + n, cap - n, "]}");
    *len_out = n < cap ? n : cap - 1;
    return buf;
}

static void report(const char *metric, long n, double secs)
{
    printf("store_sqlite.%s %.0f\n", metric, secs > 0 ? (double)n / secs : 0.0);
}

static void crew_id_of(long i, char out[ID_UUID_LEN])
{
    snprintf(out, ID_UUID_LEN, "00000000-0000-4000-8000-%012ld", i);
}

static int bench_gets(struct store *st, long n, enum store_lookup how, bool by_name,
                      const char *metric)
{
    uint64_t rng = 42;
    char ident[64];
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        long k = (long)(next_rand(&rng) % (uint64_t)n);
        if (by_name)
            snprintf(ident, sizeof ident, "crew-%ld", k);
        else
            crew_id_of(k, ident);
        struct store_crew *c = NULL;
        struct err e = {0};
        if (store_crew_get(st, ident, how, &c, &e) != 0) {
            fprintf(stderr, "bench: get %s: %s\n", ident, err_text(&e));
            return 1;
        }
        store_crew_free(c);
    }
    report(metric, n, now_s() - t0);
    return 0;
}

int main(int argc, char **argv)
{
    long n = DEFAULT_CREWS;
    if (argc > 1) {
        char *end;
        n = strtol(argv[1], &end, 10);
        if (*end != '\0' || n <= 0 || n > 100000000L) {
            fprintf(stderr, "usage: %s [N_CREWS]\n", argv[0]);
            return 2;
        }
    }
    const char *tmp = getenv("TMPDIR");
    char dir[512], path[600], url[620];
    snprintf(dir, sizeof dir, "%s/crewd-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("bench: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/crewd.db", dir);
    snprintf(url, sizeof url, "sqlite:%s", path);

    int ret = 1;
    struct store *st = NULL;
    size_t def_len = 0;
    char *definition = make_definition(&def_len);
    struct err e = {0};
    if (definition == NULL) {
        fprintf(stderr, "bench: out of memory\n");
        goto out;
    }
    if (store_open(url, &st, &e) != 0) {
        fprintf(stderr, "bench: %s\n", err_text(&e));
        goto out;
    }
    printf("store_sqlite.n_crews %ld\n", n);
    printf("store_sqlite.definition_bytes %zu\n", def_len);

    char name[64];
    struct store_crew c = {0};
    c.description = (char *)"benchmark crew";
    c.execution_mode = (char *)"sequential";
    c.agent_count = 5;
    c.definition = definition;
    c.plan = definition; /* a plan is of the same order of size */
    c.name = name;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        crew_id_of(i, c.crew_id);
        snprintf(name, sizeof name, "crew-%ld", i);
        clock_rfc3339_now(c.created_at);
        memcpy(c.updated_at, c.created_at, sizeof c.updated_at);
        if (store_crew_insert(st, &c, &e) != 0) {
            fprintf(stderr, "bench: insert: %s\n", err_text(&e));
            goto out;
        }
    }
    report("crew_insert_per_s", n, now_s() - t0);

    if (bench_gets(st, n, STORE_BY_ID, false, "crew_get_by_id_per_s") != 0 ||
        bench_gets(st, n, STORE_BY_NAME, true, "crew_get_by_name_per_s") != 0 ||
        /* The API's lookup given an id: a name miss first, then the id. */
        bench_gets(st, n, STORE_BY_NAME_OR_ID, false, "crew_get_name_or_id_given_id_per_s") != 0)
        goto out;

    long pages = n / 10 > 0 ? n / 10 : 1;
    t0 = now_s();
    for (long i = 0; i < pages; i++) {
        struct store_crew_page page = {0};
        long offset = (i * LIST_PAGE) % (n > LIST_PAGE ? n - LIST_PAGE : 1);
        if (store_crew_list(st, LIST_PAGE, offset, &page, &e) != 0) {
            fprintf(stderr, "bench: list: %s\n", err_text(&e));
            goto out;
        }
        store_crew_page_cleanup(&page);
    }
    report("crew_list_page20_per_s", pages, now_s() - t0);
    ret = 0;
out:
    store_close(st);
    free(definition);
    char side[640];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    rmdir(dir);
    return ret;
}
