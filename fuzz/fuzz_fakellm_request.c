/*
 * fuzz_fakellm_request.c - libFuzzer target for crewd-fakellm's request handling, the pure
 * functions of fakellm/reply.c (compiled into this target; see CMakeLists.txt): body
 * validation, the [[fake:NAME=VALUE]] directives, the default reply text, and the
 * chat.completion / chat.completion.chunk documents; and the same body through the Anthropic
 * and Gemini normalizers of fakellm/anthropic.c and gemini.c and their documents. The body is
 * loaded as fakellm.c does.
 *
 * Checks: a refusal carries a message JSON can hold (chat.c sends it in an error body); an
 * accepted request parses the same twice (replies are deterministic), has a short valid
 * excerpt, and its reply documents build (they can only fail for lack of memory) and carry
 * exactly the reply's text and tool arguments, the streamed ones piece by piece.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/utf8.h"
#include "fakellm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool valid_text(const char *s)
{
    return s != NULL && utf8_valid(s, strlen(s));
}

static const char *choice_str(json_t *doc, const char *field, const char *key)
{
    json_t *c = json_array_get(json_object_get(doc, "choices"), 0);
    return json_string_value(json_object_get(json_object_get(c, field), key));
}

/* The whole reply: the completion's message matches what was asked for. */
static void check_completion(const struct fake_reply *r)
{
    json_t *doc = fake_reply_json(r);
    if (doc == NULL)
        abort();
    char *s = json_dumps(doc, JSON_COMPACT);
    if (s == NULL)
        abort();
    free(s);
    if (r->text != NULL) {
        const char *content = choice_str(doc, "message", "content");
        if (content == NULL || strcmp(content, r->text) != 0)
            abort();
    } else {
        json_t *calls = json_object_get(
            json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "message"),
            "tool_calls");
        if (json_array_size(calls) != r->n_tools)
            abort();
        for (size_t i = 0; i < r->n_tools; i++) {
            json_t *fn = json_object_get(json_array_get(calls, i), "function");
            const char *name = json_string_value(json_object_get(fn, "name"));
            const char *args = json_string_value(json_object_get(fn, "arguments"));
            if (name == NULL || args == NULL || strcmp(name, r->tools[i].name) != 0 ||
                strcmp(args, r->tools[i].args) != 0)
                abort();
        }
    }
    json_decref(doc);
}

/* Appends s to the growing string *acc (of *len bytes). */
static void append(char **acc, size_t *len, const char *s)
{
    size_t n = strlen(s);
    char *p = realloc(*acc, *len + n + 1);
    if (p == NULL)
        abort();
    memcpy(p + *len, s, n + 1);
    *acc = p;
    *len += n;
}

/* The streamed reply: the deltas put back together are the text (or each tool's arguments). */
static void check_chunks(const struct fake_reply *r, bool include_usage)
{
    json_t *chunks = fake_reply_chunks(r, include_usage);
    if (chunks == NULL)
        abort();
    size_t n_tools = r->text ? 1 : r->n_tools;
    char **acc = calloc(n_tools ? n_tools : 1, sizeof *acc);
    size_t *len = calloc(n_tools ? n_tools : 1, sizeof *len);
    if (acc == NULL || len == NULL)
        abort();
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        char *s = json_dumps(c, JSON_COMPACT);
        if (s == NULL)
            abort();
        free(s);
        json_t *choice = json_array_get(json_object_get(c, "choices"), 0);
        json_t *delta = json_object_get(choice, "delta");
        if (r->text != NULL) {
            const char *piece = json_string_value(json_object_get(delta, "content"));
            if (piece != NULL)
                append(&acc[0], &len[0], piece);
            continue;
        }
        json_t *call = json_array_get(json_object_get(delta, "tool_calls"), 0);
        if (call == NULL)
            continue;
        json_int_t idx = json_integer_value(json_object_get(call, "index"));
        const char *piece =
            json_string_value(json_object_get(json_object_get(call, "function"), "arguments"));
        if (idx < 0 || (size_t)idx >= n_tools || piece == NULL)
            abort();
        append(&acc[idx], &len[idx], piece);
    }
    for (size_t k = 0; k < n_tools; k++) {
        const char *want = r->text ? r->text : r->tools[k].args;
        if (strcmp(acc[k] ? acc[k] : "", want) != 0)
            abort();
        free(acc[k]);
    }
    free(acc);
    free(len);
    json_decref(chunks);
}

/* The documents of another wire build for this reply and carry its text or tool input. */
static void check_other_wire(enum fake_wire wire, const struct fake_reply *r)
{
    json_t *doc = wire == FAKE_WIRE_ANTHROPIC ? fake_anthropic_reply_json(r)
                                              : fake_gemini_reply_json(r);
    json_t *stream = wire == FAKE_WIRE_ANTHROPIC ? fake_anthropic_events(r) : fake_gemini_chunks(r);
    json_t *err = wire == FAKE_WIRE_ANTHROPIC ? fake_anthropic_error_json(529, "x", 7)
                                              : fake_gemini_error_json(503, "x");
    if (doc == NULL || stream == NULL || err == NULL)
        abort();
    /* The text (or the first tool's arguments) put back together from the stream. */
    char *acc = NULL;
    size_t len = 0;
    append(&acc, &len, "");
    size_t i;
    json_t *e;
    json_array_foreach(stream, i, e)
    {
        char *s = json_dumps(e, JSON_COMPACT);
        if (s == NULL)
            abort();
        free(s);
        const char *piece = NULL;
        if (wire == FAKE_WIRE_ANTHROPIC) {
            json_t *delta = json_object_get(e, "delta");
            if (json_integer_value(json_object_get(e, "index")) != 0)
                continue;
            piece = json_string_value(json_object_get(delta, r->text ? "text" : "partial_json"));
        } else if (r->text != NULL) {
            json_t *c = json_object_get(json_array_get(json_object_get(e, "candidates"), 0),
                                        "content");
            piece = json_string_value(json_object_get(json_array_get(json_object_get(c, "parts"), 0),
                                                      "text"));
            if (piece == NULL)
                abort();
        }
        if (piece != NULL)
            append(&acc, &len, piece);
    }
    if (r->text != NULL ? strcmp(acc, r->text) != 0
                        : wire == FAKE_WIRE_ANTHROPIC && strcmp(acc, r->tools[0].args) != 0)
        abort();
    free(acc);
    json_decref(doc);
    json_decref(stream);
    json_decref(err);
}

/* The body as an Anthropic or Gemini request: refused with a message, or normalized into a
 * conversation whose replies build on every wire. */
static void fuzz_wire(enum fake_wire wire, json_t *body)
{
    struct fake_chat_input in, again;
    struct fake_route route = {.wire = wire, .model = "gemini-fuzz", .stream = true, .sse = true};
    char err[256] = "";
    int rc = wire == FAKE_WIRE_ANTHROPIC ? fake_anthropic_input_parse(body, &in, err, sizeof err)
                                         : fake_gemini_input_parse(body, &route, &in, err,
                                                                   sizeof err);
    if (rc != 0) {
        json_t *msg = json_string(err);
        if (err[0] == '\0' || msg == NULL)
            abort();
        json_decref(msg);
        fake_chat_input_cleanup(&in);
        return;
    }
    rc = wire == FAKE_WIRE_ANTHROPIC ? fake_anthropic_input_parse(body, &again, err, sizeof err)
                                     : fake_gemini_input_parse(body, &route, &again, err,
                                                               sizeof err);
    if (rc != 0 || again.hash != in.hash || strcmp(again.excerpt, in.excerpt) != 0 ||
        again.d.n_tools != in.d.n_tools || in.wire != wire || in.model == NULL ||
        !valid_text(in.excerpt) || strlen(in.excerpt) > 60)
        abort();
    fake_chat_input_cleanup(&again);
    char *text = fake_default_text(&in);
    if (!valid_text(text))
        abort();
    struct fake_reply r = {
        .n = in.hash % 1000,
        .created_s = 1700000000,
        .model = in.model,
        .prompt_tokens = fake_tokens(in.content_bytes),
        .completion_tokens = 1,
    };
    if (in.d.n_tools > 0 && !in.has_tool_message) {
        r.tools = in.d.tools;
        r.n_tools = in.d.n_tools;
        for (size_t i = 0; i < r.n_tools; i++) {
            json_t *o = fake_tool_args_object(&r.tools[i]);
            if (o == NULL) /* the parser refuses ARGS_JSON that is not an object */
                abort();
            json_decref(o);
        }
    } else {
        r.text = in.d.reply ? in.d.reply : in.tool_results ? in.tool_results : text;
        if (!valid_text(r.text))
            abort();
    }
    check_other_wire(FAKE_WIRE_ANTHROPIC, &r);
    check_other_wire(FAKE_WIRE_GEMINI, &r);
    check_completion(&r);
    free(text);
    fake_chat_input_cleanup(&in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    if (body == NULL)
        return 0;
    fuzz_wire(FAKE_WIRE_ANTHROPIC, body);
    fuzz_wire(FAKE_WIRE_GEMINI, body);
    struct fake_chat_input in, again;
    char err[256] = "";
    if (fake_chat_input_parse(body, &in, err, sizeof err) != 0) {
        /* chat.c answers 400 with this message inside a JSON error body. */
        json_t *msg = json_string(err);
        if (err[0] == '\0' || msg == NULL)
            abort();
        json_decref(msg);
        fake_chat_input_cleanup(&in);
        json_decref(body);
        return 0;
    }
    if (fake_chat_input_parse(body, &again, err, sizeof err) != 0 || again.hash != in.hash ||
        strcmp(again.excerpt, in.excerpt) != 0 || again.d.n_tools != in.d.n_tools)
        abort();
    fake_chat_input_cleanup(&again);

    if (!valid_text(in.excerpt) || strlen(in.excerpt) > 60 || in.model == NULL)
        abort();
    if (in.d.n_tools > FAKE_MAX_TOOLS)
        abort();
    if (in.d.status != 0 && (in.d.status < 400 || in.d.status > 599))
        abort();
    if (in.d.reply_seq != NULL &&
        (in.d.reply_seq_value < in.d.reply_seq ||
         in.d.reply_seq_value + in.d.reply_seq_value_len > in.d.reply_seq + strlen(in.d.reply_seq)))
        abort();

    char *text = fake_default_text(&in);
    if (!valid_text(text) || strncmp(text, "fake-reply ", 11) != 0)
        abort();

    struct fake_reply r = {
        .n = in.hash % 1000,
        .created_s = 1700000000,
        .model = in.model,
        .prompt_tokens = fake_tokens(in.content_bytes),
    };
    /* As chat.c's decide(): tool calls unless a tool already answered; else the text. */
    if (in.d.n_tools > 0 && !in.has_tool_message) {
        r.tools = in.d.tools;
        r.n_tools = in.d.n_tools;
        for (size_t i = 0; i < r.n_tools; i++)
            if (!valid_text(r.tools[i].name) || r.tools[i].name[0] == '\0' ||
                !valid_text(r.tools[i].args))
                abort();
        r.completion_tokens = 1;
    } else {
        r.text = in.d.reply ? in.d.reply : in.tool_results ? in.tool_results : text;
        if (!valid_text(r.text))
            abort();
        r.completion_tokens = fake_tokens(strlen(r.text));
    }
    check_completion(&r);
    check_chunks(&r, in.include_usage);
    /* The default text, too, whatever the directives chose. */
    if (r.text != text) {
        struct fake_reply d = r;
        d.text = text;
        d.tools = NULL;
        d.n_tools = 0;
        check_completion(&d);
        check_chunks(&d, !in.include_usage);
    }
    free(text);
    fake_chat_input_cleanup(&in);
    json_decref(body);
    return 0;
}
