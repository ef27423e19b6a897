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

/* The length of the longest prefix of the UTF-8 text s[0..len) that is at most `max` bytes
 * and does not end inside a character: for quoting user text in bounded messages. */
size_t utf8_prefix_len(const char *s, size_t len, size_t max);

/* The length of s[0..len) without a last character cut short at the end (bytes cut at an
 * arbitrary point: a size cap). Only the end is looked at. */
size_t utf8_complete_len(const char *s, size_t len);

/* Shortens a NUL-terminated string that was cut at an arbitrary byte (snprintf truncation)
 * so that it does not end inside a character. A message cut mid-character is not UTF-8, and
 * jansson would then refuse to put it in a JSON error body. */
void utf8_trim_cut(char *s);

#endif
