#!/bin/sh
# bench/churn-user.sh MODE ... - where a churn connection's user-space time
# goes (wrong password, read to EOF, close), `closewise server` of each
# BUILD_DIR against the bare epoll peer of the first. This machine's
# virtual CPU has no hardware counters (perf stat: cycles, cache and
# branch misses "not supported"), so:
#
#   samples ROUNDS N BUILD_DIR...: per run, a fresh server on core 0, 300
#     warm-up connections, then perf record -e cpu-clock -F 20000 on the
#     server while `cw_bench_load churn` on core 1 makes N connections at
#     concurrency 64; rounds interleave the servers in a rotated order.
#     One line per run (ns per connection): user, kern, and user split as
#     own (the server's binary), clock (vDSO and libc clock_gettime),
#     malloc (malloc/free), memset (libxcrypt's wipe of its crypt_data),
#     libc (the rest: mostly the system call wrappers, whose samples are
#     the first user instruction after each call returns) and crypt
#     (libcrypt: the same DES in every server). About ROUNDS x servers x
#     (N / 15,000 + 2) seconds.
#   lines BUILD_DIR...: exact counts under valgrind (callgrind
#     --dump-instr=yes, --auth-threads 0 as in churn-counts.sh), per
#     connection ((count over 2,500 - count over 500) / 2,000): instr
#     (instructions) and lines (64-byte code lines executed at least
#     once per two connections), split by object. A line missed in the
#     instruction cache costs far more than an instruction; the kernel's
#     work for each connection (~19 us) evicts the L1 caches in between.
#     About 1 minute per server.
# Needs perf (samples) or valgrind (lines).
set -eu
. "$(dirname "$0")/lib.sh"

mode=$1
shift
if [ "$mode" = samples ]; then
    rounds=$1 n=$2
    shift 2
fi
first=$1
load=$first/bench/cw_bench_load
peer=$first/bench/cw_peer_epoll
bench_need "$load" "$peer"
spid=""
ppid=""
bench_scratch spid ppid
ulimit -n "$(ulimit -Hn)"
hash=$("$load" hash bench-password)
printf 'bench:%s\n' "$hash" >"$tmp/cred"

# start NAME WRAPPER...: the server NAME ("epoll" or a build directory)
# on core 0 under WRAPPER; sets spid and sport.
start() {
    name=$1
    shift
    rm -f "$tmp/port"
    if [ "$name" = epoll ]; then
        taskset -c 0 "$@" "$peer" "$tmp/port" "$hash" >/dev/null 2>"$tmp/err" &
    else
        # shellcheck disable=SC2086
        taskset -c 0 "$@" "$name/closewise" server -q -p 0 --port-file "$tmp/port" \
            -c "$tmp/cred" --max-auth-failures 0 --max-connections 20000 \
            $threads >/dev/null 2>"$tmp/err" &
    fi
    spid=$!
    bench_port_wait "churn-user: $name" 600 "$tmp/err" || exit 3
    sleep 0.3
}

sample() {   # NAME ROUND
    threads=
    start "$1"
    taskset -c 1 "$load" churn "$sport" 8 10 300 wrong-password >/dev/null
    perf record -q -e cpu-clock -F 20000 -p "$spid" -o "$tmp/perf.data" 2>/dev/null &
    ppid=$!
    sleep 0.3
    taskset -c 1 "$load" churn "$sport" 64 300 "$n" wrong-password >"$tmp/churn"
    kill -INT "$ppid"
    wait "$ppid" 2>/dev/null || true
    ppid=""
    bench_server_stop
    conns=$(sed -n 's/.*conns=\([0-9]*\).*/\1/p' "$tmp/churn")
    perf report -i "$tmp/perf.data" --sort dso,sym -F sample,dso,sym -q 2>/dev/null |
        awk -v s="$1" -v r="$2" -v c="$conns" '
        NF >= 4 { k = $1; d = $2; sym = $NF
            if (d ~ /kernel/) { kern += k; next }
            user += k
            if (d ~ /closewise|cw_peer/) own += k
            else if (d ~ /vdso/ || sym ~ /clock_gettime/) clk += k
            else if (d ~ /libcrypt/) cr += k
            else if (sym ~ /malloc|free|unlink_chunk/) ma += k
            else if (sym ~ /memset/) ms += k
            else lc += k }
        END { f = 50000 / c   # a sample is 50 us at 20 kHz
            printf "server=%s round=%d conns=%d user=%.0f kern=%.0f own=%.0f clock=%.0f malloc=%.0f memset=%.0f libc=%.0f crypt=%.0f\n",
                s, r, c, user * f, kern * f, own * f, clk * f, ma * f, ms * f, lc * f, cr * f }'
}

# callgrind NAME N OUT: a callgrind profile of N connections.
callgrind() {
    threads=--auth-threads\ 0
    start "$1" valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file="$3"
    taskset -c 1 "$load" churn "$sport" 8 300 "$2" wrong-password >/dev/null
    bench_server_stop
}

# The cost of each 64-byte code line (object, address / 64) in a
# callgrind profile with --dump-instr=yes: "object line instructions".
code_lines() {
    awk '
        function name(s, t,   id) {   # "(n) name" defines, "(n)" refers
            if (match(s, /^\([0-9]+\)/)) {
                id = substr(s, 2, RLENGTH - 2)
                if (length(s) > RLENGTH) t[id] = substr(s, RLENGTH + 2)
                return t[id]
            }
            return s
        }
        /^ob=/ { ob = name(substr($0, 4), obs); sub(/.*\//, "", ob); next }
        /^cob=/ { name(substr($0, 5), obs); next }
        /^(fn|cfn|fl|fi|fe|cfi|cfl)=/ { next }
        /^calls=/ { skip = 1; next }
        function hex(s,   i, v) {
            v = 0
            for (i = 3; i <= length(s); i++)
                v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
            return v
        }
        /^(0x[0-9a-f]+|[+-][0-9]+|\*)/ {   # relative positions are decimal
            a = $1
            if (a ~ /^0x/) addr = hex(a)
            else if (a ~ /^[+-]/) addr += a
            if (skip) { skip = 0; next }
            c[ob " " int(addr / 64)] += $3
        }
        END { for (k in c) print k, c[k] }' "$1"
}

if [ "$mode" = samples ]; then
    names="epoll $*"
    r=1
    while [ $r -le "$rounds" ]; do
        # shellcheck disable=SC2086
        set -- $names
        k=$(( (r - 1) % $# ))
        while [ $k -gt 0 ]; do s=$1; shift; set -- "$@" "$s"; k=$((k - 1)); done
        for s in "$@"; do
            sample "$s" $r
        done
        r=$((r + 1))
    done
elif [ "$mode" = lines ]; then
    for s in epoll "$@"; do
        callgrind "$s" 500 "$tmp/a.out"
        callgrind "$s" 2500 "$tmp/b.out"
        code_lines "$tmp/a.out" >"$tmp/a.lines"
        code_lines "$tmp/b.out" >"$tmp/b.lines"
        awk -v s="$s" 'FNR == NR { a[$1 " " $2] = $3; next }
            { d = ($3 - a[$1 " " $2]) / 2000; ir += d
              if (d >= 0.5) { n++; by[$1]++ } }
            END { printf "server=%s instr=%.0f lines=%d", s, ir, n
                  for (o in by) printf " %s=%d", o, by[o]; print "" }' \
            "$tmp/a.lines" "$tmp/b.lines"
    done
else
    echo "usage: bench/churn-user.sh samples ROUNDS N BUILD_DIR... | lines BUILD_DIR..." >&2
    exit 2
fi
