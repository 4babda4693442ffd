/* closing_server.c - the seed's server, done right: it reads a login line,
 * refuses it with "ERR bad credentials", and closes gracefully so the
 * message arrives. The server closes first, like the seed's.
 *
 * usage: closing_server [PORT [COUNT]]   (PORT 0 = any; prints the port)
 */
#define _GNU_SOURCE
#include <closewise/closewise.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 0;
    int count = argc > 2 ? atoi(argv[2]) : -1;
    cw_listener *l;
    int rc = cw_listen("127.0.0.1", (uint16_t)port, NULL, 128, &l);
    if (rc < 0) {
        fprintf(stderr, "closing_server: listen: %s\n", cw_strerror(rc));
        return 1;
    }
    printf("%d\n", cw_listener_port(l));
    fflush(stdout);
    for (int i = 0; count < 0 || i < count; i++) {
        cw_conn *c;
        if (cw_accept(l, CW_NEVER, &c) < 0)
            continue;
        char line[512];
        cw_readline(c, line, sizeof line, cw_now_ms() + 2000);
        const char err[] = "ERR bad credentials\n";
        cw_send_all(c, err, sizeof err - 1, cw_now_ms() + 2000);
        /* A client that never closes cannot hold us: 200 ms, then close. */
        cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 200);
    }
    cw_listener_close(&l);
    return 0;
}
