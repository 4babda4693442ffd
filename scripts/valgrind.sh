#!/bin/sh
# valgrind.sh BUILD_DIR - run the library tests under valgrind's memcheck;
# any leak or error fails the run.
set -eu
build=${1:-build-valgrind}
status=0
# The library's own tests; the ones that drive CLI processes are covered by
# ASan+UBSan in `make check-sanitize`.
for t in test_conn test_end test_backoff test_close test_dial test_examples test_loop test_protocol test_auth test_throttle test_diag test_stream test_echo_server test_tcpstate test_authpool test_tqueue; do
    [ -x "$build/tests/$t" ] || continue
    printf 'valgrind %s ... ' "$t"
    if valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --track-fds=no "$build/tests/$t" > "$build/valgrind-$t.log" 2>&1; then
        echo ok
    else
        echo "FAILED (see $build/valgrind-$t.log)"
        status=1
    fi
done
# The auth pool's threads: data races and lock order under helgrind.
t=test_authpool
if [ -x "$build/tests/$t" ]; then
    printf 'helgrind %s ... ' "$t"
    if valgrind --tool=helgrind --quiet --error-exitcode=99 "$build/tests/$t" \
        > "$build/helgrind-$t.log" 2>&1; then
        echo ok
    else
        echo "FAILED (see $build/helgrind-$t.log)"
        status=1
    fi
fi
exit $status
