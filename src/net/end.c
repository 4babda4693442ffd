/* end.c - the one vocabulary for how a connection ended (closewise/end.h).
 *
 * The reference server (src/server/server.c) runs on cw_stream: its
 * close= word is cw_stream_end()'s, except where it knows more (the
 * peer's FIN or RST it read, "plain" for an eviction, "abort" for the
 * write timeout's RST, "timeout" for a lingering close cut short for a
 * descriptor); its end= word is the protocol's reason (idle,
 * auth-failed, quit, ...) or, for an end without a last line, one of
 * these words. */
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
