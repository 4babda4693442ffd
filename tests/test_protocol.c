/* test_protocol.c - the request parser as a pure function: every command,
 * every terminator, every prefix, every bad byte, the exact length limit. */
#include "cwtest.h"
#include "../src/server/protocol.h"

#include <stdlib.h>
#include <string.h>

static enum cw_req_type parse(const char *s, struct cw_req *r)
{
    return cw__proto_parse(s, strlen(s), r);
}

static void assert_slice(const char *p, size_t n, const char *want)
{
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

static void test_commands(void **state)
{
    struct cw_req r;
    assert_int_equal(parse("AUTH alice s3cret pass\r\nECHO x\n", &r), CW_REQ_AUTH);
    assert_slice(r.user, r.user_len, "alice");
    assert_slice(r.pass, r.pass_len, "s3cret pass");   /* spaces allowed */
    assert_int_equal(r.consumed, 24);
    /* A colon or a tab ends only a user name, not a password. */
    assert_int_equal(parse("AUTH bob pw:x\ty\n", &r), CW_REQ_AUTH);
    assert_slice(r.user, r.user_len, "bob");
    assert_slice(r.pass, r.pass_len, "pw:x\ty");
    assert_int_equal(parse("ECHO hello world\n", &r), CW_REQ_ECHO);
    assert_slice(r.text, r.text_len, "hello world");
    assert_int_equal(parse("ECHO\n", &r), CW_REQ_ECHO);
    assert_int_equal(r.text_len, 0);
    assert_int_equal(parse("ECHO \n", &r), CW_REQ_ECHO);
    assert_int_equal(r.text_len, 0);
    assert_int_equal(parse("ECHO  two\n", &r), CW_REQ_ECHO);
    assert_slice(r.text, r.text_len, " two");
    assert_int_equal(parse("QUIT\n", &r), CW_REQ_QUIT);
    assert_int_equal(r.consumed, 5);
    assert_int_equal(parse("QUIT\r\n", &r), CW_REQ_QUIT);
    assert_int_equal(r.consumed, 6);
}

static void test_syntax_and_unknown(void **state)
{
    struct cw_req r;
    const char *syntax[] = {"AUTH\n", "AUTH \n", "AUTH alice\n", "AUTH alice \n",
                            "AUTH  alice pw\n", "QUIT now\n", "AUTH a:b pw\n",
                            "AUTH a\tb pw\n", NULL};
    for (int i = 0; syntax[i]; i++) {
        assert_int_equal(parse(syntax[i], &r), CW_REQ_SYNTAX);
        assert_int_equal(r.consumed, strlen(syntax[i]));
    }
    const char *unknown[] = {"\n", "\r\n", "auth a b\n", "ECHOX\n", "AUTHX a b\n",
                             "HELLO\n", " QUIT\n", NULL};
    for (int i = 0; unknown[i]; i++) {
        assert_int_equal(parse(unknown[i], &r), CW_REQ_UNKNOWN);
        assert_int_equal(r.consumed, strlen(unknown[i]));
    }
    /* the longest user name is accepted, one more is not */
    char line[128];
    snprintf(line, sizeof line, "AUTH %.*s pw\n", CW_PROTO_MAX_USER,
             "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu");
    assert_int_equal(parse(line, &r), CW_REQ_AUTH);
    assert_int_equal(r.user_len, CW_PROTO_MAX_USER);
    snprintf(line, sizeof line, "AUTH %.*s pw\n", CW_PROTO_MAX_USER + 1,
             "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu");
    assert_int_equal(parse(line, &r), CW_REQ_SYNTAX);
    /* a colon right after the longest name is still in the name */
    snprintf(line, sizeof line, "AUTH %.*s: pw\n", CW_PROTO_MAX_USER,
             "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu");
    assert_int_equal(parse(line, &r), CW_REQ_SYNTAX);
}

/* Every proper prefix of a good request is INCOMPLETE: the server must
 * never act on half a line. */
static void test_prefixes_are_incomplete(void **state)
{
    const char *lines[] = {"AUTH alice secret\r\n", "ECHO h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80\n",
                           "QUIT\n", NULL};
    for (int i = 0; lines[i]; i++) {
        size_t n = strlen(lines[i]);
        struct cw_req r;
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(cw__proto_parse(lines[i], k, &r), CW_REQ_INCOMPLETE);
            assert_int_equal(r.consumed, 0);
        }
        assert_int_not_equal(cw__proto_parse(lines[i], n, &r), CW_REQ_INCOMPLETE);
        assert_int_equal(r.consumed, n);
    }
    struct cw_req r;
    assert_int_equal(cw__proto_parse(NULL, 0, &r), CW_REQ_INCOMPLETE);
}

/* Not text: reported at once, even before the end of the line. */
static void test_bad_bytes(void **state)
{
    struct {
        const char *s;
        size_t n;
    } bad[] = {
        {"ECHO a\0b\n", 9},            /* NUL */
        {"ECHO \x01", 6},              /* control byte, no newline yet */
        {"ECHO \x7f\n", 7},            /* DEL */
        {"ECHO a\rb\n", 9},            /* bare CR */
        {"ECHO \r\r\n", 8},
        {"ECHO \xc0\x80\n", 8},        /* overlong NUL */
        {"ECHO \xed\xa0\x80\n", 9},    /* UTF-16 surrogate */
        {"ECHO \xf5\x80\x80\x80\n", 10}, /* past U+10FFFF */
        {"ECHO \xc2\x85\n", 8},        /* C1 control NEL */
        {"ECHO \x80\n", 7},            /* lone continuation byte */
        {"ECHO \xe2\x28\xa1\n", 9},    /* broken sequence */
        {"\x1b[2J\n", 5},              /* terminal escape */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct cw_req r;
        assert_int_equal(cw__proto_parse(bad[i].s, bad[i].n, &r), CW_REQ_BAD);
        assert_int_equal(r.consumed, 0);
    }
    struct cw_req r;
    /* a tab is text; a truncated UTF-8 sequence is just incomplete */
    assert_int_equal(parse("ECHO a\tb\n", &r), CW_REQ_ECHO);
    assert_int_equal(cw__proto_parse("ECHO \xe2\x82", 7, &r), CW_REQ_INCOMPLETE);
    assert_int_equal(cw__proto_parse("ECHO \r", 6, &r), CW_REQ_INCOMPLETE);
}

static char *line_of(size_t n, const char *term)
{
    char *p = malloc(n + strlen(term) + 1);
    assert_non_null(p);
    memcpy(p, "ECHO ", 5);
    memset(p + 5, 'x', n - 5);
    strcpy(p + n, term);
    return p;
}

static void test_length_limit(void **state)
{
    struct cw_req r;
    char *p = line_of(CW_PROTO_MAX_LINE, "\n");
    assert_int_equal(parse(p, &r), CW_REQ_ECHO);
    assert_int_equal(r.text_len, CW_PROTO_MAX_LINE - 5);
    free(p);
    p = line_of(CW_PROTO_MAX_LINE, "\r\n");
    assert_int_equal(parse(p, &r), CW_REQ_ECHO);
    assert_int_equal(r.consumed, CW_PROTO_MAX_LINE + 2);
    /* the "\r" of "\r\n" may arrive before its "\n" */
    assert_int_equal(cw__proto_parse(p, CW_PROTO_MAX_LINE + 1, &r), CW_REQ_INCOMPLETE);
    free(p);
    p = line_of(CW_PROTO_MAX_LINE + 1, "\n");
    assert_int_equal(parse(p, &r), CW_REQ_TOOLONG);
    /* too long is known before any newline arrives */
    assert_int_equal(cw__proto_parse(p, CW_PROTO_MAX_LINE + 1, &r), CW_REQ_TOOLONG);
    assert_int_equal(cw__proto_parse(p, CW_PROTO_MAX_LINE, &r), CW_REQ_INCOMPLETE);
    free(p);
    p = line_of(CW_PROTO_MAX_LINE + 1, "\r\n");
    assert_int_equal(parse(p, &r), CW_REQ_TOOLONG);
    assert_int_equal(r.consumed, 0);
    free(p);
    p = line_of(100000, "");
    assert_int_equal(parse(p, &r), CW_REQ_TOOLONG);
    free(p);
}

/* Every byte value at every place of a line, on both sides of the 8-byte
 * words the scan checks at once: printable ASCII and tab are text, "\n"
 * ends the line there, "\r" only before it, anything else (controls, DEL, a byte
 * >= 0x80 with no valid UTF-8 sequence around it) is refused. */
static void test_every_byte_everywhere(void **state)
{
    for (size_t at = 5; at < 29; at++) {
        for (int b = 0; b < 256; b++) {
            char line[31];
            memset(line, 'a', sizeof line);
            memcpy(line, "ECHO ", 5);
            line[29] = '\n';
            line[at] = (char)b;
            struct cw_req r;
            enum cw_req_type t = cw__proto_parse(line, 30, &r);
            if (b == '\n') {
                assert_int_equal(t, CW_REQ_ECHO);
                assert_int_equal(r.consumed, at + 1);
                assert_int_equal(r.text_len, at - 5);
            } else if (b == '\r' && at == 28) {   /* "\r\n" */
                assert_int_equal(t, CW_REQ_ECHO);
                assert_int_equal(r.text_len, 23);
            } else if ((b >= 0x20 && b < 0x7F) || b == '\t') {
                assert_int_equal(t, CW_REQ_ECHO);
                assert_int_equal(r.consumed, 30);
                assert_int_equal(r.text_len, 24);
            } else {
                assert_int_equal(t, CW_REQ_BAD);
            }
        }
    }
}

/* Pipelined requests: consumed walks the buffer exactly. */
static void test_pipelined(void **state)
{
    const char *buf = "AUTH a b\nECHO one\r\nQUIT\nECHO tail";
    size_t len = strlen(buf), off = 0;
    enum cw_req_type want[] = {CW_REQ_AUTH, CW_REQ_ECHO, CW_REQ_QUIT, CW_REQ_INCOMPLETE};
    for (int i = 0; i < 4; i++) {
        struct cw_req r;
        assert_int_equal(cw__proto_parse(buf + off, len - off, &r), want[i]);
        off += r.consumed;
    }
    assert_int_equal(off, strlen("AUTH a b\nECHO one\r\nQUIT\n"));
    assert_string_equal(cw__proto_type_name(CW_REQ_TOOLONG), "too-long");
    assert_string_equal(cw__proto_type_name((enum cw_req_type)99), "invalid");
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands),
        cmocka_unit_test(test_syntax_and_unknown),
        cmocka_unit_test(test_prefixes_are_incomplete),
        cmocka_unit_test(test_bad_bytes),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_every_byte_everywhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
