#!/bin/sh
# run-examples.sh BUILD_DIR - the seed's failure and its fix, side by side:
# the seed's client and the libclosewise client each make N connections to
# a server that refuses the login and closes first; the kernel's socket
# table (ss) then shows what each client still holds.
set -eu
build=${1:-build}
n=${N:-20}
tmp=$(mktemp -d)
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

"$build/examples/closing_server" 0 > "$tmp/port" & pids="$pids $!"
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
port=$(cat "$tmp/port")

"$build/examples/leaky_client" 127.0.0.1 "$port" "$n" 10000 > "$tmp/leaky" & leaky=$!
"$build/examples/tidy_client" 127.0.0.1 "$port" "$n" 10000 > "$tmp/tidy" & tidy=$!
pids="$pids $leaky $tidy"
i=0
while ! { grep -q done "$tmp/leaky" && grep -q done "$tmp/tidy"; } && [ $i -lt 400 ]; do
    sleep 0.05; i=$((i + 1))
done

count() { ss -tanpH state close-wait 2>/dev/null | grep -c "pid=$1," || true; }
printf '%s connections each to a server that refuses the login and closes first (port %s)\n\n' "$n" "$port"
printf '%-38s %s\n' "client" "sockets left in CLOSE_WAIT (ss)"
printf '%-38s %s\n' "seed's code (examples/leaky_client)" "$(count $leaky)"
printf '%-38s %s\n' "libclosewise (examples/tidy_client)" "$(count $tidy)"
printf '\nThe seed returns on a failed recv() without close(): each socket stays in\n'
printf 'CLOSE_WAIT while the process lives. cw_readline() reports CW_EOF, and the\n'
printf 'one exit path calls cw_close(): nothing is left behind.\n'
