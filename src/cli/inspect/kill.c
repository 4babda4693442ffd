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

struct kill_opts {
    struct insp_sel sel;
    int yes;
};

enum { OPT_YES = 'y' };

static const struct cli_opt kill_opts_table[] = {
    {"yes", 'y', OPT_YES, NULL, "really destroy them", NULL},
    {NULL, 0, 0, NULL, NULL, NULL}};

const struct cli_spec kill_spec = {
    "kill", "[filters] [--yes]",
    "Destroy the matching sockets (SOCK_DESTROY, needs CAP_NET_ADMIN and a\n"
    "kernel built with CONFIG_INET_DIAG_DESTROY). Without --yes, only list\n"
    "what would be destroyed. --state defaults to close-wait; a port, address,\n"
    "pid or cookie is required.\n"
    "Destroying a socket sends the peer a RST and frees the port. A process\n"
    "that had accepted it still holds its descriptor until it closes it; a\n"
    "socket never accepted (in a listener's queue) is gone entirely.",
    {insp_state_opt, insp_filter_opts, kill_opts_table, NULL},
    "Exit status: 0 ok (also: nothing matched, said on stderr), 2 usage,\n"
    "3 no permission, a kernel that cannot destroy, or a write error."};

static int kill_option(struct insp_sel *sel, int id, const char *arg)
{
    (void)arg;
    if (id != OPT_YES)
        return CLI_USAGE;
    ((struct kill_opts *)sel)->yes = 1;
    return CLI_OK;
}

static int kill_check(struct insp_sel *sel)
{
    if (!sel->narrowed) {
        cli_usage_error("refusing to destroy without a filter (give --port, --sport, "
                        "--dport, --addr, --pid or --cookie)");
        return CLI_USAGE;
    }
    if (!sel->f.states)
        sel->f.states = CW_STATE_BIT(CW_TCP_CLOSE_WAIT);
    return CLI_OK;
}

static int kill_attribute(const struct insp_sel *sel)
{
    (void)sel;
    return 1;
}

static void print_line(const char *what, const struct cw_sock *s)
{
    char l[64], p[64], who[400];
    cw_sock_addr(s, 0, l, sizeof l);
    cw_sock_addr(s, 1, p, sizeof p);
    printf("%s %-11s %s %s cookie %llu %s\n", what, cw_tcp_state_name(s->state), l, p,
           (unsigned long long)s->cookie, insp_fmt_owner(s, who, sizeof who));
}

/* What destroying means for the owners: a socket a process accepted
 * stays a dead descriptor in it; one never accepted (no inode: it sits in
 * a listener's queue) is freed entirely. */
static void print_notes(const struct cw_sock *v, size_t n)
{
    size_t held = 0, queued = 0;
    char a[48];
    for (size_t i = 0; i < n; i++)
        if (v[i].inode == 0)
            queued++;
        else
            held++;
    if (held)
        printf("note: for %s the peer gets a RST and the port is freed, but the owning "
               "process still holds its descriptor until it closes it\n",
               cli_plural(held, "socket", "sockets", a, sizeof a));
    if (queued)
        printf("note: %s never accepted: the peer gets a RST and the listener's queue "
               "lets go; no process holds a descriptor for %s\n",
               cli_plural(queued, "socket was", "sockets were", a, sizeof a),
               queued == 1 ? "it" : "them");
}

/* One line for the two reasons ss -K stays silent about. */
static int destroy_unsupported(int rc)
{
    if (rc == -EPERM || rc == -EACCES) {
        cli_error("permission denied: destroying sockets needs CAP_NET_ADMIN");
        return CLI_SYSTEM;
    }
    if (cw_diag_destroy_configured() == 0)
        cli_error("this kernel was built without CONFIG_INET_DIAG_DESTROY: "
                  "it cannot destroy sockets");
    else
        cli_error("the kernel refused to destroy the socket (%s)", cw_strerror(rc));
    return CLI_SYSTEM;
}

/* Destroy each one; the destroyed ones are moved to the front of v for
 * the notes. */
static int destroy_all(cw_diag *d, struct cw_sock *v, size_t n)
{
    size_t done = 0, gone = 0;
    int rc = CLI_OK;
    for (size_t i = 0; i < n && rc == CLI_OK; i++) {
        int r = cw_diag_destroy(d, &v[i]);
        if (r == CW_OK) {
            print_line("destroyed", &v[i]);
            struct cw_sock t = v[done];
            v[done++] = v[i];
            v[i] = t;
        } else if (r == -ENOENT || r == -ESTALE) {
            gone++;    /* closed, or its tuple reused, since the dump */
        } else if (r == -EPERM || r == -EACCES || r == -EOPNOTSUPP) {
            rc = destroy_unsupported(r);
        } else {
            cli_error("cannot destroy cookie %llu: %s", (unsigned long long)v[i].cookie,
                      cw_strerror(r));
            rc = CLI_SYSTEM;
        }
    }
    char a[48];
    if (done || gone)
        printf("destroyed %s%s", cli_plural(done, "socket", "sockets", a, sizeof a),
               gone ? "" : "\n");
    if (gone)
        printf("; %zu had already gone\n", gone);
    print_notes(v, done);
    return rc;
}

static int kill_report(cw_diag *d, struct insp_sel *sel, struct cw_sock *v, size_t n)
{
    if (n == 0) {
        cli_error("no matching socket");
        return CLI_OK;
    }
    if (((struct kill_opts *)sel)->yes)
        return destroy_all(d, v, n);
    for (size_t i = 0; i < n; i++)
        print_line("would destroy", &v[i]);
    char a[48];
    printf("dry run: nothing destroyed; add --yes to destroy %s\n",
           cli_plural(n, "socket", "sockets", a, sizeof a));
    print_notes(v, n);
    return CLI_OK;
}

static const struct insp_cmd kill_cmd = {&kill_spec, kill_option, kill_check, kill_attribute,
                                         kill_report};

int cmd_kill(int argc, char **argv)
{
    struct kill_opts o;
    memset(&o, 0, sizeof o);
    return insp_run(&kill_cmd, argc, argv, &o.sel);
}
