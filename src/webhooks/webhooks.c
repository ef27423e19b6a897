/*
 * webhooks.c - the dispatcher of webhooks.h.
 *
 * One timer drives everything: it claims what is due (at most max_in_flight attempts at
 * once), starts a libcurl transfer for each, and re-arms itself for poll_ms; webhooks_wake
 * makes it fire at once. A finished transfer is read in after_curl (from the curl_loop
 * drive callback), its outcome written with delivery_done, and the timer armed at once so
 * that the freed slot is used. Nothing here runs user code, so no callback can re-enter.
 *
 * What is sent never depends on the attempt but for webhook-timestamp and the signature:
 * the id is "evt_<job_id>_<seq>", the body is built from the event row (and, for a job's
 * terminal event, the job status body of model/job.c read at send time).
 */
#include "webhooks/webhooks.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/curl_loop.h"
#include "core/dlist.h"
#include "core/id.h"
#include "core/json_text.h"
#include "core/log.h"
#include "core/netguard.h"
#include "core/url.h"
#include "model/job.h"
#include "model/model_util.h"
#include "store/store.h"
#include "webhooks/sign.h"

#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_MAX_ATTEMPTS 10
#define DEFAULT_RETRY_BASE_MS 1000
#define DEFAULT_POLL_MS 1000
#define DEFAULT_MAX_IN_FLIGHT 32
#define REPLY_MAX_BYTES (64 * 1024)
#define MSG_ID_LEN (4 + ID_UUID_LEN + 24)

struct webhooks {
    struct event_base *base;
    struct store *store;
    char owner[ID_UUID_LEN + 64];
    struct webhooks_opts opts;
    CURLM *multi;
    struct curl_loop loop;
    struct event *tick_ev;
    long long tick_due_ms; /* clock_mono_ms() when tick_ev fires, while it is pending */
    bool closing;
    uint64_t rng; /* xorshift64 state for the jitter */
    struct delivery_call *calls;
    size_t n_calls;
};

/* One attempt in flight. */
struct delivery_call {
    struct webhooks *wh;
    struct delivery_call *prev, *next;
    char job_id[ID_UUID_LEN];
    long long seq;
    long attempts;
    char host[URL_HOST_MAX];
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    size_t reply_len;
    bool cut;
    char blocked[128];
    char errbuf[CURL_ERROR_SIZE];
};

long long webhooks_backoff_ms(long retry_base_ms, long attempts)
{
    long long d = retry_base_ms;
    for (long i = 1; i < attempts && d < WEBHOOKS_MAX_DELAY_MS; i++)
        d *= 2;
    return d < WEBHOOKS_MAX_DELAY_MS ? d : WEBHOOKS_MAX_DELAY_MS;
}

static uint64_t next_random(struct webhooks *wh)
{
    uint64_t x = wh->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    wh->rng = x;
    return x;
}

/* The backoff with +-20% jitter, so that receivers that failed together are not retried in
 * lockstep. */
static long long retry_delay_ms(struct webhooks *wh, long attempts)
{
    double d = (double)webhooks_backoff_ms(wh->opts.retry_base_ms, attempts);
    double u = (double)(next_random(wh) >> 11) / (double)(1ULL << 53); /* [0, 1) */
    long long ms = (long long)(d * (0.8 + 0.4 * u));
    if (ms > WEBHOOKS_MAX_DELAY_MS)
        ms = WEBHOOKS_MAX_DELAY_MS;
    return ms < 1 ? 1 : ms;
}

/* Makes the tick fire within delay_ms: never later than it already would. */
static void arm_tick(struct webhooks *wh, long long delay_ms)
{
    if (wh->closing)
        return;
    long long due = clock_mono_ms() + delay_ms;
    if (evtimer_pending(wh->tick_ev, NULL) && wh->tick_due_ms <= due)
        return;
    wh->tick_due_ms = due;
    struct timeval tv = {(time_t)(delay_ms / 1000), (suseconds_t)((delay_ms % 1000) * 1000)};
    evtimer_add(wh->tick_ev, &tv); /* re-adding replaces the pending timeout */
}

void webhooks_wake(void *arg)
{
    struct webhooks *wh = arg;
    if (wh != NULL)
        arm_tick(wh, 0);
}

static void call_free(struct delivery_call *c)
{
    if (c == NULL)
        return;
    if (c->easy != NULL) {
        curl_multi_remove_handle(c->wh->multi, c->easy);
        curl_easy_cleanup(c->easy);
    }
    curl_slist_free_all(c->headers);
    free(c->body);
    free(c);
}

static void call_unlink(struct delivery_call *c)
{
    struct webhooks *wh = c->wh;
    DLIST_REMOVE(wh->calls, c);
    wh->n_calls--;
}

/* Writes the outcome of an attempt. state PENDING means "failed, retry if attempts are
 * left". */
static void record(struct webhooks *wh, const char *job_id, long long seq, long attempts,
                   enum store_delivery_state state, int http_status, const char *error)
{
    struct err e = {0};
    long long now = clock_now_ms(), next = 0;
    if (state == STORE_DELIVERY_PENDING) {
        if (attempts >= wh->opts.max_attempts)
            state = STORE_DELIVERY_FAILED;
        else
            next = now + retry_delay_ms(wh, attempts);
    }
    if (state == STORE_DELIVERY_PENDING)
        arm_tick(wh, next - now); /* a retry sooner than the next poll is not put off */
    int rc = store_delivery_done(wh->store, job_id, seq, wh->owner, state, attempts, next,
                                 http_status, error, now, &e);
    if (rc == ERR_NOT_FOUND || rc == ERR_CONFLICT)
        log_warn("webhooks", "job %s event %lld: %s; outcome dropped", job_id, seq,
                 err_text(&e));
    else if (rc != 0)
        log_error("webhooks", "job %s event %lld: cannot record the attempt: %s; it is sent "
                              "again when its lease expires",
                  job_id, seq, err_text(&e));
    else if (state == STORE_DELIVERY_DELIVERED)
        log_info("webhooks", "job %s event %lld delivered (HTTP %d, attempt %ld)", job_id, seq,
                 http_status, attempts);
    else if (state == STORE_DELIVERY_FAILED)
        log_warn("webhooks", "job %s event %lld failed after %ld attempt(s): %s", job_id, seq,
                 attempts, error ? error : "?");
    else
        log_info("webhooks", "job %s event %lld attempt %ld failed (%s); retry in %lld ms",
                 job_id, seq, attempts, error ? error : "?", next - now);
}

/* ---- the body ---- */

/*
 * {"type", "timestamp", "data": {"job_id", "seq", ...the event's data...}} and, for a job's
 * terminal event, "job": its status body. Returns 0 and a new text, ERR_NOT_FOUND (the job
 * is gone) or another error.
 */
static int build_body(struct webhooks *wh, const struct store_delivery *d, char **out,
                      struct err *e)
{
    int rc = 0;
    struct store_job *job = NULL;
    json_t *data = NULL, *root = NULL;
    *out = NULL;
    data = d->event_data != NULL ? json_loads(d->event_data, 0, NULL) : json_object();
    if (data == NULL || !json_is_object(data)) {
        json_decref(data);
        data = json_pack("{s:s?}", "raw", d->event_data);
    }
    /* job_id and seq first (the order is kept in the text), then the event's own fields */
    json_t *head = json_pack("{s:s, s:I}", "job_id", d->job_id, "seq", (json_int_t)d->seq);
    if (data == NULL || head == NULL || json_object_update_missing(head, data) != 0) {
        json_decref(head);
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    json_decref(data);
    data = head;
    root = json_object();
    bool ok = root != NULL &&
              model_put(root, "type", json_string(store_event_type_name(d->type))) &&
              model_put(root, "timestamp", json_string(d->event_created_at));
    if (ok) {
        ok = model_put(root, "data", data); /* steals data, set or not */
        data = NULL;
    }
    if (!ok) {
        rc = err_set(e, ERR_NOMEM, "out of memory");
        goto out;
    }
    if (STORE_EV_BIT(d->type) & STORE_EV_TERMINAL_MASK) {
        if ((rc = store_job_get(wh->store, d->job_id, &job, e)) != 0)
            goto out;
        /* The GET reply's builder: it has no field for the webhook, so no secret. */
        json_t *st = job_status_json(job, clock_now_ms(), true);
        if (st == NULL || !model_put(root, "job", st)) {
            rc = err_set(e, ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    if ((*out = json_dumps(root, JSON_TEXT_FLAGS)) == NULL)
        rc = err_set(e, ERR_NOMEM, "out of memory");
out:
    store_job_free(job);
    json_decref(data);
    json_decref(root);
    return rc;
}

/* ---- libcurl ---- */

static void after_curl(struct webhooks *wh);

static void drive(void *arg, curl_socket_t fd, int action)
{
    struct webhooks *wh = arg;
    int running = 0;
    curl_multi_socket_action(wh->multi, fd, action, &running);
    after_curl(wh);
}

/* Connect-time address check, as the http tools do (tools/runner.c): it sees the address
 * libcurl resolved and is about to connect to, so DNS rebinding gains nothing. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct delivery_call *c = clientp;
    return netguard_open_socket(purpose, a, c->wh->opts.allow_private, c->blocked,
                                sizeof c->blocked);
}

/* The reply body is not wanted: count it, and stop past the cap (the status is known by
 * then). */
static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct delivery_call *c = userdata;
    size_t n = size * nmemb;
    c->reply_len += n;
    if (c->reply_len > REPLY_MAX_BYTES) {
        c->cut = true;
        return 0;
    }
    return n;
}

static void complete(struct delivery_call *c, CURLcode result)
{
    struct webhooks *wh = c->wh;
    long status = 0;
    char why[CURL_ERROR_SIZE + 400];
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    if (result != CURLE_OK && !(result == CURLE_WRITE_ERROR && c->cut && status > 0)) {
        if (c->blocked[0] != '\0' && result == CURLE_COULDNT_CONNECT)
            snprintf(why, sizeof why,
                     "refused to connect to %s for host '%s': only public addresses are "
                     "allowed (the server's --webhook-allow-private is off)",
                     c->blocked, c->host);
        else if (result == CURLE_OPERATION_TIMEDOUT)
            snprintf(why, sizeof why, "'%s' did not answer within %ld ms", c->host,
                     wh->opts.timeout_ms);
        else if (result == CURLE_COULDNT_RESOLVE_HOST)
            snprintf(why, sizeof why, "cannot resolve host '%s'", c->host);
        else
            snprintf(why, sizeof why, "request to '%s' failed: %s", c->host,
                     c->errbuf[0] ? c->errbuf : curl_easy_strerror(result));
        record(wh, c->job_id, c->seq, c->attempts, STORE_DELIVERY_PENDING, 0, why);
        return;
    }
    if (status >= 200 && status < 300) {
        record(wh, c->job_id, c->seq, c->attempts, STORE_DELIVERY_DELIVERED, (int)status, NULL);
    } else if (status == 410) {
        record(wh, c->job_id, c->seq, c->attempts, STORE_DELIVERY_FAILED, 410,
               "the receiver answered 410 Gone: no more attempts");
    } else {
        snprintf(why, sizeof why, "the receiver answered HTTP %ld", status);
        record(wh, c->job_id, c->seq, c->attempts, STORE_DELIVERY_PENDING, (int)status, why);
    }
}

static void after_curl(struct webhooks *wh)
{
    CURLMsg *msg;
    int left;
    bool any = false;
    while ((msg = curl_multi_info_read(wh->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg is invalid after remove_handle */
        char *priv = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        struct delivery_call *c = (struct delivery_call *)(void *)priv;
        if (c == NULL) {
            curl_multi_remove_handle(wh->multi, easy);
            continue;
        }
        complete(c, result);
        call_unlink(c);
        call_free(c);
        any = true;
    }
    if (any)
        arm_tick(wh, 0); /* a slot is free: claim what is due */
}

/* Starts the attempt of a claimed delivery; records its failure when it cannot start. */
static bool in_flight(const struct webhooks *wh, const struct store_delivery *d)
{
    for (const struct delivery_call *c = wh->calls; c != NULL; c = c->next)
        if (c->seq == d->seq && strcmp(c->job_id, d->job_id) == 0)
            return true;
    return false;
}

static void start(struct webhooks *wh, const struct store_delivery *d)
{
    struct err e = {0};
    /* Our own attempt, still running, whose lease lapsed while the loop stalled: the claim
     * only renewed it. A second attempt would post the event twice at once. */
    if (in_flight(wh, d)) {
        log_warn("webhooks", "job %s event %lld: lease lapsed during its attempt; renewed",
                 d->job_id, d->seq);
        return;
    }
    struct delivery_call *c = calloc(1, sizeof *c);
    unsigned char key[WEBHOOK_KEY_MAX];
    size_t key_len = 0;
    char msg_id[MSG_ID_LEN], sig[WEBHOOK_SIGNATURE_LEN], line[MSG_ID_LEN + 64];
    int rc;
    if (c == NULL) {
        log_error("webhooks", "job %s event %lld: out of memory; sent again when its lease "
                              "expires",
                  d->job_id, d->seq);
        return;
    }
    c->wh = wh;
    memcpy(c->job_id, d->job_id, ID_UUID_LEN);
    c->seq = d->seq;
    c->attempts = d->attempts;
    if (d->url == NULL || d->secret == NULL ||
        url_http_host(d->url, "url", URL_NO_USERINFO, c->host, &e) != 0) {
        record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_FAILED, 0,
               "the job's webhook URL is no longer valid");
        goto fail;
    }
    if (!url_host_allowed(c->host, wh->opts.allow_hosts, wh->opts.n_allow_hosts)) {
        char why[URL_HOST_MAX + 100];
        snprintf(why, sizeof why, "host '%s' is no longer in the server's webhook allowlist",
                 c->host);
        record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_FAILED, 0, why);
        goto fail;
    }
    if (webhook_secret_key(d->secret, key, &key_len, &e) != 0) {
        record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_FAILED, 0,
               "the job's webhook secret is no longer valid");
        goto fail;
    }
    if ((rc = build_body(wh, d, &c->body, &e)) != 0) {
        if (rc == ERR_NOT_FOUND)
            record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_FAILED, 0,
                   "the job is gone");
        else
            record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_PENDING, 0, err_text(&e));
        goto fail;
    }
    snprintf(msg_id, sizeof msg_id, "evt_%s_%lld", d->job_id, d->seq);
    long long ts = clock_now_ms() / 1000;
    size_t body_len = strlen(c->body);
    if (webhook_sign(key, key_len, msg_id, ts, c->body, body_len, sig, &e) != 0) {
        record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_PENDING, 0, err_text(&e));
        goto fail;
    }
    const char *fixed[] = {"Content-Type: application/json", "Expect:",
                           ("User-Agent: crewd-webhooks/" CREWD_VERSION)};
    for (size_t i = 0; i < 3 + 3; i++) {
        const char *h = line;
        if (i < 3)
            h = fixed[i];
        else if (i == 3)
            snprintf(line, sizeof line, "webhook-id: %s", msg_id);
        else if (i == 4)
            snprintf(line, sizeof line, "webhook-timestamp: %lld", ts);
        else
            snprintf(line, sizeof line, "webhook-signature: %s", sig);
        struct curl_slist *grown = curl_slist_append(c->headers, h);
        if (grown == NULL)
            goto nomem;
        c->headers = grown;
    }
    if ((c->easy = curl_easy_init()) == NULL)
        goto nomem;
    CURL *x = c->easy;
    CURLcode cr = CURLE_OK;
#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (cr == CURLE_OK)                                                                        \
            cr = curl_easy_setopt(x, opt, val);                                                    \
    } while (0)
    SET(CURLOPT_URL, d->url);
    SET(CURLOPT_HTTPHEADER, c->headers);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    SET(CURLOPT_POSTFIELDS, c->body);
    SET(CURLOPT_PRIVATE, (void *)c);
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TIMEOUT_MS, wh->opts.timeout_ms);
    SET(CURLOPT_WRITEFUNCTION, on_write);
    SET(CURLOPT_WRITEDATA, (void *)c);
    SET(CURLOPT_ERRORBUFFER, c->errbuf);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_socket);
    SET(CURLOPT_OPENSOCKETDATA, (void *)c);
    /* A redirect would be another receiver, unchecked: the status counts as a failure. */
    SET(CURLOPT_FOLLOWLOCATION, 0L);
    /* Nothing of the environment's: no proxy (it would see the signed body and be the
     * address connected to), no ~/.netrc. */
    SET(CURLOPT_PROXY, "");
    SET(CURLOPT_NETRC, (long)CURL_NETRC_IGNORED);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
#undef SET
    if (cr != CURLE_OK) {
        char why[200];
        snprintf(why, sizeof why, "libcurl refused an option: %s", curl_easy_strerror(cr));
        record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_PENDING, 0, why);
        goto fail;
    }
    if (curl_multi_add_handle(wh->multi, x) != CURLM_OK)
        goto nomem;
    OPENSSL_cleanse(key, sizeof key);
    DLIST_PUSH(wh->calls, c);
    wh->n_calls++;
    log_debug("webhooks", "job %s event %lld: attempt %ld to '%s'", d->job_id, d->seq,
              d->attempts, c->host);
    return;
nomem:
    record(wh, d->job_id, d->seq, d->attempts, STORE_DELIVERY_PENDING, 0,
           "out of memory starting the attempt");
fail:
    OPENSSL_cleanse(key, sizeof key);
    call_free(c);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct webhooks *wh = arg;
    struct err e = {0};
    struct store_delivery_list list = {0};
    if (wh->closing)
        return;
    if (wh->n_calls < wh->opts.max_in_flight) {
        long long lease = 2LL * wh->opts.timeout_ms;
        if (store_delivery_claim(wh->store, wh->owner, clock_now_ms(), lease,
                                 wh->opts.max_in_flight - wh->n_calls, &list, &e) != 0)
            log_error("webhooks", "cannot claim deliveries: %s", err_text(&e));
        for (size_t i = 0; i < list.n; i++)
            start(wh, list.items[i]);
        store_delivery_list_cleanup(&list);
        /* Claimed transfers start from libcurl's timer, on a later turn. */
    }
    arm_tick(wh, wh->opts.poll_ms);
}

int webhooks_new(struct event_base *base, struct store *store, const char *owner,
                 const struct webhooks_opts *opts, struct webhooks **out, struct err *e)
{
    *out = NULL;
    struct webhooks *wh = calloc(1, sizeof *wh);
    if (wh == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    wh->base = base;
    wh->store = store;
    snprintf(wh->owner, sizeof wh->owner, "%s", owner);
    wh->opts = *opts;
    if (wh->opts.timeout_ms <= 0)
        wh->opts.timeout_ms = DEFAULT_TIMEOUT_MS;
    if (wh->opts.max_attempts <= 0)
        wh->opts.max_attempts = DEFAULT_MAX_ATTEMPTS;
    if (wh->opts.retry_base_ms <= 0)
        wh->opts.retry_base_ms = DEFAULT_RETRY_BASE_MS;
    if (wh->opts.poll_ms <= 0)
        wh->opts.poll_ms = DEFAULT_POLL_MS;
    if (wh->opts.max_in_flight == 0)
        wh->opts.max_in_flight = DEFAULT_MAX_IN_FLIGHT;
    wh->rng = (uint64_t)clock_now_ms() * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() ^
              (uint64_t)(uintptr_t)wh;
    if (wh->rng == 0)
        wh->rng = 1;
    if ((wh->tick_ev = evtimer_new(base, on_tick, wh)) == NULL ||
        (wh->multi = curl_multi_init()) == NULL) {
        webhooks_free(wh);
        return err_set(e, ERR_NOMEM, "out of memory");
    }
    if (curl_loop_init(&wh->loop, base, wh->multi, drive, wh, e) != 0) {
        webhooks_free(wh);
        return ERR_NOMEM;
    }
    arm_tick(wh, 0);
    *out = wh;
    return 0;
}

void webhooks_free(struct webhooks *wh)
{
    if (wh == NULL)
        return;
    wh->closing = true;
    size_t n = wh->n_calls;
    while (wh->calls != NULL) {
        struct delivery_call *c = wh->calls;
        call_unlink(c);
        call_free(c);
    }
    if (wh->store != NULL) {
        struct err e = {0};
        if (store_delivery_release(wh->store, wh->owner, &e) != 0)
            log_error("webhooks", "cannot give back %zu delivery lease(s): %s; they are sent "
                                  "again when the leases expire",
                      n, err_text(&e));
        else if (n > 0)
            log_info("webhooks", "%zu delivery attempt(s) stopped; sent again at the next start",
                     n);
    }
    if (wh->multi != NULL)
        curl_multi_cleanup(wh->multi);
    curl_loop_cleanup(&wh->loop);
    if (wh->tick_ev != NULL)
        event_free(wh->tick_ev);
    free(wh);
}
