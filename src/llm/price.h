/*
 * price.h - the optional price table that turns token usage into cost (USD).
 *
 * Written by the operator in crewd's configuration (`prices`): an object whose keys are
 * "provider:model" (or a bare "model", for any provider) and whose values are USD per million
 * tokens: {"input": 0.15, "output": 0.6, "cached_input": 0.075}. cached_input defaults to
 * input. Prompt tokens that were cached are billed at cached_input, the rest at input;
 * completion tokens (reasoning included, as providers bill them) at output.
 * Built once at start-up, read-only afterwards.
 */
#ifndef CREWD_LLM_PRICE_H
#define CREWD_LLM_PRICE_H

#include <jansson.h>
#include <stdbool.h>

#include "core/err.h"
#include "llm/llm.h"

#define LLM_PRICES_MAX 256

struct llm_price {
    char provider[32]; /* "" for a bare model key */
    char model[256];
    double input, output, cached_input; /* USD per million tokens */
};

struct llm_prices {
    struct llm_price items[LLM_PRICES_MAX];
    size_t n;
};

/* Checks and reads `in` (borrowed). Returns 0, or ERR_INVALID with a message naming the key
 * ("prices.openai:gpt-4o: input must be a number >= 0"). `out` may be NULL to only check. */
int llm_prices_parse(const json_t *in, struct llm_prices *out, struct err *e);

/* The cost of `u` for provider/model: true and *usd when the table has a price ("provider:
 * model" first, then the bare model), false otherwise. NULL prices: false. */
bool llm_prices_cost(const struct llm_prices *prices, const char *provider, const char *model,
                     const struct llm_usage *u, double *usd);

#endif
