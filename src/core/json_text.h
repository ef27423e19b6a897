/*
 * json_text.h - how crewd writes JSON text, in one place: compact, keys in insertion order
 * (the order of the API's documents), and reals with 15 significant digits, so that a
 * temperature sent as 0.2 comes back as 0.2, not 0.20000000000000001 (DESIGN.md: jansson).
 */
#ifndef CREWD_CORE_JSON_TEXT_H
#define CREWD_CORE_JSON_TEXT_H

#include <jansson.h>

#define JSON_TEXT_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))

#endif
