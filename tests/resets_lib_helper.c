/* resets_lib_helper.c - a program linked with libclosewise.so, for
 * tests/test_resets.c: its close() runs inside the library (cw_close in
 * conn.c), and `closewise resets` must name the line here that asked for
 * it. That line is in an always_inline function, so the frame that holds
 * it is the function it was inlined into (RESETS-MARK lines give the test
 * the numbers).
 * Protocol as resets_helper.c: prints "ready PID", waits for a line on
 * stdin, resets one connection (SO_LINGER {1,0}), prints the closed side's
 * "port N" and "done", and waits for EOF on stdin (the test symbolizes its
 * stack while it lives). */
#define _GNU_SOURCE
#include <closewise/closewise.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline __attribute__((always_inline)) void drop(cw_conn **c)
{
    cw_close(c, CW_CLOSE_ABORT, 0); /* RESETS-MARK drop */
}

static __attribute__((noinline)) void serve(void)
{
    cw_listener *l;
    cw_conn *cli, *srv;
    int64_t deadline = cw_now_ms() + 5000;
    if (cw_listen("127.0.0.1", 0, NULL, 1, &l) < 0 ||
        cw_dial("127.0.0.1", (uint16_t)cw_listener_port(l), NULL, deadline, &cli) < 0 ||
        cw_accept(l, deadline, &srv) < 0)
        exit(3);
    printf("port %d\n", cw_listener_port(l));
    drop(&srv); /* RESETS-MARK call */
    cw_close(&cli, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000);
    cw_listener_close(&l);
}

int main(void)
{
    char line[64];
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ready %d\n", (int)getpid());
    if (!fgets(line, sizeof line, stdin))
        return 0;
    serve();
    printf("done\n");
    while (fgets(line, sizeof line, stdin))
        ;
    return 0;
}
