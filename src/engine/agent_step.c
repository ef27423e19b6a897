/*
 * agent_step.c - see agent_step.h.
 *
 * The conversation is kept as owned copies (struct msg) and turned into llm_message views
 * for each call, because llm_call_start copies what it sends. Tool results are appended
 * only when every call of the round is back, in the order the model made them, so the
 * conversation does not depend on which tool finished first.
 */
#include "engine/agent_step.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/utf8.h"
#include "tools/registry.h"

struct msg {
    enum llm_role role;
    char *content;
    struct llm_tool_call *calls; /* assistant turns of tool calls (owned) */
    size_t n_calls;
    char *tool_call_id; /* tool results */
};

struct pending_tool {
    struct agent_step *step;
    size_t index; /* in the round's calls and in tool_log's slice */
    void *handle;
    bool done;
    char *output;
    int64_t t0_ms;
};

struct agent_step {
    struct llm_client *llm;
    const struct agent_tools *tools;
    char *provider, *model, *base_url, *api_key, *system_prompt;
    int max_rounds;
    double temperature;
    long max_tokens, timeout_ms;
    struct llm_tool_def *defs; /* names and descriptions owned: user tools may be replaced
                                  or removed from the registry while the step runs */
    size_t n_defs;
    json_t **schemas;

    struct msg *msgs;
    size_t n_msgs, cap_msgs;
    int rounds;
    struct llm_call *call;
    struct pending_tool *round; /* the round's tool calls */
    size_t n_round, n_waiting;
    size_t log_base; /* index in tool_log of the round's first call */

    json_t *tool_log;
    struct llm_usage usage;
    int llm_calls, attempts;
    agent_step_done_cb cb;
    void *arg;
    bool stream;
    void (*on_delta)(void *arg, const char *text, size_t len);
    void (*on_tool_call)(void *arg, const json_t *entry);
};

static char *dup_or_null(const char *s, bool *nomem)
{
    if (s == NULL)
        return NULL;
    char *c = strdup(s);
    if (c == NULL)
        *nomem = true;
    return c;
}

static void wipe_free(char *s)
{
    if (s == NULL)
        return;
    volatile char *v = s;
    while (*v)
        *v++ = 0;
    free(s);
}

static void free_calls(struct llm_tool_call *calls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(calls[i].id);
        free(calls[i].name);
        free(calls[i].arguments);
    }
    free(calls);
}

static void round_free(struct agent_step *s)
{
    for (size_t i = 0; i < s->n_round; i++)
        free(s->round[i].output);
    free(s->round);
    s->round = NULL;
    s->n_round = s->n_waiting = 0;
}

static void step_free(struct agent_step *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_msgs; i++) {
        free(s->msgs[i].content);
        free_calls(s->msgs[i].calls, s->msgs[i].n_calls);
        free(s->msgs[i].tool_call_id);
    }
    free(s->msgs);
    round_free(s);
    for (size_t i = 0; i < s->n_defs; i++) {
        json_decref(s->schemas[i]);
        free((char *)s->defs[i].name);
        free((char *)s->defs[i].description);
    }
    free(s->schemas);
    free(s->defs);
    json_decref(s->tool_log);
    free(s->provider);
    free(s->model);
    free(s->base_url);
    wipe_free(s->api_key);
    free(s->system_prompt);
    free(s);
}

/* Appends a message, taking `content` and `calls`. Returns false when out of memory (and
 * frees what it was given). */
static bool push_msg(struct agent_step *s, enum llm_role role, char *content,
                     struct llm_tool_call *calls, size_t n_calls, char *tool_call_id)
{
    if (s->n_msgs == s->cap_msgs) {
        size_t cap = s->cap_msgs ? s->cap_msgs * 2 : 8;
        struct msg *m = realloc(s->msgs, cap * sizeof *m);
        if (m == NULL) {
            free(content);
            free_calls(calls, n_calls);
            free(tool_call_id);
            return false;
        }
        s->msgs = m;
        s->cap_msgs = cap;
    }
    s->msgs[s->n_msgs++] = (struct msg){role, content, calls, n_calls, tool_call_id};
    return true;
}

/* Calls the callback with the outcome and frees the step. */
static void finish(struct agent_step *s, int rc, const struct err *e, char *text)
{
    struct agent_step_result res = {.rc = rc,
                                    .text = text,
                                    .tool_calls = s->tool_log,
                                    .usage = s->usage,
                                    .llm_calls = s->llm_calls,
                                    .attempts = s->attempts};
    if (rc != 0 && e != NULL)
        res.err = *e;
    s->tool_log = NULL;
    s->cb(s->arg, &res);
    free(res.text);
    json_decref(res.tool_calls);
    step_free(s);
}

static void on_llm(void *arg, int rc, struct llm_response *resp, const struct err *e,
                   const struct llm_call_info *info);

static void on_llm_delta(void *arg, const char *text, size_t len)
{
    struct agent_step *s = arg;
    if (s->on_delta != NULL)
        s->on_delta(s->arg, text, len);
}

/* The next LLM call with the conversation so far. Tools are offered while rounds remain. */
static int ask(struct agent_step *s, struct err *e)
{
    size_t n = s->n_msgs + (s->system_prompt ? 1 : 0);
    struct llm_message *m = calloc(n, sizeof *m);
    if (m == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    size_t k = 0;
    if (s->system_prompt)
        m[k++] = (struct llm_message){.role = LLM_ROLE_SYSTEM, .content = s->system_prompt};
    for (size_t i = 0; i < s->n_msgs; i++)
        m[k++] = (struct llm_message){.role = s->msgs[i].role,
                                      .content = s->msgs[i].content,
                                      .tool_calls = s->msgs[i].calls,
                                      .n_tool_calls = s->msgs[i].n_calls,
                                      .tool_call_id = s->msgs[i].tool_call_id};
    bool offer = s->rounds < s->max_rounds && s->n_defs > 0;
    /* Once the rounds are spent the conversation holds tool calls: the tools stay declared,
     * with calls forbidden, so every provider accepts it and the model must answer. */
    bool declare = s->n_defs > 0 && (offer || s->rounds > 0);
    struct llm_request req = {
        .provider = s->provider,
        .model = s->model,
        .base_url = s->base_url,
        .api_key = s->api_key,
        .messages = m,
        .n_messages = n,
        .tools = declare ? s->defs : NULL,
        .n_tools = declare ? s->n_defs : 0,
        .tools_forbidden = declare && !offer,
        .temperature = s->temperature,
        .max_tokens = s->max_tokens,
        .timeout_ms = s->timeout_ms,
        .stream = s->stream,
    };
    struct llm_call_opts opts = {.on_done = on_llm, .on_delta = s->stream ? on_llm_delta : NULL,
                                 .arg = s};
    int rc = llm_call_start(s->llm, &req, &opts, &s->call, e);
    free(m);
    return rc;
}

/* Every tool of the round is back: their results go into the conversation, in the order the
 * model asked, and the model is asked again. */
static void round_over(struct agent_step *s)
{
    size_t asked = s->n_msgs - 1; /* an index: pushing may move the array */
    struct err e = {0};
    for (size_t i = 0; i < s->n_round; i++) {
        const char *call_id = s->msgs[asked].calls[i].id;
        char *id = strdup(call_id ? call_id : "");
        char *out = s->round[i].output;
        s->round[i].output = NULL;
        if (id == NULL || out == NULL || !push_msg(s, LLM_ROLE_TOOL, out, NULL, 0, id)) {
            if (id == NULL || out == NULL) {
                free(id);
                free(out);
            }
            round_free(s);
            err_set(&e, ERR_NOMEM, "out of memory recording tool results");
            finish(s, ERR_NOMEM, &e, NULL);
            return;
        }
    }
    round_free(s);
    if (ask(s, &e) != 0)
        finish(s, e.code ? e.code : ERR_INTERNAL, &e, NULL);
}

static void on_tool(void *arg, int rc, const char *output, const struct err *e)
{
    struct pending_tool *p = arg;
    struct agent_step *s = p->step;
    double secs = (double)(clock_mono_ms() - p->t0_ms) / 1000.0;
    p->handle = NULL;
    p->done = true;
    json_t *entry = json_array_get(s->tool_log, s->log_base + p->index);
    if (rc == 0) {
        p->output = strdup(output ? output : "");
        json_object_set_new(entry, "result", json_string(output ? output : ""));
    } else {
        const char *why = e ? err_text(e) : "tool failed";
        size_t len = strlen(why) + 8;
        if ((p->output = malloc(len)) != NULL)
            snprintf(p->output, len, "Error: %s", why);
        json_object_set_new(entry, "error", json_string(why));
    }
    json_object_set_new(entry, "execution_time", json_real(secs < 0 ? 0 : secs));
    if (s->on_tool_call != NULL && entry != NULL)
        s->on_tool_call(s->arg, entry);
    if (--s->n_waiting == 0)
        round_over(s);
}

static bool offered(const struct agent_step *s, const char *name)
{
    for (size_t i = 0; i < s->n_defs; i++)
        if (strcmp(s->defs[i].name, name) == 0)
            return true;
    return false;
}

/* Runs the tool calls of `resp` (taken), then asks again when they are all back. */
static void run_tools(struct agent_step *s, struct llm_response *resp)
{
    struct err e = {0};
    size_t n = resp->n_tool_calls;
    struct llm_tool_call *calls = resp->tool_calls;
    resp->tool_calls = NULL;
    resp->n_tool_calls = 0;
    char *text = resp->text && resp->text[0] ? strdup(resp->text) : NULL;
    llm_response_free(resp);
    s->rounds++;
    if (!push_msg(s, LLM_ROLE_ASSISTANT, text, calls, n, NULL) ||
        (s->round = calloc(n, sizeof *s->round)) == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory running tools");
        finish(s, ERR_NOMEM, &e, NULL);
        return;
    }
    s->n_round = n;
    s->n_waiting = n;
    s->log_base = json_array_size(s->tool_log);
    for (size_t i = 0; i < n; i++) {
        const struct llm_tool_call *c = &calls[i];
        json_array_append_new(s->tool_log,
                              json_pack("{s:s,s:s,s:s,s:n,s:n,s:f}", "id", c->id ? c->id : "",
                                        "name", c->name ? c->name : "", "arguments",
                                        c->arguments ? c->arguments : "", "result", "error",
                                        "execution_time", 0.0));
    }
    /* Started in order; a tool that cannot start answers at once with its error. The
     * count of waiting calls covers them all first, so that no early answer ends the round
     * while calls remain to be started. */
    for (size_t i = 0; i < n; i++) {
        struct pending_tool *p = &s->round[i];
        p->step = s;
        p->index = i;
        p->t0_ms = clock_mono_ms();
        struct err te = {0};
        const char *name = calls[i].name ? calls[i].name : "";
        /* Only the tools offered to this agent run, whatever the model asks for: a prompt
         * injection must not reach a tool (http_request) the crew did not give the agent. */
        int rc = !offered(s, name) ? err_set(&te, ERR_NOT_FOUND,
                                             "tool '%.*s' is not available to this agent",
                                             (int)utf8_prefix_len(name, strlen(name), 64), name)
                 : s->tools && s->tools->invoke
                     ? s->tools->invoke(s->tools->ctx, name,
                                        calls[i].arguments ? calls[i].arguments : "{}", on_tool,
                                        p, &p->handle, &te)
                     : err_set(&te, ERR_UNSUPPORTED, "no tools can run here");
        if (rc != 0) {
            /* The round may end here: it must be the last thing this loop does then. */
            bool last = s->n_waiting == 1 && i == n - 1;
            on_tool(p, rc, NULL, &te);
            if (last)
                return;
        }
    }
}

static void on_llm(void *arg, int rc, struct llm_response *resp, const struct err *e,
                   const struct llm_call_info *info)
{
    struct agent_step *s = arg;
    s->call = NULL;
    s->llm_calls++;
    s->attempts += info ? info->attempts : 0;
    if (rc != 0) {
        finish(s, rc, e, NULL);
        return;
    }
    s->usage.prompt_tokens += resp->usage.prompt_tokens;
    s->usage.completion_tokens += resp->usage.completion_tokens;
    s->usage.total_tokens += resp->usage.total_tokens;
    s->usage.cached_tokens += resp->usage.cached_tokens;
    s->usage.reasoning_tokens += resp->usage.reasoning_tokens;
    if (resp->n_tool_calls > 0 && s->n_defs > 0 && s->rounds < s->max_rounds) {
        run_tools(s, resp);
        return;
    }
    char *text = resp->text;
    resp->text = NULL;
    llm_response_free(resp);
    finish(s, 0, NULL, text ? text : strdup(""));
}

static int build_defs(struct agent_step *s, const struct agent_step_params *p, struct err *e)
{
    if (p->tools == NULL || p->tools->registry == NULL || p->n_tool_names == 0)
        return 0;
    s->defs = calloc(p->n_tool_names, sizeof *s->defs);
    s->schemas = calloc(p->n_tool_names, sizeof *s->schemas);
    if (s->defs == NULL || s->schemas == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < p->n_tool_names; i++) {
        const struct tool_def *d = tool_registry_find(p->tools->registry, p->tool_names[i]);
        if (d == NULL)
            continue; /* validated at create time; a tool removed since is just not offered */
        json_t *schema = json_loads(d->params_schema, 0, NULL);
        if (schema == NULL)
            return err_set(e, ERR_INTERNAL, "tool %s: its schema does not parse", d->name);
        char *name = strdup(d->name), *desc = strdup(d->description ? d->description : "");
        s->schemas[s->n_defs] = schema;
        s->defs[s->n_defs++] =
            (struct llm_tool_def){.name = name, .description = desc, .parameters = schema};
        if (name == NULL || desc == NULL)
            return err_set(e, ERR_NOMEM, "out of memory");
    }
    return 0;
}

int agent_step_start(const struct agent_step_params *p, agent_step_done_cb cb, void *arg,
                     struct agent_step **out, struct err *e)
{
    bool nomem = false;
    int rc;
    *out = NULL;
    struct agent_step *s = calloc(1, sizeof *s);
    if (s == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    s->llm = p->llm;
    s->tools = p->tools;
    s->cb = cb;
    s->arg = arg;
    s->max_rounds = p->max_tool_rounds;
    s->temperature = p->temperature;
    s->max_tokens = p->max_tokens;
    s->timeout_ms = p->timeout_ms;
    s->stream = p->stream;
    s->on_delta = p->on_delta;
    s->on_tool_call = p->on_tool_call;
    s->provider = dup_or_null(p->provider, &nomem);
    s->model = dup_or_null(p->model, &nomem);
    s->base_url = dup_or_null(p->base_url, &nomem);
    s->api_key = dup_or_null(p->api_key, &nomem);
    s->system_prompt = dup_or_null(p->system_prompt, &nomem);
    s->tool_log = json_array();
    for (size_t i = 0; i < p->n_history && !nomem; i++) {
        char *content = dup_or_null(p->history[i].content ? p->history[i].content : "", &nomem);
        if (!nomem && !push_msg(s, p->history[i].role, content, NULL, 0, NULL))
            nomem = true;
    }
    char *input = dup_or_null(p->input ? p->input : "", &nomem);
    if (nomem || s->tool_log == NULL || !push_msg(s, LLM_ROLE_USER, input, NULL, 0, NULL)) {
        if (nomem)
            free(input);
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if ((rc = build_defs(s, p, e)) != 0 || (rc = ask(s, e)) != 0)
        goto fail;
    *out = s;
    return 0;
fail:
    step_free(s);
    return rc;
}

void agent_step_cancel(struct agent_step *s)
{
    if (s == NULL)
        return;
    llm_call_cancel(s->call);
    s->call = NULL;
    for (size_t i = 0; i < s->n_round; i++) {
        if (s->round[i].handle != NULL && s->tools && s->tools->cancel)
            s->tools->cancel(s->round[i].handle);
        s->round[i].handle = NULL;
    }
    step_free(s);
}
