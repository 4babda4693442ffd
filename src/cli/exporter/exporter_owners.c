/* exporter_owners.c - owners by inode for the exporter (exporter_owners.h).
 * Both sides are sorted by inode and walked together: at 75,000 sockets a
 * search per socket costs more than the two sorts. */
#define _GNU_SOURCE
#include "exporter_owners.h"

#include "../inspect/inspect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int want_cmp(const void *a, const void *b)
{
    uint32_t x = ((const struct xo_want *)a)->inode, y = ((const struct xo_want *)b)->inode;
    return x < y ? -1 : x > y;
}

static int ref_cmp(const void *a, const void *b)
{
    const struct cw_fd_ref *x = a, *y = b;
    if (x->inode != y->inode)
        return x->inode < y->inode ? -1 : 1;
    return x->pid != y->pid ? (x->pid < y->pid ? -1 : 1) : x->fd - y->fd;
}

/* Process names, read once per pid: open addressing on pid, sized to
 * the holders (a leak of 75,000 sockets is usually a few processes). */
struct names {
    struct {
        int pid;
        char comm[16];
    } *slot;
    size_t mask, used;
};

static const char *comm_of(struct names *nm, int pid)
{
    size_t h = (size_t)(unsigned)pid * 2654435761u & nm->mask;
    while (nm->slot[h].pid && nm->slot[h].pid != pid)
        h = (h + 1) & nm->mask;
    char *comm = nm->slot[h].comm;
    if (nm->slot[h].pid)
        return comm;
    if (2 * ++nm->used > nm->mask)
        return "";   /* more processes than slots: named on a later try */
    nm->slot[h].pid = pid;
    char path[40];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen(path, "re");
    if (f) {
        if (!fgets(comm, sizeof nm->slot[h].comm, f))
            comm[0] = '\0';
        comm[strcspn(comm, "\n")] = '\0';
        fclose(f);
    }
    return comm;
}

static int find_refs(const struct xo_want *v, size_t n, int use_bpf, struct cw_fd_ref **refs,
                     size_t *nrefs)
{
    uint32_t *inodes = malloc((n ? n : 1) * sizeof *inodes);
    if (!inodes)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        inodes[i] = v[i].inode;
    const char *why;
    int rc = use_bpf ? insp_bpf_refs(inodes, n, refs, nrefs, &why) : -ENOTSUP;
    if (rc < 0)
        rc = cw_diag_find_holders(inodes, n, refs, nrefs, NULL);
    free(inodes);
    return rc;
}

int xo_name(struct xo_want *v, size_t n, int use_bpf, xo_cb *cb, void *arg)
{
    struct cw_fd_ref *refs = NULL;
    size_t nrefs = 0;
    if (!n)
        return CW_OK;
    int rc = find_refs(v, n, use_bpf, &refs, &nrefs);
    if (rc < 0)
        return rc;
    struct names nm = {0};
    size_t slots = 16;
    while (slots < 2 * nrefs && slots < 65536)
        slots *= 2;
    nm.slot = calloc(slots, sizeof *nm.slot);
    nm.mask = slots - 1;
    if (!nm.slot) {
        free(refs);
        return -ENOMEM;
    }
    qsort(v, n, sizeof *v, want_cmp);
    if (nrefs > 1)
        qsort(refs, nrefs, sizeof *refs, ref_cmp);
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        while (j < nrefs && refs[j].inode < v[i].inode)
            j++;
        int pid = j < nrefs && refs[j].inode == v[i].inode ? refs[j].pid : 0;
        cb(arg, v[i].ref, pid, pid ? comm_of(&nm, pid) : "");
    }
    free(nm.slot);
    free(refs);
    return CW_OK;
}
