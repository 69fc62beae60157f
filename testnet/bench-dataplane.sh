#!/usr/bin/env bash
# testnet/bench-dataplane.sh: data-plane throughput, CPU and latency, container → container, in
# network namespaces (testnet/netns.sh's topology with 2 hosts: a bridge underlay, a container
# namespace behind each host's bridge). Root, iperf3, ping and python3 are needed.
#
# Modes (each on a fresh testnet):
#   underlay     iperf3 host → host over the underlay itself (the reference)
#   hand-hostgw  hand-made bridges and routes `<subnet> via <peer underlay IP>` (no weft)
#   hand-vxlan   a hand-made kernel VXLAN device, neighbour/FDB/route like weft's (no weft)
#   host-gw      weft --backend host-gw
#   vxlan        weft --backend vxlan
#   udp          weft --backend udp --udp-encryption off (when this weft binary accepts it)
#   udp-aead     weft --backend udp --udp-encryption on  (likewise)
#   <mode>6      the same over IPv6 (container to container over the IPv6 overlay; underlay6 over
#                the hosts' IPv6 underlay): underlay6, hand-hostgw6, hand-vxlan6, host-gw6, vxlan6,
#                udp6, udp-aead6 (weft's run dual-stack, --ipv6-network fd00:10:244::/56; the
#                hand-made ones add the same IPv6 entries weft does; ratios are to the same family)
# Per mode: iperf3 TCP for $BENCH_SECONDS s (default 8), single stream and -P 4, $BENCH_RUNS runs
# each (default 3), median; iperf3's own CPU figures (sender + receiver), the weft agents' CPU from
# /proc/<pid>/stat, and the median ping RTT. Every figure is also given as a ratio to the underlay
# and to weft's vxlan of the same run. Prints a markdown table; cleans up on exit.
#
# environment: WEFT_BIN (the weft binary; release build recommended), BENCH_SECONDS, BENCH_RUNS,
# BENCH_MODES (space-separated subset of the modes above), WEFT_TESTNET (prefix, default wb<pid>).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export WEFT_TESTNET="${WEFT_TESTNET:-wb$$}"
export WEFT_TESTNET_STATE="${WEFT_TESTNET_STATE:-/tmp/weft-bench-$WEFT_TESTNET}"
SECONDS_PER_RUN="${BENCH_SECONDS:-8}"
RUNS="${BENCH_RUNS:-3}"
MODES="${BENCH_MODES:-underlay hand-hostgw hand-vxlan host-gw vxlan udp udp-aead underlay6 hand-hostgw6 hand-vxlan6 host-gw6 vxlan6 udp6 udp-aead6}"
OUT="$(mktemp -d /tmp/weft-bench-out.XXXXXX)"

# shellcheck source=netns.sh
source "$ROOT/testnet/netns.sh"

for tool in iperf3 ping python3 ip; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install iperf3 iputils-ping python3 iproute2)"
done
require_root
BIN=$(weft_bin)
log "weft binary: $BIN; $RUNS runs of $SECONDS_PER_RUN s per figure; results in $OUT"

cleanup() {
    cmd_down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers ---------------------------------------------------------------------------------

# Whether this weft accepts `run ARGS` (validation only).
weft_accepts() {
    "$BIN" run --insecure --check-config "$@" >/dev/null 2>&1
}

# Sum of utime+stime (seconds) of the weft agents of this testnet.
weft_cpu() {
    local total=0 i pid ticks
    ticks=$(getconf CLK_TCK)
    for i in 1 2; do
        pid=$(agent_pid "$i")
        [[ -n $pid ]] || continue
        # Fields 14 and 15 after the "(comm)" field, which may hold spaces.
        total=$(python3 -c 'import sys
s=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split()
print(float(sys.argv[2]) + (int(s[11])+int(s[12]))/int(sys.argv[3]))' "$pid" "$total" "$ticks")
    done
    echo "$total"
}

# Hand-made container networking: a bridge per host holding 10.244.I.1/24, the container at .2.
hand_bridges() {
    local mtu=$1 i h c
    for i in 1 2; do
        h=$(host_ns "$i")
        c=$(ctr_ns "$i")
        ip -n "$h" link add cni0 type bridge
        ip -n "$h" addr add "10.244.$i.1/24" dev cni0
        ip -n "$h" link set cni0 mtu "$mtu" up
        ip -n "$h" link set veth-c mtu "$mtu"
        ip -n "$h" link set veth-c master cni0 up
        ip -n "$c" link set eth0 mtu "$mtu"
        ip -n "$c" addr add "10.244.$i.2/24" dev eth0
        ip -n "$c" route add default via "10.244.$i.1"
        echo "10.244.$i.2" >"$STATE/cip$i"
        if ((V6)); then
            ip -n "$h" addr add "fd00:10:244:$i::1/64" dev cni0 nodad
            ip -n "$c" addr add "fd00:10:244:$i::2/64" dev eth0 nodad
            ip -n "$c" -6 route add default via "fd00:10:244:$i::1"
            echo "fd00:10:244:$i::2" >"$STATE/cip$i"
        fi
    done
}

setup_hand_hostgw() {
    hand_bridges 1500
    ip -n "$(host_ns 1)" route add 10.244.2.0/24 via "$(host_ip 2)"
    ip -n "$(host_ns 2)" route add 10.244.1.0/24 via "$(host_ip 1)"
    if ((V6)); then
        ip -n "$(host_ns 1)" -6 route add fd00:10:244:2::/64 via "$(host_ip6 2)"
        ip -n "$(host_ns 2)" -6 route add fd00:10:244:1::/64 via "$(host_ip6 1)"
    fi
}

setup_hand_vxlan() {
    hand_bridges 1450
    local i j h mac
    for i in 1 2; do
        h=$(host_ns "$i")
        ip -n "$h" link add vx0 type vxlan id 1 local "$(host_ip "$i")" dev veth-ul dstport 8472 nolearning
        ip -n "$h" link set vx0 address "02:00:00:00:00:0$i" mtu 1450 up
        ip -n "$h" addr add "10.244.$i.0/32" dev vx0
    done
    for i in 1 2; do
        j=$((3 - i))
        h=$(host_ns "$i")
        mac="02:00:00:00:00:0$j"
        ip -n "$h" neigh add "10.244.$j.0" lladdr "$mac" dev vx0 nud permanent
        bridge -n "$h" fdb append "$mac" dev vx0 dst "$(host_ip "$j")" self permanent
        ip -n "$h" route add "10.244.$j.0/24" via "10.244.$j.0" dev vx0 onlink
        if ((V6)); then
            ip -n "$h" addr add "fd00:10:244:$i::/128" dev vx0 nodad
            ip -n "$h" neigh add "fd00:10:244:$j::" lladdr "$mac" dev vx0 nud permanent
            ip -n "$h" -6 route add "fd00:10:244:$j::/64" via "fd00:10:244:$j::" dev vx0 onlink
        fi
    done
}

setup_weft() {
    local i
    cmd_start 2 >/dev/null
    cmd_wait_ready 90 >/dev/null
    cmd_wire_containers >/dev/null 2>&1
    for i in 1 2; do
        if ((V6)); then container_ip6 "$i"; else container_ip "$i"; fi >"$STATE/cip$i"
    done
}

# The client and server namespaces and the server address of a mode.
endpoints() {
    if [[ $1 == underlay ]]; then
        echo "$(host_ns 1) $(host_ns 2) $(host_ip 2)"
    elif [[ $1 == underlay6 ]]; then
        echo "$(host_ns 1) $(host_ns 2) $(host_ip6 2)"
    else
        echo "$(ctr_ns 1) $(ctr_ns 2) $(cat "$STATE/cip2")"
    fi
}

# One mode: set up, measure, write $OUT/<mode>.json.
measure() {
    local mode=$1 extra=() cns sns dst run streams base=$1
    V6=0
    if [[ $mode == *6 ]]; then
        V6=1
        base=${mode%6}
    fi
    case $base in
    host-gw) extra=(--backend host-gw) ;;
    vxlan) extra=(--backend vxlan) ;;
    # The testnet's agents hold a cluster key, which turns encryption on by default: plain is asked.
    udp) extra=(--backend udp --udp-encryption off) ;;
    udp-aead) extra=(--backend udp --udp-encryption on) ;;
    esac
    if ((V6)) && [[ $base != underlay && $base != hand-* ]]; then
        extra+=(--ipv6-network fd00:10:244::/56)
    fi
    if [[ $mode == udp* ]] && ! weft_accepts "${extra[@]}"; then
        echo "skipped: udp backend not available (${extra[*]})" | tee "$OUT/$mode.skipped" >&2
        return
    fi
    log "== $mode"
    cmd_up 2 >/dev/null 2>&1
    case $base in
    underlay) ;;
    hand-hostgw) setup_hand_hostgw ;;
    hand-vxlan) setup_hand_vxlan ;;
    *) WEFT_ARGS="${extra[*]}" setup_weft ;;
    esac
    read -r cns sns dst <<<"$(endpoints "$mode")"
    # Routes may still be arriving: wait until the path works (30 s at most).
    local tries=0
    until ip netns exec "$cns" ping -c 1 -W 1 -q "$dst" >/dev/null 2>&1; do
        ((tries < 30)) || die "$mode: $cns cannot ping $dst"
        tries=$((tries + 1))
    done
    local cpu0 cpu1
    for streams in 1 4; do
        for run in $(seq 1 "$RUNS"); do
            ip netns exec "$sns" iperf3 -s -D -1 >/dev/null 2>&1
            sleep 0.3
            cpu0=$(weft_cpu)
            ip netns exec "$cns" iperf3 -c "$dst" -t "$SECONDS_PER_RUN" -P "$streams" -J \
                >"$OUT/$mode.P$streams.$run.json" 2>/dev/null ||
                log "$mode: iperf3 -P $streams run $run failed"
            cpu1=$(weft_cpu)
            python3 -c 'import sys; print(float(sys.argv[2]) - float(sys.argv[1]))' "$cpu0" "$cpu1" \
                >"$OUT/$mode.P$streams.$run.weftcpu"
        done
    done
    ip netns exec "$cns" ping -n -c 40 -i 0.05 -W 2 "$dst" >"$OUT/$mode.ping" 2>&1 || true
    cmd_down >/dev/null 2>&1
}

for mode in $MODES; do
    measure "$mode"
done

# ---- report ----------------------------------------------------------------------------------

python3 - "$OUT" "$MODES" <<'EOF'
import json, os, re, statistics, sys

out, modes = sys.argv[1], sys.argv[2].split()

def runs(mode, p):
    res = []
    i = 1
    while os.path.exists(f"{out}/{mode}.P{p}.{i}.json"):
        try:
            j = json.load(open(f"{out}/{mode}.P{p}.{i}.json"))
            end = j["end"]
            recv = end["sum_received"]
            gb = recv["bytes"] / 1e9
            secs = recv["seconds"]
            cpu = end["cpu_utilization_percent"]
            # CPU seconds of sender + receiver (iperf3's own accounting) per GB received.
            cpu_s = (cpu["host_total"] + cpu["remote_total"]) / 100 * secs
            weft = float(open(f"{out}/{mode}.P{p}.{i}.weftcpu").read())
            res.append((recv["bits_per_second"] / 1e9, cpu_s / gb if gb else None, weft / gb if gb else None))
        except Exception as e:  # a failed run: counted out, said so
            print(f"<!-- {mode} -P {p} run {i}: {e} -->")
        i += 1
    return res

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def rtt(mode):
    try:
        t = [float(m) for m in re.findall(r"time=([0-9.]+) ms", open(f"{out}/{mode}.ping").read())]
        return statistics.median(t) if t else None
    except OSError:
        return None

fig = {}
for m in modes:
    if os.path.exists(f"{out}/{m}.skipped"):
        continue
    r1, r4 = runs(m, 1), runs(m, 4)
    fig[m] = {
        "gbps1": med([r[0] for r in r1]), "gbps4": med([r[0] for r in r4]),
        "cpu1": med([r[1] for r in r1]), "cpu4": med([r[1] for r in r4]),
        "weft1": med([r[2] for r in r1]), "rtt": rtt(m),
    }

def f(x, fmt="{:.2f}"):
    return "–" if x is None else fmt.format(x)

def ratio(m, key, ref):
    # References of the mode's own family: an IPv6 mode against underlay6 and vxlan6.
    if m.endswith("6") and ref in ("underlay", "vxlan"):
        ref += "6"
    a, b = fig.get(m, {}).get(key), fig.get(ref, {}).get(key)
    return None if a is None or not b else a / b

print()
print("| mode | Gb/s 1 stream | ×underlay | ×vxlan | Gb/s -P 4 | ×underlay | ×vxlan "
      "| iperf3 CPU s/GB (1 stream) | ×underlay | ×vxlan | weft CPU s/GB (1 stream) "
      "| RTT ms (median) | ×underlay | ×vxlan |")
print("|" + "---|" * 14)
for m in modes:
    if m not in fig:
        print(f"| {m} | skipped |" + " |" * 12)
        continue
    x = fig[m]
    print(f"| {m} | {f(x['gbps1'])} | {f(ratio(m,'gbps1','underlay'))} | {f(ratio(m,'gbps1','vxlan'))} "
          f"| {f(x['gbps4'])} | {f(ratio(m,'gbps4','underlay'))} | {f(ratio(m,'gbps4','vxlan'))} "
          f"| {f(x['cpu1'],'{:.3f}')} | {f(ratio(m,'cpu1','underlay'))} | {f(ratio(m,'cpu1','vxlan'))} "
          f"| {f(x['weft1'],'{:.4f}')} "
          f"| {f(x['rtt'],'{:.3f}')} | {f(ratio(m,'rtt','underlay'))} | {f(ratio(m,'rtt','vxlan'))} |")
print()
for ours, hand in (("host-gw", "hand-hostgw"), ("vxlan", "hand-vxlan"),
                   ("host-gw6", "hand-hostgw6"), ("vxlan6", "hand-vxlan6")):
    for key, label in (("gbps1", "1 stream"), ("gbps4", "-P 4")):
        r = ratio(ours, key, hand)
        if r is not None:
            verdict = "ok" if r >= 0.97 else "BELOW 97%"
            print(f"- weft {ours} / hand-made {hand}, {label}: {r*100:.1f}% ({verdict})")
for m in modes:
    if os.path.exists(f"{out}/{m}.skipped"):
        print(f"- {open(f'{out}/{m}.skipped').read().strip()}")
print(f"\nmedians of the runs; iperf3 CPU = sender + receiver per iperf3 -J; weft CPU = both agents' utime+stime during the runs (gossip and reconcile included); raw iperf3 JSON in {out}")
EOF
