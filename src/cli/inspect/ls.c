/* ls.c - `closewise ls`: one socket per line, like `ss -tan`, optionally
 * with the owning process and an explanation; or one JSON document. */
#define _GNU_SOURCE
#include "../exporter/exporter_bpf.h"
#include "inspect.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

struct ls_opts {
    struct insp_sel sel;
    int process, json, explain, no_header;
    int show_netns;     /* more than one namespace: a column for it */
};

enum { OPT_PROCESS = 'p', OPT_EXPLAIN = 'e', OPT_NO_HEADER = 'H', OPT_JSON = 256 };

static const struct cli_opt ls_opts_table[] = {
    {"process", 'p', OPT_PROCESS, NULL,
     "name every process and descriptor holding each\nsocket, and its container (or cgroup)",
     NULL},
    {"explain", 'e', OPT_EXPLAIN, NULL,
     "say who must act on each socket and why (sockets\nwith the same explanation grouped)",
     NULL},
    {"no-header", 'H', OPT_NO_HEADER, NULL, "no header line (for scripts, like ss -H)", NULL},
    {"json", 0, OPT_JSON, NULL, "one JSON document (\"schema\":1; implies tcp_info fields)",
     NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec ls_spec = {
    "ls", "[filters] [--process] [--explain] [--no-header] [--json]",
    "List TCP sockets, one per line, with the kernel's state and queues.",
    {insp_state_opt, insp_filter_opts, ls_opts_table, NULL},
    "Exit status: 0 ok, 2 usage, 3 system error (also a write error)."};

static int ls_option(struct insp_sel *sel, int id, const char *arg)
{
    struct ls_opts *o = (struct ls_opts *)sel;
    (void)arg;
    switch (id) {
    case OPT_PROCESS: o->process = 1; return CLI_OK;
    case OPT_EXPLAIN: o->explain = 1; return CLI_OK;
    case OPT_NO_HEADER: o->no_header = 1; return CLI_OK;
    case OPT_JSON: o->json = 1; return CLI_OK;
    }
    return CLI_USAGE;
}

static int ls_check(struct insp_sel *sel)
{
    struct ls_opts *o = (struct ls_opts *)sel;
    /* Explaining an unaccepted socket names its listener. */
    if (o->explain)
        o->process = 1;
    o->sel.f.want_info = o->json || o->explain;
    return CLI_OK;
}

static int ls_attribute(const struct insp_sel *sel)
{
    return ((const struct ls_opts *)sel)->process;
}

/* A CLOSE_WAIT socket's age: exact when a running exporter's pinned map
 * saw it enter CLOSE_WAIT, else the tcp_info bounds. */
static void json_age(const struct cw_sock *s, xexact *x)
{
    int64_t entry;
    uint32_t lo, hi;
    if (s->state != CW_TCP_CLOSE_WAIT)
        return;
    if (xexact_entry(x, s->cookie, &entry)) {
        int64_t now = cw_now_ms(), age = now > entry ? now - entry : 0;
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        int64_t at_ms = (int64_t)rt.tv_sec * 1000 + rt.tv_nsec / 1000000 - age;
        time_t at = (time_t)(at_ms / 1000);
        struct tm tm;
        char buf[32];
        strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", gmtime_r(&at, &tm));
        printf(",\"age_source\":\"bpf\",\"age_exact_ms\":%lld,"
               "\"entered_close_wait_at\":\"%s.%03dZ\"",
               (long long)age, buf, (int)(at_ms % 1000));
    } else if (cw_sock_close_wait_age(s, &lo, &hi) == CW_OK) {
        printf(",\"age_source\":\"bounds\",\"age_min_ms\":%u,\"age_max_ms\":%u", lo, hi);
    } else {
        fputs(",\"age_source\":\"none\"", stdout);
    }
}

static void json_sock(const struct cw_sock *s, int explain, xexact *x)
{
    char l[64], p[64], why[256];
    cw_sock_addr(s, 0, l, sizeof l);
    cw_sock_addr(s, 1, p, sizeof p);
    printf("{\"cookie\":%llu,\"family\":\"%s\",\"state\":\"%s\",\"local\":\"%s\","
           "\"peer\":\"%s\",\"sport\":%u,\"dport\":%u,\"rqueue\":%u,\"wqueue\":%u,"
           "\"uid\":%u,\"inode\":%u,\"timer\":\"%s\",\"expires_ms\":%u",
           (unsigned long long)s->cookie, s->family == AF_INET6 ? "ipv6" : "ipv4",
           insp_state_name(s->state), l, p, (unsigned)s->sport, (unsigned)s->dport,
           s->rqueue, s->wqueue, s->uid, s->inode, insp_timer_name(s->timer),
           s->expires_ms);
    if (s->has_info)
        printf(",\"lastrcv_ms\":%u,\"lastack_ms\":%u,\"retransmits\":%u,"
               "\"total_retrans\":%u",
               s->last_data_recv_ms, s->last_ack_recv_ms, s->retransmits,
               s->total_retrans);
    if (s->owner != CW_OWNER_UNCHECKED) {
        printf(",\"owner\":\"%s\"", insp_owner_name(s->owner));
        if (s->pid) {
            printf(",\"pid\":%d,\"fd\":%d,\"comm\":", s->pid, s->fd);
            cli_json_str(stdout, s->comm);
        }
        if (s->owner == CW_OWNER_LISTENER)
            printf(",\"listener_port\":%u", (unsigned)s->listener_port);
    }
    insp_json_owner_extra(s);
    json_age(s, x);
    if (explain) {
        fputs(",\"explain\":", stdout);
        cli_json_str(stdout, cw_sock_explain(s, why, sizeof why));
    }
    putchar('}');
}

static void ls_json(const cw_diag *d, const struct ls_opts *o, const struct cw_sock *v,
                    size_t n)
{
    /* Only sockets that entered CLOSE_WAIT while an exporter ran have
     * exact times; the others keep their bounds. */
    xexact *x = NULL;
    xexact_open_pinned(&x);
    fputs("{\"schema\":1,\"sockets\":[", stdout);
    for (size_t i = 0; i < n; i++) {
        fputs(i ? ",\n" : "\n", stdout);
        json_sock(&v[i], o->explain, x);
    }
    xexact_close(&x);
    printf("\n],\"count\":%zu,\"netns\":[", n);
    for (unsigned i = 0; i < cw_diag_netns_count(d); i++)
        printf("%s%llu", i ? "," : "", (unsigned long long)cw_diag_netns_inode(d, i));
    putchar(']');
    if (o->process)
        printf(",\"owners_method\":\"%s\"", insp_method_name(o->sel.attr.method));
    puts("}");
}

/* Both addresses of every socket, formatted once: the column widths
 * depend on all of them, like ss's. */
struct addrs {
    char l[48], p[48];
    int ll, pl;
};

static struct addrs *format_addrs(const struct cw_sock *v, size_t n, int *wl, int *wp)
{
    struct addrs *a = malloc((n ? n : 1) * sizeof *a);
    *wl = (int)strlen("Local Address:Port");
    *wp = (int)strlen("Peer Address:Port");
    for (size_t i = 0; a && i < n; i++) {
        a[i].ll = insp_addr(&v[i], 0, a[i].l);
        a[i].pl = insp_addr(&v[i], 1, a[i].p);
        if (a[i].ll > *wl)
            *wl = a[i].ll;
        if (a[i].pl > *wp)
            *wp = a[i].pl;
    }
    return a;
}

/* One row, built by hand: printf would be most of our time at 10,000
 * sockets. */
static void text_row(const struct cw_sock *s, const struct addrs *a, int wl, int wp,
                     const struct ls_opts *o)
{
    char line[1024], num[24], *p = line;
    const char *st = insp_state_name(s->state);
    if (o->show_netns) {
        p = insp_put_pad(p, num, (size_t)(insp_put_u(num, s->netns) - num), 10, 0);
        *p++ = ' ';
    }
    p = insp_put_pad(p, st, strlen(st), 11, 0);
    *p++ = ' ';
    p = insp_put_pad(p, num, (size_t)(insp_put_u(num, s->rqueue) - num), 6, 1);
    *p++ = ' ';
    p = insp_put_pad(p, num, (size_t)(insp_put_u(num, s->wqueue) - num), 6, 1);
    *p++ = ' ';
    p = insp_put_pad(p, a->l, (size_t)a->ll, wl, 0);
    *p++ = ' ';
    p = insp_put_pad(p, a->p, (size_t)a->pl, o->process ? wp : 0, 0);
    if (o->process) {
        char who[400];
        *p++ = ' ';
        if (s->owner == CW_OWNER_PROCESS && s->nholders <= 1) {
            p = insp_put_u(p, (unsigned)s->pid);
            *p++ = '/';
            size_t cl = strnlen(s->comm, sizeof s->comm);
            memcpy(p, s->comm, cl);
            p += cl;
            memcpy(p, " fd ", 4);
            p = insp_put_u(p + 4, (unsigned)s->fd);
        } else {
            insp_fmt_owner(s, who, sizeof who);
            size_t wl2 = strlen(who);
            memcpy(p, who, wl2);
            p += wl2;
        }
        const char *where = insp_where(s);
        size_t wl3 = strnlen(where, 200);
        *p++ = ' ';
        memcpy(p, where, wl3);
        p += wl3;
    }
    *p++ = '\n';
    fwrite(line, 1, (size_t)(p - line), stdout);
}

/* --explain: the sockets that share an explanation under it, once, in
 * the order the explanations first appear (a listing of a thousand leaked
 * sockets says the same 150 characters once, not a thousand times). */
static int ls_explained(const struct cw_sock *v, size_t n, const struct addrs *a, int wl,
                        int wp, const struct ls_opts *o)
{
    char (*why)[256] = malloc((n ? n : 1) * sizeof *why);
    unsigned char *done = calloc(n ? n : 1, 1);
    if (!why || !done) {
        free(why);
        free(done);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        cw_sock_explain(&v[i], why[i], sizeof why[i]);
    for (size_t i = 0; i < n; i++) {
        if (done[i])
            continue;
        size_t same = 0;
        for (size_t k = i; k < n; k++)
            if (!done[k] && !strcmp(why[k], why[i])) {
                text_row(&v[k], &a[k], wl, wp, o);
                done[k] = 1;
                same++;
            }
        if (same > 1)
            printf("    ^ these %zu sockets: %s\n", same, why[i]);
        else
            printf("    %s\n", why[i]);
    }
    free(why);
    free(done);
    return 0;
}

static int ls_text(const struct cw_sock *v, size_t n, const struct ls_opts *o)
{
    int wl, wp;
    struct addrs *a = format_addrs(v, n, &wl, &wp);
    if (!a)
        return -1;
    if (!o->no_header)
        printf("%s%-11s %6s %6s %-*s %-*s%s\n", o->show_netns ? "Netns      " : "", "State",
               "Recv-Q", "Send-Q", wl, "Local Address:Port", o->process ? wp : 0,
               "Peer Address:Port", o->process ? " Process Container/cgroup" : "");
    int rc = 0;
    if (o->explain)
        rc = ls_explained(v, n, a, wl, wp, o);
    else
        for (size_t i = 0; i < n; i++)
            text_row(&v[i], &a[i], wl, wp, o);
    free(a);
    return rc;
}

static int ls_report(cw_diag *d, struct insp_sel *sel, struct cw_sock *v, size_t n)
{
    struct ls_opts *o = (struct ls_opts *)sel;
    o->show_netns = cw_diag_netns_count(d) > 1;
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    if (o->json) {
        ls_json(d, o, v, n);
    } else if (ls_text(v, n, o) < 0) {
        cli_error("out of memory");
        return CLI_SYSTEM;
    }
    return CLI_OK;   /* main() checks that the output was written */
}

static const struct insp_cmd ls_cmd = {&ls_spec, ls_option, ls_check, ls_attribute, ls_report};

int cmd_ls(int argc, char **argv)
{
    struct ls_opts o;
    memset(&o, 0, sizeof o);
    return insp_run(&ls_cmd, argc, argv, &o.sel);
}
