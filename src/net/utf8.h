/* utf8.h - the one UTF-8 validator (utf8.c). No other dependency, so the
 * protocol parser's fuzzer can build with it alone. Internal. */
#ifndef CW_NET_UTF8_H
#define CW_NET_UTF8_H

#include <stddef.h>

/* The well-formed UTF-8 sequence at p: its length 2..4, 0 when the avail
 * bytes are a valid but truncated prefix, -1 when invalid (overlong,
 * surrogate, past U+10FFFF, or not a lead byte: ASCII too). */
int cw__utf8_seq(const unsigned char *p, size_t avail);

#endif
