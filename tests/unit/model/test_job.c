/* test_job.c - job_request_parse (API.md's execute checks, normalization, the stored form
 * parsing back to the same request) and job_status_json. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "model/job.h"
#include "model/plan.h"
#include "model_fixtures.h"
#include "store/store.h"

static struct plan *compile(void **state, const char *text)
{
    json_t *j = load(text);
    struct crew_def *def = NULL;
    struct plan *plan = NULL;
    struct err e = {0};
    if (crew_def_parse(j, *state, &def, &e) != 0)
        fail_msg("parse: %s", e.msg);
    struct plan_opts opts = {.default_provider = "openai"};
    if (plan_compile(def, &opts, &plan, &e) != 0)
        fail_msg("compile: %s", e.msg);
    crew_def_free(def);
    json_decref(j);
    return plan;
}

#define CREW "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b','name':'bee'}]}"

static void expect_invalid(struct plan *plan, const char *body, const char *needle)
{
    json_t *j = load(body);
    struct job_request *r = NULL;
    struct err e = {0};
    assert_int_equal(job_request_parse(j, plan, &r, &e), ERR_INVALID);
    assert_null(r);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", e.msg, needle);
    json_decref(j);
}

static void test_refusals(void **state)
{
    struct plan *p = compile(state, CREW);
    expect_invalid(p, "{'crew_id':'c','query':'q','execution_mode':'zig'}",
                   "Invalid execution mode: zig");
    expect_invalid(p, "{'crew_id':'c','query':'q','execution_mode':'loop'}", "kwargs.condition");
    expect_invalid(p, "{'crew_id':'c','query':'q','execution_mode':'loop','kwargs':"
                      "{'condition':''}}", "kwargs.condition");
    expect_invalid(p, "{'crew_id':'c','query':{'ghost':'x'}}", "no agent 'ghost'");
    expect_invalid(p, "{'crew_id':'c','query':{'a':1}}", "query.a");
    expect_invalid(p, "{'crew_id':'c','query':{'a':'x','b':'y','bee':'z'}}", "two tasks");
    expect_invalid(p, "{'crew_id':'c','query':'q','kwargs':{'temperature':3}}",
                   "kwargs.temperature");
    expect_invalid(p, "{'crew_id':'c','query':'q','kwargs':{'max_iterations':0}}",
                   "kwargs.max_iterations");
    expect_invalid(p, "{'crew_id':'c','query':'q','kwargs':{'all_results':1}}",
                   "kwargs.all_results");
    expect_invalid(p, "{'crew_id':'c','query':'q','user_id':5}", "user_id");
    expect_invalid(p, "{'crew_id':'c','query':'q','metadata':[]}", "metadata");
    expect_invalid(p, "{'crew_id':'c','query':'q','extra':1}", "extra: unknown field");
    /* API.md's order: the mode is judged before the query's agent names. */
    expect_invalid(p, "{'crew_id':'c','query':{'ghost':'x'},'execution_mode':'zig'}",
                   "Invalid execution mode");
    plan_free(p);
}

static void test_normalized_round_trip(void **state)
{
    struct plan *p = compile(state, CREW);
    json_t *j = load("{'crew_id':'c','query':{'bee':'task b','a':'task a'},'execution_mode':"
                     "'loop','kwargs':{'condition':'done?','agent_sequence':['bee','a'],"
                     "'max_iterations':3,'temperature':0.5,'max_tokens':100}}");
    struct job_request *r = NULL;
    struct err e = {0};
    assert_int_equal(job_request_parse(j, p, &r, &e), 0);
    assert_int_equal(r->mode, CREW_MODE_LOOP);
    assert_string_equal(r->agent_query[0], "task a");
    assert_string_equal(r->agent_query[1], "task b");
    assert_string_equal(r->query_text, "a: task a\nbee: task b");
    assert_int_equal(r->n_sequence, 2);
    assert_int_equal(r->sequence[0], 1);
    assert_int_equal(r->max_iterations, 3);
    assert_int_equal(r->max_tokens, 100);
    assert_true(r->temperature > 0.49 && r->temperature < 0.51);
    /* Stored form: keys are agent keys, in agent order; parsing it again gives the same. */
    char *text = json_dumps(r->normalized, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(strstr(text, "\"query\":{\"a\":\"task a\",\"bee\":\"task b\"}"));
    json_t *again = json_loads(text, 0, NULL);
    struct job_request *r2 = NULL;
    assert_int_equal(job_request_parse(again, p, &r2, &e), 0);
    char *text2 = json_dumps(r2->normalized, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_string_equal(text, text2);
    free(text);
    free(text2);
    json_decref(again);
    json_decref(j);
    job_request_free(r);
    job_request_free(r2);
    plan_free(p);
}

static void test_defaults(void **state)
{
    struct plan *p = compile(state, CREW);
    json_t *j = load("{'name':'c','query':'hello'}");
    struct job_request *r = NULL;
    struct err e = {0};
    assert_int_equal(job_request_parse(j, p, &r, &e), 0);
    assert_int_equal(r->mode, CREW_MODE_SEQUENTIAL);
    assert_string_equal(r->query_text, "hello");
    assert_null(r->agent_query[0]);
    assert_int_equal(r->max_tokens, 0);
    assert_true(r->temperature < 0);
    assert_int_equal(r->max_iterations, JOB_DEFAULT_MAX_ITERATIONS);
    assert_int_equal(r->n_sequence, 0);
    json_decref(j);
    job_request_free(r);
    plan_free(p);
}

static void test_status_json(void **state)
{
    struct store_job job = {0};
    memcpy(job.job_id, "0b1c8a3e-58a4-4c2e-9b8f-3f0c2e1d4a5b", ID_UUID_LEN);
    memcpy(job.crew_id, "1b1c8a3e-58a4-4c2e-9b8f-3f0c2e1d4a5b", ID_UUID_LEN);
    job.status = STORE_JOB_PENDING;
    job.execution_mode = "flow";
    job.metadata = "{\"k\":1}";
    clock_rfc3339(1764000000000, job.created_at);
    json_t *o = job_status_json(&job, 1764000005000, true);
    assert_true(json_is_null(json_object_get(o, "elapsed_time")));
    assert_true(json_is_null(json_object_get(o, "started_at")));
    assert_null(json_object_get(o, "result"));
    assert_string_equal(json_string_value(json_object_get(o, "status")), "pending");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "metadata"), "k")), 1);
    json_decref(o);

    job.status = STORE_JOB_COMPLETED;
    clock_rfc3339(1764000001000, job.started_at);
    clock_rfc3339(1764000003500, job.completed_at);
    job.result = "{\"output\":\"x\"}";
    o = job_status_json(&job, 1764000009000, true);
    assert_true(json_real_value(json_object_get(o, "elapsed_time")) > 2.49 &&
                json_real_value(json_object_get(o, "elapsed_time")) < 2.51);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(o, "result"), "output")), "x");
    json_decref(o);
}

static void test_clock_parse(void **state)
{
    char buf[CLOCK_RFC3339_LEN];
    int64_t back;
    int64_t samples[] = {0, 1764000000123, 951782400000 /* 2000-02-29 */, 4102444799999};
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
        clock_rfc3339(samples[i], buf);
        assert_int_equal(clock_parse_rfc3339(buf, &back), 0);
        assert_int_equal(back, samples[i]);
    }
    assert_int_equal(clock_parse_rfc3339("2026-11-24T10:30:00Z", &back), 0);
    assert_int_equal(clock_parse_rfc3339("2026-11-24 10:30:00Z", &back), -1);
    assert_int_equal(clock_parse_rfc3339("2026-11-24T10:30:00.Z", &back), -1);
    assert_int_equal(clock_parse_rfc3339("2026-11-24T10:30:00+01:00", &back), -1);
}

static void expect_webhook_invalid(const struct job_webhook_policy *p, const char *body,
                                   const char *needle)
{
    json_t *j = load(body);
    struct job_webhook w;
    struct err e = {0};
    assert_int_equal(job_webhook_parse(j, p, &w, &e), ERR_INVALID);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("message '%s' lacks '%s'", e.msg, needle);
    assert_null(strstr(e.msg, "SECRETSECRETSECRET"));
    assert_null(w.url);
    job_webhook_cleanup(&w);
    json_decref(j);
}

static void test_webhook_parse(void **state)
{
    const char *hosts[] = {"hooks.example.com", "*.example.org"};
    struct job_webhook_policy p = {hosts, 2}, none = {NULL, 0};
    struct job_webhook w;
    struct err e = {0};

    json_t *j = load("{'query':'q'}");
    assert_int_equal(job_webhook_parse(j, &p, &w, &e), 0);
    assert_null(w.url);
    assert_int_equal(w.mask, 0);
    json_decref(j);

    j = load("{'webhook':{'url':'https://Hooks.Example.com/x?t=1','secret':'SECRETSECRETSECRET'}}");
    assert_int_equal(job_webhook_parse(j, &p, &w, &e), 0);
    assert_string_equal(w.url, "https://Hooks.Example.com/x?t=1");
    assert_string_equal(w.secret, "SECRETSECRETSECRET");
    assert_int_equal(w.mask, STORE_EV_TERMINAL_MASK);
    job_webhook_cleanup(&w);
    json_decref(j);

    j = load("{'webhook':{'url':'http://a.example.org:8080/','secret':"
             "'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw','events':['job.failed','agent.delta']}}");
    assert_int_equal(job_webhook_parse(j, &p, &w, &e), 0);
    assert_int_equal(w.mask, STORE_EV_BIT(STORE_EV_JOB_FAILED) | STORE_EV_BIT(STORE_EV_AGENT_DELTA));
    job_webhook_cleanup(&w);
    json_decref(j);

    j = load("{'webhook':{'url':'http://a.example.org/','secret':'SECRETSECRETSECRET',"
             "'events':['*']}}");
    assert_int_equal(job_webhook_parse(j, &p, &w, &e), 0);
    assert_int_equal(w.mask, STORE_EV_ALL_MASK);
    job_webhook_cleanup(&w);
    json_decref(j);

    const char *ok = "'url':'https://hooks.example.com/','secret':'SECRETSECRETSECRET'";
    char body[300];
    expect_webhook_invalid(&p, "{'webhook':'https://x'}", "webhook: must be an object");
    snprintf(body, sizeof body, "{'webhook':{%s,'retries':3}}", ok);
    expect_webhook_invalid(&p, body, "webhook.retries: unknown field");
    expect_webhook_invalid(&p, "{'webhook':{'secret':'SECRETSECRETSECRET'}}",
                           "webhook.url: is required");
    expect_webhook_invalid(&p, "{'webhook':{'url':'ftp://hooks.example.com/','secret':'x'}}",
                           "only http and https");
    expect_webhook_invalid(&p, "{'webhook':{'url':'/relative','secret':'x'}}",
                           "not an absolute URL");
    expect_webhook_invalid(&p, "{'webhook':{'url':'https://u:p@hooks.example.com/','secret':'x'}}",
                           "user:password");
    expect_webhook_invalid(&p, "{'webhook':{'url':'https://evil.example.net/','secret':'x'}}",
                           "host 'evil.example.net' is not in the server's webhook allowlist");
    expect_webhook_invalid(&p, "{'webhook':{'url':'https://example.org/','secret':'x'}}",
                           "not in the server's webhook allowlist");
    expect_webhook_invalid(&none, "{'webhook':{'url':'https://hooks.example.com/','secret':'x'}}",
                           "this server allows no webhook hosts");
    expect_webhook_invalid(&p, "{'webhook':{'url':'https://hooks.example.com/'}}",
                           "webhook.secret: is required");
    expect_webhook_invalid(&p, "{'webhook':{'url':'https://hooks.example.com/','secret':'short'}}",
                           "webhook.secret: must be whsec_");
    snprintf(body, sizeof body, "{'webhook':{%s,'events':['job.done']}}", ok);
    expect_webhook_invalid(&p, body, "unknown event type 'job.done' (known: job.started");
    snprintf(body, sizeof body, "{'webhook':{%s,'events':[]}}", ok);
    expect_webhook_invalid(&p, body, "webhook.events: must be a non-empty array");
    snprintf(body, sizeof body, "{'webhook':{%s,'events':[3]}}", ok);
    expect_webhook_invalid(&p, body, "webhook.events[0]: must be a string");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals),    cmocka_unit_test(test_normalized_round_trip),
        cmocka_unit_test(test_defaults),    cmocka_unit_test(test_status_json),
        cmocka_unit_test(test_clock_parse), cmocka_unit_test(test_webhook_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
