/* owners.h - what owners.bpf.c and the CLI (src/cli/owners_bpf.c) share:
 * the record written for each wanted socket descriptor, and the shape of
 * the inode table. */
#ifndef CW_BPF_OWNERS_H
#define CW_BPF_OWNERS_H

struct cw_owner_rec {
    unsigned int inode;
    unsigned int pid;   /* thread group id: the process */
    unsigned int fd;
};

/* Linear probing from (inode * CW_OWNERS_HASH) & mask, at most
 * CW_OWNERS_MAX_PROBES slots: user space sizes the table at 4 slots per
 * inode or more and checks every chain fits. */
#define CW_OWNERS_HASH 2654435761u
#define CW_OWNERS_MAX_PROBES 32

#endif
