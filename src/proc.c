/* proc.c - socket inode -> pid, fd, command name.
 *
 * `ss -p` reads every /proc/<pid>/fd of the machine before it looks at a
 * single socket. Here the dump comes first, so only the inodes asked for
 * are searched: processes of the sockets' uids first, the rest only on a
 * miss, and the scan stops as soon as every inode has been found. */
#define _GNU_SOURCE
#include "internal.h"

#include <closewise/diag.h>
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

/* One inode to find. */
struct target {
    uint32_t inode;
    _Atomic int pid;       /* claimed once, by the first scanner to see it */
    int fd;
    char comm[16];
};

/* Open addressing keyed by inode, sized to the number of targets so a
 * lookup stays O(1) at 10,000 sockets. */
struct itable {
    struct target *t;
    size_t n, mask;
    uint32_t *slot;    /* index + 1 into t, 0 = empty */
    _Atomic size_t left;   /* targets not found yet */
};

/* A process to scan: its uid, and how many descriptors it has open
 * (st_size of /proc/<pid>/fd, 0 on kernels before 6.2). */
struct pident {
    int pid;
    uint32_t uid;
    uint64_t nfds;
    char first;        /* its uid owns one of the sockets: scan it first */
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
    t->inode = ino;
    atomic_init(&t->pid, 0);
    t->fd = -1;
    t->comm[0] = '\0';
    it->slot[i] = (uint32_t)it->n;
    it->left++;
}

static int it_init(struct itable *it, size_t max)
{
    size_t size = 16;
    while (size < max * 2)
        size *= 2;
    memset(it, 0, sizeof *it);
    atomic_init(&it->left, 0);
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

static void read_comm(int procfd, int pid, char comm[16])
{
    char path[32];
    snprintf(path, sizeof path, "%d/comm", pid);
    int fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    comm[0] = '\0';
    if (fd < 0)
        return;
    ssize_t n = read(fd, comm, 15);
    close(fd);
    if (n <= 0)
        return;
    comm[n] = '\0';
    comm[strcspn(comm, "\n")] = '\0';
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

/* What the scanner threads share. */
struct scan {
    int procfd;
    struct itable *it;
    const struct pident *p;
    size_t np;
    char pass;              /* scan the pids whose first equals this */
    _Atomic size_t next;    /* next index of p to take */
    _Atomic unsigned scanned, unreadable;
};

/* Look at descriptor fd (its name in /proc/<pid>/fd) and claim the
 * target it holds, if any. Returns 1 if it exists, 0 if not, -1 if the
 * process's links are not ours to read. */
static int look_fd(struct scan *sc, int dfd, int pid, const char *name, char comm[16])
{
    char link[64];
    ssize_t len = readlinkat(dfd, name, link, sizeof link);
    if (len < 0)
        return (errno == EACCES || errno == EPERM) ? -1 : 0;
    uint32_t ino = socket_inode(link, len);
    struct target *t = ino ? it_find(sc->it, ino) : NULL;
    int unclaimed = 0;
    /* A socket shared by several processes goes to the first seen. */
    if (!t || !atomic_compare_exchange_strong(&t->pid, &unclaimed, pid))
        return 1;
    t->fd = parse_int(name);
    if (!comm[0])
        read_comm(sc->procfd, pid, comm);
    memcpy(t->comm, comm, 16);
    atomic_fetch_sub(&sc->it->left, 1);
    return 1;
}

static int targets_left(const struct scan *sc)
{
    return atomic_load_explicit(&sc->it->left, memory_order_relaxed) != 0;
}

/* Descriptors are allocated lowest first, so tables are usually dense:
 * probing 0, 1, 2... until all nfds descriptors were seen spares the
 * directory listing, for which the kernel builds an entry per descriptor
 * (about 15% of the scan). Returns 1 when done, 0 when the table looks
 * sparse (then list it), -1 when unreadable. */
static int probe_dense(struct scan *sc, int dfd, int pid, uint64_t nfds, char comm[16])
{
    uint64_t seen = 0;
    int misses = 0;
    for (int fd = 0; seen < nfds && targets_left(sc); fd++) {
        char name[16];
        snprintf(name, sizeof name, "%d", fd);
        int r = look_fd(sc, dfd, pid, name, comm);
        if (r < 0)
            return -1;
        seen += (uint64_t)r;
        if (!r && ++misses > 8)
            return 0;
    }
    return 1;
}

/* Read one process's descriptors; claim the targets it holds. */
static void scan_pid(struct scan *sc, const struct pident *p)
{
    char path[32], comm[16] = "";
    snprintf(path, sizeof path, "%d/fd", p->pid);
    int dfd = openat(sc->procfd, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == EACCES || errno == EPERM)
            atomic_fetch_add(&sc->unreadable, 1);
        return;
    }
    atomic_fetch_add(&sc->scanned, 1);
    int r = p->nfds ? probe_dense(sc, dfd, p->pid, p->nfds, comm) : 0;
    DIR *d = r == 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        /* The links are not ours to read (a process in another user
         * namespace), or the probe covered everything. */
        if (r < 0)
            atomic_fetch_add(&sc->unreadable, 1);
        close(dfd);
        return;
    }
    struct dirent *e;
    while (targets_left(sc) && (e = readdir(d)))
        if (e->d_name[0] != '.' && look_fd(sc, dfd, p->pid, e->d_name, comm) < 0) {
            atomic_fetch_add(&sc->unreadable, 1);
            break;
        }
    closedir(d);
}

static void *scan_worker(void *arg)
{
    struct scan *sc = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&sc->next, 1);
        if (i >= sc->np || !atomic_load(&sc->it->left))
            return NULL;
        if (sc->p[i].first == sc->pass)
            scan_pid(sc, &sc->p[i]);
    }
}

/* Reading /proc/<pid>/fd is path walks in the kernel, which scale with
 * cores: past a few hundred targets, scan with one thread per core (at
 * most 4), the caller's thread being one of them. */
static void scan_pass(struct scan *sc, char pass)
{
    pthread_t th[3];
    int nth = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int want = sc->it->n < 512 ? 0 : (int)(cpus > 4 ? 3 : cpus - 1);
    sc->pass = pass;
    atomic_store(&sc->next, 0);
    while (nth < want && pthread_create(&th[nth], NULL, scan_worker, sc) == 0)
        nth++;
    scan_worker(sc);
    while (nth)
        pthread_join(th[--nth], NULL);
}

/* Every process of /proc that has descriptors open, with its uid. One
 * stat of /proc/<pid>/fd gives both (its owner is the process's). */
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
        v[n].uid = sb.st_uid;
        v[n].first = 0;
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

/* Scan order: the processes of the sockets' uids, then the others; in
 * each group the processes with the most descriptors first, since a
 * leaking process holds many, and the scan stops once all are found. */
static int pident_order(const void *a, const void *b)
{
    const struct pident *x = a, *y = b;
    if (x->first != y->first)
        return x->first ? -1 : 1;
    if (x->nfds != y->nfds)
        return x->nfds > y->nfds ? -1 : 1;
    return x->pid - y->pid;
}

/* The distinct uids of the sockets to find: few, so a short array. */
struct uidset {
    uint32_t uid[64];
    size_t n;
    int overflow;      /* too many distinct uids: treat every uid as wanted */
};

static void uidset_build(struct uidset *u, const struct cw_sock *v, size_t n)
{
    memset(u, 0, sizeof *u);
    for (size_t i = 0; i < n && !u->overflow; i++) {
        size_t j = 0;
        while (j < u->n && u->uid[j] != v[i].uid)
            j++;
        if (j < u->n || !v[i].inode)
            continue;
        if (u->n == sizeof u->uid / sizeof u->uid[0])
            u->overflow = 1;
        else
            u->uid[u->n++] = v[i].uid;
    }
}

static int uidset_has(const struct uidset *u, uint32_t uid)
{
    for (size_t i = 0; i < u->n; i++)
        if (u->uid[i] == uid)
            return 1;
    return u->overflow;
}

/* Pass 1 reads processes whose uid owns one of the sockets; pass 2 the
 * others, reached only when pass 1 left inodes unfound (a socket created
 * before a setuid keeps the old uid). */
static int scan_proc(struct itable *it, const struct cw_sock *v, size_t n,
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
    struct uidset uids;
    uidset_build(&uids, v, n);
    for (size_t i = 0; i < np; i++)
        p[i].first = (char)uidset_has(&uids, p[i].uid);
    qsort(p, np, sizeof *p, pident_order);
    struct scan sc = {.procfd = procfd, .it = it, .p = p, .np = np};
    atomic_init(&sc.next, 0);
    atomic_init(&sc.scanned, 0);
    atomic_init(&sc.unreadable, 0);
    scan_pass(&sc, 1);
    if (atomic_load(&it->left))
        scan_pass(&sc, 0);
    st->pids_scanned = atomic_load(&sc.scanned);
    st->pids_unreadable = atomic_load(&sc.unreadable);
    free(p);
    close(procfd);
    return CW_OK;
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

/* The listener whose queue holds s: same local port, and the same address
 * or a wildcard one. */
static const struct cw_sock *find_listener(const struct cw_sock *ls, size_t nl,
                                           const struct cw_sock *s)
{
    const struct cw_sock *wild = NULL;
    for (size_t i = 0; i < nl; i++) {
        if (ls[i].sport != s->sport)
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

static void set_owner(struct cw_sock *s, const struct target *t, int owner)
{
    s->owner = owner;
    s->pid = t->pid;
    s->fd = t->fd;
    memcpy(s->comm, t->comm, sizeof s->comm);
}

static void apply(struct itable *it, struct cw_sock *v, size_t n,
                  const struct cw_sock *ls, size_t nl, struct cw_attr_stats *st)
{
    for (size_t i = 0; i < n; i++) {
        struct cw_sock *s = &v[i];
        const struct cw_sock *l = in_accept_queue(s) ? find_listener(ls, nl, s) : NULL;
        const struct target *t = NULL;
        s->pid = 0;
        s->fd = -1;
        s->comm[0] = '\0';
        if (l)
            s->listener_port = l->sport;
        if (s->inode)
            t = it_find(it, s->inode);
        else if (l)
            t = it_find(it, l->inode);
        if (t && t->pid) {
            set_owner(s, t, s->inode ? CW_OWNER_PROCESS : CW_OWNER_LISTENER);
            st->found++;
        } else if (!s->inode && !in_accept_queue(s)) {
            s->owner = CW_OWNER_NONE;
        } else {
            s->owner = l ? CW_OWNER_LISTENER : CW_OWNER_UNKNOWN;
            st->unknown++;
        }
    }
}

int cw_diag_attribute(cw_diag *d, struct cw_sock *v, size_t n,
                      struct cw_attr_stats *st)
{
    struct cw_attr_stats dummy;
    if (!d || (!v && n))
        return CW_EINVAL;
    if (!st)
        st = &dummy;
    memset(st, 0, sizeof *st);
    struct cw_sock *ls;
    size_t nl;
    int rc = dump_listeners(d, v, n, &ls, &nl);
    if (rc < 0)
        return rc;
    struct itable it;
    if ((rc = it_init(&it, n + nl)) < 0) {
        free(ls);
        return rc;
    }
    for (size_t i = 0; i < n; i++)
        it_add(&it, v[i].inode);
    for (size_t i = 0; i < n; i++) {
        const struct cw_sock *l = in_accept_queue(&v[i]) ? find_listener(ls, nl, &v[i]) : NULL;
        if (l)
            it_add(&it, l->inode);
    }
    if (it.left)
        rc = scan_proc(&it, v, n, st);
    if (rc == CW_OK) {
        apply(&it, v, n, ls, nl, st);
    }
    it_free(&it);
    free(ls);
    return rc;
}
