/*
 * test_runner.c - the tool runner on a real libevent loop: each built-in's successes and
 * messages, argument checks, the calculator's edge cases, datetime zones, http_request
 * against an in-process evhttp server on 127.0.0.1 (allowlist, private-address refusal,
 * timeout, size cap, redirects), and the runner's contract: callbacks never synchronous,
 * exactly once, none after cancel or free. Loops run until a condition, under a guard timer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tools/calc.h"
#include "tools/jsonq.h"
#include "core/netguard.h"
#include "tools/registry.h"
#include "tools/runner.h"
#include "tools/tzclock.h"

#define GUARD_MS 5000

struct result {
    int count;
    int rc;
    char *out;
    char msg[ERR_MSG_MAX];
};

static void on_result(void *arg, int rc, const char *output, const struct err *e)
{
    struct result *res = arg;
    res->count++;
    res->rc = rc;
    free(res->out);
    res->out = output ? strdup(output) : NULL;
    snprintf(res->msg, sizeof res->msg, "%s", rc != 0 && e ? e->msg : "");
}

struct fixture {
    struct event_base *base;
    struct tool_registry *reg;
    struct tool_runner *runner;
    struct evhttp *http;
    int port;
    char url[64]; /* http://127.0.0.1:PORT */
};

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Runs the loop until *count reaches `want` or the guard fires; returns false on the guard. */
static bool run_until(struct event_base *base, const int *count, int want)
{
    bool fired = false;
    struct event *guard = evtimer_new(base, on_guard, &fired);
    struct timeval tv = {GUARD_MS / 1000, (GUARD_MS % 1000) * 1000};
    evtimer_add(guard, &tv);
    while (*count < want && !fired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
    return !fired;
}

/* Runs the loop for a few turns with nothing expected (to prove nothing comes). */
static void run_turns(struct event_base *base, int turns)
{
    for (int i = 0; i < turns; i++)
        event_base_loop(base, EVLOOP_NONBLOCK);
}

/* ---- the in-process HTTP server ---- */

static void srv_cb(struct evhttp_request *req, void *arg)
{
    const char *uri = evhttp_request_get_uri(req);
    struct evbuffer *out = evbuffer_new();
    struct evkeyvalq *oh = evhttp_request_get_output_headers(req);
    if (strcmp(uri, "/hello") == 0) {
        evbuffer_add_printf(out, "hello");
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strcmp(uri, "/echo") == 0) {
        struct evbuffer *in = evhttp_request_get_input_buffer(req);
        const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req),
                                            "Content-Type");
        const char *xt = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Test");
        evbuffer_add_printf(out, "%s ct=%s x=%s\n",
                            evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "GET",
                            ct ? ct : "-", xt ? xt : "-");
        evbuffer_add_buffer(out, in);
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strncmp(uri, "/q?", 3) == 0) {
        evbuffer_add_printf(out, "%s %s",
                            evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" : "POST",
                            uri);
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strcmp(uri, "/redirect") == 0) {
        evhttp_add_header(oh, "Location", "http://example.com/elsewhere");
        evbuffer_add_printf(out, "moved");
        evhttp_send_reply(req, 302, "Found", out);
    } else if (strcmp(uri, "/big") == 0) {
        char chunk[1000];
        memset(chunk, 'x', sizeof chunk);
        for (int i = 0; i < 50; i++)
            evbuffer_add(out, chunk, sizeof chunk);
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strcmp(uri, "/bin") == 0) {
        evbuffer_add(out, "a\xff\xfe" "b\0c", 6);
        evhttp_send_reply(req, 200, "OK", out);
    } else if (strcmp(uri, "/slow") == 0) {
        /* Never answered: evhttp_free closes it at teardown. */
    } else {
        evbuffer_add_printf(out, "nope");
        evhttp_send_reply(req, 404, "Not Found", out);
    }
    evbuffer_free(out);
}

static struct fixture *fixture_new(const struct tool_runner_opts *opts)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(tool_registry_new(&f->reg), 0);
    f->http = evhttp_new(f->base);
    evhttp_set_gencb(f->http, srv_cb, f);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(f->http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl),
                     0);
    f->port = ntohs(sin.sin_port);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%d", f->port);
    static const char *const hosts[] = {"127.0.0.1", "*.example.org"};
    struct tool_runner_opts def = {.http_allow_hosts = hosts,
                                   .n_http_allow_hosts = 2,
                                   .http_allow_private = true,
                                   .http_timeout_ms = 2000,
                                   .http_max_bytes = 10000};
    struct err e = {0};
    assert_int_equal(tool_runner_new(f->base, f->reg, opts ? opts : &def, &f->runner, &e), 0);
    return f;
}

static void fixture_free(struct fixture *f)
{
    tool_runner_free(f->runner);
    evhttp_free(f->http);
    tool_registry_free(f->reg);
    event_base_free(f->base);
    free(f);
}

/* Invokes and waits; checks the callback did not come from inside the invoke. */
static void call_tool(struct fixture *f, const char *name, const char *args, struct result *res)
{
    struct err e = {0};
    memset(res, 0, sizeof *res);
    assert_int_equal(tool_runner_invoke(f->runner, name, args, on_result, res, NULL, &e), 0);
    assert_int_equal(res->count, 0);
    assert_true(run_until(f->base, &res->count, 1));
    run_turns(f->base, 3);
    assert_int_equal(res->count, 1);
}

static void expect_ok(struct fixture *f, const char *name, const char *args, const char *want)
{
    struct result res;
    call_tool(f, name, args, &res);
    if (res.rc != 0)
        fail_msg("%s %s: %s", name, args, res.msg);
    assert_string_equal(res.out, want);
    free(res.out);
}

static void expect_fail(struct fixture *f, const char *name, const char *args, const char *want)
{
    struct result res;
    call_tool(f, name, args, &res);
    assert_int_not_equal(res.rc, 0);
    assert_null(res.out);
    if (strstr(res.msg, want) == NULL)
        fail_msg("%s %s: got '%s', want '%s'", name, args, res.msg, want);
}

/* ---- calculator ---- */

static void calc_ok(const char *expr, const char *want)
{
    double v;
    struct err e = {0};
    int rc = calc_eval(expr, strlen(expr), &v, &e);
    if (rc != 0)
        fail_msg("%s: %s", expr, e.msg);
    char buf[64];
    calc_format(v, buf, sizeof buf);
    if (strcmp(buf, want) != 0)
        fail_msg("%s = %s, want %s", expr, buf, want);
}

static void calc_bad(const char *expr, const char *want)
{
    double v;
    struct err e = {0};
    assert_int_not_equal(calc_eval(expr, strlen(expr), &v, &e), 0);
    if (strstr(e.msg, want) == NULL)
        fail_msg("%s: got '%s', want '%s'", expr, e.msg, want);
}

static void test_calc(void **state)
{
    calc_ok("1+2*3", "7");
    calc_ok("(1+2)*3", "9");
    calc_ok("2^3^2", "512");
    calc_ok("-2^2", "-4");
    calc_ok("(-2)^2", "4");
    calc_ok("2^-1", "0.5");
    calc_ok("--3", "3");
    calc_ok("-(-3)", "3");
    calc_ok("+4", "4");
    calc_ok("10 - 4 - 3", "3");
    calc_ok("100 / 10 / 5", "2");
    calc_ok("7 % 3", "1");
    calc_ok("-7 % 3", "-1");
    calc_ok("1.5e3 + .5", "1500.5");
    calc_ok("2E-2", "0.02");
    calc_ok("0.1 + 0.2", "0.3");
    calc_ok("sqrt(16) + abs(-3)", "7");
    calc_ok("min(3, 1, 2) + max(4, 9)", "10");
    calc_ok("round(2.5) + floor(-1.5) + ceil(1.1)", "3");
    calc_ok("log(e)", "1");
    calc_ok("exp(0)", "1");
    calc_ok("sin(0) + cos(0) + tan(0)", "1");
    calc_ok("pi", "3.14159265358979");
    calc_ok("-0", "0");
    calc_ok(" \t 42 \n", "42");
    calc_ok("((((((((((1))))))))))", "1");

    calc_bad("1/0", "division by zero");
    calc_bad("1 % 0", "modulo by zero");
    calc_bad("0^-1", "division by zero");
    calc_bad("sqrt(-1)", "sqrt of a negative number");
    calc_bad("log(0)", "log of a number that is not positive");
    calc_bad("(-8)^(1/3)", "fractional power");
    calc_bad("1e308 * 10", "not a finite number");
    calc_bad("10^400", "not a finite number");
    calc_bad("1e999", "too large");
    calc_bad("", "empty expression");
    calc_bad("   ", "empty expression");
    calc_bad("1 +", "unexpected end");
    calc_bad("(1", "missing ')'");
    calc_bad("1)", "unbalanced ')'");
    calc_bad("2 3", "unexpected '3'");
    calc_bad("1e", "malformed exponent");
    calc_bad("foo(1)", "unknown function 'foo'");
    calc_bad("x", "unknown name 'x'");
    calc_bad("sqrt", "missing '('");
    calc_bad("sqrt(1, 2)", "takes 1 argument");
    calc_bad("min()", "unexpected ')'");
    calc_bad("system(\"ls\")", "unknown function");
    calc_bad("1 & 2", "unexpected '&'");
    calc_bad("\xc3\xa9", "unexpected byte 0xc3");

    /* Depth: 200 parentheses, and a long chain of unary minus, are refused, not recursed. */
    char deep[512];
    memset(deep, '(', 200);
    deep[200] = '1';
    memset(deep + 201, ')', 200);
    deep[401] = '\0';
    calc_bad(deep, "nested deeper than");
    memset(deep, '-', 300);
    deep[300] = '1';
    deep[301] = '\0';
    calc_bad(deep, "nested deeper than");
    /* Length. */
    char *longx = malloc(CALC_MAX_LEN + 2);
    memset(longx, '1', CALC_MAX_LEN + 1);
    longx[CALC_MAX_LEN + 1] = '\0';
    calc_bad(longx, "longer than");
    free(longx);
    /* A NUL inside is an error, and nothing past len is read. */
    double v;
    struct err e = {0};
    assert_int_not_equal(calc_eval("1\0+2", 4, &v, &e), 0);
    assert_int_equal(calc_eval("1+2xyz", 3, &v, &e), 0);
    assert_true(v == 3);
}

static void test_calculator_tool(void **state)
{
    struct fixture *f = fixture_new(NULL);
    expect_ok(f, "calculator", "{\"expression\":\"2*(3+4)\"}", "14");
    expect_ok(f, "calculator", "{\"expression\":\"1/3\"}", "0.333333333333333");
    expect_fail(f, "calculator", "{\"expression\":\"1/0\"}", "calculator: division by zero");
    expect_fail(f, "calculator", "{}", "calculator: arguments: 'expression' is required");
    expect_fail(f, "calculator", "{\"expression\":3}", "'expression' must be a string");
    expect_fail(f, "calculator", "{\"expression\":\"1\",\"x\":1}",
                "unknown argument 'x' (known: expression)");
    expect_fail(f, "calculator", "{\"expression\":", "calculator: arguments are not valid JSON");
    expect_fail(f, "calculator", "[1]", "arguments must be a JSON object");
    expect_fail(f, "calculator", NULL, "'expression' is required");
    expect_fail(f, "nope", "{}", "unknown tool 'nope'");
    /* Too large and too deep arguments. */
    char *big = malloc(TOOL_MAX_ARGS_BYTES + 64);
    snprintf(big, 32, "{\"expression\":\"");
    size_t n = strlen(big);
    memset(big + n, '1', TOOL_MAX_ARGS_BYTES);
    memcpy(big + n + TOOL_MAX_ARGS_BYTES, "\"}", 3);
    expect_fail(f, "calculator", big, "arguments larger than");
    free(big);
    char deep[200];
    memset(deep, '[', 100);
    deep[100] = '\0';
    expect_fail(f, "calculator", deep, "nesting deeper than");
    fixture_free(f);
}

/* A registered tool with no code behind it fails cleanly. */
static void test_unimplemented(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct tool_def d = {.name = "custom", .description = "d", .params_schema = "{\"type\":\"object\"}"};
    assert_int_equal(tool_registry_add(f->reg, &d, NULL), 0);
    expect_fail(f, "custom", "{}", "tool 'custom' has no implementation");
    fixture_free(f);
}

/* A user-defined tool: POST of the arguments with the configured headers, GET with them as
 * a query, the allowlist applied, and "unknown tool" once removed. */
static void test_user_tool(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(NULL);
    struct err e = {0};
    char url[256];
    snprintf(url, sizeof url, "%s/echo", f->url);
    struct tool_def d = {.name = "echo_tool",
                         .description = "echo",
                         .params_schema = "{\"type\":\"object\",\"properties\":"
                                          "{\"a\":{\"type\":\"integer\"}}}",
                         .url = url,
                         .post = true,
                         .headers_json = "{\"X-Test\":\"u\"}",
                         .timeout_ms = 5000};
    assert_int_equal(tool_registry_put_user(f->reg, &d, NULL, &e), 0);
    expect_ok(f, "echo_tool", "{\"a\":1}", "HTTP 200\nPOST ct=application/json x=u\n{\"a\":1}");
    expect_fail(f, "echo_tool", "{\"a\":\"x\"}", "'a' must be an integer");

    snprintf(url, sizeof url, "%s/q?fixed=1", f->url);
    struct tool_def g = {.name = "get_tool",
                         .description = "get",
                         .params_schema = "{\"type\":\"object\"}",
                         .url = url};
    assert_int_equal(tool_registry_put_user(f->reg, &g, NULL, &e), 0);
    expect_ok(f, "get_tool", "{\"s\":\"a b&c\",\"n\":2}", "HTTP 200\nGET /q?fixed=1&s=a+b%26c&n=2");

    struct tool_def far = {.name = "far",
                           .description = "far",
                           .params_schema = "{\"type\":\"object\"}",
                           .url = "http://not-allowed.example/x",
                           .post = true};
    assert_int_equal(tool_registry_put_user(f->reg, &far, NULL, &e), 0);
    expect_fail(f, "far", "{}", "far: host 'not-allowed.example' is not in the allowlist");

    assert_int_equal(tool_registry_remove_user(f->reg, "echo_tool", &e), 0);
    expect_fail(f, "echo_tool", "{}", "unknown tool 'echo_tool'");
    fixture_free(f);
}

/* ---- datetime ---- */

static void test_tzclock(void **state)
{
    char buf[160];
    struct err e = {0};
    time_t t = 1719835200; /* 2024-07-01T12:00:00Z, a Monday */
    assert_int_equal(tzclock_format(NULL, t, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "2024-07-01T12:00:00Z (UTC, Monday)");
    assert_int_equal(tzclock_format("UTC", t, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "2024-07-01T12:00:00Z (UTC, Monday)");
    assert_int_equal(tzclock_format("Europe/Madrid", t, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "2024-07-01T14:00:00+02:00 (Europe/Madrid, Monday)");
    t = 1704067200 - 3600; /* 2023-12-31T23:00:00Z: New Year in Madrid, winter time */
    assert_int_equal(tzclock_format("Europe/Madrid", t, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "2024-01-01T00:00:00+01:00 (Europe/Madrid, Monday)");
    assert_int_equal(tzclock_format("America/St_Johns", t, buf, sizeof buf, &e), 0);
    assert_string_equal(buf, "2023-12-31T19:30:00-03:30 (America/St_Johns, Sunday)");

    const char *bad[] = {"Mars/Base", "../etc/passwd", "/etc/localtime", "Europe/../UTC",
                         "Europe/Madrid ", "Europe", "zone.tab", "a;b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e = (struct err){0};
        assert_int_equal(tzclock_format(bad[i], t, buf, sizeof buf, &e), ERR_INVALID);
        assert_non_null(strstr(e.msg, "unknown time zone"));
    }
    /* TZ is put back. */
    assert_null(getenv("TZ"));
}

static void test_datetime_tool(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct result res;
    call_tool(f, "datetime", "{}", &res);
    assert_int_equal(res.rc, 0);
    assert_non_null(strstr(res.out, "Z (UTC, "));
    assert_int_equal(res.out[4], '-');
    assert_int_equal(res.out[10], 'T');
    free(res.out);
    call_tool(f, "datetime", "{\"timezone\":\"Europe/Madrid\"}", &res);
    assert_int_equal(res.rc, 0);
    assert_non_null(strstr(res.out, " (Europe/Madrid, "));
    assert_true(strstr(res.out, "+01:00") != NULL || strstr(res.out, "+02:00") != NULL);
    free(res.out);
    call_tool(f, "current_time", "{\"timezone\":\"UTC\"}", &res); /* the alias */
    assert_int_equal(res.rc, 0);
    free(res.out);
    expect_fail(f, "datetime", "{\"timezone\":\"Nowhere/Land\"}",
                "datetime: unknown time zone 'Nowhere/Land'");
    expect_fail(f, "current_time", "{\"timezone\":5}", "current_time: arguments: 'timezone' must be a string");
    fixture_free(f);
}

/* ---- json_query ---- */

static void test_json_query(void **state)
{
    struct fixture *f = fixture_new(NULL);
    const char *doc = "{\\\"a\\\":{\\\"b\\\":[10,{\\\"c\\\":\\\"deep\\\"},null]},\\\"n\\\":1.5}";
    char args[512];
#define Q(path) (snprintf(args, sizeof args, "{\"json\":\"%s\",\"path\":\"%s\"}", doc, path), args)
    expect_ok(f, "json_query", Q("a.b.1.c"), "deep");
    expect_ok(f, "json_query", Q("a.b.0"), "10");
    expect_ok(f, "json_query", Q("a.b.2"), "null");
    expect_ok(f, "json_query", Q("n"), "1.5");
    expect_ok(f, "json_query", Q("a.b.1"), "{\"c\":\"deep\"}");
    expect_ok(f, "json_query", Q(""), "{\"a\":{\"b\":[10,{\"c\":\"deep\"},null]},\"n\":1.5}");
    expect_fail(f, "json_query", Q("a.x"), "json_query: no key 'x' in the object at 'a' (keys: b)");
    expect_fail(f, "json_query", Q("zz"), "no key 'zz' in the object at the top (keys: a, n)");
    expect_fail(f, "json_query", Q("a.b.7"), "index 7 is out of range at 'a.b' (array of 3)");
    expect_fail(f, "json_query", Q("a.b.c"), "'c' is not an index");
    expect_fail(f, "json_query", Q("n.x"), "it is a number");
    expect_fail(f, "json_query", Q("a..b"), "empty segment");
#undef Q
    expect_fail(f, "json_query", "{\"json\":\"{bad\",\"path\":\"a\"}",
                "json_query: 'json' is not valid JSON");
    expect_fail(f, "json_query", "{\"json\":\"{}\"}", "'path' is required");
    expect_ok(f, "json_query", "{\"json\":\"\\\"text\\\"\",\"path\":\"\"}", "text");
    fixture_free(f);

    /* Direct: the depth guard. */
    char deep[300];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = '\0';
    char *out = NULL;
    struct err e = {0};
    assert_int_not_equal(jsonq_run(deep, 200, "0", 1, &out, &e), 0);
    assert_null(out);
}

/* ---- http_request ---- */

static void test_http_get_post(void **state)
{
    struct fixture *f = fixture_new(NULL);
    char args[512];
    snprintf(args, sizeof args, "{\"url\":\"%s/hello\"}", f->url);
    expect_ok(f, "http_request", args, "HTTP 200\nhello");
    expect_ok(f, "http_get", args, "HTTP 200\nhello");
    snprintf(args, sizeof args, "{\"url\":\"%s/missing\",\"method\":\"GET\"}", f->url);
    expect_ok(f, "http_request", args, "HTTP 404\nnope");
    snprintf(args, sizeof args,
             "{\"url\":\"%s/echo\",\"method\":\"POST\",\"body\":\"{\\\"q\\\":1}\","
             "\"headers\":{\"X-Test\":\"yes\"}}",
             f->url);
    expect_ok(f, "http_request", args, "HTTP 200\nPOST ct=application/json x=yes\n{\"q\":1}");
    snprintf(args, sizeof args,
             "{\"url\":\"%s/echo\",\"method\":\"POST\",\"body\":\"plain\","
             "\"headers\":{\"Content-Type\":\"text/csv\"}}",
             f->url);
    expect_ok(f, "http_request", args, "HTTP 200\nPOST ct=text/csv x=-\nplain");
    /* Non-UTF-8 bytes and NUL become U+FFFD. */
    snprintf(args, sizeof args, "{\"url\":\"%s/bin\"}", f->url);
    expect_ok(f, "http_request", args, "HTTP 200\na\xef\xbf\xbd\xef\xbf\xbd" "b\xef\xbf\xbd" "c");
    /* Redirects are shown, not followed. */
    snprintf(args, sizeof args, "{\"url\":\"%s/redirect\"}", f->url);
    expect_ok(f, "http_request", args,
              "HTTP 302\nLocation: http://example.com/elsewhere (not followed)\nmoved");
    /* Size cap: 50000 bytes cut at 10000. */
    snprintf(args, sizeof args, "{\"url\":\"%s/big\"}", f->url);
    struct result res;
    call_tool(f, "http_request", args, &res);
    assert_int_equal(res.rc, 0);
    assert_int_equal(strlen(res.out), strlen("HTTP 200\n") + 10000 + strlen("\n[reply cut at 10000 bytes]"));
    assert_non_null(strstr(res.out, "\n[reply cut at 10000 bytes]"));
    free(res.out);
    fixture_free(f);
}

static void test_http_refusals(void **state)
{
    struct fixture *f = fixture_new(NULL);
    char args[512];
    expect_fail(f, "http_request", "{\"url\":\"http://example.com/\"}",
                "http_request: host 'example.com' is not in the allowlist");
    expect_fail(f, "http_request", "{\"url\":\"http://localhost/\"}",
                "host 'localhost' is not in the allowlist");
    expect_fail(f, "http_request", "{\"url\":\"ftp://127.0.0.1/\"}",
                "only http and https URLs are allowed");
    expect_fail(f, "http_request", "{\"url\":\"file:///etc/passwd\"}", "http_request:");
    expect_fail(f, "http_request", "{\"url\":\"not a url\"}", "is not a valid absolute URL");
    expect_fail(f, "http_request", "{\"url\":\"http://127.0.0.1/\",\"method\":\"PUT\"}",
                "'method' must be one of: GET, POST");
    expect_fail(f, "http_request", "{\"url\":\"http://127.0.0.1/\",\"body\":\"x\"}",
                "'body' is only allowed with method POST");
    expect_fail(f, "http_get", "{\"url\":\"http://127.0.0.1/\",\"method\":\"POST\"}",
                "unknown argument 'method'");
    expect_fail(f, "http_request", "{\"url\":\"http://127.0.0.1/\",\"headers\":{\"A\":1}}",
                "'headers.A' must be a string");
    expect_fail(f, "http_request",
                "{\"url\":\"http://127.0.0.1/\",\"headers\":{\"A\":\"x\\r\\nB: y\"}}",
                "line break");
    expect_fail(f, "http_request", "{\"url\":\"http://127.0.0.1/\",\"headers\":{\"Host\":\"x\"}}",
                "header 'Host' may not be set");
    expect_fail(f, "http_request", "{\"url\":\"http://127.0.0.1/\",\"headers\":{\"a b\":\"x\"}}",
                "not a valid header name");
    /* Subdomain wildcard: the name matches, the (unresolvable) host then fails to resolve. */
    expect_fail(f, "http_request", "{\"url\":\"http://example.org/\"}",
                "host 'example.org' is not in the allowlist");
    (void)args;
    fixture_free(f);

    /* Empty allowlist: every host refused. */
    struct tool_runner_opts none = {.http_allow_private = true};
    f = fixture_new(&none);
    snprintf(args, sizeof args, "{\"url\":\"%s/hello\"}", f->url);
    expect_fail(f, "http_request", args, "host '127.0.0.1' is not in the allowlist");
    fixture_free(f);

    /* allow_private off: loopback refused at connect time, even when allowlisted. */
    static const char *const any[] = {"*"};
    struct tool_runner_opts pub = {.http_allow_hosts = any, .n_http_allow_hosts = 1};
    f = fixture_new(&pub);
    snprintf(args, sizeof args, "{\"url\":\"%s/hello\"}", f->url);
    expect_fail(f, "http_request", args,
                "http_request: refused to connect to 127.0.0.1 (loopback) for host '127.0.0.1'");
    snprintf(args, sizeof args, "{\"url\":\"http://localhost:%d/hello\"}", f->port);
    expect_fail(f, "http_request", args, "(loopback) for host 'localhost': only public");
    snprintf(args, sizeof args, "{\"url\":\"http://[::ffff:127.0.0.1]:%d/hello\"}", f->port);
    expect_fail(f, "http_request", args, "refused to connect to");
    fixture_free(f);
}

static void test_http_timeout(void **state)
{
    static const char *const hosts[] = {"127.0.0.1"};
    struct tool_runner_opts o = {.http_allow_hosts = hosts,
                                 .n_http_allow_hosts = 1,
                                 .http_allow_private = true,
                                 .http_timeout_ms = 200};
    struct fixture *f = fixture_new(&o);
    char args[256];
    snprintf(args, sizeof args, "{\"url\":\"%s/slow\"}", f->url);
    expect_fail(f, "http_request", args, "http_request: '127.0.0.1' did not answer within 200 ms");
    fixture_free(f);
}

static void test_netguard(void **state)
{
    struct {
        const char *addr;
        bool blocked;
    } cases[] = {
        {"127.0.0.1", true},     {"10.1.2.3", true},     {"172.16.0.1", true},
        {"172.31.255.255", true}, {"172.32.0.1", false}, {"192.168.1.1", true},
        {"169.254.169.254", true}, {"100.64.0.1", true}, {"100.128.0.1", false},
        {"0.0.0.0", true},       {"224.0.0.1", true},    {"255.255.255.255", true},
        {"8.8.8.8", false},      {"93.184.216.34", false}, {"::1", true},
        {"::", true},            {"fc00::1", true},      {"fd12::1", true},
        {"fe80::1", true},       {"ff02::1", true},      {"::ffff:127.0.0.1", true},
        {"::ffff:8.8.8.8", false}, {"64:ff9b::a00:1", true}, {"2002:c0a8:0101::1", true},
        {"2606:4700::1111", false}, {"::ffff:0:a00:1", true}, {"::ffff:0:808:808", false},
        {"64:ff9b:1::a00:1", true}, {"64:ff9b:1:ffff::1", true}, {"2001::1", true},
        {"2001:0:4136:e378::1", true}, {"2001:4860::8888", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof ss);
        if (strchr(cases[i].addr, ':')) {
            struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
            s6->sin6_family = AF_INET6;
            assert_int_equal(inet_pton(AF_INET6, cases[i].addr, &s6->sin6_addr), 1);
        } else {
            struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
            s4->sin_family = AF_INET;
            assert_int_equal(inet_pton(AF_INET, cases[i].addr, &s4->sin_addr), 1);
        }
        char why[128] = "";
        if (netguard_blocked((struct sockaddr *)&ss, why, sizeof why) != cases[i].blocked)
            fail_msg("%s: blocked should be %d (%s)", cases[i].addr, cases[i].blocked, why);
    }
    char why[128];
    struct sockaddr_in s4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.168.0.7", &s4.sin_addr);
    assert_true(netguard_blocked((struct sockaddr *)&s4, why, sizeof why));
    assert_string_equal(why, "192.168.0.7 (private)");
}

/* ---- the runner's contract ---- */

static void test_cancel(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct result a = {0}, b = {0}, c = {0};
    struct tool_call *ca = NULL, *cb = NULL;
    struct err e = {0};
    char args[256];
    snprintf(args, sizeof args, "{\"url\":\"%s/slow\"}", f->url);
    assert_int_equal(tool_runner_invoke(f->runner, "calculator", "{\"expression\":\"1\"}",
                                        on_result, &a, &ca, &e), 0);
    assert_int_equal(tool_runner_invoke(f->runner, "http_request", args, on_result, &b, &cb, &e),
                     0);
    assert_int_equal(tool_runner_invoke(f->runner, "calculator", "{\"expression\":\"2\"}",
                                        on_result, &c, NULL, &e), 0);
    assert_int_equal(tool_runner_active(f->runner), 3);
    tool_call_cancel(ca); /* a synchronous result not yet delivered */
    run_turns(f->base, 5);
    tool_call_cancel(cb); /* a transfer in flight */
    assert_true(run_until(f->base, &c.count, 1));
    run_turns(f->base, 5);
    assert_int_equal(a.count, 0);
    assert_int_equal(b.count, 0);
    assert_int_equal(c.count, 1);
    assert_string_equal(c.out, "2");
    free(c.out);
    assert_int_equal(tool_runner_active(f->runner), 0);
    tool_call_cancel(NULL);
    fixture_free(f);
}

static void test_free_in_flight(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct result a = {0}, b = {0};
    struct err e = {0};
    char args[256];
    snprintf(args, sizeof args, "{\"url\":\"%s/slow\"}", f->url);
    assert_int_equal(tool_runner_invoke(f->runner, "http_request", args, on_result, &a, NULL, &e),
                     0);
    assert_int_equal(tool_runner_invoke(f->runner, "calculator", "{\"expression\":\"1/0\"}",
                                        on_result, &b, NULL, &e), 0);
    run_turns(f->base, 10); /* the transfer is connected and waiting */
    tool_runner_free(f->runner);
    f->runner = NULL;
    run_turns(f->base, 10);
    assert_int_equal(a.count + b.count, b.count);
    assert_int_equal(a.count, 0);
    fixture_free(f);
    tool_runner_free(NULL);
}

struct chain {
    struct fixture *f;
    struct result inner;
    int count;
    bool free_runner;
};

/* From inside a callback: start another call, or free the runner. */
static void on_chain(void *arg, int rc, const char *output, const struct err *e)
{
    struct chain *ch = arg;
    ch->count++;
    if (ch->free_runner) {
        tool_runner_free(ch->f->runner);
        ch->f->runner = NULL;
        return;
    }
    struct err e2 = {0};
    assert_int_equal(tool_runner_invoke(ch->f->runner, "calculator", "{\"expression\":\"6*7\"}",
                                        on_result, &ch->inner, NULL, &e2), 0);
    assert_int_equal(ch->inner.count, 0);
}

static void test_reentry(void **state)
{
    struct fixture *f = fixture_new(NULL);
    struct chain ch = {.f = f};
    struct err e = {0};
    assert_int_equal(tool_runner_invoke(f->runner, "calculator", "{\"expression\":\"1\"}",
                                        on_chain, &ch, NULL, &e), 0);
    assert_true(run_until(f->base, &ch.inner.count, 1));
    assert_int_equal(ch.count, 1);
    assert_string_equal(ch.inner.out, "42");
    free(ch.inner.out);

    /* Freeing the runner from a callback while other calls wait: they stay silent. */
    struct chain ch2 = {.f = f, .free_runner = true};
    struct result other = {0};
    assert_int_equal(tool_runner_invoke(f->runner, "calculator", "{\"expression\":\"1\"}",
                                        on_chain, &ch2, NULL, &e), 0);
    assert_int_equal(tool_runner_invoke(f->runner, "calculator", "{\"expression\":\"2\"}",
                                        on_result, &other, NULL, &e), 0);
    assert_true(run_until(f->base, &ch2.count, 1));
    run_turns(f->base, 5);
    assert_null(f->runner);
    assert_int_equal(other.count, 0);
    fixture_free(f);

    /* Bad invocations return an error and never call back. */
    struct event_base *base = event_base_new();
    struct tool_registry *reg = NULL;
    struct tool_runner *r = NULL;
    assert_int_equal(tool_registry_new(&reg), 0);
    assert_int_equal(tool_runner_new(base, reg, NULL, &r, &e), 0);
    assert_int_equal(tool_runner_invoke(r, NULL, "{}", on_result, NULL, NULL, &e), ERR_INVALID);
    assert_int_equal(tool_runner_invoke(r, "calculator", "{}", NULL, NULL, NULL, &e),
                     ERR_INVALID);
    /* No options: http refuses every host. */
    struct result res = {0};
    assert_int_equal(tool_runner_invoke(r, "http_get", "{\"url\":\"http://127.0.0.1/\"}",
                                        on_result, &res, NULL, &e), 0);
    assert_true(run_until(base, &res.count, 1));
    assert_non_null(strstr(res.msg, "not in the allowlist"));
    tool_runner_free(r);
    tool_registry_free(reg);
    event_base_free(base);
    assert_int_equal(tool_runner_new(NULL, NULL, NULL, &r, &e), ERR_INVALID);
    assert_null(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calc),          cmocka_unit_test(test_calculator_tool),
        cmocka_unit_test(test_unimplemented), cmocka_unit_test(test_tzclock),
        cmocka_unit_test(test_datetime_tool), cmocka_unit_test(test_json_query),
        cmocka_unit_test(test_http_get_post), cmocka_unit_test(test_http_refusals),
        cmocka_unit_test(test_http_timeout),  cmocka_unit_test(test_netguard),
        cmocka_unit_test(test_cancel),        cmocka_unit_test(test_free_in_flight),
        cmocka_unit_test(test_reentry),       cmocka_unit_test(test_user_tool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
