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
#   kernel work in the server's context, per connection, in the same perf
#   run as sys (tracepoints: exact counts, no timing): ctxsw (the server
#          went to sleep: sched_switch), hrtimer (hrtimer_start: epoll_wait
#          with a timeout arms one per sleep), slab (kmem_cache_alloc),
#          xmit (packets sent from the server's context: net_dev_xmit).
#   In the default mode (check threads started, the cheap hash checked on
#   the loop), when perf can put uprobes on libc (one more run, N2
#   connections; the probes are removed on exit): clock_native
#          (clock_gettime calls), locks (pthread_mutex_lock calls) and
#          cancel (__pthread_disable_asynccancel: glibc's cancellation
#          wrapper around a blocking-capable system call, paid only by a
#          process with threads).
# One line per server on stdout, key=value. Needs valgrind and perf (root or
# perf_event_paranoid <= 1 for the tracepoints). About 1-2 minutes.
# Environment: CW_COUNT_N1 (500), CW_COUNT_N2 (2500).
set -eu

n1=${CW_COUNT_N1:-500}
n2=${CW_COUNT_N2:-2500}
first=$1
load=$first/bench/cw_bench_load
peer=$first/bench/cw_peer_epoll
password=bench-password
. "$(dirname "$0")/lib.sh"
bench_need "$load" "$peer"
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

# perf_per_conn KIND BIN EVENTS NAMES: one run of N2 connections at
# concurrency 64 (default mode) under `perf stat -e EVENTS` on the server;
# prints NAME=count/connection for each event, in order.
perf_per_conn() {
    threads=
    start "$1" "$2"
    # Three logins first, 0.15 s apart: closewise times a table of cheap
    # methods at three logins 100 ms or more apart to choose between the
    # loop and the check threads (auth.c), and a uprobe's trap in a timing
    # would send every check to the threads.
    for _ in 1 2 3; do
        taskset -c 1 "$load" churn "$sport" 1 300 1 wrong-password >/dev/null
        sleep 0.15
    done
    perf stat -e "$3" -p "$spid" -x, -o "$tmp/perf" &
    ppid=$!
    sleep 0.3
    taskset -c 1 "$load" churn "$sport" 64 300 "$n2" wrong-password >"$tmp/churn"
    kill -INT $ppid
    wait $ppid 2>/dev/null || true
    bench_server_stop
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' "$tmp/churn")
    awk -F, -v c="$conns" -v names="$4" 'BEGIN { split(names, n, " ") }
        /^[0-9]/ { printf "%s%s=%.2f", i ? " " : "", n[++i], $1 / c }
        END { print "" }' "$tmp/perf"
}

kernel_events=raw_syscalls:sys_enter,sched:sched_switch,timer:hrtimer_start,kmem:kmem_cache_alloc,net:net_dev_xmit
kernel_names="sys_per_conn ctxsw hrtimer slab xmit"

# Uprobes on libc for the native counts, if perf can place them.
libc=$(ldd "$peer" | awk '/libc\.so/ { print $3 }')
probes=""
if [ -n "$libc" ] && perf probe -q -x "$libc" -a cwcount:clock=clock_gettime \
        -a cwcount:lock=pthread_mutex_lock \
        -a cwcount:cancel=__pthread_disable_asynccancel 2>/dev/null; then
    probes=cwcount:clock,cwcount:lock,cwcount:cancel
    trap 'perf probe -q -d "cwcount:*" 2>/dev/null; _bench_cleanup' EXIT INT TERM
else
    perf probe -q -d "cwcount:*" 2>/dev/null || true
fi

count() {   # KIND BIN LABEL
    a=$(callgrind "$1" "$2" "$n1")
    b=$(callgrind "$1" "$2" "$n2")
    k=$(perf_per_conn "$1" "$2" "$kernel_events" "$kernel_names")
    u=""
    [ -n "$probes" ] && u=" $(perf_per_conn "$1" "$2" "$probes" "clock_native locks cancel")"
    echo "$a $b" | awk -v l="$3" -v d=$((n2 - n1)) -v k="$k$u" '{
        printf "server=%s instr_per_conn=%.0f clock_per_conn=%.2f %s\n", l, ($3 - $1) / d, ($4 - $2) / d, k }'
}

count epoll "$peer" epoll
for b in "$@"; do
    count closewise "$b/closewise" "closewise:$b"
done
