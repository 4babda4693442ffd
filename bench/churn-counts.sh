#!/bin/sh
# bench/churn-counts.sh BUILD_DIR [BUILD_DIR...] - exact per-connection
# costs of the churn load (wrong password, read to EOF, close), with no
# timing noise: for `closewise server` of each BUILD_DIR and the bare
# epoll peer of the first,
#   instr: user-space instructions per connection (valgrind callgrind:
#          (count over N2 connections - count over N1) / (N2 - N1));
#   sys:   system calls per connection (perf stat -e raw_syscalls:sys_enter
#          on the server over N2 connections at concurrency 64);
#   clock: clock_gettime calls per connection (the vDSO: no system call;
#          counted by callgrind as calls of __vdso_clock_gettime / clock_gettime).
# One line per server on stdout, key=value. Needs valgrind and perf (root or
# perf_event_paranoid <= 1 for the tracepoint). About 1-2 minutes.
# Environment: CW_COUNT_N1 (500), CW_COUNT_N2 (2500).
set -eu

n1=${CW_COUNT_N1:-500}
n2=${CW_COUNT_N2:-2500}
first=$1
load=$first/bench/cw_bench_load
peer=$first/bench/cw_peer_epoll
password=bench-password
for f in "$load" "$peer"; do
    [ -x "$f" ] || { echo "bench/churn-counts.sh: $f not built" >&2; exit 3; }
done
. "$(dirname "$0")/lib.sh"
spid=""
bench_scratch spid
ulimit -n "$(ulimit -Hn)"
hash=$("$load" hash "$password")
printf 'bench:%s\n' "$hash" >"$tmp/cred"

# start WRAPPER... -- KIND BIN: the server on core 0 under WRAPPER; sets
# spid and sport.
start() {
    kind=$1 bin=$2
    shift 2
    rm -f "$tmp/port"
    if [ "$kind" = epoll ]; then
        taskset -c 0 "$@" "$bin" "$tmp/port" "$hash" >/dev/null 2>"$tmp/err" &
    else
        # --auth-threads 0: under valgrind the hash is timed ~50x slower
        # and would go to the check threads; natively this cheap hash runs
        # on the loop, which is what is counted.
        taskset -c 0 "$@" "$bin" server -q -p 0 --port-file "$tmp/port" -c "$tmp/cred" \
            --max-auth-failures 0 --max-connections 20000 $threads >/dev/null 2>"$tmp/err" &
    fi
    spid=$!
    bench_port_wait "churn-counts: $bin" 600 "$tmp/err" || exit 3   # valgrind: slow
    sleep 0.3
}

# callgrind KIND BIN N: total instructions and clock_gettime calls.
callgrind() {
    threads=--auth-threads\ 0
    start "$1" "$2" valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out"
    taskset -c 1 "$load" churn "$sport" 8 300 "$3" wrong-password >/dev/null
    bench_server_stop
    ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err")
    # Calls whose callee is clock_gettime: ids map to names on first use.
    calls=$(awk '
        /^c?fn=\(/ { id = $1; sub(/^c?fn=/, "", id); if (NF > 1) name[id] = $2; if ($0 ~ /^cfn=/) cur = id; next }
        /^calls=/ { split($1, a, "="); if (name[cur] ~ /^_*clock_gettime(@|$)/) s += a[2] }
        END { print s + 0 }' "$tmp/cg.out")
    echo "$ir $calls"
}

# syscalls KIND BIN: system calls per connection over N2 connections.
syscalls() {
    threads=
    start "$1" "$2"
    perf stat -e raw_syscalls:sys_enter -p "$spid" -x, -o "$tmp/perf" &
    ppid=$!
    sleep 0.3
    taskset -c 1 "$load" churn "$sport" 64 300 "$n2" wrong-password >"$tmp/churn"
    kill -INT $ppid
    wait $ppid 2>/dev/null || true
    bench_server_stop
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' "$tmp/churn")
    awk -F, -v c="$conns" '/raw_syscalls/ { printf "%.2f\n", $1 / c }' "$tmp/perf"
}

count() {   # KIND BIN LABEL
    a=$(callgrind "$1" "$2" "$n1")
    b=$(callgrind "$1" "$2" "$n2")
    sys=$(syscalls "$1" "$2")
    echo "$a $b" | awk -v l="$3" -v d=$((n2 - n1)) -v s="$sys" '{
        printf "server=%s instr_per_conn=%.0f clock_per_conn=%.2f sys_per_conn=%s\n", l, ($3 - $1) / d, ($4 - $2) / d, s }'
}

count epoll "$peer" epoll
for b in "$@"; do
    count closewise "$b/closewise" "closewise:$b"
done
