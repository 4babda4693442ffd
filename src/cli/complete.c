/* complete.c - `closewise __complete WORD...`: what a shell may complete
 * next, one candidate a line, from the same option tables that parse the
 * command line and print --help. The bash and zsh scripts in
 * contrib/completion/ only ask this, so they never list an option a
 * command rejects. The last WORD is the one being completed ("" for a new
 * one). */
#define _GNU_SOURCE
#include "cli.h"
#include "probe/probe.h"

#include <closewise/diag.h>
#include <string.h>

static void offer(const char *cand, const char *prefix)
{
    if (!strncmp(cand, prefix, strlen(prefix)))
        puts(cand);
}

/* One item of a comma-separated list: "close-wait,ti" offers
 * "close-wait,time-wait". */
static void offer_item(const char *item, const char *prefix)
{
    const char *comma = strrchr(prefix, ',');
    char cand[256];
    size_t head = comma ? (size_t)(comma - prefix + 1) : 0;
    snprintf(cand, sizeof cand, "%.*s%s", (int)head, prefix, item);
    offer(cand, prefix);
}

/* Words of a table's "a b c"; items of a comma-separated list when the
 * option takes one (its value is named "LIST" or "X[,X...]"). */
static void offer_words(const char *words, const char *prefix, int list)
{
    char w[64];
    for (const char *p = words; *p;) {
        size_t n = strcspn(p, " ");
        if (n && n < sizeof w) {
            memcpy(w, p, n);
            w[n] = '\0';
            if (list)
                offer_item(w, prefix);
            else
                offer(w, prefix);
        }
        p += n;
        p += *p == ' ';
    }
}

/* probe --server on the line: --scenario completes the server's scenarios. */
static int complete_server;

/* The value of an option: state names, probe scenarios (both as lists),
 * a word list, or "@file" for the shell's own file completion. */
static void offer_values(const char *what, const char *prefix, int list)
{
    if (!strcmp(what, "@states")) {
        for (int st = 1; cw_tcp_state_filter_name(st); st++)
            offer_item(cw_tcp_state_filter_name(st), prefix);
        for (int i = 0; cw_tcp_state_group_name(i); i++)
            offer_item(cw_tcp_state_group_name(i), prefix);
    } else if (!strcmp(what, "@scenarios") && complete_server) {
        for (size_t i = 0; i < probe_nsscenarios; i++)
            offer_item(probe_sscenarios[i].name, prefix);
    } else if (!strcmp(what, "@scenarios")) {
        for (size_t i = 0; i < probe_nscenarios; i++)
            offer_item(probe_scenarios[i].name, prefix);
    } else if (what[0] == '@') {
        puts(what);
    } else {
        offer_words(what, prefix, list);
    }
}

static const struct cli_opt *find_opt(const struct cli_spec *spec, const char *word)
{
    if (!spec || word[0] != '-')
        return NULL;
    for (int t = 0; t < 4 && spec->tables[t]; t++)
        for (const struct cli_opt *o = spec->tables[t]; o->name; o++)
            if ((word[1] == '-' && !strcmp(word + 2, o->name)) ||
                (word[1] == o->letter && word[1] && !word[2]))
                return o;
    return NULL;
}

int cli_complete(const struct cli_command *cmds, int argc, char **argv)
{
    const char *cur = argc > 0 ? argv[argc - 1] : "";
    if (argc <= 1) {
        for (const struct cli_command *c = cmds; c->name; c++)
            offer(c->name, cur);
        offer("--help", cur);
        offer("--version", cur);
        return CLI_OK;
    }
    const struct cli_command *cmd = NULL;
    for (const struct cli_command *c = cmds; c->name; c++)
        if (!strcmp(c->name, argv[0]))
            cmd = c;
    if (!cmd)
        return CLI_OK;
    const struct cli_opt *prev = argc >= 3 ? find_opt(cmd->spec, argv[argc - 2]) : NULL;
    /* After "--" (probe, trace): the words are CMD's own. */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "--")) {
            puts("@file");
            return CLI_OK;
        }
    for (int i = 1; i < argc - 1; i++)
        complete_server |= !strncmp(argv[i], "--server", 8) &&
                           (argv[i][8] == '\0' || argv[i][8] == '=');
    if (prev && prev->arg) {
        if (prev->complete)
            offer_values(prev->complete, cur,
                         !strcmp(prev->arg, "LIST") || strstr(prev->arg, "...") != NULL);
        return CLI_OK;
    }
    if (cur[0] != '-' && cur[0])
        return CLI_OK;
    char buf[80];
    for (int t = 0; t < 4 && cmd->spec->tables[t]; t++)
        for (const struct cli_opt *o = cmd->spec->tables[t]; o->name; o++) {
            snprintf(buf, sizeof buf, "--%s", o->name);
            offer(buf, cur);
        }
    offer("--help", cur);
    return CLI_OK;
}
