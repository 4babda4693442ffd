#!/bin/sh
# bench/exporter.sh BUILD_DIR [MARKDOWN] - what one `closewise exporter`
# snapshot costs at 100,000 sockets: 75,000 CLOSE_WAIT held by 50 processes
# plus 25,000 TIME_WAIT on loopback (bench/plant.c). The exporter runs with
# --interval 2s; its own closewise_scrape_cpu_seconds and
# closewise_scrape_duration_seconds are read from /metrics after each
# snapshot, its CPU time is also read from /proc/PID/stat (which includes
# serving the scrapes), and its peak RSS from VmHWM. In the same run,
# `ss -tan` and `closewise stat` are timed for comparison. The "Exporter"
# section of MARKDOWN (default docs/BENCHMARKS.md) is rewritten between its
# markers.
#
# Bounded: planting takes about a minute (tcp_fin_timeout is set to 3 s in
# the private namespace), the measurement about 30 s; every process it
# starts is ended on exit.
set -eu
. "$(dirname "$0")/lib.sh"

bench_private_netns 'sysctl -qw net.ipv4.tcp_fin_timeout=3' "$0" "$@"

build=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
cw=$build/closewise
plant=$build/bench/cw_bench_plant
timeit=$build/bench/cw_bench_timeit
ncw=${CW_BENCH_CW:-75000}
ntw=${CW_BENCH_TW:-25000}
procs=50
snaps=8
bench_need "$cw" "$plant" "$timeit"
command -v curl >/dev/null || { echo "bench/exporter.sh: curl is missing" >&2; exit 3; }
ulimit -n 8192

planter="" exporter=""
bench_scratch exporter planter

echo "exporter: planting $ncw CLOSE_WAIT over $procs processes + $ntw TIME_WAIT..." >&2
bench_plant bench/exporter.sh "$plant" "$ncw" "$procs" "$ntw"
count() { ss -tanH state "$1" | wc -l; }
total=$(ss -tanH | wc -l)
cwn=$(count close-wait)
twn=$(count time-wait)
echo "exporter: $total sockets ($cwn CLOSE_WAIT, $twn TIME_WAIT)" >&2

# --netns self: the 100,000 sockets are in this namespace; other jobs'
# namespaces on a shared machine would add their own dumps and noise.
"$cw" exporter --listen 127.0.0.1:0 --interval 2s --netns self >"$tmp/exp.out" 2>"$tmp/exp.err" &
exporter=$!
i=0
until grep -qs listening "$tmp/exp.out"; do
    i=$((i + 1))
    [ $i -gt 600 ] && { echo "bench/exporter.sh: exporter did not start" >&2; exit 3; }
    sleep 0.1
done
port=$(sed -n 's/.*:\([0-9]*\)$/\1/p' "$tmp/exp.out")
scrape() { curl -sf "http://127.0.0.1:$port/metrics"; }
metric() { awk -v k="$1" '$1 == k { print $2 }' "$tmp/m"; }
ticks() { awk '{ print $14 + $15 }' "/proc/$exporter/stat"; }
hz=$(getconf CLK_TCK)

# One line per snapshot: number, cpu_s, wall_s (the exporter's own).
last=0
: >"$tmp/snaps"
t_first="" hwm_first=""
while [ "$(wc -l <"$tmp/snaps")" -lt $snaps ]; do
    scrape >"$tmp/m" || { sleep 0.1; continue; }
    n=$(metric closewise_snapshots_total)
    if [ -n "$n" ] && [ "$n" != "$last" ]; then
        last=$n
        echo "$n $(metric closewise_scrape_cpu_seconds) $(metric closewise_scrape_duration_seconds)" >>"$tmp/snaps"
        if [ "$n" = 2 ]; then
            t_first=$(ticks)
            hwm_first=$(awk '/^VmHWM/ { print $2 }' "/proc/$exporter/status")
            echo 5 >"/proc/$exporter/clear_refs"   # peak RSS from here on: later snapshots
        fi
        c_last=$(ticks)
    fi
    sleep 0.2
done
hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$exporter/status")
rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$exporter/status")
scrape >"$tmp/m"
scraped_cw=$(awk '$1 ~ /^closewise_tcp_sockets\{state="close_wait"\}/ { print $2 }' "$tmp/m")
bench_stop "$exporter"
exporter=""
cat "$tmp/snaps" >&2

"$timeit" 21 5 ss "ss -tanH" closewise_stat "$cw stat" >"$tmp/peers"
cat "$tmp/peers" >&2
exec 3>&-
wait "$planter" || true
planter=""

# ---- Markdown ----
steady=$(awk 'NR > 1 { print $2 }' "$tmp/snaps" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
steady_wall=$(awk 'NR > 1 { print $3 }' "$tmp/snaps" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
smax=$(awk 'NR > 1 && $2 > m { m = $2 } END { print m }' "$tmp/snaps")
cold=$(awk 'NR == 1 { print $2 }' "$tmp/snaps")
cold_wall=$(awk 'NR == 1 { print $3 }' "$tmp/snaps")
ext=$(awk -v a="$t_first" -v b="$c_last" -v hz="$hz" -v n=$((snaps - 2)) \
    'BEGIN { if (n > 0) printf "%.1f", (b - a) * 1000 / hz / n; else print "?" }')
ss_ms=$(awk '$1 == "ss" { print $3 }' "$tmp/peers")
stat_ms=$(awk '$1 == "closewise_stat" { print $3 }' "$tmp/peers")
ms() { awk -v s="$1" 'BEGIN { printf "%.1f", s * 1000 }'; }

section() {
    echo "<!-- exporter:begin (written by bench/exporter.sh; edits here are overwritten) -->"
    echo "## Exporter: one \`closewise exporter\` snapshot at 100,000 sockets"
    echo
    echo "Command: \`sh bench/exporter.sh build-bench\` (also run by \`make bench\`; as root, Release build). Run on"
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "Linux $(uname -r). Other work may have been running on the machine."
    echo
    echo "Scenario: $ncw CLOSE_WAIT sockets held by $procs processes and $ntw TIME_WAIT"
    echo "sockets on loopback (\`bench/plant.c\`), in a private network namespace"
    echo "(table of $total sockets by \`ss -tanH\`: $cwn CLOSE_WAIT, $twn TIME_WAIT; the"
    echo "exporter reported $scraped_cw CLOSE_WAIT). The exporter ran with \`--interval 2s --netns self\`"
    echo "(BPF on: exact ages, owners by the task_file iterator, the resets counter); load average"
    echo "at the end $(cut -d' ' -f1-3 /proc/loadavg);"
    echo "$snaps snapshots were read. Targets: < 100 ms CPU and < 20 MiB RSS per scrape."
    echo
    echo "| what | CPU ms | wall ms |"
    echo "|---|---:|---:|"
    echo "| first snapshot (every socket new: names the owners of $ncw sockets held by 50 processes) | $(ms "$cold") | $(ms "$cold_wall") |"
    echo "| later snapshots, median of $((snaps - 1)) (max CPU $(ms "$smax")) | $(ms "$steady") | $(ms "$steady_wall") |"
    echo "| later snapshots, CPU per snapshot from /proc/PID/stat (includes serving the scrapes) | $ext | |"
    echo "| peer: \`ss -tanH\` (the whole table, no owners), median wall | | $ss_ms |"
    echo "| peer: \`closewise stat\` (dump + owners + per-process table), median wall | | $stat_ms |"
    echo
    echo "Memory (VmHWM, reset with /proc/PID/clear_refs after the second snapshot): peak"
    echo "RSS $((hwm_first / 1024)) MiB ($hwm_first KiB) over the first two snapshots, $((hwm / 1024)) MiB ($hwm KiB)"
    echo "over the later ones; RSS after the run $((rss / 1024)) MiB ($rss KiB)."
    echo "Snapshot CPU and wall times are the exporter's own (CLOCK_PROCESS_CPUTIME_ID and"
    echo "CLOCK_MONOTONIC around one refresh, exported as closewise_scrape_cpu_seconds and"
    echo "closewise_scrape_duration_seconds); a scrape itself serves the stored text."
    echo "<!-- exporter:end -->"
}

section >"$tmp/section"
cat "$tmp/section"
bench_md_section exporter "$tmp/section" "$md"
