/* procs.c - see procs.h. */
#include "procs.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static char bin_dir[4096];

void bench_die(const char *what)
{
    fprintf(stderr, "bench: %s\n", what);
    exit(1);
}

const char *bench_bin_dir(void)
{
    if (bin_dir[0] == '\0') {
        ssize_t len = readlink("/proc/self/exe", bin_dir, sizeof bin_dir - 1);
        if (len <= 0)
            bench_die("readlink /proc/self/exe");
        bin_dir[len] = '\0';
        *strrchr(bin_dir, '/') = '\0';
    }
    return bin_dir;
}

struct proc bench_spawn_server(char *const argv[])
{
    int fds[2];
    if (pipe(fds) != 0)
        bench_die("pipe");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    struct proc p = {0};
    if (posix_spawn(&p.pid, argv[0], &fa, NULL, argv, environ) != 0)
        bench_die("cannot start a server (build with make bench)");
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    FILE *out = fdopen(fds[0], "r");
    char line[256];
    while (out != NULL && fgets(line, sizeof line, out) != NULL) {
        const char *colon = strrchr(line, ':');
        if (strncmp(line, "listening on ", 13) == 0 && colon != NULL) {
            p.port = (int)strtol(colon + 1, NULL, 10);
            break;
        }
    }
    if (p.port == 0)
        bench_die("a server did not start");
    /* Keep the pipe open (the servers print nothing more); closed when we exit. */
    return p;
}

struct buf {
    char *data;
    size_t len;
};

static size_t on_data(char *ptr, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    char *grown = realloc(b->data, b->len + size * n + 1);
    if (grown == NULL)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, ptr, size * n);
    b->len += size * n;
    b->data[b->len] = '\0';
    return size * n;
}

json_t *bench_http(CURL *c, const char *method, int port, const char *path, const char *body,
                   long *status)
{
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    struct buf b = {0};
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_HTTPGET, body == NULL ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    if (curl_easy_perform(c) != CURLE_OK)
        bench_die("HTTP request failed");
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
    curl_slist_free_all(h);
    json_t *j = b.data ? json_loads(b.data, 0, NULL) : NULL;
    free(b.data);
    return j;
}

long bench_proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, strlen(field)) == 0)
            v = strtol(line + strlen(field) + 1, NULL, 10);
    if (f)
        fclose(f);
    return v;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_percentile(double *v, long n, double p)
{
    if (n <= 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    long i = (long)(p * (double)(n - 1) + 0.5);
    return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}
