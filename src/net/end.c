/* end.c - the one vocabulary for how a connection ended (closewise/end.h).
 *
 * Adapter point for the reference server (src/server.c keeps its own
 * enum end/enum how until it moves onto cw_stream). Its "how" is
 * transport and maps one to one: HOW_FIN -> CW_END_GRACEFUL,
 * HOW_LINGER_TIMEOUT -> CW_END_TIMEOUT, HOW_LINGER_RESET and HOW_RESET ->
 * CW_END_RESET, HOW_RST -> CW_END_ABORT, HOW_PLAIN -> CW_END_PLAIN,
 * HOW_PEER -> CW_END_EOF. Its "end" is mostly the protocol's reason
 * (idle, auth-failed, quit, bad-request, shutdown) and stays the
 * server's; only END_WRITE_TIMEOUT (CW_END_TIMEOUT) and END_RECLAIMED
 * (CW_END_EVICTED) are transport, and come from cw_stream_end() once
 * the server runs on streams. */
#include <closewise/closewise.h>

#include <errno.h>

static const char *const names[] = {
    [CW_END_NONE] = "none",         [CW_END_EOF] = "eof",
    [CW_END_RESET] = "reset",       [CW_END_TIMEOUT] = "timeout",
    [CW_END_TOO_LONG] = "too-long", [CW_END_EVICTED] = "evicted",
    [CW_END_ABANDONED] = "abandoned", [CW_END_ERROR] = "error",
    [CW_END_GRACEFUL] = "graceful", [CW_END_ABORT] = "abort",
    [CW_END_PLAIN] = "plain",
};

const char *cw_end_name(enum cw_end e)
{
    unsigned i = (unsigned)e;
    return i < sizeof names / sizeof names[0] ? names[i] : "unknown";
}

enum cw_end cw_end_of_read(ssize_t rc)
{
    switch (rc) {
    case CW_EOF:
        return CW_END_EOF;
    case CW_ERESET:
        return CW_END_RESET;
    case CW_ETIMEDOUT:
        return CW_END_TIMEOUT;
    case CW_ETOOLONG:
        return CW_END_TOO_LONG;
    default:
        return rc >= 0 ? CW_END_NONE : CW_END_ERROR;
    }
}

enum cw_end cw_end_of_close(int how, int rc)
{
    if (how == CW_CLOSE_ABORT)
        return CW_END_ABORT;
    if (rc == CW_OK)
        return CW_END_GRACEFUL;
    if (rc == -EMFILE || rc == -ENFILE)
        return CW_END_EVICTED;
    enum cw_end e = cw_end_of_read(rc);
    return e == CW_END_NONE ? CW_END_ERROR : e;
}
