/*
 * runner.c - the runner of runner.h: argument checks against the registry's schemas, the
 * built-in tools, and one libcurl multi handle driven by the loop for the http tools
 * (curl's hiperfifo pattern, as in llm/llm.c, much reduced: no retries, no per-host queues,
 * no streaming).
 *
 * Every outcome, synchronous or not, goes through finish(), which only stores it and arms
 * the call's zero-timeout event; the callback runs from that event (on_done) and from nowhere
 * else. So user code never runs inside tool_runner_invoke or inside a libcurl callback, and
 * whatever it does there (invoke, cancel, free the runner) meets no half-done state of ours:
 * by then the call is out of the runner's list and owns nothing of the runner's.
 * Everything runs on the loop thread.
 */
#include "tools/runner.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/curl_loop.h"
#include "core/json_depth.h"
#include "core/log.h"
#include "core/url.h"
#include "core/utf8.h"
#include "tools/calc.h"
#include "tools/jsonq.h"
#include "core/netguard.h"
#include "tools/registry.h"
#include "tools/tzclock.h"
#include "tools/user_tool.h"

#define RUNNER_MAX_CONNECTIONS 256
#define RUNNER_MAX_HOST_CONNECTIONS 32
#define ARGS_MAX_DEPTH 16
#define HTTP_MAX_URL 8192
#define HTTP_MAX_HEADERS 32
#define HTTP_MAX_HEADER_BYTES 8192
#define HTTP_MAX_LOCATION 2048
#define QUOTE_MAX 64

enum tool_kind { TOOL_CALCULATOR, TOOL_DATETIME, TOOL_HTTP_REQUEST, TOOL_HTTP_GET, TOOL_JSON_QUERY };

static const struct {
    const char *name;
    enum tool_kind kind;
} implementations[] = {
    {"calculator", TOOL_CALCULATOR},       {"datetime", TOOL_DATETIME},
    {"current_time", TOOL_DATETIME},       {"http_request", TOOL_HTTP_REQUEST},
    {"http_get", TOOL_HTTP_GET},           {"json_query", TOOL_JSON_QUERY},
};

struct tool_runner {
    struct event_base *base;
    const struct tool_registry *reg;
    char **allow_hosts;
    size_t n_allow_hosts;
    bool allow_private;
    long timeout_ms;
    size_t max_bytes;
    CURLM *multi;
    struct curl_loop loop; /* libcurl's sockets and timer on the event loop */
    struct tool_call *calls; /* started, not yet delivered or cancelled */
    size_t n_calls;
};

struct tool_call {
    struct tool_runner *runner;
    struct tool_call *prev, *next;
    tool_done_cb cb;
    void *arg;
    char tool[72];
    struct event *done_ev;
    bool finished;   /* the outcome below is set and done_ev armed */
    bool delivering; /* its callback runs */
    int rc;
    char *output;
    struct err err;

    /* http tools */
    CURL *easy;
    CURLU *url;
    bool in_multi;
    struct curl_slist *headers;
    char *post_body;
    char host[256];
    char *reply;
    size_t reply_len, reply_cap;
    bool cut;
    long status;
    long timeout_ms; /* the runner's, or a user tool's own */
    char location[HTTP_MAX_LOCATION + 1];
    char blocked[128];
    char errbuf[CURL_ERROR_SIZE];
};

/* ---- small helpers ---- */

static void quote(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s);
    size_t q = utf8_prefix_len(s, n, cap > 4 ? cap - 4 : 0);
    snprintf(dst, cap, "%.*s%s", (int)q, s, q < n ? "..." : "");
}

/* Appends s[0..len) to buf, every byte that is not part of a well-formed UTF-8 character
 * (and every NUL) replaced by U+FFFD, so the model gets text whatever the server sent. */
static int append_text(char **buf, size_t *blen, size_t *bcap, const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
        const char *piece = s + i;
        size_t plen = n;
        if (i + n > len || !utf8_valid(s + i, n)) {
            piece = "\xef\xbf\xbd";
            plen = 3;
            n = 1;
        }
        if (*blen + plen + 1 > *bcap) {
            size_t cap = *bcap ? *bcap * 2 : 256;
            while (cap < *blen + plen + 1)
                cap *= 2;
            char *grown = realloc(*buf, cap);
            if (grown == NULL)
                return ERR_NOMEM;
            *buf = grown;
            *bcap = cap;
        }
        memcpy(*buf + *blen, piece, plen);
        *blen += plen;
        (*buf)[*blen] = '\0';
        i += n;
    }
    return 0;
}

/* ---- delivery ---- */

static void call_unlink(struct tool_call *c)
{
    struct tool_runner *r = c->runner;
    if (c->prev)
        c->prev->next = c->next;
    else if (r->calls == c)
        r->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    r->n_calls--;
}

static void multi_remove(struct tool_call *c)
{
    if (c->in_multi) {
        curl_multi_remove_handle(c->runner->multi, c->easy);
        c->in_multi = false;
    }
}

/* Frees what the call owns; touches nothing of the runner (which may be gone by now). */
static void call_free(struct tool_call *c)
{
    if (c->done_ev)
        event_free(c->done_ev);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    curl_url_cleanup(c->url);
    curl_slist_free_all(c->headers);
    free(c->post_body);
    free(c->reply);
    free(c->output);
    free(c);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct tool_call *c = arg;
    call_unlink(c);
    c->delivering = true;
    c->cb(c->arg, c->rc, c->rc == 0 ? c->output : NULL, &c->err);
    call_free(c);
}

/* Records the outcome (taking `output`) and arms the delivery. */
static void finish(struct tool_call *c, int rc, char *output, const struct err *e)
{
    c->finished = true;
    c->rc = rc;
    if (rc == 0) {
        c->output = output;
    } else {
        free(output);
        c->err = *e;
        c->err.code = rc;
        if (c->err.msg[0] == '\0')
            snprintf(c->err.msg, sizeof c->err.msg, "%s: %s", c->tool, err_default_msg(rc));
        utf8_trim_cut(c->err.msg);
    }
    struct timeval zero = {0, 0};
    evtimer_add(c->done_ev, &zero);
}

static void finish_err(struct tool_call *c, struct err *e)
{
    finish(c, e->code != 0 ? e->code : ERR_INTERNAL, NULL, e);
}

/* ---- argument checks (the basics of JSON Schema the registry's schemas use) ---- */

static bool type_matches(const json_t *v, const char *type)
{
    if (strcmp(type, "string") == 0)
        return json_is_string(v);
    if (strcmp(type, "object") == 0)
        return json_is_object(v);
    if (strcmp(type, "array") == 0)
        return json_is_array(v);
    if (strcmp(type, "number") == 0)
        return json_is_number(v);
    if (strcmp(type, "integer") == 0)
        return json_is_integer(v);
    if (strcmp(type, "boolean") == 0)
        return json_is_boolean(v);
    if (strcmp(type, "null") == 0)
        return json_is_null(v);
    return true; /* a type this checker does not know: let the tool judge */
}

static const char *a_type(const char *type)
{
    return strcmp(type, "object") == 0 || strcmp(type, "array") == 0 ||
                   strcmp(type, "integer") == 0
               ? (type[0] == 'i' ? "an integer" : type[0] == 'o' ? "an object" : "an array")
               : strcmp(type, "string") == 0  ? "a string"
               : strcmp(type, "number") == 0  ? "a number"
               : strcmp(type, "boolean") == 0 ? "a boolean"
                                              : type;
}

static int check_value(const char *path, const json_t *v, const json_t *prop, struct err *e)
{
    const char *type = json_string_value(json_object_get(prop, "type"));
    if (type != NULL && !type_matches(v, type))
        return err_set(e, ERR_INVALID, "'%s' must be %s", path, a_type(type));
    const json_t *en = json_object_get(prop, "enum");
    if (json_is_array(en)) {
        size_t i;
        const json_t *x;
        bool found = false;
        char known[256] = "";
        size_t used = 0;
        json_array_foreach(en, i, x)
        {
            if (json_equal((json_t *)x, (json_t *)v))
                found = true;
            if (json_is_string(x) && used < sizeof known) {
                int w = snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                                 json_string_value(x));
                used += w > 0 ? (size_t)w : 0;
            }
        }
        if (!found)
            return err_set(e, ERR_INVALID, "'%s' must be one of: %s", path, known);
    }
    const json_t *add = json_object_get(prop, "additionalProperties");
    if (json_is_object(v) && json_is_object(add)) {
        const char *k;
        const json_t *m;
        json_object_foreach((json_t *)v, k, m)
        {
            char sub[160], qk[QUOTE_MAX + 4];
            quote(qk, sizeof qk, k);
            snprintf(sub, sizeof sub, "%s.%s", path, qk);
            int rc = check_value(sub, m, add, e);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

static int check_args(const struct tool_def *def, const json_t *args, struct err *e)
{
    int rc = 0;
    json_t *schema = json_loads(def->params_schema, 0, NULL);
    if (schema == NULL)
        goto out; /* a user-defined tool with a schema we cannot read: nothing to check */
    const json_t *props = json_object_get(schema, "properties");
    const json_t *req = json_object_get(schema, "required");
    size_t i;
    const json_t *x;
    json_array_foreach(req, i, x)
    {
        const char *name = json_string_value(x);
        if (name != NULL && json_object_get(args, name) == NULL) {
            rc = err_set(e, ERR_INVALID, "'%s' is required", name);
            goto out;
        }
    }
    bool closed = json_is_false(json_object_get(schema, "additionalProperties"));
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)args, k, v)
    {
        const json_t *prop = json_object_get(props, k);
        char qk[QUOTE_MAX + 4];
        quote(qk, sizeof qk, k);
        if (prop == NULL) {
            if (closed) {
                char known[256] = "";
                size_t used = 0;
                const char *pk;
                const json_t *pv;
                json_object_foreach((json_t *)props, pk, pv)
                {
                    int w = snprintf(known + used, sizeof known - used, "%s%s",
                                     used ? ", " : "", pk);
                    used += w > 0 ? (size_t)w : 0;
                    if (used >= sizeof known)
                        break;
                }
                rc = err_set(e, ERR_INVALID, "unknown argument '%s' (known: %s)", qk, known);
                goto out;
            }
            continue;
        }
        if ((rc = check_value(qk, v, prop, e)) != 0)
            goto out;
    }
out:
    json_decref(schema);
    return rc;
}

/* ---- the synchronous tools ---- */

static void run_calculator(struct tool_call *c, const json_t *args)
{
    struct err e = {0};
    const json_t *x = json_object_get(args, "expression");
    double v;
    if (calc_eval(json_string_value(x), json_string_length(x), &v, &e) != 0) {
        err_prefix(&e, "%s", c->tool);
        finish_err(c, &e);
        return;
    }
    char buf[64];
    calc_format(v, buf, sizeof buf);
    char *out = strdup(buf);
    if (out == NULL) {
        err_set(&e, ERR_NOMEM, "%s: out of memory", c->tool);
        finish_err(c, &e);
        return;
    }
    finish(c, 0, out, NULL);
}

static void run_datetime(struct tool_call *c, const json_t *args)
{
    struct err e = {0};
    char buf[160];
    if (tzclock_format(json_string_value(json_object_get(args, "timezone")), time(NULL), buf,
                       sizeof buf, &e) != 0) {
        err_prefix(&e, "%s", c->tool);
        finish_err(c, &e);
        return;
    }
    char *out = strdup(buf);
    if (out == NULL) {
        err_set(&e, ERR_NOMEM, "%s: out of memory", c->tool);
        finish_err(c, &e);
        return;
    }
    finish(c, 0, out, NULL);
}

static void run_json_query(struct tool_call *c, const json_t *args)
{
    struct err e = {0};
    const json_t *j = json_object_get(args, "json"), *p = json_object_get(args, "path");
    char *out = NULL;
    if (jsonq_run(json_string_value(j), json_string_length(j), json_string_value(p),
                  json_string_length(p), &out, &e) != 0) {
        err_prefix(&e, "%s", c->tool);
        finish_err(c, &e);
        return;
    }
    finish(c, 0, out, NULL);
}

/* ---- the http tools: libcurl <-> libevent ---- */

static void after_curl(struct tool_runner *r);

/* A socket of ours is ready or libcurl's timer fired (core/curl_loop.h). */
static void drive(void *arg, curl_socket_t fd, int action)
{
    struct tool_runner *r = arg;
    int running = 0;
    curl_multi_socket_action(r->multi, fd, action, &running);
    after_curl(r);
}

/* Connect-time address check: runs for every address libcurl tries, after its own DNS
 * resolution, so the address checked is the address connected to. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct tool_call *c = clientp;
    return netguard_open_socket(purpose, a, c->runner->allow_private, c->blocked,
                                sizeof c->blocked);
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct tool_call *c = userdata;
    size_t n = size * nmemb;
    size_t room = c->runner->max_bytes - c->reply_len;
    size_t take = n < room ? n : room;
    if (take > 0) {
        if (c->reply_len + take > c->reply_cap) {
            size_t cap = c->reply_cap ? c->reply_cap : 4096;
            while (cap < c->reply_len + take)
                cap *= 2;
            if (cap > c->runner->max_bytes)
                cap = c->runner->max_bytes;
            char *grown = realloc(c->reply, cap);
            if (grown == NULL)
                return 0;
            c->reply = grown;
            c->reply_cap = cap;
        }
        memcpy(c->reply + c->reply_len, ptr, take);
        c->reply_len += take;
    }
    if (take < n) {
        c->cut = true;
        return 0; /* stop the transfer: CURLE_WRITE_ERROR, read as "cut" in complete() */
    }
    return n;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct tool_call *c = userdata;
    size_t n = size * nitems;
    if (n >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        c->location[0] = '\0';
    } else if (n > 9 && strncasecmp(buf, "location:", 9) == 0) {
        const char *v = buf + 9, *end = buf + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
            end--;
        size_t len = (size_t)(end - v);
        if (len > HTTP_MAX_LOCATION)
            len = HTTP_MAX_LOCATION;
        memcpy(c->location, v, len);
        c->location[len] = '\0';
    }
    return n;
}

static void complete(struct tool_call *c, CURLcode result)
{
    struct tool_runner *r = c->runner;
    struct err e = {0};
    char *out = NULL;
    size_t olen = 0, ocap = 0;
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (result != CURLE_OK && !(result == CURLE_WRITE_ERROR && c->cut)) {
        if (c->blocked[0] != '\0' && result == CURLE_COULDNT_CONNECT)
            err_set(&e, ERR_UNAUTHORIZED,
                    "%s: refused to connect to %s for host '%s': only public addresses are "
                    "allowed",
                    c->tool, c->blocked, c->host);
        else if (result == CURLE_OPERATION_TIMEDOUT)
            err_set(&e, ERR_IO, "%s: '%s' did not answer within %ld ms", c->tool, c->host,
                    c->timeout_ms);
        else if (result == CURLE_COULDNT_RESOLVE_HOST)
            err_set(&e, ERR_IO, "%s: cannot resolve host '%s'", c->tool, c->host);
        else
            err_set(&e, ERR_IO, "%s: request to '%s' failed: %s", c->tool, c->host,
                    c->errbuf[0] ? c->errbuf : curl_easy_strerror(result));
        finish_err(c, &e);
        return;
    }
    char head[64 + HTTP_MAX_LOCATION];
    if (status >= 300 && status < 400 && c->location[0] != '\0')
        snprintf(head, sizeof head, "HTTP %ld\nLocation: %s (not followed)\n", status,
                 c->location);
    else
        snprintf(head, sizeof head, "HTTP %ld\n", status);
    size_t body_len = c->reply_len;
    if (c->cut) /* do not leave a character cut in two at the end */
        body_len = utf8_complete_len(c->reply, c->reply_len);
    char tail[96] = "";
    if (c->cut)
        snprintf(tail, sizeof tail, "\n[reply cut at %zu bytes]", r->max_bytes);
    if (append_text(&out, &olen, &ocap, head, strlen(head)) != 0 ||
        append_text(&out, &olen, &ocap, c->reply ? c->reply : "", body_len) != 0 ||
        append_text(&out, &olen, &ocap, tail, strlen(tail)) != 0) {
        free(out);
        err_set(&e, ERR_NOMEM, "%s: out of memory", c->tool);
        finish_err(c, &e);
        return;
    }
    finish(c, 0, out, NULL);
}

static void after_curl(struct tool_runner *r)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(r->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg is invalid after remove_handle */
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        struct tool_call *c = (struct tool_call *)(void *)priv;
        if (c == NULL) {
            curl_multi_remove_handle(r->multi, easy);
            continue;
        }
        multi_remove(c);
        complete(c, result);
    }
}

static bool host_allowed(const struct tool_runner *r, const char *host)
{
    return url_host_allowed(host, (const char *const *)r->allow_hosts, r->n_allow_hosts);
}

static int http_setup(struct tool_call *c, const json_t *args, bool post_allowed, struct err *e)
{
    struct tool_runner *r = c->runner;
    const char *url = json_string_value(json_object_get(args, "url"));
    const char *method = json_string_value(json_object_get(args, "method"));
    const json_t *hdrs = json_object_get(args, "headers");
    const json_t *body = json_object_get(args, "body");
    bool post = post_allowed && method != NULL && strcmp(method, "POST") == 0;
    char *part = NULL;
    int rc = 0;

    if (strlen(url) > HTTP_MAX_URL)
        return err_set(e, ERR_TOO_LARGE, "%s: url longer than %d bytes", c->tool, HTTP_MAX_URL);
    if (body != NULL && !post)
        return err_set(e, ERR_INVALID, "%s: 'body' is only allowed with method POST", c->tool);
    c->url = curl_url();
    if (c->url == NULL)
        return err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
    CURLUcode uc = curl_url_set(c->url, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        char q[QUOTE_MAX + 4];
        quote(q, sizeof q, url);
        return err_set(e, ERR_INVALID, "%s: '%s' is not a valid absolute URL (%s)", c->tool, q,
                       curl_url_strerror(uc));
    }
    if (curl_url_get(c->url, CURLUPART_SCHEME, &part, 0) != CURLUE_OK || part == NULL ||
        (strcmp(part, "http") != 0 && strcmp(part, "https") != 0)) {
        rc = err_set(e, ERR_INVALID, "%s: only http and https URLs are allowed", c->tool);
        goto out;
    }
    curl_free(part);
    part = NULL;
    if (curl_url_get(c->url, CURLUPART_HOST, &part, 0) != CURLUE_OK || part == NULL ||
        part[0] == '\0') {
        rc = err_set(e, ERR_INVALID, "%s: the URL has no host", c->tool);
        goto out;
    }
    /* Compare the host without IPv6 brackets or a trailing dot, lower case. */
    const char *h = part;
    size_t hl = strlen(h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']')
        h++, hl -= 2;
    if (hl > 0 && h[hl - 1] == '.')
        hl--;
    if (hl >= sizeof c->host) {
        rc = err_set(e, ERR_INVALID, "%s: host name too long", c->tool);
        goto out;
    }
    for (size_t i = 0; i < hl; i++)
        c->host[i] = (char)((h[i] >= 'A' && h[i] <= 'Z') ? h[i] + 32 : h[i]);
    c->host[hl] = '\0';
    if (!host_allowed(r, c->host)) {
        char q[QUOTE_MAX + 4];
        quote(q, sizeof q, c->host);
        rc = err_set(e, ERR_UNAUTHORIZED, "%s: host '%s' is not in the allowlist", c->tool, q);
        goto out;
    }

    const char *k;
    const json_t *v;
    size_t n_headers = 0;
    bool has_ctype = false;
    json_object_foreach((json_t *)hdrs, k, v)
    {
        const char *val = json_string_value(v);
        char q[QUOTE_MAX + 4];
        quote(q, sizeof q, k);
        if (++n_headers > HTTP_MAX_HEADERS) {
            rc = err_set(e, ERR_TOO_LARGE, "%s: at most %d headers", c->tool, HTTP_MAX_HEADERS);
            goto out;
        }
        if (!tool_header_name_ok(k)) {
            rc = err_set(e, ERR_INVALID, "%s: '%s' is not a valid header name", c->tool, q);
            goto out;
        }
        if (tool_header_reserved(k)) {
            rc = err_set(e, ERR_INVALID, "%s: header '%s' may not be set", c->tool, q);
            goto out;
        }
        if (strlen(k) + json_string_length(v) + 2 > HTTP_MAX_HEADER_BYTES ||
            strpbrk(val, "\r\n") != NULL || strlen(val) != json_string_length(v)) {
            rc = err_set(e, ERR_INVALID,
                         "%s: header '%s': the value has a line break or NUL, or is too long",
                         c->tool, q);
            goto out;
        }
        if (strcasecmp(k, "content-type") == 0)
            has_ctype = true;
        char line[HTTP_MAX_HEADER_BYTES + 4];
        /* "Name;" is libcurl's spelling of a header with an empty value. */
        if (val[0] == '\0')
            snprintf(line, sizeof line, "%s;", k);
        else
            snprintf(line, sizeof line, "%s: %s", k, val);
        struct curl_slist *grown = curl_slist_append(c->headers, line);
        if (grown == NULL) {
            rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
            goto out;
        }
        c->headers = grown;
    }
    const char *defaults[] = {"Expect:", NULL};
    if (post && !has_ctype) {
        /* What a model POSTs is nearly always JSON; say so unless it said otherwise. */
        const char *b = json_string_value(body);
        while (b != NULL && (*b == ' ' || *b == '\n' || *b == '\t' || *b == '\r'))
            b++;
        defaults[1] = b != NULL && (*b == '{' || *b == '[')
                          ? "Content-Type: application/json"
                          : "Content-Type: text/plain; charset=utf-8";
    }
    for (size_t i = 0; i < 2 && defaults[i] != NULL; i++) {
        struct curl_slist *grown = curl_slist_append(c->headers, defaults[i]);
        if (grown == NULL) {
            rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
            goto out;
        }
        c->headers = grown;
    }

    c->easy = curl_easy_init();
    if (c->easy == NULL) {
        rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
        goto out;
    }
    CURL *x = c->easy;
    CURLcode cr = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (cr == CURLE_OK)                                                                        \
            cr = curl_easy_setopt(x, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_CURLU, c->url);
    SET(CURLOPT_HTTPHEADER, c->headers);
    if (post) {
        const char *b = json_string_value(body);
        size_t blen = body ? json_string_length(body) : 0;
        c->post_body = malloc(blen + 1);
        if (c->post_body == NULL) {
            rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
            goto out;
        }
        if (blen > 0)
            memcpy(c->post_body, b, blen);
        c->post_body[blen] = '\0';
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
        SET(CURLOPT_POSTFIELDS, c->post_body);
    } else {
        SET(CURLOPT_HTTPGET, 1L);
    }
    SET(CURLOPT_PRIVATE, (void *)c);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, c->timeout_ms);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, (void *)c);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, (void *)c);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, (void *)c);
    SET(CURLOPT_ACCEPT_ENCODING, ""); /* decoded bytes count against the cap */
    SET(CURLOPT_USERAGENT, "crewd-tool/" CREWD_VERSION);
    /* A redirect could lead anywhere: the model sees the Location and may ask again, through
     * the same checks. */
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    /* No proxy from the environment (it would be the address connected to, and would see
     * the request), no ~/.netrc credentials, no cookies: nothing of crewd's goes out. */
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
#undef SET
    if (cr != CURLE_OK) {
        rc = err_set(e, ERR_INTERNAL, "%s: libcurl refused an option: %s", c->tool,
                     curl_easy_strerror(cr));
        goto out;
    }
    if (curl_multi_add_handle(r->multi, x) != CURLM_OK) {
        rc = err_set(e, ERR_NOMEM, "%s: cannot start the transfer", c->tool);
        goto out;
    }
    c->in_multi = true;
out:
    curl_free(part);
    return rc;
}

static void run_http(struct tool_call *c, const json_t *args, bool post_allowed)
{
    struct err e = {0};
    if (http_setup(c, args, post_allowed, &e) != 0)
        finish_err(c, &e);
}

/* Appends the arguments to the URL as a query: strings as they are, anything else as its
 * JSON text; both percent-encoded by libcurl. */
static int user_query_url(struct tool_call *c, const struct tool_def *def, const json_t *args,
                          char **out, struct err *e)
{
    int rc = 0;
    char *pair = NULL;
    *out = NULL;
    CURLU *u = curl_url();
    if (u == NULL)
        return err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
    if (curl_url_set(u, CURLUPART_URL, def->url, 0) != CURLUE_OK) {
        rc = err_set(e, ERR_INVALID, "%s: the tool's url is not valid", c->tool);
        goto out;
    }
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)args, k, v)
    {
        char *text = json_is_string(v) ? NULL : json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        const char *val = json_is_string(v) ? json_string_value(v) : text;
        size_t len = strlen(k) + (val ? strlen(val) : 0) + 2;
        pair = malloc(len);
        if (pair == NULL || val == NULL) {
            free(text);
            rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
            goto out;
        }
        snprintf(pair, len, "%s=%s", k, val);
        free(text);
        if (curl_url_set(u, CURLUPART_QUERY, pair, CURLU_APPENDQUERY | CURLU_URLENCODE) !=
            CURLUE_OK) {
            rc = err_set(e, ERR_INVALID, "%s: cannot put argument '%.64s' in the URL", c->tool,
                         k);
            goto out;
        }
        free(pair);
        pair = NULL;
    }
    char *full = NULL;
    if (curl_url_get(u, CURLUPART_URL, &full, 0) != CURLUE_OK || full == NULL) {
        rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
        goto out;
    }
    *out = strdup(full);
    curl_free(full);
    if (*out == NULL)
        rc = err_set(e, ERR_NOMEM, "%s: out of memory", c->tool);
out:
    free(pair);
    curl_url_cleanup(u);
    return rc;
}

/*
 * A user-defined tool (user_tool.h): its request is described as http_request arguments
 * (url, method, the configured headers, the arguments as a JSON body for POST) and goes
 * through http_setup, so the allowlist, the address guard, the header rules and the reply
 * cap are exactly http_request's. Everything taken from `def` is copied now: the registry
 * may replace or remove the tool while the request is in flight.
 */
static void run_user(struct tool_call *c, const struct tool_def *def, const json_t *args)
{
    struct err e = {0};
    char *url = NULL, *body = NULL;
    json_t *req = NULL, *headers = NULL;
    if (def->timeout_ms > 0)
        c->timeout_ms = def->timeout_ms;
    if (def->headers_json != NULL && (headers = json_loads(def->headers_json, 0, NULL)) == NULL) {
        err_set(&e, ERR_INTERNAL, "%s: the tool's headers do not parse", c->tool);
        goto fail;
    }
    if (def->post) {
        body = json_dumps(args, JSON_COMPACT);
        req = json_pack("{s:s, s:s, s:s}", "url", def->url, "method", "POST", "body",
                        body ? body : "{}");
    } else {
        if (user_query_url(c, def, args, &url, &e) != 0)
            goto fail;
        req = json_pack("{s:s, s:s}", "url", url, "method", "GET");
    }
    if (req == NULL || (def->post && body == NULL) ||
        (headers != NULL && json_object_set(req, "headers", headers) != 0)) {
        err_set(&e, ERR_NOMEM, "%s: out of memory", c->tool);
        goto fail;
    }
    if (http_setup(c, req, true, &e) != 0)
        goto fail;
    goto out;
fail:
    finish_err(c, &e);
out:
    free(url);
    free(body);
    json_decref(req);
    json_decref(headers);
}

/* ---- runner ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int tool_runner_new(struct event_base *base, const struct tool_registry *reg,
                    const struct tool_runner_opts *opts, struct tool_runner **out, struct err *e)
{
    int rc = 0;
    struct tool_runner *r = NULL;
    *out = NULL;
    if (base == NULL || reg == NULL) {
        rc = err_set(e, ERR_INVALID, "tool runner: missing loop or registry");
        goto out;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK) {
        rc = err_set(e, ERR_INTERNAL, "tool runner: libcurl failed to initialise");
        goto out;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL)
        goto nomem;
    r->base = base;
    r->reg = reg;
    struct tool_runner_opts o = opts ? *opts : (struct tool_runner_opts){0};
    r->allow_private = o.http_allow_private;
    r->timeout_ms = o.http_timeout_ms > 0 ? o.http_timeout_ms : TOOL_DEF_HTTP_TIMEOUT_MS;
    r->max_bytes = o.http_max_bytes > 0 ? o.http_max_bytes : TOOL_DEF_HTTP_MAX_BYTES;
    if (o.n_http_allow_hosts > 0) {
        r->allow_hosts = calloc(o.n_http_allow_hosts, sizeof *r->allow_hosts);
        if (r->allow_hosts == NULL)
            goto nomem;
        for (size_t i = 0; i < o.n_http_allow_hosts; i++) {
            if (o.http_allow_hosts[i] == NULL)
                continue;
            r->allow_hosts[r->n_allow_hosts] = strdup(o.http_allow_hosts[i]);
            if (r->allow_hosts[r->n_allow_hosts] == NULL)
                goto nomem;
            r->n_allow_hosts++;
        }
    }
    r->multi = curl_multi_init();
    if (r->multi == NULL || curl_loop_init(&r->loop, base, r->multi, drive, r, e) != 0)
        goto nomem;
    /* A reply may ask for up to 128 calls at once, and many agents run together: past these
     * caps libcurl queues transfers instead of opening sockets, so tools can neither use up
     * the process's descriptors nor flood one host. */
    curl_multi_setopt(r->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)RUNNER_MAX_CONNECTIONS);
    curl_multi_setopt(r->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)RUNNER_MAX_HOST_CONNECTIONS);
    *out = r;
    r = NULL;
    goto out;
nomem:
    rc = err_set(e, ERR_NOMEM, "out of memory");
out:
    tool_runner_free(r);
    return rc;
}

void tool_runner_free(struct tool_runner *r)
{
    if (r == NULL)
        return;
    while (r->calls != NULL)
        tool_call_cancel(r->calls);
    if (r->multi != NULL)
        curl_multi_cleanup(r->multi);
    curl_loop_cleanup(&r->loop);
    for (size_t i = 0; i < r->n_allow_hosts; i++)
        free(r->allow_hosts[i]);
    free(r->allow_hosts);
    free(r);
}

size_t tool_runner_active(const struct tool_runner *r)
{
    return r ? r->n_calls : 0;
}

void tool_call_cancel(struct tool_call *c)
{
    if (c == NULL || c->delivering)
        return;
    multi_remove(c);
    call_unlink(c);
    call_free(c);
}

static bool lookup_kind(const char *name, enum tool_kind *kind)
{
    for (size_t i = 0; i < sizeof implementations / sizeof implementations[0]; i++) {
        if (strcmp(implementations[i].name, name) == 0) {
            *kind = implementations[i].kind;
            return true;
        }
    }
    return false;
}

static void run(struct tool_call *c, const char *name, const char *args_json)
{
    struct tool_runner *r = c->runner;
    struct err e = {0};
    json_t *args = NULL;
    const struct tool_def *def = tool_registry_find(r->reg, name);
    enum tool_kind kind = 0;
    if (def == NULL) {
        char q[QUOTE_MAX + 4];
        quote(q, sizeof q, name);
        err_set(&e, ERR_NOT_FOUND, "unknown tool '%s'", q);
        goto fail;
    }
    if (def->origin != TOOL_USER && !lookup_kind(name, &kind)) {
        err_set(&e, ERR_UNSUPPORTED, "tool '%s' has no implementation in this server", name);
        goto fail;
    }
    size_t alen = args_json ? strlen(args_json) : 0;
    while (alen > 0 && (*args_json == ' ' || *args_json == '\n' || *args_json == '\t' ||
                        *args_json == '\r'))
        args_json++, alen--;
    if (alen == 0) {
        args = json_object();
    } else {
        if (alen > TOOL_MAX_ARGS_BYTES) {
            err_set(&e, ERR_TOO_LARGE, "%s: arguments larger than %d bytes", c->tool,
                    TOOL_MAX_ARGS_BYTES);
            goto fail;
        }
        if (json_depth_check(args_json, alen, ARGS_MAX_DEPTH, &e) != 0) {
            err_prefix(&e, "%s: arguments", c->tool);
            goto fail;
        }
        json_error_t je;
        args = json_loadb(args_json, alen, JSON_REJECT_DUPLICATES, &je);
        if (args == NULL) {
            char text[sizeof je.text];
            snprintf(text, sizeof text, "%s", je.text);
            utf8_trim_cut(text);
            err_set(&e, ERR_INVALID, "%s: arguments are not valid JSON: %s (column %d)",
                    c->tool, text, je.column);
            goto fail;
        }
    }
    if (args == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (!json_is_object(args)) {
        err_set(&e, ERR_INVALID, "%s: arguments must be a JSON object", c->tool);
        goto fail;
    }
    if (check_args(def, args, &e) != 0) {
        err_prefix(&e, "%s: arguments", c->tool);
        goto fail;
    }
    if (def->origin == TOOL_USER) {
        run_user(c, def, args);
        json_decref(args);
        return;
    }
    switch (kind) {
    case TOOL_CALCULATOR:
        run_calculator(c, args);
        break;
    case TOOL_DATETIME:
        run_datetime(c, args);
        break;
    case TOOL_HTTP_REQUEST:
        run_http(c, args, true);
        break;
    case TOOL_HTTP_GET:
        run_http(c, args, false);
        break;
    case TOOL_JSON_QUERY:
        run_json_query(c, args);
        break;
    }
    json_decref(args);
    return;
fail:
    json_decref(args);
    finish_err(c, &e);
}

int tool_runner_invoke(struct tool_runner *r, const char *name, const char *args_json,
                       tool_done_cb cb, void *arg, struct tool_call **out, struct err *e)
{
    if (out != NULL)
        *out = NULL;
    if (r == NULL || name == NULL || cb == NULL)
        return err_set(e, ERR_INVALID, "tool runner: missing runner, name or callback");
    struct tool_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    c->done_ev = evtimer_new(r->base, on_done, c);
    if (c->done_ev == NULL) {
        free(c);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    c->runner = r;
    c->timeout_ms = r->timeout_ms;
    c->cb = cb;
    c->arg = arg;
    quote(c->tool, sizeof c->tool, name);
    c->next = r->calls;
    if (r->calls)
        r->calls->prev = c;
    r->calls = c;
    r->n_calls++;
    run(c, name, args_json);
    if (out != NULL)
        *out = c;
    return 0;
}
