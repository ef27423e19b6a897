/*
 * tzclock.h - the datetime tool's work: an instant written in a named IANA time zone.
 * Internal to src/tools; on its own so that tests can pass a fixed instant.
 */
#ifndef CREWD_TOOLS_TZCLOCK_H
#define CREWD_TOOLS_TZCLOCK_H

#include <stddef.h>
#include <time.h>

#include "core/err.h"

#define TZCLOCK_ZONEINFO "/usr/share/zoneinfo"
#define TZCLOCK_MAX_ZONE 64

/*
 * Writes `now` in `zone` (NULL, "" or "UTC": UTC) as
 *   "2024-07-01T14:00:00+02:00 (Europe/Madrid, Monday)"
 * into buf. The zone name must be [A-Za-z0-9/_+-], not start with '/', hold no "..", and name
 * a TZif file under TZCLOCK_ZONEINFO. Returns 0, or ERR_INVALID with a message for the model
 * ("unknown time zone 'Mars/Base' (use an IANA name such as Europe/Madrid)").
 *
 * Loop thread only: it sets TZ, calls tzset() and localtime_r(), and puts TZ back, which
 * races with any other thread reading the environment or the C library's zone state. crewd
 * runs tools on its one loop thread (DESIGN.md decision 1); a worker thread must not call it.
 */
int tzclock_format(const char *zone, time_t now, char *buf, size_t len, struct err *e);

#endif
