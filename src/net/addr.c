/* addr.c - the one address formatter: "127.0.0.1:80" and "[::1]:80", for
 * sockaddrs, cw_sock, the server's log, the exporter's labels and the CLI. */
#include "internal.h"

#include <arpa/inet.h>
#include <stdio.h>

int cw__addr_format(int family, const void *addr, unsigned port, char *buf, size_t size)
{
    char ip[INET6_ADDRSTRLEN];
    if ((family != AF_INET && family != AF_INET6) || !inet_ntop(family, addr, ip, sizeof ip))
        return CW_EINVAL;
    int n = snprintf(buf, size, family == AF_INET6 ? "[%s]:%u" : "%s:%u", ip, port);
    return (n < 0 || (size_t)n >= size) ? CW_ETOOLONG : n;
}

int cw__format_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t size)
{
    (void)len;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        int n = cw__addr_format(AF_INET, &in->sin_addr, ntohs(in->sin_port), buf, size);
        return n < 0 ? n : CW_OK;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        int n = cw__addr_format(AF_INET6, &in6->sin6_addr, ntohs(in6->sin6_port), buf, size);
        return n < 0 ? n : CW_OK;
    }
    return CW_EINVAL;
}
