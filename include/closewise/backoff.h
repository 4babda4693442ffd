/*
 * closewise/backoff.h - delays between reconnect attempts: exponential,
 * capped, with jitter, so a fleet of clients neither hammers a server that
 * just restarted nor reconnects in lockstep, and no client ever retries in
 * a tight loop.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 */
#ifndef CLOSEWISE_BACKOFF_H
#define CLOSEWISE_BACKOFF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Plain state, owned by the caller (no allocation). */
struct cw_backoff {
    int64_t min_ms;     /* first delay ceiling, > 0 */
    int64_t max_ms;     /* cap on any delay */
    unsigned attempt;   /* attempts since the last reset */
    uint64_t rng;       /* jitter state */
};

/* Start with delays in (min_ms/2, min_ms], doubling up to max_ms. Values
 * below 1 ms are raised to 1 ms. */
void cw_backoff_init(struct cw_backoff *b, int64_t min_ms, int64_t max_ms);

/* The delay before the next attempt, in ms: d = min(max, min * 2^attempt),
 * returned as d/2 plus a random part of d/2 ("equal jitter"), so it is
 * never below min_ms/2. Counts the attempt. */
int64_t cw_backoff_next(struct cw_backoff *b);

/* After a success: the next delay starts from min_ms again. */
void cw_backoff_reset(struct cw_backoff *b);

#ifdef __cplusplus
}
#endif
#endif
