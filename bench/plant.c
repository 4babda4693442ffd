/* plant.c - cw_bench_plant: fill loopback with the inspector benchmark's
 * scenario and hold it until stdin closes.
 *
 *   cw_bench_plant CLOSE_WAIT PROCS TIME_WAIT
 *
 * PROCS holder processes each hold CLOSE_WAIT/PROCS sockets whose peer
 * closed (the seed's leak). The peers' orphaned FIN_WAIT2 halves are
 * waited out (tcp_fin_timeout), so that only the CLOSE_WAIT sockets stay.
 * Then TIME_WAIT sockets are made (server closes first; they last 60 s)
 * and "ready" is printed. CW_PLANT_NO_WAIT=1 in the environment skips the
 * wait (quick experiments: the FIN_WAIT2 halves then stay in the table). Everything is bounded in time and count; closing
 * stdin (or SIGTERM) ends the holders and exits. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "cw_bench_plant: %s: %s\n", what, strerror(errno));
    exit(3);
}

static int listener(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 4096) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0)
        die("listener");
    *port = ntohs(a.sin_port);
    return l;
}

static int dial(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    return c;
}

/* One holder: n accepted sockets whose peers close at once. It reports
 * "1" on the pipe when done, then keeps its descriptors open until the
 * parent ends it. */
static void holder(int n, int idx, int report)
{
    char name[16];
    snprintf(name, sizeof name, "leaky-%d", idx);
    prctl(PR_SET_NAME, name);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int port, l = listener(&port);
    for (int i = 0; i < n; i++) {
        int c = dial(port);
        if (accept4(l, NULL, NULL, SOCK_CLOEXEC) < 0)
            die("accept");
        close(c);    /* the peer closes; we never do: CLOSE_WAIT */
    }
    close(l);
    if (write(report, "1", 1) != 1)
        die("report");
    for (;;)
        pause();    /* until the parent's SIGTERM (or its death) */
}

/* n TIME_WAIT sockets on the server side, spread over 8 listeners: with
 * one, the client ports would wrap around and connect() would recycle
 * TIME_WAIT entries of the same 4-tuple (tcp_tw_reuse defaults to on for
 * loopback), leaving fewer than n. */
static void time_waits(int n)
{
    enum { NL = 8 };
    int port[NL], l[NL];
    for (int i = 0; i < NL; i++)
        l[i] = listener(&port[i]);
    for (int i = 0; i < n; i++) {
        int c = dial(port[i % NL]);
        int s = accept4(l[i % NL], NULL, NULL, SOCK_CLOEXEC);
        if (s < 0)
            die("accept");
        close(s);    /* active close: s ends in TIME_WAIT */
        char b;
        (void)!read(c, &b, 1);   /* wait for the FIN, then answer it */
        close(c);
    }
    for (int i = 0; i < NL; i++)
        close(l[i]);
}

static int fin_timeout(void)
{
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_fin_timeout", "re");
    int t = 60;
    if (f) {
        if (fscanf(f, "%d", &t) != 1)
            t = 60;
        fclose(f);
    }
    return t < 1 ? 1 : t > 120 ? 120 : t;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: cw_bench_plant CLOSE_WAIT PROCS TIME_WAIT\n");
        return 2;
    }
    int ncw = atoi(argv[1]), procs = atoi(argv[2]), ntw = atoi(argv[3]);
    if (ncw < 0 || ncw > 100000 || procs < 1 || procs > 100 || ntw < 0 || ntw > 25000) {
        fprintf(stderr, "cw_bench_plant: counts out of range\n");
        return 2;
    }
    int rp[2];
    if (pipe2(rp, O_CLOEXEC) < 0)
        die("pipe");
    pid_t pids[100];
    for (int i = 0; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0)
            holder(ncw / procs + (i < ncw % procs), i, rp[1]);
        pids[i] = pid;
    }
    close(rp[1]);
    for (int i = 0; i < procs; i++) {
        char b;
        if (read(rp[0], &b, 1) != 1) {
            fprintf(stderr, "cw_bench_plant: a holder failed\n");
            return 3;
        }
    }
    /* The peers' orphaned FIN_WAIT2 halves vanish after tcp_fin_timeout. */
    int wait_s = getenv("CW_PLANT_NO_WAIT") ? 0 : fin_timeout() + 2;
    fprintf(stderr, "cw_bench_plant: %d CLOSE_WAIT planted; waiting %d s for the peers' "
                    "FIN_WAIT2 to expire\n", ncw, wait_s);
    sleep((unsigned)wait_s);
    time_waits(ntw);
    printf("ready\n");
    fflush(stdout);
    char b;
    while (read(0, &b, 1) > 0)
        ;
    for (int i = 0; i < procs; i++)
        kill(pids[i], SIGTERM);
    while (wait(NULL) > 0)
        ;
    return 0;
}
