/*
 * llm_openai.c - the OpenAI Chat Completions wire (POST {base_url}/chat/completions), used
 * for the providers openai, groq and ollama and for any OpenAI-compatible base_url.
 *
 * Reference shapes: tests/fixtures/openai/ (copied from the published OpenAPI spec, its
 * examples and streams recorded by the official SDK). Choices made here:
 * - system turns go out with role "system", not "developer": every OpenAI-compatible server
 *   knows "system" and OpenAI maps it to "developer" for the models that want that.
 * - the output cap goes out as "max_tokens". OpenAI's newer name is max_completion_tokens
 *   (and its reasoning models refuse max_tokens), but groq, ollama and most compatible servers
 *   only know max_tokens; a per-model switch can come when an agent needs it.
 * - streaming asks for stream_options.include_usage so a streamed call is billed like any.
 * - only choices[0] is read (crewd never asks for n > 1).
 * Everything here is pure: bytes in, structs out; llm.c does the transport.
 */
#include "llm/wire.h"

#include "core/json_text.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAT_PATH "/chat/completions"

/* ---- request ---- */

static const char *role_name(enum llm_role role)
{
    switch (role) {
    case LLM_ROLE_SYSTEM:
        return "system";
    case LLM_ROLE_USER:
        return "user";
    case LLM_ROLE_ASSISTANT:
        return "assistant";
    case LLM_ROLE_TOOL:
        return "tool";
    }
    return NULL;
}

static int build_message(const struct llm_message *m, size_t i, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *o = json_object(), *calls = NULL;
    NOMEM_IF(o == NULL);
    const char *role = role_name(m->role);
    if (role == NULL) {
        rc = err_set(e, ERR_INVALID, "messages[%zu].role: unknown", i);
        goto out;
    }
    NOMEM_IF(json_object_set_new(o, "role", json_string(role)) != 0);

    if (m->content != NULL) {
        TRY(llm_json_set(o, "content", llm_json_string(m->content, e, "messages[%zu].content", i),
                         e));
    } else if (m->role == LLM_ROLE_ASSISTANT) {
        NOMEM_IF(json_object_set_new(o, "content", json_null()) != 0);
    } else if (m->role == LLM_ROLE_TOOL) {
        NOMEM_IF(json_object_set_new(o, "content", json_string("")) != 0);
    } else {
        rc = err_set(e, ERR_INVALID, "messages[%zu].content: required", i);
        goto out;
    }

    if (m->role == LLM_ROLE_ASSISTANT && m->n_tool_calls > 0) {
        calls = json_array();
        NOMEM_IF(calls == NULL);
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            const struct llm_tool_call *tc = &m->tool_calls[k];
            json_t *c = json_object(), *fn = NULL;
            NOMEM_IF(c == NULL || json_array_append_new(calls, c) != 0); /* steals c */
            NOMEM_IF(json_object_set_new(c, "id", json_null()) != 0);    /* keeps key order */
            NOMEM_IF(json_object_set_new(c, "type", json_string("function")) != 0);
            fn = json_object();
            NOMEM_IF(fn == NULL || json_object_set_new(c, "function", fn) != 0);
            if (tc->id == NULL || tc->name == NULL) {
                rc = err_set(e, ERR_INVALID, "messages[%zu].tool_calls[%zu]: id and name required",
                             i, k);
                goto out;
            }
            TRY(llm_json_set(
                c, "id", llm_json_string(tc->id, e, "messages[%zu].tool_calls[%zu].id", i, k), e));
            TRY(llm_json_set(
                fn, "name",
                llm_json_string(tc->name, e, "messages[%zu].tool_calls[%zu].name", i, k), e));
            TRY(llm_json_set(fn, "arguments",
                             llm_json_string(tc->arguments ? tc->arguments : "{}", e,
                                             "messages[%zu].tool_calls[%zu].arguments", i, k),
                             e));
        }
        int set = json_object_set_new(o, "tool_calls", calls); /* steals calls */
        calls = NULL;
        NOMEM_IF(set != 0);
    }

    if (m->role == LLM_ROLE_TOOL) {
        if (m->tool_call_id == NULL) {
            rc = err_set(e, ERR_INVALID, "messages[%zu].tool_call_id: required", i);
            goto out;
        }
        TRY(llm_json_set(o, "tool_call_id",
                         llm_json_string(m->tool_call_id, e, "messages[%zu].tool_call_id", i), e));
    }
    *out = o;
    o = NULL;
out:
    json_decref(calls);
    json_decref(o);
    return rc;
}

/* {"type": "function", "function": {name, description, parameters}} */
static int build_tool(const struct llm_tool_def *t, size_t i, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *o = NULL, *fn = NULL;
    TRY(llm_tool_decl(t, i, NULL, "parameters", &fn, e));
    o = json_object();
    NOMEM_IF(o == NULL);
    NOMEM_IF(json_object_set_new(o, "type", json_string("function")) != 0);
    int set = json_object_set_new(o, "function", fn); /* steals fn */
    fn = NULL;
    NOMEM_IF(set != 0);
    *out = o;
    o = NULL;
out:
    json_decref(fn);
    json_decref(o);
    return rc;
}

static int openai_build(const struct llm_request *req, const char *base_url,
                        struct llm_wire_http *out, struct err *e)
{
    int rc = 0;
    json_t *body = NULL, *arr = NULL;
    memset(out, 0, sizeof *out);

    TRY(llm_wire_prepare(req, base_url, out, e, CHAT_PATH, NULL));

    NOMEM_IF(llm_wire_add_header(out, "Content-Type", "application/json") != 0);
    if (req->api_key != NULL && req->api_key[0] != '\0') {
        /* Written in place: a "Bearer <key>" value for llm_wire_add_header would be one more
         * copy of the key to wipe. */
        size_t n = strlen(req->api_key) + sizeof "Authorization: Bearer ";
        char *h = malloc(n);
        NOMEM_IF(h == NULL);
        snprintf(h, n, "Authorization: Bearer %s", req->api_key);
        out->headers[out->n_headers++] = h;
    }

    body = json_object();
    NOMEM_IF(body == NULL);
    TRY(llm_json_set(body, "model", llm_json_string(req->model, e, "model"), e));

    arr = json_array();
    NOMEM_IF(arr == NULL);
    for (size_t i = 0; i < req->n_messages; i++) {
        json_t *m = NULL;
        TRY(build_message(&req->messages[i], i, &m, e));
        NOMEM_IF(json_array_append_new(arr, m) != 0);
    }
    int set = json_object_set_new(body, "messages", arr); /* steals arr */
    arr = NULL;
    NOMEM_IF(set != 0);

    if (req->n_tools > 0) {
        TRY(llm_tools_array(req, build_tool, &arr, e));
        set = json_object_set_new(body, "tools", arr);
        arr = NULL;
        NOMEM_IF(set != 0);
        if (req->tools_forbidden)
            NOMEM_IF(json_object_set_new(body, "tool_choice", json_string("none")) != 0);
    }
    if (req->temperature >= 0)
        NOMEM_IF(json_object_set_new(body, "temperature", json_real(req->temperature)) != 0);
    if (req->max_tokens > 0)
        NOMEM_IF(json_object_set_new(body, "max_tokens", json_integer(req->max_tokens)) != 0);
    if (req->stream) {
        NOMEM_IF(json_object_set_new(body, "stream", json_true()) != 0);
        NOMEM_IF(json_object_set_new(body, "stream_options",
                                     json_pack("{s:b}", "include_usage", 1)) != 0);
    }
    out->body = json_dumps(body, JSON_TEXT_FLAGS);
    NOMEM_IF(out->body == NULL);
    out->body_len = strlen(out->body);
out:
    json_decref(arr);
    json_decref(body);
    if (rc != 0)
        llm_wire_http_cleanup(out);
    return rc;
}

/* ---- reply ---- */

static long int_field(const json_t *o, const char *key)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long)json_integer_value(v) : 0;
}

static void parse_usage(const json_t *u, struct llm_usage *out)
{
    if (!json_is_object(u))
        return;
    out->prompt_tokens = int_field(u, "prompt_tokens");
    out->completion_tokens = int_field(u, "completion_tokens");
    out->total_tokens = int_field(u, "total_tokens");
    out->cached_tokens = int_field(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    out->reasoning_tokens =
        int_field(json_object_get(u, "completion_tokens_details"), "reasoning_tokens");
}

/* The message of an {"error": ...} value: {"message": "..."} (OpenAI) or a bare string
 * (some compatible servers). */
static size_t error_value_message(const json_t *err, char *buf, size_t cap)
{
    const json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;
    if (!json_is_string(m) || json_string_length(m) == 0)
        return 0;
    return llm_copy_bounded(buf, cap, json_string_value(m), json_string_length(m),
                            LLM_WIRE_ERRMSG_MAX);
}

/* Arguments are a JSON string in OpenAI's replies; a few compatible servers send an object. */
static char *arguments_text(const json_t *v, bool *failed)
{
    if (json_is_string(v))
        return llm_strdup(json_string_value(v), failed);
    if (json_is_object(v)) {
        char *s = json_dumps(v, JSON_TEXT_FLAGS);
        if (s == NULL)
            *failed = true;
        return s;
    }
    return llm_strdup("{}", failed);
}

static int openai_parse_reply(const char *body, size_t len, struct llm_response **out,
                              struct err *e)
{
    int rc = 0;
    bool nomem = false;
    json_error_t je;
    struct llm_response *r = NULL;
    *out = NULL;

    json_t *root = json_loadb(body, len, 0, &je);
    if (!json_is_object(root)) {
        rc = err_set(e, ERR_INVALID, "reply is not valid JSON");
        goto out;
    }
    const json_t *errv = json_object_get(root, "error");
    if (errv != NULL && !json_is_null(errv)) {
        char msg[LLM_WIRE_ERRMSG_MAX + 1];
        rc = llm_error_in(e, "reply", msg, error_value_message(errv, msg, sizeof msg));
        goto out;
    }
    const json_t *choices = json_object_get(root, "choices");
    const json_t *choice = json_array_get(choices, 0);
    const json_t *msg = json_object_get(choice, "message");
    if (!json_is_object(msg)) {
        rc = err_set(e, ERR_INVALID, "reply has no choices[0].message");
        goto out;
    }
    const json_t *content = json_object_get(msg, "content");
    if (content != NULL && !json_is_null(content) && !json_is_string(content)) {
        rc = err_set(e, ERR_INVALID, "reply: choices[0].message.content is not a string");
        goto out;
    }

    r = calloc(1, sizeof *r);
    NOMEM_IF(r == NULL);
    r->text = llm_strdup(json_is_string(content) ? json_string_value(content) : "", &nomem);
    r->finish_reason = llm_json_strdup(json_object_get(choice, "finish_reason"), &nomem);
    r->model = llm_json_strdup(json_object_get(root, "model"), &nomem);
    NOMEM_IF(nomem);
    parse_usage(json_object_get(root, "usage"), &r->usage);

    const json_t *calls = json_object_get(msg, "tool_calls");
    if (json_is_array(calls) && json_array_size(calls) > 0) {
        size_t n = json_array_size(calls);
        /* The streamed reply's cap: each call may start a tool (an HTTP request) at once. */
        if (n > LLM_STREAM_MAX_TOOL_CALLS) {
            rc = err_set(e, ERR_INVALID, "reply has more than %d tool calls",
                         LLM_STREAM_MAX_TOOL_CALLS);
            goto out;
        }
        r->tool_calls = calloc(n, sizeof *r->tool_calls);
        NOMEM_IF(r->tool_calls == NULL);
        for (size_t i = 0; i < n; i++) {
            const json_t *c = json_array_get(calls, i);
            const json_t *fn = json_object_get(c, "function");
            const json_t *name = json_object_get(fn, "name");
            if (!json_is_string(name)) {
                rc = err_set(e, ERR_INVALID, "reply: tool_calls[%zu].function.name missing", i);
                goto out;
            }
            struct llm_tool_call *tc = &r->tool_calls[r->n_tool_calls++];
            const json_t *id = json_object_get(c, "id");
            if (json_is_string(id)) {
                tc->id = llm_strdup(json_string_value(id), &nomem);
            } else {
                char synth[32];
                snprintf(synth, sizeof synth, "call_%zu", i);
                tc->id = llm_strdup(synth, &nomem);
            }
            tc->name = llm_strdup(json_string_value(name), &nomem);
            tc->arguments = arguments_text(json_object_get(fn, "arguments"), &nomem);
            NOMEM_IF(nomem);
        }
    }
    *out = r;
    r = NULL;
out:
    llm_response_free(r);
    json_decref(root);
    return rc;
}

/* {"error": ...}, else a bare {"message": "..."}. */
static size_t root_message(const json_t *root, char *buf, size_t cap)
{
    size_t n = error_value_message(json_object_get(root, "error"), buf, cap);
    return n > 0 ? n : error_value_message(root, buf, cap);
}

static size_t openai_error_message(const char *body, size_t len, char *buf, size_t cap)
{
    return llm_error_body_message(body, len, buf, cap, root_message);
}

/* ---- stream ---- */

struct llm_stream {
    struct llm_acc acc; /* done: [DONE] seen */
};
_Static_assert(offsetof(struct llm_stream, acc) == 0, "the llm_stream_* entries need acc first");

static int append_string(struct llm_buf *b, const json_t *v)
{
    if (!json_is_string(v))
        return 0;
    return llm_buf_append(b, json_string_value(v), json_string_length(v));
}

/* A tool_calls[] delta: fragments of one call share its "index" (its position when absent). */
static int stream_tool_delta(struct llm_stream *s, const json_t *d, size_t pos, struct err *e)
{
    int rc = 0;
    const json_t *jidx = json_object_get(d, "index");
    long index = json_is_integer(jidx) ? (long)json_integer_value(jidx) : (long)pos;
    struct llm_acc_tool *t = llm_acc_find_tool(&s->acc, index);
    if (t == NULL)
        TRY(llm_acc_add_tool(&s->acc, index, "stream", &t, e));
    const json_t *fn = json_object_get(d, "function");
    NOMEM_IF(append_string(&t->id, json_object_get(d, "id")) != 0 ||
             append_string(&t->name, json_object_get(fn, "name")) != 0 ||
             append_string(&t->args, json_object_get(fn, "arguments")) != 0);
out:
    return rc;
}

static int stream_event(void *arg, const char *event, const char *data, size_t len, struct err *e)
{
    struct llm_stream *s = arg;
    struct llm_acc *a = &s->acc;
    int rc = 0;
    json_error_t je;
    json_t *root = NULL;

    if (a->done)
        return 0; /* nothing after [DONE] counts */
    if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
        a->done = true;
        return 0;
    }
    root = json_loadb(data, len, 0, &je);
    if (!json_is_object(root)) {
        rc = err_set(e, ERR_INVALID, "stream event is not valid JSON");
        goto out;
    }
    const json_t *errv = json_object_get(root, "error");
    if (errv != NULL && !json_is_null(errv)) {
        char msg[LLM_WIRE_ERRMSG_MAX + 1];
        rc = llm_error_in(e, "stream", msg, error_value_message(errv, msg, sizeof msg));
        goto out;
    }
    NOMEM_IF(llm_json_replace(&a->model, json_object_get(root, "model")) != 0);
    const json_t *usage = json_object_get(root, "usage");
    if (json_is_object(usage))
        parse_usage(usage, &a->usage);

    const json_t *choices = json_object_get(root, "choices");
    size_t ci;
    const json_t *choice;
    json_array_foreach(choices, ci, choice)
    {
        const json_t *jidx = json_object_get(choice, "index");
        if (json_is_integer(jidx) && json_integer_value(jidx) != 0)
            continue;
        NOMEM_IF(llm_json_replace(&a->finish_reason, json_object_get(choice, "finish_reason")) !=
                 0);
        const json_t *delta = json_object_get(choice, "delta");
        NOMEM_IF(llm_acc_text(a, json_object_get(delta, "content")) != 0);
        const json_t *calls = json_object_get(delta, "tool_calls");
        size_t ti;
        const json_t *call;
        json_array_foreach(calls, ti, call)
        {
            TRY(stream_tool_delta(s, call, ti, e));
        }
    }
out:
    json_decref(root);
    return rc;
}

static int openai_stream_new(struct llm_stream **out)
{
    return llm_stream_new(sizeof(struct llm_stream), stream_event, "[DONE]", out);
}

static int openai_stream_end(struct llm_stream *s, llm_delta_cb on_delta, void *arg,
                             struct llm_response **out, struct err *e)
{
    int rc = 0;
    *out = NULL;
    TRY(llm_stream_flush(s, on_delta, arg, e));
    /* Some compatible servers send no id: the call is named by its index. */
    for (size_t i = 0; i < s->acc.n_tools; i++) {
        struct llm_acc_tool *t = &s->acc.tools[i];
        if (t->id.len == 0) {
            char synth[32];
            int n = snprintf(synth, sizeof synth, "call_%ld", t->index);
            NOMEM_IF(llm_buf_append(&t->id, synth, (size_t)n) != 0);
        }
    }
    TRY(llm_acc_response(&s->acc, out, e));
out:
    return rc;
}

const struct llm_wire llm_wire_openai = {
    .name = "openai-chat",
    .build = openai_build,
    .parse_reply = openai_parse_reply,
    .error_message = openai_error_message,
    .stream_new = openai_stream_new,
    .stream_feed = llm_stream_feed,
    .stream_end = openai_stream_end,
    .stream_free = llm_stream_free,
};
