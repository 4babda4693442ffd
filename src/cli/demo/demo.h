/* demo.h - what the parts of `closewise demo` share. */
#ifndef CW_DEMO_H
#define CW_DEMO_H

#include <closewise/closewise.h>
#include <stdio.h>
#include <sys/types.h>

#define DEMO_USER "demo"
#define DEMO_PASSWORD "demo-password"
#define DEMO_SAMPLE_MS 250
#define DEMO_MAX_SAMPLES 240
#define DEMO_MAX_CASES 8

/* One look at the kernel's table: the two client groups and the server. */
struct demo_sample {
    int64_t t_ms;
    int seed_estab, seed_cw;      /* the seed's clients, from 127.0.0.2 */
    int tidy_estab, tidy_cw;      /* libclosewise clients, from 127.0.0.3 */
    int srv_fin_wait, srv_time_wait;
};

/* One wrong-password case: how many clients got the complete reply. */
struct demo_case {
    const char *name, *condition;
    int graceful;
    size_t reply_len;
    int runs, complete, eof, reset, other;
    size_t min_bytes, max_bytes;
    pid_t server_pid;             /* the process whose close() may reset */
    int rsts;                     /* RSTs its close() sent, seen by BPF */
    int nwhere;                   /* distinct lines they came from */
    struct {
        char at[192];             /* "server.c:531 (end_session) < ..." */
        int n;
    } where[3];
};

struct demo {
    int clients, logins;
    long long idle_ms;
    const char *svg;
    const char *png;              /* --png: the SVG through rsvg-convert */
    int json;
    FILE *out;                    /* progress: stdout, or stderr with --json */
    struct demo_sample samples[DEMO_MAX_SAMPLES];
    int nsamples;
    int seed_sessions, tidy_sessions;   /* sessions the server ended */
    int64_t ends_from_ms, ends_to_ms;   /* the server's idle timeouts fell
                                           in (from, to], -1 before any */
    int seed_cw_max, seed_cw_final, tidy_cw_max, tidy_cw_final;
    int seed_cw_after_exit;       /* once the seed's process has exited */
    int tidy_cw_stuck;            /* ours seen in CLOSE_WAIT in two samples
                                     in a row (>= 250 ms): a real leak */
    uint64_t *tidy_cw_prev;       /* cookies of ours in CLOSE_WAIT last time */
    size_t tidy_cw_nprev;
    struct rst_watch *rw;         /* NULL: BPF unavailable (rst_why) */
    int rst_bpf;                  /* rw was running during part 2 */
    struct sym *sym;
    char rst_why[160];
    struct demo_case cases[DEMO_MAX_CASES];
    int ncases;
    int64_t duration_ms;
};

/* Part 1 and part 2; each returns a CLI_* exit code. */
int demo_close_wait(struct demo *d);
int demo_auth(struct demo *d);

/* Start a reference server in a helper process on 127.0.0.1, port 0, with
 * the demo user. Returns its pid (> 0) and sets *port, or -1. */
pid_t demo_server(const struct demo *d, enum cw_server_close mode,
                  int64_t idle_ms, int *port);

/* The line of the server behind each RST of part 2 (demo_rst.c), with
 * the resets collector when BPF is available. */
void demo_rst_start(struct demo *d);
void demo_rst_poll(struct demo *d, struct demo_case *c, int timeout_ms);
void demo_rst_print(const struct demo *d, const struct demo_case *c);
void demo_rst_stop(struct demo *d);

/* Reports. */
void demo_print_summary(const struct demo *d);
void demo_print_json(const struct demo *d);
int demo_write_svg(const struct demo *d, const char *path);

/* Before the run: whether the --svg/--png paths can be written and a
 * rasterizer exists for --png, so that a bad path fails at once. Returns
 * CLI_OK or CLI_SYSTEM after a one-line error. */
int demo_check_outputs(const struct demo *d);

/* After demo_write_svg: rasterize svg into png with rsvg-convert.
 * Returns CLI_OK or CLI_SYSTEM after a one-line error. */
int demo_write_png(const char *svg, const char *png);

/* Helper processes die with the demo; demo_reap(0, sig) stops them all. */
pid_t demo_fork(void);
void demo_reap(pid_t pid, int sig);
void demo_sleep_ms(int64_t ms);
int demo_interrupted(void);

#endif
