/* err.c - see err.h. */
#include "core/err.h"

#include "core/utf8.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(struct err *e, int code, const char *fmt, ...)
{
    if (e == NULL)
        return code;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    utf8_trim_cut(e->msg);
    return code;
}

void err_prefix(struct err *e, const char *fmt, ...)
{
    if (e == NULL)
        return;
    char prefix[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char joined[ERR_MSG_MAX];
    snprintf(joined, sizeof joined, "%s: %s", prefix, err_text(e));
    utf8_trim_cut(joined);
    memcpy(e->msg, joined, sizeof e->msg);
}

const char *err_name(int code)
{
    switch (code) {
    case ERR_OK:
        return "ERR_OK";
#define ERR_NAME_(name, value, msg)                                                                \
    case ERR_##name:                                                                               \
        return "ERR_" #name;
        ERR_MAP(ERR_NAME_)
#undef ERR_NAME_
    }
    return "ERR_UNKNOWN";
}

const char *err_default_msg(int code)
{
    switch (code) {
    case ERR_OK:
        return "ok";
#define ERR_DMSG_(name, value, msg)                                                                \
    case ERR_##name:                                                                               \
        return msg;
        ERR_MAP(ERR_DMSG_)
#undef ERR_DMSG_
    }
    return "unknown error";
}

const char *err_text(const struct err *e)
{
    if (e == NULL)
        return "unknown error";
    return e->msg[0] ? e->msg : err_default_msg(e->code);
}
