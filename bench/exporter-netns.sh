#!/bin/sh
# bench/exporter-netns.sh BUILD_DIR [N] - what following every network
# namespace costs the exporter per snapshot: --netns self vs all, before
# and after adding N (default 100) empty namespaces with `ip netns add`
# (removed at the end). Reads the exporter's own
# closewise_scrape_cpu_seconds / closewise_scrape_duration_seconds after
# five snapshots each, and its descriptor count between snapshots.
# Needs root, curl and iproute2.
set -eu
B=${1:?usage: bench/exporter-netns.sh BUILD_DIR [N]}/closewise
N=${2:-100}
out=$(mktemp)
P=
cleanup() {
    [ -n "$P" ] && kill "$P" 2>/dev/null || true
    for i in $(seq 1 "$N"); do ip netns del "cwbench_$i" 2>/dev/null || true; done
    rm -f "$out"
}
trap cleanup EXIT INT TERM
value() { awk -v m="$2" '$1 == m { printf "%.1f", $2 * 1000 }' "$1"; }
run() {
    "$B" exporter --listen 127.0.0.1:0 --netns "$1" --interval 300ms --no-bpf >"$out" 2>/dev/null &
    P=$!
    sleep 0.5
    port=$(sed -n 's/.*://p' "$out")
    sleep 2.5
    line=""
    for i in 1 2 3 4 5; do
        sleep 0.31
        curl -s "127.0.0.1:$port/metrics" >"$out.m"
        line="$line $(value "$out.m" closewise_scrape_cpu_seconds)/$(value "$out.m" closewise_scrape_duration_seconds)"
    done
    rm -f "$out.m"
    echo "$2 extra namespaces, --netns $1: CPU/wall ms per snapshot:$line; fds $(ls /proc/$P/fd | wc -l)"
    kill "$P"
    wait "$P" || true
    P=
}
run self 0
run all 0
for i in $(seq 1 "$N"); do ip netns add "cwbench_$i"; done
run self "$N"
run all "$N"
