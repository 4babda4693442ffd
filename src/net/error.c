/* error.c - result codes, time and version. */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

_Static_assert(CW_ERESET == -ECONNRESET, "CW_ERESET must equal -ECONNRESET");
_Static_assert(CW_ETIMEDOUT == -ETIMEDOUT, "CW_ETIMEDOUT must equal -ETIMEDOUT");
_Static_assert(CW_EINVAL == -EINVAL, "CW_EINVAL must equal -EINVAL");

const char *cw_strerror(int rc)
{
    switch (rc) {
    case CW_OK: return "success";
    case CW_EOF: return "peer closed the connection (end of stream)";
    case CW_ETOOLONG: return "line or message too long";
    case CW_ERESOLVE: return "host name lookup failed";
    case CW_ECLOSING: return "connection is closing";
    case CW_ERESET: return "connection reset by peer";
    case CW_ETIMEDOUT: return "timed out";
    case -EADDRNOTAVAIL:
        return "local address not available (a bound port may still be in "
               "TIME_WAIT towards the same peer)";
    }
    if (rc < 0 && rc > -4096)
        return strerror(-rc);
    return "unknown error";
}

int64_t cw_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *cw_version(void)
{
    return CW_VERSION_STRING;
}
