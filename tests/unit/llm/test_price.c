/* test_price.c - the price table: parsing, lookup order, cached tokens billed apart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "llm/price.h"

static void parse_ok(const char *text, struct llm_prices *out)
{
    json_t *j = json_loads(text, 0, NULL);
    struct err e = {0};
    assert_non_null(j);
    if (llm_prices_parse(j, out, &e) != 0)
        fail_msg("parse: %s", e.msg);
    json_decref(j);
}

static void test_cost(void **state)
{
    static struct llm_prices p;
    parse_ok("{\"openai:gpt-x\": {\"input\": 2, \"output\": 8, \"cached_input\": 0.5},"
             " \"gpt-x\": {\"input\": 100, \"output\": 100},"
             " \"claude:c\": {\"input\": 3, \"output\": 15}}",
             &p);
    assert_int_equal(p.n, 3);
    struct llm_usage u = {.prompt_tokens = 1000000, .completion_tokens = 500000,
                          .cached_tokens = 400000};
    double usd = 0;
    /* provider:model wins over the bare model; cached prompt tokens at their own rate */
    assert_true(llm_prices_cost(&p, "openai", "gpt-x", &u, &usd));
    assert_true(usd > 5.39 && usd < 5.41); /* 0.6M*2 + 0.4M*0.5 + 0.5M*8 = 1.2+0.2+4 */
    assert_true(llm_prices_cost(&p, "groq", "gpt-x", &u, &usd)); /* the bare key */
    assert_true(usd > 149.9 && usd < 150.1);
    /* aliases resolve: "claude" is anthropic; cached_input defaults to input */
    assert_true(llm_prices_cost(&p, "anthropic", "c", &u, &usd));
    assert_true(usd > 10.49 && usd < 10.51);
    assert_false(llm_prices_cost(&p, "openai", "unknown", &u, &usd));
    assert_false(llm_prices_cost(NULL, "openai", "gpt-x", &u, &usd));
}

static void test_refused(void **state)
{
    const char *bad[] = {"[]", "{\"x:m\": {\"input\": 1, \"output\": 1}}",
                         "{\"openai:\": {\"input\": 1, \"output\": 1}}",
                         "{\"m\": {\"input\": \"1\", \"output\": 1}}", "{\"m\": {\"output\": 1}}",
                         "{\"m\": {\"input\": 1, \"output\": 1, \"x\": 1}}", "{\"m\": 5}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *j = json_loads(bad[i], 0, NULL);
        struct err e = {0};
        assert_int_equal(llm_prices_parse(j, NULL, &e), ERR_INVALID);
        assert_non_null(strstr(e.msg, "prices"));
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cost),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
