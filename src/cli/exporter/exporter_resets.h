/* exporter_resets.h - closewise_close_resets_total{comm,container,reason}:
 * the resets that processes' own close() sent (a reply destroyed in
 * flight), counted from the resets collector (src/cli/resets/rstwatch.h)
 * while the exporter runs. Needs BPF; without it the family is absent and
 * closewise_close_resets_bpf_enabled says 0. */
#ifndef CW_CLI_EXPORTER_RESETS_H
#define CW_CLI_EXPORTER_RESETS_H

#include <stddef.h>
#include <stdint.h>

struct xbuf;
typedef struct xr xr;

/* Start collecting. top: (comm, container) pairs with their own series;
 * later ones are summed in comm="other" (a counter's series never
 * disappears, so the first top pairs keep theirs). netns_ino: count only
 * resets in that network namespace (0 = every one). *out is owned by the
 * caller (xr_close). Returns 0, or -1 with why filled (*out NULL). */
int xr_open(xr **out, int top, uint64_t netns_ino, char *why, size_t size);

/* Count the events waiting (never blocks). Call every few hundred ms:
 * events wait in a ring buffer of fixed size meanwhile. */
void xr_poll(xr *r);

/* The closewise_close_resets_* families; r NULL renders "BPF off". */
void xr_render(xr *r, struct xbuf *b);

void xr_close(xr **rp);

#endif
