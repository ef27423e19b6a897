/*
 * obs.c - see obs.h.
 *
 * Loop lag: a one-shot timer re-armed every OBS_LAG_PERIOD_MS notes how late it fired
 * against when it was due. A loop stuck in a slow store call (SQLite waiting out its busy
 * timeout, a PostgreSQL server that stopped answering) or a long computation shows up as a
 * late firing once it comes back; a stall still going on when /healthz is served (rare: the
 * request waits for the same loop) counts through the overdue time of the pending timer.
 */
#include "obs/obs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

/* Samples kept: more than the window holds at the timer's period. */
#define LAG_SAMPLES 32

struct lag_sample {
    int64_t at_ms; /* monotonic */
    long lag_ms;
};

struct obs {
    struct metrics *m;
    struct obs_gauges g;
    struct metrics_family *http_requests;
    struct metrics_family *llm_duration;
    struct metrics_family *llm_calls;
    struct metrics_family *llm_tokens;
    struct event *lag_ev;
    int64_t lag_due_ms; /* monotonic time the lag timer is due */
    struct lag_sample lag[LAG_SAMPLES];
    size_t lag_next;
};

static const double LLM_BUCKETS[] = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

static void arm_lag(struct obs *o)
{
    struct timeval tv = {0, OBS_LAG_PERIOD_MS * 1000};
    o->lag_due_ms = clock_mono_ms() + OBS_LAG_PERIOD_MS;
    evtimer_add(o->lag_ev, &tv);
}

static void on_lag(evutil_socket_t fd, short what, void *arg)
{
    struct obs *o = arg;
    int64_t now = clock_mono_ms();
    long late = now > o->lag_due_ms ? (long)(now - o->lag_due_ms) : 0;
    o->lag[o->lag_next] = (struct lag_sample){.at_ms = now, .lag_ms = late};
    o->lag_next = (o->lag_next + 1) % LAG_SAMPLES;
    arm_lag(o);
}

long obs_loop_lag_ms(const struct obs *o)
{
    int64_t now = clock_mono_ms();
    long worst = now > o->lag_due_ms ? (long)(now - o->lag_due_ms) : 0;
    for (size_t i = 0; i < LAG_SAMPLES; i++)
        if (o->lag[i].at_ms != 0 && now - o->lag[i].at_ms <= OBS_LAG_WINDOW_MS &&
            o->lag[i].lag_ms > worst)
            worst = o->lag[i].lag_ms;
    return worst;
}

/* A counter or gauge family; NULL when out of memory. */
static struct metrics_family *family(struct obs *o, enum metrics_type type, const char *name,
                                     const char *help, const char *const *labels, size_t n)
{
    return metrics_family_new(o->m, type, name, help, labels, n, NULL, 0);
}

int obs_new(struct event_base *base, const char *version, struct obs **out, struct err *e)
{
    static const char *const status_l[] = {"status"};
    static const char *const version_l[] = {"version"};
    static const char *const http_l[] = {"route", "method", "status"};
    static const char *const provider_l[] = {"provider"};
    static const char *const calls_l[] = {"provider", "outcome"};
    static const char *const tokens_l[] = {"provider", "kind"};
    *out = NULL;
    struct obs *o = calloc(1, sizeof *o);
    if (o == NULL || metrics_new(&o->m) != 0)
        goto nomem;
    struct metrics_family *build = family(o, METRICS_GAUGE, "crewd_build_info",
                                          "crewd's version; always 1", version_l, 1);
    o->g.jobs = family(o, METRICS_GAUGE, "crewd_jobs", "Jobs in the store, by status", status_l,
                       1);
    o->g.queue_depth = family(o, METRICS_GAUGE, "crewd_queue_depth",
                              "Pending jobs waiting to be claimed (all instances)", NULL, 0);
    o->g.running_here = family(o, METRICS_GAUGE, "crewd_jobs_running_here",
                               "Jobs this instance holds and runs now", NULL, 0);
    o->http_requests = family(o, METRICS_COUNTER, "crewd_http_requests_total",
                              "HTTP replies sent, by route pattern, method and status", http_l, 3);
    o->llm_duration = metrics_family_new(
        o->m, METRICS_HISTOGRAM, "crewd_llm_call_duration_seconds",
        "Duration of finished LLM calls, retries and queueing included", provider_l, 1,
        LLM_BUCKETS, sizeof LLM_BUCKETS / sizeof LLM_BUCKETS[0]);
    o->llm_calls = family(o, METRICS_COUNTER, "crewd_llm_calls_total",
                          "Finished LLM calls, by provider and outcome (ok, error)", calls_l, 2);
    o->llm_tokens = family(o, METRICS_COUNTER, "crewd_llm_tokens_total",
                           "Tokens used by successful LLM calls, by provider and kind (input, "
                           "output, cached, reasoning)",
                           tokens_l, 2);
    o->g.deliveries_pending =
        family(o, METRICS_GAUGE, "crewd_webhook_deliveries_pending",
               "Webhook deliveries waiting to be sent or retried (all instances)", NULL, 0);
    o->g.loop_lag = family(o, METRICS_GAUGE, "crewd_loop_lag_seconds",
                           "Worst lateness of the event loop's timer over the last 5 seconds",
                           NULL, 0);
    o->g.store_up = family(o, METRICS_GAUGE, "crewd_store_up",
                           "1 when the store answered this scrape's queries, else 0", NULL, 0);
    o->g.event_streams = family(o, METRICS_GAUGE, "crewd_event_streams_open",
                                "Job event streams (SSE) open on this instance", NULL, 0);
    if (build == NULL || o->g.jobs == NULL || o->g.queue_depth == NULL ||
        o->g.event_streams == NULL ||
        o->g.running_here == NULL || o->http_requests == NULL || o->llm_duration == NULL ||
        o->llm_calls == NULL || o->llm_tokens == NULL || o->g.deliveries_pending == NULL ||
        o->g.loop_lag == NULL || o->g.store_up == NULL)
        goto nomem;
    const char *v[1] = {version};
    metrics_gauge_set(build, v, 1);
    if ((o->lag_ev = evtimer_new(base, on_lag, o)) == NULL)
        goto nomem;
    arm_lag(o);
    *out = o;
    return 0;
nomem:
    obs_free(o);
    return err_set(e, ERR_NOMEM, "out of memory setting up metrics");
}

void obs_free(struct obs *o)
{
    if (o == NULL)
        return;
    if (o->lag_ev != NULL)
        event_free(o->lag_ev);
    metrics_free(o->m);
    free(o);
}

struct metrics *obs_metrics(struct obs *o)
{
    return o->m;
}

const struct obs_gauges *obs_gauges(struct obs *o)
{
    return &o->g;
}

void obs_http_reply(void *arg, const char *route, const char *method, int status)
{
    struct obs *o = arg;
    char code[16];
    snprintf(code, sizeof code, "%d", status);
    const char *v[3] = {route, method, code};
    metrics_counter_add(o->http_requests, v, 1);
}

void obs_llm_call(struct obs *o, const char *provider, bool ok, double seconds,
                  const struct obs_tokens *tokens)
{
    if (o == NULL)
        return;
    const char *p[1] = {provider};
    metrics_histogram_observe(o->llm_duration, p, seconds);
    const char *c[2] = {provider, ok ? "ok" : "error"};
    metrics_counter_add(o->llm_calls, c, 1);
    if (tokens == NULL)
        return;
    const struct {
        const char *kind;
        long n;
    } kinds[] = {{"input", tokens->input},
                 {"output", tokens->output},
                 {"cached", tokens->cached},
                 {"reasoning", tokens->reasoning}};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        const char *k[2] = {provider, kinds[i].kind};
        metrics_counter_add(o->llm_tokens, k, kinds[i].n > 0 ? (double)kinds[i].n : 0);
    }
}
