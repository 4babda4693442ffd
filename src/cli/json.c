/* json.c - JSON strings for every subcommand's --json. */
#include "cli.h"
#include "../net/utf8.h"

void cli_json_str(FILE *f, const char *s)
{
    putc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        int n = *p >= 0x80 ? cw__utf8_seq(p, 4) : 1;   /* the string ends in NUL: never past it */
        n = n < 0 ? 0 : n;
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\u%04x", *p);
        else if (n == 0)
            fputs("\\ufffd", f);   /* not UTF-8: a process name is raw bytes */
        else
            fwrite(p, 1, (size_t)n, f);
        p += n ? n : 1;
    }
    putc('"', f);
}
