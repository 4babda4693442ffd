/* cpus.c - how many CPUs this process may use, for sizing thread pools
 * (the server's loops, its password-check threads). */
#define _GNU_SOURCE
#include "internal.h"

#include <sched.h>
#include <unistd.h>

/* The CPUs this process may run on (taskset, a container's cpuset), not
 * every CPU online: more threads than that only queue for the same cores. */
int cw__usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
