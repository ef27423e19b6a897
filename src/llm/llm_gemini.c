/*
 * llm_gemini.c - the Gemini API wire (generateContent / streamGenerateContent, REST v1beta),
 * used for the provider "google".
 *
 * Reference shapes: tests/fixtures/gemini/ (JSON Schema converted from the official protos,
 * replays of live calls recorded by the JS SDK's system tests, the endpoint bindings and the
 * SSE framing from the SDKs). Choices made here:
 * - URL: {base}/models/{model}:generateContent, streamed {base}/models/{model}:
 *   streamGenerateContent?alt=sse. The key goes in the x-goog-api-key header, never in the URL
 *   (URLs end up in logs). A model named "models/x" is taken as "x"; a model with characters
 *   outside [A-Za-z0-9._-] is refused rather than escaped into the path.
 * - system turns are joined with a blank line into systemInstruction.parts[0].text.
 * - roles: user -> "user", assistant -> "model"; a tool result is a functionResponse part of a
 *   "user" turn (as the SDK's recorded round trip sends it). Consecutive turns of one role are
 *   merged into one content, so the responses to parallel calls share one turn.
 * - Gemini matches a functionResponse to its call by function name, not by id: the name comes
 *   from the nearest earlier assistant message holding a tool call with the message's
 *   tool_call_id (ids repeat across turns: each reply numbers its calls from call_0). A tool
 *   result whose id no earlier tool call has is refused (ERR_INVALID).
 * - functionResponse.response must be an object: a result that is a JSON object goes as is,
 *   other JSON (42, "x", [..]) as {"output": <that value>}, other text as {"output": "<text>"}
 *   ("output" is the key the proto suggests, and the SDK's recorded round trip sends).
 * - tool ids: replies carry none (FunctionCall.id is optional and the Developer API leaves it
 *   out), so a call gets functionCall.id when present, else "call_<n>", n counting the calls
 *   of that reply (of the whole stream when streamed). When the part carries a
 *   thoughtSignature (thinking models; Gemini 3 refuses a function-call turn sent back
 *   without it), the id is "<id>~ts~<signature>" and build puts the signature back on that
 *   functionCall part: llm.h has no other field that survives the round trip. Signatures on
 *   text parts are dropped (they are optional there).
 * - tools go out as functionDeclarations with the JSON Schema in "parametersJsonSchema", which
 *   takes standard JSON Schema as is; the older "parameters" field wants an OpenAPI subset
 *   (upper-case types, no additionalProperties, ...) and would need the schema rewritten.
 *   Nothing is stripped. "description" is required by the proto: "" when the tool has none.
 * - usage: candidatesTokenCount leaves out thinking, so completion_tokens is
 *   candidatesTokenCount + thoughtsTokenCount (OpenAI counts reasoning inside completion
 *   tokens) and reasoning_tokens is thoughtsTokenCount; cached_tokens is
 *   cachedContentTokenCount; total_tokens is totalTokenCount (the sum when absent).
 * - only candidates[0] is read; parts marked "thought" (thought summaries) are not text.
 * - a 200 reply without candidates whose promptFeedback has a blockReason is ERR_IO
 *   "prompt blocked: <reason>".
 * Everything here is pure: bytes in, structs out; llm.c does the transport.
 */
#include "llm/wire.h"

#include "core/json_text.h"
#include "core/utf8.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_SUFFIX ":generateContent"
#define STREAM_SUFFIX ":streamGenerateContent?alt=sse"
#define TS_SEP "~ts~"             /* between a tool id and the part's thoughtSignature */
#define MAX_SIGNATURE (64 * 1024) /* longer signatures are dropped, not carried in an id */

/* ---- request ---- */

static bool model_char_ok(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

/* The part of a tool id before TS_SEP, and the signature after it (NULL when none). */
static const char *id_signature(const char *id)
{
    const char *sep = strstr(id, TS_SEP);
    return sep != NULL && sep[sizeof TS_SEP - 1] != '\0' ? sep + sizeof TS_SEP - 1 : NULL;
}

/* The name of the tool call `id`, from the nearest assistant message before message i. */
static const char *call_name(const struct llm_request *req, size_t i, const char *id)
{
    while (i-- > 0) {
        const struct llm_message *m = &req->messages[i];
        if (m->role != LLM_ROLE_ASSISTANT)
            continue;
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            if (m->tool_calls[k].id != NULL && strcmp(m->tool_calls[k].id, id) == 0)
                return m->tool_calls[k].name;
        }
    }
    return NULL;
}

static int text_part(const char *text, size_t i, json_t **out, struct err *e)
{
    int rc = 0;
    json_t *p = json_object();
    NOMEM_IF(p == NULL);
    TRY(llm_json_set(p, "text", llm_json_string(text, e, "messages[%zu].content", i), e));
    *out = p;
    p = NULL;
out:
    json_decref(p);
    return rc;
}

static int call_part(const struct llm_tool_call *tc, size_t i, size_t k, json_t **out,
                     struct err *e)
{
    int rc = 0;
    json_t *p = json_object(), *fc = json_object();
    NOMEM_IF(p == NULL || fc == NULL);
    TRY(llm_tool_call_check(tc, i, k, e));
    TRY(llm_json_set(fc, "name",
                     llm_json_string(tc->name, e, "messages[%zu].tool_calls[%zu].name", i, k), e));
    /* args must be an object: the model sees its own text again in {"_raw"}. */
    TRY(llm_json_set(fc, "args", llm_tool_args(tc->arguments), e));
    int set = json_object_set_new(p, "functionCall", fc);
    fc = NULL;
    NOMEM_IF(set != 0);
    const char *sig = id_signature(tc->id);
    if (sig != NULL)
        TRY(llm_json_set(p, "thoughtSignature",
                         llm_json_string(sig, e, "messages[%zu].tool_calls[%zu].id", i, k), e));
    *out = p;
    p = NULL;
out:
    json_decref(fc);
    json_decref(p);
    return rc;
}

static int response_part(const struct llm_request *req, size_t i, json_t **out, struct err *e)
{
    int rc = 0;
    const struct llm_message *m = &req->messages[i];
    json_t *p = json_object(), *fr = json_object(), *resp = NULL;
    NOMEM_IF(p == NULL || fr == NULL);
    if (m->tool_call_id == NULL) {
        rc = err_set(e, ERR_INVALID, "messages[%zu].tool_call_id: required", i);
        goto out;
    }
    const char *name = call_name(req, i, m->tool_call_id);
    if (name == NULL) {
        rc = err_set(e, ERR_INVALID,
                     "messages[%zu].tool_call_id: no earlier assistant tool call has this id", i);
        goto out;
    }
    TRY(llm_json_set(fr, "name", llm_json_string(name, e, "messages[%zu] (tool name)", i), e));
    const char *content = m->content ? m->content : "";
    if (!utf8_valid(content, strlen(content))) {
        rc = err_set(e, ERR_INVALID, "messages[%zu].content: not valid UTF-8", i);
        goto out;
    }
    json_error_t je;
    json_t *v = json_loads(content, JSON_DECODE_ANY, &je);
    if (json_is_object(v)) {
        resp = v;
    } else {
        resp = v != NULL ? json_pack("{s:o}", "output", v) : json_pack("{s:s}", "output", content);
        NOMEM_IF(resp == NULL);
    }
    int set = json_object_set_new(fr, "response", resp);
    resp = NULL;
    NOMEM_IF(set != 0);
    set = json_object_set_new(p, "functionResponse", fr);
    fr = NULL;
    NOMEM_IF(set != 0);
    *out = p;
    p = NULL;
out:
    json_decref(resp);
    json_decref(fr);
    json_decref(p);
    return rc;
}

/* Appends the parts of message i to parts. */
static int message_parts(const struct llm_request *req, size_t i, json_t *parts, struct err *e)
{
    int rc = 0;
    const struct llm_message *m = &req->messages[i];
    json_t *p = NULL;
    switch (m->role) {
    case LLM_ROLE_USER:
        if (m->content == NULL)
            return err_set(e, ERR_INVALID, "messages[%zu].content: required", i);
        TRY(text_part(m->content, i, &p, e));
        APPEND_NEW(parts, p);
        break;
    case LLM_ROLE_ASSISTANT:
        if (m->content != NULL && m->content[0] != '\0') {
            TRY(text_part(m->content, i, &p, e));
            APPEND_NEW(parts, p);
        }
        for (size_t k = 0; k < m->n_tool_calls; k++) {
            TRY(call_part(&m->tool_calls[k], i, k, &p, e));
            APPEND_NEW(parts, p);
        }
        break;
    case LLM_ROLE_TOOL:
        TRY(response_part(req, i, &p, e));
        APPEND_NEW(parts, p);
        break;
    case LLM_ROLE_SYSTEM:
        break;
    default:
        return err_set(e, ERR_INVALID, "messages[%zu].role: unknown", i);
    }
out:
    json_decref(p);
    return rc;
}

/* Appends {role, parts} to contents unless parts is empty (an empty assistant turn). */
static int flush_turn(const char *role, json_t **parts, json_t *contents, struct err *e)
{
    int rc = 0;
    json_t *c = NULL;
    if (*parts == NULL)
        return 0;
    if (json_array_size(*parts) > 0) {
        c = json_object();
        NOMEM_IF(c == NULL);
        NOMEM_IF(json_object_set_new(c, "role", json_string(role)) != 0);
        NOMEM_IF(json_object_set(c, "parts", *parts) != 0);
        NOMEM_IF(json_array_append(contents, c) != 0);
    }
out:
    json_decref(c);
    json_decref(*parts);
    *parts = NULL;
    return rc;
}

static int build_contents(const struct llm_request *req, json_t *contents, struct llm_buf *system,
                          struct err *e)
{
    int rc = 0;
    json_t *parts = NULL;
    const char *role = NULL;
    for (size_t i = 0; i < req->n_messages; i++) {
        const struct llm_message *m = &req->messages[i];
        if (m->role == LLM_ROLE_SYSTEM) {
            TRY(llm_system_append(system, m, i, e));
            continue;
        }
        const char *r = m->role == LLM_ROLE_ASSISTANT ? "model" : "user";
        if (parts != NULL && strcmp(role, r) != 0)
            TRY(flush_turn(role, &parts, contents, e));
        if (parts == NULL) {
            role = r;
            parts = json_array();
            NOMEM_IF(parts == NULL);
        }
        TRY(message_parts(req, i, parts, e));
    }
    if (parts != NULL)
        TRY(flush_turn(role, &parts, contents, e));
out:
    json_decref(parts);
    return rc;
}

/* {name, description, parametersJsonSchema}; the proto requires a description. */
static int build_tool(const struct llm_tool_def *t, size_t i, json_t **out, struct err *e)
{
    return llm_tool_decl(t, i, "", "parametersJsonSchema", out, e);
}

static int gemini_build(const struct llm_request *req, const char *base_url,
                        struct llm_wire_http *out, struct err *e)
{
    int rc = 0;
    json_t *body = NULL, *arr = NULL, *decls = NULL, *gc = NULL;
    struct llm_buf system = {0};
    memset(out, 0, sizeof *out);

    if (req->model == NULL || req->model[0] == '\0')
        return err_set(e, ERR_INVALID, "model: required");
    const char *model = req->model;
    if (strncmp(model, "models/", 7) == 0)
        model += 7;
    if (model[0] == '\0')
        return err_set(e, ERR_INVALID, "model: required");
    for (const char *c = model; *c; c++) {
        if (!model_char_ok(*c))
            return err_set(e, ERR_INVALID, "model: only letters, digits, '.', '_' and '-'");
    }
    /* The model is a path segment here, so it is checked before the rest. */
    TRY(llm_wire_prepare(req, base_url, out, e, "/models/", model,
                         req->stream ? STREAM_SUFFIX : GEN_SUFFIX, NULL));

    NOMEM_IF(llm_wire_add_header(out, "Content-Type", "application/json") != 0);
    if (req->api_key != NULL && req->api_key[0] != '\0')
        NOMEM_IF(llm_wire_add_header(out, "x-goog-api-key", req->api_key) != 0);

    body = json_object();
    NOMEM_IF(body == NULL);
    arr = json_array();
    NOMEM_IF(arr == NULL);
    TRY(build_contents(req, arr, &system, e));
    if (json_array_size(arr) == 0) {
        rc = err_set(e, ERR_INVALID, "messages: at least one user or assistant turn is required");
        goto out;
    }
    int set = json_object_set_new(body, "contents", arr); /* steals arr */
    arr = NULL;
    NOMEM_IF(set != 0);
    if (system.len > 0) {
        json_t *si = json_pack("{s:[{s:s}]}", "parts", "text", system.data);
        NOMEM_IF(si == NULL || json_object_set_new(body, "systemInstruction", si) != 0);
    }

    if (req->n_tools > 0) {
        TRY(llm_tools_array(req, build_tool, &decls, e));
        json_t *tools = json_pack("[{s:O}]", "functionDeclarations", decls);
        NOMEM_IF(tools == NULL || json_object_set_new(body, "tools", tools) != 0);
        if (req->tools_forbidden) {
            json_t *tc = json_pack("{s:{s:s}}", "functionCallingConfig", "mode", "NONE");
            NOMEM_IF(tc == NULL || json_object_set_new(body, "toolConfig", tc) != 0);
        }
    }
    gc = json_object();
    NOMEM_IF(gc == NULL);
    if (req->temperature >= 0)
        NOMEM_IF(json_object_set_new(gc, "temperature", json_real(req->temperature)) != 0);
    if (req->max_tokens > 0)
        NOMEM_IF(json_object_set_new(gc, "maxOutputTokens", json_integer(req->max_tokens)) != 0);
    if (json_object_size(gc) > 0)
        NOMEM_IF(json_object_set(body, "generationConfig", gc) != 0);

    out->body = json_dumps(body, JSON_TEXT_FLAGS);
    NOMEM_IF(out->body == NULL);
    out->body_len = strlen(out->body);
out:
    llm_buf_free(&system);
    json_decref(gc);
    json_decref(decls);
    json_decref(arr);
    json_decref(body);
    if (rc != 0)
        llm_wire_http_cleanup(out);
    return rc;
}

/* ---- reply ---- */

static void parse_usage(const json_t *u, struct llm_usage *out)
{
    if (!json_is_object(u))
        return;
    long thoughts = llm_json_count(u, "thoughtsTokenCount");
    out->prompt_tokens = llm_json_count(u, "promptTokenCount");
    out->completion_tokens = llm_json_count(u, "candidatesTokenCount") + thoughts;
    out->total_tokens = json_is_integer(json_object_get(u, "totalTokenCount"))
                            ? llm_json_count(u, "totalTokenCount")
                            : out->prompt_tokens + out->completion_tokens;
    out->cached_tokens = llm_json_count(u, "cachedContentTokenCount");
    out->reasoning_tokens = thoughts;
}

/* Adds a functionCall part as the next tool call; see the file comment for its id. */
static int add_call(struct llm_acc *a, const json_t *part, const json_t *fc, struct err *e)
{
    int rc = 0;
    struct llm_acc_tool *t = NULL;
    const json_t *name = json_object_get(fc, "name");
    if (!json_is_string(name))
        return err_set(e, ERR_INVALID, "reply: functionCall without a name");
    size_t n = a->n_tools;
    /* "reply" in the message when streamed too: this code reads both. */
    TRY(llm_acc_add_tool(a, (long)n, "reply", &t, e));

    const json_t *jid = json_object_get(fc, "id");
    if (json_is_string(jid) && json_string_length(jid) > 0 &&
        strstr(json_string_value(jid), TS_SEP) == NULL) {
        NOMEM_IF(llm_buf_append(&t->id, json_string_value(jid), json_string_length(jid)) != 0);
    } else {
        char synth[32];
        int len = snprintf(synth, sizeof synth, "call_%zu", n);
        NOMEM_IF(llm_buf_append(&t->id, synth, (size_t)len) != 0);
    }
    const json_t *sig = json_object_get(part, "thoughtSignature");
    if (json_is_string(sig) && json_string_length(sig) > 0 &&
        json_string_length(sig) <= MAX_SIGNATURE)
        NOMEM_IF(llm_buf_append(&t->id, TS_SEP, sizeof TS_SEP - 1) != 0 ||
                 llm_buf_append(&t->id, json_string_value(sig), json_string_length(sig)) != 0);
    NOMEM_IF(llm_buf_append(&t->name, json_string_value(name), json_string_length(name)) != 0);
    const json_t *args = json_object_get(fc, "args");
    if (json_is_object(args)) {
        t->init_args = json_dumps(args, JSON_TEXT_FLAGS);
        NOMEM_IF(t->init_args == NULL);
    }
out:
    return rc;
}

/* Reads one GenerateContentResponse into a. `where` names it in messages ("reply",
 * "stream"). A response without candidates is fine in a stream (a usage-only chunk). */
static int read_response(struct llm_acc *a, const json_t *root, bool need_candidate,
                         const char *where, struct err *e)
{
    int rc = 0;
    const json_t *errv = json_object_get(root, "error");
    if (errv != NULL && !json_is_null(errv)) {
        char msg[LLM_WIRE_ERRMSG_MAX + 1];
        return llm_error_in(e, where, msg, llm_error_object_message(root, msg, sizeof msg));
    }
    NOMEM_IF(llm_json_replace(&a->model, json_object_get(root, "modelVersion")) != 0);
    const json_t *usage = json_object_get(root, "usageMetadata");
    if (json_is_object(usage))
        parse_usage(usage, &a->usage);

    const json_t *cand = json_array_get(json_object_get(root, "candidates"), 0);
    if (!json_is_object(cand)) {
        const json_t *block =
            json_object_get(json_object_get(root, "promptFeedback"), "blockReason");
        if (json_is_string(block)) {
            char reason[64];
            llm_copy_bounded(reason, sizeof reason, json_string_value(block),
                             json_string_length(block), sizeof reason - 1);
            return err_set(e, ERR_IO, "prompt blocked: %s", reason);
        }
        if (need_candidate)
            return err_set(e, ERR_INVALID, "%s has no candidates[0]", where);
        return 0;
    }
    NOMEM_IF(llm_json_replace(&a->finish_reason, json_object_get(cand, "finishReason")) != 0);
    const json_t *parts = json_object_get(json_object_get(cand, "content"), "parts");
    size_t i;
    const json_t *part;
    json_array_foreach(parts, i, part)
    {
        const json_t *fc = json_object_get(part, "functionCall");
        if (json_is_object(fc))
            TRY(add_call(a, part, fc, e));
        else if (!json_is_true(json_object_get(part, "thought")))
            NOMEM_IF(llm_acc_text(a, json_object_get(part, "text")) != 0);
    }
out:
    return rc;
}

static int gemini_parse_reply(const char *body, size_t len, struct llm_response **out,
                              struct err *e)
{
    int rc = 0;
    json_error_t je;
    struct llm_acc a;
    llm_acc_init(&a); /* a whole reply: the SSE side stays unused */
    *out = NULL;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!json_is_object(root)) {
        rc = err_set(e, ERR_INVALID, "reply is not valid JSON");
        goto out;
    }
    TRY(read_response(&a, root, true, "reply", e));
    TRY(llm_acc_response(&a, out, e));
out:
    llm_acc_cleanup(&a);
    json_decref(root);
    return rc;
}

static size_t gemini_error_message(const char *body, size_t len, char *buf, size_t cap)
{
    if (cap > 0)
        buf[0] = '\0';
    if (body == NULL || len == 0 || cap == 0)
        return 0;
    while (len > 0 && (*body == ' ' || *body == '\n' || *body == '\r' || *body == '\t')) {
        body++;
        len--;
    }
    /* An error on a ?alt=sse call may come framed as one SSE event. */
    if (len >= 5 && memcmp(body, "data:", 5) == 0) {
        body += 5;
        len -= 5;
    }
    return llm_error_body_message(body, len, buf, cap, llm_error_object_message);
}

/* ---- stream ---- */

/* With ?alt=sse every event is a whole GenerateContentResponse holding only the new parts;
 * there is no terminator: the stream is complete once a chunk carried a finishReason. */
struct llm_stream {
    struct llm_acc acc;
};
_Static_assert(offsetof(struct llm_stream, acc) == 0, "the llm_stream_* entries need acc first");

static int stream_event(void *arg, const char *event, const char *data, size_t len, struct err *e)
{
    struct llm_stream *s = arg;
    json_error_t je;
    (void)event;
    json_t *root = json_loadb(data, len, 0, &je);
    if (!json_is_object(root)) {
        json_decref(root);
        return err_set(e, ERR_INVALID, "stream event is not valid JSON");
    }
    int rc = read_response(&s->acc, root, false, "stream", e);
    json_decref(root);
    return rc;
}

static int gemini_stream_new(struct llm_stream **out)
{
    return llm_stream_new(sizeof(struct llm_stream), stream_event, "a finishReason", out);
}

const struct llm_wire llm_wire_gemini = {
    .name = "gemini-generate-content",
    .build = gemini_build,
    .parse_reply = gemini_parse_reply,
    .error_message = gemini_error_message,
    .stream_new = gemini_stream_new,
    .stream_feed = llm_stream_feed,
    .stream_end = llm_stream_end,
    .stream_free = llm_stream_free,
};
