/*
 * url.h - the few URL facts crewd needs to keep secrets out of messages and responses. Not a
 * URL parser: libpq and libcurl parse the URLs they use; this only finds what must be hidden.
 */
#ifndef CREWD_CORE_URL_H
#define CREWD_CORE_URL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The userinfo ("user:password") of a URL: the bytes between "://" (or the start, when there
 * is no scheme) and the last '@' before any '?' or '#'. Read this widely on purpose: it is
 * what must never be shown, however a parser would split the URL. Returns false when there
 * is no '@'.
 */
bool url_userinfo(const char *url, const char **start, size_t *len);

/*
 * A copy of `url` fit to show: the password of its userinfo, and its query string or
 * fragment (where keys often travel: "?key=...", "#access_token=..."), replaced by "***". Returns a
 * new string (free()), or NULL when out of memory.
 */
char *url_redact_secrets(const char *url);

#endif
