/* trace_format.h - what libclosewise-trace.so (the LD_PRELOAD interposer,
 * src/trace/) leaves for an outside reader (`closewise trace`, the probe's
 * --where): the record file's lines and the layout of its per-descriptor
 * table. Shared by both sides; bump CW_TRACE_VERSION on any change.
 *
 * The record file (named by $CW_TRACE_FILE, appended to with one write()
 * per line by every traced process, which opens it by name for each line:
 * the reader may put a fresh empty file in its place once it has read it,
 * which keeps a long trace's file bounded) holds text lines:
 *   P pid ppid table nslots slotsize version   a process started tracing
 *                                              (after exec, or in a fork child)
 *   M pid idx bias path                        module idx of pid: an ELF file
 *                                              loaded at bias (hex)
 *   E pid fd ino t_ms eof|reset func n pc:idx... | m pc:idx...
 *                                              func returned end of stream or
 *                                              ECONNRESET on fd (socket inode
 *                                              ino) at t_ms (CLOCK_MONOTONIC);
 *                                              its stack, then the stack of the
 *                                              last read before it on that fd
 *   C pid fd ino t_ms                          pid closed fd after an E
 *   S pid fd ino t_ms how                      pid shut it down after an E
 * pc are return addresses (hex), idx the M line of the same pid (-1: none).
 *
 * The table (at `table` in pid's memory, nslots slots of slotsize bytes,
 * indexed by fd) holds each socket's last read; a reader copies a slot
 * with process_vm_readv and trusts it when seq is even and unchanged. */
#ifndef CW_TRACE_FORMAT_H
#define CW_TRACE_FORMAT_H

#include <stdint.h>

#define CW_TRACE_VERSION 1
#define CW_TRACE_DEPTH 24
#define CW_TRACE_SLOTS 65536   /* descriptors above are not traced */

enum { CW_TRACE_UNKNOWN = 0, CW_TRACE_TCP = 1, CW_TRACE_OTHER = 2 };

struct cw_trace_slot {
    uint32_t seq;          /* odd while being written */
    uint8_t busy;          /* taken by a thread (or a signal handler) */
    uint8_t kind;          /* CW_TRACE_UNKNOWN, _TCP, _OTHER */
    uint8_t eof;           /* an E record was written for this descriptor */
    uint8_t nlast;         /* frames in last[] */
    uint64_t ino;          /* the socket's inode when classified */
    int64_t t_last;        /* when the last read returned, ms */
    uint64_t last[CW_TRACE_DEPTH];   /* its return addresses */
};

#endif
