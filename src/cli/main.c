/* main.c - `closewise`: dispatch to one subcommand per file. */
#define _GNU_SOURCE
#include "cli.h"

#include <string.h>

extern const struct cli_spec server_spec, stat_spec, ls_spec, kill_spec, client_spec,
    passwd_spec;
extern const struct cli_spec watch_spec, demo_spec, probe_spec, resets_spec, trace_spec,
    exporter_spec;

/* Subcommands register here; each lives in src/cli/<family>/<name>.c. Its
 * spec (option table) gives completion its options. */
static const struct cli_command cli_commands[] = {
    {"server", "run the reference auth server (ends connections correctly)", cmd_server,
     &server_spec},
    {"passwd", "make a credentials line for closewise server", cmd_passwd, &passwd_spec},
    {"stat", "count TCP states; name the processes holding CLOSE_WAIT sockets", cmd_stat,
     &stat_spec},
    {"ls", "list TCP sockets, with owners and explanations", cmd_ls, &ls_spec},
    {"watch", "follow CLOSE_WAIT sockets over time; exit 1 on a leak", cmd_watch, &watch_spec},
    {"kill", "destroy matching sockets (SOCK_DESTROY)", cmd_kill, &kill_spec},
    {"demo", "show the seed's CLOSE_WAIT leak and lost reply next to the fix", cmd_demo,
     &demo_spec},
    {"client", "log in and echo lines; close and reconnect whenever a connection ends",
     cmd_client, &client_spec},
    {"probe", "test a client for CLOSE_WAIT leaks, or a server for lost replies", cmd_probe,
     &probe_spec},
    {"resets", "name each close() that made the kernel send RST (BPF)", cmd_resets, &resets_spec},
    {"trace", "run a program; name the line that read EOF and never closed", cmd_trace,
     &trace_spec},
    {"exporter", "serve TCP states and CLOSE_WAIT leaks per process to Prometheus",
     cmd_exporter, &exporter_spec},
    {NULL, NULL, NULL, NULL}
};

static void usage(FILE *f)
{
    fprintf(f, "usage: closewise <command> [options]\n"
               "       closewise --help | --version\n\n"
               "TCP connections that end correctly, and visible when they don't.\n\n"
               "commands:\n");
    for (const struct cli_command *c = cli_commands; c->name; c++)
        fprintf(f, "  %-8s %s\n", c->name, c->summary);
    fprintf(f, "\nRun 'closewise <command> --help' for a command's options; "
               "see closewise(1).\n"
               "Exit status: 0 ok, 1 a leak or failed verdict, 2 usage, 3 system error.\n");
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
        return cli_close_stdout(CLI_OK);
    }
    if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
        printf("closewise %s (libclosewise %s)\n", CW_VERSION, cw_version());
        return cli_close_stdout(CLI_OK);
    }
    if (!strcmp(name, "__complete"))
        return cli_close_stdout(cli_complete(cli_commands, argc - 2, argv + 2));
    for (const struct cli_command *c = cli_commands; c->name; c++)
        if (!strcmp(c->name, name)) {
            cli_cmd = c->name;
            return cli_close_stdout(c->run(argc - 1, argv + 1));
        }
    cli_usage_error("unknown command '%s'", name);
    return CLI_USAGE;
}
