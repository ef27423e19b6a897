/*
 * agent_step.h - one agent step: messages -> LLM -> tool calls -> LLM -> ... -> answer.
 *
 * The step offers the agent's tools to the model (their JSON Schemas from the tool
 * registry), runs the calls the model asks for (several in one turn run at once), feeds the
 * results back in the order the model asked for them, and ends at the first reply without
 * tool calls. After `max_tool_rounds` rounds of tool calls the next request offers no tools,
 * so the model has to answer. A tool that fails is an answer too: its error text goes back
 * to the model ("Error: ..."), never up as the step's failure. The step fails only when an
 * LLM call fails.
 *
 * The engine does not know how tools run: struct agent_tools is the door (the job manager
 * wires the tool runner to it). Everything runs on the loop thread.
 */
#ifndef CREWD_ENGINE_AGENT_STEP_H
#define CREWD_ENGINE_AGENT_STEP_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "llm/llm.h"

struct tool_registry;

typedef void (*agent_tool_done_cb)(void *arg, int rc, const char *output, const struct err *e);

/* How tools are run. invoke: 0 and a handle (the callback comes later, from the loop, never
 * from inside invoke), or an error (no callback). cancel: no callback afterwards. */
struct agent_tools {
    int (*invoke)(void *ctx, const char *name, const char *args_json, agent_tool_done_cb cb,
                  void *arg, void **handle, struct err *e);
    void (*cancel)(void *handle);
    void *ctx;
    const struct tool_registry *registry; /* descriptions and schemas offered to the model */
};

struct agent_step_params {
    struct llm_client *llm;
    const struct agent_tools *tools; /* NULL: no tools */
    const char *provider, *model, *base_url, *api_key;
    const char *system_prompt; /* NULL: none */
    const struct llm_message *history; /* earlier user/assistant turns (memory); copied */
    size_t n_history;
    const char *input;         /* the user message */
    char *const *tool_names;   /* offered to the model (registry names) */
    size_t n_tool_names;
    int max_tool_rounds;
    double temperature; /* < 0: not sent */
    long max_tokens;    /* <= 0: not sent */
    long timeout_ms;    /* per LLM attempt; <= 0: the client's default */
    /* Progress, for the job's events; all optional, called from the loop, never from
     * agent_step_start. With `stream`, replies are asked for streamed and their text goes to
     * on_delta as it arrives. on_tool_call gets each tool call when it is over: the entry of
     * result.tool_calls ({id, name, arguments, result, error, execution_time}), borrowed. */
    bool stream;
    void (*on_delta)(void *arg, const char *text, size_t len);
    void (*on_tool_call)(void *arg, const json_t *entry);
};

/* What a step did. Fields are owned by the result; a callback may take text and tool_calls
 * (setting them to NULL). */
struct agent_step_result {
    int rc;         /* 0, or the failing LLM call's code */
    struct err err; /* rc != 0: why */
    char *text;     /* rc == 0: the final answer */
    json_t *tool_calls; /* [{id, name, arguments, result, error, execution_time}] */
    struct llm_usage usage; /* summed over the step's LLM calls */
    int llm_calls;
    int attempts; /* HTTP attempts over all calls, retries included */
};

typedef void (*agent_step_done_cb)(void *arg, struct agent_step_result *res);

struct agent_step;

/* Copies what it needs from `p`. Returns 0 and the step (callback later, from the loop), or
 * an error from the first LLM call's start (no callback). */
int agent_step_start(const struct agent_step_params *p, agent_step_done_cb cb, void *arg,
                     struct agent_step **out, struct err *e);

/* Aborts the LLM call or tool calls in flight; no callback afterwards. NULL-safe. */
void agent_step_cancel(struct agent_step *s);

#endif
