/*
 * bench_jobs.c - jobs end to end: the real crewd and crewd-fakellm binaries (next to this
 * program), a 3-agent sequential crew, N jobs submitted over HTTP with at most C running at
 * once (--max-running-jobs C), against the fake at a given latency.
 *
 * Jobs are submitted by SUBMITTERS client threads at once. Prints "jobs.<metric> <value>" lines: jobs/s and agent steps/s (from the first job's
 * created_at to the last one's completed_at, server-side times), p50/p99 job latency (started
 * to completed, and created to completed), the most jobs running at once (sampled from
 * /healthz) and LLM calls at the fake at once, crewd's peak RSS, and peak RSS growth per job
 * running.
 *
 * Usage: bench_jobs [N [C [LATENCY_MS [STORE_DIR]]]]   (defaults 3000, 256, 0, a temp dir)
 */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

#include "procs.h"

#define SUBMITTERS 4
#define LLM_HOST_CONNECTIONS 512

/* Samples crewd's /healthz for the most jobs running at once, until told to stop. */
struct sampler {
    pthread_t thread;
    int port;
    volatile int stop;
    long max_running;
};


static void *sample(void *arg)
{
    struct sampler *s = arg;
    CURL *c = curl_easy_init();
    long st;
    while (!s->stop) {
        json_t *h = bench_http(c, "GET", s->port, "/healthz", NULL, &st);
        long r = (long)json_integer_value(json_object_get(h, "jobs_running"));
        if (r > s->max_running)
            s->max_running = r;
        json_decref(h);
        struct timespec ts = {0, 20000000};
        nanosleep(&ts, NULL);
    }
    curl_easy_cleanup(c);
    return NULL;
}

struct submitter {
    pthread_t thread;
    int port;
    long first, count;
    char **ids;
};

/* Submits jobs first..first+count-1 on its own keep-alive connection. */
static void *submit(void *arg)
{
    struct submitter *s = arg;
    CURL *c = curl_easy_init();
    char body[256];
    long st;
    for (long i = s->first; i < s->first + s->count; i++) {
        snprintf(body, sizeof body, "{\"crew_id\":\"bench\",\"query\":\"question %ld\"}", i);
        json_t *r = bench_http(c, "POST", s->port, "/api/v1/crew/execute", body, &st);
        if (st != 202 || r == NULL)
            bench_die("execute failed");
        s->ids[i] = strdup(json_string_value(json_object_get(r, "job_id")));
        json_decref(r);
    }
    curl_easy_cleanup(c);
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 3000;
    long conc = argc > 2 ? strtol(argv[2], NULL, 10) : 256;
    long latency = argc > 3 ? strtol(argv[3], NULL, 10) : 0;
    char tmpl[] = "/tmp/crewd-bench-XXXXXX";
    const char *dir = argc > 4 ? argv[4] : mkdtemp(tmpl);
    if (n <= 0 || conc <= 0 || dir == NULL)
        bench_die("usage: bench_jobs [N [C [LATENCY_MS [STORE_DIR]]]]");

    const char *bin_dir = bench_bin_dir();

    char fake_bin[4200], crewd_bin[4200], lat[32], store[4200], cap[32], conns[32];
    snprintf(fake_bin, sizeof fake_bin, "%s/crewd-fakellm", bin_dir);
    snprintf(crewd_bin, sizeof crewd_bin, "%s/crewd", bin_dir);
    snprintf(lat, sizeof lat, "%ld", latency);
    snprintf(store, sizeof store, "sqlite:%s/bench.db", dir);
    snprintf(cap, sizeof cap, "%ld", conc);
    /* A realistic per-host cap: jobs beyond it wait for a connection inside crewd, as they
     * would for a provider's concurrency limit. */
    snprintf(conns, sizeof conns, "%d", LLM_HOST_CONNECTIONS);
    char *fake_argv[] = {fake_bin, "--latency-ms", lat, "--log-bodies", "0", NULL};
    struct proc fake = bench_spawn_server(fake_argv);
    char *crewd_argv[] = {crewd_bin,
                          "--store",
                          store,
                          "--listen",
                          "127.0.0.1:0",
                          "--log-level",
                          "warn",
                          "--max-running-jobs",
                          cap,
                          "--llm-max-host-connections",
                          conns,
                          "--llm-base-url-allow",
                          "127.0.0.1",
                          NULL};
    struct proc crewd = bench_spawn_server(crewd_argv);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    long st;
    char body[2048];
    snprintf(body, sizeof body,
             "{\"name\":\"bench\",\"agents\":["
             "{\"agent_id\":\"a\",\"config\":{\"llm\":\"openai\",\"model\":\"m\",\"base_url\":"
             "\"http://127.0.0.1:%d/v1\"},\"system_prompt\":\"You are a.\"},"
             "{\"agent_id\":\"b\",\"config\":{\"llm\":\"openai\",\"model\":\"m\",\"base_url\":"
             "\"http://127.0.0.1:%d/v1\"},\"system_prompt\":\"You are b.\"},"
             "{\"agent_id\":\"c\",\"config\":{\"llm\":\"openai\",\"model\":\"m\",\"base_url\":"
             "\"http://127.0.0.1:%d/v1\"},\"system_prompt\":\"You are c.\"}]}",
             fake.port, fake.port, fake.port);
    json_decref(bench_http(c, "PUT", crewd.port, "/api/v1/crew", body, &st));
    if (st != 201)
        bench_die("crew create failed");
    long rss_base = bench_proc_kb(crewd.pid, "VmRSS:");

    struct sampler sampler = {.port = crewd.port};
    pthread_create(&sampler.thread, NULL, sample, &sampler);
    char **ids = calloc((size_t)n, sizeof *ids);
    int64_t t0 = clock_mono_ms();
    /* Several clients, so that submitting is not what limits the figures. */
    struct submitter subs[SUBMITTERS];
    for (int k = 0; k < SUBMITTERS; k++) {
        subs[k] = (struct submitter){.port = crewd.port,
                                     .first = n * k / SUBMITTERS,
                                     .count = n * (k + 1) / SUBMITTERS - n * k / SUBMITTERS,
                                     .ids = ids};
        pthread_create(&subs[k].thread, NULL, submit, &subs[k]);
    }
    for (int k = 0; k < SUBMITTERS; k++)
        pthread_join(subs[k].thread, NULL);
    int64_t t_submit = clock_mono_ms() - t0;

    double *run_lat = calloc((size_t)n, sizeof *run_lat);
    double *e2e_lat = calloc((size_t)n, sizeof *e2e_lat);
    int64_t first_created = INT64_MAX, last_completed = 0;
    long failed = 0;
    for (long i = 0; i < n; i++) {
        char path[128];
        snprintf(path, sizeof path, "/api/v1/crew/job/%s", ids[i]);
        for (;;) {
            json_t *j = bench_http(c, "GET", crewd.port, path, NULL, &st);
            const char *s = json_string_value(json_object_get(j, "status"));
            if (s != NULL && (strcmp(s, "completed") == 0 || strcmp(s, "failed") == 0)) {
                int64_t cr, sa, co;
                clock_parse_rfc3339(json_string_value(json_object_get(j, "created_at")), &cr);
                clock_parse_rfc3339(json_string_value(json_object_get(j, "started_at")), &sa);
                clock_parse_rfc3339(json_string_value(json_object_get(j, "completed_at")), &co);
                run_lat[i] = (double)(co - sa);
                e2e_lat[i] = (double)(co - cr);
                if (cr < first_created)
                    first_created = cr;
                if (co > last_completed)
                    last_completed = co;
                failed += strcmp(s, "failed") == 0;
                json_decref(j);
                break;
            }
            json_decref(j);
            struct timespec ts = {0, 2000000};
            nanosleep(&ts, NULL);
        }
    }
    long rss_peak = bench_proc_kb(crewd.pid, "VmHWM:");
    sampler.stop = 1;
    pthread_join(sampler.thread, NULL);
    /* Jobs in flight at once: crewd's own count of running jobs (sampled), and the fake's
     * peak of concurrent calls (bounded by the per-host connection cap). */
    json_t *fs = bench_http(c, "GET", fake.port, "/_fake/stats", NULL, &st);
    long max_calls = (long)json_integer_value(json_object_get(fs, "max_in_flight"));
    json_decref(fs);
    long max_in_flight = sampler.max_running;
    double span_s = (double)(last_completed - first_created) / 1000.0;
    long in_flight = max_in_flight > 0 ? max_in_flight : 1;

    printf("jobs.n %ld\njobs.concurrency %ld\njobs.llm_latency_ms %ld\n", n, conc, latency);
    printf("jobs.failed %ld\n", failed);
    printf("jobs.submit_per_s %.0f\n", (double)n / ((double)t_submit / 1000.0 + 1e-9));
    printf("jobs.jobs_per_s %.1f\n", (double)n / (span_s > 0 ? span_s : 1e-3));
    printf("jobs.agent_steps_per_s %.1f\n", 3.0 * (double)n / (span_s > 0 ? span_s : 1e-3));
    printf("jobs.run_latency_p50_ms %.0f\njobs.run_latency_p99_ms %.0f\n", bench_percentile(run_lat, n, .5),
           bench_percentile(run_lat, n, .99));
    printf("jobs.e2e_latency_p50_ms %.0f\njobs.e2e_latency_p99_ms %.0f\n", bench_percentile(e2e_lat, n, .5),
           bench_percentile(e2e_lat, n, .99));
    printf("jobs.max_jobs_running %ld\njobs.max_llm_calls_at_fake %ld\n", max_in_flight,
           max_calls);
    printf("jobs.rss_base_kb %ld\njobs.rss_peak_kb %ld\n", rss_base, rss_peak);
    printf("jobs.rss_per_running_job_kb %.1f\n",
           (double)(rss_peak - rss_base) / (double)in_flight);

    for (long i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    free(run_lat);
    free(e2e_lat);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    kill(crewd.pid, SIGTERM);
    kill(fake.pid, SIGTERM);
    waitpid(crewd.pid, NULL, 0);
    waitpid(fake.pid, NULL, 0);
    return failed == 0 ? 0 : 1;
}
