#!/bin/sh
# bench/inspect.sh BUILD_DIR [MARKDOWN] - the socket inspector benchmark.
#
# For N = 1,000 and 10,000: N CLOSE_WAIT sockets held by 10 processes plus
# N TIME_WAIT sockets on loopback (bench/plant.c), then, in the same run and
# interleaved, `closewise ls --state close-wait` without process
# attribution and with it (default, forced BPF iterator, forced /proc
# scan), `ss -tan[p] state close-wait`, `netstat -tanp` and
# `lsof -nP -iTCP -sTCP:CLOSE_WAIT`. closewise gets `--netns self`: ss sees
# only its own namespace. Then the all-namespace scan: NS namespaces with
# PER CLOSE_WAIT sockets each (CW_BENCH_NS, default 50 x 200), one
# `closewise ls --netns all --state close-wait --process` against a loop of
# `ip netns exec NS ss -tanp state close-wait` over the same namespaces.
# Medians, minima and maxima go into the
# "Socket inspector" section of MARKDOWN (default docs/BENCHMARKS.md),
# which is rewritten between its markers; other sections are kept.
#
# Bounded: each size takes about 62 s of waiting (the peers' FIN_WAIT2
# halves must expire: tcp_fin_timeout) plus at most ~40 s of timing, and
# every process it starts is ended on exit.
set -eu

# Other work on the machine fills the kernel's socket table, which every
# tool walks: run in a private network namespace with its own table, the
# same size as the host's (net.ipv4.tcp_child_ehash_entries, Linux 6.1+,
# set for the run, then restored). The
# processes are still those of the whole machine, as for a real operator.
if [ -z "${CW_BENCH_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null &&
    [ -w /proc/sys/net/ipv4/tcp_child_ehash_entries ]; then
    old=$(cat /proc/sys/net/ipv4/tcp_child_ehash_entries)
    trap 'echo "$old" >/proc/sys/net/ipv4/tcp_child_ehash_entries' EXIT INT TERM
    cat /proc/sys/net/ipv4/tcp_ehash_entries >/proc/sys/net/ipv4/tcp_child_ehash_entries
    rc=0
    CW_BENCH_NETNS=private unshare -n sh -c \
        'ip link set lo up && exec sh "$0" "$@"' \
        "$0" "$@" || rc=$?
    echo "$old" >/proc/sys/net/ipv4/tcp_child_ehash_entries
    exit $rc
fi

build=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
cw=$build/closewise
plant=$build/bench/cw_bench_plant
timeit=$build/bench/cw_bench_timeit
sizes=${CW_BENCH_SIZES:-"1000 10000"}
procs=10

for tool in ss netstat lsof; do
    command -v $tool >/dev/null 2>&1 || {
        echo "bench/inspect.sh: $tool is missing (make deps-bench)" >&2
        exit 3
    }
done
for f in "$cw" "$plant" "$timeit"; do
    [ -x "$f" ] || { echo "bench/inspect.sh: $f not built" >&2; exit 3; }
done

tmp=$(mktemp -d)
planter=""
nsplanters=""
nsnames=""
ns_cleanup() {
    exec 4>&-
    # Closing the control FIFO ends the planters; kill any that linger.
    for p in $nsplanters; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    nsplanters=""
    for ns in $nsnames; do ip netns del "$ns" || true; done
    nsnames=""
}
cleanup() {
    exec 3>&- 2>/dev/null || true
    [ -n "$planter" ] && kill "$planter" 2>/dev/null && wait "$planter" 2>/dev/null
    ns_cleanup
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

count() { ss -tanH state "$1" | wc -l; }

# Plant the scenario for $1 sockets; returns once it is ready.
plant_start() {
    rm -f "$tmp/ctl" "$tmp/plant.out"   # no stale "ready" from the last size
    : >"$tmp/plant.out"
    mkfifo "$tmp/ctl"
    "$plant" "$1" "$procs" "$1" <"$tmp/ctl" >"$tmp/plant.out" 2>"$tmp/plant.err" &
    planter=$!
    exec 3>"$tmp/ctl"      # the planter holds its sockets until this closes
    i=0
    until grep -q ready "$tmp/plant.out"; do
        i=$((i + 1))
        if [ $i -gt 1800 ] || ! kill -0 "$planter" 2>/dev/null; then
            echo "bench/inspect.sh: planting failed:" >&2
            cat "$tmp/plant.err" >&2
            exit 3
        fi
        sleep 0.1
    done
}

plant_stop() {
    exec 3>&-
    wait "$planter" || true
    planter=""
}

for n in $sizes; do
    echo "inspect: planting $n CLOSE_WAIT over $procs processes + $n TIME_WAIT..." >&2
    plant_start "$n"
    echo "$n $(count close-wait) $(count time-wait)" >"$tmp/counts.$n"
    "$timeit" 31 5 \
        closewise_ls "$cw ls --netns self --state close-wait" \
        closewise_ls_p "$cw ls --netns self --state close-wait --process" \
        closewise_ls_bpf "$cw ls --netns self --state close-wait --process --owners bpf" \
        closewise_ls_proc "$cw ls --netns self --state close-wait --process --owners proc" \
        ss "ss -tan state close-wait" \
        ss_p "ss -tanp state close-wait" \
        netstat_p "netstat -tanp" \
        lsof "lsof -nP -iTCP -sTCP:CLOSE_WAIT" >"$tmp/res.$n"
    echo "$(count close-wait) $(count time-wait)" >>"$tmp/counts.$n"
    "$cw" ls --netns self --state close-wait --process --owners bpf --verbose 2>&1 >/dev/null |
        tail -1 >"$tmp/bpf.$n"
    plant_stop
    cat "$tmp/res.$n" >&2
done

# ---- all namespaces ----
set -- ${CW_BENCH_NS:-50 200}
nns=$1
per=$2
if [ "$nns" -gt 0 ]; then
    echo "inspect: $nns namespaces x $per CLOSE_WAIT..." >&2
    mkfifo "$tmp/nsctl"
    i=0
    while [ $i -lt "$nns" ]; do
        ns=cwbench-$$-$i
        ip netns add "$ns" && ip -n "$ns" link set lo up || exit 3
        nsnames="$nsnames $ns"
        : >"$tmp/ns.$i.out"
        CW_PLANT_NO_WAIT=1 ip netns exec "$ns" "$plant" "$per" 1 0 >"$tmp/ns.$i.out" 2>&1 \
            <"$tmp/nsctl" &
        nsplanters="$nsplanters $!"
        i=$((i + 1))
    done
    exec 4>"$tmp/nsctl"
    i=0
    while [ $i -lt "$nns" ]; do
        k=0
        until grep -q ready "$tmp/ns.$i.out"; do
            k=$((k + 1))
            [ $k -gt 600 ] && { echo "bench/inspect.sh: namespace planting failed" >&2; cat "$tmp/ns.$i.out" >&2; exit 3; }
            sleep 0.1
        done
        i=$((i + 1))
    done
    { for ns in $nsnames; do echo "ip netns exec $ns ss -tanp state close-wait"; done; } >"$tmp/ssloop.sh"
    "$cw" ls --netns all --state close-wait --process --json >"$tmp/nsall.json"
    found=$(grep -c '"state":"CLOSE_WAIT"' "$tmp/nsall.json" || true)
    ssfound=$(sed 's/ss -tanp/ss -tanpH/' "$tmp/ssloop.sh" | sh | wc -l)
    nsall=$(grep -o '"netns":\[[0-9,]*\]' "$tmp/nsall.json" | tr -cd , | wc -c)
    "$timeit" 21 20 \
        closewise_all "$cw ls --netns all --state close-wait --process" \
        closewise_all_proc "$cw ls --netns all --state close-wait --process --owners proc" \
        ss_loop "sh $tmp/ssloop.sh" >"$tmp/res.ns"
    echo "$nns $per $found $ssfound $((nsall + 1))" >"$tmp/counts.ns"
    ns_cleanup
    cat "$tmp/res.ns" >&2
fi

# ---- Markdown ----
med() { awk -v k="$1" '$1 == k { print $3 }' "$tmp/res.$2"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

section() {
    echo "<!-- inspect:begin (written by bench/inspect.sh; edits here are overwritten) -->"
    echo "## Socket inspector: \`closewise ls\` vs ss, netstat, lsof"
    echo
    echo "Command: \`make bench\` (runs \`sh bench/run.sh build-bench\`, which runs"
    echo "\`bench/inspect.sh build-bench\`). Run on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)),"
    echo "Linux $(uname -r), $(ss -V 2>&1 | head -1), lsof $(lsof -v 2>&1 | awk '/revision/ { print $2; exit }'),"
    echo "netstat from net-tools $(dpkg-query -W -f='${Version}' net-tools 2>/dev/null || echo '?'). Release build."
    echo "Other work may have been running on the machine; the runs of all six"
    echo "commands are interleaved (round-robin) so that noise hits them alike."
    echo
    echo "Scenario: N CLOSE_WAIT sockets held by $procs processes (\`bench/plant.c\`; the peers'"
    echo "FIN_WAIT2 halves are left to expire first) plus N TIME_WAIT sockets, all on"
    echo "loopback. Each command's output goes to /dev/null. Times in ms: median (min-max)"
    echo "over the runs shown."
    echo
    if [ "${CW_BENCH_NETNS:-}" = private ]; then
        echo "Isolation: the run is in a private network namespace with its own socket"
        echo "table ($(cat /proc/sys/net/ipv4/tcp_ehash_entries) buckets, the host's size), so sockets of other work"
        echo "on the machine are not in the table; /proc (all processes) is the machine's."
    else
        echo "Isolation: none (not root, or no private socket tables on this kernel): the"
        echo "table holds whatever else runs on the machine."
    fi
    echo
    echo "| command | N | runs | median | min-max |"
    echo "|---|---:|---:|---:|---:|"
    for n in $sizes; do
        while read -r name runs m lo hi failed; do
            case $name in
            closewise_ls) c="closewise ls --netns self --state close-wait" ;;
            closewise_ls_p) c="closewise ls --netns self --state close-wait --process" ;;
            closewise_ls_bpf) c="closewise ls --netns self --state close-wait --process --owners bpf" ;;
            closewise_ls_proc) c="closewise ls --netns self --state close-wait --process --owners proc" ;;
            ss) c="ss -tan state close-wait" ;;
            ss_p) c="ss -tanp state close-wait" ;;
            netstat_p) c="netstat -tanp" ;;
            lsof) c="lsof -nP -iTCP -sTCP:CLOSE_WAIT" ;;
            *) c=$name ;;
            esac
            [ "$failed" = 0 ] || c="$c (**$failed runs failed**)"
            echo "| \`$c\` | $n | $runs | $m | $lo-$hi |"
        done <"$tmp/res.$n"
    done
    echo
    echo "Ratios of medians (targets at N=10000: BPF path <= 0.05 x \`ss -tanp\`,"
    echo "/proc path <= 0.25 x; without attribution <= 0.50 x \`ss -tan\`):"
    echo
    echo "| N | ls / ss -tan | ls -p (auto) / ss -tanp | ls -p bpf / ss -tanp | ls -p proc / ss -tanp | ls -p / netstat -tanp | ls -p / lsof |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for n in $sizes; do
        echo "| $n | $(ratio "$(med closewise_ls "$n")" "$(med ss "$n")") |" \
            "$(ratio "$(med closewise_ls_p "$n")" "$(med ss_p "$n")") |" \
            "$(ratio "$(med closewise_ls_bpf "$n")" "$(med ss_p "$n")") |" \
            "$(ratio "$(med closewise_ls_proc "$n")" "$(med ss_p "$n")") |" \
            "$(ratio "$(med closewise_ls_p "$n")" "$(med netstat_p "$n")") |" \
            "$(ratio "$(med closewise_ls_p "$n")" "$(med lsof "$n")") |"
    done
    echo
    echo "How owners were found (\`--owners bpf --verbose\`), per N:"
    for n in $sizes; do
        echo "N=$n: $(cat "$tmp/bpf.$n" 2>/dev/null)"
    done
    set -- $sizes
    if [ $# -ge 2 ]; then
        a=$1
        shift $(($# - 1))
        b=$1
        echo
        echo "Scaling, median at N=$b / median at N=$a:"
        echo
        echo "| command | x |"
        echo "|---|---:|"
        for k in closewise_ls closewise_ls_p closewise_ls_bpf closewise_ls_proc ss ss_p netstat_p lsof; do
            echo "| $k | $(ratio "$(med $k "$b")" "$(med $k "$a")") |"
        done
    fi
    echo
    echo "Sockets present (ss) before and after timing, per N: CLOSE_WAIT, TIME_WAIT:"
    for n in $sizes; do
        read -r _ cw0 tw0 <"$tmp/counts.$n"
        tail -1 "$tmp/counts.$n" | { read -r cw1 tw1; echo "N=$n: $cw0 / $tw0 before, $cw1 / $tw1 after;"; }
    done
    echo "(counts include sockets of anything else running on the machine)."
    for n in $sizes; do
        read -r _ cw0 tw0 <"$tmp/counts.$n"
        if [ "$cw0" -lt $((n * 99 / 100)) ] || [ "$tw0" -lt $((n * 95 / 100)) ]; then
            echo
            echo "**Warning:** at N=$n only $cw0 CLOSE_WAIT / $tw0 TIME_WAIT sockets were present."
        fi
        if [ "$tw0" -gt $((n * 3 / 2)) ]; then
            echo
            echo "**Warning:** at N=$n the machine held $tw0 TIME_WAIT sockets, not $n: other"
            echo "work was running, every tool walked a larger table, and the numbers above"
            echo "are not the specified scenario. Rerun on a quiet machine."
        fi
    done
    if [ -f "$tmp/res.ns" ]; then
        read -r nns per found ssfound nsall <"$tmp/counts.ns"
        echo
        echo "### Every network namespace"
        echo
        echo "$nns namespaces made with \`ip netns add\`, each with $per CLOSE_WAIT sockets held by"
        echo "one process (their FIN_WAIT2 peers still present). \`closewise ls --netns all\`"
        echo "enters every namespace of the machine ($nsall at the time, the benchmark's and"
        echo "whatever else ran) from helper threads; ss needs \`ip netns exec\` per named"
        echo "namespace (and cannot reach unnamed container namespaces at all). Found:"
        echo "closewise $found CLOSE_WAIT sockets, the ss loop $ssfound."
        echo
        echo "| command | runs | median | min-max |"
        echo "|---|---:|---:|---:|"
        while read -r name runs m lo hi failed; do
            case $name in
            closewise_all) c="closewise ls --netns all --state close-wait --process" ;;
            closewise_all_proc) c="closewise ls --netns all --state close-wait --process --owners proc" ;;
            ss_loop) c="for ns in (the $nns); do ip netns exec \$ns ss -tanp state close-wait; done" ;;
            *) c=$name ;;
            esac
            [ "$failed" = 0 ] || c="$c (**$failed runs failed**)"
            echo "| \`$c\` | $runs | $m | $lo-$hi |"
        done <"$tmp/res.ns"
        awk '$1 == "closewise_all" { a = $3 } $1 == "ss_loop" { b = $3 }
             END { if (b > 0) printf "\nRatio of medians, closewise / ss loop: %.3f\n", a / b }' "$tmp/res.ns"
    fi
    notes="$(dirname "$0")/inspect-notes.md"
    if [ -f "$notes" ]; then
        echo
        cat "$notes"
    fi
    echo "<!-- inspect:end -->"
}

section >"$tmp/section.md"
mkdir -p "$(dirname "$md")"
[ -f "$md" ] || printf '# Benchmarks\n\nEvery number here comes from `make bench`; each section says what it ran.\n\n' >"$md"
if grep -q '<!-- inspect:begin' "$md"; then
    awk -v sec="$tmp/section.md" '
        /<!-- inspect:begin/ { while ((getline l < sec) > 0) print l; skip = 1; next }
        /<!-- inspect:end -->/ { skip = 0; next }
        !skip { print }' "$md" >"$tmp/new.md"
else
    { cat "$md"; cat "$tmp/section.md"; } >"$tmp/new.md"
fi
cat "$tmp/new.md" >"$md"
echo "inspect: results in $md" >&2
