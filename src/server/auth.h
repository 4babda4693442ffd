/* auth.h - credentials for the reference server (throttling is
 * throttle.h). Internal: never installed. */
#ifndef CW_AUTH_H
#define CW_AUTH_H

#include <stddef.h>
#include <stdint.h>

struct crypt_data;

typedef struct cw__auth cw__auth;

/* Create an empty credential table. */
int cw__auth_new(cw__auth **out);
void cw__auth_free(cw__auth *a);

/* Add a user with a crypt(3) hash (copied). CW_EINVAL for a bad name or a
 * hash crypt(3) does not recognise, -EEXIST for a duplicate user. */
int cw__auth_add_hash(cw__auth *a, const char *user, const char *hash);

/* Load "user:hash" lines ('#' comments and blank lines allowed). Returns
 * the number of users added, or a negative code with *bad_line set to the
 * offending line (0 for an I/O error). */
int cw__auth_load(cw__auth *a, const char *path, int *bad_line);

int cw__auth_count(cw__auth *a);

/* Check a login on the calling thread (a loop: the blocking mode, or
 * methods cheap enough to run there). Safe from several threads at
 * once; users may be added meanwhile. An unknown user is hashed with the costliest method
 * present (each distinct method is timed once after the users change),
 * and every check is padded to that method's running cost, so neither
 * existence nor a user's method shows in the time taken; the comparison
 * is constant-time. Blocks for one hash plus the padding. cd: the
 * caller's crypt_data (32 KiB, one per thread: a loop checking on itself
 * keeps one), NULL to use a fresh one. Returns 1 for good credentials, 0
 * for bad ones. */
int cw__auth_check(cw__auth *a, struct crypt_data *cd, const char *user,
                   size_t ulen, const char *pass, size_t plen);

/* The same check without the wait: hashes with the caller's crypt_data
 * (32 KiB; one per thread) and stores in *due_ns the CLOCK_MONOTONIC time
 * (cw__auth_now_ns() scale) before which the answer must not be given.
 * The caller waits, so a worker thread is not held by padding: the event
 * loop defers the reply with a timer instead. due_ns NULL: answered at
 * once (a loop with check threads, only for methods cheaper than a
 * hand-off): no padding, no clock read, no running-cost bookkeeping. */
int cw__auth_verify(cw__auth *a, struct crypt_data *cd, const char *user,
                    size_t ulen, const char *pass, size_t plen,
                    int64_t *due_ns);

/* ---- the parts of a check, for authpool.c ----
 * On a loop: cw__auth_lookup when the check is asked for, cw__auth_pad
 * when its hash is done. On a check thread, holding no lock:
 * cw__auth_hash. Calibration (timing each method present, a few hashes)
 * the same way: prepare on a loop, run anywhere, publish on a loop. */

#define CW__AUTH_MAX_PASS 1100   /* longer passwords are refused unhashed */
#define CW__AUTH_METHODS 32      /* distinct methods timed at most */

/* What to hash a password with: the user's stored hash (NULL: unknown
 * user) and the setting, which is the stored hash or, for an unknown
 * user, the costliest method present (NULL until calibrated:
 * cw__auth_slowest then). reject: refused without a hash (name or
 * password too long). The strings live as long as the table. */
struct cw__authset {
    const char *setting, *stored;
    int reject;
};
int cw__auth_lookup(cw__auth *a, const char *user, size_t ulen, size_t plen,
                    struct cw__authset *set);
/* The setting for unknown users, NULL until calibrated. */
const char *cw__auth_slowest(cw__auth *a);

/* When a hash ran (CLOCK_MONOTONIC ns) and the CPU time it took. */
struct cw__authtime {
    int64_t t0, t1, cpu;
};
/* Hash pass (NUL-terminated) with set's setting, compare in constant
 * time; 1 for good credentials. Touches no table and no lock. tm NULL:
 * no clock read. tm->cpu
 * is left 0 (cw__auth_pad then counts the wall time): a check thread
 * measures its own CPU time around the call (authpool.c), while on a loop
 * the hash is cheap and a thread CPU clock read is a system call, not a
 * vDSO read: two per churn connection. */
int cw__auth_hash(struct crypt_data *cd, const struct cw__authset *set,
                  const char *pass, struct cw__authtime *tm);
/* The time before which a check hashed at tm with setting may not
 * answer; updates the running cost (auth.c says how). */
int64_t cw__auth_pad(cw__auth *a, const char *setting, const struct cw__authtime *tm);

struct cw__authcal {
    unsigned gen;
    int n, need_dummy;
    int retime;   /* prepare claimed a cheap table's re-timing */
    const char *setting[CW__AUTH_METHODS];
    int64_t ns[CW__AUTH_METHODS], dummy_ns;
    char dummy[128];
};
/* 1 if the table needs calibrating: c then holds what to time. */
int cw__auth_calib_prepare(cw__auth *a, struct cw__authcal *c);
void cw__auth_calib_run(struct cw__authcal *c, struct crypt_data *cd);
void cw__auth_calib_publish(cw__auth *a, const struct cw__authcal *c);
int cw__auth_calibrated(cw__auth *a);

/* A check costing less may be answered on the loop, unpadded: what its
 * time can tell apart is under this. */
#define CW__AUTH_INLINE_NS 20000
/* How much dearer a cheap hash was seen to time in a slow moment of a VM
 * (auth.c's cw__auth_cost_ns). */
#define CW__AUTH_SLOW_MOMENT 10

/* What a check costs (the costliest method present, as timed when the
 * users last changed: every check is padded to about that), in ns, or
 * INT64_MAX until calibrated. Calibrates here only where every method
 * present costs microseconds (DES, MD5): this is called on an event
 * loop. *settled 0: a table of one such method, not yet timed often
 * enough to trust a cost over CW__AUTH_INLINE_NS (auth.c says why; it
 * can only be too high, never too low). */
int64_t cw__auth_cost_ns(cw__auth *a, int *settled);

/* CLOCK_MONOTONIC in ns: the scale of cw__auth_verify's *due_ns. */
int64_t cw__auth_now_ns(void);

#endif
