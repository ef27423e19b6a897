/*
 * sign.h - Standard Webhooks signatures (https://www.standardwebhooks.com, "symmetric"):
 * the secret a client gives with its webhook, and the webhook-signature header value.
 *
 * The signed content is "{webhook-id}.{webhook-timestamp}.{body}"; the signature is
 * HMAC-SHA256 of it under the key, sent as "v1,<base64 of the 32 MAC bytes>". A secret is
 * either "whsec_<base64 of the key>" (the spec's form; the key is the decoded bytes) or any
 * other string, whose bytes are the key as they are. Either way the key is 16 to 1024 bytes.
 *
 * Pure functions (OpenSSL's HMAC only): the execute parser checks secrets with them, the
 * dispatcher (webhooks.c) signs with them. Thread-safe.
 */
#ifndef CREWD_WEBHOOKS_SIGN_H
#define CREWD_WEBHOOKS_SIGN_H

#include <stddef.h>

#include "core/err.h"

#define WEBHOOK_KEY_MIN 16
#define WEBHOOK_KEY_MAX 1024
#define WEBHOOK_SECRET_PREFIX "whsec_"
/* "v1," + 44 base64 characters + NUL */
#define WEBHOOK_SIGNATURE_LEN 48

/*
 * The key of `secret` into key[0..WEBHOOK_KEY_MAX), its length in *key_len. Returns 0, or
 * ERR_INVALID with a message that never quotes the secret and names no field ("must be
 * whsec_<base64 key> or a string of 16 to 1024 bytes"): callers prefix theirs. `key` may be NULL to only check.
 */
int webhook_secret_key(const char *secret, unsigned char *key, size_t *key_len, struct err *e);

/*
 * The webhook-signature value for (msg_id, timestamp, body[0..body_len)) under key[0..key_len)
 * into out[WEBHOOK_SIGNATURE_LEN]. Returns 0 or ERR_INTERNAL (OpenSSL failed).
 */
int webhook_sign(const unsigned char *key, size_t key_len, const char *msg_id,
                 long long timestamp, const char *body, size_t body_len,
                 char out[WEBHOOK_SIGNATURE_LEN], struct err *e);

#endif
