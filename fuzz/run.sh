#!/usr/bin/env bash
# fuzz/run.sh SECONDS: runs every fuzz target for SECONDS each (cargo +nightly fuzz, libFuzzer)
# and prints one line per target: executions, crashes, and the command to reproduce.
# Needs: rustup nightly and cargo-fuzz (cargo install cargo-fuzz).
set -euo pipefail
SECS=${1:-60}
[[ $SECS =~ ^[0-9]+$ ]] || { echo "usage: $0 SECONDS" >&2; exit 2; }
cd "$(dirname "${BASH_SOURCE[0]}")"
TARGETS=(record_decode envelope_open keyring_parse state_decode frame_decode probe_decode paths_decode)
mkdir -p logs
cargo +nightly fuzz build -O >/dev/null
status=0
printf '%-16s %12s %8s  %s\n' TARGET EXECUTIONS CRASHES LOG
for t in "${TARGETS[@]}"; do
    log="logs/$t.log"
    mkdir -p "corpus/$t"
    set +e
    cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -max_len=4096 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    crashes=0
    if ((rc != 0)); then
        crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
        ((crashes > 0)) || crashes="?(rc $rc)"
        status=1
    fi
    printf '%-16s %12s %8s  %s\n' "$t" "${execs:-?}" "$crashes" "fuzz/$log"
done
exit "$status"
