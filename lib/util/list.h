/*
 * list: intrusive circular doubly-linked lists (the Linux kernel's, trimmed
 * down). The links live inside the listed struct, so adding and removing
 * never allocates.
 * SPDX-License-Identifier: MIT
 */
#ifndef SN_LIST_H
#define SN_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list {
    struct list *prev, *next;
};

#define list_entry(ptr, type, member)                                         \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

static inline void
list_init(struct list *l)
{
    l->prev = l->next = l;
}

static inline bool
list_empty(const struct list *l)
{
    return l->next == l;
}

/* True if node is on some list (nodes are list_init'ed when off-list). */
static inline bool
list_linked(const struct list *node)
{
    return node->next != node && node->next != NULL;
}

static inline void
list_add_tail(struct list *head, struct list *node)
{
    node->prev = head->prev;
    node->next = head;
    head->prev->next = node;
    head->prev = node;
}

static inline void
list_del(struct list *node)
{
    node->prev->next = node->next;
    node->next->prev = node->prev;
    list_init(node);
}

/* Move node (linked or not) to the tail of head. */
static inline void
list_move_tail(struct list *head, struct list *node)
{
    if (list_linked(node))
        list_del(node);
    list_add_tail(head, node);
}

#endif
