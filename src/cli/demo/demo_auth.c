/* demo_auth.c - part 2 of `closewise demo`: the seed's "wrong password"
 * reply, and which ways of closing deliver it. Measured, never assumed. */
#define _GNU_SOURCE
#include "../cli.h"
#include "demo.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SHORT_REPLY "ERR bad credentials\n"
#define PIPELINED (64 * 1024)        /* input the server never reads */
#define LONG_REPLY (256 * 1024)
#define LATE_RCVBUF 16384
#define SERVER_SNDBUF 200000

static void tally(struct demo_case *c, const char *got, size_t n, const char *want,
                  size_t want_len, int rc)
{
    c->runs++;
    c->complete += n == want_len && memcmp(got, want, want_len) == 0;
    enum cw_end end = cw_end_of_read(rc);
    c->eof += end == CW_END_EOF;
    c->reset += end == CW_END_RESET;
    c->other += end != CW_END_EOF && end != CW_END_RESET;
    if (c->runs == 1 || n < c->min_bytes)
        c->min_bytes = n;
    if (n > c->max_bytes)
        c->max_bytes = n;
}

/* Read until the connection ends; returns the terminal result. */
static int read_to_end(cw_conn *c, char *buf, size_t size, size_t *n)
{
    ssize_t r;
    *n = 0;
    while ((r = cw_recv(c, buf + *n, size - *n, cw_now_ms() + 5000)) > 0)
        *n += (size_t)r;
    return (int)r;
}

/* One wrong-password login against the reference server, with more input
 * pipelined behind it that the server will never read. */
static void ref_login(int port, const char *request, size_t len, struct demo_case *c)
{
    cw_conn *conn;
    char buf[256];
    size_t n = 0;
    int rc = cw_dial("127.0.0.1", (uint16_t)port, NULL, cw_now_ms() + 5000, &conn);
    if (rc == CW_OK) {
        cw_send_all(conn, request, len, cw_now_ms() + 5000);
        rc = read_to_end(conn, buf, sizeof buf, &n);
        cw_close(&conn, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000);
    }
    tally(c, buf, n, SHORT_REPLY, strlen(SHORT_REPLY), rc);
}

static int reference_case(struct demo *d, enum cw_server_close mode, struct demo_case *c)
{
    static const char *names[] = {"reference server, graceful close",
                                  "reference server, SO_LINGER {1,0}",
                                  "reference server, plain close()"};
    c->name = names[mode];
    c->condition = "20-byte reply; 64 KiB more input pipelined behind the login";
    c->graceful = mode == CW_SERVER_GRACEFUL;
    c->reply_len = strlen(SHORT_REPLY);
    int port;
    pid_t srv = demo_server(d, mode, 30000, &port);
    if (srv < 0) {
        cli_error("cannot start the reference server");
        return CLI_SYSTEM;
    }
    size_t len = PIPELINED;
    char *req = malloc(len);
    if (!req)
        return CLI_SYSTEM;
    const char login[] = "AUTH " DEMO_USER " wrong-password\n";
    memcpy(req, login, sizeof login - 1);
    for (size_t i = sizeof login - 1; i < len; i++)
        req[i] = (i % 7 == 6) ? '\n' : "ECHO x"[i % 7];
    c->server_pid = srv;
    for (int i = 0; i < d->logins && !demo_interrupted(); i++) {
        ref_login(port, req, len, c);
        demo_rst_poll(d, c, 0);   /* symbolized while the server lives */
    }
    demo_rst_poll(d, c, 100);
    free(req);
    demo_reap(srv, SIGTERM);
    return CLI_OK;
}

/* The long-reply server: a thread that answers every connection with the
 * long error text and closes the chosen way. Its send buffer is fixed so
 * the reply sits in its send queue when it closes. */
struct long_server {
    cw_listener *l;
    enum cw_end how;        /* CW_END_GRACEFUL, _ABORT or _PLAIN */
    int runs;
    int closed[2];   /* "I have closed" to the client */
    const char *reply;
};

static int accept_raw(int lfd)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    if (poll(&p, 1, 5000) != 1)
        return -1;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

static void signal_closed(struct long_server *ls)
{
    ssize_t w = write(ls->closed[1], "c", 1);
    (void)w;
}

static void send_raw(int fd, const char *p, size_t len)
{
    ssize_t n;
    while (len > 0 && (n = send(fd, p, len, MSG_NOSIGNAL)) > 0) {
        p += n;
        len -= (size_t)n;
    }
}

static void long_serve_one(struct long_server *ls)
{
    int fd = accept_raw(cw_listener_fd(ls->l)), sndbuf = SERVER_SNDBUF;
    char b;
    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    if (recv(fd, &b, 1, 0) != 1) {   /* the rest of the request stays unread */
        close(fd);
        return;
    }
    if (ls->how == CW_END_PLAIN) {
        send_raw(fd, ls->reply, LONG_REPLY);
        close(fd);   /* the seed's closesocket() with input unread: RST */
        signal_closed(ls);
        return;
    }
    cw_conn *c;
    if (cw_conn_adopt(fd, NULL, &c) < 0)
        return;
    cw_send_all(c, ls->reply, LONG_REPLY, cw_now_ms() + 5000);
    if (ls->how == CW_END_ABORT) {
        cw_close(&c, CW_CLOSE_ABORT, 0);
        signal_closed(ls);
    } else {   /* the close waits for the client's FIN: signal first */
        signal_closed(ls);
        cw_close(&c, CW_CLOSE_GRACEFUL, cw_now_ms() + 5000);
    }
}

static void *long_server_main(void *arg)
{
    struct long_server *ls = arg;
    for (int i = 0; i < ls->runs; i++)
        long_serve_one(ls);
    return NULL;
}

/* A client with a small receive buffer that starts reading only once the
 * server has closed (or, graceful, is closing). */
static void late_reader(struct long_server *ls, char *buf, struct demo_case *c)
{
    struct cw_opts o;
    cw_opts_init(&o);
    o.rcvbuf = LATE_RCVBUF;
    cw_conn *conn;
    size_t n = 0;
    int rc = cw_dial("127.0.0.1", (uint16_t)cw_listener_port(ls->l), &o,
                     cw_now_ms() + 5000, &conn);
    if (rc == CW_OK) {
        char req[100];
        memset(req, 'x', sizeof req);
        memcpy(req, "AUTH demo wrong-password\n", 25);
        cw_send_all(conn, req, sizeof req, cw_now_ms() + 5000);
        struct pollfd p = {.fd = ls->closed[0], .events = POLLIN};
        char b;
        if (poll(&p, 1, 10000) == 1 && read(ls->closed[0], &b, 1) == 1)
            rc = read_to_end(conn, buf, LONG_REPLY + 1, &n);
        cw_close(&conn, CW_CLOSE_GRACEFUL, cw_now_ms() + 1000);
    }
    tally(c, buf, n, ls->reply, LONG_REPLY, rc);
}

static int long_case(struct demo *d, enum cw_end how, struct demo_case *c)
{
    static const char *names[] = {"256 KiB reply, graceful close",
                                  "256 KiB reply, SO_LINGER {1,0}",
                                  "256 KiB reply, plain close()"};
    c->name = names[how == CW_END_GRACEFUL ? 0 : how == CW_END_ABORT ? 1 : 2];
    c->condition = "reply still in the server's send queue: client with a 16 KiB "
                   "receive buffer reads only after the close; 99 request bytes unread";
    c->graceful = how == CW_END_GRACEFUL;
    c->reply_len = LONG_REPLY;
    struct long_server ls = {.how = how, .runs = d->logins};
    char *reply = malloc(LONG_REPLY), *buf = malloc(LONG_REPLY + 1);
    int rc = CLI_SYSTEM;
    if (!reply || !buf || pipe2(ls.closed, O_CLOEXEC) < 0)
        goto out;
    memcpy(reply, "ERR bad credentials:", 20);
    for (size_t i = 20; i < LONG_REPLY; i++)
        reply[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
    ls.reply = reply;
    pthread_t t;
    if (cw_listen("127.0.0.1", 0, NULL, 64, &ls.l) < 0 ||
        pthread_create(&t, NULL, long_server_main, &ls) != 0)
        goto out_pipe;
    c->server_pid = getpid();   /* the server is a thread of ours */
    for (int i = 0; i < d->logins; i++) {
        late_reader(&ls, buf, c);
        demo_rst_poll(d, c, 0);
    }
    pthread_join(t, NULL);
    demo_rst_poll(d, c, 100);
    rc = CLI_OK;
out_pipe:
    cw_listener_close(&ls.l);
    close(ls.closed[0]);
    close(ls.closed[1]);
out:
    free(reply);
    free(buf);
    return rc;
}

static void print_case(const struct demo *d, const struct demo_case *c)
{
    fprintf(d->out, "  %-36s %5d/%-5d  then EOF %d, reset %d%s\n", c->name,
            c->complete, c->runs, c->eof, c->reset, c->other ? ", other errors" : "");
    demo_rst_print(d, c);
    fflush(d->out);
}

static int demo_auth_cases(struct demo *d)
{
    enum cw_server_close modes[] = {CW_SERVER_GRACEFUL, CW_SERVER_LINGER0, CW_SERVER_PLAIN};
    for (int i = 0; i < 3 && !demo_interrupted(); i++) {
        struct demo_case *c = &d->cases[d->ncases++];
        if (reference_case(d, modes[i], c) != CLI_OK)
            return CLI_SYSTEM;
        print_case(d, c);
    }
    enum cw_end ends[] = {CW_END_GRACEFUL, CW_END_ABORT, CW_END_PLAIN};
    for (int i = 0; i < 3 && !demo_interrupted(); i++) {
        struct demo_case *c = &d->cases[d->ncases++];
        if (long_case(d, ends[i], c) != CLI_OK)
            return CLI_SYSTEM;
        print_case(d, c);
    }
    return CLI_OK;
}

int demo_auth(struct demo *d)
{
    fprintf(d->out, "\nPart 2: %d wrong-password logins per case; did the client receive the\n"
            "complete error reply?\n\n", d->logins);
    demo_rst_start(d);
    int rc = demo_auth_cases(d);
    demo_rst_stop(d);
    return rc;
}
