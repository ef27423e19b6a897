/* test_crew.c - crew_def_parse's rules and messages, defaults, relations, JSON out and
 * redaction. Test JSON is written with ' for " to stay readable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/crew.h"
#include "model_fixtures.h"
#include "tools/registry.h"

static int parse(void **state, const char *text, struct crew_def **def, struct err *e)
{
    json_t *j = load(text);
    int rc = crew_def_parse(j, *state, def, e);
    json_decref(j);
    return rc;
}

static struct crew_def *parse_ok(void **state, const char *text)
{
    struct crew_def *def = NULL;
    struct err e = {0};
    if (parse(state, text, &def, &e) != 0)
        fail_msg("unexpected error: %s\nfor %s", e.msg, text);
    assert_non_null(def);
    return def;
}

#define expect_err(state, text, want)                                                              \
    do {                                                                                           \
        struct crew_def *d_ = NULL;                                                                \
        struct err e_ = {0};                                                                       \
        assert_int_equal(parse(state, text, &d_, &e_), ERR_INVALID);                               \
        assert_null(d_);                                                                           \
        assert_string_equal(e_.msg, want);                                                         \
    } while (0)

/* A crew around one agent object. */
#define ONE(agent) "{'name':'c','agents':[" agent "]}"

static void test_minimal_defaults(void **state)
{
    struct crew_def *def = parse_ok(state, "{'name':'news','agents':[{'agent_id':'a'}]}");
    assert_string_equal(def->name, "news");
    assert_string_equal(def->crew_id, "");
    assert_null(def->description);
    assert_int_equal(def->mode, CREW_MODE_SEQUENTIAL);
    assert_int_equal(def->n_agents, 1);
    assert_string_equal(def->agents[0].agent_id, "a");
    assert_string_equal(def->agents[0].agent_class, "BaseAgent");
    assert_null(def->agents[0].name);
    assert_string_equal(def->agents[0].key, "a");
    assert_true(json_is_object(def->agents[0].config));
    assert_int_equal(json_object_size(def->agents[0].config), 0);
    assert_int_equal(def->agents[0].n_tools, 0);
    assert_null(def->agents[0].system_prompt);
    assert_int_equal(def->n_relations, 0);
    assert_int_equal(def->n_shared_tools, 0);
    assert_int_equal(def->max_parallel_tasks, 10);
    assert_true(json_is_object(def->metadata));
    assert_int_equal(json_object_size(def->metadata), 0);
    crew_def_free(def);

    /* Explicit nulls mean the same as absent fields. */
    def = parse_ok(state, "{'crew_id':null,'name':'n','description':null,'execution_mode':null,"
                          "'agents':[{'agent_id':'a','agent_class':null,'name':null,'config':"
                          "null,'tools':null,'system_prompt':null}],'flow_relations':null,"
                          "'shared_tools':null,'max_parallel_tasks':null,'metadata':null}");
    assert_string_equal(def->agents[0].agent_class, "BaseAgent");
    assert_int_equal(def->max_parallel_tasks, 10);
    assert_int_equal(json_object_size(def->metadata), 0);
    crew_def_free(def);
    crew_def_free(NULL);
}

static void test_full(void **state)
{
    struct crew_def *def = parse_ok(
        state,
        "{'crew_id':'6F9619FF-8B86-4D01-B42D-00C04FC964FF','name':'research team',"
        "'description':'d\\nline','execution_mode':'parallel','created_at':'x','updated_at':1,"
        "'agents':[{'agent_id':'r1','agent_class':'Agent','name':'researcher','config':{'model':"
        "'gpt-4','temperature':0.2,'max_tokens':100,'base_url':'https://x/v1','api_key_env':"
        "'MY_KEY','timeout':30,'api_key':'sk','custom':{'deep':[1]}},'tools':['calculator',"
        "'http_get'],'system_prompt':'be brief'},{'agent_id':'w','agent_class':'Chatbot'},"
        "{'agent_id':'x','agent_class':'BasicAgent'}],'shared_tools':['json_query'],"
        "'max_parallel_tasks':1000,'metadata':{'team':'x'}}");
    assert_string_equal(def->crew_id, "6f9619ff-8b86-4d01-b42d-00c04fc964ff");
    assert_string_equal(def->description, "d\nline");
    assert_int_equal(def->mode, CREW_MODE_PARALLEL);
    assert_string_equal(def->agents[0].key, "researcher");
    assert_string_equal(def->agents[0].agent_class, "Agent");
    assert_int_equal(def->agents[0].n_tools, 2);
    assert_string_equal(def->agents[0].tools[1], "http_get");
    assert_string_equal(def->agents[0].system_prompt, "be brief");
    assert_string_equal(json_string_value(json_object_get(def->agents[0].config, "api_key")), "sk");
    assert_non_null(json_object_get(def->agents[0].config, "custom"));
    assert_string_equal(def->agents[1].key, "w");
    assert_int_equal(def->n_shared_tools, 1);
    assert_int_equal(def->max_parallel_tasks, 1000);
    assert_string_equal(json_string_value(json_object_get(def->metadata, "team")), "x");
    crew_def_free(def);
}

static void test_modes(void **state)
{
    enum crew_mode m;
    const char *names[] = {"sequential", "parallel", "flow", "loop"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(crew_mode_parse(names[i], &m), 0);
        assert_int_equal(m, i);
        assert_string_equal(crew_mode_name(m), names[i]);
    }
    assert_int_equal(crew_mode_parse("Flow", &m), ERR_INVALID);
    assert_int_equal(crew_mode_parse(NULL, &m), ERR_INVALID);
    struct crew_def *def =
        parse_ok(state, "{'name':'c','execution_mode':'loop','agents':[{'agent_id':'a'}]}");
    assert_int_equal(def->mode, CREW_MODE_LOOP);
    crew_def_free(def);
    expect_err(state, "{'name':'c','execution_mode':'dag','agents':[{'agent_id':'a'}]}",
               "execution_mode: unknown mode 'dag' (known: sequential, parallel, flow, loop)");
    expect_err(state, "{'name':'c','execution_mode':3,'agents':[{'agent_id':'a'}]}",
               "execution_mode: expected a string, got integer");
}

static void test_top_level(void **state)
{
    struct crew_def *d = NULL;
    struct err e = {0};
    json_t *arr = json_array();
    assert_int_equal(crew_def_parse(arr, *state, &d, &e), ERR_INVALID);
    assert_string_equal(e.msg, "crew definition: expected an object, got array");
    json_decref(arr);

    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'colour':1}",
               "colour: unknown field (known: crew_id, name, description, execution_mode, "
               "agents, flow_relations, shared_tools, max_parallel_tasks, metadata, "
               "created_at, updated_at)");
    expect_err(state, "{'crew_id':'abc','name':'c','agents':[{'agent_id':'a'}]}",
               "crew_id: must be a UUID (or left out)");
    expect_err(state, "{'crew_id':5,'name':'c','agents':[{'agent_id':'a'}]}",
               "crew_id: expected a UUID string or null, got integer");
    expect_err(state, "{'name':'c','description':[],'agents':[{'agent_id':'a'}]}",
               "description: expected a string or null, got array");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'metadata':[]}",
               "metadata: expected an object or null, got array");
}

static void test_name_rules(void **state)
{
    expect_err(state, "{'agents':[{'agent_id':'a'}]}", "name: required");
    expect_err(state, "{'name':null,'agents':[{'agent_id':'a'}]}", "name: required");
    expect_err(state, "{'name':7,'agents':[{'agent_id':'a'}]}",
               "name: expected a string, got integer");
    expect_err(state, "{'name':'','agents':[{'agent_id':'a'}]}", "name: must not be empty");
    expect_err(state, "{'name':'a/b','agents':[{'agent_id':'a'}]}", "name: must not contain '/'");
    expect_err(state, "{'name':'a\\tb','agents':[{'agent_id':'a'}]}",
               "name: must not contain control characters");
    expect_err(state, "{'name':'a\\u007fb','agents':[{'agent_id':'a'}]}",
               "name: must not contain control characters");
    expect_err(state, "{'name':'6f9619ff-8b86-4d01-b42d-00c04fc964ff','agents':[{'agent_id':'a'}]}",
               "name: must not have the form of a UUID (UUIDs are looked up as crew_id)");
    expect_err(state, "{'name':'job','agents':[{'agent_id':'a'}]}",
               "name: 'job' is reserved (it is a path of the API)");
    expect_err(state, "{'name':'jobs','agents':[{'agent_id':'a'}]}",
               "name: 'jobs' is reserved (it is a path of the API)");
    expect_err(state, "{'name':'execute','agents':[{'agent_id':'a'}]}",
               "name: 'execute' is reserved (it is a path of the API)");

    char text[512], name[202];
    memset(name, 'n', 200);
    name[200] = '\0';
    snprintf(text, sizeof text, "{'name':'%s','agents':[{'agent_id':'a'}]}", name);
    struct crew_def *def = parse_ok(state, text);
    crew_def_free(def);
    name[200] = 'n';
    name[201] = '\0';
    snprintf(text, sizeof text, "{'name':'%s','agents':[{'agent_id':'a'}]}", name);
    expect_err(state, text, "name: longer than 200 bytes");
    /* Unicode names are fine. */
    def = parse_ok(state, "{'name':'équipe 研究','agents':[{'agent_id':'a'}]}");
    crew_def_free(def);
}

static void test_agents_array(void **state)
{
    expect_err(state, "{'name':'c'}", "agents: required (at least one agent)");
    expect_err(state, "{'name':'c','agents':{}}", "agents: expected an array, got object");
    expect_err(state, "{'name':'c','agents':[]}", "agents: at least one agent is required");
    expect_err(state, "{'name':'c','agents':['a']}", "agents[0]: expected an object, got string");

    char *text = malloc(4096);
    size_t len = (size_t)snprintf(text, 4096, "{'name':'c','agents':[");
    for (int i = 0; i < 101; i++)
        len += (size_t)snprintf(text + len, 4096 - len, "%s{'agent_id':'a%d'}", i ? "," : "", i);
    snprintf(text + len, 4096 - len, "]}");
    expect_err(state, text, "agents: at most 100 agents");
    /* Exactly 100 is fine. */
    char *cut = strstr(text, ",{'agent_id':'a100'}");
    memcpy(cut, "]}", 3);
    struct crew_def *def = parse_ok(state, text);
    assert_int_equal(def->n_agents, 100);
    crew_def_free(def);
    free(text);
}

static void test_agent_fields(void **state)
{
    expect_err(state,
               "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b'},{'agent_id':'c',"
               "'foo':1}]}",
               "agents[2].foo: unknown field (known: agent_id, agent_class, name, config, "
               "tools, system_prompt)");
    expect_err(state, ONE("{'name':'x'}"), "agents[0].agent_id: required");
    expect_err(state, ONE("{'agent_id':''}"), "agents[0].agent_id: must not be empty");
    expect_err(state, ONE("{'agent_id':1}"), "agents[0].agent_id: expected a string, got integer");
    expect_err(state, ONE("{'agent_id':'a\\nb'}"),
               "agents[0].agent_id: must not contain control characters");
    expect_err(state,
               "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b','agent_class':"
               "'Foo'}]}",
               "agents[1].agent_class: unknown class 'Foo' (known: BaseAgent, Agent, "
               "BasicAgent, Chatbot)");
    expect_err(state, ONE("{'agent_id':'a','agent_class':false}"),
               "agents[0].agent_class: expected a string, got boolean");
    expect_err(state, ONE("{'agent_id':'a','name':''}"), "agents[0].name: must not be empty");
    expect_err(state, ONE("{'agent_id':'a','name':3.5}"),
               "agents[0].name: expected a string, got number");
    expect_err(state, ONE("{'agent_id':'a','config':[]}"),
               "agents[0].config: expected an object or null, got array");
    expect_err(state, ONE("{'agent_id':'a','tools':'calculator'}"),
               "agents[0].tools: expected an array of tool names or null, got string");
    expect_err(state, ONE("{'agent_id':'a','tools':['calculator',1]}"),
               "agents[0].tools[1]: expected a string, got integer");
    expect_err(state, ONE("{'agent_id':'a','tools':['calculator','web_search']}"),
               "agents[0].tools[1]: unknown tool 'web_search' (known: calculator, "
               "datetime, current_time, http_request, http_get, json_query)");
    expect_err(state, ONE("{'agent_id':'a','tools':['http_get','calculator','http_get']}"),
               "agents[0].tools[2]: tool 'http_get' is listed twice");
    expect_err(state, ONE("{'agent_id':'a','system_prompt':{}}"),
               "agents[0].system_prompt: expected a string or null, got object");

    char text[512], id[202];
    memset(id, 'i', 201);
    id[201] = '\0';
    snprintf(text, sizeof text, ONE("{'agent_id':'%s'}"), id);
    expect_err(state, text, "agents[0].agent_id: longer than 200 bytes");
}

static void test_config_types(void **state)
{
    expect_err(state, ONE("{'agent_id':'a','config':{'llm':1}}"),
               "agents[0].config.llm: expected a string, got integer");
    expect_err(state, ONE("{'agent_id':'a','config':{'model':''}}"),
               "agents[0].config.model: must not be empty");
    expect_err(state, ONE("{'agent_id':'a','config':{'model':['x']}}"),
               "agents[0].config.model: expected a string, got array");
    expect_err(state, ONE("{'agent_id':'a','config':{'temperature':'hot'}}"),
               "agents[0].config.temperature: expected a number, got string");
    expect_err(state, ONE("{'agent_id':'a','config':{'temperature':2.5}}"),
               "agents[0].config.temperature: must be between 0 and 2");
    expect_err(state, ONE("{'agent_id':'a','config':{'temperature':-0.1}}"),
               "agents[0].config.temperature: must be between 0 and 2");
    expect_err(state, ONE("{'agent_id':'a','config':{'max_tokens':1.5}}"),
               "agents[0].config.max_tokens: expected an integer, got number");
    expect_err(state, ONE("{'agent_id':'a','config':{'max_tokens':0}}"),
               "agents[0].config.max_tokens: must be between 1 and 1000000");
    expect_err(state, ONE("{'agent_id':'a','config':{'max_tokens':1000001}}"),
               "agents[0].config.max_tokens: must be between 1 and 1000000");
    expect_err(state, ONE("{'agent_id':'a','config':{'base_url':'ftp://x'}}"),
               "agents[0].config.base_url: must start with http:// or https://");
    expect_err(state, ONE("{'agent_id':'a','config':{'base_url':true}}"),
               "agents[0].config.base_url: expected a string, got boolean");
    expect_err(state, ONE("{'agent_id':'a','config':{'api_key_env':'1KEY'}}"),
               "agents[0].config.api_key_env: must be an environment variable name "
               "([A-Za-z_][A-Za-z0-9_]*, at most 128 bytes)");
    expect_err(state, ONE("{'agent_id':'a','config':{'api_key_env':'MY-KEY'}}"),
               "agents[0].config.api_key_env: must be an environment variable name "
               "([A-Za-z_][A-Za-z0-9_]*, at most 128 bytes)");
    expect_err(state, ONE("{'agent_id':'a','config':{'timeout':0}}"),
               "agents[0].config.timeout: must be more than 0 and at most 86400 seconds");
    expect_err(state, ONE("{'agent_id':'a','config':{'timeout':86401}}"),
               "agents[0].config.timeout: must be more than 0 and at most 86400 seconds");
    expect_err(state, ONE("{'agent_id':'a','config':{'timeout':'5s'}}"),
               "agents[0].config.timeout: expected a number of seconds, got string");
    expect_err(state, ONE("{'agent_id':'a','config':{'api_key':42}}"),
               "agents[0].config.api_key: expected a string, got integer");

    struct crew_def *def = parse_ok(
        state, ONE("{'agent_id':'a','config':{'temperature':0,'max_tokens':1000000,'timeout':"
                   "86400,'base_url':'http://127.0.0.1:1/v1','api_key_env':'_K9','llm':"
                   "'whatever','other':[1,{'x':null}],'temperature_note':'free'}}"));
    assert_int_equal(json_object_size(def->agents[0].config), 8);
    crew_def_free(def);
    def = parse_ok(state, ONE("{'agent_id':'a','config':{'temperature':2}}"));
    crew_def_free(def);
}

static void test_agent_keys(void **state)
{
    expect_err(state,
               "{'name':'c','agents':[{'agent_id':'w1','name':'writer'},{'agent_id':'b'},"
               "{'agent_id':'writer'}]}",
               "agents[2]: key 'writer' is already used by agents[0] (an agent's key is its "
               "name if given, else its agent_id)");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'a'}]}",
               "agents[1]: key 'a' is already used by agents[0] (an agent's key is its name "
               "if given, else its agent_id)");
    /* Same agent_id with distinct names is fine: keys differ. */
    struct crew_def *def = parse_ok(
        state, "{'name':'c','agents':[{'agent_id':'a','name':'x'},{'agent_id':'a','name':'y'}]}");
    assert_string_equal(def->agents[1].key, "y");
    crew_def_free(def);
}

static void test_relations(void **state)
{
    struct crew_def *def = parse_ok(
        state, "{'name':'c','execution_mode':'flow','agents':[{'agent_id':'r1','name':'research'},"
               "{'agent_id':'w1','name':'writer'},{'agent_id':'e1'}],'flow_relations':["
               "{'source':'research','target':['w1','e1']},{'source':['r1','research'],"
               "'target':'writer'}]}");
    assert_int_equal(def->n_relations, 2);
    assert_int_equal(def->relations[0].n_sources, 1);
    assert_int_equal(def->relations[0].sources[0], 0);
    assert_int_equal(def->relations[0].n_targets, 2);
    assert_int_equal(def->relations[0].targets[0], 1);
    assert_int_equal(def->relations[0].targets[1], 2);
    /* r1 and research are one agent, kept once. */
    assert_int_equal(def->relations[1].n_sources, 1);
    assert_int_equal(def->relations[1].targets[0], 1);
    crew_def_free(def);

    /* Keys win over agent_ids: 'b' is agent 1's key and agent 0's agent_id. */
    def = parse_ok(state, "{'name':'c','agents':[{'agent_id':'b','name':'first'},"
                          "{'agent_id':'z','name':'b'}],'flow_relations':[{'source':'first',"
                          "'target':'z'}]}");
    assert_int_equal(crew_def_find_agent(def, "b"), 1);
    assert_int_equal(crew_def_find_agent(def, "first"), 0);
    assert_int_equal(crew_def_find_agent(def, "z"), 1);
    assert_int_equal(crew_def_find_agent(def, "nope"), -1);
    assert_int_equal(crew_def_find_agent(def, NULL), -1);
    crew_def_free(def);

#define THREE "{'name':'c','agents':[{'agent_id':'a'},{'agent_id':'b'},{'agent_id':'c'}],"
    expect_err(state, THREE "'flow_relations':[{'source':'a','target':'x'}]}",
               "flow_relations[0].target: unknown agent 'x' (known: a, b, c)");
    expect_err(state,
               THREE "'flow_relations':[{'source':'a','target':'b'},{'source':['a','q'],"
                     "'target':'c'}]}",
               "flow_relations[1].source[1]: unknown agent 'q' (known: a, b, c)");
    expect_err(state, THREE "'flow_relations':[{'source':'a','target':'b','label':1}]}",
               "flow_relations[0].label: unknown field (known: source, target)");
    expect_err(state, THREE "'flow_relations':[{'source':'a'}]}",
               "flow_relations[0].target: required");
    expect_err(state, THREE "'flow_relations':[{'target':'a'}]}",
               "flow_relations[0].source: required");
    expect_err(state, THREE "'flow_relations':[{'source':'','target':'a'}]}",
               "flow_relations[0].source: must not be empty");
    expect_err(state, THREE "'flow_relations':[{'source':[],'target':'a'}]}",
               "flow_relations[0].source: must name at least one agent");
    expect_err(state, THREE "'flow_relations':[{'source':['a',''],'target':'b'}]}",
               "flow_relations[0].source[1]: must not be empty");
    expect_err(state, THREE "'flow_relations':[{'source':1,'target':'b'}]}",
               "flow_relations[0].source: expected an agent name or an array of names, got "
               "integer");
    expect_err(state, THREE "'flow_relations':[{'source':[1],'target':'b'}]}",
               "flow_relations[0].source[0]: expected an agent name, got integer");
    expect_err(state, THREE "'flow_relations':['a']}",
               "flow_relations[0]: expected an object with source and target, got string");
    expect_err(state, THREE "'flow_relations':{}}",
               "flow_relations: expected an array or null, got object");
    expect_err(state, "{'name':'c','execution_mode':'flow','agents':[{'agent_id':'a'}]}",
               "flow_relations: required when execution_mode is 'flow'");
    expect_err(state,
               "{'name':'c','execution_mode':'flow','agents':[{'agent_id':'a'}],"
               "'flow_relations':[]}",
               "flow_relations: required when execution_mode is 'flow'");
    expect_err(state,
               "{'name':'c','execution_mode':'flow','agents':[{'agent_id':'a'}],"
               "'flow_relations':null}",
               "flow_relations: required when execution_mode is 'flow'");
    /* Relations without flow mode are kept (a job may override the mode). */
    def = parse_ok(state, THREE "'flow_relations':[{'source':'a','target':'b'}]}");
    assert_int_equal(def->n_relations, 1);
    crew_def_free(def);

    char *text = malloc(40000);
    size_t len = (size_t)snprintf(text, 40000, THREE "'flow_relations':[");
    for (int i = 0; i < 1001; i++)
        len += (size_t)snprintf(text + len, 40000 - len, "%s{'source':'a','target':'b'}",
                                i ? "," : "");
    snprintf(text + len, 40000 - len, "]}");
    expect_err(state, text, "flow_relations: at most 1000 relations");
    free(text);
#undef THREE
}

static void test_shared_and_parallel(void **state)
{
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'shared_tools':['nope']}",
               "shared_tools[0]: unknown tool 'nope' (known: calculator, datetime, "
               "current_time, http_request, http_get, json_query)");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'shared_tools':{}}",
               "shared_tools: expected an array of tool names or null, got object");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'max_parallel_tasks':'3'}",
               "max_parallel_tasks: expected an integer, got string");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'max_parallel_tasks':10.0}",
               "max_parallel_tasks: expected an integer, got number");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'max_parallel_tasks':0}",
               "max_parallel_tasks: must be between 1 and 1000");
    expect_err(state, "{'name':'c','agents':[{'agent_id':'a'}],'max_parallel_tasks':1001}",
               "max_parallel_tasks: must be between 1 and 1000");
    struct crew_def *def =
        parse_ok(state, "{'name':'c','agents':[{'agent_id':'a'}],'max_parallel_tasks':1}");
    assert_int_equal(def->max_parallel_tasks, 1);
    crew_def_free(def);
}

static void test_long_values_quoted_safely(void **state)
{
    /* A long multibyte value is cut on a character boundary, so the message stays UTF-8. */
    char text[2048] = "{'name':'c','agents':[{'agent_id':'a','agent_class':'";
    size_t len = strlen(text);
    for (int i = 0; i < 100; i++) {
        memcpy(text + len, "é", 2);
        len += 2;
    }
    memcpy(text + len, "'}]}", 5);
    struct crew_def *d = NULL;
    struct err e = {0};
    assert_int_equal(parse(state, text, &d, &e), ERR_INVALID);
    json_t *s = json_string(e.msg); /* NULL if the message were not valid UTF-8 */
    assert_non_null(s);
    json_decref(s);
    assert_non_null(strstr(e.msg, "...' (known: BaseAgent"));
}

static void test_secret_keys(void **state)
{
    const char *secret[] = {
        "api_key",       "API_KEY",     "apikey",       "x-api-key",     "client_secret",
        "password",      "db_passwd",   "private_key",  "credentials",   "Authorization",
        "key",           "token",       "access_token", "refresh-token", "openai_api_key",
        "SECRET",        "accessToken", "apiKey",       "openai_key",    "bearer",
        "x-goog-api-key"};
    const char *plain[] = {"max_tokens",  "total_tokens", "api_key_env", "secret_env",
                           "model",       "tokens",       "keys",        "keywords",
                           "temperature", "token_limit",  "base_url",    "llm"};
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        if (!crew_config_key_is_secret(secret[i]))
            fail_msg("%s should be secret", secret[i]);
    }
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        if (crew_config_key_is_secret(plain[i]))
            fail_msg("%s should not be secret", plain[i]);
    }
    assert_false(crew_config_key_is_secret(NULL));
}

static void test_redaction(void **state)
{
    json_t *cfg = load("{'model':'gpt-4','api_key':'sk-live','max_tokens':50,'api_key_env':"
                       "'OPENAI_API_KEY','headers':{'Authorization':'Bearer t','Accept':'x'},"
                       "'list':[{'client_secret':{'a':1}},'plain',{'password':null}]}");
    json_t *r = crew_config_redact(cfg);
    json_t *want = load("{'model':'gpt-4','api_key':'***','max_tokens':50,'api_key_env':"
                        "'OPENAI_API_KEY','headers':{'Authorization':'***','Accept':'x'},"
                        "'list':[{'client_secret':'***'},'plain',{'password':'***'}]}");
    assert_true(json_equal(r, want));
    /* The original is untouched. */
    assert_string_equal(json_string_value(json_object_get(cfg, "api_key")), "sk-live");
    json_decref(r);
    json_decref(want);
    json_decref(cfg);
    assert_null(crew_config_redact(NULL));
}

static char *dump(const json_t *j)
{
    return json_dumps(j, JSON_PRESERVE_ORDER | JSON_COMPACT);
}

static void test_to_json(void **state)
{
    struct crew_def *def = parse_ok(
        state, "{'name':'t','execution_mode':'flow','max_parallel_tasks':3,'metadata':{'k':1},"
               "'shared_tools':['calculator'],'agents':[{'agent_id':'r','name':'res','config':{"
               "'api_key':'sk','headers':{'Authorization':'b'},'max_tokens':5,'api_key_env':'E'},"
               "'tools':['http_get'],'system_prompt':'p'},{'agent_id':'w'},{'agent_id':'e'}],"
               "'flow_relations':[{'source':'r','target':['w','e']},{'source':['w'],'target':"
               "'e'}]}");
    json_t *j = crew_def_to_json(def, "id-1", "2026-01-01T00:00:00Z", NULL, CREW_JSON_REDACTED);
    char *s = dump(j);
    assert_string_equal(
        s, "{\"crew_id\":\"id-1\",\"name\":\"t\",\"description\":null,\"execution_mode\":"
           "\"flow\",\"agents\":[{\"agent_id\":\"r\",\"agent_class\":\"BaseAgent\",\"name\":"
           "\"res\",\"config\":{\"api_key\":\"***\",\"headers\":{\"Authorization\":\"***\"},"
           "\"max_tokens\":5,\"api_key_env\":\"E\"},\"tools\":[\"http_get\"],\"system_prompt\":"
           "\"p\"},{\"agent_id\":\"w\",\"agent_class\":\"BaseAgent\",\"name\":null,\"config\":{},"
           "\"tools\":[],\"system_prompt\":null},{\"agent_id\":\"e\",\"agent_class\":"
           "\"BaseAgent\",\"name\":null,\"config\":{},\"tools\":[],\"system_prompt\":null}],"
           "\"flow_relations\":[{\"source\":\"res\",\"target\":[\"w\",\"e\"]},{\"source\":\"w\","
           "\"target\":\"e\"}],\"shared_tools\":[\"calculator\"],\"max_parallel_tasks\":3,"
           "\"metadata\":{\"k\":1},\"created_at\":\"2026-01-01T00:00:00Z\"}");
    free(s);
    json_decref(j);

    /* FULL keeps the secret; no crew_id/created_at/updated_at unless given. */
    j = crew_def_to_json(def, NULL, NULL, "u", CREW_JSON_FULL);
    assert_null(json_object_get(j, "crew_id"));
    assert_null(json_object_get(j, "created_at"));
    assert_string_equal(json_string_value(json_object_get(j, "updated_at")), "u");
    json_t *cfg = json_object_get(json_array_get(json_object_get(j, "agents"), 0), "config");
    assert_string_equal(json_string_value(json_object_get(cfg, "api_key")), "sk");

    /* The normalized form parses back to the same normalized form. */
    struct crew_def *again = NULL;
    struct err e = {0};
    assert_int_equal(crew_def_parse(j, *state, &again, &e), 0);
    json_t *j2 = crew_def_to_json(again, NULL, NULL, "u", CREW_JSON_FULL);
    assert_true(json_equal(j, j2));
    json_decref(j2);
    crew_def_free(again);
    json_decref(j);
    crew_def_free(def);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_top_level),
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_agents_array),
        cmocka_unit_test(test_agent_fields),
        cmocka_unit_test(test_config_types),
        cmocka_unit_test(test_agent_keys),
        cmocka_unit_test(test_relations),
        cmocka_unit_test(test_shared_and_parallel),
        cmocka_unit_test(test_long_values_quoted_safely),
        cmocka_unit_test(test_secret_keys),
        cmocka_unit_test(test_redaction),
        cmocka_unit_test(test_to_json),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
