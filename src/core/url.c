/* url.c - see url.h. */
#include "core/url.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

bool url_userinfo(const char *url, const char **start, size_t *len)
{
    const char *sep = strstr(url, "://");
    const char *user = sep ? sep + 3 : url;
    size_t span = strcspn(user, "?#");
    const char *at = NULL;
    for (const char *p = user; p < user + span; p++)
        if (*p == '@')
            at = p; /* the last one: a password may itself contain '@' */
    if (at == NULL)
        return false;
    *start = user;
    *len = (size_t)(at - user);
    return true;
}

char *url_redact_secrets(const char *url)
{
    size_t len = strlen(url);
    char *out = malloc(len + 8); /* "***" twice replaces at least the '?' and one byte */
    if (out == NULL)
        return NULL;
    const char *user, *rest = url;
    size_t user_len, n = 0;
    if (url_userinfo(url, &user, &user_len)) {
        const char *colon = memchr(user, ':', user_len);
        if (colon != NULL) {
            n = (size_t)(colon + 1 - url);
            memcpy(out, url, n);
            memcpy(out + n, "***", 3);
            n += 3;
            rest = user + user_len; /* from the '@' */
        }
    }
    size_t keep = strcspn(rest, "?#");
    memcpy(out + n, rest, keep);
    n += keep;
    if (rest[keep] != '\0') { /* "?query" or "#fragment": either may carry a token */
        out[n++] = rest[keep];
        memcpy(out + n, "***", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

#define URL_MAX_LEN 8192

int url_http_host(const char *url, const char *field, enum url_userinfo userinfo,
                  char host[URL_HOST_MAX], struct err *e)
{
    int rc = 0;
    char *part = NULL;
    CURLU *u = NULL;
    if (strlen(url) > URL_MAX_LEN)
        return err_set(e, ERR_INVALID, "%s: longer than %d bytes", field, URL_MAX_LEN);
    if ((u = curl_url()) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        char *shown = url_redact_secrets(url);
        rc = err_set(e, ERR_INVALID, "%s: '%.200s' is not an absolute URL", field,
                     shown ? shown : "?");
        free(shown);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &part, 0) != CURLUE_OK || part == NULL ||
        (strcmp(part, "http") != 0 && strcmp(part, "https") != 0)) {
        rc = err_set(e, ERR_INVALID, "%s: only http and https URLs are allowed", field);
        goto out;
    }
    curl_free(part);
    part = NULL;
    if (userinfo == URL_NO_USERINFO && curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK &&
        part != NULL) {
        rc = err_set(e, ERR_INVALID, "%s: must not carry user:password (the signature "
                                     "authenticates crewd)", field);
        goto out;
    }
    curl_free(part);
    part = NULL;
    if (curl_url_get(u, CURLUPART_HOST, &part, 0) != CURLUE_OK || part == NULL ||
        part[0] == '\0') {
        rc = err_set(e, ERR_INVALID, "%s: the URL has no host", field);
        goto out;
    }
    const char *h = part;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
        h++, hl -= 2;
    if (hl > 0 && h[hl - 1] == '.')
        hl--;
    if (hl == 0 || hl >= URL_HOST_MAX) {
        rc = err_set(e, ERR_INVALID, "%s: the host is empty or too long", field);
        goto out;
    }
    for (size_t i = 0; i < hl; i++)
        host[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] + 32 : h[i]);
    host[hl] = '\0';
out:
    curl_free(part);
    curl_url_cleanup(u);
    return rc;
}

bool url_host_allowed(const char *host, const char *const *allow, size_t n)
{
    size_t hl = strlen(host);
    for (size_t i = 0; i < n; i++) {
        const char *a = allow[i];
        if (strcmp(a, "*") == 0 || strcasecmp(a, host) == 0)
            return true;
        if (a[0] == '*' && a[1] == '.') {
            size_t sl = strlen(a + 1); /* ".example.com" */
            if (hl > sl && strcasecmp(host + hl - sl, a + 1) == 0)
                return true;
        }
    }
    return false;
}
