/*
 * webhooks.h - the webhook dispatcher: sends the job events that a job's webhook asked for,
 * signed per Standard Webhooks (webhooks/sign.h), and retries them with backoff.
 *
 * The store holds the work (DESIGN.md decision 4): appending an event whose type the job's
 * webhook mask has inserts a pending delivery row in the same transaction. The dispatcher
 * claims due deliveries with a lease (twice the attempt timeout, so a live attempt never
 * loses its lease), POSTs each with libcurl on the loop (core/curl_loop.h), and records the
 * outcome with delivery_done: 2xx delivered; 410 failed at once (the receiver unsubscribed);
 * anything else (status, timeout, connection error, refused address) pending again after
 * retry_base_ms * 2^(attempts-1), +-20%, at most an hour, or failed after max_attempts.
 * A delivery whose instance died is claimed again, by any instance, once its lease expires:
 * the receiver may see an event twice (at-least-once), always with the same webhook-id.
 *
 * The peer address is checked when libcurl connects (tools/netguard.h, as the http tools
 * do): loopback, private, link-local and the like are refused unless allow_private, whatever
 * the name resolved to. No redirect is followed; the reply body is read up to 64 KiB and
 * dropped. docs/internals/webhooks.md has the payload and the schedule.
 *
 * Loop thread only.
 */
#ifndef CREWD_WEBHOOKS_WEBHOOKS_H
#define CREWD_WEBHOOKS_WEBHOOKS_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"

struct store;

struct webhooks_opts {
    const char *const *allow_hosts; /* checked again at send time: a host the operator has
                                       since removed is given up ("*": any) */
    size_t n_allow_hosts;
    bool allow_private;   /* loopback and private peer addresses too */
    long timeout_ms;      /* per attempt; 0: 10000 */
    long max_attempts;    /* 0: 10 */
    long retry_base_ms;   /* 0: 1000 */
    long poll_ms;         /* claim due retries and other instances' events; 0: 1000 */
    size_t max_in_flight; /* attempts at once; 0: 32 */
};

#define WEBHOOKS_MAX_DELAY_MS (3600L * 1000)

struct webhooks;

/* `owner` (copied) names this instance's leases, e.g. jobs_owner(). Claims start at once.
 * Returns 0, ERR_NOMEM or ERR_INTERNAL. */
int webhooks_new(struct event_base *base, struct store *store, const char *owner,
                 const struct webhooks_opts *opts, struct webhooks **out, struct err *e);

/* Events were appended: claim soon (coalesced into one claim per loop turn). NULL-safe; a
 * void * argument so that it can be given as jobs_on_events' callback as it is. */
void webhooks_wake(void *wh);

/* Aborts the attempts in flight and gives their leases back (delivery_release), so the
 * next start of any instance sends them at once. NULL-safe. */
void webhooks_free(struct webhooks *wh);

/* The delay before attempt `attempts` + 1 after `attempts` failed ones (no jitter): base *
 * 2^(attempts-1), at most WEBHOOKS_MAX_DELAY_MS. For the tests and the docs. */
long long webhooks_backoff_ms(long retry_base_ms, long attempts);

#endif
