/* resets_counters.c - `closewise resets` without BPF: the kernel counts
 * the aborts it sends (TcpExt in /proc/net/netstat, per network
 * namespace), so deltas per interval still show *that* replies are being
 * destroyed, if not by whom. */
#define _GNU_SOURCE
#include "resets.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct {
    const char *name;
    const char *meaning;
} counters[] = {
    {"TCPAbortOnClose", "close() with unread input"},
    {"TCPAbortOnData", "SO_LINGER 0 close, or data arriving after close()"},
    {"TCPAbortOnLinger", "FIN_WAIT2 abort (TCP_LINGER2 < 0)"},
};
#define NCOUNTERS (sizeof counters / sizeof counters[0])

/* Read the counters; -1 if the file or a counter is missing. */
static int read_counters(unsigned long long v[NCOUNTERS])
{
    FILE *f = fopen("/proc/net/netstat", "re");
    if (!f)
        return -1;
    char names[8192], values[8192];
    int found = 0;
    while (!found && fgets(names, sizeof names, f) && fgets(values, sizeof values, f)) {
        if (strncmp(names, "TcpExt:", 7) || strncmp(values, "TcpExt:", 7))
            continue;
        char *sn, *sv;
        char *n = strtok_r(names + 7, " \n", &sn), *val = strtok_r(values + 7, " \n", &sv);
        for (; n && val; n = strtok_r(NULL, " \n", &sn), val = strtok_r(NULL, " \n", &sv))
            for (size_t i = 0; i < NCOUNTERS; i++)
                if (!strcmp(n, counters[i].name)) {
                    v[i] = strtoull(val, NULL, 10);
                    found++;
                }
    }
    fclose(f);
    return found == (int)NCOUNTERS ? 0 : -1;
}

static void print_deltas(const struct resets_opts *o, const unsigned long long d[NCOUNTERS])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char t[40];
    resets_time(t, sizeof t, (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec, o->json);
    if (o->json) {
        printf("{\"schema\":1,\"time\":\"%s\",\"source\":\"netstat\"", t);
        for (size_t i = 0; i < NCOUNTERS; i++)
            printf(",\"%s\":%llu", counters[i].name, d[i]);
        printf("}\n");
        return;
    }
    printf("%s", t);
    for (size_t i = 0; i < NCOUNTERS; i++)
        if (d[i])
            printf("  %s +%llu (%s)", counters[i].name, d[i], counters[i].meaning);
    putchar('\n');
}

static void sleep_until(int64_t t)
{
    int64_t left = t - cw_now_ms();
    if (left <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)(left / 1000), .tv_nsec = (long)(left % 1000) * 1000000};
    nanosleep(&ts, NULL);   /* a signal ends it early: resets_stop is set */
}

int resets_counters(const struct resets_opts *o, int64_t deadline, const char *why)
{
    unsigned long long prev[NCOUNTERS] = {0}, cur[NCOUNTERS] = {0};
    if (read_counters(prev) < 0) {
        cli_error("resets: BPF unavailable (%s), and cannot read the TcpExt abort counters "
                  "in /proc/net/netstat: %s", why, errno ? strerror(errno) : "missing");
        return CLI_SYSTEM;
    }
    /* Said after the first reading: what happens from now on is counted. */
    fprintf(stderr, "closewise resets: BPF unavailable (%s); counting resets in "
                    "/proc/net/netstat instead: no process, no line, every process in this "
                    "network namespace\n", why);
    long long seen = 0;
    int64_t next = cw_now_ms() + o->interval_ms;
    while (!resets_stop) {
        int64_t wake = deadline != CW_NEVER && deadline < next ? deadline : next;
        sleep_until(wake);
        if (resets_stop)
            break;
        if (read_counters(cur) < 0) {
            cli_error("resets: /proc/net/netstat became unreadable");
            return CLI_SYSTEM;
        }
        unsigned long long d[NCOUNTERS], sum = 0;
        for (size_t i = 0; i < NCOUNTERS; i++) {
            d[i] = cur[i] - prev[i];
            sum += d[i];
            prev[i] = cur[i];
        }
        if (sum) {
            print_deltas(o, d);
            fflush(stdout);
        }
        seen += (long long)sum;
        if (sum && o->exit_on_reset)
            return CLI_FOUND;
        if ((o->count && seen >= o->count) || (deadline != CW_NEVER && cw_now_ms() >= deadline))
            break;
        next += o->interval_ms;
    }
    return CLI_OK;
}
