/* tqueue.c - FIFO timer queues for fixed timeouts on top of the loop's
 * heap: entries in due order on a circular list, one heap timer per
 * queue for its head. Re-queuing a touched entry is two list splices; the
 * heap is touched only when the head fires (or when an entry due earlier
 * than the head arrives). */
#include "internal.h"

#include <stddef.h>

static void unlink_entry(cw_tqentry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

static void insert_after(cw_tqentry *at, cw_tqentry *e)
{
    e->prev = at;
    e->next = at->next;
    at->next->prev = e;
    at->next = e;
}

static cw_tqueue *queue_of(cw_timer *t)
{
    return (cw_tqueue *)((char *)t - offsetof(cw_tqueue, timer));
}

static void on_head_due(cw_loop *loop, cw_timer *t);

/* The timer follows the head when the head got earlier; a later head is
 * found when the timer fires (lazily: moving it would be a heap op). */
static int arm(cw_tqueue *q)
{
    cw_tqentry *first = q->head.next;
    if (first == &q->head)
        return CW_OK;
    if (cw_timer_active(&q->timer) && q->timer.deadline <= first->deadline)
        return CW_OK;
    return cw_timer_start(q->loop, &q->timer, first->deadline, on_head_due);
}

static void on_head_due(cw_loop *loop, cw_timer *t)
{
    cw_tqueue *q = queue_of(t);
    int64_t now = cw_now_ms();
    /* A callback may re-queue its entry (it goes behind now) or remove
     * others: take the head afresh every time. */
    cw_tqentry *e;
    while ((e = q->head.next) != &q->head && e->deadline <= now) {
        unlink_entry(e);
        q->cb(loop, e);
    }
    arm(q);
}

int cw_tqueue_init(cw_loop *loop, cw_tqueue *q, int64_t timeout_ms,
                   cw_tqueue_cb *cb)
{
    if (!loop || !q || !cb || timeout_ms < 0)
        return CW_EINVAL;
    q->loop = loop;
    q->cb = cb;
    q->timeout_ms = timeout_ms;
    q->timer = (cw_timer){0};
    q->head.prev = q->head.next = &q->head;
    return CW_OK;
}

int cw_tqueue_add(cw_tqueue *q, cw_tqentry *e)
{
    if (!q || !e || !q->loop)
        return CW_EINVAL;
    if (e->next)
        unlink_entry(e);
    e->deadline = cw_now_ms() + q->timeout_ms;
    /* The clock only moves forward: the tail is the latest. */
    insert_after(q->head.prev, e);
    return arm(q);
}

int cw_tqueue_add_at(cw_tqueue *q, cw_tqentry *e, int64_t deadline)
{
    if (!q || !e || !q->loop || deadline < 0)
        return CW_EINVAL;
    if (e->next)
        unlink_entry(e);
    e->deadline = deadline;
    cw_tqentry *at = q->head.prev;
    while (at != &q->head && at->deadline > deadline)
        at = at->prev;
    insert_after(at, e);
    return arm(q);
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
    cw_timer_stop(q->loop, &q->timer);
    while (q->head.next != &q->head)
        unlink_entry(q->head.next);
}
