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

/* Why a login may not be checked now; CW__THR_OK: check the password. */
enum cw__thr {
    CW__THR_OK = 0,
    CW__THR_PAIR,     /* this account failed addr_max times from here */
    CW__THR_ADDR,     /* the address is over its limit */
    CW__THR_NET,      /* the IPv6 network is over its limit */
    CW__THR_ACCOUNT,  /* the account failed account_max times */
    CW__THR_FULL,     /* an address the full table does not hold, and the
                         shared overflow bucket is over its limit */
    CW__THR_WAIT      /* under every limit, but not if the checks in
                         flight on its keys all fail: ask again when one
                         has answered (not a refusal) */
};

/* A login's share of the budget while its password is checked: each of
 * its keys counts it as a failure to come until cw__throttle_end. So the
 * failures of a window never exceed a limit, however many logins arrive
 * at once, and a login is never refused for checks that may yet pass.
 * Owned by the caller; the throttle keeps no pointer to it. */
struct cw__thr_hold {
    uint64_t id[4];   /* the keys: address, pair, network, account */
    uint8_t held;     /* which of them hold an entry (bit i: id[i]); bit 4:
                         the address holds the overflow bucket instead */
};

/* addr: 16 bytes, IPv4 as ::ffff:a.b.c.d. account: the user name as sent
 * (known or not: the answer must not depend on that). CW__THR_OK takes a
 * hold in *h, which must be ended exactly once; any other answer takes
 * none (*h is cleared). */
enum cw__thr cw__throttle_begin(cw__throttle *t, const uint8_t addr[16],
                                const char *account, size_t len, int64_t now,
                                struct cw__thr_hold *h);

/* How a held login ended: its password was right (the hold is released),
 * wrong (it becomes a failure, counted at now), or not checked to the end
 * (the client left: released). h is cleared, so a second end does
 * nothing. Returns 1 when part of a failure did not fit in the table
 * (counted in the overflow bucket instead) for the first time in the
 * current window, so the caller can log that once; else 0. */
enum cw__thr_end { CW__THR_PASSED, CW__THR_FAILED, CW__THR_CANCELLED };
int cw__throttle_end(cw__throttle *t, struct cw__thr_hold *h, enum cw__thr_end how,
                     int64_t now);

/* Holds ended so far (any outcome). A login told to wait can only be
 * let in, or refused, after one ends: until this changes, asking again
 * would get the same answer. Takes no lock. */
uint64_t cw__throttle_ends(cw__throttle *t);

/* What cw__throttle_begin would answer, taking no hold. */
enum cw__thr cw__throttle_check(cw__throttle *t, const uint8_t addr[16],
                                const char *account, size_t len, int64_t now);

/* Failures that went to the overflow bucket since the start. */
uint64_t cw__throttle_overflowed(cw__throttle *t);

/* Static name of a verdict, for logs ("account", "full", ...). */
const char *cw__throttle_name(enum cw__thr v);

/* Keyed 64-bit hash (SipHash-2-4), exposed for its test vector. */
uint64_t cw__siphash(const uint8_t key[16], const void *data, size_t len);

#endif
