/* lo_listen.h - a TCP listener on 127.0.0.1 at a free port, for the test
 * programs built on plain libc (the traced and BPF-watched helpers: what
 * they call must be their own, not libclosewise's). */
#ifndef CW_TEST_LO_LISTEN_H
#define CW_TEST_LO_LISTEN_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* The listener's descriptor, its address (port included) in *a; -1 with
 * errno set on failure, nothing left open. */
static inline int lo_listen(struct sockaddr_in *a, int backlog)
{
    *a = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof *a;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l >= 0 && (bind(l, (struct sockaddr *)a, sizeof *a) < 0 || listen(l, backlog) < 0 ||
                   getsockname(l, (struct sockaddr *)a, &alen) < 0)) {
        int e = errno;
        close(l);
        errno = e;
        return -1;
    }
    return l;
}

#endif
