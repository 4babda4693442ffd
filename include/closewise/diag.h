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
 * once with cw_diag_close(), which NULLs it. A handle covers one or more
 * network namespaces: the caller's by default, others added with
 * cw_diag_add_netns() or cw_diag_add_all_netns(). The caller's own
 * namespace is never changed: each namespace is entered only by a short
 * helper thread that creates the netlink socket there (a netlink socket
 * stays bound to the namespace it was created in).
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
    CW_OWNER_UNKNOWN,       /* not found: the holder's /proc entry was
                               unreadable (permission denied) */
    CW_OWNER_GONE           /* closed while being looked up: its process
                               exited (or closed it) during the scan */
};

/* One process descriptor holding a socket. A socket inherited across
 * fork() or passed over a Unix socket has several. */
struct cw_holder {
    int pid;
    int fd;
    char comm[16];
    const char *cgroup;     /* cgroup v2 path ("/system.slice/x.service"),
                               "" when unreadable */
    const char *container;  /* "docker:<id>", "containerd:<id>",
                               "k8s-pod:<uid>", "unit:<name>", or "" */
};

/* Which owner lookup ran (struct cw_attr_stats.method). */
enum cw_attr_method {
    CW_ATTR_NONE = 0,       /* nothing to look up */
    CW_ATTR_PROC,           /* readlinkat() over /proc/<pid>/fd */
    CW_ATTR_BPF             /* a BPF task_file iterator (see the CLI) */
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
    /* Every holder (pid, fd order), the first being pid/fd/comm above:
     * owned by the cw_diag handle, valid until its next
     * cw_diag_attribute() or cw_diag_close(). NULL/0 when none. */
    const struct cw_holder *holders;
    unsigned nholders;
    /* Set by cw_diag_dump(): the network namespace (inode of its nsfs
     * file, as in /proc/<pid>/ns/net) the socket lives in. */
    uint64_t netns;
};

#define CW_DIAG_MAX_PORTS 16
#define CW_DIAG_MAX_ADDRS 16

/* Where a port of cw_diag_filter_port() must be. */
enum cw_port_side { CW_PORT_EITHER = 0, CW_PORT_LOCAL, CW_PORT_PEER };

/* One address prefix; IPv4 is kept IPv4-mapped (::ffff:a.b.c.d, bits
 * counted from the IPv6 start) so that it matches both families. */
struct cw_diag_prefix {
    uint8_t addr[16];
    unsigned bits;
};

/* What to dump. Start from cw_diag_filter_init(). The state mask is
 * applied by the kernel; ports and addresses while parsing the reply.
 * Within one kind (local port, peer port, either port, address) any
 * listed value matches; the kinds given must all match. */
struct cw_diag_filter {
    unsigned states;        /* CW_STATE_BIT mask, 0 = every state */
    int family;             /* AF_INET, AF_INET6, 0 = both */
    int port;               /* local or peer port, -1 = any */
    int sport;              /* local port, -1 = any */
    int dport;              /* peer port, -1 = any */
    int want_info;          /* also ask for tcp_info (costs kernel time) */
    /* More ports, added with cw_diag_filter_port() (index: cw_port_side). */
    unsigned nports[3];
    uint16_t ports[3][CW_DIAG_MAX_PORTS];
    /* Local or peer address prefixes, added with cw_diag_filter_addr(). */
    unsigned naddrs;
    struct cw_diag_prefix addrs[CW_DIAG_MAX_ADDRS];
};

/* Counters of one cw_diag_attribute() run. */
struct cw_attr_stats {
    unsigned pids_scanned;   /* /proc/<pid>/fd directories read */
    unsigned pids_unreadable;/* /proc/<pid>/fd we could not read (EACCES) */
    unsigned found;          /* sockets given an owner process */
    unsigned unknown;        /* sockets left CW_OWNER_UNKNOWN */
    unsigned pids_exited;    /* processes that exited while being read */
    unsigned gone;           /* sockets closed during the scan
                                (CW_OWNER_GONE) */
    int method;              /* enum cw_attr_method */
};

typedef struct cw_diag cw_diag;

/* Every state; no port, address or family restriction; no tcp_info. */
void cw_diag_filter_init(struct cw_diag_filter *f);

/* Add a numeric IPv4/IPv6 address or CIDR prefix ("10.0.0.0/8",
 * "[::1]", "fd00::/8") to f's address set: a socket matches when its
 * local or peer address is in any of them. An IPv4 address also matches
 * the IPv4-mapped IPv6 form (::ffff:10.1.2.3) and the other way round.
 * Returns CW_OK, CW_EINVAL (unparsable, bad prefix length) or -ENOSPC
 * (CW_DIAG_MAX_ADDRS reached). */
int cw_diag_filter_addr(struct cw_diag_filter *f, const char *text);

/* Add a port (0-65535) on side (enum cw_port_side) to f. Returns CW_OK,
 * CW_EINVAL or -ENOSPC (CW_DIAG_MAX_PORTS reached for that side). */
int cw_diag_filter_port(struct cw_diag_filter *f, int side, int port);

/* Whether s passes f's port and address (not state) filters: 1 or 0. */
int cw_diag_filter_match(const struct cw_diag_filter *f, const struct cw_sock *s);

/* Open a sock_diag netlink socket in the caller's network namespace.
 * *out is owned by the caller. Returns CW_OK or -errno. */
int cw_diag_open(cw_diag **out);

/* Open a handle on the network namespace at path (a /proc/<pid>/ns/net
 * file or a bind mount such as /run/netns/NAME) instead of the caller's.
 * Entering another namespace needs CAP_SYS_ADMIN (-EPERM otherwise).
 * Returns CW_OK or -errno. */
int cw_diag_open_netns(cw_diag **out, const char *path);

/* Add the namespace at path to d (nothing if d covers it already).
 * Returns 1 added, 0 already covered, or -errno (-EPERM unprivileged). */
int cw_diag_add_netns(cw_diag *d, const char *path);

/* Add every distinct network namespace of the machine: those of the
 * processes in /proc/<pid>/ns/net and the bind mounts under /run/netns.
 * Namespaces that cannot be opened or entered are counted in *skipped
 * (may be NULL). Returns how many were added (>= 0) or -errno. */
int cw_diag_add_all_netns(cw_diag *d, unsigned *skipped);

/* How many namespaces d covers, and the inode of the i-th (0 if out of
 * range); the first is the one d was opened on. */
unsigned cw_diag_netns_count(const cw_diag *d);
uint64_t cw_diag_netns_inode(const cw_diag *d, unsigned i);

/* Close the netlink socket, free the handle, set *dp to NULL. */
int cw_diag_close(cw_diag **dp);

/* Dump the TCP sockets (IPv4 then IPv6) matching f (NULL = all) of every
 * namespace d covers, each tagged with its namespace. On success *out is
 * a malloc'ed array of *count sockets, sorted by cookie and without
 * duplicates (the dump is not atomic; cookies are unique machine-wide),
 * which the caller releases with free(); *out may be NULL when *count is
 * 0. Returns the count (>= 0) or -errno. */
int cw_diag_dump(cw_diag *d, const struct cw_diag_filter *f,
                 struct cw_sock **out, size_t *count);

/* Like cw_diag_dump(), without the array: cb(s, arg) is called for each
 * matching socket as its reply is parsed (s is valid during the call
 * only), so memory stays constant however many sockets there are. The
 * order is the kernel's and, since the dump is not atomic, a socket that
 * moved during it can come twice: dedupe by cookie if that matters.
 * Returns CW_OK or -errno. */
typedef void cw_diag_each_cb(const struct cw_sock *s, void *arg);
int cw_diag_dump_each(cw_diag *d, const struct cw_diag_filter *f, cw_diag_each_cb *cb,
                      void *arg);

/* Name the processes holding each socket of v (owner, pid/fd/comm of the
 * first holder, and every holder with its cgroup and container in
 * holders[]), reading /proc/<pid>/fd of every process that has
 * descriptors (only after the dump, with an inode table sized to v). A
 * socket with inode 0 waiting in an accept queue is given the listener's
 * processes (d dumps the listeners of its namespace). Unreadable /proc
 * entries leave CW_OWNER_UNKNOWN; a socket closed during the scan (its
 * process exited) becomes CW_OWNER_GONE. st may be NULL. Returns CW_OK or
 * -errno (-ENOMEM, or /proc itself unreadable). */
int cw_diag_attribute(cw_diag *d, struct cw_sock *v, size_t n,
                      struct cw_attr_stats *st);

/* One (inode, pid, fd) found by an owner lookup other than /proc. */
struct cw_fd_ref {
    uint32_t inode;
    int pid;
    int fd;
};

/* Like cw_diag_attribute(), with the descriptors already found by the
 * caller (e.g. a BPF task_file iterator that saw every descriptor of
 * every process): refs (n_refs, any order, caller's) replaces the /proc
 * scan; process names and cgroups are still read from /proc. st->method
 * is set to method. */
int cw_diag_attribute_refs(cw_diag *d, struct cw_sock *v, size_t n,
                           const struct cw_fd_ref *refs, size_t n_refs,
                           int method, struct cw_attr_stats *st);

/* The /proc scan of cw_diag_attribute() alone, for callers that keep
 * inodes rather than whole cw_socks: every (inode, pid, fd) holding one of
 * inodes (n of them, any order, 0s ignored). *out is malloc'ed, *nout
 * distinct entries sorted by inode, pid, fd, released by the caller with
 * free() (NULL when none).
 * st (may be NULL) gets the scan counters. Returns CW_OK or -errno. */
int cw_diag_find_holders(const uint32_t *inodes, size_t n, struct cw_fd_ref **out,
                         size_t *nout, struct cw_attr_stats *st);

/* The distinct socket inodes cw_diag_attribute() would look for in v
 * (listeners of never-accepted sockets included): a malloc'ed array the
 * caller frees, *count entries. Returns CW_OK or -errno. */
int cw_diag_wanted_inodes(cw_diag *d, const struct cw_sock *v, size_t n,
                          uint32_t **out, size_t *count);

/* Destroy one socket with SOCK_DESTROY (in its own namespace, s->netns,
 * which d must cover), addressed by 4-tuple and cookie,
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
 * "closewait" (any case), or ss(8)'s names ("estab", "listening",
 * "closed", "fin-wait-1"). Returns the state (enum cw_tcp_state) or
 * CW_EINVAL. */
int cw_tcp_state_parse(const char *name);

/* Parse a comma-separated list of state names or ss(8) groups ("all",
 * "connected", "synchronized", "bucket", "big") into a CW_STATE_BIT mask.
 * Returns CW_OK, or CW_EINVAL with *bad_at (if not NULL) the offset of the
 * first word that is neither. */
int cw_tcp_states_parse(const char *list, unsigned *mask, size_t *bad_at);

/* ss(8)'s filter name of a state ("close-wait"), or NULL; and the i-th
 * group name ("all", ...) or NULL past the last: for help and completion. */
const char *cw_tcp_state_filter_name(int state);
const char *cw_tcp_state_group_name(int i);

/* Format the local (peer = 0) or peer address as "127.0.0.1:80" or
 * "[::1]:80" into buf. Returns the length or CW_EINVAL. */
int cw_sock_addr(const struct cw_sock *s, int peer, char *buf, size_t size);

/* The readable container identity of a cgroup v2 path into buf:
 * "k8s-pod:<uid>" for a Kubernetes pod, "docker:<id12>", "containerd:<id12>",
 * "crio:<id12>", "podman:<id12>" for a container scope, "unit:<name>" for
 * another systemd service or scope, "" for none (e.g. "/"). Returns buf. */
const char *cw_cgroup_container(const char *path, char *buf, size_t size);

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
