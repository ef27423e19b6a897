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
    struct tool_def ok = {"my-tool_2", "d", "{}"};
    assert_int_equal(tool_registry_add(reg, &ok, &e), 0);
    assert_non_null(tool_registry_find(reg, "my-tool_2"));
    assert_int_equal(tool_registry_add(reg, &ok, &e), ERR_CONFLICT);

    const char *bad[] = {"", "has space", "dot.name", "slash/", "ünicode"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct tool_def d = {bad[i], "d", "{}"};
        assert_int_equal(tool_registry_add(reg, &d, &e), ERR_INVALID);
    }
    struct tool_def null_name = {NULL, "d", "{}"};
    assert_int_equal(tool_registry_add(reg, &null_name, &e), ERR_INVALID);

    char n64[65], n65[66];
    memset(n64, 'a', 64);
    n64[64] = '\0';
    memset(n65, 'b', 65);
    n65[65] = '\0';
    struct tool_def d64 = {n64, "d", "{}"}, d65 = {n65, "d", "{}"};
    assert_int_equal(tool_registry_add(reg, &d64, &e), 0);
    assert_int_equal(tool_registry_add(reg, &d65, &e), ERR_INVALID);

    /* Growth past the initial capacity keeps earlier entries findable. */
    char names[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof names[i], "extra_%d", i);
        struct tool_def d = {names[i], "d", "{}"};
        assert_int_equal(tool_registry_add(reg, &d, NULL), 0);
    }
    assert_int_equal(tool_registry_count(reg), 6 + 1 + 1 + 20);
    assert_non_null(tool_registry_find(reg, "calculator"));
    assert_non_null(tool_registry_find(reg, "extra_19"));
    tool_registry_free(reg);
    tool_registry_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
