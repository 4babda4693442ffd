/* owners_bpf.c - socket owners through a BPF task_file iterator. */
#define _GNU_SOURCE
#include "inspect.h"

#include <errno.h>

int insp_bpf_attribute(cw_diag *d, struct cw_sock *v, size_t n, struct cw_attr_stats *st,
                       const char **why)
{
    (void)d;
    (void)v;
    (void)n;
    (void)st;
    *why = "this closewise was built without BPF support";
    return -ENOSYS;
}
