/*
 * store_sqlite.h - the SQLite backend of store.h: the embedded default, one file in WAL mode
 * with synchronous=NORMAL (durable across a crash of crewd; a power cut may lose the last
 * commits). Reached only through store_open() with a "sqlite:PATH" URL.
 */
#ifndef CREWD_STORE_STORE_SQLITE_H
#define CREWD_STORE_STORE_SQLITE_H

#include "store/store.h"

/* `path` is a file path (":memory:" for tests). Creates the file and its parent directory
 * when missing. Returns 0, ERR_IO / ERR_STORE with SQLite's message, or ERR_NOMEM. */
int store_sqlite_open(const char *path, struct store **out, struct err *e);

#endif
