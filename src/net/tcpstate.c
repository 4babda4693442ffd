/* tcpstate.c - the one table of TCP state names: the kernel's names
 * (CLOSE_WAIT), ss(8)'s filter names (close-wait, estab, listening) and
 * ss's state groups, and parsing of all of them. Everything that names or
 * parses a state (cw_tcp_state_name for a cw_conn, ls, stat, watch, kill,
 * explain, the exporter) uses it. In net/, the lowest part: conn.h's
 * cw_tcp_state_name lives here, and a dial-only program needs no more. */
#define _GNU_SOURCE
#include <closewise/closewise.h>
#include <closewise/diag.h>

#include <ctype.h>
#include <string.h>

static const struct {
    const char *kernel;    /* the kernel's name: tcp_states.h, /proc/net/tcp */
    const char *filter;    /* ss(8)'s filter name, the one we print for users */
    const char *alias;     /* another name ss accepts or prints, or NULL */
} names[] = {
    [CW_TCP_ESTABLISHED] = {"ESTABLISHED", "established", "estab"},
    [CW_TCP_SYN_SENT] = {"SYN_SENT", "syn-sent", NULL},
    [CW_TCP_SYN_RECV] = {"SYN_RECV", "syn-recv", NULL},
    [CW_TCP_FIN_WAIT1] = {"FIN_WAIT1", "fin-wait-1", NULL},
    [CW_TCP_FIN_WAIT2] = {"FIN_WAIT2", "fin-wait-2", NULL},
    [CW_TCP_TIME_WAIT] = {"TIME_WAIT", "time-wait", NULL},
    [CW_TCP_CLOSE] = {"CLOSE", "closed", "unconn"},
    [CW_TCP_CLOSE_WAIT] = {"CLOSE_WAIT", "close-wait", NULL},
    [CW_TCP_LAST_ACK] = {"LAST_ACK", "last-ack", NULL},
    [CW_TCP_LISTEN] = {"LISTEN", "listening", NULL},
    [CW_TCP_CLOSING] = {"CLOSING", "closing", NULL},
    [CW_TCP_NEW_SYN_RECV] = {"NEW_SYN_RECV", "new-syn-recv", NULL},
};
#define NSTATES ((int)(sizeof names / sizeof names[0]))

#define B(s) CW_STATE_BIT(CW_TCP_##s)
/* ss(8)'s groups, with its meanings. */
static const struct {
    const char *name;
    unsigned mask;
} groups[] = {
    {"all", CW_STATES_ALL},
    {"connected", CW_STATES_ALL & ~(B(LISTEN) | B(CLOSE))},
    {"synchronized", CW_STATES_ALL & ~(B(LISTEN) | B(CLOSE) | B(SYN_SENT))},
    {"bucket", B(SYN_RECV) | B(TIME_WAIT)},
    {"big", CW_STATES_ALL & ~(B(SYN_RECV) | B(TIME_WAIT))},
};
#undef B

const char *cw_tcp_state_name(int state)
{
    if (state <= 0 || state >= NSTATES)
        return "UNKNOWN";
    return names[state].kernel;
}

const char *cw_tcp_state_filter_name(int state)
{
    if (state <= 0 || state >= NSTATES)
        return NULL;
    return names[state].filter;
}

/* Upper case without dashes or underscores: close-wait, CLOSE_WAIT and
 * closewait compare equal. Returns -1 when it does not fit. */
static int normalize(const char *s, size_t len, char *out, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '-' || s[i] == '_')
            continue;
        if (n + 1 >= size)
            return -1;
        out[n++] = (char)toupper((unsigned char)s[i]);
    }
    out[n] = '\0';
    return n ? 0 : -1;
}

static int same(const char *norm, const char *name)
{
    char want[32];
    return name && normalize(name, strlen(name), want, sizeof want) == 0 &&
           !strcmp(norm, want);
}

static int parse_len(const char *name, size_t len)
{
    char norm[32];
    if (normalize(name, len, norm, sizeof norm) < 0)
        return CW_EINVAL;
    for (int st = 1; st < NSTATES; st++)
        if (same(norm, names[st].kernel) || same(norm, names[st].filter) ||
            same(norm, names[st].alias))
            return st;
    return CW_EINVAL;
}

int cw_tcp_state_parse(const char *name)
{
    return name ? parse_len(name, strlen(name)) : CW_EINVAL;
}

static int group_len(const char *name, size_t len, unsigned *mask)
{
    char norm[32];
    if (normalize(name, len, norm, sizeof norm) < 0)
        return -1;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++)
        if (same(norm, groups[i].name)) {
            *mask = groups[i].mask;
            return 0;
        }
    return -1;
}

int cw_tcp_states_parse(const char *list, unsigned *mask, size_t *bad_at)
{
    unsigned m = 0;
    if (!list || !mask)
        return CW_EINVAL;
    for (const char *p = list;; p++) {
        size_t len = strcspn(p, ",");
        unsigned g;
        int st = parse_len(p, len);
        if (st > 0)
            m |= CW_STATE_BIT(st);
        else if (group_len(p, len, &g) == 0)
            m |= g;
        else {
            if (bad_at)
                *bad_at = (size_t)(p - list);
            return CW_EINVAL;
        }
        p += len;
        if (!*p)
            break;
    }
    *mask = m;
    return CW_OK;
}

const char *cw_tcp_state_group_name(int i)
{
    return i >= 0 && i < (int)(sizeof groups / sizeof groups[0]) ? groups[i].name : NULL;
}
