/* probe_report.c - the probe's reports for CI (JUnit XML, TAP) and the
 * server mode's text and JSON. Every format takes each verdict's text
 * from the one function that writes it (probe.c's detail), so the text
 * reads the same everywhere. */
#define _GNU_SOURCE
#include "probe.h"
#include "../inspect/inspect.h"

#include <stdlib.h>
#include <string.h>

#define DETAIL_MAX 1024

/* Bytes of a valid UTF-8 sequence at s (1 for ASCII), 0 if invalid. */
static size_t utf8_len(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    size_t n = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
    if (!n || (s[0] >= 0xF8))
        return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    /* overlong 3-byte forms and surrogates */
    if (n == 3 && ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0)))
        return 0;
    if (n == 4 && ((s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90)))
        return 0;
    return n;
}

/* s as XML character data or attribute value: markup escaped, and what
 * XML 1.0 cannot hold (control bytes, invalid UTF-8) as U+FFFD. */
static void xml_str(FILE *f, const char *text)
{
    const unsigned char *s = (const unsigned char *)text;
    while (*s) {
        size_t n = utf8_len(s);
        if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '"')
            fputs("&quot;", f);
        else if (*s == '\'')
            fputs("&apos;", f);
        else if (n == 1 && *s < 0x20 && *s != '\t' && *s != '\n')
            fputs("\xEF\xBF\xBD", f);
        else if (n)
            fwrite(s, 1, n, f);
        else
            fputs("\xEF\xBF\xBD", f);
        s += n ? n : 1;
    }
}

static int failed(const struct probe_result *r)
{
    return r->verdict != PROBE_PASS && r->verdict != PROBE_SKIP;
}

static void junit_target(const struct probe_opts *o)
{
    if (o->server) {
        xml_str(stdout, o->server);
        return;
    }
    for (size_t i = 0; o->cmd && o->cmd[i]; i++) {
        fputs(i ? " " : "", stdout);
        xml_str(stdout, o->cmd[i]);
    }
}

/* One <testsuite>, one <testcase> per scenario; a failure's type is the
 * verdict, its message the verdict's text. */
void probe_report_junit(const struct probe_opts *o, const struct probe_result *r, size_t n,
                        probe_detail_fn *detail)
{
    int64_t total = 0;
    int nfail = 0, nskip = 0;
    for (size_t i = 0; i < n; i++) {
        total += r[i].run_ms;
        nfail += failed(&r[i]);
        nskip += r[i].verdict == PROBE_SKIP;
    }
    printf("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    printf("  <testsuite name=\"closewise probe%s\" tests=\"%zu\" failures=\"%d\" "
           "errors=\"0\" skipped=\"%d\" time=\"%.3f\">\n", o->server ? " --server" : "", n,
           nfail, nskip, (double)total / 1000);
    printf("    <properties><property name=\"target\" value=\"");
    junit_target(o);
    printf("\"/></properties>\n");
    char d[DETAIL_MAX], v[32];
    for (size_t i = 0; i < n; i++) {
        detail(&r[i], d, sizeof d);
        printf("    <testcase classname=\"closewise.probe%s\" name=\"", o->server ? ".server" : "");
        xml_str(stdout, r[i].name);
        printf("\" time=\"%.3f\"", (double)r[i].run_ms / 1000);
        if (!failed(&r[i]) && r[i].verdict != PROBE_SKIP) {
            printf("/>\n");
            continue;
        }
        printf(">\n      <%s", r[i].verdict == PROBE_SKIP ? "skipped" : "failure");
        if (r[i].verdict != PROBE_SKIP)
            printf(" type=\"%s\"", probe_verdict_name(r[i].verdict));
        printf(" message=\"%s: ", probe_verdict_runs(&r[i], v, sizeof v));
        xml_str(stdout, d);
        printf("\"/>\n    </testcase>\n");
    }
    printf("  </testsuite>\n</testsuites>\n");
}

/* TAP 13: the plan, then "ok N - name" or "not ok N - name" with the
 * verdict's text as a diagnostic line; SKIP as a TAP skip. */
void probe_report_tap(const struct probe_opts *o, const struct probe_result *r, size_t n,
                      probe_detail_fn *detail)
{
    char d[DETAIL_MAX], v[32];
    printf("TAP version 13\n1..%zu\n", n);
    for (size_t i = 0; i < n; i++) {
        detail(&r[i], d, sizeof d);
        d[strcspn(d, "\n")] = '\0';
        probe_verdict_runs(&r[i], v, sizeof v);
        if (r[i].verdict == PROBE_SKIP)
            printf("ok %zu - %s # SKIP %s\n", i + 1, r[i].name, d);
        else
            printf("%sok %zu - %s: %s\n", failed(&r[i]) ? "not " : "", i + 1, r[i].name, v);
        if (failed(&r[i]) && d[0])
            printf("# %s\n", d);
    }
    (void)o;
}

static const char *end_word(int end)
{
    /* ABORT: ours (reset-mid-request) */
    return end == CW_END_EOF ? "fin" : end == CW_END_RESET ? "reset"
         : end == CW_END_NONE ? "none" : end == CW_END_ABORT ? "ours" : cw_end_name((enum cw_end)end);
}

void probe_report_server_text(const struct probe_opts *o, const struct probe_result *r,
                              size_t n)
{
    char g[32], h[32], st[32], v[32], t[32];
    printf("closewise probe: server %s (%s), grace %s, hang limit %s, settle %s",
           o->server, probe_server_about(), insp_fmt_ms((uint64_t)o->grace_ms, g, sizeof g),
           insp_fmt_ms((uint64_t)o->hang_ms, h, sizeof h),
           insp_fmt_ms((uint64_t)o->settle_ms, st, sizeof st));
    printf(o->repeat > 1 ? ", %d runs\n" : "\n", o->repeat);
    printf("%-20s %-10s %8s  %-5s %8s  %s\n", "SCENARIO", "VERDICT", "REPLY", "END", "AFTER",
           "DETAIL");
    for (size_t i = 0; i < n; i++) {
        const struct probe_sresult *s = &r[i].srv;
        if (s->end == CW_END_NONE)
            snprintf(t, sizeof t, "-");
        else
            probe_ms(s->end_ms, t, sizeof t);
        printf("%-20s %-10s %8lld  %-5s %8s  %s\n", r[i].name,
               probe_verdict_runs(&r[i], v, sizeof v), (long long)s->reply_bytes,
               end_word(s->end), t, s->note);
    }
}

static void json_holder(const struct probe_sresult *s)
{
    if (!s->local || !s->pid) {
        printf("\"server_pid\": null, \"server_comm\": null, \"server_fd\": null");
        return;
    }
    printf("\"server_pid\": %d, \"server_comm\": ", (int)s->pid);
    cli_json_str(stdout, s->comm);
    printf(", \"server_fd\": %d", s->fd);
}

void probe_report_server_json(const struct probe_opts *o, const struct probe_result *r,
                              size_t n)
{
    int passed = 0;
    printf("{\n  \"server\": ");
    cli_json_str(stdout, o->server);
    printf(", \"about\": ");
    cli_json_str(stdout, probe_server_about());
    printf(", \"grace_ms\": %lld, \"hang_limit_ms\": %lld, \"settle_ms\": %lld,\n"
           "  \"scenarios\": [\n", (long long)o->grace_ms, (long long)o->hang_ms,
           (long long)o->settle_ms);
    for (size_t i = 0; i < n; i++) {
        const struct probe_sresult *s = &r[i].srv;
        passed += !failed(&r[i]);
        printf("    {\"name\": \"%s\", \"verdict\": \"%s\", \"runs\": %d, \"worst_runs\": %d, "
               "\"time_ms\": %lld, \"reply_bytes\": %lld, \"end\": \"%s\", ", r[i].name,
               probe_verdict_name(r[i].verdict), r[i].runs, r[i].worst_runs,
               (long long)r[i].run_ms, (long long)s->reply_bytes, end_word(s->end));
        if (s->end == CW_END_NONE)
            printf("\"end_ms\": null, ");
        else
            printf("\"end_ms\": %lld, ", (long long)s->end_ms);
        printf("\"expect_matched\": %s, \"local\": %s, ",
               s->matched < 0 ? "null" : s->matched ? "true" : "false",
               s->local ? "true" : "false");
        json_holder(s);
        printf(", \"reset_by\": ");
        if (s->reset[0])
            cli_json_str(stdout, s->reset);
        else
            printf("null");
        printf(", \"detail\": ");
        cli_json_str(stdout, s->note);
        printf("}%s\n", i + 1 < n ? "," : "");
    }
    printf("  ],\n  \"passed\": %d, \"failed\": %d\n}\n", passed, (int)n - passed);
}
