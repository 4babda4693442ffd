/* throttle.h - the login throttle of the reference server: a pure policy
 * over (address, account, now) with a fixed-size table. No I/O and no
 * clock of its own, so tests drive it with any addresses and times.
 * Safe from several threads (the server's loops share one table).
 * Internal: never installed. The policy is described, with its
 * trade-offs, in docs/PROTOCOL.md ("Throttling"). */
#ifndef CW_THROTTLE_H
#define CW_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct cw__throttle cw__throttle;

struct cw__throttle_opts {
    int addr_max;        /* failures per (address, account), and per
                            address before it is limited; 0 = no throttle */
    int net_max;         /* failures per IPv6 network before it is limited */
    int account_max;     /* failures per account, from anywhere */
    int v6_addr_prefix;  /* an IPv6 "address" is this prefix (64) */
    int v6_net_prefix;   /* an IPv6 "network" is this prefix (48) */
    int64_t window_ms;   /* failures count for this long after the first */
    int slots;           /* table entries (rounded up to a power of two) */
};

/* Defaults from addr_max (5): net_max and account_max 4 * addr_max,
 * /64 and /48, 32,768 slots. */
void cw__throttle_opts_init(struct cw__throttle_opts *o, int addr_max,
                            int64_t window_ms);

/* The table is allocated once and never grows; its hash key comes from
 * getrandom(2), fresh per call. CW_EINVAL for bad options. */
int cw__throttle_new(const struct cw__throttle_opts *o, cw__throttle **out);
void cw__throttle_free(cw__throttle *t);

/* Why a login may not be checked; CW__THR_OK: check the password. */
enum cw__thr {
    CW__THR_OK = 0,
    CW__THR_PAIR,     /* this account failed addr_max times from here */
    CW__THR_ADDR,     /* the address is over its limit */
    CW__THR_NET,      /* the IPv6 network is over its limit */
    CW__THR_ACCOUNT,  /* the account failed account_max times */
    CW__THR_FULL      /* an address the full table does not hold, and the
                         shared overflow bucket is over its limit */
};

/* addr: 16 bytes, IPv4 as ::ffff:a.b.c.d. account: the user name as sent
 * (known or not: the answer must not depend on that). */
enum cw__thr cw__throttle_check(cw__throttle *t, const uint8_t addr[16],
                                const char *account, size_t len, int64_t now);

/* Record a failed login. Returns 1 when part of it did not fit in the
 * table (counted in the overflow bucket instead) for the first time in
 * the current window, so the caller can log that once; else 0. */
int cw__throttle_failed(cw__throttle *t, const uint8_t addr[16],
                        const char *account, size_t len, int64_t now);

/* Failures that went to the overflow bucket since the start. */
uint64_t cw__throttle_overflowed(cw__throttle *t);

/* Static name of a verdict, for logs ("account", "full", ...). */
const char *cw__throttle_name(enum cw__thr v);

/* Keyed 64-bit hash (SipHash-2-4), exposed for its test vector. */
uint64_t cw__siphash(const uint8_t key[16], const void *data, size_t len);

#endif
