/*
 * dlist.h - the intrusive doubly-linked list crewd keeps its live things in (jobs' slots,
 * steps in flight, streams, subscribers, transfers): a struct with `prev` and `next` members
 * and a head pointer somewhere. Insert and remove are O(1), with no allocation; the owner
 * keeps its own count. Macros, because the element types differ and the code is the same.
 */
#ifndef CREWD_CORE_DLIST_H
#define CREWD_CORE_DLIST_H

/* Puts `node` first in the list that `head` (an lvalue) points to. */
#define DLIST_PUSH(head, node)                                                                     \
    do {                                                                                           \
        (node)->prev = NULL;                                                                       \
        (node)->next = (head);                                                                     \
        if ((head) != NULL)                                                                        \
            (head)->prev = (node);                                                                 \
        (head) = (node);                                                                           \
    } while (0)

/* Takes `node` out of the list `head` points to; its links are cleared. */
#define DLIST_REMOVE(head, node)                                                                   \
    do {                                                                                           \
        if ((node)->prev != NULL)                                                                  \
            (node)->prev->next = (node)->next;                                                     \
        else                                                                                       \
            (head) = (node)->next;                                                                 \
        if ((node)->next != NULL)                                                                  \
            (node)->next->prev = (node)->prev;                                                     \
        (node)->prev = (node)->next = NULL;                                                        \
    } while (0)

#endif
