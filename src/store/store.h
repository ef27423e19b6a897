/*
 * store.h - the storage interface: one header, several backends (SQLite's VFS idea).
 *
 * store_open() picks the backend from the URL: "sqlite:PATH" (the default, embedded) or
 * "postgres://..." / "postgresql://..." (shared by several instances). Every backend keeps a
 * schema_version table and applies its migrations in order at open.
 *
 * This first version holds the crew registry; jobs, events and memory join it with the job
 * engine. Calls are synchronous and made from the loop thread: crew operations are single-row
 * statements on a local WAL database (tens of microseconds), which the loop can afford; the
 * job paths that write per step will batch per loop turn.
 *
 * A store is used by one thread at a time (the loop thread).
 */
#ifndef CREWD_STORE_STORE_H
#define CREWD_STORE_STORE_H

#include <stddef.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/id.h"

/* One crew row. Strings are owned by the row (store_crew_free). */
struct store_crew {
    char crew_id[ID_UUID_LEN];
    char *name;
    char *description;    /* NULL when none */
    char *execution_mode; /* "sequential", ... */
    long agent_count;
    char *definition; /* normalized definition, JSON text, secrets included */
    char *plan;       /* compiled plan, JSON text */
    char created_at[CLOCK_RFC3339_LEN];
    char updated_at[CLOCK_RFC3339_LEN];
};

void store_crew_free(struct store_crew *crew);

/* A page of crews for listing: rows hold no definition and no plan (both NULL). */
struct store_crew_page {
    struct store_crew **items;
    size_t n;
    long total; /* crews in the store, regardless of the page */
};

void store_crew_page_cleanup(struct store_crew_page *page);

enum store_lookup {
    STORE_BY_NAME_OR_ID = 0, /* name first, then crew_id (API.md: lookup by identifier) */
    STORE_BY_NAME,
    STORE_BY_ID,
};

struct store;

struct store_ops {
    const char *kind; /* "sqlite", "postgres" */
    /* ERR_CONFLICT (message names the field) when the name or crew_id is taken. */
    int (*crew_insert)(struct store *st, const struct store_crew *crew, struct err *e);
    /* Replaces every field but crew_id and created_at of the row with crew->crew_id.
     * ERR_NOT_FOUND if no such row; ERR_CONFLICT if the new name belongs to another crew. */
    int (*crew_update)(struct store *st, const struct store_crew *crew, struct err *e);
    /* ERR_NOT_FOUND ("crew 'X' not found") when nothing matches; *out is a new row
     * otherwise. Ids are compared as stored (lowercase); callers canonicalize them. */
    int (*crew_get)(struct store *st, const char *ident, enum store_lookup how,
                    struct store_crew **out, struct err *e);
    /* Ordered by created_at, then insertion order. limit and offset >= 0 (ERR_INVALID
     * otherwise); limit 0 gives an empty page with the total. */
    int (*crew_list)(struct store *st, long limit, long offset, struct store_crew_page *out,
                     struct err *e);
    /* ERR_NOT_FOUND if no such row. */
    int (*crew_delete)(struct store *st, const char *crew_id, struct err *e);
    void (*close)(struct store *st);
};

struct store {
    const struct store_ops *ops;
};

/*
 * Opens (creating when needed, with the parent directory of a SQLite file) and migrates the
 * store named by `url`. Returns 0, ERR_INVALID for a malformed URL, ERR_UNSUPPORTED for a
 * backend this build lacks, or ERR_STORE/ERR_IO with the backend's message.
 */
int store_open(const char *url, struct store **out, struct err *e);
void store_close(struct store *st);

/* The schema version this build migrates to. */
#define STORE_SCHEMA_VERSION 1

static inline int store_crew_insert(struct store *st, const struct store_crew *c, struct err *e)
{
    return st->ops->crew_insert(st, c, e);
}
static inline int store_crew_update(struct store *st, const struct store_crew *c, struct err *e)
{
    return st->ops->crew_update(st, c, e);
}
static inline int store_crew_get(struct store *st, const char *ident, enum store_lookup how,
                                 struct store_crew **out, struct err *e)
{
    return st->ops->crew_get(st, ident, how, out, e);
}
static inline int store_crew_list(struct store *st, long limit, long offset,
                                  struct store_crew_page *out, struct err *e)
{
    return st->ops->crew_list(st, limit, offset, out, e);
}
static inline int store_crew_delete(struct store *st, const char *crew_id, struct err *e)
{
    return st->ops->crew_delete(st, crew_id, e);
}

#endif
