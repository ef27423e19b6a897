/*
 * fuzz_crew_def.c - libFuzzer target for the path every crew definition takes at create
 * time: bytes -> JSON -> crew_def_parse -> plan_compile -> plan JSON and back -> normalized
 * definition. Besides crashes and leaks it checks the round trips the store relies on: a
 * compiled plan must read back from its own JSON, and a normalized definition must parse
 * back to itself.
 */
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "model/crew.h"
#include "model/plan.h"
#include "tools/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tool_registry *reg = NULL;
    struct crew_def *def = NULL, *again = NULL;
    struct plan *plan = NULL, *back = NULL;
    json_t *in = NULL, *pj = NULL, *pj2 = NULL, *full = NULL, *full2 = NULL, *red = NULL;
    struct err e = {0};
    json_error_t je;

    if (tool_registry_new(&reg) != 0)
        goto out;
    in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (in == NULL || crew_def_parse(in, reg, &def, &e) != 0)
        goto out;

    full = crew_def_to_json(def, def->crew_id[0] ? def->crew_id : NULL, "t0", "t1", CREW_JSON_FULL);
    red = crew_def_to_json(def, NULL, NULL, NULL, CREW_JSON_REDACTED);
    if (full == NULL || red == NULL)
        abort();
    if (crew_def_parse(full, reg, &again, &e) != 0)
        abort(); /* the normalized form must be accepted */
    full2 = crew_def_to_json(again, again->crew_id[0] ? again->crew_id : NULL, "t0", "t1",
                             CREW_JSON_FULL);
    if (!json_equal(full, full2))
        abort();

    struct plan_opts opts = {.default_provider = "openai"};
    if (plan_compile(def, &opts, &plan, &e) != 0)
        goto out;
    /* The LLM policy over whatever base_url and api_key_env the input holds. */
    static const char *const hosts[] = {"localhost", "*.example.com"};
    static const char *const envs[] = {"MY_KEY"};
    struct plan_llm_policy policy = {.base_url_hosts = hosts,
                                     .n_base_url_hosts = 2,
                                     .key_envs = envs,
                                     .n_key_envs = 1};
    int prc = plan_check_llm_policy(plan, &policy, &e);
    if (prc != 0 && prc != ERR_INVALID)
        abort();
    pj = plan_to_json(plan);
    if (pj == NULL)
        abort();
    if (plan_from_json(pj, &back, &e) != 0)
        abort(); /* a plan must read back from its own JSON */
    pj2 = plan_to_json(back);
    if (!json_equal(pj, pj2))
        abort();
out:
    json_decref(in);
    json_decref(pj);
    json_decref(pj2);
    json_decref(full);
    json_decref(full2);
    json_decref(red);
    plan_free(plan);
    plan_free(back);
    crew_def_free(def);
    crew_def_free(again);
    tool_registry_free(reg);
    return 0;
}
