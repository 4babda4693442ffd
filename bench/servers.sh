#!/bin/sh
# bench/servers.sh BUILD_DIR [MARKDOWN] - the server benchmark: the
# closewise reference server against libuv, libevent, a bare epoll loop,
# the seed's blocking design, a linger-0 server and nginx's stream module,
# on one protocol, on loopback, in the same run. Writes the "Servers"
# section of MARKDOWN (default docs/BENCHMARKS.md) between its markers;
# other sections are kept.
#
# 1. churn: `cw_bench_load churn` (bench/load.c) at concurrency 64 and 512,
#    SECS seconds a run, RUNS runs of every server, interleaved. closewise
#    runs three ways: as the others (pinned to one core: one loop), and
#    with `--workers 1` and `--workers 2` (closewise-w1, closewise-w2; w2
#    may use both cores, which it shares with the load generator).
# 2. idle: IDLE_N logged-in sessions; server RSS growth per session; then
#    the clients half-close in random order, one every 1/RATE s (each at
#    its own due time, from a timerfd): FIN-to-FIN latency. With perf, the
#    kernel's TCP state changes on the server's port are recorded during
#    the run (sock:inet_sock_set_state) and every close is split into the
#    server's part (our FIN in -> its FIN out, at its socket), loopback,
#    and the load generator's own part, and the run-queue wait inside each
#    (sched_switch/sched_wakeup; bench/closesplit.c).
# 3. after every run: the server's descriptors above its idle count, and
#    CLOSE_WAIT sockets on its port.
# 4. exact counts per churn connection, closewise against the bare epoll
#    loop (bench/churn-counts.sh: callgrind instructions, perf system
#    calls, clock reads), if valgrind and perf are there (~1 minute).
# The server is pinned to core 0 and the load generator to core 1
# (taskset). Bounded: about 9 minutes with the defaults (the close trace
# adds a few seconds per idle run); every process it starts is ended on
# exit. Environment: CW_BENCH_RUNS (5), CW_BENCH_SECS
# (3), CW_BENCH_CONC ("64 512"), CW_BENCH_IDLE_N (10000), CW_BENCH_IDLE_RUNS
# (3), CW_BENCH_SERVERS (all), CW_BENCH_KEEP (raw results; default
# BUILD_DIR/bench/servers-raw), CW_BENCH_FROM (a kept run: no measuring),
# CW_BENCH_SPLIT (1; 0: no kernel trace), CW_BENCH_PARTS ("churn idle
# counts"). The close latency alone (about 1 minute per 3 runs of 3
# servers), written to BUILD_DIR/bench/servers-idle.md and stdout, not to
# MARKDOWN:
#   CW_BENCH_PARTS=idle CW_BENCH_SERVERS="closewise libuv epoll" \
#     sh bench/servers.sh build-bench
set -eu
. "$(dirname "$0")/lib.sh"

build=${1:-build-bench}
md=${2:-docs/BENCHMARKS.md}
bin=$build/bench
cw=$build/closewise
load=$bin/cw_bench_load
runs=${CW_BENCH_RUNS:-5}
secs=${CW_BENCH_SECS:-3}
concs=${CW_BENCH_CONC:-"64 512"}
idle_n=${CW_BENCH_IDLE_N:-10000}
idle_runs=${CW_BENCH_IDLE_RUNS:-3}
parts=${CW_BENCH_PARTS:-"churn idle counts"}
split=${CW_BENCH_SPLIT:-1}
rate=5000
scpu=0
lcpu=1
password=bench-password
nginx_mod=/usr/lib/nginx/modules/ngx_stream_module.so

all="closewise closewise-w1 closewise-w2 libuv libevent epoll seed linger0 nginx"
servers=${CW_BENCH_SERVERS:-$all}
bench_need "$cw" "$load" "$bin/cw_peer_epoll" "$bin/cw_peer_seed" "$bin/cw_bench_closesplit"
have() {
    case $1 in
    libuv) [ -x "$bin/cw_peer_uv" ] ;;
    libevent) [ -x "$bin/cw_peer_event" ] ;;
    nginx) [ -x /usr/sbin/nginx ] && [ -f "$nginx_mod" ] ;;
    *) true ;;
    esac
}
list=""
for s in $servers; do
    if have "$s"; then list="$list $s"; else echo "servers: $s missing, skipped (make deps-bench)" >&2; fi
done
idle_list=""
for s in $list; do
    case $s in linger0|nginx|closewise-w*) ;; *) idle_list="$idle_list $s" ;; esac
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
tmp=$(mktemp -d)
spid=""
tpid=""
stids=""
cleanup() {
    [ -n "$tpid" ] && kill -INT "$tpid" 2>/dev/null && wait "$tpid" 2>/dev/null
    [ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
ulimit -n "$(ulimit -Hn)"
hash=$("$load" hash "$password")
printf 'bench:%s\n' "$hash" >"$tmp/cred"

# ---- servers ----

nginx_conf() {
    cat <<EOF
load_module $nginx_mod;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 20000; }
stream { server { listen 127.0.0.1:$1 backlog=4096; return "ERR bad credentials\n"; } }
EOF
}

# Start server $1 on core $scpu; sets spid and sport.
start_server() {
    rm -f "$tmp/port"
    common="-q -p 0 --port-file $tmp/port -c $tmp/cred --max-auth-failures 0 --max-connections 20000"
    case $1 in
    closewise) taskset -c $scpu "$cw" server $common >/dev/null & ;;
    closewise-w1) taskset -c $scpu "$cw" server $common --workers 1 >/dev/null & ;;
    closewise-w2) taskset -c $scpu,$lcpu "$cw" server $common --workers 2 >/dev/null & ;;
    linger0) taskset -c $scpu "$cw" server $common --linger0 >/dev/null & ;;
    libuv) taskset -c $scpu "$bin/cw_peer_uv" "$tmp/port" "$hash" & ;;
    libevent) taskset -c $scpu "$bin/cw_peer_event" "$tmp/port" "$hash" & ;;
    epoll) taskset -c $scpu "$bin/cw_peer_epoll" "$tmp/port" "$hash" & ;;
    seed) taskset -c $scpu "$bin/cw_peer_seed" "$tmp/port" "$hash" & ;;
    nginx)
        p=$("$load" freeport)
        nginx_conf "$p" >"$tmp/nginx.conf"
        taskset -c $scpu /usr/sbin/nginx -p "$tmp" -e "$tmp/nginx.err" -c "$tmp/nginx.conf" &
        echo "$p" >"$tmp/port.nginx"
        ;;
    esac
    spid=$!
    i=0
    while :; do
        if [ "$1" = nginx ]; then
            sport=$(cat "$tmp/port.nginx")
            ss -tlnH "sport = :$sport" | grep -q . && break
        elif [ -s "$tmp/port" ]; then
            sport=$(cat "$tmp/port")
            break
        fi
        i=$((i + 1))
        if [ $i -gt 100 ] || ! kill -0 "$spid" 2>/dev/null; then
            echo "bench/servers.sh: $1 did not start" >&2
            [ -f "$tmp/nginx.err" ] && cat "$tmp/nginx.err" >&2
            exit 3
        fi
        sleep 0.05
    done
    sleep 0.1
    fd0=$(ls "/proc/$spid/fd" | wc -l)
}

stop_server() {
    kill "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    spid=""
}

# Descriptors above the idle count, and CLOSE_WAIT sockets on the port,
# once the connections had 0.5 s to end.
leftovers() {
    sleep 0.5
    fds=$(ls "/proc/$spid/fd" | wc -l)
    cwait=$(ss -tanH state close-wait "( sport = :$sport )" | wc -l)
    echo "fdleft=$((fds - fd0)) closewait=$cwait"
}

# Busy and total jiffies of the server's core, then of the load's.
core_ticks() {
    for c in $scpu $lcpu; do
        awk -v c="cpu$c" '$1 == c { printf "%d %d ", $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat
    done
}

# CPU time the server process used so far, in ns: the scheduler's exact
# runtime (/proc/PID/task/*/schedstat, every thread: closewise has its
# loops and password-check threads, which live as long as it); for the seed's
# thread-per-connection server, utime + stime of all its threads, dead
# ones included (/proc/PID/stat, clock ticks).
proc_cpu_ns() {
    if [ "$1" = seed ]; then
        awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f\n", ($14 + $15) * 1e9 / hz }' "/proc/$spid/stat"
    else
        cat /proc/"$spid"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f\n", s }'
    fi
}

# The server's user and system clock ticks (/proc/PID/stat: every thread,
# dead ones included; sampled at the tick, so only the split is used) and
# how many times its threads were switched in (/proc/PID/task/*/schedstat,
# third field: one per wake-up, plus preemptions).
proc_split() {
    awk '{ printf "%d %d ", $14, $15 }' "/proc/$spid/stat"
    cat /proc/"$spid"/task/*/schedstat | awk '{ s += $3 } END { printf "%d\n", s }'
}

# Time the server's threads spent runnable but waiting for a core, in ns
# (/proc/PID/task/*/schedstat, second field): what other work on its core
# cost its wake-ups; it explains a close-latency tail.
run_wait_ns() {
    cat /proc/"$spid"/task/*/schedstat 2>/dev/null | awk '{ s += $2 } END { printf "%.0f\n", s }'
}

# TCP segments sent machine-wide (on loopback each is also received once).
out_segs() {
    awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ { print $12 }' /proc/net/snmp
}

# Whether the close split can run: perf, allowed to record a tracepoint
# on every CPU (root, or perf_event_paranoid permitting).
trace_ok() {
    [ "$split" = 1 ] && command -v perf >/dev/null &&
        perf record -q -a -e sock:inet_sock_set_state -o "$tmp/probe.data" true >/dev/null 2>&1
}

# Record the kernel's TCP state changes on the server's port, and the
# scheduler's switches and wake-ups of the server's threads and of the load
# generator, with times on CLOCK_MONOTONIC (the load generator's clock),
# until trace_stop; sets tpid. The filters run in the kernel: other
# sockets and tasks cost nothing. perf starts with its events off and we
# wait for its ack of "enable" (on a busy machine its start took seconds,
# and most of a run went unrecorded); no task synthesis (not needed for
# tracepoints, and slow). Not ready in 20 s: no trace for this run.
trace_start() {
    tpid=""
    [ "$tracing" = 1 ] || return 0
    # The server's threads by id (they exist from the start), except the
    # seed's, born per connection: by name (no other process has it).
    # closewise by name would also follow any other closewise on the machine.
    stids=$(ls "/proc/$spid/task")
    scomm=$(cat "/proc/$spid/comm")
    sw='prev_comm == "cw_bench_load" || next_comm == "cw_bench_load"'
    wk='comm == "cw_bench_load"'
    if [ "$scomm" = cw_peer_seed ]; then
        sw="$sw || prev_comm == \"$scomm\" || next_comm == \"$scomm\""
        wk="$wk || comm == \"$scomm\""
    else
        for t in $stids; do
            sw="$sw || prev_pid == $t || next_pid == $t"
            wk="$wk || pid == $t"
        done
    fi
    rm -f "$tmp/pctl" "$tmp/pack"
    mkfifo "$tmp/pctl" "$tmp/pack"
    perf record -a --synth=no -m 1024 -D -1 --control "fifo:$tmp/pctl,$tmp/pack" -k CLOCK_MONOTONIC \
        -e sock:inet_sock_set_state --filter "sport == $sport || dport == $sport" \
        -e sched:sched_switch --filter "$sw" -e sched:sched_wakeup --filter "$wk" \
        -o "$tmp/fin.data" >/dev/null 2>"$tmp/perf.err" &
    tpid=$!
    if ! timeout 20 sh -c "echo enable >\"$tmp/pctl\" && read a <\"$tmp/pack\"" 2>/dev/null; then
        echo "servers: perf did not start recording; no close split for this run" >&2
        trace_stop
        rm -f "$tmp/fin.data"
    fi
}

# Stop the recording (in this shell: perf is its child, to wait for).
trace_stop() {
    [ -n "$tpid" ] || return 0
    kill -INT "$tpid" 2>/dev/null || true
    wait "$tpid" 2>/dev/null || true
    tpid=""
}

# The close split's key=value fields from the recording (nothing without).
trace_split() {
    [ -s "$tmp/fin.data" ] || return 0
    # perf says how much it lost (a busy machine): kept with the numbers.
    lost=$(sed -n 's/.*lost \([0-9]*\) chunks.*/\1/p' "$tmp/perf.err" | head -1)
    printf 'trace_lost_chunks=%s ' "${lost:-0}"
    perf script -i "$tmp/fin.data" --ns -F tid,time,event,trace 2>/dev/null |
        "$bin/cw_bench_closesplit" "$sport" "$tmp/closelog" $stids || echo "traced=0"
    rm -f "$tmp/fin.data" "$tmp/closelog"
}

measure() {
    tracing=0
    case " $parts " in *" idle "*) trace_ok && tracing=1 ;; esac
    [ "$split" = 1 ] && [ $tracing = 0 ] && echo "servers: no perf trace (perf missing or not allowed): close latency not split" >&2
    # ---- 1. churn ----

    : >"$tmp/churn"
    case " $parts " in *" churn "*) r=1 ;; *) r=$((runs + 1)) ;; esac
    [ $r = 1 ] && echo "servers: churn, $runs runs x ($list) x conc ($concs), ${secs}s each" >&2
    while [ $r -le "$runs" ]; do
        for conc in $concs; do
            # Rotate the order each run: no server always goes first.
            set -- $list
            k=$(( (r - 1) % $# ))
            while [ $k -gt 0 ]; do s=$1; shift; set -- "$@" "$s"; k=$((k - 1)); done
            for s in "$@"; do
                start_server "$s"
                ticks0=$(core_ticks)
                segs0=$(out_segs)
                pcpu0=$(proc_cpu_ns "$s")
                split0=$(proc_split)
                out=$(taskset -c $lcpu "$load" churn "$sport" "$conc" "$secs" 50000000 wrong-password)
                segs=$(($(out_segs) - segs0))
                pns=$(($(proc_cpu_ns "$s") - pcpu0))
                split=$(echo "$split0 $(proc_split)" | awk '{
                    printf "uticks=%d sticks=%d slices=%d", $4 - $1, $5 - $2, $6 - $3 }')
                busy=$(echo "$ticks0 $(core_ticks)" | awk -v segs=$segs -v pns=$pns -v sp="$split" '{
                    printf "%s segs=%.0f pns=%.0f ", sp, segs, pns;   # %d stops at 2^31 in mawk
                    printf "busy=%.1f lbusy=%.1f", ($5 - $1) ? 100 * ($5 - $1) / ($6 - $2) : 0, ($7 - $3) ? 100 * ($7 - $3) / ($8 - $4) : 0 }')
                line="server=$s conc=$conc run=$r $out $(leftovers) $busy"
                echo "$line" >>"$tmp/churn"
                echo "  $line" >&2
                stop_server
            done
            set -- $list
        done
        r=$((r + 1))
    done

    # ---- 2. idle sessions: memory and close latency ----

    : >"$tmp/idle"
    case " $parts " in *" idle "*) r=1 ;; *) r=$((idle_runs + 1)) ;; esac
    [ $r = 1 ] && echo "servers: idle, $idle_runs runs x ($idle_list), $idle_n sessions" >&2
    while [ $r -le "$idle_runs" ]; do
        for s in $idle_list; do
            start_server "$s"
            trace_start
            w0=$(run_wait_ns)
            out=$(taskset -c $lcpu "$load" idle "$sport" "$idle_n" "$rate" "$password" "$spid" "$tmp/closelog")
            wait_us=$(( ($(run_wait_ns) - w0) / 1000 ))
            trace_stop
            line="server=$s run=$r $out wait_us=$wait_us $(trace_split) $(leftovers)"
            echo "$line" >>"$tmp/idle"
            echo "  $line" >&2
            stop_server
        done
        r=$((r + 1))
    done

    # ---- 4. exact counts ----
    : >"$tmp/counts"
    case " $parts " in *" counts "*) ;; *) return 0 ;; esac
    if command -v valgrind >/dev/null && command -v perf >/dev/null; then
        echo "servers: exact counts per churn connection (callgrind, perf)" >&2
        sh bench/churn-counts.sh "$build" >"$tmp/counts" || echo "servers: counts failed" >&2
        sed 's/^/  /' "$tmp/counts" >&2
    fi
}

# Raw results are kept in $keep; CW_BENCH_FROM=DIR rewrites the section
# from a kept run instead of measuring again (e.g. after editing the notes).
keep=${CW_BENCH_KEEP:-$build/bench/servers-raw}
case " $parts " in *" churn "*) ;; *) keep=${CW_BENCH_KEEP:-$build/bench/servers-raw-$(echo $parts | tr ' ' -)} ;; esac
mkdir -p "$keep"
if [ -n "${CW_BENCH_FROM:-}" ]; then
    cp "$CW_BENCH_FROM/churn" "$CW_BENCH_FROM/idle" "$CW_BENCH_FROM/meta" "$tmp/"
    cp "$CW_BENCH_FROM/counts" "$tmp/" 2>/dev/null || : >"$tmp/counts"
else
    started=$(date -u '+%Y-%m-%d %H:%M UTC')
    measure
    cat >"$tmp/meta" <<EOF
run_date='$started' load_before='$load_before' runs='$runs' secs='$secs'
concs='$concs' idle_n='$idle_n' idle_runs='$idle_runs' list='$list' idle_list='$idle_list'
parts='$parts'
EOF
    cp "$tmp/churn" "$tmp/idle" "$tmp/meta" "$tmp/counts" "$keep/"
fi
. "$tmp/meta"

# ---- Markdown ----

div() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0 || a == "-" || b == "-") print "-"; else printf "%.2f", a / b }'; }

# Non-blank, non-comment lines of C sources.
sloc() {
    n=0
    for f in "$@"; do
        c=$(gcc -fpreprocessed -dD -E -P "$f" 2>/dev/null | grep -c '[^[:space:]]' || true)
        n=$((n + c))
    done
    echo $n
}

what() {
    case $1 in
    closewise) echo "\`closewise server\` (src/server/server.c on cw_stream/cw_acceptor): parse, crypt(3), reply, SHUT_WR, linger to the client's FIN (30 s cap), close; login/idle/linger timeouts on the loop's FIFO queues" ;;
    closewise-w1) echo "\`closewise server --workers 1\`: the same, one loop (pinned to core $scpu)" ;;
    closewise-w2) echo "\`closewise server --workers 2\`: two loops with SO_REUSEPORT listeners, on cores $scpu and $lcpu (shared with the load generator)" ;;
    libuv) echo "bench/peers/uv_peer.c: uv_read/uv_write, uv_shutdown, read to EOF, uv_close, lingering uv_timer" ;;
    libevent) echo "bench/peers/event_peer.c: bufferevent; after the flush SHUT_WR, drain to EOF under a read timeout, bufferevent_free" ;;
    epoll) echo "bench/peers/epoll_peer.c: level-triggered epoll, accept/recv/send/shutdown/drain/close, no timers" ;;
    seed) echo "bench/peers/seed_peer.c: a blocking thread per connection, SO_RCVTIMEO 30 s, shutdown(SHUT_RDWR) + close" ;;
    linger0) echo "\`closewise server --linger0\`: reply, then SO_LINGER {1,0} + close: RST" ;;
    nginx) echo "nginx $(/usr/sbin/nginx -v 2>&1 | sed 's,.*/,,') stream \`return\`: sends the line and closes; never reads the request, checks nothing" ;;
    esac
}
lines() {
    case $1 in
    closewise) echo "$(sloc src/server/server.c src/server/protocol.c) (server.c + protocol.c; the connection's life is in src/net/stream.c, acceptor.c: $(sloc src/net/stream.c src/net/acceptor.c))" ;;
    libuv) echo "$(sloc bench/peers/uv_peer.c) + peer.h" ;;
    libevent) echo "$(sloc bench/peers/event_peer.c) + peer.h" ;;
    epoll) echo "$(sloc bench/peers/epoll_peer.c) + peer.h" ;;
    seed) echo "$(sloc bench/peers/seed_peer.c) + peer.h" ;;
    linger0|closewise-w*) echo "(closewise)" ;;
    nginx) echo "$(nginx_conf 0 | grep -c .) (config)" ;;
    esac
}

# best_of CONC KEY max|min: the better median of libuv and libevent.
best_of() {
    u=$(kv_med "$tmp/churnx" "server=libuv conc=$1" "$2")
    e=$(kv_med "$tmp/churnx" "server=libevent conc=$1" "$2")
    awk -v a="$u" -v b="$e" -v w="$3" 'BEGIN {
        if (a == "-") a = b; if (b == "-") b = a; if (a == "-") { print "-"; exit }
        if ((w == "max") == (a + 0 > b + 0)) print a; else print b }'
}

# The idle section's tables (also the whole output of CW_BENCH_PARTS=idle).
idle_tables() {
    echo "### 2-4. $idle_n idle logged-in sessions: memory, close latency, leftovers ($idle_runs runs)"
    echo
    echo "The load generator logs in $idle_n sessions (\`AUTH bench <right password>\` -> \`OK\`) and"
    echo "keeps them idle; the server's RSS (VmRSS) is read before the first connection and 0.5 s"
    echo "after the last login. Then the clients half-close (shutdown SHUT_WR) in random order,"
    echo "one every $((1000000 / rate)) us ($rate per second), each at its own due time (a timerfd),"
    echo "never two back to back;"
    echo "close latency is the time from just before a client's shutdown() to the EOF of the"
    echo "server's FIN reaching the client's loop (the server noticed and closed); the generator"
    echo "makes its own shutdown() and close() calls only after every EOF of a loop iteration had"
    echo "its time read. Kernel socket memory is not in RSS and is the same for every server."
    echo
    echo "| server | RSS growth per session, bytes | close p50 us | close p99 us | close max us | sessions closed by FIN | rst/lost/err | fds left | CLOSE_WAIT left |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in $idle_list; do
        f="server=$s"
        echo "| $s | $(kv_fmt $(kv_stat "$tmp/idle" "$f" bytes_per_session)) | $(kv_fmt $(kv_stat "$tmp/idle" "$f" close_p50_us)) |" \
            "$(kv_fmt $(kv_stat "$tmp/idle" "$f" close_p99_us)) | $(kv_fmt $(kv_stat "$tmp/idle" "$f" close_max_us)) |" \
            "$(kv_total "$tmp/idle" "$f" ok) / $((idle_n * idle_runs)) |" \
            "$(kv_total "$tmp/idle" "$f" rst)/$(kv_total "$tmp/idle" "$f" lost)/$(kv_total "$tmp/idle" "$f" err) |" \
            "$(kv_max "$tmp/idle" "$f" fdleft) | $(kv_max "$tmp/idle" "$f" closewait) |"
    done
    echo
    echo "Every run, in run order (the spread behind the medians above). *server p99*: the"
    echo "server's part alone, from the client's FIN reaching the server's socket to the server's"
    echo "FIN leaving it (kernel TCP state changes ESTABLISHED -> CLOSE_WAIT -> LAST_ACK, recorded"
    echo "with \`perf record -e sock:inet_sock_set_state\` during the run and matched to each"
    echo "client's port: bench/closesplit.c); *generator p99*: the load generator's own"
    echo "part (its shutdown() entering the kernel, and the server's FIN reaching its loop: its"
    echo "wake-up); the loopback's part is the rest. *slowest 1 %*: the mean of each part,"
    echo "server / loopback / generator, over the slowest 1 % of closes: where the tail comes"
    echo "from; *server's part there*: how much of it the server was runnable but not running"
    echo "(woken or preempted until switched in: sched_wakeup and sched_switch in the same"
    echo "trace), with the task that had core $scpu when the longest of those waits ended"
    echo "(swapper: the core was idle and waking up; self: one of the server's own threads),"
    echo "and how much it was on its core (its work:"
    echo "this close, or other closes ahead of it); *generator waiting*: the same wait for the"
    echo "generator inside its part. *run-queue wait*: the time the server's threads spent runnable but waiting for"
    echo "core $scpu during the whole run, logins included (/proc/PID/task/*/schedstat). *pacing*: how late the"
    echo "generator's shutdowns left against their due times (p99, us), and how many times it woke"
    echo "later than one interval and moved the rest of its schedule (it never sends the missed"
    echo "closes back to back). *traced*: closes found in the trace, of those made, and the"
    echo "chunks of events perf lost (0 unless the machine was too busy for it)."
    echo
    echo "| server | run | close p50 us | close p99 us | server p99 us | generator p99 us | slowest 1 %: server / loopback / generator us | server's part there: waiting for core (behind) / on core us | generator waiting us | run-queue wait us | pacing: late p99 us, moved | traced |"
    echo "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---|---:|"
    for s in $idle_list; do
        awk -v f="server=$s" 'index(" " $0 " ", " " f " ") {
            delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
            d = "-"
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s, %s | %s |\n", v["server"], v["run"],
                v["close_p50_us"], v["close_p99_us"],
                ("close_srv_p99_us" in v) ? v["close_srv_p99_us"] : d,
                ("close_gen_p99_us" in v) ? v["close_gen_p99_us"] : d,
                ("tail_srv_us" in v) ? v["tail_srv_us"] " / " v["tail_net_us"] " / " v["tail_gen_us"] : d,
                ("tail_srv_wait_us" in v) ? v["tail_srv_wait_us"] " (" v["tail_srv_behind"] ") / " v["tail_srv_run_us"] : d,
                ("tail_gen_wait_us" in v) ? v["tail_gen_wait_us"] : d,
                v["wait_us"], ("pace_late_p99_us" in v) ? v["pace_late_p99_us"] : d,
                ("pace_moved" in v) ? v["pace_moved"] : d,
                ("traced" in v) ? v["traced"] ", lost " (("trace_lost_chunks" in v) ? v["trace_lost_chunks"] : d) : d }' "$tmp/idle"
    done
    echo
    echo "Targets: closewise close p99 < 1000 us (the seed's client noticed only at its 30 s"
    echo "receive timeout): $(kv_fmt $(kv_stat "$tmp/idle" "server=closewise" close_p99_us)) us (median (min-max) of the runs),"
    echo "the server's part $(kv_fmt $(kv_stat "$tmp/idle" "server=closewise" close_srv_p99_us)) us;"
    echo "RSS per session <= 200 bytes (issue 11; < 1024 before it): $(kv_med "$tmp/idle" "server=closewise" bytes_per_session) bytes;"
    echo "descriptors and CLOSE_WAIT left by graceful servers after every run: see the *left* columns"
    echo "(fds left = open descriptors 0.5 s after the run minus those before it)."
}

section() {
    # Per run: us/conn of the server core, and the capacity it implies.
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
           us = v["conns"] ? v["busy"] * v["secs"] * 10000 / v["conns"] : 0
           pus = v["conns"] ? v["pns"] / 1000 / v["conns"] : 0
           t = v["uticks"] + v["sticks"]
           printf "%s us=%.2f cap=%.0f spc=%.2f pus=%.2f pcap=%.0f kus=%.2f wpc=%.2f\n", $0, us, us ? 1e6 / us : 0,
               v["conns"] ? v["segs"] / v["conns"] : 0, pus, pus ? 1e6 / pus : 0,
               t ? pus * v["sticks"] / t : 0, v["conns"] ? v["slices"] / v["conns"] : 0 }' "$tmp/churn" >"$tmp/churnx"
    echo "<!-- servers:begin (written by bench/servers.sh; edits here are overwritten) -->"
    echo "## Servers: closewise vs libuv, libevent, bare epoll, the seed's design, nginx"
    echo
    echo "Command: \`make bench\` (runs \`sh bench/run.sh build-bench\`, which runs"
    echo "\`bench/servers.sh build-bench\`). Run on $run_date,"
    echo "on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r), Release build;"
    echo "load average before the run: $load_before. Every server ran pinned to **core $scpu**, the load"
    echo "generator (\`bench/load.c\`, on cw_loop) to **core $lcpu** (\`taskset\`); one server"
    echo "thread (the seed's design: one thread per connection, all on core $scpu). Loopback."
    echo "Servers are restarted for every run, and the runs are interleaved (round-robin,"
    echo "rotating the order) so that machine noise hits every server alike. Numbers are"
    echo "median (min-max) over the runs."
    echo
    echo "Per connection, every server that checks does the same work: read \`AUTH bench <password>\`,"
    echo "one crypt(3) of the password against the bench user's hash, reply, close. The hash is a"
    echo "deliberately cheap one (BSDi extended DES, 1 iteration, ~0.5 us; see \`cw_bench_load hash\`):"
    echo "with sha512-crypt's minimum 1000 rounds a check costs ~270 us here and every server"
    echo "would measure crypt(3), not connections. closewise runs with \`--max-auth-failures 0\`"
    echo "(all load comes from 127.0.0.1) and \`-q\` (no per-connection log)."
    echo
    echo "| server | what it does | lines |"
    echo "|---|---|---:|"
    for s in $list; do echo "| $s | $(what "$s") | $(lines "$s") |"; done
    echo
    echo "Lines: non-blank, non-comment (\`gcc -fpreprocessed -E\`). peer.h ($(sloc bench/peers/peer.h) lines:"
    echo "listen, port file, the crypt(3) check, a partial-line buffer) is shared by the peers and"
    echo "not counted in theirs. closewise's count is the whole server (src/server/server.c, src/server/protocol.c:"
    echo "accept with descriptor pressure, pipelining, backpressure, idle/write/linger timeouts,"
    echo "throttling, logging, the full protocol); auth.c and loop.c are not counted."
    echo
    echo "### 1. Churn: wrong password, read to EOF, close (${secs} s per run, $runs runs)"
    echo
    echo "Each connection: connect, send \`AUTH bench wrong-password\`, read to EOF, check that exactly"
    printf '%s' '`ERR bad credentials\n` arrived, close.'
    echo " Latency: connect() to EOF. *ok*: the line then EOF;"
    echo "*rst*: the line, then a reset; *lost*: the line did not arrive whole; *err*: other errors"
    echo "(totals over all runs). *left*: the server's descriptors above its count before the run,"
    echo "and CLOSE_WAIT sockets on its port, 0.5 s after the run (maximum over the runs)."
    echo
    echo "| server | conc | conn/s | p50 us | p99 us | p99.9 us | ok | rst | lost | err | fds left | CLOSE_WAIT left |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for conc in $concs; do
        for s in $list; do
            f="server=$s conc=$conc"
            echo "| $s | $conc | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" rate)) | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" p50_us)) |" \
                "$(kv_fmt $(kv_stat "$tmp/churnx" "$f" p99_us)) | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" p999_us)) |" \
                "$(kv_total "$tmp/churnx" "$f" ok) | $(kv_total "$tmp/churnx" "$f" rst) | $(kv_total "$tmp/churnx" "$f" lost) |" \
                "$(kv_total "$tmp/churnx" "$f" err) | $(kv_max "$tmp/churnx" "$f" fdleft) | $(kv_max "$tmp/churnx" "$f" closewait) |"
        done
    done
    echo
    echo "What each connection cost. *server CPU*: CPU time of the server process per connection"
    echo "(scheduler runtime; the seed's threads: utime + stime), and *capacity* = 1,000,000 / that:"
    echo "the connections/s one core could carry for this server. *busy*: share of each core that"
    echo "was busy (every process on it, softirq included). On loopback the kernel processes each"
    echo "packet on the sending core, so each core also carries part of the other side's kernel"
    echo "work; when the load generator's core is at ~100%, conn/s is the load generator's limit"
    echo "and capacity is what tells the servers apart. *segments*: TCP segments sent per"
    echo "connection, both directions (machine-wide counter). *kernel*: the part of the server's"
    echo "CPU spent in the kernel (its CPU per connection times its system share of the clock ticks,"
    echo "/proc/PID/stat); *runs/conn*: how often its threads were switched in per connection (a"
    echo "wake-up from sleep, or a preemption; /proc/PID/task/*/schedstat)."
    echo
    echo "| server | conc | server CPU us/conn | capacity conn/s | core $scpu (server) busy % | core $scpu us/conn | core $lcpu (load) busy % | segments/conn | kernel us/conn | runs/conn |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for conc in $concs; do
        for s in $list; do
            f="server=$s conc=$conc"
            echo "| $s | $conc | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" pus) 1) | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" pcap)) |" \
                "$(kv_med "$tmp/churnx" "$f" busy) | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" us) 1) | $(kv_med "$tmp/churnx" "$f" lbusy) |" \
                "$(kv_med "$tmp/churnx" "$f" spc) | $(kv_fmt $(kv_stat "$tmp/churnx" "$f" kus) 1) | $(kv_med "$tmp/churnx" "$f" wpc) |"
        done
    done
    echo
    echo "Targets, as ratios of medians in this run, for conn/s as measured and for capacity:"
    echo
    echo "| conc | conn/s: closewise / best of libuv, libevent (>= 1.10) | capacity: same (>= 1.10; issue 11: ahead, > 1.00) | conn/s: closewise / epoll (>= 0.90) | capacity: closewise / epoll (>= 0.90; issue 11: CPU per connection <= 1.0x epoll's, so >= 1.00) | p99: closewise / best of libuv, libevent (<= 1.00) | closewise lost (0) |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    for conc in $concs; do
        row="| $conc |"
        for k in rate pcap; do
            row="$row $(div "$(kv_med "$tmp/churnx" "server=closewise conc=$conc" $k)" "$(best_of "$conc" $k max)") |"
        done
        for k in rate pcap; do
            row="$row $(div "$(kv_med "$tmp/churnx" "server=closewise conc=$conc" $k)" "$(kv_med "$tmp/churnx" "server=epoll conc=$conc" $k)") |"
        done
        row="$row $(div "$(kv_med "$tmp/churnx" "server=closewise conc=$conc" p99_us)" "$(best_of "$conc" p99_us min)") |"
        echo "$row $(kv_total "$tmp/churnx" "server=closewise conc=$conc" lost) |"
    done
    echo
    if [ -s "$tmp/counts" ]; then
        echo "Exact counts per churn connection, without timing noise (\`sh bench/churn-counts.sh $build\`):"
        echo "user-space instructions (valgrind callgrind, 2,000 connections at concurrency 8; closewise"
        echo "with \`--auth-threads 0\`: under valgrind the cheap hash is timed slow and would go to the check threads),"
        echo "system calls (\`perf stat -e"
        echo "raw_syscalls:sys_enter\` on the server, concurrency 64) and clock reads (clock_gettime calls,"
        echo "vDSO; callgrind in the blocking mode, and natively in the default mode with a uprobe on libc)."
        echo "Both servers run the same crypt(3), about 35,000 of the instructions. In the server's context,"
        echo "per connection (tracepoints, default mode): *sleeps* (sched_switch), *hrtimers* (one per"
        echo "epoll_wait that sleeps with a timeout), *slab* allocations; with the uprobes: *locks*"
        echo "(pthread_mutex_lock) and *cancellation wrappers* (glibc's, around each blocking-capable system"
        echo "call of a process that has threads)."
        echo
        echo "| server | instructions/conn | system calls/conn | clock reads/conn (default; blocking) | sleeps/conn | hrtimers/conn | slab/conn | locks/conn | cancellation wrappers/conn |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
        awk '{ delete v; for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
               sub(/:.*/, "", v["server"])
               n = "clock_native" in v ? v["clock_native"] "; " : ""
               printf "| %s | %s | %s | %s%s | %s | %s | %s | %s | %s |\n", v["server"], v["instr_per_conn"],
                   v["sys_per_conn"], n, v["clock_per_conn"], v["ctxsw"], v["hrtimer"], v["slab"],
                   "locks" in v ? v["locks"] : "-", "cancel" in v ? v["cancel"] : "-" }' "$tmp/counts"
        echo
    fi
    idle_tables
    [ -f bench/servers-notes.md ] && { echo; cat bench/servers-notes.md; }
    echo "<!-- servers:end -->"
}

case " $parts " in
*" churn "*) ;;
*)  # A partial run does not replace the section of a full one.
    idle_tables >"$build/bench/servers-idle.md"
    cat "$build/bench/servers-idle.md"
    echo "servers: results in $build/bench/servers-idle.md (raw: $keep/idle); $md unchanged" >&2
    exit 0
    ;;
esac
section >"$tmp/section.md"
mkdir -p "$(dirname "$md")"
[ -f "$md" ] || printf '# Benchmarks\n\nEvery number here comes from `make bench`; each section says what it ran.\n\n' >"$md"
if grep -q '<!-- servers:begin' "$md"; then
    awk -v sec="$tmp/section.md" '
        /<!-- servers:begin/ { while ((getline l < sec) > 0) print l; skip = 1; next }
        /<!-- servers:end -->/ { skip = 0; next }
        !skip { print }' "$md" >"$tmp/new.md"
else
    { cat "$md"; echo; cat "$tmp/section.md"; } >"$tmp/new.md"
fi
cat "$tmp/new.md" >"$md"
echo "servers: results in $md" >&2
