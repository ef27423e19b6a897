/*
 * anthropic.c - the Anthropic Messages wire of crewd-fakellm (POST .../messages): validation
 * of the body as the real API does it, normalization of system + messages into the
 * (role, text) conversation that reply.c turns into directives, hash and default text, and
 * the Message / stream event / error documents (shapes from shared/provider-refs/anthropic/).
 *
 * Pure functions over jansson values, like reply.c. Role mapping (fakellm/README.md):
 *   system (string or text blocks)     -> ("system", text), first, when present
 *   user message                       -> ("tool", content) per tool_result block, in order,
 *                                         then ("user", text blocks) unless it held only
 *                                         tool_result blocks
 *   assistant message                  -> ("assistant", text blocks); tool_use blocks add no
 *                                         text (an OpenAI tool-call message has content null)
 */
#include "fakellm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

static bool is_type(json_t *block, const char *type)
{
    json_t *t = json_object_get(block, "type");
    return json_is_string(t) && strcmp(json_string_value(t), type) == 0;
}

/* The text of a string or of the text blocks of an array, appended to the last message. */
static void append_text(struct fake_conv *c, json_t *content)
{
    if (json_is_string(content)) {
        fake_conv_append(c, json_string_value(content), json_string_length(content));
        return;
    }
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        json_t *text = json_object_get(b, "text");
        if (is_type(b, "text") && json_is_string(text))
            fake_conv_append(c, json_string_value(text), json_string_length(text));
    }
}

/* A string, or an array of blocks that are objects with a string "type". */
static bool valid_content(json_t *content, const char *where, char *err, size_t err_len)
{
    if (json_is_string(content))
        return true;
    if (!json_is_array(content)) {
        snprintf(err, err_len, "%s: Input should be a valid string or a list of content blocks",
                 where);
        return false;
    }
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        if (!json_is_object(b) || !json_is_string(json_object_get(b, "type"))) {
            snprintf(err, err_len, "%s.%zu: Input should be an object with a string 'type'", where,
                     i);
            return false;
        }
        if (is_type(b, "text") && !json_is_string(json_object_get(b, "text"))) {
            snprintf(err, err_len, "%s.%zu.text: Field required", where, i);
            return false;
        }
        if (is_type(b, "tool_result")) {
            if (!json_is_string(json_object_get(b, "tool_use_id"))) {
                snprintf(err, err_len, "%s.%zu.tool_use_id: Field required", where, i);
                return false;
            }
            json_t *inner = json_object_get(b, "content");
            if (inner != NULL && !json_is_string(inner) && !json_is_array(inner)) {
                snprintf(err, err_len,
                         "%s.%zu.content: Input should be a valid string or a list of blocks",
                         where, i);
                return false;
            }
        }
    }
    return true;
}

int fake_anthropic_input_parse(json_t *body, struct fake_chat_input *in, char *err,
                               size_t err_len)
{
    fake_chat_input_init(in);
    in->wire = FAKE_WIRE_ANTHROPIC;
    struct fake_conv conv = {0};
    int rc = -1;
    char where[64];

    if (!json_is_object(body)) {
        snprintf(err, err_len, "The request body is not a JSON object");
        goto out;
    }
    json_t *model = json_object_get(body, "model");
    if (!json_is_string(model)) {
        snprintf(err, err_len, "model: %s",
                 model ? "Input should be a valid string" : "Field required");
        goto out;
    }
    in->model = json_string_value(model);
    json_t *max_tokens = json_object_get(body, "max_tokens");
    if (!json_is_integer(max_tokens) || json_integer_value(max_tokens) < 1) {
        snprintf(err, err_len, "max_tokens: %s",
                 max_tokens == NULL ? "Field required"
                 : json_is_integer(max_tokens)
                     ? "Input should be greater than or equal to 1"
                     : "Input should be a valid integer");
        goto out;
    }
    json_t *messages = json_object_get(body, "messages");
    if (!json_is_array(messages)) {
        snprintf(err, err_len, "messages: %s",
                 messages ? "Input should be a valid list" : "Field required");
        goto out;
    }
    if (json_array_size(messages) == 0) {
        snprintf(err, err_len, "messages: at least one message is required");
        goto out;
    }
    json_t *system = json_object_get(body, "system");
    if (system != NULL && !json_is_null(system)) {
        if (!valid_content(system, "system", err, err_len))
            goto out;
        size_t i;
        json_t *b;
        json_array_foreach(system, i, b)
        {
            if (!is_type(b, "text")) {
                snprintf(err, err_len, "system.%zu.type: Input should be 'text'", i);
                goto out;
            }
        }
    }
    size_t i;
    json_t *msg;
    json_array_foreach(messages, i, msg)
    {
        json_t *role = json_object_get(msg, "role");
        if (!json_is_object(msg)) {
            snprintf(err, err_len, "messages.%zu: Input should be a valid dictionary", i);
            goto out;
        }
        if (!json_is_string(role) || (strcmp(json_string_value(role), "user") != 0 &&
                                      strcmp(json_string_value(role), "assistant") != 0)) {
            snprintf(err, err_len, "messages.%zu.role: Input should be 'user' or 'assistant'", i);
            goto out;
        }
        json_t *content = json_object_get(msg, "content");
        snprintf(where, sizeof where, "messages.%zu.content", i);
        if (content == NULL) {
            snprintf(err, err_len, "%s: Field required", where);
            goto out;
        }
        if (!valid_content(content, where, err, err_len))
            goto out;
    }
    json_t *stream = json_object_get(body, "stream");
    if (stream != NULL && !json_is_boolean(stream)) {
        snprintf(err, err_len, "stream: Input should be a valid boolean");
        goto out;
    }
    in->stream = json_is_true(stream);
    const char *choice = json_string_value(json_object_get(json_object_get(body, "tool_choice"),
                                                           "type"));
    in->tools_forbidden = choice != NULL && strcmp(choice, "none") == 0;

    if (system != NULL && !json_is_null(system)) {
        fake_conv_add(&conv, "system", 6);
        append_text(&conv, system);
    }
    json_array_foreach(messages, i, msg)
    {
        const char *role = json_string_value(json_object_get(msg, "role"));
        json_t *content = json_object_get(msg, "content");
        if (strcmp(role, "assistant") == 0) {
            fake_conv_add(&conv, "assistant", 9);
            append_text(&conv, content);
            continue;
        }
        bool results = false, texts = json_is_string(content);
        size_t k;
        json_t *b;
        json_array_foreach(content, k, b)
        {
            if (is_type(b, "tool_result")) {
                fake_conv_add(&conv, "tool", 4);
                json_t *inner = json_object_get(b, "content");
                if (inner != NULL)
                    append_text(&conv, inner);
                results = true;
            } else if (is_type(b, "text")) {
                texts = true;
            }
        }
        if (texts || !results) {
            fake_conv_add(&conv, "user", 4);
            append_text(&conv, content);
        }
    }
    if (fake_chat_input_from_conv(&conv, in, err, err_len) < 0)
        goto out;
    rc = fake_tools_need_objects(in, err, err_len);
out:
    fake_conv_free(&conv);
    return rc;
}

/* ---- documents ------------------------------------------------------------------------------ */

static void message_id(const struct fake_reply *r, char id[64])
{
    snprintf(id, 64, "msg_fake_%llu", (unsigned long long)r->n);
}

static void tool_id(const struct fake_reply *r, size_t i, char id[64])
{
    snprintf(id, 64, "toolu_fake_%llu_%zu", (unsigned long long)r->n, i);
}

static json_t *usage_json(uint64_t input, uint64_t output)
{
    return json_pack("{sIsIsIsI}", "input_tokens", (json_int_t)input,
                     "cache_creation_input_tokens", (json_int_t)0, "cache_read_input_tokens", (json_int_t)0,
                     "output_tokens", (json_int_t)output);
}

/* The Message object; with `streamed` the one message_start carries (no content yet). */
static json_t *message_json(const struct fake_reply *r, bool streamed)
{
    char id[64];
    message_id(r, id);
    json_t *content = json_array();
    if (content == NULL)
        return NULL;
    if (!streamed && r->text != NULL) {
        json_array_append_new(content, json_pack("{ssss}", "type", "text", "text", r->text));
    } else if (!streamed) {
        for (size_t i = 0; i < r->n_tools; i++) {
            char tid[64];
            tool_id(r, i, tid);
            json_t *input = fake_tool_args_object(&r->tools[i]);
            if (input == NULL || json_array_append_new(content, json_pack("{sssssssO}", "type",
                                                                          "tool_use", "id", tid,
                                                                          "name", r->tools[i].name,
                                                                          "input", input)) != 0) {
                json_decref(input);
                json_decref(content);
                return NULL;
            }
            json_decref(input);
        }
    }
    if (!streamed && json_array_size(content) != (r->text ? 1 : r->n_tools)) {
        json_decref(content);
        return NULL;
    }
    const char *stop = streamed ? NULL : r->text ? "end_turn" : "tool_use";
    return json_pack("{sssssssssoss?snso}", "id", id, "type", "message", "role", "assistant",
                     "model", r->model, "content", content, "stop_reason", stop, "stop_sequence",
                     "usage",
                     usage_json(r->prompt_tokens, streamed ? 1 : r->completion_tokens));
}

json_t *fake_anthropic_reply_json(const struct fake_reply *r)
{
    return message_json(r, false);
}

static bool push(json_t *events, json_t *e)
{
    return e != NULL && json_array_append_new(events, e) == 0;
}

/* content_block_delta events carrying `s` in pieces (`field` of a delta of `type`). */
static bool push_pieces(json_t *events, size_t index, const char *type, const char *field,
                        const char *s)
{
    size_t len = strlen(s), pos = 0;
    bool ok = true;
    while (ok && pos < len) {
        size_t n = fake_stream_piece(s + pos, len - pos);
        ok = push(events, json_pack("{sssIs{ssss%}}", "type", "content_block_delta", "index",
                                    (json_int_t)index, "delta", "type", type, field, s + pos, n));
        pos += n;
    }
    return ok;
}

json_t *fake_anthropic_events(const struct fake_reply *r)
{
    json_t *events = json_array();
    if (events == NULL)
        return NULL;
    /* As the SDK fixtures: message_start, then per block start / deltas / stop (a ping after
     * the first block start), then message_delta with the stop reason and usage, and
     * message_stop. */
    bool ok = push(events, json_pack("{ssso}", "type", "message_start", "message",
                                     message_json(r, true)));
    size_t n_blocks = r->text ? 1 : r->n_tools;
    for (size_t i = 0; ok && i < n_blocks; i++) {
        json_t *block;
        if (r->text != NULL) {
            block = json_pack("{ssss}", "type", "text", "text", "");
        } else {
            char tid[64];
            tool_id(r, i, tid);
            block = json_pack("{sssssss{}}", "type", "tool_use", "id", tid, "name",
                              r->tools[i].name, "input");
        }
        ok = push(events, json_pack("{sssIso}", "type", "content_block_start", "index",
                                    (json_int_t)i, "content_block", block));
        if (ok && i == 0)
            ok = push(events, json_pack("{ss}", "type", "ping"));
        if (!ok)
            break;
        if (r->text != NULL) {
            ok = push_pieces(events, i, "text_delta", "text", r->text);
        } else {
            /* The recordings open a tool's input with an empty partial_json. */
            ok = push(events, json_pack("{sssIs{ssss}}", "type", "content_block_delta", "index",
                                        (json_int_t)i, "delta", "type", "input_json_delta",
                                        "partial_json", "")) &&
                 push_pieces(events, i, "input_json_delta", "partial_json", r->tools[i].args);
        }
        ok = ok && push(events, json_pack("{sssI}", "type", "content_block_stop", "index",
                                          (json_int_t)i));
    }
    ok = ok && push(events, json_pack("{sss{sssn}s{sI}}", "type", "message_delta", "delta",
                                      "stop_reason", r->text ? "end_turn" : "tool_use",
                                      "stop_sequence", "usage", "output_tokens",
                                      (json_int_t)r->completion_tokens));
    ok = ok && push(events, json_pack("{ss}", "type", "message_stop"));
    if (!ok) {
        json_decref(events);
        return NULL;
    }
    return events;
}

json_t *fake_anthropic_error_json(int status, const char *message, uint64_t seq)
{
    const char *type;
    switch (status) {
    case 401:
        type = "authentication_error";
        break;
    case 402:
        type = "billing_error";
        break;
    case 403:
        type = "permission_error";
        break;
    case 404:
        type = "not_found_error";
        break;
    case 413:
        type = "request_too_large";
        break;
    case 429:
        type = "rate_limit_error";
        break;
    case 504:
        type = "timeout_error";
        break;
    case 529:
        type = "overloaded_error";
        break;
    default:
        type = status >= 500 ? "api_error" : "invalid_request_error";
    }
    char rid[64];
    snprintf(rid, sizeof rid, "req_fake_%llu", (unsigned long long)seq);
    return json_pack("{sss{ssss}ss?}", "type", "error", "error", "type", type, "message", message,
                     "request_id", seq ? rid : NULL);
}
