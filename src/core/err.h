/*
 * err.h - the one error table of crewd, and the error value that carries a message.
 *
 * A fallible function returns 0 or a negative ERR_* code, and may fill a `struct err` with a
 * human-readable message at the point where the failure is first understood (the field, the
 * value, the fix). Foreign codes (errno, SQLITE_*, CURLcode, PGresult) are translated into this
 * table where they enter and never cross a module boundary. Only api/ maps codes to HTTP
 * statuses (api_status_of()).
 */
#ifndef CREWD_CORE_ERR_H
#define CREWD_CORE_ERR_H

#include <stddef.h>

/* X(name, value, default message). Values are stable: they may appear in logs. */
#define ERR_MAP(X)                                                                                 \
    X(NOMEM, -1, "out of memory")                                                                  \
    X(INVALID, -2, "invalid input")                                                                \
    X(NOT_FOUND, -3, "not found")                                                                  \
    X(CONFLICT, -4, "conflict")                                                                    \
    X(TOO_LARGE, -5, "too large")                                                                  \
    X(UNSUPPORTED, -6, "not supported")                                                            \
    X(UNAUTHORIZED, -7, "unauthorized")                                                            \
    X(IO, -8, "input/output error")                                                                \
    X(STORE, -9, "storage error")                                                                  \
    X(BUSY, -10, "busy, try again")                                                                \
    X(INTERNAL, -11, "internal error")                                                             \
    X(MISMATCH, -12, "does not match the earlier request")

enum err_code {
    ERR_OK = 0,
#define ERR_ENUM_(name, value, msg) ERR_##name = (value),
    ERR_MAP(ERR_ENUM_)
#undef ERR_ENUM_
};

#define ERR_MSG_MAX 512

/* The message that travels with a code. Zero-initialise it (`struct err e = {0};`). */
struct err {
    int code;              /* 0 or an ERR_* value */
    char msg[ERR_MSG_MAX]; /* NUL-terminated; "" when nothing was set */
};

/*
 * Records `code` and a printf-style message in `e` (which may be NULL) and returns `code`, so
 * that `return err_set(e, ERR_INVALID, "name: required");` reads as one step. The first error
 * recorded wins only if the caller checks; err_set always overwrites.
 */
int err_set(struct err *e, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Prefixes the message already in `e` with "prefix: " (for context added by callers). */
void err_prefix(struct err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* "ERR_INVALID" style name, or "ERR_UNKNOWN". Never NULL. */
const char *err_name(int code);

/* The table's default message for `code`. Never NULL. */
const char *err_default_msg(int code);

/* `e->msg` if set, else the default message of `e->code`. */
const char *err_text(const struct err *e);

#endif
