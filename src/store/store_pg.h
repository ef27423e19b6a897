/*
 * store_pg.h - the PostgreSQL backend of store.h, for several crewd instances sharing one
 * database. Reached only through store_open() with a "postgres://" or "postgresql://" URL.
 */
#ifndef CREWD_STORE_STORE_PG_H
#define CREWD_STORE_STORE_PG_H

#include "store/store.h"

/* `url` is a libpq connection URI. Returns 0, ERR_STORE with libpq's message (password
 * removed), or ERR_NOMEM. */
int store_pg_open(const char *url, struct store **out, struct err *e);

#endif
