//! The data plane as desired state: what the kernel should hold for the current peer view, the
//! diff against what it holds ([`plan`]), and the [`Dataplane`] trait that observes and applies.
//! Implementations: [`netlink`] (the kernel, through rtnetlink) and [`fake`] (in memory); both pass
//! the one suite in `conformance` (built with the `testing` feature, which the crate's own tests
//! turn on; the fake is always built: `--dry-run` runs on it).

#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod desired;
pub mod fake;
pub mod masq;
pub mod netlink;
pub mod paths;
mod plan;
pub mod underlay;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use plan::plan;

/// Route protocol number marking every route weft installs (`ip route show proto 87`).
pub const RTPROT_WEFT: u8 = 87;
/// The udp backend's TUN device.
pub const TUN_DEVICE: &str = "weft0";
/// Interface alias marking every link weft created (`ip link show` prints `alias weft`).
pub const LINK_ALIAS: &str = "weft";

pub type Mac = [u8; 6];

/// The VXLAN device (`weft.<VNI>`), flannel-compatible.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VxlanDevice {
    pub name: String,
    pub vni: u32,
    /// UDP destination port (8472).
    pub port: u16,
    /// Underlay source address.
    pub local_ip: IpAddr,
    /// Underlay interface (by index) the device is bound to, if any.
    pub underlay_ifindex: Option<u32>,
    pub mac: Mac,
    pub mtu: u32,
    /// `<subnet>.0`, assigned as a /32 (none in an IPv6-only overlay).
    pub addr: Option<Ipv4Addr>,
    /// `<IPv6 subnet>::`, assigned as a /128, in a dual-stack overlay (the same device carries
    /// both families).
    pub addr6: Option<Ipv6Addr>,
}

#[cfg(test)]
impl VxlanDevice {
    /// The device the unit tests share: `weft.1`, VNI 1 on port 8472 from 192.0.2.1 over
    /// ifindex 3, MTU 1450, subnet 10.244.3.0/24.
    pub(crate) fn for_test() -> VxlanDevice {
        VxlanDevice {
            name: "weft.1".into(),
            vni: 1,
            port: 8472,
            local_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            underlay_ifindex: Some(3),
            mac: [0x02, 0, 0, 0, 0, 1],
            mtu: 1450,
            addr: Some(Ipv4Addr::new(10, 244, 3, 0)),
            addr6: None,
        }
    }
}

/// A bridge weft owns, holding the subnet's first address (`--bridge`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bridge {
    pub name: String,
    /// e.g. 10.244.3.1/24 (none in an IPv6-only overlay).
    pub addr: Option<Ipv4Net>,
    /// e.g. fd00:10:244:3::1/64, in a dual-stack overlay.
    pub addr6: Option<Ipv6Net>,
    pub mtu: u32,
}

/// Permanent neighbour entry on the VXLAN device: `<peer subnet>.0 lladdr <peer VTEP MAC>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Neighbour {
    /// `<peer subnet>.0`, or `<peer IPv6 subnet>::` for the IPv6 overlay.
    pub ip: IpAddr,
    pub mac: Mac,
}

/// Permanent FDB entry on the VXLAN device: `<peer VTEP MAC> dst <peer underlay IP> self`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FdbEntry {
    pub mac: Mac,
    pub dst: IpAddr,
}

/// A route in the main table with protocol [`RTPROT_WEFT`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// A peer's subnet (IPv4 or IPv6), or the overlay network (udp).
    pub dst: IpNet,
    /// The next hop, of `dst`'s family; unspecified for a device route (udp's TUN).
    pub gateway: IpAddr,
    /// Output device by name; `None` lets the kernel resolve the gateway (host-gw).
    pub device: Option<String>,
    /// `onlink` flag (vxlan routes via `<subnet>.0`).
    pub onlink: bool,
    /// The route's MTU (`RTAX_MTU`, `ip route ... mtu N`); `None` uses the device's. Set from
    /// path probes ([`crate::probe::route_mtu`]) for a peer whose path carries less than the
    /// overlay MTU.
    pub mtu: Option<u32>,
}

/// The udp backend's TUN device (`weft0`) as weft configures it: created by the tunnel, given
/// its MTU, weft's alias, a long transmit queue and `<subnet>.0/32` here, up. Its life is the
/// tunnel's: the plan configures it, never creates or deletes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunLink {
    pub name: String,
    pub mtu: u32,
    /// `<own subnet>.0`, the source address the host uses towards the overlay (a /32).
    pub addr: Option<Ipv4Addr>,
    /// `<own IPv6 subnet>::` (a /128) in a dual-stack overlay; without it the device carries no
    /// IPv6 at all.
    pub addr6: Option<Ipv6Addr>,
}

/// `--ip-masq`: flannel's masquerade rules for the overlay `network` and this node's `subnet`,
/// in the nftables table weft owns (`table ip weft`, see [`masq`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Masquerade {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
}

/// The same rules for the IPv6 overlay of a dual-stack node (`table ip6 weft`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Masquerade6 {
    pub network: Ipv6Net,
    pub subnet: Ipv6Net,
}

/// Everything weft holds in the kernel. The same shape is desired and observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub vxlan: Option<VxlanDevice>,
    pub bridge: Option<Bridge>,
    /// The udp backend's TUN device.
    pub tun: Option<TunLink>,
    pub neighbours: BTreeSet<Neighbour>,
    pub fdb: BTreeSet<FdbEntry>,
    pub routes: BTreeSet<Route>,
    /// The masquerade table (`--ip-masq`).
    pub masq: Option<Masquerade>,
    /// The IPv6 masquerade table (`--ip-masq`, dual-stack).
    pub masq6: Option<Masquerade6>,
    /// Observed only: weft's own VXLAN devices and bridges (by its alias) besides `vxlan` and
    /// `bridge`, e.g. left by a VNI or `--bridge` change. Whatever is not desired is deleted.
    pub other_vxlans: BTreeSet<String>,
    /// See `other_vxlans`.
    pub other_bridges: BTreeSet<String>,
}

/// One step of a reconcile plan. [`plan`] orders them so that applying in sequence is safe:
/// devices first; removals route → FDB → neighbour; additions neighbour → FDB → route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create the VXLAN device (or delete and recreate one whose fixed parameters differ), up.
    CreateVxlan(VxlanDevice),
    /// Change the MTU of the existing VXLAN device.
    SetVxlanMtu {
        name: String,
        mtu: u32,
    },
    /// Replace the addresses on the existing VXLAN device (its IPv4 one; its IPv6 one, or none).
    SetVxlanAddr {
        name: String,
        addr: Option<Ipv4Addr>,
        addr6: Option<Ipv6Addr>,
    },
    DeleteVxlan {
        name: String,
    },
    /// Give the existing TUN device its MTU, alias, queue length and address (the only one it
    /// keeps), and bring it up.
    ConfigureTun(TunLink),
    /// Create the bridge if missing, set MTU, replace its address, bring it up.
    EnsureBridge(Bridge),
    DeleteBridge {
        name: String,
    },
    AddNeighbour {
        device: String,
        neighbour: Neighbour,
    },
    DelNeighbour {
        device: String,
        neighbour: Neighbour,
    },
    AddFdb {
        device: String,
        entry: FdbEntry,
    },
    DelFdb {
        device: String,
        entry: FdbEntry,
    },
    AddRoute(Route),
    DelRoute(Route),
    /// Replace `table ip weft` with the masquerade rules.
    SetMasq(Masquerade),
    /// Delete `table ip weft`.
    DelMasq,
    /// Replace `table ip6 weft` with the IPv6 masquerade rules.
    SetMasq6(Masquerade6),
    /// Delete `table ip6 weft`.
    DelMasq6,
}

impl Op {
    /// Short kind name for logs and metrics (`op` field).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::CreateVxlan(_) => "create_vxlan",
            Op::SetVxlanMtu { .. } => "set_mtu",
            Op::SetVxlanAddr { .. } => "set_addr",
            Op::DeleteVxlan { .. } => "delete_vxlan",
            Op::ConfigureTun(_) => "tun_link",
            Op::EnsureBridge(_) => "ensure_bridge",
            Op::DeleteBridge { .. } => "delete_bridge",
            Op::AddNeighbour { .. } => "add_neigh",
            Op::DelNeighbour { .. } => "del_neigh",
            Op::AddFdb { .. } => "add_fdb",
            Op::DelFdb { .. } => "del_fdb",
            Op::AddRoute(_) => "add_route",
            Op::DelRoute(_) => "del_route",
            Op::SetMasq(_) => "ip_masq",
            Op::DelMasq => "del_masq",
            Op::SetMasq6(_) => "ip_masq6",
            Op::DelMasq6 => "del_masq6",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("netlink {op} failed: {source}")]
    Netlink {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op}: {what}")]
    Refused { op: &'static str, what: String },
    /// The op needs a device that does not exist (e.g. a route via a deleted VXLAN device).
    #[error("{op}: no device {name}")]
    NoDevice { op: &'static str, name: String },
    /// The underlay interface or address could not be determined.
    #[error("underlay: {0}")]
    Underlay(#[from] underlay::UnderlayError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The masquerade table could not be written.
    #[error("ip-masq: {0}")]
    Masq(#[from] masq::MasqError),
}

/// A data plane: it reports what weft owns in it and applies single operations. Adds are
/// idempotent (an existing equal entry is success), deletes of missing entries are success.
#[async_trait]
pub trait Dataplane: Send {
    /// What weft owns right now, found by its own marks alone: links with the alias
    /// [`LINK_ALIAS`] (the first VXLAN device and bridge by index in `vxlan`/`bridge`, any others
    /// in `other_vxlans`/`other_bridges`), the neighbour/FDB entries on that VXLAN device,
    /// routes with [`RTPROT_WEFT`], the configured TUN device and the `ip weft` table. A device
    /// holding more than one IPv4 address reports an unspecified one, so a reconcile leaves it
    /// exactly the desired one.
    async fn observe(&mut self) -> Result<State, DataplaneError>;
    async fn apply(&mut self, op: &Op) -> Result<(), DataplaneError>;

    /// Which of `ips` this host reaches without a gateway (same L2 segment): host-gw and
    /// DirectRouting route to those directly. [`paths::Onlink::Unknown`] when this data plane
    /// cannot tell (every peer then counts as on-link).
    async fn onlink(&mut self, _ips: &[IpAddr]) -> Result<paths::Onlink, DataplaneError> {
        Ok(paths::Onlink::Unknown)
    }

    /// The underlay `select` names as the host holds it now (read only): its interface, index,
    /// address and MTU. `public_ip`, when a local interface holds it, picks that interface for
    /// [`underlay::UnderlaySelect::DefaultRoute`].
    async fn underlay(
        &mut self,
        select: &underlay::UnderlaySelect,
        public_ip: Option<IpAddr>,
    ) -> Result<underlay::UnderlayInfo, DataplaneError>;
}

/// Outcome of one [`reconcile`] pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub applied: Vec<&'static str>,
    pub failed: Vec<(&'static str, String)>,
}

/// Observe, plan and apply. With `allow_delete` false (start-up, before the peer view is warm)
/// nothing is removed. Failed ops are reported and the rest still applied.
pub async fn reconcile(
    dp: &mut dyn Dataplane,
    desired: &State,
    allow_delete: bool,
) -> Result<ReconcileReport, DataplaneError> {
    let observed = dp.observe().await?;
    let mut report = ReconcileReport::default();
    for op in plan(desired, &observed) {
        if !allow_delete && op.is_removal() {
            continue;
        }
        match dp.apply(&op).await {
            Ok(()) => report.applied.push(op.kind()),
            Err(err) => {
                tracing::warn!(op = op.kind(), error = %err, "data plane operation failed");
                report.failed.push((op.kind(), err.to_string()));
            }
        }
    }
    Ok(report)
}

impl Op {
    /// Whether the op takes something away (held back until the peer view is warm).
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Op::DeleteVxlan { .. }
                | Op::DeleteBridge { .. }
                | Op::DelNeighbour { .. }
                | Op::DelFdb { .. }
                | Op::DelRoute(_)
                | Op::DelMasq
                | Op::DelMasq6
        )
    }
}
