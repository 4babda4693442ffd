/* cwtest.h - shared test helpers. The kernel is the oracle: TCP states come
 * from /proc/net/tcp{,6}, descriptors from /proc/self/fd. */
#ifndef CWTEST_H
#define CWTEST_H

#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <closewise/closewise.h>
#include <pthread.h>
#include <sys/types.h>

/* A test case with setup/teardown: teardown fails the test if a
 * descriptor leaked or a socket of this process is left in CLOSE_WAIT.
 * The case runs through cwt_run, which notes whether the test body
 * returned: after a failed assertion (which jumps out of the body,
 * leaving its descriptors open) teardown still stops children and removes
 * namespaces but does not add a misleading leak report to the failure. */
struct cwt_case {
    void (*fn)(void **state);
    int returned;
};
int cwt_setup(void **state);
int cwt_teardown(void **state);
void cwt_run(void **state);
#define CWT_TEST(f) \
    {#f, cwt_run, cwt_setup, cwt_teardown, &(struct cwt_case){.fn = (f)}}

/* Number of open descriptors of this process. */
int cwt_fd_count(void);

/* One row of the kernel's TCP table. Ports are host order. */
struct cwt_sock {
    int state;
    int lport, rport;
    unsigned long inode;
    long rxq;         /* bytes received, not yet read by the process */
    uint32_t laddr;   /* IPv4 local address, host order (0 for IPv6) */
};

/* Read the kernel's TCP tables (IPv4 and IPv6). Returns the number of rows
 * stored in *out (malloc'ed, caller frees). */
int cwt_tcp_table(struct cwt_sock **out);

/* Count sockets in `state` (0 = any) with the given local and remote ports
 * (0 = any). */
int cwt_count(int state, int lport, int rport);

/* Count IPv4 sockets in `state` (0 = any) whose local address is `addr`
 * ("127.0.0.2"). */
int cwt_count_addr(int state, const char *addr);

/* The receive queue of the socket lport -> rport (bytes the kernel holds
 * that its process has not read), or -1 when the kernel has no such row. */
long cwt_rx_queue(int lport, int rport);

/* Poll cwt_count until it equals `want` or timeout_ms passes. Returns the
 * last count seen. */
int cwt_wait_count(int state, int lport, int rport, int want, int timeout_ms);

/* Number of sockets in `state` held open by process `pid` (0 = self). */
int cwt_count_pid(pid_t pid, int state);

/* A connected loopback pair through the library: listener on an ephemeral
 * port of `host` (NULL = 127.0.0.1), client dialled to it, server side
 * accepted. The listener is closed before returning. */
void cwt_pair(const char *host, const struct cw_opts *copts,
              cw_conn **client, cw_conn **server);

/* The same with a plain descriptor on the server side, for tests that need
 * raw syscalls (plain close(), SO_LINGER) as the seed's code used them. */
void cwt_pair_raw(const char *host, cw_conn **client, int *server_fd);

/* Local/remote port of a conn. */
int cwt_local_port(const cw_conn *c);
int cwt_peer_port(const cw_conn *c);

/* Start fn(arg) in a thread; cwt_join waits for it. */
pthread_t cwt_thread(void *(*fn)(void *), void *arg);
void *cwt_join(pthread_t t);

/* fork(), with the child set to die (SIGKILL) with this process, so that
 * a test killed by CTest's timeout or a signal leaves no server behind.
 * The signal comes when the forking thread ends: fork from main(). */
pid_t cwt_fork(void);

/* Run a program (argv[0] is a path) with stdout on a pipe; returns the pid
 * and stores the read end in *out_fd (-1 to inherit stdout). */
pid_t cwt_spawn(char *const argv[], int *out_fd);

/* Read one line from fd into buf within timeout_ms; returns its length or
 * -1 on timeout/EOF. */
int cwt_read_line(int fd, char *buf, size_t size, int timeout_ms);

/* SIGKILL the process and reap it; returns its wait status. */
int cwt_kill(pid_t pid);

/* Wait for a process with a timeout; returns the wait status, or -1 after
 * killing it on timeout. */
int cwt_wait(pid_t pid, int timeout_ms);

/* A child the test forked itself (not with cwt_spawn): teardown kills and
 * reaps it unless cwt_wait or cwt_kill did, so that a failed assertion
 * leaves no server running into the next test, or past the test binary. */
void cwt_track(pid_t pid);

/* Sleep for ms milliseconds. */
void cwt_sleep_ms(int ms);

/* Like cwt_spawn, with stdin, stdout and stderr each on a pipe (any of
 * the out-pointers may be NULL to inherit). */
pid_t cwt_spawn3(char *const argv[], int *in_fd, int *out_fd, int *err_fd);

/* Read everything from fd until EOF or timeout_ms into buf (NUL
 * terminated); returns the length. */
size_t cwt_read_all(int fd, char *buf, size_t size, int timeout_ms);

/* A loopback port that was free a moment ago. */
int cwt_free_port(void);

/* Run a shell command built from fmt; returns its exit status. */
int cwt_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Network namespaces for tests (need root and iproute2): cwt_netns_name
 * makes a name unique to this process, cwt_netns_enter moves the calling
 * thread into one and returns a descriptor for cwt_netns_leave. */
void cwt_netns_name(char *buf, size_t size, const char *suffix);
int cwt_netns_enter(const char *name);
void cwt_netns_leave(int orig);
void cwt_netns_del(const char *name);

/* Two test hosts for "the network does not answer": namespaces a and b
 * (names written to a and b, 64 bytes each) joined by a veth pair,
 * 198.18.0.1 in a and 198.18.0.2 in b, where replies to a are black-holed,
 * so a's SYNs to b are never answered. Returns 0, or nonzero when
 * namespaces cannot be made (not root, no iproute2). Delete both with
 * cwt_netns_del (teardown does it after a failed assertion). */
int cwt_netns_blackhole(char *a, char *b);

/* Number of open descriptors of process pid. */
int cwt_fd_count_pid(pid_t pid);

/* The threads of process pid as the kernel reports them: id and name
 * (comm without its newline; "" for a thread that has not named itself
 * yet or could not be read). Fills at most max; returns how many. */
struct cwt_task {
    pid_t tid;
    char name[16];
};
int cwt_tasks(pid_t pid, struct cwt_task *out, int max);

/* Move this test process into a network namespace of its own, with only
 * `lo` up, so that nothing else on the machine (another test under
 * `ctest -j`, a benchmark) appears in the kernel socket tables it reads.
 * Call it first in main(), before any thread or socket exists. Where
 * unshare(CLONE_NEWNET) is not permitted it prints why and exits with
 * CWT_SKIP (CTest reports the test as skipped, never as passed). */
#define CWT_SKIP 77
void cwt_private_netns(void);

#endif
