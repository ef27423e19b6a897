/*
 * fuzz_job_request.c - libFuzzer target for the execute body parser (model/job.c): bytes ->
 * the HTTP path's depth guard and strict JSON load -> job_request_parse against one fixed
 * 3-agent plan, built once. Besides crashes and leaks it checks what the engine relies on: an
 * accepted request is in range (mode, agent indexes, max_iterations, a valid UTF-8 query),
 * and its normalized form, stored as text and parsed again the way jobs.c reads it back,
 * gives the same normalized form. A refusal must carry a message JSON can hold. The body's
 * "webhook" goes through job_webhook_parse too (against an allowlist of one host): an accepted
 * webhook has a URL, a secret and a mask within the event types; no message quotes the
 * secret.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/json_depth.h"
#include "core/utf8.h"
#include "model/crew.h"
#include "model/job.h"
#include "model/plan.h"
#include "store/store.h"
#include "tools/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keys writer/editor/critic; agent_ids planner/writer/editor: two agents' ids are other
 * agents' keys, so lookups must prefer keys (find_agent) for the stored form to read back. */
static const char CREW[] =
    "{\"name\":\"fuzz\",\"execution_mode\":\"sequential\",\"agents\":["
    "{\"agent_id\":\"planner\",\"name\":\"writer\",\"system_prompt\":\"Plan.\"},"
    "{\"agent_id\":\"writer\",\"name\":\"editor\",\"system_prompt\":\"Edit.\"},"
    "{\"agent_id\":\"editor\",\"name\":\"critic\",\"system_prompt\":\"Critique.\"}]}";

static struct plan *fixed_plan(void)
{
    static struct plan *plan;
    if (plan != NULL)
        return plan;
    struct tool_registry *reg = NULL;
    struct crew_def *def = NULL;
    struct err e = {0};
    json_t *j = json_loads(CREW, JSON_REJECT_DUPLICATES, NULL);
    struct plan_opts opts = {.default_provider = "openai"};
    if (j == NULL || tool_registry_new(&reg) != 0 || crew_def_parse(j, reg, &def, &e) != 0 ||
        plan_compile(def, &opts, &plan, &e) != 0 || plan->n_agents != 3) {
        fprintf(stderr, "fuzz_job_request: set-up failed: %s\n", err_text(&e));
        abort();
    }
    crew_def_free(def);
    tool_registry_free(reg);
    json_decref(j);
    return plan;
}

static void check(const struct job_request *r, const struct plan *plan)
{
    if (r->normalized == NULL || r->n_agents != plan->n_agents || r->agent_query == NULL)
        abort();
    if (crew_mode_name(r->mode) == NULL)
        abort();
    enum crew_mode m;
    if (crew_mode_parse(crew_mode_name(r->mode), &m) != 0 || m != r->mode)
        abort();
    if (r->query_text == NULL || !utf8_valid(r->query_text, strlen(r->query_text)))
        abort();
    if (r->max_iterations < 1 || r->max_iterations > JOB_MAX_ITERATIONS)
        abort();
    if ((r->n_sequence == 0) != (r->sequence == NULL))
        abort();
    for (size_t i = 0; i < r->n_sequence; i++)
        if (r->sequence[i] >= plan->n_agents)
            abort();
    for (size_t i = 0; i < r->n_agents; i++)
        if (r->agent_query[i] != NULL && !utf8_valid(r->agent_query[i], strlen(r->agent_query[i])))
            abort();
    if (r->mode == CREW_MODE_LOOP && (r->condition == NULL || r->condition[0] == '\0'))
        abort();
    if (r->temperature >= 0 && r->temperature > 2.0)
        abort();
}

/* The webhook part of the body: accepted in range, or refused without echoing the secret. */
static void check_webhook(const json_t *in)
{
    static const char *const hosts[] = {"hooks.example.com"};
    struct job_webhook_policy policy = {.allow_hosts = hosts, .n_allow_hosts = 1};
    struct job_webhook w = {0};
    struct err e = {0};
    const json_t *hook = json_object_get(in, "webhook");
    const char *secret = json_string_value(json_object_get(hook, "secret"));
    /* A secret that another part of the body also holds (the URL, a key name, an event name)
     * may be quoted as part of that. */
    char *all = secret ? json_dumps(in, JSON_COMPACT) : NULL;
    const char *first = all ? strstr(all, secret) : NULL;
    if (secret != NULL && (first == NULL || strstr(first + 1, secret) != NULL))
        secret = NULL;
    free(all);
    if (job_webhook_parse(in, &policy, &w, &e) == 0) {
        if ((w.mask == 0) != (w.url == NULL) || (w.mask == 0) != (w.secret == NULL) ||
            (w.mask & ~STORE_EV_ALL_MASK) != 0)
            abort();
    } else if (e.code == 0 || (secret != NULL && strlen(secret) >= 8 && strstr(e.msg, secret))) {
        abort();
    }
    job_webhook_cleanup(&w);
}

static bool same(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct plan *plan = fixed_plan();
    struct job_request *r = NULL, *r2 = NULL;
    json_t *in = NULL, *back = NULL;
    char *text = NULL, *text2 = NULL;
    struct err e = {0};
    json_error_t je;

    if (json_depth_check((const char *)data, size, JSON_DEPTH_DEFAULT_MAX, &e) != 0)
        goto out;
    in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &je);
    if (in == NULL)
        goto out;
    check_webhook(in);
    if (job_request_parse(in, plan, &r, &e) != 0) {
        /* The API sends the message in a JSON error body. */
        json_t *msg = json_string(e.msg);
        if (r != NULL || e.code == 0 || msg == NULL)
            abort();
        json_decref(msg);
        goto out;
    }
    check(r, plan);

    /* The stored form: dumped into the job row, read back by the engine (jobs.c). */
    text = json_dumps(r->normalized, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL)
        abort();
    back = json_loads(text, 0, &je);
    if (back == NULL)
        abort();
    if (job_request_parse(back, plan, &r2, &e) != 0) {
        fprintf(stderr, "normalized form refused: %s\n%s\n", e.msg, text);
        abort();
    }
    check(r2, plan);
    text2 = json_dumps(r2->normalized, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text2 == NULL || strcmp(text, text2) != 0) {
        fprintf(stderr, "normalized form differs:\n%s\n%s\n", text, text2 ? text2 : "(null)");
        abort();
    }
    /* The request the engine runs is the one the API accepted. */
    if (r->mode != r2->mode || strcmp(r->query_text, r2->query_text) != 0 ||
        r->max_iterations != r2->max_iterations || r->max_tokens != r2->max_tokens ||
        r->n_sequence != r2->n_sequence || r->all_results != r2->all_results ||
        r->temperature != r2->temperature || r->stream != r2->stream ||
        !same(r->condition, r2->condition) ||
        !same(r->condition_llm, r2->condition_llm) || !same(r->user_id, r2->user_id) ||
        !same(r->session_id, r2->session_id) || !same(r->synthesis_prompt, r2->synthesis_prompt) ||
        (r->sequence && memcmp(r->sequence, r2->sequence, r->n_sequence * sizeof *r->sequence)))
        abort();
    for (size_t i = 0; i < r->n_agents; i++)
        if (!same(r->agent_query[i], r2->agent_query[i]))
            abort();
out:
    free(text);
    free(text2);
    json_decref(in);
    json_decref(back);
    job_request_free(r);
    job_request_free(r2);
    return 0;
}
