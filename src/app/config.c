/* config.c - see config.h. */
#include "app/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/url.h"
#include "llm/llm.h"
#include "llm/price.h"
#include "llm/provider.h"

enum setting {
    SET_LISTEN,
    SET_STORE,
    SET_LOG_LEVEL,
    SET_API_KEY,
    SET_CORS_ORIGIN,
    SET_MAX_BODY,
    SET_DEFAULT_PROVIDER,
    SET_MAX_RUNNING_JOBS,
    SET_JOB_LEASE_MS,
    SET_JOB_TTL_S,
    SET_CLEANUP_INTERVAL_S,
    SET_LLM_HOST_CONNECTIONS,
    SET_LLM_TIMEOUT_MS,
    SET_LLM_MAX_ATTEMPTS,
    SET_LLM_LIMIT,
    SET_TOOL_HTTP_ALLOW,
    SET_TOOL_HTTP_PRIVATE,
    SET_PRICES,
    SET_SHUTDOWN_GRACE_MS,
    SET_SSE_HEARTBEAT_MS,
    SET_SSE_MAX_STREAMS,
    SET_LLM_BASE_URL_ALLOW,
    SET_LLM_KEY_ENV_ALLOW,
    SET_WEBHOOK_ALLOW,
    SET_WEBHOOK_PRIVATE,
    SET_WEBHOOK_TIMEOUT_MS,
    SET_WEBHOOK_MAX_ATTEMPTS,
    SET_WEBHOOK_RETRY_BASE_MS,
    SET_HEALTH_MAX_LOOP_LAG_MS,
    SET_HEALTH_MAX_STORE_MS,
    SET_CONFIG,
};

/* The list settings: where each list lives in struct config. */
static void list_slot(struct config *cfg, enum setting id, char ****list, size_t **n)
{
    switch (id) {
    case SET_API_KEY:
        *list = &cfg->api_keys, *n = &cfg->n_api_keys;
        return;
    case SET_CORS_ORIGIN:
        *list = &cfg->cors_origins, *n = &cfg->n_cors_origins;
        return;
    case SET_TOOL_HTTP_ALLOW:
        *list = &cfg->tool_http_allow, *n = &cfg->n_tool_http_allow;
        return;
    case SET_WEBHOOK_ALLOW:
        *list = &cfg->webhook_allow, *n = &cfg->n_webhook_allow;
        return;
    case SET_LLM_BASE_URL_ALLOW:
        *list = &cfg->llm_base_url_allow, *n = &cfg->n_llm_base_url_allow;
        return;
    case SET_LLM_KEY_ENV_ALLOW:
        *list = &cfg->llm_key_env_allow, *n = &cfg->n_llm_key_env_allow;
        return;
    default:
        *list = &cfg->llm_limits, *n = &cfg->n_llm_limits;
        return;
    }
}

/* The numeric settings: where each lives in struct config and its accepted range. */
static long *numeric_slot(struct config *cfg, enum setting id, long *min, long *max)
{
    switch (id) {
    case SET_MAX_RUNNING_JOBS:
        *min = 1, *max = 1000000;
        return &cfg->max_running_jobs;
    case SET_JOB_LEASE_MS:
        *min = 500, *max = 3600000;
        return &cfg->job_lease_ms;
    case SET_JOB_TTL_S:
        *min = 1, *max = 10L * 365 * 86400;
        return &cfg->job_ttl_s;
    case SET_CLEANUP_INTERVAL_S:
        *min = 1, *max = 7L * 86400;
        return &cfg->cleanup_interval_s;
    case SET_LLM_HOST_CONNECTIONS:
        *min = 1, *max = 100000;
        return &cfg->llm_max_host_connections;
    case SET_LLM_TIMEOUT_MS:
        *min = 100, *max = 3600000;
        return &cfg->llm_timeout_ms;
    case SET_LLM_MAX_ATTEMPTS:
        *min = 1, *max = 20;
        return &cfg->llm_max_attempts;
    case SET_TOOL_HTTP_PRIVATE:
        *min = 0, *max = 1;
        return &cfg->tool_http_allow_private;
    case SET_SHUTDOWN_GRACE_MS:
        *min = 0, *max = 600000;
        return &cfg->shutdown_grace_ms;
    case SET_SSE_HEARTBEAT_MS:
        /* At most half the server's 60 s idle timeout, which a quiet stream must beat. */
        *min = 100, *max = 30000;
        return &cfg->sse_heartbeat_ms;
    case SET_SSE_MAX_STREAMS:
        *min = 1, *max = 1000000;
        return &cfg->sse_max_streams;
    case SET_WEBHOOK_PRIVATE:
        *min = 0, *max = 1;
        return &cfg->webhook_allow_private;
    case SET_WEBHOOK_TIMEOUT_MS:
        *min = 100, *max = 600000;
        return &cfg->webhook_timeout_ms;
    case SET_WEBHOOK_MAX_ATTEMPTS:
        *min = 1, *max = 100;
        return &cfg->webhook_max_attempts;
    case SET_WEBHOOK_RETRY_BASE_MS:
        *min = 10, *max = 3600000;
        return &cfg->webhook_retry_base_ms;
    case SET_HEALTH_MAX_LOOP_LAG_MS:
        *min = 10, *max = 3600000;
        return &cfg->health_max_loop_lag_ms;
    case SET_HEALTH_MAX_STORE_MS:
        *min = 1, *max = 3600000;
        return &cfg->health_max_store_ms;
    default:
        return NULL;
    }
}

/* The one table of settings: option, environment variable, file key, help. */
static const struct {
    enum setting id;
    const char *option;
    const char *env;
    const char *file_key;
    bool is_list;
    const char *help;
} settings[] = {
    {SET_LISTEN, "--listen", "CREWD_LISTEN", "listen", false,
     "HOST:PORT to serve on (default " CONFIG_DEFAULT_LISTEN "; port 0 picks a free one)"},
    {SET_STORE, "--store", "CREWD_STORE", "store", false,
     "sqlite:PATH or postgres://... (default " CONFIG_DEFAULT_STORE ")"},
    {SET_LOG_LEVEL, "--log-level", "CREWD_LOG_LEVEL", "log_level", false,
     "error, warn, info (default), debug or trace"},
    {SET_API_KEY, "--api-key", "CREWD_API_KEYS", "api_keys", true,
     "require Authorization: Bearer KEY on /api/ (repeatable; env: comma-separated)"},
    {SET_CORS_ORIGIN, "--cors-origin", "CREWD_CORS_ORIGINS", "cors_origins", true,
     "allow browser requests from ORIGIN, or * (repeatable; env: comma-separated)"},
    {SET_MAX_BODY, "--max-body-bytes", "CREWD_MAX_BODY_BYTES", "max_body_bytes", false,
     "largest request body accepted (default 1048576)"},
    {SET_DEFAULT_PROVIDER, "--default-provider", "CREWD_DEFAULT_PROVIDER", "default_provider",
     false, "LLM provider when an agent's config does not decide (default openai)"},
    {SET_MAX_RUNNING_JOBS, "--max-running-jobs", "CREWD_MAX_RUNNING_JOBS", "max_running_jobs",
     false, "jobs this instance runs at once; the rest wait pending (default 256)"},
    {SET_JOB_LEASE_MS, "--job-lease-ms", "CREWD_JOB_LEASE_MS", "job_lease_ms", false,
     "how long a claimed job stays ours without renewal; a crashed instance's jobs resume "
     "after it (default 30000)"},
    {SET_JOB_TTL_S, "--job-ttl-s", "CREWD_JOB_TTL_S", "job_ttl_s", false,
     "finished jobs (completed, failed, cancelled) are deleted this long after they ended "
     "(default 86400)"},
    {SET_CLEANUP_INTERVAL_S, "--cleanup-interval-s", "CREWD_CLEANUP_INTERVAL_S",
     "cleanup_interval_s", false, "how often finished jobs past --job-ttl-s are deleted "
     "(default 3600)"},
    {SET_LLM_HOST_CONNECTIONS, "--llm-max-host-connections", "CREWD_LLM_MAX_HOST_CONNECTIONS",
     "llm_max_host_connections", false,
     "open connections per LLM host; more calls wait for one (default 64)"},
    {SET_LLM_TIMEOUT_MS, "--llm-timeout-ms", "CREWD_LLM_TIMEOUT_MS", "llm_timeout_ms", false,
     "per-attempt LLM call timeout unless an agent's config.timeout says (default 120000)"},
    {SET_LLM_MAX_ATTEMPTS, "--llm-max-attempts", "CREWD_LLM_MAX_ATTEMPTS", "llm_max_attempts",
     false, "attempts per LLM call on 429, 5xx and connection errors (default 3)"},
    {SET_LLM_LIMIT, "--llm-limit", "CREWD_LLM_LIMITS", "llm_limits", true,
     "PROVIDER=CONCURRENT[/PER_MINUTE]: calls at once and requests per minute to a provider, "
     "shared by all jobs (repeatable; env: comma-separated)"},
    {SET_TOOL_HTTP_ALLOW, "--tool-http-allow", "CREWD_TOOL_HTTP_ALLOW", "tool_http_allow", true,
     "a host the http_request tool may reach, or * (repeatable; env: comma-separated; "
     "default: none)"},
    {SET_TOOL_HTTP_PRIVATE, "--tool-http-allow-private", "CREWD_TOOL_HTTP_ALLOW_PRIVATE",
     "tool_http_allow_private", false,
     "1: the http_request tool may reach loopback and private addresses (default 0)"},
    {SET_SHUTDOWN_GRACE_MS, "--shutdown-grace-ms", "CREWD_SHUTDOWN_GRACE_MS",
     "shutdown_grace_ms", false,
     "on SIGTERM, how long the steps in flight may take to finish and be checkpointed "
     "before their calls are cut (default 10000; 0: cut at once)"},
    {SET_SSE_HEARTBEAT_MS, "--sse-heartbeat-ms", "CREWD_SSE_HEARTBEAT_MS", "sse_heartbeat_ms",
     false, "a comment line this often on every open event stream (default 15000)"},
    {SET_SSE_MAX_STREAMS, "--sse-max-streams", "CREWD_SSE_MAX_STREAMS", "sse_max_streams",
     false, "event streams open at once; more get 503 (default 10000)"},
    {SET_PRICES, "--prices", "CREWD_PRICES", "prices", false,
     "JSON object \"provider:model\" -> {input, output, cached_input} in USD per million "
     "tokens: results then carry cost (default: none)"},
    {SET_LLM_BASE_URL_ALLOW, "--llm-base-url-allow", "CREWD_LLM_BASE_URL_ALLOW",
     "llm_base_url_allow", true,
     "hosts an agent's config.base_url may name, comma-separated, or * for any (repeatable; "
     "default: none, so crews with a base_url are refused). The server's provider keys go "
     "to these hosts: list only servers you trust"},
    {SET_LLM_KEY_ENV_ALLOW, "--llm-key-env-allow", "CREWD_LLM_KEY_ENV_ALLOW",
     "llm_key_env_allow", true,
     "environment variables an agent's config.api_key_env may name besides its provider's "
     "own (OPENAI_API_KEY for openai, ...), comma-separated (repeatable; default: none; "
     "CREWD_* never)"},
    {SET_WEBHOOK_ALLOW, "--webhook-allow", "CREWD_WEBHOOK_ALLOW", "webhook_allow", true,
     "hosts a job's webhook URL may name, comma-separated, or * for any (repeatable; default: "
     "none, so execute refuses webhooks)"},
    {SET_WEBHOOK_PRIVATE, "--webhook-allow-private", "CREWD_WEBHOOK_ALLOW_PRIVATE",
     "webhook_allow_private", false,
     "1: webhooks may reach loopback and private addresses (default 0)"},
    {SET_WEBHOOK_TIMEOUT_MS, "--webhook-timeout-ms", "CREWD_WEBHOOK_TIMEOUT_MS",
     "webhook_timeout_ms", false, "per-attempt webhook delivery timeout (default 10000)"},
    {SET_WEBHOOK_MAX_ATTEMPTS, "--webhook-max-attempts", "CREWD_WEBHOOK_MAX_ATTEMPTS",
     "webhook_max_attempts", false,
     "attempts per webhook event before it is marked failed (default 10)"},
    {SET_WEBHOOK_RETRY_BASE_MS, "--webhook-retry-base-ms", "CREWD_WEBHOOK_RETRY_BASE_MS",
     "webhook_retry_base_ms", false,
     "delay before the first webhook retry, doubled after each (+-20%, at most 1 h; default "
     "1000)"},
    {SET_HEALTH_MAX_LOOP_LAG_MS, "--health-max-loop-lag-ms", "CREWD_HEALTH_MAX_LOOP_LAG_MS",
     "health_max_loop_lag_ms", false,
     "/healthz answers 503 when the event loop ran this late in the last 5 s (default 2000)"},
    {SET_HEALTH_MAX_STORE_MS, "--health-max-store-ms", "CREWD_HEALTH_MAX_STORE_MS",
     "health_max_store_ms", false,
     "/healthz answers 503 when the store's ping takes longer than this (default 1000)"},
    {SET_CONFIG, "--config", NULL, NULL, false, "JSON file with any of the settings above"},
};
#define N_SETTINGS (sizeof settings / sizeof settings[0])

void config_usage(FILE *out, const char *prog)
{
    fprintf(out,
            "usage: %s [options]\n\nRuns crews of LLM agents as durable jobs behind the "
            "AgentCrew REST API.\n\noptions:\n",
            prog);
    for (size_t i = 0; i < N_SETTINGS; i++)
        fprintf(out, "  %-28s %s%s%s\n", settings[i].option, settings[i].help,
                settings[i].env ? "; env " : "", settings[i].env ? settings[i].env : "");
    fprintf(out, "  %-28s %s\n  %-28s %s\n", "--help", "print this text", "--version",
            "print the version");
}

int config_parse_listen(const char *s, char host[64], int *port, struct err *e)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s)
        return err_set(e, ERR_INVALID, "listen: '%s' is not HOST:PORT", s);
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    if (h[0] == '[') {
        if (hlen < 3 || h[hlen - 1] != ']')
            return err_set(e, ERR_INVALID, "listen: '%s' is not [IPV6]:PORT", s);
        h++;
        hlen -= 2;
    }
    if (hlen >= 64)
        return err_set(e, ERR_INVALID, "listen: host too long in '%s'", s);
    char tmp[64];
    memcpy(tmp, h, hlen);
    tmp[hlen] = '\0';
    unsigned char addr[16];
    if (strcmp(tmp, "localhost") == 0)
        memcpy(tmp, "127.0.0.1", sizeof "127.0.0.1");
    else if (inet_pton(AF_INET, tmp, addr) != 1 && inet_pton(AF_INET6, tmp, addr) != 1)
        return err_set(e, ERR_INVALID, "listen: '%s' is not a numeric IP address", tmp);
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || p < 0 || p > 65535)
        return err_set(e, ERR_INVALID, "listen: port '%s' is not a number from 0 to 65535",
                       colon + 1);
    memcpy(host, tmp, sizeof tmp);
    *port = (int)p;
    return 0;
}

static int set_string(char **slot, const char *value)
{
    char *copy = strdup(value);
    if (copy == NULL)
        return ERR_NOMEM;
    free(*slot);
    *slot = copy;
    return 0;
}

static void free_list(char ***list, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*list)[i]);
    free(*list);
    *list = NULL;
    *n = 0;
}

static int list_add(char ***list, size_t *n, const char *value, size_t len)
{
    char **grown = realloc(*list, (*n + 1) * sizeof **list);
    if (grown == NULL)
        return ERR_NOMEM;
    *list = grown;
    char *copy = strndup(value, len);
    if (copy == NULL)
        return ERR_NOMEM;
    grown[(*n)++] = copy;
    return 0;
}

/* API keys travel in an HTTP header: printable ASCII without spaces. Never echo the key. */
static int check_list_item(enum setting id, const char *v, size_t len, const char *source,
                           struct err *e)
{
    if (id == SET_LLM_LIMIT)
        return config_parse_llm_limit(v, len, NULL, source, e);
    if (id == SET_LLM_KEY_ENV_ALLOW) {
        bool name = len > 0 && len <= 128 && !(v[0] >= '0' && v[0] <= '9');
        for (size_t i = 0; name && i < len; i++)
            name = (v[i] >= 'A' && v[i] <= 'Z') || (v[i] >= 'a' && v[i] <= 'z') ||
                   (v[i] >= '0' && v[i] <= '9') || v[i] == '_';
        if (!name)
            return err_set(e, ERR_INVALID,
                           "%s: '%.*s' is not an environment variable name "
                           "([A-Za-z_][A-Za-z0-9_]*, at most 128 bytes)",
                           source, (int)(len > 128 ? 128 : len), v);
        /* crewd's own settings (API keys, the store URL with its password) are never a
         * provider key. */
        if (len >= 6 && strncmp(v, "CREWD_", 6) == 0)
            return err_set(e, ERR_INVALID,
                           "%s: '%.*s': crewd's own variables cannot be used as provider keys",
                           source, (int)len, v);
        return 0;
    }
    const char *what = id == SET_API_KEY       ? "API key"
                       : id == SET_CORS_ORIGIN ? "CORS origin"
                                               : "host";
    if (len == 0)
        return err_set(e, ERR_INVALID, "%s: an empty %s", source, what);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return err_set(e, ERR_INVALID, "%s: a %s must be printable ASCII without spaces",
                           source, what);
    return 0;
}

/* A second limit for one provider (aliases included) is a mistake, not an override. */
static int limit_is_new(const struct config *cfg, const char *v, size_t len, const char *source,
                        struct err *e)
{
    struct config_llm_limit mine, other;
    if (config_parse_llm_limit(v, len, &mine, source, e) != 0)
        return ERR_INVALID;
    for (size_t i = 0; i < cfg->n_llm_limits; i++) {
        const char *o = cfg->llm_limits[i];
        if (config_parse_llm_limit(o, strlen(o), &other, source, NULL) == 0 &&
            strcmp(other.provider, mine.provider) == 0)
            return err_set(e, ERR_INVALID, "%s: two limits for provider '%s'", source,
                           mine.provider);
    }
    return 0;
}

/* Applies one scalar or list value. `append` adds to a list instead of replacing it. */
static int apply(struct config *cfg, enum setting id, const char *value, bool append,
                 const char *source, struct err *e)
{
    switch (id) {
    case SET_LISTEN: {
        char host[64];
        int port;
        int rc = config_parse_listen(value, host, &port, e);
        if (rc != 0) {
            err_prefix(e, "%s", source);
            return rc;
        }
        memcpy(cfg->host, host, sizeof host);
        cfg->port = port;
        return set_string(&cfg->listen, value);
    }
    case SET_STORE: {
        /* The form is checked here, so that a mistyped URL is a usage error (exit 2) like any
         * other bad option; whether the store opens is store_open's business (exit 1). */
        bool sqlite = strncmp(value, "sqlite:", 7) == 0 && value[7] != '\0';
        bool pg =
            strncmp(value, "postgres://", 11) == 0 || strncmp(value, "postgresql://", 13) == 0;
        if (!sqlite && !pg) {
            char *shown = url_redact_secrets(value);
            err_set(e, ERR_INVALID,
                    "%s: '%s' is not a store URL (use sqlite:PATH or postgres://...)", source,
                    shown ? shown : "?");
            free(shown);
            return ERR_INVALID;
        }
        return set_string(&cfg->store, value);
    }
    case SET_LOG_LEVEL:
        if (log_level_parse(value, &cfg->log_level) != 0)
            return err_set(e, ERR_INVALID,
                           "%s: unknown log level '%s' (known: error, warn, info, debug, trace)",
                           source, value);
        return 0;
    case SET_API_KEY:
    case SET_CORS_ORIGIN:
    case SET_TOOL_HTTP_ALLOW:
    case SET_WEBHOOK_ALLOW:
    case SET_LLM_BASE_URL_ALLOW:
    case SET_LLM_KEY_ENV_ALLOW:
    case SET_LLM_LIMIT: {
        char ***list;
        size_t *n;
        list_slot(cfg, id, &list, &n);
        if (!append)
            free_list(list, n);
        /* Comma-separated in the environment; one item per option or array element, but
         * webhook hosts split everywhere (no host name holds a comma). */
        bool split = !append || id == SET_WEBHOOK_ALLOW || id == SET_LLM_BASE_URL_ALLOW ||
                     id == SET_LLM_KEY_ENV_ALLOW;
        const char *p = value;
        for (;;) {
            size_t len = split ? strcspn(p, ",") : strlen(p);
            int rc = check_list_item(id, p, len, source, e);
            if (rc != 0)
                return rc;
            if (id == SET_LLM_LIMIT && (rc = limit_is_new(cfg, p, len, source, e)) != 0)
                return rc;
            if (list_add(list, n, p, len) != 0)
                return err_set(e, ERR_NOMEM, "out of memory");
            if (id == SET_LLM_LIMIT && *n > LLM_MAX_LIMITS)
                return err_set(e, ERR_INVALID, "%s: at most %d LLM limits", source,
                               LLM_MAX_LIMITS);
            if (!split || p[len] == '\0')
                return 0;
            p += len + 1;
        }
    }
    case SET_MAX_BODY: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || value[0] == '-' || v < 1024 ||
            v > 1024ULL * 1024 * 1024)
            return err_set(e, ERR_INVALID,
                           "%s: max body bytes '%s' must be a number from 1024 to 1073741824",
                           source, value);
        cfg->max_body_bytes = (size_t)v;
        return 0;
    }
    case SET_DEFAULT_PROVIDER: {
        const struct llm_provider_info *p = llm_provider_find(value);
        if (p == NULL)
            return err_set(e, ERR_INVALID, "%s: unknown provider '%s' (known: %s)", source, value,
                           llm_provider_known_list());
        return set_string(&cfg->default_provider, p->name);
    }
    case SET_MAX_RUNNING_JOBS:
    case SET_JOB_LEASE_MS:
    case SET_JOB_TTL_S:
    case SET_CLEANUP_INTERVAL_S:
    case SET_LLM_HOST_CONNECTIONS:
    case SET_LLM_TIMEOUT_MS:
    case SET_LLM_MAX_ATTEMPTS:
    case SET_TOOL_HTTP_PRIVATE:
    case SET_SHUTDOWN_GRACE_MS:
    case SET_SSE_HEARTBEAT_MS:
    case SET_SSE_MAX_STREAMS:
    case SET_WEBHOOK_PRIVATE:
    case SET_WEBHOOK_TIMEOUT_MS:
    case SET_WEBHOOK_MAX_ATTEMPTS:
    case SET_WEBHOOK_RETRY_BASE_MS:
    case SET_HEALTH_MAX_LOOP_LAG_MS:
    case SET_HEALTH_MAX_STORE_MS: {
        long min = 0, max = 0, *slot = numeric_slot(cfg, id, &min, &max);
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < min || v > max)
            return err_set(e, ERR_INVALID, "%s: '%s' must be a number from %ld to %ld", source,
                           value, min, max);
        *slot = v;
        return 0;
    }
    case SET_PRICES: {
        json_error_t jerr;
        json_t *j = json_loads(value, JSON_REJECT_DUPLICATES, &jerr);
        if (j == NULL)
            return err_set(e, ERR_INVALID, "%s: not JSON: %s", source, jerr.text);
        int rc = llm_prices_parse(j, NULL, e);
        json_decref(j);
        if (rc != 0) {
            err_prefix(e, "%s", source);
            return rc;
        }
        return set_string(&cfg->prices, value);
    }
    case SET_CONFIG:
        return 0; /* read first, by config_load */
    }
    return err_set(e, ERR_INTERNAL, "unknown setting");
}

static bool is_numeric(enum setting id)
{
    struct config scratch;
    long min, max;
    return id == SET_MAX_BODY || numeric_slot(&scratch, id, &min, &max) != NULL;
}

static int load_file(struct config *cfg, const char *path, struct err *e)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL)
        return err_set(e, ERR_INVALID, "config %s: line %d, column %d: %s", path, jerr.line,
                       jerr.column, jerr.text);
    int rc = 0;
    if (!json_is_object(root)) {
        rc = err_set(e, ERR_INVALID, "config %s: must be a JSON object", path);
        goto out;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        size_t i;
        for (i = 0; i < N_SETTINGS; i++)
            if (settings[i].file_key && strcmp(settings[i].file_key, key) == 0)
                break;
        char source[512];
        snprintf(source, sizeof source, "config %s: %s", path, key);
        if (i == N_SETTINGS) {
            char known[600];
            size_t len = 0;
            for (size_t k = 0; k < N_SETTINGS && len < sizeof known; k++)
                if (settings[k].file_key)
                    len += (size_t)snprintf(known + len, sizeof known - len, "%s%s",
                                            len ? ", " : "", settings[k].file_key);
            rc = err_set(e, ERR_INVALID, "%s: unknown key (known: %s)", source, known);
            goto out;
        }
        if (settings[i].is_list) {
            if (!json_is_array(value)) {
                rc = err_set(e, ERR_INVALID, "%s: expected an array of strings", source);
                goto out;
            }
            char ***list;
            size_t *n;
            list_slot(cfg, settings[i].id, &list, &n);
            free_list(list, n);
            size_t k;
            json_t *item;
            json_array_foreach(value, k, item)
            {
                if (!json_is_string(item)) {
                    rc = err_set(e, ERR_INVALID, "%s[%zu]: expected a string", source, k);
                    goto out;
                }
                if ((rc = apply(cfg, settings[i].id, json_string_value(item), true, source, e)) !=
                    0)
                    goto out;
            }
            continue;
        }
        char num[32];
        const char *text;
        char *dumped = NULL;
        if (settings[i].id == SET_PRICES && json_is_object(value)) {
            /* an object in the file, JSON text elsewhere: one parser for both */
            if ((dumped = json_dumps(value, JSON_COMPACT)) == NULL) {
                rc = err_set(e, ERR_NOMEM, "out of memory");
                goto out;
            }
            rc = apply(cfg, SET_PRICES, dumped, false, source, e);
            free(dumped);
            if (rc != 0)
                goto out;
            continue;
        }
        if (json_is_string(value)) {
            text = json_string_value(value);
        } else if (is_numeric(settings[i].id) && json_is_integer(value)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(value));
            text = num;
        } else if ((settings[i].id == SET_TOOL_HTTP_PRIVATE ||
                    settings[i].id == SET_WEBHOOK_PRIVATE) &&
                   json_is_boolean(value)) {
            text = json_is_true(value) ? "1" : "0"; /* a flag may be written as one */
        } else {
            rc = err_set(e, ERR_INVALID, "%s: expected a %s", source,
                         is_numeric(settings[i].id) ? "number" : "string");
            goto out;
        }
        if ((rc = apply(cfg, settings[i].id, text, false, source, e)) != 0)
            goto out;
    }
out:
    json_decref(root);
    return rc;
}

/* Index in settings[] of the option `arg` ("--listen" or "--listen=..."), or N_SETTINGS. */
static size_t find_option(const char *arg)
{
    for (size_t k = 0; k < N_SETTINGS; k++) {
        size_t olen = strlen(settings[k].option);
        if (strncmp(arg, settings[k].option, olen) == 0 && (arg[olen] == '\0' || arg[olen] == '='))
            return k;
    }
    return N_SETTINGS;
}

int config_load(struct config *cfg, int argc, char **argv, const char *(*getenv_fn)(const char *),
                enum config_action *action, struct err *e)
{
    int rc;
    memset(cfg, 0, sizeof *cfg);
    *action = CONFIG_RUN;
    cfg->log_level = LOG_INFO;
    cfg->max_body_bytes = 1024 * 1024;
    cfg->max_running_jobs = CONFIG_DEFAULT_MAX_RUNNING_JOBS;
    cfg->job_lease_ms = CONFIG_DEFAULT_JOB_LEASE_MS;
    cfg->job_ttl_s = CONFIG_DEFAULT_JOB_TTL_S;
    cfg->cleanup_interval_s = CONFIG_DEFAULT_CLEANUP_INTERVAL_S;
    cfg->llm_max_host_connections = CONFIG_DEFAULT_LLM_HOST_CONNECTIONS;
    cfg->llm_timeout_ms = CONFIG_DEFAULT_LLM_TIMEOUT_MS;
    cfg->llm_max_attempts = CONFIG_DEFAULT_LLM_MAX_ATTEMPTS;
    cfg->shutdown_grace_ms = CONFIG_DEFAULT_SHUTDOWN_GRACE_MS;
    cfg->sse_heartbeat_ms = CONFIG_DEFAULT_SSE_HEARTBEAT_MS;
    cfg->sse_max_streams = CONFIG_DEFAULT_SSE_MAX_STREAMS;
    cfg->webhook_timeout_ms = CONFIG_DEFAULT_WEBHOOK_TIMEOUT_MS;
    cfg->webhook_max_attempts = CONFIG_DEFAULT_WEBHOOK_MAX_ATTEMPTS;
    cfg->webhook_retry_base_ms = CONFIG_DEFAULT_WEBHOOK_RETRY_BASE_MS;
    cfg->health_max_loop_lag_ms = API_HEALTH_DEFAULT_MAX_LOOP_LAG_MS;
    cfg->health_max_store_ms = API_HEALTH_DEFAULT_MAX_STORE_MS;
    if ((rc = apply(cfg, SET_LISTEN, CONFIG_DEFAULT_LISTEN, false, "default", e)) != 0 ||
        (rc = set_string(&cfg->store, CONFIG_DEFAULT_STORE)) != 0 ||
        (rc = set_string(&cfg->default_provider, CONFIG_DEFAULT_PROVIDER)) != 0)
        return rc;

    /* Read the command line once, into (setting, value) pairs; apply it last. */
    struct option_arg {
        size_t k;
        const char *value;
    } *opts = calloc((size_t)argc + 1, sizeof *opts);
    size_t n_opts = 0;
    const char *config_path = NULL;
    if (opts == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *action = CONFIG_HELP;
            goto out;
        }
        if (strcmp(argv[i], "--version") == 0) {
            *action = CONFIG_VERSION;
            goto out;
        }
        size_t k = find_option(argv[i]);
        if (k == N_SETTINGS) {
            rc = err_set(e, ERR_INVALID, "unknown option '%s' (see --help)", argv[i]);
            break;
        }
        const char *eq = strchr(argv[i], '=');
        if (eq == NULL && i + 1 >= argc) {
            rc = err_set(e, ERR_INVALID, "option %s needs a value", argv[i]);
            break;
        }
        opts[n_opts] = (struct option_arg){.k = k, .value = eq ? eq + 1 : argv[++i]};
        if (settings[k].id == SET_CONFIG)
            config_path = opts[n_opts].value;
        n_opts++;
    }
    if (rc != 0)
        goto out;
    if (config_path != NULL && (rc = load_file(cfg, config_path, e)) != 0)
        goto out;

    for (size_t k = 0; k < N_SETTINGS; k++) {
        const char *v = settings[k].env ? getenv_fn(settings[k].env) : NULL;
        if (v != NULL && v[0] != '\0' &&
            (rc = apply(cfg, settings[k].id, v, false, settings[k].env, e)) != 0)
            goto out;
    }

    /* The command line, in order. A list option given there replaces the lists of the lower
     * sources, then accumulates. */
    bool list_reset[N_SETTINGS] = {false};
    for (size_t i = 0; i < n_opts; i++) {
        size_t k = opts[i].k;
        if (settings[k].is_list && !list_reset[k]) {
            list_reset[k] = true;
            char ***list;
            size_t *n;
            list_slot(cfg, settings[k].id, &list, &n);
            free_list(list, n);
        }
        if ((rc = apply(cfg, settings[k].id, opts[i].value, settings[k].is_list, settings[k].option,
                        e)) != 0)
            goto out;
    }
out:
    free(opts);
    return rc;
}

void config_cleanup(struct config *cfg)
{
    free(cfg->listen);
    free(cfg->store);
    free(cfg->default_provider);
    free_list(&cfg->api_keys, &cfg->n_api_keys);
    free_list(&cfg->cors_origins, &cfg->n_cors_origins);
    free_list(&cfg->llm_limits, &cfg->n_llm_limits);
    free_list(&cfg->tool_http_allow, &cfg->n_tool_http_allow);
    free_list(&cfg->webhook_allow, &cfg->n_webhook_allow);
    free_list(&cfg->llm_base_url_allow, &cfg->n_llm_base_url_allow);
    free_list(&cfg->llm_key_env_allow, &cfg->n_llm_key_env_allow);
    free(cfg->prices);
    memset(cfg, 0, sizeof *cfg);
}

int config_parse_llm_limit(const char *v, size_t len, struct config_llm_limit *out,
                           const char *source, struct err *e)
{
    char text[128];
    if (len == 0 || len >= sizeof text)
        return err_set(e, ERR_INVALID, "%s: an LLM limit must be PROVIDER=CONCURRENT[/PER_MINUTE]",
                       source);
    memcpy(text, v, len);
    text[len] = '\0';
    char *eq = strchr(text, '=');
    if (eq == NULL)
        return err_set(e, ERR_INVALID,
                       "%s: '%s' is not PROVIDER=CONCURRENT[/PER_MINUTE] (e.g. openai=16/500)",
                       source, text);
    *eq = '\0';
    const struct llm_provider_info *p = llm_provider_find(text);
    if (p == NULL)
        return err_set(e, ERR_INVALID, "%s: unknown provider '%s' (known: %s)", source, text,
                       llm_provider_known_list());
    char *end;
    errno = 0;
    long conc = strtol(eq + 1, &end, 10), rpm = 0;
    bool ok = errno == 0 && end != eq + 1 && conc >= 0 && conc <= 100000;
    if (ok && *end == '/') {
        const char *r = end + 1;
        rpm = strtol(r, &end, 10);
        ok = errno == 0 && end != r && rpm >= 0 && rpm <= 10000000;
    }
    if (!ok || *end != '\0' || (conc == 0 && rpm == 0))
        return err_set(e, ERR_INVALID,
                       "%s: '%s=%s' needs CONCURRENT[/PER_MINUTE], numbers, not both 0 (0: no "
                       "limit of that kind)",
                       source, text, eq + 1);
    if (out != NULL) {
        snprintf(out->provider, sizeof out->provider, "%s", p->name);
        out->max_concurrent = conc;
        out->requests_per_minute = rpm;
    }
    return 0;
}
