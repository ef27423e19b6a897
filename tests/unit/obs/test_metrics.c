/*
 * test_metrics.c - the metrics registry and its Prometheus text exposition (obs/metrics.h):
 * HELP/TYPE lines, label escaping, cumulative histogram buckets with +Inf, _sum and _count,
 * number formatting, the series cap and bad registrations. Compares whole rendered texts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/metrics.h"

static char *render(struct metrics *m)
{
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(metrics_render(m, &text, &len), 0);
    assert_non_null(text);
    assert_int_equal(len, strlen(text));
    return text;
}

static void test_empty(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    char *text = render(m);
    assert_string_equal(text, "");
    free(text);
    metrics_free(m);
    metrics_free(NULL);
}

static void test_counter_and_gauge(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    static const char *const labels[] = {"route", "status"};
    struct metrics_family *c = metrics_family_new(m, METRICS_COUNTER, "x_requests_total",
                                                  "Requests", labels, 2, NULL, 0);
    struct metrics_family *g =
        metrics_family_new(m, METRICS_GAUGE, "x_depth", "Depth", NULL, 0, NULL, 0);
    assert_non_null(c);
    assert_non_null(g);
    const char *a[] = {"/a", "200"}, *b[] = {"/b/{id}", "404"};
    metrics_counter_add(c, a, 1);
    metrics_counter_add(c, b, 1);
    metrics_counter_add(c, a, 2);
    metrics_counter_add(c, a, -5); /* counters never go down */
    metrics_gauge_set(g, NULL, 7);
    metrics_gauge_set(g, NULL, 0.25);
    assert_true(metrics_value(c, a) == 3);
    assert_true(metrics_value(c, (const char *[]){"/c", "200"}) == 0);
    char *text = render(m);
    assert_string_equal(text, "# HELP x_requests_total Requests\n"
                              "# TYPE x_requests_total counter\n"
                              "x_requests_total{route=\"/a\",status=\"200\"} 3\n"
                              "x_requests_total{route=\"/b/{id}\",status=\"404\"} 1\n"
                              "# HELP x_depth Depth\n"
                              "# TYPE x_depth gauge\n"
                              "x_depth 0.25\n");
    free(text);
    metrics_family_clear(c);
    text = render(m);
    assert_null(strstr(text, "x_requests_total{"));
    assert_non_null(strstr(text, "# TYPE x_requests_total counter\n"));
    free(text);
    metrics_free(m);
}

static void test_escaping(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    static const char *const labels[] = {"v"};
    struct metrics_family *g = metrics_family_new(
        m, METRICS_GAUGE, "x_esc", "Help with \\ backslash, \"quotes\"\nand a newline", labels, 1,
        NULL, 0);
    const char *v[] = {"a\\b \"q\"\nc"};
    metrics_gauge_set(g, v, 1);
    char *text = render(m);
    /* HELP escapes backslash and newline only; label values also the double quote. */
    assert_string_equal(text, "# HELP x_esc Help with \\\\ backslash, \"quotes\"\\nand a newline\n"
                              "# TYPE x_esc gauge\n"
                              "x_esc{v=\"a\\\\b \\\"q\\\"\\nc\"} 1\n");
    free(text);
    metrics_free(m);
}

static void test_histogram(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    static const char *const labels[] = {"provider"};
    static const double bounds[] = {0.1, 0.5, 2.5};
    struct metrics_family *h = metrics_family_new(m, METRICS_HISTOGRAM, "x_seconds", "Durations",
                                                  labels, 1, bounds, 3);
    assert_non_null(h);
    const char *p[] = {"openai"};
    metrics_histogram_observe(h, p, 0.05);
    metrics_histogram_observe(h, p, 0.1); /* on the bound: in le="0.1" */
    metrics_histogram_observe(h, p, 0.3);
    metrics_histogram_observe(h, p, 3);  /* only in +Inf */
    metrics_histogram_observe(h, p, 30);
    assert_true(metrics_value(h, p) == 5);
    char *text = render(m);
    assert_string_equal(text, "# HELP x_seconds Durations\n"
                              "# TYPE x_seconds histogram\n"
                              "x_seconds_bucket{provider=\"openai\",le=\"0.1\"} 2\n"
                              "x_seconds_bucket{provider=\"openai\",le=\"0.5\"} 3\n"
                              "x_seconds_bucket{provider=\"openai\",le=\"2.5\"} 3\n"
                              "x_seconds_bucket{provider=\"openai\",le=\"+Inf\"} 5\n"
                              "x_seconds_sum{provider=\"openai\"} 33.45\n"
                              "x_seconds_count{provider=\"openai\"} 5\n");
    free(text);
    metrics_free(m);
}

static void test_histogram_without_labels(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    static const double bounds[] = {1};
    struct metrics_family *h =
        metrics_family_new(m, METRICS_HISTOGRAM, "x_h", "H", NULL, 0, bounds, 1);
    metrics_histogram_observe(h, NULL, 0.5);
    char *text = render(m);
    assert_string_equal(text, "# HELP x_h H\n# TYPE x_h histogram\n"
                              "x_h_bucket{le=\"1\"} 1\nx_h_bucket{le=\"+Inf\"} 1\n"
                              "x_h_sum 0.5\nx_h_count 1\n");
    free(text);
    metrics_free(m);
}

static void test_bad_registrations(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    static const double unsorted[] = {1, 0.5};
    static const double inf[] = {1.0 / 0.0};
    static const char *const five[] = {"a", "b", "c", "d", "e"};
    assert_null(metrics_family_new(m, METRICS_HISTOGRAM, "h", "h", NULL, 0, unsorted, 2));
    assert_null(metrics_family_new(m, METRICS_HISTOGRAM, "h", "h", NULL, 0, inf, 1));
    assert_null(metrics_family_new(m, METRICS_HISTOGRAM, "h", "h", NULL, 0, NULL, 0));
    assert_null(metrics_family_new(m, METRICS_GAUGE, "g", "g", five, 5, NULL, 0));
    /* updates of the wrong kind are ignored */
    struct metrics_family *g = metrics_family_new(m, METRICS_GAUGE, "g", "g", NULL, 0, NULL, 0);
    metrics_counter_add(g, NULL, 1);
    metrics_histogram_observe(g, NULL, 1);
    metrics_counter_add(NULL, NULL, 1);
    char *text = render(m);
    assert_string_equal(text, "# HELP g g\n# TYPE g gauge\n");
    free(text);
    metrics_free(m);
}

static void test_series_cap(void **state)
{
    struct metrics *m = NULL;
    assert_int_equal(metrics_new(&m), 0);
    static const char *const labels[] = {"k"};
    struct metrics_family *c =
        metrics_family_new(m, METRICS_COUNTER, "x_c", "C", labels, 1, NULL, 0);
    char key[32];
    const char *v[] = {key};
    for (int i = 0; i < METRICS_MAX_SERIES + 10; i++) {
        snprintf(key, sizeof key, "k%d", i);
        metrics_counter_add(c, v, 1);
    }
    snprintf(key, sizeof key, "k%d", METRICS_MAX_SERIES - 1);
    assert_true(metrics_value(c, v) == 1);
    snprintf(key, sizeof key, "k%d", METRICS_MAX_SERIES);
    assert_true(metrics_value(c, v) == 0); /* dropped */
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_counter_and_gauge),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_histogram_without_labels),
        cmocka_unit_test(test_bad_registrations),
        cmocka_unit_test(test_series_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
