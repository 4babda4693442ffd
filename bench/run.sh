#!/bin/sh
# bench/run.sh BUILD_DIR - run every benchmark, one after another; each
# writes its own section of docs/BENCHMARKS.md. Add new benchmarks below
# as their own bench/<name>.sh.
set -eu
build=${1:-build-bench}
cd "$(dirname "$0")/.."

# One failing benchmark does not stop the others; the run still fails.
status=0
sh bench/inspect.sh "$build" || status=1
sh bench/servers.sh "$build" || status=1
sh bench/server-move.sh "$build" || status=1
sh bench/resets.sh "$build" || status=1
sh bench/exporter.sh "$build" || status=1
sh bench/trace.sh "$build" || status=1
sh bench/authload.sh "$build" || status=1
sh bench/authsched.sh "$build" || status=1
exit $status
