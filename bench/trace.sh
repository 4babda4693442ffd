#!/bin/sh
# bench/trace.sh BUILD_DIR [MARKDOWN] - what libclosewise-trace.so (the
# preload of `closewise trace` and `probe --where`) costs a program, per
# call: bench/trace_overhead.c run with and without it, ROUNDS rounds
# interleaved, CPU time (user + system) per call, median of the rounds.
# Writes the "trace" section of MARKDOWN (default docs/BENCHMARKS.md)
# between its markers; other sections are kept. Environment:
# CW_BENCH_ROUNDS (7), CW_BENCH_CALLS (200000), CW_BENCH_DEPTH (10).
set -eu
build=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
rounds=${CW_BENCH_ROUNDS:-7}
calls=${CW_BENCH_CALLS:-200000}
depth=${CW_BENCH_DEPTH:-10}
prog=$build/bench/cw_bench_trace_overhead
lib=$build/libclosewise-trace.so
for f in "$prog" "$lib"; do
    [ -e "$f" ] || { echo "bench/trace.sh: $f not built" >&2; exit 3; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

i=0
while [ $i -lt "$rounds" ]; do
    "$prog" "$calls" "$depth" | sed 's/^/plain /' >>"$tmp/runs"
    CW_TRACE_FILE="$tmp/rec" LD_PRELOAD="$lib" "$prog" "$calls" "$depth" |
        sed 's/^/traced /' >>"$tmp/runs"
    i=$((i + 1))
done
median() { awk -v m="$1" -v k="$2" '$1 == m && $2 == k { print $3 }' "$tmp/runs" |
           sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

{
    echo "<!-- trace:begin (written by bench/trace.sh; edits here are overwritten) -->"
    echo "## libclosewise-trace.so: cost per read call"
    echo
    echo "Command: \`sh bench/trace.sh $build\`. Run on $(date -u '+%Y-%m-%d %H:%M UTC');"
    echo "machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "Linux $(uname -r). $rounds rounds of $calls calls each, made $depth frames deep,"
    echo "with and without the preload, interleaved; CPU time (user + system) per call,"
    echo "median of the rounds. Other work may have been running on the machine."
    echo
    echo "| call | plain ns | traced ns | extra ns | ratio |"
    echo "|---|---:|---:|---:|---:|"
    for k in recv-peek-1-byte recv-eagain read-dev-zero; do
        p=$(median plain $k)
        t=$(median traced $k)
        awk -v k="$k" -v p="$p" -v t="$t" 'BEGIN {
            printf "| %s | %d | %d | %d | %.2f |\n", k, p, t, t - p, t / p }'
    done
    echo
    echo "recv-peek-1-byte returns data: the preload records the read's stack (glibc's"
    echo "backtrace(), libgcc's unwinder: CFI, no frame pointers needed), which is nearly all"
    echo "of its cost. recv-eagain is a TCP socket with nothing to read (no stack), read-dev-zero"
    echo "not a socket (classified once per descriptor, then passed through)."
    echo "<!-- trace:end -->"
} >"$tmp/section"
if [ -f "$md" ] && grep -q '<!-- trace:begin' "$md"; then
    awk -v f="$tmp/section" '
        /<!-- trace:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
        /<!-- trace:end/ { skip = 0; next }
        !skip' "$md" >"$tmp/md" && cat "$tmp/md" >"$md"
else
    { echo; cat "$tmp/section"; } >>"$md"
fi
cat "$tmp/section"
