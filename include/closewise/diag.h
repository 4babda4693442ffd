/*
 * closewise/diag.h - the socket state inspector: dump the kernel's TCP
 * sockets through sock_diag (NETLINK_SOCK_DIAG), name the process that
 * holds each one, explain what a stuck socket's fields mean, and destroy
 * sockets with SOCK_DESTROY.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 *
 * Conventions are those of conn.h: CW_OK or a negative result code
 * (-errno or CW_E*); a cw_diag handle is owned by its creator and released
 * once with cw_diag_close(), which NULLs it. Only sockets of the caller's
 * network namespace are visible.
 */
#ifndef CLOSEWISE_DIAG_H
#define CLOSEWISE_DIAG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bit of a TCP state (enum cw_tcp_state) in a state mask. */
#define CW_STATE_BIT(s) (1u << (s))
#define CW_STATES_ALL 0xFFEu

/* Who holds a socket, as far as cw_diag_attribute() could tell. */
enum cw_owner {
    CW_OWNER_UNCHECKED = 0, /* attribution was not asked for */
    CW_OWNER_PROCESS,       /* pid/fd/comm hold the socket */
    CW_OWNER_LISTENER,      /* never accepted: it waits in the accept queue
                               of the listener on listener_port, whose
                               process is pid/fd/comm */
    CW_OWNER_NONE,          /* no process: TIME_WAIT or an orphan the
                               kernel finishes alone */
    CW_OWNER_UNKNOWN        /* not found: the holder's /proc entry was
                               unreadable, it is in another network
                               namespace, or it closed meanwhile */
};

/* One TCP socket as the kernel reported it. Addresses are in network
 * byte order (IPv4 uses the first 4 bytes), ports in host order. */
struct cw_sock {
    uint64_t cookie;        /* the kernel's identity for the socket: a
                               4-tuple can be reused, a cookie cannot */
    int family;             /* AF_INET or AF_INET6 */
    int state;              /* enum cw_tcp_state */
    uint8_t src[16], dst[16];
    uint16_t sport, dport;
    uint32_t ifindex;
    uint32_t rqueue;        /* Recv-Q: for CLOSE_WAIT it counts the FIN */
    uint32_t wqueue;        /* Send-Q */
    uint32_t uid;
    uint32_t inode;         /* 0: no socket file (TIME_WAIT, orphan, or
                               not yet accepted) */
    int timer;              /* 0 none, 1 retransmit, 2 keepalive or
                               FIN_WAIT2, 3 TIME_WAIT, 4 zero-window probe */
    uint32_t expires_ms;    /* when the timer fires */
    uint32_t timer_retrans; /* retransmissions/probes of that timer */
    int shutdown;           /* sk_shutdown bits (1 RCV, 2 SEND), -1 unknown */
    int has_info;           /* the tcp_info fields below are valid */
    uint32_t last_data_recv_ms; /* since the last data segment arrived */
    uint32_t last_ack_recv_ms;  /* since the last ACK arrived */
    uint32_t last_data_sent_ms;
    uint32_t retransmits;   /* unrecovered retransmissions in a row */
    uint32_t total_retrans;
    /* Filled by cw_diag_attribute(). */
    int owner;              /* enum cw_owner */
    int pid;                /* 0 when unknown */
    int fd;                 /* -1 when unknown */
    char comm[16];          /* "" when unknown */
    uint16_t listener_port; /* CW_OWNER_LISTENER: the listener's port */
};

/* What to dump. Start from cw_diag_filter_init(). The state mask is
 * applied by the kernel; ports and addresses while parsing the reply. */
struct cw_diag_filter {
    unsigned states;        /* CW_STATE_BIT mask, 0 = every state */
    int family;             /* AF_INET, AF_INET6, 0 = both */
    int port;               /* local or peer port, -1 = any */
    int sport;              /* local port, -1 = any */
    int dport;              /* peer port, -1 = any */
    int addr_family;        /* 0 = any address, else addr is local or peer */
    uint8_t addr[16];
    int want_info;          /* also ask for tcp_info (costs kernel time) */
};

/* Counters of one cw_diag_attribute() run. */
struct cw_attr_stats {
    unsigned pids_scanned;   /* /proc/<pid>/fd directories read */
    unsigned pids_unreadable;/* /proc/<pid>/fd we could not open (EACCES) */
    unsigned found;          /* sockets given an owner process */
    unsigned unknown;        /* sockets left CW_OWNER_UNKNOWN */
};

typedef struct cw_diag cw_diag;

/* Every state; no port, address or family restriction; no tcp_info. */
void cw_diag_filter_init(struct cw_diag_filter *f);

/* Parse a numeric IPv4/IPv6 address (brackets allowed) into f's address
 * filter. Returns CW_OK or CW_EINVAL. */
int cw_diag_filter_addr(struct cw_diag_filter *f, const char *text);

/* Open a sock_diag netlink socket. *out is owned by the caller. Returns
 * CW_OK or -errno. */
int cw_diag_open(cw_diag **out);

/* Close the netlink socket, free the handle, set *dp to NULL. */
int cw_diag_close(cw_diag **dp);

/* Dump the TCP sockets (IPv4 then IPv6) matching f (NULL = all). On
 * success *out is a malloc'ed array of *count sockets, sorted by cookie
 * and without duplicates (the dump is not atomic), which the caller
 * releases with free(); *out may be NULL when *count is 0. Returns the
 * count (>= 0) or -errno. */
int cw_diag_dump(cw_diag *d, const struct cw_diag_filter *f,
                 struct cw_sock **out, size_t *count);

/* Name the process holding each socket of v (pid, fd, comm, owner). Only
 * the /proc entries needed are read: processes whose uid matches a
 * socket's uid first, the others only on a miss, and the scan stops once
 * every socket is found. A socket with inode 0 waiting in an accept queue
 * is given the listener's process (d dumps the listeners). Unreadable
 * /proc entries leave CW_OWNER_UNKNOWN. st may be NULL. Returns CW_OK or
 * -errno (-ENOMEM, or /proc itself unreadable). */
int cw_diag_attribute(cw_diag *d, struct cw_sock *v, size_t n,
                      struct cw_attr_stats *st);

/* Destroy one socket with SOCK_DESTROY, addressed by 4-tuple and cookie,
 * so that a reused 4-tuple is never hit. The peer gets a RST and the port
 * is freed, but the owning process still holds its descriptor until it
 * closes it (its next read sees end of stream or an error). Returns CW_OK,
 * -EPERM (needs CAP_NET_ADMIN), -EOPNOTSUPP (kernel built without
 * CONFIG_INET_DIAG_DESTROY, or a state it cannot destroy), -ENOENT (gone
 * already) or another -errno. */
int cw_diag_destroy(cw_diag *d, const struct cw_sock *s);

/* Whether the running kernel was built with CONFIG_INET_DIAG_DESTROY,
 * from /proc/config.gz or /boot/config-<release>: 1 yes, 0 no, -ENOENT
 * when no kernel config is readable. */
int cw_diag_destroy_configured(void);

/* Parse a state name: "close-wait", "CLOSE_WAIT", "close_wait",
 * "closewait" (any case). Returns the state (enum cw_tcp_state) or
 * CW_EINVAL. */
int cw_tcp_state_parse(const char *name);

/* Format the local (peer = 0) or peer address as "127.0.0.1:80" or
 * "[::1]:80" into buf. Returns the length or CW_EINVAL. */
int cw_sock_addr(const struct cw_sock *s, int peer, char *buf, size_t size);

/* Explain in plain words who must act on this socket and what the kernel
 * fields say. The text goes into buf (at least 160 bytes for the longest
 * explanation) and is returned. Never NULL. */
const char *cw_sock_explain(const struct cw_sock *s, char *buf, size_t size);

/* Bounds on how long a CLOSE_WAIT socket has been in that state, from its
 * tcp_info (needs want_info): a bare FIN does not update last_data_recv,
 * its ACK updates last_ack_recv. Sets *min_ms and *max_ms and returns
 * CW_OK, or CW_EINVAL when the socket has no tcp_info. */
int cw_sock_close_wait_age(const struct cw_sock *s, uint32_t *min_ms,
                           uint32_t *max_ms);

#ifdef __cplusplus
}
#endif
#endif
