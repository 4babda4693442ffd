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
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if CW_HAVE_BPF
#include "../../bpf/owners.h"

#include <bpf/bpf.h>
#include <string.h>
/* The generated header needs errno.h and string.h first. */
#include "owners.lskel.h"

/* Slots for n inodes: a power of two, at least 4 per inode, so that the
 * probe chains stay far below CW_OWNERS_MAX_PROBES. */
static size_t table_slots(size_t n)
{
    size_t slots = 16;
    while (slots < 4 * n)
        slots *= 2;
    return slots;
}

/* Write the open-addressing set into the mapped array (zeroed by the
 * kernel at creation). Returns CW_OK, or -E2BIG if a chain would be too
 * long for the BPF side (then /proc is used). */
static int fill_wanted(int map, size_t slots, const uint32_t *inodes, size_t n)
{
    size_t len = slots * sizeof(uint64_t);
    uint64_t *tab = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, map, 0);
    if (tab == MAP_FAILED)
        return -errno;
    uint32_t mask = (uint32_t)(slots - 1);
    int rc = CW_OK;
    for (size_t i = 0; i < n && rc == CW_OK; i++) {
        uint32_t h = (inodes[i] * CW_OWNERS_HASH) & mask;
        int k = 0;
        while (tab[(h + (uint32_t)k) & mask] && tab[(h + (uint32_t)k) & mask] != inodes[i])
            k++;
        if (k >= CW_OWNERS_MAX_PROBES)
            rc = -E2BIG;
        else
            tab[(h + (uint32_t)k) & mask] = inodes[i];
    }
    munmap(tab, len);
    return rc;
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
    size_t slots = table_slots(n);
    skel->maps.wanted.max_entries = (__u32)slots;
    skel->rodata->slot_mask = (__u32)(slots - 1);
    int rc = owners_lskel__load(skel);
    if (rc < 0)
        *why = rc == -EPERM ? "loading BPF programs needs CAP_BPF (or root)"
                            : "the kernel refused the task_file iterator (no BTF, or "
                              "older than 5.17?)";
    if (rc == 0 && (rc = fill_wanted(skel->maps.wanted.map_fd, slots, inodes, n)) < 0)
        *why = rc == -E2BIG ? "an inode hash chain was too long for the BPF side"
                            : "cannot map the inode table";
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

/* The iterator reports each task's pid in the initial PID namespace; in a
 * container those are not the pids /proc (and the user) see there. The
 * initial PID namespace has a fixed inode (PROC_PID_INIT_INO). */
static int in_child_pid_ns(void)
{
    struct stat sb;
    return stat("/proc/self/ns/pid", &sb) == 0 && sb.st_ino != 0xEFFFFFFCu;
}

int insp_bpf_refs(uint32_t *inodes, size_t n, struct cw_fd_ref **refs, size_t *nrefs,
                  const char **why)
{
    *refs = NULL;
    *nrefs = 0;
    if (in_child_pid_ns()) {
        *why = "running in a child PID namespace, where BPF sees the host's pids";
        return -ENOTSUP;
    }
    return n ? run_iter(inodes, n, refs, nrefs, why) : CW_OK;
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
    rc = insp_bpf_refs(inodes, ni, &refs, &nrefs, why);
    free(inodes);
    if (rc == CW_OK)
        rc = cw_diag_attribute_refs(d, v, n, refs, nrefs, CW_ATTR_BPF, st);
    free(refs);
    return rc;
}

#else

int insp_bpf_refs(uint32_t *inodes, size_t n, struct cw_fd_ref **refs, size_t *nrefs,
                  const char **why)
{
    (void)inodes;
    (void)n;
    *refs = NULL;
    *nrefs = 0;
    *why = "this closewise was built without BPF support (CW_BPF=OFF)";
    return -ENOSYS;
}

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
