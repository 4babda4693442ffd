#!/bin/sh
# bench/server-move.sh BUILD_DIR [REF] [MARKDOWN] - the reference server
# before and after it moved onto cw_stream/cw_acceptor, in one run: REF
# (default 149c655, the last commit with the server's own connection
# code) is built in a temporary directory (Release), and its `closewise
# server` and BUILD_DIR's run the same churn and idle loads, interleaved
# (the order alternates every run). Writes the section "Server on
# cw_stream: before/after" of MARKDOWN (default docs/BENCHMARKS.md).
#
# churn: `cw_bench_load churn` (wrong password, read to EOF, close) at
#   concurrency 64, SECS seconds; server CPU per connection is the
#   server's scheduler runtime (/proc/PID/schedstat) over connections.
# idle: IDLE_N logged-in sessions; RSS growth per session.
# instructions: each server under valgrind's callgrind for 500 and then
#   2500 churn connections; the difference / 2000 is the user-space
#   instructions per connection, exactly (no noise from other work).
# Server pinned to core 0, load generator to core 1. Environment:
# CW_BENCH_RUNS (16), CW_BENCH_SECS (3), CW_BENCH_IDLE_N (10000),
# CW_BENCH_IDLE_RUNS (3), CW_BENCH_REF_BUILD (a built REF: no build),
# CW_BENCH_CALLGRIND (1; 0 skips the instruction count), CW_BENCH_FROM
# (a kept raw file, BUILD_DIR/bench/server-move-raw: rewrite the section
# from it, e.g. after editing bench/server-move-notes.md; no measuring).
set -eu
. "$(dirname "$0")/lib.sh"

build=${1:-build-bench}
ref=${2:-149c655}
md=${3:-docs/BENCHMARKS.md}
runs=${CW_BENCH_RUNS:-16}
secs=${CW_BENCH_SECS:-3}
idle_n=${CW_BENCH_IDLE_N:-10000}
idle_runs=${CW_BENCH_IDLE_RUNS:-3}
load=$build/bench/cw_bench_load
password=bench-password
bench_need "$build/closewise" "$load"

spid=""
bench_scratch spid
ulimit -n "$(ulimit -Hn)"

refbuild=${CW_BENCH_REF_BUILD:-}
from=${CW_BENCH_FROM:-}
if [ -n "$from" ]; then
    refbuild=none
fi
if [ -z "$refbuild" ]; then
    echo "server-move: building $ref (Release) in $tmp/ref" >&2
    mkdir -p "$tmp/ref/src"
    git archive "$ref" | tar -x -C "$tmp/ref/src"
    cmake -S "$tmp/ref/src" -B "$tmp/ref/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$tmp/ref/build" -j2 --target closewise >/dev/null
    refbuild=$tmp/ref/build
fi
before=$refbuild/closewise
after=$build/closewise
hash=$("$load" hash "$password")
printf 'bench:%s\n' "$hash" >"$tmp/cred"
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u '+%Y-%m-%d %H:%M UTC')

# start BINARY: the server on core 0; sets spid and sport.
start() {
    bench_server_start server-move 0 "$1" -c "$tmp/cred" --max-auth-failures 0 \
        --max-connections 20000
}
stop() {
    bench_server_stop
}
cpu_ns() { cut -d' ' -f1 "/proc/$spid/schedstat"; }

: >"$tmp/raw"
measure() {
r=1
while [ $r -le "$runs" ]; do
    if [ $((r % 2)) -eq 1 ]; then order="before after"; else order="after before"; fi
    for which in $order; do
        eval bin=\$$which
        start "$bin"
        c0=$(cpu_ns)
        out=$(taskset -c 1 "$load" churn "$sport" 64 "$secs" 50000000 wrong-password)
        pns=$(($(cpu_ns) - c0))
        stop
        line="kind=churn which=$which run=$r $out pns=$pns"
        bench_record "$tmp/raw" "$line"
    done
    r=$((r + 1))
done
r=1
while [ $r -le "$idle_runs" ]; do
    for which in before after; do
        eval bin=\$$which
        start "$bin"
        out=$(taskset -c 1 "$load" idle "$sport" "$idle_n" 5000 "$password" "$spid")
        stop
        line="kind=idle which=$which run=$r $out"
        bench_record "$tmp/raw" "$line"
    done
    r=$((r + 1))
done
# instr BINARY N: instructions callgrind counted in the server process
# over N churn connections (start-up and exit included).
instr() {
    rm -f "$tmp/port"
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$1" server -q -p 0 \
        --port-file "$tmp/port" -c "$tmp/cred" --max-auth-failures 0 \
        --max-connections 20000 >/dev/null 2>"$tmp/vg" &
    spid=$!
    i=0
    until [ -s "$tmp/port" ]; do
        i=$((i + 1)); [ $i -le 300 ] || { echo "server-move: callgrind run did not start" >&2; exit 3; }
        sleep 0.1
    done
    sleep 0.5
    "$load" churn "$(cat "$tmp/port")" 8 300 "$2" wrong-password >/dev/null
    stop
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/vg"
}
if [ "${CW_BENCH_CALLGRIND:-1}" = 1 ] && command -v valgrind >/dev/null; then
    for which in before after; do
        eval bin=\$$which
        i1=$(instr "$bin" 500)
        i2=$(instr "$bin" 2500)
        echo "kind=instr which=$which i500=$i1 i2500=$i2 per_conn=$(( (i2 - i1) / 2000 ))" >>"$tmp/raw"
        echo "  $(tail -1 "$tmp/raw")" >&2
    done
fi
echo "kind=meta started='$started' load='$load_before' runs=$runs secs=$secs idle_n=$idle_n idle_runs=$idle_runs" >>"$tmp/raw"
mkdir -p "$build/bench"
cp "$tmp/raw" "$build/bench/server-move-raw"
}
if [ -n "$from" ]; then
    cp "$from" "$tmp/raw"
    eval "$(sed -n 's/^kind=meta //p' "$tmp/raw")"
    started=$started load_before=$load
else
    measure
fi

# med KIND WHICH EXPR: median (min-max) of an awk expression over the
# runs' key=value fields (v["key"]).
med() {
    awk -v k="kind=$1" -v w="which=$2" -v d="${4:-2}" '
        index($0, k " ") != 1 || index($0, " " w " ") == 0 { next }
        { delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
          x[n++] = '"$3"' }
        END {
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
            m = n % 2 ? x[(n - 1) / 2] : (x[n / 2 - 1] + x[n / 2]) / 2
            printf "%.*f %.*f %.*f\n", d, m, d, x[0], d, x[n - 1]
        }' "$tmp/raw"
}
fmt() { echo "$1 ($2-$3)"; }
us='v["pns"] / 1000 / v["conns"]'
b_us=$(med churn before "$us"); a_us=$(med churn after "$us")
b_rate=$(med churn before 'v["rate"]' 0); a_rate=$(med churn after 'v["rate"]' 0)
b_mem=$(med idle before 'v["bytes_per_session"]' 0); a_mem=$(med idle after 'v["bytes_per_session"]' 0)
b_p99=$(med idle before 'v["close_p99_us"]' 0); a_p99=$(med idle after 'v["close_p99_us"]' 0)
ratio=$(echo "$a_us $b_us" | awk '{ printf "%.3f", $1 / $4 }')
# Per-run ratios: runs are paired (same run number, back to back).
pairs=$(awk '/^kind=churn/ { delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
             u[v["which"], v["run"]] = v["pns"] / v["conns"] }
             END { for (r = 1; (("after", r) in u); r++) printf "%.3f ", u["after", r] / u["before", r] }' "$tmp/raw")
pmed=$(echo "$pairs" | tr ' ' '\n' | grep . | sort -n | awk '{ v[n++] = $1 } END { if (n) printf "%.3f", n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2 }')
ib=$(awk '/^kind=instr which=before/ { sub(/.*per_conn=/, ""); print }' "$tmp/raw")
ia=$(awk '/^kind=instr which=after/ { sub(/.*per_conn=/, ""); print }' "$tmp/raw")
errs=$(awk '/^kind=churn/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "lost" || kv[1] == "err") s += kv[2] } } END { print s + 0 }' "$tmp/raw")

{
    echo "<!-- servermove:begin (written by bench/server-move.sh; edits here are overwritten) -->"
    echo "## Server on cw_stream: before/after"
    echo
    echo "Command: \`sh bench/server-move.sh build-bench $ref\` (builds $ref, the last commit"
    echo "with the server's own connection code, Release, in a temporary directory; this tree's"
    echo "Release build in build-bench). Run on $started, $(nproc) cores, Linux $(uname -r);"
    echo "load average before: $load_before. Server on core 0, load generator on core 1; the"
    echo "two servers alternate, run by run ($runs churn runs of ${secs} s at concurrency 64 each,"
    echo "$idle_runs idle runs of $idle_n logged-in sessions each). Median (min-max)."
    echo
    echo "| | before ($ref) | after (cw_stream) | after / before |"
    echo "|---|---:|---:|---:|"
    echo "| server CPU per connection, us (churn) | $(fmt $b_us) | $(fmt $a_us) | **$ratio** (target <= 1.03) |"
    echo "| connections/s (churn; the load generator's limit) | $(fmt $b_rate) | $(fmt $a_rate) | $(echo "$a_rate $b_rate" | awk '{ printf "%.3f", $1 / $4 }') |"
    echo "| RSS growth per idle session, bytes | $(fmt $b_mem) | $(fmt $a_mem) | $(echo "$a_mem $b_mem" | awk '{ printf "%.3f", $1 / $4 }') (target: after <= 200) |"
    echo "| close p99 at $idle_n idle sessions, us | $(fmt $b_p99) | $(fmt $a_p99) | |"
    echo
    echo "Per-run ratios of CPU per connection (after / before, back-to-back pairs): $(echo $pairs);"
    echo "their median: **$pmed**."
    if [ -n "$ib" ] && [ -n "$ia" ]; then
        echo
        echo "User-space instructions per connection (callgrind, exact): before $ib, after $ia,"
        echo "ratio $(echo "$ia $ib" | awk '{ printf "%.3f", $1 / $2 }')."
    fi
    echo "Lines lost or errors in all churn runs: $errs."
    [ -f bench/server-move-notes.md ] && { echo; cat bench/server-move-notes.md; }
    echo "<!-- servermove:end -->"
} >"$tmp/section.md"
bench_md_section servermove "$tmp/section.md" "$md"
echo "server-move: results in $md" >&2
