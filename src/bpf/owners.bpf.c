// SPDX-License-Identifier: GPL-2.0
/* owners.bpf.c - which (pid, fd) hold the wanted socket inodes.
 *
 * A task_file iterator visits every descriptor of every process (threads
 * sharing a descriptor table are visited once) inside the kernel; only
 * sockets whose inode is in the `wanted` hash map, filled by user space
 * from the sock_diag dump, are written out, as struct cw_owner_rec. This
 * replaces one readlinkat() per descriptor of the machine.
 *
 * socket_file_ops is not resolvable as a ksym on every kernel (kallsyms
 * may be restricted), so a socket is recognised by its inode's mode. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "owners.h"

#define CW_S_IFMT 00170000
#define CW_S_IFSOCK 0140000

char LICENSE[] SEC("license") = "GPL";

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);      /* sized by user space before loading */
    __type(key, __u32);
    __type(value, __u8);
} wanted SEC(".maps");

SEC("iter/task_file")
int owners(struct bpf_iter__task_file *ctx)
{
    struct seq_file *seq = ctx->meta->seq;
    struct task_struct *task = ctx->task;
    struct file *file = ctx->file;
    if (!task || !file)
        return 0;
    struct inode *inode = BPF_CORE_READ(file, f_inode);
    if (!inode)
        return 0;
    umode_t mode = BPF_CORE_READ(inode, i_mode);
    if ((mode & CW_S_IFMT) != CW_S_IFSOCK)
        return 0;
    __u32 ino = (__u32)BPF_CORE_READ(inode, i_ino);
    if (!bpf_map_lookup_elem(&wanted, &ino))
        return 0;
    struct cw_owner_rec rec = {
        .inode = ino,
        .pid = (__u32)BPF_CORE_READ(task, tgid),
        .fd = ctx->fd,
    };
    bpf_seq_write(seq, &rec, sizeof rec);
    return 0;
}
