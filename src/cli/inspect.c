/* inspect.c - filters, collection and formatting shared by the inspector
 * subcommands. */
#define _GNU_SOURCE
#include "inspect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void insp_sel_init(struct insp_sel *s)
{
    memset(s, 0, sizeof *s);
    cw_diag_filter_init(&s->f);
}

static int parse_states(const char *arg, unsigned *mask)
{
    char buf[256];
    if (strlen(arg) >= sizeof buf)
        return -1;
    strcpy(buf, arg);
    *mask = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "all")) {
            *mask |= CW_STATES_ALL;
            continue;
        }
        int st = cw_tcp_state_parse(t);
        if (st < 0)
            return -1;
        *mask |= CW_STATE_BIT(st);
    }
    return *mask ? 0 : -1;
}

static int port_opt(const char *name, const char *arg, int *out)
{
    int p = cli_parse_port(arg);
    if (p < 0) {
        cli_error("bad %s '%s' (expected 0-65535)", name, arg);
        return -1;
    }
    *out = p;
    return 1;
}

static int number_opt(const char *name, const char *arg, unsigned long long max,
                      unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 0);
    if (!*arg || *end || errno || v > max || arg[0] == '-') {
        cli_error("bad %s '%s'", name, arg);
        return -1;
    }
    *out = v;
    return 1;
}

int insp_sel_option(struct insp_sel *s, int opt, const char *arg)
{
    unsigned long long v;
    switch (opt) {
    case INSP_OPT_STATE:
        if (parse_states(arg, &s->f.states) < 0) {
            cli_error("bad --state '%s' (e.g. close-wait,time-wait or all)", arg);
            return -1;
        }
        return 1;
    case INSP_OPT_PORT:
        s->narrowed = 1;
        return port_opt("--port", arg, &s->f.port);
    case INSP_OPT_SPORT:
        s->narrowed = 1;
        return port_opt("--sport", arg, &s->f.sport);
    case INSP_OPT_DPORT:
        s->narrowed = 1;
        return port_opt("--dport", arg, &s->f.dport);
    case INSP_OPT_ADDR:
        s->narrowed = 1;
        if (cw_diag_filter_addr(&s->f, arg) < 0) {
            cli_error("bad --addr '%s' (expected a numeric IPv4 or IPv6 address)", arg);
            return -1;
        }
        return 1;
    case INSP_OPT_PID:
        s->narrowed = 1;
        if (number_opt("--pid", arg, 0x7fffffff, &v) < 0)
            return -1;
        if (v == 0) {
            cli_error("bad --pid '%s'", arg);
            return -1;
        }
        s->pid = (int)v;
        return 1;
    case INSP_OPT_COOKIE:
        s->narrowed = 1;
        if (number_opt("--cookie", arg, UINT64_MAX, &v) < 0)
            return -1;
        s->have_cookie = 1;
        s->cookie = v;
        return 1;
    case '4':
    case INSP_OPT_V4:
        s->f.family = AF_INET;
        return 1;
    case '6':
    case INSP_OPT_V6:
        s->f.family = AF_INET6;
        return 1;
    }
    return 0;
}

int insp_open(cw_diag **d)
{
    int rc = cw_diag_open(d);
    if (rc < 0) {
        cli_error("cannot open sock_diag netlink socket: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    return CLI_OK;
}

/* Keep the sockets for which keep() says so, in order. */
static size_t sel_keep(const struct insp_sel *s, struct cw_sock *v, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->have_cookie && v[i].cookie != s->cookie)
            continue;
        if (s->pid && v[i].pid != s->pid)
            continue;
        v[out++] = v[i];
    }
    return out;
}

int insp_collect(cw_diag *d, const struct insp_sel *s, int attribute,
                 struct cw_sock **out, size_t *n)
{
    int rc = cw_diag_dump(d, &s->f, out, n);
    if (rc < 0) {
        cli_error("sock_diag dump failed: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    struct insp_sel cookie_only = *s;
    cookie_only.pid = 0;
    *n = sel_keep(&cookie_only, *out, *n);
    if (attribute || s->pid) {
        struct cw_attr_stats st;
        rc = cw_diag_attribute(d, *out, *n, &st);
        if (rc == CW_OK && st.unknown && st.pids_unreadable)
            fprintf(stderr, "closewise: note: %u socket(s) left unknown: %u process(es) "
                            "could not be read (permission denied)%s\n",
                    st.unknown, st.pids_unreadable,
                    geteuid() ? "; run as root to name them" : "");
        if (rc < 0) {
            cli_error("cannot read /proc: %s", cw_strerror(rc));
            free(*out);
            *out = NULL;
            return CLI_SYSTEM;
        }
        *n = sel_keep(s, *out, *n);
    }
    return CLI_OK;
}

const char *insp_state_name(int state)
{
    return cw_tcp_state_name(state);
}

const char *insp_timer_name(int timer)
{
    switch (timer) {
    case 0: return "off";
    case 1: return "on";
    case 2: return "keepalive";
    case 3: return "timewait";
    case 4: return "persist";
    }
    return "unknown";
}

const char *insp_owner_name(int owner)
{
    switch (owner) {
    case CW_OWNER_PROCESS: return "process";
    case CW_OWNER_LISTENER: return "listener";
    case CW_OWNER_NONE: return "none";
    case CW_OWNER_UNKNOWN: return "unknown";
    }
    return "unchecked";
}

const char *insp_fmt_ms(uint64_t ms, char *buf, size_t size)
{
    uint64_t s = ms / 1000;
    if (ms < 60000)
        snprintf(buf, size, "%.1fs", (double)ms / 1000.0);
    else if (s < 3600)
        snprintf(buf, size, "%um%02us", (unsigned)(s / 60), (unsigned)(s % 60));
    else if (s < 86400)
        snprintf(buf, size, "%uh%02um", (unsigned)(s / 3600), (unsigned)(s / 60 % 60));
    else
        snprintf(buf, size, "%ud%02uh", (unsigned)(s / 86400), (unsigned)(s / 3600 % 24));
    return buf;
}

const char *insp_fmt_owner(const struct cw_sock *s, char *buf, size_t size)
{
    switch (s->owner) {
    case CW_OWNER_PROCESS:
        snprintf(buf, size, "%d/%s fd %d", s->pid, s->comm, s->fd);
        break;
    case CW_OWNER_LISTENER:
        if (s->pid)
            snprintf(buf, size, "%d/%s listener fd %d (not accepted)", s->pid,
                     s->comm, s->fd);
        else
            snprintf(buf, size, "listener :%u (not accepted)", (unsigned)s->listener_port);
        break;
    case CW_OWNER_NONE:
        snprintf(buf, size, "-");
        break;
    case CW_OWNER_UNKNOWN:
        snprintf(buf, size, "unknown");
        break;
    default:
        snprintf(buf, size, "?");
    }
    return buf;
}

char *insp_put_u(char *p, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

char *insp_put_pad(char *p, const char *s, size_t len, int width, int right)
{
    int pad = width > (int)len ? width - (int)len : 0;
    if (right) {
        memset(p, ' ', (size_t)pad);
        p += pad;
    }
    memcpy(p, s, len);
    p += len;
    if (!right) {
        memset(p, ' ', (size_t)pad);
        p += pad;
    }
    return p;
}

int insp_addr(const struct cw_sock *s, int peer, char *buf)
{
    if (s->family != AF_INET) {
        int n = cw_sock_addr(s, peer, buf, 64);
        return n < 0 ? 0 : n;
    }
    const uint8_t *a = peer ? s->dst : s->src;
    char *p = buf;
    for (int i = 0; i < 4; i++) {
        p = insp_put_u(p, a[i]);
        *p++ = i < 3 ? '.' : ':';
    }
    p = insp_put_u(p, peer ? s->dport : s->sport);
    *p = '\0';
    return (int)(p - buf);
}

#define INSP_MAX_FLAGS 8

/* getopt_long needs one table: the shared options, then the command's. */
static void build_options(const struct insp_flag *flags, struct option *lo, char *so)
{
    static const struct option shared[] = {INSP_FILTER_OPTIONS};
    size_t n = 0;
    for (; n < sizeof shared / sizeof shared[0]; n++)
        lo[n] = shared[n];
    strcpy(so, "46h");
    for (int i = 0; flags[i].name; i++) {
        lo[n++] = (struct option){flags[i].name, no_argument, NULL,
                                  flags[i].letter ? flags[i].letter : 2000 + i};
        if (flags[i].letter) {
            size_t k = strlen(so);
            so[k] = (char)flags[i].letter;
            so[k + 1] = '\0';
        }
    }
    lo[n++] = (struct option){"help", no_argument, NULL, 'h'};
    lo[n] = (struct option){NULL, 0, NULL, 0};
}

static int *flag_target(const struct insp_flag *flags, int c)
{
    for (int i = 0; flags[i].name; i++)
        if (c == (flags[i].letter ? flags[i].letter : 2000 + i))
            return flags[i].set;
    return NULL;
}

int insp_parse(int argc, char **argv, const char *cmd, struct insp_sel *sel,
               const struct insp_flag *flags, void (*help)(void))
{
    struct option lo[16 + INSP_MAX_FLAGS];
    char so[8 + INSP_MAX_FLAGS];
    build_options(flags, lo, so);
    insp_sel_init(sel);
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, so, lo, NULL)) != -1) {
        int r = insp_sel_option(sel, c, optarg);
        int *flag = r == 0 ? flag_target(flags, c) : NULL;
        if (r < 0)
            return CLI_USAGE;
        if (r > 0)
            continue;
        if (flag) {
            *flag = 1;
        } else if (c == 'h') {
            help();
            return -1;
        } else {
            cli_error("%s: bad option '%s' (see 'closewise %s --help')", cmd,
                      argv[optind - 1], cmd);
            return CLI_USAGE;
        }
    }
    if (optind < argc) {
        cli_error("%s: unexpected argument '%s'", cmd, argv[optind]);
        return CLI_USAGE;
    }
    return CLI_OK;
}

void insp_help(const char *usage, const char *what, const char *options)
{
    printf("usage: %s\n\n%s\n\noptions:\n%s", usage, what, options);
}
