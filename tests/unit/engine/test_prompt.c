/* test_prompt.c - the texts agents receive, compared whole (API.md section 3 to the
 * character, and crewd's own loop, judge and synthesis texts of docs/API.md). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/prompt.h"

static void expect(char *got, const char *want)
{
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_sequential(void **state)
{
    struct prompt_prior one[] = {{"researcher", "found three sources"}};
    expect(prompt_sequential("What is X?", one, 1),
           "Original query: What is X?\nPrevious processing:\n- researcher: found three "
           "sources...\n\nCurrent task: found three sources");
    struct prompt_prior two[] = {{"a", "A out"}, {"b", "B out"}};
    expect(prompt_sequential("Q", two, 2),
           "Original query: Q\nPrevious processing:\n- a: A out...\n- b: B out...\n\n"
           "Current task: B out");
}

/* The preview is the first 200 characters, not bytes: a multi-byte text is never split. */
static void test_sequential_preview(void **state)
{
    char long_out[1001];
    memset(long_out, 'x', 1000);
    long_out[1000] = '\0';
    struct prompt_prior p[] = {{"a", long_out}};
    char *got = prompt_sequential("Q", p, 1);
    char want[1400];
    snprintf(want, sizeof want, "Original query: Q\nPrevious processing:\n- a: %.200s...\n\n"
             "Current task: %s", long_out, long_out);
    expect(got, want);

    /* 300 two-byte characters: the preview holds 200 of them (400 bytes). */
    char wide[601];
    for (int i = 0; i < 300; i++)
        memcpy(wide + 2 * i, "\xc3\xa9", 2);
    wide[600] = '\0';
    struct prompt_prior w[] = {{"a", wide}};
    got = prompt_sequential("Q", w, 1);
    const char *line = strstr(got, "- a: ");
    assert_non_null(line);
    const char *end = strstr(line, "...\n");
    assert_non_null(end);
    assert_int_equal(end - (line + 5), 400);
    free(got);
}

static void test_flow(void **state)
{
    struct prompt_prior src[] = {{"a", "alpha"}, {"b", "beta"}};
    expect(prompt_flow("Plan a trip", src, 1),
           "Task: Plan a trip\n\nContext from previous agents:\n--- From a ---\nalpha");
    expect(prompt_flow("Plan a trip", src, 2),
           "Task: Plan a trip\n\nContext from previous agents:\n--- From a ---\nalpha\n\n"
           "--- From b ---\nbeta");
}

static void test_loop_judge_synthesis(void **state)
{
    expect(prompt_loop_next("Q", 1, "draft"),
           "Original query: Q\nOutput of iteration 1:\ndraft\n\nCurrent task: improve on that "
           "output.");
    expect(prompt_judge("is short", "draft"),
           "Condition: is short\n\nCurrent output:\ndraft\n\nDoes the current output satisfy the "
           "condition? Answer YES or NO.");
    struct prompt_prior outs[] = {{"a", "A"}, {"b", "B"}};
    expect(prompt_synthesis("Merge them.", "Q", outs, 2),
           "Merge them.\n\nOriginal query: Q\n\nAgent outputs:\n\n--- a ---\nA\n\n--- b ---\nB");
}

static void test_judge_answers(void **state)
{
    assert_true(prompt_judge_says_yes("YES"));
    assert_true(prompt_judge_says_yes("yes."));
    assert_true(prompt_judge_says_yes("**Yes**, it does"));
    assert_false(prompt_judge_says_yes("NO"));
    assert_false(prompt_judge_says_yes("Yesterday"));
    assert_false(prompt_judge_says_yes(""));
    assert_false(prompt_judge_says_yes(NULL));
    assert_false(prompt_judge_says_yes("Not yes"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential),  cmocka_unit_test(test_sequential_preview),
        cmocka_unit_test(test_flow),        cmocka_unit_test(test_loop_judge_synthesis),
        cmocka_unit_test(test_judge_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
