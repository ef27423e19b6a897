/* price.c - see price.h. */
#include "llm/price.h"

#include <stdio.h>
#include <string.h>

#include "core/utf8.h"
#include "llm/provider.h"

#define QUOTED(s) (int)utf8_prefix_len((s), strlen(s), 100), (s)

static int read_rate(const json_t *entry, const char *key, const char *field, bool required,
                     double *out, struct err *e)
{
    const json_t *v = json_object_get(entry, field);
    if (v == NULL || json_is_null(v)) {
        if (required)
            return err_set(e, ERR_INVALID, "prices.%.*s: %s is required (USD per million tokens)",
                           QUOTED(key), field);
        *out = -1;
        return 0;
    }
    double d = json_number_value(v);
    if (!json_is_number(v) || !(d >= 0 && d <= 1e6))
        return err_set(e, ERR_INVALID, "prices.%.*s: %s must be a number from 0 to 1000000",
                       QUOTED(key), field);
    *out = d;
    return 0;
}

int llm_prices_parse(const json_t *in, struct llm_prices *out, struct err *e)
{
    if (!json_is_object(in))
        return err_set(e, ERR_INVALID,
                       "prices: must be an object of \"provider:model\" -> {input, output}");
    if (json_object_size(in) > LLM_PRICES_MAX)
        return err_set(e, ERR_INVALID, "prices: at most %d entries", LLM_PRICES_MAX);
    if (out != NULL)
        out->n = 0;
    const char *key;
    const json_t *entry;
    json_object_foreach((json_t *)in, key, entry)
    {
        struct llm_price p = {0};
        const char *colon = strchr(key, ':');
        const char *model = key;
        if (colon != NULL) {
            size_t plen = (size_t)(colon - key);
            char name[sizeof p.provider];
            if (plen >= sizeof name)
                return err_set(e, ERR_INVALID, "prices.%.*s: unknown provider", QUOTED(key));
            memcpy(name, key, plen);
            name[plen] = '\0';
            const struct llm_provider_info *info = llm_provider_find(name);
            if (info == NULL)
                return err_set(e, ERR_INVALID,
                               "prices.%.*s: unknown provider '%s' (known: %s; a model name "
                               "with ':' needs its provider first, as in ollama:llama3:8b)",
                               QUOTED(key), name, llm_provider_known_list());
            snprintf(p.provider, sizeof p.provider, "%s", info->name);
            model = colon + 1;
        }
        if (model[0] == '\0' || strlen(model) >= sizeof p.model)
            return err_set(e, ERR_INVALID, "prices.%.*s: needs a model name (1-255 bytes)",
                           QUOTED(key));
        snprintf(p.model, sizeof p.model, "%s", model);
        if (!json_is_object(entry))
            return err_set(e, ERR_INVALID,
                           "prices.%.*s: must be an object {\"input\", \"output\", "
                           "\"cached_input\"} in USD per million tokens",
                           QUOTED(key));
        int rc;
        if ((rc = read_rate(entry, key, "input", true, &p.input, e)) != 0 ||
            (rc = read_rate(entry, key, "output", true, &p.output, e)) != 0 ||
            (rc = read_rate(entry, key, "cached_input", false, &p.cached_input, e)) != 0)
            return rc;
        if (p.cached_input < 0)
            p.cached_input = p.input;
        const char *k2;
        const json_t *v2;
        json_object_foreach((json_t *)entry, k2, v2)
        {
            if (strcmp(k2, "input") != 0 && strcmp(k2, "output") != 0 &&
                strcmp(k2, "cached_input") != 0)
                return err_set(e, ERR_INVALID,
                               "prices.%.*s.%.*s: unknown field (known: input, output, "
                               "cached_input)",
                               QUOTED(key), QUOTED(k2));
        }
        if (out != NULL)
            out->items[out->n++] = p;
    }
    return 0;
}

bool llm_prices_cost(const struct llm_prices *prices, const char *provider, const char *model,
                     const struct llm_usage *u, double *usd)
{
    if (prices == NULL || provider == NULL || model == NULL)
        return false;
    const struct llm_price *hit = NULL;
    for (size_t i = 0; i < prices->n && hit == NULL; i++)
        if (strcmp(prices->items[i].provider, provider) == 0 &&
            strcmp(prices->items[i].model, model) == 0)
            hit = &prices->items[i];
    for (size_t i = 0; i < prices->n && hit == NULL; i++)
        if (prices->items[i].provider[0] == '\0' && strcmp(prices->items[i].model, model) == 0)
            hit = &prices->items[i];
    if (hit == NULL)
        return false;
    long cached = u->cached_tokens < u->prompt_tokens ? u->cached_tokens : u->prompt_tokens;
    if (cached < 0)
        cached = 0;
    *usd = ((double)(u->prompt_tokens - cached) * hit->input +
            (double)cached * hit->cached_input + (double)u->completion_tokens * hit->output) /
           1e6;
    return true;
}
