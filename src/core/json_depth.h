/*
 * json_depth.h - a nesting-depth guard run over JSON text before it is parsed.
 *
 * jansson's own limit is a compile-time 2048 levels, far more than any crew definition needs
 * and enough for hostile input to cost deep recursion in every later walk of the tree; crewd
 * refuses deeper documents up front. The scan only tracks strings (to ignore brackets inside
 * them) and brackets; it does not validate JSON, which the parser does next.
 */
#ifndef CREWD_CORE_JSON_DEPTH_H
#define CREWD_CORE_JSON_DEPTH_H

#include <stddef.h>

#include "core/err.h"

#define JSON_DEPTH_DEFAULT_MAX 64

/* Returns 0 when no array/object in buf[0..len) nests deeper than max_depth, else
 * ERR_INVALID with "JSON nesting deeper than N levels". */
int json_depth_check(const char *buf, size_t len, int max_depth, struct err *e);

#endif
