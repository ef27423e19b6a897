/*
 * url.h - the few URL facts crewd needs: what must be hidden in messages and responses, and
 * (url_http_host) whether a URL a client gives is an absolute http(s) URL and its host, as
 * libcurl's own parser reads it, so the host checked is the host connected to.
 */
#ifndef CREWD_CORE_URL_H
#define CREWD_CORE_URL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

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

#define URL_HOST_MAX 256

/* What url_http_host accepts besides scheme and host. */
enum url_userinfo {
    URL_NO_USERINFO, /* user:password refused ("the signature authenticates crewd": webhooks) */
    URL_USERINFO_OK, /* allowed (an LLM endpoint behind a proxy with basic auth) */
};

/*
 * Checks that `url` is an absolute http or https URL with a host (and, per `userinfo`, no
 * user:password), and puts its host in host[URL_HOST_MAX]: lower case, without IPv6
 * brackets or a trailing dot. Returns 0, or ERR_INVALID with a message that starts with
 * `field` and quotes at most the redacted URL.
 */
int url_http_host(const char *url, const char *field, enum url_userinfo userinfo,
                  char host[URL_HOST_MAX], struct err *e);

/*
 * True when `host` (as url_http_host gives it) matches an entry of allow[0..n): "*" (any
 * host), the host itself (case-insensitive), or "*.example.com" (any subdomain of it, not
 * example.com itself).
 */
bool url_host_allowed(const char *host, const char *const *allow, size_t n);

#endif
