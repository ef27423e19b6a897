/*
 * log.h - leveled logging to stderr, one line per record.
 *
 * The level is process configuration set once at start-up (before the loop runs) and read
 * afterwards; it is the one piece of process-wide state crewd keeps, because every module logs
 * and threading a logger through each call would add noise to every signature.
 * Secrets (API keys, Authorization headers, webhook secrets) are never passed to these
 * functions; prompts and completions are logged only at LOG_TRACE.
 */
#ifndef CREWD_CORE_LOG_H
#define CREWD_CORE_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

/* Parses "error", "warn", "info", "debug", "trace". Returns 0, or ERR_INVALID. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level level);

void log_set_level(enum log_level level);
enum log_level log_get_level(void);

/* `module` is a short tag such as "http" or "store". */
void log_msg(enum log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_error(mod, ...) log_msg(LOG_ERROR, mod, __VA_ARGS__)
#define log_warn(mod, ...) log_msg(LOG_WARN, mod, __VA_ARGS__)
#define log_info(mod, ...) log_msg(LOG_INFO, mod, __VA_ARGS__)
#define log_debug(mod, ...) log_msg(LOG_DEBUG, mod, __VA_ARGS__)

#endif
