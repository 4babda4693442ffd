/* trace_overhead.c - cw_bench_trace_overhead: CPU time per read-family
 * call, for bench/trace.sh to run with and without libclosewise-trace.so
 * preloaded (the ratio is the preload's cost).
 *
 *   cw_bench_trace_overhead N DEPTH
 *
 * On a loopback TCP connection holding one unread byte, N calls each of:
 * recv(MSG_PEEK) returning 1 byte (the traced path: a stack is recorded),
 * recv(MSG_DONTWAIT) on the other, empty end (EAGAIN: classified, no
 * stack), and read() of /dev/zero (not a socket). Each call is made DEPTH
 * frames deep, as in a real program. One line per kind on stdout:
 *   KIND NS_PER_CALL   (user + system CPU time) */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

enum kind { PEEK, EMPTY, FILE_READ };

static double cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e9 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e3;
}

static volatile long sink;

__attribute__((noinline)) static void call(enum kind k, int fd, int depth)
{
    char buf[16];
    if (depth > 0) {
        call(k, fd, depth - 1);
        sink++;   /* not a tail call: each level keeps its frame */
        return;
    }
    if (k == FILE_READ)
        sink += read(fd, buf, 1);
    else
        sink += recv(fd, buf, 1, k == PEEK ? MSG_PEEK : MSG_DONTWAIT);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s N DEPTH\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    int depth = atoi(argv[2]);
    int l = socket(AF_INET, SOCK_STREAM, 0), a = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0 ||
        connect(a, (struct sockaddr *)&sa, sizeof sa) < 0) {
        perror("loopback");
        return 1;
    }
    int b = accept(l, NULL, NULL);
    if (b < 0 || send(a, "x", 1, 0) != 1)
        return 1;
    usleep(10000);   /* the byte is in b's receive queue */
    int zero = open("/dev/zero", O_RDONLY);
    static const struct { enum kind k; const char *name; } kinds[] = {
        {PEEK, "recv-peek-1-byte"}, {EMPTY, "recv-eagain"}, {FILE_READ, "read-dev-zero"}};
    for (size_t i = 0; i < 3; i++) {
        int fd = kinds[i].k == PEEK ? b : kinds[i].k == EMPTY ? a : zero;
        double t0 = cpu_ns();
        for (long j = 0; j < n; j++)
            call(kinds[i].k, fd, depth);
        printf("%s %.0f\n", kinds[i].name, (cpu_ns() - t0) / (double)n);
    }
    return 0;
}
