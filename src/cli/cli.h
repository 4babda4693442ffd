/* cli.h - what the subcommands of `closewise` share. */
#ifndef CW_CLI_H
#define CW_CLI_H

#include <closewise/closewise.h>
#include <stdarg.h>
#include <stdio.h>

#include "opts.h"   /* every command parses its options with it */

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
    const struct cli_spec *spec;          /* its options (opts.h) */
};

/* `closewise __complete WORD...`: completion candidates for shells, one
 * per line, among cmds (ending with a NULL name) (complete.c). */
int cli_complete(const struct cli_command *cmds, int argc, char **argv);

/* The running subcommand ("ls"), set by main() before it runs: every
 * message says it (voice.c). NULL before dispatch. */
extern const char *cli_cmd;

/* One-line error on stderr, "closewise CMD: MESSAGE" (a message that
 * already starts "CMD: " says it once). */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void cli_verror(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

/* At exit: flush, check and close standard output. Returns rc, or
 * CLI_SYSTEM after a one-line error when output was lost (not for EPIPE:
 * the reader left). main() calls it for every command. */
int cli_close_stdout(int rc);

/* Parse a duration with the strict grammar of cli_duration() (opts.h).
 * Returns milliseconds, or -1 on bad input. Prefer cli_duration(), whose
 * error names the option. */
long long cli_parse_duration(const char *s);

/* Write s as a JSON string: escapes quotes, backslashes and control
 * bytes, passes valid UTF-8 through, and writes U+FFFD for other bytes. */
void cli_json_str(FILE *f, const char *s);

/* Parse a port number 0..65535 (decimal digits only). Returns it, or -1
 * on bad input. Prefer cli_port(), whose error names the option. */
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
