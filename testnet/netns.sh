#!/usr/bin/env bash
# testnet/netns.sh: a weft testnet in network namespaces (no docker needed), for people and tests.
#
# Topology (prefix P = $WEFT_TESTNET, default "wt"):
#   namespace P-ul   the underlay: bridge br0 holding 172.31.250.1/24
#   namespace P-hI   host I: veth-ul (172.31.250.(10+I)/24, default route via .1; and
#                    fd7e:31:250::(10+I)/64, default route via ::1) on P-ul's br0;
#                    veth-c, the host end of container I's link, enslaved to cni0 once weft made it
#   namespace P-cI   container I: eth0, addressed from host I's subnet by `wire-containers`
# Every address and every packet stays inside these namespaces. State, logs and pid files live in
# $WEFT_TESTNET_STATE (default /tmp/weft-testnet-P). Root is needed.
set -euo pipefail
shopt -s inherit_errexit # `die` inside $(...) stops the command too

P="${WEFT_TESTNET:-wt}"
STATE="${WEFT_TESTNET_STATE:-/tmp/weft-testnet-$P}"
UL="$P-ul"
NET=172.31.250
NET2=172.31.251
# The IPv6 underlay beside the IPv4 one (unique-local; hosts are ::(10+I), the underlay ::1).
NET6=fd7e:31:250
NET6_2=fd7e:31:251
API=127.0.0.1:7948
GOSSIP_PORT=7947
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<EOF
usage: $0 COMMAND [ARGS]

  up [N]              create the underlay, N hosts (default 3) and a container per host
  start [N]           start \`weft run\` in every host namespace (N: from \`up\`)
  stop [I]            SIGTERM the agent of host I (default: every host)
  kill [I]            SIGKILL the agent of host I (default: every host)
  restart I           stop and start host I's agent
  status [I]          \`weft status\` in host I's namespace (default: every host)
  logs I              print host I's agent log
  wait-ready [SECS]   wait until every agent reports ready (default 60 s)
  wire-containers     address each container from its host's subnet.env (.2, default route .1)
  ping I J [COUNT]    ping container J from container I (across the overlay)
  ping6 I J [COUNT]   the same over IPv6 (a dual-stack or IPv6-only overlay)
  uping I J [COUNT]   ping host J's underlay address from host I
  uping6 I J [COUNT]  the same to host J's IPv6 underlay address
  demo [--ipv6] [--down-after]
                      up 3, start, measure route convergence, wire, status, ping
                      (--ipv6: a dual-stack overlay, and ping -6 too)
  partition A,B C,D   cut the underlay between two groups of hosts (blackhole routes)
  heal                undo every partition
  drop-udp I J [PORT] in host I's namespace, drop UDP to and from host J's underlay addresses
                      and subnets on PORT (default 8472, VXLAN; 7949 reaches host-gw's probes)
                      with an nftables table of the testnet's own (\`inet testnet_fault\`): a
                      firewall eating the overlay, gossip untouched
  undrop [I]          remove the drop-udp rules of host I (default: every host)
  hop-mtu I MTU       set the MTU of host I's port on the underlay bridge: a hop toward host I
                      that carries less than the hosts' own interfaces say (1500 restores it);
                      host I's underlay link then sends wire-size frames (gso_max_segs 1)
  attacker            add namespace P-a on the underlay (172.31.250.250), no key, for tests
  down                kill every process in the testnet, delete its namespaces and state

environment:
  WEFT_TESTNET        name prefix (default wt); several testnets can run side by side
  WEFT_TESTNET_STATE  state directory (default /tmp/weft-testnet-\$WEFT_TESTNET)
  WEFT_BIN            the weft binary (default: target/release/weft, then target/debug/weft,
                      under \$CARGO_TARGET_DIR or the repository's target/)
  WEFT_ARGS           extra arguments for every \`weft run\`
  WEFT_BACKEND, WEFT_DIRECT_ROUTING, ...
                      every WEFT_* setting of \`weft run\` reaches the agents through the
                      environment (e.g. WEFT_BACKEND=host-gw $0 start)
  WEFT_TESTNET_ROUTED hosts (by index, space-separated) that \`up\` puts on a second underlay
                      subnet, $NET2.0/24, routed through the underlay namespace: not on-link
                      for the others (host-gw cannot reach them; vxlan can)
  WEFT_KEY_FILE       the cluster key every agent seals gossip with (default: one made by
                      \`weft keygen\` at the first \`start\`, in the state directory)
  WEFT_TESTNET_INSECURE=1  run the agents with --insecure instead of a cluster key
  WEFT_TESTNET_UNDERLAY6=1 the agents use the IPv6 underlay (--iface and gossip on each host's
                      fd7e:31:250:: address): VXLAN and the udp tunnel run over IPv6
  WEFT_TESTNET_UNDERLAY6=only  the same, and \`up\` gives the hosts no IPv4 underlay address or
                      route at all: an IPv6-only underlay
EOF
}

die() {
    echo "netns.sh: $*" >&2
    exit 1
}

log() { echo "netns.sh: $*" >&2; }

[[ $P =~ ^[A-Za-z0-9_-]{1,20}$ ]] || die "WEFT_TESTNET must be 1-20 characters of [A-Za-z0-9_-]: '$P'"
[[ $STATE == /* && $STATE != / ]] || die "WEFT_TESTNET_STATE must be an absolute path other than /"

host_ns() { echo "$P-h$1"; }
ctr_ns() { echo "$P-c$1"; }
# Hosts on the routed second subnet (WEFT_TESTNET_ROUTED at `up`, remembered in $STATE/routed).
is_routed() { [[ -f $STATE/routed ]] && grep -qx "$1" "$STATE/routed"; }
host_ip() {
    if is_routed "$1"; then
        echo "$NET2.$((10 + $1))"
    else
        echo "$NET.$((10 + $1))"
    fi
}
host_ip6() {
    if is_routed "$1"; then
        echo "$NET6_2::$((10 + $1))"
    else
        echo "$NET6::$((10 + $1))"
    fi
}
host_dir() { echo "$STATE/h$1"; }

require_root() {
    [[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
}

# The tools the testnet uses, installed from Debian's packages when missing (as .ci/run does), or
# named in one line where they cannot be: `ip` (iproute2), `ping` (iputils-ping), `nft` (nftables).
ensure_tools() {
    local missing=() pkgs=() pair
    for pair in ip:iproute2 ping:iputils-ping "$@"; do
        command -v "${pair%%:*}" >/dev/null || { missing+=("${pair%%:*}"); pkgs+=("${pair#*:}"); }
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        log "installing ${pkgs[*]} (for ${missing[*]})"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${pkgs[@]}" >/dev/null ||
            die "could not install ${pkgs[*]}: install them, then run again"
    else
        die "missing ${missing[*]}: apt-get install ${pkgs[*]}"
    fi
}

ns_exists() { [[ -e /run/netns/$1 ]]; }

# Every namespace of this testnet, by exact pattern (never another prefix's).
our_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$P-(ul|a|h[0-9]+|c[0-9]+)\$" || true
}

host_count() {
    [[ -f $STATE/n ]] || die "testnet '$P' is not up (run: $0 up)"
    cat "$STATE/n"
}

check_index() {
    local i=$1 n
    n=$(host_count)
    if ! [[ $i =~ ^[0-9]+$ ]] || ((i < 1 || i > n)); then
        die "no host '$i' (hosts are 1..$n)"
    fi
}

# The hosts a command applies to: "$1" if given, else all.
targets() {
    if [[ -n ${1:-} ]]; then
        check_index "$1"
        echo "$1"
    else
        seq 1 "$(host_count)"
    fi
}

weft_bin() {
    if [[ -n ${WEFT_BIN:-} ]]; then
        [[ -x $WEFT_BIN ]] || die "WEFT_BIN=$WEFT_BIN is not executable"
        echo "$WEFT_BIN"
        return
    fi
    local target="${CARGO_TARGET_DIR:-$ROOT/target}" b
    for b in "$target/release/weft" "$target/debug/weft" "$ROOT/target/release/weft" "$ROOT/target/debug/weft"; do
        if [[ -x $b ]]; then
            echo "$b"
            return
        fi
    done
    die "no weft binary: build it (cargo build) or set WEFT_BIN"
}

# ---- addresses -------------------------------------------------------------------------------

ip_to_int() {
    local a b c d
    IFS=. read -r a b c d <<<"$1"
    echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

int_to_ip() {
    echo "$((($1 >> 24) & 255)).$((($1 >> 16) & 255)).$((($1 >> 8) & 255)).$(($1 & 255))"
}

# A key of host I's subnet.env (flannel format: FLANNEL_SUBNET=10.244.1.1/24, FLANNEL_MTU=1450).
subnet_env() {
    local file
    file="$(host_dir "$1")/subnet.env"
    [[ -f $file ]] || die "h$1 has no subnet yet ($file is missing): is weft running? try: $0 wait-ready"
    sed -n "s/^$2=//p" "$file" | tail -n 1
}

# "NETWORK_INT LEN" of host I's subnet.
host_subnet() {
    local subnet addr len mask
    subnet=$(subnet_env "$1" FLANNEL_SUBNET)
    [[ $subnet =~ ^([0-9]+\.[0-9]+\.[0-9]+\.[0-9]+)/([0-9]+)$ ]] ||
        die "h$1: unexpected FLANNEL_SUBNET '$subnet'"
    addr=${BASH_REMATCH[1]}
    len=${BASH_REMATCH[2]}
    ((len >= 1 && len <= 30)) || die "h$1: unexpected prefix length in FLANNEL_SUBNET '$subnet'"
    mask=$(((0xffffffff << (32 - len)) & 0xffffffff))
    echo "$(($(ip_to_int "$addr") & mask)) $len"
}

# "GATEWAY LEN" of host I's IPv6 subnet: FLANNEL_IPV6_SUBNET holds the subnet's first address
# (the bridge's, ending in ::1) with its length.
host_subnet6() {
    local subnet
    subnet=$(subnet_env "$1" FLANNEL_IPV6_SUBNET)
    [[ $subnet =~ ^([0-9a-f:]+::1)/([0-9]+)$ ]] ||
        die "h$1: unexpected FLANNEL_IPV6_SUBNET '$subnet'"
    echo "${BASH_REMATCH[1]} ${BASH_REMATCH[2]}"
}

container_ip6() {
    local gw len
    read -r gw len <<<"$(host_subnet6 "$1")"
    echo "${gw%1}2"
}

container_ip() {
    local subnet net len
    subnet=$(host_subnet "$1")
    read -r net len <<<"$subnet"
    int_to_ip $((net + 2))
}

# ---- processes -------------------------------------------------------------------------------

# The pid of host I's agent if it runs (and is still weft), else nothing.
agent_pid() {
    local pidfile pid
    pidfile="$(host_dir "$1")/weft.pid"
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "weft.* run "; then
        echo "$pid"
    fi
}

start_one() {
    local i=$1 bin=$2 dir pid
    dir=$(host_dir "$i")
    pid=$(agent_pid "$i")
    if [[ -n $pid ]]; then
        log "h$i: weft already runs (pid $pid)"
        return
    fi
    mkdir -p "$dir/state"
    # The agents' underlay (VXLAN, udp tunnel, gossip): IPv4, or IPv6 with WEFT_TESTNET_UNDERLAY6
    # (1, or only).
    local ul_ip seed_ip
    if [[ ${WEFT_TESTNET_UNDERLAY6:-0} != 0 ]]; then
        ul_ip="[$(host_ip6 "$i")]"
        seed_ip="[$(host_ip6 1)]"
        local iface=(--iface "$(host_ip6 "$i")")
    else
        ul_ip=$(host_ip "$i")
        seed_ip=$(host_ip 1)
        local iface=(--iface veth-ul)
    fi
    local args=(run --node-name "h$i" "${iface[@]}" --listen "$ul_ip:$GOSSIP_PORT"
        --bridge cni0 --state-dir "$dir/state" --subnet-file "$dir/subnet.env" --api "$API"
        --gossip-interval 200ms)
    if [[ ${WEFT_TESTNET_INSECURE:-0} == 1 ]]; then
        args+=(--insecure)
    else
        # A host's own keyring ($dir/cluster.key, e.g. for key rotation) wins over the shared key.
        if [[ -e $dir/cluster.key ]]; then
            args+=(--cluster-key-file "$dir/cluster.key")
        else
            args+=(--cluster-key-file "$(key_file)")
        fi
    fi
    if ((i != 1)); then
        args+=(--seeds "$seed_ip:$GOSSIP_PORT")
    fi
    local extra=() host_extra=()
    read -r -a extra <<<"${WEFT_ARGS:-}"
    # Per-host extra arguments: $dir/extra-args (one line), e.g. --clock-offset-ms 30000.
    if [[ -f $dir/extra-args ]]; then
        read -r -a host_extra <"$dir/extra-args"
        extra+=("${host_extra[@]}")
    fi
    echo "=== $(date -Is) start: $bin ${args[*]} ${extra[*]}" >>"$dir/weft.log"
    # setsid: the agent outlives this script and its terminal; `ip netns exec` execs, so $! is
    # the agent's pid.
    # The script's own settings are not the agent's (weft warns about WEFT_* names it does not
    # read); weft's own WEFT_* variables pass through.
    setsid env -u WEFT_ARGS -u WEFT_BIN -u WEFT_TESTNET -u WEFT_TESTNET_STATE -u WEFT_TESTNET_UNDERLAY6 \
        -u WEFT_TESTNET_INSECURE -u WEFT_REQUIRE_NETNS \
        ip netns exec "$(host_ns "$i")" "$bin" "${args[@]}" "${extra[@]}" \
        >>"$dir/weft.log" 2>&1 </dev/null &
    echo $! >"$dir/weft.pid"
    log "h$i: started weft (pid $!), log $dir/weft.log"
    disown $! # `down` kills it; bash need not report that
}

stop_one() {
    local i=$1 signal=$2 pid waited=0
    pid=$(agent_pid "$i")
    if [[ -z $pid ]]; then
        log "h$i: weft is not running"
        rm -f "$(host_dir "$i")/weft.pid"
        return
    fi
    kill "-$signal" "$pid" 2>/dev/null || true
    # Until it has exited: an exited agent nobody has reaped yet (a zombie, state Z) counts as
    # stopped (PID 1 of a container may reap late, which once made every restart 2 s longer).
    while kill -0 "$pid" 2>/dev/null && [[ $(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) != Z ]]; do
        if ((waited >= 100)); then
            log "h$i: weft (pid $pid) still runs 10 s after SIG$signal: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$(host_dir "$i")/weft.pid"
    log "h$i: weft (pid $pid) stopped by SIG$signal"
}

# ---- commands --------------------------------------------------------------------------------

cmd_up() {
    require_root
    ensure_tools
    local n=${1:-3} i h c
    if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 200)); then
        die "N must be 1..200, not '$n'"
    fi
    if [[ -n $(our_namespaces) ]]; then
        die "testnet '$P' is already up (run: $0 down)"
    fi
    mkdir -p "$STATE"
    echo "$n" >"$STATE/n"
    : >"$STATE/routed"
    for i in ${WEFT_TESTNET_ROUTED:-}; do
        if ! [[ $i =~ ^[0-9]+$ ]] || ((i < 1 || i > n)); then
            die "WEFT_TESTNET_ROUTED: no host '$i' (hosts are 1..$n)"
        fi
        echo "$i" >>"$STATE/routed"
    done
    # Any failure below leaves a half-built testnet: tear it down.
    trap 'log "up failed: cleaning up"; cmd_down >/dev/null 2>&1 || true' ERR

    ip netns add "$UL"
    ip -n "$UL" link set lo up
    ip -n "$UL" link add br0 type bridge
    ip -n "$UL" addr add "$NET.1/24" dev br0
    ip -n "$UL" addr add "$NET6::1/64" dev br0 nodad
    ip -n "$UL" link set br0 up
    if [[ -s $STATE/routed ]]; then
        # The underlay namespace routes between the two subnets.
        ip -n "$UL" addr add "$NET2.1/24" dev br0
        ip -n "$UL" addr add "$NET6_2::1/64" dev br0 nodad
        ip netns exec "$UL" sysctl -qw net.ipv4.ip_forward=1
        ip netns exec "$UL" sysctl -qw net.ipv6.conf.all.forwarding=1
    fi

    for i in $(seq 1 "$n"); do
        h=$(host_ns "$i")
        c=$(ctr_ns "$i")
        mkdir -p "$(host_dir "$i")"
        ip netns add "$h"
        ip netns add "$c"
        ip -n "$h" link set lo up
        ip -n "$c" link set lo up
        ip netns exec "$h" sysctl -qw net.ipv4.ip_forward=1
        ip netns exec "$h" sysctl -qw net.ipv6.conf.all.forwarding=1
        # Addresses are usable at once (no duplicate detection in a testnet of unique ones).
        ip netns exec "$h" sysctl -qw net.ipv6.conf.default.accept_dad=0
        ip netns exec "$c" sysctl -qw net.ipv6.conf.default.accept_dad=0
        ip netns exec "$c" sysctl -qw net.ipv6.conf.all.accept_dad=0
        # Underlay link: veth-ul in the host, hI on the underlay bridge.
        ip -n "$h" link add veth-ul type veth peer name "h$i" netns "$UL"
        ip -n "$UL" link set "h$i" master br0 up
        ip -n "$h" addr add "$(host_ip6 "$i")/64" dev veth-ul nodad
        ip -n "$h" link set veth-ul up
        if [[ ${WEFT_TESTNET_UNDERLAY6:-0} != only ]]; then
            ip -n "$h" addr add "$(host_ip "$i")/24" dev veth-ul
            if is_routed "$i"; then
                ip -n "$h" route add default via "$NET2.1"
            else
                ip -n "$h" route add default via "$NET.1"
            fi
        fi
        if is_routed "$i"; then
            ip -n "$h" -6 route add default via "$NET6_2::1"
        else
            ip -n "$h" -6 route add default via "$NET6::1"
        fi
        # Container link: eth0 in the container, veth-c in the host (enslaved by wire-containers).
        ip -n "$c" link add eth0 type veth peer name veth-c netns "$h"
        ip -n "$c" link set eth0 up
        ip -n "$h" link set veth-c up
    done
    trap - ERR
    log "testnet '$P' up: $n hosts on $NET.0/24, state in $STATE"
}

# The cluster key: $WEFT_KEY_FILE, or one generated once per testnet.
key_file() {
    echo "${WEFT_KEY_FILE:-$STATE/cluster.key}"
}

ensure_key() {
    local bin=$1 file
    [[ ${WEFT_TESTNET_INSECURE:-0} == 1 ]] && return 0
    file=$(key_file)
    if [[ -n ${WEFT_KEY_FILE:-} ]]; then
        [[ -r $file ]] || die "WEFT_KEY_FILE=$file is not readable"
    elif [[ ! -f $file ]]; then
        "$bin" keygen --out "$file" >/dev/null || die "weft keygen --out $file failed"
        log "cluster key generated: $file"
    fi
}

cmd_start() {
    require_root
    local bin n i
    bin=$(weft_bin)
    ensure_key "$bin"
    n=${1:-$(host_count)}
    ((n <= $(host_count))) || die "only $(host_count) hosts are up"
    for i in $(seq 1 "$n"); do
        start_one "$i" "$bin"
    done
    date +%s%N >"$STATE/last-start"
}

cmd_stop() {
    local hosts i
    hosts=$(targets "${1:-}")
    for i in $hosts; do stop_one "$i" TERM; done
}

cmd_kill() {
    local hosts i
    hosts=$(targets "${1:-}")
    for i in $hosts; do stop_one "$i" KILL; done
}

cmd_restart() {
    [[ -n ${1:-} ]] || die "usage: $0 restart I"
    check_index "$1"
    local bin
    bin=$(weft_bin)
    ensure_key "$bin"
    stop_one "$1" TERM
    start_one "$1" "$bin"
}

cmd_status() {
    local bin hosts i rc=0
    bin=$(weft_bin)
    if [[ -n ${1:-} ]]; then
        check_index "$1"
        ip netns exec "$(host_ns "$1")" "$bin" status --api "$API"
        return
    fi
    hosts=$(targets)
    for i in $hosts; do
        echo "=== h$i"
        ip netns exec "$(host_ns "$i")" "$bin" status --api "$API" || rc=1
    done
    return "$rc"
}

cmd_logs() {
    [[ -n ${1:-} ]] || die "usage: $0 logs I"
    check_index "$1"
    cat "$(host_dir "$1")/weft.log"
}

host_ready() {
    ip netns exec "$(host_ns "$1")" "$2" status --json --api "$API" 2>/dev/null |
        grep -q '^  "ready": true'
}

cmd_wait_ready() {
    local timeout=${1:-60} bin deadline hosts i pending
    [[ $timeout =~ ^[0-9]+$ ]] || die "timeout must be whole seconds, not '$timeout'"
    bin=$(weft_bin)
    hosts=$(targets)
    deadline=$((SECONDS + timeout))
    while :; do
        pending=()
        for i in $hosts; do
            host_ready "$i" "$bin" || pending+=("h$i")
        done
        if ((${#pending[@]} == 0)); then
            log "every host is ready"
            return 0
        fi
        if ((SECONDS >= deadline)); then
            log "not ready after ${timeout}s: ${pending[*]}"
            for i in "${pending[@]}"; do
                ip netns exec "$(host_ns "${i#h}")" "$bin" status --api "$API" >&2 || true
            done
            return 1
        fi
        sleep 0.2
    done
}

cmd_wire_containers() {
    require_root
    local hosts i h c subnet net len mtu gw addr waited subnet6
    hosts=$(targets)
    for i in $hosts; do
        h=$(host_ns "$i")
        c=$(ctr_ns "$i")
        mtu=$(subnet_env "$i" FLANNEL_MTU)
        waited=0
        until ip -n "$h" link show cni0 >/dev/null 2>&1; do
            ((waited < 100)) || die "h$i: weft made no cni0 bridge within 10 s"
            sleep 0.1
            waited=$((waited + 1))
        done
        if [[ $mtu =~ ^[0-9]+$ ]]; then
            ip -n "$h" link set veth-c mtu "$mtu"
            ip -n "$c" link set eth0 mtu "$mtu"
        fi
        ip -n "$h" link set veth-c master cni0 up
        ip -n "$c" link set eth0 up
        # IPv4 (absent in an IPv6-only overlay): .2 of the subnet, default route via .1.
        if [[ -n $(subnet_env "$i" FLANNEL_SUBNET) ]]; then
            subnet=$(host_subnet "$i")
            read -r net len <<<"$subnet"
            gw=$(int_to_ip $((net + 1)))
            addr=$(int_to_ip $((net + 2)))
            ip -n "$c" addr replace "$addr/$len" dev eth0
            ip -n "$c" route replace default via "$gw"
            log "c$i: $addr/$len via $gw (host h$i, mtu ${mtu:-default})"
        fi
        # IPv6 (a dual-stack or IPv6-only overlay): ::2 of the subnet, default route via ::1.
        subnet6=$(subnet_env "$i" FLANNEL_IPV6_SUBNET)
        if [[ -n $subnet6 ]]; then
            read -r gw len <<<"$(host_subnet6 "$i")"
            addr="${gw%1}2"
            ip -n "$c" addr replace "$addr/$len" dev eth0 nodad
            ip -n "$c" -6 route replace default via "$gw"
            log "c$i: $addr/$len via $gw (host h$i)"
        fi
    done
}

# ping_from NS_OF ADDR_OF I J COUNT [-6]: ping ADDR_OF J from NS_OF I.
ping_from() {
    local ns_of=$1 addr_of=$2 i=$3 j=$4 count=$5
    shift 5
    check_index "$i"
    check_index "$j"
    command -v ping >/dev/null || die "ping not found (apt-get install iputils-ping)"
    ip netns exec "$("$ns_of" "$i")" ping "$@" -n -c "$count" -i 0.2 -W 2 "$("$addr_of" "$j")"
}

cmd_ping() {
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 ping I J [COUNT]"
    ping_from ctr_ns container_ip "$1" "$2" "${3:-3}"
}

cmd_ping6() {
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 ping6 I J [COUNT]"
    ping_from ctr_ns container_ip6 "$1" "$2" "${3:-3}" -6
}

cmd_uping() {
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 uping I J [COUNT]"
    ping_from host_ns host_ip "$1" "$2" "${3:-3}"
}

cmd_uping6() {
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 uping6 I J [COUNT]"
    ping_from host_ns host_ip6 "$1" "$2" "${3:-3}" -6
}

# Host indices of a comma-separated group, checked.
group() {
    local i
    [[ $1 =~ ^[0-9]+(,[0-9]+)*$ ]] || die "a group is a comma-separated list of host indices, not '$1'"
    for i in ${1//,/ }; do
        check_index "$i"
        echo "$i"
    done
}

cmd_partition() {
    require_root
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 partition A,B C,D"
    local a b
    for a in $(group "$1"); do
        for b in $(group "$2"); do
            ((a != b)) || die "host $a is in both groups"
            ip -n "$(host_ns "$a")" route replace blackhole "$(host_ip "$b")/32"
            ip -n "$(host_ns "$b")" route replace blackhole "$(host_ip "$a")/32"
        done
    done
    log "partitioned: {$1} | {$2}"
}

cmd_heal() {
    require_root
    local i route
    for i in $(targets); do
        for route in $(ip -n "$(host_ns "$i")" route show type blackhole 2>/dev/null | awk '{print $2}'); do
            ip -n "$(host_ns "$i")" route del blackhole "$route" 2>/dev/null || true
        done
    done
    log "healed: no partition"
}

# The testnet's own nftables table for injected faults (weft's tables are `ip weft` and
# `ip6 weft`; this one is never weft's).
FAULT_TABLE=testnet_fault

cmd_drop_udp() {
    require_root
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 drop-udp I J [PORT]"
    local i=$1 j=$2 port=${3:-8472} h
    check_index "$i"
    check_index "$j"
    [[ $port =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) || die "PORT must be 1..65535, not '$port'"
    command -v nft >/dev/null || die "nft not found (apt-get install nftables)"
    h=$(host_ns "$i")
    ip netns exec "$h" nft -f - <<EOF2
table inet $FAULT_TABLE {}
table inet $FAULT_TABLE {
    chain output { type filter hook output priority 0; }
    chain input { type filter hook input priority 0; }
}
add rule inet $FAULT_TABLE output ip daddr $(host_ip "$j") udp dport $port drop
add rule inet $FAULT_TABLE output ip6 daddr $(host_ip6 "$j") udp dport $port drop
add rule inet $FAULT_TABLE input ip saddr $(host_ip "$j") udp dport $port drop
add rule inet $FAULT_TABLE input ip6 saddr $(host_ip6 "$j") udp dport $port drop
EOF2
    # host-gw puts overlay addresses on the underlay: match host J's subnets too.
    local key sub
    for key in FLANNEL_SUBNET FLANNEL_IPV6_SUBNET; do
        sub=$(sed -n "s/^$key=//p" "$STATE/h$j/subnet.env" 2>/dev/null || true)
        [[ -n $sub ]] || continue
        local fam=ip
        [[ $key == FLANNEL_IPV6_SUBNET ]] && fam=ip6
        ip netns exec "$h" nft -f - <<EOF2
add rule inet $FAULT_TABLE output $fam daddr $sub udp dport $port drop
add rule inet $FAULT_TABLE input $fam saddr $sub udp dport $port drop
EOF2
    done
    log "h$i: UDP $port to and from h$j dropped"
}

cmd_undrop() {
    require_root
    local i
    for i in $(targets "${1:-}"); do
        ip netns exec "$(host_ns "$i")" nft delete table inet "$FAULT_TABLE" 2>/dev/null || true
    done
    log "drop-udp rules removed"
}

cmd_hop_mtu() {
    require_root
    [[ -n ${1:-} && -n ${2:-} ]] || die "usage: $0 hop-mtu I MTU"
    local i=$1 mtu=$2
    check_index "$i"
    [[ $mtu =~ ^[0-9]+$ ]] && ((mtu >= 1280 && mtu <= 9000)) || die "MTU must be 1280..9000, not '$mtu'"
    ip -n "$UL" link set "h$i" mtu "$mtu"
    # Host I sends frames at wire size, as a real NIC does: without this, veths pass whole GSO
    # packets (up to 64 KB) and the smaller hop is never met by TCP.
    local segs=65535
    ((mtu < 1500)) && segs=1
    ip -n "$(host_ns "$i")" link set veth-ul gso_max_segs "$segs"
    log "the underlay bridge's port toward h$i carries $mtu bytes (h$i's own interface is unchanged)"
}

cmd_attacker() {
    require_root
    local a="$P-a"
    ns_exists "$a" && die "attacker namespace $a exists already"
    ip netns add "$a"
    ip -n "$a" link set lo up
    ip -n "$a" link add veth-ul type veth peer name a0 netns "$UL"
    ip -n "$UL" link set a0 master br0 up
    ip -n "$a" addr add "$NET.250/24" dev veth-ul
    ip -n "$a" link set veth-ul up
    log "attacker namespace $a at $NET.250 on the underlay"
}

cmd_down() {
    local ns pid pids pidfile _
    # Agents started by `start` (also those whose namespace is already gone).
    for pidfile in "$STATE"/h*/weft.pid; do
        [[ -f $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q weft; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    # Every other process living in one of our namespaces.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pids=()
        for ns in $(our_namespaces); do
            for pid in $(ip netns pids "$ns" 2>/dev/null); do pids+=("$pid"); done
        done
        ((${#pids[@]} == 0)) && break
        kill -KILL "${pids[@]}" 2>/dev/null || true
        sleep 0.1
    done
    for ns in $(our_namespaces); do
        ip netns delete "$ns" 2>/dev/null || log "could not delete namespace $ns"
    done
    rm -rf "$STATE"
    if [[ -n $(our_namespaces) ]]; then
        die "namespaces left: $(our_namespaces | tr '\n' ' ')"
    fi
    log "testnet '$P' is down"
}

# Milliseconds since the last `start` until every host has a weft route (proto 87) to each of
# the other hosts' subnets.
measure_routes() {
    local n=$1 timeout=$2 start now i count done_ family=4
    [[ -n ${WEFT_NO_IPV4:-} && ${WEFT_NO_IPV4} != 0 && ${WEFT_NO_IPV4} != false ]] && family=6
    start=$(cat "$STATE/last-start")
    local deadline=$((SECONDS + timeout))
    while :; do
        done_=1
        for i in $(seq 1 "$n"); do
            # IPv4 routes, or IPv6 ones in an IPv6-only overlay (WEFT_NO_IPV4).
            count=$(ip -n "$(host_ns "$i")" "-${family:-4}" route show proto 87 2>/dev/null | grep -c . || true)
            if ((count < n - 1)); then
                done_=0
                break
            fi
        done
        now=$(date +%s%N)
        if ((done_)); then
            echo $(((now - start) / 1000000))
            return 0
        fi
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

cmd_demo() {
    require_root
    local down_after=0 ipv6=0 ipv4=1 n=3 ms arg
    for arg in "$@"; do
        case $arg in
        --down-after) down_after=1 ;;
        --ipv6) ipv6=1 ;;
        --ipv6-only) ipv6=1 ipv4=0 ;;
        *) die "usage: $0 demo [--ipv6 | --ipv6-only] [--down-after]" ;;
        esac
    done
    if ((ipv6)); then
        # A dual-stack overlay: every host also gets an IPv6 subnet of this network.
        export WEFT_IPV6_NETWORK="${WEFT_IPV6_NETWORK:-fd00:10:244::/56}"
    fi
    if ((!ipv4)); then
        # IPv6 only, overlay and underlay: the hosts have no IPv4 address on the underlay.
        export WEFT_NO_IPV4=1 WEFT_TESTNET_UNDERLAY6=only
    fi
    weft_bin >/dev/null
    ensure_tools
    if ((down_after)); then
        trap 'cmd_down' EXIT
    fi
    cmd_up "$n"
    cmd_start "$n"
    if ! ms=$(measure_routes "$n" 120); then
        cmd_status || true
        die "hosts did not get every route within 120 s"
    fi
    cmd_wait_ready 60
    cmd_wire_containers
    echo
    echo "every host had a route to every other host's subnet $ms ms after the last agent started"
    echo
    cmd_status 1
    echo
    if ((ipv4)); then
        cmd_ping 1 2
        echo
        cmd_ping 1 3
        echo
    fi
    if ((ipv6)); then
        cmd_ping6 1 2
        echo
        cmd_ping6 1 3
        echo
    fi
    # What h1's path probes find: each peer is probed within a period (10 s) of answering.
    local waited=0 st=""
    while ((waited < 25)); do
        st=$(cmd_status 1 2>/dev/null || true)
        grep -E '^h[0-9]+ ' <<<"$st" | grep -v ' self ' | grep -qvE ' ok [0-9.]+ms$' || break
        sleep 1
        waited=$((waited + 1))
    done
    echo "h1's path probes through the overlay, $waited s later (PATH):"
    grep -E '^(NAME|h[0-9]+) ' <<<"$st" || true
    echo
    if ((down_after)); then
        echo "tearing the testnet down (--down-after)"
    else
        echo "the testnet '$P' keeps running; try: $0 status 2, $0 ping 3 1"
        echo "tear it down with: ${WEFT_TESTNET:+WEFT_TESTNET=$P }$0 down"
    fi
}

main() {
    local cmd=${1:-}
    [[ -n $cmd ]] || {
        usage >&2
        exit 2
    }
    shift
    case $cmd in
    up) cmd_up "$@" ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    kill) cmd_kill "$@" ;;
    restart) cmd_restart "$@" ;;
    status) cmd_status "$@" ;;
    logs) cmd_logs "$@" ;;
    wait-ready) cmd_wait_ready "$@" ;;
    wire-containers) cmd_wire_containers "$@" ;;
    ping) cmd_ping "$@" ;;
    uping) cmd_uping "$@" ;;
    ping6) cmd_ping6 "$@" ;;
    uping6) cmd_uping6 "$@" ;;
    demo) cmd_demo "$@" ;;
    partition) cmd_partition "$@" ;;
    heal) cmd_heal "$@" ;;
    drop-udp) cmd_drop_udp "$@" ;;
    undrop) cmd_undrop "$@" ;;
    hop-mtu) cmd_hop_mtu "$@" ;;
    attacker) cmd_attacker "$@" ;;
    down) cmd_down "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

# Sourcing the file (for tests) defines the functions without running a command.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
