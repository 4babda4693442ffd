/* fuzz_protocol.c - libFuzzer target for the request parser. It walks the
 * input the way the server does (parse, skip what was consumed, repeat)
 * and traps on any broken invariant: slices outside the request, a
 * request that does not end in "\n", non-text accepted, a prefix of a
 * request that is not INCOMPLETE. ASan and UBSan catch the rest. */
#include "protocol.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CHECK(cond) do { if (!(cond)) __builtin_trap(); } while (0)

static int inside(const char *p, size_t n, const char *lo, const char *hi)
{
    return p >= lo && p + n <= hi;
}

static void check_request(const char *buf, size_t len, const struct cw_req *r)
{
    if (r->type == CW_REQ_INCOMPLETE || r->type == CW_REQ_TOOLONG ||
        r->type == CW_REQ_BAD) {
        CHECK(r->consumed == 0);
        return;
    }
    CHECK(r->consumed >= 1 && r->consumed <= len);
    CHECK(r->consumed <= CW_PROTO_MAX_LINE + 2);
    CHECK(buf[r->consumed - 1] == '\n');
    CHECK(memchr(buf, '\n', r->consumed - 1) == NULL);
    for (size_t i = 0; i + 1 < r->consumed; i++) {
        unsigned char c = (unsigned char)buf[i];
        CHECK(c >= 0x20 || c == '\t' || (c == '\r' && i + 2 == r->consumed));
        CHECK(c != 0x7F);
    }
    const char *end = buf + r->consumed;
    if (r->type == CW_REQ_AUTH) {
        CHECK(inside(r->user, r->user_len, buf, end));
        CHECK(inside(r->pass, r->pass_len, buf, end));
        CHECK(r->user_len >= 1 && r->user_len <= CW_PROTO_MAX_USER);
        CHECK(r->pass_len >= 1);
        CHECK(!memchr(r->user, ' ', r->user_len) && !memchr(r->user, ':', r->user_len));
        CHECK(r->user + r->user_len < r->pass);
    }
    if (r->type == CW_REQ_ECHO)
        CHECK(inside(r->text, r->text_len, buf, end));
    /* the server acts on a line only once it is whole */
    struct cw_req p;
    CHECK(cw__proto_parse(buf, r->consumed - 1, &p) == CW_REQ_INCOMPLETE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    size_t off = 0;
    for (;;) {
        struct cw_req r;
        enum cw_req_type t = cw__proto_parse(buf + off, size - off, &r);
        CHECK(t == r.type && t <= CW_REQ_BAD);
        check_request(buf + off, size - off, &r);
        if (!r.consumed)
            break;
        off += r.consumed;
    }
    return 0;
}
