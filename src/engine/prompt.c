/*
 * prompt.c - see prompt.h. The templates are spelled out here once; tests compare whole
 * strings, so a changed character is a failing test, not a silent drift.
 */
#include "engine/prompt.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A growing string; `failed` sticks after the first allocation failure. */
struct sb {
    char *buf;
    size_t len, cap;
    bool failed;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->buf = p;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, s, n);
    b->len += n;
    b->buf[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s)
{
    sb_add(b, s ? s : "", s ? strlen(s) : 0);
}

static char *sb_done(struct sb *b)
{
    if (b->failed || b->buf == NULL) {
        if (!b->failed && b->buf == NULL)
            return strdup("");
        free(b->buf);
        return NULL;
    }
    return b->buf;
}

/* Bytes of the first `max_chars` characters of s (UTF-8 code points: continuation bytes
 * 10xxxxxx do not start a character). */
static size_t prefix_chars(const char *s, size_t max_chars)
{
    size_t i = 0, chars = 0;
    for (; s[i] != '\0'; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) {
            if (chars == max_chars)
                break;
            chars++;
        }
    }
    return i;
}

char *prompt_sequential(const char *query, const struct prompt_prior *prior, size_t n_prior)
{
    struct sb b = {0};
    sb_str(&b, "Original query: ");
    sb_str(&b, query);
    sb_str(&b, "\nPrevious processing:\n");
    for (size_t i = 0; i < n_prior; i++) {
        const char *out = prior[i].output ? prior[i].output : "";
        sb_str(&b, "- ");
        sb_str(&b, prior[i].key);
        sb_str(&b, ": ");
        sb_add(&b, out, prefix_chars(out, PROMPT_PREVIEW_CHARS));
        sb_str(&b, "...\n");
    }
    sb_str(&b, "\nCurrent task: ");
    if (n_prior > 0)
        sb_str(&b, prior[n_prior - 1].output);
    return sb_done(&b);
}

char *prompt_flow(const char *query, const struct prompt_prior *sources, size_t n_sources)
{
    struct sb b = {0};
    sb_str(&b, "Task: ");
    sb_str(&b, query);
    sb_str(&b, "\n\nContext from previous agents:");
    for (size_t i = 0; i < n_sources; i++) {
        sb_str(&b, i == 0 ? "\n--- From " : "\n\n--- From ");
        sb_str(&b, sources[i].key);
        sb_str(&b, " ---\n");
        sb_str(&b, sources[i].output);
    }
    return sb_done(&b);
}

char *prompt_loop_next(const char *query, long prev_pass, const char *last_output)
{
    char num[32];
    snprintf(num, sizeof num, "%ld", prev_pass);
    struct sb b = {0};
    sb_str(&b, "Original query: ");
    sb_str(&b, query);
    sb_str(&b, "\nOutput of iteration ");
    sb_str(&b, num);
    sb_str(&b, ":\n");
    sb_str(&b, last_output);
    sb_str(&b, "\n\nCurrent task: improve on that output.");
    return sb_done(&b);
}

char *prompt_judge(const char *condition, const char *output)
{
    struct sb b = {0};
    sb_str(&b, "Condition: ");
    sb_str(&b, condition);
    sb_str(&b, "\n\nCurrent output:\n");
    sb_str(&b, output);
    sb_str(&b, "\n\nDoes the current output satisfy the condition? Answer YES or NO.");
    return sb_done(&b);
}

int prompt_judge_says_yes(const char *reply)
{
    if (reply == NULL)
        return 0;
    while (*reply != '\0' && !isalpha((unsigned char)*reply))
        reply++; /* "**YES**", "- yes", "\"Yes\"" */
    return strncasecmp(reply, "yes", 3) == 0 && !isalpha((unsigned char)reply[3]);
}

char *prompt_synthesis(const char *synthesis_prompt, const char *query,
                       const struct prompt_prior *outputs, size_t n_outputs)
{
    struct sb b = {0};
    sb_str(&b, synthesis_prompt);
    sb_str(&b, "\n\nOriginal query: ");
    sb_str(&b, query);
    sb_str(&b, "\n\nAgent outputs:");
    for (size_t i = 0; i < n_outputs; i++) {
        sb_str(&b, "\n\n--- ");
        sb_str(&b, outputs[i].key);
        sb_str(&b, " ---\n");
        sb_str(&b, outputs[i].output);
    }
    return sb_done(&b);
}
