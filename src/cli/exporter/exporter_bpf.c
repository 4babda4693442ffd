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

struct xexact {
    struct cwage_bpf *skel;   /* NULL: a map opened from the pin */
    int map_fd;
    int pinned;               /* this process pinned XEXACT_PIN */
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

int xexact_entry(xexact *x, uint64_t cookie, int64_t *entry_ms)
{
    uint64_t ns;
    if (!x || bpf_map_lookup_elem(x->map_fd, &cookie, &ns) != 0)
        return 0;
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

void xexact_close(xexact **xp)
{
    *xp = NULL;
}

#endif
