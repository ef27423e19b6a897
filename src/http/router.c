/* router.c - see router.h. A linear scan: the table has a dozen routes, and a scan over
 * pre-split segments costs less than the hashing a tree would need. */
#include "http/router.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const struct {
    unsigned bit;
    const char *name;
} method_names[] = {
    {HTTP_GET, "GET"},     {HTTP_HEAD, "HEAD"},     {HTTP_PUT, "PUT"},         {HTTP_POST, "POST"},
    {HTTP_PATCH, "PATCH"}, {HTTP_DELETE, "DELETE"}, {HTTP_OPTIONS, "OPTIONS"},
};

const char *http_method_name(unsigned method)
{
    for (size_t i = 0; i < sizeof method_names / sizeof method_names[0]; i++)
        if (method_names[i].bit == method)
            return method_names[i].name;
    return "OTHER";
}

void http_methods_format(unsigned methods, char *buf, size_t len)
{
    size_t used = 0;
    if (len == 0)
        return;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof method_names / sizeof method_names[0]; i++) {
        if (!(methods & method_names[i].bit))
            continue;
        int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", method_names[i].name);
        if (n < 0 || (size_t)n >= len - used)
            return;
        used += (size_t)n;
    }
}

/* Matches one pattern; fills captures into m only on success. */
static bool pattern_matches(const char *pattern, const struct http_path *path, struct http_match *m)
{
    const char *captures[HTTP_ROUTER_MAX_PARAMS];
    size_t n_captures = 0, i = 0;
    const char *p = pattern;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen == 0 && end == NULL)
            break; /* pattern "/" */
        if (i >= path->n_seg)
            return false;
        const char *seg = path->seg[i];
        if (plen >= 2 && p[0] == '{' && p[plen - 1] == '}') {
            if (seg[0] == '\0' || n_captures >= HTTP_ROUTER_MAX_PARAMS)
                return false;
            captures[n_captures++] = seg;
        } else if (strlen(seg) != plen || memcmp(seg, p, plen) != 0) {
            return false;
        }
        i++;
        p += plen;
    }
    if (i != path->n_seg)
        return false;
    memcpy(m->params, captures, n_captures * sizeof captures[0]);
    m->n_params = n_captures;
    return true;
}

int http_router_match(const struct http_route *routes, size_t n, unsigned method,
                      const struct http_path *path, struct http_match *m)
{
    memset(m, 0, sizeof *m);
    unsigned want = method == HTTP_HEAD ? (HTTP_HEAD | HTTP_GET) : method;
    for (size_t r = 0; r < n; r++) {
        struct http_match tmp;
        memset(&tmp, 0, sizeof tmp);
        if (!pattern_matches(routes[r].pattern, path, &tmp))
            continue;
        unsigned methods = routes[r].methods;
        if (methods & HTTP_GET)
            methods |= HTTP_HEAD;
        m->allowed |= methods;
        if (m->route == NULL && (routes[r].methods & want)) {
            memcpy(m->params, tmp.params, sizeof tmp.params);
            m->n_params = tmp.n_params;
            m->route = &routes[r];
        }
    }
    if (m->route != NULL)
        return 0;
    return m->allowed ? 405 : 404;
}
