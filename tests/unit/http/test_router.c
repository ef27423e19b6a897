/* test_router.c - route matching, 404/405 and the Allow list, against the real API table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "api/api.h"
#include "http/router.h"

static struct http_path path_of(const char *const *segs, size_t n)
{
    struct http_path p = {.n_seg = n};
    for (size_t i = 0; i < n; i++)
        p.seg[i] = segs[i];
    return p;
}

static void test_match_and_capture(void **state)
{
    size_t n;
    const struct http_route *routes = api_routes(&n);
    struct http_match m;
    const char *segs[] = {"api", "v1", "crew", "research team"};
    struct http_path p = path_of(segs, 4);
    assert_int_equal(http_router_match(routes, n, HTTP_GET, &p, &m), 0);
    assert_ptr_equal(m.route->handler, api_crews_get);
    assert_int_equal(m.n_params, 1);
    assert_string_equal(m.params[0], "research team");
    assert_int_equal(http_router_match(routes, n, HTTP_HEAD, &p, &m), 0); /* HEAD uses GET */
    assert_ptr_equal(m.route->handler, api_crews_get);
    assert_int_equal(http_router_match(routes, n, HTTP_DELETE, &p, &m), 0);
    assert_ptr_equal(m.route->handler, api_crews_delete);
}

static void test_405_lists_allowed(void **state)
{
    size_t n;
    const struct http_route *routes = api_routes(&n);
    struct http_match m;
    const char *segs[] = {"api", "v1", "crew", "x"};
    struct http_path p = path_of(segs, 4);
    assert_int_equal(http_router_match(routes, n, HTTP_PATCH, &p, &m), 405);
    assert_null(m.route);
    char buf[128];
    http_methods_format(m.allowed, buf, sizeof buf);
    assert_string_equal(buf, "GET, HEAD, PUT, POST, DELETE");
}

static void test_404(void **state)
{
    size_t n;
    const struct http_route *routes = api_routes(&n);
    struct http_match m;
    const char *segs[] = {"api", "v1", "crew", "x", "y"};
    struct http_path p = path_of(segs, 5);
    assert_int_equal(http_router_match(routes, n, HTTP_GET, &p, &m), 404);
    const char *empty[] = {"api", "v1", "crew", ""};
    p = path_of(empty, 4);
    assert_int_equal(http_router_match(routes, n, HTTP_GET, &p, &m), 404); /* empty capture */
    p = path_of(segs, 0);
    assert_int_equal(http_router_match(routes, n, HTTP_GET, &p, &m), 404);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_match_and_capture),
        cmocka_unit_test(test_405_lists_allowed),
        cmocka_unit_test(test_404),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
