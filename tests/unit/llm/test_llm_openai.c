/*
 * test_llm_openai.c - the OpenAI Chat Completions wire (llm_openai.c) against the reference
 * material in tests/fixtures/openai/ (the published spec's examples and schemas, and streams
 * recorded from the live API by the official SDK): request shapes, reply and error parsing,
 * the three recorded streams fed whole, byte by byte and in odd splits, and malformed input.
 * No network: the wire is pure.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llm/wire.h"

#define FIXTURES CREWD_SOURCE_DIR "/tests/fixtures/openai/"

static const struct llm_wire *W = &llm_wire_openai;

static json_t *load_fixture_flags(const char *name, size_t flags)
{
    json_error_t je;
    json_t *j = json_load_file(name, flags, &je);
    if (j == NULL)
        fail_msg("%s: %s (line %d)", name, je.text, je.line);
    return j;
}

static json_t *load_fixture(const char *name)
{
    return load_fixture_flags(name, 0);
}

static const json_t *example(const json_t *examples, const char *title)
{
    size_t i;
    const json_t *ex;
    json_array_foreach(json_object_get(examples, "operation_examples"), i, ex)
    {
        if (strcmp(json_string_value(json_object_get(ex, "title")), title) == 0)
            return ex;
    }
    fail_msg("no example titled %s", title);
    return NULL;
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

/* ---- request shapes ---- */

static void test_build_default_example(void **state)
{
    json_t *ex_all = load_fixture(FIXTURES "chat-completions.examples.json");
    const json_t *ex = example(ex_all, "Default");
    struct llm_message msgs[] = {
        {.role = LLM_ROLE_SYSTEM, .content = "You are a helpful assistant."},
        {.role = LLM_ROLE_USER, .content = "Hello!"},
    };
    struct llm_request req = {.provider = "openai",
                              .model = "VAR_chat_model_id",
                              .api_key = "sk-test",
                              .messages = msgs,
                              .n_messages = 2,
                              .temperature = -1};
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "https://api.openai.com/v1/", &h, &e), 0);
    assert_string_equal(h.url, "https://api.openai.com/v1/chat/completions");

    /* Headers as in the spec's example, the key in place of $OPENAI_API_KEY. */
    const json_t *want_h = json_object_get(ex, "request_headers");
    assert_int_equal(h.n_headers, json_array_size(want_h));
    assert_string_equal(h.headers[0], json_string_value(json_array_get(want_h, 0)));
    assert_string_equal(json_string_value(json_array_get(want_h, 1)),
                        "Authorization: Bearer $OPENAI_API_KEY");
    assert_string_equal(h.headers[1], "Authorization: Bearer sk-test");

    /* The body is the example's, except that crewd sends "system" where it says "developer"
     * (see llm_openai.c). */
    json_t *want = json_deep_copy(json_object_get(ex, "request_body"));
    json_object_set_new(json_array_get(json_object_get(want, "messages"), 0), "role",
                        json_string("system"));
    json_t *got = built_body(&h);
    assert_json_equal(got, want);
    json_decref(got);
    json_decref(want);
    llm_wire_http_cleanup(&h);
    json_decref(ex_all);
}

static void test_build_functions_example(void **state)
{
    json_t *ex_all = load_fixture(FIXTURES "chat-completions.examples.json");
    const json_t *ex = example(ex_all, "Functions");
    const json_t *want_body = json_object_get(ex, "request_body");
    const json_t *fn =
        json_object_get(json_array_get(json_object_get(want_body, "tools"), 0), "function");
    struct llm_message msgs[] = {
        {.role = LLM_ROLE_USER, .content = "What is the weather like in Boston today?"},
    };
    struct llm_tool_def tools[] = {{
        .name = json_string_value(json_object_get(fn, "name")),
        .description = json_string_value(json_object_get(fn, "description")),
        .parameters = json_object_get(fn, "parameters"),
    }};
    struct llm_request req = {.provider = "openai",
                              .model = "gpt-5.4",
                              .api_key = "k",
                              .messages = msgs,
                              .n_messages = 1,
                              .tools = tools,
                              .n_tools = 1,
                              .temperature = -1};
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "https://api.openai.com/v1", &h, &e), 0);
    json_t *want = json_deep_copy(want_body);
    json_object_del(want, "tool_choice"); /* "auto" is the default; crewd does not send it */
    json_t *got = built_body(&h);
    assert_json_equal(got, want);
    json_decref(got);
    json_decref(want);
    llm_wire_http_cleanup(&h);
    json_decref(ex_all);
}

static void test_build_streaming_example(void **state)
{
    json_t *ex_all = load_fixture(FIXTURES "chat-completions.examples.json");
    const json_t *ex = example(ex_all, "Streaming");
    struct llm_message msgs[] = {
        {.role = LLM_ROLE_SYSTEM, .content = "You are a helpful assistant."},
        {.role = LLM_ROLE_USER, .content = "Hello!"},
    };
    struct llm_request req = {.provider = "openai",
                              .model = "VAR_chat_model_id",
                              .messages = msgs,
                              .n_messages = 2,
                              .temperature = -1,
                              .stream = true};
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "https://api.openai.com/v1", &h, &e), 0);
    assert_int_equal(h.n_headers, 1); /* no key: no Authorization header */
    json_t *got = built_body(&h);
    json_t *so = json_object_get(got, "stream_options");
    assert_true(json_is_true(json_object_get(so, "include_usage")));
    json_object_del(got, "stream_options");
    json_t *want = json_deep_copy(json_object_get(ex, "request_body"));
    json_object_set_new(json_array_get(json_object_get(want, "messages"), 0), "role",
                        json_string("system"));
    assert_json_equal(got, want);
    json_decref(got);
    json_decref(want);
    llm_wire_http_cleanup(&h);
    json_decref(ex_all);
}

/* The schema's "required" list of components.schemas[name]. */
static const json_t *schema(const json_t *spec, const char *name)
{
    const json_t *s =
        json_object_get(json_object_get(json_object_get(spec, "components"), "schemas"), name);
    if (s == NULL)
        fail_msg("schema %s missing", name);
    return s;
}

static void assert_has_required(const json_t *obj, const json_t *sch, const char *what)
{
    size_t i;
    const json_t *k;
    json_array_foreach(json_object_get(sch, "required"), i, k)
    {
        if (json_object_get(obj, json_string_value(k)) == NULL)
            fail_msg("%s lacks required field %s", what, json_string_value(k));
    }
}

/* Every key of obj is a property the schema knows (following allOf and $ref). */
static bool schema_knows(const json_t *spec, const json_t *sch, const char *key)
{
    if (json_object_get(json_object_get(sch, "properties"), key) != NULL)
        return true;
    const json_t *ref = json_object_get(sch, "$ref");
    if (json_is_string(ref)) {
        const char *r = json_string_value(ref);
        const char *name = strrchr(r, '/');
        return name && schema_knows(spec, schema(spec, name + 1), key);
    }
    size_t i;
    const json_t *part;
    json_array_foreach(json_object_get(sch, "allOf"), i, part)
    {
        if (schema_knows(spec, part, key))
            return true;
    }
    return false;
}

static void assert_keys_known(const json_t *spec, const json_t *obj, const json_t *sch,
                              const char *what)
{
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (!schema_knows(spec, sch, k))
            fail_msg("%s: field %s is not in the schema", what, k);
    }
}

static void test_build_all_fields_against_schema(void **state)
{
    /* The spec holds an int64 bound jansson refuses as an integer (seed's minimum). */
    json_t *spec = load_fixture_flags(FIXTURES "chat-completions.openapi-subset.json",
                                      JSON_DECODE_INT_AS_REAL);
    json_t *params =
        json_pack("{s:s,s:{s:{s:s}}}", "type", "object", "properties", "q", "type", "string");
    struct llm_tool_call calls[] = {
        {.id = "call_1", .name = "search", .arguments = "{\"q\":\"x\"}"}};
    struct llm_message msgs[] = {
        {.role = LLM_ROLE_SYSTEM, .content = "sys"},
        {.role = LLM_ROLE_USER, .content = "héllo \xe2\x9c\x93"},
        {.role = LLM_ROLE_ASSISTANT, .content = NULL, .tool_calls = calls, .n_tool_calls = 1},
        {.role = LLM_ROLE_TOOL, .content = "result", .tool_call_id = "call_1"},
        {.role = LLM_ROLE_ASSISTANT, .content = "done"},
    };
    struct llm_tool_def tools[] = {
        {.name = "search", .description = "Search", .parameters = params}, {.name = "noargs"}};
    struct llm_request req = {.provider = "groq",
                              .model = "m",
                              .api_key = "k",
                              .messages = msgs,
                              .n_messages = 5,
                              .tools = tools,
                              .n_tools = 2,
                              .temperature = 0.2,
                              .max_tokens = 100,
                              .stream = true};
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "http://localhost:8080/openai/v1//", &h, &e), 0);
    assert_string_equal(h.url, "http://localhost:8080/openai/v1/chat/completions");
    json_t *b = built_body(&h);
    /* 0.2 goes out as 0.2 (JSON_REAL_PRECISION), not 0.20000000000000001. */
    assert_non_null(strstr(h.body, "\"temperature\":0.2,"));
    assert_int_equal(json_integer_value(json_object_get(b, "max_tokens")), 100);

    const json_t *req_schema = schema(spec, "CreateChatCompletionRequest");
    assert_has_required(b, json_array_get(json_object_get(req_schema, "allOf"), 1), "request");
    assert_keys_known(spec, b, req_schema, "request");

    static const char *const by_role[][2] = {
        {"system", "ChatCompletionRequestSystemMessage"},
        {"user", "ChatCompletionRequestUserMessage"},
        {"assistant", "ChatCompletionRequestAssistantMessage"},
        {"tool", "ChatCompletionRequestToolMessage"},
    };
    size_t i;
    const json_t *m;
    json_array_foreach(json_object_get(b, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        const json_t *sch = NULL;
        for (size_t r = 0; r < 4; r++) {
            if (strcmp(role, by_role[r][0]) == 0)
                sch = schema(spec, by_role[r][1]);
        }
        assert_non_null(sch);
        assert_has_required(m, sch, role);
        assert_keys_known(spec, m, sch, role);
    }
    const json_t *asst = json_array_get(json_object_get(b, "messages"), 2);
    assert_true(json_is_null(json_object_get(asst, "content")));
    const json_t *tc = json_array_get(json_object_get(asst, "tool_calls"), 0);
    assert_has_required(tc, schema(spec, "ChatCompletionMessageToolCall"), "tool call");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tc, "function"), "arguments")),
        "{\"q\":\"x\"}");
    const json_t *t;
    json_array_foreach(json_object_get(b, "tools"), i, t)
    {
        assert_has_required(t, schema(spec, "ChatCompletionTool"), "tool");
        assert_has_required(json_object_get(t, "function"), schema(spec, "FunctionObject"),
                            "function");
        assert_keys_known(spec, json_object_get(t, "function"), schema(spec, "FunctionObject"),
                          "function");
    }
    assert_null(json_object_get(
        json_object_get(json_array_get(json_object_get(b, "tools"), 1), "function"), "parameters"));
    assert_null(json_object_get(b, "tool_choice"));
    json_decref(b);
    llm_wire_http_cleanup(&h);

    /* Rounds spent: the same tools, calls forbidden with tool_choice "none". */
    req.tools_forbidden = true;
    assert_int_equal(W->build(&req, "http://localhost:8080/openai/v1", &h, &e), 0);
    b = built_body(&h);
    assert_keys_known(spec, b, req_schema, "request");
    assert_int_equal(json_array_size(json_object_get(b, "tools")), 2);
    assert_string_equal(json_string_value(json_object_get(b, "tool_choice")), "none");
    const json_t *options = json_object_get(schema(spec, "ChatCompletionToolChoiceOption"), "oneOf");
    const json_t *mode = json_object_get(json_array_get(options, 0), "enum");
    bool listed = false;
    json_array_foreach(mode, i, t) listed |= strcmp(json_string_value(t), "none") == 0;
    assert_true(listed);
    /* The caller's schema object is borrowed, not consumed. */
    assert_int_equal(params->refcount, 1);
    json_decref(b);
    json_decref(params);
    llm_wire_http_cleanup(&h);
    json_decref(spec);
}

static void build_err(struct llm_request *req, int want_rc, const char *want_msg)
{
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(req, "https://x/v1", &h, &e), want_rc);
    assert_string_equal(e.msg, want_msg);
    assert_null(h.url);
    assert_null(h.body);
}

static void test_build_errors(void **state)
{
    struct llm_message ok[] = {{.role = LLM_ROLE_USER, .content = "hi"}};
    struct llm_request req = {.model = NULL, .messages = ok, .n_messages = 1};
    build_err(&req, ERR_INVALID, "model: required");
    req.model = "m";
    req.n_messages = 0;
    build_err(&req, ERR_INVALID, "messages: at least one is required");
    req.n_messages = 1;

    struct llm_message bad_utf8[] = {{.role = LLM_ROLE_USER, .content = "\xff\xfe"}};
    req.messages = bad_utf8;
    build_err(&req, ERR_INVALID, "messages[0].content: not valid UTF-8");
    struct llm_message no_id[] = {{.role = LLM_ROLE_TOOL, .content = "r"}};
    req.messages = no_id;
    build_err(&req, ERR_INVALID, "messages[0].tool_call_id: required");
    struct llm_message no_content[] = {{.role = LLM_ROLE_USER}};
    req.messages = no_content;
    build_err(&req, ERR_INVALID, "messages[0].content: required");
    req.messages = ok;

    /* A key with a line break would inject a header; the message must not quote the key. */
    req.api_key = "sk-secret\r\nX-Evil: 1";
    build_err(&req, ERR_INVALID, "api_key: contains control characters");
    req.api_key = "";
    struct llm_wire_http h;
    struct err e = {0};
    assert_int_equal(W->build(&req, "https://x/v1", &h, &e), 0);
    assert_int_equal(h.n_headers, 1); /* empty key: no Authorization */
    llm_wire_http_cleanup(&h);

    struct llm_tool_def bad_tool[] = {{.name = ""}};
    req.tools = bad_tool;
    req.n_tools = 1;
    build_err(&req, ERR_INVALID, "tools[0].name: required");
}

/* ---- replies ---- */

static struct llm_response *parse_ok(const char *body)
{
    struct llm_response *r = NULL;
    struct err e = {0};
    int rc = W->parse_reply(body, strlen(body), &r, &e);
    if (rc != 0)
        fail_msg("parse failed: %s", e.msg);
    return r;
}

static void test_parse_default_example(void **state)
{
    json_t *ex_all = load_fixture(FIXTURES "chat-completions.examples.json");
    struct llm_response *r =
        parse_ok(json_string_value(json_object_get(example(ex_all, "Default"), "response_raw")));
    assert_string_equal(r->text, "Hello! How can I assist you today?");
    assert_string_equal(r->finish_reason, "stop");
    assert_string_equal(r->model, "gpt-5.4");
    assert_int_equal(r->n_tool_calls, 0);
    assert_int_equal(r->usage.prompt_tokens, 19);
    assert_int_equal(r->usage.completion_tokens, 10);
    assert_int_equal(r->usage.total_tokens, 29);
    assert_int_equal(r->usage.cached_tokens, 0);
    assert_int_equal(r->usage.reasoning_tokens, 0);
    llm_response_free(r);

    /* The spec's object example of CreateChatCompletionResponse. */
    const json_t *obj =
        json_object_get(json_object_get(ex_all, "object_examples"), "CreateChatCompletionResponse");
    r = parse_ok(json_string_value(json_object_get(obj, "raw")));
    assert_string_equal(r->model, "gpt-4o-2024-08-06");
    assert_true(strncmp(r->text, "The image shows a wooden boardwalk", 34) == 0);
    assert_int_equal(r->usage.total_tokens, 1163);
    llm_response_free(r);
    json_decref(ex_all);
}

static void test_parse_functions_example(void **state)
{
    json_t *ex_all = load_fixture(FIXTURES "chat-completions.examples.json");
    struct llm_response *r =
        parse_ok(json_string_value(json_object_get(example(ex_all, "Functions"), "response_raw")));
    assert_string_equal(r->text, ""); /* content: null */
    assert_string_equal(r->finish_reason, "tool_calls");
    assert_int_equal(r->n_tool_calls, 1);
    assert_string_equal(r->tool_calls[0].id, "call_abc123");
    assert_string_equal(r->tool_calls[0].name, "get_current_weather");
    assert_string_equal(r->tool_calls[0].arguments, "{\n\"location\": \"Boston, MA\"\n}");
    assert_int_equal(r->usage.prompt_tokens, 82);
    assert_int_equal(r->usage.completion_tokens, 17);
    assert_int_equal(r->usage.total_tokens, 99);
    llm_response_free(r);
    json_decref(ex_all);
}

static void test_parse_usage_details(void **state)
{
    struct llm_response *r = parse_ok(
        "{\"model\":\"o3\",\"choices\":[{\"message\":{\"content\":\"x\"},\"finish_reason\":"
        "\"length\"}],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":50,\"total_tokens\":"
        "150,\"prompt_tokens_details\":{\"cached_tokens\":64},\"completion_tokens_details\":{"
        "\"reasoning_tokens\":32}}}");
    assert_int_equal(r->usage.cached_tokens, 64);
    assert_int_equal(r->usage.reasoning_tokens, 32);
    assert_string_equal(r->finish_reason, "length");
    llm_response_free(r);
    /* No usage, no model, no finish_reason: zeros and NULLs. */
    r = parse_ok("{\"choices\":[{\"message\":{}}]}");
    assert_string_equal(r->text, "");
    assert_null(r->model);
    assert_null(r->finish_reason);
    assert_int_equal(r->usage.total_tokens, 0);
    llm_response_free(r);
    /* Arguments as an object (some compatible servers), and a missing id. */
    r = parse_ok("{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":{\"name\":\"f\","
                 "\"arguments\":{\"a\":1}}}]}}]}");
    assert_string_equal(r->tool_calls[0].id, "call_0");
    assert_string_equal(r->tool_calls[0].arguments, "{\"a\":1}");
    llm_response_free(r);
}

static void parse_err(const char *body, int want_rc, const char *want_msg)
{
    struct llm_response *r = (struct llm_response *)1;
    struct err e = {0};
    assert_int_equal(W->parse_reply(body, strlen(body), &r, &e), want_rc);
    assert_null(r);
    assert_string_equal(e.msg, want_msg);
}

static void test_parse_malformed(void **state)
{
    parse_err("", ERR_INVALID, "reply is not valid JSON");
    parse_err("{", ERR_INVALID, "reply is not valid JSON");
    parse_err("[]", ERR_INVALID, "reply is not valid JSON");
    parse_err("<html>", ERR_INVALID, "reply is not valid JSON");
    parse_err("{\"choices\":[]}", ERR_INVALID, "reply has no choices[0].message");
    parse_err("{\"choices\":[{\"message\":{\"content\":5}}]}", ERR_INVALID,
              "reply: choices[0].message.content is not a string");
    parse_err("{\"choices\":[{\"message\":{\"tool_calls\":[{\"function\":{}}]}}]}", ERR_INVALID,
              "reply: tool_calls[0].function.name missing");
    parse_err("{\"error\":{\"message\":\"overloaded\"}}", ERR_IO, "error in reply: overloaded");

    /* More tool calls than a streamed reply may carry: refused the same way. */
    json_t *calls = json_array();
    for (int i = 0; i < 129; i++)
        json_array_append_new(calls, json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", "c", "type",
                                               "function", "function", "name", "n",
                                               "arguments", "{}"));
    json_t *reply = json_pack("{s:[{s:{s:n,s:o}}]}", "choices", "message", "content",
                              "tool_calls", calls);
    char *text = json_dumps(reply, 0);
    parse_err(text, ERR_INVALID, "reply has more than 128 tool calls");
    json_array_remove(json_object_get(json_object_get(json_array_get(
                                          json_object_get(reply, "choices"), 0), "message"),
                                      "tool_calls"),
                      0);
    free(text);
    text = json_dumps(reply, 0);
    struct llm_response *r = NULL;
    struct err e = {0};
    assert_int_equal(W->parse_reply(text, strlen(text), &r, &e), 0);
    assert_int_equal(r->n_tool_calls, 128);
    llm_response_free(r);
    free(text);
    json_decref(reply);
}

static void errmsg(const char *body, const char *want)
{
    char buf[LLM_WIRE_ERRMSG_MAX + 1];
    size_t n = W->error_message(body, strlen(body), buf, sizeof buf);
    assert_int_equal(n, strlen(want));
    assert_string_equal(buf, want);
}

static void test_error_bodies(void **state)
{
    errmsg("{\"error\":{\"message\":\"Incorrect API key provided: sk-abc***xyz.\",\"type\":"
           "\"invalid_request_error\",\"param\":null,\"code\":\"invalid_api_key\"}}",
           "Incorrect API key provided: sk-abc***xyz.");
    errmsg("{\"error\":\"model 'x' not found\"}", "model 'x' not found");
    errmsg("{\"message\":\"bad\"}", "bad");
    errmsg("{\"error\":{\"type\":\"x\"}}", "");
    errmsg("upstream connect error\r\nmore", "upstream connect error");
    errmsg("<html><body>502</body></html>", "");
    errmsg("", "");

    /* A long message is cut at 300 bytes, never inside a character: 'é' is 2 bytes, so 151
     * of them (302 bytes) keep 150. */
    char body[1024], want[400];
    size_t p = (size_t)snprintf(body, sizeof body, "{\"error\":{\"message\":\"");
    for (int i = 0; i < 151; i++) {
        body[p++] = (char)0xc3;
        body[p++] = (char)0xa9;
    }
    snprintf(body + p, sizeof body - p, "\"}}");
    for (int i = 0; i < 150; i++) {
        want[2 * i] = (char)0xc3;
        want[2 * i + 1] = (char)0xa9;
    }
    want[300] = '\0';
    errmsg(body, want);
    body[21] = 'x'; /* now odd: "x" + 150.5 chars; the cut backs off a half character */
    char buf[LLM_WIRE_ERRMSG_MAX + 1];
    size_t n = W->error_message(body, strlen(body), buf, sizeof buf);
    assert_true(n == 0 || n <= 300); /* invalid JSON now (broken UTF-8): anything but a crash */
}

/* ---- streams ---- */

struct collected {
    char text[16384];
    size_t len;
    int n_deltas;
};

static void collect(void *arg, const char *text, size_t len)
{
    struct collected *c = arg;
    assert_true(c->len + len < sizeof c->text);
    memcpy(c->text + c->len, text, len);
    c->len += len;
    c->text[c->len] = '\0';
    c->n_deltas++;
}

/* Feeds `raw` in pieces of `step` bytes (0: all at once). */
static struct llm_response *stream_parse(const char *raw, size_t len, size_t step,
                                         struct collected *col, int *rc_out, struct err *e)
{
    struct llm_stream *s = NULL;
    struct llm_response *r = NULL;
    assert_int_equal(W->stream_new(&s), 0);
    int rc = 0;
    if (step == 0)
        step = len ? len : 1;
    for (size_t off = 0; off < len && rc == 0; off += step) {
        size_t n = len - off < step ? len - off : step;
        rc = W->stream_feed(s, raw + off, n, col ? collect : NULL, col, e);
    }
    if (rc == 0)
        rc = W->stream_end(s, col ? collect : NULL, col, &r, e);
    W->stream_free(s);
    *rc_out = rc;
    return r;
}

struct want_stream {
    const char *name;
    const char *text;
    const char *finish;
    long prompt, completion, total;
    size_t n_calls;
    const char *ids[2], *names[2], *args[2];
};

static const struct want_stream WANT[] = {
    {"text",
     "I'm unable to provide real-time weather updates. To get the current weather in San "
     "Francisco, I recommend checking a reliable weather website or a weather app.",
     "stop",
     14,
     30,
     44,
     0,
     {NULL},
     {NULL},
     {NULL}},
    {"single_tool_call",
     "",
     "tool_calls",
     76,
     24,
     100,
     1,
     {"call_c91SqDXlYFuETYv8mUHzz6pp"},
     {"GetWeatherArgs"},
     {"{\"city\":\"Edinburgh\",\"country\":\"UK\",\"units\":\"c\"}"}},
    {"parallel_tool_calls",
     "",
     "tool_calls",
     149,
     60,
     209,
     2,
     {"call_JMW1whyEaYG438VE1OIflxA2", "call_DNYTawLBoN8fj3KN6qU9N1Ou"},
     {"GetWeatherArgs", "get_stock_price"},
     {"{\"city\": \"Edinburgh\", \"country\": \"GB\", \"units\": \"c\"}",
      "{\"ticker\": \"AAPL\", \"exchange\": \"NASDAQ\"}"}},
};

static void check_stream(const struct want_stream *w, const char *raw, size_t len, size_t step)
{
    struct collected col = {0};
    struct err e = {0};
    int rc;
    struct llm_response *r = stream_parse(raw, len, step, &col, &rc, &e);
    if (rc != 0)
        fail_msg("%s (step %zu): %s", w->name, step, e.msg);
    assert_string_equal(r->text, w->text);
    assert_string_equal(col.text, w->text); /* the deltas add up to the text */
    assert_string_equal(r->finish_reason, w->finish);
    assert_string_equal(r->model, "gpt-4o-2024-08-06");
    assert_int_equal(r->usage.prompt_tokens, w->prompt);
    assert_int_equal(r->usage.completion_tokens, w->completion);
    assert_int_equal(r->usage.total_tokens, w->total);
    assert_int_equal(r->n_tool_calls, w->n_calls);
    for (size_t i = 0; i < w->n_calls; i++) {
        assert_string_equal(r->tool_calls[i].id, w->ids[i]);
        assert_string_equal(r->tool_calls[i].name, w->names[i]);
        assert_string_equal(r->tool_calls[i].arguments, w->args[i]);
    }
    llm_response_free(r);
}

static void test_recorded_streams(void **state)
{
    json_t *rs = load_fixture(FIXTURES "recorded-streams.json");
    size_t i;
    const json_t *rec;
    size_t seen = 0;
    json_array_foreach(json_object_get(rs, "recordings"), i, rec)
    {
        const char *name = json_string_value(json_object_get(rec, "name"));
        const json_t *raw = json_object_get(rec, "sse_raw");
        for (size_t k = 0; k < sizeof WANT / sizeof WANT[0]; k++) {
            if (strcmp(WANT[k].name, name) != 0)
                continue;
            seen++;
            const char *b = json_string_value(raw);
            size_t len = json_string_length(raw);
            check_stream(&WANT[k], b, len, 0);
            check_stream(&WANT[k], b, len, 1);
            check_stream(&WANT[k], b, len, 7);
            check_stream(&WANT[k], b, len, 4096);

            /* The same events with CRLF line ends. */
            char *crlf = malloc(len * 2 + 1);
            size_t n = 0;
            for (size_t j = 0; j < len; j++) {
                if (b[j] == '\n')
                    crlf[n++] = '\r';
                crlf[n++] = b[j];
            }
            check_stream(&WANT[k], crlf, n, 1);
            check_stream(&WANT[k], crlf, n, 3);
            free(crlf);
        }
    }
    assert_int_equal(seen, 3);
    json_decref(rs);
}

static void stream_err(const char *raw, int want_rc, const char *want_msg)
{
    struct err e = {0};
    int rc;
    struct llm_response *r = stream_parse(raw, strlen(raw), 0, NULL, &rc, &e);
    assert_null(r);
    assert_int_equal(rc, want_rc);
    assert_string_equal(e.msg, want_msg);
}

static void test_stream_malformed(void **state)
{
    stream_err("data: {not json}\n\n", ERR_INVALID, "stream event is not valid JSON");
    stream_err("data: {\"error\":{\"message\":\"The server had an error\",\"type\":"
               "\"server_error\"}}\n\n",
               ERR_IO, "error in stream: The server had an error");
    stream_err("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n", ERR_IO,
               "stream ended before [DONE]");
    stream_err("", ERR_IO, "stream ended before [DONE]");

    /* A line over 1 MiB fails before it is buffered whole. */
    size_t big = LLM_SSE_MAX_LINE + 10;
    char *line = malloc(big + 1);
    memset(line, 'a', big);
    memcpy(line, "data: ", 6);
    line[big] = '\0';
    stream_err(line, ERR_TOO_LARGE, "stream line longer than 1048576 bytes");
    free(line);

    /* Comments, other fields, a multi-line data event and a last event without its blank
     * line are all fine; nothing after [DONE] counts. */
    const char *ok = ": keep-alive\nid: 1\nretry: 10\nevent: message\n"
                     "data: {\"model\":\"m\",\"choices\":[{\"index\":0,\n"
                     "data: \"delta\":{\"content\":\"a\\u00e9\"},\"finish_reason\":\"stop\"}]}\n\n"
                     "data: [DONE]\n\ndata: {garbage";
    struct collected col = {0};
    struct err e = {0};
    int rc;
    struct llm_response *r = stream_parse(ok, strlen(ok), 1, &col, &rc, &e);
    if (rc != 0)
        fail_msg("%s", e.msg);
    assert_string_equal(r->text, "a\xc3\xa9");
    assert_string_equal(r->finish_reason, "stop");
    llm_response_free(r);

    /* A choice other than index 0 is ignored; a stream ending without [DONE] but with a
     * finish_reason (some compatible servers) is accepted. */
    ok = "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"no\"}},{\"index\":0,"
         "\"delta\":{\"content\":\"yes\"},\"finish_reason\":\"stop\"}]}";
    struct collected col2 = {0};
    r = stream_parse(ok, strlen(ok), 0, &col2, &rc, &e);
    assert_int_equal(rc, 0);
    assert_string_equal(r->text, "yes");
    /* Regression (fuzzer): the delta of a last event without its blank line reached the text
     * but not on_delta. */
    assert_string_equal(col2.text, "yes");
    llm_response_free(r);

    /* Too many distinct tool-call indexes. */
    size_t cap = 200 * 80 + 64, p = 0;
    char *many = malloc(cap);
    for (int i = 0; i < 200; i++)
        p += (size_t)snprintf(many + p, cap - p,
                              "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":%d}]}}]}"
                              "\n\n",
                              i);
    stream_err(many, ERR_INVALID, "stream has more than 128 tool calls");
    free(many);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_default_example),
        cmocka_unit_test(test_build_functions_example),
        cmocka_unit_test(test_build_streaming_example),
        cmocka_unit_test(test_build_all_fields_against_schema),
        cmocka_unit_test(test_build_errors),
        cmocka_unit_test(test_parse_default_example),
        cmocka_unit_test(test_parse_functions_example),
        cmocka_unit_test(test_parse_usage_details),
        cmocka_unit_test(test_parse_malformed),
        cmocka_unit_test(test_error_bodies),
        cmocka_unit_test(test_recorded_streams),
        cmocka_unit_test(test_stream_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
