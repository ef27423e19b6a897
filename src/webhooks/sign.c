/*
 * sign.c - see sign.h. Base64 is decoded here rather than with EVP_DecodeBlock, which takes
 * whitespace, ignores what follows padding and counts padding as key bytes: a secret either
 * is canonical base64 or is refused, so that the client and crewd agree on the key.
 */
#include "webhooks/sign.h"

#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard alphabet; padding optional but, when present, exact. Returns the decoded length,
 * or -1 (invalid, or more than cap bytes). out may be NULL. */
static long b64_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
    size_t pad = 0;
    while (len > 0 && s[len - 1] == '=' && pad < 2)
        len--, pad++;
    if (pad > 0 && (len + pad) % 4 != 0)
        return -1;
    if (len % 4 == 1)
        return -1;
    size_t n = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
    if (n > cap)
        return -1;
    unsigned int acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (unsigned int)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (out != NULL)
                out[o] = (unsigned char)(acc >> bits);
            o++;
        }
    }
    if ((acc & ((1u << bits) - 1)) != 0)
        return -1; /* bits past the last byte: not canonical */
    return (long)o;
}

int webhook_secret_key(const char *secret, unsigned char *key, size_t *key_len, struct err *e)
{
    size_t len = strlen(secret);
    size_t plen = strlen(WEBHOOK_SECRET_PREFIX);
    if (len >= plen && memcmp(secret, WEBHOOK_SECRET_PREFIX, plen) == 0) {
        long n = b64_decode(secret + plen, len - plen, key, WEBHOOK_KEY_MAX);
        if (n < 0)
            return err_set(e, ERR_INVALID,
                           "the whsec_ form must be whsec_ and standard base64 of a key "
                           "of at most %d bytes",
                           WEBHOOK_KEY_MAX);
        if (n < WEBHOOK_KEY_MIN)
            return err_set(e, ERR_INVALID,
                           "the key after whsec_ decodes to %ld bytes; at least %d are "
                           "needed",
                           n, WEBHOOK_KEY_MIN);
        if (key_len != NULL)
            *key_len = (size_t)n;
        return 0;
    }
    if (len < WEBHOOK_KEY_MIN || len > WEBHOOK_KEY_MAX)
        return err_set(e, ERR_INVALID,
                       "must be whsec_<base64 key> or a string of %d to %d bytes",
                       WEBHOOK_KEY_MIN, WEBHOOK_KEY_MAX);
    if (key != NULL)
        memcpy(key, secret, len);
    if (key_len != NULL)
        *key_len = len;
    return 0;
}

int webhook_sign(const unsigned char *key, size_t key_len, const char *msg_id,
                 long long timestamp, const char *body, size_t body_len,
                 char out[WEBHOOK_SIGNATURE_LEN], struct err *e)
{
    char head[256];
    int hn = snprintf(head, sizeof head, "%s.%lld.", msg_id, timestamp);
    if (hn < 0 || (size_t)hn >= sizeof head)
        return err_set(e, ERR_INTERNAL, "webhook id too long to sign");
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    int ok = 0;
    EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *mctx = m ? EVP_MAC_CTX_new(m) : NULL;
    if (mctx != NULL) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
            OSSL_PARAM_construct_end(),
        };
        size_t outl = 0;
        ok = EVP_MAC_init(mctx, key, key_len, params) == 1 &&
             EVP_MAC_update(mctx, (const unsigned char *)head, (size_t)hn) == 1 &&
             (body_len == 0 || EVP_MAC_update(mctx, (const unsigned char *)body, body_len) == 1) &&
             EVP_MAC_final(mctx, mac, &outl, sizeof mac) == 1 && outl == 32;
        mac_len = (unsigned int)outl;
    }
    EVP_MAC_CTX_free(mctx);
    EVP_MAC_free(m);
    if (!ok)
        return err_set(e, ERR_INTERNAL, "HMAC-SHA256 failed");
    memcpy(out, "v1,", 3);
    /* 32 bytes -> 44 characters and a NUL */
    if (EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)mac_len) != 44)
        return err_set(e, ERR_INTERNAL, "base64 of the signature failed");
    OPENSSL_cleanse(mac, sizeof mac);
    return 0;
}
