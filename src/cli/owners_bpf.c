/* owners_bpf.c - socket owners through a BPF task_file iterator.
 *
 * The /proc scan costs one readlinkat() (a path walk and a permission
 * check) per descriptor of every process. The iterator in
 * src/bpf/owners.bpf.c walks the same descriptor tables inside the kernel
 * and writes out only the sockets whose inode is in a hash map filled from
 * the dump. It is loaded through a light skeleton (cmake/bpf_light.cmake):
 * CO-RE relocations and the attach point are resolved by a loader program
 * in the kernel, about 1 ms, where libbpf would first parse the kernel's
 * whole BTF in user space (25-40 ms per run here). BPF code is linked
 * into the CLI only, never into libclosewise. Any failure (no CAP_BPF, no
 * BTF, a kernel before 5.17, a build without BPF) returns an error with
 * the reason, and the caller falls back to /proc. */
#define _GNU_SOURCE
#include "inspect.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#if CW_HAVE_BPF
#include "../bpf/owners.h"

#include <bpf/bpf.h>
#include <string.h>
/* The generated header needs errno.h and string.h first. */
#include "owners.lskel.h"

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
    struct owners_lskel *skel = owners_lskel__open();
    if (!skel) {
        *why = "out of memory";
        return -ENOMEM;
    }
    /* The loader takes a non-zero max_entries from here. */
    skel->maps.wanted.max_entries = n ? (__u32)n : 1;
    int rc = owners_lskel__load(skel);
    if (rc < 0)
        *why = rc == -EPERM ? "loading BPF programs needs CAP_BPF (or root)"
                            : "the kernel refused the task_file iterator (no BTF, or "
                              "older than 5.17?)";
    if (rc == 0 && (rc = fill_wanted(skel->maps.wanted.map_fd, inodes, n)) < 0)
        *why = "cannot fill the inode map";
    if (rc == 0 && (rc = owners_lskel__owners__attach(skel)) < 0)
        *why = "cannot attach the task_file iterator";
    int iter = rc >= 0 ? bpf_iter_create(skel->links.owners_fd) : -1;
    if (rc >= 0 && iter < 0) {
        rc = -errno;
        *why = "cannot create the iterator";
    }
    if (rc >= 0 && (rc = read_refs(iter, refs, nrefs)) < 0)
        *why = "cannot read the iterator";
    if (iter >= 0)
        close(iter);
    owners_lskel__destroy(skel);
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
