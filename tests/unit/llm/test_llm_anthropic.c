/*
 * test_llm_anthropic.c - the Anthropic Messages wire (llm_anthropic.c) against the reference
 * material in tests/fixtures/anthropic/ (request/response pairs recorded from the live API by
 * the official Python SDK, the SDK's SSE fixtures, a JSON Schema generated from the SDK's
 * types): request bodies equal to the recorded ones, every built field known to the schema,
 * turn merging and system handling, replies and error bodies, every stream fed whole and byte
 * by byte, and malformed input. No network: the wire is pure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "llm/wire.h"

#define FIXTURES CREWD_SOURCE_DIR "/tests/fixtures/anthropic/"

static const struct llm_wire *W = &llm_wire_anthropic;

static json_t *load_fixture(const char *name)
{
    json_error_t je;
    json_t *j = json_load_file(name, 0, &je);
    if (j == NULL)
        fail_msg("%s: %s (line %d)", name, je.text, je.line);
    return j;
}

static json_t *built_body(const struct llm_wire_http *h)
{
    json_error_t je;
    json_t *j = json_loadb(h->body, h->body_len, 0, &je);
    if (j == NULL)
        fail_msg("built body is not JSON: %s", je.text);
    return j;
}

static void assert_json_equal(const json_t *got, const json_t *want)
{
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_SORT_KEYS), *w = json_dumps(want, JSON_SORT_KEYS);
        print_error("got:  %s\nwant: %s\n", g, w);
        free(g);
        free(w);
        fail();
    }
}

/* recordings[r].interactions[k] */
static const json_t *interaction(const json_t *rx, size_t r, size_t k)
{
    const json_t *rec = json_array_get(json_object_get(rx, "recordings"), r);
    const json_t *it = json_array_get(json_object_get(rec, "interactions"), k);
    assert_non_null(it);
    return it;
}

static const json_t *req_body(const json_t *it)
{
    return json_object_get(json_object_get(it, "request"), "body");
}

static const json_t *resp_body(const json_t *it)
{
    return json_object_get(json_object_get(it, "response"), "body");
}

/* Deletes `key` from every object nested in v (fields the SDK echoes that crewd has no
 * place for: a tool_use's "caller", a tool_result's "is_error"). */
static void strip_key(json_t *v, const char *key)
{
    if (json_is_object(v)) {
        json_object_del(v, key);
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) strip_key(x, key);
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) strip_key(x, key);
    }
}

static const char *header(const struct llm_wire_http *h, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < h->n_headers; i++) {
        if (strncasecmp(h->headers[i], name, n) == 0 && h->headers[i][n] == ':')
            return h->headers[i] + n + 2;
    }
    return NULL;
}

static const json_t *weather_schema(const json_t *rx)
{
    const json_t *tools = json_object_get(req_body(interaction(rx, 0, 0)), "tools");
    return json_object_get(json_array_get(tools, 0), "input_schema");
}

static struct llm_tool_def weather_tool(const json_t *rx)
{
    return (struct llm_tool_def){
        .name = "get_weather",
        .description = "Lookup the weather for a given city in either celsius or fahrenheit",
        .parameters = weather_schema(rx)};
}

/* ---- request shapes ---- */

static void test_build_recorded_first_turn(void **state)
{
    json_t *rx = load_fixture(FIXTURES "recorded-exchanges.json");
    struct llm_tool_def tool = weather_tool(rx);
    struct llm_message msgs[] = {{.role = LLM_ROLE_USER, .content = "What is the weather in SF?"}};
    struct llm_request req = {.model = "claude-haiku-4-5",
                              .messages = msgs,
                              .n_messages = 1,
                              .tools = &tool,
                              .n_tools = 1,
                              .temperature = -1,
                              .max_tokens = 1024,
                              .api_key = "sk-ant-test"};
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "https://api.anthropic.com/v1/", &h, &e), 0);
    assert_string_equal(h.url, "https://api.anthropic.com/v1/messages");
    assert_string_equal(header(&h, "x-api-key"), "sk-ant-test");
    assert_string_equal(header(&h, "anthropic-version"), "2023-06-01");
    assert_string_equal(header(&h, "content-type"), "application/json");
    assert_null(header(&h, "Authorization"));
    json_t *got = built_body(&h);
    assert_json_equal(got, req_body(interaction(rx, 0, 0)));
    json_decref(got);
    llm_wire_http_cleanup(&h);

    /* The streamed recording differs only by "stream": true. */
    req.stream = true;
    assert_int_equal(W->build(&req, "https://api.anthropic.com/v1", &h, &e), 0);
    got = built_body(&h);
    assert_json_equal(got, req_body(interaction(rx, 1, 0)));
    json_decref(got);
    llm_wire_http_cleanup(&h);
    json_decref(rx);
}

/* The second turn of the tool loops: an assistant tool_use, then a user tool_result. */
static void test_build_recorded_tool_turn(void **state)
{
    json_t *rx = load_fixture(FIXTURES "recorded-exchanges.json");
    struct llm_tool_def tool = weather_tool(rx);
    for (size_t r = 0; r < 2; r++) {
        const json_t *want_body = req_body(interaction(rx, r, 1));
        const json_t *wmsgs = json_object_get(want_body, "messages");
        const json_t *use = json_array_get(json_object_get(json_array_get(wmsgs, 1), "content"), 0);
        const json_t *res = json_array_get(json_object_get(json_array_get(wmsgs, 2), "content"), 0);
        char *args = json_dumps(json_object_get(use, "input"), 0);
        struct llm_tool_call call = {
            .id = (char *)json_string_value(json_object_get(use, "id")),
            .name = "get_weather",
            .arguments = args,
        };
        struct llm_message msgs[] = {
            {.role = LLM_ROLE_USER, .content = "What is the weather in SF?"},
            {.role = LLM_ROLE_ASSISTANT, .tool_calls = &call, .n_tool_calls = 1},
            {.role = LLM_ROLE_TOOL,
             .tool_call_id = call.id,
             .content = json_string_value(json_object_get(res, "content"))},
        };
        struct llm_request req = {.model = "claude-haiku-4-5",
                                  .messages = msgs,
                                  .n_messages = 3,
                                  .tools = &tool,
                                  .n_tools = 1,
                                  .temperature = -1,
                                  .max_tokens = 1024,
                                  .stream = r == 1};
        struct llm_wire_http h;
        struct err e = {0};
        assert_int_equal(W->build(&req, "https://api.anthropic.com/v1", &h, &e), 0);
        assert_null(header(&h, "x-api-key")); /* no key, no auth header */
        json_t *got = built_body(&h), *want = json_deep_copy(want_body);
        strip_key(want, "caller");
        strip_key(want, "is_error");
        assert_json_equal(got, want);
        json_decref(got);
        json_decref(want);
        llm_wire_http_cleanup(&h);
        free(args);
    }
    json_decref(rx);
}

static const json_t *def(const json_t *schema, const char *name)
{
    const json_t *d = json_object_get(json_object_get(schema, "definitions"), name);
    if (d == NULL)
        fail_msg("schema has no %s", name);
    return d;
}

/* Every required field present, every field sent known to the schema. */
static void assert_fits(const json_t *schema, const char *name, const json_t *obj)
{
    const json_t *d = def(schema, name);
    size_t i;
    const json_t *req;
    json_array_foreach(json_object_get(d, "required"), i, req)
    {
        if (json_object_get(obj, json_string_value(req)) == NULL)
            fail_msg("%s: required field %s missing", name, json_string_value(req));
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (json_object_get(json_object_get(d, "properties"), k) == NULL)
            fail_msg("%s: field %s unknown to the schema", name, k);
    }
}

static void test_build_merging_and_schema(void **state)
{
    json_t *schema = load_fixture(FIXTURES "messages.schema.json");
    json_t *params = json_pack("{s:s,s:{s:{s:s}},s:[s]}", "type", "object", "properties", "q",
                               "type", "string", "required", "q");
    struct llm_tool_def tools[] = {
        {.name = "search", .description = "Search", .parameters = params}, {.name = "now"}};
    struct llm_tool_call calls[] = {
        {.id = "toolu_1", .name = "search", .arguments = "{\"q\":\"x\"}"},
        {.id = "toolu_2", .name = "now", .arguments = ""},
        {.id = "toolu_3", .name = "search", .arguments = "{\"q\":"}};
    struct llm_message msgs[] = {
        {.role = LLM_ROLE_SYSTEM, .content = "Be brief."},
        {.role = LLM_ROLE_USER, .content = "Hi"},
        {.role = LLM_ROLE_USER, .content = "Search x"},
        {.role = LLM_ROLE_ASSISTANT, .content = "Looking.", .tool_calls = calls, .n_tool_calls = 3},
        {.role = LLM_ROLE_TOOL, .tool_call_id = "toolu_1", .content = "found"},
        {.role = LLM_ROLE_SYSTEM, .content = "Answer in French."},
        {.role = LLM_ROLE_TOOL, .tool_call_id = "toolu_2", .content = "noon"},
        {.role = LLM_ROLE_TOOL, .tool_call_id = "toolu_3"},
        {.role = LLM_ROLE_USER, .content = "Thanks"},
        {.role = LLM_ROLE_ASSISTANT, .content = ""}, /* empty: dropped */
    };
    struct llm_request req = {.model = "claude-sonnet-4-5",
                              .messages = msgs,
                              .n_messages = sizeof msgs / sizeof msgs[0],
                              .tools = tools,
                              .n_tools = 2,
                              .temperature = 0.5};
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "http://x/v1", &h, &e), 0);
    json_t *got = built_body(&h);
    json_t *want = json_loads(
        "{\"model\":\"claude-sonnet-4-5\",\"max_tokens\":4096,"
        "\"system\":\"Be brief.\\n\\nAnswer in French.\",\"messages\":["
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},"
        "{\"type\":\"text\",\"text\":\"Search x\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Looking.\"},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"search\",\"input\":{\"q\":\"x\"}},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"now\",\"input\":{}},"
        "{\"type\":\"tool_use\",\"id\":\"toolu_3\",\"name\":\"search\","
        "\"input\":{\"_raw\":\"{\\\"q\\\":\"}}]},"
        "{\"role\":\"user\",\"content\":["
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":\"found\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_2\",\"content\":\"noon\"},"
        "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_3\"},"
        "{\"type\":\"text\",\"text\":\"Thanks\"}]}],"
        "\"tools\":[{\"name\":\"search\",\"description\":\"Search\",\"input_schema\":"
        "{\"type\":\"object\",\"properties\":{\"q\":{\"type\":\"string\"}},\"required\":[\"q\"]}},"
        "{\"name\":\"now\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}}],"
        "\"temperature\":0.5}",
        0, NULL);
    assert_non_null(want);
    assert_json_equal(got, want);

    /* Against the schema. */
    assert_fits(schema, "MessageCreateParamsBase", got);
    size_t i, k;
    const json_t *m, *b;
    json_array_foreach(json_object_get(got, "messages"), i, m)
    {
        assert_fits(schema, "MessageParam", m);
        json_array_foreach(json_object_get(m, "content"), k, b)
        {
            const char *type = json_string_value(json_object_get(b, "type"));
            assert_fits(schema,
                        strcmp(type, "text") == 0       ? "TextBlockParam"
                        : strcmp(type, "tool_use") == 0 ? "ToolUseBlockParam"
                                                        : "ToolResultBlockParam",
                        b);
        }
    }
    json_array_foreach(json_object_get(got, "tools"), i, b) assert_fits(schema, "Tool", b);
    assert_null(json_object_get(got, "tool_choice"));
    json_decref(want);
    json_decref(got);
    llm_wire_http_cleanup(&h);

    /* Rounds spent: the same tools, calls forbidden with tool_choice {"type": "none"}. */
    req.tools_forbidden = true;
    assert_int_equal(W->build(&req, "http://x/v1", &h, &e), 0);
    got = built_body(&h);
    assert_int_equal(json_array_size(json_object_get(got, "tools")), 2);
    const json_t *choice = json_object_get(got, "tool_choice");
    assert_string_equal(json_string_value(json_object_get(choice, "type")), "none");
    assert_fits(schema, "ToolChoiceNone", choice);
    assert_fits(schema, "MessageCreateParamsBase", got);
    json_decref(got);
    llm_wire_http_cleanup(&h);
    json_decref(params);
    json_decref(schema);
}

static void build_err(const struct llm_request *req, int want_rc, const char *want_msg)
{
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(req, "https://api.anthropic.com/v1", &h, &e), want_rc);
    assert_string_equal(e.msg, want_msg);
    assert_null(h.url);
    assert_null(h.body);
}

static void test_build_errors(void **state)
{
    struct llm_message user = {.role = LLM_ROLE_USER, .content = "Hi"};
    struct llm_request req = {.model = "m", .messages = &user, .n_messages = 1, .temperature = -1};
    req.model = NULL;
    build_err(&req, ERR_INVALID, "model: required");
    req.model = "m";
    req.api_key = "k\r\nX-Evil: 1";
    build_err(&req, ERR_INVALID, "api_key: contains control characters");
    req.api_key = NULL;
    struct llm_message sys = {.role = LLM_ROLE_SYSTEM, .content = "only system"};
    req.messages = &sys;
    build_err(&req, ERR_INVALID, "messages: at least one user or assistant turn is required");
    struct llm_message bad[] = {{.role = LLM_ROLE_USER, .content = "\xff"}};
    req.messages = bad;
    build_err(&req, ERR_INVALID, "messages[0].content: not valid UTF-8");
    struct llm_message tool[] = {{.role = LLM_ROLE_TOOL, .content = "x"}};
    req.messages = tool;
    build_err(&req, ERR_INVALID, "messages[0].tool_call_id: required");
    struct llm_tool_call noid = {.name = "f"};
    struct llm_message asst[] = {
        {.role = LLM_ROLE_ASSISTANT, .tool_calls = &noid, .n_tool_calls = 1}};
    req.messages = asst;
    build_err(&req, ERR_INVALID, "messages[0].tool_calls[0]: id and name required");
    struct llm_message nouser[] = {{.role = LLM_ROLE_USER}};
    req.messages = nouser;
    build_err(&req, ERR_INVALID, "messages[0].content: required");
    req.messages = &user;
    json_t *arr = json_array();
    struct llm_tool_def t = {.name = "f", .parameters = arr};
    req.tools = &t;
    req.n_tools = 1;
    build_err(&req, ERR_INVALID, "tools[0].parameters: must be an object");
    json_decref(arr);
}

/* ---- replies ---- */

static struct llm_response *parse_ok(const json_t *body)
{
    char *text = json_dumps(body, 0);
    struct llm_response *r = NULL;
    struct err e = {0};
    int rc = W->parse_reply(text, strlen(text), &r, &e);
    free(text);
    if (rc != 0)
        fail_msg("parse_reply: %s", e.msg);
    return r;
}

static void test_parse_recorded(void **state)
{
    json_t *rx = load_fixture(FIXTURES "recorded-exchanges.json");
    struct llm_response *r = parse_ok(resp_body(interaction(rx, 0, 0)));
    assert_string_equal(r->text, "");
    assert_string_equal(r->finish_reason, "tool_use");
    assert_string_equal(r->model, "claude-haiku-4-5-20251001");
    assert_int_equal(r->n_tool_calls, 1);
    assert_string_equal(r->tool_calls[0].id, "toolu_01A9HHF5Ezy3oBrKmSgfASm9");
    assert_string_equal(r->tool_calls[0].name, "get_weather");
    json_t *args = json_loads(r->tool_calls[0].arguments, 0, NULL);
    json_t *want = json_pack("{s:s,s:s}", "location", "San Francisco, CA", "units", "f");
    assert_json_equal(args, want);
    json_decref(args);
    json_decref(want);
    assert_int_equal(r->usage.prompt_tokens, 656);
    assert_int_equal(r->usage.completion_tokens, 74);
    assert_int_equal(r->usage.total_tokens, 730);
    assert_int_equal(r->usage.cached_tokens, 0);
    llm_response_free(r);

    r = parse_ok(resp_body(interaction(rx, 0, 1)));
    assert_true(strncmp(r->text, "I apologize, but I'm getting an error", 37) == 0);
    assert_string_equal(r->finish_reason, "end_turn");
    assert_int_equal(r->n_tool_calls, 0);
    assert_int_equal(r->usage.prompt_tokens, 760);
    llm_response_free(r);
    json_decref(rx);
}

static void test_parse_usage_cache(void **state)
{
    const char *body =
        "{\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
        "{\"type\":\"thinking\",\"thinking\":\"hm\"},{\"type\":\"text\",\"text\":\"b\"}],"
        "\"stop_reason\":\"end_turn\",\"usage\":{\"input_tokens\":10,"
        "\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":300,"
        "\"output_tokens\":7}}";
    struct llm_response *r = NULL;
    struct err e = {0};
    assert_int_equal(W->parse_reply(body, strlen(body), &r, &e), 0);
    assert_string_equal(r->text, "ab");
    assert_int_equal(r->usage.prompt_tokens, 330);
    assert_int_equal(r->usage.cached_tokens, 300);
    assert_int_equal(r->usage.completion_tokens, 7);
    assert_int_equal(r->usage.total_tokens, 337);
    assert_null(r->model);
    llm_response_free(r);
}

static void parse_err(const char *body, int want_rc, const char *want_msg)
{
    struct llm_response *r = NULL;
    struct err e = {0};
    assert_int_equal(W->parse_reply(body, strlen(body), &r, &e), want_rc);
    assert_null(r);
    assert_string_equal(e.msg, want_msg);
}

static void test_parse_malformed(void **state)
{
    parse_err("", ERR_INVALID, "reply is not valid JSON");
    parse_err("[1]", ERR_INVALID, "reply is not valid JSON");
    parse_err("{\"type\":\"message\"}", ERR_INVALID, "reply has no content array");
    parse_err("{\"content\":[{\"type\":\"text\",\"text\":1}]}", ERR_INVALID,
              "reply: content[0].text is not a string");
    parse_err("{\"content\":[{\"type\":\"tool_use\",\"id\":\"x\"}]}", ERR_INVALID,
              "reply: content[0] (tool_use) lacks id or name");
    parse_err(
        "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
        ERR_IO, "error in reply: Overloaded");

    /* More tool calls than a streamed reply may carry: refused the same way. */
    json_t *content = json_array();
    for (int i = 0; i < 129; i++)
        json_array_append_new(content, json_pack("{s:s,s:s,s:s,s:{}}", "type", "tool_use", "id",
                                                 "toolu_x", "name", "n", "input"));
    json_t *reply = json_pack("{s:s,s:o}", "type", "message", "content", content);
    char *text = json_dumps(reply, 0);
    parse_err(text, ERR_INVALID, "reply has more than 128 tool calls");
    free(text);
    json_decref(reply);
}

static void errmsg(const char *body, const char *want)
{
    char buf[LLM_WIRE_ERRMSG_MAX + 1];
    size_t n = W->error_message(body, body ? strlen(body) : 0, buf, sizeof buf);
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
}

static void test_error_bodies(void **state)
{
    json_t *rx = load_fixture(FIXTURES "recorded-exchanges.json");
    char *body = json_dumps(resp_body(interaction(rx, 3, 1)), 0);
    errmsg(body, "messages.0.content.1: unexpected `tool_use_id` found in `tool_result` blocks: "
                 "toolu_01GHndag5wQmbzNihYmV2UBj. Each `tool_result` block must have a "
                 "corresponding `tool_use` block in the previous message.");
    free(body);
    /* The 429's message is longer than the cap: cut at 300 bytes. */
    body = json_dumps(resp_body(interaction(rx, 2, 0)), 0);
    char buf[LLM_WIRE_ERRMSG_MAX + 1];
    assert_int_equal(W->error_message(body, strlen(body), buf, sizeof buf), LLM_WIRE_ERRMSG_MAX);
    assert_true(strncmp(buf, "This request would exceed your organization's rate limit", 56) == 0);
    free(body);
    json_decref(rx);
    errmsg(NULL, "");
    errmsg("{}", "");
    errmsg("<html>bad gateway</html>", "");
    errmsg("upstream connect error\r\nmore", "upstream connect error");
}

/* ---- streams ---- */

struct deltas {
    char buf[65536];
    size_t len;
};

static void collect(void *arg, const char *text, size_t len)
{
    struct deltas *d = arg;
    assert_true(d->len + len < sizeof d->buf);
    memcpy(d->buf + d->len, text, len);
    d->len += len;
    d->buf[d->len] = '\0';
}

/* Feeds raw in pieces of `step` bytes (0: whole); returns the response or NULL with *rc. */
static struct llm_response *stream_parse(const char *raw, size_t len, size_t step, struct deltas *d,
                                         int *rc, struct err *e)
{
    struct llm_stream *s = NULL;
    struct llm_response *r = NULL;
    assert_int_equal(W->stream_new(&s), 0);
    memset(d, 0, sizeof *d);
    *rc = 0;
    if (step == 0)
        step = len ? len : 1;
    for (size_t off = 0; off < len && *rc == 0; off += step) {
        size_t n = len - off < step ? len - off : step;
        *rc = W->stream_feed(s, raw + off, n, collect, d, e);
    }
    if (*rc == 0)
        *rc = W->stream_end(s, collect, d, &r, e);
    W->stream_free(s);
    return r;
}

static struct llm_response *stream_ok(const char *raw, size_t step, struct deltas *d)
{
    int rc;
    struct err e = {0};
    struct llm_response *r = stream_parse(raw, strlen(raw), step, d, &rc, &e);
    if (rc != 0)
        fail_msg("stream (step %zu): %s", step, e.msg);
    assert_string_equal(r->text, d->buf); /* every delta went into the text, in order */
    return r;
}

static void assert_same_response(const struct llm_response *a, const struct llm_response *b)
{
    assert_string_equal(a->text, b->text);
    assert_string_equal(a->finish_reason, b->finish_reason);
    assert_string_equal(a->model ? a->model : "", b->model ? b->model : "");
    assert_memory_equal(&a->usage, &b->usage, sizeof a->usage);
    assert_int_equal(a->n_tool_calls, b->n_tool_calls);
    for (size_t i = 0; i < a->n_tool_calls; i++) {
        assert_string_equal(a->tool_calls[i].id, b->tool_calls[i].id);
        assert_string_equal(a->tool_calls[i].name, b->tool_calls[i].name);
        assert_string_equal(a->tool_calls[i].arguments, b->tool_calls[i].arguments);
    }
}

/* Whole, byte by byte and in 7-byte pieces: the same response each time. */
static struct llm_response *stream_all_ways(const char *raw)
{
    struct deltas *d = malloc(sizeof *d);
    struct llm_response *whole = stream_ok(raw, 0, d);
    size_t steps[] = {1, 7};
    for (size_t i = 0; i < 2; i++) {
        struct llm_response *r = stream_ok(raw, steps[i], d);
        assert_same_response(r, whole);
        llm_response_free(r);
    }
    free(d);
    return whole;
}

static void assert_args(const char *args, const json_t *want)
{
    json_t *got = json_loads(args, 0, NULL);
    assert_non_null(got);
    assert_json_equal(got, want);
    json_decref(got);
}

static void test_sdk_stream_fixtures(void **state)
{
    json_t *fx = load_fixture(FIXTURES "sdk-stream-fixtures.json");
    const json_t *list = json_object_get(fx, "fixtures");

    const json_t *f = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(f, "name")), "basic_response");
    struct llm_response *r = stream_all_ways(json_string_value(json_object_get(f, "sse_raw")));
    assert_string_equal(r->text, "Hello there!");
    assert_string_equal(r->finish_reason, "end_turn");
    assert_string_equal(r->model, "claude-3-opus-latest");
    assert_int_equal(r->usage.prompt_tokens, 11);
    assert_int_equal(r->usage.completion_tokens, 6);
    assert_int_equal(r->usage.total_tokens, 17);
    assert_int_equal(r->n_tool_calls, 0);
    llm_response_free(r);

    f = json_array_get(list, 1);
    assert_string_equal(json_string_value(json_object_get(f, "name")), "tool_use_response");
    r = stream_all_ways(json_string_value(json_object_get(f, "sse_raw")));
    assert_string_equal(r->text, "I'll check the current weather in Paris for you.");
    assert_string_equal(r->finish_reason, "tool_use");
    assert_int_equal(r->n_tool_calls, 1);
    assert_string_equal(r->tool_calls[0].id, "toolu_01NRLabsLyVHZPKxbKvkfSMn");
    assert_string_equal(r->tool_calls[0].name, "get_weather");
    json_t *want = json_pack("{s:s}", "location", "Paris");
    assert_args(r->tool_calls[0].arguments, want);
    json_decref(want);
    assert_int_equal(r->usage.prompt_tokens, 377);
    llm_response_free(r);

    f = json_array_get(list, 2);
    assert_string_equal(json_string_value(json_object_get(f, "name")), "error_event");
    const char *raw = json_string_value(json_object_get(f, "sse_raw"));
    for (size_t step = 0; step <= 1; step++) {
        struct deltas d;
        struct err e = {0};
        int rc;
        assert_null(stream_parse(raw, strlen(raw), step, &d, &rc, &e));
        assert_int_equal(rc, ERR_IO);
        assert_string_equal(e.msg, "error in stream: Overloaded");
    }
    json_decref(fx);
}

/* The live streams of recorded-exchanges.json; a tool call's input must be what the next
 * recorded request sent back. */
static void test_recorded_streams(void **state)
{
    json_t *rx = load_fixture(FIXTURES "recorded-exchanges.json");
    const json_t *it = interaction(rx, 1, 0);
    struct llm_response *r = stream_all_ways(json_string_value(resp_body(it)));
    assert_string_equal(r->finish_reason, "tool_use");
    assert_string_equal(r->model, "claude-haiku-4-5-20251001");
    assert_int_equal(r->n_tool_calls, 1);
    const json_t *next = json_object_get(req_body(interaction(rx, 1, 1)), "messages");
    const json_t *use = json_array_get(json_object_get(json_array_get(next, 1), "content"), 0);
    assert_string_equal(r->tool_calls[0].id, json_string_value(json_object_get(use, "id")));
    assert_args(r->tool_calls[0].arguments, json_object_get(use, "input"));
    assert_int_equal(r->usage.prompt_tokens, 656);
    llm_response_free(r);

    r = stream_all_ways(json_string_value(resp_body(interaction(rx, 1, 1))));
    assert_string_equal(r->finish_reason, "end_turn");
    assert_true(strlen(r->text) > 0);
    assert_int_equal(r->n_tool_calls, 0);
    llm_response_free(r);

    r = stream_all_ways(json_string_value(resp_body(interaction(rx, 2, 2))));
    assert_string_equal(r->model, "claude-sonnet-4-5-20250929");
    assert_int_equal(r->usage.prompt_tokens, 135);
    assert_true(r->usage.completion_tokens > 1);
    assert_true(strlen(r->text) > 0);
    llm_response_free(r);
    json_decref(rx);
}

static void stream_err(const char *raw, int want_rc, const char *want_msg)
{
    struct deltas *d = malloc(sizeof *d);
    struct err e = {0};
    int rc;
    assert_null(stream_parse(raw, strlen(raw), 0, d, &rc, &e));
    assert_int_equal(rc, want_rc);
    assert_string_equal(e.msg, want_msg);
    free(d);
}

static void test_stream_malformed(void **state)
{
    stream_err("", ERR_IO, "stream ended before message_stop");
    stream_err("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
               ERR_IO, "stream ended before message_stop");
    stream_err("data: {nope\n\n", ERR_INVALID, "stream event is not valid JSON");
    stream_err("event: content_block_start\ndata: {\"type\":\"content_block_start\"}\n\n",
               ERR_INVALID, "stream: content_block_start lacks index or block");
    stream_err("data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
               "{\"type\":\"tool_use\",\"id\":\"a\"}}\n\n",
               ERR_INVALID, "stream: tool_use block lacks id or name");
    stream_err("data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
               "{\"type\":\"tool_use\",\"id\":\"a\",\"name\":\"f\"}}\n\n"
               "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":"
               "{\"type\":\"tool_use\",\"id\":\"b\",\"name\":\"f\"}}\n\n",
               ERR_INVALID, "stream: content block 0 started twice");
    stream_err("event: error\ndata: {}\n\n", ERR_IO, "error in stream: (no message)");

    /* A last event without its blank line counts; events after message_stop do not. */
    struct deltas d;
    struct llm_response *r =
        stream_ok("data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                  "{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"
                  "data: {\"type\":\"message_stop\"}\n\n"
                  "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                  "{\"type\":\"text_delta\",\"text\":\"late\"}}",
                  0, &d);
    assert_string_equal(r->text, "hi");
    assert_null(r->finish_reason);
    llm_response_free(r);

    /* One SSE line over the cap. */
    size_t big = LLM_SSE_MAX_LINE + 16;
    char *raw = malloc(big + 1);
    memcpy(raw, "data: ", 6);
    memset(raw + 6, 'a', big - 6);
    raw[big] = '\0';
    stream_err(raw, ERR_TOO_LARGE, "stream line longer than 1048576 bytes");
    free(raw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_recorded_first_turn),
        cmocka_unit_test(test_build_recorded_tool_turn),
        cmocka_unit_test(test_build_merging_and_schema),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_parse_recorded),
        cmocka_unit_test(test_parse_usage_cache),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_error_bodies),
        cmocka_unit_test(test_sdk_stream_fixtures),
        cmocka_unit_test(test_recorded_streams),
        cmocka_unit_test(test_stream_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
