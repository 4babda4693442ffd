/* leaky_client.c - the seed's client, bug included, for comparison.
 *
 * It connects, logs in, and reads with a 30 s SO_RCVTIMEO. When recv()
 * fails or returns 0 it returns without closing the socket (the seed's
 * commented-out closesocket), then reconnects on a new socket and so a new
 * local port. Every connection the server ends stays in CLOSE_WAIT for as
 * long as this process lives.
 *
 * usage: leaky_client HOST PORT COUNT [HOLD_MS]
 * Prints "done" after COUNT connections, then keeps running HOLD_MS ms
 * (default 0) so the leak can be seen, like a long-lived client.
 */
#define _GNU_SOURCE
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int s = socket(res->ai_family, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = 30};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(s, res->ai_addr, res->ai_addrlen) < 0) {
        close(s);
        s = -1;
    }
    freeaddrinfo(res);
    return s;
}

/* The seed's session: returns FALSE on a failed read - and leaks s. */
static int session(const char *host, const char *port)
{
    int s = connect_to(host, port);
    if (s < 0)
        return 0;
    const char login[] = "AUTH user wrong-password\n";
    send(s, login, sizeof login - 1, MSG_NOSIGNAL);
    char buf[512];
    for (;;) {
        ssize_t n = recv(s, buf, sizeof buf, 0);   /* the read that returns 0 */
        if (n <= 0) {
            /* closesocket(s); */
            return 0;
        }
    }
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT COUNT [HOLD_MS]\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[3]);
    int hold_ms = argc > 4 ? atoi(argv[4]) : 0;
    for (int i = 0; i < count; i++)
        session(argv[1], argv[2]);
    printf("done\n");
    fflush(stdout);
    usleep((useconds_t)hold_ms * 1000);
    return 0;
}
