/*
 * hub.c - topics (one per job with subscribers), found by job id in a binary tree (POSIX
 * tsearch: thousands of streams, no hand-written hash table) and kept in a list for the poll.
 * A topic with new events is marked dirty and served by one zero-timeout event per loop
 * turn, however many notifies came in it.
 */
#include "events/hub.h"

#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/dlist.h"
#include "core/id.h"
#include "core/log.h"

#define HUB_DEFAULT_POLL_MS 1000
#define HUB_DEFAULT_BATCH 256

struct event_sub {
    struct topic *topic;
    long long after; /* the last seq this subscriber has */
    bool paused;     /* took fewer than it was offered: left out until event_hub_resume */
    event_sub_cb cb;
    void *arg;
    struct event_sub *prev, *next;
};

struct topic {
    struct event_hub *hub;
    char job_id[ID_UUID_LEN];
    struct event_sub *subs;
    size_t n_subs;
    bool dirty; /* on the hub's dirty list */
    struct topic *next_dirty;
    long long read_ms; /* when last read (the poll skips a topic read since) */
    struct topic *prev, *next;
};

struct event_hub {
    struct event_base *base;
    struct store *store;
    struct event_hub_opts opts;
    void *tree; /* tsearch root: struct topic * by job_id */
    struct topic *topics;
    struct topic *dirty;
    struct event *serve_ev; /* zero timeout: serves the dirty topics */
    struct event *poll_ev;
};

static int topic_cmp(const void *a, const void *b)
{
    return strcmp(((const struct topic *)a)->job_id, ((const struct topic *)b)->job_id);
}

static struct topic *topic_find(struct event_hub *hub, const char *job_id)
{
    struct topic key;
    snprintf(key.job_id, sizeof key.job_id, "%s", job_id);
    void *node = tfind(&key, &hub->tree, topic_cmp);
    return node ? *(struct topic **)node : NULL;
}

static void topic_free(struct topic *t)
{
    struct event_hub *hub = t->hub;
    tdelete(t, &hub->tree, topic_cmp);
    DLIST_REMOVE(hub->topics, t);
    if (t->dirty) {
        for (struct topic **p = &hub->dirty; *p != NULL; p = &(*p)->next_dirty) {
            if (*p == t) {
                *p = t->next_dirty;
                break;
            }
        }
    }
    free(t);
}

static void sub_remove(struct event_sub *s)
{
    struct topic *t = s->topic;
    DLIST_REMOVE(t->subs, s);
    t->n_subs--;
    free(s);
}

static void mark_dirty(struct topic *t)
{
    struct event_hub *hub = t->hub;
    if (t->dirty)
        return;
    t->dirty = true;
    t->next_dirty = hub->dirty;
    hub->dirty = t;
    if (!evtimer_pending(hub->serve_ev, NULL)) {
        struct timeval zero = {0, 0};
        evtimer_add(hub->serve_ev, &zero);
    }
}

/* Ends every subscriber of `t` (the job is gone) and frees the topic. */
static void topic_end(struct topic *t)
{
    while (t->subs != NULL) {
        struct event_sub *s = t->subs;
        s->cb(s->arg, NULL, 0, true);
        sub_remove(s);
    }
    topic_free(t);
}

/*
 * Reads the topic's events from the smallest position among its subscribers that are not
 * paused, and gives each of those the events past its own. Paused ones are left out, so a
 * reader that cannot take more neither holds back the read position of the others nor costs
 * a store read per turn while it drains. Returns true when a full batch came back (more to
 * read): the caller marks the topic dirty again. May free the topic (returns false then).
 */
static bool topic_serve(struct topic *t)
{
    struct event_hub *hub = t->hub;
    long long from = -1;
    for (struct event_sub *s = t->subs; s != NULL; s = s->next)
        if (!s->paused && (from < 0 || s->after < from))
            from = s->after;
    if (t->n_subs == 0) {
        topic_free(t);
        return false;
    }
    if (from < 0)
        return false; /* every subscriber is paused: event_hub_resume brings them back */
    struct store_event_list list = {0};
    enum store_job_status status = STORE_JOB_PENDING;
    struct err e = {0};
    t->read_ms = clock_mono_ms();
    int rc = store_event_list(hub->store, t->job_id, from, hub->opts.batch, &list, &status, &e);
    if (rc == ERR_NOT_FOUND) {
        topic_end(t);
        return false;
    }
    if (rc != 0) {
        /* The next notify or poll tries again; readers just wait. */
        log_warn("events", "job %s: cannot read events: %s", t->job_id, err_text(&e));
        return false;
    }
    bool full = list.n == hub->opts.batch;
    bool over = !full && (status == STORE_JOB_COMPLETED || status == STORE_JOB_FAILED ||
                          status == STORE_JOB_CANCELLED);
    struct event_sub *next;
    for (struct event_sub *s = t->subs; s != NULL; s = next) {
        next = s->next;
        if (s->paused)
            continue;
        size_t i = 0;
        while (i < list.n && list.items[i].seq <= s->after)
            i++;
        size_t k = list.n - i;
        if (k == 0 && !over)
            continue;
        size_t took = s->cb(s->arg, list.items + i, k, over);
        if (took == EVENT_SUB_DROP) {
            sub_remove(s);
            continue;
        }
        if (took > k)
            took = k;
        if (took > 0)
            s->after = list.items[i + took - 1].seq;
        if (took < k)
            s->paused = true;
        else if (over)
            sub_remove(s);
    }
    store_event_list_cleanup(&list);
    if (t->n_subs == 0) {
        topic_free(t);
        return false;
    }
    return full;
}

static void on_serve(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct event_hub *hub = arg;
    /* Take the list: topics marked while serving (a full batch) go on a new one. */
    struct topic *t = hub->dirty;
    hub->dirty = NULL;
    while (t != NULL) {
        struct topic *next = t->next_dirty;
        t->dirty = false;
        t->next_dirty = NULL;
        if (topic_serve(t))
            mark_dirty(t);
        t = next;
    }
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct event_hub *hub = arg;
    long long now = clock_mono_ms();
    struct topic *next;
    for (struct topic *t = hub->topics; t != NULL; t = next) {
        next = t->next;
        /* Read recently (a notify): nothing the poll would add. */
        if (t->dirty || now - t->read_ms < hub->opts.poll_ms / 2)
            continue;
        if (topic_serve(t))
            mark_dirty(t);
    }
}

int event_hub_new(struct event_base *base, struct store *store, const struct event_hub_opts *o,
                  struct event_hub **out, struct err *e)
{
    struct event_hub *hub = calloc(1, sizeof *hub);
    *out = NULL;
    if (hub == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    hub->base = base;
    hub->store = store;
    hub->opts = *o;
    if (hub->opts.poll_ms <= 0)
        hub->opts.poll_ms = HUB_DEFAULT_POLL_MS;
    if (hub->opts.batch == 0)
        hub->opts.batch = HUB_DEFAULT_BATCH;
    hub->serve_ev = evtimer_new(base, on_serve, hub);
    hub->poll_ev = event_new(base, -1, EV_PERSIST, on_poll, hub);
    if (hub->serve_ev == NULL || hub->poll_ev == NULL) {
        event_hub_free(hub);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    struct timeval tv = {hub->opts.poll_ms / 1000, (hub->opts.poll_ms % 1000) * 1000};
    event_add(hub->poll_ev, &tv);
    *out = hub;
    return 0;
}

void event_hub_free(struct event_hub *hub)
{
    if (hub == NULL)
        return;
    while (hub->topics != NULL)
        topic_end(hub->topics);
    if (hub->serve_ev)
        event_free(hub->serve_ev);
    if (hub->poll_ev)
        event_free(hub->poll_ev);
    free(hub);
}

int event_hub_subscribe(struct event_hub *hub, const char *job_id, long long after_seq,
                        event_sub_cb cb, void *arg, struct event_sub **out, struct err *e)
{
    *out = NULL;
    struct event_sub *s = calloc(1, sizeof *s);
    if (s == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    struct topic *t = topic_find(hub, job_id);
    if (t == NULL) {
        if ((t = calloc(1, sizeof *t)) == NULL) {
            free(s);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
        t->hub = hub;
        snprintf(t->job_id, sizeof t->job_id, "%s", job_id);
        if (tsearch(t, &hub->tree, topic_cmp) == NULL) {
            free(t);
            free(s);
            return err_set(e, ERR_NOMEM, "out of memory");
        }
        DLIST_PUSH(hub->topics, t);
    }
    s->topic = t;
    s->after = after_seq < 0 ? 0 : after_seq;
    s->cb = cb;
    s->arg = arg;
    DLIST_PUSH(t->subs, s);
    t->n_subs++;
    mark_dirty(t);
    *out = s;
    return 0;
}

void event_hub_unsubscribe(struct event_sub *sub)
{
    if (sub == NULL)
        return;
    struct topic *t = sub->topic;
    sub_remove(sub);
    if (t->n_subs == 0)
        topic_free(t);
}

void event_hub_resume(struct event_sub *sub)
{
    if (sub == NULL || !sub->paused)
        return;
    sub->paused = false;
    mark_dirty(sub->topic);
}

void event_hub_notify(struct event_hub *hub, const char *job_id)
{
    if (hub == NULL || job_id == NULL)
        return;
    struct topic *t = topic_find(hub, job_id);
    if (t != NULL)
        mark_dirty(t);
}
