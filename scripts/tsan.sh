#!/bin/sh
# tsan.sh BUILD_DIR - run the tests of the auth pool's threads (test_auth,
# test_authpool) and of the server's loops and check threads together
# (test_server_load, which spawns the TSan-built closewise server: a report
# there makes the server exit 66, which the test fails on), built with
# -DCW_TSAN=ON; any ThreadSanitizer report fails the run (TSan exits 66).
# io_sync=0: by default TSan counts a send on any socket and a recv on any
# other as ordering the two threads, which hid a race planted between the
# server's loops (each loop's sessions are sockets of their own).
set -eu
build=${1:-build-tsan}
status=0
for t in test_auth test_authpool test_server_load; do
    printf 'tsan %s ... ' "$t"
    if [ ! -x "$build/tests/$t" ]; then
        echo "FAILED (not built in $build)"
        status=1
        continue
    fi
    if TSAN_OPTIONS="halt_on_error=0 exitcode=66 io_sync=0 ${TSAN_OPTIONS:-}" \
        "$build/tests/$t" > "$build/tsan-$t.log" 2>&1; then
        echo ok
    else
        echo "FAILED (see $build/tsan-$t.log)"
        status=1
    fi
done
exit $status
