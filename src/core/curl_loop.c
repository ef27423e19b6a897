/* curl_loop.c - see curl_loop.h. */
#include "core/curl_loop.h"

#include <stdlib.h>

#include "core/dlist.h"

/* One socket libcurl asked to watch: its event, in a list so that cleanup frees them all. */
struct curl_loop_sock {
    struct curl_loop_sock *prev, *next;
    curl_socket_t fd;
    struct event *ev;
};

static void on_socket(evutil_socket_t fd, short what, void *arg)
{
    struct curl_loop *l = arg;
    int action =
        ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    l->drive(l->arg, fd, action);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct curl_loop *l = arg;
    l->drive(l->arg, CURL_SOCKET_TIMEOUT, 0);
}

static void sock_free(struct curl_loop *l, struct curl_loop_sock *s)
{
    if (s->ev)
        event_free(s->ev);
    DLIST_REMOVE(l->socks, s);
    free(s);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct curl_loop *l = userp;
    struct curl_loop_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s != NULL) {
            sock_free(l, s);
            curl_multi_assign(l->multi, fd, NULL);
        }
        return 0;
    }
    if (s == NULL) {
        if ((s = calloc(1, sizeof *s)) == NULL)
            return -1;
        s->fd = fd;
        DLIST_PUSH(l->socks, s);
        curl_multi_assign(l->multi, fd, s);
    }
    short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
                         ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
    if (s->ev != NULL) {
        event_del(s->ev);
        event_assign(s->ev, l->base, fd, kind, on_socket, l);
    } else if ((s->ev = event_new(l->base, fd, kind, on_socket, l)) == NULL) {
        return -1;
    }
    event_add(s->ev, NULL);
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    struct curl_loop *l = userp;
    if (timeout_ms < 0) {
        evtimer_del(l->timer_ev);
        return 0;
    }
    /* 0 means "now"; libcurl may not be re-entered from here, so the loop does it. */
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(l->timer_ev, &tv);
    return 0;
}

int curl_loop_init(struct curl_loop *l, struct event_base *base, CURLM *multi,
                   curl_loop_drive_cb drive, void *arg, struct err *e)
{
    *l = (struct curl_loop){.base = base, .multi = multi, .drive = drive, .arg = arg};
    if ((l->timer_ev = evtimer_new(base, on_timer, l)) == NULL)
        return err_set(e, ERR_NOMEM, "out of memory");
    curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, l);
    curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(multi, CURLMOPT_TIMERDATA, l);
    return 0;
}

void curl_loop_cleanup(struct curl_loop *l)
{
    while (l->socks != NULL)
        sock_free(l, l->socks);
    if (l->timer_ev)
        event_free(l->timer_ev);
    l->timer_ev = NULL;
}
