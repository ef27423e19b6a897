/* url.c - see url.h. */
#include "core/url.h"

#include <stdlib.h>
#include <string.h>

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
