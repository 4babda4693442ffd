/* auth.c - credentials from crypt(3) hashes, checked in constant time, and
 * a small fixed-size table that throttles failed logins per address. */
#define _GNU_SOURCE
#include "internal.h"
#include "auth.h"

#include <closewise/server.h>
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_USER 64
#define THROTTLE_SLOTS 256   /* bounded: the table never grows */
#define THROTTLE_PROBE 8

struct user {
    char name[MAX_USER + 1];
    char *hash;
};

struct throttle_slot {
    uint8_t key[16];
    uint8_t used;
    uint32_t fails;
    int64_t since;            /* start of the current window */
};

struct cw__auth {
    struct user *users;
    int nusers, cap;
    char *dummy;              /* hash checked for unknown users */
    struct crypt_data *cd;    /* 32 KiB: allocated once, not per call */
    int max_fails;
    int64_t window_ms;
    struct throttle_slot slots[THROTTLE_SLOTS];
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

int cw__auth_new(int max_fails, int64_t window_ms, cw__auth **out)
{
    cw__auth *a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->cd = calloc(1, sizeof *a->cd);
    if (!a->cd) {
        free(a);
        return -ENOMEM;
    }
    a->max_fails = max_fails;
    a->window_ms = window_ms;
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

int cw__auth_add_hash(cw__auth *a, const char *user, const char *hash)
{
    if (!a || !user || !hash || !valid_name(user) || !valid_hash(a, hash))
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
    return CW_OK;
}

int cw__auth_count(const cw__auth *a)
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
        rc = -EIO;
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

int cw__auth_check(cw__auth *a, const char *user, size_t ulen,
                   const char *pass, size_t plen)
{
    char name[MAX_USER + 1], pw[1100];
    if (ulen > MAX_USER || plen >= sizeof pw)
        return 0;
    memcpy(name, user, ulen);
    name[ulen] = '\0';
    memcpy(pw, pass, plen);
    pw[plen] = '\0';
    const char *stored = NULL;
    for (int i = 0; i < a->nusers; i++)
        if (!strcmp(a->users[i].name, name))
            stored = a->users[i].hash;
    if (!stored) {
        /* An unknown user costs a full hash too, with the method and cost
         * of a real entry, so timing does not tell which names exist. */
        if (a->nusers > 0) {
            crypt_rn(pw, a->users[0].hash, a->cd, sizeof *a->cd);
        } else {
            if (!a->dummy) {
                char h[CRYPT_OUTPUT_SIZE];
                if (cw_passwd_hash("closewise-dummy", NULL, h, sizeof h) == CW_OK)
                    a->dummy = strdup(h);
            }
            if (a->dummy)
                crypt_rn(pw, a->dummy, a->cd, sizeof *a->cd);
        }
        explicit_bzero(pw, sizeof pw);
        return 0;
    }
    const char *h = crypt_rn(pw, stored, a->cd, sizeof *a->cd);
    explicit_bzero(pw, sizeof pw);
    return h && h[0] != '*' && equal_ct(h, stored);
}

/* ---- throttle ---- */

static uint32_t key_hash(const uint8_t key[16])
{
    uint32_t h = 2166136261u;   /* FNV-1a */
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

/* IPv6 clients own at least a /64: throttle the prefix, not the address,
 * or a client could rotate through its addresses. */
static void throttle_key(const uint8_t addr[16], uint8_t key[16])
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    memcpy(key, addr, 16);
    if (memcmp(addr, v4mapped, 12) != 0)
        memset(key + 8, 0, 8);
}

/* The slot for key, or NULL. With create, the slot to use: the key's, a
 * free or expired one, or else the oldest of the probed slots. */
static struct throttle_slot *throttle_find(cw__auth *a, const uint8_t key[16],
                                           int64_t now, int create)
{
    uint32_t h = key_hash(key);
    struct throttle_slot *victim = NULL;
    int victim_free = 0;
    for (int i = 0; i < THROTTLE_PROBE; i++) {
        struct throttle_slot *s = &a->slots[(h + (uint32_t)i) % THROTTLE_SLOTS];
        int free_slot = !s->used || now - s->since >= a->window_ms;
        if (!free_slot && !memcmp(s->key, key, 16))
            return s;
        if (victim_free)
            continue;
        if (!victim || free_slot || s->since < victim->since) {
            victim = s;
            victim_free = free_slot;
        }
    }
    if (!create)
        return NULL;
    memcpy(victim->key, key, 16);
    victim->used = 1;
    victim->fails = 0;
    victim->since = now;
    return victim;
}

int cw__auth_throttled(cw__auth *a, const uint8_t addr[16], int64_t now)
{
    if (a->max_fails <= 0)
        return 0;
    uint8_t key[16];
    throttle_key(addr, key);
    struct throttle_slot *s = throttle_find(a, key, now, 0);
    return s && s->fails >= (uint32_t)a->max_fails;
}

void cw__auth_failed(cw__auth *a, const uint8_t addr[16], int64_t now)
{
    if (a->max_fails <= 0)
        return;
    uint8_t key[16];
    throttle_key(addr, key);
    struct throttle_slot *s = throttle_find(a, key, now, 1);
    if (s->fails < UINT32_MAX)
        s->fails++;
}
