/*
 * prompt.h - the exact texts each agent receives, per mode (API.md section 3, to the
 * character), and crewd's own texts for loop passes, the loop's condition check and the
 * synthesis call (documented in docs/API.md). Pure functions: strings in, new string out
 * (NULL when out of memory), so they are unit-tested without an LLM.
 */
#ifndef CREWD_ENGINE_PROMPT_H
#define CREWD_ENGINE_PROMPT_H

#include <stddef.h>

/* Characters of each previous output quoted in the sequential template. */
#define PROMPT_PREVIEW_CHARS 200

/* One earlier output: the agent's key and its text. */
struct prompt_prior {
    const char *key;
    const char *output;
};

/*
 * sequential, agent i > 1 (and each agent after the first within a loop pass):
 * "Original query: {query}\nPrevious processing:\n- {key}: {output, first 200 chars}...\n"
 * (one line per earlier agent) "\nCurrent task: {previous output}".
 */
char *prompt_sequential(const char *query, const struct prompt_prior *prior, size_t n_prior);

/*
 * flow, an agent with sources:
 * "Task: {query}\n\nContext from previous agents:\n--- From {src} ---\n{output}" with the
 * "\n--- From ..." block repeated for each direct source, in definition order.
 */
char *prompt_flow(const char *query, const struct prompt_prior *sources, size_t n_sources);

/* loop, first agent of pass p > 1:
 * "Original query: {query}\nOutput of iteration {p-1}:\n{last}\n\nCurrent task: improve
 * on that output." (one line: "Current task: improve on that output.") */
char *prompt_loop_next(const char *query, long prev_pass, const char *last_output);

/* The loop's condition check, sent as the only user message (with PROMPT_JUDGE_SYSTEM):
 * "Condition: {condition}\n\nCurrent output:\n{output}\n\nDoes the current output satisfy
 * the condition? Answer YES or NO." */
char *prompt_judge(const char *condition, const char *output);
#define PROMPT_JUDGE_SYSTEM                                                                        \
    "You check whether a condition holds. Answer with one word: YES or NO."

/* True when a judge's reply means YES: its first word, case-insensitive, is "yes". */
int prompt_judge_says_yes(const char *reply);

/* synthesis: "{synthesis_prompt}\n\nOriginal query: {query}\n\nAgent outputs:" followed by
 * "\n\n--- {key} ---\n{output}" for each output. */
char *prompt_synthesis(const char *synthesis_prompt, const char *query,
                       const struct prompt_prior *outputs, size_t n_outputs);

#endif
