/*
 * tzclock.c - tzclock_format. glibc has no "localtime in zone X" call, so the zone goes
 * through TZ: set it, tzset(), localtime_r(), restore the previous value and tzset() again.
 * The alternative, reading TZif files ourselves, is a parser of its own (v1/v2/v3, the POSIX
 * TZ footer string for dates past the table) for one tool; the TZ swap is a few lines and
 * correct as long as one thread does it (see tzclock.h). glibc silently falls back to UTC for
 * a zone it cannot load, so the zone file is checked first (exists, regular, "TZif" magic).
 */
#include "tools/tzclock.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/utf8.h"

static const char *const weekdays[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                       "Thursday", "Friday", "Saturday"};

static bool zone_name_ok(const char *z, size_t n)
{
    if (n == 0 || n > TZCLOCK_MAX_ZONE || z[0] == '/' || strstr(z, "..") != NULL)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = z[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '/' || c == '_' || c == '-' || c == '+';
        if (!ok)
            return false;
    }
    return true;
}

static bool zone_file_ok(const char *zone)
{
    char path[sizeof TZCLOCK_ZONEINFO + TZCLOCK_MAX_ZONE + 2];
    snprintf(path, sizeof path, "%s/%s", TZCLOCK_ZONEINFO, zone);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        /* Some zones (Etc/UTC on Debian, say) are symlinks; follow them only to a file. */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            return false;
    }
    struct stat st;
    char magic[4];
    bool ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
              read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
              memcmp(magic, "TZif", 4) == 0;
    close(fd);
    return ok;
}

/* Seconds since the epoch of a broken-down UTC time (timegm is not in POSIX): Howard
 * Hinnant's days-from-civil. */
static long long timegm_portable(const struct tm *tm)
{
    long long y = (long long)tm->tm_year + 1900;
    long long m = tm->tm_mon + 1;
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + tm->tm_mday - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = era * 146097 + doe - 719468;
    return days * 86400 + tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec;
}

static int write_tm(const struct tm *tm, long gmtoff, const char *zone, char *buf, size_t len)
{
    char date[32];
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", tm);
    long off = gmtoff < 0 ? -gmtoff : gmtoff;
    const char *wd = tm->tm_wday >= 0 && tm->tm_wday < 7 ? weekdays[tm->tm_wday] : "?";
    if (gmtoff == 0 && strcmp(zone, "UTC") == 0)
        snprintf(buf, len, "%sZ (UTC, %s)", date, wd);
    else
        snprintf(buf, len, "%s%c%02ld:%02ld (%s, %s)", date, gmtoff < 0 ? '-' : '+', off / 3600,
                 off % 3600 / 60, zone, wd);
    return 0;
}

int tzclock_format(const char *zone, time_t now, char *buf, size_t len, struct err *e)
{
    struct tm tm;
    if (zone == NULL || zone[0] == '\0' || strcmp(zone, "UTC") == 0) {
        if (gmtime_r(&now, &tm) == NULL)
            return err_set(e, ERR_INVALID, "the time cannot be represented");
        return write_tm(&tm, 0, "UTC", buf, len);
    }
    size_t n = strlen(zone);
    if (!zone_name_ok(zone, n) || !zone_file_ok(zone)) {
        size_t q = utf8_prefix_len(zone, n, TZCLOCK_MAX_ZONE);
        return err_set(e, ERR_INVALID,
                       "unknown time zone '%.*s%s' (use an IANA name such as Europe/Madrid, or "
                       "UTC)",
                       (int)q, zone, q < n ? "..." : "");
    }

    const char *old = getenv("TZ");
    char *saved = old ? strdup(old) : NULL;
    if (old != NULL && saved == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    char tzval[TZCLOCK_MAX_ZONE + 2];
    snprintf(tzval, sizeof tzval, ":%s", zone); /* ':' = a file under the zoneinfo dir */
    int rc = 0;
    if (setenv("TZ", tzval, 1) != 0) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    tzset();
    struct tm *got = localtime_r(&now, &tm);
    if (saved != NULL)
        setenv("TZ", saved, 1);
    else
        unsetenv("TZ");
    tzset();
    if (got == NULL) {
        rc = err_set(e, ERR_INVALID, "the time cannot be represented in '%s'", zone);
        goto out;
    }
    /* tm_gmtoff is a glibc/BSD extension that needs _DEFAULT_SOURCE; compute the offset from
     * the broken-down time instead: local fields read as UTC, minus the instant. */
    struct tm as_utc = tm;
    as_utc.tm_isdst = 0;
    long gmtoff = (long)(timegm_portable(&as_utc) - (long long)now);
    write_tm(&tm, gmtoff, zone, buf, len);
out:
    free(saved);
    return rc;
}
