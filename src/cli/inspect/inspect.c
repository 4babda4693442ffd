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

const struct cli_opt insp_state_opt[] = {
    {"state", 0, INSP_OPT_STATE, "S[,S...]",
     "only these states: ss(8) names (close-wait, estab,\n"
     "time-wait, listening, ...), kernel names (CLOSE_WAIT)\n"
     "or groups (all, connected, synchronized, bucket, big)", "@states"},
    {NULL, 0, 0, NULL, NULL, NULL}};

/* The filters in three groups, so that watch can leave out the middle one. */
#define FILTER_WHERE                                                                   \
    {"port", 0, INSP_OPT_PORT, "P", "local or peer port P (repeat for several)", NULL}, \
    {"sport", 0, INSP_OPT_SPORT, "P", "local port P", NULL},                            \
    {"dport", 0, INSP_OPT_DPORT, "P", "peer port P", NULL},                             \
    {"addr", 0, INSP_OPT_ADDR, "A[/LEN]",                                               \
     "local or peer address or CIDR prefix (IPv4 or IPv6;\n"                            \
     "IPv4 also matches ::ffff:a.b.c.d; repeatable)", NULL}
#define FILTER_WHO                                                                     \
    {"pid", 0, INSP_OPT_PID, "P", "only sockets held by process P (any holder)", NULL}, \
    {"cookie", 0, INSP_OPT_COOKIE, "C", "only the socket with this kernel cookie", NULL}
#define FILTER_SCOPE                                                                   \
    {"ipv4", '4', INSP_OPT_V4, NULL, "only IPv4", NULL},                                \
    {"ipv6", '6', INSP_OPT_V6, NULL, "only IPv6", NULL},                                \
    {"netns", 0, INSP_OPT_NETNS, "N",                                                   \
     "self, all, a path (/run/netns/NAME) or a PID\n"                                   \
     "(default: all namespaces when privileged)", "self all"},                          \
    {"owners", 0, INSP_OPT_OWNERS, "M",                                                 \
     "how owners are found: bpf (a BPF task_file iterator,\n"                           \
     "/proc when it cannot load), proc (read /proc/PID/fd),\n"                          \
     "auto (default: bpf; CLOSEWISE_OWNERS)", "auto bpf proc"},                         \
    {"no-bpf", 0, INSP_OPT_NO_BPF, NULL,                                                \
     "the same as --owners proc (also CLOSEWISE_NO_BPF=1)", NULL},                      \
    {"verbose", 0, INSP_OPT_VERBOSE, NULL, "say on stderr how owners were found", NULL}

const struct cli_opt insp_filter_opts[] = {FILTER_WHERE, FILTER_WHO, FILTER_SCOPE,
                                           {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_opt insp_watch_filter_opts[] = {FILTER_WHERE, FILTER_SCOPE,
                                                 {NULL, 0, 0, NULL, NULL, NULL}};

static int state_opt(struct insp_sel *s, const char *arg)
{
    size_t bad = 0;
    if (cw_tcp_states_parse(arg, &s->f.states, &bad) == CW_OK)
        return 1;
    cli_usage_error("--state: unknown state '%.*s'; states: established, syn-sent, syn-recv, "
                    "fin-wait-1, fin-wait-2, time-wait, closed, close-wait, last-ack, "
                    "listening, closing, new-syn-recv, or a group: all, connected, "
                    "synchronized, bucket, big",
                    (int)strcspn(arg + bad, ","), arg + bad);
    return -1;
}

/* A repeated port option adds to the set: any of them matches. */
static int port_opt(struct insp_sel *s, const char *name, int side, const char *arg)
{
    int p;
    if (cli_port(name, arg, 0, &p) < 0)
        return -1;
    if (cw_diag_filter_port(&s->f, side, p) < 0) {
        cli_usage_error("%s: too many (at most %d)", name, CW_DIAG_MAX_PORTS);
        return -1;
    }
    s->narrowed = 1;
    return 1;
}

static int family_opt(struct insp_sel *s, int family)
{
    if (s->f.family && s->f.family != family) {
        cli_usage_error("--ipv4 and --ipv6 together select nothing: give one of them");
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
        cli_usage_error("--netns: bad value '%s' (expected self, all, a path or a pid)", arg);
        return -1;
    }
    return 1;
}

/* A cookie is a 64-bit number: all of it, in decimal as ls prints it. */
static int cookie_opt(const char *arg, unsigned long long *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(arg, &end, 10);
    if (!*arg || *end || errno || arg[0] < '0' || arg[0] > '9') {
        cli_usage_error("--cookie: bad cookie '%s' (a decimal number, as ls --json prints it)",
                        arg);
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
        return state_opt(s, arg);
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
            cli_usage_error("--addr: too many (at most %d)", CW_DIAG_MAX_ADDRS);
            return -1;
        }
        if (rc < 0) {
            cli_usage_error("--addr: bad address '%s' (expected a numeric IPv4 or IPv6 address, "
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
            cli_usage_error("--owners: bad value '%s' (expected auto, bpf or proc)", arg);
            return -1;
        }
        return 1;
    case INSP_OPT_VERBOSE:
        s->verbose = 1;
        return 1;
    case INSP_OPT_PID: {
        long long pid;
        s->narrowed = 1;
        if (cli_count("--pid", arg, 1, 0x7fffffff, &pid) < 0)
            return -1;
        s->pid = (int)pid;
        return 1;
    }
    case INSP_OPT_COOKIE:
        s->narrowed = 1;
        if (cookie_opt(arg, &v) < 0)
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
            cli_error("note: %u network namespace(s) could not be entered%s", skipped,
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
        cli_error("note: %u socket(s) left unknown: %u process(es) "
                  "could not be read (permission denied)%s",
                st->unknown, st->pids_unreadable,
                geteuid() ? "; run as root to name them" : "");
    if (st->gone)
        cli_error("note: %u socket(s) closed during the scan "
                  "(exited during scan: their process exited or closed them)",
                st->gone);
    if (s->verbose && st->method == CW_ATTR_PROC)
        cli_error("owners: /proc scan (BPF not used: %s); %u process(es) "
                  "read, %u unreadable, %u exited during scan; %u socket(s) named, "
                  "%u unknown, %u gone",
                s->bpf_why, st->pids_scanned, st->pids_unreadable, st->pids_exited,
                st->found, st->unknown, st->gone);
    else if (s->verbose)
        cli_error("owners: %s; %u socket(s) named, %u unknown, %u gone",
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

int insp_parse(const struct insp_cmd *cmd, int argc, char **argv, struct insp_sel *sel)
{
    struct cli_parser p;
    const char *arg;
    int c;
    insp_sel_init(sel);
    cli_getopt_init(&p, cmd->spec, argc, argv);
    while ((c = cli_getopt(&p, &arg)) != -1) {
        if (c == CLI_HELPED)
            return CLI_HELPED;
        if (c == '?')
            return CLI_USAGE;
        int r = insp_sel_option(sel, c, arg);
        if (r < 0 || (r == 0 && cmd->option(sel, c, arg) != CLI_OK))
            return CLI_USAGE;
    }
    if (cli_no_operands(cmd->spec, argc, argv) != CLI_OK)
        return CLI_USAGE;
    return cmd->check ? cmd->check(sel) : CLI_OK;
}

int insp_run(const struct insp_cmd *cmd, int argc, char **argv, struct insp_sel *sel)
{
    int rc = insp_parse(cmd, argc, argv, sel);
    if (rc != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    cw_diag *d = NULL;
    if ((rc = insp_open(sel, &d)) != CLI_OK)
        return rc;
    struct cw_sock *v = NULL;
    size_t n = 0;
    rc = insp_collect(d, sel, cmd->attribute ? cmd->attribute(sel) : 0, &v, &n);
    if (rc == CLI_OK)
        rc = cmd->report(d, sel, v, n);
    free(v);
    cw_diag_close(&d);   /* after the report: it owns the holders */
    return rc;
}
