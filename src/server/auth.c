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
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_USER 64
#define SLEEP_FLOOR_NS 100000   /* cw__auth_check: the shortest final sleep */
#define MAX_METHODS 32   /* distinct method+cost settings timed at most */

struct user {
    char name[MAX_USER + 1];
    char *hash;
};

/* Worker threads check passwords at once (authpool.c): the table, the
 * calibration and the running cost are guarded by mu, held only around
 * table reads and bookkeeping, never around a hash. */
struct cw__auth {
    pthread_mutex_t mu;
    struct user *users;
    int nusers, cap;
    char *dummy;              /* setting for unknown users, no users */
    struct crypt_data *cd;    /* 32 KiB, for calls under mu: allocated
                                 once, not per call */
    int calibrated;           /* users unchanged since the last timing */
    const char *slowest;      /* hash of the costliest method present */
    size_t slowest_len;       /* its method prefix (method_len) */
    int64_t slow_ns;          /* running cost of that method */
    int64_t calib_ns;         /* its cost when timed: steady, unlike slow_ns,
                                 which a preempted check pushes up */
};

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

/* A hash crypt(3) accepts as a setting: hashing anything with it works. */
static int valid_hash(cw__auth *a, const char *hash)
{
    const char *h = crypt_rn("", hash, a->cd, sizeof *a->cd);
    return h && h[0] != '*' && strncmp(h, hash, 3) == 0;
}

static int add_hash(cw__auth *a, const char *user, const char *hash)
{
    if (!valid_name(user) || !valid_hash(a, hash))
        return CW_EINVAL;
    for (int i = 0; i < a->nusers; i++)
        if (!strcmp(a->users[i].name, user))
            return -EEXIST;
    if (a->nusers == a->cap) {
        int cap = a->cap ? a->cap * 2 : 8;
        struct user *u = realloc(a->users, (size_t)cap * sizeof *u);
        if (!u)
            return -ENOMEM;
        a->users = u;
        a->cap = cap;
    }
    char *copy = strdup(hash);
    if (!copy)
        return -ENOMEM;
    struct user *u = &a->users[a->nusers++];
    strcpy(u->name, user);
    u->hash = copy;
    a->calibrated = 0;
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
    if (!a)
        return CW_EINVAL;
    pthread_mutex_lock(&a->mu);
    int n = a->nusers;
    pthread_mutex_unlock(&a->mu);
    return n;
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
 * salt and digest ("$6$rounds=5000$", "$y$j9T$", "$2b$10$"; "" for DES). */
static size_t method_len(const char *hash)
{
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

/* Cheapest of three runs: spikes from other work only ever add time. */
static int64_t cost_of(cw__auth *a, const char *setting)
{
    int64_t best = INT64_MAX;
    for (int i = 0; i < 3; i++) {
        int64_t t0 = now_ns();
        crypt_rn("closewise-calibration", setting, a->cd, sizeof *a->cd);
        int64_t d = now_ns() - t0;
        if (d < best)
            best = d;
    }
    return best;
}

/* Time each distinct method and remember the costliest: unknown users
 * are hashed with it, and every check is padded to its cost. */
static void calibrate(cw__auth *a)
{
    a->calibrated = 1;
    if (a->nusers == 0 && !a->dummy) {
        char h[CRYPT_OUTPUT_SIZE];
        if (cw_passwd_hash("closewise-dummy", NULL, h, sizeof h) == CW_OK)
            a->dummy = strdup(h);
    }
    a->slowest = a->nusers ? a->users[0].hash : a->dummy;
    a->slow_ns = 0;
    if (!a->slowest)
        return;
    a->slowest_len = method_len(a->slowest);
    const char *seen[MAX_METHODS];
    int nseen = 0;
    for (int i = -1; i < a->nusers; i++) {
        const char *h = i < 0 ? a->slowest : a->users[i].hash;
        size_t m = method_len(h);
        int known = 0;
        for (int j = 0; j < nseen && !known; j++)
            known = method_len(seen[j]) == m && !strncmp(seen[j], h, m);
        if (known || nseen == MAX_METHODS)
            continue;
        seen[nseen++] = h;
        int64_t c = cost_of(a, h);
        if (c > a->slow_ns) {
            a->slow_ns = a->calib_ns = c;
            a->slowest = h;
            a->slowest_len = m;
        }
    }
}

static int is_slowest(const cw__auth *a, const char *hash)
{
    size_t m = method_len(hash);
    return m == a->slowest_len && !strncmp(hash, a->slowest, m);
}

/* Track the costliest method's recent high cost and return when a check
 * that started at start may answer: start + that cost. The estimate rises
 * fast and falls slowly, so it sits near the top of what that method
 * takes now (a loaded machine makes it slower): checks of that method are
 * padded to it nearly always, and cheaper methods stay indistinguishable
 * under load too. Called with mu held. */
static int64_t pad_until(cw__auth *a, const char *used, int64_t start)
{
    int64_t took = now_ns() - start;
    if (used == a->slowest || is_slowest(a, used)) {
        if (took > a->slow_ns)
            a->slow_ns += (took - a->slow_ns) / 4;
        else
            a->slow_ns -= (a->slow_ns - took) / 32;
    }
    return start + a->slow_ns;
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

int cw__auth_verify(cw__auth *a, struct crypt_data *cd, const char *user,
                    size_t ulen, const char *pass, size_t plen, int64_t *due_ns)
{
    char name[MAX_USER + 1], pw[1100];
    int64_t start = now_ns();
    *due_ns = start;
    if (ulen > MAX_USER || plen >= sizeof pw)
        return 0;
    memcpy(name, user, ulen);
    name[ulen] = '\0';
    memcpy(pw, pass, plen);
    pw[plen] = '\0';
    /* The hash strings are never freed or changed while the table lives
     * (users are only added), so they may be read after unlocking. */
    pthread_mutex_lock(&a->mu);
    if (!a->calibrated)
        calibrate(a);
    const char *stored = NULL;
    for (int i = 0; i < a->nusers; i++)
        if (!strcmp(a->users[i].name, name))
            stored = a->users[i].hash;
    const char *setting = stored ? stored : a->slowest;
    pthread_mutex_unlock(&a->mu);
    start = now_ns();   /* calibration is not the user's cost */
    const char *h = setting ? crypt_rn(pw, setting, cd, sizeof *cd) : NULL;
    explicit_bzero(pw, plen + 1);   /* what was copied: not all 1100 bytes */
    int ok = stored && h && h[0] != '*' && equal_ct(h, stored);
    if (h)
        wipe(cd);
    if (setting) {
        pthread_mutex_lock(&a->mu);
        *due_ns = pad_until(a, setting, start);
        pthread_mutex_unlock(&a->mu);
    }
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

int64_t cw__auth_cost_ns(cw__auth *a)
{
    pthread_mutex_lock(&a->mu);
    int64_t ns = a->calibrated ? a->calib_ns : INT64_MAX;
    pthread_mutex_unlock(&a->mu);
    return ns;
}

int64_t cw__auth_now_ns(void)
{
    return now_ns();
}
