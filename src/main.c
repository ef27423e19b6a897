/*
 * main.c - argv, configuration, signals, the loop; nothing else.
 *
 * Start-up order: configuration (exit 2 on a bad one), the store (exit 1 if it cannot be
 * opened: nothing may be accepted that cannot be kept), the tool registry, the LLM client,
 * the job manager and the webhook dispatcher, then the HTTP server; claiming starts once the listener is up. Only when the listener is bound does crewd print "listening on HOST:PORT" on
 * stdout, which scripts and tests wait for. SIGTERM and SIGINT end the loop; everything is
 * then closed in reverse order, so leak checkers see a clean exit.
 */
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "api/api.h"
#include "app/config.h"
#include "core/log.h"
#include "events/hub.h"
#include "http/server.h"
#include "jobs/jobs.h"
#include "llm/llm.h"
#include "llm/price.h"
#include "model/job.h"
#include "model/plan.h"
#include "obs/obs.h"
#include "store/store.h"
#include "tools/registry.h"
#include "tools/runner.h"
#include "webhooks/webhooks.h"

/* Graceful shutdown: the first SIGTERM or SIGINT stops accepting connections and lets the
 * jobs' steps in flight finish (jobs_drain, at most --shutdown-grace-ms); then the loop ends
 * and everything is released. A second signal ends the loop at once. */
struct stopping {
    struct event_base *base;
    struct http_server *server;
    struct jobs *jobs;
    long grace_ms;
    bool draining;
};

static void on_drained(void *arg)
{
    struct stopping *sd = arg;
    event_base_loopexit(sd->base, NULL);
}

static void on_signal(evutil_socket_t sig, short events, void *arg)
{
    struct stopping *sd = arg;
    if (sd->draining || sd->jobs == NULL) {
        log_info("main", "signal %d: stopping now", (int)sig);
        event_base_loopexit(sd->base, NULL);
        return;
    }
    sd->draining = true;
    log_info("main", "signal %d: stopping (no new connections; steps in flight may finish "
                     "for %ld ms; a second signal stops at once)",
             (int)sig, sd->grace_ms);
    http_server_stop_accepting(sd->server);
    jobs_drain(sd->jobs, sd->grace_ms, on_drained, sd);
}

/* Who hears that a job has new events: the event streams' hub (and the webhooks). */
struct listeners {
    struct event_hub *hub;
    struct webhooks *webhooks;
};

static void on_job_events(void *arg, const char *job_id, bool delivery)
{
    struct listeners *l = arg;
    event_hub_notify(l->hub, job_id);
    /* A claim is a store write: only when there may be something to claim. */
    if (delivery && l->webhooks != NULL)
        webhooks_wake(l->webhooks);
}

static const char *env_get(const char *name)
{
    return getenv(name);
}

/* libevent writes its own warnings to stderr in its own format; put them in crewd's log. */
static void on_libevent_log(int severity, const char *msg)
{
    log_msg(severity >= EVENT_LOG_WARN ? LOG_WARN : LOG_DEBUG, "libevent", "%s", msg);
}

/* Each open stream (SSE) holds a connection, and thousands of them must not meet the usual
 * soft limit of 1024 descriptors: raise it to the hard limit, which only root could raise. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t old = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("main", "cannot raise the open file limit from %llu to %llu",
                     (unsigned long long)old, (unsigned long long)rl.rlim_max);
            return;
        }
    }
    log_debug("main", "open file limit: %llu", (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    int status = 1;
    struct config cfg;
    struct err e = {0};
    enum config_action action;
    struct store *store = NULL;
    struct tool_registry *tools = NULL;
    struct event_base *base = NULL;
    struct http_server *server = NULL;
    struct llm_client *llm = NULL;
    struct tool_runner *runner = NULL;
    struct llm_prices *prices = NULL;
    struct jobs *jobs = NULL;
    struct event_hub *hub = NULL;
    struct api_sse *sse = NULL;
    struct listeners listeners = {0};
    struct webhooks *webhooks = NULL;
    struct obs *obs = NULL;
    struct event *sigterm = NULL, *sigint = NULL;
    struct stopping stopping = {0};

    if (config_load(&cfg, argc, argv, env_get, &action, &e) != 0) {
        fprintf(stderr, "crewd: %s\n", err_text(&e));
        config_cleanup(&cfg);
        return 2;
    }
    if (action == CONFIG_HELP) {
        config_usage(stdout, "crewd");
        config_cleanup(&cfg);
        return 0;
    }
    if (action == CONFIG_VERSION) {
        printf("crewd %s\n", CREWD_VERSION);
        config_cleanup(&cfg);
        return 0;
    }
    log_set_level(cfg.log_level);
    event_set_log_callback(on_libevent_log);
    /* A client that disconnects mid-reply must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    if (store_open(cfg.store, &store, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    if (tool_registry_new(&tools) != 0) {
        log_error("main", "out of memory building the tool registry");
        goto out;
    }
    if (api_tools_load(store, tools, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    if ((base = event_base_new()) == NULL) {
        log_error("main", "cannot create the event loop");
        goto out;
    }
    if (obs_new(base, CREWD_VERSION, &obs, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }

    /* --llm-limit values were checked when read; parsed here for the client, which copies. */
    struct config_llm_limit parsed[LLM_MAX_LIMITS];
    struct llm_limit limits[LLM_MAX_LIMITS];
    size_t n_limits = 0;
    for (size_t i = 0; i < cfg.n_llm_limits && n_limits < LLM_MAX_LIMITS; i++) {
        if (config_parse_llm_limit(cfg.llm_limits[i], strlen(cfg.llm_limits[i]),
                                   &parsed[n_limits], "--llm-limit", &e) != 0)
            continue;
        limits[n_limits] = (struct llm_limit){.provider = parsed[n_limits].provider,
                                              .max_concurrent = parsed[n_limits].max_concurrent,
                                              .requests_per_minute =
                                                  parsed[n_limits].requests_per_minute};
        n_limits++;
    }
    struct llm_client_opts llm_opts = {
        .max_host_connections = cfg.llm_max_host_connections,
        /* never below the per-host cap: one fast local server may use all of it */
        .max_total_connections =
            cfg.llm_max_host_connections > 1024 ? cfg.llm_max_host_connections : 1024,
        .default_timeout_ms = cfg.llm_timeout_ms,
        .max_attempts = (int)cfg.llm_max_attempts,
        .limits = limits,
        .n_limits = n_limits,
        .obs = obs,
    };
    if (llm_client_new(base, &llm_opts, &llm, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    struct tool_runner_opts runner_opts = {
        .http_allow_hosts = (const char *const *)cfg.tool_http_allow,
        .n_http_allow_hosts = cfg.n_tool_http_allow,
        .http_allow_private = cfg.tool_http_allow_private != 0,
    };
    if (tool_runner_new(base, tools, &runner_opts, &runner, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    if (cfg.prices != NULL) {
        /* checked when read; parsed here into the table the engine reads */
        json_t *j = json_loads(cfg.prices, 0, NULL);
        prices = calloc(1, sizeof *prices);
        if (j == NULL || prices == NULL || llm_prices_parse(j, prices, &e) != 0) {
            json_decref(j);
            log_error("main", "prices: %s", err_text(&e));
            goto out;
        }
        json_decref(j);
    }
    struct plan_llm_policy llm_policy = {
        .base_url_hosts = (const char *const *)cfg.llm_base_url_allow,
        .n_base_url_hosts = cfg.n_llm_base_url_allow,
        .key_envs = (const char *const *)cfg.llm_key_env_allow,
        .n_key_envs = cfg.n_llm_key_env_allow,
    };
    struct jobs_opts jobs_opts = {
        .max_running = cfg.max_running_jobs,
        .lease_ms = cfg.job_lease_ms,
        .job_ttl_ms = (long long)cfg.job_ttl_s * 1000,
        .cleanup_interval_ms = cfg.cleanup_interval_s * 1000,
        .getenv_fn = env_get,
        .tool_registry = tools,
        .tool_runner = runner,
        .prices = prices,
        .llm_policy = &llm_policy,
        .on_events = on_job_events,
        .events_arg = &listeners,
    };
    struct event_hub_opts hub_opts = {0};
    if (event_hub_new(base, store, &hub_opts, &hub, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    listeners.hub = hub;
    struct api_sse_opts sse_opts = {.heartbeat_ms = cfg.sse_heartbeat_ms,
                                    .max_streams = (size_t)cfg.sse_max_streams};
    if (api_sse_new(base, hub, &sse_opts, &sse, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    if (jobs_new(base, store, llm, &jobs_opts, &jobs, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }

    struct webhooks_opts webhooks_opts = {
        .allow_hosts = (const char *const *)cfg.webhook_allow,
        .n_allow_hosts = cfg.n_webhook_allow,
        .allow_private = cfg.webhook_allow_private != 0,
        .timeout_ms = cfg.webhook_timeout_ms,
        .max_attempts = cfg.webhook_max_attempts,
        .retry_base_ms = cfg.webhook_retry_base_ms,
    };
    if (webhooks_new(base, store, jobs_owner(jobs), &webhooks_opts, &webhooks, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    listeners.webhooks = webhooks;
    struct job_webhook_policy webhook_policy = {
        .allow_hosts = (const char *const *)cfg.webhook_allow,
        .n_allow_hosts = cfg.n_webhook_allow,
    };

    struct api_ctx ctx = {.store = store,
                          .tools = tools,
                          .default_provider = cfg.default_provider,
                          .jobs = jobs,
                          .sse = sse,
                          .webhook_policy = &webhook_policy,
                          .llm_policy = &llm_policy,
                          .obs = obs,
                          .health_max_loop_lag_ms = cfg.health_max_loop_lag_ms,
                          .health_max_store_ms = cfg.health_max_store_ms};
    struct http_server_opts opts = {
        .host = cfg.host,
        .port = cfg.port,
        .max_body_bytes = cfg.max_body_bytes,
        .api_keys = (const char *const *)cfg.api_keys,
        .n_api_keys = cfg.n_api_keys,
        .cors_origins = (const char *const *)cfg.cors_origins,
        .n_cors_origins = cfg.n_cors_origins,
        .handler_arg = &ctx,
        .on_reply = obs_http_reply,
        .on_reply_arg = obs,
    };
    opts.routes = api_routes(&opts.n_routes);
    if (http_server_new(base, &opts, &server, &e) != 0) {
        log_error("main", "%s", err_text(&e));
        goto out;
    }
    stopping = (struct stopping){
        .base = base, .server = server, .jobs = jobs, .grace_ms = cfg.shutdown_grace_ms};
    sigterm = evsignal_new(base, SIGTERM, on_signal, &stopping);
    sigint = evsignal_new(base, SIGINT, on_signal, &stopping);
    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sigint, NULL) != 0) {
        log_error("main", "cannot install signal handlers");
        goto out;
    }

    jobs_start(jobs);

    const char *host = cfg.host;
    int v6 = strchr(host, ':') != NULL;
    printf("listening on %s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "",
           http_server_port(server));
    fflush(stdout);
    log_info("main", "crewd %s serving on port %d, store %s, %zu API key(s), log level %s",
             CREWD_VERSION, http_server_port(server), store->ops->kind, cfg.n_api_keys,
             log_level_name(cfg.log_level));

    if (event_base_dispatch(base) < 0) {
        log_error("main", "event loop failed");
        goto out;
    }
    status = 0;
out:
    if (sigterm != NULL)
        event_free(sigterm);
    if (sigint != NULL)
        event_free(sigint);
    /* Stop taking requests first (the event streams end: their clients reconnect to the next
     * start), then the webhook attempts (their leases are given back), then the jobs (their
     * leases are released so that the next start resumes them), then the LLM calls they had
     * in flight. */
    api_sse_free(sse);
    http_server_free(server);
    listeners.webhooks = NULL;
    webhooks_free(webhooks);
    jobs_free(jobs);
    event_hub_free(hub);
    tool_runner_free(runner);
    free(prices);
    llm_client_free(llm);
    obs_free(obs);
    if (base != NULL)
        event_base_free(base);
    tool_registry_free(tools);
    store_close(store);
    config_cleanup(&cfg);
    return status;
}
