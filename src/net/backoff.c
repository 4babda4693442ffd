/* backoff.c - reconnect delays: exponential, capped, jittered. */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/random.h>
#include <unistd.h>

void cw_backoff_init(struct cw_backoff *b, int64_t min_ms, int64_t max_ms)
{
    b->min_ms = min_ms < 1 ? 1 : min_ms;
    b->max_ms = max_ms < b->min_ms ? b->min_ms : max_ms;
    b->attempt = 0;
    if (getrandom(&b->rng, sizeof b->rng, GRND_NONBLOCK) != sizeof b->rng)
        b->rng = (uint64_t)cw_now_ms() * 6364136223846793005u ^ (uint64_t)getpid();
    b->rng |= 1;   /* xorshift must not start at 0 */
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int64_t cw_backoff_next(struct cw_backoff *b)
{
    int64_t d = b->min_ms;
    for (unsigned i = 0; i < b->attempt && d < b->max_ms; i++)
        d = d > b->max_ms / 2 ? b->max_ms : d * 2;   /* never overflows */
    if (b->attempt < 64)
        b->attempt++;
    int64_t half = d / 2;
    return d - half + (int64_t)(xorshift(&b->rng) % (uint64_t)(half + 1));
}

void cw_backoff_reset(struct cw_backoff *b)
{
    b->attempt = 0;
}
