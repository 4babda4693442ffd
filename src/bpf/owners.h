/* owners.h - the record owners.bpf.c writes for each wanted socket
 * descriptor, shared with the CLI (src/cli/owners_bpf.c). */
#ifndef CW_BPF_OWNERS_H
#define CW_BPF_OWNERS_H

struct cw_owner_rec {
    unsigned int inode;
    unsigned int pid;   /* thread group id: the process */
    unsigned int fd;
};

#endif
