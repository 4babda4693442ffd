// SPDX-License-Identifier: GPL-2.0
/* owners.bpf.c - which (pid, fd) hold the wanted socket inodes.
 *
 * A task_file iterator visits every descriptor of every process (threads
 * sharing a descriptor table are visited once) inside the kernel; only
 * sockets whose inode is in the `wanted` table, filled by user space from
 * the sock_diag dump, are written out, as struct cw_owner_rec. This
 * replaces one readlinkat() per descriptor of the machine.
 *
 * The table is an open-addressing hash set in a memory-mapped array map:
 * user space writes it directly (no syscall per inode, where a BPF hash
 * map costs one update each), this program probes it.
 *
 * socket_file_ops is not resolvable as a ksym on every kernel (kallsyms
 * may be restricted), so a socket is recognised by its inode's mode. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "owners.h"

#define CW_S_IFMT 00170000
#define CW_S_IFSOCK 0140000

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, 1);      /* CW_OWNERS_SLOTS(n), set before loading */
    __type(key, __u32);
    __type(value, __u64);        /* an inode, 0 = empty */
} wanted SEC(".maps");

/* Slots - 1 (a power of two minus one), set before loading. */
const volatile __u32 slot_mask = 0;

static __always_inline int is_wanted(__u32 ino)
{
    __u32 i = (ino * CW_OWNERS_HASH) & slot_mask;
    for (int k = 0; k < CW_OWNERS_MAX_PROBES; k++) {
        __u32 idx = (i + (__u32)k) & slot_mask;
        __u64 *v = bpf_map_lookup_elem(&wanted, &idx);
        if (!v || *v == 0)
            return 0;
        if (*v == ino)
            return 1;
    }
    return 0;
}

SEC("iter/task_file")
int owners(struct bpf_iter__task_file *ctx)
{
    struct seq_file *seq = ctx->meta->seq;
    struct task_struct *task = ctx->task;
    struct file *file = ctx->file;
    if (!task || !file)
        return 0;
    /* Direct loads through BTF pointers (CO-RE relocated by vmlinux.h's
     * preserve_access_index), which the verifier turns into guarded
     * loads: cheaper than a bpf_probe_read_kernel() call per field, and
     * this runs once per descriptor of the machine. */
    struct inode *inode = file->f_inode;
    if (!inode)
        return 0;
    if ((inode->i_mode & CW_S_IFMT) != CW_S_IFSOCK)
        return 0;
    __u32 ino = (__u32)inode->i_ino;
    if (!ino || !is_wanted(ino))
        return 0;
    struct cw_owner_rec rec = {
        .inode = ino,
        .pid = (__u32)task->tgid,
        .fd = ctx->fd,
    };
    bpf_seq_write(seq, &rec, sizeof rec);
    return 0;
}
