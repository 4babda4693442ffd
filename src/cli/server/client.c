/* client.c - `closewise client`: the seed's client done right. It logs in,
 * echoes lines, and when the connection ends in any way (the server's FIN,
 * a reset, a read timeout) it closes at once and reconnects with backoff,
 * resending the message that got no reply. A server that accepts the login
 * and then fails anyway must not make it reconnect forever: only a stable
 * connection refills the retry budget. */
#define _GNU_SOURCE
#include "../cli.h"
#include "../../server/protocol.h"   /* judge each request as the server will */

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest text that fits one request line as "ECHO <text>". */
enum { MAX_TEXT = CW_SERVER_MAX_LINE - 5 };
/* The same as text, for --help: checked against MAX_TEXT below. */
#define MAX_TEXT_LEN 1019
#define CW_STR2(x) #x
#define CW_STR(x) CW_STR2(x)
_Static_assert(MAX_TEXT == MAX_TEXT_LEN, "MAX_TEXT_LEN must equal MAX_TEXT");

/* A connection is stable once it answered a message, or stayed up this
 * long while the client had nothing to send; only then do the retry
 * budget and the backoff start over. */
enum { STABLE_MS = 10000 };

/* Every duration option: at least 1 ms (0 would mean "never" for a timeout
 * and a busy loop for a backoff), at most a day (beyond that a timeout no
 * longer fits the int of a socket option). */
#define DURATION_MAX_MS (24LL * 3600 * 1000)

/* Standard input, read with read(2) into our own buffer: lines that stdio
 * had buffered would be invisible to poll(2) and wait for more input. */
struct input {
    char buf[4096];
    size_t len;
    long long lineno;
    int eof;
    int skipping;   /* inside a line already reported as too long */
    int rejected;   /* lines not sent: the exit status says so */
};

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
    int64_t up_since;          /* when the current session logged in */
    long long sent, failures;
    struct input in;
};

enum {
    OPT_HOST = 'H', OPT_PORT = 'p', OPT_USER = 'u', OPT_COUNT = 'n', OPT_QUIET = 'q',
    OPT_RT = 256, OPT_CT, OPT_RETRIES, OPT_BMIN, OPT_BMAX, OPT_BIND, OPT_L0
};

static const struct cli_opt client_opts[] = {
    {"host", 'H', OPT_HOST, "HOST", "server address (default 127.0.0.1)", NULL},
    {"port", 'p', OPT_PORT, "PORT", "server port (required)", NULL},
    {"user", 'u', OPT_USER, "NAME:PASSWORD", "credentials (required)", NULL},
    {"count", 'n', OPT_COUNT, "N", "send N generated messages instead of stdin", NULL},
    {"read-timeout", 0, OPT_RT, "D", "wait for a reply at most D (default 30s)", NULL},
    {"connect-timeout", 0, OPT_CT, "D", "bound each connect (default 5s)", NULL},
    {"max-retries", 0, OPT_RETRIES, "N",
     "give up after N failed attempts in a row (10;\n0: never retry)", NULL},
    {"backoff-min", 0, OPT_BMIN, "D",
     "ceiling of the first retry delay (default 100ms): it\n"
     "waits between D/2 and D, at random, so that many\n"
     "clients do not retry in step", NULL},
    {"backoff-max", 0, OPT_BMAX, "D",
     "the ceiling doubles per failed attempt up to D\n(default 5s)", NULL},
    {"bind-port", 0, OPT_BIND, "P", "always connect from local port P (SO_REUSEADDR)", NULL},
    {"linger0", 0, OPT_L0, NULL, "close abortively (RST); loses unsent data", NULL},
    {"quiet", 'q', OPT_QUIET, NULL, "do not print replies", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec client_spec = {
    "client", "--port PORT --user NAME:PASSWORD [options]",
    "Log in to a closewise server and echo lines from stdin (or --count\n"
    "generated messages). Whenever the connection ends, close it at once and\n"
    "reconnect with exponential backoff, resending the unanswered message.",
    {client_opts, NULL},
    "Failed attempts count until a connection is stable (a message answered,\n"
    "or 10 s up while idle). Input lines longer than " CW_STR(MAX_TEXT_LEN) " bytes or not\n"
    "text are skipped with one error each. A graceful close waits at most\n"
    "500 ms for the server's FIN. Durations: 250ms, 2s, 1m30s, 1.5s; 1ms to 24h.\n"
    "Exit: 0 done, 1 login refused, gave up, or a line skipped, 2 usage,\n"
    "3 system error. See closewise-client(1)."};

/* Whether the server will read "AUTH user password" as exactly that. */
static int auth_line_ok(const char *user, const char *password)
{
    char line[CW_SERVER_MAX_LINE + 2];
    struct cw_req r;
    int n = snprintf(line, sizeof line, "AUTH %s %s\n", user, password);
    return n > 0 && (size_t)n < sizeof line &&
           cw__proto_parse(line, (size_t)n, &r) == CW_REQ_AUTH &&
           r.user_len == strlen(user) && r.pass_len == strlen(password);
}

static int set_user(struct client *cl, const char *arg)
{
    const char *colon = strchr(arg, ':');
    size_t ulen = colon ? (size_t)(colon - arg) : 0;
    if (!colon || ulen == 0 || ulen >= sizeof cl->user ||
        strlen(colon + 1) >= sizeof cl->password || strchr(arg, ' ')) {
        cli_usage_error("--user: want NAME:PASSWORD (no spaces)");
        return -1;
    }
    memcpy(cl->user, arg, ulen);
    cl->user[ulen] = '\0';
    strcpy(cl->password, colon + 1);
    if (!auth_line_ok(cl->user, cl->password)) {
        cli_usage_error("--user: NAME must be 1-%d bytes and both parts text "
                        "(see docs/PROTOCOL.md)", CW_PROTO_MAX_USER);
        return -1;
    }
    return 0;
}

static int parse_one(struct client *cl, int opt, const char *arg, long long *bmin,
                     long long *bmax)
{
    long long *dur = opt == OPT_RT ? &cl->read_timeout_ms
                   : opt == OPT_CT ? &cl->connect_timeout_ms
                   : opt == OPT_BMIN ? bmin : opt == OPT_BMAX ? bmax : NULL;
    if (dur)
        return cli_duration(cli_opt_name(&client_spec, opt), arg, 1, DURATION_MAX_MS, dur);
    switch (opt) {
    case OPT_HOST: cl->host = arg; return 0;
    case OPT_PORT: return cli_port("--port", arg, 1, &cl->port);
    case OPT_USER: return set_user(cl, arg);
    case OPT_COUNT: return cli_count("--count", arg, 0, 1000000000000LL, &cl->count);
    case OPT_RETRIES: return cli_count("--max-retries", arg, 0, 1000000000, &cl->max_retries);
    case OPT_BIND: return cli_port("--bind-port", arg, 1, &cl->bind_port);
    case OPT_L0: cl->linger0 = 1; return 0;
    case OPT_QUIET: cl->quiet = 1; return 0;
    }
    return -1;
}

/* Returns CLI_OK to run, CLI_HELPED after --help, CLI_USAGE after an error. */
static int parse_args(struct client *cl, int argc, char **argv)
{
    long long bmin = 100, bmax = 5000;
    struct cli_parser p;
    const char *arg;
    int opt;
    cli_getopt_init(&p, &client_spec, argc, argv);
    while ((opt = cli_getopt(&p, &arg)) != -1) {
        if (opt == CLI_HELPED)
            return CLI_HELPED;
        if (opt == '?' || parse_one(cl, opt, arg, &bmin, &bmax) < 0)
            return CLI_USAGE;
    }
    if (cli_no_operands(&client_spec, argc, argv) != CLI_OK)
        return CLI_USAGE;
    if (cl->port <= 0 || !cl->user[0]) {
        cli_usage_error("--port and --user are required");
        return CLI_USAGE;
    }
    if (bmax < bmin) {
        cli_usage_error("--backoff-max must not be below --backoff-min");
        return CLI_USAGE;
    }
    cw_backoff_init(&cl->backoff, bmin, bmax);
    return CLI_OK;
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

/* Replies after which trying again cannot help: the credentials, the
 * throttle (retrying only prolongs it), or a request the server cannot
 * read (client and server disagree on the protocol). Every other ending,
 * `ERR server busy` and `ERR server shutting down` included, is transient
 * and counts against the retry budget. */
static int is_final(const char *reply)
{
    static const char *const final[] = {
        "ERR bad credentials", "ERR too many failures", "ERR syntax",
        "ERR unknown command", "ERR line too long", "ERR bad request",
        "ERR not authenticated", "ERR already authenticated", NULL};
    for (int i = 0; final[i]; i++)
        if (strcmp(reply, final[i]) == 0)
            return 1;
    return 0;
}

enum { REFUSED = 1 };   /* beside CW_OK and negative codes: a final reply */

/* Connect and log in. Returns CW_OK, REFUSED, or a negative code; why
 * says what went wrong. */
static int connect_and_login(struct client *cl, char *why, size_t size)
{
    struct cw_opts o;
    cw_opts_init(&o);
    o.nodelay = 1;
    o.read_timeout_ms = (int)cl->read_timeout_ms;   /* <= 24h: fits */
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
    if (rc >= 0 && strcmp(line, "OK") == 0) {
        cl->up_since = cw_now_ms();
        return CW_OK;
    }
    if (rc >= 0)
        snprintf(why, size, "login refused: %s", line);
    else
        snprintf(why, size, "login: %s", cw_strerror(rc));
    drop(cl);
    return rc >= 0 && is_final(line) ? REFUSED : rc >= 0 ? CW_ECLOSING : rc;
}

/* Whether text can go out as the request "ECHO <text>": the server's own
 * parser decides (short enough, and text). */
static int sendable(const char *text, size_t len)
{
    char req[CW_SERVER_MAX_LINE + 2];
    struct cw_req r;
    if (len > MAX_TEXT)
        return 0;
    memcpy(req, "ECHO ", 5);
    memcpy(req + 5, text, len);
    req[5 + len] = '\n';
    return cw__proto_parse(req, len + 6, &r) == CW_REQ_ECHO && r.text_len == len;
}

static void reject(struct input *in, long long lineno, int too_long)
{
    if (too_long)
        cli_error("stdin line %lld: longer than %d bytes; not sent", lineno, MAX_TEXT);
    else
        cli_error("stdin line %lld: not text (a control byte or invalid UTF-8); "
                  "not sent", lineno);
    in->rejected++;
}

/* Take the first n bytes (a line, CRLF or LF, its terminator among the
 * used bytes) out of the buffer. Returns 1 with it in msg (at least
 * MAX_TEXT + 1 bytes), 0 when it could not be sent (said once). */
static int take_line(struct input *in, size_t n, size_t used, char *msg)
{
    int skipped = in->skipping;
    size_t len = n > 0 && in->buf[n - 1] == '\r' ? n - 1 : n;
    int ok = !skipped && sendable(in->buf, len);
    in->skipping = 0;
    in->lineno++;
    if (ok) {
        memcpy(msg, in->buf, len);
        msg[len] = '\0';
    } else if (!skipped) {
        reject(in, in->lineno, len > MAX_TEXT);
    }
    memmove(in->buf, in->buf + used, in->len - used);
    in->len -= used;
    return ok;
}

/* The next line of input that can be sent. Returns 1 with it in msg, 0
 * when more input is needed (or, once in->eof is set, at the end). */
static int next_line(struct input *in, char *msg)
{
    for (;;) {
        char *nl = memchr(in->buf, '\n', in->len);
        if (nl) {
            if (take_line(in, (size_t)(nl - in->buf), (size_t)(nl - in->buf) + 1, msg))
                return 1;
        } else if (in->eof && in->len > 0) {
            if (take_line(in, in->len, in->len, msg))   /* unterminated last line */
                return 1;
        } else {
            /* Past MAX_TEXT + "\r" the line can no longer fit: say so now
             * and discard it up to its end, however long it is. */
            if (in->len > MAX_TEXT + 1) {
                if (!in->skipping)
                    reject(in, in->lineno + 1, 1);
                in->skipping = 1;
                in->len = 0;
            }
            return 0;
        }
    }
}

/* Wait until standard input or the connection (if any) has something,
 * then read what stdin has. poll(2) said readable, so the read(2) does
 * not block: fd 0 stays blocking because its file description is shared
 * with the shell or terminal, which must not find it non-blocking.
 * Returns 1 after reading, 0 when the connection needs attention, -1 on
 * a read error (errno set). */
static int fill(struct client *cl)
{
    struct input *in = &cl->in;
    struct pollfd p[2] = {{.fd = STDIN_FILENO, .events = POLLIN},
                          {.fd = cl->conn ? cw_conn_fd(cl->conn) : -1,
                           .events = POLLIN | POLLRDHUP}};
    if (poll(p, 2, -1) < 0)
        return errno == EINTR ? 1 : -1;
    if (p[1].revents)
        return 0;
    ssize_t n = read(STDIN_FILENO, in->buf + in->len, sizeof in->buf - in->len);
    if (n > 0)
        in->len += (size_t)n;
    else if (n == 0)
        in->eof = 1;
    else if (errno != EINTR && errno != EAGAIN)
        return -1;
    return 1;
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
    for (;;) {
        if (next_line(&cl->in, msg))
            return 1;
        if (cl->in.eof)
            return 0;
        int rc = fill(cl);
        if (rc <= 0)
            return rc == 0 ? -1 : -2;
    }
}

/* The server's last words before it closed, for the log line (and left
 * in last). One deadline for all of them: a server that keeps talking
 * must not keep us here. */
static void explain_end(struct client *cl, char *last, size_t lsize, char *why, size_t size)
{
    char line[CW_SERVER_MAX_LINE + 2];
    int64_t deadline = cw_now_ms() + 200;
    ssize_t n;
    last[0] = '\0';
    while ((n = cw_readline(cl->conn, line, sizeof line, deadline)) >= 0)
        snprintf(last, lsize, "%s", line);
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

enum { ANSWERED = 2 };   /* beside REFUSED and 0 (the connection ended) */

/* Send one message and print the reply. Returns ANSWERED, REFUSED for a
 * final ERR, or 0 when the connection ended first (why says how). */
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
    /* An ERR line ended the session (idle timeout, shutdown): the message
     * was not echoed. An echo is the message itself, so an ERR line that
     * differs is the server's, however late its FIN (a loaded server's
     * came after 100 ms, and the line passed for an answer that refilled
     * the retry budget). Only a message that reads like an ERR line needs
     * the FIN to tell. */
    if (strncmp(line, "ERR ", 4) == 0 &&
        (strcmp(line, msg) != 0 || peer_closes_within(cl->conn, 100))) {
        snprintf(why, size, "%s: server said '%s', then closed",
                 is_final(line) ? "message refused" : "connection ended", line);
        return is_final(line) ? REFUSED : 0;
    }
    if (!cl->quiet) {
        puts(line);
        fflush(stdout);
    }
    return ANSWERED;
}

static int quit(struct client *cl)
{
    char line[64];
    int rc = cw_send_all(cl->conn, "QUIT\n", 5, cw_now_ms() + cl->read_timeout_ms);
    ssize_t r = rc < 0 ? rc : cw_readline(cl->conn, line, sizeof line, CW_NEVER);
    drop(cl);
    return r >= 0 && strcmp(line, "BYE") == 0 && !cl->in.rejected ? CLI_OK : CLI_FOUND;
}

static void stable(struct client *cl)
{
    cl->failures = 0;
    cw_backoff_reset(&cl->backoff);
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

/* The connection ended while we waited for input. Returns 1 to reconnect
 * now, 0 to reconnect at the next line of input, -1 to give up. */
static int ended_while_idle(struct client *cl)
{
    char last[CW_SERVER_MAX_LINE + 2], why[2 * CW_SERVER_MAX_LINE];
    explain_end(cl, last, sizeof last, why, sizeof why);
    int64_t up = cw_now_ms() - cl->up_since;
    drop(cl);
    /* The server only closed a session we left idle: reconnecting before
     * there is something to send would just be closed again, costing the
     * server a password check each time. */
    if (strcmp(last, "ERR idle timeout") == 0) {
        cli_error("%s; reconnecting at the next line of input", why);
        return 0;
    }
    if (up >= STABLE_MS)
        stable(cl);
    return retry_or_give_up(cl, why) < 0 ? -1 : 1;
}

static int run(struct client *cl)
{
    char msg[MAX_TEXT + 1], why[2 * CW_SERVER_MAX_LINE];
    int have_msg = 0, want_conn = 1;
    for (;;) {
        if (!cl->conn && (have_msg || want_conn)) {
            int rc = connect_and_login(cl, why, sizeof why);
            if (rc == REFUSED) {
                cli_error("%s", why);
                return CLI_FOUND;
            }
            if (rc != CW_OK && retry_or_give_up(cl, why) < 0)
                return CLI_FOUND;
            want_conn = rc != CW_OK;
            continue;
        }
        if (!have_msg) {
            int got = next_message(cl, msg, sizeof msg);
            if (got == -2) {
                cli_error("reading stdin: %s", strerror(errno));
                drop(cl);
                return CLI_SYSTEM;
            }
            if (got == 0)
                return cl->conn ? quit(cl) : cl->in.rejected ? CLI_FOUND : CLI_OK;
            if (got < 0) {
                want_conn = ended_while_idle(cl);
                if (want_conn < 0)
                    return CLI_FOUND;
                continue;
            }
            have_msg = 1;
            if (!cl->conn)
                continue;
        }
        int r = echo(cl, msg, why, sizeof why);
        if (r == ANSWERED) {
            have_msg = 0;
            cl->sent++;
            stable(cl);
            continue;
        }
        drop(cl);   /* unanswered: resend after reconnecting */
        if (r == REFUSED) {
            cli_error("%s", why);
            return CLI_FOUND;
        }
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
    if (rc != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    return run(&cl);
}
