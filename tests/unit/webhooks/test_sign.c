/* test_sign.c - Standard Webhooks signing against the spec's published vector, secret forms,
 * and the retry schedule of the dispatcher. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "webhooks/sign.h"
#include "webhooks/webhooks.h"

/* The vector of the Standard Webhooks reference libraries' sign tests. */
static void test_spec_vector(void **state)
{
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    struct err e = {0};
    char sig[WEBHOOK_SIGNATURE_LEN];
    const char *payload = "{\"test\": 2432232314}";
    assert_int_equal(webhook_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &key_len, &e),
                     0);
    assert_int_equal(key_len, 24);
    assert_int_equal(webhook_sign(key, key_len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330LL,
                                  payload, strlen(payload), sig, &e),
                     0);
    assert_string_equal(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* any change of id, timestamp or body changes the signature */
    char other[WEBHOOK_SIGNATURE_LEN];
    assert_int_equal(webhook_sign(key, key_len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331LL,
                                  payload, strlen(payload), other, &e),
                     0);
    assert_string_not_equal(sig, other);
    assert_int_equal(webhook_sign(key, key_len, "msg_p5jXN8AQM9LWM0D4loKWxJel", 1614265330LL,
                                  payload, strlen(payload), other, &e),
                     0);
    assert_string_not_equal(sig, other);
}

static void test_raw_secret(void **state)
{
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    struct err e = {0};
    char sig[WEBHOOK_SIGNATURE_LEN];
    /* not whsec_: the bytes are the key (Python: hmac.new(b"0123456789abcdef-raw", ...)) */
    assert_int_equal(webhook_secret_key("0123456789abcdef-raw", key, &key_len, &e), 0);
    assert_int_equal(key_len, 20);
    assert_memory_equal(key, "0123456789abcdef-raw", 20);
    assert_int_equal(webhook_sign(key, key_len, "evt_x_1", 1700000000LL, "{}", 2, sig, &e), 0);
    assert_string_equal(sig, "v1,NZ/VKA3gOS6Z0Kf4O4UPDG2b1DwuIvcRmg00AcGFd9g=");
    /* an empty body signs too */
    assert_int_equal(webhook_sign(key, key_len, "evt_x_1", 0, "", 0, sig, &e), 0);
    assert_int_equal(strlen(sig), WEBHOOK_SIGNATURE_LEN - 1);
}

static void test_secret_refusals(void **state)
{
    struct err e = {0};
    char long_secret[WEBHOOK_KEY_MAX + 2];
    memset(long_secret, 'k', sizeof long_secret - 1);
    long_secret[sizeof long_secret - 1] = '\0';
    const char *bad[] = {
        "short",                                   /* raw, under 16 bytes */
        long_secret,                               /* raw, over 1024 bytes */
        "whsec_",                                  /* no key */
        "whsec_c2hvcnQ=",                          /* decodes to 5 bytes */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", /* not base64 */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw=", /* bad padding */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS",  /* length 4n+1... not decodable */
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw MfKQ", /* whitespace */
        "whsec_AAAAAAAAAAAAAAAAAAAAAB==",          /* non-zero bits past the last byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        e = (struct err){0};
        assert_int_equal(webhook_secret_key(bad[i], NULL, NULL, &e), ERR_INVALID);
        if (strlen(bad[i]) > strlen("whsec_"))
            assert_null(strstr(e.msg, bad[i])); /* never echoed */
    }
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    /* padded and unpadded forms of the same key */
    assert_int_equal(webhook_secret_key("whsec_AAAAAAAAAAAAAAAAAAAAAA==", key, &key_len, &e), 0);
    assert_int_equal(key_len, 16);
    assert_int_equal(webhook_secret_key("whsec_AAAAAAAAAAAAAAAAAAAAAA", key, &key_len, &e), 0);
    assert_int_equal(key_len, 16);
    /* exactly 16 raw bytes */
    assert_int_equal(webhook_secret_key("0123456789abcdef", key, &key_len, &e), 0);
    assert_int_equal(key_len, 16);
}

static void test_backoff(void **state)
{
    assert_int_equal(webhooks_backoff_ms(1000, 1), 1000);
    assert_int_equal(webhooks_backoff_ms(1000, 2), 2000);
    assert_int_equal(webhooks_backoff_ms(1000, 4), 8000);
    assert_int_equal(webhooks_backoff_ms(1000, 13), WEBHOOKS_MAX_DELAY_MS); /* 4096 s capped */
    assert_int_equal(webhooks_backoff_ms(1000, 1000), WEBHOOKS_MAX_DELAY_MS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_vector),
        cmocka_unit_test(test_raw_secret),
        cmocka_unit_test(test_secret_refusals),
        cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
