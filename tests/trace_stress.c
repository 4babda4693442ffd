/* trace_stress.c - a client for tests/test_trace.c that must behave the
 * same with libclosewise-trace.so preloaded as without it.
 *
 * usage: trace_stress HOST PORT threads   4 threads x 25 connections, each
 *            read to the end through a different call (read, recv, readv,
 *            recvmsg, a dup'd or F_DUPFD'd descriptor) and closed; errno
 *            after failing calls is checked; then 1.5 s alive. Exit 0, or 1
 *            with a message.
 *        trace_stress HOST PORT fork      reads the first bytes, forks; the
 *            child reads to the end and keeps the socket (a leak in the
 *            child, whose last read was its parent's), the parent closes
 *            its copy and waits.
 *        trace_stress HOST PORT dup       the reply read through one
 *            descriptor, the end of stream through a copy of a copy (dup2,
 *            dup3, F_DUPFD_CLOEXEC, dup), the originals closed.
 *        trace_stress HOST PORT reuse     a socket on a descriptor number the
 *            library last saw as a pipe (closed with close_range): its end
 *            of stream is still seen. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lo_listen.h"

static const char *host, *port;
static int quiet = -1;   /* a loopback connection nobody writes to */

static int dial(void)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int s = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(s, res->ai_addr, res->ai_addrlen) < 0) {
        close(s);
        s = -1;
    }
    freeaddrinfo(res);
    if (s >= 0)
        send(s, "AUTH a b\n", 9, MSG_NOSIGNAL);
    return s;
}

static int fail(const char *what, int got, int want)
{
    fprintf(stderr, "trace_stress: %s: errno %d, expected %d\n", what, got, want);
    return 1;
}

/* One read through the i-th way; returns its result. */
static ssize_t read_some(int fd, int way, char *buf, size_t len)
{
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    switch (way % 4) {
    case 0: return read(fd, buf, len);
    case 1: return recv(fd, buf, len, 0);
    case 2: return readv(fd, &iov, 1);
    default: return recvmsg(fd, &m, 0);
    }
}

static void *worker(void *arg)
{
    intptr_t bad = 0;
    for (int i = 0; i < 25 && !bad; i++) {
        int s = dial();
        if (s < 0) {
            bad = fail("connect", errno, 0);
            break;
        }
        int copy = i % 2 ? dup(s) : fcntl(s, F_DUPFD_CLOEXEC, 0);
        char buf[7];
        /* a TCP socket with nothing to read: EAGAIN, kept */
        errno = 0;
        if (recv(quiet, buf, 1, MSG_DONTWAIT) >= 0 || errno != EAGAIN)
            bad = fail("recv on a quiet socket", errno, EAGAIN);   /* small: several reads per reply */
        ssize_t n, total = 0;
        while ((n = read_some(i % 3 ? s : copy, i + (int)(intptr_t)arg, buf, sizeof buf)) > 0)
            total += n;
        if (n < 0 || total == 0)
            bad = fail("read to the end", errno, 0);
        errno = 0;
        if (close(copy) != 0 || errno != 0)
            bad = fail("close(copy)", errno, 0);
        if (close(s) != 0)
            bad = fail("close(s)", errno, 0);
        /* a number no thread opens (s itself may be another thread's by now) */
        int never = 900 + (int)(intptr_t)arg;
        errno = 0;
        if (close(never) == 0 || errno != EBADF)
            bad = fail("close of a closed descriptor", errno, EBADF);
        errno = 0;
        if (read(never, buf, 1) >= 0 || errno != EBADF)
            bad = fail("read of a closed descriptor", errno, EBADF);
        errno = 0;
        if (dup2(-1, 1000) >= 0 || errno != EBADF)
            bad = fail("dup2(-1)", errno, EBADF);
    }
    return (void *)bad;
}

static int threads(void)
{
    struct sockaddr_in a;
    int l = lo_listen(&a, 1);
    if (l < 0)
        return fail("listen", errno, 0);
    quiet = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(quiet, (struct sockaddr *)&a, sizeof a) < 0)
        return fail("connect to ourselves", errno, 0);
    int peer = accept(l, NULL, NULL);
    pthread_t t[4];
    for (intptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, worker, (void *)i);
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        bad |= r != NULL;
    }
    close(peer);
    close(quiet);
    close(l);
    usleep(1500000);   /* alive past the grace: a socket wrongly thought open would show */
    return bad;
}

static int forked(void)
{
    int s = dial();
    char buf[64];
    /* the parent reads the whole reply, a byte at a time; the child only
     * reads the end of stream */
    do {
        if (s < 0 || recv(s, buf, 1, 0) != 1)   /* the parent's read */
            return 1;
    } while (buf[0] != '\n');
    pid_t pid = fork();
    if (pid == 0) {
        while (recv(s, buf, sizeof buf, 0) > 0)   /* the child's read to the end */
            ;
        sleep(2);   /* and it keeps s */
        _exit(0);
    }
    close(s);
    int st;
    waitpid(pid, &st, 0);
    return 0;
}

/* A pipe read through read() (so the library knows that number as not a
 * socket), closed behind its back, its number then reused by a socket
 * that reads the end of stream and is kept. */
static int reuse(void)
{
    int p[2];
    char buf[64];
    if (pipe(p) < 0 || write(p[1], "x", 1) != 1 || read(p[0], buf, 1) != 1)
        return 1;
    int was = p[0];
    syscall(SYS_close_range, (unsigned)p[0], (unsigned)p[0], 0u);
    close(p[1]);
    int s = dial();
    if (s != was) {
        fprintf(stderr, "trace_stress: the socket got %d, not the pipe's %d\n", s, was);
        return 1;
    }
    while (recv(s, buf, sizeof buf, 0) > 0)   /* the read on a reused number */
        ;
    usleep(1500000);
    return 0;
}

/* The reply read through one descriptor, then the socket handed along
 * dup2 -> dup3 -> F_DUPFD_CLOEXEC -> dup, each old one closed, and the end
 * of stream read through the last: its history (the last read) went
 * along. */
static int duped(void)
{
    int s = dial();
    char buf[64];
    do {
        if (s < 0 || recv(s, buf, 1, 0) != 1)   /* the read before the copies */
            return 1;
    } while (buf[0] != '\n');
    int a = dup2(s, 50);
    close(s);
    int b = dup3(a, 51, O_CLOEXEC);
    close(a);
    int c = fcntl(b, F_DUPFD_CLOEXEC, 60);
    close(b);
    int d = dup(c);
    close(c);
    if (d < 0 || recv(d, buf, sizeof buf, 0) != 0)   /* the end, through the last copy */
        return 1;
    usleep(1500000);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    host = argv[1];
    port = argv[2];
    if (!strcmp(argv[3], "fork"))
        return forked();
    if (!strcmp(argv[3], "reuse"))
        return reuse();
    return !strcmp(argv[3], "dup") ? duped() : threads();
}
