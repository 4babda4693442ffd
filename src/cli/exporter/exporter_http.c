/* exporter_http.c - strict HTTP/1.x request-head parser for the exporter
 * (see exporter_http.h). No allocation, no state between calls: the caller
 * re-parses its buffer after each read, which costs nothing at 4 KiB. */
#include "exporter_http.h"

#include <string.h>
#include <strings.h>

/* Running out of input is "wait for more" until the head limit is hit. */
#define NEED(k)                                                     \
    do {                                                            \
        if ((size_t)(e - p) < (size_t)(k))                          \
            return len >= XH_MAX_HEAD ? XH_TOOLONG : XH_INCOMPLETE; \
    } while (0)

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_value_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7F);
}

/* Match the literal lit byte by byte, so that a prefix stays INCOMPLETE
 * and the first wrong byte is BAD. */
static enum xh_status literal(const char **pp, const char *e, const char *lit, size_t len)
{
    const char *p = *pp;
    for (; *lit; lit++, p++) {
        NEED(1);
        if (*p != *lit)
            return XH_BAD;
    }
    *pp = p;
    return XH_OK;
}

static enum xh_status request_line(const char **pp, const char *e, size_t len,
                                   struct xh_request *r)
{
    const char *p = *pp, *start = p;
    for (;; p++) {
        NEED(1);
        if (*p == ' ')
            break;
        if (!is_tchar((unsigned char)*p) || p - start >= 16)
            return XH_BAD;
    }
    size_t mlen = (size_t)(p - start);
    if (mlen == 0)
        return XH_BAD;
    r->method = (mlen == 3 && !memcmp(start, "GET", 3))   ? XH_GET
                : (mlen == 4 && !memcmp(start, "HEAD", 4)) ? XH_HEAD
                                                           : XH_OTHER;
    p++;
    NEED(1);
    if (*p != '/')
        return XH_BAD;
    r->path = p;
    r->path_len = 0;
    for (;; p++) {
        NEED(1);
        unsigned char c = (unsigned char)*p;
        if (c == ' ')
            break;
        if (c < 0x21 || c > 0x7E || c == '#')
            return XH_BAD;
        if (c == '?' && !r->path_len)
            r->path_len = (size_t)(p - r->path);
    }
    if (!r->path_len)
        r->path_len = (size_t)(p - r->path);
    p++;
    enum xh_status st = literal(&p, e, "HTTP/1.", len);
    if (st != XH_OK)
        return st;
    NEED(1);
    if (*p != '0' && *p != '1')
        return XH_BAD;
    r->minor = *p++ - '0';
    if ((st = literal(&p, e, "\r\n", len)) != XH_OK)
        return st;
    *pp = p;
    return XH_OK;
}

/* What a header means to us; 0 fine, -1 refused. */
static int check_header(const char *name, size_t nlen, const char *val, size_t vlen,
                        int *has_host)
{
    if (nlen == 4 && !strncasecmp(name, "host", 4)) {
        if (*has_host)
            return -1;   /* two Host headers: RFC 9112 says 400 */
        *has_host = 1;
    } else if (nlen == 17 && !strncasecmp(name, "transfer-encoding", 17)) {
        return -1;
    } else if (nlen == 14 && !strncasecmp(name, "content-length", 14)) {
        if (vlen != 1 || val[0] != '0')
            return -1;
    }
    return 0;
}

static enum xh_status header(const char **pp, const char *e, size_t len, int *has_host)
{
    const char *p = *pp, *name = p;
    for (;; p++) {
        NEED(1);
        if (*p == ':')
            break;
        if (!is_tchar((unsigned char)*p))
            return XH_BAD;   /* includes obs-fold and space before ':' */
    }
    size_t nlen = (size_t)(p - name);
    if (!nlen)
        return XH_BAD;
    p++;
    for (;; p++) {
        NEED(1);
        if (*p != ' ' && *p != '\t')
            break;
    }
    const char *val = p;
    for (;; p++) {
        NEED(1);
        if (*p == '\r')
            break;
        if (!is_value_byte((unsigned char)*p))
            return XH_BAD;
    }
    const char *vend = p;
    while (vend > val && (vend[-1] == ' ' || vend[-1] == '\t'))
        vend--;
    enum xh_status st = literal(&p, e, "\r\n", len);
    if (st != XH_OK)
        return st;
    if (check_header(name, nlen, val, (size_t)(vend - val), has_host) < 0)
        return XH_BAD;
    *pp = p;
    return XH_OK;
}

enum xh_status xh_parse(const char *buf, size_t len, struct xh_request *out)
{
    struct xh_request r;
    const char *p = buf;
    const char *e = buf + (len > XH_MAX_HEAD ? XH_MAX_HEAD : len);
    memset(&r, 0, sizeof r);
    enum xh_status st = request_line(&p, e, len, &r);
    if (st != XH_OK)
        return st;
    int has_host = 0, n = 0;
    for (;;) {
        NEED(1);
        if (*p == '\r')
            break;
        if (++n > XH_MAX_HEADERS)
            return XH_BAD;
        if ((st = header(&p, e, len, &has_host)) != XH_OK)
            return st;
    }
    if ((st = literal(&p, e, "\r\n", len)) != XH_OK)
        return st;
    if (r.minor == 1 && !has_host)
        return XH_BAD;
    r.consumed = (size_t)(p - buf);
    *out = r;
    return XH_OK;
}
