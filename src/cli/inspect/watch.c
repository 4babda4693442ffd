/* watch.c - `closewise watch`: sample the CLOSE_WAIT sockets repeatedly,
 * follow each one by cookie (a 4-tuple can be reused, a cookie cannot),
 * print what appears and what goes, and flag sockets stuck longer than a
 * threshold. With --exit-on-leak it is a check for cron jobs and CI. */
#define _GNU_SOURCE
#include "inspect.h"
#include "../exporter/exporter_bpf.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct watch_opts {
    struct insp_sel sel;
    long long interval_ms, older_than_ms;
    long long count;        /* samples to take, 0 = until interrupted */
    int exit_on_leak;
};

/* One CLOSE_WAIT socket followed across samples. Its age is known within
 * [lo0, hi0] at t_first and grows with the clock from there. */
struct tracked {
    struct cw_sock s;       /* holders NULL: they live only until the
                               next attribution; who keeps them as text */
    char who[160];
    int64_t t_first;
    uint32_t lo0, hi0;
    int has_hi;
    int leak_reported;
    int exact;              /* lo0 == hi0, stamped by the BPF program */
};

/* --json: one JSON object per event (JSON Lines) instead of text. */
static int watch_json;
/* Exact entry times (exporter_bpf.c): a running exporter's pinned map,
 * which knows every socket that entered CLOSE_WAIT since the exporter
 * started (before watch did, too), and watch's own program for those
 * that enter while it runs. Either may be NULL. */
static xexact *watch_pinned, *watch_exact;

static volatile sig_atomic_t watch_stop;

static void on_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

enum { OPT_INTERVAL = 'i', OPT_OLDER = 'o', OPT_EXIT = 'x', OPT_COUNT = 'c', OPT_JSON = 'j' };

static const struct cli_opt watch_opts_table[] = {
    {"interval", 0, OPT_INTERVAL, "D", "time between samples (default 1s, at least 10ms)", NULL},
    {"older-than", 0, OPT_OLDER, "D", "leak threshold (default 60s)", NULL},
    {"exit-on-leak", 0, OPT_EXIT, NULL, "exit 1 as soon as a socket passes the threshold", NULL},
    {"count", 0, OPT_COUNT, "N",
     "stop after N samples and exit 0 (default: run until\ninterrupted)", NULL},
    {"json", 0, OPT_JSON, NULL,
     "one JSON object per line and event (appeared, closed,\nleak), for log pipelines", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec watch_spec = {
    "watch",
    "[filters] [--interval D] [--older-than D]\n"
    "                       [--exit-on-leak] [--count N] [--json]",
    "Sample CLOSE_WAIT sockets every interval, follow each one by its kernel\n"
    "cookie, and print '+' when one appears, '-' when it goes, '!' once it has\n"
    "been in CLOSE_WAIT longer than --older-than. An age is exact ('in\n"
    "CLOSE_WAIT for 14m03s since 10:42:17') when BPF saw the socket enter the\n"
    "state: a running exporter's pinned map, or watch's own program for sockets\n"
    "that enter while it runs; else tcp_info bounds it ('for at least 3.0s, at\n"
    "most 6.0s': last ACK <= age <= last data received). --json says which\n"
    "(\"age_source\": \"bpf\" or \"bounds\").\n"
    "Durations: 500ms, 2s, 1m30s, 1.5s, 1h (a number needs its unit).",
    {insp_watch_filter_opts, watch_opts_table, NULL},
    "Exit status: 0 ok (--count reached or interrupted), 1 a leak with\n"
    "--exit-on-leak, 2 usage, 3 system error."};

static int watch_option(struct insp_sel *sel, int id, const char *arg)
{
    struct watch_opts *o = (struct watch_opts *)sel;
    switch (id) {
    case OPT_INTERVAL:
        return cli_duration("--interval", arg, 10, CLI_DURATION_MAX, &o->interval_ms) < 0
                   ? CLI_USAGE : CLI_OK;
    case OPT_OLDER:
        return cli_duration("--older-than", arg, 0, CLI_DURATION_MAX, &o->older_than_ms) < 0
                   ? CLI_USAGE : CLI_OK;
    case OPT_EXIT: o->exit_on_leak = 1; return CLI_OK;
    case OPT_JSON: watch_json = 1; return CLI_OK;
    case OPT_COUNT:
        return cli_count("--count", arg, 1, 1000000000000LL, &o->count) < 0 ? CLI_USAGE
                                                                              : CLI_OK;
    default: return CLI_USAGE;
    }
}

static int watch_check(struct insp_sel *sel)
{
    sel->f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT);
    sel->f.want_info = 1;
    return CLI_OK;
}

/* Parsed by the inspectors' runner; the sampling loop is watch's own. */
static const struct insp_cmd watch_cmd = {&watch_spec, watch_option, watch_check, NULL, NULL};

static int watch_parse(int argc, char **argv, struct watch_opts *o)
{
    memset(o, 0, sizeof *o);
    o->interval_ms = 1000;
    o->older_than_ms = 60000;
    return insp_parse(&watch_cmd, argc, argv, &o->sel);
}

static void stamp(void)
{
    char buf[16];
    time_t t = time(NULL);
    struct tm tm;
    localtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%H:%M:%S", &tm);
    printf("%s ", buf);
}

/* The wall-clock time (ms since the epoch) the socket entered
 * CLOSE_WAIT, for an exact age of age_ms now. */
static int64_t entered_at_ms(uint64_t age_ms)
{
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    return (int64_t)rt.tv_sec * 1000 + rt.tv_nsec / 1000000 - (int64_t)age_ms;
}

/* "in CLOSE_WAIT for 14m03s since 10:42:17" when exact, else what the
 * bounds say: "for at least 3.0s, at most 6.0s". */
static void print_age(const struct tracked *t, int64_t now)
{
    char a[32], b[32];
    uint64_t dt = (uint64_t)(now - t->t_first);
    if (t->exact) {
        time_t since = (time_t)(entered_at_ms(t->lo0 + dt) / 1000);
        struct tm tm;
        char hms[16];
        localtime_r(&since, &tm);
        strftime(hms, sizeof hms, "%H:%M:%S", &tm);
        printf("in CLOSE_WAIT for %s since %s", insp_fmt_ms(t->lo0 + dt, a, sizeof a), hms);
        return;
    }
    printf("in CLOSE_WAIT for at least %s", insp_fmt_ms(t->lo0 + dt, a, sizeof a));
    if (t->has_hi)
        printf(", at most %s", insp_fmt_ms(t->hi0 + dt, b, sizeof b));
}

/* One event as a JSON line: event, time (UTC), cookie, endpoints, owner,
 * and the age, exact or as bounds (age_max_s absent when unknown). */
static void print_json(char mark, const struct tracked *t, int64_t now, const char *why)
{
    char l[64], p[64], ts[32];
    time_t tt = time(NULL);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cw_sock_addr(&t->s, 0, l, sizeof l);
    cw_sock_addr(&t->s, 1, p, sizeof p);
    uint64_t dt = (uint64_t)(now - t->t_first);
    printf("{\"schema\":1,\"event\":\"%s\",\"time\":\"%s\",\"cookie\":%llu,\"local\":\"%s\","
           "\"peer\":\"%s\",\"pid\":%d,\"comm\":",
           mark == '+' ? "appeared" : mark == '-' ? "closed" : "leak", ts,
           (unsigned long long)t->s.cookie, l, p, t->s.pid);
    cli_json_str(stdout, t->s.comm);
    printf(",\"owner\":");
    cli_json_str(stdout, t->who);
    printf(",\"age_exact\":%s,\"age_source\":\"%s\",\"age_min_s\":%.3f",
           t->exact ? "true" : "false", t->exact ? "bpf" : "bounds", (t->lo0 + dt) / 1000.0);
    if (t->has_hi)
        printf(",\"age_max_s\":%.3f", (t->hi0 + dt) / 1000.0);
    if (t->exact) {
        int64_t at = entered_at_ms(t->lo0 + dt);
        time_t sec = (time_t)(at / 1000);
        char iso[32];
        strftime(iso, sizeof iso, "%Y-%m-%dT%H:%M:%S", gmtime_r(&sec, &tm));
        printf(",\"entered_close_wait_at\":\"%s.%03dZ\"", iso, (int)(at % 1000));
    }
    if (why) {
        printf(",\"explain\":");
        cli_json_str(stdout, why);
    }
    printf("}\n");
}

static void print_sock(char mark, const struct tracked *t, int64_t now)
{
    char l[64], p[64];
    if (watch_json) {
        print_json(mark, t, now, NULL);
        return;
    }
    cw_sock_addr(&t->s, 0, l, sizeof l);
    cw_sock_addr(&t->s, 1, p, sizeof p);
    stamp();
    printf("%c %s %s %s ", mark, l, p, t->who);
    print_age(t, now);
    putchar('\n');
}

/* Where a newly seen socket's age starts: tcp_info bounds it, and when
 * the previous sample did not see it, so does the time since then. */
static void track_start(struct tracked *t, const struct cw_sock *s, int64_t now,
                        int64_t prev)
{
    memset(t, 0, sizeof *t);
    t->s = *s;
    insp_fmt_owner(s, t->who, sizeof t->who);
    t->s.holders = NULL;
    t->s.nholders = 0;
    t->t_first = now;
    uint32_t lo = 0, hi = 0;
    if (cw_sock_close_wait_age(s, &lo, &hi) == CW_OK) {
        t->lo0 = lo;
        t->hi0 = hi;
        t->has_hi = 1;
    }
    int64_t entry;
    if (xexact_entry(watch_exact, s->cookie, &entry) ||
        xexact_entry(watch_pinned, s->cookie, &entry)) {
        t->lo0 = t->hi0 = (uint32_t)(now > entry ? now - entry : 0);
        t->has_hi = t->exact = 1;
    } else if (prev >= 0) {
        uint32_t since = (uint32_t)(now - prev);
        if (!t->has_hi || since < t->hi0)
            t->hi0 = since;
        if (t->lo0 > t->hi0)
            t->lo0 = t->hi0;
        t->has_hi = 1;
    }
}

struct watch_state {
    struct tracked *v;
    size_t n;
    int64_t prev;          /* time of the previous sample, -1 before */
};

/* Merge a new sample (sorted by cookie, like the tracked list) into the
 * tracked list: report what went and what came. */
static int merge(struct watch_state *w, cw_diag *d, struct insp_sel *sel, struct cw_sock *s,
                 size_t ns, int64_t now)
{
    struct tracked *nv = calloc(ns ? ns : 1, sizeof *nv);
    if (!nv)
        return -1;
    size_t i = 0, j = 0, k = 0;
    struct cw_sock *fresh = malloc((ns ? ns : 1) * sizeof *fresh);
    size_t nf = 0;
    if (!fresh) {
        free(nv);
        return -1;
    }
    while (j < ns)
        if (i < w->n && w->v[i].s.cookie < s[j].cookie) {
            print_sock('-', &w->v[i++], now);
        } else if (i < w->n && w->v[i].s.cookie == s[j].cookie) {
            nv[k++] = w->v[i++];
            j++;
        } else {
            fresh[nf++] = s[j++];
        }
    while (i < w->n)
        print_sock('-', &w->v[i++], now);
    /* Name only the newcomers' owners: the others are known already. */
    if (nf)
        insp_attribute(d, sel, fresh, nf);
    for (size_t f = 0; f < nf; f++) {
        track_start(&nv[k], &fresh[f], now, w->prev);
        print_sock('+', &nv[k++], now);
    }
    free(fresh);
    free(w->v);
    w->v = nv;
    w->n = k;
    w->prev = now;
    return 0;
}

static int cookie_order(const void *a, const void *b)
{
    uint64_t x = ((const struct tracked *)a)->s.cookie;
    uint64_t y = ((const struct tracked *)b)->s.cookie;
    return x < y ? -1 : x > y;
}

/* Returns 1 if a socket passed the threshold for the first time. */
static int check_leaks(struct watch_state *w, const struct watch_opts *o, int64_t now)
{
    int found = 0;
    for (size_t i = 0; i < w->n; i++) {
        struct tracked *t = &w->v[i];
        if (t->leak_reported || t->lo0 + (now - t->t_first) <= o->older_than_ms)
            continue;
        char why[256];
        t->leak_reported = 1;
        found = 1;
        cw_sock_explain(&t->s, why, sizeof why);
        if (watch_json) {
            print_json('!', t, now, why);
            continue;
        }
        print_sock('!', t, now);
        printf("    leak: in CLOSE_WAIT longer than the threshold; %s\n", why);
    }
    return found;
}

static void sleep_ms(long long ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    /* A signal cuts the sleep short: watch_stop is then set. */
    nanosleep(&ts, NULL);
}

/* Across every namespace, each sample looks again: containers come and
 * go, and a netlink socket kept open would keep a dead container's
 * namespace alive. The note about namespaces that cannot be entered is
 * said once. */
static int reopen(cw_diag **dp, struct watch_opts *o)
{
    if (o->sel.netns != INSP_NETNS_AUTO && o->sel.netns != INSP_NETNS_ALL)
        return CLI_OK;
    cw_diag_close(dp);
    o->sel.netns = INSP_NETNS_AUTO;
    return insp_open(&o->sel, dp);
}

static int watch_loop(cw_diag **dp, struct watch_opts *o)
{
    struct watch_state w = {.prev = -1};
    int rc = CLI_OK;
    for (long long sample = 0; !watch_stop && (!o->count || sample < o->count); sample++) {
        if (sample)
            sleep_ms(o->interval_ms);
        if (watch_stop || (sample && (rc = reopen(dp, o)) != CLI_OK))
            break;
        cw_diag *d = *dp;
        struct cw_sock *s = NULL;
        size_t ns = 0;
        rc = insp_collect(d, &o->sel, 0, &s, &ns);
        if (rc != CLI_OK)
            break;
        int64_t now = cw_now_ms();
        int m = merge(&w, d, &o->sel, s, ns, now);
        free(s);
        if (m < 0) {
            cli_error("watch: out of memory");
            rc = CLI_SYSTEM;
            break;
        }
        qsort(w.v, w.n, sizeof *w.v, cookie_order);
        if (check_leaks(&w, o, now) && o->exit_on_leak) {
            rc = CLI_FOUND;
            break;
        }
    }
    free(w.v);
    return rc;
}

int cmd_watch(int argc, char **argv)
{
    struct watch_opts o;
    int rc = watch_parse(argc, argv, &o);
    if (rc != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;    /* no SA_RESTART: the sleep must end */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    cw_diag *d = NULL;
    if ((rc = insp_open(&o.sel, &d)) != CLI_OK)
        return rc;
    char why[160];
    xexact_open_pinned(&watch_pinned);
    if (xexact_open(&watch_exact, why, sizeof why) < 0)
        cli_error("watch: %s (exact times need BPF: %s)",
                  watch_pinned ? "exact ages only for sockets a running exporter saw enter "
                                 "CLOSE_WAIT, bounds for the others"
                               : "ages are tcp_info bounds",
                  why);
    rc = watch_loop(&d, &o);
    xexact_close(&watch_exact);
    xexact_close(&watch_pinned);
    if (d)
        cw_diag_close(&d);
    return rc;
}
