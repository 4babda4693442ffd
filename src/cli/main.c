/* main.c - `closewise`: dispatch to one subcommand per file. */
#define _GNU_SOURCE
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Subcommands register here; each lives in its own src/cli/<name>.c. */
static const struct cli_command commands[] = {
    {"server", "run the reference auth server (ends connections correctly)", cmd_server},
    {"passwd", "make a credentials line for closewise server", cmd_passwd},
    {"stat", "count TCP states; name the processes holding CLOSE_WAIT sockets", cmd_stat},
    {"ls", "list TCP sockets, with owners and explanations", cmd_ls},
    {"watch", "follow CLOSE_WAIT sockets over time; exit 1 on a leak", cmd_watch},
    {"kill", "destroy matching sockets (SOCK_DESTROY)", cmd_kill},
    {"demo", "show the seed's CLOSE_WAIT leak and lost reply next to the fix", cmd_demo},
    {"client", "log in and echo lines; close and reconnect whenever a connection ends", cmd_client},
    {"probe", "test a client for CLOSE_WAIT leaks, or a server for lost replies", cmd_probe},
    {"resets", "name each close() that made the kernel send RST (BPF)", cmd_resets},
    {"exporter", "serve TCP states and CLOSE_WAIT leaks per process to Prometheus", cmd_exporter},
    {NULL, NULL, NULL}
};

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("closewise: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

long long cli_parse_duration(const char *s)
{
    char *end;
    if (!s || !*s)
        return -1;
    double v = strtod(s, &end);
    if (end == s || v < 0)
        return -1;
    double scale = 1;
    if (!strcmp(end, "") || !strcmp(end, "ms"))
        scale = 1;
    else if (!strcmp(end, "s"))
        scale = 1000;
    else if (!strcmp(end, "m"))
        scale = 60000;
    else if (!strcmp(end, "h"))
        scale = 3600000;
    else
        return -1;
    double ms = v * scale;
    return !(ms <= 1e15) ? -1 : (long long)ms;   /* also refuses nan and inf */
}

int cli_parse_port(const char *s)
{
    char *end;
    if (!s || !*s)
        return -1;
    long v = strtol(s, &end, 10);
    return (*end || v < 0 || v > 65535) ? -1 : (int)v;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: closewise <command> [options]\n"
               "       closewise --help | --version\n\n"
               "TCP connections that end correctly, and visible when they don't.\n\n"
               "commands:\n");
    for (const struct cli_command *c = commands; c->name; c++)
        fprintf(f, "  %-8s %s\n", c->name, c->summary);
    fprintf(f, "\nRun 'closewise <command> --help' for a command's options; "
               "see closewise(1).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
        usage(stdout);
        return CLI_OK;
    }
    if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
        printf("closewise %s (libclosewise %s)\n", CW_VERSION, cw_version());
        return CLI_OK;
    }
    for (const struct cli_command *c = commands; c->name; c++)
        if (!strcmp(c->name, name))
            return c->run(argc - 1, argv + 1);
    cli_error("unknown command '%s' (see 'closewise --help')", name);
    return CLI_USAGE;
}
