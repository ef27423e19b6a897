/*
 * procs.h - what the end-to-end benchmarks share: starting the real servers next to the
 * benchmark binary, one HTTP request with libcurl, a process's memory, percentiles.
 */
#ifndef CREWD_BENCH_PROCS_H
#define CREWD_BENCH_PROCS_H

#include <curl/curl.h>
#include <jansson.h>
#include <sys/types.h>

struct proc {
    pid_t pid;
    int port;
};

/* Prints "<prog>: what" on stderr and exits 1. */
void bench_die(const char *what) __attribute__((noreturn));

/* The directory of the running benchmark (where crewd and crewd-fakellm are built). */
const char *bench_bin_dir(void);

/* Starts `argv` with stdout on a pipe and returns once it printed "listening on H:PORT". */
struct proc bench_spawn_server(char *const argv[]);

/* One HTTP request to 127.0.0.1:port on a reused handle (body NULL: none); the parsed JSON
 * body (NULL if none) and *status. Dies when the request fails. */
json_t *bench_http(CURL *c, const char *method, int port, const char *path, const char *body,
                   long *status);

/* A field of /proc/PID/status in kB ("VmRSS:", "VmHWM:"), or -1. */
long bench_proc_kb(pid_t pid, const char *field);

/* Sorts v[0..n) and returns the p-th percentile (0..1) of it. */
double bench_percentile(double *v, long n, double p);

#endif
