/* kill.c - `closewise kill`: destroy matching sockets with SOCK_DESTROY.
 * A dry run unless --yes; each socket is addressed by 4-tuple and cookie,
 * so a tuple reused since the dump is never hit. Unlike `ss -K`, a kernel
 * without CONFIG_INET_DIAG_DESTROY or a missing CAP_NET_ADMIN is said out
 * loud instead of silently doing nothing. */
#define _GNU_SOURCE
#include "inspect.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char kill_note[] =
    "note: the peer gets a RST and the port is freed, but the owning process "
    "still holds its descriptor until it closes it";

struct kill_opts {
    struct insp_sel sel;
    int yes;
};

static void kill_help(void)
{
    insp_help("closewise kill [filters] [--yes]",
              "Destroy the matching sockets (SOCK_DESTROY, needs CAP_NET_ADMIN and a\n"
              "kernel built with CONFIG_INET_DIAG_DESTROY). Without --yes, only list\n"
              "what would be destroyed. --state defaults to close-wait; a port, address,\n"
              "pid or cookie is required.\n"
              "Destroying a socket sends the peer a RST and frees the port, but the\n"
              "owning process still holds its descriptor until it closes it.",
              INSP_FILTER_HELP
              "  -y, --yes         really destroy them\n"
              "  -h, --help        this help\n");
}

static int kill_parse(int argc, char **argv, struct kill_opts *o)
{
    memset(o, 0, sizeof *o);
    const struct insp_flag flags[] = {
        {"yes", 'y', &o->yes},
        {NULL, 0, NULL}};
    int rc = insp_parse(argc, argv, "kill", &o->sel, flags, kill_help);
    if (rc)
        return rc;
    if (!o->sel.narrowed) {
        cli_error("kill: refusing to destroy without a filter (give --port, --sport, "
                  "--dport, --addr, --pid or --cookie)");
        return CLI_USAGE;
    }
    if (!o->sel.f.states)
        o->sel.f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT);
    return CLI_OK;
}

static void print_line(const char *what, const struct cw_sock *s)
{
    char l[64], p[64], who[400];
    cw_sock_addr(s, 0, l, sizeof l);
    cw_sock_addr(s, 1, p, sizeof p);
    printf("%s %-11s %s %s cookie %llu %s\n", what, insp_state_name(s->state), l, p,
           (unsigned long long)s->cookie, insp_fmt_owner(s, who, sizeof who));
}

/* One line for the two reasons ss -K stays silent about. */
static int destroy_unsupported(int rc)
{
    if (rc == -EPERM || rc == -EACCES) {
        cli_error("kill: permission denied: destroying sockets needs CAP_NET_ADMIN");
        return CLI_SYSTEM;
    }
    int conf = cw_diag_destroy_configured();
    if (conf == 0)
        cli_error("kill: this kernel was built without CONFIG_INET_DIAG_DESTROY: "
                  "it cannot destroy sockets");
    else
        cli_error("kill: the kernel refused to destroy the socket (%s)", cw_strerror(rc));
    return CLI_SYSTEM;
}

static int destroy_all(cw_diag *d, const struct cw_sock *v, size_t n)
{
    size_t done = 0, gone = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = cw_diag_destroy(d, &v[i]);
        if (rc == CW_OK) {
            print_line("destroyed", &v[i]);
            done++;
        } else if (rc == -ENOENT || rc == -ESTALE) {
            gone++;    /* closed, or its tuple reused, since the dump */
        } else if (rc == -EPERM || rc == -EACCES || rc == -EOPNOTSUPP) {
            return destroy_unsupported(rc);
        } else {
            cli_error("kill: cannot destroy cookie %llu: %s",
                      (unsigned long long)v[i].cookie, cw_strerror(rc));
            return CLI_SYSTEM;
        }
    }
    if (gone)
        printf("%zu socket(s) had already gone\n", gone);
    if (done)
        printf("%s\n", kill_note);
    return CLI_OK;
}

int cmd_kill(int argc, char **argv)
{
    struct kill_opts o;
    int rc = kill_parse(argc, argv, &o);
    if (rc)
        return rc < 0 ? CLI_OK : rc;
    cw_diag *d = NULL;
    if ((rc = insp_open(&o.sel, &d)) != CLI_OK)
        return rc;
    struct cw_sock *v = NULL;
    size_t n = 0;
    rc = insp_collect(d, &o.sel, 1, &v, &n);
    if (rc == CLI_OK && !o.yes) {
        for (size_t i = 0; i < n; i++)
            print_line("would destroy", &v[i]);
        if (n)
            printf("dry run: nothing destroyed; add --yes to destroy %zu socket(s)\n%s\n",
                   n, kill_note);
    } else if (rc == CLI_OK) {
        rc = destroy_all(d, v, n);
    }
    if (rc == CLI_OK && n == 0)
        cli_error("kill: no matching socket");
    cw_diag_close(&d);
    free(v);
    return rc;
}
