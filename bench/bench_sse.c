/*
 * bench_sse.c - event streams at scale: the real crewd and crewd-fakellm binaries (next to
 * this program), J jobs of a 2-agent crew whose second agent's call takes DELAY_MS, and S
 * event streams (GET /api/v1/crew/job/{id}/events) spread over the jobs, all open at once
 * from one thread (poll over non-blocking sockets).
 *
 * Prints "sse.<metric> <value>" lines: the streams opened and those that ended with the job's
 * terminal event, the events delivered, whether every reader of a job got the same sequence,
 * crewd's memory growth per open stream (RSS once all streams are open, over RSS before), and
 * the delivery latency of the terminal event (from its created_at in the store to the moment
 * the reader has it) at p50, p99 and max.
 *
 * Usage: bench_sse [S [J [DELAY_MS]]]   (defaults 2000, 20, 3000)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "procs.h"

#define WAIT_LIMIT_MS 120000

struct reader {
    int fd;
    long job;
    char *buf; /* everything received, headers included */
    size_t len, cap;
    bool open;  /* got the first bytes of the body */
    bool ended; /* the server closed the stream */
    int64_t terminal_ms; /* when "event: job." terminal first appeared; 0: not yet */
};

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        bench_die("cannot connect to crewd (raise ulimit -n?)");
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

static void append(struct reader *r, const char *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 4096;
        while (cap < r->len + n + 1)
            cap *= 2;
        if ((r->buf = realloc(r->buf, cap)) == NULL)
            bench_die("out of memory");
        r->cap = cap;
    }
    memcpy(r->buf + r->len, p, n);
    r->len += n;
    r->buf[r->len] = '\0';
}

/* Reads what is there; returns false once the stream is over: its last chunk came (the
 * connection itself stays open for another request) or the peer closed. */
static bool pump(struct reader *r)
{
    char chunk[16384];
    for (;;) {
        ssize_t n = read(r->fd, chunk, sizeof chunk);
        if (n > 0) {
            size_t from = r->len > 64 ? r->len - 64 : 0;
            append(r, chunk, (size_t)n);
            r->open = true;
            if (r->terminal_ms == 0 && (strstr(r->buf + from, "event: job.completed") ||
                                        strstr(r->buf + from, "event: job.failed")))
                r->terminal_ms = clock_now_ms();
            if (r->len >= 7 && memcmp(r->buf + r->len - 7, "\r\n0\r\n\r\n", 7) == 0)
                return false;
            continue;
        }
        if (n == 0)
            return false;
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    }
}

/* The events of a stream: its "id: N" lines. */
static long count_events(const struct reader *r)
{
    long n = 0;
    for (const char *p = r->buf; (p = strstr(p, "\nid: ")) != NULL; p++)
        n++;
    return n;
}

/* The created_at of the terminal event in the stream, from its data line. */
static int64_t terminal_created(const struct reader *r)
{
    const char *p = strstr(r->buf, "event: job.completed");
    if (p == NULL)
        p = strstr(r->buf, "event: job.failed");
    const char *c = p ? strstr(p, "\"created_at\":\"") : NULL;
    int64_t ms = 0;
    char ts[32] = {0};
    if (c != NULL) {
        memcpy(ts, c + 14, 24);
        clock_parse_rfc3339(ts, &ms);
    }
    return ms;
}

int main(int argc, char **argv)
{
    long n_streams = argc > 1 ? strtol(argv[1], NULL, 10) : 2000;
    long n_jobs = argc > 2 ? strtol(argv[2], NULL, 10) : 20;
    long delay = argc > 3 ? strtol(argv[3], NULL, 10) : 3000;
    if (n_streams <= 0 || n_jobs <= 0 || delay < 0)
        bench_die("usage: bench_sse [S [J [DELAY_MS]]]");
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    char tmpl[] = "/tmp/crewd-bench-XXXXXX";
    const char *dir = mkdtemp(tmpl);
    if (dir == NULL)
        bench_die("mkdtemp");
    const char *bin = bench_bin_dir();
    char fake_bin[4200], crewd_bin[4200], store[4200], max_streams[32];
    snprintf(fake_bin, sizeof fake_bin, "%s/crewd-fakellm", bin);
    snprintf(crewd_bin, sizeof crewd_bin, "%s/crewd", bin);
    snprintf(store, sizeof store, "sqlite:%s/bench.db", dir);
    snprintf(max_streams, sizeof max_streams, "%ld", n_streams + 100);
    char *fake_argv[] = {fake_bin, "--log-bodies", "0", NULL};
    struct proc fake = bench_spawn_server(fake_argv);
    char *crewd_argv[] = {crewd_bin,
                          "--store",
                          store,
                          "--listen",
                          "127.0.0.1:0",
                          "--log-level",
                          "warn",
                          "--sse-max-streams",
                          max_streams,
                          "--llm-base-url-allow",
                          "127.0.0.1",
                          NULL};
    struct proc crewd = bench_spawn_server(crewd_argv);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    long st;
    char body[2048];
    snprintf(body, sizeof body,
             "{\"name\":\"bench-sse\",\"agents\":["
             "{\"agent_id\":\"a\",\"config\":{\"llm\":\"openai\",\"model\":\"m\",\"base_url\":"
             "\"http://127.0.0.1:%d/v1\"},\"system_prompt\":\"You are a.\"},"
             "{\"agent_id\":\"b\",\"config\":{\"llm\":\"openai\",\"model\":\"m\",\"base_url\":"
             "\"http://127.0.0.1:%d/v1\"},\"system_prompt\":\"You are b. [[fake:delay_ms=%ld]]\"}]}",
             fake.port, fake.port, delay);
    json_decref(bench_http(c, "PUT", crewd.port, "/api/v1/crew", body, &st));
    if (st != 201)
        bench_die("crew create failed");
    char **ids = calloc((size_t)n_jobs, sizeof *ids);
    for (long j = 0; j < n_jobs; j++) {
        snprintf(body, sizeof body, "{\"crew_id\":\"bench-sse\",\"query\":\"job %ld\"}", j);
        json_t *acc = bench_http(c, "POST", crewd.port, "/api/v1/crew/execute", body, &st);
        if (st != 202)
            bench_die("execute failed");
        ids[j] = strdup(json_string_value(json_object_get(acc, "job_id")));
        json_decref(acc);
    }
    long rss_before = bench_proc_kb(crewd.pid, "VmRSS:");

    struct reader *rd = calloc((size_t)n_streams, sizeof *rd);
    struct pollfd *pfd = calloc((size_t)n_streams, sizeof *pfd);
    if (rd == NULL || pfd == NULL)
        bench_die("out of memory");
    for (long i = 0; i < n_streams; i++) {
        rd[i].job = i % n_jobs;
        rd[i].fd = connect_to(crewd.port);
        char req[256];
        int n = snprintf(req, sizeof req,
                         "GET /api/v1/crew/job/%s/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Accept: text/event-stream\r\n\r\n",
                         ids[rd[i].job]);
        if (write(rd[i].fd, req, (size_t)n) != n)
            bench_die("cannot send a request");
    }
    int64_t t0 = clock_mono_ms();
    long rss_open = -1, opened = 0, ended = 0;
    while (ended < n_streams && clock_mono_ms() - t0 < WAIT_LIMIT_MS) {
        for (long i = 0; i < n_streams; i++)
            pfd[i] = (struct pollfd){.fd = rd[i].ended ? -1 : rd[i].fd, .events = POLLIN};
        if (poll(pfd, (nfds_t)n_streams, 1000) < 0 && errno != EINTR)
            bench_die("poll");
        for (long i = 0; i < n_streams; i++) {
            if (rd[i].ended || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            bool was_open = rd[i].open;
            if (!pump(&rd[i])) {
                rd[i].ended = true;
                close(rd[i].fd);
                ended++;
            }
            if (!was_open && rd[i].open && ++opened == n_streams)
                rss_open = bench_proc_kb(crewd.pid, "VmRSS:");
        }
    }

    long complete = 0, events = 0, same = 1;
    long *per_job = calloc((size_t)n_jobs, sizeof *per_job);
    double *lat = calloc((size_t)n_streams, sizeof *lat);
    long n_lat = 0;
    for (long i = 0; i < n_streams; i++) {
        long k = count_events(&rd[i]);
        events += k;
        if (per_job[rd[i].job] == 0)
            per_job[rd[i].job] = k;
        else if (per_job[rd[i].job] != k)
            same = 0;
        if (rd[i].terminal_ms > 0) {
            complete++;
            int64_t created = terminal_created(&rd[i]);
            if (created > 0)
                lat[n_lat++] = (double)(rd[i].terminal_ms - created);
        }
    }
    printf("sse.streams %ld\nsse.jobs %ld\nsse.llm_delay_ms %ld\n", n_streams, n_jobs, delay);
    printf("sse.streams_opened %ld\nsse.streams_complete %ld\n", opened, complete);
    printf("sse.events_delivered %ld\nsse.same_sequence_per_job %ld\n", events, same);
    if (rss_open > 0)
        printf("sse.rss_per_stream_kb %.1f\n",
               (double)(rss_open - rss_before) / (double)n_streams);
    printf("sse.terminal_latency_p50_ms %.0f\nsse.terminal_latency_p99_ms %.0f\n"
           "sse.terminal_latency_max_ms %.0f\n",
           bench_percentile(lat, n_lat, .5), bench_percentile(lat, n_lat, .99),
           bench_percentile(lat, n_lat, 1));
    kill(crewd.pid, SIGTERM);
    kill(fake.pid, SIGTERM);
    return complete == n_streams && same ? 0 : 1;
}
