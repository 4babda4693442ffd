/* diag_internal.h - the cw_diag handle, shared by diag.c (dumps,
 * destroy), netns.c (namespaces) and proc.c (owners). Never installed. */
#ifndef CW_DIAG_INTERNAL_H
#define CW_DIAG_INTERNAL_H

#include "../net/internal.h"

#include <closewise/diag.h>
#include <libmnl/libmnl.h>

/* One netlink socket, created inside the namespace it dumps. */
struct cw__nsconn {
    struct mnl_socket *nl;
    unsigned portid;
    uint64_t ino;
};

/* What an attribution learned about one process: its name and cgroup,
 * pointed to by the cw_holder entries it hands out. */
struct cw__pinfo {
    int pid;
    char comm[16];
    char *cgroup;
    char container[96];
};

struct cw_diag {
    struct cw__nsconn *ns;
    unsigned nns, cap_ns;
    unsigned seq;
    char *buf;
    /* Results of the last attribution (see struct cw_sock.holders). */
    struct cw_holder *holders;
    size_t nholders;
    struct cw__pinfo *pinfo;
    size_t npinfo;
};

/* Open a netlink socket in the current thread's namespace into c. */
int cw__nsconn_open(struct cw__nsconn *c);

/* Open a netlink socket inside the namespace nsfd refers to, from a
 * helper thread (the caller's own namespace never changes). */
int cw__nsconn_open_in(struct cw__nsconn *c, int nsfd);

/* Append c to d's namespaces (d owns c's socket from then on). */
int cw__diag_push_ns(cw_diag *d, const struct cw__nsconn *c);

/* Whether d covers the namespace with inode ino. */
int cw__diag_has_ns(const cw_diag *d, uint64_t ino);

/* cw_diag_dump() restricted to the namespaces whose inodes are in only
 * (nonly of them; only NULL = every namespace of d). */
int cw__diag_dump_some(cw_diag *d, const struct cw_diag_filter *f, const uint64_t *only,
                       size_t nonly, struct cw_sock **out, size_t *count);

/* Forget the previous attribution's holders and process records. */
void cw__diag_free_owners(cw_diag *d);

#endif
