/* tidy_client.c - the seed's client done with libclosewise.
 *
 * Same job as leaky_client.c: connect, log in, read until the connection
 * ends, reconnect. cw_readline() says exactly how it ended, and the one
 * exit path closes the connection, so nothing is left in CLOSE_WAIT.
 *
 * usage: tidy_client HOST PORT COUNT [HOLD_MS [READ_TIMEOUT_MS]]
 * READ_TIMEOUT_MS (default 30000, the seed's SO_RCVTIMEO) bounds each wait
 * for the server, so a server that never answers is given up on.
 */
#define _GNU_SOURCE
#include <closewise/closewise.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int session(const char *host, uint16_t port, int read_timeout_ms)
{
    struct cw_opts o;
    cw_opts_init(&o);
    o.read_timeout_ms = read_timeout_ms;
    cw_conn *c;
    int rc = cw_dial(host, port, &o, cw_now_ms() + 5000, &c);
    if (rc < 0) {
        fprintf(stderr, "tidy_client: connect: %s\n", cw_strerror(rc));
        return rc;
    }
    const char login[] = "AUTH user wrong-password\n";
    rc = cw_send_all(c, login, sizeof login - 1, cw_now_ms() + 5000);
    char line[512];
    while (rc >= 0)
        rc = (int)cw_readline(c, line, sizeof line, CW_NEVER);
    /* CW_EOF, CW_ERESET, CW_ETIMEDOUT or an error: in every case, close. */
    cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 2000);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s HOST PORT COUNT [HOLD_MS [READ_TIMEOUT_MS]]\n", argv[0]);
        return 2;
    }
    int count = atoi(argv[3]);
    int hold_ms = argc > 4 ? atoi(argv[4]) : 0;
    int read_timeout_ms = argc > 5 ? atoi(argv[5]) : 30000;
    for (int i = 0; i < count; i++)
        session(argv[1], (uint16_t)atoi(argv[2]), read_timeout_ms);
    printf("done\n");
    fflush(stdout);
    usleep((useconds_t)hold_ms * 1000);
    return 0;
}
