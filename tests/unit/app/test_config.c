/* test_config.c - settings from defaults, file, environment and command line, in that order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/config.h"

/* A fake environment: NULL-terminated name/value pairs. */
static const char *const *fake_env;
static const char *env_lookup(const char *name)
{
    for (size_t i = 0; fake_env && fake_env[i]; i += 2)
        if (strcmp(fake_env[i], name) == 0)
            return fake_env[i + 1];
    return NULL;
}

static int load(struct config *cfg, const char *const *env, int argc, const char **argv,
                struct err *e)
{
    enum config_action action;
    fake_env = env;
    return config_load(cfg, argc, (char **)argv, env_lookup, &action, e);
}

static void test_defaults(void **state)
{
    struct config cfg;
    struct err e = {0};
    const char *argv[] = {"crewd"};
    assert_int_equal(load(&cfg, NULL, 1, argv, &e), 0);
    assert_string_equal(cfg.host, "127.0.0.1");
    assert_int_equal(cfg.port, 8080);
    assert_string_equal(cfg.store, CONFIG_DEFAULT_STORE);
    assert_int_equal(cfg.max_body_bytes, 1024 * 1024);
    assert_int_equal(cfg.n_api_keys, 0);
    assert_string_equal(cfg.default_provider, "openai");
    assert_int_equal(cfg.max_running_jobs, 256);
    assert_int_equal(cfg.job_lease_ms, 30000);
    assert_int_equal(cfg.llm_max_host_connections, 64);
    assert_int_equal(cfg.llm_timeout_ms, 120000);
    assert_int_equal(cfg.llm_max_attempts, 3);
    assert_int_equal(cfg.n_webhook_allow, 0); /* no webhooks unless the operator says */
    assert_int_equal(cfg.webhook_allow_private, 0);
    assert_int_equal(cfg.webhook_timeout_ms, 10000);
    assert_int_equal(cfg.webhook_max_attempts, 10);
    assert_int_equal(cfg.webhook_retry_base_ms, 1000);
    assert_int_equal(cfg.health_max_loop_lag_ms, 2000);
    assert_int_equal(cfg.shutdown_grace_ms, 10000);
    assert_int_equal(cfg.sse_heartbeat_ms, 15000);
    assert_int_equal(cfg.sse_max_streams, 10000);
    assert_int_equal(cfg.health_max_store_ms, 1000);
    config_cleanup(&cfg);
}

/* The shutdown grace and the SSE heartbeat: set, and refused out of range. */
static void test_shutdown_and_sse(void **state)
{
    struct config cfg;
    struct err e = {0};
    const char *env[] = {"CREWD_SHUTDOWN_GRACE_MS", "0", NULL};
    const char *argv[] = {"crewd", "--sse-heartbeat-ms", "30000"};
    assert_int_equal(load(&cfg, env, 3, argv, &e), 0);
    assert_int_equal(cfg.shutdown_grace_ms, 0);
    assert_int_equal(cfg.sse_heartbeat_ms, 30000);
    config_cleanup(&cfg);
    const char *beat[] = {"crewd", "--sse-heartbeat-ms", "30001"};
    assert_int_equal(load(&cfg, NULL, 3, beat, &e), ERR_INVALID);
    config_cleanup(&cfg);
    const char *grace[] = {"crewd", "--shutdown-grace-ms", "-1"};
    assert_int_equal(load(&cfg, NULL, 3, grace, &e), ERR_INVALID);
    config_cleanup(&cfg);
}

/* The /healthz bounds: from every source, in range. */
static void test_health_bounds(void **state)
{
    struct config cfg;
    struct err e = {0};
    const char *env[] = {"CREWD_HEALTH_MAX_STORE_MS", "250", NULL};
    const char *argv[] = {"crewd", "--health-max-loop-lag-ms", "500"};
    assert_int_equal(load(&cfg, env, 3, argv, &e), 0);
    assert_int_equal(cfg.health_max_loop_lag_ms, 500);
    assert_int_equal(cfg.health_max_store_ms, 250);
    config_cleanup(&cfg);
    const char *low[] = {"crewd", "--health-max-loop-lag-ms", "5"};
    assert_int_equal(load(&cfg, NULL, 3, low, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "from 10 to 3600000"));
    config_cleanup(&cfg);
    const char *bad[] = {"crewd", "--health-max-store-ms=soon"};
    assert_int_equal(load(&cfg, NULL, 2, bad, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "soon"));
    config_cleanup(&cfg);
}

static void test_webhook_settings(void **state)
{
    struct config cfg;
    struct err e = {0};
    /* comma-separated on the command line too, and repeatable */
    const char *argv[] = {"crewd",
                          "--webhook-allow",
                          "hooks.example.com,*.example.org",
                          "--webhook-allow=127.0.0.1",
                          "--webhook-allow-private",
                          "1",
                          "--webhook-timeout-ms=500",
                          "--webhook-max-attempts",
                          "3",
                          "--webhook-retry-base-ms",
                          "20"};
    assert_int_equal(load(&cfg, NULL, 11, argv, &e), 0);
    assert_int_equal(cfg.n_webhook_allow, 3);
    assert_string_equal(cfg.webhook_allow[0], "hooks.example.com");
    assert_string_equal(cfg.webhook_allow[1], "*.example.org");
    assert_string_equal(cfg.webhook_allow[2], "127.0.0.1");
    assert_int_equal(cfg.webhook_allow_private, 1);
    assert_int_equal(cfg.webhook_timeout_ms, 500);
    assert_int_equal(cfg.webhook_max_attempts, 3);
    assert_int_equal(cfg.webhook_retry_base_ms, 20);
    config_cleanup(&cfg);

    const char *env[] = {"CREWD_WEBHOOK_ALLOW", "a.example,b.example", "CREWD_WEBHOOK_MAX_ATTEMPTS",
                         "7", NULL};
    const char *none[] = {"crewd"};
    assert_int_equal(load(&cfg, env, 1, none, &e), 0);
    assert_int_equal(cfg.n_webhook_allow, 2);
    assert_int_equal(cfg.webhook_max_attempts, 7);
    config_cleanup(&cfg);

    const char *bad[][3] = {
        {"crewd", "--webhook-allow-private", "2"},  {"crewd", "--webhook-timeout-ms", "5"},
        {"crewd", "--webhook-max-attempts", "0"},   {"crewd", "--webhook-retry-base-ms", "x"},
        {"crewd", "--webhook-allow", "a.example,,b"}, {"crewd", "--webhook-allow", "a b"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(load(&cfg, NULL, 3, bad[i], &e), ERR_INVALID);
        assert_non_null(strstr(e.msg, "--webhook-"));
        config_cleanup(&cfg);
    }

    char path[] = "/tmp/crewd-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"webhook_allow\":[\"*\"],\"webhook_allow_private\":true,"
                       "\"webhook_retry_base_ms\":50}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    const char *file_argv[] = {"crewd", "--config", path};
    assert_int_equal(load(&cfg, NULL, 3, file_argv, &e), 0);
    assert_int_equal(cfg.n_webhook_allow, 1);
    assert_string_equal(cfg.webhook_allow[0], "*");
    assert_int_equal(cfg.webhook_allow_private, 1);
    assert_int_equal(cfg.webhook_retry_base_ms, 50);
    config_cleanup(&cfg);
    unlink(path);
}

static void test_precedence(void **state)
{
    char path[] = "/tmp/crewd-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"listen\":\"127.0.0.1:9000\",\"store\":\"sqlite:/tmp/f.db\","
                       "\"api_keys\":[\"file-key\"],\"max_body_bytes\":4096,"
                       "\"default_provider\":\"claude\"}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    const char *env[] = {"CREWD_STORE", "sqlite:/tmp/env.db", "CREWD_API_KEYS", "k1,k2", NULL};
    const char *argv[] = {"crewd", "--config", path, "--listen=127.0.0.1:0"};
    struct config cfg;
    struct err e = {0};
    assert_int_equal(load(&cfg, env, 4, argv, &e), 0);
    assert_int_equal(cfg.port, 0);                        /* argv beats file */
    assert_string_equal(cfg.store, "sqlite:/tmp/env.db"); /* env beats file */
    assert_int_equal(cfg.n_api_keys, 2);                  /* env list replaces file list */
    assert_string_equal(cfg.api_keys[1], "k2");
    assert_int_equal(cfg.max_body_bytes, 4096);
    assert_string_equal(cfg.default_provider, "anthropic"); /* alias resolved */
    config_cleanup(&cfg);

    const char *argv2[] = {"crewd", "--api-key", "a", "--api-key", "b", "--api-key=c"};
    assert_int_equal(load(&cfg, env, 6, argv2, &e), 0);
    assert_int_equal(cfg.n_api_keys, 3); /* argv replaces env, then accumulates */
    assert_string_equal(cfg.api_keys[0], "a");
    config_cleanup(&cfg);
    unlink(path);
}

static void test_errors(void **state)
{
    struct config cfg;
    struct err e = {0};
    const char *bad_opt[] = {"crewd", "--nope"};
    assert_int_equal(load(&cfg, NULL, 2, bad_opt, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "--nope"));
    config_cleanup(&cfg);
    const char *missing[] = {"crewd", "--listen"};
    assert_int_equal(load(&cfg, NULL, 2, missing, &e), ERR_INVALID);
    config_cleanup(&cfg);
    const char *bad_port[] = {"crewd", "--listen", "127.0.0.1:99999"};
    assert_int_equal(load(&cfg, NULL, 3, bad_port, &e), ERR_INVALID);
    config_cleanup(&cfg);
    const char *bad_level[] = {"crewd", "--log-level", "loud"};
    assert_int_equal(load(&cfg, NULL, 3, bad_level, &e), ERR_INVALID);
    config_cleanup(&cfg);
    const char *env[] = {"CREWD_API_KEYS", "ok,,x", NULL};
    const char *none[] = {"crewd"};
    assert_int_equal(load(&cfg, env, 1, none, &e), ERR_INVALID); /* empty key in the list */
    config_cleanup(&cfg);
    const char *secret_env[] = {"CREWD_API_KEYS", "has space-SECRETVALUE", NULL};
    assert_int_equal(load(&cfg, secret_env, 1, none, &e), ERR_INVALID);
    assert_null(strstr(e.msg, "SECRETVALUE")); /* a key is never echoed */
    config_cleanup(&cfg);
    const char *nofile[] = {"crewd", "--config", "/nonexistent/crewd.json"};
    assert_int_equal(load(&cfg, NULL, 3, nofile, &e), ERR_INVALID);
    config_cleanup(&cfg);
}

static void test_unknown_file_key(void **state)
{
    char path[] = "/tmp/crewd-config-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"listen\":\"127.0.0.1:1\",\"lisen\":\"x\"}";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct config cfg;
    struct err e = {0};
    const char *argv[] = {"crewd", "--config", path};
    assert_int_equal(load(&cfg, NULL, 3, argv, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "lisen: unknown key"));
    config_cleanup(&cfg);
    unlink(path);
}

static void test_listen_forms(void **state)
{
    char host[64];
    int port;
    struct err e = {0};
    assert_int_equal(config_parse_listen("[::1]:8080", host, &port, &e), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(config_parse_listen("localhost:1", host, &port, &e), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(config_parse_listen("example.com:80", host, &port, &e), ERR_INVALID);
    assert_int_equal(config_parse_listen("8080", host, &port, &e), ERR_INVALID);
    assert_int_equal(config_parse_listen("127.0.0.1:", host, &port, &e), ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),     cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_unknown_file_key),
        cmocka_unit_test(test_listen_forms), cmocka_unit_test(test_webhook_settings),
        cmocka_unit_test(test_health_bounds), cmocka_unit_test(test_shutdown_and_sse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
