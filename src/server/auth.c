/* auth.c - credentials from crypt(3) hashes, checked so that the time
 * taken does not tell which user names exist, whatever mix of methods the
 * credentials file holds. (Throttling is throttle.c.) */
#define _GNU_SOURCE
#include "../net/internal.h"
#include "auth.h"

#include <closewise/server.h>
#include <crypt.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_USER 64
#define SLEEP_FLOOR_NS 100000   /* cw__auth_check: the shortest final sleep */
#define PAD_CPU_SHARE 4         /* cw__auth_pad: a sample counts at most this
                                   many times its CPU time */
#define RETIMES 2               /* cheap tables: timed this many more times */
#define RETIME_NS 100000000     /* ... at least this far apart */
#define RECHECK_NS 1000000000LL  /* a cheap table settled dear: timed again
                                    after this, then twice as long... */
#define RECHECK_MAX_NS (64 * RECHECK_NS)   /* ... up to this */

/* crypt(3)'s alphabet: DES salts and digests, BSDi's rounds */
static const char b64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

struct user {
    char name[MAX_USER + 1];
    char *hash;
};

/* Changes to the table, the calibration and the running cost happen
 * under mu, which only event loops (and whoever adds users) take, only
 * around bookkeeping, never around a hash: the check threads of
 * authpool.c run cw__auth_hash and cw__auth_calib_run alone, which read
 * only strings that never change, and take no lock at all. A login's
 * look-up takes no lock either: the table only grows, an entry is
 * written before nusers counts it, and an array outgrown stays allocated
 * (retired) until the table is freed, so a reader holding the old one
 * reads entries that are still there. */
struct cw__auth {
    pthread_mutex_t mu;
    _Atomic(struct user *) users;
    _Atomic int nusers;
    int cap;
    struct user *retired[40];   /* outgrown arrays: 8 << 39 is more than
                                   an int counts */
    int nretired;
    char *dummy;              /* setting for unknown users, no users */
    struct crypt_data *cd;    /* 32 KiB, for calls under mu: allocated
                                 once, not per call */
    unsigned gen;             /* users added so far */
    unsigned cal_gen;         /* gen when last calibrated (calibrated:
                                 cal_gen == gen) */
    _Atomic(const char *) slowest;   /* hash of the costliest method
                                        present: read without mu */
    size_t slowest_len;       /* its method prefix (method_len) */
    int64_t slow_ns;          /* running cost of that method */
    int64_t calib_ns;         /* its cost when timed: steady, unlike slow_ns,
                                 which a preempted check pushes up */
    int64_t cal_at;           /* when last timed */
    _Atomic int cheap;        /* every user's method is cheap_method():
                                 read without mu by cw__auth_cost_ns */
    int uniform;              /* every user has the first user's method */
    int64_t recheck_ns;       /* a cheap table settled dear: the wait
                                 before its next timing (timing_due) */
    _Atomic int64_t recheck_at;   /* cal_at + recheck_ns: read without mu */
    /* Read by every login without mu, in one load so that the two parts
     * always belong together: -1 while the table is not calibrated
     * (cal_gen != gen), else calib_ns << 2 | how many more timings a
     * table of cheap methods still wants (cw__auth_cost_ns says why).
     * Written under mu (set_state). */
    _Atomic int64_t state;
};

static void set_state(cw__auth *a, int64_t cost, int left)
{
    atomic_store(&a->state, cost < 0 ? -1 : cost << 2 | left);
}

int cw_passwd_hash(const char *password, const char *prefix, char *out,
                   size_t size)
{
    if (!password || !out || size == 0)
        return CW_EINVAL;
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    /* NULL prefix: libcrypt's preferred method (yescrypt); random salt
     * from the kernel. */
    if (!crypt_gensalt_rn(prefix, 0, NULL, 0, setting, sizeof setting))
        return errno ? -errno : CW_EINVAL;
    struct crypt_data *cd = calloc(1, sizeof *cd);
    if (!cd)
        return -ENOMEM;
    int rc = CW_OK;
    const char *h = crypt_rn(password, setting, cd, sizeof *cd);
    if (!h || h[0] == '*')
        rc = CW_EINVAL;
    else if (strlen(h) >= size)
        rc = CW_ETOOLONG;
    else
        strcpy(out, h);
    explicit_bzero(cd, sizeof *cd);
    free(cd);
    return rc;
}

int cw__auth_new(cw__auth **out)
{
    cw__auth *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->cd = calloc(1, sizeof *a->cd);
    if (!a->cd) {
        free(a);
        return -ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    a->cal_gen = a->gen - 1;   /* not calibrated */
    atomic_init(&a->state, -1);
    *out = a;
    return CW_OK;
}

void cw__auth_free(cw__auth *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->nusers; i++)
        free(a->users[i].hash);
    free(a->users);
    for (int i = 0; i < a->nretired; i++)
        free(a->retired[i]);
    free(a->dummy);
    explicit_bzero(a->cd, sizeof *a->cd);
    free(a->cd);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static int valid_name(const char *user)
{
    size_t n = strlen(user);
    if (n == 0 || n > MAX_USER)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)user[i];
        if (c <= ' ' || c == ':' || c == 0x7F)
            return 0;
    }
    return 1;
}

/* A hash crypt(3) accepts as a setting: hashing anything with it works,
 * and the result keeps the setting's method. The DES forms have no "$id$"
 * to compare, so their shape is checked instead: 13 characters for
 * traditional DES, 20 for BSDi's "_" form, all from crypt's alphabet
 * (crypt(3) takes almost any two characters as a DES salt). */
static int valid_hash(cw__auth *a, const char *hash)
{
    /* Longer than crypt ever makes: crypt would ignore the rest, and the
     * check threads hash a copy of at most this (authpool.c). */
    if (strlen(hash) >= CRYPT_OUTPUT_SIZE)
        return 0;
    if (hash[0] != '$') {
        size_t n = strlen(hash);
        if (n != (hash[0] == '_' ? 20u : 13u) ||
            strspn(hash + (hash[0] == '_'), b64) != n - (hash[0] == '_'))
            return 0;
    }
    const char *h = crypt_rn("", hash, a->cd, sizeof *a->cd);
    return h && h[0] != '*' && strncmp(h, hash, hash[0] == '$' ? 3 : 1) == 0;
}

static int cheap_method(const char *hash);
static int same_method(const char *x, const char *y);

static int add_hash(cw__auth *a, const char *user, const char *hash)
{
    if (!valid_name(user) || !valid_hash(a, hash))
        return CW_EINVAL;
    for (int i = 0; i < a->nusers; i++)
        if (!strcmp(a->users[i].name, user))
            return -EEXIST;
    int n = a->nusers;
    if (n == a->cap) {   /* not realloc: a look-up may be reading the old one */
        int cap = a->cap ? a->cap * 2 : 8;
        struct user *u = malloc((size_t)cap * sizeof *u);
        if (!u)
            return -ENOMEM;
        if (n)
            memcpy(u, a->users, (size_t)n * sizeof *u);
        if (a->users)
            a->retired[a->nretired++] = a->users;
        a->users = u;   /* before nusers counts an entry past the old array */
        a->cap = cap;
    }
    char *copy = strdup(hash);
    if (!copy)
        return -ENOMEM;
    struct user *u = &a->users[n];
    strcpy(u->name, user);
    u->hash = copy;
    a->nusers = n + 1;   /* after the entry is written */
    a->gen++;
    a->cheap = (n == 0 || a->cheap) && cheap_method(hash);
    a->uniform = n == 0 || (a->uniform && same_method(a->users[0].hash, hash));
    set_state(a, -1, 0);
    return CW_OK;
}

int cw__auth_add_hash(cw__auth *a, const char *user, const char *hash)
{
    if (!a || !user || !hash)
        return CW_EINVAL;
    pthread_mutex_lock(&a->mu);
    int rc = add_hash(a, user, hash);
    pthread_mutex_unlock(&a->mu);
    return rc;
}

int cw__auth_count(cw__auth *a)
{
    return a ? a->nusers : CW_EINVAL;
}

int cw__auth_load(cw__auth *a, const char *path, int *bad_line)
{
    *bad_line = 0;
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    char line[1024];
    int lineno = 0, added = 0, rc = CW_OK;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        line[strcspn(line, "\r\n")] = '\0';
        if (line[0] == '\0' || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon) {
            rc = CW_EINVAL;
        } else {
            *colon = '\0';
            rc = cw__auth_add_hash(a, line, colon + 1);
        }
        if (rc < 0) {
            *bad_line = lineno;
            break;
        }
        added++;
    }
    if (rc == CW_OK && ferror(f))
        rc = errno ? -errno : -EIO;   /* EISDIR says more than EIO */
    fclose(f);
    explicit_bzero(line, sizeof line);
    return rc < 0 ? rc : added;
}

/* Compare every byte whatever the first difference: the time taken
 * depends only on the lengths, which are public (the hash format). */
static int equal_ct(const char *x, const char *y)
{
    size_t nx = strlen(x), ny = strlen(y);
    unsigned char diff = (unsigned char)(nx != ny);
    for (size_t i = 0; i < nx; i++)
        diff |= (unsigned char)(x[i] ^ (i < ny ? y[i] : 0));
    return diff == 0;
}

/* ---- equal cost for every name ---- */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The part of a hash that fixes its cost: method and parameters without
 * salt and digest ("$6$rounds=5000$", "$y$j9T$", "$2b$10$"; "_" and the
 * rounds for BSDi's DES, "_J9.."; "" for traditional DES). */
static size_t method_len(const char *hash)
{
    if (hash[0] == '_')
        return 5;   /* valid_hash: 20 characters */
    const char *last = strrchr(hash, '$');
    if (!last)
        return 0;
    size_t n = (size_t)(last - hash);
    if (!strncmp(hash, "$2", 2))
        return n + 1;   /* bcrypt: salt and digest are one field */
    while (n > 0 && hash[n - 1] != '$')
        n--;
    return n;
}

static int same_method(const char *x, const char *y)
{
    size_t m = method_len(x);
    return m == method_len(y) && !strncmp(x, y, m);
}

/* Cheapest of three runs: spikes from other work only ever add time. */
static int64_t cost_of(struct crypt_data *cd, const char *setting)
{
    int64_t best = INT64_MAX;
    for (int i = 0; i < 3; i++) {
        int64_t t0 = now_ns();
        crypt_rn("closewise-calibration", setting, cd, sizeof *cd);
        int64_t d = now_ns() - t0;
        if (d < best)
            best = d;
    }
    return best;
}

/* Methods that cost microseconds (traditional DES, BSDi extended DES of
 * at most 1024 rounds, MD5, NTHASH): calibrated on the asking loop
 * itself, so a server with only these never starts a check thread. */
static int cheap_method(const char *hash)
{
    if (hash[0] == '_') {   /* "_" then the rounds: 4 chars, 6 bits each, low first */
        unsigned long rounds = 0;
        for (int i = 4; i >= 1; i--) {
            const char *c = hash[i] ? strchr(b64, hash[i]) : NULL;
            if (!c)
                return 0;
            rounds = rounds << 6 | (unsigned long)(c - b64);
        }
        return rounds <= 1024;
    }
    return hash[0] != '$' || !strncmp(hash, "$1$", 3) || !strncmp(hash, "$3$", 3);
}

/* Where every method present is cheap, calibrating costs microseconds:
 * done on the asking loop (cw__auth_cost_ns). Under mu. */
static int all_cheap(cw__auth *a)
{
    return a->nusers > 0 && a->cheap;
}

/* A cost that sends a cheap table's checks to threads, but that a slow
 * moment of the machine could have made of one that belongs on the loop
 * (cw__auth_cost_ns). */
static int dear_band(int64_t ns)
{
    return ns > CW__AUTH_INLINE_NS && ns <= CW__AUTH_SLOW_MOMENT * CW__AUTH_INLINE_NS;
}

/* A timing is due: the table changed, or a cheap one wants another
 * (cw__auth_cost_ns). Under mu. */
static int timing_due(cw__auth *a)
{
    if (a->cal_gen != a->gen)
        return 1;
    int64_t since = now_ns() - a->cal_at;
    if (atomic_load(&a->state) & 3)
        return since >= RETIME_NS;
    return all_cheap(a) && dear_band(a->calib_ns) && since >= a->recheck_ns;
}

/* Which settings to time: each distinct method present once (under mu).
 * The strings outlive the calibration: hashes are never freed or changed
 * while the table lives. */
int cw__auth_calib_prepare(cw__auth *a, struct cw__authcal *c)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_lock(&a->mu);
    c->gen = a->gen;
    int need = timing_due(a);
    c->retime = need && a->cal_gen == a->gen;
    if (c->retime)
        a->cal_at = now_ns();   /* another loop's re-timing waits its turn */
    c->need_dummy = a->nusers == 0 && !a->dummy;
    for (int i = -1; i < a->nusers && c->n < CW__AUTH_METHODS; i++) {
        const char *h = i < 0 ? a->dummy : a->users[i].hash;
        if (!h)
            continue;
        size_t m = method_len(h);
        int known = 0;
        for (int j = 0; j < c->n && !known; j++)
            known = method_len(c->setting[j]) == m && !strncmp(c->setting[j], h, m);
        if (!known)
            c->setting[c->n++] = h;
    }
    pthread_mutex_unlock(&a->mu);
    return need;
}

/* The hashes, on any thread, holding no lock: a thread preempted here
 * delays no loop (authpool.c). cd: the caller's. */
void cw__auth_calib_run(struct cw__authcal *c, struct crypt_data *cd)
{
    if (c->need_dummy && cw_passwd_hash("closewise-dummy", NULL, c->dummy,
                                        sizeof c->dummy) != CW_OK)
        c->dummy[0] = '\0';
    for (int i = 0; i < c->n; i++)
        c->ns[i] = cost_of(cd, c->setting[i]);
    if (c->dummy[0])
        c->dummy_ns = cost_of(cd, c->dummy);
    explicit_bzero(cd, sizeof *cd);
}

/* Remember the costliest method: unknown users are hashed with it, and
 * every check is padded to its cost. Dropped if users were added since
 * prepare: the next check calibrates again. A table timed again keeps
 * its cheapest timing. */
void cw__auth_calib_publish(cw__auth *a, const struct cw__authcal *c)
{
    pthread_mutex_lock(&a->mu);
    if (c->gen == a->gen) {
        if (c->dummy[0] && !a->dummy)
            a->dummy = strdup(c->dummy);
        const char *slowest = a->nusers ? a->users[0].hash : a->dummy;
        int64_t cost = 0;
        for (int i = 0; i <= c->n; i++) {
            const char *h = i < c->n ? c->setting[i] : a->dummy;
            int64_t ns = i < c->n ? c->ns[i] : c->dummy_ns;
            if (h && (i < c->n || c->dummy[0]) && ns > cost) {
                cost = ns;
                slowest = h;
            }
        }
        /* Only a timing prepare claimed as a re-timing counts as one: the
         * first timings of loops that asked at once only lower the cost. */
        int first = a->cal_gen != a->gen;
        int left = first ? (all_cheap(a) ? RETIMES : 0) : (int)(atomic_load(&a->state) & 3);
        if (first)
            a->recheck_ns = RECHECK_NS;
        else if (c->retime && left > 0)
            left--;
        else if (c->retime && a->recheck_ns < RECHECK_MAX_NS)
            a->recheck_ns *= 2;   /* a recheck (timing_due) */
        if (first || cost < a->calib_ns) {
            a->slowest = slowest;
            a->slowest_len = slowest ? method_len(slowest) : 0;
            a->slow_ns = a->calib_ns = cost;
            a->cal_gen = a->gen;
        }
        set_state(a, a->calib_ns, left);
        a->cal_at = now_ns();
        atomic_store(&a->recheck_at, a->cal_at + a->recheck_ns);
    }
    pthread_mutex_unlock(&a->mu);
}

int cw__auth_calibrated(cw__auth *a)
{
    return atomic_load(&a->state) >= 0;
}

/* Calibrate on the calling thread (which blocks for a few hashes); cd: a
 * crypt_data of the caller's. */
static void calibrate_here(cw__auth *a, struct crypt_data *cd)
{
    struct cw__authcal c;
    if (cw__auth_calib_prepare(a, &c)) {
        cw__auth_calib_run(&c, cd);
        cw__auth_calib_publish(a, &c);
    }
}

static int is_slowest(const cw__auth *a, const char *hash)
{
    size_t m = method_len(hash);
    return a->slowest && m == a->slowest_len && !strncmp(hash, a->slowest, m);
}

int cw__auth_lookup(cw__auth *a, const char *user, size_t ulen, size_t plen,
                    struct cw__authset *set)
{
    set->setting = set->stored = NULL;
    set->reject = ulen > MAX_USER || plen >= CW__AUTH_MAX_PASS;
    if (set->reject)
        return 0;
    /* No lock (struct cw__auth says why): nusers first, then the array,
     * which holds at least that many entries. */
    int n = atomic_load_explicit(&a->nusers, memory_order_acquire);
    const struct user *users = atomic_load_explicit(&a->users, memory_order_acquire);
    /* Every entry, match or not: the look-up is outside the padded
     * interval, so its time must not tell a known user (found early)
     * from an unknown one (the whole table). */
    for (int i = 0; i < n; i++) {
        int m = strlen(users[i].name) == ulen && !memcmp(users[i].name, user, ulen);
        if (m && !set->stored)
            set->stored = users[i].hash;
    }
    set->setting = set->stored ? set->stored : cw__auth_slowest(a);
    return 0;
}

const char *cw__auth_slowest(cw__auth *a)
{
    return cw__auth_calibrated(a) ? a->slowest : NULL;
}

/* After a hash: libxcrypt erases its own 30 KiB scratch area (internal)
 * before it returns, so only the fields before it - the output hash, the
 * setting and input areas - can still hold anything derived from the
 * password. Wiping the whole 32 KiB again was most of the user-space
 * instructions of a churn connection (bench/servers-notes.md). */
static void wipe(struct crypt_data *cd)
{
#ifdef CRYPT_DATA_INTERNAL_SIZE
    explicit_bzero(cd, offsetof(struct crypt_data, internal));
#else
    explicit_bzero(cd, sizeof *cd);
#endif
}

int cw__auth_hash(struct crypt_data *cd, const struct cw__authset *set,
                  const char *pass, struct cw__authtime *tm)
{
    if (tm) {
        tm->t0 = tm->t1 = now_ns();
        tm->cpu = 0;
    }
    if (set->reject || !set->setting)
        return 0;
    const char *h = crypt_rn(pass, set->setting, cd, sizeof *cd);
    int ok = set->stored && h && h[0] != '*' && equal_ct(h, set->stored);
    if (h)
        wipe(cd);
    if (tm)
        tm->t1 = now_ns();
    return ok;
}

/* When a check hashed at tm may answer: its start plus the costliest
 * method's recent high cost, which rises fast and falls slowly, so it
 * sits near the top of what that method takes now (a loaded machine makes
 * it slower): checks of that method are padded to it nearly always, and
 * cheaper methods stay indistinguishable under load too. A sample counts
 * its wall time, but at most PAD_CPU_SHARE times the CPU time the hash
 * took: waiting for a core slows every method alike up to that share, so
 * the padding follows a busy machine; beyond it the thread was starved
 * (a SCHED_IDLE check thread waited seconds for a core, authpool.c), and
 * one such sample, counted whole, padded every later login by a quarter
 * of it. A starved check is late whatever its method, and unknown users
 * use the costliest method (the one the estimate tracks), so what the
 * cap gives up is only telling a cheap method's user from a costly one's
 * while the machine starves the checks. Loops only: under mu. */
int64_t cw__auth_pad(cw__auth *a, const char *setting, const struct cw__authtime *tm)
{
    if (!setting)
        return tm->t1;
    int64_t took = tm->t1 - tm->t0;
    if (tm->cpu > 0 && took > tm->cpu * PAD_CPU_SHARE)
        took = tm->cpu * PAD_CPU_SHARE;
    pthread_mutex_lock(&a->mu);
    if (setting == a->slowest || is_slowest(a, setting)) {
        if (took > a->slow_ns)
            a->slow_ns += (took - a->slow_ns) / 4;
        else
            a->slow_ns -= (a->slow_ns - took) / 32;
    }
    int64_t due = tm->t0 + a->slow_ns;
    pthread_mutex_unlock(&a->mu);
    return due;
}

int cw__auth_verify(cw__auth *a, struct crypt_data *cd, const char *user,
                    size_t ulen, const char *pass, size_t plen, int64_t *due_ns)
{
    char pw[CW__AUTH_MAX_PASS];
    if (due_ns)
        *due_ns = now_ns();
    struct cw__authset set;
    cw__auth_lookup(a, user, ulen, plen, &set);
    if (set.reject)
        return 0;
    if (!set.stored && !set.setting) {   /* not calibrated yet */
        calibrate_here(a, cd);
        set.setting = cw__auth_slowest(a);
    } else if (!cw__auth_calibrated(a)) {
        calibrate_here(a, cd);
    }
    memcpy(pw, pass, plen);
    pw[plen] = '\0';
    struct cw__authtime tm;
    int ok = cw__auth_hash(cd, &set, pw, due_ns ? &tm : NULL);
    explicit_bzero(pw, plen + 1);   /* what was copied: not all of it */
    if (due_ns)
        *due_ns = cw__auth_pad(a, set.setting, &tm);
    return ok;
}

int cw__auth_check(cw__auth *a, struct crypt_data *cd, const char *user,
                   size_t ulen, const char *pass, size_t plen)
{
    struct crypt_data *own = cd ? NULL : malloc(sizeof *own);
    if (!cd && !(cd = own))
        return 0;
    int64_t until;
    int ok = cw__auth_verify(a, cd, user, ulen, pass, plen, &until);
    free(own);
    /* Every check ends with one timed sleep, also one whose hash already
     * took the whole cost: on a busy machine a sleeper wakes late, and if
     * only padded checks slept, that lateness would tell them apart. */
    int64_t least = now_ns() + SLEEP_FLOOR_NS;
    if (until < least)
        until = least;
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    return ok;
}

/* A table of cheap methods is timed on the loop that asks, three times
 * at least RETIME_NS apart, and keeps the cheapest: on this kind of
 * machine (a VM) the CPU runs 5-10 times slower for a few milliseconds
 * now and then, so one timing (cheapest of three hashes in a row) of a
 * 5 us DES hash came out over CW__AUTH_INLINE_NS about once in 50, and
 * sent every check of that server to threads for good.
 * - Until the third timing the cost of a table of ONE method is not
 *   settled, and the caller may keep checking on the loop (server.c's
 *   handle_auth, if the cost is within what a slow moment explains):
 *   every user, known or not, is hashed with that one method, so an
 *   unpadded answer's time tells nothing. A table mixing methods is
 *   settled at once (its timings go on, and only lower the cost): an
 *   unpadded check would tell a DES user (microseconds) from an unknown
 *   one, hashed with the costliest method present (MD5: 100-300 us).
 * - A slow spell lasting through all three timings still settles the
 *   cost too high: so while a cheap table's cost is in dear_band() it is
 *   timed again after RECHECK_NS, then twice as long, up to
 *   RECHECK_MAX_NS: a few hashes a minute at most.
 * The lock is taken only while a timing may be due: a settled table
 * costs a login one atomic load, or three and a clock read in the band. */
int64_t cw__auth_cost_ns(cw__auth *a, int *settled)
{
    int64_t st = atomic_load(&a->state);
    if (st >= 0 && !(st & 3) &&
        (!(dear_band(st >> 2) && atomic_load(&a->cheap)) ||
         now_ns() < atomic_load(&a->recheck_at))) {
        *settled = 1;
        return st >> 2;
    }
    pthread_mutex_lock(&a->mu);
    int due = all_cheap(a) && timing_due(a);
    pthread_mutex_unlock(&a->mu);
    if (due) {
        struct crypt_data *cd = calloc(1, sizeof *cd);
        if (cd) {
            calibrate_here(a, cd);
            free(cd);
        }
    }
    /* The table may have changed meanwhile (a user added, by another
     * thread): what makes the answer is read together. */
    pthread_mutex_lock(&a->mu);
    int cheap = all_cheap(a), uniform = a->uniform;
    st = atomic_load(&a->state);
    pthread_mutex_unlock(&a->mu);
    *settled = !cheap || !uniform || (st >= 0 && !(st & 3));
    return st >= 0 ? st >> 2 : INT64_MAX;
}

int64_t cw__auth_now_ns(void)
{
    return now_ns();
}
