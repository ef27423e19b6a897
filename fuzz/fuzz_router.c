/* fuzz_router.c - any path (split on '/') against the real route table: no crash, and a
 * match is always consistent with the status returned. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "http/router.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    unsigned method = 1u << (data[0] % 8);
    char *copy = malloc(size);
    if (copy == NULL)
        return 0;
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = '\0';
    struct http_path p = {0};
    char *save = NULL;
    for (char *seg = strtok_r(copy, "/", &save); seg && p.n_seg < HTTP_ROUTER_MAX_SEGMENTS;
         seg = strtok_r(NULL, "/", &save))
        p.seg[p.n_seg++] = seg;
    size_t n;
    const struct http_route *routes = api_routes(&n);
    struct http_match m;
    int status = http_router_match(routes, n, method, &p, &m);
    if ((status == 0) != (m.route != NULL))
        abort();
    if (status == 405 && m.allowed == 0)
        abort();
    free(copy);
    return 0;
}
