/* diag.c - dump TCP sockets and destroy them through sock_diag, with
 * libmnl doing the netlink framing; the port and address filters. */
#define _GNU_SOURCE
#include "diag_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The kernel caps one dump message batch at 32 KiB; twice that never
 * truncates. */
#define CW__DIAG_BUF (64 * 1024)

/* A receive buffer and a sequence number: the handle's own, or a dump
 * thread's. */
struct dump_io {
    char *buf;
    unsigned seq;
};

/* A growing array of sockets, filled by the dump callback. */
struct dump_ctx {
    const struct cw_diag_filter *f;
    struct cw_sock *v;
    size_t n, cap;
    uint64_t netns;     /* tag for the sockets of the current namespace */
    int err;
    cw_diag_each_cb *each;   /* cw_diag_dump_each(): no array, one call each */
    void *arg;
};

void cw_diag_filter_init(struct cw_diag_filter *f)
{
    memset(f, 0, sizeof *f);
    f->port = f->sport = f->dport = -1;
}

/* IPv4 is compared in its IPv4-mapped IPv6 form, so that a filter on
 * 127.0.0.1 also finds ::ffff:127.0.0.1 on a dual-stack socket, and the
 * other way round. */
static void as_v6(int family, const uint8_t *a, uint8_t out[16])
{
    if (family == AF_INET) {
        memset(out, 0, 10);
        out[10] = out[11] = 0xff;
        memcpy(out + 12, a, 4);
    } else {
        memcpy(out, a, 16);
    }
}

static int prefix_len(const char *text, unsigned max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (!*text || *end || errno || v > max || text[0] < '0' || text[0] > '9')
        return -1;
    return (int)v;
}

int cw_diag_filter_addr(struct cw_diag_filter *f, const char *text)
{
    char tmp[INET6_ADDRSTRLEN + 8];
    size_t len = text ? strlen(text) : 0;
    if (!f || len == 0 || len >= sizeof tmp)
        return CW_EINVAL;
    memcpy(tmp, text, len + 1);
    char *slash = strrchr(tmp, '/');
    if (slash)
        *slash++ = '\0';
    char *a = tmp;
    size_t alen = strlen(a);
    if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']') {
        a[alen - 1] = '\0';
        a++;
    }
    uint8_t raw[16];
    int family, bits;
    if (inet_pton(AF_INET, a, raw) == 1)
        family = AF_INET;
    else if (inet_pton(AF_INET6, a, raw) == 1)
        family = AF_INET6;
    else
        return CW_EINVAL;
    unsigned max = family == AF_INET ? 32 : 128;
    bits = slash ? prefix_len(slash, max) : (int)max;
    if (bits < 0)
        return CW_EINVAL;
    if (f->naddrs >= CW_DIAG_MAX_ADDRS)
        return -ENOSPC;
    struct cw_diag_prefix *p = &f->addrs[f->naddrs++];
    as_v6(family, raw, p->addr);
    p->bits = (unsigned)bits + (family == AF_INET ? 96u : 0u);
    return CW_OK;
}

int cw_diag_filter_port(struct cw_diag_filter *f, int side, int port)
{
    if (!f || side < CW_PORT_EITHER || side > CW_PORT_PEER || port < 0 || port > 65535)
        return CW_EINVAL;
    if (f->nports[side] >= CW_DIAG_MAX_PORTS)
        return -ENOSPC;
    f->ports[side][f->nports[side]++] = (uint16_t)port;
    return CW_OK;
}

int cw_diag_open(cw_diag **out)
{
    if (!out)
        return CW_EINVAL;
    cw_diag *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    struct cw__nsconn c;
    d->buf = malloc(CW__DIAG_BUF);
    int rc = d->buf ? cw__nsconn_open(&c) : -ENOMEM;
    if (rc == CW_OK && (rc = cw__diag_push_ns(d, &c)) < 0)
        mnl_socket_close(c.nl);
    if (rc < 0) {
        cw_diag_close(&d);
        return rc;
    }
    d->seq = (unsigned)time(NULL);
    *out = d;
    return CW_OK;
}

int cw_diag_close(cw_diag **dp)
{
    if (!dp || !*dp)
        return CW_EINVAL;
    cw_diag *d = *dp;
    for (unsigned i = 0; i < d->nns; i++)
        mnl_socket_close(d->ns[i].nl);
    cw__diag_free_owners(d);
    free(d->ns);
    free(d->buf);
    free(d);
    *dp = NULL;
    return CW_OK;
}

static int addr_len(int family)
{
    return family == AF_INET ? 4 : 16;
}

static int port_ok(int one, unsigned n, const uint16_t *set, uint16_t a, uint16_t b)
{
    if (one < 0 && n == 0)
        return 1;
    if (one >= 0 && (a == one || b == one))
        return 1;
    for (unsigned i = 0; i < n; i++)
        if (set[i] == a || set[i] == b)
            return 1;
    return 0;
}

static int prefix_match(const uint8_t a[16], const struct cw_diag_prefix *p)
{
    unsigned full = p->bits / 8, rest = p->bits % 8;
    if (memcmp(a, p->addr, full))
        return 0;
    if (!rest)
        return 1;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[full] & mask) == (p->addr[full] & mask);
}

/* Port and address filters: cheap, so done while parsing rather than
 * with kernel bytecode. */
int cw_diag_filter_match(const struct cw_diag_filter *f, const struct cw_sock *s)
{
    if (!port_ok(f->sport, f->nports[CW_PORT_LOCAL], f->ports[CW_PORT_LOCAL], s->sport,
                 s->sport))
        return 0;
    if (!port_ok(f->dport, f->nports[CW_PORT_PEER], f->ports[CW_PORT_PEER], s->dport,
                 s->dport))
        return 0;
    if (!port_ok(f->port, f->nports[CW_PORT_EITHER], f->ports[CW_PORT_EITHER], s->sport,
                 s->dport))
        return 0;
    if (!f->naddrs)
        return 1;
    uint8_t src[16], dst[16];
    as_v6(s->family, s->src, src);
    as_v6(s->family, s->dst, dst);
    for (unsigned i = 0; i < f->naddrs; i++)
        if (prefix_match(src, &f->addrs[i]) || prefix_match(dst, &f->addrs[i]))
            return 1;
    return 0;
}

static void parse_attrs(const struct nlmsghdr *nlh, struct cw_sock *s)
{
    const struct nlattr *a;
    s->shutdown = -1;
    mnl_attr_for_each(a, nlh, sizeof(struct inet_diag_msg)) {
        uint16_t type = mnl_attr_get_type(a);
        uint16_t len = mnl_attr_get_payload_len(a);
        if (type == INET_DIAG_SHUTDOWN && len >= 1) {
            s->shutdown = mnl_attr_get_u8(a);
        } else if (type == INET_DIAG_INFO) {
            /* Older kernels send a shorter tcp_info: zero-pad it. */
            struct tcp_info ti;
            memset(&ti, 0, sizeof ti);
            memcpy(&ti, mnl_attr_get_payload(a), len < sizeof ti ? len : sizeof ti);
            s->has_info = 1;
            s->last_data_recv_ms = ti.tcpi_last_data_recv;
            s->last_ack_recv_ms = ti.tcpi_last_ack_recv;
            s->last_data_sent_ms = ti.tcpi_last_data_sent;
            s->retransmits = ti.tcpi_retransmits;
            s->total_retrans = ti.tcpi_total_retrans;
        }
    }
}

static void fill_sock(const struct inet_diag_msg *m, struct cw_sock *s)
{
    memset(s, 0, sizeof *s);
    s->cookie = (uint64_t)m->id.idiag_cookie[0] |
                (uint64_t)m->id.idiag_cookie[1] << 32;
    s->family = m->idiag_family;
    s->state = m->idiag_state;
    memcpy(s->src, m->id.idiag_src, (size_t)addr_len(s->family));
    memcpy(s->dst, m->id.idiag_dst, (size_t)addr_len(s->family));
    s->sport = ntohs(m->id.idiag_sport);
    s->dport = ntohs(m->id.idiag_dport);
    s->ifindex = m->id.idiag_if;
    s->rqueue = m->idiag_rqueue;
    s->wqueue = m->idiag_wqueue;
    s->uid = m->idiag_uid;
    s->inode = m->idiag_inode;
    s->timer = m->idiag_timer;
    s->expires_ms = m->idiag_expires;
    s->timer_retrans = m->idiag_retrans;
    s->pid = 0;
    s->fd = -1;
}

/* cw_diag_dump_each(): the socket lives on the stack for one call. */
static int dump_each_cb(const struct nlmsghdr *nlh, const struct inet_diag_msg *m,
                        struct dump_ctx *ctx)
{
    struct cw_sock s;
    fill_sock(m, &s);
    s.netns = ctx->netns;
    if (!cw_diag_filter_match(ctx->f, &s))
        return MNL_CB_OK;
    parse_attrs(nlh, &s);
    ctx->each(&s, ctx->arg);
    return MNL_CB_OK;
}

static int dump_cb(const struct nlmsghdr *nlh, void *data)
{
    struct dump_ctx *ctx = data;
    if (mnl_nlmsg_get_payload_len(nlh) < sizeof(struct inet_diag_msg))
        return MNL_CB_OK;
    const struct inet_diag_msg *m = mnl_nlmsg_get_payload(nlh);
    if (m->idiag_family != AF_INET && m->idiag_family != AF_INET6)
        return MNL_CB_OK;
    if (ctx->each)
        return dump_each_cb(nlh, m, ctx);
    if (ctx->n == ctx->cap) {
        size_t cap = ctx->cap ? ctx->cap * 2 : 1024;
        struct cw_sock *v = realloc(ctx->v, cap * sizeof *v);
        if (!v) {
            ctx->err = -ENOMEM;
            return MNL_CB_ERROR;
        }
        ctx->v = v;
        ctx->cap = cap;
    }
    struct cw_sock *s = &ctx->v[ctx->n];
    fill_sock(m, s);
    s->netns = ctx->netns;
    if (!cw_diag_filter_match(ctx->f, s))
        return MNL_CB_OK;
    parse_attrs(nlh, s);
    ctx->n++;
    return MNL_CB_OK;
}

static unsigned kernel_states(const struct cw_diag_filter *f)
{
    unsigned states = f->states ? f->states : CW_STATES_ALL;
    /* Half-open connections are request sockets, a state of their own. */
    if (states & CW_STATE_BIT(CW_TCP_SYN_RECV))
        states |= CW_STATE_BIT(CW_TCP_NEW_SYN_RECV);
    return states;
}

/* Receive one batch of netlink replies and run cb over it. Returns what
 * mnl_cb_run does (MNL_CB_OK, MNL_CB_STOP), or MNL_CB_ERROR with errno set,
 * also when the receive itself failed. */
static int recv_batch(struct dump_io *io, const struct cw__nsconn *c, mnl_cb_t cb, void *ctx)
{
    ssize_t len;
    while ((len = mnl_socket_recvfrom(c->nl, io->buf, CW__DIAG_BUF)) < 0)
        if (errno != EINTR)
            return MNL_CB_ERROR;
    return mnl_cb_run(io->buf, (size_t)len, io->seq, c->portid, cb, ctx);
}

/* Collect the replies of the dump request just sent. */
static int dump_recv(struct dump_io *io, const struct cw__nsconn *c, struct dump_ctx *ctx)
{
    for (;;) {
        int rc = recv_batch(io, c, dump_cb, ctx);
        if (rc == MNL_CB_STOP)
            return CW_OK;
        if (rc < 0)
            return ctx->err ? ctx->err : -errno;
    }
}

/* One SOCK_DIAG_BY_FAMILY request: one family per walk of the kernel's
 * socket tables. */
static int dump_family(struct dump_io *io, const struct cw__nsconn *c, int family,
                       struct dump_ctx *ctx)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(io->buf);
    nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = ++io->seq;
    struct inet_diag_req_v2 *req = mnl_nlmsg_put_extra_header(nlh, sizeof *req);
    req->sdiag_family = (uint8_t)family;
    req->sdiag_protocol = IPPROTO_TCP;
    req->idiag_states = kernel_states(ctx->f);
    if (ctx->f->want_info)
        req->idiag_ext = 1 << (INET_DIAG_INFO - 1);
    if (mnl_socket_sendto(c->nl, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    return dump_recv(io, c, ctx);
}

/* The original TCPDIAG_GETSOCK request dumps IPv4 and IPv6 in a single
 * walk of the tables (the kernel treats it as AF_UNSPEC), where
 * SOCK_DIAG_BY_FAMILY needs one walk per family: on a machine with tens
 * of thousands of sockets the walk is most of the cost. */
static int dump_both(struct dump_io *io, const struct cw__nsconn *c, struct dump_ctx *ctx)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(io->buf);
    nlh->nlmsg_type = TCPDIAG_GETSOCK;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = ++io->seq;
    struct inet_diag_req *req = mnl_nlmsg_put_extra_header(nlh, sizeof *req);
    req->idiag_family = AF_INET;   /* ignored by the kernel for dumps */
    req->idiag_states = kernel_states(ctx->f);
    if (ctx->f->want_info)
        req->idiag_ext = 1 << (INET_DIAG_INFO - 1);
    if (mnl_socket_sendto(c->nl, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    return dump_recv(io, c, ctx);
}

/* One namespace's sockets, appended to ctx. */
static int dump_ns(struct dump_io *io, const struct cw__nsconn *c, struct dump_ctx *ctx)
{
    const struct cw_diag_filter *f = ctx->f;
    size_t start = ctx->n;
    ctx->netns = c->ino;
    int rc = f->family ? dump_family(io, c, f->family, ctx) : dump_both(io, c, ctx);
    if (rc < 0 && !f->family && !ctx->err) {
        /* A kernel without the old request: one walk per family. */
        ctx->n = start;
        rc = dump_family(io, c, AF_INET, ctx);
        if (rc == CW_OK)
            rc = dump_family(io, c, AF_INET6, ctx);
    }
    return rc;
}

#define CW__DUMP_THREADS 4

/* One dump thread: every nth of the namespaces to dump, from first. */
struct dump_job {
    const struct cw__nsconn **ns;
    size_t nns, first, step;
    struct dump_io io;
    struct dump_ctx ctx;
    int rc;
};

static void *dump_job_run(void *arg)
{
    struct dump_job *j = arg;
    j->rc = CW_OK;
    for (size_t i = j->first; i < j->nns && j->rc == CW_OK; i += j->step)
        j->rc = dump_ns(&j->io, j->ns[i], &j->ctx);
    return NULL;
}

/* Append src's sockets to dst (src's array is freed). */
static int dump_merge(struct dump_ctx *dst, struct dump_ctx *src)
{
    if (dst->n + src->n > dst->cap) {
        struct cw_sock *v = realloc(dst->v, (dst->n + src->n) * sizeof *v);
        if (!v) {
            free(src->v);
            return -ENOMEM;
        }
        dst->v = v;
        dst->cap = dst->n + src->n;
    }
    if (src->n)
        memcpy(dst->v + dst->n, src->v, src->n * sizeof *src->v);
    dst->n += src->n;
    free(src->v);
    return CW_OK;
}

/* Each namespace is one walk of its socket tables in the kernel: with
 * many (containers), the walks run on one thread per core this process
 * may use (taskset, cpuset; at most CW__DUMP_THREADS), each with its own
 * buffer and sequence numbers. */
static int dump_all(cw_diag *d, const struct cw__nsconn **ns, size_t nns,
                    struct dump_ctx *ctx)
{
    struct dump_job job[CW__DUMP_THREADS];
    pthread_t th[CW__DUMP_THREADS];
    int cpus = cw__usable_cpus();
    size_t want = nns < 4 ? 1 : (size_t)(cpus > CW__DUMP_THREADS ? CW__DUMP_THREADS : cpus);
    size_t nth = 0;
    /* Buffers first, so that every job knows how many share the work. */
    char *bufs[CW__DUMP_THREADS] = {d->buf};
    while (nth < want && (nth == 0 || (bufs[nth] = malloc(CW__DIAG_BUF))))
        nth++;
    for (size_t k = 0; k < nth; k++) {
        job[k] = (struct dump_job){.ns = ns, .nns = nns, .first = k, .step = nth,
                                   .ctx = {.f = ctx->f}};
        job[k].io.seq = d->seq + (unsigned)k * 0x1000000u;
        job[k].io.buf = bufs[k];
    }
    int running[CW__DUMP_THREADS] = {0};
    for (size_t k = 1; k < nth; k++)
        running[k] = pthread_create(&th[k], NULL, dump_job_run, &job[k]) == 0;
    /* A thread that did not start: its share is walked here. */
    for (size_t k = 0; k < nth; k++)
        if (!running[k])
            dump_job_run(&job[k]);
    d->seq = job[0].io.seq;
    int rc = job[0].rc;
    *ctx = job[0].ctx;
    for (size_t k = 1; k < nth; k++) {
        if (running[k])
            pthread_join(th[k], NULL);
        free(job[k].io.buf);
        if (rc == CW_OK && job[k].rc < 0)
            rc = job[k].rc;
        int m = dump_merge(ctx, &job[k].ctx);
        if (rc == CW_OK)
            rc = m;
    }
    return rc;
}

static int cookie_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct cw_sock *)a)->cookie;
    uint64_t y = ((const struct cw_sock *)b)->cookie;
    return x < y ? -1 : x > y;
}

/* A socket moving between hash chains during the dump can be reported
 * twice: keep the first. */
static size_t dedupe(struct cw_sock *v, size_t n)
{
    if (n < 2)
        return n;
    qsort(v, n, sizeof *v, cookie_cmp);
    size_t out = 1;
    for (size_t i = 1; i < n; i++)
        if (v[i].cookie != v[out - 1].cookie)
            v[out++] = v[i];
    return out;
}

int cw_diag_dump(cw_diag *d, const struct cw_diag_filter *f,
                 struct cw_sock **out, size_t *count)
{
    return cw__diag_dump_some(d, f, NULL, 0, out, count);
}

int cw__diag_dump_some(cw_diag *d, const struct cw_diag_filter *f, const uint64_t *only,
                       size_t nonly, struct cw_sock **out, size_t *count)
{
    struct cw_diag_filter all;
    if (!d || !out || !count)
        return CW_EINVAL;
    if (!f) {
        cw_diag_filter_init(&all);
        f = &all;
    }
    const struct cw__nsconn **ns = malloc((d->nns ? d->nns : 1) * sizeof *ns);
    size_t nns = 0;
    if (!ns)
        return -ENOMEM;
    for (unsigned i = 0; i < d->nns; i++) {
        int wanted = !only;
        for (size_t k = 0; !wanted && k < nonly; k++)
            wanted = only[k] == d->ns[i].ino;
        if (wanted)
            ns[nns++] = &d->ns[i];
    }
    struct dump_ctx ctx = {.f = f};
    int rc = dump_all(d, ns, nns, &ctx);
    free(ns);
    if (rc < 0) {
        free(ctx.v);
        *out = NULL;
        *count = 0;
        return rc;
    }
    ctx.n = dedupe(ctx.v, ctx.n);
    *out = ctx.v;
    *count = ctx.n;
    return ctx.n > (size_t)0x7fffffff ? 0x7fffffff : (int)ctx.n;
}

int cw_diag_dump_each(cw_diag *d, const struct cw_diag_filter *f, cw_diag_each_cb *cb,
                      void *arg)
{
    struct cw_diag_filter all;
    if (!d || !cb)
        return CW_EINVAL;
    if (!f) {
        cw_diag_filter_init(&all);
        f = &all;
    }
    /* One namespace after the other on the caller's thread: cb never runs
     * concurrently with itself. */
    struct dump_ctx ctx = {.f = f, .each = cb, .arg = arg};
    struct dump_io io = {.buf = d->buf, .seq = d->seq};
    int rc = CW_OK;
    for (unsigned i = 0; i < d->nns && rc == CW_OK; i++)
        rc = dump_ns(&io, &d->ns[i], &ctx);
    d->seq = io.seq;
    return rc;
}

/* The kernel answers SOCK_DESTROY with an NLMSG_ERROR ack; mnl_cb_run
 * turns a non-zero error into -1 with errno set. */
int cw_diag_destroy(cw_diag *d, const struct cw_sock *s)
{
    if (!d || !s || (s->family != AF_INET && s->family != AF_INET6))
        return CW_EINVAL;
    const struct cw__nsconn *c = &d->ns[0];
    for (unsigned i = 0; s->netns && i < d->nns; i++)
        if (d->ns[i].ino == s->netns)
            c = &d->ns[i];
    struct dump_io io = {.buf = d->buf, .seq = d->seq};
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(io.buf);
    nlh->nlmsg_type = SOCK_DESTROY;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    nlh->nlmsg_seq = ++io.seq;
    d->seq = io.seq;
    struct inet_diag_req_v2 *req = mnl_nlmsg_put_extra_header(nlh, sizeof *req);
    req->sdiag_family = (uint8_t)s->family;
    req->sdiag_protocol = IPPROTO_TCP;
    req->idiag_states = CW_STATE_BIT(s->state);
    req->id.idiag_sport = htons(s->sport);
    req->id.idiag_dport = htons(s->dport);
    memcpy(req->id.idiag_src, s->src, (size_t)addr_len(s->family));
    memcpy(req->id.idiag_dst, s->dst, (size_t)addr_len(s->family));
    req->id.idiag_if = s->ifindex;
    req->id.idiag_cookie[0] = (uint32_t)s->cookie;
    req->id.idiag_cookie[1] = (uint32_t)(s->cookie >> 32);
    if (mnl_socket_sendto(c->nl, nlh, nlh->nlmsg_len) < 0)
        return -errno;
    /* The kernel answers with one ACK or one error. */
    return recv_batch(&io, c, NULL, NULL) < 0 ? -errno : CW_OK;
}

/* Look for the option in a kernel config, plain or gzip'ed (read through
 * zcat: no zlib dependency for one line). */
static int config_scan(FILE *f)
{
    char line[256];
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "CONFIG_INET_DIAG_DESTROY=y", 26))
            found = 1;
    return found;
}

int cw_diag_destroy_configured(void)
{
    if (access("/proc/config.gz", R_OK) == 0) {
        FILE *p = popen("zcat /proc/config.gz 2>/dev/null", "r");
        if (p) {
            int found = config_scan(p);
            if (pclose(p) == 0)
                return found;
        }
    }
    char rel[128] = "", path[256];
    FILE *f = fopen("/proc/sys/kernel/osrelease", "re");
    if (f) {
        if (fgets(rel, sizeof rel, f))
            rel[strcspn(rel, "\n")] = '\0';
        fclose(f);
    }
    snprintf(path, sizeof path, "/boot/config-%s", rel);
    f = rel[0] ? fopen(path, "re") : NULL;
    if (!f)
        return -ENOENT;
    int found = config_scan(f);
    fclose(f);
    return found;
}
