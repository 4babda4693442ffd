/* addr.h - the one address formatter (addr.c), for the library and the
 * CLI alike. Internal. */
#ifndef CW_NET_ADDR_H
#define CW_NET_ADDR_H

#include <stddef.h>

/* "127.0.0.1:80" or "[::1]:80" from a family (AF_INET, AF_INET6), the
 * address bytes (4 or 16) and a port. Returns the length, CW_EINVAL or
 * CW_ETOOLONG. */
int cw__addr_format(int family, const void *addr, unsigned port, char *buf, size_t size);

#endif
