/* cwtest.c - shared test helpers, see cwtest.h. */
#include "cwtest.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int fds_at_setup;

int cwt_fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n - 1;   /* the DIR's own descriptor */
}

void cwt_run(void **state)
{
    struct cwt_case *c = *state;
    c->returned = 0;
    c->fn(state);
    c->returned = 1;
}

/* Which descriptors were open at setup, so that teardown can close what
 * a failed test left open: its sockets would otherwise fail every later
 * test's CLOSE_WAIT check (one login timeout under load showed up as
 * "N socket(s) left in CLOSE_WAIT" in each test after it). */
#define CWT_MAX_FD 4096
static unsigned char open_at_setup[CWT_MAX_FD / 8];

static void note_open_fds(void)
{
    memset(open_at_setup, 0, sizeof open_at_setup);
    for (int fd = 0; fd < CWT_MAX_FD; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            open_at_setup[fd / 8] |= (unsigned char)(1u << (fd % 8));
}

static void close_new_fds(void)
{
    int n = 0;
    for (int fd = 3; fd < CWT_MAX_FD; fd++)
        if (!(open_at_setup[fd / 8] & (1u << (fd % 8))) && fcntl(fd, F_GETFD) >= 0) {
            close(fd);
            n++;
        }
    if (n)
        fprintf(stderr, "cwtest: closed %d descriptor(s) the failed test left open\n", n);
}

int cwt_setup(void **state)
{
    struct cwt_case *c = *state;
    if (c)
        c->returned = 0;
    signal(SIGPIPE, SIG_DFL);   /* a SIGPIPE must kill us, so tests see it */
    fds_at_setup = cwt_fd_count();
    note_open_fds();
    return 0;
}

/* Children spawned by this test, so that teardown can stop any a failed
 * assertion left running: no process outlives its test. */
static pid_t spawned[64];
static int nspawned;

static void forget_child(pid_t pid)
{
    for (int i = 0; i < nspawned; i++)
        if (spawned[i] == pid)
            spawned[i] = spawned[--nspawned];
}

void cwt_track(pid_t pid)
{
    if (nspawned < (int)(sizeof spawned / sizeof spawned[0]))
        spawned[nspawned++] = pid;
}

static void reap_children(void)
{
    while (nspawned > 0) {
        pid_t pid = spawned[--nspawned];
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

static char netns_made[4][64];
static int netns_count, netns_orig = -1;

/* A failed assertion jumps straight here: leave no namespace behind and
 * do not run the next test inside one. */
static void netns_cleanup(void)
{
    if (netns_orig >= 0)
        cwt_netns_leave(netns_orig);
    for (int i = 0; i < netns_count; i++)
        cwt_netns_del(netns_made[i]);
    netns_count = 0;
}

int cwt_teardown(void **state)
{
    const struct cwt_case *c = *state;
    netns_cleanup();
    reap_children();
    if (c && !c->returned) {
        /* The body failed and jumped here: its descriptors are still open
         * by design, and a leak report would only hide the real failure. */
        fprintf(stderr, "cwtest: test failed: descriptor and CLOSE_WAIT checks skipped\n");
        close_new_fds();
        return 0;
    }
    int now = cwt_fd_count();
    if (now != fds_at_setup)
        fail_msg("descriptor leak: %d open at setup, %d at teardown",
                 fds_at_setup, now);
    int cw = cwt_count_pid(0, CW_TCP_CLOSE_WAIT);
    if (cw != 0)
        fail_msg("%d socket(s) of this process left in CLOSE_WAIT", cw);
    return 0;
}

static int parse_table(const char *path, struct cwt_sock **rows, int *n,
                       int *cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;   /* no IPv6 on this kernel */
    char line[512];
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return 0;
    }
    while (fgets(line, sizeof line, f)) {
        char local[64], remote[64];
        unsigned st;
        unsigned long inode, txq, rxq;
        if (sscanf(line, " %*d: %63s %63s %x %lx:%lx %*s %*s %*d %*d %lu",
                   local, remote, &st, &txq, &rxq, &inode) != 6)
            continue;
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 256;
            *rows = realloc(*rows, (size_t)*cap * sizeof **rows);
            assert_non_null(*rows);
        }
        struct cwt_sock *s = &(*rows)[(*n)++];
        s->state = (int)st;
        s->lport = (int)strtol(strchr(local, ':') + 1, NULL, 16);
        s->rport = (int)strtol(strchr(remote, ':') + 1, NULL, 16);
        s->inode = inode;
        s->rxq = (long)rxq;
        s->laddr = strlen(local) == 13 ? ntohl((uint32_t)strtoul(local, NULL, 16)) : 0;
    }
    fclose(f);
    return 0;
}

int cwt_tcp_table(struct cwt_sock **out)
{
    struct cwt_sock *rows = NULL;
    int n = 0, cap = 0;
    parse_table("/proc/net/tcp", &rows, &n, &cap);
    parse_table("/proc/net/tcp6", &rows, &n, &cap);
    *out = rows;
    return n;
}

int cwt_count(int state, int lport, int rport)
{
    struct cwt_sock *rows;
    int n = cwt_tcp_table(&rows), count = 0;
    for (int i = 0; i < n; i++)
        if ((!state || rows[i].state == state) &&
            (!lport || rows[i].lport == lport) &&
            (!rport || rows[i].rport == rport))
            count++;
    free(rows);
    return count;
}

int cwt_count_addr(int state, const char *addr)
{
    struct in_addr a;
    assert_int_equal(inet_pton(AF_INET, addr, &a), 1);
    struct cwt_sock *rows;
    int n = cwt_tcp_table(&rows), count = 0;
    for (int i = 0; i < n; i++)
        count += (!state || rows[i].state == state) && rows[i].laddr == ntohl(a.s_addr);
    free(rows);
    return count;
}

long cwt_rx_queue(int lport, int rport)
{
    struct cwt_sock *rows;
    int n = cwt_tcp_table(&rows);
    long rxq = -1;
    for (int i = 0; i < n && rxq < 0; i++)
        if (rows[i].lport == lport && rows[i].rport == rport)
            rxq = rows[i].rxq;
    free(rows);
    return rxq;
}

int cwt_wait_count(int state, int lport, int rport, int want, int timeout_ms)
{
    int64_t end = cw_now_ms() + timeout_ms;
    int got;
    while ((got = cwt_count(state, lport, rport)) != want && cw_now_ms() < end)
        cwt_sleep_ms(10);
    return got;
}

/* Socket inodes held by a process, from its /proc/<pid>/fd links. */
static int socket_inodes(pid_t pid, unsigned long **out)
{
    char path[64];
    snprintf(path, sizeof path, pid ? "/proc/%d/fd" : "/proc/self/fd", (int)pid);
    DIR *d = opendir(path);
    *out = NULL;
    if (!d)
        return 0;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char target[64];
        ssize_t len = readlinkat(dirfd(d), e->d_name, target, sizeof target - 1);
        if (len <= 0)
            continue;
        target[len] = '\0';
        unsigned long ino;
        if (sscanf(target, "socket:[%lu]", &ino) != 1)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            *out = realloc(*out, (size_t)cap * sizeof **out);
        }
        (*out)[n++] = ino;
    }
    closedir(d);
    return n;
}

int cwt_count_pid(pid_t pid, int state)
{
    unsigned long *inodes;
    int ni = socket_inodes(pid, &inodes);
    struct cwt_sock *rows;
    int n = cwt_tcp_table(&rows), count = 0;
    for (int i = 0; i < n; i++) {
        if (rows[i].state != state || rows[i].inode == 0)
            continue;
        for (int j = 0; j < ni; j++)
            if (inodes[j] == rows[i].inode)
                count++;
    }
    free(rows);
    free(inodes);
    return count;
}

void cwt_pair(const char *host, const struct cw_opts *copts,
              cw_conn **client, cw_conn **server)
{
    cw_listener *l = NULL;
    assert_int_equal(cw_listen(host ? host : "127.0.0.1", 0, NULL, 16, &l), CW_OK);
    int port = cw_listener_port(l);
    assert_true(port > 0);
    assert_int_equal(cw_dial(host ? host : "127.0.0.1", (uint16_t)port, copts,
                             cw_now_ms() + 5000, client), CW_OK);
    assert_int_equal(cw_accept(l, cw_now_ms() + 5000, server), CW_OK);
    assert_int_equal(cw_listener_close(&l), CW_OK);
}

void cwt_pair_raw(const char *host, cw_conn **client, int *server_fd)
{
    cw_listener *l = NULL;
    assert_int_equal(cw_listen(host ? host : "127.0.0.1", 0, NULL, 16, &l), CW_OK);
    assert_int_equal(cw_dial(host ? host : "127.0.0.1", (uint16_t)cw_listener_port(l),
                             NULL, cw_now_ms() + 5000, client), CW_OK);
    *server_fd = accept4(cw_listener_fd(l), NULL, NULL, SOCK_CLOEXEC);
    assert_true(*server_fd >= 0);
    assert_int_equal(cw_listener_close(&l), CW_OK);
}

static int conn_port(const cw_conn *c, int peer)
{
    char buf[64];
    int rc = peer ? cw_conn_peer(c, buf, sizeof buf) : cw_conn_local(c, buf, sizeof buf);
    assert_int_equal(rc, CW_OK);
    return atoi(strrchr(buf, ':') + 1);
}

int cwt_local_port(const cw_conn *c) { return conn_port(c, 0); }
int cwt_peer_port(const cw_conn *c) { return conn_port(c, 1); }

pthread_t cwt_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fn, arg), 0);
    return t;
}

void *cwt_join(pthread_t t)
{
    void *ret;
    assert_int_equal(pthread_join(t, &ret), 0);
    return ret;
}

pid_t cwt_spawn(char *const argv[], int *out_fd)
{
    return cwt_spawn3(argv, NULL, out_fd, NULL);
}

/* Wait until fd is readable or the absolute time end (ms) has passed. */
static int readable_before(int fd, int64_t end)
{
    int64_t left = end - cw_now_ms();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return left > 0 && poll(&p, 1, (int)left) > 0;
}

int cwt_read_line(int fd, char *buf, size_t size, int timeout_ms)
{
    int64_t end = cw_now_ms() + timeout_ms;
    size_t n = 0;
    while (n + 1 < size) {
        if (!readable_before(fd, end))
            return -1;
        if (read(fd, buf + n, 1) != 1)
            return -1;
        if (buf[n] == '\n')
            break;
        n++;
    }
    buf[n] = '\0';
    return (int)n;
}

int cwt_kill(pid_t pid)
{
    int status = 0;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    forget_child(pid);
    return status;
}

int cwt_wait(pid_t pid, int timeout_ms)
{
    int64_t end = cw_now_ms() + timeout_ms;
    int status;
    while (cw_now_ms() < end) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            forget_child(pid);
            return status;
        }
        cwt_sleep_ms(10);
    }
    /* Say so: the caller's WEXITSTATUS(-1) reads as "exit 255". */
    fprintf(stderr, "cwtest: pid %d still running after %d ms: killed\n", (int)pid,
            timeout_ms);
    cwt_kill(pid);
    return -1;
}

void cwt_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

pid_t cwt_fork(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    /* The parent may have died before prctl: then it never signals us,
     * and we have been re-parented. */
    if (pid == 0) {
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
    }
    return pid;
}

pid_t cwt_spawn3(char *const argv[], int *in_fd, int *out_fd, int *err_fd)
{
    int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    int *want[3] = {in_fd, out_fd, err_fd};
    for (int i = 0; i < 3; i++)
        if (want[i])
            assert_int_equal(pipe2(p[i], O_CLOEXEC), 0);
    pid_t pid = cwt_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (in_fd)
            dup2(p[0][0], STDIN_FILENO);
        if (out_fd)
            dup2(p[1][1], STDOUT_FILENO);
        if (err_fd)
            dup2(p[2][1], STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    cwt_track(pid);
    if (in_fd) {
        close(p[0][0]);
        *in_fd = p[0][1];
    }
    if (out_fd) {
        close(p[1][1]);
        *out_fd = p[1][0];
    }
    if (err_fd) {
        close(p[2][1]);
        *err_fd = p[2][0];
    }
    return pid;
}

size_t cwt_read_all(int fd, char *buf, size_t size, int timeout_ms)
{
    int64_t end = cw_now_ms() + timeout_ms;
    size_t n = 0;
    while (n + 1 < size) {
        if (!readable_before(fd, end))
            break;
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

int cwt_free_port(void)
{
    cw_listener *l;
    assert_int_equal(cw_listen("127.0.0.1", 0, NULL, 1, &l), CW_OK);
    int port = cw_listener_port(l);
    cw_listener_close(&l);
    return port;
}

int cwt_sh(const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    return system(cmd);
}

void cwt_netns_name(char *buf, size_t size, const char *suffix)
{
    snprintf(buf, size, "cwtest-%d-%s", (int)getpid(), suffix);
    if (netns_count < 4)
        snprintf(netns_made[netns_count++], sizeof netns_made[0], "%s", buf);
}

int cwt_netns_enter(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "/var/run/netns/%s", name);
    int orig = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(orig >= 0 && target >= 0);
    assert_int_equal(setns(target, CLONE_NEWNET), 0);
    close(target);
    netns_orig = orig;
    return orig;
}

void cwt_netns_leave(int orig)
{
    netns_orig = -1;
    assert_int_equal(setns(orig, CLONE_NEWNET), 0);
    close(orig);
}

void cwt_netns_del(const char *name)
{
    cwt_sh("ip netns del %s 2>/dev/null", name);
}

void cwt_private_netns(void)
{
    if (unshare(CLONE_NEWNET) < 0) {
        fprintf(stderr, "cwtest: SKIP: cannot make a private network namespace "
                        "(unshare: %s); this test reads the kernel's socket "
                        "tables and needs root\n", strerror(errno));
        exit(CWT_SKIP);
    }
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
        fprintf(stderr, "cwtest: cannot read lo's flags: %s\n", strerror(errno));
        exit(1);
    }
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0) {
        fprintf(stderr, "cwtest: cannot bring lo up: %s\n", strerror(errno));
        exit(1);
    }
    close(fd);
    /* To repeat one flaky test alone: CWT_FILTER=test_name (cmocka glob). */
    if (getenv("CWT_FILTER"))
        cmocka_set_test_filter(getenv("CWT_FILTER"));
}

/* ---- watchdog: a test that hangs explains itself ----
 * CTest kills a test at its TIMEOUT with SIGKILL and prints nothing about
 * where it was. CTest passes the timeout in CWT_TIMEOUT; a thread started
 * before main() wakes a few seconds earlier, prints every thread's stack
 * with gdb (or the kernel's view when gdb is missing) and aborts. */
static void watchdog_dump(void)
{
    char pid[32];
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    fflush(NULL);
    pid_t g = fork();
    if (g == 0) {
        dup2(2, 1);
        execlp("gdb", "gdb", "-p", pid, "-batch", "-nx", "-ex", "set pagination off",
               "-ex", "thread apply all bt", (char *)NULL);
        fprintf(stderr, "cwtest: watchdog: gdb unavailable (%s); kernel stacks:\n",
                strerror(errno));
        execlp("sh", "sh", "-c", "for t in /proc/$PPID/task/*; do echo \"== $t $(cat $t/comm)"
               " wchan=$(cat $t/wchan)\"; cat $t/stack 2>/dev/null; done", (char *)NULL);
        _exit(127);
    }
    if (g > 0)
        waitpid(g, NULL, 0);
}

static void *watchdog(void *arg)
{
    unsigned secs = (unsigned)(uintptr_t)arg;
    while ((secs = sleep(secs)) > 0)
        ;
    fprintf(stderr, "\ncwtest: watchdog: test still running close to its CTest "
                    "timeout (%s s); stacks of every thread follow\n", getenv("CWT_TIMEOUT"));
    watchdog_dump();
    abort();
    return NULL;
}

__attribute__((constructor)) static void watchdog_start(void)
{
    const char *s = getenv("CWT_TIMEOUT");
    long t = s ? strtol(s, NULL, 10) : 0;
    if (t <= 0)
        return;   /* not under CTest (valgrind, by hand): no watchdog */
    long margin = t / 10 < 5 ? 5 : t / 10;
    if (t <= margin)
        return;
#ifdef PR_SET_PTRACER
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);   /* let gdb attach under Yama */
#endif
    /* The thread blocks every signal: a process-directed signal a test sends
     * itself (SIGTERM to a cw_loop's signalfd) must reach the main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &a, watchdog, (void *)(uintptr_t)(t - margin)) != 0)
        fprintf(stderr, "cwtest: cannot start the watchdog thread\n");
    pthread_attr_destroy(&a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int cwt_netns_blackhole(char *a, char *b)
{
    cwt_netns_name(a, 64, "a");
    cwt_netns_name(b, 64, "b");
    return cwt_sh("exec >/dev/null 2>&1; ip netns add %s && ip netns add %s && "
                  "ip link add cwa netns %s type veth peer name cwb netns %s && "
                  "ip -n %s addr add 198.18.0.1/24 dev cwa && ip -n %s link set cwa up && "
                  "ip -n %s addr add 198.18.0.2/24 dev cwb && ip -n %s link set cwb up && "
                  "ip -n %s route add blackhole 198.18.0.1/32",
                  a, b, a, b, a, a, b, b, b);
}

int cwt_fd_count_pid(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int cwt_tasks(pid_t pid, struct cwt_task *out, int max)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while (n < max && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[384];
        snprintf(path, sizeof path, "%s/%s/comm", dir, e->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;   /* gone meanwhile */
        struct cwt_task *t = &out[n++];
        t->tid = atoi(e->d_name);
        if (!fgets(t->name, sizeof t->name, f))
            t->name[0] = '\0';
        t->name[strcspn(t->name, "\n")] = '\0';
        fclose(f);
    }
    closedir(d);
    return n;
}
