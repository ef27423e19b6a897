/*
 * jsonq.c - json_query behind jsonq.h: jansson parses (after the depth guard), this file only
 * splits the path and walks. Messages quote at most 64 bytes of a segment, cut on a
 * character boundary, so that they stay UTF-8 whatever the model sent.
 */
#include "tools/jsonq.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_depth.h"
#include "core/json_text.h"
#include "core/utf8.h"

#define QUOTE_MAX 64

/* "'a.b'" (the path before the segment at seg_start, quoted and bounded), or "the top". */
static void path_prefix(const char *path, size_t seg_start, char *buf, size_t len)
{
    size_t n = seg_start > 0 ? seg_start - 1 : 0; /* drop the '.' before the segment */
    size_t cut = utf8_prefix_len(path, n, len - 3);
    if (cut == 0) {
        snprintf(buf, len, "the top");
        return;
    }
    snprintf(buf, len, "'%.*s'", (int)cut, path);
}

static void key_list(const json_t *obj, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)obj, k, v)
    {
        size_t kl = strlen(k);
        size_t q = utf8_prefix_len(k, kl, QUOTE_MAX);
        int w = snprintf(buf + used, len - used, "%s%.*s%s", used ? ", " : "", (int)q, k,
                         q < kl ? "..." : "");
        if (w < 0 || (size_t)w >= len - used) {
            buf[used] = '\0';
            if (len - used > 4)
                snprintf(buf + used, len - used, "%s...", used ? ", " : "");
            break;
        }
        used += (size_t)w;
    }
    utf8_trim_cut(buf);
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

int jsonq_run(const char *json, size_t json_len, const char *path, size_t path_len, char **out,
              struct err *e)
{
    int rc = 0;
    json_t *doc = NULL;
    *out = NULL;
    if (path_len > JSONQ_MAX_PATH) {
        rc = err_set(e, ERR_TOO_LARGE, "path longer than %d bytes", JSONQ_MAX_PATH);
        goto out;
    }
    if (memchr(path, '\0', path_len) != NULL) {
        rc = err_set(e, ERR_INVALID, "path contains a NUL byte");
        goto out;
    }
    if ((rc = json_depth_check(json, json_len, JSONQ_MAX_DEPTH, e)) != 0)
        goto out;
    json_error_t je;
    doc = json_loadb(json, json_len, JSON_DECODE_ANY, &je);
    if (doc == NULL) {
        char text[sizeof je.text];
        snprintf(text, sizeof text, "%s", je.text);
        utf8_trim_cut(text);
        rc = err_set(e, ERR_INVALID, "'json' is not valid JSON: %s (line %d, column %d)", text,
                     je.line, je.column);
        goto out;
    }
    const json_t *cur = doc;
    size_t i = 0;
    while (path_len > 0 && i <= path_len) {
        size_t start = i;
        const char *dot = memchr(path + i, '.', path_len - i);
        size_t end = dot ? (size_t)(dot - path) : path_len;
        size_t slen = end - start;
        const char *seg = path + start;
        char at[QUOTE_MAX + 3];
        path_prefix(path, start, at, sizeof at);
        size_t q = utf8_prefix_len(seg, slen, QUOTE_MAX);
        if (slen == 0) {
            rc = err_set(e, ERR_INVALID, "path '%.*s': empty segment at byte %zu",
                         (int)utf8_prefix_len(path, path_len, QUOTE_MAX), path, start + 1);
            goto out;
        }
        if (json_is_object(cur)) {
            char *key = strndup(seg, slen);
            if (key == NULL) {
                rc = err_set(e, ERR_NOMEM, "out of memory");
                goto out;
            }
            const json_t *next = json_object_get(cur, key);
            free(key);
            if (next == NULL) {
                char keys[256];
                key_list(cur, keys, sizeof keys);
                rc = err_set(e, ERR_INVALID, "no key '%.*s%s' in the object at %s (keys: %s)",
                             (int)q, seg, q < slen ? "..." : "", at, keys);
                goto out;
            }
            cur = next;
        } else if (json_is_array(cur)) {
            size_t idx = 0;
            bool ok = slen <= 9;
            for (size_t k = 0; ok && k < slen; k++) {
                if (seg[k] < '0' || seg[k] > '9')
                    ok = false;
                else
                    idx = idx * 10 + (size_t)(seg[k] - '0');
            }
            if (!ok) {
                rc = err_set(e, ERR_INVALID,
                             "'%.*s%s' is not an index, and the value at %s is an array", (int)q,
                             seg, q < slen ? "..." : "", at);
                goto out;
            }
            if (idx >= json_array_size(cur)) {
                rc = err_set(e, ERR_INVALID, "index %zu is out of range at %s (array of %zu)",
                             idx, at, json_array_size(cur));
                goto out;
            }
            cur = json_array_get(cur, idx);
        } else {
            rc = err_set(e, ERR_INVALID, "cannot look up '%.*s%s' in the value at %s: it is %s",
                         (int)q, seg, q < slen ? "..." : "", at, type_name(cur));
            goto out;
        }
        i = end + 1;
    }
    if (json_is_string(cur)) {
        *out = strndup(json_string_value(cur), json_string_length(cur));
    } else {
        *out = json_dumps(cur, JSON_TEXT_FLAGS | JSON_ENCODE_ANY);
    }
    if (*out == NULL)
        rc = err_set(e, ERR_NOMEM, "out of memory");
out:
    json_decref(doc);
    return rc;
}
