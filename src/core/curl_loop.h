/*
 * curl_loop.h - libcurl's multi "socket" interface on a libevent loop (curl's hiperfifo
 * pattern), for every module that makes HTTP requests without a thread: the LLM client
 * (llm/llm.c) and the tool runner's http tools (tools/runner.c).
 *
 * libcurl says which sockets to watch and when to time out; this turns those into events on
 * the caller's event_base, and when one fires calls the owner's drive callback, which runs
 * curl_multi_socket_action and then reads the finished transfers (what happens then is the
 * owner's business: retries, callbacks, re-entrancy guards). Loop thread only.
 */
#ifndef CREWD_CORE_CURL_LOOP_H
#define CREWD_CORE_CURL_LOOP_H

#include <curl/curl.h>
#include <event2/event.h>

#include "core/err.h"

/* Called when libcurl's socket `fd` is ready (action: CURL_CSELECT_IN/OUT bits) or its timer
 * fired (fd CURL_SOCKET_TIMEOUT, action 0): run curl_multi_socket_action(multi, fd, action,
 * ...) and collect what finished. */
typedef void (*curl_loop_drive_cb)(void *arg, curl_socket_t fd, int action);

struct curl_loop_sock;

struct curl_loop {
    struct event_base *base;
    CURLM *multi; /* the owner's; not freed here */
    struct event *timer_ev;
    struct curl_loop_sock *socks;
    curl_loop_drive_cb drive;
    void *arg;
};

/* Hooks `multi` to `base` (sets its socket and timer callbacks). Returns 0 or ERR_NOMEM. */
int curl_loop_init(struct curl_loop *l, struct event_base *base, CURLM *multi,
                   curl_loop_drive_cb drive, void *arg, struct err *e);

/* Frees the events. Call after curl_multi_cleanup, which may still remove sockets through
 * the callbacks. Safe on a zeroed or half-initialised loop. */
void curl_loop_cleanup(struct curl_loop *l);

#endif
