/* passwd.c - `closewise passwd`: make a credentials line for
 * `closewise server --credentials` (closewise-passwd(1)). */
#define _GNU_SOURCE
#include "../cli.h"

#include <crypt.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

enum { OPT_METHOD = 'm', OPT_PASSWORD = 256 };

static const struct cli_opt passwd_opts[] = {
    {"method", 'm', OPT_METHOD, "METHOD", "yescrypt (default) or sha512", "yescrypt sha512"},
    {"password", 0, OPT_PASSWORD, "PW",
     "take the password from the command line (scripts;\nvisible to other users in ps)", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec passwd_spec = {
    "passwd", "[options] USER",
    "Print a credentials line \"USER:HASH\" for 'closewise server\n"
    "--credentials FILE'. The password is read from the first line of\n"
    "standard input (without echo on a terminal) unless --password is given.",
    {passwd_opts, NULL},
    "Exit status: 0 the line was written, 2 usage, 3 hashing or writing failed."};

/* One line from stdin, without its newline; echo off on a terminal. */
static int read_password(char *buf, size_t size)
{
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        fputs("Password: ", stderr);
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    } else {
        tty = 0;
    }
    char *got = fgets(buf, (int)size, stdin);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fputc('\n', stderr);
    }
    if (!got)
        return -1;
    buf[strcspn(buf, "\r\n")] = '\0';
    return 0;
}

/* Options into *prefix and *given: CLI_OK, CLI_USAGE or CLI_HELPED. */
static int passwd_parse(int argc, char **argv, const char **prefix, const char **given)
{
    struct cli_parser p;
    const char *arg;
    int c;
    cli_getopt_init(&p, &passwd_spec, argc, argv);
    while ((c = cli_getopt(&p, &arg)) != -1) {
        if (c == CLI_HELPED)
            return CLI_HELPED;
        if (c == OPT_PASSWORD) {
            *given = arg;
        } else if (c == OPT_METHOD && !strcmp(arg, "yescrypt")) {
            *prefix = "$y$";
        } else if (c == OPT_METHOD && !strcmp(arg, "sha512")) {
            *prefix = "$6$";
        } else if (c == OPT_METHOD) {
            cli_usage_error("--method: bad method '%s' (yescrypt or sha512)", arg);
            return CLI_USAGE;
        } else {
            return CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        cli_usage_error("%s", optind < argc ? "want exactly one USER" : "no USER given");
        return CLI_USAGE;
    }
    return CLI_OK;
}

int cmd_passwd(int argc, char **argv)
{
    const char *prefix = NULL, *given = NULL;
    int rc = passwd_parse(argc, argv, &prefix, &given);
    if (rc != CLI_OK)
        return rc == CLI_HELPED ? CLI_OK : rc;
    const char *user = argv[optind];
    if (!*user || strlen(user) > 64 || strpbrk(user, ": \t")) {
        cli_usage_error("bad user name '%s' (1-64 characters, no ':' or blanks)", user);
        return CLI_USAGE;
    }
    char pw[1025];
    if (given) {
        if (strlen(given) >= sizeof pw) {
            cli_usage_error("--password: too long (max 1024 bytes)");
            return CLI_USAGE;
        }
        strcpy(pw, given);
    } else if (read_password(pw, sizeof pw) < 0) {
        cli_error("no password on standard input");
        return CLI_USAGE;
    }
    if (!*pw) {
        cli_error("empty password");
        return CLI_USAGE;
    }
    char hash[CRYPT_OUTPUT_SIZE];
    rc = cw_passwd_hash(pw, prefix, hash, sizeof hash);
    explicit_bzero(pw, sizeof pw);
    if (rc < 0) {
        cli_error("cannot hash: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    printf("%s:%s\n", user, hash);
    return CLI_OK;   /* main() fails with 3 if the line was not written */
}
