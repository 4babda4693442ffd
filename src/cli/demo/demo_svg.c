/* demo_svg.c - the demo's picture: part 1 as two panels side by side (the
 * seed's client, the libclosewise client) with CLOSE_WAIT as the heavy
 * line and the server's idle timeouts marked; part 2 as bars of complete
 * replies per close mode. Lines are labelled where they end, not in a
 * legend; colours are Okabe-Ito (told apart with any colour vision) and
 * every series also differs in weight or dash. */
#define _GNU_SOURCE
#include "../cli.h"
#include "demo.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define C_CW "#D55E00"        /* vermillion: CLOSE_WAIT, the hero */
#define C_EST "#0072B2"       /* blue: ESTABLISHED; the 20-byte reply */
#define C_LONG "#E69F00"      /* orange: the 256 KiB reply */
#define C_AXIS "#444444"
#define C_GRID "#E4E4E4"
#define C_NOTE "#555555"
/* A white outline under a label keeps it readable where a line crosses. */
#define HALO "stroke=\"white\" stroke-width=\"4\" paint-order=\"stroke\" "

#define W 960
#define PLOT_TOP 96
#define PLOT_H 200
#define PLOT_W 360
#define BAR_X 330
#define BAR_W 370

/* XML text: the file:line notes carry '<'. */
static void put_text(FILE *f, const char *s)
{
    for (; *s; s++)
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
}

/* <text> at (x, y) with extra attributes. */
static void text_at(FILE *f, double x, double y, const char *attrs, const char *s)
{
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\"%s%s>", x, y, attrs[0] ? " " : "", attrs);
    put_text(f, s);
    fputs("</text>\n", f);
}

/* A tick step of 1, 2 or 5 times a power of ten, giving about n ticks. */
static double nice_step(double range, int n)
{
    double raw = range / n, p = pow(10, floor(log10(raw > 0 ? raw : 1)));
    double m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* ---- part 1 ---- */

struct panel {
    double x0;                /* left edge of the plot */
    double tmax_s;
    int ymax;
};

static double pan_x(const struct panel *p, int64_t t_ms)
{
    return p->x0 + PLOT_W * ((double)t_ms / 1000.0) / p->tmax_s;
}

static double pan_y(const struct panel *p, int v)
{
    return PLOT_TOP + PLOT_H - (double)PLOT_H * v / p->ymax;
}

/* Grid, ticks with their values, and the axes' titles. */
static void panel_axes(FILE *f, const struct panel *p, int y_title)
{
    char s[64];
    double ys = nice_step(p->ymax, 4), xs = nice_step(p->tmax_s, 6);
    for (double v = 0; v <= p->ymax + 1e-9; v += ys) {
        double y = pan_y(p, (int)v);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n",
                p->x0, y, p->x0 + PLOT_W, y, v > 0 ? C_GRID : "#BBBBBB");
        snprintf(s, sizeof s, "%g", v);
        text_at(f, p->x0 - 6, y + 4, "text-anchor=\"end\"", s);
    }
    for (double t = 0; t <= p->tmax_s + 1e-9; t += xs) {
        double x = p->x0 + PLOT_W * t / p->tmax_s;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\"/>\n", x,
                PLOT_TOP + PLOT_H, x, PLOT_TOP + PLOT_H + 5, C_AXIS);
        snprintf(s, sizeof s, "%g", t);
        text_at(f, x, PLOT_TOP + PLOT_H + 18, "text-anchor=\"middle\"", s);
    }
    fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\"/>\n", p->x0,
            PLOT_TOP, p->x0, PLOT_TOP + PLOT_H, C_AXIS);
    text_at(f, p->x0 + PLOT_W / 2.0, PLOT_TOP + PLOT_H + 36,
            "text-anchor=\"middle\" fill=\"" C_NOTE "\"", "time since the clients started (s)");
    if (y_title) {
        snprintf(s, sizeof s, "rotate(-90 %.1f %d)", p->x0 - 40, PLOT_TOP + PLOT_H / 2);
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" transform=\"%s\" text-anchor=\"middle\" "
                   "fill=\"" C_NOTE "\">client sockets</text>\n",
                p->x0 - 40, PLOT_TOP + PLOT_H / 2, s);
    }
}

/* The interval in which the server's idle timeout ended the sessions. */
static void panel_timeout(FILE *f, const struct demo *d, const struct panel *p)
{
    if (d->ends_from_ms < 0)
        return;
    double x0 = pan_x(p, d->ends_from_ms), x1 = pan_x(p, d->ends_to_ms);
    fprintf(f, "<rect class=\"idle-timeout\" x=\"%.1f\" y=\"%d\" width=\"%.1f\" height=\"%d\" "
               "fill=\"#000000\" fill-opacity=\"0.07\"/>\n"
               "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"%s\" "
               "stroke-dasharray=\"3 3\"/>\n",
            x0, PLOT_TOP, x1 - x0, PLOT_H, x0, PLOT_TOP - 8, x0, PLOT_TOP + PLOT_H, C_AXIS);
    char s[96];
    snprintf(s, sizeof s, "server's idle timeout (%.1f s)", (double)d->idle_ms / 1000);
    text_at(f, x0 - 4, PLOT_TOP - 12, "class=\"idle-timeout-label\" font-size=\"11\" "
                                      "fill=\"" C_NOTE "\"", s);
}

static int sample_value(const struct demo_sample *s, size_t field)
{
    return *(const int *)((const char *)s + field);
}

static void series(FILE *f, const struct demo *d, const struct panel *p, size_t field,
                   const char *color, double width, const char *dash, const char *cls)
{
    fprintf(f, "<polyline class=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"%.1f\" "
               "stroke-linejoin=\"round\"%s points=\"",
            cls, color, width, dash);
    fprintf(f, "%.1f,%.1f", pan_x(p, 0), pan_y(p, 0));
    for (int i = 0; i < d->nsamples; i++)
        fprintf(f, " %.1f,%.1f", pan_x(p, d->samples[i].t_ms),
                pan_y(p, sample_value(&d->samples[i], field)));
    fputs("\"/>\n", f);
}

/* Direct labels: ESTABLISHED under its peak, CLOSE_WAIT above its end
 * (the y axis has headroom above the client count for it), so the two
 * never share a height and the zero line keeps its name. */
static void panel_labels(FILE *f, const struct demo *d, const struct panel *p, size_t est,
                         size_t cw)
{
    int imax = 0;
    for (int i = 0; i < d->nsamples; i++)
        if (sample_value(&d->samples[i], est) > sample_value(&d->samples[imax], est))
            imax = i;
    char s[96];
    int v = sample_value(&d->samples[imax], est);
    double y = pan_y(p, v);
    snprintf(s, sizeof s, "ESTABLISHED (%d)", v);
    text_at(f, pan_x(p, d->samples[imax].t_ms) + 4, y + 16,
            HALO "class=\"label-established\" fill=\"" C_EST "\"", s);
    const struct demo_sample *last = &d->samples[d->nsamples - 1];
    v = sample_value(last, cw);
    y = pan_y(p, v);
    snprintf(s, sizeof s, "CLOSE_WAIT: %d%s", v,
             v ? " (never closed)" : " (each closed at once)");
    text_at(f, p->x0 + PLOT_W - 2, y - 9,
            HALO "class=\"label-close-wait\" text-anchor=\"end\" font-weight=\"bold\" "
            "fill=\"" C_CW "\"", s);
}

static void panel(FILE *f, const struct demo *d, struct panel *p, int seed)
{
    size_t est = seed ? offsetof(struct demo_sample, seed_estab)
                      : offsetof(struct demo_sample, tidy_estab);
    size_t cw = seed ? offsetof(struct demo_sample, seed_cw)
                     : offsetof(struct demo_sample, tidy_cw);
    fprintf(f, "<g class=\"panel\" id=\"%s\">\n", seed ? "panel-seed" : "panel-libclosewise");
    text_at(f, p->x0, PLOT_TOP - 32, "font-size=\"14\" font-weight=\"bold\"",
            seed ? "The seed's client: never calls close()"
                 : "The libclosewise client: closes on end of stream");
    panel_axes(f, p, seed);
    panel_timeout(f, d, p);
    series(f, d, p, est, C_EST, 2, " stroke-dasharray=\"7 4\"", "established");
    series(f, d, p, cw, C_CW, 4.5, "", "close-wait");
    panel_labels(f, d, p, est, cw);
    fputs("</g>\n", f);
}

static void part1(FILE *f, const struct demo *d)
{
    int64_t tmax = d->nsamples ? d->samples[d->nsamples - 1].t_ms : 1000;
    int n = d->clients > 0 ? d->clients : 1;
    double step = nice_step(n, 4);
    /* headroom above the client count for the labels of the top line */
    struct panel p = {.x0 = 80, .tmax_s = tmax > 0 ? tmax / 1000.0 : 1,
                      .ymax = (int)(ceil(n * 1.15 / step) * step)};
    panel(f, d, &p, 1);
    p.x0 = 80 + PLOT_W + 120;
    panel(f, d, &p, 0);
}

/* ---- part 2 ---- */

static const struct demo_case *case_named(const struct demo *d, const char *prefix)
{
    for (int i = 0; i < d->ncases; i++)
        if (!strncmp(d->cases[i].name, prefix, strlen(prefix)))
            return &d->cases[i];
    return NULL;
}

/* One bar: complete replies out of the runs, with its count written next
 * to it (a bar of zero keeps an outline and its "0/50"). */
static void bar(FILE *f, double y, const char *what, const struct demo_case *c,
                const char *color)
{
    char s[160];
    double frac = c && c->runs ? (double)c->complete / c->runs : 0;
    text_at(f, BAR_X - 8, y + 13, "text-anchor=\"end\" font-size=\"12\"", what);
    fprintf(f, "<rect class=\"bar\" x=\"%d\" y=\"%.1f\" width=\"%.1f\" height=\"18\" "
               "fill=\"%s\" stroke=\"%s\"/>\n",
            BAR_X, y, frac * BAR_W > 1 ? frac * BAR_W : 1, color, color);
    if (!c)
        return;
    snprintf(s, sizeof s, "%d/%d complete, then %s", c->complete, c->runs,
             c->reset ? "reset (RST)" : "end of stream");
    text_at(f, BAR_X + frac * BAR_W + 6, y + 13, "font-size=\"12\"", s);
}

/* Under a resetting mode: the server line its RSTs came from. */
static void rst_note(FILE *f, const struct demo *d, double y, const struct demo_case *c)
{
    char s[256];
    if (!c || c->graceful)
        return;
    if (!d->rst_bpf)
        snprintf(s, sizeof s, "(BPF unavailable: cannot name the line)");
    else if (c->nwhere)
        snprintf(s, sizeof s, "RST sent by the server's close() at %s", c->where[0].at);
    else
        return;
    /* Clear of the 0% axis line, and haloed where the grid lines cross it. */
    text_at(f, BAR_X + 8, y, "class=\"rst-line\" font-size=\"11\" " HALO "fill=\"" C_NOTE "\"",
            s);
}

static void part2_axis(FILE *f, double top, double bottom)
{
    for (int pct = 0; pct <= 100; pct += 25) {
        double x = BAR_X + BAR_W * pct / 100.0;
        char s[16];
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\"/>\n", x,
                top, x, bottom, pct ? C_GRID : C_AXIS);
        snprintf(s, sizeof s, "%d%%", pct);
        text_at(f, x, bottom + 16, "text-anchor=\"middle\"", s);
    }
    text_at(f, BAR_X + BAR_W / 2.0, bottom + 34, "text-anchor=\"middle\" fill=\"" C_NOTE "\"",
            "wrong-password logins whose client received the complete reply");
}

static void part2(FILE *f, const struct demo *d, double top)
{
    static const char *const modes[][3] = {
        {"graceful close", "reference server, graceful", "256 KiB reply, graceful"},
        {"SO_LINGER {1,0}", "reference server, SO_LINGER", "256 KiB reply, SO_LINGER"},
        {"plain close(), input unread", "reference server, plain", "256 KiB reply, plain"}};
    char s[160];
    fputs("<g class=\"chart\" id=\"part2\">\n", f);
    snprintf(s, sizeof s, "Part 2: is the \"wrong password\" reply delivered? (%d logins per bar)",
             d->logins);
    text_at(f, 20, top, "font-size=\"14\" font-weight=\"bold\"", s);
    double y = top + 22;
    /* The axis and grid first: bars and words are drawn over them. */
    part2_axis(f, y - 6, y + 3 * 74 - 14);
    for (int m = 0; m < 3; m++) {
        const struct demo_case *shortc = case_named(d, modes[m][1]);
        const struct demo_case *longc = case_named(d, modes[m][2]);
        text_at(f, 20, y + 13, "font-weight=\"bold\" class=\"mode\"", modes[m][0]);
        bar(f, y, "20-byte reply", shortc, C_EST);
        bar(f, y + 22, "256 KiB reply", longc, C_LONG);
        rst_note(f, d, y + 56, shortc);
        y += 74;
    }
    text_at(f, 20, y + 42, "font-size=\"11\" fill=\"" C_NOTE "\"",
            "A short reply that already reached the client survives a RST on Linux; on Windows, "
            "the seed's platform, the RST discards unread data too.");
    fputs("</g>\n", f);
}

int demo_write_svg(const struct demo *d, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    int h = PLOT_TOP + PLOT_H + 60 + 30 + 3 * 74 + 70;
    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
               "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
               "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Verdana, sans-serif\" "
               "font-size=\"12\">\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n",
            W, h, W, h, W, h);
    text_at(f, 20, 26, "font-size=\"17\" font-weight=\"bold\"",
            "closewise demo: the seed's bug, and the same clients on libclosewise");
    char s[200];
    snprintf(s, sizeof s, "Part 1: %d clients per group, client sockets by kernel TCP state "
                          "(sock_diag, every %d ms)", d->clients, DEMO_SAMPLE_MS);
    text_at(f, 20, 46, "fill=\"" C_NOTE "\"", s);
    part1(f, d);
    part2(f, d, PLOT_TOP + PLOT_H + 84);
    fputs("</svg>\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

/* ---- output paths ---- */

/* Whether path can be created or replaced: its directory must exist and
 * be writable, and path must not be a directory. */
static int writable(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        errno = EISDIR;
        return -1;
    }
    if (stat(dir, &sb) < 0)
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return access(dir, W_OK) == 0 && (access(path, F_OK) < 0 || access(path, W_OK) == 0)
               ? 0
               : -1;
}

/* rsvg-convert on PATH, the rasterizer --png uses. */
static int have_rsvg(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path && *path ? path : "/usr/bin:/bin");
    char *save, *dir = strtok_r(buf, ":", &save);
    for (; dir; dir = strtok_r(NULL, ":", &save)) {
        char exe[4200];
        snprintf(exe, sizeof exe, "%s/rsvg-convert", *dir ? dir : ".");
        if (access(exe, X_OK) == 0)
            return 1;
    }
    return 0;
}

int demo_check_outputs(const struct demo *d)
{
    const char *paths[] = {d->svg, d->png};
    const char *opts[] = {"--svg", "--png"};
    for (int i = 0; i < 2; i++)
        if (paths[i] && writable(paths[i]) < 0) {
            cli_error("demo: %s: cannot write '%s': %s", opts[i], paths[i], strerror(errno));
            return CLI_SYSTEM;
        }
    if (d->png && !have_rsvg()) {
        cli_error("demo: --png needs rsvg-convert (Debian package librsvg2-bin), not found "
                  "in PATH; --svg writes the picture without it");
        return CLI_SYSTEM;
    }
    return CLI_OK;
}

int demo_write_png(const char *svg, const char *png)
{
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (null >= 0)
            dup2(null, STDOUT_FILENO);
        execlp("rsvg-convert", "rsvg-convert", "--background-color", "white", "-o", png, svg,
               (char *)NULL);
        _exit(127);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        cli_error("demo: rsvg-convert could not write '%s' (status %d)", png,
                  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        return CLI_SYSTEM;
    }
    return CLI_OK;
}
