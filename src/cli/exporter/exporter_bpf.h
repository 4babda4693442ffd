/* exporter_bpf.h - exact CLOSE_WAIT entry times from the BPF program
 * src/bpf/cwage.bpf.c, for the exporter. Without BPF (not built, no
 * privilege, old kernel) opening fails with a reason and the exporter
 * keeps reporting tcp_info bounds. */
#ifndef CW_CLI_EXPORTER_BPF_H
#define CW_CLI_EXPORTER_BPF_H

#include <stddef.h>
#include <stdint.h>

typedef struct xexact xexact;

/* Load and attach the program. *out is owned by the caller (release with
 * xexact_close). On failure returns a negative result code and says why
 * in why ("load: Operation not permitted", "built without BPF", ...). */
int xexact_open(xexact **out, char *why, size_t size);

/* The CLOCK_MONOTONIC millisecond (cw_now_ms() scale) at which the
 * socket with this cookie entered CLOSE_WAIT: 1 and *entry_ms set when
 * known, 0 when the transition predates the program (or was evicted). */
int xexact_entry(xexact *x, uint64_t cookie, int64_t *entry_ms);

/* Read the whole map once: until the next xexact_load(), xexact_entry()
 * answers from that copy (a lookup in memory, not a system call per
 * socket), so a refresh that meets 75,000 new sockets costs one pass over
 * the stamps. Returns 0, or a negative errno (then xexact_entry() asks
 * the kernel per socket). */
int xexact_load(xexact *x);

/* Where a running exporter pins its map (removed when it exits cleanly),
 * so that `ls --json` can read exact entry times. */
#define XEXACT_PIN_DIR "/sys/fs/bpf/closewise"
#define XEXACT_PIN XEXACT_PIN_DIR "/cw_entry"

/* Open the map a running exporter pinned at XEXACT_PIN, read-only use:
 * 0, or a negative result code when there is none (or BPF is off). */
int xexact_open_pinned(xexact **out);

/* Unpins what xexact_open pinned, detaches and frees. */
void xexact_close(xexact **xp);

#endif
