/*
 * test_llm_wire_e2e.c - the Anthropic and Gemini wires through the real client (llm.c): an
 * in-process evhttp server on 127.0.0.1:0 answers with a recorded reply (JSON, or SSE sent in
 * uneven chunks) and records what crewd sent: path, auth headers, body. One plain and one
 * streamed call per provider, plus an HTTP error body. test_llm_client.c covers the transport.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#include "llm/llm.h"

#define FIXTURES CREWD_SOURCE_DIR "/tests/fixtures/"
#define GUARD_MS 10000

struct srv {
    struct event_base *base;
    struct evhttp *http;
    int port;
    int status;
    const char *content_type;
    const char *body;
    char uri[512];
    char auth[256], x_api_key[256], goog_key[256], version[64];
    char *req_body;
};

static void copy_header(struct evkeyvalq *h, const char *name, char *buf, size_t cap)
{
    const char *v = evhttp_find_header(h, name);
    snprintf(buf, cap, "%s", v ? v : "");
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct srv *s = arg;
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    snprintf(s->uri, sizeof s->uri, "%s", evhttp_request_get_uri(req));
    copy_header(in, "Authorization", s->auth, sizeof s->auth);
    copy_header(in, "x-api-key", s->x_api_key, sizeof s->x_api_key);
    copy_header(in, "x-goog-api-key", s->goog_key, sizeof s->goog_key);
    copy_header(in, "anthropic-version", s->version, sizeof s->version);
    struct evbuffer *ib = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(ib);
    free(s->req_body);
    s->req_body = calloc(1, n + 1);
    evbuffer_copyout(ib, s->req_body, n);

    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_add_header(out, "Content-Type", s->content_type);
    struct evbuffer *buf = evbuffer_new();
    if (strncmp(s->content_type, "text/event-stream", 17) == 0) {
        evhttp_send_reply_start(req, s->status, "OK");
        size_t len = strlen(s->body), step = 97; /* events straddle the chunks */
        for (size_t off = 0; off < len; off += step) {
            evbuffer_add(buf, s->body + off, len - off < step ? len - off : step);
            evhttp_send_reply_chunk(req, buf);
        }
        evhttp_send_reply_end(req);
    } else {
        evbuffer_add(buf, s->body, strlen(s->body));
        evhttp_send_reply(req, s->status, "X", buf);
    }
    evbuffer_free(buf);
}

struct result {
    int n_done, rc;
    struct err e;
    struct llm_response *resp;
    char deltas[16384];
    size_t n_delta;
};

static void on_done(void *arg, int rc, struct llm_response *resp, const struct err *e,
                    const struct llm_call_info *info)
{
    struct result *r = arg;
    (void)info;
    r->n_done++;
    r->rc = rc;
    if (e != NULL)
        r->e = *e;
    r->resp = resp;
}

static void on_delta(void *arg, const char *text, size_t len)
{
    struct result *r = arg;
    assert_true(r->n_delta + len < sizeof r->deltas);
    memcpy(r->deltas + r->n_delta, text, len);
    r->n_delta += len;
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    *(bool *)arg = true;
}

/* Runs one call of `req` against a server answering status/content_type/body. */
static void run_call(struct srv *s, struct llm_request *req, struct result *r)
{
    memset(r, 0, sizeof *r);
    s->base = event_base_new();
    s->http = evhttp_new(s->base);
    evhttp_set_gencb(s->http, on_request, s);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    s->port = ntohs(sin.sin_port);
    char base_url[64];
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d/v1", s->port);
    req->base_url = base_url;

    struct llm_client *client = NULL;
    struct llm_client_opts o = {.max_attempts = 1};
    struct err e = {0};
    assert_int_equal(llm_client_new(s->base, &o, &client, &e), 0);
    struct llm_call_opts co = {.on_done = on_done, .on_delta = on_delta, .arg = r};
    if (llm_call_start(client, req, &co, NULL, &e) != 0)
        fail_msg("llm_call_start: %s", e.msg);
    bool fired = false;
    struct event *guard = evtimer_new(s->base, on_guard, &fired);
    struct timeval tv = {GUARD_MS / 1000, 0};
    evtimer_add(guard, &tv);
    while (r->n_done == 0 && !fired)
        event_base_loop(s->base, EVLOOP_ONCE);
    event_free(guard);
    if (fired)
        fail_msg("no callback within %d ms", GUARD_MS);
    llm_client_free(client);
    evhttp_free(s->http);
    event_base_free(s->base);
    req->base_url = NULL;
}

static json_t *load(const char *name)
{
    json_error_t je;
    json_t *j = json_load_file(name, 0, &je);
    if (j == NULL)
        fail_msg("%s: %s", name, je.text);
    return j;
}

static const json_t *anth_interaction(const json_t *rx, size_t r, size_t k)
{
    return json_array_get(
        json_object_get(json_array_get(json_object_get(rx, "recordings"), r), "interactions"), k);
}

static void test_anthropic(void **state)
{
    json_t *rx = load(FIXTURES "anthropic/recorded-exchanges.json");
    struct llm_message msg = {.role = LLM_ROLE_USER, .content = "What is the weather in SF?"};
    struct llm_request req = {.provider = "anthropic",
                              .model = "claude-haiku-4-5",
                              .api_key = "sk-ant-secret",
                              .messages = &msg,
                              .n_messages = 1,
                              .temperature = -1};
    struct srv s = {.status = 200, .content_type = "application/json"};
    char *body = json_dumps(
        json_object_get(json_object_get(anth_interaction(rx, 0, 0), "response"), "body"), 0);
    s.body = body;
    struct result r;
    run_call(&s, &req, &r);
    if (r.rc != 0)
        fail_msg("%s", r.e.msg);
    assert_string_equal(s.uri, "/v1/messages");
    assert_string_equal(s.x_api_key, "sk-ant-secret");
    assert_string_equal(s.auth, "");
    assert_string_equal(s.version, "2023-06-01");
    assert_non_null(strstr(s.req_body, "\"max_tokens\":4096"));
    assert_int_equal(r.resp->n_tool_calls, 1);
    assert_string_equal(r.resp->tool_calls[0].name, "get_weather");
    assert_string_equal(r.resp->finish_reason, "tool_use");
    llm_response_free(r.resp);
    free(body);

    /* Streamed: the recorded text answer of the streaming tool loop. */
    const json_t *it = anth_interaction(rx, 1, 1);
    s.content_type = "text/event-stream; charset=utf-8";
    s.body = json_string_value(json_object_get(json_object_get(it, "response"), "body"));
    req.stream = true;
    req.api_key = NULL;
    run_call(&s, &req, &r);
    if (r.rc != 0)
        fail_msg("%s", r.e.msg);
    assert_string_equal(s.x_api_key, ""); /* no key, no header */
    assert_non_null(strstr(s.req_body, "\"stream\":true"));
    assert_true(strlen(r.resp->text) > 0);
    assert_int_equal(r.n_delta, strlen(r.resp->text));
    assert_memory_equal(r.deltas, r.resp->text, r.n_delta);
    assert_string_equal(r.resp->finish_reason, "end_turn");
    llm_response_free(r.resp);

    /* An HTTP error: the provider's message. */
    it = anth_interaction(rx, 3, 1);
    body = json_dumps(json_object_get(json_object_get(it, "response"), "body"), 0);
    s.status = 400;
    s.content_type = "application/json";
    s.body = body;
    req.stream = false;
    run_call(&s, &req, &r);
    assert_int_equal(r.rc, ERR_IO);
    assert_true(strncmp(r.e.msg, "anthropic: HTTP 400: messages.0.content.1: unexpected", 53) == 0);
    free(body);
    free(s.req_body);
    json_decref(rx);
}

static const json_t *gem_interaction(const json_t *rx, size_t r, size_t k)
{
    const json_t *rec = json_array_get(json_object_get(rx, "recordings"), r);
    return json_array_get(json_object_get(json_object_get(rec, "recording"), "interactions"), k);
}

static const json_t *gem_segments(const json_t *it)
{
    return json_object_get(json_object_get(it, "response"), "bodySegments");
}

static void test_gemini(void **state)
{
    json_t *rx = load(FIXTURES "gemini/recorded-exchanges.json");
    struct llm_message msg = {.role = LLM_ROLE_USER, .content = "Divide 10 by 2"};
    struct llm_request req = {.provider = "gemini", /* an alias of google */
                              .model = "gemini-2.0-flash",
                              .api_key = "AIza-secret",
                              .messages = &msg,
                              .n_messages = 1,
                              .temperature = -1};
    struct srv s = {.status = 200, .content_type = "application/json; charset=UTF-8"};
    char *body = json_dumps(json_array_get(gem_segments(gem_interaction(rx, 0, 0)), 0), 0);
    s.body = body;
    struct result r;
    run_call(&s, &req, &r);
    if (r.rc != 0)
        fail_msg("%s", r.e.msg);
    assert_string_equal(s.uri, "/v1/models/gemini-2.0-flash:generateContent");
    assert_string_equal(s.goog_key, "AIza-secret");
    assert_string_equal(s.auth, "");
    assert_int_equal(r.resp->n_tool_calls, 1);
    assert_string_equal(r.resp->tool_calls[0].id, "call_0");
    assert_string_equal(r.resp->tool_calls[0].name, "customDivide");
    assert_int_equal(r.resp->usage.total_tokens, 23);
    llm_response_free(r.resp);
    free(body);

    /* Streamed: the recorded six text chunks, framed as the SDK reads them. */
    const json_t *segs = gem_segments(gem_interaction(rx, 2, 0));
    size_t i;
    const json_t *seg;
    char *sse = calloc(1, 1);
    size_t len = 0;
    json_array_foreach(segs, i, seg)
    {
        char *j = json_dumps(seg, JSON_COMPACT);
        size_t n = strlen(j) + 16;
        sse = realloc(sse, len + n);
        len += (size_t)snprintf(sse + len, n, "data: %s\r\n\r\n", j);
        free(j);
    }
    s.content_type = "text/event-stream";
    s.body = sse;
    req.stream = true;
    run_call(&s, &req, &r);
    if (r.rc != 0)
        fail_msg("%s", r.e.msg);
    assert_string_equal(s.uri, "/v1/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
    assert_true(strncmp(r.resp->text, "low!", 4) == 0);
    assert_int_equal(r.n_delta, strlen(r.resp->text));
    assert_memory_equal(r.deltas, r.resp->text, r.n_delta);
    assert_int_equal(r.resp->usage.reasoning_tokens, 260);
    llm_response_free(r.resp);
    free(sse);

    /* The recorded 404 of a streamed call (served as text/event-stream, not streamed). */
    body = json_dumps(json_array_get(gem_segments(gem_interaction(rx, 5, 0)), 0), JSON_INDENT(2));
    s.status = 404;
    s.body = body;
    run_call(&s, &req, &r);
    assert_int_equal(r.rc, ERR_IO);
    assert_true(
        strncmp(r.e.msg, "google: HTTP 404: models/custom-gemini-2.0-flash is not found", 61) == 0);
    free(body);
    free(s.req_body);
    json_decref(rx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anthropic),
        cmocka_unit_test(test_gemini),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
