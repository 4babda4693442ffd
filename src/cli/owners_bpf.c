/* owners_bpf.c - socket owners through a BPF task_file iterator.
 *
 * The /proc scan costs one readlinkat() (a path walk and a permission
 * check) per descriptor of every process. The iterator in
 * src/bpf/owners.bpf.c walks the same descriptor tables inside the kernel
 * and writes out only the sockets whose inode is in a hash map filled from
 * the dump. libbpf is linked into the CLI only, never into libclosewise.
 * Any failure (no CAP_BPF, no BTF, a build without BPF) returns an error
 * with the reason, and the caller falls back to /proc. */
#define _GNU_SOURCE
#include "inspect.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#if CW_HAVE_BPF
#include "../bpf/owners.h"
#include "owners.skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/* libbpf explains its failures on stderr; the fallback is said once by
 * the caller (--verbose) instead. */
static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    (void)level;
    (void)fmt;
    (void)ap;
    return 0;
}

/* One batched update where the kernel has it (5.6+), else one by one. */
static int fill_wanted(int map, uint32_t *inodes, size_t n)
{
    uint8_t *one = calloc(n ? n : 1, 1);
    if (!one)
        return -ENOMEM;
    __u32 count = (__u32)n;
    int rc = n ? bpf_map_update_batch(map, inodes, one, &count, NULL) : 0;
    for (size_t i = 0; rc < 0 && i < n; i++)
        if (bpf_map_update_elem(map, &inodes[i], &one[i], BPF_ANY) < 0) {
            free(one);
            return -errno;
        }
    free(one);
    return CW_OK;
}

/* Read every record the iterator writes. */
static int read_refs(int iter, struct cw_fd_ref **out, size_t *nout)
{
    size_t cap = 1024, n = 0;
    struct cw_fd_ref *v = malloc(cap * sizeof *v);
    struct cw_owner_rec buf[512];
    ssize_t got;
    while (v && ((got = read(iter, buf, sizeof buf)) > 0 || (got < 0 && errno == EINTR))) {
        for (size_t i = 0; got > 0 && i < (size_t)got / sizeof buf[0]; i++) {
            if (n == cap) {
                struct cw_fd_ref *nv = realloc(v, cap * 2 * sizeof *v);
                if (!nv) {
                    free(v);
                    return -ENOMEM;
                }
                v = nv;
                cap *= 2;
            }
            v[n++] = (struct cw_fd_ref){.inode = buf[i].inode, .pid = (int)buf[i].pid,
                                        .fd = (int)buf[i].fd};
        }
    }
    if (!v)
        return -ENOMEM;
    if (got < 0) {
        int rc = -errno;
        free(v);
        return rc;
    }
    *out = v;
    *nout = n;
    return CW_OK;
}

/* Load the iterator with a map sized for n inodes and run it. */
static int run_iter(uint32_t *inodes, size_t n, struct cw_fd_ref **refs, size_t *nrefs,
                    const char **why)
{
    libbpf_set_print(quiet);
    struct owners_bpf *skel = owners_bpf__open();
    if (!skel) {
        *why = "cannot open the BPF object";
        return -errno ? -errno : -EIO;
    }
    int rc = bpf_map__set_max_entries(skel->maps.wanted, n ? (__u32)n : 1);
    if (rc == 0 && (rc = owners_bpf__load(skel)) < 0)
        *why = rc == -EPERM ? "loading BPF programs needs CAP_BPF (or root)"
                            : "the kernel refused the task_file iterator (no BTF?)";
    if (rc == 0 && (rc = fill_wanted(bpf_map__fd(skel->maps.wanted), inodes, n)) < 0)
        *why = "cannot fill the inode map";
    struct bpf_link *link = NULL;
    if (rc == 0 && !(link = bpf_program__attach_iter(skel->progs.owners, NULL))) {
        rc = -errno;
        *why = "cannot attach the task_file iterator";
    }
    int iter = link ? bpf_iter_create(bpf_link__fd(link)) : -1;
    if (rc == 0 && iter < 0) {
        rc = -errno;
        *why = "cannot create the iterator";
    }
    if (rc == 0 && (rc = read_refs(iter, refs, nrefs)) < 0)
        *why = "cannot read the iterator";
    if (iter >= 0)
        close(iter);
    bpf_link__destroy(link);
    owners_bpf__destroy(skel);
    return rc < 0 ? rc : CW_OK;
}

int insp_bpf_attribute(cw_diag *d, struct cw_sock *v, size_t n, struct cw_attr_stats *st,
                       const char **why)
{
    uint32_t *inodes = NULL;
    size_t ni = 0;
    struct cw_fd_ref *refs = NULL;
    size_t nrefs = 0;
    int rc = cw_diag_wanted_inodes(d, v, n, &inodes, &ni);
    if (rc < 0) {
        *why = "cannot dump the listeners";
        return rc;
    }
    rc = ni ? run_iter(inodes, ni, &refs, &nrefs, why) : CW_OK;
    free(inodes);
    if (rc == CW_OK)
        rc = cw_diag_attribute_refs(d, v, n, refs, nrefs, CW_ATTR_BPF, st);
    free(refs);
    return rc;
}

#else

int insp_bpf_attribute(cw_diag *d, struct cw_sock *v, size_t n, struct cw_attr_stats *st,
                       const char **why)
{
    (void)d;
    (void)v;
    (void)n;
    (void)st;
    *why = "this closewise was built without BPF support (CW_BPF=OFF)";
    return -ENOSYS;
}

#endif
