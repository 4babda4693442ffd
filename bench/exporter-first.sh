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
if [ -z "${CW_BENCH_NETNS:-}" ]; then
    [ "$(id -u)" = 0 ] || { echo "bench/exporter-first.sh: needs root" >&2; exit 3; }
    exec env CW_BENCH_NETNS=1 unshare -n sh "$0" "$@"
fi
rounds=5
case "${1:-}" in [0-9]*) rounds=$1; shift ;; esac
[ $# -ge 1 ] || { echo "usage: bench/exporter-first.sh [ROUNDS] BUILD_DIR..." >&2; exit 2; }
ip link set lo up
sysctl -qw net.ipv4.tcp_fin_timeout=3
ulimit -n 8192
tmp=$(mktemp -d)
planter="" exporter=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    [ -n "$exporter" ] && kill "$exporter" 2>/dev/null && wait "$exporter" 2>/dev/null
    [ -n "$planter" ] && kill "$planter" 2>/dev/null && wait "$planter" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
mkfifo "$tmp/ctl"
mkdir "$tmp/tf"
"$1/bench/cw_bench_plant" 75000 50 25000 <"$tmp/ctl" >"$tmp/plant.out" 2>&1 &
planter=$!
exec 3>"$tmp/ctl"
i=0
until grep -q ready "$tmp/plant.out"; do
    i=$((i + 1))
    [ $i -gt 3000 ] && { echo "bench/exporter-first.sh: planting failed" >&2; exit 3; }
    sleep 0.1
done
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
            kill "$exporter"
            wait "$exporter" || true
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
