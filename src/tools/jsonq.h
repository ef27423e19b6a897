/*
 * jsonq.h - the json_query tool's work: a dotted path (a.b.0.c) walked into JSON text.
 * Internal to src/tools; on its own so that it can be fuzzed.
 *
 * Path: segments separated by '.'; on an object a segment is a key, on an array it must be a
 * decimal index. The empty path selects the whole document. Keys that contain '.' cannot be
 * reached (the tool's description says "dotted path", and models write exactly that).
 */
#ifndef CREWD_TOOLS_JSONQ_H
#define CREWD_TOOLS_JSONQ_H

#include <stddef.h>

#include "core/err.h"

#define JSONQ_MAX_DEPTH 64        /* nesting of the document */
#define JSONQ_MAX_PATH 1024       /* bytes of path */

/*
 * Parses json[0..json_len) and selects path[0..path_len). On success *out is a new string
 * (free()): a string value's text as is, anything else as compact JSON. Returns 0, or
 * ERR_INVALID (bad JSON, bad path, nothing there) / ERR_TOO_LARGE / ERR_NOMEM with a message
 * that does not name the tool ("no key 'c' in the object at 'a.b' (keys: x, y)").
 */
int jsonq_run(const char *json, size_t json_len, const char *path, size_t path_len, char **out,
              struct err *e);

#endif
