/* voice.c - how every command speaks: one-line messages on stderr that
 * start "closewise CMD: ", and the check of standard output at exit that
 * turns a lost write into an error instead of a silent success. */
#define _GNU_SOURCE
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio_ext.h>
#include <string.h>
#include <unistd.h>

const char *cli_cmd;

void cli_verror(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    const char *m = msg;
    /* Messages written before the voice was one still start "CMD: ":
     * say the command once. */
    size_t n = cli_cmd ? strlen(cli_cmd) : 0;
    if (n && !strncmp(m, cli_cmd, n) && m[n] == ':' && m[n + 1] == ' ')
        m += n + 2;
    if (cli_cmd)
        fprintf(stderr, "closewise %s: %s\n", cli_cmd, m);
    else
        fprintf(stderr, "closewise: %s\n", m);
}

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cli_verror(fmt, ap);
    va_end(ap);
}

int cli_close_stdout(int rc)
{
    /* Like gnulib's close_stdout: buffered output is only known to be
     * written once flushed and closed. A stdout closed before we started
     * (EBADF) is fine when nothing was written to it. A reader that went
     * away (EPIPE) chose to stop reading: no message, the status stays. */
    size_t pending = __fpending(stdout);
    int failed_before = ferror(stdout);
    errno = 0;
    int close_failed = fclose(stdout) != 0;
    int err = errno;
    if (!failed_before && !(close_failed && (pending || err != EBADF)))
        return rc;
    if (err == EPIPE)
        return rc;
    cli_error("write error on standard output: %s", strerror(err ? err : EIO));
    return rc == CLI_OK || rc == CLI_FOUND ? CLI_SYSTEM : rc;
}
