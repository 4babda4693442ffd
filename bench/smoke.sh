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
    expect "ok=50 rst=0 lost=0 err=0 unfinished=0" "$("$load" idle "$port" 50 1000 pw "$pid")"
    kill "$pid"
    wait "$pid" || true
    pid=""
done
echo "smoke: ok"
