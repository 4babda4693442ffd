/* resets.h - the event that src/bpf/resets.bpf.c sends to user space
 * (src/cli/rstwatch.c) through its ring buffer. Shared by both sides, so
 * only fixed-size integer types; the BPF side gets them from vmlinux.h. */
#ifndef CW_BPF_RESETS_H
#define CW_BPF_RESETS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

/* Bytes of user stack copied from the stack pointer at the syscall: user
 * space unwinds them with the binaries' call frame information (frame
 * pointers not needed). Enough for the usual depth of a close() in an
 * event loop; the copy costs about 0.2 us per KiB. */
#define CW_RST_STACK_BYTES 2048

/* Why the kernel sent the RST, from the kernel's enum sk_rst_reason
 * (its numbering differs between kernels; the BPF side maps names). */
enum cw_rst_kind {
    CW_RST_OTHER = 0,       /* any other reason (see kreason) */
    CW_RST_UNREAD,          /* close() with unread input (TCP_ABORT_ON_CLOSE) */
    CW_RST_LINGER0,         /* close() with SO_LINGER {1,0} */
    CW_RST_ABORT,           /* tcp_disconnect/tcp_abort outside close():
                               connect(AF_UNSPEC), SOCK_DESTROY */
    CW_RST_AFTER_CLOSE,     /* data arrived after close (TCP_ABORT_ON_DATA) */
    CW_RST_LINGER2,         /* FIN_WAIT2 with TCP_LINGER2 < 0 (ABORT_ON_LINGER) */
    CW_RST_MEMORY,          /* too many orphans / memory (ABORT_ON_MEMORY) */
    CW_RST_TIMEOUT,         /* keepalive or retransmission timeout */
    CW_RST_NO_SOCKET,       /* a segment for no socket (NO_SOCKET) */
    CW_RST_KIND_MAX
};

struct cw_rst_event {
    __u64 ts_ns;            /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
    __u64 cgroup_id;        /* cgroup v2 id of the current task */
    __u64 ip, sp, bp;       /* user registers at syscall entry */
    __u64 bx, r12, r13, r14, r15;
    __u32 pid, tid;         /* current task: the closer, if local */
    __u32 netns;            /* inode of the socket's network namespace */
    __u32 kreason;          /* raw enum sk_rst_reason value */
    __u32 kind;             /* enum cw_rst_kind */
    __u32 local;            /* 1: caused by this task's close() */
    __u32 unread;           /* rcv_nxt - copied_seq, less the peer's FIN */
    __u32 unsent;           /* write_seq - snd_una: queued, not acknowledged */
    __s32 state;            /* sk_state at the RST (usually TCP_CLOSE) */
    __u16 family;           /* AF_INET or AF_INET6 */
    __u16 sport, dport;     /* host order */
    __u8 saddr[16], daddr[16];
    char comm[16];
    __u32 stack_len;        /* bytes of stack[] copied, 0 if unreadable */
    __u32 peer_fin;         /* 1: the peer's FIN had arrived (SOCK_DONE) */
    __u32 ppid;             /* the closer's parent process */
    __u32 parent_image;     /* 1: neither has exec'ed since the fork (the
                               same executable file open): the parent's
                               module map is the closer's */
    __u8 stack[CW_RST_STACK_BYTES];
};

#endif
