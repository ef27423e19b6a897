/*
 * config.h - crewd's settings and where they come from (app/ wires the modules into the
 * daemon: it may depend on every other module, and none depends on it).
 *
 * Precedence, lowest first: built-in defaults, the JSON file named by --config, the CREWD_*
 * environment variables, the command line. A source that sets a list (API keys, CORS
 * origins) replaces the list of the sources below it; a repeated option adds to its own list.
 * Every setting lives in one table in config.c (name, option, variable, file key), so the
 * usage text, the environment and the file stay in step. Built once in main(), read-only
 * afterwards.
 */
#ifndef CREWD_APP_CONFIG_H
#define CREWD_APP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/err.h"
#include "core/log.h"

#define CONFIG_DEFAULT_LISTEN "127.0.0.1:8080"
#define CONFIG_DEFAULT_STORE "sqlite:var/crewd.db"
#define CONFIG_DEFAULT_PROVIDER "openai"
#define CONFIG_DEFAULT_MAX_RUNNING_JOBS 256
#define CONFIG_DEFAULT_JOB_LEASE_MS 30000
#define CONFIG_DEFAULT_JOB_TTL_S 86400
#define CONFIG_DEFAULT_CLEANUP_INTERVAL_S 3600
#define CONFIG_DEFAULT_LLM_HOST_CONNECTIONS 64
#define CONFIG_DEFAULT_LLM_TIMEOUT_MS 120000
#define CONFIG_DEFAULT_LLM_MAX_ATTEMPTS 3
#define CONFIG_DEFAULT_SHUTDOWN_GRACE_MS 10000
#define CONFIG_DEFAULT_SSE_HEARTBEAT_MS 15000
#define CONFIG_DEFAULT_SSE_MAX_STREAMS 10000
#define CONFIG_DEFAULT_WEBHOOK_TIMEOUT_MS 10000
#define CONFIG_DEFAULT_WEBHOOK_MAX_ATTEMPTS 10
#define CONFIG_DEFAULT_WEBHOOK_RETRY_BASE_MS 1000

struct config {
    char *listen;  /* "HOST:PORT" as given */
    char host[64]; /* parsed from listen: numeric IPv4/IPv6 address */
    int port;      /* parsed from listen: 0..65535 */
    char *store;   /* store URL */
    enum log_level log_level;
    char **api_keys;
    size_t n_api_keys;
    char **cors_origins;
    size_t n_cors_origins;
    size_t max_body_bytes;
    char *default_provider;
    long max_running_jobs;         /* jobs this instance runs at once */
    long job_lease_ms;             /* lease of a claimed job (renewed every third of it) */
    long job_ttl_s;                /* finished jobs are deleted this long after their end */
    long cleanup_interval_s;       /* how often that retention runs */
    long llm_max_host_connections; /* per LLM host */
    long llm_timeout_ms;           /* per attempt, unless an agent's config.timeout says */
    long llm_max_attempts;         /* per LLM call, retries included */
    char **llm_limits;             /* "provider=concurrent[/per_minute]", checked */
    size_t n_llm_limits;
    char **tool_http_allow; /* hosts the http_request tool may reach ("*": any) */
    size_t n_tool_http_allow;
    long tool_http_allow_private; /* 1: loopback and private addresses too */
    char *prices;                 /* JSON text of the price table (llm/price.h), checked */
    long shutdown_grace_ms;       /* SIGTERM: how long steps in flight may take to finish */
    long sse_heartbeat_ms;        /* a comment line on every event stream this often */
    long sse_max_streams;         /* event streams open at once */
    char **llm_base_url_allow; /* hosts an agent's base_url may name ("*": any; none: no
                                  base_url) */
    size_t n_llm_base_url_allow;
    char **llm_key_env_allow; /* variables api_key_env may name beyond the providers' own */
    size_t n_llm_key_env_allow;
    char **webhook_allow; /* hosts a job's webhook may name ("*": any; none: no webhooks) */
    size_t n_webhook_allow;
    long webhook_allow_private;  /* 1: webhooks may reach loopback and private addresses */
    long webhook_timeout_ms;     /* per delivery attempt */
    long webhook_max_attempts;   /* attempts per event before it is given up */
    long webhook_retry_base_ms;  /* first retry delay; doubles per attempt */
    long health_max_loop_lag_ms;  /* /healthz fails when the loop was later than this */
    long health_max_store_ms;     /* /healthz fails when the store's ping takes longer */
};

/* One parsed --llm-limit. */
struct config_llm_limit {
    char provider[32]; /* canonical name */
    long max_concurrent;
    long requests_per_minute;
};

/* Parses "PROVIDER=CONCURRENT[/PER_MINUTE]" (v[0..len)); `out` may be NULL to only check.
 * Returns 0 or ERR_INVALID with a message that starts with `source`. */
int config_parse_llm_limit(const char *v, size_t len, struct config_llm_limit *out,
                           const char *source, struct err *e);

enum config_action { CONFIG_RUN = 0, CONFIG_HELP, CONFIG_VERSION };

/*
 * Builds the configuration from all sources. `getenv_fn` reads the environment (getenv in
 * main, a table in tests). On success returns 0 and sets *action; on a bad option, file or
 * value returns ERR_INVALID (or ERR_IO for an unreadable file) with a message naming it.
 * `cfg` must be released with config_cleanup() either way.
 */
int config_load(struct config *cfg, int argc, char **argv, const char *(*getenv_fn)(const char *),
                enum config_action *action, struct err *e);
void config_cleanup(struct config *cfg);

/* Writes the usage text. */
void config_usage(FILE *out, const char *prog);

/* Parses "HOST:PORT" or "[V6]:PORT" into host (numeric) and port. Returns 0 or ERR_INVALID. */
int config_parse_listen(const char *s, char host[64], int *port, struct err *e);

#endif
