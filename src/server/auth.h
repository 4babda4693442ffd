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

/* Check a login. Safe from several threads at once (authpool.c runs it
 * on workers); users may be added meanwhile. An unknown user is hashed with the costliest method
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
 * loop defers the reply with a timer instead. */
int cw__auth_verify(cw__auth *a, struct crypt_data *cd, const char *user,
                    size_t ulen, const char *pass, size_t plen,
                    int64_t *due_ns);

/* What a check costs (the costliest method present, as timed when the
 * users last changed: every check is padded to about that), in ns, or
 * INT64_MAX until a check has timed them (never here: this is called on
 * an event loop, and timing takes a few hashes). */
int64_t cw__auth_cost_ns(cw__auth *a);

/* CLOCK_MONOTONIC in ns: the scale of cw__auth_verify's *due_ns. */
int64_t cw__auth_now_ns(void);

#endif
