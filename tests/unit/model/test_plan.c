/* test_plan.c - plan_compile (providers, tools, graph, order, cycles) and the plan's JSON
 * form, including plan_from_json refusing plans a database could hand back broken. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/plan.h"
#include "model_fixtures.h"
#include "tools/registry.h"

static int compile(void **state, const char *text, const char *default_provider, struct plan **plan,
                   struct err *e)
{
    json_t *j = load(text);
    struct crew_def *def = NULL;
    int rc = crew_def_parse(j, *state, &def, e);
    json_decref(j);
    if (rc != 0)
        fail_msg("parse failed: %s", e->msg);
    struct plan_opts opts = {.default_provider = default_provider};
    rc = plan_compile(def, &opts, plan, e);
    crew_def_free(def);
    return rc;
}

static struct plan *compile_ok(void **state, const char *text)
{
    struct plan *plan = NULL;
    struct err e = {0};
    if (compile(state, text, "openai", &plan, &e) != 0)
        fail_msg("compile failed: %s", e.msg);
    return plan;
}

#define expect_compile_err(state, text, want)                                                      \
    do {                                                                                           \
        struct plan *p_ = NULL;                                                                    \
        struct err e_ = {0};                                                                       \
        assert_int_equal(compile(state, text, "openai", &p_, &e_), ERR_INVALID);                   \
        assert_null(p_);                                                                           \
        assert_string_equal(e_.msg, want);                                                         \
    } while (0)

static void assert_indexes(const size_t *got, size_t n_got, const size_t *want, size_t n_want)
{
    assert_int_equal(n_got, n_want);
    for (size_t i = 0; i < n_want; i++)
        assert_int_equal(got[i], want[i]);
}
#define IDX(...)                                                                                   \
    ((const size_t[]){__VA_ARGS__}), (sizeof((const size_t[]){__VA_ARGS__}) / sizeof(size_t))

static void test_agents_resolved(void **state)
{
    struct plan *p = compile_ok(
        state,
        "{'name':'c','execution_mode':'parallel','max_parallel_tasks':4,'shared_tools':["
        "'calculator','json_query'],'agents':["
        "{'agent_id':'g','agent_class':'Agent','config':{'model':'gemini-2.5-pro'}},"
        "{'agent_id':'o','config':{'model':'gpt-4','temperature':0.5,'max_tokens':99,"
        "'timeout':12.5,'api_key':'sk'},'tools':['json_query','http_get'],'system_prompt':'s'},"
        "{'agent_id':'c','name':'claude one','config':{'llm':'anthropic:claude-sonnet-4-5'}},"
        "{'agent_id':'l','config':{'model':'qwen','base_url':'http://h:1/v1','api_key_env':"
        "'LOCAL_KEY'}},"
        "{'agent_id':'q','config':{'llm':'ollama'}},"
        "{'agent_id':'u','config':{'model':'o3-mini'}},"
        "{'agent_id':'d','config':{'model':'unknown-model'}}]}");
    assert_int_equal(p->version, PLAN_VERSION);
    assert_int_equal(p->mode, CREW_MODE_PARALLEL);
    assert_int_equal(p->max_parallel_tasks, 4);
    assert_int_equal(p->n_agents, 7);
    assert_false(p->has_graph);

    struct plan_agent *a = &p->agents[0];
    assert_string_equal(a->provider, "google");
    assert_string_equal(a->model, "gemini-2.5-pro");
    assert_string_equal(a->api_key_env, "GOOGLE_API_KEY");
    assert_string_equal(a->agent_class, "Agent");
    assert_null(a->base_url);
    assert_false(a->has_inline_key);
    assert_true(a->temperature < 0);
    assert_int_equal(a->max_tokens, 0);
    assert_true(a->timeout_s == 0);
    assert_null(a->system_prompt);
    assert_int_equal(a->n_tools, 2);
    assert_string_equal(a->tools[0], "calculator");

    a = &p->agents[1];
    assert_string_equal(a->provider, "openai");
    assert_string_equal(a->model, "gpt-4");
    assert_string_equal(a->api_key_env, "OPENAI_API_KEY");
    assert_true(a->has_inline_key);
    assert_true(a->temperature == 0.5);
    assert_int_equal(a->max_tokens, 99);
    assert_true(a->timeout_s == 12.5);
    assert_string_equal(a->system_prompt, "s");
    /* agent tools first, then shared ones not already listed */
    assert_int_equal(a->n_tools, 3);
    assert_string_equal(a->tools[0], "json_query");
    assert_string_equal(a->tools[1], "http_get");
    assert_string_equal(a->tools[2], "calculator");

    a = &p->agents[2];
    assert_string_equal(a->key, "claude one");
    assert_string_equal(a->agent_id, "c");
    assert_string_equal(a->provider, "anthropic");
    assert_string_equal(a->model, "claude-sonnet-4-5");
    assert_string_equal(a->api_key_env, "ANTHROPIC_API_KEY");

    a = &p->agents[3];
    assert_string_equal(a->provider, "openai");
    assert_string_equal(a->model, "qwen");
    assert_string_equal(a->base_url, "http://h:1/v1");
    assert_string_equal(a->api_key_env, "LOCAL_KEY");

    a = &p->agents[4];
    assert_string_equal(a->provider, "ollama");
    assert_string_equal(a->model, "llama3.1");
    assert_null(a->api_key_env);

    assert_string_equal(p->agents[5].provider, "openai");
    assert_string_equal(p->agents[6].provider, "openai");
    assert_string_equal(p->agents[6].model, "unknown-model");

    assert_indexes(p->order, p->n_agents, IDX(0, 1, 2, 3, 4, 5, 6));
    assert_indexes(p->finals, p->n_finals, IDX(0, 1, 2, 3, 4, 5, 6));
    plan_free(p);
    plan_free(NULL);
}

static void test_default_provider(void **state)
{
    struct plan *p = NULL;
    struct err e = {0};
    assert_int_equal(compile(state,
                             "{'name':'c','agents':[{'agent_id':'a','config':{'model':"
                             "'mixtral'}},{'agent_id':'b'}]}",
                             "groq", &p, &e),
                     0);
    assert_string_equal(p->agents[0].provider, "groq");
    assert_string_equal(p->agents[0].model, "mixtral");
    assert_string_equal(p->agents[1].provider, "groq");
    assert_string_equal(p->agents[1].model, "llama-3.3-70b-versatile");
    plan_free(p);

    /* NULL opts: openai. */
    json_t *j = load("{'name':'c','agents':[{'agent_id':'a'}]}");
    struct crew_def *def = NULL;
    assert_int_equal(crew_def_parse(j, *state, &def, &e), 0);
    assert_int_equal(plan_compile(def, NULL, &p, &e), 0);
    assert_string_equal(p->agents[0].provider, "openai");
    plan_free(p);
    crew_def_free(def);
    json_decref(j);
}

/* Compiles `text` under a policy that allows host "llm.example" and variable MY_KEY: the
 * compile's return code, with its message in e. */
static int compile_under_policy(void **state, const char *text, struct err *e)
{
    static const char *const hosts[] = {"llm.example", "*.corp.example"};
    static const char *const envs[] = {"MY_KEY"};
    struct plan_llm_policy policy = {.base_url_hosts = hosts,
                                     .n_base_url_hosts = 2,
                                     .key_envs = envs,
                                     .n_key_envs = 1};
    json_t *j = load(text);
    struct crew_def *def = NULL;
    if (crew_def_parse(j, *state, &def, e) != 0)
        fail_msg("parse failed: %s", e->msg);
    json_decref(j);
    struct plan_opts opts = {.default_provider = "openai", .policy = &policy};
    struct plan *p = NULL;
    int rc = plan_compile(def, &opts, &p, e);
    if (rc == 0) {
        /* The same check on the compiled plan (what execute and a job's start do). */
        assert_int_equal(plan_check_llm_policy(p, &policy, e), 0);
        struct plan_llm_policy none = {0};
        int again = plan_check_llm_policy(p, &none, e);
        assert_true(again == 0 || again == ERR_INVALID);
    }
    plan_free(p);
    crew_def_free(def);
    return rc;
}

static void test_llm_policy(void **state)
{
    struct err e = {0};
    /* Allowed: no base_url; an allowed host (any port, any case, a listed subdomain); the
     * providers' own variables; a listed one. */
    assert_int_equal(compile_under_policy(state,
                                          "{'name':'c','agents':[{'agent_id':'a'},"
                                          "{'agent_id':'b','config':{'llm':'anthropic',"
                                          "'base_url':'https://LLM.example:8443/v1',"
                                          "'api_key_env':'ANTHROPIC_API_KEY'}},"
                                          "{'agent_id':'c','config':{'base_url':"
                                          "'http://gw.corp.example/v1','api_key_env':'MY_KEY'}}]}",
                                          &e),
                     0);
    /* A host not on the list: the server's key would go there. */
    assert_int_equal(compile_under_policy(state,
                                          "{'name':'c','agents':[{'agent_id':'a'},"
                                          "{'agent_id':'b','config':{'base_url':"
                                          "'http://evil.example/v1'}}]}",
                                          &e),
                     ERR_INVALID);
    assert_string_equal(e.msg, "agents[1].config.base_url: host 'evil.example' is not on the "
                               "server's --llm-base-url-allow list (LLM calls, with the "
                               "server's provider keys, go only to hosts the operator allows)");
    /* A variable that is no provider's key and not listed. */
    assert_int_equal(compile_under_policy(state,
                                          "{'name':'c','agents':[{'agent_id':'a','config':"
                                          "{'api_key_env':'CREWD_API_KEYS'}}]}",
                                          &e),
                     ERR_INVALID);
    assert_string_equal(e.msg, "agents[0].config.api_key_env: 'CREWD_API_KEYS' is neither "
                               "provider 'openai''s own key variable nor on the server's "
                               "--llm-key-env-allow list");
    /* Another provider's key: not to a local server's port, nor to another provider. */
    assert_int_equal(compile_under_policy(state,
                                          "{'name':'c','agents':[{'agent_id':'a','config':"
                                          "{'llm':'ollama','api_key_env':'OPENAI_API_KEY'}}]}",
                                          &e),
                     ERR_INVALID);
    assert_string_equal(e.msg, "agents[0].config.api_key_env: 'OPENAI_API_KEY' is neither "
                               "provider 'ollama''s own key variable nor on the server's "
                               "--llm-key-env-allow list");
    assert_int_equal(compile_under_policy(state,
                                          "{'name':'c','agents':[{'agent_id':'a','config':"
                                          "{'llm':'groq','api_key_env':'ANTHROPIC_API_KEY'}}]}",
                                          &e),
                     ERR_INVALID);
    /* An empty policy allows no base_url at all. */
    json_t *j = load("{'name':'c','agents':[{'agent_id':'a','config':{'base_url':"
                     "'http://127.0.0.1:1/v1'}}]}");
    struct crew_def *def = NULL;
    assert_int_equal(crew_def_parse(j, *state, &def, &e), 0);
    json_decref(j);
    struct plan_llm_policy none = {0};
    struct plan_opts opts = {.default_provider = "openai", .policy = &none};
    struct plan *p = NULL;
    assert_int_equal(plan_compile(def, &opts, &p, &e), ERR_INVALID);
    assert_null(p);
    assert_non_null(strstr(e.msg, "host '127.0.0.1' is not on"));
    crew_def_free(def);
}

static void test_llm_errors(void **state)
{
    expect_compile_err(state,
                       "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b','config':{'llm':"
                       "'mistral'}}]}",
                       "agents[1].config.llm: unknown provider 'mistral' (known: openai, "
                       "anthropic, google, groq, ollama, openrouter, deepseek, vllm, llamacpp)");
    expect_compile_err(state,
                       "{'name':'c','agents':[{'agent_id':'a','config':{'llm':'anthropic:a',"
                       "'model':'b'}}]}",
                       "agents[0].config.llm: names model 'a' but model is 'b'");
}

static void test_graph_order(void **state)
{
    /* d -> b, a -> b, a -> c, b -> c; definition order a, b, c, d. */
    struct plan *p = compile_ok(
        state, "{'name':'c','execution_mode':'flow','agents':[{'agent_id':'a'},{'agent_id':"
               "'b'},{'agent_id':'c'},{'agent_id':'d'}],'flow_relations':[{'source':'d',"
               "'target':'b'},{'source':'a','target':['c','b']},{'source':'b','target':'c'},"
               "{'source':'a','target':'b'}]}");
    assert_true(p->has_graph);
    assert_indexes(p->agents[0].succs, p->agents[0].n_succs, IDX(1, 2));
    assert_int_equal(p->agents[0].n_preds, 0);
    assert_indexes(p->agents[1].preds, p->agents[1].n_preds, IDX(0, 3));
    assert_indexes(p->agents[1].succs, p->agents[1].n_succs, IDX(2));
    assert_indexes(p->agents[2].preds, p->agents[2].n_preds, IDX(0, 1));
    assert_indexes(p->agents[3].succs, p->agents[3].n_succs, IDX(1));
    assert_indexes(p->order, p->n_agents, IDX(0, 3, 1, 2));
    assert_indexes(p->finals, p->n_finals, IDX(2));
    plan_free(p);

    /* Ties broken by definition order: c has no edges and comes when first ready. */
    p = compile_ok(state, "{'name':'c','agents':[{'agent_id':'x'},{'agent_id':'y'},"
                          "{'agent_id':'z'}],'flow_relations':[{'source':'y','target':'x'}]}");
    assert_true(p->has_graph);
    assert_indexes(p->order, p->n_agents, IDX(1, 0, 2));
    assert_indexes(p->finals, p->n_finals, IDX(0, 2));
    plan_free(p);

    /* Relations by agent_id resolve to the same agents as by key. */
    p = compile_ok(state, "{'name':'c','agents':[{'agent_id':'r1','name':'research'},"
                          "{'agent_id':'w1','name':'writer'}],'flow_relations':[{'source':'r1',"
                          "'target':'writer'}]}");
    assert_indexes(p->agents[0].succs, p->agents[0].n_succs, IDX(1));
    assert_indexes(p->finals, p->n_finals, IDX(1));
    plan_free(p);
}

static void test_cycles(void **state)
{
#define ABC "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b'},{'agent_id':'c'}],"
    expect_compile_err(state,
                       ABC "'flow_relations':[{'source':'a','target':'b'},{'source':'b',"
                           "'target':'c'},{'source':'c','target':'a'}]}",
                       "flow_relations: cycle between agents: a -> b -> c -> a");
    /* Reported from the agent defined first, whatever the relation order. */
    expect_compile_err(state,
                       ABC "'flow_relations':[{'source':'c','target':'b'},{'source':'b',"
                           "'target':'c'}]}",
                       "flow_relations: cycle between agents: b -> c -> b");
    expect_compile_err(state, ABC "'flow_relations':[{'source':'b','target':'b'}]}",
                       "flow_relations: cycle between agents: b -> b");
    /* A cycle downstream of an acyclic part names only the cycle. */
    expect_compile_err(state,
                       ABC "'flow_relations':[{'source':'a','target':'b'},{'source':'b',"
                           "'target':'c'},{'source':'c','target':'b'}]}",
                       "flow_relations: cycle between agents: b -> c -> b");
    expect_compile_err(state,
                       "{'name':'c','agents':[{'agent_id':'a','name':'alpha'},{'agent_id':'b'}],"
                       "'flow_relations':[{'source':['a','b'],'target':['b','a']}]}",
                       "flow_relations: cycle between agents: alpha -> alpha");
#undef ABC
    /* Long keys keep the message bounded and ending cleanly. */
    char text[8192];
    size_t len = (size_t)snprintf(text, sizeof text, "{'name':'c','agents':[");
    char key[201];
    for (int i = 0; i < 10; i++) {
        memset(key, 'a' + i, 200);
        key[200] = '\0';
        len += (size_t)snprintf(text + len, sizeof text - len, "%s{'agent_id':'%s'}", i ? "," : "",
                                key);
    }
    len += (size_t)snprintf(text + len, sizeof text - len, "],'flow_relations':[");
    for (int i = 0; i < 10; i++) {
        char s[201], t[201];
        memset(s, 'a' + i, 200);
        s[200] = '\0';
        memset(t, 'a' + (i + 1) % 10, 200);
        t[200] = '\0';
        len += (size_t)snprintf(text + len, sizeof text - len, "%s{'source':'%s','target':'%s'}",
                                i ? "," : "", s, t);
    }
    snprintf(text + len, sizeof text - len, "]}");
    struct plan *p = NULL;
    struct err e = {0};
    assert_int_equal(compile(state, text, "openai", &p, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "flow_relations: cycle between agents: aaaa"));
    assert_non_null(strstr(e.msg, " -> ..."));
    assert_true(strlen(e.msg) < ERR_MSG_MAX - 1);
}

static char *dump(const json_t *j)
{
    return json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT);
}

static const char *flow_crew =
    "{'name':'c','execution_mode':'flow','max_parallel_tasks':2,'shared_tools':['calculator'],"
    "'agents':[{'agent_id':'a','config':{'model':'claude-x','temperature':0.1,'max_tokens':7,"
    "'timeout':3,'api_key':'secret-value'},'system_prompt':'sp'},{'agent_id':'b','name':'bee',"
    "'config':{'llm':'ollama','base_url':'http://x/v1'}},{'agent_id':'c','tools':['http_get']}],"
    "'flow_relations':[{'source':'a','target':['bee','c']},{'source':'b','target':'c'}]}";

static void test_json_round_trip(void **state)
{
    struct plan *p = compile_ok(state, flow_crew);
    json_t *j = plan_to_json(p);
    char *s = dump(j);
    assert_null(strstr(s, "secret-value"));
    assert_string_equal(
        s, "{\"version\":1,\"execution_mode\":\"flow\",\"max_parallel_tasks\":2,\"has_graph\":true,"
           "\"agents\":[{\"key\":\"a\",\"agent_id\":\"a\",\"agent_class\":\"BaseAgent\","
           "\"provider\":\"anthropic\",\"model\":\"claude-x\",\"base_url\":null,\"api_key_env\":"
           "\"ANTHROPIC_API_KEY\",\"has_inline_key\":true,\"system_prompt\":\"sp\",\"tools\":["
           "\"calculator\"],\"temperature\":0.10000000000000001,\"max_tokens\":7,\"timeout_s\":3.0,"
           "\"preds\":[],\"succs\":[1,2]},{\"key\":\"bee\",\"agent_id\":\"b\",\"agent_class\":"
           "\"BaseAgent\",\"provider\":\"ollama\",\"model\":\"llama3.1\",\"base_url\":"
           "\"http://x/v1\",\"api_key_env\":null,\"has_inline_key\":false,\"system_prompt\":null,"
           "\"tools\":[\"calculator\"],\"temperature\":null,\"max_tokens\":null,\"timeout_s\":null,"
           "\"preds\":[0],\"succs\":[2]},{\"key\":\"c\",\"agent_id\":\"c\",\"agent_class\":"
           "\"BaseAgent\",\"provider\":\"openai\",\"model\":\"gpt-4o-mini\",\"base_url\":null,"
           "\"api_key_env\":\"OPENAI_API_KEY\",\"has_inline_key\":false,\"system_prompt\":null,"
           "\"tools\":[\"http_get\",\"calculator\"],\"temperature\":null,\"max_tokens\":null,"
           "\"timeout_s\":null,\"preds\":[0,1],\"succs\":[]}],\"order\":[0,1,2],\"finals\":[2]}");

    struct plan *back = NULL;
    struct err e = {0};
    assert_int_equal(plan_from_json(j, &back, &e), 0);
    json_t *j2 = plan_to_json(back);
    char *s2 = dump(j2);
    assert_string_equal(s, s2);
    assert_true(back->agents[0].temperature == p->agents[0].temperature);
    assert_true(back->agents[1].temperature < 0);
    assert_indexes(back->agents[2].preds, back->agents[2].n_preds, IDX(0, 1));
    free(s);
    free(s2);
    json_decref(j2);
    plan_free(back);
    json_decref(j);
    plan_free(p);

    /* A graphless plan too. */
    p = compile_ok(state, "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b'}]}");
    j = plan_to_json(p);
    assert_int_equal(plan_from_json(j, &back, &e), 0);
    assert_false(back->has_graph);
    assert_indexes(back->finals, back->n_finals, IDX(0, 1));
    plan_free(back);
    json_decref(j);
    plan_free(p);
}

/* Applies `edit` (a JSON object merged into the plan, or into agents[i] when agent >= 0) and
 * expects plan_from_json to refuse the result. */
static void expect_broken(void **state, int agent, const char *edit, const char *want)
{
    struct plan *p = compile_ok(state, flow_crew);
    json_t *j = plan_to_json(p);
    json_t *patch = load(edit);
    json_t *target = agent < 0 ? j : json_array_get(json_object_get(j, "agents"), (size_t)agent);
    assert_int_equal(json_object_update(target, patch), 0);
    struct plan *back = NULL;
    struct err e = {0};
    int rc = plan_from_json(j, &back, &e);
    if (rc != ERR_INVALID)
        fail_msg("accepted %s (rc %d)", edit, rc);
    assert_null(back);
    if (want != NULL && strstr(e.msg, want) == NULL)
        fail_msg("for %s: message '%s' lacks '%s'", edit, e.msg, want);
    json_decref(patch);
    json_decref(j);
    plan_free(p);
}

static void test_from_json_rejects(void **state)
{
    expect_broken(state, -1, "{'version':2}", "newer");
    expect_broken(state, -1, "{'version':0}", "version");
    expect_broken(state, -1, "{'version':'1'}", "version");
    expect_broken(state, -1, "{'execution_mode':'dag'}", "execution_mode");
    expect_broken(state, -1, "{'max_parallel_tasks':0}", "max_parallel_tasks");
    expect_broken(state, -1, "{'has_graph':false}", "has_graph");
    expect_broken(state, -1, "{'has_graph':1}", "has_graph");
    expect_broken(state, -1, "{'agents':[]}", "agents");
    expect_broken(state, -1, "{'agents':{}}", "agents");
    expect_broken(state, -1, "{'order':[0,1]}", "order");
    expect_broken(state, -1, "{'order':[0,0,2]}", "permutation");
    expect_broken(state, -1, "{'order':[0,2,1]}", "inconsistent");
    expect_broken(state, -1, "{'order':[0,1,3]}", "index");
    expect_broken(state, -1, "{'order':[0,1,-1]}", "index");
    expect_broken(state, -1, "{'order':[0,1,1.0]}", "index");
    expect_broken(state, -1, "{'finals':[1,2]}", "finals");
    expect_broken(state, -1, "{'finals':[]}", "finals");
    expect_broken(state, -1, "{'finals':null}", "finals");
    expect_broken(state, -1, "{'extra':1}", "unknown field");
    expect_broken(state, 0, "{'succs':[1]}", "preds and succs disagree");
    expect_broken(state, 0, "{'succs':[2,1]}", "definition order");
    expect_broken(state, 0, "{'succs':[1,1]}", "definition order");
    expect_broken(state, 0, "{'succs':[0,1,2]}", NULL);
    expect_broken(state, 1, "{'preds':[]}", "inconsistent");
    expect_broken(state, 2, "{'succs':[0]}", NULL);
    expect_broken(state, 0, "{'preds':[9]}", "index");
    expect_broken(state, 0, "{'key':'bee'}", "duplicate");
    expect_broken(state, 0, "{'key':''}", "key");
    expect_broken(state, 0, "{'key':null}", "key");
    expect_broken(state, 0, "{'agent_id':5}", "agent_id");
    expect_broken(state, 0, "{'provider':'claude'}", "provider");
    expect_broken(state, 0, "{'provider':'mistral'}", "provider");
    expect_broken(state, 0, "{'model':''}", "model");
    expect_broken(state, 0, "{'base_url':3}", "base_url");
    expect_broken(state, 0, "{'has_inline_key':'yes'}", "has_inline_key");
    expect_broken(state, 0, "{'tools':'calculator'}", "tools");
    expect_broken(state, 0, "{'tools':['calculator','calculator']}", "duplicate");
    expect_broken(state, 0, "{'tools':['']}", "tools[0]");
    expect_broken(state, 0, "{'temperature':3}", "temperature");
    expect_broken(state, 0, "{'temperature':'hot'}", "temperature");
    expect_broken(state, 0, "{'max_tokens':0}", "max_tokens");
    expect_broken(state, 0, "{'max_tokens':1.5}", "max_tokens");
    expect_broken(state, 0, "{'timeout_s':0}", "timeout_s");
    expect_broken(state, 0, "{'secret':1}", "unknown field");

    /* Missing fields. */
    struct plan *p = compile_ok(state, flow_crew);
    const char *top[] = {"version", "execution_mode", "max_parallel_tasks", "has_graph", "agents",
                         "order",   "finals"};
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
        json_t *j = plan_to_json(p);
        json_object_del(j, top[i]);
        struct plan *back = NULL;
        assert_int_equal(plan_from_json(j, &back, NULL), ERR_INVALID);
        json_decref(j);
    }
    const char *fields[] = {"key",           "agent_id", "agent_class", "provider",
                            "model",         "base_url", "api_key_env", "has_inline_key",
                            "system_prompt", "tools",    "temperature", "max_tokens",
                            "timeout_s",     "preds",    "succs"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        json_t *j = plan_to_json(p);
        json_object_del(json_array_get(json_object_get(j, "agents"), 1), fields[i]);
        struct plan *back = NULL;
        if (plan_from_json(j, &back, NULL) != ERR_INVALID)
            fail_msg("accepted a plan without agents[1].%s", fields[i]);
        json_decref(j);
    }
    plan_free(p);

    struct plan *back = NULL;
    json_t *arr = json_array();
    assert_int_equal(plan_from_json(arr, &back, NULL), ERR_INVALID);
    json_decref(arr);
    assert_int_equal(plan_from_json(NULL, &back, NULL), ERR_INVALID);

    /* A graphless plan must keep definition order and have no edges. */
    p = compile_ok(state, "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b'}]}");
    json_t *j = plan_to_json(p);
    json_object_set_new(j, "order", load("[1,0]"));
    struct err e = {0};
    assert_int_equal(plan_from_json(j, &back, &e), ERR_INVALID);
    assert_non_null(strstr(e.msg, "definition order"));
    json_decref(j);
    plan_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agents_resolved),
        cmocka_unit_test(test_default_provider),
        cmocka_unit_test(test_llm_errors),
        cmocka_unit_test(test_llm_policy),
        cmocka_unit_test(test_graph_order),
        cmocka_unit_test(test_cycles),
        cmocka_unit_test(test_json_round_trip),
        cmocka_unit_test(test_from_json_rejects),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
