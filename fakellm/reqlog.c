/*
 * reqlog.c - what the fake remembers: the request log that GET /_fake/requests shows (a ring
 * capped at --max-log entries, oldest dropped) and the string-keyed counters behind the
 * reply_seq and fail_times directives.
 *
 * Entries are found again by seq: seq numbers are consecutive in the ring, so the slot of a
 * seq is an offset from the oldest one. A reply that finishes after its entry was dropped (or
 * after DELETE /_fake/requests) simply finds nothing to update.
 */
#include "fakellm.h"

#include <stdlib.h>
#include <string.h>

/* ---- request log -------------------------------------------------------------------------- */

static void entry_free(struct fake_log_entry *e)
{
    if (e == NULL)
        return;
    free(e->method);
    free(e->path);
    json_decref(e->headers);
    json_decref(e->body);
    free(e);
}

void fake_log_init(struct fake_log *log, size_t cap)
{
    memset(log, 0, sizeof *log);
    log->cap = cap ? cap : 1;
    log->next_seq = 1;
}

void fake_log_clear(struct fake_log *log)
{
    for (size_t i = 0; i < log->count; i++)
        entry_free(log->ring[(log->head + i) % log->ring_len]);
    log->head = 0;
    log->count = 0;
}

void fake_log_cleanup(struct fake_log *log)
{
    fake_log_clear(log);
    free(log->ring);
    log->ring = NULL;
    log->ring_len = 0;
}

/* Doubles the ring (up to cap), unrolling it so that the oldest entry is at slot 0. */
static int grow(struct fake_log *log)
{
    size_t n = log->ring_len ? log->ring_len * 2 : 64;
    if (n > log->cap)
        n = log->cap;
    struct fake_log_entry **ring = malloc(n * sizeof *ring);
    if (ring == NULL)
        return -1;
    for (size_t i = 0; i < log->count; i++)
        ring[i] = log->ring[(log->head + i) % log->ring_len];
    free(log->ring);
    log->ring = ring;
    log->ring_len = n;
    log->head = 0;
    return 0;
}

static char *dup_str(const char *s)
{
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p != NULL)
        memcpy(p, s, n);
    return p;
}

struct fake_log_entry *fake_log_add(struct fake_log *log, const char *method, const char *path,
                                    json_t *headers, json_t *body, int64_t now_ms)
{
    struct fake_log_entry *e = calloc(1, sizeof *e);
    if (e == NULL)
        goto fail;
    e->method = dup_str(method ? method : "");
    e->path = dup_str(path);
    e->headers = headers;
    e->body = body;
    headers = body = NULL;
    if (e->method == NULL || (path != NULL && e->path == NULL))
        goto fail;
    if (log->count == log->ring_len && log->ring_len < log->cap && grow(log) < 0)
        goto fail;
    if (log->count == log->cap) {
        /* Full: drop the oldest. */
        entry_free(log->ring[log->head]);
        log->head = (log->head + 1) % log->ring_len;
        log->count--;
    }
    e->seq = log->next_seq++;
    e->received_at_ms = now_ms;
    log->ring[(log->head + log->count) % log->ring_len] = e;
    log->count++;
    return e;
fail:
    entry_free(e);
    json_decref(headers);
    json_decref(body);
    return NULL;
}

struct fake_log_entry *fake_log_find(struct fake_log *log, uint64_t seq)
{
    if (log->count == 0)
        return NULL;
    uint64_t first = log->ring[log->head]->seq;
    if (seq < first || seq - first >= log->count)
        return NULL;
    return log->ring[(log->head + (size_t)(seq - first)) % log->ring_len];
}

static json_t *entry_json(const struct fake_log_entry *e)
{
    return json_pack("{sIsssosososisbsI}", "seq", (json_int_t)e->seq, "method", e->method, "path",
                     e->path ? json_string(e->path) : json_null(), "headers",
                     e->headers ? json_incref(e->headers) : json_object(), "body",
                     e->body ? json_incref(e->body) : json_null(), "status", e->status,
                     "client_closed", e->client_closed, "received_at_ms",
                     (json_int_t)e->received_at_ms);
}

json_t *fake_log_json(const struct fake_log *log, uint64_t since)
{
    json_t *arr = json_array();
    if (arr == NULL)
        return NULL;
    for (size_t i = 0; i < log->count; i++) {
        const struct fake_log_entry *e = log->ring[(log->head + i) % log->ring_len];
        if (e->seq <= since)
            continue;
        if (json_array_append_new(arr, entry_json(e)) != 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return json_pack("{sosI}", "requests", arr, "total", (json_int_t)(log->next_seq - 1));
}

/* ---- counters ----------------------------------------------------------------------------- */

struct fake_counter {
    struct fake_counter *next;
    uint64_t count;
    char key[];
};

static size_t hash_key(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return (size_t)h;
}

void fake_counters_init(struct fake_counters *c)
{
    memset(c, 0, sizeof *c);
}

void fake_counters_cleanup(struct fake_counters *c)
{
    for (size_t i = 0; i < c->n_buckets; i++) {
        struct fake_counter *n = c->buckets[i];
        while (n != NULL) {
            struct fake_counter *next = n->next;
            free(n);
            n = next;
        }
    }
    free(c->buckets);
    memset(c, 0, sizeof *c);
}

static struct fake_counter *lookup(const struct fake_counters *c, const char *key)
{
    if (c->n_buckets == 0)
        return NULL;
    for (struct fake_counter *n = c->buckets[hash_key(key) % c->n_buckets]; n; n = n->next)
        if (strcmp(n->key, key) == 0)
            return n;
    return NULL;
}

static int rehash(struct fake_counters *c)
{
    size_t nb = c->n_buckets ? c->n_buckets * 2 : 64;
    struct fake_counter **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < c->n_buckets; i++) {
        struct fake_counter *n = c->buckets[i];
        while (n != NULL) {
            struct fake_counter *next = n->next;
            size_t slot = hash_key(n->key) % nb;
            n->next = b[slot];
            b[slot] = n;
            n = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->n_buckets = nb;
    return 0;
}

uint64_t fake_counters_bump(struct fake_counters *c, const char *key)
{
    struct fake_counter *n = lookup(c, key);
    if (n != NULL)
        return n->count++;
    if (c->n_items >= c->n_buckets && rehash(c) < 0)
        return UINT64_MAX;
    size_t len = strlen(key) + 1;
    n = malloc(sizeof *n + len);
    if (n == NULL)
        return UINT64_MAX;
    memcpy(n->key, key, len);
    n->count = 1;
    size_t slot = hash_key(key) % c->n_buckets;
    n->next = c->buckets[slot];
    c->buckets[slot] = n;
    c->n_items++;
    return 0;
}

uint64_t fake_counters_get(const struct fake_counters *c, const char *key)
{
    const struct fake_counter *n = lookup(c, key);
    return n ? n->count : 0;
}
