/* probe_tree.c - the client's process tree, without cgroups: the probe is
 * a child subreaper, so every process the client starts stays its
 * descendant even when its parent exits, and /proc's ppid links find them
 * all. Killing walks the same tree, so nothing is left behind. */
#define _GNU_SOURCE
#include "probe.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void probe_tree_init(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
}

struct pp {
    pid_t pid, ppid;
};

static pid_t read_ppid(int procfd, const char *pid)
{
    char path[300], buf[512];
    snprintf(path, sizeof path, "%s/stat", pid);
    int fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: skip to the last
     * ')', then the state, then the ppid. */
    char *p = strrchr(buf, ')');
    int ppid;
    if (!p || sscanf(p + 1, " %*c %d", &ppid) != 1)
        return -1;
    return ppid;
}

static int all_processes(struct pp **out)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    size_t n = 0, cap = 256;
    struct pp *v = malloc(cap * sizeof *v);
    struct dirent *e;
    while (v && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        pid_t ppid = read_ppid(dirfd(d), e->d_name);
        if (ppid < 0)
            continue;   /* gone meanwhile */
        if (n == cap) {
            struct pp *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                v = NULL;
                break;
            }
            v = nv;
        }
        v[n].pid = atoi(e->d_name);
        v[n++].ppid = ppid;
    }
    closedir(d);
    *out = v;
    return v ? (int)n : -1;
}

int probe_tree_pids(pid_t **out)
{
    struct pp *all;
    int n = all_processes(&all);
    *out = NULL;
    if (n < 0)
        return -1;
    pid_t *tree = malloc(((size_t)n + 1) * sizeof *tree);
    if (!tree) {
        free(all);
        return -1;
    }
    /* Breadth first from ourselves; tree[0] is the probe, left out. */
    size_t nt = 1;
    tree[0] = getpid();
    for (size_t i = 0; i < nt; i++)
        for (int j = 0; j < n; j++)
            if (all[j].ppid == tree[i])
                tree[nt++] = all[j].pid;
    free(all);
    memmove(tree, tree + 1, (nt - 1) * sizeof *tree);
    *out = tree;
    return (int)nt - 1;
}

static int add_fd(struct probe_fd **v, size_t *n, size_t *cap, pid_t pid, int fd,
                  uint32_t inode)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        struct probe_fd *nv = realloc(*v, ncap * sizeof *nv);
        if (!nv)
            return -1;
        *v = nv;
        *cap = ncap;
    }
    (*v)[(*n)++] = (struct probe_fd){.pid = pid, .fd = fd, .inode = inode};
    return 0;
}

static int scan_pid(pid_t pid, struct probe_fd **v, size_t *n, size_t *cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return 0;   /* exited, or not ours to read */
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        char link[64];
        ssize_t len = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        if (len < 9 || memcmp(link, "socket:[", 8))
            continue;
        link[len] = '\0';
        rc = add_fd(v, n, cap, pid, atoi(e->d_name),
                    (uint32_t)strtoul(link + 8, NULL, 10));
    }
    closedir(d);
    return rc;
}

int probe_tree_fds(const pid_t *pids, size_t n, struct probe_fd **out)
{
    struct probe_fd *v = NULL;
    size_t nv = 0, cap = 0;
    for (size_t i = 0; i < n; i++)
        if (scan_pid(pids[i], &v, &nv, &cap) < 0)
            break;   /* out of memory: judge on what was found */
    *out = v;
    return (int)nv;
}

void probe_comm(pid_t pid, char comm[16])
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    comm[0] = '\0';
    if (fd < 0)
        return;
    ssize_t n = read(fd, comm, 15);
    close(fd);
    comm[n > 0 ? n : 0] = '\0';
    comm[strcspn(comm, "\n")] = '\0';
}

void probe_reap(pid_t root, int *status, int *root_done)
{
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0)
        if (p == root) {
            *status = st;
            *root_done = 1;
        }
}

static void signal_tree(pid_t root, int sig)
{
    kill(-root, sig);   /* its process group, including exited leaders' */
    pid_t *pids;
    int n = probe_tree_pids(&pids);
    for (int i = 0; i < n; i++)
        kill(pids[i], sig);
    free(pids);
}

static int tree_empty(void)
{
    pid_t *pids;
    int n = probe_tree_pids(&pids);
    free(pids);
    return n == 0;
}

static void nap(long ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

void probe_tree_kill(pid_t root, int *status, int *root_done)
{
    /* SIGTERM first so the client may close its own sockets; 300 ms is
     * enough for a process that handles it, and bounds one that does
     * not. */
    int64_t end = cw_now_ms() + 300;
    signal_tree(root, SIGTERM);
    for (;;) {
        probe_reap(root, status, root_done);
        if (tree_empty())
            return;
        if (cw_now_ms() >= end)
            break;
        nap(10);
    }
    /* SIGKILL cannot be ignored; a process in uninterruptible sleep may
     * take a moment, so wait (bounded) until it is gone. */
    end = cw_now_ms() + 5000;
    do {
        signal_tree(root, SIGKILL);
        nap(10);
        probe_reap(root, status, root_done);
    } while (!tree_empty() && cw_now_ms() < end);
}
