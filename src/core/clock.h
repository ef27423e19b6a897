/*
 * clock.h - wall-clock timestamps in the API's format and monotonic time for durations.
 * API times are RFC 3339 UTC with milliseconds and a 'Z': 2026-11-24T10:30:00.123Z.
 */
#ifndef CREWD_CORE_CLOCK_H
#define CREWD_CORE_CLOCK_H

#include <stdint.h>

#define CLOCK_RFC3339_LEN 32 /* "YYYY-MM-DDTHH:MM:SS.mmmZ" + NUL, with room to spare */

/* Milliseconds since the Unix epoch (CLOCK_REALTIME). */
int64_t clock_now_ms(void);
/* Milliseconds from an arbitrary origin that never goes backwards (CLOCK_MONOTONIC). */
int64_t clock_mono_ms(void);

/* Formats `epoch_ms` into `out` (at least CLOCK_RFC3339_LEN bytes). */
void clock_rfc3339(int64_t epoch_ms, char out[CLOCK_RFC3339_LEN]);
void clock_rfc3339_now(char out[CLOCK_RFC3339_LEN]);

/* Parses the form clock_rfc3339 writes ("2026-11-24T10:30:00.123Z"; the fraction is
 * optional) back to epoch milliseconds. Returns 0, or -1 for any other text. */
int clock_parse_rfc3339(const char *s, int64_t *epoch_ms);

#endif
