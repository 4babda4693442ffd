#!/bin/sh
# bench/authload.sh BUILD_DIR [MARKDOWN] - the reference server under
# login load, in one run: "before" (--auth-threads 0 --workers 1: crypt(3)
# on the loop, as the server was) against "after" (the defaults: password
# checks on worker threads, one loop per CPU).
#
# 1. latency: 100 logged-in sessions each send ECHO 20 times a second
#    (cw_bench_authload latency) while K clients log in over and over with
#    yescrypt (the default of `closewise passwd`) or sha512-crypt: the echo
#    round trip's p50/p99/p99.9/max, and its p99 split at the reply's
#    arrival on our socket (kernel receive timestamp): "server side" (our
#    send to the reply's arrival) and "generator side" (arrival to our
#    recvmsg returning). K in CW_AUTHLOAD_K ("0 8 32"), SECS seconds a run
#    (CW_AUTHLOAD_SECS, 6), RUNS interleaved runs of each (CW_AUTHLOAD_RUNS,
#    2). The "combined" row (issue 11, item 4): 16 clients logging in with
#    yescrypt and sha512 in turn, 8 clients sending wrong passwords (both
#    hashes and an unknown user; no throttle, so every one is hashed) and a
#    slowloris crowd of 300 connections each sending one byte of an
#    unfinished line a second, all at once. The sessions' requests are
#    spread evenly over each 50 ms period; the "in step" row sends all
#    100 at the start of each period (a burst: what queueing behind 99
#    others costs).
#    One A/B mode on the sha512 and combined rows: "after-nice", the
#    defaults with --auth-priority nice (check threads at nice 19, the
#    policy before SCHED_IDLE became the default; see docs/BENCHMARKS.md,
#    "Check threads' scheduling"), the row where the policy shows.
#    "before" runs once. With no
#    logins, a "floor" row: the same echo load against a bare one-thread
#    epoll echo (cw_bench_authload floor), what the machine itself costs.
# 2. throughput: yescrypt logins/s with --workers N --auth-threads N, N = 1
#    and 2 (16 login
#    clients, no echo load worth the name), with each core's busy share.
# The generator's echo thread asks for SCHED_FIFO (root only; "gen FIFO"
# says whether it got it): the measuring thread then does not wait behind
# the generator's own 30-odd load threads, whose CPU stands for clients
# on other machines. The server keeps the scheduling it chose.
# CW_AUTHLOAD_NICE=N runs the server and the generator under `nice -n N`.
# Nothing is pinned (the hashes need both cores); the machine is shared,
# so every run also records the busy share of each core (from /proc/stat)
# and the server's own CPU time. Writes the "server under auth load"
# section of MARKDOWN (default docs/BENCHMARKS.md) between its markers.
# Takes about 5 minutes with the defaults.
set -eu
build=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
cw=$build/closewise
gen=$build/bench/cw_bench_authload
ks=${CW_AUTHLOAD_K:-"0 8 32"}
secs=${CW_AUTHLOAD_SECS:-6}
runs=${CW_AUTHLOAD_RUNS:-2}
nice_n=${CW_AUTHLOAD_NICE:-0}
. "$(dirname "$0")/lib.sh"
bench_need "$cw" "$gen"
spid=
bench_scratch spid

"$cw" passwd --password pw-y y > "$tmp/creds"
"$cw" passwd -m sha512 --password pw-s s >> "$tmp/creds"
"$cw" passwd -m sha512 --password pw-e e >> "$tmp/creds"

# start_server [floor | SERVER ARGS...]: sets spid and sport
start_server() {
    rm -f "$tmp/port"
    what="$cw server"
    if [ "${1:-}" = floor ]; then
        # the machine's floor: a bare epoll echo on one thread, no hashing
        what="$gen floor"
        nice -n "$nice_n" "$gen" floor "$tmp/port" > /dev/null 2>&1 &
    else
        # No throttle: every login here is right, from one address.
        nice -n "$nice_n" "$cw" server -p 0 --port-file "$tmp/port" -c "$tmp/creds" -q \
            --max-connections 4096 --max-auth-failures 0 "$@" > /dev/null 2>&1 &
    fi
    spid=$!
    bench_port_wait "authload: $what" 200 || exit 3
}
# "cpu0 busy% cpu1 busy%" between two /proc/stat snapshots
cpustat() { grep '^cpu[0-9]' /proc/stat; }
busy() {
    awk 'NR == FNR { for (i = 2; i <= 9; i++) t[$1] += $i; idle[$1] = $5 + $6; next }
         { tot = 0; for (i = 2; i <= 9; i++) tot += $i
           d = tot - t[$1]; di = $5 + $6 - idle[$1]
           printf "%s%s %.0f%%", sep, $1, d ? 100 * (d - di) / d : 0; sep = ", " }
         END { print "" }' "$1" "$2"
}
srv_cpu() { awk '{ print $14 + $15 }' "/proc/$spid/stat"; }   # ticks
# The loop threads' (main, cw-loop) time waiting on a run queue and their
# number of time slices, from the kernel's schedstat: "wait_ns slices".
loopwait() {
    for t in /proc/$spid/task/*; do
        c=$(cat "$t/comm" 2>/dev/null) || continue
        [ "$(basename "$t")" = "$spid" ] || [ "$c" = cw-loop ] || continue
        cat "$t/schedstat"
    done | awk '{ w += $2; n += $3 } END { print w + 0, n + 0 }'
}
# mean run-queue wait per slice in microseconds between two loopwait
perwake() { echo "$1 $2" | awk '{ d = $4 - $2; printf "%.0f", d ? ($3 - $1) / d / 1000 : 0 }'; }
field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

mode_args() {
    case $1 in
    before) echo "--auth-threads 0 --workers 1" ;;
    after-nice) echo "--auth-priority nice" ;;
    floor) echo floor ;;
    *) echo "" ;;
    esac
}
combined_args="slow=300 slowgap=1000 wrong=8 wronglogin=y:bad-y,s:bad-s,nobody:bad-n"

echo "| mode | load | echo p50 ms | p99 ms | p99.9 ms | max ms | p99 server side ms | p99 generator side ms | lost | logins/s | login p50 ms | wrong/s | server CPU s | run-queue wait us/slice: server loops, generator | gen FIFO | cores busy |" > "$tmp/lat.md"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" >> "$tmp/lat.md"
# one latency run: MODE LABEL K LOGIN [generator options]
lat_run() {
    mode=$1 label=$2 k=$3 login=$4
    shift 4
    # shellcheck disable=SC2046
    start_server $(mode_args "$mode")
    cpustat > "$tmp/s0"
    c0=$(srv_cpu)
    w0=$(loopwait)
    out=$(nice -n "$nice_n" "$gen" latency "$sport" 100 20 "$secs" "$k" "$login" e:pw-e echofifo=1 "$@")
    w1=$(loopwait)
    c1=$(srv_cpu)
    cpustat > "$tmp/s1"
    bench_server_stop
    echo "$mode $label: $out" >&2
    ms() { awk -v u="$(field "$out" "$1")" 'BEGIN { printf "%.2f", u / 1000 }'; }
    cpu=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }')
    echo "| $mode | $label | $(ms echo_p50_us) | $(ms echo_p99_us) | $(ms echo_p999_us) | $(ms echo_max_us) | $(ms srv_p99_us) | $(ms gen_p99_us) | $(field "$out" echo_lost) | $(field "$out" logins_per_s) | $(field "$out" login_p50_ms) | $(field "$out" wrong_per_s) | $cpu | $(perwake "$w0" "$w1"), $(field "$out" gen_wait_us_per_slice) | $(field "$out" gen_fifo) | $(busy "$tmp/s0" "$tmp/s1") |" >> "$tmp/lat.md"
}
r=1
while [ $r -le "$runs" ]; do
    # "before" once: its tail is hundreds of ms, one sample says it
    before=before
    [ $r -gt 1 ] && before=
    for k in $ks; do
        for hash in yescrypt sha512; do
            [ "$k" = 0 ] && [ "$hash" = sha512 ] && continue
            login=y:pw-y
            [ "$hash" = sha512 ] && login=s:pw-s
            label="$hash K=$k"
            [ "$k" = 0 ] && label="no logins"
            modes="$before after"
            [ "$k" = 0 ] && modes="floor $modes"
            # sha512 at K=8 leaves cores part idle: where the check threads'
            # policy decides where woken loops land (docs/BENCHMARKS.md)
            [ "$hash" = sha512 ] && modes="$modes after-nice"
            for mode in $modes; do
                lat_run "$mode" "$label" "$k" "$login"
            done
        done
    done
    for mode in $before after after-nice; do
        # shellcheck disable=SC2086
        lat_run "$mode" "combined" 16 y:pw-y,s:pw-s $combined_args
    done
    for mode in floor after; do
        lat_run "$mode" "no logins, in step" 0 y:pw-y instep=1
    done
    r=$((r + 1))
done

echo "| --workers, --auth-threads | yescrypt logins/s | login p50 ms | login p99 ms | server CPU s | cores busy |" > "$tmp/tp.md"
echo "|---|---|---|---|---|---|" >> "$tmp/tp.md"
for threads in 1 2 1 2; do
    # N loops and N check threads: the issue's "1 and 2 workers" either way
    # (the hashes are the work; the loops only hand them over)
    start_server --workers "$threads" --auth-threads "$threads"
    cpustat > "$tmp/s0"
    c0=$(srv_cpu)
    out=$(nice -n "$nice_n" "$gen" latency "$sport" 1 1 "$secs" 16 y:pw-y e:pw-e)
    c1=$(srv_cpu)
    cpustat > "$tmp/s1"
    bench_server_stop
    echo "threads=$threads: $out" >&2
    cpu=$(awk -v t=$((c1 - c0)) -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / hz }')
    echo "| $threads, $threads | $(field "$out" logins_per_s) | $(field "$out" login_p50_ms) | $(field "$out" login_p99_ms) | $cpu | $(busy "$tmp/s0" "$tmp/s1") |" >> "$tmp/tp.md"
done

load=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "<!-- authload:begin (written by bench/authload.sh; edits here are overwritten) -->"
    echo "## Server under auth load"
    echo
    echo "\`sh bench/authload.sh $build\` ($(date -u +%Y-%m-%d), $(nproc) cores, load average"
    echo "at the end $load). The machine is shared with other jobs: \"cores busy\" is each"
    echo "core's busy share during the run (all processes), \"server CPU\" the server's own."
    [ "$nice_n" = 0 ] || echo "Server and generator ran under \`nice -n $nice_n\`."
    echo "Nothing is pinned. \"before\" is \`--auth-threads 0 --workers 1\` (crypt(3) on the"
    echo "loop, as the server was); \"after\" the defaults (checks on one thread per CPU,"
    echo "one loop per CPU)."
    echo
    echo "### Echo round trip of 100 logged-in sessions while K clients log in"
    echo
    echo "Each session sends \`ECHO\` 20 times a second (2,000 requests/s in all);"
    echo "${secs} s a run, $runs runs of each line, interleaved. \"combined\": 16 clients"
    echo "logging in with yescrypt and sha512 in turn, 8 clients sending wrong passwords"
    echo "(no throttle: each is hashed) and 300 slowloris connections (one byte of an"
    echo "unfinished line a second each), at once. The requests of the 100 sessions"
    echo "are spread evenly over each 50 ms period; \"in step\": all 100 sent at the"
    echo "start of each period, one burst (what waiting behind 99 others costs)."
    echo "\"after-nice\": the defaults but \`--auth-priority nice\` (check threads at"
    echo "nice 19 instead of SCHED_IDLE, the earlier policy), an A/B in the same run;"
    echo "\"before\" runs once. \"floor\": the same echo"
    echo "load against a bare one-thread epoll echo (\`cw_bench_authload floor\`: no"
    echo "timers, no hashing), the least this machine's loopback and wake-ups cost"
    echo "in this run. The p99 is"
    echo "split at the reply's kernel receive timestamp: server side (send to arrival)"
    echo "and generator side (arrival to recvmsg); \"gen FIFO\" 1: the echo thread ran"
    echo "SCHED_FIFO, so the generator's own load threads did not delay it."
    echo
    cat "$tmp/lat.md"
    echo
    echo "### yescrypt login throughput"
    echo
    echo "16 clients logging in over and over, ${secs} s a run, two runs each."
    echo
    cat "$tmp/tp.md"
    echo
    echo "<!-- authload:end -->"
} > "$tmp/section.md"
cat "$tmp/section.md"
bench_md_section authload "$tmp/section.md" "$md"
echo "authload: results in $md" >&2
