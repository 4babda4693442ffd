/* exporter_serve.h - serve the exporter's snapshot over HTTP/1.x on a
 * cw_loop. Every connection answers one request (Connection: close) and
 * ends like the reference server's sessions: the response, shutdown
 * (SHUT_WR), input discarded until the scraper's FIN or a bounded linger,
 * then close. The exporter never holds a scraper's socket in CLOSE_WAIT:
 * a FIN seen while reading closes at once. */
#ifndef CW_CLI_EXPORTER_SERVE_H
#define CW_CLI_EXPORTER_SERVE_H

#include <closewise/closewise.h>
#include <stddef.h>

struct xs_opts {
    int max_conns;              /* concurrent connections; more wait in the
                                   listen backlog */
    int64_t request_timeout_ms; /* a whole request head must arrive within */
    int64_t write_timeout_ms;   /* the response must be taken within */
    int64_t linger_ms;          /* wait for the scraper's FIN at most */
};

typedef struct xs xs;

/* Start serving on listen_fd (non-blocking, still owned by the caller).
 * *out is owned by the caller, released with xs_free(). */
int xs_new(cw_loop *loop, int listen_fd, const struct xs_opts *o, xs **out);

/* Replace the /metrics body. text (malloc'ed) passes to the server, which
 * frees it once no connection is still sending it. */
int xs_set_body(xs *s, char *text, size_t len);

/* Connections open now (for tests through the log, and for shutdown). */
int xs_conns(const xs *s);

/* Stop accepting, abort every open connection, free everything. */
void xs_free(xs **sp);

#endif
