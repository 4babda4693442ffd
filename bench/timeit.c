/* timeit.c - cw_bench_timeit: time several commands in the same run,
 * interleaved round-robin so that machine noise hits them all alike.
 *
 *   cw_bench_timeit MAX_RUNS BUDGET_S NAME 'CMD ARGS' [NAME 'CMD ARGS']...
 *
 * Each command runs (stdout and stderr to /dev/null, no shell: arguments
 * are split on spaces) until MAX_RUNS runs, or at least 3 runs once it has
 * used BUDGET_S seconds. One line per command on stdout:
 *   NAME RUNS MEDIAN_MS MIN_MS MAX_MS FAILED_RUNS */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CMDS 16
#define MAX_ARGS 32
#define MAX_RUNS 200

struct cmd {
    const char *name;
    char *argv[MAX_ARGS];
    double ms[MAX_RUNS];
    int runs, failed;
    double used;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void split(struct cmd *c, char *line)
{
    int n = 0;
    for (char *t = strtok(line, " "); t && n < MAX_ARGS - 1; t = strtok(NULL, " "))
        c->argv[n++] = t;
    c->argv[n] = NULL;
}

static double run_once(struct cmd *c)
{
    double t0 = now_ms();
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execvp(c->argv[0], c->argv);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        c->failed++;
    return now_ms() - t0;
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int wants_more(const struct cmd *c, int max_runs, double budget_ms)
{
    return c->runs < max_runs && (c->runs < 3 || c->used < budget_ms);
}

int main(int argc, char **argv)
{
    if (argc < 5 || (argc - 3) % 2 || (argc - 3) / 2 > MAX_CMDS) {
        fprintf(stderr, "usage: cw_bench_timeit MAX_RUNS BUDGET_S NAME 'CMD' ...\n");
        return 2;
    }
    int max_runs = atoi(argv[1]);
    double budget_ms = atof(argv[2]) * 1000;
    if (max_runs < 3 || max_runs > MAX_RUNS || budget_ms <= 0) {
        fprintf(stderr, "cw_bench_timeit: MAX_RUNS 3..%d, BUDGET_S > 0\n", MAX_RUNS);
        return 2;
    }
    static struct cmd cmds[MAX_CMDS];
    int n = (argc - 3) / 2;
    for (int i = 0; i < n; i++) {
        cmds[i].name = argv[3 + 2 * i];
        split(&cmds[i], argv[4 + 2 * i]);
        run_once(&cmds[i]);     /* warm-up: page cache, dentries */
        cmds[i].failed = 0;
    }
    for (int busy = 1; busy;) {
        busy = 0;
        for (int i = 0; i < n; i++) {
            struct cmd *c = &cmds[i];
            if (!wants_more(c, max_runs, budget_ms))
                continue;
            busy = 1;
            double ms = run_once(c);
            c->ms[c->runs++] = ms;
            c->used += ms;
        }
    }
    for (int i = 0; i < n; i++) {
        struct cmd *c = &cmds[i];
        qsort(c->ms, (size_t)c->runs, sizeof c->ms[0], dbl_cmp);
        double med = c->runs % 2 ? c->ms[c->runs / 2]
                                 : (c->ms[c->runs / 2 - 1] + c->ms[c->runs / 2]) / 2;
        printf("%s %d %.2f %.2f %.2f %d\n", c->name, c->runs, med, c->ms[0],
               c->ms[c->runs - 1], c->failed);
    }
    return 0;
}
