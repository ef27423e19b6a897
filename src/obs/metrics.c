/*
 * metrics.c - see metrics.h. Series are kept in a plain array per family and found by a
 * linear search: crewd's families have a handful of series each (routes x methods x
 * statuses, providers), and a scrape walks them all anyway.
 */
#include "obs/metrics.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"

struct series {
    char *values[METRICS_MAX_LABELS];
    double value;    /* counter, gauge; histogram: the sum */
    double count;    /* histogram: observations */
    double *buckets; /* histogram: observations per bucket (not cumulative) */
};

struct metrics_family {
    enum metrics_type type;
    const char *name;
    const char *help;
    const char *labels[METRICS_MAX_LABELS];
    size_t n_labels;
    double bounds[METRICS_MAX_BUCKETS];
    size_t n_bounds;
    struct series *series;
    size_t n_series, cap_series;
    struct metrics_family *next;
};

struct metrics {
    struct metrics_family *head, *tail;
};

int metrics_new(struct metrics **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? 0 : ERR_NOMEM;
}

static void series_cleanup(struct series *s)
{
    for (size_t i = 0; i < METRICS_MAX_LABELS; i++)
        free(s->values[i]);
    free(s->buckets);
}

void metrics_family_clear(struct metrics_family *f)
{
    for (size_t i = 0; i < f->n_series; i++)
        series_cleanup(&f->series[i]);
    f->n_series = 0;
}

void metrics_free(struct metrics *m)
{
    if (m == NULL)
        return;
    for (struct metrics_family *f = m->head, *next; f != NULL; f = next) {
        next = f->next;
        metrics_family_clear(f);
        free(f->series);
        free(f);
    }
    free(m);
}

struct metrics_family *metrics_family_new(struct metrics *m, enum metrics_type type,
                                          const char *name, const char *help,
                                          const char *const *label_names, size_t n_labels,
                                          const double *buckets, size_t n_buckets)
{
    if (name == NULL || help == NULL || n_labels > METRICS_MAX_LABELS ||
        (n_labels > 0 && label_names == NULL))
        return NULL;
    if (type == METRICS_HISTOGRAM) {
        if (buckets == NULL || n_buckets == 0 || n_buckets > METRICS_MAX_BUCKETS)
            return NULL;
        for (size_t i = 0; i < n_buckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                return NULL;
    }
    struct metrics_family *f = calloc(1, sizeof *f);
    if (f == NULL)
        return NULL;
    f->type = type;
    f->name = name;
    f->help = help;
    for (size_t i = 0; i < n_labels; i++)
        f->labels[i] = label_names[i];
    f->n_labels = n_labels;
    if (type == METRICS_HISTOGRAM) {
        memcpy(f->bounds, buckets, n_buckets * sizeof *buckets);
        f->n_bounds = n_buckets;
    }
    if (m->tail != NULL)
        m->tail->next = f;
    else
        m->head = f;
    m->tail = f;
    return f;
}

static bool series_matches(const struct metrics_family *f, const struct series *s,
                           const char *const *values)
{
    for (size_t i = 0; i < f->n_labels; i++)
        if (strcmp(s->values[i], values[i] ? values[i] : "") != 0)
            return false;
    return true;
}

static struct series *series_find(const struct metrics_family *f, const char *const *values)
{
    for (size_t i = 0; i < f->n_series; i++)
        if (series_matches(f, &f->series[i], values))
            return &f->series[i];
    return NULL;
}

/* The series for `values`, made when new; NULL when out of memory or at the cap. */
static struct series *series_get(struct metrics_family *f, const char *const *values)
{
    struct series *s = series_find(f, values);
    if (s != NULL)
        return s;
    if (f->n_series >= METRICS_MAX_SERIES)
        return NULL;
    if (f->n_series == f->cap_series) {
        size_t cap = f->cap_series ? f->cap_series * 2 : 8;
        struct series *grown = realloc(f->series, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        f->series = grown;
        f->cap_series = cap;
    }
    struct series fresh = {0};
    for (size_t i = 0; i < f->n_labels; i++)
        if ((fresh.values[i] = strdup(values[i] ? values[i] : "")) == NULL)
            goto fail;
    if (f->type == METRICS_HISTOGRAM &&
        (fresh.buckets = calloc(f->n_bounds, sizeof *fresh.buckets)) == NULL)
        goto fail;
    f->series[f->n_series] = fresh;
    return &f->series[f->n_series++];
fail:
    series_cleanup(&fresh);
    return NULL;
}

void metrics_counter_add(struct metrics_family *f, const char *const *values, double delta)
{
    struct series *s;
    if (f == NULL || f->type != METRICS_COUNTER || !(delta >= 0) ||
        (s = series_get(f, values)) == NULL)
        return;
    s->value += delta;
}

void metrics_gauge_set(struct metrics_family *f, const char *const *values, double v)
{
    struct series *s;
    if (f == NULL || f->type != METRICS_GAUGE || (s = series_get(f, values)) == NULL)
        return;
    s->value = v;
}

void metrics_histogram_observe(struct metrics_family *f, const char *const *values, double v)
{
    struct series *s;
    if (f == NULL || f->type != METRICS_HISTOGRAM || isnan(v) ||
        (s = series_get(f, values)) == NULL)
        return;
    for (size_t i = 0; i < f->n_bounds; i++) {
        if (v <= f->bounds[i]) {
            s->buckets[i] += 1;
            break;
        }
    }
    s->count += 1;
    s->value += v;
}

double metrics_value(const struct metrics_family *f, const char *const *values)
{
    const struct series *s = f ? series_find(f, values) : NULL;
    if (s == NULL)
        return 0;
    return f->type == METRICS_HISTOGRAM ? s->count : s->value;
}

/* ---- rendering ---- */

struct text {
    char *buf;
    size_t len, cap;
    bool nomem;
};

static void text_add(struct text *t, const char *s, size_t n)
{
    if (t->nomem)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (t->len + n + 1 > cap)
            cap *= 2;
        char *grown = realloc(t->buf, cap);
        if (grown == NULL) {
            t->nomem = true;
            return;
        }
        t->buf = grown;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_str(struct text *t, const char *s)
{
    text_add(t, s, strlen(s));
}

/* Escapes backslash and newline, and double quote when `quote` (label values; HELP text
 * keeps its quotes, as the format says). */
static void text_escaped(struct text *t, const char *s, bool quote)
{
    for (const char *p = s; *p != '\0'; p++) {
        if (*p == '\\')
            text_add(t, "\\\\", 2);
        else if (*p == '\n')
            text_add(t, "\\n", 2);
        else if (*p == '"' && quote)
            text_add(t, "\\\"", 2);
        else
            text_add(t, p, 1);
    }
}

/* The shortest of %.15g and %.17g that reads back as v: "0.1", not "0.10000000000000001". */
static void text_number(struct text *t, double v)
{
    char num[40];
    if (isnan(v))
        snprintf(num, sizeof num, "NaN");
    else if (isinf(v))
        snprintf(num, sizeof num, v > 0 ? "+Inf" : "-Inf");
    else {
        snprintf(num, sizeof num, "%.15g", v);
        if (strtod(num, NULL) != v)
            snprintf(num, sizeof num, "%.17g", v);
    }
    text_str(t, num);
}

/* name{l1="v1",...,extra="x"} value\n; `suffix` goes after the name ("_bucket"). */
static void text_sample(struct text *t, const struct metrics_family *f, const struct series *s,
                        const char *suffix, const char *extra_label, const char *extra_value,
                        double v)
{
    text_str(t, f->name);
    text_str(t, suffix);
    if (f->n_labels > 0 || extra_label != NULL) {
        text_add(t, "{", 1);
        for (size_t i = 0; i < f->n_labels; i++) {
            if (i > 0)
                text_add(t, ",", 1);
            text_str(t, f->labels[i]);
            text_add(t, "=\"", 2);
            text_escaped(t, s->values[i], true);
            text_add(t, "\"", 1);
        }
        if (extra_label != NULL) {
            if (f->n_labels > 0)
                text_add(t, ",", 1);
            text_str(t, extra_label);
            text_add(t, "=\"", 2);
            text_str(t, extra_value);
            text_add(t, "\"", 1);
        }
        text_add(t, "}", 1);
    }
    text_add(t, " ", 1);
    text_number(t, v);
    text_add(t, "\n", 1);
}

static void render_family(struct text *t, const struct metrics_family *f)
{
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    text_str(t, "# HELP ");
    text_str(t, f->name);
    text_add(t, " ", 1);
    text_escaped(t, f->help, false);
    text_str(t, "\n# TYPE ");
    text_str(t, f->name);
    text_add(t, " ", 1);
    text_str(t, type_names[f->type]);
    text_add(t, "\n", 1);
    for (size_t i = 0; i < f->n_series; i++) {
        const struct series *s = &f->series[i];
        if (f->type != METRICS_HISTOGRAM) {
            text_sample(t, f, s, "", NULL, NULL, s->value);
            continue;
        }
        double cumulative = 0;
        for (size_t b = 0; b < f->n_bounds; b++) {
            char le[40];
            struct text bound = {0};
            text_number(&bound, f->bounds[b]);
            snprintf(le, sizeof le, "%s", bound.buf ? bound.buf : "0");
            free(bound.buf);
            cumulative += s->buckets[b];
            text_sample(t, f, s, "_bucket", "le", le, cumulative);
        }
        text_sample(t, f, s, "_bucket", "le", "+Inf", s->count);
        text_sample(t, f, s, "_sum", NULL, NULL, s->value);
        text_sample(t, f, s, "_count", NULL, NULL, s->count);
    }
}

int metrics_render(const struct metrics *m, char **out, size_t *len)
{
    struct text t = {0};
    *out = NULL;
    *len = 0;
    text_add(&t, "", 0); /* an empty registry still renders "" */
    for (const struct metrics_family *f = m->head; f != NULL; f = f->next)
        render_family(&t, f);
    if (t.nomem) {
        free(t.buf);
        return ERR_NOMEM;
    }
    *out = t.buf;
    *len = t.len;
    return 0;
}
