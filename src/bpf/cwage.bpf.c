/* cwage.bpf.c - the exact moment each TCP socket entered CLOSE_WAIT.
 * tcp_info only bounds that moment (last ACK <= age <= last data); the
 * state change itself is seen by sock:inet_sock_set_state. The program
 * stamps bpf_ktime_get_ns() (CLOCK_MONOTONIC) into a map keyed by the
 * socket's cookie, the identity sock_diag reports, and forgets the socket
 * when it leaves CLOSE_WAIT. Only transitions after the program was
 * loaded are known: user space falls back to the bounds for the others. */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define CW_TCP_CLOSE_WAIT 8
#define CW_IPPROTO_TCP 6

/* LRU: a leak larger than the map evicts the oldest stamps, whose sockets
 * then get bounds again, instead of failing new inserts. */
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 262144);
    __type(key, __u64);     /* socket cookie */
    __type(value, __u64);   /* CLOCK_MONOTONIC ns of the entry */
} cw_entry SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(cw_set_state, struct sock *sk, int oldstate, int newstate)
{
    if (BPF_CORE_READ(sk, sk_protocol) != CW_IPPROTO_TCP)
        return 0;
    if (newstate != CW_TCP_CLOSE_WAIT && oldstate != CW_TCP_CLOSE_WAIT)
        return 0;
    __u64 cookie = bpf_get_socket_cookie(sk);
    if (newstate == CW_TCP_CLOSE_WAIT) {
        __u64 now = bpf_ktime_get_ns();
        bpf_map_update_elem(&cw_entry, &cookie, &now, BPF_ANY);
    } else {
        bpf_map_delete_elem(&cw_entry, &cookie);
    }
    return 0;
}
