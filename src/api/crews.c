/*
 * crews.c - the crew registry routes (the seed's BotManager over HTTP): create, replace,
 * get, list, delete. A definition is validated (model/crew.h) and compiled (model/plan.h)
 * before anything is stored, so the store only ever holds crews a job can run. Responses
 * redact secrets in agent configs; the store keeps them for the engine.
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/id.h"
#include "core/json_text.h"
#include "core/url.h"
#include "model/crew.h"
#include "model/plan.h"
#include "store/store.h"

#define LIST_DEFAULT_LIMIT 100
#define LIST_MAX_LIMIT 1000

/* Ids are stored lowercase; a UUID-shaped identifier from a path or query is looked up in
 * that form, whatever its case (no crew name has UUID form, so names are unaffected). */
static const char *canonical_ident(const char *ident, char buf[ID_UUID_LEN])
{
    return id_canonical(ident, buf) ? buf : ident;
}

static json_t *agent_keys(const struct crew_def *def)
{
    json_t *keys = json_array();
    for (size_t i = 0; keys != NULL && i < def->n_agents; i++)
        json_array_append_new(keys, json_string(def->agents[i].key));
    return keys;
}

/*
 * Validates and compiles the request body into a store row. `crew_id` and `created_at`
 * are those of the crew being replaced, or NULL on create. On success *row is a new row
 * and *def the parsed definition (for the response).
 */
static int build_row(struct http_req *req, const struct api_ctx *ctx, const char *crew_id,
                     const char *created_at, struct store_crew **row, struct crew_def **def,
                     struct err *e)
{
    json_t *body = NULL, *full = NULL, *plan_json = NULL;
    struct plan *plan = NULL;
    struct store_crew *r = NULL;
    struct crew_class **classes = NULL;
    size_t n_classes = 0;
    *row = NULL;
    *def = NULL;
    int rc = http_req_body_json(req, &body, e);
    if (rc != 0)
        goto out;
    /* Custom classes are expanded into the definition now (agents.c), so a crew never
     * depends on a class row again. */
    if ((rc = api_agents_load(ctx->store, &classes, &n_classes, e)) != 0)
        goto out;
    struct crew_classes set = {.items = classes, .n = n_classes};
    if ((rc = crew_def_parse_with(body, ctx->tools, &set, def, e)) != 0)
        goto out;
    struct plan_opts opts = {.default_provider = ctx->default_provider,
                             .policy = ctx->llm_policy};
    if ((rc = plan_compile(*def, &opts, &plan, e)) != 0)
        goto out;

    rc = ERR_NOMEM; /* until the row is complete */
    if ((r = calloc(1, sizeof *r)) == NULL)
        goto out;
    if (crew_id != NULL) {
        /* A replace keeps the crew's id (API.md), whatever id the body carries: clients of
         * the seed send back whole definitions, with an id their own model generated. */
        memcpy(r->crew_id, crew_id, ID_UUID_LEN);
    } else if ((*def)->crew_id[0] != '\0') {
        memcpy(r->crew_id, (*def)->crew_id, ID_UUID_LEN);
    } else if (id_uuid4(r->crew_id) != 0) {
        rc = err_set(e, ERR_INTERNAL, "no randomness available for a crew id");
        goto out;
    }
    clock_rfc3339_now(r->updated_at);
    memcpy(r->created_at, created_at ? created_at : r->updated_at, CLOCK_RFC3339_LEN);

    /* Stored without id and times: those are columns, added back when the crew is read. */
    full = crew_def_to_json(*def, NULL, NULL, NULL, CREW_JSON_FULL);
    plan_json = plan_to_json(plan);
    if (full == NULL || plan_json == NULL)
        goto out;
    r->definition = json_dumps(full, JSON_TEXT_FLAGS);
    r->plan = json_dumps(plan_json, JSON_TEXT_FLAGS);
    r->name = strdup((*def)->name);
    r->execution_mode = strdup(crew_mode_name((*def)->mode));
    r->description = (*def)->description ? strdup((*def)->description) : NULL;
    r->agent_count = (long)(*def)->n_agents;
    if (r->definition == NULL || r->plan == NULL || r->name == NULL || r->execution_mode == NULL ||
        ((*def)->description != NULL && r->description == NULL))
        goto out;
    *row = r;
    r = NULL;
    rc = 0;
out:
    if (rc == ERR_NOMEM)
        err_set(e, ERR_NOMEM, "out of memory building the crew");
    if (rc != 0) {
        crew_def_free(*def);
        *def = NULL;
    }
    store_crew_free(r);
    plan_free(plan);
    api_agents_free(classes, n_classes);
    json_decref(body);
    json_decref(full);
    json_decref(plan_json);
    return rc;
}

static json_t *saved_body(const char *message, const struct store_crew *row,
                          const struct crew_def *def, bool with_updated)
{
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s}", "message", message, "crew_id",
                          row->crew_id, "name", row->name, "execution_mode", row->execution_mode,
                          "agents", agent_keys(def), "created_at", row->created_at);
    if (o != NULL && with_updated)
        json_object_set_new(o, "updated_at", json_string(row->updated_at));
    return o;
}

void api_crews_create(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    struct store_crew *row = NULL;
    struct crew_def *def = NULL;
    if (build_row(req, ctx, NULL, NULL, &row, &def, &e) != 0 ||
        store_crew_insert(ctx->store, row, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 201, saved_body("Crew created successfully", row, def, false));
out:
    store_crew_free(row);
    crew_def_free(def);
}

void api_crews_update(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    struct err e = {0};
    struct store_crew *old = NULL, *row = NULL;
    struct crew_def *def = NULL;
    char idbuf[ID_UUID_LEN];
    const char *ident = canonical_ident(http_req_param(req, 0), idbuf);
    if (store_crew_get(ctx->store, ident, STORE_BY_NAME_OR_ID, &old, &e) != 0 ||
        build_row(req, ctx, old->crew_id, old->created_at, &row, &def, &e) != 0 ||
        store_crew_update(ctx->store, row, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 200, saved_body("Crew updated successfully", row, def, true));
out:
    store_crew_free(old);
    store_crew_free(row);
    crew_def_free(def);
}

/* The stored definition as a response: crew_id first, secrets redacted, times last. */
static int crew_body(const struct store_crew *row, bool with_plan, json_t **out, struct err *e)
{
    json_error_t jerr;
    json_t *def = json_loads(row->definition, 0, &jerr);
    json_t *o = json_object();
    *out = NULL;
    if (def == NULL || !json_is_object(def) || o == NULL) {
        json_decref(def);
        json_decref(o);
        return err_set(e, ERR_STORE, "stored definition of crew %s is unreadable", row->crew_id);
    }
    json_object_set_new(o, "crew_id", json_string(row->crew_id));
    const char *key;
    json_t *value;
    json_object_foreach(def, key, value)
    {
        if (strcmp(key, "agents") != 0) {
            json_object_set(o, key, value);
            continue;
        }
        json_t *agents = json_array();
        size_t i;
        json_t *agent;
        bool redacted = agents != NULL;
        json_array_foreach(value, i, agent)
        {
            /* Shallow copy: config is replaced, never changed. Any failure here fails the
             * request: a copy that kept the stored config would show its secrets. */
            json_t *copy = json_copy(agent);
            json_t *config = json_object_get(agent, "config");
            if (copy != NULL && config != NULL &&
                json_object_set_new(copy, "config", crew_config_redact(config)) != 0) {
                json_decref(copy);
                copy = NULL;
            }
            if (copy == NULL || json_array_append_new(agents, copy) != 0) {
                redacted = false;
                break;
            }
        }
        if (!redacted)
            json_decref(agents);
        if (!redacted || json_object_set_new(o, "agents", agents) != 0) {
            json_decref(def);
            json_decref(o);
            return err_set(e, ERR_NOMEM, "out of memory redacting crew %s", row->crew_id);
        }
    }
    json_object_set_new(o, "created_at", json_string(row->created_at));
    json_object_set_new(o, "updated_at", json_string(row->updated_at));
    json_decref(def);
    if (with_plan) {
        json_t *plan = json_loads(row->plan, 0, &jerr);
        if (plan == NULL) {
            json_decref(o);
            return err_set(e, ERR_STORE, "stored plan of crew %s is unreadable", row->crew_id);
        }
        /* The plan holds each agent's base_url as the engine needs it; show it masked. */
        size_t i;
        json_t *agent;
        json_array_foreach(json_object_get(plan, "agents"), i, agent)
        {
            const char *url = json_string_value(json_object_get(agent, "base_url"));
            if (url == NULL)
                continue;
            char *shown = url_redact_secrets(url);
            json_object_set_new(agent, "base_url", shown ? json_string(shown) : json_null());
            free(shown);
        }
        json_object_set_new(o, "plan", plan);
    }
    *out = o;
    return 0;
}

static void reply_one(struct http_req *req, const struct api_ctx *ctx, const char *ident)
{
    struct err e = {0};
    struct store_crew *row = NULL;
    json_t *body = NULL;
    const char *include = http_req_query(req, "include");
    if (include != NULL && strcmp(include, "plan") != 0) {
        http_reply_error(req, 400, "include: unknown value '%s' (known: plan)", include);
        return;
    }
    char idbuf[ID_UUID_LEN];
    if (store_crew_get(ctx->store, canonical_ident(ident, idbuf), STORE_BY_NAME_OR_ID, &row, &e) !=
            0 ||
        crew_body(row, include != NULL, &body, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 200, body);
out:
    store_crew_free(row);
}

void api_crews_get(struct http_req *req, void *arg)
{
    reply_one(req, arg, http_req_param(req, 0));
}

/* The crew that ?name= or ?crew_id= selects on the collection path (the seed's way), or
 * NULL. Either is looked up as an identifier, name first, then id, as the seed does: its
 * clients send a name in crew_id, as its execute body allows. No name has UUID form, so this
 * is never ambiguous. `name` wins when both are given. */
static const char *query_ident(struct http_req *req)
{
    const char *name = http_req_query(req, "name");
    return name ? name : http_req_query(req, "crew_id");
}

void api_crews_list_or_get(struct http_req *req, void *arg)
{
    const struct api_ctx *ctx = arg;
    const char *ident = query_ident(req);
    if (ident != NULL) {
        reply_one(req, ctx, ident);
        return;
    }
    struct err e = {0};
    long limit, offset;
    struct store_crew_page page = {0};
    if (api_query_long(req, "limit", LIST_DEFAULT_LIMIT, 1, LIST_MAX_LIMIT, &limit, &e) != 0 ||
        api_query_long(req, "offset", 0, 0, 1L << 40, &offset, &e) != 0 ||
        store_crew_list(ctx->store, limit, offset, &page, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    json_t *crews = json_array();
    for (size_t i = 0; crews != NULL && i < page.n; i++) {
        const struct store_crew *c = page.items[i];
        json_array_append_new(crews,
                              json_pack("{s:s, s:s, s:s?, s:s, s:I, s:s}", "crew_id", c->crew_id,
                                        "name", c->name, "description", c->description,
                                        "execution_mode", c->execution_mode, "agent_count",
                                        (json_int_t)c->agent_count, "created_at", c->created_at));
    }
    http_reply_json(req, 200,
                    json_pack("{s:o, s:I, s:I, s:I}", "crews", crews, "total",
                              (json_int_t)page.total, "limit", (json_int_t)limit, "offset",
                              (json_int_t)offset));
    store_crew_page_cleanup(&page);
}

static void delete_one(struct http_req *req, const struct api_ctx *ctx, const char *ident)
{
    struct err e = {0};
    struct store_crew *row = NULL;
    char idbuf[ID_UUID_LEN];
    if (store_crew_get(ctx->store, canonical_ident(ident, idbuf), STORE_BY_NAME_OR_ID, &row, &e) !=
            0 ||
        store_crew_delete(ctx->store, row->crew_id, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 200,
                    json_pack("{s:s, s:s, s:s}", "message", "Crew deleted successfully", "crew_id",
                              row->crew_id, "name", row->name));
out:
    store_crew_free(row);
}

void api_crews_delete(struct http_req *req, void *arg)
{
    delete_one(req, arg, http_req_param(req, 0));
}

void api_crews_delete_by_query(struct http_req *req, void *arg)
{
    const char *ident = query_ident(req);
    if (ident == NULL) {
        http_reply_error(req, 400, "name or crew_id is required (DELETE /api/v1/crew?name=X)");
        return;
    }
    delete_one(req, arg, ident);
}
