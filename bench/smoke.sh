#!/bin/sh
# bench/smoke.sh BUILD_DIR - a functional smoke test of the server
# benchmark's tools (ctest: bench_smoke): a few hundred connections of
# cw_bench_load against `closewise server` and the bare epoll peer, every
# one must end with the whole line then EOF. No timing is checked.
set -eu
build=${1:-build}
load=$build/bench/cw_bench_load
tmp=$(mktemp -d)
pid=""
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
hash=$("$load" hash pw)
printf 'bench:%s\n' "$hash" >"$tmp/cred"

start() {
    rm -f "$tmp/port"
    "$@" &
    pid=$!
    i=0
    until [ -s "$tmp/port" ]; do
        i=$((i + 1))
        [ $i -lt 200 ] && kill -0 "$pid" 2>/dev/null || { echo "smoke: $1 did not start" >&2; exit 1; }
        sleep 0.05
    done
    port=$(cat "$tmp/port")
}

expect() {
    echo "$2"
    case " $2 " in
    *" $1 "*) ;;
    *) echo "smoke: expected $1" >&2; exit 1 ;;
    esac
}

for server in closewise epoll; do
    if [ $server = closewise ]; then
        start "$build/closewise" server -q -p 0 --port-file "$tmp/port" -c "$tmp/cred" --max-auth-failures 0
    else
        start "$build/bench/cw_peer_epoll" "$tmp/port" "$hash"
    fi
    expect "ok=300 rst=0 lost=0 err=0 unfinished=0" "$("$load" churn "$port" 8 30 300 wrong)"
    expect "ok=50 rst=0 lost=0 err=0 unfinished=0" "$("$load" idle "$port" 50 1000 pw "$pid" "$tmp/closelog")"
    [ "$(wc -l <"$tmp/closelog")" -eq 50 ] || { echo "smoke: the close log should have 50 lines" >&2; exit 1; }
    kill "$pid"
    wait "$pid" || true
    pid=""
done
# The close split on a made-up trace whose parts are known: the server's
# part 100 us (50 of it waiting behind "hog", then 45 on its core), loopback
# 10 + 10, the rest 80.
cat >"$tmp/trace" <<'EOF'
7 1.000010000: sock:inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=40000 dport=5000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_FIN_WAIT1
7 1.000020000: sock:inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=5000 dport=40000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_ESTABLISHED newstate=TCP_CLOSE_WAIT
7 1.000025000: sched:sched_wakeup: comm=srv pid=9 prio=120 target_cpu=000
3 1.000075000: sched:sched_switch: prev_comm=hog prev_pid=3 prev_prio=120 prev_state=R ==> next_comm=srv next_pid=9 next_prio=120
9 1.000120000: sock:inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=5000 dport=40000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_CLOSE_WAIT newstate=TCP_LAST_ACK
9 1.000130000: sock:inet_sock_set_state: family=AF_INET protocol=IPPROTO_TCP sport=40000 dport=5000 saddr=127.0.0.1 daddr=127.0.0.1 saddrv6=::ffff:127.0.0.1 daddrv6=::ffff:127.0.0.1 oldstate=TCP_FIN_WAIT2 newstate=TCP_CLOSE
9 1.000150000: sched:sched_switch: prev_comm=srv prev_pid=9 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120
EOF
echo "40000 1000000000 1000200000" >"$tmp/log"
split=$("$build/bench/cw_bench_closesplit" 5000 "$tmp/log" <"$tmp/trace")
expect "traced=1/1" "$split"
expect "close_srv_p50_us=100" "$split"
expect "tail_srv_us=100 tail_net_us=20 tail_gen_us=80 tail_srv_wait_us=50 tail_gen_wait_us=0 tail_srv_behind=hog tail_srv_run_us=45" "$split"
echo "smoke: ok"
