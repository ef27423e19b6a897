/*
 * reply.c - what a chat completion request asks for and what the fake answers: validation of
 * the body, the [[fake:NAME=VALUE]] directives, the FNV-1a hash that makes default replies
 * deterministic, and the chat.completion / chat.completion.chunk documents.
 *
 * Pure functions over jansson values: no libevent, no clock, no randomness, so that the same
 * request always yields the same text (tests compute the expected text themselves; see
 * fakellm/README.md for the exact rules).
 */
#include "fakellm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

#define DIRECTIVE_OPEN "[[fake:"
#define DIRECTIVE_CLOSE "]]"
#define EXCERPT_MAX_BYTES 60
#define STREAM_PIECE_BYTES 8

#define FNV64_OFFSET 0xcbf29ce484222325ULL
#define FNV64_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= FNV64_PRIME;
    }
    return h;
}

/* A growable byte string; every append keeps a NUL after the bytes. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t len)
{
    if (b->oom)
        return;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
}

/* The text of a message's content: the string itself, or the concatenation of the "text"
 * of the text parts of an array; "" for null or anything else. */
static void content_text(json_t *msg, struct sbuf *out)
{
    json_t *c = json_object_get(msg, "content");
    sb_add(out, "", 0);
    if (json_is_string(c)) {
        sb_add(out, json_string_value(c), json_string_length(c));
        return;
    }
    if (!json_is_array(c))
        return;
    size_t i;
    json_t *part;
    json_array_foreach(c, i, part)
    {
        json_t *type = json_object_get(part, "type");
        json_t *text = json_object_get(part, "text");
        if (json_is_string(type) && strcmp(json_string_value(type), "text") == 0 &&
            json_is_string(text))
            sb_add(out, json_string_value(text), json_string_length(text));
    }
}

/* memmem is a GNU extension; the build is strict POSIX. */
static const char *find(const char *hay, size_t hay_len, const char *needle, size_t n)
{
    if (n == 0 || hay_len < n)
        return NULL;
    for (size_t i = 0; i + n <= hay_len; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, n) == 0)
            return hay + i;
    return NULL;
}

static char *dup_range(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* A non-negative decimal that fits in int64; false otherwise. */
static bool parse_count(const char *s, size_t len, int64_t *out)
{
    if (len == 0 || len > 18)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

/* Applies one directive. Single-valued directives: the last one seen wins (messages are
 * scanned in order, so a later message overrides an earlier one). */
static int apply_directive(struct fake_directives *d, const char *whole, size_t whole_len,
                           const char *name, size_t name_len, const char *val, size_t val_len,
                           char *err, size_t err_len)
{
#define IS(lit) (name_len == sizeof(lit) - 1 && memcmp(name, lit, name_len) == 0)
    int64_t n;
    if (IS("reply")) {
        char *t = dup_range(val, val_len);
        if (t == NULL)
            goto oom;
        free(d->reply);
        d->reply = t;
    } else if (IS("reply_seq")) {
        char *t = dup_range(whole, whole_len);
        if (t == NULL)
            goto oom;
        free(d->reply_seq);
        d->reply_seq = t;
        d->reply_seq_value = t + (val - whole);
        d->reply_seq_value_len = val_len;
    } else if (IS("status")) {
        if (!parse_count(val, val_len, &n) || n < 400 || n > 599) {
            snprintf(err, err_len, "fake directive status: expected a code from 400 to 599");
            return -1;
        }
        d->status = (int)n;
    } else if (IS("retry_after_ms")) {
        if (!parse_count(val, val_len, &n)) {
            snprintf(err, err_len, "fake directive retry_after_ms: expected milliseconds");
            return -1;
        }
        d->retry_after_ms = n;
    } else if (IS("fail_times")) {
        if (!parse_count(val, val_len, &n)) {
            snprintf(err, err_len, "fake directive fail_times: expected a count");
            return -1;
        }
        char *t = dup_range(whole, whole_len);
        if (t == NULL)
            goto oom;
        free(d->fail_times_text);
        d->fail_times_text = t;
        d->fail_times = n;
    } else if (IS("delay_ms")) {
        if (!parse_count(val, val_len, &n) || n > 3600 * 1000) {
            snprintf(err, err_len, "fake directive delay_ms: expected 0 to 3600000");
            return -1;
        }
        d->delay_ms = n;
    } else if (IS("tool")) {
        const char *colon = memchr(val, ':', val_len);
        if (colon == NULL || colon == val) {
            snprintf(err, err_len, "fake directive tool: expected NAME:ARGS_JSON");
            return -1;
        }
        if (d->n_tools == FAKE_MAX_TOOLS) {
            snprintf(err, err_len, "fake directive tool: at most %d tools", FAKE_MAX_TOOLS);
            return -1;
        }
        struct fake_tool *t = &d->tools[d->n_tools];
        t->name = dup_range(val, (size_t)(colon - val));
        t->args = dup_range(colon + 1, val_len - (size_t)(colon + 1 - val));
        d->n_tools++;
        if (t->name == NULL || t->args == NULL)
            goto oom;
    } else {
        /* At most 40 bytes of the name, not ending inside a character: the message goes
         * back in a JSON error body, which jansson refuses to build from broken UTF-8. */
        int shown = (int)utf8_prefix_len(name, name_len, 40);
        snprintf(err, err_len, "unknown fake directive '%.*s'", shown, name);
        utf8_trim_cut(err);
        return -1;
    }
    return 0;
oom:
    snprintf(err, err_len, "out of memory");
    return -1;
#undef IS
}

/* Finds every [[fake:NAME=VALUE]] in `text` (VALUE runs to the first "]]"). */
static int scan_directives(struct fake_directives *d, const char *text, size_t len, char *err,
                           size_t err_len)
{
    const size_t open_len = sizeof(DIRECTIVE_OPEN) - 1;
    size_t pos = 0;
    while (pos < len) {
        const char *start = find(text + pos, len - pos, DIRECTIVE_OPEN, open_len);
        if (start == NULL)
            break;
        const char *name = start + open_len;
        const char *end = find(name, (size_t)(text + len - name), DIRECTIVE_CLOSE, 2);
        if (end == NULL)
            break;
        const char *eq = memchr(name, '=', (size_t)(end - name));
        if (eq == NULL) {
            snprintf(err, err_len, "fake directive without '=': expected [[fake:NAME=VALUE]]");
            return -1;
        }
        if (apply_directive(d, start, (size_t)(end + 2 - start), name, (size_t)(eq - name), eq + 1,
                            (size_t)(end - eq - 1), err, err_len) < 0)
            return -1;
        pos = (size_t)(end + 2 - text);
    }
    return 0;
}

/* The excerpt of the default reply: directives removed, CR and LF made spaces, trimmed, cut
 * to 60 bytes without splitting a character, trailing spaces of the cut removed. */
static char *make_excerpt(const char *text, size_t len)
{
    struct sbuf b = {0};
    const size_t open_len = sizeof(DIRECTIVE_OPEN) - 1;
    size_t pos = 0;
    sb_add(&b, "", 0);
    while (pos < len) {
        const char *start = find(text + pos, len - pos, DIRECTIVE_OPEN, open_len);
        const char *end = start ? find(start + open_len, (size_t)(text + len - start) - open_len,
                                       DIRECTIVE_CLOSE, 2)
                                : NULL;
        if (start == NULL || end == NULL) {
            sb_add(&b, text + pos, len - pos);
            break;
        }
        sb_add(&b, text + pos, (size_t)(start - (text + pos)));
        pos = (size_t)(end + 2 - text);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    for (size_t i = 0; i < b.len; i++)
        if (b.p[i] == '\n' || b.p[i] == '\r')
            b.p[i] = ' ';
    size_t s = 0, e = b.len;
    while (s < e && b.p[s] == ' ')
        s++;
    while (e > s && b.p[e - 1] == ' ')
        e--;
    e = s + utf8_prefix_len(b.p + s, e - s, EXCERPT_MAX_BYTES);
    while (e > s && b.p[e - 1] == ' ')
        e--;
    char *out = dup_range(b.p + s, e - s);
    free(b.p);
    return out;
}

void fake_conv_add(struct fake_conv *c, const char *role, size_t role_len)
{
    if (c->oom)
        return;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        struct fake_msg *m = realloc(c->m, cap * sizeof *m);
        if (m == NULL) {
            c->oom = true;
            return;
        }
        c->m = m;
        c->cap = cap;
    }
    struct fake_msg *m = &c->m[c->n];
    m->role = dup_range(role, role_len);
    m->role_len = role_len;
    m->text = dup_range("", 0);
    m->len = 0;
    c->n++;
    if (m->role == NULL || m->text == NULL)
        c->oom = true;
}

void fake_conv_append(struct fake_conv *c, const char *s, size_t len)
{
    if (c->oom || c->n == 0 || len == 0)
        return;
    struct fake_msg *m = &c->m[c->n - 1];
    char *t = realloc(m->text, m->len + len + 1);
    if (t == NULL) {
        c->oom = true;
        return;
    }
    memcpy(t + m->len, s, len);
    m->len += len;
    t[m->len] = '\0';
    m->text = t;
}

void fake_conv_free(struct fake_conv *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->m[i].role);
        free(c->m[i].text);
    }
    free(c->m);
    memset(c, 0, sizeof *c);
}

void fake_chat_input_init(struct fake_chat_input *in)
{
    memset(in, 0, sizeof *in);
    in->wire = FAKE_WIRE_OPENAI;
    in->d.retry_after_ms = -1;
    in->d.fail_times = -1;
    in->d.delay_ms = -1;
}

int fake_chat_input_from_conv(const struct fake_conv *c, struct fake_chat_input *in, char *err,
                              size_t err_len)
{
    struct sbuf results = {0};
    int rc = -1;
    if (c->oom) {
        snprintf(err, err_len, "out of memory");
        return -1;
    }
    uint64_t h = FNV64_OFFSET;
    size_t last_user = SIZE_MAX, last_assistant = SIZE_MAX;
    in->content_bytes = 0;
    for (size_t i = 0; i < c->n; i++) {
        const struct fake_msg *m = &c->m[i];
        h = fnv1a(h, m->role, m->role_len);
        h = fnv1a(h, "\n", 1);
        h = fnv1a(h, m->text, m->len);
        h = fnv1a(h, "\n", 1);
        in->content_bytes += m->len;
        if (scan_directives(&in->d, m->text, m->len, err, err_len) < 0)
            goto out;
        if (strcmp(m->role, "user") == 0)
            last_user = i;
        else if (strcmp(m->role, "assistant") == 0)
            last_assistant = i;
        else if (strcmp(m->role, "tool") == 0)
            in->has_tool_message = true;
    }
    in->hash = h;

    free(in->excerpt);
    in->excerpt = last_user != SIZE_MAX ? make_excerpt(c->m[last_user].text, c->m[last_user].len)
                                        : dup_range("", 0);
    if (in->excerpt == NULL) {
        snprintf(err, err_len, "out of memory");
        goto out;
    }

    /* Tool results: the tool messages that answer the last assistant turn. */
    size_t first = last_assistant == SIZE_MAX ? 0 : last_assistant + 1;
    bool any = false;
    for (size_t i = first; i < c->n; i++) {
        if (strcmp(c->m[i].role, "tool") != 0)
            continue;
        if (any)
            sb_add(&results, " | ", 3);
        sb_add(&results, c->m[i].text, c->m[i].len);
        any = true;
    }
    if (any) {
        if (results.oom) {
            snprintf(err, err_len, "out of memory");
            goto out;
        }
        free(in->tool_results);
        in->tool_results = results.p;
        results.p = NULL;
    }
    rc = 0;
out:
    free(results.p);
    return rc;
}

int fake_chat_input_parse(json_t *body, struct fake_chat_input *in, char *err, size_t err_len)
{
    fake_chat_input_init(in);
    int rc = -1;
    struct sbuf text = {0};
    struct fake_conv conv = {0};

    if (!json_is_object(body)) {
        snprintf(err, err_len, "the body must be a JSON object");
        goto out;
    }
    json_t *model = json_object_get(body, "model");
    if (!json_is_string(model)) {
        snprintf(err, err_len, "'model' is required and must be a string");
        goto out;
    }
    in->model = json_string_value(model);
    json_t *messages = json_object_get(body, "messages");
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        snprintf(err, err_len, "'messages' is required and must be a non-empty array");
        goto out;
    }
    size_t i;
    json_t *msg;
    json_array_foreach(messages, i, msg)
    {
        if (!json_is_object(msg) || !json_is_string(json_object_get(msg, "role"))) {
            snprintf(err, err_len, "messages[%zu] must be an object with a string 'role'", i);
            goto out;
        }
    }
    in->stream = json_is_true(json_object_get(body, "stream"));
    json_t *choice = json_object_get(body, "tool_choice");
    in->tools_forbidden = json_is_string(choice) && strcmp(json_string_value(choice), "none") == 0;
    in->include_usage =
        json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));

    /* OpenAI's roles go in as sent; the content is its string or its text parts. */
    json_array_foreach(messages, i, msg)
    {
        json_t *role = json_object_get(msg, "role");
        text.len = 0;
        content_text(msg, &text);
        fake_conv_add(&conv, json_string_value(role), json_string_length(role));
        fake_conv_append(&conv, text.p ? text.p : "", text.len);
        if (text.oom)
            conv.oom = true;
    }
    rc = fake_chat_input_from_conv(&conv, in, err, err_len);
out:
    free(text.p);
    fake_conv_free(&conv);
    return rc;
}

int fake_tools_need_objects(const struct fake_chat_input *in, char *err, size_t err_len)
{
    for (size_t i = 0; i < in->d.n_tools; i++) {
        json_t *o = fake_tool_args_object(&in->d.tools[i]);
        if (o == NULL) {
            int shown = (int)utf8_prefix_len(in->d.tools[i].name, strlen(in->d.tools[i].name), 40);
            snprintf(err, err_len,
                     "fake directive tool %.*s: ARGS_JSON must be a JSON object on this wire",
                     shown, in->d.tools[i].name);
            utf8_trim_cut(err);
            return -1;
        }
        json_decref(o);
    }
    return 0;
}

json_t *fake_tool_args_object(const struct fake_tool *t)
{
    size_t len = strlen(t->args);
    size_t k = 0;
    while (k < len && (t->args[k] == ' ' || t->args[k] == '\t' || t->args[k] == '\n' ||
                       t->args[k] == '\r'))
        k++;
    if (k == len)
        return json_object();
    json_t *o = json_loadb(t->args, len, JSON_DECODE_ANY, NULL);
    if (!json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

size_t fake_stream_piece(const char *s, size_t len)
{
    size_t n = utf8_prefix_len(s, len, STREAM_PIECE_BYTES);
    return n ? n : len; /* 0 cannot happen for valid UTF-8; guards the callers' loops */
}

void fake_chat_input_cleanup(struct fake_chat_input *in)
{
    free(in->excerpt);
    free(in->tool_results);
    free(in->d.reply);
    free(in->d.reply_seq);
    free(in->d.fail_times_text);
    for (size_t i = 0; i < in->d.n_tools; i++) {
        free(in->d.tools[i].name);
        free(in->d.tools[i].args);
    }
    memset(in, 0, sizeof *in);
}

char *fake_default_text(const struct fake_chat_input *in)
{
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)in->hash);
    size_t n = strlen(in->excerpt) + 32;
    char *t = malloc(n);
    if (t != NULL)
        snprintf(t, n, "fake-reply %.8s: %s", hex, in->excerpt);
    return t;
}

uint64_t fake_tokens(size_t len)
{
    uint64_t t = ((uint64_t)len + 3) / 4;
    return t ? t : 1;
}

static json_t *usage_json(const struct fake_reply *r)
{
    return json_pack("{sIsIsI}", "prompt_tokens", (json_int_t)r->prompt_tokens, "completion_tokens",
                     (json_int_t)r->completion_tokens, "total_tokens",
                     (json_int_t)(r->prompt_tokens + r->completion_tokens));
}

static json_t *tool_call_json(const struct fake_reply *r, size_t i)
{
    char id[64];
    snprintf(id, sizeof id, "call_fake_%llu_%zu", (unsigned long long)r->n, i);
    return json_pack("{sssss{ssss}}", "id", id, "type", "function", "function", "name",
                     r->tools[i].name, "arguments", r->tools[i].args);
}

static void completion_id(const struct fake_reply *r, char id[64])
{
    snprintf(id, 64, "chatcmpl-fake-%llu", (unsigned long long)r->n);
}

json_t *fake_reply_json(const struct fake_reply *r)
{
    char id[64];
    completion_id(r, id);
    json_t *message;
    const char *finish;
    if (r->text != NULL) {
        message = json_pack("{sssssn}", "role", "assistant", "content", r->text, "refusal");
        finish = "stop";
    } else {
        json_t *calls = json_array();
        for (size_t i = 0; calls != NULL && i < r->n_tools; i++)
            json_array_append_new(calls, tool_call_json(r, i));
        message =
            json_pack("{sssnsnso}", "role", "assistant", "content", "refusal", "tool_calls", calls);
        finish = "tool_calls";
    }
    return json_pack("{sssssIsss[{sisosnss}]so}", "id", id, "object", "chat.completion", "created",
                     (json_int_t)r->created_s, "model", r->model, "choices", "index", 0, "message",
                     message, "logprobs", "finish_reason", finish, "usage", usage_json(r));
}

static json_t *chunk(const struct fake_reply *r, json_t *delta, const char *finish)
{
    char id[64];
    completion_id(r, id);
    return json_pack("{sssssIsss[{sisosnss?}]}", "id", id, "object", "chat.completion.chunk",
                     "created", (json_int_t)r->created_s, "model", r->model, "choices", "index", 0,
                     "delta", delta, "logprobs", "finish_reason", finish);
}

/* Appends to `chunks`; false when out of memory (json_array_append_new frees on failure). */
static bool push(json_t *chunks, json_t *c)
{
    return c != NULL && json_array_append_new(chunks, c) == 0;
}

json_t *fake_reply_chunks(const struct fake_reply *r, bool include_usage)
{
    json_t *chunks = json_array();
    if (chunks == NULL)
        return NULL;
    bool ok = true;
    if (r->text != NULL) {
        /* As recorded from the live API: the role with an empty content first, then the
         * text in small pieces, then an empty delta carrying finish_reason. */
        ok = push(
            chunks,
            chunk(r, json_pack("{sssssn}", "role", "assistant", "content", "", "refusal"), NULL));
        size_t len = strlen(r->text), pos = 0;
        while (ok && pos < len) {
            size_t n = utf8_prefix_len(r->text + pos, len - pos, STREAM_PIECE_BYTES);
            if (n == 0) /* cannot happen for valid UTF-8; guards the loop */
                n = len - pos;
            ok = push(chunks, chunk(r, json_pack("{ss%}", "content", r->text + pos, n), NULL));
            pos += n;
        }
        ok = ok && push(chunks, chunk(r, json_object(), "stop"));
    } else {
        /* As the parallel tool call recording: the role, then per call one chunk with the id
         * and name and empty arguments, then the arguments in fragments, by index. */
        ok = push(chunks, chunk(r, json_pack("{sssn}", "role", "assistant", "content"), NULL));
        for (size_t i = 0; ok && i < r->n_tools; i++) {
            char id[64];
            snprintf(id, sizeof id, "call_fake_%llu_%zu", (unsigned long long)r->n, i);
            ok = push(chunks, chunk(r,
                                    json_pack("{s[{sisssss{ssss}}]}", "tool_calls", "index", (int)i,
                                              "id", id, "type", "function", "function", "name",
                                              r->tools[i].name, "arguments", ""),
                                    NULL));
            const char *a = r->tools[i].args;
            size_t len = strlen(a), pos = 0;
            while (ok && pos < len) {
                size_t n = utf8_prefix_len(a + pos, len - pos, STREAM_PIECE_BYTES);
                if (n == 0)
                    n = len - pos;
                ok = push(chunks, chunk(r,
                                        json_pack("{s[{sis{ss%}}]}", "tool_calls", "index", (int)i,
                                                  "function", "arguments", a + pos, n),
                                        NULL));
                pos += n;
            }
        }
        ok = ok && push(chunks, chunk(r, json_object(), "tool_calls"));
    }
    if (ok && include_usage) {
        char id[64];
        completion_id(r, id);
        ok = push(chunks, json_pack("{sssssIsss[]so}", "id", id, "object", "chat.completion.chunk",
                                    "created", (json_int_t)r->created_s, "model", r->model,
                                    "choices", "usage", usage_json(r)));
    }
    if (!ok) {
        json_decref(chunks);
        return NULL;
    }
    return chunks;
}
