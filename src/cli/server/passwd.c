/* passwd.c - `closewise passwd`: make a credentials line for
 * `closewise server --credentials` (closewise-passwd(1)). */
#define _GNU_SOURCE
#include "../cli.h"

#include <crypt.h>
#include <getopt.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

static void passwd_usage(FILE *f)
{
    fprintf(f,
        "usage: closewise passwd [options] USER\n\n"
        "Print a credentials line \"USER:HASH\" for 'closewise server\n"
        "--credentials FILE'. The password is read from the first line of\n"
        "standard input (without echo on a terminal) unless --password is given.\n\n"
        "options:\n"
        "  -m, --method METHOD   yescrypt (default) or sha512\n"
        "      --password PW     take the password from the command line (scripts;\n"
        "                        visible to other users in ps)\n"
        "  -h, --help            this help\n");
}

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

int cmd_passwd(int argc, char **argv)
{
    static const struct option opts[] = {
        {"method", required_argument, NULL, 'm'},
        {"password", required_argument, NULL, 'P'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}
    };
    const char *prefix = NULL, *given = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (!strcmp(optarg, "yescrypt"))
                prefix = "$y$";
            else if (!strcmp(optarg, "sha512"))
                prefix = "$6$";
            else {
                cli_error("passwd: bad --method '%s' (yescrypt or sha512)", optarg);
                return CLI_USAGE;
            }
            break;
        case 'P': given = optarg; break;
        case 'h': passwd_usage(stdout); return CLI_OK;
        case ':':
            cli_error("passwd: option '%s' needs a value", argv[optind - 1]);
            return CLI_USAGE;
        default:
            cli_error("passwd: bad option '%s' (see 'closewise passwd --help')",
                      argv[optind - 1]);
            return CLI_USAGE;
        }
    }
    if (optind != argc - 1) {
        cli_error("passwd: want exactly one USER (see 'closewise passwd --help')");
        return CLI_USAGE;
    }
    const char *user = argv[optind];
    if (!*user || strlen(user) > 64 || strpbrk(user, ": \t")) {
        cli_error("passwd: bad user name '%s' (1-64 characters, no ':' or blanks)", user);
        return CLI_USAGE;
    }
    char pw[1025];
    if (given) {
        if (strlen(given) >= sizeof pw) {
            cli_error("passwd: password too long (max 1024 bytes)");
            return CLI_USAGE;
        }
        strcpy(pw, given);
    } else if (read_password(pw, sizeof pw) < 0) {
        cli_error("passwd: no password on standard input");
        return CLI_USAGE;
    }
    if (!*pw) {
        cli_error("passwd: empty password");
        return CLI_USAGE;
    }
    char hash[CRYPT_OUTPUT_SIZE];
    int rc = cw_passwd_hash(pw, prefix, hash, sizeof hash);
    explicit_bzero(pw, sizeof pw);
    if (rc < 0) {
        cli_error("passwd: cannot hash: %s", cw_strerror(rc));
        return CLI_SYSTEM;
    }
    printf("%s:%s\n", user, hash);
    return CLI_OK;
}
