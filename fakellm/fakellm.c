/*
 * fakellm.c - crewd-fakellm: a scripted LLM server for tests and benchmarks that speaks the
 * OpenAI chat completions, Anthropic Messages and Gemini generateContent wires. This file
 * holds the command line, the listener, the signals, the routing and the /_fake/ control
 * endpoints; chat.c answers the LLM calls (fakellm/README.md).
 *
 * Everything runs on one libevent loop without blocking: latency is a timer per request, so
 * thousands of concurrent waiting calls cost a few hundred bytes each, not a thread.
 */
#include "fakellm.h"

#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "core/clock.h"
#include "core/json_text.h"
#include "core/log.h"

#define LISTEN_BACKLOG 4096 /* 10k clients may connect at once; the kernel caps it anyway */
#define ACCEPT_PAUSE_MS 100
#define MAX_HEADER_BYTES (64 * 1024)
#define DEFAULT_MAX_LOG 100000
#define MAX_DELAY_MS (3600 * 1000)

static const char USAGE[] =
    "usage: crewd-fakellm [--listen 127.0.0.1:PORT] [--latency-ms N] [--jitter-ms N]\n"
    "                     [--fail-rate P] [--fail-status 429,500,502,503,504]\n"
    "                     [--retry-after S] [--seed N] [--max-log N] [--log-bodies 0|1]\n"
    "                     [--help]\n"
    "A fake LLM server for tests: OpenAI chat completions, Anthropic messages and Gemini\n"
    "generateContent (see fakellm/README.md).\n";

/*
 * libevent 2.1 answers the errors it detects itself (oversized body, malformed request,
 * unsupported method) through evhttp_send_error(), which writes an HTML page and takes no
 * context. Defining the function here replaces libevent's (crewd_lib's link options export
 * it, CMakeLists.txt) so that those answers carry OpenAI's JSON error body too; this pointer
 * to the one server of the process is how it reaches the log and the stats.
 */
static struct fake_app *libevent_error_app;

/* ---- small helpers ------------------------------------------------------------------------ */

uint64_t fake_rand(struct fake_app *app)
{
    /* splitmix64: tiny, good enough, and fully determined by --seed. */
    uint64_t z = (app->prng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double fake_rand_unit(struct fake_app *app)
{
    return (double)(fake_rand(app) >> 11) * (1.0 / 9007199254740992.0);
}

bool fake_fail_status_allowed(long status)
{
    return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Error";
    }
}

json_t *fake_error_json(int status, const char *message)
{
    /* The shapes OpenAI sends: 429 is a rate limit, 5xx a server error, the rest invalid
     * requests (401 with the code of a bad key). */
    const char *type = "invalid_request_error";
    const char *code = NULL;
    if (status == 429) {
        type = "requests";
        code = "rate_limit_exceeded";
    } else if (status >= 500) {
        type = "server_error";
    } else if (status == 401) {
        code = "invalid_api_key";
    }
    return json_pack("{s{sssssnss?}}", "error", "message", message, "type", type, "param", "code",
                     code);
}

json_t *fake_wire_error_json(enum fake_wire wire, int status, const char *message, uint64_t seq)
{
    switch (wire) {
    case FAKE_WIRE_ANTHROPIC:
        return fake_anthropic_error_json(status, message, seq);
    case FAKE_WIRE_GEMINI:
        return fake_gemini_error_json(status, message);
    case FAKE_WIRE_OPENAI:
    default:
        return fake_error_json(status, message);
    }
}

void fake_send_json(struct evhttp_request *req, int status, json_t *body)
{
    struct evbuffer *buf = evbuffer_new();
    char *text = body ? json_dumps(body, JSON_TEXT_FLAGS) : NULL;
    json_decref(body);
    if (buf == NULL || text == NULL) {
        free(text);
        if (buf)
            evbuffer_free(buf);
        evhttp_send_reply(req, 500, "Internal Server Error", NULL);
        return;
    }
    evbuffer_add(buf, text, strlen(text));
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, status, reason_phrase(status), buf);
    evbuffer_free(buf);
}

void fake_note_status(struct fake_app *app, uint64_t seq, int status)
{
    if (status >= 0 && status < 600)
        app->stats.by_status[status]++;
    struct fake_log_entry *e = fake_log_find(&app->log, seq);
    if (e != NULL)
        e->status = status;
}

/* A JSON string of bytes that may not be UTF-8: bytes of a bad sequence become '?'. */
static json_t *lossy_string(const char *s, size_t len)
{
    json_t *j = json_stringn(s, len);
    if (j != NULL)
        return j;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return NULL;
    for (size_t i = 0; i < len; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    j = json_stringn(copy, len);
    free(copy);
    return j;
}

static json_t *headers_json(struct evkeyvalq *in)
{
    json_t *h = json_object();
    if (h == NULL || in == NULL)
        return h;
    struct evkeyval *kv;
    TAILQ_FOREACH(kv, in, next)
    {
        char name[128];
        size_t n = 0;
        for (; kv->key[n] && n < sizeof name - 1; n++) {
            unsigned char c = (unsigned char)kv->key[n];
            name[n] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c < 0x80 ? (char)c : '?';
        }
        name[n] = '\0';
        json_t *v = lossy_string(kv->value, strlen(kv->value));
        json_t *old = json_object_get(h, name);
        if (v != NULL && json_is_string(old)) {
            /* Repeated header: joined as HTTP allows, "a, b". */
            size_t len = json_string_length(old) + json_string_length(v) + 3;
            char *joined = malloc(len);
            if (joined != NULL) {
                snprintf(joined, len, "%s, %s", json_string_value(old), json_string_value(v));
                json_decref(v);
                v = lossy_string(joined, strlen(joined));
                free(joined);
            }
        }
        if (v != NULL)
            json_object_set_new(h, name, v);
    }
    return h;
}

static const char *method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "?";
    }
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

/* Which LLM wire `path` belongs to; false for none. For Gemini, fills the model (malloc'd
 * into *model_out, freed by the caller), the streaming and, from the query, the framing. */
static bool route_of(const char *path, const char *query, struct fake_route *route,
                     char **model_out)
{
    memset(route, 0, sizeof *route);
    *model_out = NULL;
    if (ends_with(path, "/chat/completions")) {
        route->wire = FAKE_WIRE_OPENAI;
        return true;
    }
    if (ends_with(path, "/messages")) {
        route->wire = FAKE_WIRE_ANTHROPIC;
        return true;
    }
    /* .../models/{model}:generateContent | .../models/{model}:streamGenerateContent */
    const char *seg = strrchr(path, '/');
    const char *colon = seg ? strrchr(seg, ':') : NULL;
    if (colon == NULL || colon == seg + 1)
        return false;
    bool stream = strcmp(colon, ":streamGenerateContent") == 0;
    if (!stream && strcmp(colon, ":generateContent") != 0)
        return false;
    static const char models[] = "/models";
    size_t prefix = (size_t)(seg - path);
    if (prefix < sizeof models - 1 ||
        memcmp(seg - (sizeof models - 1), models, sizeof models - 1) != 0)
        return false;
    size_t n = (size_t)(colon - (seg + 1));
    char *model = malloc(n + 1);
    if (model == NULL)
        return false;
    memcpy(model, seg + 1, n);
    model[n] = '\0';
    route->wire = FAKE_WIRE_GEMINI;
    route->model = model;
    route->stream = stream;
    if (query != NULL) {
        struct evkeyvalq q;
        TAILQ_INIT(&q);
        if (evhttp_parse_query_str(query, &q) == 0) {
            const char *alt = evhttp_find_header(&q, "alt");
            route->sse = alt != NULL && strcmp(alt, "sse") == 0;
        }
        evhttp_clear_headers(&q);
    }
    *model_out = model;
    return true;
}

/* ---- control endpoints -------------------------------------------------------------------- */

static json_t *config_json(const struct fake_app *app)
{
    const struct fake_config *c = &app->cfg;
    json_t *fs = json_array();
    for (size_t i = 0; fs != NULL && i < c->n_fail_status; i++)
        json_array_append_new(fs, json_integer(c->fail_status[i]));
    return json_pack("{sIsIsfsosIsIsIsb}", "latency_ms", (json_int_t)c->latency_ms, "jitter_ms",
                     (json_int_t)c->jitter_ms, "fail_rate", c->fail_rate, "fail_status", fs,
                     "retry_after", (json_int_t)c->retry_after_s, "seed", (json_int_t)c->seed,
                     "max_log", (json_int_t)c->max_log, "log_bodies", c->log_bodies);
}

static bool json_ms(json_t *v, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > MAX_DELAY_MS)
        return false;
    *out = json_integer_value(v);
    return true;
}

/* POST /_fake/config: every key is checked before any is applied. */
static int config_update(struct fake_app *app, json_t *body, char *err, size_t err_len)
{
    if (!json_is_object(body)) {
        snprintf(err, err_len, "the body must be a JSON object");
        return -1;
    }
    struct fake_config c = app->cfg;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "latency_ms") == 0) {
            if (!json_ms(v, &c.latency_ms))
                goto bad;
        } else if (strcmp(key, "jitter_ms") == 0) {
            if (!json_ms(v, &c.jitter_ms))
                goto bad;
        } else if (strcmp(key, "retry_after") == 0) {
            if (!json_ms(v, &c.retry_after_s))
                goto bad;
        } else if (strcmp(key, "fail_rate") == 0) {
            if (!json_is_number(v) || json_number_value(v) < 0 || json_number_value(v) > 1)
                goto bad;
            c.fail_rate = json_number_value(v);
        } else if (strcmp(key, "log_bodies") == 0) {
            if (!json_is_boolean(v))
                goto bad;
            c.log_bodies = json_is_true(v);
        } else if (strcmp(key, "fail_status") == 0) {
            if (!json_is_array(v) || json_array_size(v) == 0 ||
                json_array_size(v) > FAKE_MAX_FAIL_STATUS)
                goto bad;
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s)
            {
                if (!json_is_integer(s) || !fake_fail_status_allowed((long)json_integer_value(s)))
                    goto bad;
                c.fail_status[i] = (int)json_integer_value(s);
            }
            c.n_fail_status = json_array_size(v);
        } else {
            snprintf(err, err_len, "unknown config key '%.60s'", key);
            return -1;
        }
        continue;
    bad:
        snprintf(err, err_len, "bad value for config key '%s'", key);
        return -1;
    }
    app->cfg = c;
    return 0;
}

static json_t *stats_json(const struct fake_app *app)
{
    json_t *by = json_object();
    for (int s = 0; by != NULL && s < 600; s++) {
        if (app->stats.by_status[s] == 0)
            continue;
        char k[8];
        snprintf(k, sizeof k, "%d", s);
        json_object_set_new(by, k, json_integer((json_int_t)app->stats.by_status[s]));
    }
    return json_pack("{sIsosIsIsI}", "requests", (json_int_t)app->stats.requests, "by_status", by,
                     "in_flight", (json_int_t)app->stats.in_flight, "max_in_flight",
                     (json_int_t)app->stats.max_in_flight, "client_closed",
                     (json_int_t)app->stats.client_closed);
}

static void control(struct fake_app *app, struct evhttp_request *req, const char *path,
                    const char *query, json_t *body)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    const char *name = path + strlen("/_fake/");
    char err[160];
    bool get = cmd == EVHTTP_REQ_GET, post = cmd == EVHTTP_REQ_POST;

    if (strcmp(name, "health") == 0) {
        if (get) {
            fake_send_json(req, 200, json_pack("{sb}", "ok", 1));
            return;
        }
    } else if (strcmp(name, "requests") == 0) {
        if (get) {
            uint64_t since = 0;
            struct evkeyvalq q;
            TAILQ_INIT(&q);
            if (query != NULL && evhttp_parse_query_str(query, &q) == 0) {
                const char *s = evhttp_find_header(&q, "since");
                char *end = NULL;
                errno = 0;
                unsigned long long v = s ? strtoull(s, &end, 10) : 0;
                if (s != NULL && (*s == '\0' || *s == '-' || *end != '\0' || errno != 0)) {
                    evhttp_clear_headers(&q);
                    {
                        fake_send_json(req, 400, fake_error_json(400, "bad 'since'"));
                        return;
                    }
                }
                since = v;
            }
            evhttp_clear_headers(&q);
            {
                fake_send_json(req, 200, fake_log_json(&app->log, since));
                return;
            }
        }
        if (cmd == EVHTTP_REQ_DELETE) {
            fake_log_clear(&app->log);
            {
                fake_send_json(req, 200, json_pack("{sb}", "ok", 1));
                return;
            }
        }
    } else if (strcmp(name, "config") == 0) {
        if (get) {
            fake_send_json(req, 200, config_json(app));
            return;
        }
        if (post) {
            if (config_update(app, body, err, sizeof err) < 0) {
                fake_send_json(req, 400, fake_error_json(400, err));
                return;
            }
            {
                fake_send_json(req, 200, config_json(app));
                return;
            }
        }
    } else if (strcmp(name, "stats") == 0) {
        if (get) {
            fake_send_json(req, 200, stats_json(app));
            return;
        }
    } else if (strcmp(name, "reset") == 0) {
        if (post) {
            /* Everything a test may have left behind, except what is still in flight. */
            fake_log_clear(&app->log);
            fake_counters_cleanup(&app->seq_counters);
            fake_counters_cleanup(&app->fail_counters);
            uint64_t in_flight = app->stats.in_flight;
            memset(&app->stats, 0, sizeof app->stats);
            app->stats.in_flight = app->stats.max_in_flight = in_flight;
            {
                fake_send_json(req, 200, json_pack("{sb}", "ok", 1));
                return;
            }
        }
    } else {
        snprintf(err, sizeof err, "unknown control endpoint %.100s", path);
        {
            fake_send_json(req, 404, fake_error_json(404, err));
            return;
        }
    }
    snprintf(err, sizeof err, "method %s not allowed on %.100s", method_name(cmd), path);
    fake_send_json(req, 405, fake_error_json(405, err));
}

/* ---- requests ----------------------------------------------------------------------------- */

static void on_request(struct evhttp_request *req, void *arg)
{
    struct fake_app *app = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (path == NULL || path[0] == '\0')
        path = "/";
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = in ? evbuffer_get_length(in) : 0;
    const char *data = len ? (const char *)evbuffer_pullup(in, -1) : "";
    json_t *parsed = len && data ? json_loadb(data, len, 0, NULL) : NULL;

    if (strncmp(path, "/_fake/", 7) == 0) {
        control(app, req, path, query, parsed);
        json_decref(parsed);
        return;
    }

    app->stats.requests++;
    json_t *logged = NULL;
    if (app->cfg.log_bodies)
        logged = parsed ? json_incref(parsed) : (len && data ? lossy_string(data, len) : NULL);
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    struct fake_log_entry *e =
        fake_log_add(&app->log, method_name(cmd), path,
                     headers_json(evhttp_request_get_input_headers(req)), logged, clock_now_ms());
    uint64_t seq = e ? e->seq : 0;

    struct fake_route route;
    char *model = NULL;
    if (route_of(path, query, &route, &model)) {
        if (cmd == EVHTTP_REQ_POST) {
            fake_chat_handle(app, req, seq, parsed, &route);
        } else {
            static const char *const what[] = {
                [FAKE_WIRE_OPENAI] = "chat completions take POST",
                [FAKE_WIRE_ANTHROPIC] = "messages take POST",
                [FAKE_WIRE_GEMINI] = "generateContent takes POST",
            };
            if (route.wire != FAKE_WIRE_OPENAI)
                fake_set_request_id(req, seq);
            fake_note_status(app, seq, 405);
            fake_send_json(req, 405, fake_wire_error_json(route.wire, 405, what[route.wire], seq));
        }
        free(model);
    } else {
        char msg[200];
        snprintf(msg, sizeof msg, "Invalid URL (%s %.150s)", method_name(cmd), path);
        fake_note_status(app, seq, 404);
        fake_send_json(req, 404, fake_error_json(404, msg));
    }
    json_decref(parsed);
}

/* See libevent_error_app above. The prototype is libevent's (event2/http.h). */
void evhttp_send_error(struct evhttp_request *req, int error, const char *reason)
{
    struct fake_app *app = libevent_error_app;
    char msg[160];
    if (error == HTTP_ENTITYTOOLARGE)
        snprintf(msg, sizeof msg, "request body over the limit of %u bytes", FAKE_MAX_BODY_BYTES);
    else if (error == HTTP_BADREQUEST)
        snprintf(msg, sizeof msg, "malformed HTTP request");
    else
        snprintf(msg, sizeof msg, "%s", reason ? reason : reason_phrase(error));
    if (app != NULL) {
        app->stats.requests++;
        struct fake_log_entry *e =
            fake_log_add(&app->log, method_name(evhttp_request_get_command(req)), NULL,
                         headers_json(evhttp_request_get_input_headers(req)), NULL, clock_now_ms());
        fake_note_status(app, e ? e->seq : 0, error);
    }
    /* A request whose first line did not parse has version 0.0; answer in 1.1. */
    if (req->major == 0) {
        req->major = 1;
        req->minor = 1;
    }
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    evhttp_clear_headers(out);
    evhttp_add_header(out, "Connection", "close");
    fake_send_json(req, error, fake_error_json(error, msg));
}

/* ---- start-up ----------------------------------------------------------------------------- */

static int die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int die_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "crewd-fakellm: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n%s", USAGE);
    va_end(ap);
    return 2;
}

static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (s == NULL || *s < '0' || *s > '9')
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_listen(const char *s, int *port)
{
    static const char host[] = "127.0.0.1:";
    uint64_t p;
    if (strncmp(s, host, sizeof host - 1) != 0 || !parse_u64(s + sizeof host - 1, 65535, &p))
        return false;
    *port = (int)p;
    return true;
}

static bool parse_fail_status(const char *s, struct fake_config *c)
{
    c->n_fail_status = 0;
    const char *p = s;
    while (*p) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno != 0 || !fake_fail_status_allowed(v) ||
            c->n_fail_status == FAKE_MAX_FAIL_STATUS || (*end != ',' && *end != '\0'))
            return false;
        c->fail_status[c->n_fail_status++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end == ',' && *p == '\0')
            return false;
    }
    return c->n_fail_status > 0;
}

/* Parses argv into `cfg` and `port`. Returns -1 to go on, or an exit status. */
static int parse_args(int argc, char **argv, struct fake_config *cfg, int *port)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (strncmp(arg, "--", 2) != 0)
            return die_usage("unexpected argument '%s'", arg);
        /* --name=value or --name value */
        char name[32];
        const char *val;
        const char *eq = strchr(arg, '=');
        if (eq != NULL) {
            size_t n = (size_t)(eq - arg);
            if (n >= sizeof name)
                return die_usage("unknown option '%s'", arg);
            memcpy(name, arg, n);
            name[n] = '\0';
            val = eq + 1;
        } else {
            if (strlen(arg) >= sizeof name)
                return die_usage("unknown option '%s'", arg);
            snprintf(name, sizeof name, "%s", arg);
            if (i + 1 >= argc)
                return die_usage("option %s needs a value", arg);
            val = argv[++i];
        }
        uint64_t u;
        if (strcmp(name, "--listen") == 0) {
            if (!parse_listen(val, port))
                return die_usage("--listen: expected 127.0.0.1:PORT, got '%s'", val);
        } else if (strcmp(name, "--latency-ms") == 0 || strcmp(name, "--jitter-ms") == 0) {
            if (!parse_u64(val, MAX_DELAY_MS, &u))
                return die_usage("%s: expected milliseconds from 0 to 3600000, got '%s'", name,
                                 val);
            *(strcmp(name, "--latency-ms") == 0 ? &cfg->latency_ms : &cfg->jitter_ms) = (int64_t)u;
        } else if (strcmp(name, "--fail-rate") == 0) {
            char *end = NULL;
            errno = 0;
            double d = strtod(val, &end);
            if (end == val || *end != '\0' || errno != 0 || !(d >= 0.0 && d <= 1.0))
                return die_usage("--fail-rate: expected a number from 0 to 1, got '%s'", val);
            cfg->fail_rate = d;
        } else if (strcmp(name, "--fail-status") == 0) {
            if (!parse_fail_status(val, cfg))
                return die_usage("--fail-status: expected a comma list of 429, 500, 502, 503, "
                                 "504, got '%s'",
                                 val);
        } else if (strcmp(name, "--retry-after") == 0) {
            if (!parse_u64(val, 86400, &u))
                return die_usage("--retry-after: expected seconds, got '%s'", val);
            cfg->retry_after_s = (int64_t)u;
        } else if (strcmp(name, "--seed") == 0) {
            if (!parse_u64(val, UINT64_MAX, &u))
                return die_usage("--seed: expected a non-negative integer, got '%s'", val);
            cfg->seed = u;
        } else if (strcmp(name, "--max-log") == 0) {
            if (!parse_u64(val, 100000000, &u) || u == 0)
                return die_usage("--max-log: expected a count from 1, got '%s'", val);
            cfg->max_log = (size_t)u;
        } else if (strcmp(name, "--log-bodies") == 0) {
            if (strcmp(val, "0") != 0 && strcmp(val, "1") != 0)
                return die_usage("--log-bodies: expected 0 or 1, got '%s'", val);
            cfg->log_bodies = val[0] == '1';
        } else {
            return die_usage("unknown option '%s'", name);
        }
    }
    return -1;
}

static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            log_warn("fakellm", "cannot raise the open files limit: %s", strerror(errno));
    }
}

/* A listening socket on 127.0.0.1:port with a deep backlog (evhttp_bind_socket uses 128,
 * too few for a burst of thousands of connects). Returns the fd or -1. */
static evutil_socket_t listen_on(int port)
{
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (evutil_make_listen_socket_reuseable(fd) < 0 || evutil_make_socket_nonblocking(fd) < 0 ||
        evutil_make_socket_closeonexec(fd) < 0 ||
        bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        evutil_closesocket(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* accept() failing with EMFILE leaves the socket readable: pause instead of spinning. The
 * callback's argument is the evhttp (libevent set it), hence libevent_error_app again. */
static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct fake_app *app = libevent_error_app;
    if (app == NULL || app->accept_resume == NULL)
        return;
    log_warn("fakellm", "accept failed: %s; pausing new connections for %d ms",
             evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()), ACCEPT_PAUSE_MS);
    evconnlistener_disable(lev);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    evtimer_add(app->accept_resume, &tv);
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct fake_app *app = arg;
    evconnlistener_enable(app->listener);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct fake_app *app = arg;
    app->stopping = true;
    event_base_loopbreak(app->base);
}

int main(int argc, char **argv)
{
    struct fake_app app;
    memset(&app, 0, sizeof app);
    app.cfg.n_fail_status = 1;
    app.cfg.fail_status[0] = 500;
    app.cfg.retry_after_s = 1;
    app.cfg.seed = 1;
    app.cfg.max_log = DEFAULT_MAX_LOG;
    app.cfg.log_bodies = true;
    int port = 0;
    int rc = parse_args(argc, argv, &app.cfg, &port);
    if (rc >= 0)
        return rc;
    rc = 1;
    app.prng = app.cfg.seed;
    fake_log_init(&app.log, app.cfg.max_log);
    fake_counters_init(&app.seq_counters);
    fake_counters_init(&app.fail_counters);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    raise_nofile_limit();

    struct event *sigterm = NULL, *sigint = NULL;
    evutil_socket_t fd = -1;
    if ((app.base = event_base_new()) == NULL || (app.http = evhttp_new(app.base)) == NULL) {
        log_error("fakellm", "cannot create the event loop");
        goto out;
    }
    evhttp_set_max_body_size(app.http, FAKE_MAX_BODY_BYTES);
    evhttp_set_max_headers_size(app.http, MAX_HEADER_BYTES);
    /* Lingering close: read what is left of an oversized body before answering 413, so the
     * client sees the answer instead of a reset. */
    evhttp_set_flags(app.http, EVHTTP_SERVER_LINGERING_CLOSE);
    evhttp_set_allowed_methods(app.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                             EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                             EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(app.http, on_request, &app);
    libevent_error_app = &app;

    fd = listen_on(port);
    if (fd < 0) {
        log_error("fakellm", "cannot listen on 127.0.0.1:%d: %s", port, strerror(errno));
        goto out;
    }
    struct evhttp_bound_socket *bound = evhttp_accept_socket_with_handle(app.http, fd);
    if (bound == NULL) {
        evutil_closesocket(fd);
        log_error("fakellm", "cannot accept on 127.0.0.1:%d", port);
        goto out;
    }
    app.listener = evhttp_bound_socket_get_listener(bound);
    app.accept_resume = evtimer_new(app.base, on_accept_resume, &app);
    if (app.accept_resume == NULL)
        goto out;
    evconnlistener_set_error_cb(app.listener, on_accept_error);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    if (getsockname(fd, (struct sockaddr *)&sin, &sl) != 0) {
        log_error("fakellm", "getsockname: %s", strerror(errno));
        goto out;
    }

    sigterm = evsignal_new(app.base, SIGTERM, on_signal, &app);
    sigint = evsignal_new(app.base, SIGINT, on_signal, &app);
    if (sigterm == NULL || sigint == NULL || evsignal_add(sigterm, NULL) != 0 ||
        evsignal_add(sigint, NULL) != 0) {
        log_error("fakellm", "cannot install signal handlers");
        goto out;
    }

    printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
    fflush(stdout);
    event_base_dispatch(app.base);
    rc = 0;
out:
    app.stopping = true;
    fake_chat_cancel_all(&app);
    if (app.http)
        evhttp_free(app.http);
    libevent_error_app = NULL;
    if (app.accept_resume)
        event_free(app.accept_resume);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (app.base)
        event_base_free(app.base);
    fake_log_cleanup(&app.log);
    fake_counters_cleanup(&app.seq_counters);
    fake_counters_cleanup(&app.fail_counters);
    libevent_global_shutdown();
    return rc;
}
