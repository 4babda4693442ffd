/* demo_report.c - what `closewise demo` tells: a summary in plain words,
 * the measurements as JSON, the CLOSE_WAIT timeline as an SVG chart. */
#define _GNU_SOURCE
#include "../cli.h"
#include "demo.h"

#include <stddef.h>
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
                "\"min_bytes\": %zu, \"max_bytes\": %zu}",
                c->graceful ? "true" : "false", c->reply_len, c->runs, c->complete,
                c->eof, c->reset, c->other, c->min_bytes, c->max_bytes);
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
    json_samples(d, f);
    json_cases(d, f);
    fprintf(f, "}\n");
}

/* Plot coordinates: 60 px left margin, 40 top, 600x240 plot area. */
static double px(const struct demo *d, int64_t t)
{
    int64_t tmax = d->nsamples ? d->samples[d->nsamples - 1].t_ms : 1;
    return 60 + 600.0 * (double)t / (double)(tmax > 0 ? tmax : 1);
}

static double py(const struct demo *d, int v)
{
    return 280 - 240.0 * v / (d->clients > 0 ? d->clients : 1);
}

static void svg_line(FILE *f, const struct demo *d, size_t field, const char *color,
                     const char *dash)
{
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"",
            color, dash);
    for (int i = 0; i < d->nsamples; i++) {
        const int *v = (const int *)((const char *)&d->samples[i] + field);
        fprintf(f, "%.1f,%.1f ", px(d, d->samples[i].t_ms), py(d, *v));
    }
    fprintf(f, "\"/>\n");
}

int demo_write_svg(const struct demo *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int64_t tmax = d->nsamples ? d->samples[d->nsamples - 1].t_ms : 0;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"340\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"720\" height=\"340\" fill=\"white\"/>\n"
            "<text x=\"60\" y=\"22\" font-size=\"15\">closewise demo: client sockets "
            "by kernel TCP state (%d clients per group)</text>\n"
            "<line x1=\"60\" y1=\"280\" x2=\"660\" y2=\"280\" stroke=\"black\"/>\n"
            "<line x1=\"60\" y1=\"40\" x2=\"60\" y2=\"280\" stroke=\"black\"/>\n"
            "<text x=\"54\" y=\"284\" text-anchor=\"end\">0</text>\n"
            "<text x=\"54\" y=\"44\" text-anchor=\"end\">%d</text>\n"
            "<text x=\"60\" y=\"298\">0 s</text>\n"
            "<text x=\"660\" y=\"298\" text-anchor=\"end\">%.1f s</text>\n",
            d->clients, d->clients, (double)tmax / 1000);
    svg_line(f, d, offsetof(struct demo_sample, seed_estab), "#d62728", " stroke-dasharray=\"4 3\"");
    svg_line(f, d, offsetof(struct demo_sample, seed_cw), "#d62728", "");
    svg_line(f, d, offsetof(struct demo_sample, tidy_estab), "#2ca02c", " stroke-dasharray=\"4 3\"");
    svg_line(f, d, offsetof(struct demo_sample, tidy_cw), "#2ca02c", "");
    fprintf(f, "<text x=\"60\" y=\"318\" fill=\"#d62728\">the seed's client: CLOSE_WAIT "
            "(solid), ESTABLISHED (dashed)</text>\n"
            "<text x=\"60\" y=\"334\" fill=\"#2ca02c\">libclosewise client: CLOSE_WAIT "
            "(solid), ESTABLISHED (dashed)</text>\n</svg>\n");
    return fclose(f) == 0 ? 0 : -1;
}
