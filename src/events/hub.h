/*
 * hub.h - readers of jobs' event histories (DESIGN.md decision 4).
 *
 * A subscriber asks for the events of one job after a sequence number and gets them in
 * order, each exactly once, as they are appended: the store is the only source (events are
 * read from it, never passed around in memory), so a reader that reconnects with the last
 * number it saw misses nothing, and every instance sees the events of every other.
 *
 * Subscribers of the same job share a topic: one store read per topic serves them all, from
 * the smallest position among them. A topic is read when event_hub_notify() says its job has
 * new events (this instance appended them), and every poll_ms in any case (events another
 * instance appended, a job that ended elsewhere). A subscriber is told `end` once the job is
 * over and it has every event (the store reads the job's status in the same snapshot as its
 * events, and a finished job's last event is its terminal one), or when the job is gone.
 *
 * Runs on the loop thread.
 */
#ifndef CREWD_EVENTS_HUB_H
#define CREWD_EVENTS_HUB_H

#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/err.h"
#include "store/store.h"

struct event_hub_opts {
    long poll_ms; /* how often every topic is read regardless of notifies; 0: 1000 */
    size_t batch; /* events per store read; 0: 256 */
};

struct event_hub;
struct event_sub;

/*
 * New events for a subscriber: evs[0..n) in seq order (borrowed, valid during the call), and
 * `end` when there will be no more after them (the job is over, or gone: then n may be 0).
 * Returns how many of them it took, from the first: all n; fewer, which pauses the
 * subscription (a reader whose output is full) until event_hub_resume, after which it is
 * offered the rest; or EVENT_SUB_DROP to unsubscribe. The subscription is freed after the
 * call when it returns EVENT_SUB_DROP, or takes all n with `end`. Do not call
 * event_hub_unsubscribe from here.
 */
#define EVENT_SUB_DROP ((size_t)-1)
typedef size_t (*event_sub_cb)(void *arg, const struct store_event *evs, size_t n, bool end);

/* Returns 0, ERR_NOMEM. */
int event_hub_new(struct event_base *base, struct store *store, const struct event_hub_opts *o,
                  struct event_hub **out, struct err *e);

/* Ends every subscription (its callback with n 0 and end true), then frees the hub.
 * NULL-safe. */
void event_hub_free(struct event_hub *hub);

/* Subscribes to the events of `job_id` (canonical) after `after_seq`; the first callback
 * comes from the loop, soon, never from here. Returns 0 or ERR_NOMEM. */
int event_hub_subscribe(struct event_hub *hub, const char *job_id, long long after_seq,
                        event_sub_cb cb, void *arg, struct event_sub **out, struct err *e);

/* A paused subscription wants events again (its reader drained its output): it is served
 * on this loop turn. No-op for one that is not paused. */
void event_hub_resume(struct event_sub *sub);

/* Ends a subscription with no further callback. NULL-safe; not from inside its callback. */
void event_hub_unsubscribe(struct event_sub *sub);

/* Job `job_id` has new events (or is gone): its subscribers are served this loop turn. */
void event_hub_notify(struct event_hub *hub, const char *job_id);

#endif
