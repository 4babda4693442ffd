/* stat.c - `closewise stat`: what an operator runs first. Counts of every
 * TCP state, then the processes holding CLOSE_WAIT sockets, worst first. */
#define _GNU_SOURCE
#include "inspect.h"

#include <stdlib.h>
#include <string.h>

#define STAT_MAX_PEERS 3

struct peer_count {
    char addr[64];
    unsigned count;
};

/* CLOSE_WAIT sockets of one holder (a pid, or "unknown"), or of one
 * container (pid 0, where set). */
struct holder {
    int pid;
    int owner;
    char comm[16];
    char where[128];     /* container identity or cgroup path */
    uint64_t netns;
    unsigned count, unread, unclosed, queued;
    int has_age;
    uint32_t oldest_min, oldest_max;
    struct peer_count peers[STAT_MAX_PEERS];
    unsigned other_peers;
};

struct stat_opts {
    struct insp_sel sel;
    int json, explain;
};

enum { OPT_EXPLAIN = 'e', OPT_JSON = 256 };

static const struct cli_opt stat_opts_table[] = {
    {"explain", 'e', OPT_EXPLAIN, NULL, "say what each state means and who must act", NULL},
    {"json", 0, OPT_JSON, NULL, "one JSON document (\"schema\":1)", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec stat_spec = {
    "stat", "[filters] [--explain] [--json]",
    "Count TCP sockets per state, then list the processes holding CLOSE_WAIT\n"
    "sockets, worst first, with the oldest age and the peers.",
    {insp_state_opt, insp_filter_opts, stat_opts_table, NULL},
    "Exit status: 0 ok (CLOSE_WAIT sockets are reported, not judged: see\n"
    "closewise watch --exit-on-leak), 2 usage, 3 system error."};

static int stat_option(struct insp_sel *sel, int id, const char *arg)
{
    struct stat_opts *o = (struct stat_opts *)sel;
    (void)arg;
    if (id == OPT_EXPLAIN)
        o->explain = 1;
    else if (id == OPT_JSON)
        o->json = 1;
    else
        return CLI_USAGE;
    return CLI_OK;
}

static int stat_check(struct insp_sel *sel)
{
    sel->f.want_info = 1;
    return CLI_OK;
}

/* The group of process pid (0: by owner kind), or of container where. */
static struct holder *holder_for(struct holder **hs, size_t *nh, int pid, int owner,
                                 const char *comm, const char *where, uint64_t netns)
{
    for (size_t i = 0; i < *nh; i++) {
        const struct holder *h = &(*hs)[i];
        if (where ? (h->netns == netns && !strcmp(h->where, where))
                  : (h->pid == pid && (pid || h->owner == owner)))
            return &(*hs)[i];
    }
    struct holder *nv = realloc(*hs, (*nh + 1) * sizeof **hs);
    if (!nv)
        return NULL;
    *hs = nv;
    struct holder *h = &nv[(*nh)++];
    memset(h, 0, sizeof *h);
    h->pid = pid;
    h->owner = pid ? CW_OWNER_PROCESS : owner;
    h->netns = netns;
    snprintf(h->comm, sizeof h->comm, "%s", comm);
    snprintf(h->where, sizeof h->where, "%s", where ? where : "");
    return h;
}

static void holder_add(struct holder *h, const struct cw_sock *s)
{
    h->count++;
    if (s->inode == 0)
        h->queued++;
    else if (s->rqueue >= 1)
        h->unread++;
    else
        h->unclosed++;
    uint32_t lo, hi;
    if (cw_sock_close_wait_age(s, &lo, &hi) == CW_OK &&
        (!h->has_age || lo > h->oldest_min)) {
        h->has_age = 1;
        h->oldest_min = lo;
        h->oldest_max = hi;
    }
    char peer[64];
    cw_sock_addr(s, 1, peer, sizeof peer);
    for (int i = 0; i < STAT_MAX_PEERS; i++) {
        if (!h->peers[i].count) {
            strcpy(h->peers[i].addr, peer);
            h->peers[i].count = 1;
            return;
        }
        if (!strcmp(h->peers[i].addr, peer)) {
            h->peers[i].count++;
            return;
        }
    }
    h->other_peers++;
}

static int holder_cmp(const void *a, const void *b)
{
    const struct holder *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? 1 : -1;
    return x->oldest_min < y->oldest_min ? 1 : x->oldest_min > y->oldest_min ? -1 : 0;
}

/* Whether an earlier holder of s is the same process. */
static int seen_pid(const struct cw_sock *s, unsigned k)
{
    for (unsigned j = 0; j < k; j++)
        if (s->holders[j].pid == s->holders[k].pid)
            return 1;
    return 0;
}

/* Add s to the group of every process holding it (a socket inherited
 * across fork counts for each), or to its container's group. */
static int group_one(const struct cw_sock *s, int by_container, struct holder **out,
                     size_t *nh)
{
    struct holder *h;
    if (by_container) {
        h = holder_for(out, nh, 0, s->owner, "", insp_where(s), s->netns);
        return h ? (holder_add(h, s), 0) : -1;
    }
    if (s->nholders <= 1) {
        h = holder_for(out, nh, s->pid, s->owner, s->comm, NULL, s->netns);
        if (h && s->nholders)
            snprintf(h->where, sizeof h->where, "%s", insp_where(s));
        return h ? (holder_add(h, s), 0) : -1;
    }
    for (unsigned k = 0; k < s->nholders; k++) {
        const struct cw_holder *x = &s->holders[k];
        if (seen_pid(s, k))
            continue;
        h = holder_for(out, nh, x->pid, CW_OWNER_PROCESS, x->comm, NULL, s->netns);
        if (!h)
            return -1;
        snprintf(h->where, sizeof h->where, "%s",
                 x->container[0] ? x->container : x->cgroup);
        holder_add(h, s);
    }
    return 0;
}

/* Group the CLOSE_WAIT sockets by holder process (or by container), worst
 * (most sockets) first. */
static int group(struct cw_sock *v, size_t n, int by_container, struct holder **out,
                 size_t *nh)
{
    *out = NULL;
    *nh = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].state == CW_TCP_CLOSE_WAIT && group_one(&v[i], by_container, out, nh) < 0)
            return -1;
    if (*nh > 1)
        qsort(*out, *nh, sizeof **out, holder_cmp);
    return 0;
}

static const char *holder_name(const struct holder *h, char *buf, size_t size)
{
    if (h->pid)
        snprintf(buf, size, "%d/%s", h->pid, h->comm);
    else
        snprintf(buf, size, "%s", h->owner == CW_OWNER_LISTENER ? "listener?" : "unknown");
    return buf;
}

static const char *holder_age(const struct holder *h, char *buf, size_t size)
{
    char a[32], b[32];
    if (!h->has_age)
        snprintf(buf, size, "?");
    else
        snprintf(buf, size, ">=%s (<=%s)", insp_fmt_ms(h->oldest_min, a, sizeof a),
                 insp_fmt_ms(h->oldest_max, b, sizeof b));
    return buf;
}

static void text_holder(const struct holder *h, int explain)
{
    char name[64], age[80];
    printf("  %6u  %-24s %-22s", h->count, holder_name(h, name, sizeof name),
           holder_age(h, age, sizeof age));
    for (int i = 0; i < STAT_MAX_PEERS && h->peers[i].count; i++)
        printf(" %s%s(%u)", i ? "" : "", h->peers[i].addr, h->peers[i].count);
    if (h->other_peers)
        printf(" +%u more", h->other_peers);
    putchar('\n');
    if (!explain)
        return;
    if (h->unread)
        printf("          %u: peer closed; this process has not read the end of stream\n",
               h->unread);
    if (h->unclosed)
        printf("          %u: read EOF, never called close()\n", h->unclosed);
    if (h->queued)
        printf("          %u: in a listener's accept queue, never accepted\n", h->queued);
}

/* Sockets per network namespace. */
struct ns_count {
    uint64_t ino;
    unsigned total, close_wait;
};

/* Everything stat prints. */
struct report {
    unsigned counts[16];
    size_t total;
    struct ns_count *ns;
    size_t nns;
    struct holder *procs, *boxes;   /* by process, by container */
    size_t nprocs, nboxes;
};

static void text_groups(const char *title, const char *col, const struct holder *hs,
                        size_t nh, int explain)
{
    printf("\n%s, worst first:\n  %6s  %-24s %-22s %s\n", title, "COUNT", col, "OLDEST",
           "PEERS");
    for (size_t i = 0; i < nh; i++)
        text_holder(&hs[i], explain);
}

static void stat_text(const struct report *r, int explain)
{
    struct cw_sock probe;
    char why[256];
    memset(&probe, 0, sizeof probe);
    printf("TCP sockets: %zu\n", r->total);
    for (int st = CW_TCP_ESTABLISHED; st <= CW_TCP_CLOSING; st++) {
        printf("  %-12s %7u", insp_state_name(st), r->counts[st]);
        probe.state = st;
        probe.inode = 1;
        if (explain && st != CW_TCP_CLOSE_WAIT)
            printf("  %s", cw_sock_explain(&probe, why, sizeof why));
        putchar('\n');
    }
    if (r->nns > 1) {
        printf("\nPer network namespace:\n  %-12s %7s %10s\n", "NETNS", "TOTAL", "CLOSE_WAIT");
        for (size_t i = 0; i < r->nns; i++)
            printf("  %-12llu %7u %10u\n", (unsigned long long)r->ns[i].ino, r->ns[i].total,
                   r->ns[i].close_wait);
    }
    if (!r->nprocs && explain)
        printf("\nNo socket in CLOSE_WAIT: no process is holding a connection "
               "that its peer has closed.\n");
    if (!r->nprocs)
        return;
    text_groups("CLOSE_WAIT by process", "PID/COMMAND", r->procs, r->nprocs, explain);
    printf("\nCLOSE_WAIT by container (or cgroup), worst first:\n  %6s  %-12s %s\n",
           "COUNT", "NETNS", "CONTAINER/CGROUP");
    for (size_t i = 0; i < r->nboxes; i++)
        printf("  %6u  %-12llu %s\n", r->boxes[i].count,
               (unsigned long long)r->boxes[i].netns, r->boxes[i].where);
}

static void json_holder(const struct holder *h)
{
    printf("{\"pid\":%d,\"comm\":", h->pid);
    cli_json_str(stdout, h->comm);
    printf(",\"netns\":%llu,\"where\":", (unsigned long long)h->netns);
    cli_json_str(stdout, h->where);
    printf(",\"owner\":\"%s\",\"count\":%u,\"not_read_eof\":%u,\"not_closed\":%u,"
           "\"not_accepted\":%u",
           insp_owner_name(h->owner), h->count, h->unread, h->unclosed, h->queued);
    if (h->has_age)
        printf(",\"oldest_min_ms\":%u,\"oldest_max_ms\":%u", h->oldest_min, h->oldest_max);
    fputs(",\"peers\":[", stdout);
    for (int i = 0; i < STAT_MAX_PEERS && h->peers[i].count; i++)
        printf("%s{\"peer\":\"%s\",\"count\":%u}", i ? "," : "", h->peers[i].addr,
               h->peers[i].count);
    printf("],\"other_peers\":%u}", h->other_peers);
}

static void stat_json(const struct report *r, const struct insp_sel *sel)
{
    printf("{\"schema\":1,\"total\":%zu,\"states\":{", r->total);
    for (int st = CW_TCP_ESTABLISHED; st <= CW_TCP_CLOSING; st++)
        printf("%s\"%s\":%u", st == CW_TCP_ESTABLISHED ? "" : ",", insp_state_name(st),
               r->counts[st]);
    fputs("},\"netns\":[", stdout);
    for (size_t i = 0; i < r->nns; i++)
        printf("%s{\"inode\":%llu,\"total\":%u,\"close_wait\":%u}", i ? "," : "",
               (unsigned long long)r->ns[i].ino, r->ns[i].total, r->ns[i].close_wait);
    printf("],\"owners_method\":\"%s\",\"close_wait\":[", insp_method_name(sel->attr.method));
    for (size_t i = 0; i < r->nprocs; i++) {
        fputs(i ? ",\n" : "\n", stdout);
        json_holder(&r->procs[i]);
    }
    fputs("],\"close_wait_by_container\":[", stdout);
    for (size_t i = 0; i < r->nboxes; i++) {
        fputs(i ? ",\n" : "\n", stdout);
        json_holder(&r->boxes[i]);
    }
    puts("]}");
}

static int count_ns(const cw_diag *d, const struct cw_sock *v, size_t n, struct report *r)
{
    r->nns = cw_diag_netns_count(d);
    r->ns = calloc(r->nns ? r->nns : 1, sizeof *r->ns);
    if (!r->ns)
        return -1;
    for (size_t i = 0; i < r->nns; i++)
        r->ns[i].ino = cw_diag_netns_inode(d, (unsigned)i);
    for (size_t i = 0; i < n; i++) {
        r->counts[v[i].state & 15]++;
        r->total++;
        for (size_t k = 0; k < r->nns; k++)
            if (r->ns[k].ino == v[i].netns) {
                r->ns[k].total++;
                r->ns[k].close_wait += v[i].state == CW_TCP_CLOSE_WAIT;
            }
    }
    return 0;
}

static int build_report(const cw_diag *d, struct cw_sock *v, size_t n, size_t ncw,
                        struct report *r)
{
    memset(r, 0, sizeof *r);
    if (count_ns(d, v, n, r) < 0 || group(v, ncw, 0, &r->procs, &r->nprocs) < 0 ||
        group(v, ncw, 1, &r->boxes, &r->nboxes) < 0) {
        cli_error("stat: out of memory");
        return CLI_SYSTEM;
    }
    return CLI_OK;
}

/* What insp_run() dumped: attribute only the CLOSE_WAIT sockets, moved to
 * the front (they are what stat is for; with --pid, insp_collect named
 * them all), then count and print. */
static int stat_report(cw_diag *d, struct insp_sel *sel, struct cw_sock *v, size_t n)
{
    struct stat_opts *o = (struct stat_opts *)sel;
    size_t ncw = 0;
    int rc = CLI_OK;
    for (size_t i = 0; i < n; i++)
        if (v[i].state == CW_TCP_CLOSE_WAIT) {
            struct cw_sock t = v[ncw];
            v[ncw++] = v[i];
            v[i] = t;
        }
    if (ncw && !sel->pid && insp_attribute(d, sel, v, ncw) < 0) {
        cli_error("cannot read /proc");
        return CLI_SYSTEM;
    }
    struct report r;
    rc = build_report(d, v, n, ncw, &r);
    if (rc == CLI_OK && o->json)
        stat_json(&r, sel);
    else if (rc == CLI_OK)
        stat_text(&r, o->explain);
    free(r.ns);
    free(r.procs);
    free(r.boxes);
    return rc;
}

static const struct insp_cmd stat_cmd = {&stat_spec, stat_option, stat_check, NULL,
                                         stat_report};

int cmd_stat(int argc, char **argv)
{
    struct stat_opts o;
    memset(&o, 0, sizeof o);
    return insp_run(&stat_cmd, argc, argv, &o.sel);
}
