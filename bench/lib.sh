# bench/lib.sh - what the benchmark scripts share; sourced, never run:
#     . "$(dirname "$0")/lib.sh"
# POSIX sh. Functions only: sourcing it runs nothing. Helpers that need a
# scratch directory use $tmp (each script makes its own with mktemp -d).

# bench_private_netns SETUP SCRIPT [ARGS...] - run SCRIPT again in a
# private network namespace and exit with its status: other work on the
# machine fills the kernel's socket table, which every tool walks. The
# namespace gets its own table the size of the host's
# (net.ipv4.tcp_child_ehash_entries, Linux 6.1+, set for the run, then
# restored) when the kernel allows it, loopback up, then the shell snippet
# SETUP (e.g. a sysctl). Returns without doing anything inside the
# namespace already (CW_BENCH_NETNS set), or when not root or without
# unshare: the caller then runs where it is, or refuses.
bench_private_netns() {
    _setup=$1
    shift
    [ -z "${CW_BENCH_NETNS:-}" ] && [ "$(id -u)" = 0 ] && command -v unshare >/dev/null ||
        return 0
    _ehash=/proc/sys/net/ipv4/tcp_child_ehash_entries
    _old=""
    if [ -w $_ehash ]; then
        _old=$(cat $_ehash)
        trap 'echo "$_old" >$_ehash' EXIT INT TERM
        cat /proc/sys/net/ipv4/tcp_ehash_entries >$_ehash
    fi
    _rc=0
    CW_BENCH_NETNS=private unshare -n sh -c \
        "ip link set lo up && ${_setup:-:} && exec sh \"\$0\" \"\$@\"" "$@" || _rc=$?
    [ -n "$_old" ] && echo "$_old" >$_ehash
    exit $_rc
}

# bench_need FILE... - exit 3 naming the first FILE that is not an
# executable (a benchmark run before `make bench` built it).
bench_need() {
    for _f; do
        [ -x "$_f" ] || { echo "bench/${0##*/}: $_f not built" >&2; exit 3; }
    done
}

# bench_scratch VAR... - make the scratch directory $tmp, and on exit (or
# INT, TERM) end the processes whose pids the variables VAR... hold then,
# close descriptor 3 (a planter's fifo) and remove $tmp.
bench_scratch() {
    tmp=$(mktemp -d)
    _bench_pids="$*"
    trap _bench_cleanup EXIT INT TERM
}

_bench_cleanup() {
    exec 3>&- 2>/dev/null || true
    for _v in $_bench_pids; do
        eval "bench_stop \"\${$_v:-}\""
    done
    rm -rf "$tmp"
}

# bench_plant NAME PLANT ARGS... - start bench/plant.c (PLANT ARGS...),
# which holds its sockets until its stdin (descriptor 3 here, a fifo in
# $tmp) closes, and wait until it says ready; sets planter. Exits 3 with
# the planter's errors when it fails or takes over 5 minutes. NAME is the
# calling script's, for messages.
bench_plant() {
    _name=$1
    shift
    mkfifo "$tmp/ctl"
    "$@" <"$tmp/ctl" >"$tmp/plant.out" 2>"$tmp/plant.err" &
    planter=$!
    exec 3>"$tmp/ctl"
    _i=0
    until grep -q ready "$tmp/plant.out"; do
        _i=$((_i + 1))
        if [ $_i -gt 3000 ] || ! kill -0 "$planter" 2>/dev/null; then
            echo "$_name: planting failed:" >&2
            cat "$tmp/plant.err" >&2
            exit 3
        fi
        sleep 0.1
    done
}

# bench_stop PID - end a process this script started, if any ("" is none).
bench_stop() {
    [ -n "$1" ] || return 0
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# bench_server_start NAME CPU BINARY ARGS... - `BINARY server` on core CPU,
# on a free port, with ARGS (credentials, limits); sets spid and sport.
# Exits 3 when it does not start within 5 s.
bench_server_start() {
    _name=$1 _cpu=$2 _bin=$3
    shift 3
    rm -f "$tmp/port"
    taskset -c "$_cpu" "$_bin" server -q -p 0 --port-file "$tmp/port" "$@" >/dev/null &
    spid=$!
    bench_port_wait "$_name: $_bin server" 100 || exit 3
    sleep 0.1
}

# bench_port_wait WHAT TICKS [ERRFILE] - wait for the server spid, started
# with --port-file $tmp/port (rm'ed before), to write its port; sets sport.
# Polls every 0.05 s, TICKS times at most. When spid ends or the time is
# up: "WHAT did not start" and ERRFILE (its stderr) on stderr, returns 1.
bench_port_wait() {
    _i=0
    until [ -s "$tmp/port" ]; do
        _i=$((_i + 1))
        if [ $_i -gt "$2" ] || ! kill -0 "$spid" 2>/dev/null; then
            echo "$1 did not start" >&2
            [ -z "${3:-}" ] || cat "$3" >&2
            return 1
        fi
        sleep 0.05
    done
    sport=$(cat "$tmp/port")
}

bench_server_stop() {
    bench_stop "$spid"
    spid=""
}

# bench_record FILE LINE - keep a run's LINE in FILE and show it on stderr.
bench_record() {
    echo "$2" >>"$1"
    echo "  $2" >&2
}

# Runs are recorded one a line as key=value fields ("mode=linger0 run=3
# conns=1234 ..."); FILTER selects the lines holding all its fields.
# kv_stat FILE FILTER KEY: "median min max" of KEY ("- - -" when none).
kv_stat() {
    awk -v f="$2" -v k="$3" '
        index(" " $0 " ", " " f " ") == 0 { next }
        { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) v[n++] = kv[2] + 0 } }
        END {
            if (!n) { print "- - -"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            m = n % 2 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2
            print m, v[0], v[n - 1]
        }' "$1"
}

# kv_total FILE FILTER KEY: the sum of KEY.
kv_total() {
    awk -v f="$2" -v k="$3" 'index(" " $0 " ", " " f " ") { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) s += kv[2] } } END { print s + 0 }' "$1"
}

# kv_max FILE FILTER KEY: the largest KEY (0 when none).
kv_max() {
    awk -v f="$2" -v k="$3" 'index(" " $0 " ", " " f " ") { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k && kv[2] + 0 > m) m = kv[2] + 0 } } END { print m + 0 }' "$1"
}

# kv_med FILE FILTER KEY: the median alone.
kv_med() {
    kv_stat "$@" | awk '{ print $1 }'
}

# kv_fmt MEDIAN MIN MAX [DECIMALS]: "m (lo-hi)", or "-" for no value.
kv_fmt() {
    awk -v m="$1" -v lo="$2" -v hi="$3" -v d="${4:-0}" 'BEGIN { if (m == "-") print "-"; else printf "%.*f (%.*f-%.*f)\n", d, m, d, lo, d, hi }'
}

# bench_md_section NAME SECTION MARKDOWN - put the file SECTION, which
# starts with "<!-- NAME:begin" and ends with "<!-- NAME:end -->", in
# place of MARKDOWN's section NAME, or after its end when it has none
# (a new MARKDOWN gets a title first). Other sections are kept.
bench_md_section() {
    mkdir -p "$(dirname "$3")"
    [ -f "$3" ] || printf '# Benchmarks\n\nEvery number here comes from `make bench`; each section says what it ran.\n\n' >"$3"
    if grep -q "<!-- $1:begin" "$3"; then
        awk -v sec="$2" -v b="<!-- $1:begin" -v e="<!-- $1:end" '
            index($0, b) == 1 { while ((getline l < sec) > 0) print l; skip = 1; next }
            index($0, e) == 1 { skip = 0; next }
            !skip { print }' "$3" >"$tmp/md.new"
    else
        { cat "$3"; echo; cat "$2"; } >"$tmp/md.new"
    fi
    cat "$tmp/md.new" >"$3"
}
