/*
 * model_util.h - small helpers shared by crew.c and plan.c (internal to src/model/): the
 * string lists both own, and the NULL-tolerant JSON building both do.
 */
#ifndef CREWD_MODEL_MODEL_UTIL_H
#define CREWD_MODEL_MODEL_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdlib.h>

/* Frees a list of `n` owned strings and the list (NULL-safe). */
static inline void model_free_strings(char **list, size_t n)
{
    for (size_t i = 0; list != NULL && i < n; i++)
        free(list[i]);
    free(list);
}

/* Sets obj[key] = v, stealing v; false when v is NULL (a failed allocation) or the set fails,
 * so that a chain of puts reports any failure. */
static inline bool model_put(json_t *obj, const char *key, json_t *v)
{
    return v != NULL && json_object_set_new(obj, key, v) == 0;
}

static inline json_t *model_string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* A JSON array of the `n` strings; NULL when out of memory. */
static inline json_t *model_string_array(char *const *list, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a != NULL && i < n; i++) {
        if (json_array_append_new(a, json_string(list[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

#endif
