/* test_symbolize.c - the symbolizer (src/cli/symbolize.c, libdw) on this
 * very process, no BPF needed: a call made inside an always_inline
 * function is two frames, the inlined function with its line and the
 * function it was inlined into with the line of the call (lines from
 * __LINE__, not written here); code of libclosewise's core I/O layer
 * (linked in from src/net/) is marked as the library's and this file's
 * is not; sym_pick names the caller, not the C library or libclosewise,
 * names a function gcc split in two once, and falls back when nothing
 * else is there. */
#define _GNU_SOURCE
#include "cwtest.h"

/* The CLI is a program, not a library: its sources are compiled in. */
#include "../src/cli/symbolize.c"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int inner_line, call_line;

static __attribute__((noinline)) uint64_t return_address(void)
{
    return (uint64_t)(uintptr_t)__builtin_return_address(0);
}

/* The empty asm after the call keeps it a call, not a tail jump (which
 * would leave no frame of outer() to find). */
static inline __attribute__((always_inline)) uint64_t inner(void)
{
    uint64_t r;
    inner_line = __LINE__; r = return_address();
    __asm__ volatile("" : "+r"(r));
    return r;
}

static __attribute__((noinline)) uint64_t outer(void)
{
    call_line = __LINE__; return inner();
}

static const char *base(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

static void test_inlined_call(void **state)
{
    struct sym *s = sym_new();
    struct sym_loc fr[SYM_INLINE];
    uint64_t pc = outer();
    int n = sym_lookup(s, getpid(), pc, 1, fr, SYM_INLINE);
    if (n < 2)
        fail_msg("%d frame(s) at the call inside inner(): %s:%d (%s)", n, fr[0].file,
                 fr[0].line, fr[0].function);
    assert_string_equal(fr[0].function, "inner");
    assert_string_equal(base(fr[0].file), "test_symbolize.c");
    assert_int_equal(fr[0].line, inner_line);
    assert_string_equal(fr[1].function, "outer");
    assert_string_equal(base(fr[1].file), "test_symbolize.c");
    assert_int_equal(fr[1].line, call_line);
    assert_int_equal(fr[0].addr, pc);
    assert_int_equal(fr[1].addr, pc);
    assert_false(fr[0].lib || fr[1].lib);
    char text[512];
    sym_format(&fr[0], text, sizeof text);
    char want[64];
    snprintf(want, sizeof want, "test_symbolize.c:%d (inner)", inner_line);
    assert_string_equal(text, want);
    /* Asked for one frame: the innermost. */
    assert_int_equal(sym_lookup(s, getpid(), pc, 1, fr, 1), 1);
    assert_string_equal(fr[0].function, "inner");
    sym_free(&s);
}

/* The function holding an address is the last of its frames (an -O2
 * build may inline a call at a function's first instruction). */
static void test_library_frames(void **state)
{
    struct sym *s = sym_new();
    struct sym_loc fr[SYM_INLINE];
    assert_non_null(cw_version());   /* this program holds libclosewise */
    uint64_t lib = (uint64_t)(uintptr_t)&cw_stream_close;
    int n = sym_lookup(s, getpid(), lib, 0, fr, SYM_INLINE);
    assert_true(n >= 1);
    assert_string_equal(fr[n - 1].function, "cw_stream_close");
    if (!strstr(fr[n - 1].file, "src/net/stream.c"))
        fail_msg("cw_stream_close in '%s'", fr[n - 1].file);
    for (int i = 0; i < n; i++)
        assert_true(fr[i].lib);
    uint64_t own = (uint64_t)(uintptr_t)&test_library_frames;
    n = sym_lookup(s, getpid(), own, 0, fr, SYM_INLINE);
    assert_true(n >= 1);
    if (strcmp(fr[n - 1].function, "test_library_frames"))
        fail_msg("0x%llx (module+0x%llx) named %s:%d (%s)", (unsigned long long)own,
                 (unsigned long long)fr[n - 1].rel, fr[n - 1].file, fr[n - 1].line,
                 fr[n - 1].function);
    for (int i = 0; i < n; i++)
        assert_false(fr[i].lib);
    sym_free(&s);
}

static struct sym_loc loc(const char *module, const char *function, int lib)
{
    struct sym_loc l;
    memset(&l, 0, sizeof l);
    snprintf(l.module, sizeof l.module, "%s", module);
    snprintf(l.function, sizeof l.function, "%s", function);
    l.lib = lib;
    return l;
}

static void test_pick(void **state)
{
    int idx[4];
    struct sym_loc st[] = {loc("libc.so.6", "__close", 0), loc("libasan.so.8", "close", 0),
                           loc("closewise", "finish", 1), loc("closewise", "cw_stream_close", 1),
                           loc("closewise", "reply", 0), loc("closewise", "on_line", 0),
                           loc("closewise", "dispatch", 1), loc("closewise", "run", 0)};
    assert_int_equal(sym_pick(st, 8, idx, 4), 3);
    assert_int_equal(idx[0], 4);   /* the caller: neither libc nor the library */
    assert_int_equal(idx[1], 5);
    assert_int_equal(idx[2], 7);
    assert_int_equal(sym_pick(st, 8, idx, 1), 1);
    assert_int_equal(idx[0], 4);
    /* Only the library's frames under the C library: name them. */
    assert_int_equal(sym_pick(st, 4, idx, 4), 2);
    assert_int_equal(idx[0], 2);
    assert_int_equal(idx[1], 3);
    /* Only the C library's: its outermost. */
    assert_int_equal(sym_pick(st, 2, idx, 4), 1);
    assert_int_equal(idx[0], 1);
    assert_int_equal(sym_pick(st, 0, idx, 4), 0);
    assert_int_equal(sym_pick(st, 8, idx, 0), 0);
    assert_true(sym_is_runtime(&st[0]) && sym_is_runtime(&st[1]));
    /* gcc's finish.part.0 called from finish's entry: one function, named once. */
    struct sym_loc split[] = {loc("libc.so.6", "__close", 0), loc("closewise", "finish", 0),
                              loc("closewise", "finish", 0), loc("closewise", "on_checked", 0)};
    split[1].split = 1;
    assert_int_equal(sym_pick(split, 4, idx, 4), 2);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    split[1].split = 0;   /* recursion stays */
    assert_int_equal(sym_pick(split, 4, idx, 4), 3);
    struct sym_loc trace = loc("libclosewise-trace.so", "read", 0);
    assert_true(sym_is_runtime(&trace));
    assert_false(sym_is_runtime(&st[2]));
}

/* Whether s holds a map of pid. */
static int held(const struct sym *s, pid_t pid)
{
#if CW_HAVE_DW
    for (int i = 0; i < SYM_CACHE; i++)
        if (s->e[i].dwfl && s->e[i].pid == pid)
            return 1;
#endif
    (void)s;
    (void)pid;
    return 0;
}

/* sym_sweep: a process's map, read on first sight, stays while it lives
 * (a zombie too), and through one more sweep once it has exited (its last
 * events are read after it is gone, and named from that map); the next
 * sweep lets it go. A live process's map stays. */
static void test_sweep_lets_exited_go(void **state)
{
    struct sym *s = sym_new();
    struct sym_loc fr[SYM_INLINE];
    uint64_t pc = (uint64_t)(uintptr_t)&outer;   /* the child's too: our image */
    pid_t child = cwt_fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    assert_true(child > 0);
    assert_true(sym_lookup(s, child, pc, 0, fr, SYM_INLINE) >= 1);
    assert_string_equal(fr[0].function, "outer");
    assert_true(sym_lookup(s, getpid(), pc, 0, fr, SYM_INLINE) >= 1);
    kill(child, SIGKILL);
    sym_sweep(s);
    sym_sweep(s);
    assert_true(held(s, child));   /* a zombie, alive until reaped */
    assert_int_equal(waitpid(child, NULL, 0), child);
    sym_sweep(s);
    assert_true(held(s, child));
    assert_true(sym_lookup(s, child, pc + 1, 0, fr, SYM_INLINE) >= 1);   /* after its exit */
    assert_string_equal(fr[0].function, "outer");
    sym_sweep(s);
    assert_false(held(s, child));
    assert_int_equal(sym_lookup(s, child, pc + 2, 0, fr, SYM_INLINE), -1);
    assert_true(held(s, getpid()));
    sym_free(&s);
}

int main(void)
{
    cwt_private_netns();
#if !CW_HAVE_DW
    print_message("built without libdw: nothing to symbolize\n");
    return 77;
#endif
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_inlined_call),
        CWT_TEST(test_library_frames),
        CWT_TEST(test_pick),
        CWT_TEST(test_sweep_lets_exited_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
