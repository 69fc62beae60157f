#!/usr/bin/env bash
# Runs the in-process simulator matrix and prints one markdown table (the BENCHMARKS.md figures).
#
#   testnet/sim-bench.sh
#   NODES="10 100" LOSSES="0 0.1 0.3" LINK=channel IDLE=60s PARTITION=60s testnet/sim-bench.sh
#
# Needs a release build of weft-sim (cargo build --release -p weft-sim); WEFT_SIM_BIN overrides it.
set -euo pipefail

NODES=${NODES:-"10 100 300 1000"}
LOSSES=${LOSSES:-"0 0.1"}
LINK=${LINK:-channel}
IDLE=${IDLE:-60s}
PARTITION=${PARTITION:-60s}
TIMEOUT=${TIMEOUT:-600s}
GOSSIP=${GOSSIP:-1s}
EXTRA=${EXTRA:-}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
WEFT_SIM_BIN=${WEFT_SIM_BIN:-$target/release/weft-sim}
[ -x "$WEFT_SIM_BIN" ] || { echo "sim-bench: $WEFT_SIM_BIN missing; cargo build --release -p weft-sim" >&2; exit 2; }

pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
header=--header
for n in $NODES; do
    for loss in $LOSSES; do
        # shellcheck disable=SC2086
        "$WEFT_SIM_BIN" --nodes "$n" --loss "$loss" --link "$LINK" --gossip-interval "$GOSSIP" \
            --scenario all --idle "$IDLE" --partition "$PARTITION" --timeout "$TIMEOUT" $header $EXTRA &
        pid=$!
        wait "$pid" || echo "| $n | $LINK | $loss | weft-sim failed (exit $?) |"
        pid=
        header=
    done
done
