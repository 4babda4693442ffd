#!/bin/sh
# bench/run.sh BUILD_DIR - run every benchmark, one after another; each
# writes its own section of docs/BENCHMARKS.md. Add new benchmarks below
# as their own bench/<name>.sh.
set -eu
build=${1:-build-bench}
cd "$(dirname "$0")/.."

sh bench/inspect.sh "$build"
sh bench/servers.sh "$build"
