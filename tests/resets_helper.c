/* resets_helper.c - a program for tests/test_resets.c, built with -g and
 * without sanitizers (an interceptor would sit between main and close).
 * It connects to itself over loopback three times and closes the server
 * side three ways, each close() on a line marked RESETS-MARK so the test
 * knows the exact line to expect:
 *   graceful  shutdown, drain to EOF, close: no RST
 *   unread    27 bytes of input never read, close: RST (unread input)
 *   linger0   256 KiB queued to a peer that does not read, SO_LINGER {1,0},
 *             close: RST (unsent bytes destroyed)
 * Protocol: prints "ready" and waits for a line on stdin; runs the three
 * closes; prints each server side's "port N", "unread N" and "unsent N"
 * (SIOCINQ/SIOCOUTQ just before each close) and "done"; waits for EOF on stdin, so the test can
 * symbolize its stack while it lives. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>
#include "lo_listen.h"

static void die(const char *what)
{
    perror(what);
    exit(3);
}

/* A connected pair: *srv is the accepted side, *cli the client. */
static void pair(int *srv, int *cli, int small_rcvbuf)
{
    struct sockaddr_in a;
    int l = lo_listen(&a, 1);
    if (l < 0)
        die("listen");
    *cli = socket(AF_INET, SOCK_STREAM, 0);
    int v = 4096;
    if (small_rcvbuf && setsockopt(*cli, SOL_SOCKET, SO_RCVBUF, &v, sizeof v))
        die("SO_RCVBUF");
    if (connect(*cli, (struct sockaddr *)&a, sizeof a))
        die("connect");
    *srv = accept(l, NULL, NULL);
    if (*srv < 0)
        die("accept");
    printf("port %d\n", ntohs(a.sin_port));
    close(l);
}

static void graceful(void)
{
    int s, c;
    char buf[256];
    pair(&s, &c, 0);
    if (write(c, "hello", 5) != 5 || read(s, buf, sizeof buf) != 5)
        die("hello");
    shutdown(s, SHUT_WR);
    shutdown(c, SHUT_WR);
    while (read(s, buf, sizeof buf) > 0)
        ;
    close(s); /* RESETS-MARK graceful */
    while (read(c, buf, sizeof buf) > 0)
        ;
    close(c);
}

static void unread(void)
{
    int s, c, n = 0;
    pair(&s, &c, 0);
    if (write(c, "twenty-seven bytes of input", 27) != 27)
        die("write");
    while (ioctl(s, SIOCINQ, &n) == 0 && n < 27)
        usleep(1000);
    printf("unread %d\n", n);
    fflush(stdout);
    close(s); /* RESETS-MARK unread */
    close(c);
}

static void linger0(void)
{
    int s, c, n = 0, big = 1 << 20;
    static char chunk[256 * 1024];
    pair(&s, &c, 1);
    if (setsockopt(s, SOL_SOCKET, SO_SNDBUF, &big, sizeof big))
        die("SO_SNDBUF");
    fcntl(s, F_SETFL, O_NONBLOCK);
    size_t off = 0;
    ssize_t w;
    while (off < sizeof chunk && (w = write(s, chunk + off, sizeof chunk - off)) > 0)
        off += (size_t)w;
    usleep(20000);   /* let the peer's window fill and the ACKs settle */
    struct linger lg = {1, 0};
    if (setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg))
        die("SO_LINGER");
    ioctl(s, SIOCOUTQ, &n);
    printf("queued %zu\nunsent %d\n", off, n);
    fflush(stdout);
    close(s); /* RESETS-MARK linger0 */
    close(c);
}

int main(void)
{
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", (int)getpid());
    if (!fgets(line, sizeof line, stdin))
        return 0;
    graceful();
    unread();
    linger0();
    printf("done\n");
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
