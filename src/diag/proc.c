/* proc.c - socket inode -> every (pid, fd) holding it, with the process's
 * name, cgroup and container.
 *
 * `ss -p` reads every /proc/<pid>/fd of the machine before it looks at a
 * single socket. Here the dump comes first, so only the inodes asked for
 * are kept, in a hash table sized to them. Every process with descriptors
 * is read, since a socket inherited across fork() or passed over a Unix
 * socket has several holders and each of them matters (an inherited
 * descriptor is a classic cause of CLOSE_WAIT). */
#define _GNU_SOURCE
#include "diag_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One inode to find, and where its holders start in the sorted refs. */
struct target {
    uint32_t inode;
    size_t first, count;
};

/* Open addressing keyed by inode, sized to the number of targets so a
 * lookup stays O(1) at 10,000 sockets. */
struct itable {
    struct target *t;
    size_t n, mask;
    uint32_t *slot;    /* index + 1 into t, 0 = empty */
};

/* A process to scan: how many descriptors it has open (st_size of
 * /proc/<pid>/fd, 0 on kernels before 6.2). */
struct pident {
    int pid;
    uint64_t nfds;
};

static size_t hash_inode(uint32_t ino, size_t mask)
{
    return (size_t)(ino * 2654435761u) & mask;
}

static struct target *it_find(const struct itable *it, uint32_t ino)
{
    for (size_t i = hash_inode(ino, it->mask);; i = (i + 1) & it->mask) {
        uint32_t s = it->slot[i];
        if (!s)
            return NULL;
        if (it->t[s - 1].inode == ino)
            return &it->t[s - 1];
    }
}

/* Add ino unless present; the table is preallocated for the maximum
 * count, so this cannot fail. */
static void it_add(struct itable *it, uint32_t ino)
{
    if (!ino || it_find(it, ino))
        return;
    size_t i = hash_inode(ino, it->mask);
    while (it->slot[i])
        i = (i + 1) & it->mask;
    struct target *t = &it->t[it->n++];
    memset(t, 0, sizeof *t);
    t->inode = ino;
    it->slot[i] = (uint32_t)it->n;
}

static int it_init(struct itable *it, size_t max)
{
    size_t size = 16;
    while (size < max * 2)
        size *= 2;
    memset(it, 0, sizeof *it);
    it->t = calloc(max ? max : 1, sizeof *it->t);
    it->slot = calloc(size, sizeof *it->slot);
    it->mask = size - 1;
    if (!it->t || !it->slot) {
        free(it->t);
        free(it->slot);
        return -ENOMEM;
    }
    return CW_OK;
}

static void it_free(struct itable *it)
{
    free(it->t);
    free(it->slot);
}

/* Parse "socket:[12345]" without sscanf: this runs once per descriptor
 * of every process scanned. */
static uint32_t socket_inode(const char *link, ssize_t len)
{
    if (len < 10 || memcmp(link, "socket:[", 8))
        return 0;
    uint32_t ino = 0;
    for (ssize_t i = 8; i < len && link[i] != ']'; i++) {
        if (link[i] < '0' || link[i] > '9')
            return 0;
        ino = ino * 10 + (uint32_t)(link[i] - '0');
    }
    return ino;
}

static int parse_int(const char *s)
{
    int v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > 100000000)
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* The descriptors one scanner thread found: its own array, so that the
 * threads share nothing but the index of the next process. */
struct hits {
    struct cw_fd_ref *v;
    size_t n, cap;
    int oom;
};

static void hits_add(struct hits *h, uint32_t ino, int pid, int fd)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        struct cw_fd_ref *nv = realloc(h->v, cap * sizeof *nv);
        if (!nv) {
            h->oom = 1;
            return;
        }
        h->v = nv;
        h->cap = cap;
    }
    h->v[h->n++] = (struct cw_fd_ref){.inode = ino, .pid = pid, .fd = fd};
}

#define SCAN_THREADS 4

/* What the scanner threads share. */
struct scan {
    int procfd;
    const struct itable *it;
    const struct pident *p;
    size_t np;
    _Atomic size_t next;    /* next index of p to take */
    _Atomic unsigned scanned, unreadable, exited;
    struct hits hits[SCAN_THREADS];
};

struct worker {
    struct scan *sc;
    struct hits *h;
};

/* Look at descriptor fd (its name in /proc/<pid>/fd) and record it if it
 * is a wanted socket. Returns 1 if it exists, 0 if not, -1 if the
 * process's links are not ours to read. */
static int look_fd(const struct worker *w, int dfd, int pid, const char *name)
{
    char link[64];
    ssize_t len = readlinkat(dfd, name, link, sizeof link);
    if (len < 0)
        return (errno == EACCES || errno == EPERM) ? -1 : 0;
    uint32_t ino = socket_inode(link, len);
    if (ino && it_find(w->sc->it, ino))
        hits_add(w->h, ino, pid, parse_int(name));
    return 1;
}

/* Descriptors are allocated lowest first, so tables are usually dense:
 * probing 0, 1, 2... until all nfds descriptors were seen spares the
 * directory listing, for which the kernel builds an entry per descriptor
 * (about 15% of the scan). Returns 1 when done, 0 when the table looks
 * sparse (then list it), -1 when unreadable. */
static int probe_dense(const struct worker *w, int dfd, int pid, uint64_t nfds)
{
    uint64_t seen = 0;
    int misses = 0;
    for (int fd = 0; seen < nfds; fd++) {
        char name[16];
        snprintf(name, sizeof name, "%d", fd);
        int r = look_fd(w, dfd, pid, name);
        if (r < 0)
            return -1;
        seen += (uint64_t)r;
        if (!r && ++misses > 8)
            return 0;
    }
    return 1;
}

/* Permission denied, or gone? A process that exited while we read it
 * can answer EACCES (its credentials are gone with its memory map). */
static void count_failure(struct scan *sc, int pid, int err)
{
    char path[16];
    struct stat sb;
    snprintf(path, sizeof path, "%d", pid);
    if (err == ENOENT || err == ESRCH || fstatat(sc->procfd, path, &sb, 0) < 0)
        atomic_fetch_add(&sc->exited, 1);
    else
        atomic_fetch_add(&sc->unreadable, 1);
}

/* Read one process's descriptors; record the wanted sockets it holds. */
static void scan_pid(const struct worker *w, const struct pident *p)
{
    struct scan *sc = w->sc;
    char path[32];
    snprintf(path, sizeof path, "%d/fd", p->pid);
    int dfd = openat(sc->procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        count_failure(sc, p->pid, errno);
        return;
    }
    atomic_fetch_add(&sc->scanned, 1);
    int r = p->nfds ? probe_dense(w, dfd, p->pid, p->nfds) : 0;
    DIR *d = r == 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        /* The links are not ours to read (a process in another user
         * namespace), or the probe covered everything. */
        if (r < 0)
            count_failure(sc, p->pid, EACCES);
        close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && look_fd(w, dfd, p->pid, e->d_name) < 0) {
            count_failure(sc, p->pid, EACCES);
            break;
        }
    closedir(d);
}

static void *scan_worker(void *arg)
{
    const struct worker *w = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&w->sc->next, 1);
        if (i >= w->sc->np)
            return NULL;
        scan_pid(w, &w->sc->p[i]);
    }
}

/* Reading /proc/<pid>/fd is path walks in the kernel, which scale with
 * cores: past a few hundred targets, scan with one thread per core this
 * process may use (at most SCAN_THREADS), the caller's thread being one
 * of them. */
static void scan_all(struct scan *sc)
{
    pthread_t th[SCAN_THREADS];
    struct worker w[SCAN_THREADS];
    int nth = 1;
    int cpus = cw__usable_cpus();
    int want = sc->it->n < 512 ? 1 : (cpus > SCAN_THREADS ? SCAN_THREADS : cpus);
    for (int i = 0; i < SCAN_THREADS; i++)
        w[i] = (struct worker){.sc = sc, .h = &sc->hits[i]};
    while (nth < want && pthread_create(&th[nth], NULL, scan_worker, &w[nth]) == 0)
        nth++;
    scan_worker(&w[0]);
    while (nth > 1)
        pthread_join(th[--nth], NULL);
}

/* Every process of /proc that has descriptors open. */
static int list_pids(int procfd, struct pident **out, size_t *count)
{
    int fd = dup(procfd);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        int rc = -errno;
        if (fd >= 0)
            close(fd);
        return rc;
    }
    size_t n = 0, cap = 256;
    int sized = 0;
    struct pident *v = malloc(cap * sizeof *v);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        char path[32];
        int pid = parse_int(e->d_name);
        struct stat sb;
        snprintf(path, sizeof path, "%d/fd", pid);
        if (pid <= 0 || fstatat(procfd, path, &sb, 0) < 0)
            continue;
        if (n == cap) {
            struct pident *nv = realloc(v, cap * 2 * sizeof *v);
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
            cap *= 2;
        }
        v[n].pid = pid;
        v[n++].nfds = (uint64_t)sb.st_size;
        sized |= sb.st_size > 0;
    }
    closedir(d);
    if (!v)
        return -ENOMEM;
    /* Where the kernel reports descriptor counts, a process with none
     * (a kernel thread) cannot hold a socket. */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!sized || v[i].nfds)
            v[kept++] = v[i];
    *out = v;
    *count = kept;
    return CW_OK;
}

/* The largest processes first: the threads then end together. */
static int pident_order(const void *a, const void *b)
{
    const struct pident *x = a, *y = b;
    if (x->nfds != y->nfds)
        return x->nfds > y->nfds ? -1 : 1;
    return x->pid - y->pid;
}

/* Read every process's descriptors; the wanted ones end in *refs. */
static int scan_proc(const struct itable *it, struct cw_fd_ref **refs, size_t *nrefs,
                     struct cw_attr_stats *st)
{
    int procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (procfd < 0)
        return -errno;
    struct pident *p = NULL;
    size_t np = 0;
    int rc = list_pids(procfd, &p, &np);
    if (rc < 0) {
        close(procfd);
        return rc;
    }
    if (np > 1)
        qsort(p, np, sizeof *p, pident_order);
    struct scan *sc = calloc(1, sizeof *sc);
    if (!sc) {
        free(p);
        close(procfd);
        return -ENOMEM;
    }
    sc->procfd = procfd;
    sc->it = it;
    sc->p = p;
    sc->np = np;
    scan_all(sc);
    st->pids_scanned = atomic_load(&sc->scanned);
    st->pids_unreadable = atomic_load(&sc->unreadable);
    st->pids_exited = atomic_load(&sc->exited);
    /* One array: the first thread's, with the others appended. */
    struct hits *all = &sc->hits[0];
    for (int i = 1; i < SCAN_THREADS; i++) {
        for (size_t k = 0; k < sc->hits[i].n && !all->oom; k++)
            hits_add(all, sc->hits[i].v[k].inode, sc->hits[i].v[k].pid,
                     sc->hits[i].v[k].fd);
        all->oom |= sc->hits[i].oom;
        free(sc->hits[i].v);
    }
    rc = all->oom ? -ENOMEM : CW_OK;
    if (rc < 0)
        free(all->v);
    *refs = rc < 0 ? NULL : all->v;
    *nrefs = rc < 0 ? 0 : all->n;
    free(sc);
    free(p);
    close(procfd);
    return rc;
}

/* A socket with inode 0 that is ESTABLISHED or CLOSE_WAIT has never been
 * accept()ed: it sits in a listener's queue. */
static int in_accept_queue(const struct cw_sock *s)
{
    return s->inode == 0 && (s->state == CW_TCP_ESTABLISHED ||
                             s->state == CW_TCP_CLOSE_WAIT ||
                             s->state == CW_TCP_SYN_RECV);
}

static int addr_is_any(const struct cw_sock *l)
{
    static const uint8_t zero[16];
    return !memcmp(l->src, zero, l->family == AF_INET ? 4 : 16);
}

/* The listener whose queue holds s: same namespace and local port, and
 * the same address or a wildcard one. */
static const struct cw_sock *find_listener(const struct cw_sock *ls, size_t nl,
                                           const struct cw_sock *s)
{
    const struct cw_sock *wild = NULL;
    for (size_t i = 0; i < nl; i++) {
        if (ls[i].sport != s->sport || ls[i].netns != s->netns)
            continue;
        if (ls[i].family == s->family &&
            !memcmp(ls[i].src, s->src, s->family == AF_INET ? 4 : 16))
            return &ls[i];
        if (addr_is_any(&ls[i]) || ls[i].family != s->family)
            wild = &ls[i];
    }
    return wild;
}

/* Dump the listeners only if some socket needs one. */
static int dump_listeners(cw_diag *d, const struct cw_sock *v, size_t n,
                          struct cw_sock **ls, size_t *nl)
{
    *ls = NULL;
    *nl = 0;
    for (size_t i = 0; i < n; i++) {
        if (!in_accept_queue(&v[i]))
            continue;
        struct cw_diag_filter f;
        cw_diag_filter_init(&f);
        f.states = CW_STATE_BIT(CW_TCP_LISTEN);
        int rc = cw_diag_dump(d, &f, ls, nl);
        return rc < 0 ? rc : CW_OK;
    }
    return CW_OK;
}

/* The wanted inodes: the sockets' own, and the listeners of those still
 * in an accept queue. */
static int build_table(cw_diag *d, const struct cw_sock *v, size_t n, struct itable *it,
                       struct cw_sock **ls, size_t *nl)
{
    int rc = dump_listeners(d, v, n, ls, nl);
    if (rc < 0)
        return rc;
    if ((rc = it_init(it, n + *nl)) < 0) {
        free(*ls);
        *ls = NULL;
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const struct cw_sock *l = in_accept_queue(&v[i]) ? find_listener(*ls, *nl, &v[i]) : NULL;
        it_add(it, l ? l->inode : v[i].inode);
    }
    return CW_OK;
}

int cw_diag_wanted_inodes(cw_diag *d, const struct cw_sock *v, size_t n, uint32_t **out,
                          size_t *count)
{
    if (!d || (!v && n) || !out || !count)
        return CW_EINVAL;
    struct itable it;
    struct cw_sock *ls;
    size_t nl;
    int rc = build_table(d, v, n, &it, &ls, &nl);
    if (rc < 0)
        return rc;
    free(ls);
    uint32_t *o = malloc((it.n ? it.n : 1) * sizeof *o);
    if (!o) {
        it_free(&it);
        return -ENOMEM;
    }
    for (size_t i = 0; i < it.n; i++)
        o[i] = it.t[i].inode;
    *out = o;
    *count = it.n;
    it_free(&it);
    return CW_OK;
}

/* ---- from (inode, pid, fd) to holders ---- */

static int ref_order(const void *a, const void *b)
{
    const struct cw_fd_ref *x = a, *y = b;
    if (x->inode != y->inode)
        return x->inode < y->inode ? -1 : 1;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    return x->fd - y->fd;
}

int cw_diag_find_holders(const uint32_t *inodes, size_t n, struct cw_fd_ref **out,
                         size_t *nout, struct cw_attr_stats *st)
{
    struct cw_attr_stats dummy;
    if ((!inodes && n) || !out || !nout)
        return CW_EINVAL;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    *out = NULL;
    *nout = 0;
    struct itable it;
    int rc = it_init(&it, n);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        it_add(&it, inodes[i]);
    st->method = it.n ? CW_ATTR_PROC : CW_ATTR_NONE;
    if (it.n)
        rc = scan_proc(&it, out, nout, st);
    it_free(&it);
    /* a descriptor the dense probe saw can come again from the listing */
    if (rc == CW_OK && *nout > 1) {
        qsort(*out, *nout, sizeof **out, ref_order);
        size_t u = 1;
        for (size_t i = 1; i < *nout; i++)
            if (ref_order(&(*out)[u - 1], &(*out)[i]))
                (*out)[u++] = (*out)[i];
        *nout = u;
    }
    return rc;
}

static int pinfo_order(const void *a, const void *b)
{
    return ((const struct cw__pinfo *)a)->pid - ((const struct cw__pinfo *)b)->pid;
}

static void read_small(int procfd, int pid, const char *what, char *buf, size_t size)
{
    char path[48];
    snprintf(path, sizeof path, "%d/%s", pid, what);
    buf[0] = '\0';
    int fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
}

/* The cgroup v2 line of /proc/<pid>/cgroup ("0::/path"). */
static char *read_cgroup(int procfd, int pid)
{
    char buf[4096];
    read_small(procfd, pid, "cgroup", buf, sizeof buf);
    const char *p = strstr(buf, "0::");
    if (p && p != buf && p[-1] != '\n')
        p = NULL;
    p = p ? p + 3 : "";
    return strndup(p, strcspn(p, "\n"));
}

void cw__diag_free_owners(cw_diag *d)
{
    for (size_t i = 0; i < d->npinfo; i++)
        free(d->pinfo[i].cgroup);
    free(d->pinfo);
    free(d->holders);
    d->pinfo = NULL;
    d->holders = NULL;
    d->npinfo = d->nholders = 0;
}

/* Name, cgroup and container of every distinct pid of refs (sorted). */
static int load_pinfo(cw_diag *d, const struct cw_fd_ref *refs, size_t nrefs)
{
    d->pinfo = calloc(nrefs ? nrefs : 1, sizeof *d->pinfo);
    if (!d->pinfo)
        return -ENOMEM;
    for (size_t i = 0; i < nrefs; i++)
        d->pinfo[d->npinfo++].pid = refs[i].pid;
    if (d->npinfo > 1)
        qsort(d->pinfo, d->npinfo, sizeof *d->pinfo, pinfo_order);
    size_t u = 0;
    for (size_t i = 0; i < d->npinfo; i++)
        if (!u || d->pinfo[u - 1].pid != d->pinfo[i].pid)
            d->pinfo[u++] = d->pinfo[i];
    d->npinfo = u;
    int procfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    for (size_t i = 0; i < u; i++) {
        struct cw__pinfo *p = &d->pinfo[i];
        if (procfd >= 0) {
            read_small(procfd, p->pid, "comm", p->comm, sizeof p->comm);
            p->comm[strcspn(p->comm, "\n")] = '\0';
        }
        p->cgroup = procfd >= 0 ? read_cgroup(procfd, p->pid) : strdup("");
        if (!p->cgroup) {
            if (procfd >= 0)
                close(procfd);
            return -ENOMEM;
        }
        cw_cgroup_container(p->cgroup, p->container, sizeof p->container);
    }
    if (procfd >= 0)
        close(procfd);
    return CW_OK;
}

static const struct cw__pinfo *pinfo_find(const cw_diag *d, int pid)
{
    struct cw__pinfo key = {.pid = pid};
    if (!d->npinfo)
        return NULL;
    return bsearch(&key, d->pinfo, d->npinfo, sizeof key, pinfo_order);
}

/* d->holders from refs sorted by inode: each target's holders contiguous. */
static int build_holders(cw_diag *d, struct itable *it, const struct cw_fd_ref *refs,
                         size_t nrefs)
{
    d->holders = calloc(nrefs ? nrefs : 1, sizeof *d->holders);
    if (!d->holders)
        return -ENOMEM;
    for (size_t i = 0; i < nrefs; i++) {
        struct target *t = it_find(it, refs[i].inode);
        if (!t)
            continue;
        if (i > 0 && !ref_order(&refs[i - 1], &refs[i]))
            continue;   /* reported twice */
        if (!t->count)
            t->first = d->nholders;
        t->count++;
        struct cw_holder *h = &d->holders[d->nholders++];
        const struct cw__pinfo *p = pinfo_find(d, refs[i].pid);
        h->pid = refs[i].pid;
        h->fd = refs[i].fd;
        memcpy(h->comm, p ? p->comm : "", p ? sizeof h->comm : 1);
        h->cgroup = p ? p->cgroup : "";
        h->container = p ? p->container : "";
    }
    return CW_OK;
}

static void set_owner(const cw_diag *d, struct cw_sock *s, const struct target *t,
                      int owner)
{
    const struct cw_holder *h = &d->holders[t->first];
    s->owner = owner;
    s->pid = h->pid;
    s->fd = h->fd;
    memcpy(s->comm, h->comm, sizeof s->comm);
    s->holders = h;
    s->nholders = (unsigned)t->count;
}

static void apply(const cw_diag *d, struct itable *it, struct cw_sock *v, size_t n,
                  const struct cw_sock *ls, size_t nl, struct cw_attr_stats *st)
{
    for (size_t i = 0; i < n; i++) {
        struct cw_sock *s = &v[i];
        const struct cw_sock *l = in_accept_queue(s) ? find_listener(ls, nl, s) : NULL;
        const struct target *t = NULL;
        s->pid = 0;
        s->fd = -1;
        s->comm[0] = '\0';
        s->holders = NULL;
        s->nholders = 0;
        if (l)
            s->listener_port = l->sport;
        if (s->inode)
            t = it_find(it, s->inode);
        else if (l)
            t = it_find(it, l->inode);
        if (t && t->count) {
            set_owner(d, s, t, s->inode ? CW_OWNER_PROCESS : CW_OWNER_LISTENER);
            st->found++;
        } else if (!s->inode && !in_accept_queue(s)) {
            s->owner = CW_OWNER_NONE;
        } else {
            s->owner = l ? CW_OWNER_LISTENER : CW_OWNER_UNKNOWN;
            st->unknown++;
        }
    }
}

static int cookie_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct cw_sock *)a)->cookie;
    uint64_t y = ((const struct cw_sock *)b)->cookie;
    return x < y ? -1 : x > y;
}

/* A socket nobody was found holding may have been closed during the scan
 * (its process exited): a second dump tells, and such a socket is
 * "gone", not a permission problem. */
static int mark_gone(cw_diag *d, struct cw_sock *v, size_t n, struct cw_attr_stats *st)
{
    /* Only the namespaces that hold such a socket: every state, since an
     * ESTABLISHED socket may have moved on without its process exiting. */
    uint64_t *only = malloc(d->nns * sizeof *only);
    size_t nonly = 0;
    if (!only)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (v[i].owner != CW_OWNER_UNKNOWN || !v[i].inode)
            continue;
        size_t k = 0;
        while (k < nonly && only[k] != v[i].netns)
            k++;
        if (k == nonly && nonly < d->nns)
            only[nonly++] = v[i].netns;
    }
    struct cw_sock *now;
    size_t nn;
    int rc = cw__diag_dump_some(d, NULL, only, nonly, &now, &nn);
    free(only);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (v[i].owner != CW_OWNER_UNKNOWN || !v[i].inode)
            continue;
        const struct cw_sock *k = nn ? bsearch(&v[i], now, nn, sizeof *now, cookie_cmp) : NULL;
        if (k && k->inode == v[i].inode)
            continue;
        v[i].owner = CW_OWNER_GONE;
        st->unknown--;
        st->gone++;
    }
    free(now);
    return CW_OK;
}

static int attribute(cw_diag *d, struct cw_sock *v, size_t n, const struct cw_fd_ref *given,
                     size_t ngiven, int method, struct cw_attr_stats *st)
{
    struct cw_attr_stats dummy;
    if (!d || (!v && n) || (!given && ngiven))
        return CW_EINVAL;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    cw__diag_free_owners(d);
    struct cw_sock *ls;
    size_t nl;
    struct itable it;
    int rc = build_table(d, v, n, &it, &ls, &nl);
    if (rc < 0)
        return rc;
    struct cw_fd_ref *refs = NULL;
    size_t nrefs = 0;
    st->method = it.n ? method : CW_ATTR_NONE;
    if (it.n && method == CW_ATTR_PROC) {
        rc = scan_proc(&it, &refs, &nrefs, st);
    } else if (it.n) {
        refs = malloc((ngiven ? ngiven : 1) * sizeof *refs);
        rc = refs ? CW_OK : -ENOMEM;
        for (size_t i = 0; refs && i < ngiven; i++)
            if (it_find(&it, given[i].inode))
                refs[nrefs++] = given[i];
    }
    if (rc == CW_OK) {
        if (nrefs > 1)
            qsort(refs, nrefs, sizeof *refs, ref_order);
        rc = load_pinfo(d, refs, nrefs);
    }
    if (rc == CW_OK)
        rc = build_holders(d, &it, refs, nrefs);
    if (rc == CW_OK) {
        apply(d, &it, v, n, ls, nl, st);
        if (st->unknown)
            rc = mark_gone(d, v, n, st);
    }
    free(refs);
    it_free(&it);
    free(ls);
    return rc;
}

int cw_diag_attribute(cw_diag *d, struct cw_sock *v, size_t n, struct cw_attr_stats *st)
{
    return attribute(d, v, n, NULL, 0, CW_ATTR_PROC, st);
}

int cw_diag_attribute_refs(cw_diag *d, struct cw_sock *v, size_t n,
                           const struct cw_fd_ref *refs, size_t n_refs, int method,
                           struct cw_attr_stats *st)
{
    if (method == CW_ATTR_PROC)
        return CW_EINVAL;
    return attribute(d, v, n, refs, n_refs, method, st);
}
