/*
 * metrics.h - a small metrics registry and its Prometheus text exposition (format 0.0.4).
 *
 * A registry holds families (counter, gauge, histogram), each with a fixed list of label
 * names; a family holds one series per distinct tuple of label values, made on first use.
 * Counters only go up; gauges are set (typically by the scrape handler just before
 * rendering); histograms have fixed upper bounds given at registration, and render
 * cumulative _bucket{le="..."} lines ending with le="+Inf", then _sum and _count.
 *
 * It knows nothing of crewd: obs/obs.h declares crewd's own metrics on top of it. A
 * registry and its families are used by one thread (the loop thread). Updates never fail
 * loudly: out of memory, or a family past METRICS_MAX_SERIES series, drops the sample (a
 * metric must not take a request down with it).
 */
#ifndef CREWD_OBS_METRICS_H
#define CREWD_OBS_METRICS_H

#include <stddef.h>

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_BUCKETS 32
/* Series per family: a bound on memory whatever label values arrive. */
#define METRICS_MAX_SERIES 1024

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM };

struct metrics;
struct metrics_family;

/* Returns 0 or ERR_NOMEM. */
int metrics_new(struct metrics **out);
/* Frees the registry, its families and their series. NULL-safe. */
void metrics_free(struct metrics *m);

/*
 * Registers a family; families render in registration order. `name`, `help` and the
 * label names are borrowed and must outlive the registry (string literals). For a
 * histogram, `buckets` are n_buckets (1..METRICS_MAX_BUCKETS) strictly ascending finite upper
 * bounds, copied; +Inf is implied. Returns the family (owned by the registry), or NULL when
 * out of memory or the arguments are invalid (too many labels or buckets, bad bounds).
 */
struct metrics_family *metrics_family_new(struct metrics *m, enum metrics_type type,
                                          const char *name, const char *help,
                                          const char *const *label_names, size_t n_labels,
                                          const double *buckets, size_t n_buckets);

/* `values` holds one value per label name of the family (copied when a new series is made;
 * NULL when the family has no labels). */
void metrics_counter_add(struct metrics_family *f, const char *const *values, double delta);
void metrics_gauge_set(struct metrics_family *f, const char *const *values, double v);
void metrics_histogram_observe(struct metrics_family *f, const char *const *values, double v);

/* The value of a counter or gauge series, or the count of a histogram series; 0 when the
 * series does not exist (for tests and internal readers). */
double metrics_value(const struct metrics_family *f, const char *const *values);

/* Drops every series of the family (a gauge whose label set is rebuilt at each scrape). */
void metrics_family_clear(struct metrics_family *f);

/*
 * Renders every family as Prometheus text format 0.0.4: "# HELP" (backslash and newline
 * escaped) and "# TYPE" lines, then one line per sample; label values escape backslash,
 * double quote and newline. A family with no series renders only its HELP and TYPE lines.
 * *out is a new NUL-terminated text (free()), *len its length. Returns 0 or ERR_NOMEM.
 */
int metrics_render(const struct metrics *m, char **out, size_t *len);

#endif
