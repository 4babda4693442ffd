#!/bin/sh
# bench/soak.sh BUILD_DIR [MARKDOWN] - `make soak`: the reference server under a long
# mixed load (not part of `make check`). cw_bench_authload soak opens
# CW_SOAK_COUNT connections (1,000,000), CW_SOAK_CONC at a time (64), of
# mixed behaviour (bench/authload.c: right and wrong passwords with
# yescrypt and sha512, ECHO sessions, resets mid-line, half-closes, a
# client that never reads, idle past the timeout, leaving while the
# password is checked) against `closewise server $CW_SOAK_SERVER_ARGS`,
# bounded by CW_SOAK_SECS (900). Meanwhile the server's RSS and descriptors
# are sampled every CW_SOAK_SAMPLE seconds (10). Then it asserts: every
# client that reads got its final line (the generator's failures: 0), 0
# CLOSE_WAIT on the server's port, the server's descriptors back to their
# count before the load, RSS after warm-up grown by less than 10 % (the
# median of the last quarter of the samples against that of the second); and SIGTERM ends the server with status 0. Prints the
# RSS curve and one summary line, and writes the "Soak" section of
# MARKDOWN (default docs/BENCHMARKS.md; CW_SOAK_MD=- for none); exits 1
# if an assertion failed, 3 if something could not run.
set -eu
build=${1:-build-bench}
md=${2:-${CW_SOAK_MD:-docs/BENCHMARKS.md}}
cw=$build/closewise
gen=$build/bench/cw_bench_authload
load=$build/bench/cw_bench_load
count=${CW_SOAK_COUNT:-1000000}
conc=${CW_SOAK_CONC:-64}
secs=${CW_SOAK_SECS:-900}
every=${CW_SOAK_SAMPLE:-10}
extra=${CW_SOAK_SERVER_ARGS:-}
for f in "$cw" "$gen" "$load"; do
    [ -x "$f" ] || { echo "soak: $f not built" >&2; exit 3; }
done

tmp=$(mktemp -d)
server=
sampler=
cleanup() {
    [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
    [ -n "$server" ] && kill -KILL "$server" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

yes_h=$("$cw" passwd --password soak-y y | cut -d: -f2-)
six_h=$("$cw" passwd -m sha512 --password soak-6 s | cut -d: -f2-)
cheap_h=$("$load" hash soak-c)
# yb and sb take the wrong passwords (the per-account throttle locks them).
printf 'y:%s\nyb:%s\ns:%s\nsb:%s\nc:%s\n' "$yes_h" "$yes_h" "$six_h" "$six_h" \
    "$cheap_h" > "$tmp/creds"

# Short timeouts, so that idle, never-reading and lingering clients end
# within the run; a cap high enough for CONC clients and their lingering.
"$cw" server -p 0 --port-file "$tmp/port" -c "$tmp/creds" -q \
    --idle-timeout 2s --login-timeout 1s --write-timeout 1s \
    --lingering-timeout 1s --lingering-time 5s --max-connections 8192 --workers 2 \
    $extra > "$tmp/server.out" 2> "$tmp/server.err" &
server=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/port" ] || { echo "soak: the server did not start" >&2; cat "$tmp/server.err" >&2; exit 3; }
port=$(cat "$tmp/port")
sleep 0.5
fds() { ls "/proc/$server/fd" 2>/dev/null | wc -l; }
rss() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
base_fds=$(fds)
base_rss=$(rss)

(
    t=0
    while kill -0 "$server" 2>/dev/null; do
        echo "$t $(rss) $(fds)" >> "$tmp/samples"
        sleep "$every"
        t=$((t + every))
    done
) &
sampler=$!

status=0
start=$(date +%s)
"$gen" soak "$port" "$count" "$conc" "$secs" y:soak-y,yb:soak-y s:soak-6,sb:soak-6 c:soak-c > "$tmp/gen.out" || status=1
took=$(( $(date +%s) - start ))
cat "$tmp/gen.out"

# Let lingering closes and timers finish (bounded by --lingering-time).
i=0
while [ "$(fds)" -gt "$base_fds" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
kill "$sampler" 2>/dev/null || true
sampler=
end_fds=$(fds)
end_rss=$(rss)
cw_count=$(ss -Htan state close-wait "( sport = :$port )" | wc -l)

echo "RSS curve (s, KiB, descriptors):"
cat "$tmp/samples"
# Medians, not single samples: a yescrypt check in flight holds a 16 MiB
# buffer for milliseconds, and a sample that falls on one is a spike.
n=$(wc -l < "$tmp/samples")
median() { sed -n "$1,$2p" "$tmp/samples" | cut -d' ' -f2 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
warm_rss=$(median $(( n / 4 + 1 )) $(( n / 2 )))
max_rss=$(median $(( 3 * n / 4 + 1 )) "$n")

kill -TERM "$server"
set +e
wait "$server"
rc=$?
set -e
server=

verdict=ok
[ "$status" -eq 0 ] || verdict="client failures"
[ "$cw_count" -eq 0 ] || verdict="$cw_count CLOSE_WAIT"
[ "$end_fds" -le "$base_fds" ] || verdict="descriptors $base_fds -> $end_fds"
[ $((max_rss * 10)) -le $((warm_rss * 11)) ] || verdict="RSS grew after warm-up: median $warm_rss -> $max_rss KiB"
[ "$rc" -eq 0 ] || verdict="server exit status $rc after SIGTERM"
summary="soak: $verdict: ${took}s, descriptors $base_fds -> $end_fds, CLOSE_WAIT $cw_count, RSS KiB start $base_rss, median 2nd quarter $warm_rss, median last quarter $max_rss, end $end_rss, server exit $rc"
echo "$summary"
if [ "$md" != - ]; then
    {
        echo "<!-- soak:begin (written by bench/soak.sh; edits here are overwritten) -->"
        echo "## Soak"
        echo
        echo "\`make soak\` ($(date -u +%Y-%m-%d), $(nproc) cores shared with other jobs, load"
        echo "average at the end $(cut -d' ' -f1-3 /proc/loadavg)): $count connections, $conc at a"
        echo "time, against \`closewise server --workers 2\` with short timeouts (idle 2 s,"
        echo "login 1 s, write 1 s, lingering 1 s/5 s). The mix (counts over the whole run) and how"
        echo "each kind ended (done/failed; a failure is a client that reads and did not"
        echo "get its last line whole, then EOF):"
        echo
        echo '```'
        cat "$tmp/gen.out"
        echo "$summary"
        echo '```'
        echo
        echo "Server RSS (KiB) and descriptors, every ${every} s:"
        echo
        echo '```'
        cat "$tmp/samples"
        echo '```'
        echo "<!-- soak:end -->"
    } > "$tmp/section.md"
    [ -f "$md" ] || printf '# Benchmarks\n\n' > "$md"
    if grep -q '<!-- soak:begin' "$md"; then
        awk -v sec="$tmp/section.md" '
            /<!-- soak:begin/ { while ((getline l < sec) > 0) print l; skip = 1; next }
            /<!-- soak:end -->/ { skip = 0; next }
            !skip { print }' "$md" > "$tmp/new.md"
    else
        { cat "$md"; echo; cat "$tmp/section.md"; } > "$tmp/new.md"
    fi
    cat "$tmp/new.md" > "$md"
fi
[ "$verdict" = ok ]
