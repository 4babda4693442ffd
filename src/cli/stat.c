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

/* CLOSE_WAIT sockets of one holder (a pid, or "unknown"). */
struct holder {
    int pid;
    int owner;
    char comm[16];
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

static void stat_help(void)
{
    insp_help("closewise stat [filters] [--explain] [--json]",
              "Count TCP sockets per state, then list the processes holding CLOSE_WAIT\n"
              "sockets, worst first, with the oldest age and the peers.",
              INSP_FILTER_HELP
              "  --explain         say what each state means and who must act\n"
              "  --json            one JSON document\n"
              "  -h, --help        this help\n");
}

static int stat_parse(int argc, char **argv, struct stat_opts *o)
{
    memset(o, 0, sizeof *o);
    const struct insp_flag flags[] = {
        {"explain", 'e', &o->explain},
        {"json", 0, &o->json},
        {NULL, 0, NULL}};
    int rc = insp_parse(argc, argv, "stat", &o->sel, flags, stat_help);
    if (rc)
        return rc;
    o->sel.f.want_info = 1;
    return CLI_OK;
}

static struct holder *holder_for(struct holder **hs, size_t *nh, const struct cw_sock *s)
{
    for (size_t i = 0; i < *nh; i++)
        if ((*hs)[i].pid == s->pid && (s->pid || (*hs)[i].owner == s->owner))
            return &(*hs)[i];
    struct holder *nv = realloc(*hs, (*nh + 1) * sizeof **hs);
    if (!nv)
        return NULL;
    *hs = nv;
    struct holder *h = &nv[(*nh)++];
    memset(h, 0, sizeof *h);
    h->pid = s->pid;
    h->owner = s->pid ? CW_OWNER_PROCESS : s->owner;
    memcpy(h->comm, s->comm, sizeof h->comm);
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

/* Group the CLOSE_WAIT sockets by holder, worst (most sockets) first. */
static int group(struct cw_sock *v, size_t n, struct holder **out, size_t *nh)
{
    *out = NULL;
    *nh = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i].state != CW_TCP_CLOSE_WAIT)
            continue;
        struct holder *h = holder_for(out, nh, &v[i]);
        if (!h)
            return -1;
        holder_add(h, &v[i]);
    }
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

static void stat_text(const unsigned *counts, size_t total, const struct holder *hs,
                      size_t nh, int explain)
{
    struct cw_sock probe;
    char why[256];
    memset(&probe, 0, sizeof probe);
    printf("TCP sockets: %zu\n", total);
    for (int st = CW_TCP_ESTABLISHED; st <= CW_TCP_CLOSING; st++) {
        printf("  %-12s %7u", insp_state_name(st), counts[st]);
        probe.state = st;
        probe.inode = 1;
        if (explain && st != CW_TCP_CLOSE_WAIT)
            printf("  %s", cw_sock_explain(&probe, why, sizeof why));
        putchar('\n');
    }
    if (!nh)
        return;
    printf("\nCLOSE_WAIT by process, worst first:\n  %6s  %-24s %-22s %s\n", "COUNT",
           "PID/COMMAND", "OLDEST", "PEERS");
    for (size_t i = 0; i < nh; i++)
        text_holder(&hs[i], explain);
}

static void json_holder(const struct holder *h)
{
    printf("{\"pid\":%d,\"comm\":", h->pid);
    cli_json_str(stdout, h->comm);
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

static void stat_json(const unsigned *counts, size_t total, const struct holder *hs,
                      size_t nh)
{
    printf("{\"total\":%zu,\"states\":{", total);
    for (int st = CW_TCP_ESTABLISHED; st <= CW_TCP_CLOSING; st++)
        printf("%s\"%s\":%u", st == CW_TCP_ESTABLISHED ? "" : ",", insp_state_name(st),
               counts[st]);
    fputs("},\"close_wait\":[", stdout);
    for (size_t i = 0; i < nh; i++) {
        fputs(i ? ",\n" : "\n", stdout);
        json_holder(&hs[i]);
    }
    puts("]}");
}

int cmd_stat(int argc, char **argv)
{
    struct stat_opts o;
    int rc = stat_parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    cw_diag *d = NULL;
    if ((rc = insp_open(&d)) != CLI_OK)
        return rc;
    struct cw_sock *v = NULL;
    size_t n = 0;
    rc = insp_collect(d, &o.sel, 0, &v, &n);
    /* Attribute only the CLOSE_WAIT sockets, moved to the front: they are
     * what stat is for (with --pid, insp_collect attributed them all). */
    size_t ncw = 0;
    for (size_t i = 0; rc == CLI_OK && i < n; i++)
        if (v[i].state == CW_TCP_CLOSE_WAIT) {
            struct cw_sock t = v[ncw];
            v[ncw++] = v[i];
            v[i] = t;
        }
    if (rc == CLI_OK && ncw && !o.sel.pid && cw_diag_attribute(d, v, ncw, NULL) < 0) {
        cli_error("stat: cannot read /proc");
        rc = CLI_SYSTEM;
    }
    cw_diag_close(&d);
    unsigned counts[16] = {0};
    size_t total = 0;
    for (size_t i = 0; rc == CLI_OK && i < n; i++) {
        counts[v[i].state & 15]++;
        total++;
    }
    struct holder *hs = NULL;
    size_t nh = 0;
    if (rc == CLI_OK && group(v, ncw, &hs, &nh) < 0) {
        cli_error("stat: out of memory");
        rc = CLI_SYSTEM;
    }
    if (rc == CLI_OK) {
        if (o.json)
            stat_json(counts, total, hs, nh);
        else
            stat_text(counts, total, hs, nh, o.explain);
    }
    free(hs);
    free(v);
    return rc;
}
