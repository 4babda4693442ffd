/* throttle.c - failed logins counted per (address, account), address,
 * IPv6 network and account, in one fixed-size open-addressing table keyed
 * by a secret SipHash key. An attacker can neither aim many addresses at
 * one bucket (the key is random per start) nor push a failing entry out
 * (entries with failures in their window are never reused); what does not
 * fit goes to one shared overflow bucket. */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "throttle.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define PROBE 16   /* slots looked at per key: bounded work per login */

struct entry {
    uint64_t id;       /* keyed hash of kind and key; 0 = never used */
    int64_t since;     /* first failure of the current window */
    uint32_t fails;
};

struct window {
    int64_t since;
    uint32_t fails;
};

/* Shared by the server's loops: every entry point holds mu, for a few
 * table probes, except when the throttle is off (o is fixed at creation). */
struct cw__throttle {
    pthread_mutex_t mu;
    struct cw__throttle_opts o;
    uint8_t key[16];
    uint32_t mask;             /* slots - 1 */
    struct window overflow;    /* failures the table could not hold */
    int overflow_logged;       /* reported in the current window */
    uint64_t overflowed;
    struct entry *slots;
};

/* ---- SipHash-2-4 ---- */

static uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void sip_rounds(uint64_t v[4], int n)
{
    while (n--) {
        v[0] += v[1]; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32);
        v[2] += v[3]; v[3] = rotl(v[3], 16); v[3] ^= v[2];
        v[0] += v[3]; v[3] = rotl(v[3], 21); v[3] ^= v[0];
        v[2] += v[1]; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32);
    }
}

uint64_t cw__siphash(const uint8_t key[16], const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t k0 = le64(key), k1 = le64(key + 8);
    uint64_t v[4] = {k0 ^ 0x736f6d6570736575ull, k1 ^ 0x646f72616e646f6dull,
                     k0 ^ 0x6c7967656e657261ull, k1 ^ 0x7465646279746573ull};
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = le64(p + i);
        v[3] ^= m;
        sip_rounds(v, 2);
        v[0] ^= m;
    }
    uint64_t last = (uint64_t)len << 56;
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t)p[whole + i] << (8 * i);
    v[3] ^= last;
    sip_rounds(v, 2);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_rounds(v, 4);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* ---- the table ---- */

void cw__throttle_opts_init(struct cw__throttle_opts *o, int addr_max,
                            int64_t window_ms)
{
    memset(o, 0, sizeof *o);
    o->addr_max = addr_max;
    o->net_max = 4 * addr_max;
    o->account_max = 4 * addr_max;
    o->v6_addr_prefix = 64;
    o->v6_net_prefix = 48;
    o->window_ms = window_ms;
    o->slots = 32768;
}

int cw__throttle_new(const struct cw__throttle_opts *o, cw__throttle **out)
{
    *out = NULL;
    int on = o->addr_max > 0;
    if (o->addr_max < 0 || (on && (o->net_max < 1 || o->account_max < 1)) ||
        o->window_ms <= 0 || o->slots < PROBE || o->slots > (1 << 24) ||
        o->v6_net_prefix < 1 || o->v6_net_prefix > o->v6_addr_prefix ||
        o->v6_addr_prefix > 128)
        return CW_EINVAL;
    cw__throttle *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    t->o = *o;
    pthread_mutex_init(&t->mu, NULL);
    uint32_t n = PROBE;
    while (n < (uint32_t)o->slots)
        n <<= 1;
    t->mask = n - 1;
    t->slots = calloc(n, sizeof *t->slots);
    if (!t->slots) {
        free(t);
        return -ENOMEM;
    }
    /* A key an attacker cannot learn: without it, no one can choose
     * addresses that share slots. getrandom(2) without flags waits only
     * until the kernel's pool is first initialised, i.e. at early boot. */
    if (getrandom(t->key, sizeof t->key, 0) != (ssize_t)sizeof t->key) {
        int err = errno;
        cw__throttle_free(t);
        return -err;
    }
    *out = t;
    return CW_OK;
}

void cw__throttle_free(cw__throttle *t)
{
    if (!t)
        return;
    free(t->slots);
    explicit_bzero(t->key, sizeof t->key);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

uint64_t cw__throttle_overflowed(cw__throttle *t)
{
    pthread_mutex_lock(&t->mu);
    uint64_t n = t->overflowed;
    pthread_mutex_unlock(&t->mu);
    return n;
}

static int live(const cw__throttle *t, int64_t since, uint32_t fails, int64_t now)
{
    return fails > 0 && now - since < t->o.window_ms;
}

/* The live entry for id, or NULL. With create, a free or expired slot is
 * taken for it; NULL then means the table is full around id. A live
 * entry is never taken over: that is what makes a failing address stay
 * counted whatever arrives after it. */
static struct entry *find(cw__throttle *t, uint64_t id, int64_t now, int create)
{
    struct entry *spare = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        struct entry *e = &t->slots[(uint32_t)(id + i) & t->mask];
        int alive = live(t, e->since, e->fails, now);
        if (alive && e->id == id)
            return e;
        if (!alive && !spare)
            spare = e;
        if (!e->id)
            break;   /* never used: the key cannot be further on */
    }
    if (!create || !spare)
        return NULL;
    spare->id = id;
    spare->since = now;
    spare->fails = 0;
    return spare;
}

/* ---- keys ---- */

enum kind { K_PAIR = 'P', K_ADDR = 'A', K_NET = 'N', K_ACCOUNT = 'U' };

static int is_v4(const uint8_t addr[16])
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    return memcmp(addr, mapped, 12) == 0;
}

static void mask_prefix(const uint8_t addr[16], int bits, uint8_t out[16])
{
    memcpy(out, addr, 16);
    for (int i = 0; i < 16; i++) {
        int keep = bits - 8 * i;
        if (keep <= 0)
            out[i] = 0;
        else if (keep < 8)
            out[i] &= (uint8_t)(0xFF << (8 - keep));
    }
}

/* The ids of a login's four counters; net is 0 for IPv4 (an IPv4
 * address is its own network: grouping /24s would lump together the
 * unrelated customers of one provider). */
struct ids {
    uint64_t pair, addr, net, account;
};

static uint64_t id_of(cw__throttle *t, char kind, const uint8_t *a, size_t alen,
                      const char *acct, size_t len)
{
    uint8_t buf[1 + 16 + 256];
    if (len > sizeof buf - 17)
        len = sizeof buf - 17;   /* longer names are refused by the parser */
    buf[0] = (uint8_t)kind;
    memcpy(buf + 1, a, alen);
    memcpy(buf + 1 + alen, acct, len);
    return cw__siphash(t->key, buf, 1 + alen + len) | 1;   /* never 0 */
}

static void make_ids(cw__throttle *t, const uint8_t addr[16], const char *acct,
                     size_t len, struct ids *ids)
{
    uint8_t a[16], n[16];
    int v4 = is_v4(addr);
    mask_prefix(addr, v4 ? 128 : t->o.v6_addr_prefix, a);
    ids->pair = id_of(t, K_PAIR, a, 16, acct, len);
    ids->addr = id_of(t, K_ADDR, a, 16, "", 0);
    ids->account = id_of(t, K_ACCOUNT, a, 0, acct, len);
    ids->net = 0;
    if (!v4) {
        mask_prefix(addr, t->o.v6_net_prefix, n);
        ids->net = id_of(t, K_NET, n, 16, "", 0);
    }
}

static uint32_t fails_of(cw__throttle *t, uint64_t id, int64_t now)
{
    if (!id)
        return 0;
    struct entry *e = find(t, id, now, 0);
    return e ? e->fails : 0;
}

/* ---- the policy ---- */

static enum cw__thr check(cw__throttle *t, const uint8_t addr[16],
                          const char *account, size_t len, int64_t now)
{
    uint32_t lim = (uint32_t)t->o.addr_max;   /* not 0: the caller's test */
    struct ids ids;
    make_ids(t, addr, account, len, &ids);
    uint32_t pair = fails_of(t, ids.pair, now);
    uint32_t net = fails_of(t, ids.net, now);
    uint32_t acct = fails_of(t, ids.account, now);
    struct entry *ae = find(t, ids.addr, now, 0);
    uint32_t a = ae ? ae->fails : 0;
    enum cw__thr addr_reason = CW__THR_ADDR;
    if (!ae && live(t, t->overflow.since, t->overflow.fails, now)) {
        /* The table was full this window: every address it does not hold
         * shares the overflow bucket as its address count. */
        a = t->overflow.fails;
        addr_reason = CW__THR_FULL;
    }
    if (pair >= lim)
        return CW__THR_PAIR;
    if (acct >= (uint32_t)t->o.account_max)
        return CW__THR_ACCOUNT;
    /* Over the address or network limit, an account that has not failed
     * from this address is still checked (a user behind the attacker's
     * NAT can log in), for addr_max more failures; then nothing is. */
    uint32_t nlim = (uint32_t)t->o.net_max;
    if (a >= 2 * lim)
        return addr_reason;
    if (ids.net && net >= nlim + lim)
        return CW__THR_NET;
    if (a >= lim && pair > 0)
        return addr_reason;
    if (ids.net && net >= nlim && pair > 0)
        return CW__THR_NET;
    return CW__THR_OK;
}

static int count(cw__throttle *t, uint64_t id, int64_t now)
{
    if (!id)
        return 0;
    struct entry *e = find(t, id, now, 1);
    if (e) {
        if (e->fails < UINT32_MAX)
            e->fails++;
        return 0;
    }
    if (!live(t, t->overflow.since, t->overflow.fails, now)) {
        t->overflow.since = now;
        t->overflow.fails = 0;
        t->overflow_logged = 0;
    }
    if (t->overflow.fails < UINT32_MAX)
        t->overflow.fails++;
    t->overflowed++;
    return 1;
}

enum cw__thr cw__throttle_check(cw__throttle *t, const uint8_t addr[16],
                                const char *account, size_t len, int64_t now)
{
    /* Off (addr_max 0, fixed at creation): no table to look at, so no
     * lock (a pair per login is most of the cost of a login the throttle
     * does not judge; churn-counts.sh counts them). */
    if (t->o.addr_max == 0)
        return CW__THR_OK;
    pthread_mutex_lock(&t->mu);
    enum cw__thr v = check(t, addr, account, len, now);
    pthread_mutex_unlock(&t->mu);
    return v;
}

static int failed(cw__throttle *t, const uint8_t addr[16], const char *account,
                  size_t len, int64_t now)
{
    struct ids ids;
    make_ids(t, addr, account, len, &ids);
    /* The address first: of the four, its count matters most. An address
     * that did not fit counts once in the overflow bucket; the others
     * that did not fit are simply not counted. */
    int full = count(t, ids.addr, now);
    struct entry *e;
    if (ids.pair && (e = find(t, ids.pair, now, 1)) && e->fails < UINT32_MAX)
        e->fails++;
    if (ids.net && (e = find(t, ids.net, now, 1)) && e->fails < UINT32_MAX)
        e->fails++;
    if ((e = find(t, ids.account, now, 1)) && e->fails < UINT32_MAX)
        e->fails++;
    if (full && !t->overflow_logged) {
        t->overflow_logged = 1;
        return 1;
    }
    return 0;
}

int cw__throttle_failed(cw__throttle *t, const uint8_t addr[16],
                        const char *account, size_t len, int64_t now)
{
    if (t->o.addr_max == 0)
        return 0;   /* off: nothing is counted (no lock either) */
    pthread_mutex_lock(&t->mu);
    int first = failed(t, addr, account, len, now);
    pthread_mutex_unlock(&t->mu);
    return first;
}

const char *cw__throttle_name(enum cw__thr v)
{
    switch (v) {
    case CW__THR_OK: return "ok";
    case CW__THR_PAIR: return "account-from-address";
    case CW__THR_ADDR: return "address";
    case CW__THR_NET: return "network";
    case CW__THR_ACCOUNT: return "account";
    case CW__THR_FULL: return "table-full";
    }
    return "?";
}
