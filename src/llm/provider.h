/*
 * provider.h - the table of LLM providers crewd knows, and how an agent's config selects one.
 *
 * This is the provider-neutral part of llm/ that the compile step needs: names, aliases,
 * default models, key variables, default endpoints. The request builders and reply parsers
 * (one file per provider) come with the job engine and register against these names.
 *
 * Selection rules (API.md section 2 and the "Agent with only config.model" case of section 1):
 *   config.llm = "openai" | "anthropic" (alias "claude") | "google" (alias "gemini") | "groq"
 *              | "ollama", or "provider:model" ("anthropic:claude-sonnet-4-5");
 *   no llm: the model name decides: gpt-*, o1*, o3*, o4* -> openai; claude-* -> anthropic;
 *           gemini-* -> google; else, with base_url, openai (an OpenAI-compatible server);
 *           else the server's default provider;
 *   no model: the provider's default model.
 * The table is static and read-only: safe from any thread.
 */
#ifndef CREWD_LLM_PROVIDER_H
#define CREWD_LLM_PROVIDER_H

#include <stddef.h>

#include "core/err.h"

struct llm_provider_info {
    const char *name; /* canonical: "openai", "anthropic", "google", "groq", ... */
    const char *default_model;
    const char *api_key_env; /* NULL when the provider needs no key (ollama) */
    const char *default_base_url;
};

/* The provider named `name` or one of its aliases (case-insensitive); NULL if unknown. */
const struct llm_provider_info *llm_provider_find(const char *name);

/* "openai, anthropic, google, groq, ollama, ...": for error messages. */
const char *llm_provider_known_list(void);

/* What an agent's config says about its LLM; every field may be NULL. */
struct llm_choice {
    const char *llm;
    const char *model;
    const char *base_url;
};

struct llm_resolved {
    const struct llm_provider_info *provider;
    char model[256];
};

/*
 * Applies the selection rules to `in`. `default_provider` must name a known provider.
 * Returns 0, or ERR_INVALID with a message that names the field ("llm: unknown provider 'x'
 * (known: ...)", "llm: names model 'a' but model is 'b'", "model: longer than 255 bytes").
 * Messages are relative to the agent's config; callers add the path prefix.
 */
int llm_resolve(const struct llm_choice *in, const char *default_provider, struct llm_resolved *out,
                struct err *e);

#endif
