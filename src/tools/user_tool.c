/*
 * user_tool.c - the user-defined HTTP tools of user_tool.h: checks with messages naming the
 * field, the redacted view, and the registry entry. The runner (runner.c) makes the calls.
 */
#include "tools/user_tool.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/url.h"
#include "core/utf8.h"

#define QUOTE_MAX 64

static const char *const known_fields[] = {"name",    "description", "parameters", "url",
                                           "method",  "headers",     "timeout",    "builtin",
                                           "created_at", "updated_at"};
#define KNOWN_FIELDS "name, description, parameters, url, method, headers, timeout"

static void quote(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    size_t q = utf8_prefix_len(s, n, cap > 4 ? cap - 4 : 0);
    snprintf(dst, cap, "%.*s%s", (int)q, s, q < n ? "..." : "");
}

bool tool_header_name_ok(const char *k)
{
    if (k == NULL || k[0] == '\0')
        return false;
    for (const char *p = k; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", ch) != NULL)
            return false;
    }
    return true;
}

/* Headers libcurl or the connection own; setting them could only confuse framing. */
bool tool_header_reserved(const char *k)
{
    static const char *const names[] = {"host", "content-length", "transfer-encoding",
                                        "connection", "expect", "upgrade", "te", "trailer"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcasecmp(k, names[i]) == 0)
            return true;
    return false;
}

static bool contains_ci(const char *hay, const char *needle)
{
    size_t n = strlen(needle), h = strlen(hay);
    for (size_t i = 0; i + n <= h; i++)
        if (strncasecmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

bool user_tool_header_is_secret(const char *name)
{
    static const char *const parts[] = {"authorization", "auth", "key",    "token",
                                        "secret",        "password", "cookie"};
    for (size_t i = 0; name != NULL && i < sizeof parts / sizeof parts[0]; i++)
        if (contains_ci(name, parts[i]))
            return true;
    return false;
}

static bool name_ok(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Printable ASCII and tab only: what a header value can carry without encoding trouble. */
static bool value_printable(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(c == '\t' || (c >= 0x20 && c < 0x7f)))
            return false;
    }
    return true;
}

static int check_url(const char *u, size_t len, struct err *e)
{
    if (len == 0 || len > USER_TOOL_MAX_URL_BYTES || strlen(u) != len)
        return err_set(e, ERR_INVALID, "url: required, at most %d bytes",
                       USER_TOOL_MAX_URL_BYTES);
    if (strncasecmp(u, "http://", 7) != 0 && strncasecmp(u, "https://", 8) != 0)
        return err_set(e, ERR_INVALID, "url: must start with http:// or https://");
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] == 0x7f)
            return err_set(e, ERR_INVALID, "url: must not contain spaces or control characters");
    CURLU *h = curl_url();
    if (h == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    char *host = NULL;
    CURLUcode uc = curl_url_set(h, CURLUPART_URL, u, 0);
    if (uc == CURLUE_OK)
        uc = curl_url_get(h, CURLUPART_HOST, &host, 0);
    int rc = 0;
    if (uc != CURLUE_OK || host == NULL || host[0] == '\0')
        rc = err_set(e, ERR_INVALID, "url: not a valid absolute http(s) URL with a host");
    curl_free(host);
    curl_url_cleanup(h);
    return rc;
}

static int check_headers(const json_t *v, json_t **out, struct err *e)
{
    *out = NULL;
    if (v == NULL || json_is_null(v)) {
        *out = json_object();
        return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
    }
    if (!json_is_object(v))
        return err_set(e, ERR_INVALID, "headers: must be an object of strings");
    if (json_object_size(v) > USER_TOOL_MAX_HEADERS)
        return err_set(e, ERR_INVALID, "headers: at most %d headers", USER_TOOL_MAX_HEADERS);
    const char *k;
    const json_t *x;
    json_object_foreach((json_t *)v, k, x)
    {
        char q[QUOTE_MAX + 4];
        quote(q, sizeof q, k);
        if (!tool_header_name_ok(k))
            return err_set(e, ERR_INVALID,
                           "headers: '%s' is not a valid header name (printable ASCII, no "
                           "spaces or separators)",
                           q);
        if (tool_header_reserved(k))
            return err_set(e, ERR_INVALID, "headers: '%s' may not be set", q);
        /* Names are case-insensitive in HTTP: two spellings would both go out. */
        const char *k2;
        const json_t *x2;
        json_object_foreach((json_t *)v, k2, x2)
        {
            if (k2 != k && strcasecmp(k2, k) == 0)
                return err_set(e, ERR_INVALID, "headers: '%s' is given twice (names ignore case)",
                               q);
        }
        if (!json_is_string(x))
            return err_set(e, ERR_INVALID, "headers.%s: must be a string", q);
        size_t len = json_string_length(x);
        if (strlen(k) + len + 2 > USER_TOOL_MAX_HEADER_BYTES ||
            !value_printable(json_string_value(x), len))
            return err_set(e, ERR_INVALID,
                           "headers.%s: the value must be printable ASCII, at most %d bytes", q,
                           USER_TOOL_MAX_HEADER_BYTES);
    }
    *out = json_deep_copy(v);
    return *out ? 0 : err_set(e, ERR_NOMEM, "out of memory");
}

int user_tool_parse(const json_t *in, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *o = NULL, *headers = NULL, *params = NULL;
    *out = NULL;
    if (!json_is_object(in)) {
        rc = err_set(e, ERR_INVALID, "tool definition: expected an object");
        goto out;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)in, k, v)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof known_fields / sizeof known_fields[0] && !known; i++)
            known = strcmp(k, known_fields[i]) == 0;
        if (!known) {
            char q[QUOTE_MAX + 4];
            quote(q, sizeof q, k);
            rc = err_set(e, ERR_INVALID, "%s: unknown field (known: %s)", q, KNOWN_FIELDS);
            goto out;
        }
    }

    v = json_object_get(in, "name");
    if (!json_is_string(v) || !name_ok(json_string_value(v), json_string_length(v))) {
        rc = err_set(e, ERR_INVALID, "name: required, must match [a-zA-Z0-9_-]{1,64}");
        goto out;
    }
    const char *name = json_string_value(v);
    if (tool_registry_is_builtin(name)) {
        rc = err_set(e, ERR_INVALID, "name: '%s' is a built-in tool; choose another name", name);
        goto out;
    }

    v = json_object_get(in, "description");
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        rc = err_set(e, ERR_INVALID, "description: required, a non-empty string");
        goto out;
    }
    if (json_string_length(v) > USER_TOOL_MAX_DESCRIPTION_BYTES) {
        rc = err_set(e, ERR_INVALID, "description: at most %d bytes",
                     USER_TOOL_MAX_DESCRIPTION_BYTES);
        goto out;
    }
    const char *description = json_string_value(v);

    v = json_object_get(in, "parameters");
    if (v == NULL || json_is_null(v)) {
        params = json_pack("{s:s, s:{}}", "type", "object", "properties");
    } else {
        const char *type = json_string_value(json_object_get(v, "type"));
        if (!json_is_object(v) || type == NULL || strcmp(type, "object") != 0) {
            rc = err_set(e, ERR_INVALID,
                         "parameters: must be a JSON Schema object with \"type\": \"object\"");
            goto out;
        }
        const json_t *props = json_object_get(v, "properties");
        if (props != NULL && !json_is_object(props)) {
            rc = err_set(e, ERR_INVALID, "parameters.properties: must be an object");
            goto out;
        }
        char *text = json_dumps(v, JSON_COMPACT);
        size_t len = text ? strlen(text) : 0;
        free(text);
        if (len > USER_TOOL_MAX_SCHEMA_BYTES) {
            rc = err_set(e, ERR_INVALID, "parameters: at most %d bytes of JSON",
                         USER_TOOL_MAX_SCHEMA_BYTES);
            goto out;
        }
        params = json_deep_copy(v);
    }
    if (params == NULL)
        goto nomem;

    v = json_object_get(in, "url");
    if (!json_is_string(v)) {
        rc = err_set(e, ERR_INVALID, "url: required, an http(s) URL");
        goto out;
    }
    if ((rc = check_url(json_string_value(v), json_string_length(v), e)) != 0)
        goto out;
    const char *url = json_string_value(v);

    const char *method = "POST";
    v = json_object_get(in, "method");
    if (v != NULL && !json_is_null(v)) {
        const char *m = json_string_value(v);
        if (m != NULL && strcasecmp(m, "POST") == 0 && strlen(m) == json_string_length(v))
            method = "POST";
        else if (m != NULL && strcasecmp(m, "GET") == 0 && strlen(m) == json_string_length(v))
            method = "GET";
        else {
            rc = err_set(e, ERR_INVALID, "method: must be \"POST\" (the default) or \"GET\"");
            goto out;
        }
    }

    if ((rc = check_headers(json_object_get(in, "headers"), &headers, e)) != 0)
        goto out;

    json_t *timeout = json_null();
    v = json_object_get(in, "timeout");
    if (v != NULL && !json_is_null(v)) {
        double t = json_is_number(v) ? json_number_value(v) : -1.0;
        /* at least a millisecond: the runner counts in whole milliseconds */
        if (!(t >= 0.001 && t <= USER_TOOL_MAX_TIMEOUT_S)) {
            rc = err_set(e, ERR_INVALID,
                         "timeout: must be a number of seconds, from 0.001 to %d",
                         USER_TOOL_MAX_TIMEOUT_S);
            goto out;
        }
        timeout = json_deep_copy(v);
    }
    o = json_pack("{s:s, s:s, s:O, s:s, s:s, s:O, s:o}", "name", name, "description",
                  description, "parameters", params, "url", url, "method", method, "headers",
                  headers, "timeout", timeout);
    if (o == NULL)
        goto nomem;
    *out = o;
    goto out;
nomem:
    rc = err_set(e, ERR_NOMEM, "out of memory");
out:
    json_decref(headers);
    json_decref(params);
    return rc;
}

json_t *user_tool_redact(const json_t *normalized)
{
    json_t *o = json_deep_copy(normalized);
    if (o == NULL)
        return NULL;
    /* A key in the URL's query or a password in it is as secret as a header. */
    const char *url = json_string_value(json_object_get(o, "url"));
    if (url != NULL) {
        char *shown = url_redact_secrets(url);
        if (shown == NULL || json_object_set_new(o, "url", json_string(shown)) != 0) {
            free(shown);
            json_decref(o);
            return NULL;
        }
        free(shown);
    }
    json_t *h = json_object_get(o, "headers");
    const char *k;
    json_t *v;
    json_object_foreach(h, k, v)
    {
        if (user_tool_header_is_secret(k) && json_object_set_new(h, k, json_string("***")) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int user_tool_to_def(const json_t *normalized, struct tool_def *def, char **schema_text,
                     char **headers_text, struct err *e)
{
    *schema_text = json_dumps(json_object_get(normalized, "parameters"), JSON_COMPACT);
    const json_t *h = json_object_get(normalized, "headers");
    *headers_text = json_object_size(h) > 0 ? json_dumps(h, JSON_COMPACT) : NULL;
    if (*schema_text == NULL || (json_object_size(h) > 0 && *headers_text == NULL)) {
        free(*schema_text);
        free(*headers_text);
        *schema_text = *headers_text = NULL;
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    const json_t *t = json_object_get(normalized, "timeout");
    const char *method = json_string_value(json_object_get(normalized, "method"));
    *def = (struct tool_def){
        .name = json_string_value(json_object_get(normalized, "name")),
        .description = json_string_value(json_object_get(normalized, "description")),
        .params_schema = *schema_text,
        .origin = TOOL_USER,
        .url = json_string_value(json_object_get(normalized, "url")),
        .post = method == NULL || strcmp(method, "GET") != 0,
        .headers_json = *headers_text,
        .timeout_ms = json_is_number(t) ? (long)(json_number_value(t) * 1000.0 + 0.5) : 0,
    };
    return 0;
}
