/*
 * model_fixtures.h - what the model tests share: a tool registry as the group state, and
 * test JSON written with ' for " to stay readable. Include after <cmocka.h>.
 */
#ifndef CREWD_TESTS_MODEL_FIXTURES_H
#define CREWD_TESTS_MODEL_FIXTURES_H

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tools/registry.h"

static inline int setup(void **state)
{
    struct tool_registry *reg = NULL;
    if (tool_registry_new(&reg) != 0)
        return -1;
    *state = reg;
    return 0;
}

static inline int teardown(void **state)
{
    tool_registry_free(*state);
    return 0;
}

/* Parses `text` with ' standing for "; fails the test on bad JSON. */
static inline json_t *load(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++) {
        if (*p == '\'')
            *p = '"';
    }
    json_error_t je;
    json_t *j = json_loads(s, JSON_REJECT_DUPLICATES, &je);
    if (j == NULL)
        fail_msg("bad test JSON: %s: %s", je.text, s);
    free(s);
    return j;
}

#endif
