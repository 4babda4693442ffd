/*
 * closewise/server.h - the reference authentication server: a line
 * protocol (docs/PROTOCOL.md) on the cw_loop event loop, where every
 * connection ends correctly. A server-initiated close delivers its last
 * line (write, shutdown(SHUT_WR), discard input until the peer's FIN or a
 * lingering deadline, close); a peer's FIN or RST closes the connection in
 * the same loop iteration; descriptor exhaustion (EMFILE/ENFILE) neither
 * spins nor stops the server.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 * Conventions are those of conn.h: CW_OK or a negative result code, and
 * handles released exactly once by a function that NULLs them.
 */
#ifndef CLOSEWISE_SERVER_H
#define CLOSEWISE_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Longest request line, terminator not counted. */
#define CW_SERVER_MAX_LINE 1024

typedef struct cw_server cw_server;

/* How the server ends a connection it decides to end. */
enum cw_server_close {
    CW_SERVER_GRACEFUL = 0, /* final line, SHUT_WR, linger for peer FIN */
    CW_SERVER_LINGER0 = 1,  /* final line, SO_LINGER {1,0}, close: RST
                               (the seed's trap: the line may be lost) */
    CW_SERVER_PLAIN = 2     /* final line, close() at once: RST if unread
                               input is pending (the other trap) */
};

struct cw_server_opts {
    const char *host;           /* listen address, NULL = "127.0.0.1";
                                   "::" = every address, dual stack */
    uint16_t port;              /* 0 = ephemeral, see cw_server_port() */
    int backlog;                /* 0 = SOMAXCONN */
    int64_t idle_timeout_ms;    /* a session must complete a request
                                   within this (default 30 s); before
                                   login, counted from connecting */
    int64_t lingering_time_ms;  /* cap on a lingering close (default 30 s) */
    int64_t lingering_timeout_ms; /* max wait between peer reads while
                                   lingering (default 5 s) */
    int64_t write_timeout_ms;   /* longest a blocked reply may make no
                                   progress (default 10 s) */
    int max_conns;              /* default 1024; accept pauses at the cap */
    enum cw_server_close close_mode;
    int auth_max_failures;      /* failed logins per (address, account)
                                   and window before "ERR too many
                                   failures"; an address over it may still
                                   try accounts it has not failed, up to
                                   twice as many failures in all (5; 0 =
                                   no throttle; docs/PROTOCOL.md) */
    int64_t auth_window_ms;     /* throttle window (default 60 s) */
    FILE *log;                  /* one line per ended connection, or NULL */
    int handle_signals;         /* 1 (default): SIGINT/SIGTERM stop
                                   cw_server_run cleanly. They are blocked
                                   in the thread calling cw_server_new()
                                   and read from a signalfd until
                                   cw_server_free() */
    int64_t login_timeout_ms;   /* an unauthenticated session must log in
                                   this soon after connecting; its other
                                   lines do not extend it (default 10 s) */
    int max_unauth;             /* unauthenticated sessions at once; the
                                   oldest gives way to a newcomer (0 =
                                   half of max_conns) */
    int sndbuf;                 /* SO_SNDBUF of client sockets, bytes (the
                                   kernel doubles it); caps the kernel
                                   memory a non-reading client pins
                                   (default 65536; 0 = kernel autotuning) */
    int auth_net_max_failures;  /* failures per IPv6 network (0 = 4 *
                                   auth_max_failures) */
    int auth_account_max_failures; /* failures per account from anywhere
                                   (0 = 4 * auth_max_failures) */
    int auth_v6_prefix;         /* an IPv6 client "address" (0 = /64) */
    int auth_v6_net_prefix;     /* an IPv6 "network" (0 = /48) */
    int auth_threads;           /* threads that check passwords, off the
                                   loop (0 = one per online CPU); -1: on
                                   the loop, which then stops for every
                                   hash (the old way, kept to compare) */
    int auth_queue;             /* checks waiting for a thread at most;
                                   a login beyond gets "ERR busy" and a
                                   graceful close (0 = 256 per thread) */
    int auth_idle;              /* 1 (cw_server_opts_init): those threads
                                   run SCHED_IDLE, which keeps woken loops
                                   off each other's core (lower echo
                                   latency while logins hash); nice-19
                                   rescuers take over checks other
                                   programs starve; 0: nice 19
                                   (man closewise-server, --auth-priority) */
    int workers;                /* event loops, each with its own
                                   SO_REUSEPORT listener (0 = 1) */
};

/* Per-server counters, for tests and benchmarks. */
struct cw_server_stats {
    uint64_t accepted;
    uint64_t ended;
    int conns;                  /* open now, lingering ones included */
    int lingering;
    uint64_t accept_paused;     /* times accepting paused (EMFILE, cap) */
    uint64_t reclaimed;         /* conns closed early to free a descriptor */
    size_t conn_bytes;          /* user-space bytes held by conns now */
    int unauthenticated;        /* open sessions not logged in, now */
    uint64_t login_timeouts;    /* "ERR login timeout" */
    uint64_t throttled;         /* "ERR too many failures" */
    uint64_t throttle_overflow; /* failures the throttle table could not
                                   hold (counted in its shared bucket) */
    uint64_t evicted_unauth;    /* evictions of unauthenticated sessions */
    uint64_t evicted_authed;    /* ... of authenticated ones */
    uint64_t evicted_descriptors; /* by reason: accept lacked a descriptor */
    uint64_t evicted_max_conns; /* a newcomer at max_conns */
    uint64_t evicted_unauth_cap; /* a newcomer at max_unauth */
    uint64_t auth_busy;         /* "ERR busy": the check queue was full */
    uint64_t auth_cancelled;    /* checks dropped: the session ended
                                   first (peer left, timeout, shutdown) */
    uint64_t auth_rescued;      /* checks answered by a nice-19 rescue
                                   thread: the SCHED_IDLE check threads
                                   were starved by other programs */
    uint64_t auth_waited;       /* logins that waited for checks in flight
                                   on their throttle keys (not refused:
                                   those may pass) */
};

/* Fill *o with the defaults above. */
void cw_server_opts_init(struct cw_server_opts *o);

/* Create a server and bind its listener (so cw_server_port() is known
 * before cw_server_run()). *out is owned by the caller; release it with
 * cw_server_free(). opts may be NULL for all defaults; it is copied, but
 * the host string and log stream must outlive the server. */
int cw_server_new(const struct cw_server_opts *opts, cw_server **out);

/* Add a user whose password is hashed now (crypt(3), libcrypt's preferred
 * method). For demos and tests; production uses a credentials file.
 * Returns CW_OK, CW_EINVAL (bad name), -EEXIST or -ENOMEM. */
int cw_server_add_user(cw_server *s, const char *user, const char *password);

/* Add a user with an existing crypt(3) hash. */
int cw_server_add_hash(cw_server *s, const char *user, const char *hash);

/* Load a credentials file of "user:crypt-hash" lines. Returns the number
 * of users added, or a negative code with *bad_line set to the first bad
 * line (0 for an I/O error, e.g. -ENOENT). */
int cw_server_load_credentials(cw_server *s, const char *path, int *bad_line);

/* The bound port, and the address as "127.0.0.1:7007" / "[::]:7007". */
int cw_server_port(const cw_server *s);
int cw_server_address(const cw_server *s, char *buf, size_t size);

/* Serve until cw_server_stop() or (with handle_signals) SIGINT/SIGTERM.
 * Stopping is clean: accepting ends, every open connection gets
 * "ERR server shutting down" and a graceful close bounded by the
 * lingering time, then cw_server_run returns CW_OK. */
int cw_server_run(cw_server *s);

/* Ask a running server to stop as above. Safe from another thread or a
 * signal handler. */
int cw_server_stop(cw_server *s);

/* Counters; safe only from the server's thread or after it stopped. */
int cw_server_stats(const cw_server *s, struct cw_server_stats *st);

/* Close every connection and the listener, free the server, set *sp to
 * NULL. */
int cw_server_free(cw_server **sp);

/* Hash a password for a credentials file into out (at least 128 bytes;
 * CRYPT_OUTPUT_SIZE is always enough). prefix selects the method: NULL
 * for libcrypt's preferred one (yescrypt, "$y$"), "$6$" for sha512-crypt.
 * The salt comes from the kernel. */
int cw_passwd_hash(const char *password, const char *prefix, char *out,
                   size_t size);

#ifdef __cplusplus
}
#endif
#endif
