/* test_cli.c - the `closewise` front door: --help, --version, exit codes,
 * the one voice of errors, the duration grammar, write errors (>/dev/full)
 * and shell completion. */
#define _GNU_SOURCE
#include "cwtest.h"

/* The parsers themselves, for the table of accepted and refused forms
 * (the CLI is a program, not a library: its sources are compiled in). */
#include "../src/cli/opts.c"
#include "../src/cli/voice.c"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define CLI CW_BUILD_DIR "/closewise"

struct res {
    int status;          /* exit code, or -1 if it did not exit */
    char out[16384], err[4096];
};

/* Run closewise with args (NULL-terminated), stdin from /dev/null, stdout
 * to a pipe or to stdout_path. */
static void run_to(struct res *r, const char *stdout_path, const char *const *args)
{
    char *argv[32] = {(char *)CLI};
    int n = 1;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = (char *)args[n - 1];
    argv[n] = NULL;
    int out[2], err[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err, O_CLOEXEC), 0);
    pid_t pid = cwt_fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open("/dev/null", O_RDONLY);
        int o = stdout_path ? open(stdout_path, O_WRONLY) : out[1];
        dup2(in, STDIN_FILENO);
        dup2(o, STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    cwt_read_all(out[0], r->out, sizeof r->out, 10000);
    cwt_read_all(err[0], r->err, sizeof r->err, 10000);
    close(out[0]);
    close(err[0]);
    int st = cwt_wait(pid, 10000);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define RUN(r, ...) run_to((r), NULL, (const char *const[]){__VA_ARGS__, NULL})
#define RUN_FULL(r, ...) run_to((r), "/dev/full", (const char *const[]){__VA_ARGS__, NULL})

static int lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* stderr is exactly one line "closewise CMD: ..." and the exit code 2. */
static void expect_usage(const struct res *r, const char *cmd, const char *what)
{
    char want[64];
    snprintf(want, sizeof want, "closewise %s: ", cmd);
    if (r->status != 2 || strncmp(r->err, want, strlen(want)) || lines(r->err) != 1)
        fail_msg("%s %s: status %d, stderr '%s'", cmd, what, r->status, r->err);
}

/* A usage error ends with the pointer to --help. */
static void expect_hint(const struct res *r, const char *cmd)
{
    char want[64];
    snprintf(want, sizeof want, " (try 'closewise %s --help')\n", cmd);
    size_t n = strlen(r->err), w = strlen(want);
    if (n < w || strcmp(r->err + n - w, want))
        fail_msg("%s: no '%s' hint: '%s'", cmd, want, r->err);
}

static void test_version_and_help(void **state)
{
    struct res r;
    RUN(&r, "--version");
    assert_int_equal(r.status, 0);
    const char want[] = "closewise " CW_VERSION_STRING " ";
    assert_true(strncmp(r.out, want, sizeof want - 1) == 0);
    RUN(&r, "--help");
    assert_int_equal(r.status, 0);
    assert_true(strncmp(r.out, "usage: closewise", 16) == 0);
}

static void test_usage_errors_exit_2(void **state)
{
    struct res r;
    RUN(&r, "no-such-command");
    assert_int_equal(r.status, 2);
    assert_string_equal(r.out, "");   /* errors go to stderr, not stdout */
    assert_string_equal(r.err, "closewise: unknown command 'no-such-command' "
                               "(try 'closewise --help')\n");
    char *argv[] = {CLI, NULL};
    int fd;
    pid_t pid = cwt_spawn(argv, &fd);
    close(fd);
    int st = cwt_wait(pid, 5000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 2);
}

/* Every subcommand: an unknown option, a missing value and a value given
 * to a flag are one line in the one voice, exit 2; the same for a bad
 * duration and a bad port where the command takes them. */
static void test_every_command_one_voice(void **state)
{
    static const struct {
        const char *cmd, *valued, *flag, *duration, *port;
    } c[] = {
        {"server", "--port", "--quiet", "--idle-timeout", "--port"},
        {"passwd", "--method", NULL, NULL, NULL},
        {"stat", "--state", "--json", NULL, "--port"},
        {"ls", "--state", "--json", NULL, "--sport"},
        {"watch", "--interval", "--json", "--older-than", "--dport"},
        {"kill", "--state", "--yes", NULL, "--port"},
        {"demo", "--clients", "--json", "--idle-timeout", NULL},
        {"client", "--port", "--quiet", "--read-timeout", "--port"},
        {"probe", "--grace", "--json", "--hang-limit", "--port"},
        {"resets", "--duration", "--json", "--duration", NULL},
        {"exporter", "--interval", "--once", "--interval", "--listen"},
        {"trace", "--grace", "--json", "--grace", NULL},
    };
    struct res r;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        RUN(&r, c[i].cmd, "--bogus");
        expect_usage(&r, c[i].cmd, "--bogus");
        char want[128];
        snprintf(want, sizeof want, "unknown option '--bogus' (try 'closewise %s --help')\n",
                 c[i].cmd);
        assert_non_null(strstr(r.err, want));
        RUN(&r, c[i].cmd, c[i].valued);
        expect_usage(&r, c[i].cmd, "missing value");
        snprintf(want, sizeof want, "%s needs a value", c[i].valued);
        if (!strstr(r.err, want))
            fail_msg("%s: '%s' not in '%s'", c[i].cmd, want, r.err);
        if (c[i].flag) {
            char arg[64];
            snprintf(arg, sizeof arg, "%s=1", c[i].flag);
            RUN(&r, c[i].cmd, arg);
            expect_usage(&r, c[i].cmd, "value to a flag");
            assert_non_null(strstr(r.err, "takes no value"));
        }
        if (c[i].duration) {
            RUN(&r, c[i].cmd, c[i].duration, "abc");
            expect_usage(&r, c[i].cmd, "bad duration");
            snprintf(want, sizeof want, "%s: bad duration 'abc' (examples: ", c[i].duration);
            if (!strstr(r.err, want))
                fail_msg("%s: '%s' not in '%s'", c[i].cmd, want, r.err);
            expect_hint(&r, c[i].cmd);
        }
        if (c[i].port) {
            RUN(&r, c[i].cmd, c[i].port, "70000");
            expect_usage(&r, c[i].cmd, "bad port");
            snprintf(want, sizeof want, "%s: bad port '70000'", c[i].port);
            if (!strstr(r.err, want))
                fail_msg("%s: '%s' not in '%s'", c[i].cmd, want, r.err);
            expect_hint(&r, c[i].cmd);
        }
    }
    /* Names from a fixed set: the error lists the valid ones. */
    static const char *const by_state[] = {"stat", "ls", "kill"};
    for (size_t i = 0; i < sizeof by_state / sizeof by_state[0]; i++) {
        RUN(&r, by_state[i], "--state", "close-wait,nope", "--port", "1");
        expect_usage(&r, by_state[i], "bad state");
        assert_non_null(strstr(r.err, "--state: unknown state 'nope'; states: established, "));
        assert_non_null(strstr(r.err, "close-wait"));
        expect_hint(&r, by_state[i]);
    }
    RUN(&r, "probe", "--scenario", "nope", "--", "/bin/true");
    expect_usage(&r, "probe", "bad scenario");
    assert_non_null(strstr(r.err, "--scenario: unknown scenario 'nope'; scenarios: "
                                  "fin-on-accept, "));
    expect_hint(&r, "probe");
    RUN(&r, "probe", "--server", "127.0.0.1:1", "--send", "x", "--scenario", "fin-on-accept");
    expect_usage(&r, "probe", "bad server scenario");   /* a client scenario, not a server's */
    assert_non_null(strstr(r.err, "unknown server scenario 'fin-on-accept'; scenarios: "));
    RUN(&r, "probe", "--server", "127.0.0.1:70000", "--send", "x");
    expect_usage(&r, "probe", "bad --server port");
    assert_non_null(strstr(r.err, "--server: bad port '70000'"));
    RUN(&r, "resets", "--reason", "unread,nope");
    expect_usage(&r, "resets", "bad reason");
    assert_non_null(strstr(r.err, "--reason: unknown reason 'nope'; reasons: "));
    assert_non_null(strstr(r.err, "linger0"));
    /* Operands where none are taken, and a missing CMD. */
    static const char *const no_operands[] = {"watch", "demo", "exporter", "resets", "server"};
    for (size_t i = 0; i < sizeof no_operands / sizeof no_operands[0]; i++) {
        RUN(&r, no_operands[i], "extra");
        expect_usage(&r, no_operands[i], "operand");
        assert_non_null(strstr(r.err, "unexpected argument 'extra'"));
    }
    /* server's own checks, after the table's: one line, the hint, exit 2. */
    static const char *const server_bad[][4] = {
        {"--close-mode", "rst", "bad --close-mode 'rst' (graceful, linger0 or plain)", NULL},
        {"--user", "alice", "--user wants NAME:PASSWORD", NULL},
        {"--auth-v6-prefix", "129", "--auth-v6-prefix: '129' is out of range (1 to 128)", NULL},
        {"--workers", "0", "--workers: '0' is out of range (1 to ", NULL},
        {"--port", "0", "no users: give --credentials FILE or --user NAME:PASSWORD", NULL},
    };
    for (size_t i = 0; i < sizeof server_bad / sizeof server_bad[0]; i++) {
        RUN(&r, "server", server_bad[i][0], server_bad[i][1]);
        expect_usage(&r, "server", server_bad[i][0]);
        if (!strstr(r.err, server_bad[i][2]))
            fail_msg("server %s %s: '%s'", server_bad[i][0], server_bad[i][1], r.err);
        expect_hint(&r, "server");
    }
    RUN(&r, "server", "-u", "a:b", "--auth-v6-prefix", "48", "--auth-v6-net-prefix", "56");
    expect_usage(&r, "server", "net prefix longer");
    assert_non_null(strstr(r.err, "--auth-v6-net-prefix 56 is longer than --auth-v6-prefix 48"));
    RUN(&r, "trace");
    expect_usage(&r, "trace", "no command");
    RUN(&r, "probe");
    expect_usage(&r, "probe", "no command");
}

/* The duration grammar: integers and decimals with units, compound in
 * decreasing units; nothing else. */
static void test_duration_table(void **state)
{
    static const struct {
        const char *s;
        long long ms;
    } good[] = {
        {"0", 0}, {"500ms", 500}, {"1s", 1000}, {"1.5s", 1500}, {"0.5s", 500},
        {"2m30s", 150000}, {"1h", 3600000}, {"1h30m", 5400000}, {"1m0.25s", 60250},
        {"1h2m3s4ms", 3723004}, {"0.001s", 1}, {"10ms", 10}, {"24h", 86400000},
    };
    const char *why;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (cli_duration_ms(good[i].s, &why) != good[i].ms)
            fail_msg("'%s': %lld, want %lld (%s)", good[i].s, cli_duration_ms(good[i].s, &why),
                     good[i].ms, why);
    static const struct {
        const char *s, *why;
    } bad[] = {
        {"", "bad"}, {"abc", "bad"}, {"0x10", "bad"}, {"1e2s", "bad"}, {" 5s", "bad"},
        {"5s ", "bad"}, {"+5s", "bad"}, {"-5s", "bad"}, {"5 s", "bad"}, {"5sec", "bad"},
        {".5s", "bad"}, {"5.s", "bad"}, {"nan", "bad"}, {"inf", "bad"}, {"1.5m30s", "bad"},
        {"10", "no unit"}, {"0.5", "no unit"}, {"30s2m", "unit order"},
        {"1s1s", "unit order"}, {"0.5ms", "finer than 1ms"}, {"1.0005s", "finer than 1ms"},
        {"99999999999999999999s", "too large"}, {"1000000000h", "too large"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        long long v = cli_duration_ms(bad[i].s, &why);
        if (v != -1 || strcmp(why, bad[i].why))
            fail_msg("'%s': %lld (%s), want refused (%s)", bad[i].s, v, why, bad[i].why);
    }
}

/* The messages a user sees for durations, through a real command. */
static void test_duration_messages(void **state)
{
    struct res r;
    RUN(&r, "client", "--read-timeout", "0.5", "-p", "1", "-u", "a:b");
    expect_usage(&r, "client", "0.5");
    assert_string_equal(r.err, "closewise client: --read-timeout: '0.5' has no unit: write "
                               "0.5s or 0.5m (units: ms, s, m, h) "
                               "(try 'closewise client --help')\n");
    RUN(&r, "watch", "--older-than", "10");
    assert_string_equal(r.err, "closewise watch: --older-than: '10' has no unit: write 10s "
                               "or 10ms (units: ms, s, m, h) (try 'closewise watch --help')\n");
    RUN(&r, "ls", "--bogus");
    assert_int_equal(r.status, 2);
    RUN(&r, "watch", "--netns", "self", "--older-than", "2m30s", "--interval", "1.5s", "--count",
        "1");
    assert_int_equal(r.status, 0);
    RUN(&r, "client", "--connect-timeout", "25h", "-p", "1", "-u", "a:b");
    assert_string_equal(r.err, "closewise client: --connect-timeout: '25h' is out of range "
                               "(1ms to 24h) (try 'closewise client --help')\n");
}

/* The long options named on an option line of --help ("  -p, --port P"),
 * as " --a --b " into set. */
static void help_options(const char *help, char *set, size_t size)
{
    snprintf(set, size, " ");
    const char *opts = strstr(help, "\noptions:\n");
    for (const char *p = opts ? opts : help; (p = strstr(p, "\n  ")); p++) {
        size_t indent = strspn(p + 1, " ");
        const char *o = strstr(p, "--"), *eol = strchr(p + 1, '\n');
        if (!o || (eol && o > eol) || indent > 6 || p[1 + indent] != '-')
            continue;   /* not an option line: the text under one */
        size_t n = strspn(o + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
        size_t len = strlen(set);
        snprintf(set + len, size - len, "--%.*s ", (int)n, o + 2);
    }
}

static const char *const all_cmds[] = {"server", "stat", "ls", "kill", "client", "passwd",
                                       "watch", "demo", "probe", "exporter", "resets",
                                       "trace"};

/* Whether text has word (an option) not followed by more of a name. */
static int has_word(const char *text, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = text; (p = strstr(p, word)); p++)
        if ((p == text || !strchr("abcdefghijklmnopqrstuvwxyz0123456789-", p[-1]) ||
             p[-1] == ' ') &&
            !strchr("abcdefghijklmnopqrstuvwxyz0123456789-", p[n] ? p[n] : ' '))
            return 1;
    return 0;
}

/* man/closewise-CMD.1 against the table: its OPTIONS section names every
 * option the command takes (as --name, or -L for one with a letter, as
 * help shows it), and every option it describes (a .TP tag) is taken. */
static void check_man(const char *cmd, const char *taken, const char *help)
{
    static char man[131072];
    char path[256], sect[65536];
    snprintf(path, sizeof path, CW_SOURCE_DIR "/man/closewise-%s.1", cmd);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("%s: no man page %s", cmd, path);
    size_t n = fread(man, 1, sizeof man - 1, f);
    man[n] = '\0';
    fclose(f);
    const char *a = strstr(man, "\n.SH OPTIONS\n"), *b = a ? strstr(a + 1, "\n.SH ") : NULL;
    if (!a)
        fail_msg("%s: no OPTIONS section in %s", cmd, path);
    size_t k = 0;
    for (const char *p = a; *p && p != b && k < sizeof sect - 1; p++)
        if (!(p[0] == '\\' && p[1] == '-'))   /* roff's \- is a plain - here */
            sect[k++] = *p;
    sect[k] = '\0';
    char buf[2048], word[80];
    for (char *o = strtok(strcpy(buf, taken), " "); o; o = strtok(NULL, " ")) {
        snprintf(word, sizeof word, ", %s", o);
        const char *l = strstr(help, word);
        char letter[4] = {0};
        if (l && l - help >= 2 && l[-2] == '-')
            snprintf(letter, sizeof letter, "-%c", l[-1]);
        if (!has_word(sect, o) && !(letter[0] && has_word(sect, letter)))
            fail_msg("%s takes %s, which %s does not describe", cmd, o, path);
    }
    for (const char *p = sect; (p = strstr(p, "\n.TP\n")); p++) {
        const char *tag = p + 5;
        size_t len = strcspn(tag, "\n");
        for (const char *o = strstr(tag, "--"); o && o < tag + len; o = strstr(o + 2, "--")) {
            size_t w = 2 + strspn(o + 2, "abcdefghijklmnopqrstuvwxyz0123456789-");
            snprintf(word, sizeof word, " %.*s ", (int)w, o);
            if (strcmp(word, " --help ") && !strstr(taken, word))
                fail_msg("%s describes %s, which %s does not take", path, word, cmd);
        }
    }
}

/* --help lists exactly what the command accepts: each option --help names
 * is parsed (a flag, or a valued option taking "--bogus" as its value; the
 * second "--bogus" stops the run either way), and each option the parser
 * has (completion reads the same table) is in --help, and the man page
 * describes the same set. watch does not list --state, --pid or --cookie,
 * which it refuses. */
static void test_help_matches_parser(void **state)
{
    struct res r, h;
    char listed[2048], parsed[2048];
    for (size_t i = 0; i < sizeof all_cmds / sizeof all_cmds[0]; i++) {
        const char *cmd = all_cmds[i];
        RUN(&h, cmd, "--help");
        assert_int_equal(h.status, 0);
        help_options(h.out, listed, sizeof listed);
        for (char *o = strtok(strcpy(parsed, listed), " "); o; o = strtok(NULL, " ")) {
            if (!strcmp(o, "--help"))
                continue;
            RUN(&r, cmd, o, "--bogus", "--bogus");
            if (r.status != 2 || (strstr(r.err, "unknown option '--") &&
                                  !strstr(r.err, "'--bogus'")))
                fail_msg("%s --help lists %s, which it refuses: %s", cmd, o, r.err);
        }
        /* The other way: every option of the table is in --help. */
        RUN(&r, "__complete", cmd, "--");
        assert_int_equal(r.status, 0);
        int n = 0;
        for (char *o = strtok(r.out, "\n"); o; o = strtok(NULL, "\n"), n++) {
            char key[80];
            snprintf(key, sizeof key, " %s ", o);
            if (!strstr(listed, key))
                fail_msg("%s takes %s, which --help does not list:%s", cmd, o, listed);
        }
        if (n < 2)
            fail_msg("%s: completion offers %d options", cmd, n);
        check_man(cmd, listed, h.out);
        /* Every help fits 80 columns. */
        for (char *p = h.out; *p;) {
            size_t len = strcspn(p, "\n");
            if (len > 80)
                fail_msg("%s --help: a line of %zu columns: %.*s", cmd, len, (int)len, p);
            p += len + (p[len] == '\n');
        }
    }
    RUN(&h, "watch", "--help");
    assert_null(strstr(h.out, "--state"));
    assert_null(strstr(h.out, "--pid"));
    assert_null(strstr(h.out, "--cookie"));
    RUN(&r, "watch", "--pid", "1");
    expect_usage(&r, "watch", "--pid");
}

/* A CLOSE_WAIT socket in this test's namespace: the accepted end of a
 * connection whose client closed. Returns the listener's port. */
static int close_wait(int fds[3])
{
    fds[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fds[0], (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fds[0], 4), 0);
    assert_int_equal(getsockname(fds[0], (struct sockaddr *)&a, &len), 0);
    fds[1] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(fds[1], (struct sockaddr *)&a, sizeof a), 0);
    fds[2] = accept4(fds[0], NULL, NULL, SOCK_CLOEXEC);
    assert_true(fds[2] >= 0);
    close(fds[1]);
    int port = ntohs(a.sin_port);
    assert_int_equal(cwt_wait_count(CW_TCP_CLOSE_WAIT, port, 0, 1, 2000), 1);
    return port;
}

/* Output that cannot be written is an error, exit 3, never a success. */
static void test_write_errors(void **state)
{
    int fds[3];
    char port[16];
    snprintf(port, sizeof port, "%d", close_wait(fds));
    const char *const *const runs[] = {
        (const char *const[]){"--help", NULL},
        (const char *const[]){"--version", NULL},
        (const char *const[]){"passwd", "--password", "x", "u", NULL},
        (const char *const[]){"stat", "--netns", "self", NULL},
        (const char *const[]){"stat", "--netns", "self", "--json", NULL},
        (const char *const[]){"ls", "--netns", "self", NULL},
        (const char *const[]){"kill", "--netns", "self", "--sport", port, NULL},
        (const char *const[]){"probe", "--list", NULL},
        (const char *const[]){"probe", "--server", "127.0.0.1:1", "--list", NULL},
        (const char *const[]){"probe", "--help", NULL},
        (const char *const[]){"trace", "--help", NULL},
        (const char *const[]){"stat", "--help", NULL},
        (const char *const[]){"kill", "--help", NULL},
        (const char *const[]){"passwd", "--help", NULL},
        (const char *const[]){"ls", "--help", NULL},
        (const char *const[]){"client", "--help", NULL},
        (const char *const[]){"watch", "--help", NULL},
        (const char *const[]){"demo", "--help", NULL},
        (const char *const[]){"server", "--help", NULL},
        (const char *const[]){"exporter", "--help", NULL},
        (const char *const[]){"resets", "--help", NULL},
    };
    struct res r;
    for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++) {
        run_to(&r, "/dev/full", runs[i]);
        if (r.status != 3 || !strstr(r.err, "write error on standard output: No space left") ||
            lines(r.err) != 1)
            fail_msg("%s >/dev/full: status %d, stderr '%s'", runs[i][0], r.status, r.err);
        /* The same run to a pipe succeeds: the failure was the write. */
        run_to(&r, NULL, runs[i]);
        if (r.status != 0 || !r.out[0])
            fail_msg("%s: status %d, stderr '%s'", runs[i][0], r.status, r.err);
    }
    RUN_FULL(&r, "passwd", "--password", "x", "u");
    assert_string_equal(r.err, "closewise passwd: write error on standard output: "
                               "No space left on device\n");
    /* Commands whose run prints: a watch sample (the CLOSE_WAIT socket
     * above appears; stderr may also note how ages are known) and a
     * probe's table (a failed verdict, 1, becomes 3: the report was lost). */
    RUN_FULL(&r, "watch", "--netns", "self", "--count", "1");
    if (r.status != 3 || !strstr(r.err, "closewise watch: write error on standard output: "))
        fail_msg("watch >/dev/full: status %d, stderr '%s'", r.status, r.err);
    RUN_FULL(&r, "probe", "--scenario", "fin-on-accept", "--grace", "100ms", "--", "/bin/true");
    if (r.status != 3 || !strstr(r.err, "closewise probe: write error on standard output: "))
        fail_msg("probe >/dev/full: status %d, stderr '%s'", r.status, r.err);
    close(fds[2]);
    close(fds[0]);
}

/* probe's table for a client that did not close: a LEAK row has no close
 * time even when another connection of the scenario closed, and a HANG
 * says the limit ran out (this client would give up after 30 s), not that
 * it never gives up. */
static void test_probe_wording(void **state)
{
    struct res r;
    RUN(&r, "probe", "--scenario", "fin-on-accept", "--grace", "300ms", "--", "bash", "-c",
        "exec 3<>/dev/tcp/{host}/{port} 4<>/dev/tcp/{host}/{port}; sleep 0.2; "
        "exec 3>&-; sleep 30");
    assert_int_equal(r.status, 1);
    char *row = strstr(r.out, "\nfin-on-accept ");
    assert_non_null(row);
    char verdict[16], closed[16];
    int conns;
    assert_int_equal(sscanf(row, " fin-on-accept %15s %d %15s", verdict, &conns, closed), 3);
    assert_string_equal(verdict, "LEAK");
    assert_int_equal(conns, 2);
    if (strcmp(closed, "-"))
        fail_msg("a LEAK row with a close time '%s':%s", closed, r.out);
    RUN(&r, "probe", "--scenario", "silent", "--grace", "300ms", "--hang-limit", "500ms", "--",
        "bash", "-c", "exec 3<>/dev/tcp/{host}/{port}; sleep 30");
    assert_int_equal(r.status, 1);
    row = strstr(r.out, "\nsilent ");
    assert_non_null(row);
    assert_int_equal(sscanf(row, " silent %15s %d %15s", verdict, &conns, closed), 3);
    assert_string_equal(verdict, "HANG");
    assert_string_equal(closed, "-");
    /* the time it waited: the limit, or a sample later on a loaded machine */
    assert_non_null(strstr(row, "no close in the "));
    assert_non_null(strstr(row, "s the probe waited (--hang-limit): still open when it "
                                "stopped waiting"));
    assert_null(strstr(r.out, "never gave up"));
}

/* closewise-server(1): a credentials file that is missing or not a file is
 * a bad command line (2), said in words, not "Input/output error". */
static void test_server_credentials_errors(void **state)
{
    struct res r;
    RUN(&r, "server", "--port", "0", "--credentials", "/nonexistent/creds");
    expect_usage(&r, "server", "missing credentials");
    assert_string_equal(r.err, "closewise server: --credentials: /nonexistent/creds: "
                               "No such file or directory\n");
    RUN(&r, "server", "--port", "0", "--credentials", "/");
    expect_usage(&r, "server", "credentials directory");
    assert_non_null(strstr(r.err, "is a directory"));
}

/* The completion scripts load, and answer from the option tables. */
static void test_completion(void **state)
{
    const char *bash = CW_SOURCE_DIR "/contrib/completion/closewise.bash";
    assert_int_equal(cwt_sh("bash -n '%s'", bash), 0);
    assert_int_equal(cwt_sh("bash -c '. \"%s\"; complete -p closewise' >/dev/null", bash), 0);
    /* `closewise l<TAB>` */
    assert_int_equal(cwt_sh("test \"$(bash -c '. \"%s\"; COMP_WORDS=(%s l); COMP_CWORD=1; "
                            "_closewise; echo \"${COMPREPLY[*]}\"')\" = ls", bash, CLI), 0);
    struct res r;
    RUN(&r, "__complete", "ls", "--state", "close");
    assert_string_equal(r.out, "closed\nclose-wait\n");
    RUN(&r, "__complete", "ls", "--state", "close-wait,ti");   /* lists, item by item */
    assert_string_equal(r.out, "close-wait,time-wait\n");
    RUN(&r, "__complete", "probe", "--scenario", "fin-on-accept,fin-a");
    assert_string_equal(r.out, "fin-on-accept,fin-after-greeting\n");
    RUN(&r, "__complete", "passwd", "--method", "");
    assert_string_equal(r.out, "yescrypt\nsha512\n");
    RUN(&r, "__complete", "kill", "--y");
    assert_string_equal(r.out, "--yes\n");
    RUN(&r, "__complete", "watch", "--exit");
    assert_string_equal(r.out, "--exit-on-leak\n");
    /* Each command's options, from its table (the whole set is checked
     * against --help in test_help_matches_parser). */
    static const struct {
        const char *cmd, *prefix, *want;
    } opts[] = {
        {"demo", "--id", "--idle-timeout\n"},
        {"probe", "--hang", "--hang-limit\n"},
        {"probe", "--large", "--large\n--large-expect\n"},
        {"exporter", "--top", "--top\n--top-destinations\n"},
        {"resets", "--exit", "--exit-on-reset\n"},
        {"trace", "--gr", "--grace\n"},
        {"watch", "--older", "--older-than\n"},
        {"server", "--lingering-t", "--lingering-time\n--lingering-timeout\n"},
        {"server", "--auth-v", "--auth-v6-prefix\n--auth-v6-net-prefix\n"},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        RUN(&r, "__complete", opts[i].cmd, opts[i].prefix);
        if (strcmp(r.out, opts[i].want))
            fail_msg("__complete %s %s: '%s'", opts[i].cmd, opts[i].prefix, r.out);
    }
    /* Values: formats, reasons, and the server's scenarios with --server. */
    RUN(&r, "__complete", "probe", "--format", "j");
    assert_string_equal(r.out, "json\njunit\n");
    RUN(&r, "__complete", "resets", "--reason", "unread,ling");
    assert_string_equal(r.out, "unread,linger0\n");
    RUN(&r, "__complete", "probe", "--scenario", "fin-on");
    assert_string_equal(r.out, "fin-on-accept\n");
    RUN(&r, "__complete", "probe", "--server", "h:1", "--scenario", "fin-on");
    assert_string_equal(r.out, "");   /* fin-on-accept is a client scenario */
    RUN(&r, "__complete", "trace", "--", "cu");   /* CMD's words: the shell's files */
    assert_string_equal(r.out, "@file\n");
    if (cwt_sh("command -v zsh >/dev/null") != 0)
        return;   /* zsh is not installed: nothing more to check */
    const char *zsh = CW_SOURCE_DIR "/contrib/completion/_closewise";
    assert_int_equal(cwt_sh("zsh -n '%s'", zsh), 0);
    /* The file is a completion function's body: run it as one, with
     * compadd standing in for zsh's, on `closewise l<TAB>`. */
    assert_int_equal(cwt_sh("test \"$(zsh -c 'compadd() { print -l -- \"${@:2}\"; }; "
                            "eval \"_cw() { $(cat %s) }\"; words=(%s l); CURRENT=2; _cw')\" = ls",
                            zsh, CLI), 0);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_version_and_help),
        CWT_TEST(test_usage_errors_exit_2),
        CWT_TEST(test_every_command_one_voice),
        CWT_TEST(test_duration_table),
        CWT_TEST(test_duration_messages),
        CWT_TEST(test_help_matches_parser),
        CWT_TEST(test_write_errors),
        CWT_TEST(test_server_credentials_errors),
        CWT_TEST(test_probe_wording),
        CWT_TEST(test_completion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
