/* throttle.c - failed logins counted per (address, account), address,
 * IPv6 network and account, in one fixed-size open-addressing table keyed
 * by a secret SipHash key. An attacker can neither aim many addresses at
 * one bucket (the key is random per start) nor push a failing entry out
 * (entries with failures in their window, or with checks in flight, are
 * never reused); what does not fit goes to one shared overflow bucket.
 *
 * A check in flight holds its keys as if it had failed already: a login
 * is checked only if the verdict would still let it through with every
 * check in flight on its keys failed. So guesses sent at once get no more
 * checks than guesses sent one by one, and a login that only the checks
 * in flight stand in the way of waits for them (CW__THR_WAIT) rather than
 * being refused: they may pass. */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "throttle.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define PROBE 16   /* slots looked at per key: bounded work per login */

struct entry {
    uint64_t id;       /* keyed hash of kind and key; 0 = never used */
    int64_t since;     /* first failure of the current window */
    uint32_t fails;    /* of the window that began at since */
    uint32_t held;     /* checks in flight */
};

struct window {
    int64_t since;
    uint32_t fails;
    uint32_t held;     /* checks in flight of addresses held here */
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
    _Atomic uint64_t ends;     /* holds ended: written under mu */
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

/* Failures that count now: none once the window is over, even while a
 * hold keeps the entry. */
static uint32_t fails_now(const cw__throttle *t, int64_t since, uint32_t fails,
                          int64_t now)
{
    return live(t, since, fails, now) ? fails : 0;
}

/* One more failure, starting a window if none is running. */
static void bump(cw__throttle *t, int64_t *since, uint32_t *fails, int64_t now)
{
    if (!live(t, *since, *fails, now)) {
        *since = now;
        *fails = 0;
    }
    if (*fails < UINT32_MAX)
        (*fails)++;
}

/* The entry in use for id, or NULL. With create, a slot in use by no key
 * is taken for it; NULL then means the table is full around id. An entry
 * in use - failures in its window, or checks in flight - is never taken
 * over: that is what makes a failing address stay counted whatever
 * arrives after it, and a hold find its entry again. */
static struct entry *find(cw__throttle *t, uint64_t id, int64_t now, int create)
{
    struct entry *spare = NULL;
    for (uint32_t i = 0; i < PROBE; i++) {
        struct entry *e = &t->slots[(uint32_t)(id + i) & t->mask];
        int used = e->held || live(t, e->since, e->fails, now);
        if (used && e->id == id)
            return e;
        if (!used && !spare)
            spare = e;
        if (!e->id)
            break;   /* never used: the key cannot be further on */
    }
    if (!create || !spare)
        return NULL;
    spare->id = id;
    spare->since = now;
    spare->fails = 0;
    spare->held = 0;
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

/* The ids of a login's four counters, in a hold's order; net is 0 for
 * IPv4 (an IPv4 address is its own network: grouping /24s would lump
 * together the unrelated customers of one provider). The address first:
 * of the four its count matters most, so in a table nearly full it takes
 * a free slot before the others. */
enum { ID_ADDR, ID_PAIR, ID_NET, ID_ACCOUNT, NIDS };
#define HELD_OVERFLOW (1u << NIDS)   /* the address holds the bucket */
_Static_assert(sizeof ((struct cw__thr_hold *)0)->id == NIDS * sizeof(uint64_t),
               "a hold has one id per counter");

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
                     size_t len, uint64_t id[NIDS])
{
    uint8_t a[16], n[16];
    int v4 = is_v4(addr);
    mask_prefix(addr, v4 ? 128 : t->o.v6_addr_prefix, a);
    id[ID_PAIR] = id_of(t, K_PAIR, a, 16, acct, len);
    id[ID_ADDR] = id_of(t, K_ADDR, a, 16, "", 0);
    id[ID_ACCOUNT] = id_of(t, K_ACCOUNT, a, 0, acct, len);
    id[ID_NET] = 0;
    if (!v4) {
        mask_prefix(addr, t->o.v6_net_prefix, n);
        id[ID_NET] = id_of(t, K_NET, n, 16, "", 0);
    }
}

/* ---- the policy ---- */

/* A login's four counts (failures, or failures and checks in flight);
 * addr_reason: CW__THR_FULL when the address is counted in the overflow
 * bucket. */
struct counts {
    uint32_t n[NIDS];
    enum cw__thr addr_reason;
};

static enum cw__thr verdict(cw__throttle *t, const uint64_t id[NIDS],
                            const struct counts *c)
{
    uint32_t lim = (uint32_t)t->o.addr_max;   /* not 0: the caller's test */
    uint32_t pair = c->n[ID_PAIR], a = c->n[ID_ADDR], net = c->n[ID_NET];
    if (pair >= lim)
        return CW__THR_PAIR;
    if (c->n[ID_ACCOUNT] >= (uint32_t)t->o.account_max)
        return CW__THR_ACCOUNT;
    /* Over the address or network limit, an account that has not failed
     * from this address is still checked (a user behind the attacker's
     * NAT can log in), for addr_max more failures; then nothing is. */
    uint32_t nlim = (uint32_t)t->o.net_max;
    if (a >= 2 * lim)
        return c->addr_reason;
    if (id[ID_NET] && net >= nlim + lim)
        return CW__THR_NET;
    if (a >= lim && pair > 0)
        return c->addr_reason;
    if (id[ID_NET] && net >= nlim && pair > 0)
        return CW__THR_NET;
    return CW__THR_OK;
}

/* The verdict on the failures; if they allow a check, CW__THR_WAIT unless
 * the failures and the checks in flight together do too. */
static enum cw__thr judge(cw__throttle *t, const uint64_t id[NIDS], int64_t now)
{
    struct counts f = {.addr_reason = CW__THR_ADDR}, h;
    uint32_t held[NIDS] = {0};
    for (int i = 0; i < NIDS; i++) {
        struct entry *e = id[i] ? find(t, id[i], now, 0) : NULL;
        f.n[i] = e ? fails_now(t, e->since, e->fails, now) : 0;
        held[i] = e ? e->held : 0;
        if (i == ID_ADDR && !e && (live(t, t->overflow.since, t->overflow.fails, now) ||
                                   t->overflow.held)) {
            /* The table was full this window (or is, for checks in
             * flight): every address it does not hold shares the
             * overflow bucket as its address count. */
            f.n[i] = fails_now(t, t->overflow.since, t->overflow.fails, now);
            held[i] = t->overflow.held;
            f.addr_reason = CW__THR_FULL;
        }
    }
    enum cw__thr v = verdict(t, id, &f);
    if (v != CW__THR_OK)
        return v;
    h = f;
    for (int i = 0; i < NIDS; i++)
        h.n[i] += held[i];   /* no wrap: each is under its limit, < 2^31 */
    return verdict(t, id, &h) == CW__THR_OK ? CW__THR_OK : CW__THR_WAIT;
}

/* Hold each key; an address the table has no room for holds the overflow
 * bucket, where its failure would go. The others that do not fit are
 * not held (nor, if they fail, counted, unless there is room by then). */
static void hold(cw__throttle *t, struct cw__thr_hold *h, int64_t now)
{
    for (int i = 0; i < NIDS; i++) {
        if (!h->id[i])
            continue;
        struct entry *e = find(t, h->id[i], now, 1);
        if (e) {
            e->held++;   /* no wrap: judge let it in under a limit */
            h->held |= (uint8_t)(1u << i);
        } else if (i == ID_ADDR) {
            t->overflow.held++;
            h->held |= HELD_OVERFLOW;
        }
    }
}

/* The verdict on a login, and with take a hold on its keys when it may
 * be checked. *h is cleared unless a hold was taken. */
static enum cw__thr ask(cw__throttle *t, const uint8_t addr[16], const char *account,
                        size_t len, int64_t now, struct cw__thr_hold *h, int take)
{
    memset(h, 0, sizeof *h);
    /* Off (addr_max 0, fixed at creation): no table to look at, so no
     * lock (a pair per login is most of the cost of a login the throttle
     * does not judge; churn-counts.sh counts them). */
    if (t->o.addr_max == 0)
        return CW__THR_OK;
    make_ids(t, addr, account, len, h->id);   /* outside the lock */
    pthread_mutex_lock(&t->mu);
    enum cw__thr v = judge(t, h->id, now);
    if (v == CW__THR_OK && take)
        hold(t, h, now);
    pthread_mutex_unlock(&t->mu);
    if (!h->held)
        memset(h, 0, sizeof *h);
    return v;
}

enum cw__thr cw__throttle_begin(cw__throttle *t, const uint8_t addr[16],
                                const char *account, size_t len, int64_t now,
                                struct cw__thr_hold *h)
{
    return ask(t, addr, account, len, now, h, 1);
}

enum cw__thr cw__throttle_check(cw__throttle *t, const uint8_t addr[16],
                                const char *account, size_t len, int64_t now)
{
    struct cw__thr_hold h;
    return ask(t, addr, account, len, now, &h, 0);
}

uint64_t cw__throttle_ends(cw__throttle *t)
{
    return atomic_load_explicit(&t->ends, memory_order_acquire);
}

/* A failure of an address the table could not hold. 1: the first of the
 * window, to be logged. */
static int overflow_failed(cw__throttle *t, int64_t now)
{
    if (!live(t, t->overflow.since, t->overflow.fails, now))
        t->overflow_logged = 0;
    bump(t, &t->overflow.since, &t->overflow.fails, now);
    t->overflowed++;
    if (t->overflow_logged)
        return 0;
    t->overflow_logged = 1;
    return 1;
}

static int end(cw__throttle *t, const struct cw__thr_hold *h, int failed, int64_t now)
{
    int first = 0;
    for (int i = 0; i < NIDS; i++) {
        if (!h->id[i])
            continue;
        struct entry *e = NULL;
        if (h->held & (1u << i)) {
            e = find(t, h->id[i], now, 0);   /* kept for us by the hold */
            if (e && e->held)
                e->held--;
        } else if (i == ID_ADDR) {   /* held the overflow bucket */
            if (t->overflow.held)
                t->overflow.held--;
            if (failed)
                first = overflow_failed(t, now);
            continue;
        } else if (failed) {
            e = find(t, h->id[i], now, 1);
        }
        if (failed && e)
            bump(t, &e->since, &e->fails, now);
    }
    return first;
}

int cw__throttle_end(cw__throttle *t, struct cw__thr_hold *h, enum cw__thr_end how,
                     int64_t now)
{
    if (!h->held)
        return 0;   /* off (no hold taken), or ended already */
    pthread_mutex_lock(&t->mu);
    int first = end(t, h, how == CW__THR_FAILED, now);
    atomic_fetch_add_explicit(&t->ends, 1, memory_order_release);
    pthread_mutex_unlock(&t->mu);
    memset(h, 0, sizeof *h);
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
    case CW__THR_WAIT: return "wait";
    }
    return "?";
}
