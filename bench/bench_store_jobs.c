/*
 * bench_store_jobs.c - throughput of the SQLite job queue through store.h, as a job manager
 * uses it from the loop thread: one autocommit transaction per insert, per checkpoint and
 * per finish (WAL, synchronous=NORMAL); claims of 64 jobs each in one BEGIN IMMEDIATE. The
 * request, definition and plan are about the size a five-agent crew has (2 KB each). The
 * database is a file in a fresh directory under $TMPDIR (default /tmp), removed at the end.
 *
 * Usage: bench_store_jobs [N_JOBS]   (default 20000)
 * Output: one "store_jobs.<metric> <value>" line per figure, for scripts to read.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "store/store.h"

#define DEFAULT_JOBS 20000L
#define CLAIM_BATCH 64
#define STEPS_PER_JOB 3

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void report(const char *metric, long n, double secs)
{
    printf("store_jobs.%s %.0f\n", metric, secs > 0 ? (double)n / secs : 0.0);
}

/* A JSON text of about `len` bytes. */
static char *make_blob(size_t len)
{
    char *buf = malloc(len + 1);
    if (buf == NULL)
        return NULL;
    memset(buf, 'x', len);
    memcpy(buf, "{\"k\":\"", 6);
    memcpy(buf + len - 2, "\"}", 2);
    buf[len] = '\0';
    return buf;
}

static void job_id_of(long i, char out[ID_UUID_LEN])
{
    snprintf(out, ID_UUID_LEN, "00000000-0000-4000-8000-%012ld", i);
}

int main(int argc, char **argv)
{
    long n = DEFAULT_JOBS;
    if (argc > 1) {
        char *end;
        n = strtol(argv[1], &end, 10);
        if (*end != '\0' || n <= 0 || n > 100000000L) {
            fprintf(stderr, "usage: %s [N_JOBS]\n", argv[0]);
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
    char *blob = make_blob(2048);
    char *step = make_blob(1024);
    long *order = calloc((size_t)n, sizeof *order);
    struct err e = {0};
    if (blob == NULL || step == NULL || order == NULL) {
        fprintf(stderr, "bench: out of memory\n");
        goto out;
    }
    if (store_open(url, &st, &e) != 0) {
        fprintf(stderr, "bench: %s\n", err_text(&e));
        goto out;
    }
    printf("store_jobs.n_jobs %ld\n", n);

    struct store_job j = {0};
    snprintf(j.crew_id, sizeof j.crew_id, "00000000-0000-4000-8000-00000000c0de");
    j.crew_name = (char *)"bench-crew";
    j.execution_mode = (char *)"sequential";
    j.request = blob;
    j.definition = blob;
    j.plan = blob;
    j.metadata = (char *)"{}";
    long long t_ms = clock_now_ms();
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        job_id_of(i, j.job_id);
        clock_rfc3339(t_ms, j.created_at);
        if (store_job_insert(st, &j, &e) != 0) {
            fprintf(stderr, "bench: insert: %s\n", err_text(&e));
            goto out;
        }
    }
    report("job_insert_per_s", n, now_s() - t0);

    /* Claims of 64 until the queue is empty; the ids are kept for the writes below. */
    long claimed = 0, claims = 0;
    t0 = now_s();
    for (;;) {
        struct store_job_batch b = {0};
        if (store_job_claim(st, "bench", t_ms, 60000, CLAIM_BATCH, &b, &e) != 0) {
            fprintf(stderr, "bench: claim: %s\n", err_text(&e));
            goto out;
        }
        claims++;
        for (size_t k = 0; k < b.n && claimed < n; k++)
            order[claimed++] = strtol(b.items[k]->job_id + 24, NULL, 10);
        size_t got = b.n;
        store_job_batch_cleanup(&b);
        if (got == 0)
            break;
    }
    double secs = now_s() - t0;
    if (claimed != n) {
        fprintf(stderr, "bench: claimed %ld of %ld jobs\n", claimed, n);
        goto out;
    }
    report("job_claim64_per_s", claims, secs);
    report("job_claimed_jobs_per_s", claimed, secs);

    char id[ID_UUID_LEN], key[32];
    t0 = now_s();
    for (long i = 0; i < n; i++) {
        job_id_of(order[i], id);
        for (int s = 0; s < STEPS_PER_JOB; s++) {
            snprintf(key, sizeof key, "agent:%d", s);
            if (store_job_step_put(st, id, "bench", key, step, NULL, 0, &e) != 0) {
                fprintf(stderr, "bench: step put: %s\n", err_text(&e));
                goto out;
            }
        }
    }
    report("job_step_put_per_s", n * STEPS_PER_JOB, now_s() - t0);

    t0 = now_s();
    for (long i = 0; i < n; i++) {
        job_id_of(order[i], id);
        if (store_job_finish(st, id, "bench", STORE_JOB_COMPLETED, step, NULL, t_ms, &e) != 0) {
            fprintf(stderr, "bench: finish: %s\n", err_text(&e));
            goto out;
        }
    }
    report("job_finish_per_s", n, now_s() - t0);

    /* The claim that finds nothing, over a table of n finished jobs: what an idle
     * instance pays on each poll. */
    long empty = n / 10 > 100 ? n / 10 : 100;
    t0 = now_s();
    for (long i = 0; i < empty; i++) {
        struct store_job_batch b = {0};
        if (store_job_claim(st, "bench", t_ms, 60000, CLAIM_BATCH, &b, &e) != 0 || b.n != 0) {
            fprintf(stderr, "bench: empty claim: %s\n", err_text(&e));
            store_job_batch_cleanup(&b);
            goto out;
        }
    }
    report("job_claim_empty_per_s", empty, now_s() - t0);
    ret = 0;
out:
    store_close(st);
    free(blob);
    free(step);
    free(order);
    char side[640];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    rmdir(dir);
    return ret;
}
