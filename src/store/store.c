/*
 * store.c - the backend-neutral part of store.h: picks a backend from the URL, names the job
 * statuses, checks what every backend checks alike and frees the rows every backend hands
 * out. The backends themselves live in
 * store_sqlite.c and store_pg.c; nothing here knows SQL.
 */
#include "store/store.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "core/utf8.h"
#include "store/store_pg.h"
#include "store/store_sqlite.h"

#define SQLITE_PREFIX "sqlite:"

/* The longest URL echoed back in a message; the rest is elided. */
#define URL_ECHO_MAX 200

static int has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Appends `len` bytes of `s` to `out` (capacity `cap`, `*n` bytes used), leaving room for the
 * NUL; silently truncates, since the result is only ever shown in a message. */
static void append(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
    if (*n + 1 >= cap)
        return;
    if (len > cap - 1 - *n)
        len = cap - 1 - *n;
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

/*
 * Copies `url` into `out` for an error message with anything that may be a secret masked: the
 * userinfo after its first ':' (the password of "user:password@host") becomes "***", and a
 * query string (libpq takes
 * "?password=...") becomes "?...". The URL is not trusted to be well formed: a bare
 * "user:pw@host" without a scheme is masked the same way.
 */
static void url_redact(const char *url, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    const char *user, *rest;
    size_t user_len;
    if (url_userinfo(url, &user, &user_len)) {
        const char *colon = memchr(user, ':', user_len);
        size_t keep = colon ? (size_t)(colon + 1 - url) : (size_t)(user - url);
        append(out, cap, &n, url, keep);
        append(out, cap, &n, "***", 3);
        rest = user + user_len; /* the '@' */
    } else {
        const char *sep = strstr(url, "://");
        rest = sep ? sep + 3 : url;
        append(out, cap, &n, url, (size_t)(rest - url));
    }
    /* From the host (or the '@' before it) to the query, if any. */
    size_t rest_len = strcspn(rest, "?");
    if (rest_len > URL_ECHO_MAX) {
        append(out, cap, &n, rest, URL_ECHO_MAX);
        append(out, cap, &n, "...", 3);
        return;
    }
    append(out, cap, &n, rest, rest_len);
    if (rest[rest_len] == '?')
        append(out, cap, &n, "?...", 4);
}

int store_open(const char *url, struct store **out, struct err *e)
{
    *out = NULL;
    if (url == NULL || url[0] == '\0')
        return err_set(e, ERR_INVALID, "store: empty URL (use sqlite:PATH or postgres://...)");
    if (has_prefix(url, SQLITE_PREFIX)) {
        const char *path = url + strlen(SQLITE_PREFIX);
        if (path[0] == '\0')
            return err_set(e, ERR_INVALID,
                           "store: the sqlite URL has an empty path (use sqlite:PATH)");
        return store_sqlite_open(path, out, e);
    }
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        return store_pg_open(url, out, e);
    char shown[URL_ECHO_MAX + 64];
    url_redact(url, shown, sizeof shown);
    return err_set(e, ERR_INVALID, "store: unknown URL '%s' (use sqlite:PATH or postgres://...)",
                   shown);
}

void store_close(struct store *st)
{
    if (st == NULL)
        return;
    st->ops->close(st);
}

void store_crew_free(struct store_crew *crew)
{
    if (crew == NULL)
        return;
    free(crew->name);
    free(crew->description);
    free(crew->execution_mode);
    free(crew->definition);
    free(crew->plan);
    free(crew);
}

void store_crew_page_cleanup(struct store_crew_page *page)
{
    if (page == NULL)
        return;
    for (size_t i = 0; i < page->n; i++)
        store_crew_free(page->items[i]);
    free(page->items);
    page->items = NULL;
    page->n = 0;
    page->total = 0;
}

/* The status names as stored and as the API shows them; indexed by enum store_job_status. */
static const char *const JOB_STATUS_NAMES[] = {
    [STORE_JOB_PENDING] = "pending",     [STORE_JOB_RUNNING] = "running",
    [STORE_JOB_COMPLETED] = "completed", [STORE_JOB_FAILED] = "failed",
    [STORE_JOB_CANCELLED] = "cancelled",
};

#define N_JOB_STATUS (sizeof JOB_STATUS_NAMES / sizeof JOB_STATUS_NAMES[0])

const char *store_job_status_name(enum store_job_status s)
{
    /* The enum's underlying type may be unsigned; compare as an int so a stray negative
     * value is rejected rather than wrapped. */
    int i = (int)s;
    if (i < 0 || (size_t)i >= N_JOB_STATUS)
        return NULL;
    return JOB_STATUS_NAMES[i];
}

int store_job_status_parse(const char *name, enum store_job_status *out)
{
    for (size_t i = 0; name != NULL && i < N_JOB_STATUS; i++) {
        if (strcmp(name, JOB_STATUS_NAMES[i]) == 0) {
            *out = (enum store_job_status)i;
            return 0;
        }
    }
    return ERR_INVALID;
}

void store_job_free(struct store_job *job)
{
    if (job == NULL)
        return;
    free(job->crew_name);
    free(job->execution_mode);
    free(job->request);
    free(job->definition);
    free(job->plan);
    free(job->metadata);
    free(job->result);
    free(job->error);
    free(job->idempotency_key);
    free(job->request_hash);
    free(job->webhook_url);
    if (job->webhook_secret != NULL) {
        /* A secret does not linger in freed memory. */
        volatile char *p = job->webhook_secret;
        while (*p)
            *p++ = '\0';
        free(job->webhook_secret);
    }
    free(job);
}

static const char *const EVENT_TYPE_NAMES[] = {
    [STORE_EV_JOB_STARTED] = "job.started",
    [STORE_EV_AGENT_STARTED] = "agent.started",
    [STORE_EV_AGENT_DELTA] = "agent.delta",
    [STORE_EV_AGENT_TOOL_CALL] = "agent.tool_call",
    [STORE_EV_AGENT_COMPLETED] = "agent.completed",
    [STORE_EV_AGENT_FAILED] = "agent.failed",
    [STORE_EV_JOB_COMPLETED] = "job.completed",
    [STORE_EV_JOB_FAILED] = "job.failed",
    [STORE_EV_JOB_CANCELLED] = "job.cancelled",
};

_Static_assert(sizeof EVENT_TYPE_NAMES / sizeof EVENT_TYPE_NAMES[0] == STORE_EV_COUNT_,
               "a name per event type");

const char *store_event_type_name(enum store_event_type t)
{
    int i = (int)t;
    if (i < 0 || i >= STORE_EV_COUNT_)
        return NULL;
    return EVENT_TYPE_NAMES[i];
}

int store_event_type_parse(const char *name, enum store_event_type *out)
{
    for (int i = 0; name != NULL && i < STORE_EV_COUNT_; i++) {
        if (strcmp(name, EVENT_TYPE_NAMES[i]) == 0) {
            *out = (enum store_event_type)i;
            return 0;
        }
    }
    return ERR_INVALID;
}

void store_event_list_cleanup(struct store_event_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        free(l->items[i].data);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

static const char *const DELIVERY_STATE_NAMES[] = {
    [STORE_DELIVERY_PENDING] = "pending",
    [STORE_DELIVERY_DELIVERED] = "delivered",
    [STORE_DELIVERY_FAILED] = "failed",
};

const char *store_delivery_state_name(enum store_delivery_state s)
{
    int i = (int)s;
    if (i < 0 || (size_t)i >= sizeof DELIVERY_STATE_NAMES / sizeof DELIVERY_STATE_NAMES[0])
        return NULL;
    return DELIVERY_STATE_NAMES[i];
}

int store_delivery_state_parse(const char *name, enum store_delivery_state *out)
{
    for (size_t i = 0; name != NULL && i < sizeof DELIVERY_STATE_NAMES / sizeof DELIVERY_STATE_NAMES[0];
         i++) {
        if (strcmp(name, DELIVERY_STATE_NAMES[i]) == 0) {
            *out = (enum store_delivery_state)i;
            return 0;
        }
    }
    return ERR_INVALID;
}

int store_job_webhook_check(const struct store_job *j, struct err *e)
{
    if (j->webhook_mask == 0) {
        if (j->webhook_url != NULL || j->webhook_secret != NULL)
            return err_set(e, ERR_INVALID,
                           "store: a job without webhook events has no webhook url or secret");
        return 0;
    }
    if ((j->webhook_mask & ~STORE_EV_ALL_MASK) != 0)
        return err_set(e, ERR_INVALID, "store: webhook_mask has unknown event bits (0x%lx)",
                       (unsigned long)j->webhook_mask);
    if (j->webhook_url == NULL || j->webhook_url[0] == '\0' || j->webhook_secret == NULL ||
        j->webhook_secret[0] == '\0')
        return err_set(e, ERR_INVALID, "store: a webhook needs a url and a secret");
    return 0;
}

int store_event_check(const struct store_event_in *ev, struct err *e)
{
    if (ev == NULL)
        return err_set(e, ERR_INVALID, "store: no event given");
    if (store_event_type_name(ev->type) == NULL)
        return err_set(e, ERR_INVALID, "store: unknown event type %d", (int)ev->type);
    if (ev->data == NULL)
        return err_set(e, ERR_INVALID, "store: event %s has no data",
                       store_event_type_name(ev->type));
    return 0;
}

int store_event_append(struct store *st, const char *job_id, const char *owner,
                       const struct store_event_in *ev, long long now_ms, long long *seq,
                       struct err *e)
{
    if (job_id == NULL)
        return err_set(e, ERR_INVALID, "store: no job_id given");
    int rc = store_event_check(ev, e);
    if (rc != 0)
        return rc;
    struct store_event_item item = {.job_id = job_id, .ev = *ev};
    if ((rc = st->ops->event_append_batch(st, owner, &item, 1, now_ms, e)) != 0)
        return rc;
    if (item.rc == ERR_NOT_FOUND)
        return err_set(e, ERR_NOT_FOUND, "job '%s' not found", job_id);
    if (item.rc != 0)
        return err_set(e, item.rc, "job '%s' is no longer leased to this instance", job_id);
    if (seq != NULL)
        *seq = item.seq;
    return 0;
}

int store_finish_event(enum store_job_status status, const char *error,
                       enum store_event_type *type, char **data, struct err *e)
{
    *data = NULL;
    switch (status) {
    case STORE_JOB_COMPLETED:
        *type = STORE_EV_JOB_COMPLETED;
        break;
    case STORE_JOB_FAILED:
        *type = STORE_EV_JOB_FAILED;
        break;
    case STORE_JOB_CANCELLED:
        *type = STORE_EV_JOB_CANCELLED;
        break;
    default:
        return err_set(e, ERR_INVALID, "store: a job finishes completed, failed or cancelled");
    }
    /* Built with jansson, not printf: the error is free text and must be escaped. A job
     * must be able to end whatever its error says, so text that is not UTF-8 (which jansson
     * refuses) goes in with every non-ASCII byte replaced. */
    char *ascii = NULL;
    if (error != NULL && !utf8_valid(error, strlen(error))) {
        if ((ascii = strdup(error)) == NULL)
            return err_set(e, ERR_NOMEM, "store: out of memory building the %s event",
                           store_event_type_name(*type));
        for (char *p = ascii; *p; p++)
            if ((unsigned char)*p >= 0x80)
                *p = '?';
        error = ascii;
    }
    json_t *obj = json_pack("{s:s, s:s?}", "status", store_job_status_name(status), "error",
                            error);
    if (obj != NULL)
        *data = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(obj);
    free(ascii);
    if (*data == NULL)
        return err_set(e, ERR_NOMEM, "store: out of memory building the %s event",
                       store_event_type_name(*type));
    return 0;
}

void store_delivery_free(struct store_delivery *d)
{
    if (d == NULL)
        return;
    free(d->last_error);
    free(d->event_data);
    free(d->url);
    if (d->secret != NULL) {
        volatile char *p = d->secret;
        while (*p)
            *p++ = '\0';
        free(d->secret);
    }
    free(d);
}

void store_delivery_list_cleanup(struct store_delivery_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        store_delivery_free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

void store_job_batch_cleanup(struct store_job_batch *batch)
{
    if (batch == NULL)
        return;
    for (size_t i = 0; i < batch->n; i++)
        store_job_free(batch->items[i]);
    free(batch->items);
    batch->items = NULL;
    batch->n = 0;
}

void store_job_page_cleanup(struct store_job_page *page)
{
    if (page == NULL)
        return;
    for (size_t i = 0; i < page->n; i++)
        store_job_free(page->items[i]);
    free(page->items);
    page->items = NULL;
    page->n = 0;
    page->total = 0;
}

void store_step_list_cleanup(struct store_step_list *list)
{
    if (list == NULL)
        return;
    for (size_t i = 0; i < list->n; i++) {
        free(list->items[i].key);
        free(list->items[i].data);
    }
    free(list->items);
    list->items = NULL;
    list->n = 0;
}

void store_turn_list_cleanup(struct store_turn_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].role);
        free(l->items[i].content);
    }
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

int store_memory_check(const char *crew_id, const char *agent_key, const struct store_turn *turns,
                       size_t n, struct err *e)
{
    if (crew_id == NULL || crew_id[0] == '\0' || agent_key == NULL || agent_key[0] == '\0')
        return err_set(e, ERR_INVALID, "store: memory needs a crew_id and an agent_key");
    if (n > 0 && turns == NULL)
        return err_set(e, ERR_INVALID, "store: no turns given");
    for (size_t i = 0; i < n; i++) {
        const char *role = turns[i].role;
        if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0))
            return err_set(e, ERR_INVALID, "store: turn %zu: role must be 'user' or 'assistant'",
                           i);
        if (turns[i].content == NULL)
            return err_set(e, ERR_INVALID, "store: turn %zu has no content", i);
    }
    return 0;
}

void store_named_free(struct store_named *row)
{
    if (row == NULL)
        return;
    free(row->name);
    free(row->definition);
    free(row);
}

void store_named_list_cleanup(struct store_named_list *l)
{
    if (l == NULL)
        return;
    for (size_t i = 0; i < l->n; i++)
        store_named_free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = 0;
}

const char *store_catalog_noun(enum store_catalog c)
{
    return c == STORE_AGENT_CLASSES ? "agent class" : "tool";
}

int store_named_check(enum store_catalog c, const char *name, const char *definition, bool put,
                      struct err *e)
{
    if (c != STORE_TOOLS && c != STORE_AGENT_CLASSES)
        return err_set(e, ERR_INVALID, "store: unknown catalog %d", (int)c);
    if (name == NULL || name[0] == '\0')
        return err_set(e, ERR_INVALID, "store: a %s needs a name", store_catalog_noun(c));
    if (put && definition == NULL)
        return err_set(e, ERR_INVALID, "store: %s '%s' has no definition", store_catalog_noun(c),
                       name);
    return 0;
}
