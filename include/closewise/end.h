/*
 * closewise/end.h - one vocabulary for how a connection ended, shared by
 * cw_close(), cw_stream, the reference server's logs, the probe and the
 * demo. Result codes (conn.h) say what one call returned; a cw_end says
 * who ended the connection and how, in words that logs and JSON keep
 * stable.
 *
 * Do not include this file directly: include <closewise/closewise.h>.
 */
#ifndef CLOSEWISE_END_H
#define CLOSEWISE_END_H

#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The name in quotes is cw_end_name()'s word; new values are only ever
 * added at the end, so numbers and words stay stable. */
enum cw_end {
    CW_END_NONE = 0,    /* "none": not ended (yet) */
    /* the peer ended it */
    CW_END_EOF,         /* "eof": the peer's FIN */
    CW_END_RESET,       /* "reset": the peer's RST (or it vanished) */
    /* a limit ended it */
    CW_END_TIMEOUT,     /* "timeout": a deadline passed first (idle, write,
                           close or connect deadline, or the kernel gave up) */
    CW_END_TOO_LONG,    /* "too-long": the peer sent more than allowed (a
                           line past the maximum, input past the drain limit) */
    CW_END_EVICTED,     /* "evicted": closed to give a descriptor back */
    CW_END_ABANDONED,   /* "abandoned": the peer left and the owner did
                           nothing; the library closed it after a grace */
    CW_END_ERROR,       /* "error": any other error */
    /* we ended it */
    CW_END_GRACEFUL,    /* "graceful": our FIN, then the peer's: everything
                           we sent was delivered */
    CW_END_ABORT,       /* "abort": our RST, on purpose (SO_LINGER {1,0}) */
    CW_END_PLAIN        /* "plain": a bare close(), nothing waited for; the
                           kernel sends RST if input was left unread */
};

/* The stable lowercase word for e ("eof", "graceful", ...); "unknown"
 * for a value outside the enum. Never NULL; static storage. */
const char *cw_end_name(enum cw_end e);

/* The end a terminal read result says (cw_recv(), cw_readline(), a
 * cw_stream's on_read with nread < 0): CW_EOF -> CW_END_EOF, CW_ERESET
 * -> CW_END_RESET, CW_ETIMEDOUT -> CW_END_TIMEOUT, CW_ETOOLONG ->
 * CW_END_TOO_LONG, another negative code -> CW_END_ERROR; a count
 * (>= 0) -> CW_END_NONE. */
enum cw_end cw_end_of_read(ssize_t rc);

/* The end of a close requested as how (CW_CLOSE_GRACEFUL or
 * CW_CLOSE_ABORT) that returned rc (cw_close(), or the how given to a
 * cw_stream's on_closed after cw_stream_close()): an abort is
 * CW_END_ABORT; a graceful close is CW_END_GRACEFUL for CW_OK, else as
 * cw_end_of_read(), with -EMFILE as CW_END_EVICTED. For a stream the
 * library ended itself, use cw_stream_end() instead. */
enum cw_end cw_end_of_close(int how, int rc);

#ifdef __cplusplus
}
#endif
#endif
