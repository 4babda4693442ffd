/* demo.c - `closewise demo`: the seed's failure and its fix, side by side,
 * measured by the kernel.
 *
 * Part 1: a server with a short idle timeout, N clients written the seed's
 * way (from 127.0.0.2) and N on libclosewise (from 127.0.0.3). The kernel's
 * socket table, sampled every 250 ms through sock_diag and told apart by
 * source address, shows CLOSE_WAIT climbing for the first group only.
 * Part 2: wrong-password logins against servers that close gracefully, with
 * SO_LINGER {1,0}, and with a plain close() while input is unread: how many
 * clients received the complete error reply. */
#define _GNU_SOURCE
#include "../cli.h"
#include "demo.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t interrupted;
static pid_t children[8];
static int nchildren;

static void on_signal(int sig)
{
    interrupted = sig;
}

void demo_sleep_ms(int64_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR && !interrupted)
        ;
}

int demo_interrupted(void)
{
    return interrupted != 0;
}

/* Fork a helper process that dies with us, even on SIGKILL. */
pid_t demo_fork(void)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(0);
        signal(SIGINT, SIG_IGN);   /* the parent cleans up */
        return 0;
    }
    if (pid > 0 && nchildren < (int)(sizeof children / sizeof children[0]))
        children[nchildren++] = pid;
    return pid;
}

/* Stop one helper (SIGTERM lets a server close its connections), or all
 * of them with pid 0. */
void demo_reap(pid_t pid, int sig)
{
    for (int i = 0; i < nchildren; i++) {
        if (pid && children[i] != pid)
            continue;
        kill(children[i], sig);
        waitpid(children[i], NULL, 0);
        children[i] = children[--nchildren];
        i--;
    }
}

enum { OPT_IDLE = 256, OPT_SVG, OPT_PNG, OPT_JSON, OPT_QUICK };

static const struct cli_opt demo_opts[] = {
    {"clients", 'n', 0, "N", "clients per group (default 200)", NULL},
    {"logins", 'm', 0, "M", "wrong-password logins per case (default 200)", NULL},
    {"idle-timeout", 0, OPT_IDLE, "D", "the server's idle timeout (default 2s)", NULL},
    {"svg", 0, OPT_SVG, "FILE", "write the picture (both parts) as an SVG file", "@file"},
    {"png", 0, OPT_PNG, "FILE", "the same picture as PNG (needs rsvg-convert)", "@file"},
    {"json", 0, OPT_JSON, NULL, "print the measurements as one JSON document", NULL},
    {"quick", 0, OPT_QUICK, NULL, "a short run (50 clients, 50 logins, 500ms idle)", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec demo_spec = {
    "demo", "[options]",
    "Play the seed on loopback: N clients written the seed's way next to N on\n"
    "libclosewise against a server that closes idle sessions (CLOSE_WAIT over\n"
    "time, from the kernel), then wrong-password logins against servers that\n"
    "close gracefully, with SO_LINGER 0, and with a plain close(). No setup,\n"
    "no privileges; every process and socket is cleaned up, also on Ctrl-C.",
    {demo_opts, NULL},
    "Exit: 0 the fix held (no CLOSE_WAIT, every reply delivered gracefully),\n"
    "1 it did not, 2 usage, 3 system error. See closewise-demo(1)."};

static int demo_option(struct demo *d, int opt, const char *arg)
{
    long long v;
    switch (opt) {
    case 'n':
        if (cli_count("--clients", arg, 1, 5000, &v) < 0)
            return -1;
        d->clients = (int)v;
        break;
    case 'm':
        if (cli_count("--logins", arg, 1, 100000, &v) < 0)
            return -1;
        d->logins = (int)v;
        break;
    case OPT_IDLE: return cli_duration("--idle-timeout", arg, 100, 60000, &d->idle_ms);
    case OPT_SVG: d->svg = arg; break;
    case OPT_PNG: d->png = arg; break;
    case OPT_JSON: d->json = 1; break;
    case OPT_QUICK: d->clients = 50; d->logins = 50; d->idle_ms = 500; break;
    default: return -1;
    }
    return 0;
}

/* Returns 0 to run, 1 after --help, -1 on a usage error. */
static int parse_args(struct demo *d, int argc, char **argv)
{
    struct cli_parser p;
    const char *arg;
    int opt;
    cli_getopt_init(&p, &demo_spec, argc, argv);
    while ((opt = cli_getopt(&p, &arg)) != -1) {
        if (opt == CLI_HELPED)
            return 1;
        if (opt == '?' || demo_option(d, opt, arg) < 0)
            return -1;
    }
    return cli_no_operands(&demo_spec, argc, argv) == CLI_OK ? 0 : -1;
}

/* The fix held when none of our sockets stayed in CLOSE_WAIT and every
 * graceful case delivered every reply. */
static int verdict(const struct demo *d)
{
    if (d->tidy_cw_stuck != 0 || d->tidy_cw_final != 0 || d->tidy_sessions != d->clients)
        return CLI_FOUND;
    for (int i = 0; i < d->ncases; i++)
        if (d->cases[i].graceful && d->cases[i].complete != d->cases[i].runs)
            return CLI_FOUND;
    return CLI_OK;
}

/* --svg and --png; the PNG is rasterized from the SVG (a temporary one
 * without --svg). */
static int write_pictures(const struct demo *d)
{
    char tmp[] = "/tmp/closewise-demo-XXXXXX.svg";
    const char *svg = d->svg;
    if (!svg && d->png) {
        int fd = mkstemps(tmp, 4);
        if (fd < 0) {
            cli_error("demo: cannot create a temporary SVG for --png: %s", strerror(errno));
            return CLI_SYSTEM;
        }
        close(fd);
        svg = tmp;
    }
    if (!svg)
        return CLI_OK;
    int rc = CLI_OK;
    if (demo_write_svg(d, svg) < 0) {
        cli_error("demo: cannot write '%s': %s", svg, strerror(errno));
        rc = CLI_SYSTEM;
    } else if (d->png) {
        rc = demo_write_png(svg, d->png);
    }
    if (svg == tmp)
        unlink(tmp);
    return rc;
}

int cmd_demo(int argc, char **argv)
{
    struct demo d = {.clients = 200, .logins = 200, .idle_ms = 2000, .ends_from_ms = -1,
                     .ends_to_ms = -1};
    int rc = parse_args(&d, argc, argv);
    if (rc != 0)
        return rc > 0 ? CLI_OK : CLI_USAGE;
    if ((rc = demo_check_outputs(&d)) != CLI_OK)
        return rc;   /* before a run of a minute, not after */
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    d.out = d.json ? stderr : stdout;
    int64_t t0 = cw_now_ms();
    rc = demo_close_wait(&d);
    if (rc == CLI_OK && !interrupted)
        rc = demo_auth(&d);
    demo_reap(0, SIGKILL);
    if (interrupted) {
        fprintf(stderr, "closewise demo: interrupted; every helper process stopped\n");
        return 128 + interrupted;
    }
    if (rc != CLI_OK)
        return rc;
    d.duration_ms = cw_now_ms() - t0;
    if ((rc = write_pictures(&d)) != CLI_OK)
        return rc;
    if (d.json)
        demo_print_json(&d);
    else
        demo_print_summary(&d);
    return verdict(&d);
}
