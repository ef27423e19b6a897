/* test_provider.c - the provider table and every selection rule of provider.h / API.md. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "llm/provider.h"

static void resolve_ok(const char *llm, const char *model, const char *base_url, const char *def,
                       const char *want_provider, const char *want_model)
{
    struct llm_choice c = {llm, model, base_url};
    struct llm_resolved r;
    struct err e = {0};
    int rc = llm_resolve(&c, def, &r, &e);
    if (rc != 0)
        fail_msg("llm=%s model=%s: %s", llm ? llm : "-", model ? model : "-", err_text(&e));
    assert_string_equal(r.provider->name, want_provider);
    assert_string_equal(r.model, want_model);
}

static void resolve_err(const char *llm, const char *model, const char *want_msg)
{
    struct llm_choice c = {llm, model, NULL};
    struct llm_resolved r;
    struct err e = {0};
    assert_int_equal(llm_resolve(&c, "openai", &r, &e), ERR_INVALID);
    assert_string_equal(e.msg, want_msg);
    assert_null(r.provider);
}

static void test_table(void **state)
{
    const struct {
        const char *name, *model, *env, *url;
    } want[] = {
        {"openai", "gpt-4o-mini", "OPENAI_API_KEY", "https://api.openai.com/v1"},
        {"anthropic", "claude-sonnet-4-5", "ANTHROPIC_API_KEY", "https://api.anthropic.com/v1"},
        {"google", "gemini-2.5-flash", "GOOGLE_API_KEY",
         "https://generativelanguage.googleapis.com/v1beta"},
        {"groq", "llama-3.3-70b-versatile", "GROQ_API_KEY", "https://api.groq.com/openai/v1"},
        {"ollama", "llama3.1", NULL, "http://127.0.0.1:11434/v1"},
        {"openrouter", "openai/gpt-4o-mini", "OPENROUTER_API_KEY", "https://openrouter.ai/api/v1"},
        {"deepseek", "deepseek-chat", "DEEPSEEK_API_KEY", "https://api.deepseek.com/v1"},
        {"vllm", "default", NULL, "http://127.0.0.1:8000/v1"},
        {"llamacpp", "default", NULL, "http://127.0.0.1:8080/v1"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct llm_provider_info *p = llm_provider_find(want[i].name);
        assert_non_null(p);
        assert_string_equal(p->name, want[i].name);
        assert_string_equal(p->default_model, want[i].model);
        if (want[i].env)
            assert_string_equal(p->api_key_env, want[i].env);
        else
            assert_null(p->api_key_env);
        assert_string_equal(p->default_base_url, want[i].url);
    }
    assert_ptr_equal(llm_provider_find("claude"), llm_provider_find("anthropic"));
    assert_ptr_equal(llm_provider_find("gemini"), llm_provider_find("google"));
    assert_ptr_equal(llm_provider_find("llama.cpp"), llm_provider_find("llamacpp"));
    assert_ptr_equal(llm_provider_find("OpenAI"), llm_provider_find("openai"));
    assert_null(llm_provider_find("mistral"));
    assert_null(llm_provider_find(""));
    assert_null(llm_provider_find(NULL));
    assert_string_equal(llm_provider_known_list(), "openai, anthropic, google, groq, ollama, openrouter, deepseek, vllm, llamacpp");
}

/* API.md section 1: an agent with only config.model. */
static void test_inference(void **state)
{
    resolve_ok(NULL, "gemini-2.5-pro", NULL, "openai", "google", "gemini-2.5-pro");
    resolve_ok(NULL, "gpt-4", NULL, "anthropic", "openai", "gpt-4");
    resolve_ok(NULL, "claude-sonnet-4-5", NULL, "openai", "anthropic", "claude-sonnet-4-5");
    resolve_ok(NULL, "o3-mini", NULL, "google", "openai", "o3-mini");
    resolve_ok(NULL, "o1", NULL, "google", "openai", "o1");
    resolve_ok(NULL, "o4-mini", NULL, "google", "openai", "o4-mini");
    resolve_ok(NULL, "chatgpt-4o-latest", NULL, "google", "openai", "chatgpt-4o-latest");
    /* Unknown model: the server's default provider, model kept. */
    resolve_ok(NULL, "mistral-large", NULL, "groq", "groq", "mistral-large");
    resolve_ok(NULL, "mistral-large", NULL, "anthropic", "anthropic", "mistral-large");
    /* Unknown model with base_url: an OpenAI-compatible server. */
    resolve_ok(NULL, "qwen2.5", "http://localhost:8000/v1", "anthropic", "openai", "qwen2.5");
    /* The model name wins over base_url. */
    resolve_ok(NULL, "claude-3-haiku", "http://proxy/v1", "openai", "anthropic", "claude-3-haiku");
    /* Nothing given: the default provider and its default model. */
    resolve_ok(NULL, NULL, NULL, "google", "google", "gemini-2.5-flash");
    resolve_ok(NULL, NULL, NULL, "ollama", "ollama", "llama3.1");
    resolve_ok(NULL, NULL, "https://x.example/v1", "google", "openai", "gpt-4o-mini");
}

static void test_explicit_llm(void **state)
{
    resolve_ok("anthropic:claude-sonnet-4-5", NULL, NULL, "openai", "anthropic",
               "claude-sonnet-4-5");
    resolve_ok("anthropic:claude-sonnet-4-5", "claude-sonnet-4-5", NULL, "openai", "anthropic",
               "claude-sonnet-4-5");
    resolve_ok("claude", NULL, NULL, "openai", "anthropic", "claude-sonnet-4-5");
    resolve_ok("gemini", NULL, NULL, "openai", "google", "gemini-2.5-flash");
    resolve_ok("gemini", "gemini-2.5-pro", NULL, "openai", "google", "gemini-2.5-pro");
    resolve_ok("groq", NULL, NULL, "openai", "groq", "llama-3.3-70b-versatile");
    resolve_ok("ollama", "qwen2.5:7b", NULL, "openai", "ollama", "qwen2.5:7b");
    resolve_ok("openai", NULL, NULL, "google", "openai", "gpt-4o-mini");
    /* llm beats the model-name inference. */
    resolve_ok("groq", "gpt-oss-120b", NULL, "openai", "groq", "gpt-oss-120b");
    resolve_ok("ollama:llama3.1:8b", NULL, NULL, "openai", "ollama", "llama3.1:8b");
    resolve_ok("Claude:claude-x", NULL, NULL, "openai", "anthropic", "claude-x");
}

static void test_errors(void **state)
{
    resolve_err("mistral", NULL,
                "llm: unknown provider 'mistral' (known: openai, anthropic, google, groq, "
                "ollama, openrouter, deepseek, vllm, llamacpp)");
    resolve_err("mistral:large", NULL,
                "llm: unknown provider 'mistral' (known: openai, anthropic, google, groq, "
                "ollama, openrouter, deepseek, vllm, llamacpp)");
    resolve_err(":gpt-4", NULL,
                "llm: unknown provider '' (known: openai, anthropic, google, groq, ollama, openrouter, deepseek, vllm, llamacpp)");
    resolve_err("openai:", NULL, "llm: no model after 'openai:'");
    resolve_err("anthropic:claude-a", "claude-b",
                "llm: names model 'claude-a' but model is 'claude-b'");
    resolve_err(NULL, "", "model: must not be empty");

    char longm[300];
    memset(longm, 'm', 256);
    longm[256] = '\0';
    resolve_err(NULL, longm, "model: longer than 255 bytes");
    resolve_err("openai", longm, "model: longer than 255 bytes");
    char longllm[300] = "openai:";
    memcpy(longllm + 7, longm, 257);
    resolve_err(longllm, NULL, "llm: model longer than 255 bytes");
    longm[255] = '\0';
    resolve_ok(NULL, longm, NULL, "openai", "openai", longm);

    struct llm_choice c = {NULL, NULL, NULL};
    struct llm_resolved r;
    struct err e = {0};
    assert_int_equal(llm_resolve(&c, "nope", &r, &e), ERR_INVALID);
    assert_int_equal(llm_resolve(&c, NULL, &r, NULL), ERR_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_inference),
        cmocka_unit_test(test_explicit_llm),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
