/* inspect.c - filters, collection and formatting shared by the inspector
 * subcommands. */
#define _GNU_SOURCE
#include "inspect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

void insp_sel_init(struct insp_sel *s)
{
    memset(s, 0, sizeof *s);
    cw_diag_filter_init(&s->f);
    const char *nobpf = getenv("CLOSEWISE_NO_BPF");
    const char *mode = getenv("CLOSEWISE_OWNERS");
    if (mode && !strcmp(mode, "bpf"))
        s->owners = INSP_OWNERS_BPF;
    else if (mode && !strcmp(mode, "proc"))
        s->owners = INSP_OWNERS_PROC;
    if (nobpf && *nobpf && strcmp(nobpf, "0"))
        s->owners = INSP_OWNERS_PROC;
}

int insp_attribute(cw_diag *d, struct insp_sel *s, struct cw_sock *v, size_t n)
{
    if (s->owners == INSP_OWNERS_PROC)
        s->bpf_why = "--owners proc, --no-bpf or the environment asked for /proc";
    else if (insp_bpf_attribute(d, v, n, &s->attr, &s->bpf_why) == CW_OK)
        return CW_OK;
    return cw_diag_attribute(d, v, n, &s->attr);
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

/* A repeated port option adds to the set: any of them matches. */
static int port_opt(struct insp_sel *s, const char *name, int side, const char *arg)
{
    int p = cli_parse_port(arg);
    if (p < 0) {
        cli_error("bad %s '%s' (expected 0-65535)", name, arg);
        return -1;
    }
    if (cw_diag_filter_port(&s->f, side, p) < 0) {
        cli_error("too many %s options (at most %d)", name, CW_DIAG_MAX_PORTS);
        return -1;
    }
    s->narrowed = 1;
    return 1;
}

static int family_opt(struct insp_sel *s, int family)
{
    if (s->f.family && s->f.family != family) {
        cli_error("-4 and -6 together select nothing: give one of them");
        return -1;
    }
    s->f.family = family;
    return 1;
}

static int netns_opt(struct insp_sel *s, const char *arg)
{
    int pid = cli_parse_port(arg) >= 0 || arg[0] != '/' ? atoi(arg) : 0;
    if (!strcmp(arg, "self")) {
        s->netns = INSP_NETNS_SELF;
    } else if (!strcmp(arg, "all")) {
        s->netns = INSP_NETNS_ALL;
    } else if (arg[0] == '/' && strlen(arg) < sizeof s->netns_path) {
        s->netns = INSP_NETNS_PATH;
        strcpy(s->netns_path, arg);
    } else if (pid > 0 && strspn(arg, "0123456789") == strlen(arg)) {
        s->netns = INSP_NETNS_PATH;
        snprintf(s->netns_path, sizeof s->netns_path, "/proc/%d/ns/net", pid);
    } else {
        cli_error("bad --netns '%s' (expected self, all, a path or a pid)", arg);
        return -1;
    }
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
        return port_opt(s, "--port", CW_PORT_EITHER, arg);
    case INSP_OPT_SPORT:
        return port_opt(s, "--sport", CW_PORT_LOCAL, arg);
    case INSP_OPT_DPORT:
        return port_opt(s, "--dport", CW_PORT_PEER, arg);
    case INSP_OPT_ADDR: {
        s->narrowed = 1;
        int rc = cw_diag_filter_addr(&s->f, arg);
        if (rc == -ENOSPC) {
            cli_error("too many --addr options (at most %d)", CW_DIAG_MAX_ADDRS);
            return -1;
        }
        if (rc < 0) {
            cli_error("bad --addr '%s' (expected a numeric IPv4 or IPv6 address, "
                      "optionally /LEN)", arg);
            return -1;
        }
        return 1;
    }
    case INSP_OPT_NETNS:
        return netns_opt(s, arg);
    case INSP_OPT_NO_BPF:
        s->owners = INSP_OWNERS_PROC;
        return 1;
    case INSP_OPT_OWNERS:
        if (!strcmp(arg, "auto"))
            s->owners = INSP_OWNERS_AUTO;
        else if (!strcmp(arg, "bpf"))
            s->owners = INSP_OWNERS_BPF;
        else if (!strcmp(arg, "proc"))
            s->owners = INSP_OWNERS_PROC;
        else {
            cli_error("bad --owners '%s' (expected auto, bpf or proc)", arg);
            return -1;
        }
        return 1;
    case INSP_OPT_VERBOSE:
        s->verbose = 1;
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
        return family_opt(s, AF_INET);
    case '6':
    case INSP_OPT_V6:
        return family_opt(s, AF_INET6);
    }
    return 0;
}

/* Whether this process may enter other namespaces (CAP_SYS_ADMIN in its
 * effective set): without it the default stays home without scanning
 * /proc for namespaces it could not enter anyway. */
static int may_setns(void)
{
    char line[128];
    unsigned long long eff = 0;
    FILE *f = fopen("/proc/self/status", "re");
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "CapEff:", 7))
            eff = strtoull(line + 7, NULL, 16);
    if (f)
        fclose(f);
    return (eff >> 21) & 1;   /* CAP_SYS_ADMIN */
}

int insp_open(const struct insp_sel *s, cw_diag **d)
{
    int rc = s->netns == INSP_NETNS_PATH ? cw_diag_open_netns(d, s->netns_path)
                                         : cw_diag_open(d);
    if (rc < 0 && s->netns == INSP_NETNS_PATH) {
        cli_error("cannot enter network namespace %s: %s%s", s->netns_path,
                  cw_strerror(rc), rc == -EPERM ? " (needs CAP_SYS_ADMIN)" : "");
        return rc == -ENOENT || rc == CW_EINVAL ? CLI_USAGE : CLI_SYSTEM;
    }
    if (rc < 0) {
        cli_error("cannot open sock_diag netlink socket: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    if (s->netns == INSP_NETNS_ALL || (s->netns == INSP_NETNS_AUTO && may_setns())) {
        unsigned skipped = 0;
        /* One netlink socket per namespace: a node with a thousand pods
         * would pass the usual soft limit of 1024 descriptors. */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        rc = cw_diag_add_all_netns(*d, &skipped);
        /* Unprivileged, the default quietly stays in the caller's own
         * namespace; asked for all, say what could not be seen. */
        if (s->netns == INSP_NETNS_ALL && (rc < 0 || skipped) && !s->quiet)
            fprintf(stderr, "closewise: note: %u network namespace(s) could not be "
                            "entered%s\n", skipped,
                    geteuid() ? " (needs CAP_SYS_ADMIN)" : "");
    }
    return CLI_OK;
}

const char *insp_method_name(int method)
{
    switch (method) {
    case CW_ATTR_PROC: return "proc";
    case CW_ATTR_BPF: return "bpf";
    }
    return "none";
}

static int held_by(const struct cw_sock *s, int pid)
{
    if (s->pid == pid)
        return 1;
    for (unsigned i = 0; i < s->nholders; i++)
        if (s->holders[i].pid == pid)
            return 1;
    return 0;
}

/* Keep the sockets for which keep() says so, in order. */
static size_t sel_keep(const struct insp_sel *s, struct cw_sock *v, size_t n)
{
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        if (s->have_cookie && v[i].cookie != s->cookie)
            continue;
        if (s->pid && !held_by(&v[i], s->pid))
            continue;
        v[out++] = v[i];
    }
    return out;
}

/* What the user should know about owners left unnamed: permission
 * problems, and (apart) sockets whose process exited during the scan. */
static void attribution_notes(const struct insp_sel *s)
{
    const struct cw_attr_stats *st = &s->attr;
    if (st->unknown && st->pids_unreadable)
        fprintf(stderr, "closewise: note: %u socket(s) left unknown: %u process(es) "
                        "could not be read (permission denied)%s\n",
                st->unknown, st->pids_unreadable,
                geteuid() ? "; run as root to name them" : "");
    if (st->gone)
        fprintf(stderr, "closewise: note: %u socket(s) closed during the scan "
                        "(exited during scan: their process exited or closed them)\n",
                st->gone);
    if (s->verbose && st->method == CW_ATTR_PROC)
        fprintf(stderr, "closewise: owners: /proc scan (BPF not used: %s); %u process(es) "
                        "read, %u unreadable, %u exited during scan; %u socket(s) named, "
                        "%u unknown, %u gone\n",
                s->bpf_why, st->pids_scanned, st->pids_unreadable, st->pids_exited,
                st->found, st->unknown, st->gone);
    else if (s->verbose)
        fprintf(stderr, "closewise: owners: %s; %u socket(s) named, %u unknown, %u gone\n",
                st->method == CW_ATTR_BPF ? "BPF task_file iterator" : "nothing to look up",
                st->found, st->unknown, st->gone);
}

int insp_collect(cw_diag *d, struct insp_sel *s, int attribute,
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
        rc = insp_attribute(d, s, *out, *n);
        if (rc == CW_OK)
            attribution_notes(s);
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
    case CW_OWNER_GONE: return "exited";
    }
    return "unchecked";
}

const char *insp_fmt_holders(const struct cw_sock *s, char *buf, size_t size)
{
    size_t len = 0;
    buf[0] = '\0';
    for (unsigned i = 0; i < s->nholders; i++) {
        const struct cw_holder *h = &s->holders[i];
        char one[64], more[32];
        int k = snprintf(one, sizeof one, "%s%d/%s fd %d", i ? "," : "", h->pid, h->comm,
                         h->fd);
        int m = snprintf(more, sizeof more, " +%u more", s->nholders - i);
        /* Keep room to say how many did not fit (a listener shared by
         * 64 workers has 64 holders). */
        if (k < 0 || m < 0 || len + (size_t)k + (size_t)m + 1 > size) {
            if (len + (size_t)m + 1 <= size)
                memcpy(buf + len, more, (size_t)m + 1);
            break;
        }
        memcpy(buf + len, one, (size_t)k + 1);
        len += (size_t)k;
    }
    return buf;
}

const char *insp_where(const struct cw_sock *s)
{
    if (!s->nholders)
        return "-";
    const struct cw_holder *h = &s->holders[0];
    if (h->container && h->container[0])
        return h->container;
    return h->cgroup && h->cgroup[0] ? h->cgroup : "-";
}

void insp_json_owner_extra(const struct cw_sock *s)
{
    printf(",\"netns\":%llu", (unsigned long long)s->netns);
    if (s->owner == CW_OWNER_UNCHECKED)
        return;
    if (s->nholders) {
        fputs(",\"cgroup\":", stdout);
        cli_json_str(stdout, s->holders[0].cgroup);
        fputs(",\"container\":", stdout);
        cli_json_str(stdout, s->holders[0].container);
    }
    fputs(",\"holders\":[", stdout);
    for (unsigned i = 0; i < s->nholders; i++) {
        const struct cw_holder *h = &s->holders[i];
        printf("%s{\"pid\":%d,\"fd\":%d,\"comm\":", i ? "," : "", h->pid, h->fd);
        cli_json_str(stdout, h->comm);
        fputs(",\"cgroup\":", stdout);
        cli_json_str(stdout, h->cgroup);
        fputs(",\"container\":", stdout);
        cli_json_str(stdout, h->container);
        putchar('}');
    }
    putchar(']');
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
        if (s->nholders > 1)
            insp_fmt_holders(s, buf, size);
        else
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
    case CW_OWNER_GONE:
        snprintf(buf, size, "exited during scan");
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
#define INSP_NSHARED 13

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
    struct option lo[INSP_NSHARED + 2 + INSP_MAX_FLAGS];
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
