#!/bin/sh
# bench/echo-counts.sh BUILD_DIR [BUILD_DIR...] - what one ECHO of a
# logged-in session costs the server, in counts rather than time: for the
# floor (cw_bench_authload floor of the first BUILD_DIR: a bare epoll line
# server) and `closewise server` of each BUILD_DIR, with 100 sessions
# sending ECHO 20 times a second each (cw_bench_authload latency, K = 0:
# no logins besides the sessions' own, which happen before counting):
#   sys:    system calls per echo (perf stat raw_syscalls:sys_enter),
#   cpu_us: the server's task-clock per echo (time: noisy on a busy machine),
#   instr:  user-space instructions per echo (valgrind callgrind, its
#           instrumentation switched on for the window only; this machine
#           has no hardware counters for perf's instructions:u), with 20
#           sessions (valgrind is ~50x slower),
# echoes being the server's sendto calls in the window (one reply each).
# Each server is counted ROUNDS times, the servers interleaved (A, B, A,
# B: drift on a shared machine hits both); one line per count on stdout,
# key=value. Needs perf (root or perf_event_paranoid <= 1) and valgrind.
# Environment: CW_ECHO_SECS (4, the counted window), CW_ECHO_ROUNDS (2).
# About 30 s per server and round.
set -eu
. "$(dirname "$0")/lib.sh"

secs=${CW_ECHO_SECS:-4}
rounds=${CW_ECHO_ROUNDS:-2}
first=$1
gen=$first/bench/cw_bench_authload
bench_need "$gen" "$first/bench/cw_bench_load"
server=""
genpid=""
bench_scratch server genpid
# A cheap hash (cw_bench_load's): the sessions' 100 logins are over long
# before the window, even on a loaded machine.
printf 'e:%s\n' "$("$first/bench/cw_bench_load" hash pw-e)" >"$tmp/creds"

# start CMD...: the server (its port in $tmp/port); sets server.
start() {
    rm -f "$tmp/port"
    "$@" >/dev/null 2>"$tmp/err" &
    server=$!
    i=0
    until [ -s "$tmp/port" ]; do
        i=$((i + 1))
        [ $i -le 300 ] && kill -0 "$server" 2>/dev/null ||
            { echo "echo-counts: $1 did not start" >&2; cat "$tmp/err" >&2; exit 3; }
        sleep 0.1
    done
}

# window SESSIONS EVENTS [ON OFF]: run the echo load, let the sessions log
# in, then count EVENTS on the server over the window (running the
# commands ON and OFF around it); the counts go to $tmp/perf.
window() {
    "$gen" latency "$(cat "$tmp/port")" "$1" 20 $((secs + 4)) 0 e:pw-e e:pw-e >"$tmp/gen" &
    genpid=$!
    sleep 2   # the logins are done: only echoes are counted
    ${3:-:}
    perf stat -x, -o "$tmp/perf" -e "$2" -e syscalls:sys_enter_sendto \
        -p "$server" -- sleep "$secs"
    ${4:-:}
    wait "$genpid"
    genpid=""
    bench_stop "$server"
    server=""
}

cg_instr() { callgrind_control -i "$1" "$server" >/dev/null 2>&1; }

# count LABEL CMD...: system calls and CPU per echo, then instructions.
count() {
    label=$1
    shift
    start "$@"
    window 100 raw_syscalls:sys_enter,task-clock
    line=$(awk -F, '/raw_syscalls/ { sys = $1 } /task-clock/ { ms = $1 }
        /sys_enter_sendto/ { n = $1 }
        END { if (n + 0 > 0) printf "echoes=%d sys_per_echo=%.2f cpu_us_per_echo=%.1f",
                                   n, sys / n, ms * 1000 / n }' "$tmp/perf")
    [ -n "$line" ] || { echo "echo-counts: no echo counted for $label" >&2; exit 3; }
    rm -f "$tmp/cg.out"
    start valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$tmp/cg.out" "$@"
    window 20 task-clock "cg_instr on" "cg_instr off"
    n=$(awk -F, '/sys_enter_sendto/ { print $1 }' "$tmp/perf")
    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err")
    echo "server=$label $line instr_per_echo=$(echo "$ir $n" | awk '{ printf "%.0f", $2 ? $1 / $2 : 0 }')"
}

r=0
while [ $r -lt "$rounds" ]; do
    count floor "$gen" floor "$tmp/port"
    for b in "$@"; do
        count "closewise:$b" "$b/closewise" server -q -p 0 --port-file "$tmp/port" \
            -c "$tmp/creds" --max-connections 4096 --max-auth-failures 0
    done
    r=$((r + 1))
done
