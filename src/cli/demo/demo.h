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
};

struct demo {
    int clients, logins;
    long long idle_ms;
    const char *svg;
    int json;
    FILE *out;                    /* progress: stdout, or stderr with --json */
    struct demo_sample samples[DEMO_MAX_SAMPLES];
    int nsamples;
    int seed_sessions, tidy_sessions;   /* sessions the server ended */
    int seed_cw_max, seed_cw_final, tidy_cw_max, tidy_cw_final;
    int seed_cw_after_exit;       /* once the seed's process has exited */
    int tidy_cw_stuck;            /* ours seen in CLOSE_WAIT in two samples
                                     in a row (>= 250 ms): a real leak */
    uint64_t *tidy_cw_prev;       /* cookies of ours in CLOSE_WAIT last time */
    size_t tidy_cw_nprev;
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

/* Reports. */
void demo_print_summary(const struct demo *d);
void demo_print_json(const struct demo *d);
int demo_write_svg(const struct demo *d, const char *path);

/* Helper processes die with the demo; demo_reap(0, sig) stops them all. */
pid_t demo_fork(void);
void demo_reap(pid_t pid, int sig);
void demo_sleep_ms(int64_t ms);
int demo_interrupted(void);

#endif
