/* protocol.h - the request parser of the reference server's line protocol
 * (docs/PROTOCOL.md). A pure function over (buffer, length): no I/O, no
 * allocation, no global state, so it can be fuzzed in isolation. Internal:
 * never installed. */
#ifndef CW_PROTOCOL_H
#define CW_PROTOCOL_H

#include <stddef.h>

/* Longest request line, not counting its "\n" or "\r\n". */
#define CW_PROTO_MAX_LINE 1024
/* Longest user name in AUTH. */
#define CW_PROTO_MAX_USER 64

enum cw_req_type {
    CW_REQ_INCOMPLETE = 0, /* no full line yet: read more */
    CW_REQ_AUTH,           /* user, pass set */
    CW_REQ_ECHO,           /* text set (may be empty) */
    CW_REQ_QUIT,
    CW_REQ_UNKNOWN,        /* well-formed text, unknown command */
    CW_REQ_SYNTAX,         /* known command, malformed arguments */
    CW_REQ_TOOLONG,        /* line longer than CW_PROTO_MAX_LINE: framing lost */
    CW_REQ_BAD             /* NUL, control byte or invalid UTF-8: framing
                              not trusted */
};

/* Slices point into the caller's buffer; they are not NUL-terminated. */
struct cw_req {
    enum cw_req_type type;
    size_t consumed;       /* bytes of the buffer this request used,
                              including its terminator; 0 when
                              INCOMPLETE, TOOLONG or BAD */
    const char *user, *pass, *text;
    size_t user_len, pass_len, text_len;
};

/* Parse the first request in buf[0..len). Always fills *req and returns
 * req->type. CW_REQ_INCOMPLETE means no "\n" yet and the bytes so far are
 * acceptable; TOOLONG and BAD mean the connection should be ended. */
enum cw_req_type cw__proto_parse(const char *buf, size_t len,
                                 struct cw_req *req);

/* Static name of a request type, for logs and tests. */
const char *cw__proto_type_name(enum cw_req_type t);

#endif
