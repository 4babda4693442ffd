/* trace_churn.c - a program for tests/test_trace.c that, traced, reads end
 * of stream on N sockets and closes each one properly: what a long-running
 * server does all day. It says how large the record file and the memory of
 * its tracer (its parent, `closewise trace`) and of itself grew.
 *
 * usage: trace_churn N
 * prints: "record_max=BYTES tracer_hwm_kb=KB self_growth_kb=KB" and exits 0,
 * or 1 with a message. record_max is the largest size seen of
 * $CW_TRACE_FILE (looked at every 500 sockets); self_growth_kb is how much
 * its own peak resident memory grew after the first 1,000 sockets. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "lo_listen.h"

static long hwm_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = atol(line + 6);
    if (f)
        fclose(f);
    return kb;
}

static int fail(const char *what)
{
    perror(what);
    return 1;
}

/* One connection: the client half-closes, the server side reads the end
 * of stream and closes; the client leaves with a reset (no TIME_WAIT, so
 * 100,000 of them fit in the port range). */
static int one(int l, const struct sockaddr_in *a)
{
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (const struct sockaddr *)a, sizeof *a) < 0)
        return fail("connect");
    int s = accept(l, NULL, NULL);
    if (s < 0)
        return fail("accept");
    char b;
    if (shutdown(c, SHUT_WR) < 0 || read(s, &b, 1) != 0)
        return fail("read to the end");
    close(s);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    const char *rec = getenv("CW_TRACE_FILE");
    if (n <= 0 || !rec) {
        fprintf(stderr, "usage: trace_churn N (traced: $CW_TRACE_FILE set)\n");
        return 2;
    }
    struct sockaddr_in a;
    int l = lo_listen(&a, 16);
    if (l < 0)
        return fail("listen");
    long long record_max = 0;
    long base = 0;
    for (long i = 0; i < n; i++) {
        if (one(l, &a))
            return 1;
        struct stat sb;
        if (i % 500 == 0 && stat(rec, &sb) == 0 && sb.st_size > record_max)
            record_max = sb.st_size;
        if (i == 999)
            base = hwm_kb(getpid());
    }
    close(l);
    /* The tracer reads the last lines within its polling step. */
    usleep(200000);
    printf("record_max=%lld tracer_hwm_kb=%ld self_growth_kb=%ld\n", record_max,
           hwm_kb(getppid()), base > 0 ? hwm_kb(getpid()) - base : -1);
    return 0;
}
