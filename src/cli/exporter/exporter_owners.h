/* exporter_owners.h - name the processes holding many sockets at once,
 * from their inodes alone (8 bytes a socket where cw_diag_attribute()
 * wants a whole cw_sock): the exporter's first snapshot on a machine with
 * a large leak has tens of thousands of owners to name. */
#ifndef CW_CLI_EXPORTER_OWNERS_H
#define CW_CLI_EXPORTER_OWNERS_H

#include <stddef.h>
#include <stdint.h>

/* A socket to name: its inode, and the caller's reference to it. */
struct xo_want {
    uint32_t inode;
    uint32_t ref;
};

/* Called once per want (any order): pid 0 and comm "" when no process
 * holds the inode (it closed, or its /proc entry was unreadable). When
 * several descriptors hold it, the lowest pid (then fd) is the owner, as
 * cw_diag_attribute() has it. */
typedef void xo_cb(void *arg, uint32_t ref, int pid, const char *comm);

/* Find the holders of v's inodes (n of them, nonzero)
 * with the BPF task_file iterator when use_bpf and it loads (one walk of
 * the descriptor tables in the kernel), else with one /proc scan; then
 * call cb for each. Returns CW_OK or -errno (then cb was not called). */
int xo_name(const struct xo_want *v, size_t n, int use_bpf, xo_cb *cb, void *arg);

#endif
