#!/bin/sh
# bench/resets.sh BUILD_DIR [MARKDOWN] - what `closewise resets` costs.
# Writes the "resets" section of MARKDOWN (default docs/BENCHMARKS.md)
# between its markers; other sections are kept.
#
# 1. overhead: the churn benchmark of bench/servers.sh (bench/load.c:
#    connect, wrong password, read to EOF, close) against `closewise server`
#    (graceful close: no RST) and `closewise server --linger0` (one RST per
#    connection), each with `closewise resets --json --pid SERVER` attached
#    (the program still runs for every RST on the machine) and detached, interleaved, RUNS runs of SECS seconds.
#    Server CPU per connection from /proc/PID/schedstat: the BPF program
#    runs in the server's close(), so its cost lands there.
# 2. event rate: the linger0 server at rising concurrency with resets
#    attached: events/s written, events lost (the command reports ring
#    buffer drops on stderr), and the command's own CPU per event.
# Server on core 0, load generator and `closewise resets` on core 1.
# Needs root (BPF). Bounded: about 2 minutes with the defaults.
# Environment: CW_BENCH_RUNS (5), CW_BENCH_SECS (3), CW_BENCH_RATE_CONC
# ("1 4 16 64").
set -eu
. "$(dirname "$0")/lib.sh"

build=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
cw=$build/closewise
load=$build/bench/cw_bench_load
runs=${CW_BENCH_RUNS:-5}
secs=${CW_BENCH_SECS:-3}
rate_concs=${CW_BENCH_RATE_CONC:-"1 4 16 64"}
conc=64
scpu=0
lcpu=1
password=bench-password

bench_need "$cw" "$load"
if ! "$cw" resets --duration 10ms 2>&1 | grep -q "with BPF"; then
    echo "bench/resets.sh: BPF unavailable here ($("$cw" resets --duration 10ms 2>&1 | head -1)); skipped" >&2
    exit 0
fi

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d)
spid=""
rpid=""
stats0=$(sysctl -n kernel.bpf_stats_enabled 2>/dev/null || echo 0)
cleanup() {
    sysctl -qw kernel.bpf_stats_enabled="$stats0" 2>/dev/null || true
    bench_stop "$rpid"
    bench_stop "$spid"
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)"
hash=$("$load" hash "$password")
printf 'bench:%s\n' "$hash" >"$tmp/cred"

# Start the server (graceful or linger0) on core $scpu; sets spid, sport.
start_server() {
    extra=""
    [ "$1" = linger0 ] && extra="--linger0"
    # shellcheck disable=SC2086
    bench_server_start bench/resets.sh $scpu "$cw" -c "$tmp/cred" \
        --max-auth-failures 0 --max-connections 20000 $extra
}

# Attach `closewise resets --json` on core $lcpu; waits until it watches.
start_resets() {
    : >"$tmp/events"
    : >"$tmp/rerr"
    taskset -c $lcpu "$cw" resets --json --pid "$spid" >"$tmp/events" 2>"$tmp/rerr" &
    rpid=$!
    i=0
    until grep -q "with BPF" "$tmp/rerr"; do
        i=$((i + 1))
        if [ $i -gt 200 ] || ! kill -0 "$rpid" 2>/dev/null; then
            echo "bench/resets.sh: closewise resets did not start: $(cat "$tmp/rerr")" >&2
            exit 3
        fi
        sleep 0.05
    done
    rcpu0=$(cut -d' ' -f1 "/proc/$rpid/schedstat")
}

# Stop it after the ring buffer drained; prints "events=N lost=N rns=N".
stop_resets() {
    sleep 0.5
    rns=$(($(cut -d' ' -f1 "/proc/$rpid/schedstat") - rcpu0))
    kill -INT "$rpid" 2>/dev/null || true
    wait "$rpid" 2>/dev/null || true
    rpid=""
    lost=$(awk 'match($0, /[0-9]+ in total/) { n = substr($0, RSTART, RLENGTH) + 0 } END { print n + 0 }' "$tmp/rerr")
    echo "events=$(wc -l <"$tmp/events") lost=$lost rns=$rns"
}

churn() {
    taskset -c $lcpu "$load" churn "$sport" "$1" "$secs" 50000000 wrong-password
}

measure() {
    echo "resets: overhead, $runs runs x (graceful linger0) x (detached attached), conc $conc, ${secs}s each" >&2
    : >"$tmp/overhead"
    r=1
    while [ $r -le "$runs" ]; do
        for mode in graceful linger0; do
            order="detached attached"
            [ $((r % 2)) -eq 0 ] && order="attached detached"
            for att in $order; do
                start_server "$mode"
                [ "$att" = attached ] && start_resets
                p0=$(cut -d' ' -f1 "/proc/$spid/schedstat")
                out=$(churn $conc)
                pns=$(($(cut -d' ' -f1 "/proc/$spid/schedstat") - p0))
                ev=""
                [ "$att" = attached ] && ev=$(stop_resets)
                line="mode=$mode bpf=$att run=$r $out pns=$pns $ev"
                bench_record "$tmp/overhead" "$line"
                bench_server_stop
            done
        done
        r=$((r + 1))
    done
    echo "resets: event rate, linger0 server, conc ($rate_concs), ${secs}s each" >&2
    : >"$tmp/rate"
    for c in $rate_concs; do
        start_server linger0
        # The kernel's own accounting of the program's run time (on only
        # here: it adds two clock reads to every BPF program's run).
        sysctl -qw kernel.bpf_stats_enabled=1 2>/dev/null || true
        start_resets
        out=$(churn "$c")
        prog=$(bpftool prog show name on_send_reset 2>/dev/null | awk '
            { for (i = 1; i < NF; i++) { if ($i == "run_time_ns") t += $(i + 1); if ($i == "run_cnt") n += $(i + 1) } }
            END { printf "bpf_ns=%.0f bpf_cnt=%.0f", t, n }')
        line="conc=$c $out $prog $(stop_resets)"
        sysctl -qw kernel.bpf_stats_enabled="$stats0" 2>/dev/null || true
        bench_record "$tmp/rate" "$line"
        bench_server_stop
    done
}

section() {
    # Per run: server CPU us per connection; per attached run, command CPU us per event.
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "%s pus=%.3f rus=%.2f evs=%.0f\n", $0, v["conns"] ? v["pns"] / 1000 / v["conns"] : 0,
               v["events"] ? v["rns"] / 1000 / v["events"] : 0, v["events"] / v["secs"] }' \
        "$tmp/overhead" >"$tmp/overheadx"
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           printf "%s rus=%.2f evs=%.0f bns=%.0f\n", $0, v["events"] ? v["rns"] / 1000 / v["events"] : 0,
               v["events"] / v["secs"], v["bpf_cnt"] ? v["bpf_ns"] / v["bpf_cnt"] : 0 }' \
        "$tmp/rate" >"$tmp/ratex"
    echo "<!-- resets:begin (written by bench/resets.sh; edits here are overwritten) -->"
    echo "## closewise resets: overhead and event rate"
    echo
    echo "Command: \`make bench\` (runs \`sh bench/run.sh build-bench\`, which runs"
    echo "\`bench/resets.sh build-bench\`). Run on $run_date, on $(nproc) cores"
    echo "($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), Release build;"
    echo "load average before the run: $load_before. The server is pinned to core $scpu; the load"
    echo "generator (bench/load.c churn, concurrency $conc, as in the Servers section) and"
    echo "\`closewise resets --json --pid SERVER\` (output to a file; the BPF program runs for every"
    echo "RST on the machine and filters by pid in the kernel) share core $lcpu."
    echo "Runs interleaved, attached and detached alternating first; median (min-max) over $runs runs."
    echo
    echo "### Overhead: server CPU per connection, attached vs detached"
    echo
    echo "The BPF program runs inside the close() that sends the RST, in the server's"
    echo "context, so its cost is in the server's CPU time (scheduler runtime). The graceful"
    echo "server sends no RST: the tracepoint never fires. The linger0 server sends one per"
    echo "connection: every connection pays for the program, its stack walk and an event."
    echo
    echo "| server | server CPU us/conn detached | attached | attached / detached (target <= 1.03) | conn/s detached | conn/s attached | events | lost |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for mode in graceful linger0; do
        d=$(kv_stat "$tmp/overheadx" "mode=$mode bpf=detached" pus)
        a=$(kv_stat "$tmp/overheadx" "mode=$mode bpf=attached" pus)
        ratio=$(awk -v a="${a%% *}" -v d="${d%% *}" 'BEGIN { printf "%.3f", d ? a / d : 0 }')
        echo "| $mode | $(kv_fmt $d 2) | $(kv_fmt $a 2) | $ratio |" \
            "$(kv_fmt $(kv_stat "$tmp/overheadx" "mode=$mode bpf=detached" rate)) |" \
            "$(kv_fmt $(kv_stat "$tmp/overheadx" "mode=$mode bpf=attached" rate)) |" \
            "$(kv_total "$tmp/overheadx" "mode=$mode bpf=attached" events) |" \
            "$(kv_total "$tmp/overheadx" "mode=$mode bpf=attached" lost) |"
    done
    echo
    echo "### Event rate: resets per second without loss"
    echo
    echo "The linger0 server under rising concurrency, \`closewise resets --json\` attached. *events/s*:"
    echo "lines written per second of load; *lost*: events the ring buffer (4 MiB) had no room for,"
    echo "as the command reported them; *command CPU us/event*: the command's own CPU time (reading"
    echo "the ring buffer, /proc/PID/cgroup, unwinding and symbolizing the stack with libdw, JSON) per event;"
    echo "*BPF ns/RST*: the program's run time per run as the kernel accounts it"
    echo "(kernel.bpf_stats_enabled, every RST on the machine), paid inside the closing process."
    echo
    echo "| conc | conn/s | events/s | events | lost | command CPU us/event | BPF ns/RST | BPF / linger0 server CPU per conn (detached) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    base=$(kv_med "$tmp/overheadx" "mode=linger0 bpf=detached" pus)
    for c in $rate_concs; do
        f="conc=$c"
        b=$(kv_med "$tmp/ratex" "$f" bns)
        echo "| $c | $(kv_med "$tmp/ratex" "$f" rate) | $(kv_med "$tmp/ratex" "$f" evs) | $(kv_total "$tmp/ratex" "$f" events) |" \
            "$(kv_total "$tmp/ratex" "$f" lost) | $(kv_med "$tmp/ratex" "$f" rus) | $b |" \
            "$(awk -v b="$b" -v u="$base" 'BEGIN { if (u + 0 > 0) printf "%.1f%%", b / 10 / u; else print "-" }') |"
    done
    [ -f bench/resets-notes.md ] && { echo; cat bench/resets-notes.md; }
    echo "<!-- resets:end -->"
}

run_date=$(date -u '+%Y-%m-%d %H:%M UTC')
measure
section >"$tmp/section.md"
bench_md_section resets "$tmp/section.md" "$md"
echo "resets: results in $md" >&2
