/* exporter.c - `closewise exporter`: a Prometheus exporter of TCP states
 * and CLOSE_WAIT leaks per process. It serves /metrics over HTTP on the
 * project's own loop (exporter_serve.c), or writes the same text for
 * node_exporter's textfile collector (--textfile). Either way the kernel
 * is asked at most once per --interval, however many scrapers come. */
#define _GNU_SOURCE
#include "../cli.h"
#include "exporter_metrics.h"
#include "exporter_serve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Not on the Prometheus wiki's port list (whose 9100-9999 range is full);
 * pass --listen to choose another. */
#define XP_DEFAULT_PORT 9947

struct xp_args {
    const char *host;           /* NULL: every address */
    int port;
    int64_t interval_ms;
    struct xm_opts m;
    struct xs_opts s;
    const char *textfile;
    int once;
};

struct xp {
    struct xp_args a;
    cw_loop *loop;
    xm *metrics;
    xs *server;
    cw_timer tick;
    cw_timer poll;              /* drains the resets collector */
    int failed;                 /* a textfile write failed (exit 3) */
};

enum { OPT_LISTEN = 'l', OPT_INTERVAL = 'i', OPT_TOP = 1000, OPT_TOPD, OPT_MAXC,
       OPT_TEXTFILE, OPT_ONCE, OPT_RTIMEOUT, OPT_NOBPF };

static const struct cli_opt xp_opts[] = {
    {"listen", 'l', OPT_LISTEN, "ADDR:PORT",
     "serve http://ADDR:PORT/metrics (default :9947, every\n"
     "address; 127.0.0.1:9947, [::1]:9947 ...)", NULL},
    {"interval", 'i', OPT_INTERVAL, "D", "time between snapshots (default 15s; 500ms, 1m ...)",
     NULL},
    {"top", 0, OPT_TOP, "N",
     "processes with their own series (default 20; the\nrest are summed in pid=\"other\")",
     NULL},
    {"top-destinations", 0, OPT_TOPD, "N",
     "destinations with their own TIME_WAIT and\nephemeral-port series (default 20)", NULL},
    {"max-connections", 0, OPT_MAXC, "N", "concurrent scrapers (default 64; more wait)", NULL},
    {"request-timeout", 0, OPT_RTIMEOUT, "D",
     "a scraper must send its request within D (default\n5s), else 408 and close", NULL},
    {"textfile", 0, OPT_TEXTFILE, "DIR",
     "write DIR/closewise.prom (atomically) every interval\ninstead of serving HTTP", "@file"},
    {"once", 0, OPT_ONCE, NULL, "with --textfile: write once and exit", NULL},
    {"netns", 0, INSP_OPT_NETNS, "N",
     "self, all, a path (/run/netns/NAME) or a PID\n"
     "(default: all namespaces when privileged; each\nsnapshot opens them afresh)", "self all"},
    {"no-bpf", 0, OPT_NOBPF, NULL,
     "no BPF: ages are tcp_info bounds, no per-process\n"
     "resets counter, owners found through /proc", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec exporter_spec = {
    "exporter",
    "[--listen ADDR:PORT] [--interval D] [--top N]\n"
    "                          [--top-destinations N] [--max-connections N]\n"
    "       closewise exporter --textfile DIR [--once] [--interval D] [--top N]",
    "Export TCP states and CLOSE_WAIT sockets per process to Prometheus. The\n"
    "snapshot is taken once per interval and every scrape is served from it.\n"
    "A CLOSE_WAIT socket's age is exact when a BPF program saw it enter the\n"
    "state (one that did so after the exporter started), else bounds from\n"
    "tcp_info; see closewise-exporter(1).",
    {xp_opts, NULL},
    "Exit status: 0 after SIGTERM/SIGINT (or after --once), 2 usage, 3 when it\n"
    "cannot listen, open sock_diag or write the text file."};

/* "ADDR:PORT", "[V6]:PORT", ":PORT" or "PORT". host points into a copy
 * kept in buf. Returns 0, -1 for a bad address part, -2 for a bad port. */
static int parse_listen(const char *arg, char *buf, size_t size, struct xp_args *a)
{
    snprintf(buf, size, "%s", arg);
    char *colon = strrchr(buf, ':');
    char *host = buf, *port = buf;
    if (colon) {
        *colon = '\0';
        port = colon + 1;
        if (host[0] == '[') {
            size_t n = strlen(host);
            if (n < 2 || host[n - 1] != ']')
                return -1;   /* the address is wrong */
            host[n - 1] = '\0';
            host++;
        }
    } else {
        host = NULL;
    }
    int p = cli_parse_port(port);
    if (p < 0)
        return -2;   /* the port is */
    a->host = host && *host && strcmp(host, "*") ? host : NULL;
    a->port = p;
    return 0;
}

static int parse_int(const char *name, const char *arg, int *out, int min, int max)
{
    long long v;
    if (cli_count(name, arg, min, max, &v) < 0)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_ms(const char *name, const char *arg, int64_t *out, long long min,
                    long long max)
{
    long long ms;
    if (cli_duration(name, arg, min, max, &ms) < 0)
        return -1;
    *out = ms;
    return 0;
}

static void xp_defaults(struct xp_args *a)
{
    memset(a, 0, sizeof *a);
    a->port = XP_DEFAULT_PORT;
    a->interval_ms = 15000;
    a->m.top_procs = 20;
    a->m.top_dests = 20;
    a->m.exact = 1;
    insp_sel_init(&a->m.sel);
    a->s.max_conns = 64;
    a->s.request_timeout_ms = 5000;
    a->s.write_timeout_ms = 10000;
    a->s.linger_ms = 2000;
}

/* One option with its value. Returns 0, or -1 after a one-line error. */
static int xp_option(int c, const char *arg, struct xp_args *a, char *lbuf, size_t lsize)
{
    switch (c) {
    case 'l':
        switch (parse_listen(arg, lbuf, lsize, a)) {
        case 0: return 0;
        case -2:
            cli_usage_error("--listen: bad port '%s' (0 to 65535; e.g. :9947, "
                            "127.0.0.1:9947, [::1]:9947)", arg);
            return -1;
        default:
            cli_usage_error("--listen: bad address '%s' (e.g. :9947, 127.0.0.1:9947, "
                            "[::1]:9947)", arg);
            return -1;
        }
    case 'i': return parse_ms("--interval", arg, &a->interval_ms, 10, 86400000);
    case OPT_RTIMEOUT:
        return parse_ms("--request-timeout", arg, &a->s.request_timeout_ms, 10, 3600000);
    case OPT_TOP: return parse_int("--top", arg, &a->m.top_procs, 0, 10000);
    case OPT_TOPD: return parse_int("--top-destinations", arg, &a->m.top_dests, 0, 10000);
    case OPT_MAXC: return parse_int("--max-connections", arg, &a->s.max_conns, 1, 100000);
    case OPT_TEXTFILE: a->textfile = arg; return 0;
    case OPT_ONCE: a->once = 1; return 0;
    case OPT_NOBPF:
        a->m.exact = 0;
        a->m.sel.owners = INSP_OWNERS_PROC;
        return 0;
    case INSP_OPT_NETNS: return insp_sel_option(&a->m.sel, c, arg) == 1 ? 0 : -1;
    }
    return -1;
}

/* Returns CLI_OK, CLI_USAGE after an error, or -1 after --help. */
static int xp_parse(int argc, char **argv, struct xp_args *a, char *lbuf, size_t lsize)
{
    struct cli_parser p;
    const char *arg;
    int c, listen_given = 0;
    xp_defaults(a);
    cli_getopt_init(&p, &exporter_spec, argc, argv);
    while ((c = cli_getopt(&p, &arg)) != -1) {
        if (c == CLI_HELPED)
            return -1;
        if (c == '?')
            return CLI_USAGE;
        listen_given |= c == OPT_LISTEN;
        if (xp_option(c, arg, a, lbuf, lsize) < 0)
            return CLI_USAGE;
    }
    if (cli_no_operands(&exporter_spec, argc, argv) != CLI_OK)
        return CLI_USAGE;
    if (a->once && !a->textfile) {
        cli_usage_error("--once needs --textfile");
        return CLI_USAGE;
    }
    if (a->textfile && listen_given) {
        cli_usage_error("--textfile and --listen exclude each other");
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* Write the text to DIR/closewise.prom through a temporary file in the
 * same directory and rename(2), so that the collector never reads half a
 * file. */
static int write_textfile(const char *dir, const char *text, size_t len)
{
    char tmp[4096], dst[4096];
    snprintf(dst, sizeof dst, "%s/closewise.prom", dir);
    snprintf(tmp, sizeof tmp, "%s/.closewise.prom.%d.tmp", dir, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        cli_error("exporter: cannot create %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    int err = off < len ? errno : 0;
    if (close(fd) < 0 && !err)
        err = errno;
    if (!err && rename(tmp, dst) < 0)
        err = errno;
    if (err) {
        cli_error("exporter: cannot write %s: %s", dst, strerror(err ? err : EIO));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* One snapshot, handed to the server or written out. */
static void snapshot(struct xp *x)
{
    struct xbuf b = {0};
    if (xm_refresh(x->metrics, &b) < 0) {
        cli_error("exporter: out of memory rendering the metrics");
        xb_free(&b);
        return;
    }
    if (x->a.textfile) {
        if (write_textfile(x->a.textfile, b.p, b.len) < 0)
            x->failed = 1;
        xb_free(&b);
    } else {
        xs_set_body(x->server, b.p, b.len);   /* takes b.p */
    }
}

static void on_tick(cw_loop *loop, cw_timer *t)
{
    struct xp *x = t->data;
    snapshot(x);
    /* from the time it is due, not from now: the period does not drift */
    int64_t next = t->deadline + x->a.interval_ms;
    int64_t now = cw_now_ms();
    cw_timer_start(loop, &x->tick, next > now ? next : now + x->a.interval_ms, on_tick);
}

/* Between snapshots the resets collector's ring buffer fills: drain it
 * often enough that a burst of resets is not lost. */
#define XP_POLL_MS 200

static void on_poll(cw_loop *loop, cw_timer *t)
{
    struct xp *x = t->data;
    if (xm_poll(x->metrics))
        cw_timer_start(loop, &x->poll, cw_now_ms() + XP_POLL_MS, on_poll);
}

static int serve(struct xp *x, cw_listener **l)
{
    int rc = cw_listen(x->a.host, (uint16_t)x->a.port, NULL, 1024, l);
    if (rc < 0) {
        cli_error("exporter: cannot listen on %s:%d: %s", x->a.host ? x->a.host : "*",
                  x->a.port, cw_strerror(rc));
        return CLI_SYSTEM;
    }
    rc = xs_new(x->loop, cw_listener_fd(*l), &x->a.s, &x->server);
    if (rc < 0) {
        cli_error("exporter: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    printf("listening on %s%s%s:%d\n", x->a.host && strchr(x->a.host, ':') ? "[" : "",
           x->a.host ? x->a.host : "*", x->a.host && strchr(x->a.host, ':') ? "]" : "",
           cw_listener_port(*l));
    fflush(stdout);
    return CLI_OK;
}

static int run(struct xp *x)
{
    cw_listener *l = NULL;
    if (x->a.once)
        x->a.m.exact = 0;   /* no transition can happen before a one-shot ends */
    int rc = xm_new(&x->a.m, &x->metrics);
    if (rc != CLI_OK)
        return rc;   /* insp_open() said why */
    const char *why = xm_exact_why(x->metrics);
    if (why && x->a.m.exact && !x->a.once)
        cli_error("exporter: exact CLOSE_WAIT ages off (%s); reporting tcp_info bounds", why);
    why = xm_resets_why(x->metrics);
    if (why && x->a.m.exact && !x->a.once)
        cli_error("exporter: resets per process off (%s); closewise_tcp_aborts_total still "
                  "counts them machine-wide", why);
    if (x->a.once) {
        snapshot(x);
        xm_free(&x->metrics);
        return x->failed ? CLI_SYSTEM : CLI_OK;
    }
    int code = CLI_SYSTEM;
    if (cw_loop_new(&x->loop) < 0 || cw_loop_signals(x->loop, NULL, NULL) < 0) {
        cli_error("exporter: cannot create the event loop");
        goto out;
    }
    if (!x->a.textfile && (code = serve(x, &l)) != CLI_OK)
        goto out;
    x->tick.data = x;
    snapshot(x);
    if (x->failed) {
        code = CLI_SYSTEM;   /* a textfile directory we cannot write: say so at once */
        goto out;
    }
    cw_timer_start(x->loop, &x->tick, cw_now_ms() + x->a.interval_ms, on_tick);
    x->poll.data = x;
    on_poll(x->loop, &x->poll);
    code = cw_loop_run(x->loop) < 0 ? CLI_SYSTEM : CLI_OK;
out:
    cw_timer_stop(x->loop, &x->tick);
    cw_timer_stop(x->loop, &x->poll);
    xs_free(&x->server);
    cw_listener_close(&l);
    cw_loop_free(&x->loop);
    xm_free(&x->metrics);
    return code;
}

int cmd_exporter(int argc, char **argv)
{
    struct xp x;
    char lbuf[256];
    memset(&x, 0, sizeof x);
    int rc = xp_parse(argc, argv, &x.a, lbuf, sizeof lbuf);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    return run(&x);
}
