/* opts.h - the command line, the same way for every subcommand: one option
 * table per command from which getopt_long's tables, --help and shell
 * completion are all made (so they cannot drift), strict value parsers
 * whose errors name the option, and one return convention:
 *
 *   CLI_OK (0)     parsed, run the command
 *   CLI_USAGE (2)  a one-line error was printed; exit 2
 *   CLI_HELPED(-2) --help was printed; exit 0 (-1 is getopt's end)
 */
#ifndef CW_CLI_OPTS_H
#define CW_CLI_OPTS_H

#include <getopt.h>
#include <stdio.h>

/* A parse function's third outcome: it printed --help, exit CLI_OK. */
#define CLI_HELPED (-2)

/* At most this many options per command (all its tables together). */
#define CLI_MAX_OPTS 48

/* One option. A table is an array ending with a NULL name. */
struct cli_opt {
    const char *name;       /* long name, without "--" */
    int letter;             /* short option letter, 0 if none */
    int id;                 /* what cli_getopt returns; 0: the letter */
    const char *arg;        /* the value's name in --help ("D", "PORT"); NULL: a flag */
    const char *help;       /* one line, or several separated by '\n' */
    const char *complete;   /* values for shell completion: "a b c" (words),
                               "@states" (TCP state names), "@file", or NULL */
};

/* A command's whole command line. */
struct cli_spec {
    const char *cmd;                  /* "ls" */
    const char *usage;                /* after "closewise ls ": "[filters] [--json]" */
    const char *what;                 /* the description paragraph(s) */
    const struct cli_opt *tables[4];  /* NULL-terminated list of tables */
    const char *epilog;               /* after the options, or NULL */
};

/* Iteration state of cli_getopt(); initialize with cli_getopt_init(). */
struct cli_parser {
    const struct cli_spec *spec;
    int argc;
    char **argv;
    struct option lo[CLI_MAX_OPTS + 2];
    const struct cli_opt *by_index[CLI_MAX_OPTS + 2];
    char so[2 * CLI_MAX_OPTS + 4];
};

void cli_getopt_init(struct cli_parser *p, const struct cli_spec *spec, int argc,
                     char **argv);

/* The next option: returns its id (or letter) with its value in *arg,
 * -1 at the end (optind is then the first operand), CLI_HELPED after
 * printing --help, or '?' after printing the error (unknown option,
 * missing value, a value given to a flag). -h/--help are always there. */
int cli_getopt(struct cli_parser *p, const char **arg);

/* The long name ("--port") of the option with this id. */
const char *cli_opt_name(const struct cli_spec *spec, int id);

/* Operands: exactly, or at least, how many. Prints the error. Returns
 * CLI_OK or CLI_USAGE. */
int cli_no_operands(const struct cli_spec *spec, int argc, char **argv);

/* Print --help from the tables to stdout. */
void cli_help(const struct cli_spec *spec);

/* A usage error in the one voice, ending with the help hint:
 * "closewise CMD: MESSAGE (try 'closewise CMD --help')". */
void cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* For commands with their own getopt_long loop: call with opterr = 0 when
 * getopt_long returned '?' or ':'; prints the error in the one voice.
 * Returns CLI_USAGE. */
int cli_getopt_error(char **argv, const struct option *lo);

/* ---- value parsers: 0 and the value in *out, or -1 after an error that
 * names the option (opt is "--port") and the bad value. ---- */

/* The largest duration the grammar takes (about 31 years). */
#define CLI_DURATION_MAX 1000000000000LL

/* Durations: integers or decimals with a unit, compound in decreasing
 * units: "500ms", "30s", "1.5s", "2m30s", "1h". Units ms, s, m, h. A bare
 * number other than 0 is refused: it used to mean milliseconds here and
 * seconds in sleep(1); the error says so. No signs, spaces, hex or
 * exponents; nothing finer than 1ms. min_ms..max_ms bound the value. */
int cli_duration(const char *opt, const char *arg, long long min_ms, long long max_ms,
                 long long *out);

/* The same without an option name or range: milliseconds, or -1 and a
 * short reason in *why ("bad", "no unit", ...). */
long long cli_duration_ms(const char *s, const char **why);

/* A port: decimal 0..65535, at least min. */
int cli_port(const char *opt, const char *arg, int min, int *out);

/* A count: decimal, min..max. */
int cli_count(const char *opt, const char *arg, long long min, long long max,
              long long *out);

/* A numeric IPv4 or IPv6 address (no names), stored as text is; checks only. */
int cli_addr(const char *opt, const char *arg);

/* "1 byte", "2 bytes": the count and the word, singular or plural. */
const char *cli_plural(unsigned long long n, const char *one, const char *many,
                       char *buf, size_t size);

#endif
