#!/bin/sh
# bench/exporter-first.sh [ROUNDS] BUILD_DIR... - what the exporter's FIRST
# snapshot costs at 100,000 sockets (75,000 CLOSE_WAIT held by 50
# processes, 25,000 TIME_WAIT; bench/plant.c), when every socket is new and
# all 75,000 owners must be named at once. The sockets are planted once in
# a private network namespace; then, ROUNDS times (default 5), for each
# build in turn (e.g. an older commit's and this one's, so that a
# comparison shares the machine's load), `closewise exporter --textfile
# --netns self` is started, with and without --no-bpf, and its first
# snapshot's closewise_scrape_cpu_seconds / _duration_seconds and its peak
# RSS (VmHWM) are printed, one line each, then the medians. Needs root.
# Bounded: planting about a minute, each snapshot seconds; every process it
# starts is ended on exit.
set -eu
. "$(dirname "$0")/lib.sh"
if [ -z "${CW_BENCH_NETNS:-}" ]; then
    [ "$(id -u)" = 0 ] && command -v unshare >/dev/null ||
        { echo "bench/exporter-first.sh: needs root and unshare" >&2; exit 3; }
    bench_private_netns 'sysctl -qw net.ipv4.tcp_fin_timeout=3' "$0" "$@"
fi
rounds=5
case "${1:-}" in [0-9]*) rounds=$1; shift ;; esac
[ $# -ge 1 ] || { echo "usage: bench/exporter-first.sh [ROUNDS] BUILD_DIR..." >&2; exit 2; }
ulimit -n 8192
planter="" exporter=""
bench_scratch exporter planter
mkdir "$tmp/tf"
bench_plant bench/exporter-first.sh "$1/bench/cw_bench_plant" 75000 50 25000
echo "# $(ss -tanH | wc -l) sockets; load average $(cut -d' ' -f1-3 /proc/loadavg)"
value() { awk -v m="$1" '$1 == m { printf "%.1f", $2 * 1000 }' "$tmp/tf/closewise.prom"; }
for r in $(seq 1 "$rounds"); do
    for b in "$@"; do
        for mode in bpf no-bpf; do
            rm -f "$tmp/tf/closewise.prom"
            flag=""
            [ $mode = no-bpf ] && flag=--no-bpf
            # shellcheck disable=SC2086
            "$b/closewise" exporter --textfile "$tmp/tf" --interval 100s --netns self $flag \
                2>/dev/null &
            exporter=$!
            until [ -s "$tmp/tf/closewise.prom" ]; do sleep 0.05; done
            hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$exporter/status")
            bench_stop "$exporter"
            exporter=""
            echo "$b $mode cpu_ms $(value closewise_scrape_cpu_seconds) wall_ms" \
                "$(value closewise_scrape_duration_seconds) hwm_kib $hwm"
        done
    done
done | tee "$tmp/runs"
echo "# medians: build mode cpu_ms wall_ms hwm_kib (load average $(cut -d' ' -f1-3 /proc/loadavg))"
for b in "$@"; do
    for mode in bpf no-bpf; do
        awk -v b="$b" -v m="$mode" '$1 == b && $2 == m' "$tmp/runs" >"$tmp/sel"
        med() { awk -v f="$1" '{ print $f }' "$tmp/sel" | sort -n |
            awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
        echo "$b $mode $(med 4) $(med 6) $(med 8)"
    done
done
