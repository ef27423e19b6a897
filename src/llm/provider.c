/*
 * provider.c - the static provider table and the selection rules of provider.h. The request
 * builders and reply parsers live in one file per provider and only need the canonical names
 * resolved here. Everything here is read-only data, so it is safe from any thread.
 */
#include "llm/provider.h"

#include "core/utf8.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

/* A "%.*s" argument pair quoting at most 100 bytes of `s` without splitting a character
 * (a message that is not UTF-8 cannot go into a JSON error body). */
#define QUOTED(s) (int)utf8_prefix_len((s), strlen(s), 100), (s)

#define LLM_MODEL_MAX 255
#define LLM_PROVIDER_NAME_MAX 32

struct provider_entry {
    struct llm_provider_info info;
    const char *alias; /* NULL when none */
};

static const struct provider_entry providers[] = {
    {{"openai", "gpt-4o-mini", "OPENAI_API_KEY", "https://api.openai.com/v1"}, NULL},
    {{"anthropic", "claude-sonnet-4-5", "ANTHROPIC_API_KEY", "https://api.anthropic.com/v1"},
     "claude"},
    {{"google", "gemini-2.5-flash", "GOOGLE_API_KEY",
      "https://generativelanguage.googleapis.com/v1beta"},
     "gemini"},
    {{"groq", "llama-3.3-70b-versatile", "GROQ_API_KEY", "https://api.groq.com/openai/v1"}, NULL},
    {{"ollama", "llama3.1", NULL, "http://127.0.0.1:11434/v1"}, NULL},
    /* More OpenAI-compatible services, each with its usual endpoint and key variable; local
     * servers (vLLM, llama.cpp) need no key unless started with one (config.api_key_env). */
    {{"openrouter", "openai/gpt-4o-mini", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"},
     NULL},
    {{"deepseek", "deepseek-chat", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1"}, NULL},
    {{"vllm", "default", NULL, "http://127.0.0.1:8000/v1"}, NULL},
    {{"llamacpp", "default", NULL, "http://127.0.0.1:8080/v1"}, "llama.cpp"},
};

#define N_PROVIDERS (sizeof providers / sizeof providers[0])

const struct llm_provider_info *llm_provider_find(const char *name)
{
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < N_PROVIDERS; i++) {
        if (strcasecmp(name, providers[i].info.name) == 0)
            return &providers[i].info;
        if (providers[i].alias != NULL && strcasecmp(name, providers[i].alias) == 0)
            return &providers[i].info;
    }
    return NULL;
}

const char *llm_provider_known_list(void)
{
    return "openai, anthropic, google, groq, ollama, openrouter, deepseek, vllm, llamacpp";
}

static bool has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* The seed's clients send only a model name (API.md section 1), so the common families are
 * recognised by their prefixes; anything else is left to base_url or the server default. */
static const struct llm_provider_info *infer_from_model(const char *model)
{
    static const struct {
        const char *prefix;
        const char *provider;
    } rules[] = {
        {"gpt-", "openai"}, {"chatgpt-", "openai"},   {"o1", "openai"},      {"o3", "openai"},
        {"o4", "openai"},   {"claude-", "anthropic"}, {"gemini-", "google"},
    };
    if (model == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        if (has_prefix_ci(model, rules[i].prefix))
            return llm_provider_find(rules[i].provider);
    }
    return NULL;
}

static int set_model(struct llm_resolved *out, const char *model, size_t len, const char *field,
                     struct err *e)
{
    if (len == 0)
        return err_set(e, ERR_INVALID, "%s: must not be empty", field);
    if (len > LLM_MODEL_MAX)
        return err_set(e, ERR_INVALID, "%s: longer than %d bytes", field, LLM_MODEL_MAX);
    memcpy(out->model, model, len);
    out->model[len] = '\0';
    return 0;
}

int llm_resolve(const struct llm_choice *in, const char *default_provider, struct llm_resolved *out,
                struct err *e)
{
    int rc = 0;
    const struct llm_provider_info *prov = NULL;
    memset(out, 0, sizeof *out);

    if (in->model != NULL) {
        rc = set_model(out, in->model, strlen(in->model), "model", e);
        if (rc != 0)
            goto out;
    }

    if (in->llm != NULL) {
        const char *colon = strchr(in->llm, ':');
        if (colon == NULL) {
            prov = llm_provider_find(in->llm);
            if (prov == NULL) {
                rc = err_set(e, ERR_INVALID, "llm: unknown provider '%.*s' (known: %s)",
                             QUOTED(in->llm), llm_provider_known_list());
                goto out;
            }
        } else {
            size_t plen = (size_t)(colon - in->llm);
            char pname[LLM_PROVIDER_NAME_MAX + 1];
            if (plen <= LLM_PROVIDER_NAME_MAX) {
                memcpy(pname, in->llm, plen);
                pname[plen] = '\0';
                prov = llm_provider_find(pname);
            }
            if (prov == NULL) {
                rc = err_set(e, ERR_INVALID, "llm: unknown provider '%.*s' (known: %s)",
                             (int)(plen > 100 ? 100 : plen), in->llm, llm_provider_known_list());
                goto out;
            }
            const char *named = colon + 1;
            size_t nlen = strlen(named);
            if (nlen == 0) {
                rc = err_set(e, ERR_INVALID, "llm: no model after '%s:'", prov->name);
                goto out;
            }
            if (nlen > LLM_MODEL_MAX) {
                rc = err_set(e, ERR_INVALID, "llm: model longer than %d bytes", LLM_MODEL_MAX);
                goto out;
            }
            if (in->model != NULL && strcmp(in->model, named) != 0) {
                rc = err_set(e, ERR_INVALID, "llm: names model '%.*s' but model is '%.*s'",
                             QUOTED(named), QUOTED(in->model));
                goto out;
            }
            rc = set_model(out, named, nlen, "llm", e);
            if (rc != 0)
                goto out;
        }
    } else {
        prov = infer_from_model(in->model);
        if (prov == NULL && in->base_url != NULL)
            prov = llm_provider_find("openai");
        if (prov == NULL) {
            prov = llm_provider_find(default_provider);
            if (prov == NULL) {
                rc = err_set(e, ERR_INVALID, "llm: the default provider '%.*s' is unknown",
                             QUOTED(default_provider ? default_provider : "(none)"));
                goto out;
            }
        }
    }

    if (out->model[0] == '\0') {
        rc = set_model(out, prov->default_model, strlen(prov->default_model), "model", e);
        if (rc != 0)
            goto out;
    }
    out->provider = prov;
out:
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}
