/* netns.c - the network namespaces a cw_diag handle covers.
 *
 * A netlink socket stays bound to the namespace it was created in, so one
 * socket per namespace is enough: a short-lived helper thread enters the
 * namespace with setns() (which changes only that thread), creates the
 * socket there and ends. The caller's threads never change namespace. */
#define _GNU_SOURCE
#include "diag_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cw__nsconn_open(struct cw__nsconn *c)
{
    struct stat sb;
    memset(c, 0, sizeof *c);
    /* The calling thread's own namespace: /proc/thread-self, not self. */
    if (stat("/proc/thread-self/ns/net", &sb) == 0)
        c->ino = (uint64_t)sb.st_ino;
    c->nl = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC);
    if (!c->nl || mnl_socket_bind(c->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        int rc = -errno;
        if (c->nl)
            mnl_socket_close(c->nl);
        c->nl = NULL;
        return rc < 0 ? rc : -EIO;
    }
    c->portid = mnl_socket_get_portid(c->nl);
    return CW_OK;
}

struct ns_job {
    int nsfd;
    struct cw__nsconn *c;
    int rc;
};

static void *ns_thread(void *arg)
{
    struct ns_job *j = arg;
    j->rc = setns(j->nsfd, CLONE_NEWNET) < 0 ? -errno : cw__nsconn_open(j->c);
    return NULL;
}

int cw__nsconn_open_in(struct cw__nsconn *c, int nsfd)
{
    struct ns_job j = {.nsfd = nsfd, .c = c, .rc = -EIO};
    pthread_t th;
    int rc = pthread_create(&th, NULL, ns_thread, &j);
    if (rc != 0)
        return -rc;
    pthread_join(th, NULL);
    return j.rc;
}

int cw__diag_has_ns(const cw_diag *d, uint64_t ino)
{
    for (unsigned i = 0; i < d->nns; i++)
        if (d->ns[i].ino == ino)
            return 1;
    return 0;
}

int cw__diag_push_ns(cw_diag *d, const struct cw__nsconn *c)
{
    if (d->nns == d->cap_ns) {
        unsigned cap = d->cap_ns ? d->cap_ns * 2 : 4;
        struct cw__nsconn *v = realloc(d->ns, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        d->ns = v;
        d->cap_ns = cap;
    }
    d->ns[d->nns++] = *c;
    return CW_OK;
}

/* Add the namespace behind the open descriptor nsfd unless d has it. */
static int add_fd(cw_diag *d, int nsfd)
{
    struct stat sb;
    if (fstat(nsfd, &sb) < 0)
        return -errno;
    if (cw__diag_has_ns(d, (uint64_t)sb.st_ino))
        return 0;
    struct cw__nsconn c;
    int rc = cw__nsconn_open_in(&c, nsfd);
    if (rc < 0)
        return rc;
    /* The inode read inside may differ only if nsfd was not a netns. */
    if (c.ino != (uint64_t)sb.st_ino) {
        mnl_socket_close(c.nl);
        return CW_EINVAL;
    }
    if ((rc = cw__diag_push_ns(d, &c)) < 0) {
        mnl_socket_close(c.nl);
        return rc;
    }
    return 1;
}

int cw_diag_add_netns(cw_diag *d, const char *path)
{
    if (!d || !path)
        return CW_EINVAL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = add_fd(d, fd);
    close(fd);
    return rc;
}

int cw_diag_open_netns(cw_diag **out, const char *path)
{
    if (!out)
        return CW_EINVAL;
    int fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
    if (path && fd < 0)
        return -errno;
    cw_diag *d = NULL;
    int rc = cw_diag_open(&d);
    if (rc == CW_OK && path) {
        struct stat sb;
        struct cw__nsconn c;
        if (fstat(fd, &sb) < 0)
            rc = -errno;
        else if (d->ns[0].ino != (uint64_t)sb.st_ino &&
                 (rc = cw__nsconn_open_in(&c, fd)) == CW_OK) {
            /* Replace the caller's namespace by the one asked for. */
            mnl_socket_close(d->ns[0].nl);
            d->ns[0] = c;
            if (c.ino != (uint64_t)sb.st_ino)
                rc = CW_EINVAL;
        }
    }
    if (fd >= 0)
        close(fd);
    if (rc < 0) {
        if (d)
            cw_diag_close(&d);
        return rc;
    }
    *out = d;
    return CW_OK;
}

/* Try one candidate path; count it as skipped when it cannot be entered.
 * A process that exited meanwhile is no namespace lost: its namespace
 * either went with it or is reached through another path. */
static void try_path(cw_diag *d, int dirfd, const char *name, unsigned *added,
                     unsigned *skipped)
{
    struct stat sb;
    if (fstatat(dirfd, name, &sb, 0) < 0) {
        if (errno != ENOENT && errno != ESRCH)
            (*skipped)++;
        return;
    }
    if (cw__diag_has_ns(d, (uint64_t)sb.st_ino))
        return;
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT && errno != ESRCH)
            (*skipped)++;
        return;
    }
    int rc = add_fd(d, fd);
    close(fd);
    if (rc > 0)
        (*added)++;
    else if (rc < 0)
        (*skipped)++;
}

static void scan_dir(cw_diag *d, const char *dir, int procs, unsigned *added,
                     unsigned *skipped)
{
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dp = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!dp) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    struct dirent *e;
    while ((e = readdir(dp))) {
        char name[300];
        if (e->d_name[0] == '.')
            continue;
        if (procs) {
            if (e->d_name[0] < '1' || e->d_name[0] > '9')
                continue;
            snprintf(name, sizeof name, "%s/ns/net", e->d_name);
        } else {
            snprintf(name, sizeof name, "%s", e->d_name);
        }
        try_path(d, dirfd(dp), name, added, skipped);
    }
    closedir(dp);
}

int cw_diag_add_all_netns(cw_diag *d, unsigned *skipped)
{
    unsigned added = 0, skip = 0;
    if (!d)
        return CW_EINVAL;
    scan_dir(d, "/proc", 1, &added, &skip);
    scan_dir(d, "/run/netns", 0, &added, &skip);
    if (skipped)
        *skipped = skip;
    return (int)added;
}

unsigned cw_diag_netns_count(const cw_diag *d)
{
    return d ? d->nns : 0;
}

uint64_t cw_diag_netns_inode(const cw_diag *d, unsigned i)
{
    return d && i < d->nns ? d->ns[i].ino : 0;
}
