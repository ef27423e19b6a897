/*
 * fuzz_user_tool.c - libFuzzer target for the definitions of PUT /api/v1/tools and
 * PUT /api/v1/agents: bytes -> the HTTP path's depth guard and strict JSON load ->
 * user_tool_parse (tools/user_tool.c) and crew_class_parse (model/crew.c). Besides crashes and
 * leaks it checks what the API relies on: an accepted tool's normalized form parses again to
 * the same form, redacts, and converts to a registry definition; an accepted class writes
 * JSON that parses back as a class; a refusal carries a message JSON can hold.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/json_depth.h"
#include "model/crew.h"
#include "tools/registry.h"
#include "tools/user_tool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tool_registry *registry(void)
{
    static struct tool_registry *reg;
    if (reg == NULL && tool_registry_new(&reg) != 0)
        abort();
    return reg;
}

static void check_message(const struct err *e)
{
    json_t *m = json_string(e->msg);
    if (m == NULL || e->msg[0] == '\0') {
        fprintf(stderr, "refusal without a JSON-able message: '%s'\n", e->msg);
        abort();
    }
    json_decref(m);
}

static void tool(const json_t *in)
{
    json_t *norm = NULL, *again = NULL;
    struct err e = {0};
    if (user_tool_parse(in, &norm, &e) != 0) {
        if (e.code != ERR_NOMEM)
            check_message(&e);
        return;
    }
    struct err e2 = {0};
    if (user_tool_parse(norm, &again, &e2) != 0) {
        fprintf(stderr, "normalized tool refused: %s\n", e2.msg);
        abort();
    }
    char *a = json_dumps(norm, JSON_COMPACT | JSON_SORT_KEYS);
    char *b = json_dumps(again, JSON_COMPACT | JSON_SORT_KEYS);
    if (a == NULL || b == NULL || strcmp(a, b) != 0)
        abort();
    free(a);
    free(b);
    json_t *red = user_tool_redact(norm);
    if (red == NULL)
        abort();
    json_decref(red);
    struct tool_def def;
    char *schema = NULL, *headers = NULL;
    if (user_tool_to_def(norm, &def, &schema, &headers, &e) == 0 &&
        (def.name == NULL || def.url == NULL))
        abort();
    free(schema);
    free(headers);
    json_decref(again);
    json_decref(norm);
}

static void agent_class(const json_t *in)
{
    struct crew_class *c = NULL, *back = NULL;
    struct err e = {0};
    if (crew_class_parse(in, registry(), &c, &e) != 0) {
        if (e.code != ERR_NOMEM)
            check_message(&e);
        return;
    }
    json_t *out = crew_class_to_json(c, CREW_JSON_FULL);
    json_t *red = crew_class_to_json(c, CREW_JSON_REDACTED);
    if (out == NULL || red == NULL || crew_class_parse(out, registry(), &back, &e) != 0) {
        fprintf(stderr, "a class does not read back: %s\n", e.msg);
        abort();
    }
    if (strcmp(back->name, c->name) != 0 || strcmp(back->base, c->base) != 0)
        abort();
    json_decref(out);
    json_decref(red);
    crew_class_free(back);
    crew_class_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err e = {0};
    if (json_depth_check((const char *)data, size, 64, &e) != 0)
        return 0;
    json_t *in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (in == NULL)
        return 0;
    tool(in);
    agent_class(in);
    json_decref(in);
    return 0;
}
