/*
 * llm_util.c - helpers every wire shares (wire.h): the byte buffer, the SSE splitter, bounded
 * copies of provider text, reading replies and error bodies, the response/HTTP-request
 * destructors, and the request pieces that do not depend on a wire's JSON shapes (the opening
 * checks and URL, the tools loop, a tool's declaration, system text, arguments as an object).
 * No transport here (the reply accumulator is in llm_stream.c).
 */
#include "llm/wire.h"

#include "core/utf8.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int llm_buf_append(struct llm_buf *b, const char *data, size_t len)
{
    if (b->data != NULL && len <= b->cap - b->len - 1) {
        memcpy(b->data + b->len, data, len);
        b->len += len;
        b->data[b->len] = '\0';
        return 0;
    }
    if (len > SIZE_MAX / 2 - b->len - 1)
        return ERR_NOMEM;
    size_t want = b->len + len + 1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (p == NULL)
        return ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

void llm_buf_reset(struct llm_buf *b)
{
    b->len = 0;
    if (b->data != NULL)
        b->data[0] = '\0';
}

void llm_buf_free(struct llm_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *llm_buf_steal(struct llm_buf *b)
{
    if (b->data == NULL && llm_buf_append(b, "", 0) != 0)
        return NULL;
    char *p = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

size_t llm_copy_bounded(char *buf, size_t cap, const char *s, size_t len, size_t max)
{
    if (cap == 0)
        return 0;
    if (max > cap - 1)
        max = cap - 1;
    size_t n = utf8_prefix_len(s, len, max);
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n;
}

char *llm_strdup(const char *s, bool *failed)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p == NULL) {
        *failed = true;
        return NULL;
    }
    memcpy(p, s, n);
    return p;
}

char *llm_json_strdup(const json_t *v, bool *failed)
{
    return json_is_string(v) ? llm_strdup(json_string_value(v), failed) : NULL;
}

int llm_json_replace(char **slot, const json_t *v)
{
    if (!json_is_string(v))
        return 0;
    bool nomem = false;
    char *p = llm_strdup(json_string_value(v), &nomem);
    if (nomem)
        return ERR_NOMEM;
    free(*slot);
    *slot = p;
    return 0;
}

size_t llm_error_object_message(const json_t *root, char *buf, size_t cap)
{
    const json_t *err = json_object_get(root, "error");
    const json_t *m = json_is_object(err)   ? json_object_get(err, "message")
                      : json_is_string(err) ? err
                                            : json_object_get(root, "message");
    if (!json_is_string(m) || json_string_length(m) == 0)
        return 0;
    return llm_copy_bounded(buf, cap, json_string_value(m), json_string_length(m),
                            LLM_WIRE_ERRMSG_MAX);
}

long llm_json_count(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) >= 0 ? (long)json_integer_value(v) : 0;
}

int llm_error_in(struct err *e, const char *where, const char *msg, size_t len)
{
    return err_set(e, ERR_IO, "error in %s: %s", where, len > 0 ? msg : "(no message)");
}

/* A non-JSON error body: its first line, when it is text and not HTML. */
static size_t error_text_line(const char *body, size_t len, char *buf, size_t cap)
{
    while (len > 0 && (*body == ' ' || *body == '\n' || *body == '\r' || *body == '\t')) {
        body++;
        len--;
    }
    if (len == 0 || *body == '<')
        return 0;
    const char *nl = memchr(body, '\n', len);
    size_t line = nl ? (size_t)(nl - body) : len;
    while (line > 0 && (body[line - 1] == '\r' || body[line - 1] == ' '))
        line--;
    if (line == 0 || !utf8_valid(body, line))
        return 0;
    return llm_copy_bounded(buf, cap, body, line, LLM_WIRE_ERRMSG_MAX);
}

size_t llm_error_body_message(const char *body, size_t len, char *buf, size_t cap,
                              size_t (*message_of)(const json_t *root, char *buf, size_t cap))
{
    if (cap > 0)
        buf[0] = '\0';
    if (body == NULL || len == 0 || cap == 0)
        return 0;
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (root != NULL) {
        size_t n = json_is_object(root) ? message_of(root, buf, cap) : 0;
        json_decref(root);
        return n;
    }
    return error_text_line(body, len, buf, cap);
}

/* memset that the compiler may not drop (the buffer is freed right after). */
static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n-- > 0)
        *v++ = 0;
}

void llm_wire_http_cleanup(struct llm_wire_http *h)
{
    if (h == NULL)
        return;
    free(h->url);
    for (size_t i = 0; i < h->n_headers; i++) {
        if (h->headers[i] != NULL) {
            wipe(h->headers[i], strlen(h->headers[i]));
            free(h->headers[i]);
        }
    }
    free(h->body);
    memset(h, 0, sizeof *h);
}

void llm_response_free(struct llm_response *resp)
{
    if (resp == NULL)
        return;
    free(resp->text);
    free(resp->finish_reason);
    free(resp->model);
    for (size_t i = 0; i < resp->n_tool_calls; i++) {
        free(resp->tool_calls[i].id);
        free(resp->tool_calls[i].name);
        free(resp->tool_calls[i].arguments);
    }
    free(resp->tool_calls);
    free(resp);
}

/* ---- SSE ---- */

void llm_sse_init(struct llm_sse *s, size_t max_line)
{
    memset(s, 0, sizeof *s);
    s->max_line = max_line;
}

void llm_sse_cleanup(struct llm_sse *s)
{
    llm_buf_free(&s->line);
    llm_buf_free(&s->data);
}

static int sse_line(struct llm_sse *s, llm_sse_event_cb cb, void *arg, struct err *e)
{
    const char *line = s->line.data ? s->line.data : "";
    size_t len = s->line.len;
    int rc = 0;

    if (len == 0) {
        if (s->have_data)
            rc = cb(arg, s->event[0] ? s->event : "message", s->data.data ? s->data.data : "",
                    s->data.len, e);
        llm_buf_reset(&s->data);
        s->have_data = false;
        s->event[0] = '\0';
        return rc;
    }
    if (line[0] == ':')
        return 0; /* comment (keep-alive) */

    const char *colon = memchr(line, ':', len);
    size_t flen = colon ? (size_t)(colon - line) : len;
    const char *value = colon ? colon + 1 : line + len;
    if (colon && *value == ' ')
        value++;
    size_t vlen = len - (size_t)(value - line);

    if (flen == 4 && memcmp(line, "data", 4) == 0) {
        if (s->data.len + vlen + 1 > s->max_line)
            return err_set(e, ERR_TOO_LARGE, "stream event longer than %zu bytes", s->max_line);
        if (s->have_data && llm_buf_append(&s->data, "\n", 1) != 0)
            return err_set(e, ERR_NOMEM, "out of memory");
        if (llm_buf_append(&s->data, value, vlen) != 0)
            return err_set(e, ERR_NOMEM, "out of memory");
        s->have_data = true;
    } else if (flen == 5 && memcmp(line, "event", 5) == 0) {
        size_t n = vlen < sizeof s->event - 1 ? vlen : sizeof s->event - 1;
        memcpy(s->event, value, n);
        s->event[n] = '\0';
    }
    return 0;
}

int llm_sse_feed(struct llm_sse *s, const char *buf, size_t len, llm_sse_event_cb cb, void *arg,
                 struct err *e)
{
    size_t i = 0;
    while (i < len) {
        if (s->after_cr) {
            s->after_cr = false;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < len && buf[j] != '\n' && buf[j] != '\r')
            j++;
        if (j > i) {
            if (s->line.len + (j - i) > s->max_line)
                return err_set(e, ERR_TOO_LARGE, "stream line longer than %zu bytes", s->max_line);
            if (llm_buf_append(&s->line, buf + i, j - i) != 0)
                return err_set(e, ERR_NOMEM, "out of memory");
        }
        if (j == len)
            break;
        s->after_cr = buf[j] == '\r';
        int rc = sse_line(s, cb, arg, e);
        llm_buf_reset(&s->line);
        if (rc != 0)
            return rc;
        i = j + 1;
    }
    return 0;
}

json_t *llm_json_string(const char *v, struct err *e, const char *fmt, ...)
{
    if (!utf8_valid(v, strlen(v))) {
        char field[128];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(field, sizeof field, fmt, ap);
        va_end(ap);
        err_set(e, ERR_INVALID, "%s: not valid UTF-8", field);
        return NULL;
    }
    json_t *s = json_string(v);
    if (s == NULL)
        err_set(e, ERR_NOMEM, "out of memory");
    return s;
}

int llm_json_set(json_t *o, const char *key, json_t *v, struct err *e)
{
    if (v == NULL)
        return e->code != 0 ? e->code : err_set(e, ERR_NOMEM, "out of memory");
    if (json_object_set_new(o, key, v) != 0)
        return err_set(e, ERR_NOMEM, "out of memory");
    return 0;
}

bool llm_has_ctl(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    }
    return false;
}

int llm_wire_add_header(struct llm_wire_http *out, const char *name, const char *value)
{
    if (out->n_headers >= LLM_WIRE_MAX_HEADERS)
        return ERR_INTERNAL;
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (h == NULL)
        return ERR_NOMEM;
    snprintf(h, n, "%s: %s", name, value);
    out->headers[out->n_headers++] = h;
    return 0;
}

/* ---- request building ---- */

int llm_wire_prepare(const struct llm_request *req, const char *base_url, struct llm_wire_http *out,
                     struct err *e, ...)
{
    if (req->model == NULL || req->model[0] == '\0')
        return err_set(e, ERR_INVALID, "model: required");
    if (req->n_messages == 0 || req->messages == NULL)
        return err_set(e, ERR_INVALID, "messages: at least one is required");
    if (base_url == NULL || base_url[0] == '\0')
        return err_set(e, ERR_INVALID, "base_url: required");
    if (llm_has_ctl(base_url))
        return err_set(e, ERR_INVALID, "base_url: contains control characters");
    /* A CR or LF in the key would inject header lines; the message must not quote it. */
    if (req->api_key != NULL && llm_has_ctl(req->api_key))
        return err_set(e, ERR_INVALID, "api_key: contains control characters");

    /* Each path part begins with '/': "https://x/v1/" must not give "//". */
    size_t blen = strlen(base_url);
    while (blen > 0 && base_url[blen - 1] == '/')
        blen--;
    struct llm_buf url = {0};
    bool nomem = llm_buf_append(&url, base_url, blen) != 0;
    va_list ap;
    va_start(ap, e);
    for (const char *part = va_arg(ap, const char *); part != NULL && !nomem;
         part = va_arg(ap, const char *))
        nomem = llm_buf_append(&url, part, strlen(part)) != 0;
    va_end(ap);
    out->url = nomem ? NULL : llm_buf_steal(&url);
    llm_buf_free(&url);
    if (out->url == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    return 0;
}

int llm_tools_array(const struct llm_request *req,
                    int (*build_tool)(const struct llm_tool_def *t, size_t i, json_t **out,
                                      struct err *e),
                    json_t **out, struct err *e)
{
    int rc = 0;
    json_t *arr = json_array();
    NOMEM_IF(arr == NULL);
    for (size_t i = 0; i < req->n_tools; i++) {
        json_t *t = NULL;
        TRY(build_tool(&req->tools[i], i, &t, e));
        NOMEM_IF(json_array_append_new(arr, t) != 0);
    }
    *out = arr;
    arr = NULL;
out:
    json_decref(arr);
    return rc;
}

int llm_tool_decl(const struct llm_tool_def *t, size_t i, const char *no_description,
                  const char *schema_key, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *o = json_object();
    NOMEM_IF(o == NULL);
    if (t->name == NULL || t->name[0] == '\0') {
        rc = err_set(e, ERR_INVALID, "tools[%zu].name: required", i);
        goto out;
    }
    TRY(llm_json_set(o, "name", llm_json_string(t->name, e, "tools[%zu].name", i), e));
    const char *description = t->description != NULL ? t->description : no_description;
    if (description != NULL)
        TRY(llm_json_set(o, "description",
                         llm_json_string(description, e, "tools[%zu].description", i), e));
    if (t->parameters != NULL) {
        if (!json_is_object(t->parameters)) {
            rc = err_set(e, ERR_INVALID, "tools[%zu].parameters: must be an object", i);
            goto out;
        }
        /* Borrowed: the body is serialized before build returns, so a reference (not a deep
         * copy) is enough; the caller's object is never modified. */
        NOMEM_IF(json_object_set(o, schema_key, (json_t *)t->parameters) != 0);
    }
    *out = o;
    o = NULL;
out:
    json_decref(o);
    return rc;
}

int llm_tool_call_check(const struct llm_tool_call *tc, size_t i, size_t k, struct err *e)
{
    if (tc->id == NULL || tc->name == NULL)
        return err_set(e, ERR_INVALID, "messages[%zu].tool_calls[%zu]: id and name required", i, k);
    /* Checked before parsing: llm_tool_args may put the text in a JSON string. */
    if (tc->arguments != NULL && !utf8_valid(tc->arguments, strlen(tc->arguments)))
        return err_set(e, ERR_INVALID, "messages[%zu].tool_calls[%zu].arguments: not valid UTF-8",
                       i, k);
    return 0;
}

json_t *llm_tool_args(const char *args)
{
    if (args == NULL)
        return json_object();
    const char *p = args;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p == '\0')
        return json_object();
    json_error_t je;
    json_t *v = json_loads(args, 0, &je);
    if (json_is_object(v))
        return v;
    json_decref(v);
    return json_pack("{s:s}", "_raw", args);
}

int llm_system_append(struct llm_buf *system, const struct llm_message *m, size_t i, struct err *e)
{
    if (m->content == NULL)
        return err_set(e, ERR_INVALID, "messages[%zu].content: required", i);
    if (!utf8_valid(m->content, strlen(m->content)))
        return err_set(e, ERR_INVALID, "messages[%zu].content: not valid UTF-8", i);
    if ((system->len > 0 && llm_buf_append(system, "\n\n", 2) != 0) ||
        llm_buf_append(system, m->content, strlen(m->content)) != 0)
        return err_set(e, ERR_NOMEM, "out of memory");
    return 0;
}
