/*
 * agents.c - the agent class routes: PUT /api/v1/agents (create or replace a custom class),
 * GET /api/v1/agents (built-in and custom), GET and DELETE /api/v1/agents/{name}; and the
 * loading of the custom classes that crew create and replace expand (crews.c).
 *
 * A class is validated (model/crew.h crew_class_parse: config by an agent's rules, tools
 * against the registry) and stored normalized; responses mask config secrets. Crews are
 * expanded from a class when they are created or replaced, so changing or deleting a class
 * leaves existing crews as they are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/json_text.h"
#include "core/log.h"
#include "llm/provider.h"
#include "model/crew.h"
#include "store/store.h"

static const char *const builtin_classes[] = {"BaseAgent", "Agent", "BasicAgent", "Chatbot"};

static json_t *builtin_body(const char *name)
{
    /* Agent and BasicAgent are the seed's aliases of BaseAgent. */
    const char *base = strcmp(name, "Chatbot") == 0 ? "Chatbot" : "BaseAgent";
    return json_pack("{s:s, s:s, s:b}", "name", name, "base", base, "builtin", 1);
}

static int load_row(const struct store_named *row, struct crew_class **out, struct err *e)
{
    json_error_t jerr;
    json_t *stored = json_loads(row->definition, 0, &jerr);
    *out = NULL;
    if (stored == NULL)
        return err_set(e, ERR_STORE, "stored agent class '%s' is unreadable", row->name);
    int rc = crew_class_parse(stored, NULL, out, e);
    json_decref(stored);
    return rc;
}

static json_t *custom_body(const struct crew_class *c, const struct store_named *row)
{
    json_t *o = crew_class_to_json(c, CREW_JSON_REDACTED);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "builtin", json_false());
    if (row != NULL) {
        json_object_set_new(o, "created_at", json_string(row->created_at));
        json_object_set_new(o, "updated_at", json_string(row->updated_at));
    }
    return o;
}

/* The class's LLM selection is judged now, as an agent's is at crew create: a class no crew
 * could use is the client's 400 here, not a puzzle at every crew that names it. */
static int check_llm(const struct api_ctx *ctx, const struct crew_class *c, struct err *e)
{
    struct llm_choice choice = {
        .llm = json_string_value(json_object_get(c->config, "llm")),
        .model = json_string_value(json_object_get(c->config, "model")),
        .base_url = json_string_value(json_object_get(c->config, "base_url")),
    };
    struct llm_resolved res;
    int rc = llm_resolve(&choice, ctx->default_provider, &res, e);
    if (rc != 0) {
        char msg[ERR_MSG_MAX];
        snprintf(msg, sizeof msg, "%s", err_text(e));
        err_set(e, rc, "config.%s", msg); /* "config.llm: unknown provider ..." */
    }
    return rc;
}

void api_agents_put(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    json_t *body = NULL, *full = NULL;
    char *text = NULL;
    struct crew_class *c = NULL;
    struct store_named *row = NULL;
    bool created = false;
    if (http_req_body_json(req, &body, &e) != 0 ||
        crew_class_parse(body, ctx->tools, &c, &e) != 0 || check_llm(ctx, c, &e) != 0)
        goto fail;
    if ((full = crew_class_to_json(c, CREW_JSON_FULL)) == NULL ||
        (text = json_dumps(full, JSON_TEXT_FLAGS)) == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (store_agent_class_put(ctx->store, c->name, text, clock_now_ms(), &created, &e) != 0 ||
        store_agent_class_get(ctx->store, c->name, &row, &e) != 0)
        goto fail;
    json_t *o = custom_body(c, row);
    if (o == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    json_object_set_new(o, "message", json_string(created ? "Agent class created successfully"
                                                          : "Agent class replaced successfully"));
    http_reply_json(req, created ? 201 : 200, o);
    goto out;
fail:
    api_reply_err(req, &e);
out:
    store_named_free(row);
    crew_class_free(c);
    free(text);
    json_decref(full);
    json_decref(body);
}

void api_agents_list(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    struct store_named_list rows = {0};
    if (store_agent_class_list(ctx->store, &rows, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; list != NULL && i < sizeof builtin_classes / sizeof builtin_classes[0]; i++)
        json_array_append_new(list, builtin_body(builtin_classes[i]));
    for (size_t i = 0; list != NULL && i < rows.n; i++) {
        struct crew_class *c = NULL;
        struct err one = {0};
        if (load_row(rows.items[i], &c, &one) != 0) {
            log_warn("api", "agent class '%s': %s", rows.items[i]->name, err_text(&one));
            continue;
        }
        json_array_append_new(list, custom_body(c, rows.items[i]));
        crew_class_free(c);
    }
    store_named_list_cleanup(&rows);
    http_reply_json(req, 200, json_pack("{s:o}", "agents", list));
}

void api_agents_get(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    const char *name = http_req_param(req, 0);
    if (crew_class_is_builtin(name)) {
        http_reply_json(req, 200, builtin_body(name));
        return;
    }
    struct store_named *row = NULL;
    struct crew_class *c = NULL;
    if (store_agent_class_get(ctx->store, name, &row, &e) != 0 || load_row(row, &c, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 200, custom_body(c, row));
out:
    store_named_free(row);
    crew_class_free(c);
}

void api_agents_delete(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    const char *name = http_req_param(req, 0);
    if (crew_class_is_builtin(name)) {
        http_reply_error(req, 400, "agent class '%s' is built in and cannot be deleted", name);
        return;
    }
    if (store_agent_class_delete(ctx->store, name, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    http_reply_json(req, 200, json_pack("{s:s, s:s}", "message",
                                        "Agent class deleted successfully", "name", name));
}

int api_agents_load(struct store *store, struct crew_class ***out, size_t *n_out,
                    struct err *e)
{
    struct store_named_list rows = {0};
    *out = NULL;
    *n_out = 0;
    int rc = store_agent_class_list(store, &rows, e);
    struct crew_class **items = NULL;
    size_t n = 0;
    if (rc == 0 && rows.n > 0 && (items = calloc(rows.n, sizeof *items)) == NULL)
        rc = err_set(e, ERR_NOMEM, "out of memory loading the agent classes");
    for (size_t i = 0; rc == 0 && i < rows.n; i++) {
        struct err one = {0};
        if (load_row(rows.items[i], &items[n], &one) == 0)
            n++;
        else if (one.code == ERR_NOMEM)
            rc = err_set(e, ERR_NOMEM, "out of memory loading the agent classes");
        else
            log_warn("api", "agent class '%s' skipped: %s", rows.items[i]->name,
                     err_text(&one));
    }
    store_named_list_cleanup(&rows);
    if (rc != 0) {
        api_agents_free(items, n);
        return rc;
    }
    *out = items;
    *n_out = n;
    return 0;
}

void api_agents_free(struct crew_class **items, size_t n)
{
    for (size_t i = 0; items != NULL && i < n; i++)
        crew_class_free(items[i]);
    free(items);
}
