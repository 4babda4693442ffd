/* auth.h - credentials for the reference server (throttling is
 * throttle.h). Internal: never installed. */
#ifndef CW_AUTH_H
#define CW_AUTH_H

#include <stddef.h>
#include <stdint.h>

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

int cw__auth_count(const cw__auth *a);

/* Check a login. An unknown user is hashed with the costliest method
 * present (each distinct method is timed once after the users change),
 * and every check is padded to that method's running cost, so neither
 * existence nor a user's method shows in the time taken; the comparison
 * is constant-time. Blocks for one hash plus the padding. Returns 1 for
 * good credentials, 0 for bad ones. */
int cw__auth_check(cw__auth *a, const char *user, size_t ulen,
                   const char *pass, size_t plen);

#endif
