/*
 * fuzz_webhook_secret.c - libFuzzer target for what a client's webhook brings that crewd
 * parses itself: the secret (webhooks/sign.c's whsec_/base64 reader) and the URL's host
 * (core/url.c over libcurl's parser, then the allowlist match). Input: "SECRET\nURL".
 * Besides crashes and leaks it checks what the dispatcher relies on: an accepted key is 16 to
 * 1024 bytes and signs to a "v1," value of fixed length; an accepted host is non-empty lower
 * case without brackets; a refusal never quotes the secret.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/url.h"
#include "webhooks/sign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char *nl = strchr(text, '\n');
    const char *url = "";
    if (nl != NULL) {
        *nl = '\0';
        url = nl + 1;
    }
    const char *secret = text;

    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    struct err e = {0};
    if (webhook_secret_key(secret, key, &key_len, &e) == 0) {
        if (key_len < WEBHOOK_KEY_MIN || key_len > WEBHOOK_KEY_MAX)
            abort();
        char sig[WEBHOOK_SIGNATURE_LEN];
        if (webhook_sign(key, key_len, "evt_fuzz_1", 1700000000LL, url, strlen(url), sig, &e) !=
                0 ||
            strlen(sig) != WEBHOOK_SIGNATURE_LEN - 1 || memcmp(sig, "v1,", 3) != 0)
            abort();
    } else if (strlen(secret) >= 8 && strstr(e.msg, secret) != NULL) {
        abort();
    }

    char host[URL_HOST_MAX];
    e = (struct err){0};
    if (url_http_host(url, "url", URL_NO_USERINFO, host, &e) == 0) {
        size_t hl = strlen(host);
        if (hl == 0 || hl >= URL_HOST_MAX || host[0] == '[')
            abort();
        for (size_t i = 0; i < hl; i++)
            if (host[i] >= 'A' && host[i] <= 'Z')
                abort();
        const char *allow[] = {"*.example.com", "127.0.0.1"};
        (void)url_host_allowed(host, allow, 2);
    }
    free(text);
    return 0;
}
