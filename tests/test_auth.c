/* test_auth.c - credentials of the reference server: crypt(3) hashes, bad
 * entries, and equal time for unknown and known users whatever methods
 * the file mixes. (The throttle is test_throttle.c.) */
#include "cwtest.h"
#include "../src/server/auth.h"

#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int check(cw__auth *a, const char *user, const char *pw)
{
    return cw__auth_check(a, NULL, user, strlen(user), pw, strlen(pw));
}

static void test_hashes(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    char y[256], six[256];
    assert_int_equal(cw_passwd_hash("pw one", NULL, y, sizeof y), CW_OK);
    assert_int_equal(cw_passwd_hash("pw two", "$6$", six, sizeof six), CW_OK);
    assert_true(strncmp(y, "$y$", 3) == 0);
    assert_true(strncmp(six, "$6$", 3) == 0);
    assert_int_equal(cw_passwd_hash("x", NULL, y + 200, 8), CW_ETOOLONG);
    assert_int_equal(cw__auth_add_hash(a, "yes", y), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "six", six), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "six", y), -EEXIST);
    assert_int_equal(cw__auth_add_hash(a, "bad", "not-a-hash"), CW_EINVAL);
    assert_int_equal(cw__auth_add_hash(a, "a:b", y), CW_EINVAL);
    assert_int_equal(cw__auth_add_hash(a, "", y), CW_EINVAL);
    assert_int_equal(cw__auth_count(a), 2);
    assert_int_equal(check(a, "yes", "pw one"), 1);
    assert_int_equal(check(a, "six", "pw two"), 1);
    assert_int_equal(check(a, "yes", "pw two"), 0);
    assert_int_equal(check(a, "yes", "pw on"), 0);
    assert_int_equal(check(a, "nobody", "pw one"), 0);
    assert_int_equal(check(a, "ye", "pw one"), 0);   /* no prefix match */
    cw__auth_free(a);
}

static void test_load_file(void **state)
{
    char path[] = "/tmp/cwtest-auth-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    char h[256];
    assert_int_equal(cw_passwd_hash("s3cret", "$6$", h, sizeof h), CW_OK);
    dprintf(fd, "# comment\n\nalice:%s\r\nbob:%s\n", h, h);
    close(fd);
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    int line = -1;
    assert_int_equal(cw__auth_load(a, path, &line), 2);
    assert_int_equal(line, 0);
    assert_int_equal(check(a, "alice", "s3cret"), 1);   /* CRLF stripped */
    cw__auth_free(a);
    fd = open(path, O_WRONLY | O_APPEND);
    dprintf(fd, "carol\n");
    close(fd);
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_load(a, path, &line), CW_EINVAL);
    assert_int_equal(line, 5);
    cw__auth_free(a);
    unlink(path);
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_load(a, path, &line), -ENOENT);
    assert_int_equal(line, 0);
    cw__auth_free(a);
}

/* A hash of pw with the given crypt(3) setting prefix and cost. */
static void make_hash(const char *prefix, unsigned long cost, const char *pw,
                      char *out, size_t size)
{
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    assert_non_null(crypt_gensalt_rn(prefix, cost, NULL, 0, setting, sizeof setting));
    struct crypt_data *cd = calloc(1, sizeof *cd);
    assert_non_null(cd);
    const char *h = crypt_rn(pw, setting, cd, sizeof *cd);
    assert_true(h && h[0] != '*' && strlen(h) < size);
    strcpy(out, h);
    free(cd);
}

static int cmp_i64(const void *x, const void *y)
{
    int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
    return (a > b) - (a < b);
}

static int64_t check_us(cw__auth *a, const char *user)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(check(a, user, "wrong password"), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
}

static int64_t median(int64_t *t, int n)
{
    qsort(t, (size_t)n, sizeof t[0], cmp_i64);
    return (t[(n - 1) / 2] + t[n / 2]) / 2;
}

/* One attempt: n interleaved triples (sha512 user, unknown, yescrypt
 * user, back to back, so that load from other work hits all three
 * alike); each triple gives its own ratios unknown/known, and the
 * attempt's ratios are their medians. A ratio of medians measured apart
 * lets a burst of load that lands on one series move it alone. */
static void timing_attempt(cw__auth *a, int n, double *r_fast, double *r_slow,
                           int64_t *m_none)
{
    int64_t none[40], q_fast[40], q_slow[40];
    assert_true(n <= 40);
    for (int i = 0; i < n; i++) {
        int64_t f = check_us(a, "fast");
        none[i] = check_us(a, "nobody");
        int64_t s = check_us(a, "slow");
        /* ratios in thousandths, to reuse the integer median */
        q_fast[i] = f > 0 ? none[i] * 1000 / f : 1000000;
        q_slow[i] = s > 0 ? none[i] * 1000 / s : 1000000;
    }
    *r_fast = (double)median(q_fast, n) / 1000.0;
    *r_slow = (double)median(q_slow, n) / 1000.0;
    *m_none = median(none, n);
}

/* A file that mixes a cheap method (sha512-crypt, 1,000 rounds) listed
 * first with a costlier one (yescrypt, cost 3): an unknown user takes as
 * long as either known user, so the time does not tell which names exist
 * (unpadded, the sha512 check is ~10 times faster: its ratio is ~10, far
 * outside the bounds in every attempt). A check on a machine loaded by
 * other work can be descheduled for a slice of tens of ms, the size of a
 * check: an attempt may land a ratio on 0.8 (seen once with 6 parallel
 * jobs on 2 cores), so up to 3 attempts run and one must be clean. */
static void test_timing_mixed_methods(void **state)
{
    char six[256], yes[256];
    make_hash("$6$", 1000, "pw", six, sizeof six);
    make_hash("$y$", 3, "pw", yes, sizeof yes);
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "fast", six), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "slow", yes), CW_OK);
    int64_t raw_fast = INT64_MAX;
    {
        struct crypt_data *cd = calloc(1, sizeof *cd);
        assert_non_null(cd);
        for (int i = 0; i < 3; i++) {   /* what a fast check costs unpadded */
            struct timespec t0, t1;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            crypt_rn("x", six, cd, sizeof *cd);
            clock_gettime(CLOCK_MONOTONIC, &t1);
            int64_t us = (t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000;
            raw_fast = us < raw_fast ? us : raw_fast;
        }
        free(cd);
    }
    int clean = 0;
    for (int attempt = 1; attempt <= 3 && !clean; attempt++) {
        double r_fast, r_slow;
        int64_t m_none;
        timing_attempt(a, 20, &r_fast, &r_slow, &m_none);
        clean = r_fast >= 0.8 && r_fast <= 1.25 && r_slow >= 0.8 && r_slow <= 1.25;
        print_message("attempt %d: unknown %lld us (sha512 unpadded %lld us); median "
                      "ratios unknown/sha512 %.2f, unknown/yescrypt %.2f%s\n",
                      attempt, (long long)m_none, (long long)raw_fast, r_fast, r_slow,
                      clean ? "" : " (outside 0.8..1.25)");
    }
    assert_true(clean);
    /* the good password still works for both, whatever the padding */
    assert_int_equal(check(a, "fast", "pw"), 1);
    assert_int_equal(check(a, "slow", "pw"), 1);
    cw__auth_free(a);
}

/* A table of cheap methods is timed three times, 100 ms or more apart,
 * and keeps its cheapest timing: until then the cost of a table of one
 * method is not settled (the server checks on the loop meanwhile). One
 * timing in a slow moment of this VM once sent a DES-only server's checks
 * to threads for good. A table mixing methods is settled at once (an
 * unpadded check on the loop would tell its users' methods apart), and so
 * is a table with a costly method: it is never timed on the asking
 * thread. */
static void test_cheap_table_timed_thrice(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "des", "abzlUXK5ed5rs"), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "des2", "cdzlUXK5ed5rs"), CW_OK);
    int settled = -1;
    int64_t first = cw__auth_cost_ns(a, &settled);
    assert_int_equal(settled, 0);
    assert_true(first > 0 && first < 1000000000);
    assert_int_equal(cw__auth_cost_ns(a, &settled), first);   /* not due yet */
    assert_int_equal(settled, 0);
    int64_t last = first;
    for (int timing = 2; timing <= 3; timing++) {
        cwt_sleep_ms(110);
        int64_t ns = cw__auth_cost_ns(a, &settled);
        assert_int_equal(settled, timing == 3);
        assert_true(ns > 0 && ns <= last);
        last = ns;
    }
    cwt_sleep_ms(110);
    assert_int_equal(cw__auth_cost_ns(a, &settled), last);   /* no more timings */
    assert_int_equal(settled, 1);
    /* a new user: timed again, from the start; now a mix, so settled */
    assert_int_equal(cw__auth_add_hash(a, "md5", "$1$abcdefgh$IQtUouv7y7Q9dRWkQEPCc."), CW_OK);
    assert_int_equal(cw__auth_calibrated(a), 0);
    cw__auth_cost_ns(a, &settled);
    assert_int_equal(settled, 1);
    assert_int_equal(cw__auth_calibrated(a), 1);
    assert_int_equal(check(a, "des", "s3cret"), 0);
    assert_int_equal(check(a, "des", "pw"), 1);   /* crypt("pw", "ab") */
    /* the DES forms have no "$id$": their shape is checked */
    assert_int_equal(cw__auth_add_hash(a, "short", "abzlUXK5ed5r"), CW_EINVAL);
    assert_int_equal(cw__auth_add_hash(a, "dash", "ab-lUXK5ed5rs"), CW_EINVAL);
    assert_int_equal(cw__auth_add_hash(a, "bsdi", "_/...abcdfsfCUuMO5h"), CW_EINVAL);
    /* longer than crypt makes: crypt would ignore the tail */
    char longer[CRYPT_OUTPUT_SIZE + 8] = "$1$abcdefgh$";
    memset(longer + 12, 'a', sizeof longer - 13);
    longer[sizeof longer - 1] = '\0';
    assert_int_equal(cw__auth_add_hash(a, "long", longer), CW_EINVAL);
    cw__auth_free(a);

    /* BSDi's DES is a method of its own, and each rounds count too */
    const char *mixes[][2] = {{"abzlUXK5ed5rs", "_/...abcdfsfCUuMO5hc"},
                              {"_/...abcdfsfCUuMO5hc", "_J9..abcdfsfCUuMO5hc"}};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(cw__auth_new(&a), CW_OK);
        assert_int_equal(cw__auth_add_hash(a, "one", mixes[i][0]), CW_OK);
        assert_int_equal(cw__auth_add_hash(a, "two", mixes[i][1]), CW_OK);
        cw__auth_cost_ns(a, &settled);
        assert_int_equal(settled, 1);
        cw__auth_free(a);
    }

    char yes[256];
    make_hash("$y$", 3, "pw", yes, sizeof yes);
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "des", "abzlUXK5ed5rs"), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "slow", yes), CW_OK);
    assert_int_equal(cw__auth_cost_ns(a, &settled), INT64_MAX);
    assert_int_equal(settled, 1);
    cw__auth_free(a);
}

/* Time table a as if every one of its first three timings came out at
 * ns (a slow spell lasting through them): two re-timings 100 ms apart. */
static void time_as(cw__auth *a, int64_t ns, int timing)
{
    struct cw__authcal c;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    assert_non_null(cd);
    assert_int_equal(cw__auth_calib_prepare(a, &c), 1);
    assert_int_equal(c.retime, timing > 1);
    cw__auth_calib_run(&c, cd);
    for (int i = 0; i < c.n; i++)
        c.ns[i] = ns;
    cw__auth_calib_publish(a, &c);
    free(cd);
}

/* A slow spell through all three timings settles a DES table's cost in
 * the band a slow moment explains, and its checks go to threads: it is
 * timed again a second later (and keeps the cheaper timing), while a
 * cost above the band is the method's own and is never timed again. */
static void test_dear_cheap_table_rechecked(void **state)
{
    cw__auth *in, *above;
    assert_int_equal(cw__auth_new(&in), CW_OK);
    assert_int_equal(cw__auth_new(&above), CW_OK);
    assert_int_equal(cw__auth_add_hash(in, "des", "abzlUXK5ed5rs"), CW_OK);
    assert_int_equal(cw__auth_add_hash(above, "des", "abzlUXK5ed5rs"), CW_OK);
    int64_t band = CW__AUTH_SLOW_MOMENT * CW__AUTH_INLINE_NS;
    int64_t over = 2 * CW__AUTH_SLOW_MOMENT * CW__AUTH_INLINE_NS;
    for (int timing = 1; timing <= 3; timing++) {
        if (timing > 1)
            cwt_sleep_ms(110);
        time_as(in, band, timing);
        time_as(above, over, timing);
    }
    int settled = -1;
    assert_int_equal(cw__auth_cost_ns(in, &settled), band);   /* not due yet */
    assert_int_equal(settled, 1);
    assert_int_equal(cw__auth_cost_ns(above, &settled), over);
    assert_int_equal(settled, 1);
    /* DES takes microseconds (~40 under valgrind): timed again after
     * 1 s, then 2 s later; a slow moment through one timing is let pass */
    int64_t ns = band;
    for (int wait = 1100; wait <= 2100 && ns >= band; wait += 1000) {
        cwt_sleep_ms(wait);
        ns = cw__auth_cost_ns(in, &settled);
    }
    assert_true(ns > 0 && ns < band);
    assert_int_equal(settled, 1);
    assert_int_equal(cw__auth_cost_ns(above, &settled), over);
    assert_int_equal(check(in, "des", "pw"), 1);
    cw__auth_free(in);
    cw__auth_free(above);
}

/* Loops of --workers N that ask at once all time the new table: those
 * first timings only lower the cost, they are not the re-timings, which
 * must come 100 ms or more apart (auth.c). */
static void test_first_timings_at_once(void **state)
{
    cw__auth *a;
    assert_int_equal(cw__auth_new(&a), CW_OK);
    assert_int_equal(cw__auth_add_hash(a, "des", "abzlUXK5ed5rs"), CW_OK);
    struct cw__authcal c[3];
    struct crypt_data *cd = calloc(1, sizeof *cd);
    assert_non_null(cd);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cw__auth_calib_prepare(a, &c[i]), 1);
    for (int i = 0; i < 3; i++) {
        cw__auth_calib_run(&c[i], cd);
        cw__auth_calib_publish(a, &c[i]);
    }
    free(cd);
    int settled = -1;
    int64_t ns = cw__auth_cost_ns(a, &settled);
    assert_int_equal(settled, 0);
    int64_t least = c[0].ns[0];
    for (int i = 1; i < 3; i++)
        least = c[i].ns[0] < least ? c[i].ns[0] : least;
    assert_int_equal(ns, least);   /* the cheapest of the three */
    cw__auth_free(a);
}

/* A login's look-up takes no lock while users are added (the table grows
 * through several arrays): a look-up finds every user added before it
 * started, with its own hash. ASan catches a read of a freed array. The
 * adding thread only records what went wrong (cmocka's assertions are
 * for the main thread alone). */
#define ADD_USERS 1000
struct adder {
    cw__auth *a;
    _Atomic int added;   /* users 0..added-1 are in the table */
    _Atomic int done;    /* the adder has stopped */
    int failed_at, rc;   /* the user it could not add (-1: none), and why */
};

static void *add_users(void *arg)
{
    struct adder *ad = arg;
    for (int i = 0; i < ADD_USERS && ad->failed_at < 0; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%d", i);
        int rc = cw__auth_add_hash(ad->a, name, "abzlUXK5ed5rs");
        if (rc != CW_OK) {
            ad->failed_at = i;
            ad->rc = rc;
        } else {
            atomic_store(&ad->added, i + 1);
        }
    }
    atomic_store(&ad->done, 1);
    return NULL;
}

static void test_lookup_while_adding(void **state)
{
    struct adder ad = {.added = 0, .done = 0, .failed_at = -1};
    assert_int_equal(cw__auth_new(&ad.a), CW_OK);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, add_users, &ad), 0);
    int lookups = 0, last, stopped;
    do {
        stopped = atomic_load(&ad.done);   /* then added is final */
        last = atomic_load(&ad.added);
        for (int i = last - 1; i >= 0 && i >= last - 3; i--) {
            char name[16];
            int n = snprintf(name, sizeof name, "u%d", i);
            struct cw__authset set;
            cw__auth_lookup(ad.a, name, (size_t)n, 2, &set);
            assert_non_null(set.stored);
            assert_string_equal(set.stored, "abzlUXK5ed5rs");
            lookups++;
        }
    } while (!stopped);
    assert_int_equal(pthread_join(t, NULL), 0);
    if (ad.failed_at >= 0)
        print_message("adding user u%d failed: %d\n", ad.failed_at, ad.rc);
    assert_int_equal(ad.failed_at, -1);
    assert_int_equal(cw__auth_count(ad.a), ADD_USERS);
    print_message("%d look-ups while %d users were added\n", lookups, ADD_USERS);
    assert_true(lookups > 0);
    cw__auth_free(ad.a);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_hashes),
        CWT_TEST(test_load_file),
        CWT_TEST(test_timing_mixed_methods),
        CWT_TEST(test_cheap_table_timed_thrice),
        CWT_TEST(test_first_timings_at_once),
        CWT_TEST(test_dear_cheap_table_rechecked),
        CWT_TEST(test_lookup_while_adding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
