/*
 * bench_http_crews.c - the crew API over real HTTP on 127.0.0.1: requests per second and
 * latency percentiles for create (PUT), get one (GET by name) and list (GET, 100 per page),
 * and the server's resident memory once the crews exist.
 *
 * The server runs in this process on its own loop thread (the same code the daemon runs:
 * http/server + api + a SQLite file store in a temporary directory); CLIENTS client threads
 * each hold one keep-alive connection and send requests back to back.
 *
 * Usage: bench_http_crews [N_CREWS [CLIENTS]]   (defaults 5000 and 4)
 * Prints "http_crews.<metric> <value>" lines.
 */
#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/server.h"
#include "store/store.h"
#include "tools/registry.h"

struct client {
    pthread_t thread;
    int port;
    int id;
    long first, count; /* crew indexes this client handles */
    const char *phase; /* "create", "get", "list" */
    double *lat_ms;    /* one per request */
    long failures;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("connect");
        exit(1);
    }
    return fd;
}

/* Sends one request and reads one response (Content-Length framed). Returns the status. */
static int roundtrip(int fd, const char *req, size_t len)
{
    static __thread char buf[1 << 20];
    if (send(fd, req, len, MSG_NOSIGNAL) != (ssize_t)len)
        return -1;
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + have, sizeof buf - have - 1, 0);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        buf[have] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end == NULL)
            continue;
        char *cl = strstr(buf, "Content-Length: ");
        size_t body = cl ? strtoul(cl + 16, NULL, 10) : 0;
        if (have >= (size_t)(end + 4 - buf) + body)
            return (int)strtol(buf + 9, NULL, 10);
    }
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    int fd = connect_to(c->port);
    char body[1024], req[2048];
    for (long i = 0; i < c->count; i++) {
        long k = c->first + i;
        int len;
        if (strcmp(c->phase, "create") == 0) {
            int blen = snprintf(body, sizeof body,
                                "{\"name\":\"crew-%ld\",\"execution_mode\":\"flow\",\"agents\":["
                                "{\"agent_id\":\"research\",\"config\":{\"model\":\"gpt-4o\"},"
                                "\"tools\":[\"http_get\"]},{\"agent_id\":\"write\",\"config\":"
                                "{\"model\":\"claude-sonnet-4-5\"}}],\"flow_relations\":[{"
                                "\"source\":\"research\",\"target\":\"write\"}]}",
                                k);
            len = snprintf(req, sizeof req,
                           "PUT /api/v1/crew HTTP/1.1\r\nHost: b\r\nContent-Type: "
                           "application/json\r\nContent-Length: %d\r\n\r\n%s",
                           blen, body);
        } else if (strcmp(c->phase, "get") == 0) {
            len = snprintf(req, sizeof req, "GET /api/v1/crew/crew-%ld HTTP/1.1\r\nHost: b\r\n\r\n",
                           k);
        } else {
            len = snprintf(req, sizeof req,
                           "GET /api/v1/crew?limit=100&offset=%ld HTTP/1.1\r\nHost: b\r\n\r\n",
                           (k * 100) % 5000);
        }
        int64_t t0 = now_us();
        int status = roundtrip(fd, req, (size_t)len);
        c->lat_ms[i] = (double)(now_us() - t0) / 1000.0;
        if (status != 200 && status != 201)
            c->failures++;
    }
    close(fd);
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

static void run_phase(const char *phase, int port, long n, int n_clients)
{
    struct client *cs = calloc((size_t)n_clients, sizeof *cs);
    double *all = calloc((size_t)n, sizeof *all);
    long per = n / n_clients;
    int64_t t0 = now_us();
    for (int i = 0; i < n_clients; i++) {
        cs[i] = (struct client){.port = port,
                                .id = i,
                                .first = i * per,
                                .count = i == n_clients - 1 ? n - i * per : per,
                                .phase = phase};
        cs[i].lat_ms = all + i * per;
        pthread_create(&cs[i].thread, NULL, client_main, &cs[i]);
    }
    long failures = 0;
    for (int i = 0; i < n_clients; i++) {
        pthread_join(cs[i].thread, NULL);
        failures += cs[i].failures;
    }
    double secs = (double)(now_us() - t0) / 1e6;
    qsort(all, (size_t)n, sizeof *all, cmp_double);
    printf("http_crews.%s_per_s %.0f\n", phase, (double)n / secs);
    printf("http_crews.%s_p50_ms %.3f\n", phase, all[n / 2]);
    printf("http_crews.%s_p99_ms %.3f\n", phase, all[(n * 99) / 100]);
    printf("http_crews.%s_failures %ld\n", phase, failures);
    free(all);
    free(cs);
}

static void *loop_main(void *arg)
{
    event_base_dispatch(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? strtol(argv[1], NULL, 10) : 5000;
    int n_clients = argc > 2 ? (int)strtol(argv[2], NULL, 10) : 4;
    if (n < 100 || n_clients < 1 || n_clients > 64) {
        fprintf(stderr, "usage: bench_http_crews [N_CREWS>=100 [CLIENTS 1..64]]\n");
        return 2;
    }
    log_set_level(LOG_ERROR);
    char dir[] = "/tmp/crewd-bench-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    char url[256];
    snprintf(url, sizeof url, "sqlite:%s/crewd.db", dir);
    struct err e = {0};
    struct store *st = NULL;
    struct tool_registry *tools = NULL;
    struct event_base *base = event_base_new();
    if (store_open(url, &st, &e) != 0 || tool_registry_new(&tools) != 0) {
        fprintf(stderr, "set-up: %s\n", err_text(&e));
        return 1;
    }
    struct api_ctx ctx = {.store = st, .tools = tools, .default_provider = "openai"};
    struct http_server_opts opts = {.host = "127.0.0.1", .handler_arg = &ctx};
    opts.routes = api_routes(&opts.n_routes);
    struct http_server *srv = NULL;
    if (http_server_new(base, &opts, &srv, &e) != 0) {
        fprintf(stderr, "server: %s\n", err_text(&e));
        return 1;
    }
    long rss_before = rss_kb();
    pthread_t loop;
    pthread_create(&loop, NULL, loop_main, base);
    printf("http_crews.crews %ld\nhttp_crews.clients %d\n", n, n_clients);
    run_phase("create", http_server_port(srv), n, n_clients);
    run_phase("get", http_server_port(srv), n, n_clients);
    run_phase("list", http_server_port(srv), n / 10, n_clients);
    printf("http_crews.rss_growth_kb %ld\n", rss_kb() - rss_before);
    /* The loop thread is blocked in dispatch; the process exit ends it. The temporary
     * database is removed first. */
    char path[300];
    const char *suffixes[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/crewd.db%s", dir, suffixes[i]);
        unlink(path);
    }
    rmdir(dir);
    fflush(stdout);
    _exit(0);
}
