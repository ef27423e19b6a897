/*
 * fuzz_plan_json.c - libFuzzer target for plan_from_json, which reads plans back from the
 * store and so must refuse any damaged one without crashing. A plan it accepts must write
 * itself out and read back identically.
 */
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "model/plan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct plan *plan = NULL, *back = NULL;
    json_t *in = NULL, *out1 = NULL, *out2 = NULL;
    struct err e = {0};
    json_error_t je;

    in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (in == NULL || plan_from_json(in, &plan, &e) != 0)
        goto out;
    out1 = plan_to_json(plan);
    if (out1 == NULL || plan_from_json(out1, &back, &e) != 0)
        abort();
    out2 = plan_to_json(back);
    if (!json_equal(out1, out2))
        abort();
out:
    json_decref(in);
    json_decref(out1);
    json_decref(out2);
    plan_free(plan);
    plan_free(back);
    return 0;
}
