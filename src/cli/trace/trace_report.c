/* trace_report.c - what `closewise trace` prints: every leaked socket, in
 * text (one line, then both stacks) or as one JSON document, on stderr or
 * into --output FILE (rewritten at each report: the latest snapshot). */
#define _GNU_SOURCE
#include "trace.h"
#include "../inspect/inspect.h"

#include <errno.h>
#include <string.h>
#include <sys/wait.h>

static void text_stack(FILE *f, struct trec *t, const struct trec_stack *s)
{
    trec_text frames[CW_TRACE_DEPTH];
    int n = trec_frames(t, s, frames);
    for (int i = 0; i < n; i++)
        fprintf(f, "    %s\n", frames[i]);
}

static void text_one(FILE *f, struct trec *t, const struct trec_end *e, int64_t grace_ms)
{
    char site[512], g[32], c[32];
    trec_site(t, e->pid, &e->at, site, sizeof site);
    fprintf(f, "closewise trace: pid %d%s%s%s fd %d: %s returned by %s() at %s; "
            "still open %s later", (int)e->holder, e->comm[0] ? " (" : "", e->comm,
            e->comm[0] ? ")" : "", e->holder_fd, e->eof ? "end of stream" : "ECONNRESET",
            e->func, site, insp_fmt_ms((uint64_t)grace_ms, g, sizeof g));
    if (e->t_closed)
        fprintf(f, ", closed %s after the end\n",
                insp_fmt_ms((uint64_t)(e->t_closed - e->t_ms), c, sizeof c));
    else
        fprintf(f, "\n");
    fprintf(f, "  the read that returned it (pid %d fd %d):\n", (int)e->pid, e->fd);
    text_stack(f, t, &e->at);
    if (e->last.n) {
        fprintf(f, "  the read before it:\n");
        text_stack(f, t, &e->last);
    }
}

static void json_stack(FILE *f, struct trec *t, const struct trec_stack *s)
{
    trec_text frames[CW_TRACE_DEPTH];
    int n = trec_frames(t, s, frames);
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        fputs(i ? ", " : "", f);
        cli_json_str(f, frames[i]);
    }
    fputc(']', f);
}

static void json_one(FILE *f, struct trec *t, const struct trec_end *e)
{
    char site[512];
    trec_site(t, e->pid, &e->at, site, sizeof site);
    fprintf(f, "    {\"pid\": %d, \"comm\": ", (int)e->holder);
    cli_json_str(f, e->comm);
    fprintf(f, ", \"fd\": %d, \"end\": \"%s\", \"call\": \"%s\", \"at\": ", e->holder_fd,
            e->eof ? "eof" : "reset", e->func);
    cli_json_str(f, site);
    fprintf(f, ", \"reader_pid\": %d, \"reader_fd\": %d, \"closed_after_ms\": ", (int)e->pid,
            e->fd);
    if (e->t_closed)
        fprintf(f, "%lld", (long long)(e->t_closed - e->t_ms));
    else
        fputs("null", f);
    fputs(",\n     \"stack\": ", f);
    json_stack(f, t, &e->at);
    fputs(",\n     \"last_read\": ", f);
    json_stack(f, t, &e->last);
    fputc('}', f);
}

static void json_head(FILE *f, const struct trace_report *o, const int *status)
{
    fputs("{\"command\": [", f);
    for (int i = 0; o->cmd[i]; i++) {
        fputs(i ? ", " : "", f);
        cli_json_str(f, o->cmd[i]);
    }
    fprintf(f, "], \"grace_ms\": %lld, \"running\": %s, ", (long long)o->grace_ms,
            status ? "false" : "true");
    if (status && WIFEXITED(*status))
        fprintf(f, "\"exit_code\": %d, \"signal\": null,\n", WEXITSTATUS(*status));
    else if (status && WIFSIGNALED(*status))
        fprintf(f, "\"exit_code\": null, \"signal\": %d,\n", WTERMSIG(*status));
    else
        fputs("\"exit_code\": null, \"signal\": null,\n", f);
    fputs(" \"traced\": ", f);
    fputs(o->note && o->note[0] ? "false, \"note\": " : "true, \"note\": null", f);
    if (o->note && o->note[0])
        cli_json_str(f, o->note);
    fputs(",\n \"leaks\": [", f);
}

int trace_report(struct trec *t, const struct trace_report *o, const int *status)
{
    FILE *f = o->output ? fopen(o->output, "w") : stderr;
    if (!f) {
        cli_error("trace: cannot write %s: %s", o->output, strerror(errno));
        return -1;
    }
    if (t)
        trec_poll(t);
    if (o->json)
        json_head(f, o, status);
    int n = 0;
    for (size_t i = 0; t && i < trec_nends(t); i++) {
        const struct trec_end *e = trec_endat(t, i);
        if (!e->leaked)
            continue;
        if (o->json) {
            fputs(n ? ",\n" : "\n", f);
            json_one(f, t, e);
        } else {
            text_one(f, t, e, o->grace_ms);
        }
        n++;
    }
    if (o->json)
        fputs(n ? "\n ]}\n" : "]}\n", f);
    if (o->output)
        fclose(f);
    else
        fflush(f);
    return n;
}
