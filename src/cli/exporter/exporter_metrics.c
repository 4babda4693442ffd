/* exporter_metrics.c - one refresh of the exporter's snapshot (see
 * exporter_metrics.h). Memory stays proportional to the sockets of one
 * dump: CLOSE_WAIT sockets are streamed into a 24-byte record each, and
 * only a compact record per CLOSE_WAIT socket (struct track) is kept
 * between refreshes. Owners are looked up only for sockets not seen
 * before, by inode (exporter_owners.c: the BPF iterator, else /proc), so
 * a steady leak of 100,000 sockets costs one dump per refresh, and the
 * first refresh one walk of the descriptor tables. */
#define _GNU_SOURCE
#include "exporter_metrics.h"
#include "exporter_bpf.h"
#include "../../net/addr.h"
#include "../../net/utf8.h"
#include "exporter_owners.h"
#include "exporter_resets.h"

#include <closewise/closewise.h>

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* A CLOSE_WAIT socket followed by cookie. Its age lies within
 * [lo0, hi0] (hi0 unknown unless has_hi) at t_first, the end of the dump
 * that found it, and grows with the clock from there. */
struct track {
    uint64_t cookie;
    int64_t t_first;
    uint32_t lo0, hi0;
    int pid;                /* 0: not known (yet) */
    uint32_t inode;         /* 0: waiting in an accept queue */
    uint8_t has_hi, tries;  /* tries: attribution attempts */
    uint8_t exact;          /* lo0 == hi0 from the BPF entry stamp */
    char comm[16];
};

/* CLOSE_WAIT sockets of one process (pid 0: owner unknown). */
struct group {
    int pid;
    unsigned count;
    int has_hi;             /* every socket of it has an upper bound */
    uint64_t lo_max, hi_max;
    char comm[16];
};

/* Sockets towards one destination. */
struct dest {
    uint8_t used, family;
    uint16_t port;
    uint8_t addr[16];
    unsigned time_wait, ephemeral;
};

enum { ERR_DUMP, ERR_ATTRIBUTE, ERR_NETSTAT, ERR_PORT_RANGE, ERR_N };
static const char *const err_stage[ERR_N] = {"dump", "attribute", "netstat", "port_range"};

static const double age_buckets[] = {1, 5, 15, 60, 300, 600, 1800, 3600, 7200, 21600, 86400};
#define NBUCKETS (sizeof age_buckets / sizeof age_buckets[0])

/* Kernel TcpExt counters of connections a local close or a timeout ended
 * with a RST. */
static const char *const aborts[][2] = {
    {"TCPAbortOnClose", "on_close"}, {"TCPAbortOnData", "on_data"},
    {"TCPAbortOnLinger", "on_linger"}, {"TCPAbortOnMemory", "on_memory"},
    {"TCPAbortOnTimeout", "on_timeout"}, {"TCPAbortFailed", "failed"}};
#define NABORTS (sizeof aborts / sizeof aborts[0])

struct xm {
    struct xm_opts o;
    cw_diag *d;               /* during a refresh only (see snapshot_open) */
    struct track *t;
    size_t nt;
    uint64_t entered, closed, refreshes;
    uint64_t errors[ERR_N];
    /* per refresh */
    unsigned states[CW_TCP_NEW_SYN_RECV + 1];
    struct group *g;
    size_t ng, gcap;          /* open addressing on pid */
    struct dest *dst;
    size_t ndst, dcap;        /* open addressing on (family, addr, port) */
    int port_lo, port_hi;     /* ephemeral range, 0 0 if unreadable */
    int64_t now;              /* the snapshot's moment: its ages are as of now */
    struct timespec wall;     /* CLOCK_REALTIME read with now */
    int have_netstat;
    unsigned long long abort_val[NABORTS];
    uint64_t listening[65536 / 64];   /* bitmap of local ports in LISTEN */
    int64_t prev;             /* time of the last CLOSE_WAIT dump, 0 none */
    xexact *exact;            /* NULL: bounds only */
    int exact_loaded;         /* xexact_load() ran in this refresh */
    char exact_why[160];      /* why not */
    xr *resets;               /* NULL: no BPF, no per-process resets */
    char resets_why[160];
};

/* ---- text buffer ---- */

void xb_printf(struct xbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void xb_free(struct xbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    int k = cw__utf8_seq(s, n);
    return k > 0 ? (size_t)k : 0;
}

/* A label value: quotes, backslashes and newlines escaped as the format
 * says; control bytes and invalid UTF-8 (a process can name itself with
 * any bytes) become '?', since Prometheus rejects non-UTF-8 labels. */
void xb_label(struct xbuf *b, const char *s)
{
    char out[256];
    size_t o = 0, n = strlen(s);
    for (size_t i = 0; i < n && o + 8 < sizeof out;) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\' || c == '"') {
            out[o++] = '\\';
            out[o++] = (char)c;
            i++;
        } else if (c == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
            i++;
        } else if (c < 0x20 || c == 0x7F) {
            out[o++] = '?';
            i++;
        } else if (c < 0x80) {
            out[o++] = (char)c;
            i++;
        } else {
            size_t k = utf8_len((const unsigned char *)s + i, n - i);
            if (!k) {
                out[o++] = '?';
                i++;
            } else {
                memcpy(out + o, s + i, k);
                o += k;
                i += k;
            }
        }
    }
    out[o] = '\0';
    xb_printf(b, "\"%s\"", out);
}

static void xb_head(struct xbuf *b, const char *name, const char *type, const char *help)
{
    xb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* ---- life cycle ---- */

/* The namespace whose resets count: the one --netns names, or every one
 * (0) when the exporter covers them all. */
static uint64_t resets_netns(const struct insp_sel *sel)
{
    struct stat sb;
    const char *path = sel->netns == INSP_NETNS_SELF   ? "/proc/self/ns/net"
                       : sel->netns == INSP_NETNS_PATH ? sel->netns_path
                                                       : NULL;
    return path && stat(path, &sb) == 0 ? (uint64_t)sb.st_ino : 0;
}

int xm_new(const struct xm_opts *o, xm **out)
{
    /* A fixed mmap threshold: glibc would otherwise raise it after the
     * first large dump is freed, and keep later dumps on the heap, which
     * it does not give back. A long-running daemon should return the
     * memory of each snapshot. */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    xm *m = calloc(1, sizeof *m);
    if (!m) {
        cli_error("exporter: out of memory");
        return CLI_SYSTEM;
    }
    m->o = *o;
    int rc = insp_open(&m->o.sel, &m->d);
    if (rc != CLI_OK) {
        free(m);
        return rc;
    }
    cw_diag_close(&m->d);
    m->o.sel.quiet = 1;   /* a note at start, not one per refresh */
    if (!o->exact)
        snprintf(m->exact_why, sizeof m->exact_why, "turned off (--no-bpf)");
    else
        xexact_open(&m->exact, m->exact_why, sizeof m->exact_why);
    if (!o->exact)
        snprintf(m->resets_why, sizeof m->resets_why, "%s", m->exact_why);
    else
        xr_open(&m->resets, o->top_procs, resets_netns(&o->sel), m->resets_why,
                sizeof m->resets_why);
    *out = m;
    return CLI_OK;
}

void xm_free(xm **mp)
{
    xm *m = *mp;
    if (!m)
        return;
    cw_diag_close(&m->d);
    xexact_close(&m->exact);
    xr_close(&m->resets);
    free(m->t);
    free(m->g);
    free(m->dst);
    free(m);
    *mp = NULL;
}

/* ---- the label source ---- */

/* The cgroup v2 path of a process and the container identity the
 * inspector derives from it (cw_cgroup_container(): "docker:<id>",
 * "k8s-pod:<uid>", "unit:<name>", ...). This is the only place labels
 * beyond pid and comm come from; it runs for the top processes and for
 * the processes whose close() sent a reset (exporter_resets.c). */
void xm_container_labels(int pid, char *cgroup, size_t csize, char *container, size_t size)
{
    cgroup[0] = container[0] = '\0';
    if (pid <= 0)
        return;
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/cgroup", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "0::", 3))
            continue;   /* cgroup v2 unified hierarchy only */
        size_t k = strcspn(line + 3, "\n");
        k = k < csize ? k : csize - 1;
        memcpy(cgroup, line + 3, k);
        cgroup[k] = '\0';
        break;
    }
    fclose(f);
    if (cgroup[0])
        cw_cgroup_container(cgroup, container, size);
}

/* ---- hashing ---- */

static struct group *group_of(xm *m, int pid)
{
    if (2 * (m->ng + 1) > m->gcap) {
        size_t cap = m->gcap ? m->gcap * 2 : 64;
        struct group *g = calloc(cap, sizeof *g);
        if (!g)
            return NULL;
        for (size_t i = 0; i < m->gcap; i++) {
            if (!m->g[i].count)
                continue;
            size_t h = (size_t)(unsigned)m->g[i].pid * 2654435761u & (cap - 1);
            while (g[h].count)
                h = (h + 1) & (cap - 1);
            g[h] = m->g[i];
        }
        free(m->g);
        m->g = g;
        m->gcap = cap;
    }
    size_t h = (size_t)(unsigned)pid * 2654435761u & (m->gcap - 1);
    while (m->g[h].count && m->g[h].pid != pid)
        h = (h + 1) & (m->gcap - 1);
    if (!m->g[h].count) {
        m->g[h].pid = pid;
        m->g[h].has_hi = 1;
        m->ng++;
    }
    return &m->g[h];
}

static size_t dest_hash(int family, const uint8_t *addr, uint16_t port, size_t cap)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)family;
    for (int i = 0; i < 16; i++)
        h = (h ^ addr[i]) * 1099511628211ull;
    h = (h ^ port) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29)) & (cap - 1);
}

static struct dest *dest_of(xm *m, const struct cw_sock *s)
{
    if (2 * (m->ndst + 1) > m->dcap) {
        size_t cap = m->dcap ? m->dcap * 2 : 256;
        struct dest *d = calloc(cap, sizeof *d);
        if (!d)
            return NULL;
        for (size_t i = 0; i < m->dcap; i++) {
            if (!m->dst[i].used)
                continue;
            size_t h = dest_hash(m->dst[i].family, m->dst[i].addr, m->dst[i].port, cap);
            while (d[h].used)
                h = (h + 1) & (cap - 1);
            d[h] = m->dst[i];
        }
        free(m->dst);
        m->dst = d;
        m->dcap = cap;
    }
    size_t h = dest_hash(s->family, s->dst, s->dport, m->dcap);
    while (m->dst[h].used && (m->dst[h].family != s->family || m->dst[h].port != s->dport ||
                              memcmp(m->dst[h].addr, s->dst, 16)))
        h = (h + 1) & (m->dcap - 1);
    if (!m->dst[h].used) {
        m->dst[h].used = 1;
        m->dst[h].family = (uint8_t)s->family;
        m->dst[h].port = s->dport;
        memcpy(m->dst[h].addr, s->dst, 16);
        m->ndst++;
    }
    return &m->dst[h];
}

/* Whether s is the client end of a connection that took a port from
 * ip_local_port_range towards its destination: its local port is in the
 * range, nothing listens on it, and the peer's port is outside the range
 * (a server's). A connection between two ephemeral ports is ambiguous
 * (loopback tests, peer-to-peer) and not counted. */
static int ephemeral_client(const xm *m, const struct cw_sock *s)
{
    return m->port_lo && s->sport >= m->port_lo && s->sport <= m->port_hi &&
           !(m->listening[s->sport / 64] >> (s->sport % 64) & 1) &&
           !(s->dport >= m->port_lo && s->dport <= m->port_hi);
}

/* Count a socket of any state: per state, and for client ends TIME_WAIT
 * and ephemeral ports per destination. */
static void count_sock(xm *m, const struct cw_sock *s)
{
    if (s->state > 0 && s->state <= CW_TCP_NEW_SYN_RECV)
        m->states[s->state]++;
    if (s->state == CW_TCP_LISTEN || s->state == CW_TCP_CLOSE || !ephemeral_client(m, s))
        return;
    struct dest *d = dest_of(m, s);
    if (!d)
        return;
    d->ephemeral++;
    d->time_wait += s->state == CW_TCP_TIME_WAIT;
}

/* ---- the kernel's counters ---- */

static int read_port_range(xm *m)
{
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
    int lo = 0, hi = 0, ok = f && fscanf(f, "%d %d", &lo, &hi) == 2 && lo > 0 && hi >= lo;
    if (f)
        fclose(f);
    m->port_lo = ok ? lo : 0;
    m->port_hi = ok ? hi : 0;
    return ok ? 0 : -1;
}

/* /proc/net/netstat holds pairs of lines: "TcpExt: Name1 Name2 ..." then
 * "TcpExt: v1 v2 ...". */
static int read_netstat(xm *m)
{
    m->have_netstat = 0;
    FILE *f = fopen("/proc/net/netstat", "re");
    if (!f)
        return -1;
    static char names[8192], vals[8192];
    int found = 0;
    while (!found && fgets(names, sizeof names, f)) {
        if (strncmp(names, "TcpExt:", 7) || !fgets(vals, sizeof vals, f))
            continue;
        found = 1;
        char *sn, *sv;
        char *n = strtok_r(names + 7, " \n", &sn);
        char *v = strtok_r(vals + 7, " \n", &sv);
        for (; n && v; n = strtok_r(NULL, " \n", &sn), v = strtok_r(NULL, " \n", &sv))
            for (size_t i = 0; i < NABORTS; i++)
                if (!strcmp(n, aborts[i][0]))
                    m->abort_val[i] = strtoull(v, NULL, 10);
    }
    fclose(f);
    m->have_netstat = found;
    return found ? 0 : -1;
}

/* ---- CLOSE_WAIT tracking ---- */

const char *xm_exact_why(const xm *m)
{
    return m->exact ? NULL : m->exact_why;
}

const char *xm_resets_why(const xm *m)
{
    return m->resets ? NULL : m->resets_why;
}

int xm_poll(xm *m)
{
    xr_poll(m->resets);
    return m->resets != NULL;
}

/* What one CLOSE_WAIT dump keeps of a socket: 24 bytes, not a cw_sock. */
struct rec {
    uint64_t cookie;
    uint32_t lo, hi;        /* tcp_info bounds when has_info */
    uint32_t inode;
    int has_info;
};

/* The CLOSE_WAIT dump as it streams in: every socket as a rec, and in
 * full only those never accepted whose owner is still to be named (the
 * listener is found from the whole record). */
struct collect {
    xm *m;
    struct rec *r;
    size_t n, cap;
    struct cw_sock *queued;
    size_t nq, qcap;
    int oom;
};

static int grow(void **p, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 1024;
    void *q = realloc(*p, c * size);
    if (!q)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static struct track *track_find(const xm *m, uint64_t cookie)
{
    size_t lo = 0, hi = m->nt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->t[mid].cookie < cookie)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < m->nt && m->t[lo].cookie == cookie ? &m->t[lo] : NULL;
}

/* Whether the owner of a track is still to be looked for: a process may
 * have raced the descriptor walk, so one more try. */
static int unnamed(const struct track *t)
{
    return t && !t->pid && t->tries < 2;
}

static void on_close_wait(const struct cw_sock *s, void *arg)
{
    struct collect *c = arg;
    count_sock(c->m, s);
    if (c->oom || grow((void **)&c->r, &c->cap, c->n, sizeof *c->r) < 0) {
        c->oom = 1;
        return;
    }
    struct rec *r = &c->r[c->n++];
    r->cookie = s->cookie;
    r->inode = s->inode;
    r->has_info = cw_sock_close_wait_age(s, &r->lo, &r->hi) == CW_OK;
    const struct track *t = s->inode ? NULL : track_find(c->m, s->cookie);
    if (s->inode || (t && !unnamed(t)))
        return;
    if (grow((void **)&c->queued, &c->qcap, c->nq, sizeof *c->queued) < 0) {
        c->oom = 1;
        return;
    }
    c->queued[c->nq] = *s;
    c->queued[c->nq].holders = NULL;
    c->nq++;
}

/* A dump takes time (hundreds of ms under load), and the kernel measured
 * each socket's tcp_info somewhere within it: the lower bounds count from
 * its end (now), the upper ones from its start (d0), so that neither is
 * ever wrong. */
static void track_init(xm *m, struct track *t, const struct rec *r, int64_t d0)
{
    int64_t now = m->now;
    memset(t, 0, sizeof *t);
    t->cookie = r->cookie;
    t->inode = r->inode;
    t->t_first = now;
    int64_t entry;
    if (m->exact && !m->exact_loaded) {
        /* one pass over the stamps, not a lookup per new socket */
        xexact_load(m->exact);
        m->exact_loaded = 1;
    }
    if (xexact_entry(m->exact, r->cookie, &entry)) {
        t->lo0 = t->hi0 = (uint32_t)(now > entry ? now - entry : 0);
        t->has_hi = t->exact = 1;
    } else if (m->prev) {
        /* not in CLOSE_WAIT at the last dump: it entered since */
        t->lo0 = 0;
        t->hi0 = (uint32_t)(now - m->prev);
        t->has_hi = 1;
    } else if (r->has_info) {
        t->lo0 = r->lo;
        t->hi0 = r->hi + (uint32_t)(now - d0);
        t->has_hi = 1;
    }
}

/* Sort the records by cookie: LSD radix, 11 bits a pass, only as many
 * passes as the largest cookie needs (cookies count up from boot, so
 * usually 3-4). At 75,000 records qsort() took 5-10 ms of every
 * snapshot, this about 1. Returns 0, or -1 out of memory (unsorted). */
static int rec_sort(struct rec *r, size_t n)
{
    uint64_t max = 0;
    for (size_t i = 0; i < n; i++)
        max |= r[i].cookie;
    struct rec *tmp = n > 1 ? malloc(n * sizeof *tmp) : NULL;
    if (n > 1 && !tmp)
        return -1;
    struct rec *src = r, *dst = tmp;
    for (unsigned shift = 0; n > 1 && shift < 64 && max >> shift; shift += 11) {
        size_t count[2048] = {0};
        for (size_t i = 0; i < n; i++)
            count[src[i].cookie >> shift & 2047]++;
        for (size_t k = 0, sum = 0; k < 2048; k++) {
            size_t c = count[k];
            count[k] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++)
            dst[count[src[i].cookie >> shift & 2047]++] = src[i];
        struct rec *t = src;
        src = dst;
        dst = t;
    }
    if (src != r)
        memcpy(r, src, n * sizeof *r);
    free(tmp);
    return 0;
}

static void track_owner(struct track *t, int pid, const char *comm)
{
    t->tries++;
    if (pid > 0) {
        t->pid = pid;
        memcpy(t->comm, comm, sizeof t->comm);
    }
}

static void on_owner(void *arg, uint32_t ref, int pid, const char *comm)
{
    xm *m = arg;
    track_owner(&m->t[ref], pid, comm);
}

/* Name the owners of the tracks that have none yet. The BPF iterator
 * is tried unless --no-bpf. */
static void attribute_new(xm *m, struct collect *c)
{
    size_t n = 0;
    for (size_t i = 0; i < m->nt; i++)
        n += m->t[i].inode && unnamed(&m->t[i]);
    struct xo_want *v = n ? malloc(n * sizeof *v) : NULL;
    if (n && !v) {
        m->errors[ERR_ATTRIBUTE]++;
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < m->nt && k < n; i++)
        if (m->t[i].inode && unnamed(&m->t[i]))
            v[k++] = (struct xo_want){.inode = m->t[i].inode, .ref = (uint32_t)i};
    if (xo_name(v, n, m->o.sel.owners != INSP_OWNERS_PROC, on_owner, m) < 0)
        m->errors[ERR_ATTRIBUTE]++;
    free(v);
    if (!c->nq)
        return;
    /* never accepted: rare, and their listener must be found */
    if (insp_attribute(m->d, &m->o.sel, c->queued, c->nq) < 0) {
        m->errors[ERR_ATTRIBUTE]++;
        return;
    }
    for (size_t i = 0; i < c->nq; i++) {
        struct track *t = track_find(m, c->queued[i].cookie);
        if (t)
            track_owner(t, c->queued[i].pid, c->queued[i].comm);
    }
    /* The handle keeps the holders it found until its next attribution,
     * which may be hours away: an empty one gives that memory back now. */
    cw_diag_attribute(m->d, NULL, 0, NULL);
}

/* Merge the dump (sorted by cookie here; the dump is not atomic, so a
 * socket can come twice) into the tracks: new cookies entered CLOSE_WAIT,
 * missing ones left it. */
static int close_wait_refresh(xm *m, struct collect *c, int64_t d0)
{
    if (rec_sort(c->r, c->n) < 0)
        return -ENOMEM;
    struct track *nt = malloc((c->n ? c->n : 1) * sizeof *nt);
    if (!nt)
        return -ENOMEM;
    size_t j = 0, k = 0;
    for (size_t i = 0; i < c->n; i++) {
        if (k && nt[k - 1].cookie == c->r[i].cookie)
            continue;
        while (j < m->nt && m->t[j].cookie < c->r[i].cookie) {
            m->closed++;
            j++;
        }
        if (j < m->nt && m->t[j].cookie == c->r[i].cookie) {
            nt[k++] = m->t[j++];
        } else {
            track_init(m, &nt[k++], &c->r[i], d0);
            m->entered++;
        }
    }
    m->closed += m->nt - j;
    free(m->t);
    m->t = nt;
    m->nt = k;
    attribute_new(m, c);
    return 0;
}

static uint64_t track_lo_ms(const xm *m, const struct track *t)
{
    return t->lo0 + (uint64_t)(m->now - t->t_first);
}

static void on_listener(const struct cw_sock *s, void *arg)
{
    xm *m = arg;
    m->listening[s->sport / 64] |= 1ull << (s->sport % 64);
    count_sock(m, s);
}

/* Every state but LISTEN: CLOSE_WAIT sockets are kept as records, the
 * others only counted. */
static void on_connected(const struct cw_sock *s, void *arg)
{
    struct collect *c = arg;
    if (s->state == CW_TCP_CLOSE_WAIT)
        on_close_wait(s, c);
    else
        count_sock(c->m, s);
}

static void snapshot_time(xm *m)
{
    m->now = cw_now_ms();
    clock_gettime(CLOCK_REALTIME, &m->wall);
}

/* Two streamed dumps, so that memory does not grow with the socket
 * count: the listeners first (only the listening table is walked), which
 * tell client ends from server ends; then every other state, CLOSE_WAIT
 * kept as 24-byte records. One dump, not one per state group: each dump
 * in each namespace walks the machine's whole established hash table
 * (262,144 buckets here), which is most of a snapshot's cost. */
static void dump_states(xm *m)
{
    struct cw_diag_filter f;
    memset(m->listening, 0, sizeof m->listening);
    cw_diag_filter_init(&f);
    f.states = CW_STATE_BIT(CW_TCP_LISTEN);
    if (cw_diag_dump_each(m->d, &f, on_listener, m) < 0)
        m->errors[ERR_DUMP]++;
    cw_diag_filter_init(&f);
    f.states = CW_STATES_ALL & ~CW_STATE_BIT(CW_TCP_LISTEN);
    /* tcp_info bounds are needed only for sockets already stuck at the
     * first dump; a socket new at a later one entered CLOSE_WAIT since
     * the previous dump, which bounds its age better. tcp_info costs
     * the kernel a socket lock per socket. */
    f.want_info = !m->prev;
    struct collect c = {.m = m};
    int64_t d0 = cw_now_ms();
    int rc = cw_diag_dump_each(m->d, &f, on_connected, &c);
    snapshot_time(m);   /* every socket of the snapshot was seen by now */
    if (rc < 0 || c.oom)
        m->errors[ERR_DUMP]++;   /* keep the tracks: ages go on */
    else if (close_wait_refresh(m, &c, d0) < 0)
        m->errors[ERR_DUMP]++;
    else
        m->prev = d0;   /* a socket not in CLOSE_WAIT then entered after it */
    free(c.r);
    free(c.queued);
}

/* ---- rendering ---- */

static int group_cmp(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int dest_cmp_tw(const void *a, const void *b)
{
    const struct dest *x = a, *y = b;
    return x->time_wait != y->time_wait ? (x->time_wait > y->time_wait ? -1 : 1) : 0;
}

static int dest_cmp_eph(const void *a, const void *b)
{
    const struct dest *x = a, *y = b;
    return x->ephemeral != y->ephemeral ? (x->ephemeral > y->ephemeral ? -1 : 1) : 0;
}

static void group_labels(struct xbuf *b, const struct group *g)
{
    char cg[256], ct[128], pid[16];
    xm_container_labels(g->pid, cg, sizeof cg, ct, sizeof ct);
    snprintf(pid, sizeof pid, "%d", g->pid);
    xb_printf(b, "{pid=\"%s\",comm=", g->pid > 0 ? pid : "");
    xb_label(b, g->comm);
    xb_printf(b, ",container=");
    xb_label(b, ct);
    xb_printf(b, ",cgroup=");
    xb_label(b, cg);
    xb_printf(b, "}");
}

#define OTHER_LABELS "{pid=\"other\",comm=\"other\",container=\"\",cgroup=\"\"}"

/* The CLOSE_WAIT sockets of one snapshot, summed per process. */
struct agg {
    uint64_t hist[NBUCKETS + 1];
    double sum;
    size_t exact;
    size_t top;             /* m->g[0..top) have their own series */
    struct group other;     /* the rest */
};

static void add_to_group(xm *m, const struct track *t, uint64_t lo)
{
    struct group *g = group_of(m, t->pid);
    if (!g)
        return;
    if (!g->count++)
        memcpy(g->comm, t->comm, sizeof g->comm);
    if (lo > g->lo_max)
        g->lo_max = lo;
    uint64_t hi = t->hi0 + (uint64_t)(m->now - t->t_first);
    if (!t->has_hi)
        g->has_hi = 0;
    else if (hi > g->hi_max)
        g->hi_max = hi;
}

static void aggregate(xm *m, struct agg *a)
{
    memset(a, 0, sizeof *a);
    for (size_t i = 0; i < m->nt; i++) {
        const struct track *t = &m->t[i];
        uint64_t lo = track_lo_ms(m, t);
        a->exact += t->exact;
        add_to_group(m, t, lo);
        size_t k = 0;
        while (k < NBUCKETS && lo / 1000.0 > age_buckets[k])
            k++;
        a->hist[k]++;
        a->sum += lo / 1000.0;
    }
    /* compact the hash into a list, worst first */
    size_t ng = 0;
    for (size_t i = 0; i < m->gcap; i++)
        if (m->g[i].count)
            m->g[ng++] = m->g[i];
    if (ng > 1)
        qsort(m->g, ng, sizeof *m->g, group_cmp);
    a->top = ng < (size_t)m->o.top_procs ? ng : (size_t)m->o.top_procs;
    a->other.has_hi = 1;
    for (size_t i = a->top; i < ng; i++) {
        struct group *g = &m->g[i], *o = &a->other;
        o->count += g->count;
        o->lo_max = g->lo_max > o->lo_max ? g->lo_max : o->lo_max;
        o->hi_max = g->hi_max > o->hi_max ? g->hi_max : o->hi_max;
        o->has_hi &= g->has_hi;
    }
}

enum { PER_COUNT, PER_OLDEST, PER_OLDEST_MAX };

/* One per-process family: a sample per top process, then "other". */
static void render_per_process(xm *m, struct xbuf *b, const struct agg *a, const char *name,
                               int what)
{
    for (size_t i = 0; i <= a->top; i++) {
        const struct group *g = i < a->top ? &m->g[i] : &a->other;
        if (!g->count || (what == PER_OLDEST_MAX && !g->has_hi))
            continue;
        xb_printf(b, "%s", name);
        if (i < a->top)
            group_labels(b, g);
        else
            xb_printf(b, OTHER_LABELS);
        if (what == PER_COUNT)
            xb_printf(b, " %u\n", g->count);
        else
            xb_printf(b, " %.3f\n", (what == PER_OLDEST ? g->lo_max : g->hi_max) / 1000.0);
    }
}

static void render_histogram(struct xbuf *b, const struct agg *a)
{
    xb_head(b, "closewise_close_wait_age_seconds", "histogram",
            "Ages of the CLOSE_WAIT sockets present now (exact, or lower bounds).");
    uint64_t cum = 0;
    for (size_t k = 0; k < NBUCKETS; k++) {
        cum += a->hist[k];
        xb_printf(b, "closewise_close_wait_age_seconds_bucket{le=\"%g\"} %llu\n",
                  age_buckets[k], (unsigned long long)cum);
    }
    cum += a->hist[NBUCKETS];
    xb_printf(b, "closewise_close_wait_age_seconds_bucket{le=\"+Inf\"} %llu\n",
              (unsigned long long)cum);
    xb_printf(b, "closewise_close_wait_age_seconds_sum %.3f\n", a->sum);
    xb_printf(b, "closewise_close_wait_age_seconds_count %llu\n", (unsigned long long)cum);
}

static void render_groups(xm *m, struct xbuf *b)
{
    struct agg a;
    aggregate(m, &a);
    xb_head(b, "closewise_close_wait_sockets", "gauge",
            "CLOSE_WAIT sockets per holding process (the top processes; the rest summed "
            "in pid=\"other\"; pid=\"\" is an owner that could not be named).");
    render_per_process(m, b, &a, "closewise_close_wait_sockets", PER_COUNT);
    xb_head(b, "closewise_close_wait_oldest_seconds", "gauge",
            "Age of the process's oldest CLOSE_WAIT socket: exact when stamped by BPF, "
            "else a lower bound (tcp_info: time since the FIN's ACK).");
    render_per_process(m, b, &a, "closewise_close_wait_oldest_seconds", PER_OLDEST);
    xb_head(b, "closewise_close_wait_oldest_max_seconds", "gauge",
            "Upper bound of the age of the process's oldest CLOSE_WAIT socket (equal to "
            "closewise_close_wait_oldest_seconds when exact; else tcp_info: time since "
            "the last data received).");
    render_per_process(m, b, &a, "closewise_close_wait_oldest_max_seconds", PER_OLDEST_MAX);
    render_histogram(b, &a);
    xb_head(b, "closewise_close_wait_exact_enabled", "gauge",
            "1 when the BPF program stamps the moment sockets enter CLOSE_WAIT, 0 when "
            "every age is a tcp_info bound.");
    xb_printf(b, "closewise_close_wait_exact_enabled %d\n", m->exact != NULL);
    xb_head(b, "closewise_close_wait_exact_sockets", "gauge",
            "CLOSE_WAIT sockets whose age is exact (they entered the state after the "
            "exporter started); the others have bounds.");
    xb_printf(b, "closewise_close_wait_exact_sockets %zu\n", a.exact);
}

static void dest_label(struct xbuf *b, const struct dest *d)
{
    char where[64] = "?";
    cw__addr_format(d->family, d->addr, (unsigned)d->port, where, sizeof where);
    xb_printf(b, "{destination=\"%s\"}", where);
}

/* TIME_WAIT sockets and used ephemeral ports per destination, top N of
 * each; sorting the compacted table twice is cheap next to the dump. */
static void render_dests(xm *m, struct xbuf *b)
{
    size_t nd = 0;
    for (size_t i = 0; i < m->dcap; i++)
        if (m->dst[i].used)
            m->dst[nd++] = m->dst[i];
    size_t top = nd < (size_t)m->o.top_dests ? nd : (size_t)m->o.top_dests;
    if (nd > 1)
        qsort(m->dst, nd, sizeof *m->dst, dest_cmp_tw);
    xb_head(b, "closewise_time_wait_sockets", "gauge",
            "Client-side TIME_WAIT sockets per destination, as counted in "
            "closewise_ephemeral_ports_used (the top destinations only).");
    for (size_t i = 0; i < top && m->dst[i].time_wait; i++) {
        xb_printf(b, "closewise_time_wait_sockets");
        dest_label(b, &m->dst[i]);
        xb_printf(b, " %u\n", m->dst[i].time_wait);
    }
    if (nd > 1)
        qsort(m->dst, nd, sizeof *m->dst, dest_cmp_eph);
    xb_head(b, "closewise_ephemeral_ports_used", "gauge",
            "Client sockets from a local port in ip_local_port_range to one destination "
            "(a port outside that range), any state (the top destinations only); compare "
            "with closewise_ephemeral_port_range_ports.");
    for (size_t i = 0; i < top && m->dst[i].ephemeral; i++) {
        xb_printf(b, "closewise_ephemeral_ports_used");
        dest_label(b, &m->dst[i]);
        xb_printf(b, " %u\n", m->dst[i].ephemeral);
    }
    if (m->port_lo) {
        xb_head(b, "closewise_ephemeral_port_range_ports", "gauge",
                "Size of net.ipv4.ip_local_port_range: the local ports one destination "
                "can use.");
        xb_printf(b, "closewise_ephemeral_port_range_ports %d\n", m->port_hi - m->port_lo + 1);
    }
}

static void render_rest(xm *m, struct xbuf *b, double wall_s, double cpu_s)
{
    xb_head(b, "closewise_tcp_sockets", "gauge", "TCP sockets per state.");
    for (int s = CW_TCP_ESTABLISHED; s <= CW_TCP_NEW_SYN_RECV; s++) {
        char name[32];
        size_t i = 0;
        for (const char *p = cw_tcp_state_name(s); *p && i + 1 < sizeof name; p++)
            name[i++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
        name[i] = '\0';
        xb_printf(b, "closewise_tcp_sockets{state=\"%s\"} %u\n", name, m->states[s]);
    }
    xb_head(b, "closewise_close_wait_entered_total", "counter",
            "CLOSE_WAIT sockets seen for the first time (by kernel cookie) since the "
            "exporter started, those present at start included.");
    xb_printf(b, "closewise_close_wait_entered_total %llu\n", (unsigned long long)m->entered);
    xb_head(b, "closewise_close_wait_closed_total", "counter",
            "CLOSE_WAIT sockets that left that state (closed or destroyed) since the "
            "exporter started.");
    xb_printf(b, "closewise_close_wait_closed_total %llu\n", (unsigned long long)m->closed);
    if (m->have_netstat) {
        xb_head(b, "closewise_tcp_aborts_total", "counter",
                "Connections the kernel ended with a RST (/proc/net/netstat TcpExt "
                "TCPAbortOn*): on_close is a close() with unread input, on_linger an "
                "SO_LINGER {1,0} close; both can destroy a reply in flight.");
        for (size_t i = 0; i < NABORTS; i++)
            xb_printf(b, "closewise_tcp_aborts_total{reason=\"%s\"} %llu\n", aborts[i][1],
                      m->abort_val[i]);
    }
    xb_head(b, "closewise_scrape_duration_seconds", "gauge",
            "Wall-clock time the last snapshot took.");
    xb_printf(b, "closewise_scrape_duration_seconds %.6f\n", wall_s);
    xb_head(b, "closewise_scrape_cpu_seconds", "gauge", "CPU time the last snapshot took.");
    xb_printf(b, "closewise_scrape_cpu_seconds %.6f\n", cpu_s);
    xb_head(b, "closewise_scrape_errors_total", "counter",
            "Parts of a snapshot that failed, per stage; the other parts are still "
            "reported.");
    for (int i = 0; i < ERR_N; i++)
        xb_printf(b, "closewise_scrape_errors_total{stage=\"%s\"} %llu\n", err_stage[i],
                  (unsigned long long)m->errors[i]);
    xb_head(b, "closewise_snapshots_total", "counter", "Snapshots taken since start.");
    xb_printf(b, "closewise_snapshots_total %llu\n", (unsigned long long)m->refreshes);
    /* The moment the ages are taken at, to the millisecond: a scrape may
     * come an interval or more later, and whole seconds would hide that. */
    xb_head(b, "closewise_snapshot_timestamp_seconds", "gauge",
            "Unix time of the last snapshot (the moment its ages are taken at).");
    xb_printf(b, "closewise_snapshot_timestamp_seconds %lld.%03ld\n",
              (long long)m->wall.tv_sec, m->wall.tv_nsec / 1000000);
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int xm_refresh(xm *m, struct xbuf *b)
{
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    double c0 = cpu_now();
    snapshot_time(m);   /* moved to the dump's end when there is one */
    m->refreshes++;
    m->exact_loaded = 0;
    memset(m->states, 0, sizeof m->states);
    if (m->g)
        memset(m->g, 0, m->gcap * sizeof *m->g);
    m->ng = 0;
    if (m->dst)
        memset(m->dst, 0, m->dcap * sizeof *m->dst);
    m->ndst = 0;
    if (read_port_range(m) < 0)
        m->errors[ERR_PORT_RANGE]++;
    /* A handle keeps one netlink socket per namespace, and a socket
     * keeps its namespace alive after the last process in it exits: a
     * handle per refresh lets dead containers' namespaces go, and finds
     * the new ones. */
    if (insp_open(&m->o.sel, &m->d) == CLI_OK) {
        dump_states(m);
        cw_diag_close(&m->d);
    } else {
        m->errors[ERR_DUMP]++;
    }
    if (read_netstat(m) < 0)
        m->errors[ERR_NETSTAT]++;
    render_groups(m, b);
    render_dests(m, b);
    clock_gettime(CLOCK_MONOTONIC, &w1);
    double wall = (double)(w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) / 1e9;
    xr_poll(m->resets);
    xr_render(m->resets, b);
    render_rest(m, b, wall, cpu_now() - c0);
    malloc_trim(0);
    /* large tables are rebuilt per snapshot anyway: give the memory back */
    if (m->gcap > 4096) {
        free(m->g);
        m->g = NULL;
        m->gcap = 0;
    }
    if (m->dcap > 4096) {
        free(m->dst);
        m->dst = NULL;
        m->dcap = 0;
    }
    return b->oom ? -ENOMEM : CW_OK;
}
