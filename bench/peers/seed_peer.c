/* seed_peer.c - the seed's server design, done right by its own remedies:
 * one blocking thread per connection, a 30 s receive timeout
 * (SO_RCVTIMEO), and on any end shutdown() then close(). Protocol:
 * peer.h. Its cost is a thread per session, and an idle or dead peer is
 * noticed only when the timeout fires. */
#include "peer.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/time.h>

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    struct timeval tv = {30, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct peer_line line = {0};
    char buf[2048];
    ssize_t n;
    int r = PEER_MORE;
    while (r == PEER_MORE && (n = recv(fd, buf, sizeof buf, 0)) > 0)
        r = peer_feed(&line, buf, (size_t)n);
    peer_line_free(&line);
    if (r != PEER_MORE) {
        const char *msg = r == PEER_GOOD ? PEER_OK : PEER_ERR;
        send(fd, msg, strlen(msg), MSG_NOSIGNAL);
        while (r == PEER_GOOD && recv(fd, buf, sizeof buf, 0) > 0)
            ;                    /* a session: until the client leaves */
    }
    shutdown(fd, SHUT_RDWR);
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    int lfd = peer_listen(argc, argv, 0);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 128 * 1024);   /* crypt_data + buffers */
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                usleep(10000);   /* do not spin while out of descriptors */
            continue;
        }
        pthread_t t;
        if (pthread_create(&t, &attr, serve, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}
