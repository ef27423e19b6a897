/* log.c - see log.h. One fprintf per record so concurrent writers do not interleave lines. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/clock.h"
#include "core/err.h"

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

/* Written before the loop starts; see the header for why this is process-wide. */
static enum log_level current_level = LOG_INFO;

int log_level_parse(const char *s, enum log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return ERR_INVALID;
}

const char *log_level_name(enum log_level level)
{
    if ((unsigned)level < sizeof level_names / sizeof level_names[0])
        return level_names[level];
    return "?";
}

void log_set_level(enum log_level level)
{
    current_level = level;
}
enum log_level log_get_level(void)
{
    return current_level;
}

void log_msg(enum log_level level, const char *module, const char *fmt, ...)
{
    if (level > current_level)
        return;
    char when[CLOCK_RFC3339_LEN];
    clock_rfc3339_now(when);
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s %-5s %s: %s\n", when, log_level_name(level), module, text);
}
