/*
 * tools.c - the tool routes: PUT /api/v1/tools (create or replace a user-defined HTTP tool),
 * GET /api/v1/tools (built-ins and user tools), GET and DELETE /api/v1/tools/{name}; and
 * the start-up load of the stored user tools into the registry.
 *
 * The store is written first and the registry second, so a tool the registry offers is
 * always one that a restart brings back. Both are touched on the loop thread only. Secret-
 * looking header values are kept in the store and the registry and shown as "***".
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "core/clock.h"
#include "core/json_text.h"
#include "core/log.h"
#include "store/store.h"
#include "tools/registry.h"
#include "tools/user_tool.h"

/* Puts a normalized definition into the registry. */
static int registry_put(struct tool_registry *reg, const json_t *norm, bool *replaced,
                        struct err *e)
{
    struct tool_def def;
    char *schema = NULL, *headers = NULL;
    int rc = user_tool_to_def(norm, &def, &schema, &headers, e);
    if (rc == 0)
        rc = tool_registry_put_user(reg, &def, replaced, e);
    free(schema);
    free(headers);
    return rc;
}

/* The response body of one user tool: its redacted definition and the row's times. */
static json_t *user_body(const json_t *norm, const struct store_named *row)
{
    json_t *o = user_tool_redact(norm);
    if (o == NULL)
        return NULL;
    json_object_set_new(o, "builtin", json_false());
    if (row != NULL) {
        json_object_set_new(o, "created_at", json_string(row->created_at));
        json_object_set_new(o, "updated_at", json_string(row->updated_at));
    }
    return o;
}

static json_t *builtin_body(const struct tool_def *d)
{
    json_t *params = json_loads(d->params_schema, 0, NULL);
    return json_pack("{s:s, s:s, s:o, s:b}", "name", d->name, "description", d->description,
                     "parameters", params ? params : json_object(), "builtin", 1);
}

static int load_row(const struct store_named *row, json_t **norm, struct err *e)
{
    json_error_t jerr;
    json_t *stored = json_loads(row->definition, 0, &jerr);
    *norm = NULL;
    if (stored == NULL)
        return err_set(e, ERR_STORE, "stored tool '%s' is unreadable", row->name);
    int rc = user_tool_parse(stored, norm, e);
    json_decref(stored);
    return rc;
}

/*
 * A client that sends back what GET showed sends "***" for each secret header: on a replace
 * that means "keep the stored value", not a new value of three stars (which would then go
 * upstream). A "***" with nothing stored under that name is refused.
 */
static int keep_masked_headers(struct api_ctx *ctx, json_t *norm, struct err *e)
{
    json_t *headers = json_object_get(norm, "headers");
    const char *k;
    json_t *v;
    bool masked = false;
    json_object_foreach(headers, k, v) masked |= user_tool_header_is_secret(k) &&
                                                 strcmp(json_string_value(v), "***") == 0;
    if (!masked)
        return 0;
    struct store_named *row = NULL;
    json_t *old = NULL;
    int rc = store_tool_get(ctx->store, json_string_value(json_object_get(norm, "name")), &row,
                            e);
    if (rc != 0 && rc != ERR_NOT_FOUND)
        return rc;
    if (rc == 0 && load_row(row, &old, e) != 0)
        old = NULL;
    rc = 0;
    json_t *old_headers = json_object_get(old, "headers");
    json_object_foreach(headers, k, v)
    {
        if (!user_tool_header_is_secret(k) || strcmp(json_string_value(v), "***") != 0)
            continue;
        const char *ok;
        json_t *ov, *keep = NULL;
        json_object_foreach(old_headers, ok, ov) if (strcasecmp(ok, k) == 0) keep = ov;
        if (keep == NULL) {
            rc = err_set(e, ERR_INVALID,
                         "headers.%.64s: \"***\" stands for a stored secret, and this tool has "
                         "none under that name: send the real value",
                         k);
            break;
        }
        if (json_object_set(headers, k, keep) != 0) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            break;
        }
    }
    json_decref(old);
    store_named_free(row);
    return rc;
}

void api_tools_put(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    json_t *body = NULL, *norm = NULL;
    char *text = NULL;
    struct store_named *row = NULL;
    bool created = false;
    if (http_req_body_json(req, &body, &e) != 0 || user_tool_parse(body, &norm, &e) != 0 ||
        keep_masked_headers(ctx, norm, &e) != 0)
        goto fail;
    const char *name = json_string_value(json_object_get(norm, "name"));
    if ((text = json_dumps(norm, JSON_TEXT_FLAGS)) == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (store_tool_put(ctx->store, name, text, clock_now_ms(), &created, &e) != 0 ||
        registry_put(ctx->tools, norm, NULL, &e) != 0 ||
        store_tool_get(ctx->store, name, &row, &e) != 0)
        goto fail;
    json_t *o = user_body(norm, row);
    if (o == NULL) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    json_object_set_new(o, "message", json_string(created ? "Tool created successfully"
                                                          : "Tool replaced successfully"));
    http_reply_json(req, created ? 201 : 200, o);
    goto out;
fail:
    api_reply_err(req, &e);
out:
    store_named_free(row);
    free(text);
    json_decref(body);
    json_decref(norm);
}

void api_tools_list(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    struct store_named_list rows = {0};
    if (store_tool_list(ctx->store, &rows, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    json_t *tools = json_array();
    for (size_t i = 0; tools != NULL && i < tool_registry_count(ctx->tools); i++) {
        const struct tool_def *d = tool_registry_at(ctx->tools, i);
        if (d->origin == TOOL_BUILTIN)
            json_array_append_new(tools, builtin_body(d));
    }
    for (size_t i = 0; tools != NULL && i < rows.n; i++) {
        json_t *norm = NULL;
        struct err ignored = {0};
        if (load_row(rows.items[i], &norm, &ignored) != 0) {
            log_warn("api", "tool '%s': %s", rows.items[i]->name, err_text(&ignored));
            continue;
        }
        json_array_append_new(tools, user_body(norm, rows.items[i]));
        json_decref(norm);
    }
    store_named_list_cleanup(&rows);
    http_reply_json(req, 200, json_pack("{s:o}", "tools", tools));
}

void api_tools_get(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    const char *name = http_req_param(req, 0);
    const struct tool_def *d = tool_registry_find(ctx->tools, name);
    if (d != NULL && d->origin == TOOL_BUILTIN) {
        http_reply_json(req, 200, builtin_body(d));
        return;
    }
    struct store_named *row = NULL;
    json_t *norm = NULL;
    if (store_tool_get(ctx->store, name, &row, &e) != 0 || load_row(row, &norm, &e) != 0) {
        api_reply_err(req, &e);
        goto out;
    }
    http_reply_json(req, 200, user_body(norm, row));
out:
    store_named_free(row);
    json_decref(norm);
}

void api_tools_delete(struct http_req *req, void *arg)
{
    struct api_ctx *ctx = arg;
    struct err e = {0};
    const char *name = http_req_param(req, 0);
    if (tool_registry_is_builtin(name)) {
        http_reply_error(req, 400, "tool '%s' is a built-in tool and cannot be deleted", name);
        return;
    }
    if (store_tool_delete(ctx->store, name, &e) != 0) {
        api_reply_err(req, &e);
        return;
    }
    /* Not in the registry only if it failed to load at start-up; the store row is gone. */
    struct err ignored = {0};
    tool_registry_remove_user(ctx->tools, name, &ignored);
    http_reply_json(req, 200, json_pack("{s:s, s:s}", "message", "Tool deleted successfully",
                                        "name", name));
}

int api_tools_load(struct store *store, struct tool_registry *reg, struct err *e)
{
    struct store_named_list rows = {0};
    int rc = store_tool_list(store, &rows, e);
    size_t loaded = 0;
    for (size_t i = 0; rc == 0 && i < rows.n; i++) {
        json_t *norm = NULL;
        struct err one = {0};
        /* One bad row (say, a name a newer built-in took) is skipped, not fatal: the other
         * tools and every crew that does not name it keep working. */
        if (load_row(rows.items[i], &norm, &one) != 0 ||
            registry_put(reg, norm, NULL, &one) != 0) {
            if (one.code == ERR_NOMEM)
                rc = err_set(e, ERR_NOMEM, "out of memory loading the user tools");
            else
                log_warn("main", "user tool '%s' not loaded: %s", rows.items[i]->name,
                         err_text(&one));
        } else {
            loaded++;
        }
        json_decref(norm);
    }
    if (rc == 0 && rows.n > 0)
        log_info("main", "loaded %zu user tool(s)", loaded);
    store_named_list_cleanup(&rows);
    return rc;
}
