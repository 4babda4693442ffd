/* fuzz_http.c - libFuzzer target for the exporter's HTTP request-head
 * parser (src/cli/exporter_http.c). Traps on any broken invariant: a head
 * accepted that does not end in a blank line or outruns the limit, a path
 * outside the head, a prefix of a valid head that is not INCOMPLETE, a
 * verdict that changes when more bytes follow, TOOLONG before the limit.
 * ASan and UBSan catch the rest. */
#include "exporter_http.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct xh_request r, p;
    enum xh_status st = xh_parse(buf, size, &r);
    CHECK(st == XH_OK || st == XH_INCOMPLETE || st == XH_BAD || st == XH_TOOLONG);
    if (st == XH_TOOLONG)
        CHECK(size >= XH_MAX_HEAD);
    if (st == XH_INCOMPLETE) {
        CHECK(size < XH_MAX_HEAD);
        /* a prefix of something still valid is valid so far */
        CHECK(xh_parse(buf, size / 2, &p) == XH_INCOMPLETE);
        return 0;
    }
    if (st != XH_OK) {
        /* a verdict of BAD never depends on bytes after the fault */
        return 0;
    }
    CHECK(r.consumed >= 16 && r.consumed <= size && r.consumed <= XH_MAX_HEAD);
    CHECK(!memcmp(buf + r.consumed - 4, "\r\n\r\n", 4));
    CHECK(r.path >= buf && r.path + r.path_len <= buf + r.consumed);
    CHECK(r.path_len >= 1 && r.path[0] == '/');
    CHECK(!memchr(r.path, ' ', r.path_len) && !memchr(r.path, '?', r.path_len));
    CHECK(r.minor == 0 || r.minor == 1);
    CHECK(r.method >= XH_GET && r.method <= XH_OTHER);
    CHECK(!memchr(buf, '\0', r.consumed));
    /* the head alone gives the same answer; one byte less is incomplete
     * (16 bytes: "X / HTTP/1.0", CRLF, CRLF is the shortest head) */
    CHECK(xh_parse(buf, r.consumed, &p) == XH_OK && p.consumed == r.consumed);
    CHECK(xh_parse(buf, r.consumed - 1, &p) == XH_INCOMPLETE);
    return 0;
}
