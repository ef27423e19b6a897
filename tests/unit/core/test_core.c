/* test_core.c - the small core modules: error table, UTF-8, JSON depth guard, ids, clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"
#include "core/json_depth.h"
#include "core/url.h"
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

static void test_utf8_cuts(void **state)
{
    const char *s = "ab\xc3\xa9\xe2\x82\xac"; /* a b e-acute euro: 2 + 2 + 3 bytes */
    assert_int_equal(utf8_prefix_len(s, 7, 10), 7);
    assert_int_equal(utf8_prefix_len(s, 7, 3), 2); /* not inside the e-acute */
    assert_int_equal(utf8_prefix_len(s, 7, 4), 4);
    assert_int_equal(utf8_prefix_len(s, 7, 6), 4); /* not inside the euro sign */
    char cut[8] = "ab\xc3\xa9\xe2\x82";
    utf8_trim_cut(cut);
    assert_string_equal(cut, "ab\xc3\xa9");
    char whole[8] = "ab\xc3\xa9";
    utf8_trim_cut(whole);
    assert_string_equal(whole, "ab\xc3\xa9");
    char lead_only[4] = "a\xf0";
    utf8_trim_cut(lead_only);
    assert_string_equal(lead_only, "a");
    /* The same on bytes without a NUL (a body cut at a size cap). */
    assert_int_equal(utf8_complete_len(s, 7), 7);
    assert_int_equal(utf8_complete_len(s, 6), 4); /* the euro sign cut after 2 of 3 */
    assert_int_equal(utf8_complete_len(s, 5), 4);
    assert_int_equal(utf8_complete_len(s, 3), 2); /* the e-acute cut after its lead */
    assert_int_equal(utf8_complete_len(s, 0), 0);
    assert_int_equal(utf8_complete_len("\x82\x82", 2), 2); /* stray bytes: nothing to mend */
}

static void test_url_secrets(void **state)
{
    const char *start;
    size_t len;
    assert_true(url_userinfo("postgres://u:p@ss@h/db?x=1", &start, &len));
    assert_int_equal(len, 6); /* "u:p@ss": up to the last '@' */
    assert_false(url_userinfo("https://h/path?q=a@b", &start, &len));
    char *shown = url_redact_secrets("https://u:pw@proxy.example/v1?key=abc");
    assert_string_equal(shown, "https://u:***@proxy.example/v1?***");
    free(shown);
    shown = url_redact_secrets("http://127.0.0.1:11434/v1");
    assert_string_equal(shown, "http://127.0.0.1:11434/v1");
    free(shown);
    shown = url_redact_secrets("https://h/cb#access_token=abc");
    assert_string_equal(shown, "https://h/cb#***");
    free(shown);
    shown = url_redact_secrets("http://u:@h?");
    assert_string_equal(shown, "http://u:***@h?***");
    free(shown);
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
    char canon[ID_UUID_LEN];
    assert_true(id_canonical("0123ABCD-CDEF-4123-8567-89ABCDEF0123", canon));
    assert_string_equal(canon, "0123abcd-cdef-4123-8567-89abcdef0123");
    assert_false(id_canonical("writer", canon));
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
        cmocka_unit_test(test_utf8_cuts),
        cmocka_unit_test(test_url_secrets),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
