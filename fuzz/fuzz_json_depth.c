/* fuzz_json_depth.c - the depth guard must never read out of bounds, and whatever it lets
 * through must parse (or fail to parse) in jansson without trouble. */
#include <jansson.h>
#include <stdint.h>

#include "core/json_depth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e = {0};
    if (json_depth_check((const char *)data, size, 8, &e) != 0)
        return 0;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    json_decref(j);
    return 0;
}
