/*
 * llm_anthropic.c - the Anthropic Messages wire (POST {base_url}/messages), used for the
 * provider "anthropic".
 *
 * Reference shapes: tests/fixtures/anthropic/ (JSON Schema generated from the official SDK
 * types, live request/response pairs and the SDK's SSE fixtures). Choices made here:
 * - system turns, wherever they sit in the conversation, are joined with a blank line into the
 *   top-level "system" string: the Messages API has no system role inside "messages".
 * - max_tokens is required by the API: the request's value, else 4096 (ANTHROPIC_MAX_TOKENS).
 * - the API wants user and assistant turns to alternate, so consecutive turns of one role are
 *   merged into one message of content blocks; a tool result is a "tool_result" block of a
 *   user turn, so consecutive tool results (and a user text right after them) become one user
 *   message, its tool_result blocks first as the API requires. A turn of a single text block
 *   goes out as a plain string, as the SDKs send it. An assistant turn with no text and no tool
 *   calls is dropped (the API refuses empty content).
 * - a tool call's arguments become the tool_use "input" object. Arguments that are not a JSON
 *   object (a reply cut at max_tokens mid-call, or a model's bad JSON) go out as
 *   {"_raw": "<the text>"}: "input" must be an object, and failing the whole request would end
 *   a conversation the model can still repair once it sees its own text.
 * - usage: input_tokens counts only the uncached part of the prompt, so prompt_tokens is
 *   input_tokens + cache_creation_input_tokens + cache_read_input_tokens (the prompt's full
 *   size, as OpenAI counts it) and cached_tokens is cache_read_input_tokens.
 * - text blocks are joined without a separator (the same text the stream's deltas make);
 *   thinking, redacted_thinking and server-tool blocks are not read.
 * Everything here is pure: bytes in, structs out; llm.c does the transport.
 */
#include "llm/wire.h"

#include "core/json_text.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MESSAGES_PATH "/messages"
#define ANTHROPIC_VERSION "2023-06-01"
#define ANTHROPIC_MAX_TOKENS 4096

/* ---- request ---- */

/* The turn being assembled: consecutive messages of one API role share it. */
struct turn {
    const char *role; /* "user" or "assistant" */
    json_t *blocks;   /* array of content blocks */
};

static int text_block(const char *text, size_t i, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *b = json_object();
    NOMEM_IF(b == NULL);
    NOMEM_IF(json_object_set_new(b, "type", json_string("text")) != 0);
    TRY(llm_json_set(b, "text", llm_json_string(text, e, "messages[%zu].content", i), e));
    *out = b;
    b = NULL;
out:
    json_decref(b);
    return rc;
}

/* Appends the content blocks of message i to blocks. */
static int message_blocks(const struct llm_message *m, size_t i, json_t *blocks, struct err *e)
{
    int rc = 0;
    json_t *b = NULL;
    switch (m->role) {
    case LLM_ROLE_USER:
        if (m->content == NULL)
            return err_set(e, ERR_INVALID, "messages[%zu].content: required", i);
        TRY(text_block(m->content, i, &b, e));
        APPEND_NEW(blocks, b);
        break;
    case LLM_ROLE_ASSISTANT:
        if (m->content != NULL && m->content[0] != '\0') {
            TRY(text_block(m->content, i, &b, e));
            APPEND_NEW(blocks, b);
        }
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            const struct llm_tool_call *tc = &m->tool_calls[k];
            TRY(llm_tool_call_check(tc, i, k, e));
            b = json_object();
            NOMEM_IF(b == NULL);
            NOMEM_IF(json_object_set_new(b, "type", json_string("tool_use")) != 0);
            TRY(llm_json_set(
                b, "id", llm_json_string(tc->id, e, "messages[%zu].tool_calls[%zu].id", i, k), e));
            TRY(llm_json_set(
                b, "name", llm_json_string(tc->name, e, "messages[%zu].tool_calls[%zu].name", i, k),
                e));
            /* See the file comment for the {"_raw"} case. */
            TRY(llm_json_set(b, "input", llm_tool_args(tc->arguments), e));
            APPEND_NEW(blocks, b);
        }
        break;
    case LLM_ROLE_TOOL:
        if (m->tool_call_id == NULL)
            return err_set(e, ERR_INVALID, "messages[%zu].tool_call_id: required", i);
        b = json_object();
        NOMEM_IF(b == NULL);
        NOMEM_IF(json_object_set_new(b, "type", json_string("tool_result")) != 0);
        TRY(llm_json_set(b, "tool_use_id",
                         llm_json_string(m->tool_call_id, e, "messages[%zu].tool_call_id", i), e));
        if (m->content != NULL)
            TRY(llm_json_set(b, "content",
                             llm_json_string(m->content, e, "messages[%zu].content", i), e));
        APPEND_NEW(blocks, b);
        break;
    case LLM_ROLE_SYSTEM:
        break;
    default:
        return err_set(e, ERR_INVALID, "messages[%zu].role: unknown", i);
    }
out:
    json_decref(b);
    return rc;
}

static bool is_block(const json_t *b, const char *type)
{
    const json_t *t = json_object_get(b, "type");
    return json_is_string(t) && strcmp(json_string_value(t), type) == 0;
}

/* Closes a turn into a message: tool_result blocks first (the API wants them before any text
 * of the same user message), a lone text block as a plain string. */
static int finish_turn(struct turn *t, json_t *messages, struct err *e)
{
    int rc = 0;
    json_t *m = NULL, *sorted = NULL;
    if (t->blocks == NULL)
        return 0;
    if (json_array_size(t->blocks) == 0)
        goto out; /* an empty assistant turn: dropped */
    m = json_object();
    NOMEM_IF(m == NULL);
    NOMEM_IF(json_object_set_new(m, "role", json_string(t->role)) != 0);
    if (json_array_size(t->blocks) == 1 && is_block(json_array_get(t->blocks, 0), "text")) {
        json_t *text = json_object_get(json_array_get(t->blocks, 0), "text");
        NOMEM_IF(json_object_set(m, "content", text) != 0);
    } else {
        sorted = json_array();
        NOMEM_IF(sorted == NULL);
        for (int pass = 0; pass < 2; pass++) {
            size_t k;
            json_t *b;
            json_array_foreach(t->blocks, k, b)
            {
                if (is_block(b, "tool_result") == (pass == 0))
                    NOMEM_IF(json_array_append(sorted, b) != 0);
            }
        }
        NOMEM_IF(json_object_set(m, "content", sorted) != 0);
    }
    NOMEM_IF(json_array_append(messages, m) != 0);
out:
    json_decref(sorted);
    json_decref(m);
    json_decref(t->blocks);
    t->blocks = NULL;
    return rc;
}

static int build_messages(const struct llm_request *req, json_t *messages, struct llm_buf *system,
                          struct err *e)
{
    int rc = 0;
    struct turn t = {0};
    for (size_t i = 0; i < req->n_messages; i++) {
        const struct llm_message *m = &req->messages[i];
        if (m->role == LLM_ROLE_SYSTEM) {
            TRY(llm_system_append(system, m, i, e));
            continue;
        }
        const char *role = m->role == LLM_ROLE_ASSISTANT ? "assistant" : "user";
        if (t.blocks != NULL && strcmp(t.role, role) != 0)
            TRY(finish_turn(&t, messages, e));
        if (t.blocks == NULL) {
            t.role = role;
            t.blocks = json_array();
            NOMEM_IF(t.blocks == NULL);
        }
        TRY(message_blocks(m, i, t.blocks, e));
    }
    TRY(finish_turn(&t, messages, e));
out:
    json_decref(t.blocks);
    return rc;
}

/* {name, description, input_schema} */
static int build_tool(const struct llm_tool_def *t, size_t i, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *o = NULL;
    TRY(llm_tool_decl(t, i, NULL, "input_schema", &o, e));
    /* input_schema is required; a tool without parameters takes an empty object. */
    if (t->parameters == NULL)
        TRY(llm_json_set(o, "input_schema", json_pack("{s:s,s:{}}", "type", "object", "properties"),
                         e));
    *out = o;
    o = NULL;
out:
    json_decref(o);
    return rc;
}

static int anthropic_build(const struct llm_request *req, const char *base_url,
                           struct llm_wire_http *out, struct err *e)
{
    int rc = 0;
    json_t *body = NULL, *arr = NULL;
    struct llm_buf system = {0};
    memset(out, 0, sizeof *out);

    TRY(llm_wire_prepare(req, base_url, out, e, MESSAGES_PATH, NULL));

    NOMEM_IF(llm_wire_add_header(out, "content-type", "application/json") != 0);
    NOMEM_IF(llm_wire_add_header(out, "anthropic-version", ANTHROPIC_VERSION) != 0);
    if (req->api_key != NULL && req->api_key[0] != '\0')
        NOMEM_IF(llm_wire_add_header(out, "x-api-key", req->api_key) != 0);

    body = json_object();
    NOMEM_IF(body == NULL);
    TRY(llm_json_set(body, "model", llm_json_string(req->model, e, "model"), e));
    NOMEM_IF(json_object_set_new(
                 body, "max_tokens",
                 json_integer(req->max_tokens > 0 ? req->max_tokens : ANTHROPIC_MAX_TOKENS)) != 0);
    arr = json_array();
    NOMEM_IF(arr == NULL);
    TRY(build_messages(req, arr, &system, e));
    if (json_array_size(arr) == 0) {
        rc = err_set(e, ERR_INVALID, "messages: at least one user or assistant turn is required");
        goto out;
    }
    if (system.len > 0)
        NOMEM_IF(json_object_set_new(body, "system", json_string(system.data)) != 0);
    int set = json_object_set_new(body, "messages", arr); /* steals arr */
    arr = NULL;
    NOMEM_IF(set != 0);

    if (req->n_tools > 0) {
        TRY(llm_tools_array(req, build_tool, &arr, e));
        set = json_object_set_new(body, "tools", arr);
        arr = NULL;
        NOMEM_IF(set != 0);
        if (req->tools_forbidden) {
            json_t *choice = json_pack("{s:s}", "type", "none");
            NOMEM_IF(choice == NULL || json_object_set_new(body, "tool_choice", choice) != 0);
        }
    }
    if (req->temperature >= 0)
        NOMEM_IF(json_object_set_new(body, "temperature", json_real(req->temperature)) != 0);
    if (req->stream)
        NOMEM_IF(json_object_set_new(body, "stream", json_true()) != 0);
    out->body = json_dumps(body, JSON_TEXT_FLAGS);
    NOMEM_IF(out->body == NULL);
    out->body_len = strlen(out->body);
out:
    llm_buf_free(&system);
    json_decref(arr);
    json_decref(body);
    if (rc != 0)
        llm_wire_http_cleanup(out);
    return rc;
}

/* ---- reply ---- */

/* Fields absent from u keep their value: a stream's message_delta repeats only some. */
struct anth_usage {
    long input, cache_write, cache_read, output;
};

static void read_usage(const json_t *u, struct anth_usage *a)
{
    if (!json_is_object(u))
        return;
    if (json_is_integer(json_object_get(u, "input_tokens")))
        a->input = llm_json_count(u, "input_tokens");
    if (json_is_integer(json_object_get(u, "cache_creation_input_tokens")))
        a->cache_write = llm_json_count(u, "cache_creation_input_tokens");
    if (json_is_integer(json_object_get(u, "cache_read_input_tokens")))
        a->cache_read = llm_json_count(u, "cache_read_input_tokens");
    if (json_is_integer(json_object_get(u, "output_tokens")))
        a->output = llm_json_count(u, "output_tokens");
}

static struct llm_usage to_usage(const struct anth_usage *a)
{
    struct llm_usage u = {0};
    u.prompt_tokens = a->input + a->cache_write + a->cache_read;
    u.completion_tokens = a->output;
    u.total_tokens = u.prompt_tokens + u.completion_tokens;
    u.cached_tokens = a->cache_read;
    return u;
}

static bool is_error_object(const json_t *root)
{
    const json_t *t = json_object_get(root, "type");
    return (json_is_string(t) && strcmp(json_string_value(t), "error") == 0) ||
           (json_object_get(root, "error") != NULL &&
            !json_is_null(json_object_get(root, "error")));
}

static char *json_text(const json_t *v, bool *failed)
{
    if (!json_is_object(v))
        return llm_strdup("{}", failed);
    char *s = json_dumps(v, JSON_TEXT_FLAGS);
    if (s == NULL)
        *failed = true;
    return s;
}

static int anthropic_parse_reply(const char *body, size_t len, struct llm_response **out,
                                 struct err *e)
{
    int rc = 0;
    bool nomem = false;
    json_error_t je;
    struct llm_response *r = NULL;
    struct llm_buf text = {0};
    *out = NULL;

    json_t *root = json_loadb(body, len, 0, &je);
    if (!json_is_object(root)) {
        rc = err_set(e, ERR_INVALID, "reply is not valid JSON");
        goto out;
    }
    if (is_error_object(root)) {
        char msg[LLM_WIRE_ERRMSG_MAX + 1];
        rc = llm_error_in(e, "reply", msg, llm_error_object_message(root, msg, sizeof msg));
        goto out;
    }
    const json_t *content = json_object_get(root, "content");
    if (!json_is_array(content)) {
        rc = err_set(e, ERR_INVALID, "reply has no content array");
        goto out;
    }

    r = calloc(1, sizeof *r);
    NOMEM_IF(r == NULL);
    size_t n_calls = 0, i;
    const json_t *b;
    json_array_foreach(content, i, b)
    {
        if (is_block(b, "tool_use"))
            n_calls++;
    }
    /* The streamed reply's cap: each call may start a tool (an HTTP request) at once. */
    if (n_calls > LLM_STREAM_MAX_TOOL_CALLS) {
        rc = err_set(e, ERR_INVALID, "reply has more than %d tool calls",
                     LLM_STREAM_MAX_TOOL_CALLS);
        goto out;
    }
    if (n_calls > 0) {
        r->tool_calls = calloc(n_calls, sizeof *r->tool_calls);
        NOMEM_IF(r->tool_calls == NULL);
    }
    json_array_foreach(content, i, b)
    {
        if (is_block(b, "text")) {
            const json_t *t = json_object_get(b, "text");
            if (!json_is_string(t)) {
                rc = err_set(e, ERR_INVALID, "reply: content[%zu].text is not a string", i);
                goto out;
            }
            NOMEM_IF(llm_buf_append(&text, json_string_value(t), json_string_length(t)) != 0);
        } else if (is_block(b, "tool_use")) {
            const json_t *id = json_object_get(b, "id"), *name = json_object_get(b, "name");
            if (!json_is_string(id) || !json_is_string(name)) {
                rc = err_set(e, ERR_INVALID, "reply: content[%zu] (tool_use) lacks id or name", i);
                goto out;
            }
            struct llm_tool_call *tc = &r->tool_calls[r->n_tool_calls++];
            tc->id = llm_strdup(json_string_value(id), &nomem);
            tc->name = llm_strdup(json_string_value(name), &nomem);
            tc->arguments = json_text(json_object_get(b, "input"), &nomem);
            NOMEM_IF(nomem);
        }
    }
    r->text = llm_buf_steal(&text);
    NOMEM_IF(r->text == NULL);
    r->finish_reason = llm_json_strdup(json_object_get(root, "stop_reason"), &nomem);
    r->model = llm_json_strdup(json_object_get(root, "model"), &nomem);
    NOMEM_IF(nomem);
    struct anth_usage au = {0};
    read_usage(json_object_get(root, "usage"), &au);
    r->usage = to_usage(&au);
    *out = r;
    r = NULL;
out:
    llm_buf_free(&text);
    llm_response_free(r);
    json_decref(root);
    return rc;
}

static size_t anthropic_error_message(const char *body, size_t len, char *buf, size_t cap)
{
    return llm_error_body_message(body, len, buf, cap, llm_error_object_message);
}

/* ---- stream ---- */

/* Tool calls are tool_use blocks keyed by their content-block index; init_args is
 * content_block_start's input (usually {}), used when no input_json_delta came. The usage
 * fields add up in `usage` (message_delta repeats only some), converted into acc.usage. */
struct llm_stream {
    struct llm_acc acc; /* done: message_stop seen; finish_reason: stop_reason */
    struct anth_usage usage;
};
_Static_assert(offsetof(struct llm_stream, acc) == 0, "the llm_stream_* entries need acc first");

static int block_start(struct llm_stream *s, const json_t *root, struct err *e)
{
    const json_t *jidx = json_object_get(root, "index");
    const json_t *cb = json_object_get(root, "content_block");
    if (!json_is_integer(jidx) || !json_is_object(cb))
        return err_set(e, ERR_INVALID, "stream: content_block_start lacks index or block");
    long index = (long)json_integer_value(jidx);
    if (is_block(cb, "text"))
        return llm_acc_text(&s->acc, json_object_get(cb, "text")) == 0
                   ? 0
                   : err_set(e, ERR_NOMEM, "out of memory");
    if (!is_block(cb, "tool_use"))
        return 0; /* thinking, server tools...: not read */
    const json_t *id = json_object_get(cb, "id"), *name = json_object_get(cb, "name");
    if (!json_is_string(id) || !json_is_string(name))
        return err_set(e, ERR_INVALID, "stream: tool_use block lacks id or name");
    if (llm_acc_find_tool(&s->acc, index) != NULL)
        return err_set(e, ERR_INVALID, "stream: content block %ld started twice", index);
    struct llm_acc_tool *t = NULL;
    int rc = llm_acc_add_tool(&s->acc, index, "stream", &t, e);
    if (rc != 0)
        return rc;
    bool nomem = llm_buf_append(&t->id, json_string_value(id), json_string_length(id)) != 0 ||
                 llm_buf_append(&t->name, json_string_value(name), json_string_length(name)) != 0;
    t->init_args = json_text(json_object_get(cb, "input"), &nomem);
    return nomem ? err_set(e, ERR_NOMEM, "out of memory") : 0;
}

static int block_delta(struct llm_stream *s, const json_t *root, struct err *e)
{
    const json_t *jidx = json_object_get(root, "index");
    const json_t *d = json_object_get(root, "delta");
    if (!json_is_object(d))
        return err_set(e, ERR_INVALID, "stream: content_block_delta lacks delta");
    if (is_block(d, "text_delta")) {
        if (llm_acc_text(&s->acc, json_object_get(d, "text")) != 0)
            return err_set(e, ERR_NOMEM, "out of memory");
        return 0;
    }
    if (!is_block(d, "input_json_delta") || !json_is_integer(jidx))
        return 0; /* thinking, signature, citations: not read */
    struct llm_acc_tool *t = llm_acc_find_tool(&s->acc, (long)json_integer_value(jidx));
    const json_t *pj = json_object_get(d, "partial_json");
    if (t == NULL || !json_is_string(pj))
        return 0; /* a server tool's input: not ours */
    /* The fragments make the whole input; the first is often "". */
    if (llm_buf_append(&t->args, json_string_value(pj), json_string_length(pj)) != 0)
        return err_set(e, ERR_NOMEM, "out of memory");
    return 0;
}

static int stream_event(void *arg, const char *event, const char *data, size_t len, struct err *e)
{
    struct llm_stream *s = arg;
    int rc = 0;
    json_error_t je;
    json_t *root = NULL;

    if (s->acc.done)
        return 0; /* nothing after message_stop counts */
    root = json_loadb(data, len, 0, &je);
    if (!json_is_object(root)) {
        rc = err_set(e, ERR_INVALID, "stream event is not valid JSON");
        goto out;
    }
    /* The data's "type" repeats the event name; the JSON decides (a proxy may drop the
     * "event:" lines), except that an "error" event is an error whatever it holds. */
    const json_t *jt = json_object_get(root, "type");
    const char *type = json_is_string(jt) ? json_string_value(jt) : "";
    if (strcmp(event, "error") == 0 || strcmp(type, "error") == 0) {
        char msg[LLM_WIRE_ERRMSG_MAX + 1];
        rc = llm_error_in(e, "stream", msg, llm_error_object_message(root, msg, sizeof msg));
        goto out;
    }
    if (strcmp(type, "message_start") == 0) {
        const json_t *m = json_object_get(root, "message");
        NOMEM_IF(llm_json_replace(&s->acc.model, json_object_get(m, "model")) != 0);
        read_usage(json_object_get(m, "usage"), &s->usage);
        s->acc.usage = to_usage(&s->usage);
    } else if (strcmp(type, "content_block_start") == 0) {
        TRY(block_start(s, root, e));
    } else if (strcmp(type, "content_block_delta") == 0) {
        TRY(block_delta(s, root, e));
    } else if (strcmp(type, "message_delta") == 0) {
        NOMEM_IF(llm_json_replace(&s->acc.finish_reason,
                                  json_object_get(json_object_get(root, "delta"), "stop_reason")) !=
                 0);
        read_usage(json_object_get(root, "usage"), &s->usage);
        s->acc.usage = to_usage(&s->usage);
    } else if (strcmp(type, "message_stop") == 0) {
        s->acc.done = true;
    }
    /* ping, content_block_stop and event types newer than this file: nothing to do. */
out:
    json_decref(root);
    return rc;
}

static int anthropic_stream_new(struct llm_stream **out)
{
    return llm_stream_new(sizeof(struct llm_stream), stream_event, "message_stop", out);
}

const struct llm_wire llm_wire_anthropic = {
    .name = "anthropic-messages",
    .build = anthropic_build,
    .parse_reply = anthropic_parse_reply,
    .error_message = anthropic_error_message,
    .stream_new = anthropic_stream_new,
    .stream_feed = llm_stream_feed,
    .stream_end = llm_stream_end,
    .stream_free = llm_stream_free,
};
