/* test_throttle.c - the login throttle as a pure function of (address,
 * account, now): how many password checks each attack gets, that a user
 * behind an attacker's address still gets in as documented, and what a
 * full table does. Every "check" below is a login the throttle let
 * through to the password check, followed by a failure. */
#include "cwtest.h"
#include "../src/server/throttle.h"

#include <stdio.h>
#include <string.h>

#define T0 1000000   /* any start time: the module has no clock */

static void v4(uint8_t a[16], uint32_t host)
{
    memset(a, 0, 16);
    a[10] = a[11] = 0xFF;
    a[12] = (uint8_t)(host >> 24);
    a[13] = (uint8_t)(host >> 16);
    a[14] = (uint8_t)(host >> 8);
    a[15] = (uint8_t)host;
}

/* 2001:db8:<net48>:<sub16>::<low> */
static void v6(uint8_t a[16], uint16_t sub, uint32_t low)
{
    static const uint8_t base[6] = {0x20, 0x01, 0x0d, 0xb8, 0x00, 0x01};
    memset(a, 0, 16);
    memcpy(a, base, 6);
    a[6] = (uint8_t)(sub >> 8);
    a[7] = (uint8_t)sub;
    a[12] = (uint8_t)(low >> 24);
    a[13] = (uint8_t)(low >> 16);
    a[14] = (uint8_t)(low >> 8);
    a[15] = (uint8_t)low;
}

/* A login let through and failed: 1 if it was let through; *first: 1
 * if its failure was the window's first to overflow. */
static int attempt_full(cw__throttle *t, const uint8_t a[16], const char *acct,
                        int64_t now, int *first)
{
    struct cw__thr_hold h;
    *first = 0;
    if (cw__throttle_begin(t, a, acct, strlen(acct), now, &h) != CW__THR_OK)
        return 0;
    *first = cw__throttle_end(t, &h, CW__THR_FAILED, now);
    return 1;
}

/* One failed login attempt: 1 if the password was checked. */
static int attempt(cw__throttle *t, const uint8_t a[16], const char *acct, int64_t now)
{
    int first;
    return attempt_full(t, a, acct, now, &first);
}

static cw__throttle *make(int addr_max, int account_max, int slots)
{
    struct cw__throttle_opts o;
    cw__throttle_opts_init(&o, addr_max, 60000);
    if (account_max)
        o.account_max = account_max;
    if (slots)
        o.slots = slots;
    cw__throttle *t = NULL;
    assert_int_equal(cw__throttle_new(&o, &t), CW_OK);
    return t;
}

static void test_siphash_vector(void **state)
{
    /* The reference vector of the SipHash paper (key 00..0f, message
     * 00..0e). */
    uint8_t key[16], msg[15];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (uint8_t)i;
    assert_true(cw__siphash(key, msg, 15) == 0xa129ca6149be45e5ull);
    assert_true(cw__siphash(key, msg, 0) == 0x726fdb47dd0e0e31ull);
}

/* One address: 5 guesses at one account; trying other accounts, 10 in
 * all; then nothing, not even the right password, until the window ends. */
static void test_one_address(void **state)
{
    cw__throttle *t = make(5, 1000, 0);
    uint8_t a[16];
    v4(a, 0x0a000001);
    int n = 0;
    for (int i = 0; i < 100; i++)
        n += attempt(t, a, "alice", T0 + i);
    assert_int_equal(n, 5);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0), CW__THR_PAIR);
    char name[32];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "user%d", i);
        n += attempt(t, a, name, T0 + i);
    }
    print_message("one address: %d checks (configured: 5 per account, 10 in all)\n", n);
    assert_int_equal(n, 10);
    assert_int_equal(cw__throttle_check(t, a, "fresh", 5, T0 + 59999), CW__THR_ADDR);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0 + 60000 + 99), CW__THR_OK);
    cw__throttle_free(t);
    /* 0 disables */
    t = make(0, 0, 0);
    for (int i = 0; i < 50; i++)
        assert_int_equal(attempt(t, a, "alice", T0), 1);
    cw__throttle_free(t);
}

/* The victim behind the attacker's NAT address: the attacker's failures
 * on alice and a few other names limit the address, yet bob, who has not
 * failed from it, is still checked (his right password works); alice is
 * not. Once the address has used its second allowance too, nobody from
 * it is checked: the documented limit of the trade-off. */
static void test_victim_behind_nat(void **state)
{
    cw__throttle *t = make(5, 1000, 0);
    uint8_t nat[16], other[16];
    v4(nat, 0xc0000207);
    v4(other, 0xc0000208);
    int n = 0;
    for (int i = 0; i < 20; i++)
        n += attempt(t, nat, "alice", T0);
    n += attempt(t, nat, "carol", T0) + attempt(t, nat, "dave", T0);
    assert_int_equal(n, 7);
    assert_int_equal(cw__throttle_check(t, nat, "bob", 3, T0), CW__THR_OK);
    assert_int_equal(cw__throttle_check(t, nat, "alice", 5, T0), CW__THR_PAIR);
    assert_int_equal(cw__throttle_check(t, nat, "carol", 5, T0), CW__THR_ADDR);
    /* alice from elsewhere is still checked: the pair limit is per address */
    assert_int_equal(cw__throttle_check(t, other, "alice", 5, T0), CW__THR_OK);
    n += attempt(t, nat, "erin", T0) + attempt(t, nat, "frank", T0) +
         attempt(t, nat, "grace", T0) + attempt(t, nat, "heidi", T0);
    assert_int_equal(n, 10);
    assert_int_equal(cw__throttle_check(t, nat, "bob", 3, T0), CW__THR_ADDR);
    cw__throttle_free(t);
}

/* 300 addresses rotating over one account: the account limit (20) holds
 * however many addresses guess; rotating over fresh names, each address
 * gets its 10 and no more. */
static void test_300_address_rotation(void **state)
{
    cw__throttle *t = make(5, 20, 0);
    uint8_t a[16];
    int n = 0;
    for (int round = 0; round < 8; round++)
        for (uint32_t i = 0; i < 300; i++) {
            v4(a, 0x0a010000 + i);
            n += attempt(t, a, "alice", T0 + round);
        }
    print_message("300 addresses x 8 guesses at one account: %d checks (limit 20)\n", n);
    assert_int_equal(n, 20);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0), CW__THR_ACCOUNT);
    cw__throttle_free(t);
    t = make(5, 20, 0);
    n = 0;
    char name[32];
    for (int round = 0; round < 20; round++)
        for (uint32_t i = 0; i < 300; i++) {
            v4(a, 0x0a010000 + i);
            snprintf(name, sizeof name, "u%d-%u", round, i);
            n += attempt(t, a, name, T0 + round);
        }
    print_message("300 addresses x 20 fresh names: %d checks (limit 300 x 10)\n", n);
    assert_int_equal(n, 3000);
    assert_true(cw__throttle_overflowed(t) == 0);
    cw__throttle_free(t);
}

/* IPv6: addresses of one /64 are one client; /64s of one /48 share the
 * network's 20 (+5 for accounts not yet failed from a /64). */
static void test_v6_rotation(void **state)
{
    cw__throttle *t = make(5, 1000, 0);
    uint8_t a[16];
    char name[32];
    int n = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        v6(a, 7, i * 7919);
        snprintf(name, sizeof name, "u%u", i);
        n += attempt(t, a, name, T0);
    }
    print_message("1000 addresses of one /64: %d checks (limit 10)\n", n);
    assert_int_equal(n, 10);
    n = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        v6(a, (uint16_t)(100 + i), 1);
        snprintf(name, sizeof name, "w%u", i);
        n += attempt(t, a, name, T0);
    }
    /* the /48 already had 10 failures from the first /64 */
    print_message("1000 /64s of one /48: %d more checks (limit 20 + 5 - 10)\n", n);
    assert_int_equal(n, 15);
    n = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        v6(a, (uint16_t)(2000 + i), 1);
        n += attempt(t, a, "root", T0);
    }
    assert_int_equal(n, 0);   /* every /64 is new, but the /48 is spent */
    cw__throttle_free(t);
    /* The network prefix is configurable: with /56, each /56 is its own */
    struct cw__throttle_opts o;
    cw__throttle_opts_init(&o, 5, 60000);
    o.account_max = 100000;
    o.v6_net_prefix = 56;
    assert_int_equal(cw__throttle_new(&o, &t), CW_OK);
    n = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        v6(a, (uint16_t)i, 1);   /* 2000 /64s over 8 /56s */
        snprintf(name, sizeof name, "x%u", i);
        n += attempt(t, a, name, T0);
    }
    print_message("2000 /64s over 8 /56s (net /56): %d checks (limit 8 x 25)\n", n);
    assert_int_equal(n, 8 * 25);
    cw__throttle_free(t);
    o.v6_net_prefix = 65;   /* longer than the address prefix */
    assert_int_equal(cw__throttle_new(&o, &t), CW_EINVAL);
    o.v6_net_prefix = 48;
    o.account_max = 0;      /* would refuse every account */
    assert_int_equal(cw__throttle_new(&o, &t), CW_EINVAL);
}

/* Nine addresses cycling over one account in a small table where their
 * entries share slots: each still gets exactly its 5 (the unkeyed table
 * used to give 90/90 here), and nothing overflows. */
static void test_colliding_addresses(void **state)
{
    cw__throttle *t = make(5, 100000, 64);
    uint8_t a[16];
    int per[9] = {0}, n = 0;
    for (int round = 0; round < 10; round++)
        for (int i = 0; i < 9; i++) {
            v4(a, 0x0a020000 + (uint32_t)i * 256);
            int k = attempt(t, a, "alice", T0 + round);
            per[i] += k;
            n += k;
        }
    print_message("9 addresses x 10 guesses, 64-slot table: %d checks (limit 45)\n", n);
    for (int i = 0; i < 9; i++)
        assert_int_equal(per[i], 5);
    assert_true(cw__throttle_overflowed(t) == 0);
    cw__throttle_free(t);
}

/* A 16-slot table (every key probes all of it) filled by failing
 * addresses: entries with failures are never pushed out, so the first
 * addresses stay limited however many newcomers arrive; once one has
 * taken the last slot, the newcomers share one overflow budget (2 x 2 =
 * 4 checks), reported once; after the window everything is free again. */
static void test_table_full(void **state)
{
    cw__throttle *t = make(2, 100000, 16);
    uint8_t a[16];
    char name[32];
    int reported = 0, n = 0;
    for (uint32_t i = 0; i < 5; i++) {   /* 3 entries each: 15 of 16 */
        v4(a, 0x0a030000 + i);
        snprintf(name, sizeof name, "a%u", i);
        int first;
        assert_int_equal(attempt_full(t, a, name, T0, &first), 1);
        reported += first;
    }
    assert_int_equal(reported, 0);
    for (uint32_t i = 100; i < 2100; i++) {   /* 2,000 newcomers */
        v4(a, 0x0a030000 + i);
        snprintf(name, sizeof name, "n%u", i);
        int first;
        n += attempt_full(t, a, name, T0 + 1, &first);
        reported += first;
    }
    print_message("full table: 2000 newcomers got %d checks (overflow budget 4), "
                  "%llu failures overflowed\n", n,
                  (unsigned long long)cw__throttle_overflowed(t));
    assert_int_equal(n, 5);   /* one took the last free slot, 4 shared */
    assert_int_equal(reported, 1);
    v4(a, 0x0a030000 + 5000);
    assert_int_equal(cw__throttle_check(t, a, "z", 1, T0 + 2), CW__THR_FULL);
    /* the first five are still there, counting: a second failure of a0
     * limits the pair */
    v4(a, 0x0a030000);
    assert_int_equal(attempt(t, a, "a0", T0 + 3), 1);
    assert_int_equal(cw__throttle_check(t, a, "a0", 2, T0 + 3), CW__THR_PAIR);
    /* a window later, all entries and the overflow have expired */
    v4(a, 0x0a030000 + 6000);
    assert_int_equal(cw__throttle_check(t, a, "z", 1, T0 + 60004), CW__THR_OK);
    int first;
    assert_int_equal(attempt_full(t, a, "z", T0 + 60004, &first), 1);
    assert_int_equal(first, 0);
    cw__throttle_free(t);
}

/* ---- checks in flight ---- */

static int begin(cw__throttle *t, const uint8_t a[16], const char *acct, int64_t now,
                 struct cw__thr_hold *h)
{
    return (int)cw__throttle_begin(t, a, acct, strlen(acct), now, h);
}

/* 12 guesses at one account from one address arrive together (limit 3):
 * 3 are checked, 9 wait, not refused; when the 3 fail, the 9 are
 * refused: 3 failures in the window, as if they had come one by one. */
static void test_many_in_flight(void **state)
{
    cw__throttle *t = make(3, 1000, 0);
    uint8_t a[16];
    v4(a, 0x0a040001);
    struct cw__thr_hold h[12];
    int ok = 0, wait = 0;
    for (int i = 0; i < 12; i++) {
        int v = begin(t, a, "alice", T0, &h[i]);
        ok += v == CW__THR_OK;
        wait += v == CW__THR_WAIT;
        if (v != CW__THR_OK)
            assert_int_equal(h[i].held, 0);   /* nothing to end */
    }
    assert_int_equal(ok, 3);
    assert_int_equal(wait, 9);
    /* another account from the address: its own pair, the address's
     * 3 (+3) not spent even if the 3 fail */
    struct cw__thr_hold b;
    assert_int_equal(begin(t, a, "bob", T0, &b), CW__THR_OK);
    assert_int_equal(cw__throttle_end(t, &b, CW__THR_PASSED, T0), 0);
    uint64_t ends = cw__throttle_ends(t);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cw__throttle_end(t, &h[i], CW__THR_FAILED, T0 + 1), 0);
    assert_true(cw__throttle_ends(t) == ends + 3);   /* the waiters' cue */
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0 + 2), CW__THR_PAIR);
    /* ended twice, or a hold never taken: nothing more */
    assert_int_equal(cw__throttle_end(t, &h[0], CW__THR_FAILED, T0 + 2), 0);
    assert_int_equal(cw__throttle_end(t, &h[5], CW__THR_FAILED, T0 + 2), 0);
    assert_true(cw__throttle_ends(t) == ends + 3);
    assert_int_equal(cw__throttle_check(t, a, "bob", 3, T0 + 2), CW__THR_OK);
    cw__throttle_free(t);
}

/* Right passwords on many connections at once: they wait for each other
 * but each gets its check, and none counts as a failure. A cancelled
 * check gives its hold back likewise. */
static void test_success_and_cancel_release(void **state)
{
    cw__throttle *t = make(3, 1000, 0);
    uint8_t a[16];
    v4(a, 0x0a040002);
    struct cw__thr_hold h[3], x;
    for (int i = 0; i < 3; i++)
        assert_int_equal(begin(t, a, "alice", T0, &h[i]), CW__THR_OK);
    assert_int_equal(begin(t, a, "alice", T0, &x), CW__THR_WAIT);
    int checked = 3;
    for (int round = 0; round < 30; round++) {   /* 30 more, one at a time */
        struct cw__thr_hold *done = &h[round % 3];
        cw__throttle_end(t, done, round % 2 ? CW__THR_PASSED : CW__THR_CANCELLED, T0);
        assert_int_equal(begin(t, a, "alice", T0, done), CW__THR_OK);
        assert_int_equal(begin(t, a, "alice", T0, &x), CW__THR_WAIT);
        checked++;
    }
    for (int i = 0; i < 3; i++)
        cw__throttle_end(t, &h[i], CW__THR_PASSED, T0);
    print_message("33 logins of one account from one address, limit 3: %d checked, "
                  "no failure counted\n", checked);
    /* no failure was counted: 3 wrong ones are still checked */
    for (int i = 0; i < 3; i++)
        assert_int_equal(attempt(t, a, "alice", T0), 1);
    assert_int_equal(attempt(t, a, "alice", T0), 0);
    cw__throttle_free(t);
}

/* A failure ends its hold as a failure: with a limit of 1, one check in
 * flight makes the next wait; its failure makes the next refused. The
 * keys of other kinds are held too: an account guessed from many
 * addresses at once gets account_max checks, the rest wait. */
static void test_failure_converts(void **state)
{
    cw__throttle *t = make(1, 4, 0);
    uint8_t a[16];
    v4(a, 0x0a040003);
    struct cw__thr_hold h;
    assert_int_equal(begin(t, a, "alice", T0, &h), CW__THR_OK);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0), CW__THR_WAIT);
    cw__throttle_end(t, &h, CW__THR_FAILED, T0);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0), CW__THR_PAIR);
    struct cw__thr_hold m[10];
    int ok = 0, wait = 0;
    for (uint32_t i = 0; i < 10; i++) {
        v4(a, 0x0a050000 + i);
        int v = begin(t, a, "carol", T0, &m[i]);
        ok += v == CW__THR_OK;
        wait += v == CW__THR_WAIT;
    }
    assert_int_equal(ok, 4);
    assert_int_equal(wait, 6);
    for (int i = 0; i < 10; i++)
        cw__throttle_end(t, &m[i], CW__THR_FAILED, T0);   /* 6 of them: no-ops */
    v4(a, 0x0a050063);
    assert_int_equal(cw__throttle_check(t, a, "carol", 5, T0), CW__THR_ACCOUNT);
    cw__throttle_free(t);
}

/* Entries that hold checks in flight, with no failure yet, are not
 * taken over when the table fills with failing newcomers: the held
 * address still makes its next login wait, and its failure is counted
 * where it was held. Holds of newcomers that find no room hold the
 * overflow bucket, which limits newcomers as its failures would. */
static void test_hold_survives_full_table(void **state)
{
    cw__throttle *t = make(1, 100000, 16);
    uint8_t a[16], held[16];
    char name[32];
    v4(held, 0x0a060001);
    struct cw__thr_hold h;
    assert_int_equal(begin(t, held, "alice", T0, &h), CW__THR_OK);   /* 3 slots */
    int n = 0;
    for (uint32_t i = 0; i < 2000; i++) {
        v4(a, 0x0a070000 + i);
        snprintf(name, sizeof name, "n%u", i);
        n += attempt(t, a, name, T0 + 1);
    }
    print_message("full 16-slot table, one address holding a check: 2000 "
                  "newcomers got %d checks\n", n);
    assert_true(cw__throttle_overflowed(t) > 0);
    assert_int_equal(cw__throttle_check(t, held, "alice", 5, T0 + 2), CW__THR_WAIT);
    assert_int_equal(cw__throttle_end(t, &h, CW__THR_FAILED, T0 + 2), 0);
    assert_int_equal(cw__throttle_check(t, held, "alice", 5, T0 + 2), CW__THR_PAIR);
    /* newcomers while the overflow bucket is spent: refused */
    v4(a, 0x0a080000);
    assert_int_equal(cw__throttle_check(t, a, "z", 1, T0 + 3), CW__THR_FULL);
    cw__throttle_free(t);
    /* an address with no room holds the bucket: 2 x 1 newcomers in
     * flight at once, then the rest wait */
    t = make(1, 100000, 16);
    struct cw__thr_hold fill[5], over[4];
    for (uint32_t i = 0; i < 5; i++) {   /* 15 of 16 slots held */
        v4(a, 0x0a090000 + i);
        snprintf(name, sizeof name, "f%u", i);
        assert_int_equal(begin(t, a, name, T0, &fill[i]), CW__THR_OK);
    }
    int ok = 0, wait = 0;
    for (uint32_t i = 0; i < 4; i++) {
        v4(a, 0x0a0a0000 + i);
        snprintf(name, sizeof name, "o%u", i);
        int v = begin(t, a, name, T0, &over[i]);
        ok += v == CW__THR_OK;
        wait += v == CW__THR_WAIT;
    }
    /* one takes the last slot; two hold the bucket (its limit 2 x 1) */
    assert_int_equal(ok, 3);
    assert_int_equal(wait, 1);
    int reported = 0;
    for (int i = 0; i < 4; i++)
        reported += cw__throttle_end(t, &over[i], CW__THR_FAILED, T0);
    assert_int_equal(reported, 1);
    for (int i = 0; i < 5; i++)
        cw__throttle_end(t, &fill[i], CW__THR_CANCELLED, T0);
    cw__throttle_free(t);
}

/* The window ends while a check is in flight: the old failures stop
 * counting, the entry stays for the hold, and the hold's failure starts
 * the next window at its answer. */
static void test_window_with_holds(void **state)
{
    cw__throttle *t = make(3, 1000, 0);
    uint8_t a[16];
    v4(a, 0x0a0b0001);
    assert_int_equal(attempt(t, a, "alice", T0), 1);
    assert_int_equal(attempt(t, a, "alice", T0), 1);
    struct cw__thr_hold h;
    assert_int_equal(begin(t, a, "alice", T0 + 59000, &h), CW__THR_OK);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0 + 59000), CW__THR_WAIT);
    /* the window (60 s from T0) is over: only the hold counts */
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, T0 + 60000), CW__THR_OK);
    int64_t t1 = T0 + 61000;
    cw__throttle_end(t, &h, CW__THR_FAILED, t1);
    assert_int_equal(attempt(t, a, "alice", t1), 1);
    assert_int_equal(attempt(t, a, "alice", t1 + 1), 1);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, t1 + 59999), CW__THR_PAIR);
    assert_int_equal(cw__throttle_check(t, a, "alice", 5, t1 + 60000), CW__THR_OK);
    cw__throttle_free(t);
    /* off: every login is let in, no hold taken */
    t = make(0, 0, 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(begin(t, a, "alice", T0, &h), CW__THR_OK);
        assert_int_equal(h.held, 0);
    }
    cw__throttle_end(t, &h, CW__THR_FAILED, T0);
    cw__throttle_free(t);
}

/* Random interleavings of begins and ends over few addresses, /64s and
 * accounts, mostly begins (up to 64 checks in flight): the failures of a
 * window never pass any limit (pair 3, address 3 + 3, /48 12 + 3,
 * account 12), whatever arrives at once. 50 windows, each a fresh table
 * (a window is per table, the limits per window). */
static void test_random_interleaving(void **state)
{
    uint32_t rnd = 12345;
    int total = 0, waited = 0, most = 0;
    for (int run = 0; run < 50; run++) {
        cw__throttle *t = make(3, 12, 0);
        struct { struct cw__thr_hold h; int a, u; } fl[64];
        int nfl = 0, pair[6][5] = {{0}}, addr[6] = {0}, acct[5] = {0};
        for (int step = 0; step < 400; step++) {
            rnd = rnd * 1103515245u + 12345u;
            uint32_t r = rnd >> 8;
            if (nfl < 64 && r % 3) {
                int ai = (int)(r >> 2) % 6, ui = (int)(r >> 5) % 5;
                uint8_t a[16];
                if (ai < 3)
                    v4(a, 0x0a0c0000 + (uint32_t)ai);
                else
                    v6(a, (uint16_t)ai, 9);   /* three /64s of one /48 */
                char name[8];
                snprintf(name, sizeof name, "u%d", ui);
                int v = begin(t, a, name, T0, &fl[nfl].h);
                waited += v == CW__THR_WAIT;
                if (v == CW__THR_OK) {
                    fl[nfl].a = ai;
                    fl[nfl].u = ui;
                    nfl++;
                    most = nfl > most ? nfl : most;
                }
            } else if (nfl) {
                int k = (int)(r >> 2) % nfl;
                int how = (int)(r >> 9) % 3;
                cw__throttle_end(t, &fl[k].h, (enum cw__thr_end)how, T0);
                if (how == CW__THR_FAILED) {
                    pair[fl[k].a][fl[k].u]++;
                    addr[fl[k].a]++;
                    acct[fl[k].u]++;
                    total++;
                }
                fl[k] = fl[--nfl];
            }
        }
        for (int i = 0; i < 6; i++) {
            assert_true(addr[i] <= 6);
            for (int u = 0; u < 5; u++)
                assert_true(pair[i][u] <= 3);
        }
        for (int u = 0; u < 5; u++)
            assert_true(acct[u] <= 12);
        assert_true(addr[3] + addr[4] + addr[5] <= 15);
        for (int k = 0; k < nfl; k++)
            cw__throttle_end(t, &fl[k].h, CW__THR_CANCELLED, T0);
        cw__throttle_free(t);
    }
    print_message("50 windows x 400 random steps: %d failures, %d waits, up to %d "
                  "checks in flight\n", total, waited, most);
    assert_true(waited > 100 && most >= 10);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_siphash_vector),
        CWT_TEST(test_one_address),
        CWT_TEST(test_victim_behind_nat),
        CWT_TEST(test_300_address_rotation),
        CWT_TEST(test_v6_rotation),
        CWT_TEST(test_colliding_addresses),
        CWT_TEST(test_table_full),
        CWT_TEST(test_many_in_flight),
        CWT_TEST(test_success_and_cancel_release),
        CWT_TEST(test_failure_converts),
        CWT_TEST(test_hold_survives_full_table),
        CWT_TEST(test_window_with_holds),
        CWT_TEST(test_random_interleaving),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
