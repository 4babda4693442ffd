/* trace_poller.c - a client that reads once, then waits in poll() and
 * never reads again: after the server's FIN its socket sits in CLOSE_WAIT
 * with the FIN unread (Recv-Q 1). A second thread does the waiting, so
 * the traced program is multithreaded. For `probe --where`
 * (tests/test_trace.c): "never read after our FIN; last read at ...".
 * usage: trace_poller HOST PORT HOLD_MS */
#define _GNU_SOURCE
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int s = -1;

static void *waiter(void *arg)
{
    usleep((useconds_t)atoi(arg) * 1000);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(argv[1], argv[2], &hints, &res) != 0)
        return 1;
    s = socket(res->ai_family, SOCK_STREAM, 0);
    if (connect(s, res->ai_addr, res->ai_addrlen) < 0)
        return 1;
    freeaddrinfo(res);
    send(s, "AUTH user pw\n", 13, MSG_NOSIGNAL);
    char buf[1];
    struct pollfd p = {.fd = s, .events = POLLIN};
    poll(&p, 1, 2000);
    if (recv(s, buf, sizeof buf, MSG_DONTWAIT) <= 0)   /* the last read before the FIN */
        return 1;
    pthread_t t;
    pthread_create(&t, NULL, waiter, argv[3]);
    pthread_join(t, NULL);
    return 0;
}
