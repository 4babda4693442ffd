/* exporter_bpf.c - load cwage.bpf.c and read its map (exporter_bpf.h). */
#define _GNU_SOURCE
#include "exporter_bpf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if CW_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "cwage.skel.h"

/* One entry of the map, as read by xexact_load(). */
struct xentry {
    uint64_t cookie, ns;
};

struct xexact {
    struct cwage_bpf *skel;   /* NULL: a map opened from the pin */
    int map_fd;
    int pinned;               /* this process pinned XEXACT_PIN */
    struct xentry *e;         /* from xexact_load(), sorted by cookie */
    size_t ne;
    int loaded;
};

/* libbpf's own messages would interleave with ours: the reason is
 * reported once, by the caller. */
static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    (void)level;
    (void)fmt;
    (void)ap;
    return 0;
}

/* Pin the map for `ls --json`. Best effort: without bpffs, or with
 * another exporter's pin already there, exact ages stay this exporter's
 * own. Never replaces a pin it did not make. */
static void pin(struct xexact *x)
{
    if (mkdir(XEXACT_PIN_DIR, 0700) < 0 && errno != EEXIST)
        return;
    x->pinned = bpf_obj_pin(x->map_fd, XEXACT_PIN) == 0;
    if (!x->pinned)
        rmdir(XEXACT_PIN_DIR);   /* only succeeds when empty */
}

int xexact_open_pinned(xexact **out)
{
    libbpf_set_print(quiet);
    int fd = bpf_obj_get(XEXACT_PIN);
    if (fd < 0)
        return -errno;
    struct xexact *x = calloc(1, sizeof *x);
    if (!x) {
        close(fd);
        return -ENOMEM;
    }
    x->map_fd = fd;
    *out = x;
    return 0;
}

int xexact_open(xexact **out, char *why, size_t size)
{
    libbpf_set_print(quiet);
    struct xexact *x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(why, size, "out of memory");
        return -ENOMEM;
    }
    const char *step = "load";
    int err = 0;
    x->skel = cwage_bpf__open_and_load();
    if (!x->skel) {
        err = errno ? errno : EINVAL;
    } else {
        step = "attach to sock:inet_sock_set_state";
        err = -cwage_bpf__attach(x->skel);
    }
    if (err) {
        snprintf(why, size, "%s: %s", step, strerror(err));
        cwage_bpf__destroy(x->skel);
        free(x);
        return -err;
    }
    x->map_fd = bpf_map__fd(x->skel->maps.cw_entry);
    pin(x);
    *out = x;
    return 0;
}

static int xentry_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct xentry *)a)->cookie, y = ((const struct xentry *)b)->cookie;
    return x < y ? -1 : x > y;
}

/* The whole map in batches of 4,096 entries: cost proportional to the
 * stamps, not to the sockets asked about. */
static int load_batches(xexact *x, uint64_t *keys, uint64_t *vals, size_t batch)
{
    uint64_t in = 0, out = 0;
    void *pin = NULL;
    for (;;) {
        __u32 count = (__u32)batch;
        int rc = bpf_map_lookup_batch(x->map_fd, pin, &out, keys, vals, &count, NULL);
        int err = rc < 0 ? errno : 0;
        if (rc < 0 && err != ENOENT)
            return -err;
        if (count) {
            struct xentry *e = realloc(x->e, (x->ne + count) * sizeof *e);
            if (!e)
                return -ENOMEM;
            x->e = e;
        }
        for (__u32 i = 0; i < count; i++)
            x->e[x->ne++] = (struct xentry){keys[i], vals[i]};
        if (err == ENOENT)
            return 0;   /* the last batch */
        in = out;
        pin = &in;
    }
}

int xexact_load(xexact *x)
{
    if (!x)
        return -EINVAL;
    free(x->e);
    x->e = NULL;
    x->ne = 0;
    x->loaded = 0;
    enum { BATCH = 4096 };
    uint64_t *keys = malloc(BATCH * sizeof *keys), *vals = malloc(BATCH * sizeof *vals);
    int rc = keys && vals ? load_batches(x, keys, vals, BATCH) : -ENOMEM;
    free(keys);
    free(vals);
    if (rc < 0) {
        free(x->e);
        x->e = NULL;
        x->ne = 0;
        return rc;   /* per-key lookups then */
    }
    if (x->ne > 1)
        qsort(x->e, x->ne, sizeof *x->e, xentry_cmp);
    x->loaded = 1;
    return 0;
}

int xexact_entry(xexact *x, uint64_t cookie, int64_t *entry_ms)
{
    uint64_t ns;
    if (!x)
        return 0;
    if (x->loaded) {
        struct xentry key = {.cookie = cookie};
        const struct xentry *e =
            x->ne ? bsearch(&key, x->e, x->ne, sizeof key, xentry_cmp) : NULL;
        if (!e)
            return 0;
        ns = e->ns;
    } else if (bpf_map_lookup_elem(x->map_fd, &cookie, &ns) != 0) {
        return 0;
    }
    *entry_ms = (int64_t)(ns / 1000000u);
    return 1;
}

void xexact_close(xexact **xp)
{
    if (!*xp)
        return;
    if ((*xp)->pinned) {
        unlink(XEXACT_PIN);
        rmdir(XEXACT_PIN_DIR);
    }
    free((*xp)->e);
    if ((*xp)->skel)
        cwage_bpf__destroy((*xp)->skel);
    else
        close((*xp)->map_fd);
    free(*xp);
    *xp = NULL;
}

#else

struct xexact {
    int unused;
};

int xexact_open(xexact **out, char *why, size_t size)
{
    (void)out;
    snprintf(why, size, "closewise was built without BPF (CW_BPF=OFF)");
    return -ENOTSUP;
}

int xexact_entry(xexact *x, uint64_t cookie, int64_t *entry_ms)
{
    (void)x;
    (void)cookie;
    (void)entry_ms;
    return 0;
}

int xexact_open_pinned(xexact **out)
{
    (void)out;
    return -ENOTSUP;
}

int xexact_load(xexact *x)
{
    (void)x;
    return -ENOTSUP;
}

void xexact_close(xexact **xp)
{
    *xp = NULL;
}

#endif
