/* exporter_http.h - the exporter's HTTP/1.x request-head parser: a pure
 * function over (buf, len), in the style of picohttpparser, so that it can
 * be fuzzed alone (tests/fuzz/fuzz_http.c). It is strict on purpose: a
 * scraper sends one small GET, so anything unusual is refused with 400
 * rather than guessed at. */
#ifndef CW_CLI_EXPORTER_HTTP_H
#define CW_CLI_EXPORTER_HTTP_H

#include <stddef.h>

/* Longest request head (request line + headers + blank line) accepted.
 * Prometheus sends about 250 bytes. */
#define XH_MAX_HEAD 4096
#define XH_MAX_HEADERS 64

enum xh_status {
    XH_INCOMPLETE = 0,  /* valid so far, the head is not complete yet */
    XH_OK = 1,          /* a complete, valid head: see struct xh_request */
    XH_BAD = -1,        /* malformed: answer 400 and close */
    XH_TOOLONG = -2     /* no complete head within XH_MAX_HEAD bytes */
};

enum xh_method { XH_GET = 1, XH_HEAD, XH_OTHER };

struct xh_request {
    int method;           /* enum xh_method */
    const char *path;     /* the target's path, inside buf, without query */
    size_t path_len;
    int minor;            /* HTTP/1.minor: 0 or 1 */
    size_t consumed;      /* bytes of the head, up to its blank line */
};

/* Parse the request head at the start of buf. Rules (RFC 9112, minus what
 * a scraper never needs): lines end in CRLF; the method is a token; the
 * target is in origin form ("/..."), visible ASCII only; the version is
 * HTTP/1.0 or HTTP/1.1; header names are tokens, values are visible bytes,
 * spaces and tabs; no obsolete line folding; at most XH_MAX_HEADERS
 * headers; HTTP/1.1 needs a Host header; a request body (Content-Length
 * other than 0, or any Transfer-Encoding) is refused. Any prefix of a
 * valid head is XH_INCOMPLETE; an invalid byte is reported as soon as it
 * is seen. r is filled only on XH_OK. */
enum xh_status xh_parse(const char *buf, size_t len, struct xh_request *r);

#endif
