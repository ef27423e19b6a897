/* test_core.c - the small core modules: error table, UTF-8, JSON depth guard, ids, clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "core/json_depth.h"
#include "core/utf8.h"

static void test_err_set_and_prefix(void **state)
{
    struct err e = {0};
    assert_int_equal(err_set(&e, ERR_INVALID, "name: %s", "required"), ERR_INVALID);
    assert_string_equal(err_text(&e), "name: required");
    err_prefix(&e, "agents[%d]", 2);
    assert_string_equal(err_text(&e), "agents[2]: name: required");
    assert_string_equal(err_name(ERR_NOT_FOUND), "ERR_NOT_FOUND");
    assert_string_equal(err_name(12345), "ERR_UNKNOWN");
    struct err blank = {.code = ERR_STORE};
    assert_string_equal(err_text(&blank), "storage error");
    assert_int_equal(err_set(NULL, ERR_IO, "x"), ERR_IO);
}

static void test_utf8(void **state)
{
    assert_true(utf8_valid("plain", 5));
    assert_true(utf8_valid("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    assert_false(utf8_valid("a\0b", 3));             /* NUL */
    assert_false(utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(utf8_valid("\xe2\x82", 2));         /* truncated */
    assert_false(utf8_valid("\x80", 1));             /* lone continuation */
    assert_false(utf8_valid("\xff", 1));
}

static void test_json_depth(void **state)
{
    struct err e = {0};
    assert_int_equal(json_depth_check("[[[1]]]", 7, 3, &e), 0);
    assert_int_equal(json_depth_check("[[[[1]]]]", 9, 3, &e), ERR_INVALID);
    assert_string_equal(e.msg, "JSON nesting deeper than 3 levels");
    const char *in_string = "{\"a\":\"[[[[[[\\\"[[[[\"}";
    assert_int_equal(json_depth_check(in_string, strlen(in_string), 2, &e), 0);
    assert_int_equal(json_depth_check("]]]][[", 6, 2, &e), 0); /* parser's job, not ours */
}

static void test_ids(void **state)
{
    char a[ID_UUID_LEN], b[ID_UUID_LEN];
    assert_int_equal(id_uuid4(a), 0);
    assert_int_equal(id_uuid4(b), 0);
    assert_true(id_is_uuid(a));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');
    assert_true(strchr("89ab", a[19]) != NULL);
    assert_false(id_is_uuid("researcher"));
    assert_false(id_is_uuid("0123456789ab-cdef-0123-4567-89abcdef0123"));
    assert_true(id_is_uuid("0123ABCD-cdef-4123-8567-89abcdef0123"));
    assert_false(id_is_uuid(NULL));
}

static void test_clock(void **state)
{
    char out[CLOCK_RFC3339_LEN];
    clock_rfc3339(1795516200123LL, out);
    assert_string_equal(out, "2026-11-24T10:30:00.123Z");
    clock_rfc3339(0, out);
    assert_string_equal(out, "1970-01-01T00:00:00.000Z");
    assert_true(clock_mono_ms() > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_set_and_prefix),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
