/*
 * gemini.c - the Gemini wire of crewd-fakellm (POST .../models/{model}:generateContent and
 * :streamGenerateContent): validation of the GenerateContentRequest, normalization of
 * systemInstruction + contents into the (role, text) conversation that reply.c turns into
 * directives, hash and default text, and the GenerateContentResponse / error documents
 * (shapes from shared/provider-refs/gemini/).
 *
 * Pure functions over jansson values, like reply.c. Role mapping (fakellm/README.md):
 *   systemInstruction.parts[].text   -> ("system", text), first, when present
 *   user content (or no role)        -> ("tool", result) per functionResponse part, in order,
 *                                       then ("user", text parts) unless it held only
 *                                       functionResponse parts
 *   model content                    -> ("assistant", text parts); functionCall parts add
 *                                       no text
 * The result of a functionResponse is response.output when it is a string, else
 * response.error when it is a string, else the compact JSON text of response ("" without it).
 */
#include "fakellm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

/* The text parts of `parts`, appended to the last message. */
static void append_parts(struct fake_conv *c, json_t *parts)
{
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        json_t *text = json_object_get(p, "text");
        if (json_is_string(text))
            fake_conv_append(c, json_string_value(text), json_string_length(text));
    }
}

static void append_function_response(struct fake_conv *c, json_t *fr)
{
    json_t *resp = json_object_get(fr, "response");
    /* {"output": value} is how a result travels (the recorded round trip sends 42 so):
     * the value is the result, a string as it is, anything else as its JSON. */
    json_t *s = json_object_get(resp, "output");
    if (s == NULL || json_is_null(s))
        s = json_object_get(resp, "error");
    if (json_is_string(s)) {
        fake_conv_append(c, json_string_value(s), json_string_length(s));
        return;
    }
    if (resp == NULL)
        return;
    char *text = json_dumps(s != NULL ? s : resp, JSON_COMPACT | JSON_ENCODE_ANY);
    if (text == NULL) {
        c->oom = true;
        return;
    }
    fake_conv_append(c, text, strlen(text));
    free(text);
}

/* parts: a non-empty array of objects whose text, when present, is a string. */
static bool valid_parts(json_t *parts, const char *where, char *err, size_t err_len)
{
    if (!json_is_array(parts) || json_array_size(parts) == 0) {
        snprintf(err, err_len, "* GenerateContentRequest.%s.parts: %s.parts must not be empty.",
                 where, where);
        return false;
    }
    size_t i;
    json_t *p;
    json_array_foreach(parts, i, p)
    {
        json_t *text = json_object_get(p, "text");
        json_t *fr = json_object_get(p, "functionResponse");
        if (!json_is_object(p) || (text != NULL && !json_is_string(text)) ||
            (fr != NULL && (!json_is_object(fr) || !json_is_string(json_object_get(fr, "name"))))) {
            snprintf(err, err_len,
                     "Invalid JSON payload received. Invalid value at '%s.parts[%zu]'", where, i);
            return false;
        }
    }
    return true;
}

int fake_gemini_input_parse(json_t *body, const struct fake_route *route,
                            struct fake_chat_input *in, char *err, size_t err_len)
{
    fake_chat_input_init(in);
    in->wire = FAKE_WIRE_GEMINI;
    in->model = route->model ? route->model : "";
    in->stream = route->stream;
    in->sse = route->sse;
    struct fake_conv conv = {0};
    int rc = -1;
    char where[48];

    if (!json_is_object(body)) {
        snprintf(err, err_len, "Invalid JSON payload received. Expected an object.");
        goto out;
    }
    const char *mode = json_string_value(json_object_get(
        json_object_get(json_object_get(body, "toolConfig"), "functionCallingConfig"), "mode"));
    in->tools_forbidden = mode != NULL && strcmp(mode, "NONE") == 0;
    json_t *contents = json_object_get(body, "contents");
    if (!json_is_array(contents) || json_array_size(contents) == 0) {
        snprintf(err, err_len, "* GenerateContentRequest.contents: contents is not specified");
        goto out;
    }
    json_t *sys = json_object_get(body, "systemInstruction");
    if (sys != NULL && !json_is_null(sys)) {
        if (!json_is_object(sys) || !valid_parts(json_object_get(sys, "parts"),
                                                 "system_instruction", err, err_len)) {
            if (!json_is_object(sys))
                snprintf(err, err_len,
                         "Invalid JSON payload received. Invalid value at 'system_instruction'");
            goto out;
        }
    }
    size_t i;
    json_t *c;
    json_array_foreach(contents, i, c)
    {
        snprintf(where, sizeof where, "contents[%zu]", i);
        if (!json_is_object(c)) {
            snprintf(err, err_len, "Invalid JSON payload received. Invalid value at '%s'", where);
            goto out;
        }
        json_t *role = json_object_get(c, "role");
        if (role != NULL && (!json_is_string(role) ||
                             (strcmp(json_string_value(role), "user") != 0 &&
                              strcmp(json_string_value(role), "model") != 0))) {
            snprintf(err, err_len, "Please use a valid role: user, model.");
            goto out;
        }
        if (!valid_parts(json_object_get(c, "parts"), where, err, err_len))
            goto out;
    }

    if (sys != NULL && !json_is_null(sys)) {
        fake_conv_add(&conv, "system", 6);
        append_parts(&conv, json_object_get(sys, "parts"));
    }
    json_array_foreach(contents, i, c)
    {
        json_t *role = json_object_get(c, "role");
        json_t *parts = json_object_get(c, "parts");
        if (role != NULL && strcmp(json_string_value(role), "model") == 0) {
            fake_conv_add(&conv, "assistant", 9);
            append_parts(&conv, parts);
            continue;
        }
        bool results = false, texts = false;
        size_t k;
        json_t *p;
        json_array_foreach(parts, k, p)
        {
            json_t *fr = json_object_get(p, "functionResponse");
            if (fr != NULL) {
                fake_conv_add(&conv, "tool", 4);
                append_function_response(&conv, fr);
                results = true;
            } else if (json_object_get(p, "text") != NULL) {
                texts = true;
            }
        }
        if (texts || !results) {
            fake_conv_add(&conv, "user", 4);
            append_parts(&conv, parts);
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

/* One GenerateContentResponse holding `parts` (consumed), with `finish` (may be NULL) and the
 * usage so far. */
static json_t *response(const struct fake_reply *r, json_t *parts, const char *finish,
                        uint64_t candidates_tokens)
{
    char id[64];
    snprintf(id, sizeof id, "fake-%llu", (unsigned long long)r->n);
    json_t *cand = json_pack("{s{soss}si}", "content", "parts", parts, "role", "model", "index", 0);
    if (cand != NULL && finish != NULL &&
        json_object_set_new(cand, "finishReason", json_string(finish)) != 0) {
        json_decref(cand);
        cand = NULL;
    }
    return json_pack("{s[o]s{sIsIsI}ssss}", "candidates", cand, "usageMetadata",
                     "promptTokenCount", (json_int_t)r->prompt_tokens, "candidatesTokenCount",
                     (json_int_t)candidates_tokens, "totalTokenCount",
                     (json_int_t)(r->prompt_tokens + candidates_tokens), "modelVersion", r->model,
                     "responseId", id);
}

/* The functionCall parts of the tool calls (a new array, NULL when out of memory). */
static json_t *call_parts(const struct fake_reply *r)
{
    json_t *parts = json_array();
    for (size_t i = 0; parts != NULL && i < r->n_tools; i++) {
        json_t *args = fake_tool_args_object(&r->tools[i]);
        if (args == NULL || json_array_append_new(parts, json_pack("{s{ssso}}", "functionCall",
                                                                   "name", r->tools[i].name,
                                                                   "args", args)) != 0) {
            json_decref(parts);
            return NULL;
        }
    }
    return parts;
}

json_t *fake_gemini_reply_json(const struct fake_reply *r)
{
    json_t *parts = r->text ? json_pack("[{ss}]", "text", r->text) : call_parts(r);
    if (parts == NULL)
        return NULL;
    return response(r, parts, "STOP", r->completion_tokens);
}

json_t *fake_gemini_chunks(const struct fake_reply *r)
{
    json_t *chunks = json_array();
    if (chunks == NULL)
        return NULL;
    bool ok = true;
    if (r->text == NULL) {
        /* As the streamed functionCall recording: every call in one chunk. */
        json_t *parts = call_parts(r);
        ok = parts != NULL &&
             json_array_append_new(chunks, response(r, parts, "STOP", r->completion_tokens)) == 0;
    } else {
        /* As the streamed text recording: each chunk holds only the new text and the running
         * usage; finishReason comes with the last one. */
        size_t len = strlen(r->text), pos = 0;
        do {
            size_t n = len > pos ? fake_stream_piece(r->text + pos, len - pos) : 0;
            bool last = pos + n >= len;
            json_t *parts = json_pack("[{ss%}]", "text", r->text + pos, n);
            pos += n;
            uint64_t so_far = last ? r->completion_tokens : fake_tokens(pos);
            ok = parts != NULL && json_array_append_new(chunks, response(r, parts,
                                                                         last ? "STOP" : NULL,
                                                                         so_far)) == 0;
        } while (ok && pos < len);
    }
    if (!ok) {
        json_decref(chunks);
        return NULL;
    }
    return chunks;
}

json_t *fake_gemini_error_json(int status, const char *message)
{
    const char *name;
    switch (status) {
    case 401:
        name = "UNAUTHENTICATED";
        break;
    case 403:
        name = "PERMISSION_DENIED";
        break;
    case 404:
        name = "NOT_FOUND";
        break;
    case 405:
        name = "UNIMPLEMENTED";
        break;
    case 409:
        name = "ABORTED";
        break;
    case 413:
        name = "INVALID_ARGUMENT";
        break;
    case 429:
        name = "RESOURCE_EXHAUSTED";
        break;
    case 499:
        name = "CANCELLED";
        break;
    case 501:
        name = "UNIMPLEMENTED";
        break;
    case 502:
    case 503:
        name = "UNAVAILABLE";
        break;
    case 504:
        name = "DEADLINE_EXCEEDED";
        break;
    default:
        name = status >= 500 ? "INTERNAL" : status == 400 ? "INVALID_ARGUMENT"
                                                          : "FAILED_PRECONDITION";
    }
    return json_pack("{s{sissss}}", "error", "code", status, "message", message, "status", name);
}
