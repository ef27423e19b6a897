/*
 * utf8.h - validation of UTF-8 text that does not pass through jansson (URL paths and query
 * values once percent-decoded). JSON bodies are checked by jansson itself.
 */
#ifndef CREWD_CORE_UTF8_H
#define CREWD_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF) and contains no NUL byte. */
bool utf8_valid(const char *s, size_t len);

#endif
