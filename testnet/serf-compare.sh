#!/usr/bin/env bash
# Measures HashiCorp Serf agents and weft agents the same way on this machine: N separate agent
# processes on 127.x loopback addresses (Serf: lan profile on 127.78.0.0/16; weft: `weft run
# --dry-run` on 127.77.0.0/16 with a generated cluster key), every agent polled, and prints one
# markdown table: all see all after the last start, join, record/tag propagation, kill -9 seen
# by all, leave seen by all, and per-agent idle RSS, CPU and gossip bytes.
#
#   testnet/serf-compare.sh                 # N = 10 50 100, weft at 1s and at 200ms gossip
#   NODES="10 50 100 200" IDLE=300s testnet/serf-compare.sh
#
# Needs `serf` (Debian: apt-get install serf) and release builds of weft and weft-sim
# (cargo build --release -p weft -p weft-sim); WEFT_BIN / WEFT_SIM_BIN override where they are. Installs
# nothing. Every process it starts is killed on exit (the agents also die with weft-sim).
set -euo pipefail

NODES=${NODES:-"10 50 100"}
IDLE=${IDLE:-60s}
INTERVALS=${INTERVALS:-"1s 200ms"}
TIMEOUT=${TIMEOUT:-300s}
here=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
WEFT_BIN=${WEFT_BIN:-$target/release/weft}
WEFT_SIM_BIN=${WEFT_SIM_BIN:-$target/release/weft-sim}

if ! command -v serf >/dev/null 2>&1; then
    echo "serf-compare: serf not found; install it (Debian/Ubuntu: apt-get install serf)" >&2
    exit 2
fi
for b in "$WEFT_BIN" "$WEFT_SIM_BIN"; do
    if [ ! -x "$b" ]; then
        echo "serf-compare: $b missing; run cargo build --release -p weft -p weft-sim (or set WEFT_BIN/WEFT_SIM_BIN)" >&2
        exit 2
    fi
done

pids=()
cleanup() {
    for p in "${pids[@]}"; do
        kill -9 "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs weft-sim in the background (so the trap can kill it) and prints its table row.
sim() {
    local out
    out=$(mktemp)
    WEFT_BIN="$WEFT_BIN" "$WEFT_SIM_BIN" --scenario all --idle "$IDLE" --timeout "$TIMEOUT" "$@" >"$out" &
    pids+=("$!")
    wait "$!" || echo "| weft-sim $* failed (exit $?) |"
    cat "$out"
    rm -f "$out"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(serf version | head -1)"
echo
"$WEFT_SIM_BIN" --help >/dev/null
first=1
for n in $NODES; do
    if [ "$first" = 1 ]; then
        sim --link serf --nodes "$n" --header
        first=0
    else
        sim --link serf --nodes "$n"
    fi
    for g in $INTERVALS; do
        sim --link process --nodes "$n" --gossip-interval "$g"
    done
done
