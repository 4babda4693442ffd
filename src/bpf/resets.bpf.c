/* resets.bpf.c - report every TCP RST the kernel sends, with what the
 * socket still held and, when a process's close() caused it, that
 * process and its user stack. Attached to tcp:tcp_send_reset, which fires
 * in the closer's context for the close paths (tcp_close -> __tcp_close
 * and tcp_disconnect); for the others (a segment after close, timers,
 * segments for no socket) the current task is whoever the softirq
 * interrupted, so those carry no pid and no stack. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "resets.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by user space before load. */
const volatile __u32 target_tgid = 0;   /* 0: every process */
const volatile __u32 want_all = 0;      /* 1: also resets not from a close */

/* Events the ring buffer had no room for: user space reports them. */
__u64 drops = 0;

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 4 << 20);
} events SEC(".maps");

#define WAKEUP_BYTES (512 << 10)   /* an eighth of the ring */
#define WAKEUP_QUIET_NS 10000000ull /* at most ~100 timed wakeups a second */
__u64 last_wakeup = 0;

#define REASON_IS(r, name) \
    (bpf_core_enum_value_exists(enum sk_rst_reason, name) && \
     (r) == (__u32)bpf_core_enum_value(enum sk_rst_reason, name))

/* SO_LINGER {1,0}: the flag set and no linger time. */
static __always_inline int linger_zero(const struct sock *sk)
{
    unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
    int bit = bpf_core_enum_value(enum sock_flags, SOCK_LINGER);
    return (flags >> bit & 1) && BPF_CORE_READ(sk, sk_lingertime) == 0;
}

static __always_inline __u32 classify(__u32 r, int has_reason, const struct sock *sk,
                                      __u32 unread)
{
    if (!has_reason)   /* before Linux 6.10: no reason field, judge by state */
        return !sk ? CW_RST_NO_SOCKET : unread ? CW_RST_UNREAD
             : linger_zero(sk) ? CW_RST_LINGER0 : CW_RST_OTHER;
    if (REASON_IS(r, SK_RST_REASON_TCP_ABORT_ON_CLOSE))
        return CW_RST_UNREAD;
    if (REASON_IS(r, SK_RST_REASON_TCP_STATE) ||
        REASON_IS(r, SK_RST_REASON_TCP_DISCONNECT_WITH_DATA))
        return sk && linger_zero(sk) ? CW_RST_LINGER0 : CW_RST_ABORT;
    if (REASON_IS(r, SK_RST_REASON_TCP_ABORT_ON_DATA))
        return CW_RST_AFTER_CLOSE;
    if (REASON_IS(r, SK_RST_REASON_TCP_ABORT_ON_LINGER))
        return CW_RST_LINGER2;
    if (REASON_IS(r, SK_RST_REASON_TCP_ABORT_ON_MEMORY))
        return CW_RST_MEMORY;
    if (REASON_IS(r, SK_RST_REASON_TCP_KEEPALIVE_TIMEOUT))
        return CW_RST_TIMEOUT;
    if (REASON_IS(r, SK_RST_REASON_NO_SOCKET))
        return CW_RST_NO_SOCKET;
    return CW_RST_OTHER;
}

/* Local and peer address of a socket (full, request or timewait: the
 * common part is the same). */
static __always_inline void sock_addrs(const struct sock *sk, struct cw_rst_event *e)
{
    e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
    e->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
    /* Moving to TCP_CLOSE released the port (inet_num = 0) before the
     * RST went out; the source port of the connection is still there. */
    int st = BPF_CORE_READ(sk, __sk_common.skc_state);
    if (!e->sport && st != 6 && st != 12)
        e->sport = __builtin_bswap16(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
    e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
    if (e->family == 10 /* AF_INET6 */) {
        /* (BPF_CORE_READ_INTO would copy sizeof(*dst): one byte.) */
        bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
        bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
    } else {
        BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
        BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
    }
}

/* A reset answering a segment with no socket: the addresses are the
 * segment's, reversed (its destination is our side). */
static __always_inline void skb_addrs(const struct sk_buff *skb, struct cw_rst_event *e)
{
    unsigned char *head = BPF_CORE_READ(skb, head);
    __u16 nh = BPF_CORE_READ(skb, network_header);
    __u16 th = BPF_CORE_READ(skb, transport_header);
    __u8 version = 0;
    __u16 ports[2] = {0, 0};
    bpf_probe_read_kernel(&version, 1, head + nh);
    bpf_probe_read_kernel(ports, sizeof ports, head + th);
    e->sport = __builtin_bswap16(ports[1]);
    e->dport = __builtin_bswap16(ports[0]);
    if (version >> 4 == 6) {
        e->family = 10;
        bpf_probe_read_kernel(e->daddr, 16, head + nh + 8);
        bpf_probe_read_kernel(e->saddr, 16, head + nh + 24);
    } else {
        e->family = 2;
        bpf_probe_read_kernel(e->daddr, 4, head + nh + 12);
        bpf_probe_read_kernel(e->saddr, 4, head + nh + 16);
    }
}

/* The user registers at syscall entry and a copy of the stack above the
 * stack pointer: user space unwinds them with the call frame information
 * of each binary, which needs no frame pointers (the C library's close()
 * wrapper makes no frame, so a frame-pointer walk would skip exactly the
 * caller of close()). Near the top of a stack mapping the long copy
 * would fault: then a shorter one. */
static __always_inline void user_stack(struct cw_rst_event *e)
{
    struct task_struct *task = bpf_get_current_task_btf();
    struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
#if defined(__TARGET_ARCH_x86)
    e->ip = regs->ip;
    e->sp = regs->sp;
    e->bp = regs->bp;
    e->bx = regs->bx;
    e->r12 = regs->r12;
    e->r13 = regs->r13;
    e->r14 = regs->r14;
    e->r15 = regs->r15;
#else   /* user space unwinds x86-64 only; elsewhere the innermost frame */
    e->ip = PT_REGS_IP_CORE(regs);
    e->sp = PT_REGS_SP_CORE(regs);
#endif
    if (bpf_probe_read_user(e->stack, CW_RST_STACK_BYTES, (void *)e->sp) == 0) {
        e->stack_len = CW_RST_STACK_BYTES;
        return;
    }
    /* The long copy crossed the end of the stack mapping, which is then
     * the next page boundary: copy up to it, every frame there is. (A
     * fixed shorter copy lost the outer frames whenever the stack's
     * random start put close() within 2 KiB of the top.) */
    __u32 len = (4096 - (__u32)(e->sp & 4095)) & (CW_RST_STACK_BYTES - 1);
    if (len && bpf_probe_read_user(e->stack, len, (void *)e->sp) == 0)
        e->stack_len = len;
    else if (bpf_probe_read_user(e->stack, CW_RST_STACK_BYTES / 8, (void *)e->sp) == 0)
        e->stack_len = CW_RST_STACK_BYTES / 8;
}

/* A raw tracepoint attaches by name (no tracefs needed). Its arguments
 * are trace_tcp_send_reset's: sk, skb and, since Linux 6.10, the reason. */
SEC("raw_tp/tcp_send_reset")
int on_send_reset(struct bpf_raw_tracepoint_args *ctx)
{
    const struct sock *sk = (const struct sock *)ctx->args[0];
    const struct sk_buff *skb = (const struct sk_buff *)ctx->args[1];
    int has_reason = bpf_core_type_exists(enum sk_rst_reason);
    __u32 r = has_reason ? (__u32)ctx->args[2] : 0;
    __u32 unread = 0, unsent = 0, peer_fin = 0;
    int state = sk ? BPF_CORE_READ(sk, __sk_common.skc_state) : 0;
    /* Timewait and request sockets have no tcp_sock behind them. */
    if (sk && state != 6 /* TIME_WAIT */ && state != 12 /* NEW_SYN_RECV */) {
        const struct tcp_sock *tp = (const struct tcp_sock *)sk;
        unread = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
        unsent = BPF_CORE_READ(tp, write_seq) - BPF_CORE_READ(tp, snd_una);
        /* A received FIN (tcp_fin() sets SOCK_DONE) takes a sequence
         * number too: it is not an unread byte. */
        unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
        peer_fin = flags >> bpf_core_enum_value(enum sock_flags, SOCK_DONE) & 1;
        if (unread && peer_fin)
            unread--;
    }
    __u32 kind = classify(r, has_reason, sk, unread);
    /* Only the close paths run in the closer's own context. */
    int in_task = kind == CW_RST_UNREAD || kind == CW_RST_LINGER0 || kind == CW_RST_ABORT;
    int local = kind == CW_RST_UNREAD || kind == CW_RST_LINGER0;
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!local && !want_all)
        return 0;
    if (target_tgid && (!in_task || tgid != target_tgid))
        return 0;

    struct cw_rst_event *e = bpf_ringbuf_reserve(&events, sizeof *e, 0);
    if (!e) {
        __sync_fetch_and_add(&drops, 1);
        return 0;
    }
    /* The stack copy is read only as far as it was filled. */
    __builtin_memset(e, 0, __builtin_offsetof(struct cw_rst_event, stack));
    e->ts_ns = bpf_ktime_get_ns();
    e->kreason = r;
    e->kind = kind;
    e->local = local;
    e->unread = unread;
    e->unsent = unsent;
    e->peer_fin = peer_fin;
    e->state = state;
    if (sk) {
        sock_addrs(sk, e);
        e->netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
    } else if (skb) {
        skb_addrs(skb, e);
    }
    if (in_task) {
        __u64 pt = bpf_get_current_pid_tgid();
        e->pid = pt >> 32;
        e->tid = (__u32)pt;
        e->cgroup_id = bpf_get_current_cgroup_id();
        /* The process's name, as ps shows it, not the closing thread's
         * ("cw-loop" in a multi-loop server). */
        struct task_struct *leader =
            BPF_CORE_READ((struct task_struct *)bpf_get_current_task_btf(), group_leader);
        if (bpf_core_read_str(e->comm, sizeof e->comm, &leader->comm) < 0)
            bpf_get_current_comm(e->comm, sizeof e->comm);
        user_stack(e);
        /* A fork-per-connection child often exits right after its close,
         * before user space reads its map: its parent's serves while
         * both still run the image of the fork (exec opens the file anew,
         * so the same struct file means no exec on either side). */
        struct task_struct *parent = BPF_CORE_READ(leader, real_parent);
        struct file *exe = BPF_CORE_READ(leader, mm, exe_file);
        e->ppid = BPF_CORE_READ(parent, tgid);
        e->parent_image = exe && exe == BPF_CORE_READ(parent, mm, exe_file);
    }
    /* Waking the reader costs an interrupt (a VM exit on a virtual
     * machine: ~1 us more per event), so at a high rate the reader polls
     * on a short timer and is woken only for a backlog. The first event
     * after a quiet spell wakes it at once: a short-lived closer must
     * still be there when its stack is symbolized. */
    __u64 backlog = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
    int wake = backlog >= WAKEUP_BYTES || e->ts_ns - last_wakeup > WAKEUP_QUIET_NS;
    if (wake)
        last_wakeup = e->ts_ns;   /* a race between CPUs costs one wakeup */
    bpf_ringbuf_submit(e, wake ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
    return 0;
}
