/* protocol.c - request parser for the reference server (docs/PROTOCOL.md).
 * Pure: it only reads buf[0..len). The server calls it on whatever it has
 * received so far, so every answer must be right for a prefix too: bad
 * bytes are reported as soon as they are seen, and an over-long line as
 * soon as it cannot end in time, without waiting for a "\n" that may
 * never come. */
#include "protocol.h"
#include "../net/utf8.h"

#include <stdint.h>
#include <string.h>

/* Length of a well-formed UTF-8 sequence at p (2..4), 0 if it is a valid
 * but truncated prefix, -1 if invalid (cw__utf8_seq). C1 control
 * characters (U+0080..U+009F) are well-formed but not text: refused too. */
static int utf8_seq(const unsigned char *p, size_t avail)
{
    if (p[0] == 0xC2 && avail > 1 && p[1] < 0xA0)
        return -1;
    return cw__utf8_seq(p, avail);
}

/* Are the 8 bytes at p all printable ASCII (0x20..0x7E), the bytes the
 * loop below would only step over? Word-at-a-time tests (exact for "any
 * byte": a borrow or carry only starts at a byte that already matches):
 * a byte below 0x20, or above 0x7E. */
static int plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t x;
    memcpy(&x, p, sizeof x);
    uint64_t below = (x - 0x20 * ones) & ~x & high;
    uint64_t above = ((x + ones) | x) & high;
    return !(below | above);
}

/* Validate bytes up to the first "\n" or the window end. Returns 1 with
 * *eol set when a "\n" was found, 0 when more bytes are needed (*scanned
 * tells how many were accepted), -1 for a byte that is not text. */
static int scan_line(const unsigned char *p, size_t len, size_t *eol,
                     size_t *scanned)
{
    size_t limit = len < CW_PROTO_MAX_LINE + 2 ? len : CW_PROTO_MAX_LINE + 2;
    size_t i = 0;
    while (i < limit) {
        /* Plain text eight bytes at a time: the byte loop cost ~7
         * instructions a byte, most of the parse of every request. */
        if (limit - i >= 8 && plain8(p + i)) {
            i += 8;
            continue;
        }
        unsigned char c = p[i];
        if (c == '\n') {
            *eol = i;
            return 1;
        }
        if (c == '\r') {   /* only as part of "\r\n" */
            if (i + 1 < len && p[i + 1] != '\n')
                return -1;
            i++;
        } else if (c >= 0x80) {
            int n = utf8_seq(p + i, len - i);
            if (n < 0)
                return -1;
            if (n == 0)
                break;
            i += (size_t)n;
        } else if ((c < 0x20 && c != '\t') || c == 0x7F) {
            return -1;
        } else {
            i++;
        }
    }
    *scanned = i;
    return 0;
}

static int word_is(const char *line, size_t n, const char *word)
{
    size_t w = strlen(word);
    return n >= w && memcmp(line, word, w) == 0 && (n == w || line[w] == ' ');
}

/* Offset of the first ' ', '\t' or ':' in p[0..n), n if none. By table
 * (an ASCII name reads its first data line only): a byte loop of three
 * compares, or three memchr calls, cost 55-75 instructions per login. */
static size_t user_end(const char *p, size_t n)
{
    static const unsigned char stop[256] = {[' '] = 1, ['\t'] = 1, [':'] = 1};
    size_t i = 0;
    while (i < n && !stop[(unsigned char)p[i]])
        i++;
    return i;
}

static enum cw_req_type parse_auth(const char *line, size_t n, struct cw_req *r)
{
    if (n < 5)
        return CW_REQ_SYNTAX;
    const char *user = line + 5;
    const char *end = line + n;
    /* The user ends at the first space; a tab or a colon before it, or
     * more than CW_PROTO_MAX_USER bytes, is a syntax error. */
    size_t lim = (size_t)(end - user);
    if (lim > CW_PROTO_MAX_USER + 1)
        lim = CW_PROTO_MAX_USER + 1;
    size_t ulen = user_end(user, lim);
    const char *sp = user + ulen;
    if (ulen == lim || *sp != ' ' || ulen == 0 || sp + 1 >= end)
        return CW_REQ_SYNTAX;
    r->user = user;
    r->user_len = ulen;
    r->pass = sp + 1;
    r->pass_len = (size_t)(end - r->pass);
    return CW_REQ_AUTH;
}

/* Classify one complete, validated line of n bytes (terminator removed). */
static enum cw_req_type parse_command(const char *line, size_t n,
                                      struct cw_req *r)
{
    if (word_is(line, n, "AUTH"))
        return parse_auth(line, n, r);
    if (word_is(line, n, "ECHO")) {
        r->text = n > 4 ? line + 5 : line + 4;
        r->text_len = n > 4 ? n - 5 : 0;
        return CW_REQ_ECHO;
    }
    if (word_is(line, n, "QUIT"))
        return n == 4 ? CW_REQ_QUIT : CW_REQ_SYNTAX;
    return CW_REQ_UNKNOWN;
}

enum cw_req_type cw__proto_parse(const char *buf, size_t len,
                                 struct cw_req *req)
{
    memset(req, 0, sizeof *req);
    if (!buf)
        len = 0;
    size_t eol = 0, scanned = 0;
    int found = len ? scan_line((const unsigned char *)buf, len, &eol, &scanned)
                    : 0;
    if (found < 0)
        return req->type = CW_REQ_BAD;
    if (!found) {
        /* A line whose content already exceeds the maximum can no longer
         * end in time; one byte past it may still be the "\r" of "\r\n". */
        if (scanned > CW_PROTO_MAX_LINE + 1 ||
            (scanned == CW_PROTO_MAX_LINE + 1 && buf[CW_PROTO_MAX_LINE] != '\r'))
            return req->type = CW_REQ_TOOLONG;
        return req->type = CW_REQ_INCOMPLETE;
    }
    size_t n = eol;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    if (n > CW_PROTO_MAX_LINE)
        return req->type = CW_REQ_TOOLONG;
    req->consumed = eol + 1;
    req->type = parse_command(buf, n, req);
    return req->type;
}

const char *cw__proto_type_name(enum cw_req_type t)
{
    static const char *names[] = {
        [CW_REQ_INCOMPLETE] = "incomplete", [CW_REQ_AUTH] = "auth",
        [CW_REQ_ECHO] = "echo",             [CW_REQ_QUIT] = "quit",
        [CW_REQ_UNKNOWN] = "unknown",       [CW_REQ_SYNTAX] = "syntax",
        [CW_REQ_TOOLONG] = "too-long",      [CW_REQ_BAD] = "bad",
    };
    if ((unsigned)t >= sizeof names / sizeof names[0])
        return "invalid";
    return names[t];
}
