/* test_registry.c - the tool registry: built-ins, name rules, duplicates, the names list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "tools/registry.h"

static void test_builtins(void **state)
{
    struct tool_registry *reg = NULL;
    assert_int_equal(tool_registry_new(&reg), 0);
    assert_int_equal(tool_registry_count(reg), 6);
    const char *names[] = {"calculator", "datetime", "current_time",
                           "http_request", "http_get", "json_query"};
    for (size_t i = 0; i < 6; i++) {
        const struct tool_def *t = tool_registry_at(reg, i);
        assert_non_null(t);
        assert_string_equal(t->name, names[i]);
        assert_ptr_equal(tool_registry_find(reg, names[i]), t);
        assert_true(strlen(t->description) > 0);
        /* Every schema is valid JSON describing an object. */
        json_error_t je;
        json_t *schema = json_loads(t->params_schema, JSON_REJECT_DUPLICATES, &je);
        assert_non_null(schema);
        assert_string_equal(json_string_value(json_object_get(schema, "type")), "object");
        json_decref(schema);
    }
    assert_null(tool_registry_at(reg, 6));
    assert_null(tool_registry_find(reg, "Calculator"));
    assert_null(tool_registry_find(reg, "nope"));
    assert_null(tool_registry_find(reg, NULL));

    const struct tool_def *calc = tool_registry_find(reg, "calculator");
    json_t *schema = json_loads(calc->params_schema, 0, NULL);
    json_t *req = json_object_get(schema, "required");
    assert_int_equal(json_array_size(req), 1);
    assert_string_equal(json_string_value(json_array_get(req, 0)), "expression");
    json_decref(schema);
    const struct tool_def *jq = tool_registry_find(reg, "json_query");
    schema = json_loads(jq->params_schema, 0, NULL);
    assert_int_equal(json_array_size(json_object_get(schema, "required")), 2);
    json_decref(schema);

    /* http_request: url required, method GET|POST, headers an object of strings, body. */
    const struct tool_def *hr = tool_registry_find(reg, "http_request");
    schema = json_loads(hr->params_schema, 0, NULL);
    json_t *props = json_object_get(schema, "properties");
    json_t *en = json_object_get(json_object_get(props, "method"), "enum");
    assert_int_equal(json_array_size(en), 2);
    assert_string_equal(json_string_value(json_array_get(en, 0)), "GET");
    assert_string_equal(json_string_value(json_array_get(en, 1)), "POST");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(props, "headers"), "type")), "object");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(props, "body"), "type")), "string");
    json_decref(schema);
    const struct tool_def *dt = tool_registry_find(reg, "datetime");
    schema = json_loads(dt->params_schema, 0, NULL);
    assert_non_null(json_object_get(json_object_get(schema, "properties"), "timezone"));
    json_decref(schema);
    tool_registry_free(reg);
}

static void test_names(void **state)
{
    struct tool_registry *reg = NULL;
    assert_int_equal(tool_registry_new(&reg), 0);
    char buf[256];
    tool_registry_names(reg, buf, sizeof buf);
    assert_string_equal(buf,
                        "calculator, datetime, current_time, http_request, http_get, json_query");
    char small[12];
    tool_registry_names(reg, small, sizeof small);
    assert_string_equal(small, "calculator,");
    tool_registry_names(reg, small, 1);
    assert_string_equal(small, "");
    tool_registry_free(reg);
}

static void test_add(void **state)
{
    struct tool_registry *reg = NULL;
    struct err e = {0};
    assert_int_equal(tool_registry_new(&reg), 0);
    struct tool_def ok = {.name = "my-tool_2", .description = "d", .params_schema = "{}"};
    assert_int_equal(tool_registry_add(reg, &ok, &e), 0);
    assert_non_null(tool_registry_find(reg, "my-tool_2"));
    assert_int_equal(tool_registry_add(reg, &ok, &e), ERR_CONFLICT);

    const char *bad[] = {"", "has space", "dot.name", "slash/", "ünicode"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct tool_def d = {.name = bad[i], .description = "d", .params_schema = "{}"};
        assert_int_equal(tool_registry_add(reg, &d, &e), ERR_INVALID);
    }
    struct tool_def null_name = {.name = NULL, .description = "d", .params_schema = "{}"};
    assert_int_equal(tool_registry_add(reg, &null_name, &e), ERR_INVALID);

    char n64[65], n65[66];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'b', 65);
    n65[65] = '\0';
    struct tool_def d64 = {.name = n64, .description = "d", .params_schema = "{}"}, d65 = {.name = n65, .description = "d", .params_schema = "{}"};
    assert_int_equal(tool_registry_add(reg, &d64, &e), 0);
    assert_int_equal(tool_registry_add(reg, &d65, &e), ERR_INVALID);

    /* Growth past the initial capacity keeps earlier entries findable. */
    char names[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof names[i], "extra_%d", i);
        struct tool_def d = {.name = names[i], .description = "d", .params_schema = "{}"};
        assert_int_equal(tool_registry_add(reg, &d, NULL), 0);
    }
    assert_int_equal(tool_registry_count(reg), 6 + 1 + 1 + 20);
    assert_non_null(tool_registry_find(reg, "calculator"));
    assert_non_null(tool_registry_find(reg, "extra_19"));
    tool_registry_free(reg);
    tool_registry_free(NULL);
}

static struct tool_def user_def(const char *name, const char *desc, const char *url)
{
    return (struct tool_def){.name = name,
                             .description = desc,
                             .params_schema = "{\"type\":\"object\"}",
                             .url = url,
                             .post = true,
                             .headers_json = "{\"X-A\":\"1\"}",
                             .timeout_ms = 2500};
}

/* User tools: the registry copies the strings, replaces in place, removes, refuses built-ins. */
static void test_user_tools(void **state)
{
    (void)state;
    struct tool_registry *reg = NULL;
    struct err e = {0};
    bool replaced = true;
    assert_int_equal(tool_registry_new(&reg), 0);
    size_t n0 = tool_registry_count(reg);

    char name[16] = "weather", desc[16] = "first", url[32] = "http://a.example/w";
    struct tool_def d = user_def(name, desc, url);
    assert_int_equal(tool_registry_put_user(reg, &d, &replaced, &e), 0);
    assert_false(replaced);
    /* Copies: the caller's buffers may change afterwards. */
    memset(name, 'x', sizeof name - 1);
    memset(desc, 'y', sizeof desc - 1);
    const struct tool_def *t = tool_registry_find(reg, "weather");
    assert_non_null(t);
    assert_int_equal(t->origin, TOOL_USER);
    assert_string_equal(t->description, "first");
    assert_string_equal(t->url, "http://a.example/w");
    assert_string_equal(t->headers_json, "{\"X-A\":\"1\"}");
    assert_true(t->post);
    assert_int_equal(t->timeout_ms, 2500);
    assert_int_equal(tool_registry_find(reg, "calculator")->origin, TOOL_BUILTIN);
    assert_int_equal(tool_registry_count(reg), n0 + 1);

    /* A second tool, then a replace of the first: same place, same name pointer, new
     * strings (the old ones are freed at once: readers copy what they keep). */
    struct tool_def d2 = user_def("other", "o", "https://b.example/");
    assert_int_equal(tool_registry_put_user(reg, &d2, NULL, &e), 0);
    const char *old_name = t->name;
    struct tool_def d3 = user_def("weather", "second", "http://c.example/");
    d3.post = false;
    d3.headers_json = NULL;
    assert_int_equal(tool_registry_put_user(reg, &d3, &replaced, &e), 0);
    assert_true(replaced);
    assert_int_equal(tool_registry_count(reg), n0 + 2);
    t = tool_registry_at(reg, n0);
    assert_string_equal(t->name, "weather");
    assert_ptr_equal(t->name, old_name);
    assert_string_equal(t->description, "second");
    assert_false(t->post);
    assert_null(t->headers_json);

    /* Built-ins can be neither shadowed nor removed. */
    struct tool_def b = user_def("calculator", "mine", "http://x/");
    assert_int_equal(tool_registry_put_user(reg, &b, NULL, &e), ERR_CONFLICT);
    assert_string_equal(e.msg, "tool 'calculator' is a built-in tool");
    assert_int_equal(tool_registry_remove_user(reg, "http_request", &e), ERR_CONFLICT);
    assert_true(tool_registry_is_builtin("current_time"));
    assert_false(tool_registry_is_builtin("weather"));
    assert_false(tool_registry_is_builtin(NULL));

    /* Bad input. */
    struct tool_def bad = user_def("has space", "d", "http://x/");
    assert_int_equal(tool_registry_put_user(reg, &bad, NULL, &e), ERR_INVALID);
    bad = user_def("nourl", "d", NULL);
    assert_int_equal(tool_registry_put_user(reg, &bad, NULL, &e), ERR_INVALID);
    assert_int_equal(tool_registry_put_user(reg, NULL, NULL, &e), ERR_INVALID);

    /* Remove: the order of the rest is kept. */
    assert_int_equal(tool_registry_remove_user(reg, "weather", &e), 0);
    assert_null(tool_registry_find(reg, "weather"));
    assert_string_equal(tool_registry_at(reg, n0)->name, "other");
    assert_int_equal(tool_registry_remove_user(reg, "weather", &e), ERR_NOT_FOUND);
    assert_string_equal(e.msg, "unknown tool 'weather'");
    /* A borrowed-string tool added with tool_registry_add is no user tool. */
    struct tool_def fixed = {.name = "fixed", .description = "d", .params_schema = "{}"};
    assert_int_equal(tool_registry_add(reg, &fixed, &e), 0);
    assert_int_equal(tool_registry_remove_user(reg, "fixed", &e), ERR_NOT_FOUND);

    /* Many puts grow the table; everything is freed with the registry (LeakSanitizer). */
    for (int i = 0; i < 40; i++) {
        char n[16];
        snprintf(n, sizeof n, "u%d", i % 20);
        struct tool_def u = user_def(n, "d", "http://x/");
        assert_int_equal(tool_registry_put_user(reg, &u, NULL, &e), 0);
    }
    assert_int_equal(tool_registry_count(reg), n0 + 1 + 1 + 20);
    tool_registry_free(reg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_add),
        cmocka_unit_test(test_user_tools),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
