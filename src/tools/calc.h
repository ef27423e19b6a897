/*
 * calc.h - the calculator tool's expression evaluator, on its own so that it can be unit
 * tested and fuzzed without a loop. Internal to src/tools (runner.c is its one caller).
 *
 * A recursive-descent parser over a small grammar; nothing is ever executed or looked up
 * outside the fixed tables of calc.c:
 *   expr  := term (('+' | '-') term)*
 *   term  := unary (('*' | '/' | '%') unary)*
 *   unary := ('-' | '+') unary | power
 *   power := primary ('^' unary)?            right-associative; -2^2 is -4
 *   primary := number | '(' expr ')' | name | name '(' expr (',' expr)* ')'
 *   number := digits ['.' digits] [('e' | 'E') ['+' | '-'] digits]   (or '.' digits)
 * Functions: sqrt abs min max round floor ceil log (natural) exp sin cos tan; constants pi e.
 */
#ifndef CREWD_TOOLS_CALC_H
#define CREWD_TOOLS_CALC_H

#include <stddef.h>

#include "core/err.h"

#define CALC_MAX_LEN 4096 /* bytes of expression */
#define CALC_MAX_DEPTH 64 /* nested parentheses, unary signs, powers and calls together */

/*
 * Evaluates expr[0..len) (no NUL needed; a NUL inside is an error) into *out. Returns 0, or
 * ERR_INVALID (syntax, unknown name, division by zero, a result that is not a finite number)
 * or ERR_TOO_LARGE (length or depth), with a message for the model in `e` that does not name
 * the tool ("division by zero"). Never reads outside expr[0..len).
 */
int calc_eval(const char *expr, size_t len, double *out, struct err *e);

/* Formats a result as the tool's output: %.15g, with -0 written as 0. */
void calc_format(double v, char *buf, size_t len);

#endif
