/* peer.h - what every peer server of the server benchmark shares, so that
 * the peers differ only in how they handle connections: the listening
 * socket, the port file, and the request check.
 *
 * Every peer is run as `PEER PORT_FILE HASH`: it listens on 127.0.0.1, an
 * ephemeral port written to PORT_FILE, and answers one request per
 * connection. "AUTH bench <password>" whose crypt(3) matches HASH gets
 * "OK" and the session stays open until the client closes; anything else
 * gets "ERR bad credentials" and the server closes. That is what the
 * reference server does for these requests, with the same crypt(3) call.
 *
 * Header-only on purpose: each peer is one translation unit. */
#ifndef CW_BENCH_PEER_H
#define CW_BENCH_PEER_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define PEER_MAX_LINE 1024
#define PEER_LINGER_MS 30000   /* the reference server's lingering time */

static const char PEER_OK[] = "OK\n";
static const char PEER_ERR[] = "ERR bad credentials\n";

enum { PEER_MORE, PEER_GOOD, PEER_BAD };

static const char *peer_hash;

static inline void peer_die(const char *what)
{
    fprintf(stderr, "peer: %s: %s\n", what, strerror(errno));
    exit(3);
}

/* Parse argv, raise the descriptor limit, bind and listen; the caller
 * accepts. Returns the listening fd (blocking or not, as asked). */
static inline int peer_listen(int argc, char **argv, int nonblock)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT_FILE HASH\n", argv[0]);
        exit(2);
    }
    peer_hash = argv[2];
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        peer_die("listen");
    FILE *f = fopen(argv[1], "w");
    if (!f || fprintf(f, "%u\n", ntohs(a.sin_port)) < 0 || fclose(f) != 0)
        peer_die(argv[1]);
    return fd;
}

/* Check one request line (terminator excluded). */
static inline int peer_check(const char *line, size_t len)
{
    static _Thread_local struct crypt_data cd;   /* 32 KiB, one per thread */
    static const char prefix[] = "AUTH bench ";
    char pw[PEER_MAX_LINE + 1];
    if (len && line[len - 1] == '\r')
        len--;
    if (len <= sizeof prefix - 1 || memcmp(line, prefix, sizeof prefix - 1))
        return PEER_BAD;
    len -= sizeof prefix - 1;
    memcpy(pw, line + sizeof prefix - 1, len);
    pw[len] = '\0';
    const char *h = crypt_rn(pw, peer_hash, &cd, sizeof cd);
    return h && strcmp(h, peer_hash) == 0 ? PEER_GOOD : PEER_BAD;
}

/* A request line that may arrive in pieces. Like the reference server, a
 * connection holds a buffer only while a partial line is pending. */
struct peer_line {
    char *buf;
    size_t len;
};

static inline void peer_line_free(struct peer_line *l)
{
    free(l->buf);
    l->buf = NULL;
    l->len = 0;
}

/* Feed input; returns PEER_MORE until a line is complete, then its
 * verdict. Input after the line is ignored: one request per connection. */
static inline int peer_feed(struct peer_line *l, const char *p, size_t n)
{
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) : n;
    if (!l->len && nl)
        return peer_check(p, take);   /* the usual case: no copy */
    if (l->len + take > PEER_MAX_LINE + 1)
        return PEER_BAD;
    char *b = realloc(l->buf, l->len + take);
    if (!b)
        return PEER_BAD;
    memcpy(b + l->len, p, take);
    l->buf = b;
    l->len += take;
    if (!nl)
        return PEER_MORE;
    int r = peer_check(l->buf, l->len);
    peer_line_free(l);
    return r;
}

#endif
