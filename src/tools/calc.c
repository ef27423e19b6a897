/*
 * calc.c - the evaluator behind calc.h. Every step checks for a non-finite result at once, so
 * an error names the operation that produced it ("division by zero", "sqrt: result is not a
 * finite number") rather than surfacing as "nan" in the output.
 */
#include "tools/calc.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALC_MAX_NUMBER 64 /* bytes of one numeric literal */
#define CALC_MAX_NAME 16
/* Spelled out: M_PI and M_E are not in C11 or POSIX without extensions. */
#define CALC_PI 3.14159265358979323846
#define CALC_E 2.71828182845904523536

struct parser {
    const char *s;
    size_t len, pos;
    int depth;
    struct err *e;
};

static int expr(struct parser *p, double *out);
static int unary(struct parser *p, double *out);

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static void skip_space(struct parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

/* The next non-space character, or '\0' at the end. */
static char peek(struct parser *p)
{
    skip_space(p);
    return p->pos < p->len ? p->s[p->pos] : '\0';
}

static int unexpected(struct parser *p)
{
    if (p->pos >= p->len)
        return err_set(p->e, ERR_INVALID, "unexpected end of expression");
    unsigned char c = (unsigned char)p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        return err_set(p->e, ERR_INVALID, "unexpected '%c' at position %zu", c, p->pos + 1);
    return err_set(p->e, ERR_INVALID, "unexpected byte 0x%02x at position %zu", c, p->pos + 1);
}

static int finite_or(struct parser *p, double v, const char *what)
{
    if (isfinite(v))
        return 0;
    return err_set(p->e, ERR_INVALID, "%s: result is not a finite number", what);
}

static int enter(struct parser *p)
{
    if (++p->depth > CALC_MAX_DEPTH)
        return err_set(p->e, ERR_TOO_LARGE, "expression nested deeper than %d levels",
                       CALC_MAX_DEPTH);
    return 0;
}

static int number(struct parser *p, double *out)
{
    size_t start = p->pos;
    const char *s = p->s;
    size_t n = p->len;
    size_t i = p->pos;
    bool digits = false;
    while (i < n && is_digit(s[i]))
        i++, digits = true;
    if (i < n && s[i] == '.') {
        i++;
        while (i < n && is_digit(s[i]))
            i++, digits = true;
    }
    if (!digits)
        return unexpected(p);
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1;
        if (j < n && (s[j] == '+' || s[j] == '-'))
            j++;
        if (j < n && is_digit(s[j])) {
            while (j < n && is_digit(s[j]))
                j++;
            i = j;
        } else {
            p->pos = j;
            return err_set(p->e, ERR_INVALID, "malformed exponent at position %zu", start + 1);
        }
    }
    if (i - start >= CALC_MAX_NUMBER)
        return err_set(p->e, ERR_TOO_LARGE, "number at position %zu is longer than %d characters",
                       start + 1, CALC_MAX_NUMBER - 1);
    /* strtod reads only what the grammar above accepted: no hex, inf or nan can get in. */
    char buf[CALC_MAX_NUMBER];
    memcpy(buf, s + start, i - start);
    buf[i - start] = '\0';
    double v = strtod(buf, NULL);
    p->pos = i;
    if (!isfinite(v))
        return err_set(p->e, ERR_INVALID, "number at position %zu is too large", start + 1);
    *out = v;
    return 0;
}

enum fn_id { FN_SQRT, FN_ABS, FN_MIN, FN_MAX, FN_ROUND, FN_FLOOR, FN_CEIL, FN_LOG, FN_EXP,
             FN_SIN, FN_COS, FN_TAN };

static const struct {
    const char *name;
    enum fn_id id;
    int n_args; /* -1: one or more */
} functions[] = {
    {"sqrt", FN_SQRT, 1},   {"abs", FN_ABS, 1},   {"min", FN_MIN, -1}, {"max", FN_MAX, -1},
    {"round", FN_ROUND, 1}, {"floor", FN_FLOOR, 1}, {"ceil", FN_CEIL, 1}, {"log", FN_LOG, 1},
    {"exp", FN_EXP, 1},     {"sin", FN_SIN, 1},   {"cos", FN_COS, 1},  {"tan", FN_TAN, 1},
};

static double apply1(enum fn_id id, double x)
{
    switch (id) {
    case FN_SQRT:
        return sqrt(x);
    case FN_ABS:
        return fabs(x);
    case FN_ROUND:
        return round(x);
    case FN_FLOOR:
        return floor(x);
    case FN_CEIL:
        return ceil(x);
    case FN_LOG:
        return log(x);
    case FN_EXP:
        return exp(x);
    case FN_SIN:
        return sin(x);
    case FN_COS:
        return cos(x);
    case FN_TAN:
        return tan(x);
    case FN_MIN:
    case FN_MAX:
        break;
    }
    return x;
}

static int call(struct parser *p, const char *name, size_t fn, double *out)
{
    int rc;
    p->pos++; /* '(' */
    double acc = 0;
    int n = 0;
    for (;;) {
        double v;
        if ((rc = expr(p, &v)) != 0)
            return rc;
        if (n == 0)
            acc = v;
        else if (functions[fn].id == FN_MIN)
            acc = v < acc ? v : acc;
        else
            acc = v > acc ? v : acc;
        n++;
        char c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c != ')')
            return c == '\0' ? err_set(p->e, ERR_INVALID, "%s: missing ')'", name)
                             : unexpected(p);
        p->pos++;
        break;
    }
    if (functions[fn].n_args >= 0 && n != functions[fn].n_args)
        return err_set(p->e, ERR_INVALID, "%s: takes %d argument%s, got %d", name,
                       functions[fn].n_args, functions[fn].n_args == 1 ? "" : "s", n);
    if (functions[fn].id == FN_SQRT && acc < 0)
        return err_set(p->e, ERR_INVALID, "sqrt of a negative number");
    if (functions[fn].id == FN_LOG && acc <= 0)
        return err_set(p->e, ERR_INVALID, "log of a number that is not positive");
    if (functions[fn].n_args == 1)
        acc = apply1(functions[fn].id, acc);
    if ((rc = finite_or(p, acc, name)) != 0)
        return rc;
    *out = acc;
    return 0;
}

static int name_ref(struct parser *p, double *out)
{
    size_t start = p->pos;
    while (p->pos < p->len && (is_alpha(p->s[p->pos]) || is_digit(p->s[p->pos])))
        p->pos++;
    size_t n = p->pos - start;
    char name[CALC_MAX_NAME + 1];
    if (n > CALC_MAX_NAME)
        return err_set(p->e, ERR_INVALID, "unknown name '%.*s...' at position %zu",
                       CALC_MAX_NAME, p->s + start, start + 1);
    memcpy(name, p->s + start, n);
    name[n] = '\0';
    if (peek(p) == '(') {
        for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++)
            if (strcmp(functions[i].name, name) == 0)
                return call(p, name, i, out);
        return err_set(p->e, ERR_INVALID,
                       "unknown function '%s' (known: sqrt, abs, min, max, round, floor, ceil, "
                       "log, exp, sin, cos, tan)",
                       name);
    }
    if (strcmp(name, "pi") == 0) {
        *out = CALC_PI;
        return 0;
    }
    if (strcmp(name, "e") == 0) {
        *out = CALC_E;
        return 0;
    }
    for (size_t i = 0; i < sizeof functions / sizeof functions[0]; i++)
        if (strcmp(functions[i].name, name) == 0)
            return err_set(p->e, ERR_INVALID, "%s: missing '(' after the function name", name);
    return err_set(p->e, ERR_INVALID, "unknown name '%s' (known constants: pi, e)", name);
}

static int primary(struct parser *p, double *out)
{
    char c = peek(p);
    if (c == '(') {
        int rc;
        p->pos++;
        if ((rc = enter(p)) != 0 || (rc = expr(p, out)) != 0)
            return rc;
        p->depth--;
        if (peek(p) != ')')
            return p->pos >= p->len ? err_set(p->e, ERR_INVALID, "missing ')'") : unexpected(p);
        p->pos++;
        return 0;
    }
    if (is_digit(c) || c == '.')
        return number(p, out);
    if (is_alpha(c)) {
        int rc;
        if ((rc = enter(p)) != 0 || (rc = name_ref(p, out)) != 0)
            return rc;
        p->depth--;
        return 0;
    }
    return unexpected(p);
}

static int power(struct parser *p, double *out)
{
    int rc;
    double base;
    if ((rc = primary(p, &base)) != 0)
        return rc;
    if (peek(p) != '^') {
        *out = base;
        return 0;
    }
    p->pos++;
    double ex;
    if ((rc = unary(p, &ex)) != 0)
        return rc;
    if (base == 0 && ex < 0)
        return err_set(p->e, ERR_INVALID, "division by zero (0 raised to a negative power)");
    double v = pow(base, ex);
    if (isnan(v))
        return err_set(p->e, ERR_INVALID, "^: a negative number to a fractional power");
    if ((rc = finite_or(p, v, "^")) != 0)
        return rc;
    *out = v;
    return 0;
}

static int unary(struct parser *p, double *out)
{
    int rc;
    char c = peek(p);
    if ((rc = enter(p)) != 0)
        return rc;
    if (c == '-' || c == '+') {
        p->pos++;
        double v;
        if ((rc = unary(p, &v)) != 0)
            return rc;
        *out = c == '-' ? -v : v;
    } else if ((rc = power(p, out)) != 0) {
        return rc;
    }
    p->depth--;
    return 0;
}

static int term(struct parser *p, double *out)
{
    int rc;
    double acc;
    if ((rc = unary(p, &acc)) != 0)
        return rc;
    for (;;) {
        char c = peek(p);
        if (c != '*' && c != '/' && c != '%')
            break;
        p->pos++;
        double v;
        if ((rc = unary(p, &v)) != 0)
            return rc;
        if (c == '*') {
            acc *= v;
        } else if (v == 0) {
            return err_set(p->e, ERR_INVALID, c == '/' ? "division by zero" : "modulo by zero");
        } else {
            acc = c == '/' ? acc / v : fmod(acc, v);
        }
        const char op[2] = {c, '\0'};
        if ((rc = finite_or(p, acc, op)) != 0)
            return rc;
    }
    *out = acc;
    return 0;
}

static int expr(struct parser *p, double *out)
{
    int rc;
    double acc;
    if ((rc = term(p, &acc)) != 0)
        return rc;
    for (;;) {
        char c = peek(p);
        if (c != '+' && c != '-')
            break;
        p->pos++;
        double v;
        if ((rc = term(p, &v)) != 0)
            return rc;
        acc = c == '+' ? acc + v : acc - v;
        if ((rc = finite_or(p, acc, c == '+' ? "+" : "-")) != 0)
            return rc;
    }
    *out = acc;
    return 0;
}

int calc_eval(const char *s, size_t len, double *out, struct err *e)
{
    if (len > CALC_MAX_LEN)
        return err_set(e, ERR_TOO_LARGE, "expression longer than %d bytes", CALC_MAX_LEN);
    struct parser p = {.s = s, .len = len, .e = e};
    if (peek(&p) == '\0' && p.pos >= len)
        return err_set(e, ERR_INVALID, "empty expression");
    double v;
    int rc = expr(&p, &v);
    if (rc != 0)
        return rc;
    if (peek(&p) != '\0' || p.pos < len)
        return p.s[p.pos] == ')' ? err_set(e, ERR_INVALID, "unbalanced ')' at position %zu",
                                           p.pos + 1)
                                 : unexpected(&p);
    *out = v;
    return 0;
}

void calc_format(double v, char *buf, size_t len)
{
    if (v == 0)
        v = 0; /* -0 -> 0 */
    snprintf(buf, len, "%.15g", v);
}
