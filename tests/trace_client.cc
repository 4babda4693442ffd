// trace_client.cc - a C++ client with the seed's bug, for `closewise
// trace` and `probe --where` (tests/test_trace.c): a Session object reads
// until the server ends the connection and then forgets its socket.
// usage: trace_client_cxx HOST PORT HOLD_MS
#include <chrono>
#include <cstdlib>
#include <netdb.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace {

class Session {
public:
    explicit Session(int fd) : fd_(fd) {}
    // Returns when the server has ended the connection; fd_ stays open.
    void run()
    {
        char buf[512];
        for (;;) {
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);   // the C++ read that returns 0
            if (n <= 0)
                return;
        }
    }

private:
    int fd_;
};

int dial(const char *host, const char *port)
{
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo *res;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int s = socket(res->ai_family, SOCK_STREAM, 0);
    if (connect(s, res->ai_addr, res->ai_addrlen) < 0) {
        close(s);
        s = -1;
    }
    freeaddrinfo(res);
    return s;
}

}  // namespace

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    int s = dial(argv[1], argv[2]);
    if (s < 0)
        return 1;
    (void)::send(s, "hello\n", 6, MSG_NOSIGNAL);
    Session(s).run();
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(argv[3])));
    return 0;
}
