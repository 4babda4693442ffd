/* exporter_owners.c - owners by inode for the exporter (exporter_owners.h).
 * The holders found go into a hash table on inode, keeping the lowest
 * (pid, fd) of each; every want is then one lookup. At 75,000 sockets,
 * sorting both sides cost 15 ms of the first snapshot, the table 2. */
#define _GNU_SOURCE
#include "exporter_owners.h"

#include "../inspect/inspect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* inode -> first holder, open addressing; empty slots have inode 0. */
struct holders {
    struct cw_fd_ref *slot;
    size_t mask;
};

static size_t slot_of(const struct holders *h, uint32_t ino)
{
    size_t i = (size_t)(ino * 2654435761u) & h->mask;
    while (h->slot[i].inode && h->slot[i].inode != ino)
        i = (i + 1) & h->mask;
    return i;
}

static int holders_build(struct holders *h, const struct cw_fd_ref *refs, size_t n)
{
    size_t slots = 16;
    while (slots < 2 * n)
        slots *= 2;
    h->slot = calloc(slots, sizeof *h->slot);
    h->mask = slots - 1;
    if (!h->slot)
        return -ENOMEM;
    for (size_t k = 0; k < n; k++) {
        struct cw_fd_ref *s = &h->slot[slot_of(h, refs[k].inode)];
        if (!s->inode || refs[k].pid < s->pid || (refs[k].pid == s->pid && refs[k].fd < s->fd))
            *s = refs[k];
    }
    return CW_OK;
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

int xo_name(const struct xo_want *v, size_t n, int use_bpf, xo_cb *cb, void *arg)
{
    struct cw_fd_ref *refs = NULL;
    size_t nrefs = 0;
    if (!n)
        return CW_OK;
    int rc = find_refs(v, n, use_bpf, &refs, &nrefs);
    if (rc < 0)
        return rc;
    struct holders h;
    rc = holders_build(&h, refs, nrefs);
    free(refs);
    if (rc < 0)
        return rc;
    struct names nm = {0};
    size_t slots = 16;
    while (slots < 2 * nrefs && slots < 65536)
        slots *= 2;
    nm.slot = calloc(slots, sizeof *nm.slot);
    nm.mask = slots - 1;
    if (!nm.slot) {
        free(h.slot);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cw_fd_ref *r = &h.slot[slot_of(&h, v[i].inode)];
        int pid = r->inode ? r->pid : 0;
        cb(arg, v[i].ref, pid, pid ? comm_of(&nm, pid) : "");
    }
    free(nm.slot);
    free(h.slot);
    return CW_OK;
}
