#!/bin/sh
# bench/authsched.sh [BUILD [MARKDOWN]] - the password-check threads'
# scheduling, A/B in one run of one build: `closewise server` with its
# default --auth-priority idle (SCHED_IDLE with nice-19 rescuers,
# src/server/authpool.c) against --auth-priority nice (check threads at
# nice 19).
# 1. echo: the echo round trip of 100 logged-in sessions (20 ECHO/s each)
#    while K clients log in over and over (cw_bench_authload latency, as in
#    bench/authload.sh): sha512 K=4 and K=8 (the rows the policy is for),
#    yescrypt K=8 and K=32. RUNS runs of SECS s (CW_AUTHSCHED_RUNS, 3;
#    CW_AUTHSCHED_SECS, 6), the two policies interleaved, which goes first
#    alternating. Also the server's auth-rescued count (stats line) and
#    how often its rescue threads woke: they should sleep here.
# 2. starvation: a nice-0 busy loop pinned to each core (other programs
#    keeping the machine busy), 4 clients logging in with yescrypt for
#    SECS s, RUNS runs each: logins/s, login p50/p99, rescued checks, and
#    the echo p99 of one session (where a loop waits for a starved check
#    thread's lock).
# Writes the "authsched" section of MARKDOWN (default docs/BENCHMARKS.md)
# between its markers. Takes about 6 minutes with the defaults.
set -eu
new=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
runs=${CW_AUTHSCHED_RUNS:-3}
secs=${CW_AUTHSCHED_SECS:-6}
. "$(dirname "$0")/lib.sh"
spid=
bench_scratch spid
bench_need "$new/closewise" "$new/bench/cw_bench_authload"
gen=$new/bench/cw_bench_authload

"$new/closewise" passwd --password pw-y y > "$tmp/creds"
"$new/closewise" passwd -m sha512 --password pw-s s >> "$tmp/creds"
"$new/closewise" passwd -m sha512 --password pw-e e >> "$tmp/creds"

# start POLICY: the server with its log (and exit stats line) kept
start() {
    rm -f "$tmp/port"
    "$new/closewise" server -p 0 --port-file "$tmp/port" -c "$tmp/creds" --auth-priority "$1" \
        --max-connections 4096 --max-auth-failures 0 > /dev/null 2> "$tmp/srv.log" &
    spid=$!
    bench_port_wait "authsched: $1 server" 200 "$tmp/srv.log" || exit 3
}
rescued() { sed -n 's/.*auth-rescued=\([0-9]*\).*/\1/p' "$tmp/srv.log" | tail -1; }
# the rescue threads' sleeps so far (voluntary context switches: one per
# wait, so about one per wake-up)
rescuer_slices() {
    for t in /proc/$spid/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = cw-auth-rescue ] &&
            sed -n 's/^voluntary_ctxt_switches:[^0-9]*//p' "$t/status"
    done | awk '{ n += $1 } END { print n + 0 }'
}
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# one run: POLICY ROW K LOGIN SESSIONS RATE
run() {
    name=$1 row=$2 k=$3 login=$4
    start "$name"
    w0=$(rescuer_slices)
    out=$(timeout $((secs + 120)) "$gen" latency "$sport" "$5" "$6" "$secs" "$k" "$login" e:pw-e echofifo=1) ||
        out="logins_per_s=0 timed_out=1"
    w1=$(rescuer_slices)
    bench_server_stop
    r=$(rescued)
    line="policy=$name row=$row echo_p99_us=$(field "$out" echo_p99_us) srv_p99_us=$(field "$out" srv_p99_us) logins_per_s=$(field "$out" logins_per_s) login_p50_ms=$(field "$out" login_p50_ms) login_p99_ms=$(field "$out" login_p99_ms) rescued=${r:-0} rescue_wakes_per_s=$(awk -v d=$((w1 - w0)) -v s="$secs" 'BEGIN { printf "%.1f", d / (s + 1) }')"
    bench_record "$tmp/rows" "$line"
}
rows="sha512-K4:4:s:pw-s sha512-K8:8:s:pw-s yescrypt-K8:8:y:pw-y yescrypt-K32:32:y:pw-y"
i=1
while [ $i -le "$runs" ]; do
    for spec in $rows; do
        row=${spec%%:*} rest=${spec#*:}
        k=${rest%%:*} login=${rest#*:}
        order="nice idle"
        [ $((i % 2)) = 0 ] && order="idle nice"
        for b in $order; do
            run $b "$row" "$k" "$login" 100 20
        done
    done
    i=$((i + 1))
done

# starvation: a nice-0 busy loop pinned to each core, bounded by timeout
burn=
burn_start() {
    burn=
    for c in $(seq 0 $(($(nproc) - 1))); do
        nice -n 0 taskset -c "$c" timeout $((secs + 150)) sh -c 'while :; do :; done' &
        burn="$burn $!"
    done
}
burn_stop() {
    for p in $burn; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    burn=
}
trap 'burn_stop; _bench_cleanup' EXIT INT TERM
i=1
while [ $i -le "$runs" ]; do
    order="nice idle"
    [ $((i % 2)) = 0 ] && order="idle nice"
    for b in $order; do
        burn_start
        run $b starved 4 y:pw-y 1 1
        burn_stop
    done
    i=$((i + 1))
done

cell() { kv_fmt $(kv_stat "$tmp/rows" "policy=$1 row=$2" "$3") "${4:-0}"; }
ms() { kv_stat "$tmp/rows" "policy=$1 row=$2" "$3" | awk '{ for (i = 1; i <= 3; i++) $i = $i == "-" ? "-" : $i / 1000; print }'; }
load=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "<!-- authsched:begin (written by bench/authsched.sh; edits here are overwritten) -->"
    echo "### Check threads' scheduling: --auth-priority idle (default) against nice"
    echo
    echo "\`sh bench/authsched.sh $new\` ($(date -u "+%Y-%m-%d %H:%M") UTC, $(nproc) cores,"
    echo "load average at the end $load). Each cell: median (min-max)"
    echo "of $runs runs of ${secs} s, the two policies interleaved. \"rescued\": checks the"
    echo "server's rescue threads answered (stats line, all runs); \"rescuer wakes/s\": their"
    echo "sleeps per second (voluntary context switches). \"starved\": a nice-0 busy loop pinned to"
    echo "each core, 4 clients logging in with yescrypt and one sha512 echo session."
    echo
    echo "| load | --auth-priority | echo p99 ms | p99 server side ms | logins/s | login p50 ms | login p99 ms | rescued | rescuer wakes/s |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for spec in $rows starved; do
        row=${spec%%:*}
        for b in nice idle; do
            echo "| $row | $b | $(kv_fmt $(ms $b "$row" echo_p99_us) 2) | $(kv_fmt $(ms $b "$row" srv_p99_us) 2) | $(cell $b "$row" logins_per_s 1) | $(cell $b "$row" login_p50_ms) | $(cell $b "$row" login_p99_ms) | $(kv_total "$tmp/rows" "policy=$b row=$row" rescued) | $(cell $b "$row" rescue_wakes_per_s 1) |"
        done
    done
    echo
    echo "<!-- authsched:end -->"
} > "$tmp/section.md"
cat "$tmp/section.md"
bench_md_section authsched "$tmp/section.md" "$md"
echo "authsched: results in $md" >&2
