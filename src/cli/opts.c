/* opts.c - option tables to getopt_long and --help, and the strict value
 * parsers every command shares (opts.h). */
#define _GNU_SOURCE
#include "opts.h"
#include "cli.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int opt_id(const struct cli_opt *o)
{
    return o->id ? o->id : o->letter;
}

void cli_getopt_init(struct cli_parser *p, const struct cli_spec *spec, int argc,
                     char **argv)
{
    size_t n = 0, k = 0;
    memset(p, 0, sizeof *p);
    p->spec = spec;
    p->argc = argc;
    p->argv = argv;
    /* '+' for commands that run another command line after theirs; ':' so
     * that a missing value is told apart from an unknown option. */
    if (spec->usage && strstr(spec->usage, "-- "))
        p->so[k++] = '+';
    p->so[k++] = ':';
    for (int t = 0; t < 4 && spec->tables[t]; t++)
        for (const struct cli_opt *o = spec->tables[t]; o->name && n < CLI_MAX_OPTS; o++) {
            p->lo[n] = (struct option){o->name, o->arg ? required_argument : no_argument,
                                       NULL, opt_id(o)};
            p->by_index[n++] = o;
            if (o->letter) {
                p->so[k++] = (char)o->letter;
                if (o->arg)
                    p->so[k++] = ':';
            }
        }
    p->lo[n] = (struct option){"help", no_argument, NULL, 'h'};
    p->lo[n + 1] = (struct option){NULL, 0, NULL, 0};
    p->so[k++] = 'h';
    p->so[k] = '\0';
    optind = 1;
    opterr = 0;
}

int cli_getopt(struct cli_parser *p, const char **arg)
{
    int c = getopt_long(p->argc, p->argv, p->so, p->lo, NULL);
    *arg = optarg;
    if (c == 'h') {
        cli_help(p->spec);
        return CLI_HELPED;
    }
    if (c == '?' || c == ':') {
        cli_getopt_error(p->argv, p->lo);
        return '?';
    }
    /* "-4" and "--ipv4" are one option: the caller sees its id. */
    for (int i = 0; c > 0 && c < 256 && p->by_index[i]; i++)
        if (p->by_index[i]->letter == c)
            return opt_id(p->by_index[i]);
    return c;
}

static const char *long_name(const struct option *lo, int id)
{
    for (; lo->name; lo++)
        if (lo->val == id)
            return lo->name;
    return NULL;
}

int cli_getopt_error(char **argv, const struct option *lo)
{
    const char *word = optind > 0 ? argv[optind - 1] : "";
    const char *name = optopt ? long_name(lo, optopt) : NULL;
    char shown[64];
    /* getopt says ':' (or '?' without a leading ':') for a missing value,
     * and '?' with optopt set for an unknown letter or a value given to a
     * flag: optopt and the word tell them apart. */
    if (name && !strncmp(word, "--", 2) && strchr(word, '='))
        cli_usage_error("--%s takes no value", name);
    else if (name)
        cli_usage_error("--%s needs a value", name);
    else if (optopt)
        cli_usage_error("unknown option '-%c'", optopt);
    else {
        snprintf(shown, sizeof shown, "%.*s", (int)strcspn(word, "="), word);
        cli_usage_error("unknown option '%s'", shown);
    }
    return CLI_USAGE;
}

const char *cli_opt_name(const struct cli_spec *spec, int id)
{
    static char buf[64];
    for (int t = 0; t < 4 && spec->tables[t]; t++)
        for (const struct cli_opt *o = spec->tables[t]; o->name; o++)
            if (opt_id(o) == id) {
                snprintf(buf, sizeof buf, "--%s", o->name);
                return buf;
            }
    return "?";
}

int cli_no_operands(const struct cli_spec *spec, int argc, char **argv)
{
    (void)spec;
    if (optind < argc) {
        cli_usage_error("unexpected argument '%s'", argv[optind]);
        return CLI_USAGE;
    }
    return CLI_OK;
}

/* One option's help: "  -p, --port PORT" padded to a column, then the
 * text, continued under itself. */
static void help_one(const struct cli_opt *o)
{
    char left[64];
    int n = snprintf(left, sizeof left, "  %c%c%s--%s%s%s", o->letter ? '-' : ' ',
                     o->letter ? o->letter : ' ', o->letter ? ", " : "  ", o->name,
                     o->arg ? " " : "", o->arg ? o->arg : "");
    const int col = 24;
    const char *h = o->help ? o->help : "";
    if (n >= col - 1)
        printf("%s\n%*s", left, col, "");
    else
        printf("%-*s", col, left);
    for (const char *p = h; *p;) {
        size_t len = strcspn(p, "\n");
        printf("%.*s\n", (int)len, p);
        p += len;
        if (*p == '\n' && *++p)
            printf("%*s", col, "");
    }
    if (!*h)
        putchar('\n');
}

void cli_help(const struct cli_spec *spec)
{
    printf("usage: closewise %s %s\n\n%s\n\noptions:\n", spec->cmd,
           spec->usage ? spec->usage : "[options]", spec->what);
    for (int t = 0; t < 4 && spec->tables[t]; t++)
        for (const struct cli_opt *o = spec->tables[t]; o->name; o++)
            help_one(o);
    help_one(&(struct cli_opt){"help", 'h', 0, NULL, "this help", NULL});
    if (spec->epilog)
        printf("\n%s\n", spec->epilog);
}

void cli_usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (cli_cmd)
        cli_error("%s (try 'closewise %s --help')", msg, cli_cmd);
    else
        cli_error("%s (try 'closewise --help')", msg);
}

/* ---- durations ---- */

static const struct {
    const char *name;
    long long ms;
} units[] = {{"h", 3600000}, {"ms", 1}, {"m", 60000}, {"s", 1000}};

/* Rank of the unit at p (0 h, 1 m, 2 s, 3 ms; "ms" before "m"), its
 * length in *len, or -1. */
static int unit_at(const char *p, size_t *len, long long *ms)
{
    static const int rank[] = {0, 3, 1, 2};
    for (int i = 0; i < 4; i++) {
        size_t l = strlen(units[i].name);
        if (!strncmp(p, units[i].name, l)) {
            *len = l;
            *ms = units[i].ms;
            return rank[i];
        }
    }
    return -1;
}

/* Largest sensible duration: about 31 years, far from overflow. */
#define DURATION_LIMIT_MS CLI_DURATION_MAX

long long cli_duration_ms(const char *s, const char **why)
{
    const char *p = s;
    long long total = 0;
    int last_rank = -1;
    *why = "bad";
    if (!s || !*s)
        return -1;
    if (!strcmp(s, "0"))
        return 0;
    while (*p) {
        if (*p < '0' || *p > '9')
            return -1;
        long long whole = 0, frac = 0, scale = 1;
        for (; *p >= '0' && *p <= '9'; p++) {
            if (whole > DURATION_LIMIT_MS)
                return *why = "too large", -1;
            whole = whole * 10 + (*p - '0');
        }
        int decimal = *p == '.';
        if (decimal) {
            if (*++p < '0' || *p > '9')
                return -1;
            for (; *p >= '0' && *p <= '9'; p++) {
                if (scale >= 1000000000LL)
                    return *why = "finer than 1ms", -1;
                frac = frac * 10 + (*p - '0');
                scale *= 10;
            }
        }
        size_t ulen;
        long long ums;
        int rank = unit_at(p, &ulen, &ums);
        if (rank < 0 && !*p && last_rank < 0)
            return *why = "no unit", -1;
        if (rank < 0)
            return -1;
        if (rank <= last_rank)
            return *why = "unit order", -1;
        p += ulen;
        /* A fraction only on the last part: "1.5m30s" is not a way anyone writes. */
        if (decimal && *p)
            return -1;
        if (frac * ums % scale)
            return *why = "finer than 1ms", -1;
        if (whole > DURATION_LIMIT_MS / ums)
            return *why = "too large", -1;
        total += whole * ums + frac * ums / scale;
        if (total > DURATION_LIMIT_MS)
            return *why = "too large", -1;
        last_rank = rank;
    }
    return total;
}

/* "24h", "1m30s", "500ms": the shortest exact spelling. */
static const char *fmt_duration(long long ms, char *buf, size_t size)
{
    if (ms == 0)
        snprintf(buf, size, "0");
    else if (ms % 3600000 == 0)
        snprintf(buf, size, "%lldh", ms / 3600000);
    else if (ms % 60000 == 0)
        snprintf(buf, size, "%lldm", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%llds", ms / 1000);
    else
        snprintf(buf, size, "%lldms", ms);
    return buf;
}

int cli_duration(const char *opt, const char *arg, long long min_ms, long long max_ms,
                 long long *out)
{
    const char *why;
    long long v = cli_duration_ms(arg, &why);
    char lo[32], hi[32];
    if (v < 0 && !strcmp(why, "no unit"))
        cli_usage_error("%s: '%s' has no unit: write %s%s or %s%s (units: ms, s, m, h)", opt, arg,
                  arg, "s", arg, strchr(arg, '.') ? "m" : "ms");
    else if (v < 0 && !strcmp(why, "unit order"))
        cli_usage_error("%s: bad duration '%s' (units largest first, each once: 1h30m, 2m30s)",
                  opt, arg);
    else if (v < 0 && !strcmp(why, "finer than 1ms"))
        cli_usage_error("%s: '%s' is finer than a millisecond", opt, arg);
    else if (v < 0 && strcmp(why, "too large"))
        cli_usage_error("%s: bad duration '%s' (examples: 30s, 2m30s, 500ms, 1.5s)", opt, arg);
    if (v < 0 && strcmp(why, "too large"))
        return -1;
    if (v < 0 || v < min_ms || v > max_ms) {
        cli_usage_error("%s: '%s' is out of range (%s to %s)", opt, arg,
                  fmt_duration(min_ms, lo, sizeof lo), fmt_duration(max_ms, hi, sizeof hi));
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- numbers and addresses ---- */

/* Plain decimal digits only: no sign, space, hex or octal surprises. */
static int decimal(const char *s, long long max, long long *out)
{
    long long v = 0;
    if (!s || !*s || strlen(s) > 19)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        if (v > (max - (*p - '0')) / 10)
            return -2;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return 0;
}

int cli_port(const char *opt, const char *arg, int min, int *out)
{
    long long v;
    if (decimal(arg, 65535, &v) < 0 || v < min) {
        cli_usage_error("%s: bad port '%s' (expected %d to 65535)", opt, arg, min);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int cli_count(const char *opt, const char *arg, long long min, long long max,
              long long *out)
{
    long long v = 0;
    int rc = decimal(arg, max, &v);
    if (rc == -1) {
        cli_usage_error("%s: bad number '%s' (expected a whole number)", opt, arg);
        return -1;
    }
    if (rc < 0 || v < min) {
        cli_usage_error("%s: '%s' is out of range (%lld to %lld)", opt, arg, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_addr(const char *opt, const char *arg)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, arg, buf) == 1 || inet_pton(AF_INET6, arg, buf) == 1)
        return 0;
    cli_usage_error("%s: bad address '%s' (expected a numeric IPv4 or IPv6 address)", opt, arg);
    return -1;
}

const char *cli_plural(unsigned long long n, const char *one, const char *many,
                       char *buf, size_t size)
{
    snprintf(buf, size, "%llu %s", n, n == 1 ? one : many);
    return buf;
}

/* The old interface, strict now: commands not yet on cli_duration() get
 * the same grammar. */
long long cli_parse_duration(const char *s)
{
    const char *why;
    return cli_duration_ms(s, &why);
}

int cli_parse_port(const char *s)
{
    long long v;
    return decimal(s, 65535, &v) < 0 ? -1 : (int)v;
}
