/* trace_launch.c - what running a program under libclosewise-trace.so
 * takes: the library (beside the closewise binary in a build tree, or in
 * LIBDIR/closewise/ once installed), a look at the program (LD_PRELOAD
 * cannot reach a static binary: say so rather than report nothing), an
 * empty record file, and the child's environment. */
#define _GNU_SOURCE
#include "trace.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CW_TRACE_RELDIR
#define CW_TRACE_RELDIR "../lib"
#endif

static int readable(const char *p)
{
    return access(p, R_OK) == 0;
}

/* $CW_TRACE_LIB, else beside our binary (build tree), else the installed
 * place relative to it (bin/../lib/closewise/), so any prefix works. */
static int find_lib(char *out, size_t size)
{
    const char *env = getenv("CW_TRACE_LIB");
    if (env && env[0]) {
        snprintf(out, size, "%s", env);
        return readable(out) ? 0 : -1;
    }
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    const char *dir = dirname(exe);
    snprintf(out, size, "%s/libclosewise-trace.so", dir);
    if (readable(out))
        return 0;
    snprintf(out, size, "%s/%s/closewise/libclosewise-trace.so", dir, CW_TRACE_RELDIR);
    return readable(out) ? 0 : -1;
}

/* cmd as execvp would find it. */
static int resolve(const char *cmd, char *out, size_t size)
{
    if (strchr(cmd, '/')) {
        snprintf(out, size, "%s", cmd);
        return access(out, X_OK) == 0 ? 0 : -1;
    }
    const char *path = getenv("PATH");
    char copy[4096];
    snprintf(copy, sizeof copy, "%s", path && path[0] ? path : "/usr/local/bin:/usr/bin:/bin");
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(out, size, "%s/%s", d[0] ? d : ".", cmd);
        if (access(out, X_OK) == 0)
            return 0;
    }
    return -1;
}

enum kind { K_UNKNOWN, K_DYNAMIC, K_STATIC, K_SCRIPT };

/* Dynamic ELF (has a PT_INTERP: the loader, which honours LD_PRELOAD),
 * static ELF (none: nothing will load the library), or a "#!" script
 * (interp gets its interpreter, resolved through env). */
static enum kind look_at(const char *path, char *interp, size_t size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return K_UNKNOWN;
    unsigned char head[512];
    ssize_t n = pread(fd, head, sizeof head - 1, 0);
    enum kind k = K_UNKNOWN;
    if (n > 2 && head[0] == '#' && head[1] == '!') {
        head[n] = '\0';
        char *save = NULL, *line = strtok_r((char *)head + 2, "\n", &save);
        char *s2 = NULL, *prog = line ? strtok_r(line, " \t", &s2) : NULL;
        char *arg = prog ? strtok_r(NULL, " \t", &s2) : NULL;
        if (prog && !strcmp(basename(prog), "env") && arg)
            k = resolve(arg, interp, size) == 0 ? K_SCRIPT : K_UNKNOWN;
        else if (prog)
            k = (snprintf(interp, size, "%s", prog), K_SCRIPT);
    } else if (n >= (ssize_t)sizeof(Elf64_Ehdr) && !memcmp(head, ELFMAG, SELFMAG) &&
               head[EI_CLASS] == ELFCLASS64) {
        Elf64_Ehdr eh;
        memcpy(&eh, head, sizeof eh);
        k = K_STATIC;
        for (int i = 0; i < eh.e_phnum; i++) {
            Elf64_Phdr ph;
            if (pread(fd, &ph, sizeof ph, (off_t)(eh.e_phoff + (uint64_t)i * eh.e_phentsize)) !=
                (ssize_t)sizeof ph) {
                k = K_UNKNOWN;
                break;
            }
            if (ph.p_type == PT_INTERP)
                k = K_DYNAMIC;
        }
    }
    close(fd);
    return k;
}

int trec_launch_prepare(struct trec_launch *l, const char *cmd0)
{
    memset(l, 0, sizeof *l);
    if (find_lib(l->lib, sizeof l->lib) < 0) {
        l->lib[0] = '\0';
        snprintf(l->why, sizeof l->why,
                 "libclosewise-trace.so not found (install closewise, or set CW_TRACE_LIB)");
        return -1;
    }
    char path[4096], interp[4096];
    enum kind k = K_UNKNOWN;
    if (resolve(cmd0, path, sizeof path) == 0)
        k = look_at(path, interp, sizeof interp);
    for (int depth = 0; k == K_SCRIPT && depth < 4; depth++) {
        snprintf(path, sizeof path, "%s", interp);
        k = look_at(path, interp, sizeof interp);
    }
    if (k == K_STATIC) {
        const char *base = strrchr(path, '/');
        snprintf(l->why, sizeof l->why, "static binary (%.64s): LD_PRELOAD cannot reach it",
                 base ? base + 1 : path);
        return -1;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(l->file, sizeof l->file, "%s/closewise-trace.XXXXXX",
             tmp && tmp[0] == '/' ? tmp : "/tmp");
    int fd = mkostemp(l->file, O_CLOEXEC);
    if (fd < 0) {
        snprintf(l->why, sizeof l->why, "cannot make a record file: %s", strerror(errno));
        l->file[0] = '\0';
        return -1;
    }
    /* Processes of the program that change user (su, a setuid helper)
     * must still be able to append. */
    fchmod(fd, 0666);
    close(fd);
    return 0;
}

static void prepend_env(const char *name, const char *value, const char *sep)
{
    const char *old = getenv(name);
    if (!old || !old[0]) {
        setenv(name, value, 1);
        return;
    }
    size_t len = strlen(value) + strlen(sep) + strlen(old) + 1;
    char *v = malloc(len);
    if (!v)
        return;
    snprintf(v, len, "%s%s%s", value, sep, old);
    setenv(name, v, 1);
    free(v);
}

void trec_launch_env(const struct trec_launch *l)
{
    if (!l->file[0])
        return;
    prepend_env("LD_PRELOAD", l->lib, ":");
    setenv("CW_TRACE_FILE", l->file, 1);
    /* Appended: the last setting of an option wins, the user's others stay. */
    const char *old = getenv("ASAN_OPTIONS");
    char v[4096];
    snprintf(v, sizeof v, "%s%sverify_asan_link_order=0", old ? old : "",
             old && old[0] ? ":" : "");
    setenv("ASAN_OPTIONS", v, 1);
}

void trec_launch_done(struct trec_launch *l)
{
    if (l->file[0])
        unlink(l->file);
    l->file[0] = '\0';
}
