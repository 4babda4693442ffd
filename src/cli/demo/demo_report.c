/* demo_report.c - what `closewise demo` tells: a summary in plain words,
 * the measurements as JSON (the charts are demo_svg.c's). */
#define _GNU_SOURCE
#include "../cli.h"
#include "demo.h"

#include <stdlib.h>
#include <string.h>

static const struct demo_case *find_case(const struct demo *d, const char *prefix)
{
    for (int i = 0; i < d->ncases; i++)
        if (strncmp(d->cases[i].name, prefix, strlen(prefix)) == 0)
            return &d->cases[i];
    return NULL;
}

static void print_delivery(const struct demo *d, const char *label, const char *a,
                           const char *b)
{
    const struct demo_case *x = find_case(d, a), *y = find_case(d, b);
    if (x && y)
        fprintf(d->out, "  %-32s %4d/%-4d of the 20-byte reply, %4d/%-4d of the 256 KiB one\n",
                label, x->complete, x->runs, y->complete, y->runs);
}

void demo_print_summary(const struct demo *d)
{
    FILE *f = d->out;
    fprintf(f, "\nWhat happened\n"
        "  The server ended every idle session the same way: \"ERR idle timeout\",\n"
        "  then its FIN. The client's kernel acknowledged each FIN by itself.\n"
        "  - The seed's clients read the line, then recv() returned 0, and they\n"
        "    returned without close(): CLOSE_WAIT rose to %d of %d and was still %d\n"
        "    when sampling stopped. Only the process's exit released them (%d left after).\n"
        "  - The libclosewise clients got CW_EOF and closed at once: %d of %d\n"
        "    sessions ended, %d socket(s) seen in CLOSE_WAIT in two samples in a row,\n"
        "    %d at the end (a sample may catch one in the instant between the FIN's\n"
        "    arrival and close(); the most in one sample was %d).\n",
        d->seed_cw_max, d->clients, d->seed_cw_final, d->seed_cw_after_exit,
        d->tidy_sessions, d->clients, d->tidy_cw_stuck, d->tidy_cw_final, d->tidy_cw_max);
    fprintf(f, "  - Complete \"wrong password\" replies received:\n");
    print_delivery(d, "graceful close", "reference server, graceful", "256 KiB reply, graceful");
    print_delivery(d, "SO_LINGER {1,0}", "reference server, SO_LINGER", "256 KiB reply, SO_LINGER");
    print_delivery(d, "plain close(), input unread", "reference server, plain",
                   "256 KiB reply, plain");
    fprintf(f, "\nWhy\n"
        "  Only the application's close() sends the second FIN, so a program that\n"
        "  never calls it keeps CLOSE_WAIT for its whole life; reconnecting on new\n"
        "  ports, the seed's client piled up thousands.\n"
        "  A RST (SO_LINGER {1,0}, or close() with unread input) destroys whatever\n"
        "  is still queued on the sending side. On Linux a short reply that already\n"
        "  reached the client survives, but the client sees ECONNRESET instead of\n"
        "  the end of stream; on Windows, the seed's platform, the RST also discards\n"
        "  what the client has not read yet. shutdown(SHUT_WR), reading until the\n"
        "  peer's FIN, then close() delivers every byte.\n"
        "\n(%d clients per group, %d logins per case, %.1f s.)\n",
        d->clients, d->logins, (double)d->duration_ms / 1000);
}

static void json_samples(const struct demo *d, FILE *f)
{
    fprintf(f, "  \"samples\": [");
    for (int i = 0; i < d->nsamples; i++) {
        const struct demo_sample *s = &d->samples[i];
        fprintf(f, "%s\n    {\"t_ms\": %lld, \"seed_established\": %d, \"seed_close_wait\": %d, "
                "\"tidy_established\": %d, \"tidy_close_wait\": %d, "
                "\"server_fin_wait\": %d, \"server_time_wait\": %d}",
                i ? "," : "", (long long)s->t_ms, s->seed_estab, s->seed_cw,
                s->tidy_estab, s->tidy_cw, s->srv_fin_wait, s->srv_time_wait);
    }
    fprintf(f, "\n  ],\n");
}

/* The RSTs the server's close() sent and the lines they came from;
 * null without BPF (nothing is known, not zero). */
static void json_rst(const struct demo *d, const struct demo_case *c, FILE *f)
{
    if (!d->rst_bpf) {
        fprintf(f, ", \"server_rsts\": null, \"rst_at\": null");
        return;
    }
    fprintf(f, ", \"server_rsts\": %d, \"rst_at\": [", c->rsts);
    for (int i = 0; i < c->nwhere; i++) {
        fprintf(f, "%s{\"at\": ", i ? ", " : "");
        cli_json_str(f, c->where[i].at);
        fprintf(f, ", \"count\": %d}", c->where[i].n);
    }
    fputc(']', f);
}

static void json_cases(const struct demo *d, FILE *f)
{
    fprintf(f, "  \"auth\": [");
    for (int i = 0; i < d->ncases; i++) {
        const struct demo_case *c = &d->cases[i];
        fprintf(f, "%s\n    {\"case\": ", i ? "," : "");
        cli_json_str(f, c->name);
        fprintf(f, ", \"condition\": ");
        cli_json_str(f, c->condition);
        fprintf(f, ", \"graceful\": %s, \"reply_bytes\": %zu, \"runs\": %d, "
                "\"complete\": %d, \"eof\": %d, \"reset\": %d, \"other\": %d, "
                "\"min_bytes\": %zu, \"max_bytes\": %zu",
                c->graceful ? "true" : "false", c->reply_len, c->runs, c->complete,
                c->eof, c->reset, c->other, c->min_bytes, c->max_bytes);
        json_rst(d, c, f);
        fputc('}', f);
    }
    fprintf(f, "\n  ]\n");
}

void demo_print_json(const struct demo *d)
{
    FILE *f = stdout;
    fprintf(f, "{\n  \"schema\": 1,\n  \"clients\": %d,\n  \"logins\": %d,\n  \"idle_timeout_ms\": %lld,\n"
            "  \"duration_ms\": %lld,\n", d->clients, d->logins, d->idle_ms,
            (long long)d->duration_ms);
    fprintf(f, "  \"close_wait\": {\"seed_max\": %d, \"seed_final\": %d, "
            "\"seed_after_exit\": %d, \"tidy_max\": %d, \"tidy_final\": %d, "
            "\"tidy_stuck\": %d, \"seed_sessions_ended\": %d, \"tidy_sessions_ended\": %d},\n",
            d->seed_cw_max, d->seed_cw_final, d->seed_cw_after_exit, d->tidy_cw_max,
            d->tidy_cw_final, d->tidy_cw_stuck, d->seed_sessions, d->tidy_sessions);
    fprintf(f, "  \"idle_timeouts_ms\": [%lld, %lld],\n", (long long)d->ends_from_ms,
            (long long)d->ends_to_ms);
    fprintf(f, "  \"resets_bpf\": %s,\n", d->rst_bpf ? "true" : "false");
    json_samples(d, f);
    json_cases(d, f);
    fprintf(f, "}\n");
}
