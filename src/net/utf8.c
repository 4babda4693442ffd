/* utf8.c - the one UTF-8 validator: the server's protocol, the CLI's JSON
 * and the exporter's labels all judge bytes with it. */
#include "utf8.h"

int cw__utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    int n = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
    if (n == 0 || c > 0xF4)
        return -1;
    /* The second byte's range excludes overlong forms (E0, F0),
     * surrogates (ED) and code points past U+10FFFF (F4). */
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    for (int i = 1; i < n; i++) {
        if ((size_t)i >= avail)
            return 0;
        if (i == 1 ? (p[i] < lo || p[i] > hi) : (p[i] < 0x80 || p[i] > 0xBF))
            return -1;
    }
    return n;
}
