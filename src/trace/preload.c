/* preload.c - libclosewise-trace.so's interposers: LD_PRELOAD puts these
 * read/recv/close/dup... in front of libc's; each calls the real one
 * (dlsym RTLD_NEXT) and then, for TCP sockets only, keeps a per-descriptor
 * slot: the stack of the last read, and an E record the first time a read
 * returns end of stream or ECONNRESET. socket/accept/accept4 only clear
 * the slot of the descriptor they return. The program must never notice:
 * errno is preserved, nothing blocks (a slot another thread holds is
 * skipped), a signal handler that reads while we are busy is passed
 * through (a thread-local guard), and the hot path neither allocates nor
 * makes system calls once a descriptor is classified. */
#define _GNU_SOURCE
#include "trace.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

struct cw_trace_slot *cw__tr_table;
int (*cw__tr_real_close)(int);

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_read_chk)(int, void *, size_t, size_t);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_recv_chk)(int, void *, size_t, size_t, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static ssize_t (*real_recvfrom_chk)(int, void *, size_t, size_t, int, struct sockaddr *,
                                    socklen_t *);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static int (*real_shutdown)(int, int);
static int (*real_socket)(int, int, int);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);

/* Set while this thread is inside our bookkeeping: a signal handler's
 * read, or a libc call of ours that lands in a wrapper, passes through. */
static __thread int in_trace __attribute__((tls_model("initial-exec")));

#define REAL_AS(var, sym) \
    (var ? var : (__typeof__(var))resolve((void **)&var, sym))
#define REAL(name) REAL_AS(real_##name, #name)

static void *resolve(void **slot, const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    return p;
}

/* Enter a slot's bookkeeping, or NULL: not traced, or busy (another
 * thread on the same descriptor, or us further up this stack). */
static struct cw_trace_slot *enter(int fd)
{
    if (!cw__tr_table || fd < 0 || fd >= CW_TRACE_SLOTS || in_trace)
        return NULL;
    struct cw_trace_slot *s = &cw__tr_table[fd];
    if (__atomic_exchange_n(&s->busy, 1, __ATOMIC_ACQUIRE))
        return NULL;
    in_trace = 1;
    return s;
}

static void leave(struct cw_trace_slot *s)
{
    in_trace = 0;
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

/* Writers bracket changes with seq odd/even, for an outside reader. */
static void write_begin(struct cw_trace_slot *s)
{
    __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

static void write_end(struct cw_trace_slot *s)
{
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
}

static void reset(struct cw_trace_slot *s)
{
    write_begin(s);
    s->kind = CW_TRACE_UNKNOWN;
    s->eof = 0;
    s->nlast = 0;
    s->ino = 0;
    write_end(s);
}

/* TCP (IPv4 or IPv6 stream socket) or not; three system calls, once per
 * descriptor. */
static void classify(int fd, struct cw_trace_slot *s)
{
    struct stat st;
    int type = 0;
    socklen_t tlen = sizeof type;
    struct sockaddr_storage ss;
    socklen_t slen = sizeof ss;
    write_begin(s);
    s->kind = CW_TRACE_OTHER;
    s->eof = 0;
    s->nlast = 0;
    if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) == 0 && type == SOCK_STREAM &&
        getsockname(fd, (struct sockaddr *)&ss, &slen) == 0 &&
        (ss.ss_family == AF_INET || ss.ss_family == AF_INET6)) {
        s->kind = CW_TRACE_TCP;
        s->ino = (uint64_t)st.st_ino;
    }
    write_end(s);
}

/* Still the socket it was classified as? (A descriptor closed behind our
 * back, by close_range or inside libc, may now be something else.) */
static int same_socket(int fd, const struct cw_trace_slot *s)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && (uint64_t)st.st_ino == s->ino;
}

static void remember(struct cw_trace_slot *s)
{
    void *pcs[CW_TRACE_DEPTH];
    int n = cw__tr_stack(pcs, CW_TRACE_DEPTH, CW__TR_HOT_WALK);
    write_begin(s);
    for (int i = 0; i < n; i++)
        s->last[i] = (uint64_t)(uintptr_t)pcs[i];
    s->nlast = (uint8_t)n;
    s->t_last = cw__tr_now_ms();
    write_end(s);
}

static void ended(int fd, struct cw_trace_slot *s, int eof, const char *func)
{
    if (!same_socket(fd, s)) {
        classify(fd, s);
        if (s->kind != CW_TRACE_TCP)
            return;
    }
    if (s->eof)
        return;   /* the first end only: a loop on recv() == 0 stays cheap */
    void *pcs[CW_TRACE_DEPTH];
    int n = cw__tr_stack(pcs, CW_TRACE_DEPTH, CW__TR_FULL_WALK);
    cw__tr_ended(fd, s, eof, func, pcs, n);
    write_begin(s);
    s->eof = 1;
    write_end(s);
}

/* After a read-like call: want is what was asked for (a read of 0 bytes
 * returning 0 is not an end of stream). */
static void after_read(int fd, ssize_t r, size_t want, const char *func)
{
    int e = errno;
    struct cw_trace_slot *s = enter(fd);
    if (!s)
        return;
    if (s->kind == CW_TRACE_UNKNOWN)
        classify(fd, s);
    if (s->kind == CW_TRACE_TCP) {
        if (r > 0)
            remember(s);
        else if ((r == 0 && want > 0) || (r < 0 && e == ECONNRESET))
            ended(fd, s, r == 0, func);
    }
    leave(s);
    errno = e;
}

/* fd goes away (close, or replaced by dup2): its E gets a C. */
static void forget(int fd, const char *what, int how)
{
    int e = errno;
    struct cw_trace_slot *s = enter(fd);
    if (!s)
        return;
    if (s->kind == CW_TRACE_TCP && s->eof)
        cw__tr_closed(fd, s, what, how);
    if (what[0] == 'C')
        reset(s);
    leave(s);
    errno = e;
}

/* newfd is now a copy of oldfd: same socket, same history. */
static void copy(int oldfd, int newfd)
{
    if (oldfd == newfd || newfd < 0)
        return;
    int e = errno;
    struct cw_trace_slot *d = enter(newfd);
    if (!d)
        return;
    in_trace = 0;
    struct cw_trace_slot *s = enter(oldfd);
    in_trace = 1;
    write_begin(d);
    if (s) {
        d->kind = s->kind;
        d->eof = s->eof;
        d->ino = s->ino;
        d->t_last = s->t_last;
        d->nlast = s->nlast;
        memcpy(d->last, s->last, sizeof d->last);
        __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
    } else {
        d->kind = CW_TRACE_UNKNOWN;
        d->eof = 0;
        d->nlast = 0;
    }
    write_end(d);
    leave(d);
    errno = e;
}

/* ---- the interposers ---- */

ssize_t read(int fd, void *buf, size_t n)
{
    ssize_t r = REAL(read)(fd, buf, n);
    after_read(fd, r, n, "read");
    return r;
}

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    ssize_t r = REAL_AS(real_read_chk, "__read_chk")(fd, buf, n, buflen);
    after_read(fd, r, n, "read");
    return r;
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    ssize_t r = REAL(recv)(fd, buf, n, flags);
    after_read(fd, r, n, "recv");
    return r;
}

ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    ssize_t r = REAL_AS(real_recv_chk, "__recv_chk")(fd, buf, n, buflen, flags);
    after_read(fd, r, n, "recv");
    return r;
}

ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *a, socklen_t *alen)
{
    ssize_t r = REAL(recvfrom)(fd, buf, n, flags, a, alen);
    after_read(fd, r, n, "recvfrom");
    return r;
}

ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *a, socklen_t *alen);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                       struct sockaddr *a, socklen_t *alen)
{
    ssize_t r = REAL_AS(real_recvfrom_chk, "__recvfrom_chk")(fd, buf, n, buflen, flags, a, alen);
    after_read(fd, r, n, "recvfrom");
    return r;
}

static size_t iov_len(const struct iovec *iov, int n)
{
    size_t len = 0;
    for (int i = 0; iov && i < n; i++)
        len += iov[i].iov_len;
    return len;
}

ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    ssize_t r = REAL(recvmsg)(fd, m, flags);
    after_read(fd, r, m ? iov_len(m->msg_iov, (int)m->msg_iovlen) : 0, "recvmsg");
    return r;
}

ssize_t readv(int fd, const struct iovec *iov, int n)
{
    ssize_t r = REAL(readv)(fd, iov, n);
    after_read(fd, r, iov_len(iov, n), "readv");
    return r;
}

int close(int fd)
{
    forget(fd, "C", 0);
    return REAL_AS(cw__tr_real_close, "close")(fd);
}

/* A new socket: whatever the slot said of the number's last owner (closed
 * behind our back: fclose, close_range) no longer holds. */
static void born(int fd)
{
    if (fd < 0)
        return;
    int e = errno;
    struct cw_trace_slot *s = enter(fd);
    if (s) {
        reset(s);
        leave(s);
    }
    errno = e;
}

int socket(int domain, int type, int protocol)
{
    int fd = REAL(socket)(domain, type, protocol);
    born(fd);
    return fd;
}

int accept(int fd, struct sockaddr *a, socklen_t *alen)
{
    int r = REAL(accept)(fd, a, alen);
    born(r);
    return r;
}

int accept4(int fd, struct sockaddr *a, socklen_t *alen, int flags)
{
    int r = REAL(accept4)(fd, a, alen, flags);
    born(r);
    return r;
}

int shutdown(int fd, int how)
{
    int r = REAL(shutdown)(fd, how);
    if (r == 0)
        forget(fd, "S", how);
    return r;
}

int dup(int fd)
{
    int r = REAL(dup)(fd);
    copy(fd, r);
    return r;
}

/* Only a dup2 that succeeded closed what newfd was (its slot still says
 * what that was: the C record names the old socket). */
int dup2(int oldfd, int newfd)
{
    int r = REAL(dup2)(oldfd, newfd);
    if (r >= 0 && oldfd != newfd) {
        forget(newfd, "C", 0);
        copy(oldfd, r);
    }
    return r;
}

int dup3(int oldfd, int newfd, int flags)
{
    int r = REAL(dup3)(oldfd, newfd, flags);
    if (r >= 0) {
        forget(newfd, "C", 0);
        copy(oldfd, r);
    }
    return r;
}

/* Every fcntl argument fits in a pointer-sized register (glibc's own
 * wrapper passes it on the same way). */
int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int r = REAL(fcntl)(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        copy(fd, r);
    return r;
}

int fcntl64(int fd, int cmd, ...);
int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    /* glibc before 2.28 has no fcntl64: its fcntl is the same call */
    int r = (REAL(fcntl64) ? real_fcntl64 : REAL(fcntl))(fd, cmd, arg);
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
        copy(fd, r);
    return r;
}

/* ---- start: after exec, and in a fork child ---- */

static void child_after_fork(void)
{
    /* The child has its own copy of the table (fork copies memory): the
     * descriptors it inherited keep their history under its pid. */
    cw__tr_started();
}

__attribute__((constructor)) static void trace_init(void)
{
    resolve((void **)&cw__tr_real_close, "close");   /* the writer closes with it */
    if (cw__tr_record_init() != 0)
        return;   /* not asked for: every wrapper passes straight through */
    void *t = mmap(NULL, (size_t)CW_TRACE_SLOTS * sizeof(struct cw_trace_slot),
                   PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (t == MAP_FAILED)
        return;
    void *warm[2];
    cw__tr_stack(warm, 2, 2);   /* the unwinder loads itself (malloc, dlopen) now, not in a read */
    pthread_atfork(NULL, NULL, child_after_fork);
    __atomic_store_n(&cw__tr_table, (struct cw_trace_slot *)t, __ATOMIC_RELEASE);
    cw__tr_started();
}
