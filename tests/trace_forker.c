/* trace_forker.c - a fork-per-connection server for tests/test_trace.c
 * (the inetd/sshd shape): for each of N connections it accepts, forks a
 * child that reads the request to the end of stream, closes and exits,
 * and waits for that child. It is its own client. The parent forgets its
 * copy of the accepted socket on the first and the last connection (the
 * classic fork-server leak): the socket stays open after its child, the
 * one that read the end, is gone, and the tracer must still name the
 * child's read. Every other connection ends cleanly. Traced, the first
 * child first reads another connection to its end, and is given time to
 * be seen by the tracer (its parent) with the modules of that stack; then
 * the tracer is stopped while the child reads the kept socket's end (a
 * line naming no new module) and exits, and let go on 1.1 s later: it
 * learns the child is dead before it has read the child's last line.
 *
 * usage: trace_forker N [rst]
 * With rst (for `closewise resets`), each child reads one byte of its
 * three-byte request and closes, a reset (the parent closed its copy
 * first), and exits; nothing is kept.
 * prints: "tracer_hwm_kb=KB tracer_rss_kb=KB tracer_cpu_ms=MS" (its parent's,
 * `closewise trace`'s, peak and current resident memory and CPU time) and
 * exits 0, or 1 with a message. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include "lo_listen.h"

static long status_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, strlen(field)))
            kb = atol(line + strlen(field));
    if (f)
        fclose(f);
    return kb;
}

/* utime + stime of pid in ms. */
static long cpu_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                     &st) != 2)
        return -1;
    return (long)((ut + st) * 1000 / (unsigned long)sysconf(_SC_CLK_TCK));
}

static int fail(const char *what)
{
    perror(what);
    return 1;
}

static int rst_mode;

static void drain(int s)
{
    char b[64];
    while (read(s, b, sizeof b) > 0)   /* the child's read to the end */
        ;
    close(s);
}

static int dial(int l, const struct sockaddr_in *a, int *c, int *s)
{
    *c = socket(AF_INET, SOCK_STREAM, 0);
    if (*c < 0 || connect(*c, (const struct sockaddr *)a, sizeof *a) < 0)
        return fail("connect");
    *s = accept(l, NULL, NULL);
    return *s < 0 ? fail("accept") : 0;
}

static void reset_close(int c)
{
    /* A reset, not a FIN: no TIME_WAIT, so many thousands fit the ports. */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
}

/* One connection; keep: the parent forgets to close its copy; hold: the
 * tracer is held up as said above. */
static int one(int l, const struct sockaddr_in *a, int keep, int hold)
{
    int c, s, c2 = -1, s2 = -1;
    if (dial(l, a, &c, &s) || (hold && (dial(l, a, &c2, &s2) || shutdown(c2, SHUT_WR) < 0)))
        return 1;
    pid_t pid = fork();
    if (pid < 0)
        return fail("fork");
    if (pid == 0) {
        close(c);
        close(l);
        if (hold) {
            close(c2);
            drain(s2);
        }
        if (rst_mode) {
            char b;
            if (read(s, &b, 1) == 1)
                close(s);   /* RESETS-MARK forker-close */
            _exit(0);
        }
        drain(s);
        _exit(0);
    }
    if (!keep)
        close(s);
    if (hold)
        close(s2);
    if (hold) {
        usleep(300000);
        kill(getppid(), SIGSTOP);
    }
    int st;
    /* (In rst mode the child's reset may come before the shutdown.) */
    int bad = write(c, "hi\n", 3) != 3 || (!rst_mode && shutdown(c, SHUT_WR) < 0) ||
              waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    if (hold) {
        usleep(1100000);
        kill(getppid(), SIGCONT);
    }
    if (bad)
        return fail("child");
    if (hold)
        reset_close(c2);
    reset_close(c);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 0;
    rst_mode = argc > 2 && !strcmp(argv[2], "rst");
    if (n < 2) {
        fprintf(stderr, "usage: trace_forker N [rst] (N >= 2)\n");
        return 2;
    }
    struct sockaddr_in a;
    int l = lo_listen(&a, 16);
    if (l < 0)
        return fail("listen");
    int traced = getenv("CW_TRACE_FILE") != NULL;
    for (long i = 0; i < n; i++)
        if (one(l, &a, !rst_mode && (i == 0 || i == n - 1), i == 0 && traced))
            return 1;
    close(l);
    /* The tracer reads the last lines and judges them within its grace. */
    usleep(400000);
    pid_t tracer = getppid();
    printf("tracer_hwm_kb=%ld tracer_rss_kb=%ld tracer_cpu_ms=%ld\n",
           status_kb(tracer, "VmHWM:"), status_kb(tracer, "VmRSS:"), cpu_ms(tracer));
    return 0;
}
