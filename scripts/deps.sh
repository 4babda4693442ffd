#!/bin/sh
# deps.sh [build|test|bench] - make sure the Debian packages closewise needs
# are installed. As root it installs what is missing with apt-get; otherwise
# it prints the exact command to run and fails.
set -eu

build_pkgs="pkg-config libmnl-dev libcrypt-dev libbpf-dev bpftool clang libdw-dev"
test_pkgs="libcmocka-dev iproute2 procps clang libclang-rt-14-dev valgrind gdb prometheus curl librsvg2-bin libxml2-utils g++ python3"
bench_pkgs="libuv1-dev libevent-dev nginx libnginx-mod-stream util-linux net-tools lsof hyperfine valgrind linux-perf"

case "${1:-build}" in
build) want="$build_pkgs" ;;
test) want="$build_pkgs $test_pkgs" ;;
bench) want="$build_pkgs $test_pkgs $bench_pkgs" ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
    echo "closewise: missing packages:$missing" >&2
    echo "closewise: run as root: apt-get update && $cmd" >&2
    exit 1
fi
echo "closewise: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# shellcheck disable=SC2086
$cmd -qq >&2
