/* cli.h - what the subcommands of `closewise` share. */
#ifndef CW_CLI_H
#define CW_CLI_H

#include <closewise/closewise.h>
#include <stdio.h>

/* Exit codes, documented in closewise(1). */
enum {
    CLI_OK = 0,        /* success */
    CLI_FOUND = 1,     /* a leak or failure was found (watch, probe, ...) */
    CLI_USAGE = 2,     /* bad command line */
    CLI_SYSTEM = 3     /* permission denied, missing kernel feature, I/O */
};

struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);   /* argv[0] is the subcommand name */
};

/* One-line error on stderr, prefixed "closewise: ". */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a duration like "250ms", "2s", "1m", or a bare number of
 * milliseconds. Returns milliseconds, or -1 on bad input. */
long long cli_parse_duration(const char *s);

/* Write s as a JSON string: escapes quotes, backslashes and control
 * bytes, passes valid UTF-8 through, and writes U+FFFD for other bytes. */
void cli_json_str(FILE *f, const char *s);

/* Parse a port number 0..65535. Returns it, or -1 on bad input. */
int cli_parse_port(const char *s);

/* Subcommands. */
int cmd_server(int argc, char **argv);
int cmd_passwd(int argc, char **argv);
int cmd_stat(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_watch(int argc, char **argv);
int cmd_kill(int argc, char **argv);
int cmd_client(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_resets(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_exporter(int argc, char **argv);

#endif
