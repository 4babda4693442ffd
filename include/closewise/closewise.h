/*
 * closewise.h - the one header users include.
 *
 * libclosewise makes TCP connections end correctly: reads report peer
 * close, reset and timeout unambiguously, close is graceful by default and
 * delivers the last message, and every handle is released exactly once.
 */
#ifndef CLOSEWISE_H
#define CLOSEWISE_H

#define CW_VERSION_MAJOR 0
#define CW_VERSION_MINOR 1
#define CW_VERSION_PATCH 0
#define CW_VERSION_STRING "0.1.0"

#include <closewise/conn.h>
#include <closewise/end.h>
#include <closewise/diag.h>
#include <closewise/backoff.h>
#include <closewise/loop.h>
#include <closewise/stream.h>
#include <closewise/server.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version string, which may differ from the header's. */
const char *cw_version(void);

#ifdef __cplusplus
}
#endif
#endif
