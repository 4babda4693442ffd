#!/bin/sh
# tsan.sh BUILD_DIR - run the tests of the auth pool's threads (test_auth,
# test_authpool) built with -DCW_TSAN=ON; any ThreadSanitizer report
# fails the run (TSan exits 66 then).
set -eu
build=${1:-build-tsan}
status=0
for t in test_auth test_authpool; do
    printf 'tsan %s ... ' "$t"
    if [ ! -x "$build/tests/$t" ]; then
        echo "FAILED (not built in $build)"
        status=1
        continue
    fi
    if TSAN_OPTIONS="halt_on_error=0 exitcode=66 ${TSAN_OPTIONS:-}" \
        "$build/tests/$t" > "$build/tsan-$t.log" 2>&1; then
        echo ok
    else
        echo "FAILED (see $build/tsan-$t.log)"
        status=1
    fi
done
exit $status
