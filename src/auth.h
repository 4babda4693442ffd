/* auth.h - credentials and login throttling for the reference server.
 * Internal: never installed. */
#ifndef CW_AUTH_H
#define CW_AUTH_H

#include <stddef.h>
#include <stdint.h>

typedef struct cw__auth cw__auth;

/* Create an empty credential table with a throttle that allows max_fails
 * failed logins per client address (IPv6: per /64) within window_ms.
 * max_fails 0 disables throttling. */
int cw__auth_new(int max_fails, int64_t window_ms, cw__auth **out);
void cw__auth_free(cw__auth *a);

/* Add a user with a crypt(3) hash (copied). CW_EINVAL for a bad name or a
 * hash crypt(3) does not recognise, -EEXIST for a duplicate user. */
int cw__auth_add_hash(cw__auth *a, const char *user, const char *hash);

/* Load "user:hash" lines ('#' comments and blank lines allowed). Returns
 * the number of users added, or a negative code with *bad_line set to the
 * offending line (0 for an I/O error). */
int cw__auth_load(cw__auth *a, const char *path, int *bad_line);

int cw__auth_count(const cw__auth *a);

/* Check a login. The work done is the same whether or not the user
 * exists, and the hash comparison takes constant time. Returns 1 for
 * good credentials, 0 for bad ones, or a negative code. */
int cw__auth_check(cw__auth *a, const char *user, size_t ulen,
                   const char *pass, size_t plen);

/* Throttling, keyed by a 16-byte address (IPv4 as ::ffff:a.b.c.d).
 * cw__auth_throttled: 1 if the address has used up its failures. */
int cw__auth_throttled(cw__auth *a, const uint8_t addr[16], int64_t now);
void cw__auth_failed(cw__auth *a, const uint8_t addr[16], int64_t now);

#endif
