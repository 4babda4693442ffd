/* test_echo_server.c - examples/echo_server.c, the cw_stream example, as a
 * real process: clients that close first, reset, go idle, or never read
 * what they asked for. Afterwards the kernel's table and the server's
 * /proc/PID/fd must show nothing left behind, and it must exit cleanly
 * (under ASan, LeakSanitizer checks that no stream's memory was lost). */
// cw-test-timeout: 120
#include "cwtest.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define EACH 20
#define IDLE_MS 300

static pid_t server;
static int port, server_out, server_err;

static void start_server(void)
{
    char path[512], idle[16];
    snprintf(path, sizeof path, "%s/examples/echo_server", CW_BUILD_DIR);
    snprintf(idle, sizeof idle, "%d", IDLE_MS);
    char *argv[] = {path, "0", idle, NULL};
    server = cwt_spawn3(argv, NULL, &server_out, &server_err);   /* its reset notes */
    char line[64];
    assert_true(cwt_read_line(server_out, line, sizeof line, 10000) > 0);
    assert_int_equal(sscanf(line, "listening %d", &port), 1);
}

static int client(void)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(c >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    return c;
}

static void echo_once(int c)
{
    char buf[8];
    assert_int_equal(send(c, "ping", 4, MSG_NOSIGNAL), 4);
    struct pollfd p = {.fd = c, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 5000), 1);
    assert_int_equal(recv(c, buf, sizeof buf, 0), 4);
    assert_memory_equal(buf, "ping", 4);
}

/* Wait until the server holds only its baseline descriptors. */
static int settle_fds(int baseline)
{
    int n = cwt_fd_count_pid(server);
    for (int i = 0; i < 300 && n != baseline; i++) {
        cwt_sleep_ms(10);
        n = cwt_fd_count_pid(server);
    }
    return n;
}

static void test_echo_server_leaves_nothing(void **state)
{
    start_server();
    int baseline = cwt_fd_count_pid(server);
    int cs[EACH];
    /* Clients that close first. */
    for (int i = 0; i < EACH; i++) {
        cs[i] = client();
        echo_once(cs[i]);
    }
    for (int i = 0; i < EACH; i++)
        close(cs[i]);
    /* Clients that reset. */
    struct linger lg = {1, 0};
    for (int i = 0; i < EACH; i++) {
        cs[i] = client();
        echo_once(cs[i]);
        setsockopt(cs[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(cs[i]);
    }
    /* Clients that half-close and still read the answer. */
    for (int i = 0; i < EACH; i++) {
        cs[i] = client();
        assert_int_equal(send(cs[i], "last", 4, MSG_NOSIGNAL), 4);
        shutdown(cs[i], SHUT_WR);
    }
    for (int i = 0; i < EACH; i++) {
        char buf[8];
        struct pollfd p = {.fd = cs[i], .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_int_equal(recv(cs[i], buf, sizeof buf, MSG_WAITALL), 4);
        assert_int_equal(recv(cs[i], buf, sizeof buf, 0), 0);   /* then EOF */
        close(cs[i]);
    }
    /* Clients that go idle: the server ends them after IDLE_MS with a
     * FIN, and they close on EOF. */
    for (int i = 0; i < EACH; i++) {
        cs[i] = client();
        echo_once(cs[i]);
    }
    for (int i = 0; i < EACH; i++) {
        char b;
        struct pollfd p = {.fd = cs[i], .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1);
        assert_int_equal(recv(cs[i], &b, 1, 0), 0);
        close(cs[i]);
    }
    int n = settle_fds(baseline);
    printf("# echo_server: %d descriptors at start, %d after %d clients\n",
           baseline, n, 4 * EACH);
    assert_int_equal(n, baseline);
    assert_int_equal(cwt_count_pid(server, CW_TCP_CLOSE_WAIT), 0);
    assert_int_equal(cwt_count(CW_TCP_CLOSE_WAIT, 0, 0), 0);
    assert_int_equal(cwt_count(CW_TCP_ESTABLISHED, port, 0), 0);
    kill(server, SIGTERM);
    int st = cwt_wait(server, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(server_out);
    close(server_err);
}

/* The third number of /proc/sys/net/ipv4/NAME (tcp_rmem, tcp_wmem): the
 * most the kernel lets one socket's buffer grow to by autotuning. */
static size_t tcp_mem_max(const char *name)
{
    char path[64];
    unsigned long lo, def, max;
    snprintf(path, sizeof path, "/proc/sys/net/ipv4/%s", name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%lu %lu %lu", &lo, &def, &max), 3);
    fclose(f);
    return max;
}

/* A client that sends a lot and never reads: the server's backpressure
 * stops it reading, the client's own buffers fill, and when the client
 * gives up and closes, nothing stays behind on the server.
 * How much the client gets accepted is up to the kernel's buffers, not the
 * server: up to 4 sockets' worth (client send, server receive, server
 * send, client receive) and receive autotuning grows the server's receive
 * buffer by how fast it read before it stopped. Natively 8-9 MB; under
 * valgrind (a slow client) 8.6-10.5 MB, and once over the old fixed cap of
 * 200 x 64 KiB = 12.5 MiB. So the cap is what those 4 buffers may reach
 * (a server that reads without bound never blocks the client and hits
 * it), and the pause itself is read from the kernel: unread bytes wait in
 * the server's receive queue. */
static void test_echo_server_client_never_reads(void **state)
{
    start_server();
    int baseline = cwt_fd_count_pid(server);
    int c = client();
    size_t cap = 2 * (tcp_mem_max("tcp_rmem") + tcp_mem_max("tcp_wmem")) + (1u << 20);
    char buf[65536] = {0};
    size_t sent = 0;
    int paused = 0;
    while (sent <= cap && !paused) {
        ssize_t n = send(c, buf, sizeof buf, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) {
            struct pollfd p = {.fd = c, .events = POLLOUT};
            paused = poll(&p, 1, 200) == 0;   /* both directions are full */
            continue;
        }
        sent += (size_t)n;
    }
    struct sockaddr_in me;
    socklen_t len = sizeof me;
    assert_int_equal(getsockname(c, (struct sockaddr *)&me, &len), 0);
    long unread = cwt_rx_queue(port, ntohs(me.sin_port));
    printf("# a client that never reads got %zu bytes accepted before the server "
           "stopped reading (%ld unread in its receive queue; cap %zu)\n", sent, unread, cap);
    assert_true(paused);
    assert_true(unread > 0);
    assert_int_equal(cwt_fd_count_pid(server), baseline + 1);
    struct linger lg = {1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(c);
    assert_int_equal(settle_fds(baseline), baseline);
    assert_int_equal(cwt_count_pid(server, CW_TCP_CLOSE_WAIT), 0);
    kill(server, SIGTERM);
    int st = cwt_wait(server, 10000);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    close(server_out);
    close(server_err);
}

int main(void)
{
    cwt_private_netns();
    const struct CMUnitTest tests[] = {
        CWT_TEST(test_echo_server_leaves_nothing),
        CWT_TEST(test_echo_server_client_never_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
