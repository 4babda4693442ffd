/* client.c - `closewise client`: the seed's client done right. It logs in,
 * echoes lines, and when the connection ends in any way (the server's FIN,
 * a reset, a read timeout) it closes at once and reconnects with backoff,
 * resending the message that got no reply. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct client {
    const char *host;
    int port;
    char user[256], password[256];
    long long count;           /* -1: lines from stdin */
    long long read_timeout_ms, connect_timeout_ms;
    long long max_retries;
    int bind_port;
    int linger0, quiet;
    struct cw_backoff backoff;
    cw_conn *conn;
    long long sent, failures;
};

static void client_usage(FILE *f)
{
    fprintf(f,
        "usage: closewise client --port PORT --user NAME:PASSWORD [options]\n\n"
        "Log in to a closewise server and echo lines from stdin (or --count\n"
        "generated messages). Whenever the connection ends, close it at once and\n"
        "reconnect with exponential backoff, resending the unanswered message.\n\n"
        "  -H, --host HOST          server address (default 127.0.0.1)\n"
        "  -p, --port PORT          server port (required)\n"
        "  -u, --user NAME:PASSWORD credentials (required)\n"
        "  -n, --count N            send N generated messages instead of stdin\n"
        "      --read-timeout D     wait for a reply at most D (default 30s)\n"
        "      --connect-timeout D  bound each connect (default 5s)\n"
        "      --max-retries N      give up after N failed attempts in a row (10)\n"
        "      --backoff-min D      first retry delay (default 100ms)\n"
        "      --backoff-max D      longest retry delay (default 5s)\n"
        "      --bind-port P        always connect from local port P (SO_REUSEADDR)\n"
        "      --linger0            close abortively (RST); loses unsent data\n"
        "  -q, --quiet              do not print replies\n"
        "  -h, --help               this text\n\n"
        "A graceful close waits at most 500 ms for the server's FIN.\n"
        "Durations: 250ms, 2s, 1m. Exit: 0 done, 1 login refused or gave up,\n"
        "2 usage, 3 system error. See closewise-client(1).\n");
}

enum { OPT_RT = 256, OPT_CT, OPT_RETRIES, OPT_BMIN, OPT_BMAX, OPT_BIND, OPT_L0 };

static const struct option long_opts[] = {
    {"host", required_argument, NULL, 'H'},
    {"port", required_argument, NULL, 'p'},
    {"user", required_argument, NULL, 'u'},
    {"count", required_argument, NULL, 'n'},
    {"read-timeout", required_argument, NULL, OPT_RT},
    {"connect-timeout", required_argument, NULL, OPT_CT},
    {"max-retries", required_argument, NULL, OPT_RETRIES},
    {"backoff-min", required_argument, NULL, OPT_BMIN},
    {"backoff-max", required_argument, NULL, OPT_BMAX},
    {"bind-port", required_argument, NULL, OPT_BIND},
    {"linger0", no_argument, NULL, OPT_L0},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0}
};

static int parse_count(const char *s, long long *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

static int set_user(struct client *cl, const char *arg)
{
    const char *colon = strchr(arg, ':');
    size_t ulen = colon ? (size_t)(colon - arg) : 0;
    if (!colon || ulen == 0 || ulen >= sizeof cl->user ||
        strlen(colon + 1) >= sizeof cl->password || strchr(arg, ' ')) {
        cli_error("--user wants NAME:PASSWORD (no spaces)");
        return -1;
    }
    memcpy(cl->user, arg, ulen);
    cl->user[ulen] = '\0';
    strcpy(cl->password, colon + 1);
    return 0;
}

static int parse_one(struct client *cl, int opt, const char *arg, long long *bmin,
                     long long *bmax)
{
    long long *dur = opt == OPT_RT ? &cl->read_timeout_ms
                   : opt == OPT_CT ? &cl->connect_timeout_ms
                   : opt == OPT_BMIN ? bmin : opt == OPT_BMAX ? bmax : NULL;
    if (dur) {
        *dur = cli_parse_duration(arg);
        return *dur < 0 ? (cli_error("bad duration '%s'", arg), -1) : 0;
    }
    switch (opt) {
    case 'H': cl->host = arg; return 0;
    case 'p': cl->port = cli_parse_port(arg); break;
    case 'u': return set_user(cl, arg);
    case 'n': return parse_count(arg, &cl->count) ? (cli_error("bad count '%s'", arg), -1) : 0;
    case OPT_RETRIES:
        return parse_count(arg, &cl->max_retries) ? (cli_error("bad retries '%s'", arg), -1) : 0;
    case OPT_BIND: cl->bind_port = cli_parse_port(arg); break;
    case OPT_L0: cl->linger0 = 1; return 0;
    case 'q': cl->quiet = 1; return 0;
    default: return -1;
    }
    if ((opt == 'p' && cl->port <= 0) || (opt == OPT_BIND && cl->bind_port <= 0)) {
        cli_error("bad port '%s'", arg);
        return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(struct client *cl, int argc, char **argv)
{
    long long bmin = 100, bmax = 5000;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "H:p:u:n:qh", long_opts, NULL)) != -1) {
        if (opt == 'h') {
            client_usage(stdout);
            return 1;
        }
        if (opt == '?' || parse_one(cl, opt, optarg, &bmin, &bmax) < 0)
            return -1;
    }
    if (optind < argc) {
        cli_error("unexpected argument '%s'", argv[optind]);
        return -1;
    }
    if (cl->port <= 0 || !cl->user[0]) {
        cli_error("--port and --user are required (see 'closewise client --help')");
        return -1;
    }
    cw_backoff_init(&cl->backoff, bmin, bmax);
    return 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* End the session at once, the chosen way. A silent server that never
 * sends its FIN holds a graceful close for at most 500 ms: everything we
 * sent is acknowledged or not worth waiting for by then. */
static void drop(struct client *cl)
{
    cw_close(&cl->conn, cl->linger0 ? CW_CLOSE_ABORT : CW_CLOSE_GRACEFUL,
             cw_now_ms() + 500);
}

enum { LOGIN_REFUSED = 1 };

/* Connect and log in. Returns CW_OK, LOGIN_REFUSED, or a negative code. */
static int connect_and_login(struct client *cl, char *why, size_t size)
{
    struct cw_opts o;
    cw_opts_init(&o);
    o.nodelay = 1;
    o.read_timeout_ms = (int)cl->read_timeout_ms;
    if (cl->bind_port) {
        o.bind_port = (uint16_t)cl->bind_port;
        o.reuseaddr = 1;   /* the seed's remedy: one local port, reused */
    }
    int rc = cw_dial(cl->host, (uint16_t)cl->port, &o,
                     cw_now_ms() + cl->connect_timeout_ms, &cl->conn);
    if (rc < 0) {
        snprintf(why, size, "connect to %s:%d: %s", cl->host, cl->port, cw_strerror(rc));
        return rc;
    }
    char line[CW_SERVER_MAX_LINE + 2];
    int n = snprintf(line, sizeof line, "AUTH %s %s\n", cl->user, cl->password);
    rc = cw_send_all(cl->conn, line, (size_t)n, cw_now_ms() + cl->read_timeout_ms);
    if (rc == CW_OK)
        rc = (int)cw_readline(cl->conn, line, sizeof line, CW_NEVER);
    if (rc >= 0 && strcmp(line, "OK") == 0)
        return CW_OK;
    if (rc >= 0)
        snprintf(why, size, "login refused: %s", line);
    else
        snprintf(why, size, "login: %s", cw_strerror(rc));
    drop(cl);
    return rc >= 0 && strcmp(line, "ERR bad credentials") == 0 ? LOGIN_REFUSED
           : rc >= 0 ? CW_ECLOSING : rc;
}

/* Wait for the next message, watching the connection meanwhile so that a
 * server's close is noticed (and answered with close) while we are idle.
 * Returns 1 with a message, 0 at the end of input, -1 if the connection
 * ended first, -2 on a stdin error. */
static int next_message(struct client *cl, char *msg, size_t size)
{
    if (cl->count >= 0) {
        if (cl->sent >= cl->count)
            return 0;
        snprintf(msg, size, "message %lld", cl->sent + 1);
        return 1;
    }
    struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                          {.fd = cw_conn_fd(cl->conn), .events = POLLIN | POLLRDHUP}};
    while (poll(p, 2, -1) < 0)
        if (errno != EINTR)
            return -2;
    if (p[1].revents)
        return -1;
    if (!fgets(msg, (int)size, stdin))
        return ferror(stdin) ? -2 : 0;
    msg[strcspn(msg, "\r\n")] = '\0';
    return 1;
}

/* The server's last words before it closed, for the log line. */
static void explain_end(struct client *cl, char *why, size_t size)
{
    char line[CW_SERVER_MAX_LINE + 2], last[CW_SERVER_MAX_LINE + 2] = "";
    ssize_t n;
    while ((n = cw_readline(cl->conn, line, sizeof line, cw_now_ms() + 200)) >= 0)
        memcpy(last, line, (size_t)n + 1);
    if (last[0])
        snprintf(why, size, "connection ended: server said '%s', then %s", last,
                 n == CW_EOF ? "closed" : cw_strerror((int)n));
    else
        snprintf(why, size, "connection ended: %s", cw_strerror((int)n));
}

/* Whether the peer closes within ms, without reading (a timed-out read
 * would be sticky). */
static int peer_closes_within(cw_conn *c, int ms)
{
    struct pollfd p = {.fd = cw_conn_fd(c), .events = POLLRDHUP};
    poll(&p, 1, ms);
    return cw_peer_closed(c) == 1;
}

/* Send one message and print the reply. Returns 1 when answered, 0 when
 * the connection ended first (why says how). */
static int echo(struct client *cl, const char *msg, char *why, size_t size)
{
    char line[CW_SERVER_MAX_LINE + 8];
    int n = snprintf(line, sizeof line, "ECHO %s\n", msg);
    int rc = cw_send_all(cl->conn, line, (size_t)n, cw_now_ms() + cl->read_timeout_ms);
    ssize_t r = rc < 0 ? rc : cw_readline(cl->conn, line, sizeof line, CW_NEVER);
    if (r < 0) {
        snprintf(why, size, "connection ended: %s", cw_strerror((int)r));
        return 0;
    }
    /* An ERR line followed by the server's FIN ended the session (idle
     * timeout, shutdown): the message was not echoed. */
    if (strncmp(line, "ERR ", 4) == 0 && peer_closes_within(cl->conn, 100)) {
        snprintf(why, size, "connection ended: server said '%s', then closed", line);
        return 0;
    }
    if (!cl->quiet) {
        puts(line);
        fflush(stdout);
    }
    return 1;
}

static int quit(struct client *cl)
{
    char line[64];
    int rc = cw_send_all(cl->conn, "QUIT\n", 5, cw_now_ms() + cl->read_timeout_ms);
    ssize_t r = rc < 0 ? rc : cw_readline(cl->conn, line, sizeof line, CW_NEVER);
    drop(cl);
    return r >= 0 && strcmp(line, "BYE") == 0 ? CLI_OK : CLI_FOUND;
}

/* One failed attempt: log it, give up or wait. Returns -1 to give up. */
static int retry_or_give_up(struct client *cl, const char *why)
{
    if (++cl->failures > cl->max_retries) {
        cli_error("%s; giving up after %lld retries", why, cl->max_retries);
        return -1;
    }
    int64_t d = cw_backoff_next(&cl->backoff);
    cli_error("%s; retrying in %lld ms (%lld of %lld)", why, (long long)d,
              cl->failures, cl->max_retries);
    sleep_ms(d);
    return 0;
}

static int run(struct client *cl)
{
    char msg[CW_SERVER_MAX_LINE], why[CW_SERVER_MAX_LINE + 128];
    int have_msg = 0;
    for (;;) {
        if (!cl->conn) {
            int rc = connect_and_login(cl, why, sizeof why);
            if (rc == LOGIN_REFUSED) {
                cli_error("%s", why);
                return CLI_FOUND;
            }
            if (rc != CW_OK) {
                if (retry_or_give_up(cl, why) < 0)
                    return CLI_FOUND;
                continue;
            }
            cl->failures = 0;
            cw_backoff_reset(&cl->backoff);
        }
        int got = have_msg ? 1 : next_message(cl, msg, sizeof msg);
        if (got == -2) {
            cli_error("reading stdin: %s", strerror(errno));
            drop(cl);
            return CLI_SYSTEM;
        }
        if (got == 0)
            return quit(cl);
        if (got > 0 && echo(cl, msg, why, sizeof why)) {
            have_msg = 0;
            cl->sent++;
            continue;
        }
        if (got < 0)
            explain_end(cl, why, sizeof why);
        have_msg = got > 0;   /* unanswered: resend after reconnecting */
        drop(cl);
        if (retry_or_give_up(cl, why) < 0)
            return CLI_FOUND;
    }
}

int cmd_client(int argc, char **argv)
{
    struct client cl = {
        .host = "127.0.0.1", .count = -1, .read_timeout_ms = 30000,
        .connect_timeout_ms = 5000, .max_retries = 10,
    };
    int rc = parse_args(&cl, argc, argv);
    if (rc != 0)
        return rc > 0 ? CLI_OK : CLI_USAGE;
    return run(&cl);
}
