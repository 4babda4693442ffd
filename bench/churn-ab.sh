#!/bin/sh
# bench/churn-ab.sh BUILD_DIR [BUILD_DIR|PEER...] - server CPU per churn
# connection (wrong password, read to EOF, close), `closewise server` of
# each BUILD_DIR (and each PEER: an executable run as bench/peers/peer.h
# says) against the bare epoll peer of the first, in interleaved
# rounds: every round runs each server once, in a rotated order, so slow
# spells of a shared machine fall on all of them alike. Per run: a fresh
# server on core 0, 300 warm-up connections in three parts 0.15 s apart
# (closewise times its cheap check then), then `cw_bench_load churn` on core 1 for SECS seconds; the
# server's CPU is the scheduler's exact runtime of all its threads
# (/proc/PID/task/*/schedstat), split into kernel and user by its clock
# ticks (/proc/PID/stat); runs/conn: times its threads were switched in.
# Prints one line per run (stderr), then per server the medians with
# min-max, and per closewise build the ratio to epoll of the same round:
# median, quartiles and min-max over the rounds. Environment: CW_AB_ROUNDS
# (15), CW_AB_SECS (2), CW_AB_CONC (concurrencies, "64"; e.g. "64 512"),
# CW_AB_ARGS (more `closewise server` options). About ROUNDS x servers x
# concurrencies x (SECS + 1.5) seconds.
set -eu
. "$(dirname "$0")/lib.sh"

rounds=${CW_AB_ROUNDS:-15}
secs=${CW_AB_SECS:-2}
concs=${CW_AB_CONC:-64}
extra=${CW_AB_ARGS:-}
first=$1
load=$first/bench/cw_bench_load
peer=$first/bench/cw_peer_epoll
bench_need "$load" "$peer"
for b in "$@"; do
    [ -x "$b/closewise" ] || [ -f "$b" -a -x "$b" ] ||
        { echo "bench/churn-ab.sh: $b/closewise not built" >&2; exit 3; }
done
spid=""
bench_scratch spid
ulimit -n "$(ulimit -Hn)"
hash=$("$load" hash bench-password)
printf 'bench:%s\n' "$hash" >"$tmp/cred"

# start NAME: the server NAME ("epoll", a peer or a build directory) on
# core 0.
start() {
    rm -f "$tmp/port"
    if [ "$1" = epoll ]; then
        taskset -c 0 "$peer" "$tmp/port" "$hash" >/dev/null 2>"$tmp/err" &
    elif [ -f "$1" ]; then
        taskset -c 0 "$1" "$tmp/port" "$hash" >/dev/null 2>"$tmp/err" &
    else
        # shellcheck disable=SC2086
        taskset -c 0 "$1/closewise" server -q -p 0 --port-file "$tmp/port" -c "$tmp/cred" \
            --max-auth-failures 0 --max-connections 20000 $extra >/dev/null 2>"$tmp/err" &
    fi
    spid=$!
    bench_port_wait "churn-ab: $1" 200 "$tmp/err" || exit 3
}

# runtime ns, switch-ins, user ticks, system ticks of the server.
usage() {
    cat /proc/"$spid"/task/*/schedstat | awk '{ r += $1; n += $3 } END { printf "%.0f %d ", r, n }'
    awk '{ printf "%d %d\n", $14, $15 }' "/proc/$spid/stat"
}

run() {   # NAME ROUND CONC
    start "$1"
    # warm-up in three parts 0.15 s apart: closewise times a table of
    # cheap methods at three logins 100 ms or more apart (auth.c)
    for _ in 1 2 3; do
        taskset -c 1 "$load" churn "$sport" 8 10 100 wrong-password >/dev/null
        sleep 0.15
    done
    u0=$(usage)
    out=$(taskset -c 1 "$load" churn "$sport" "$3" "$secs" 50000000 wrong-password)
    u1=$(usage)
    bench_server_stop
    echo "$u0 $u1 $out" | awk -v s="$1" -v r="$2" -v conc="$3" '{
        for (i = 9; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "conns") c = kv[2] }
        cpu = ($5 - $1) / 1000 / c; t = ($7 - $3) + ($8 - $4)
        k = t ? cpu * ($8 - $4) / t : 0
        printf "server=%s conc=%d round=%d conns=%d cpu_us=%.2f kernel_us=%.2f user_us=%.2f runs=%.3f\n",
            s, conc, r, c, cpu, k, cpu - k, ($6 - $2) / c }'
}

names="epoll $*"
: >"$tmp/runs"
r=1
while [ $r -le "$rounds" ]; do
    set -- $names
    k=$(( (r - 1) % $# ))
    while [ $k -gt 0 ]; do s=$1; shift; set -- "$@" "$s"; k=$((k - 1)); done
    for conc in $concs; do
        for s in "$@"; do
            line=$(run "$s" $r "$conc")
            echo "$line" >>"$tmp/runs"
            echo "  $line" >&2
        done
    done
    r=$((r + 1))
done

for conc in $concs; do
    echo "churn-ab: $rounds rounds, concurrency $conc, ${secs}s a run; us per connection, median (min-max)"
    for s in $names; do
        printf '%-28s cpu %s  kernel %s  user %s  runs/conn %s\n' "$s" \
            "$(kv_fmt $(kv_stat "$tmp/runs" "server=$s conc=$conc" cpu_us) 2)" \
            "$(kv_fmt $(kv_stat "$tmp/runs" "server=$s conc=$conc" kernel_us) 2)" \
            "$(kv_fmt $(kv_stat "$tmp/runs" "server=$s conc=$conc" user_us) 2)" \
            "$(kv_fmt $(kv_stat "$tmp/runs" "server=$s conc=$conc" runs) 3)"
    done
    # Ratios to epoll within each round: median, quartiles, min-max.
    for s in ${names#epoll }; do
        awk -v s="$s" -v conc="$conc" '
            { split($1, a, "="); split($2, q, "="); split($3, b, "="); split($5, c, "=")
              if (q[2] != conc) next
              if (a[2] == "epoll") e[b[2]] = c[2]; else if (a[2] == s) x[b[2]] = c[2] }
            END {
                for (r in x) if (r in e) v[n++] = x[r] / e[r]
                for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
                m = n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
                printf "ratio %s / epoll at %d: median %.3f, quartiles %.3f-%.3f, min-max %.3f-%.3f (%d rounds)\n",
                    s, conc, m, v[int((n - 1) / 4)], v[int(3 * (n - 1) / 4 + 0.5)], v[0], v[n - 1], n }' "$tmp/runs"
    done
done
