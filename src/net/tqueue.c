/* tqueue.c - FIFO timer queues for fixed timeouts: entries in due order
 * on a circular list. The loop keeps a list of the non-empty queues and
 * looks at their heads for its next wake-up (loop.c), so a queue costs no
 * heap node at all: queuing, re-queuing and expiring an entry are list
 * splices. */
#include "internal.h"

#include <stddef.h>

static cw_tqueue *queue_of(cw_tqentry *sentinel)
{
    return (cw_tqueue *)((char *)sentinel - offsetof(cw_tqueue, head));
}

/* Off its list; the last entry out takes its queue off the loop's list
 * (alone, both its neighbours are the queue's sentinel). */
static void unlink_entry(cw_tqentry *e)
{
    if (e->prev == e->next)
        cw__loop_queue_off(queue_of(e->prev));
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

static void insert_after(cw_tqueue *q, cw_tqentry *at, cw_tqentry *e)
{
    if (q->head.next == &q->head)
        cw__loop_queue_on(q);
    e->prev = at;
    e->next = at->next;
    at->next->prev = e;
    at->next = e;
}

int cw_tqueue_init(cw_loop *loop, cw_tqueue *q, int64_t timeout_ms,
                   cw_tqueue_cb *cb)
{
    if (!loop || !q || !cb || timeout_ms < 0)
        return CW_EINVAL;
    q->loop = loop;
    q->cb = cb;
    q->timeout_ms = timeout_ms;
    q->lprev = q->lnext = NULL;
    q->head.deadline = 0;
    q->head.prev = q->head.next = &q->head;
    return CW_OK;
}

int cw__tqueue_put(cw_tqueue *q, cw_tqentry *e, int64_t deadline)
{
    cw_tqentry *tail = q->head.prev;
    cw_tqentry *before = tail == e ? e->prev : tail;
    if (before != &q->head && before->deadline > deadline)
        return 0;
    e->deadline = deadline;
    if (tail == e)
        return 1;   /* already last: stays in order */
    if (e->next)
        unlink_entry(e);
    insert_after(q, q->head.prev, e);
    return 1;
}

int cw_tqueue_add(cw_tqueue *q, cw_tqentry *e)
{
    if (!q || !e || !q->loop)
        return CW_EINVAL;
    /* The clock only moves forward: now + timeout is the latest. */
    cw__tqueue_put(q, e, cw_now_ms() + q->timeout_ms);
    return CW_OK;
}

int cw_tqueue_add_at(cw_tqueue *q, cw_tqentry *e, int64_t deadline)
{
    if (!q || !e || !q->loop || deadline < 0)
        return CW_EINVAL;
    if (cw__tqueue_put(q, e, deadline))
        return CW_OK;
    if (e->next)
        unlink_entry(e);
    e->deadline = deadline;
    cw_tqentry *at = q->head.prev;
    while (at != &q->head && at->deadline > deadline)
        at = at->prev;
    insert_after(q, at, e);
    return CW_OK;
}

void cw_tqueue_remove(cw_tqentry *e)
{
    if (e && e->next)
        unlink_entry(e);
}

int cw_tqueue_active(const cw_tqentry *e)
{
    return e && e->next != NULL;
}

void cw_tqueue_close(cw_tqueue *q)
{
    if (!q || !q->loop)
        return;
    while (q->head.next != &q->head)
        unlink_entry(q->head.next);
}

int cw__tqueue_expire_one(cw_tqueue *q, int64_t now)
{
    cw_tqentry *e = q->head.next;
    if (e == &q->head || e->deadline > now)
        return 0;
    unlink_entry(e);
    q->cb(q->loop, e);
    return 1;
}
