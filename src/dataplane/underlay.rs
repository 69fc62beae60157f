//! The underlay as the data plane reads it: how the operator chose it ([`UnderlaySelect`]) and
//! what the host holds for that choice ([`UnderlayInfo`]). Reading it is a [`super::Dataplane`]
//! query (`underlay`), so the agent follows a re-created interface or a changed MTU the same
//! way on the kernel and on the fake.

use std::net::{IpAddr, Ipv6Addr};

/// How the underlay interface and address are chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnderlaySelect {
    /// The interface of the default route.
    DefaultRoute,
    /// `--iface eth1`.
    Iface(String),
    /// `--iface 192.0.2.10`: the interface holding this address.
    Addr(IpAddr),
}

/// The underlay as the agent uses it: where VXLAN packets leave, and its MTU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnderlayInfo {
    /// Underlay interface name.
    pub ifname: String,
    /// Underlay interface index.
    pub ifindex: u32,
    /// Local underlay address (VXLAN source).
    pub ip: IpAddr,
    /// Underlay interface MTU.
    pub mtu: u32,
    /// The interface's global IPv6 address, when it has one: a dual-stack node announces it
    /// (unless `--public-ipv6` names another) as the next hop of host-gw's IPv6 routes.
    pub ipv6: Option<Ipv6Addr>,
}

/// Why the underlay could not be found (each displays as the operator reads it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnderlayError {
    /// `--iface NAME`: no such interface.
    #[error("no interface named {0}")]
    NoInterface(String),
    /// `--iface NAME`: it holds no global address.
    #[error("interface {0} has no global address")]
    NoGlobalAddress(String),
    /// `--iface ADDR`: no interface holds it.
    #[error("no interface holds address {0}")]
    NoAddressHolder(IpAddr),
    /// No IPv4 default route to follow.
    #[error("no IPv4 default route: choose the interface with --iface")]
    NoDefaultRoute,
    /// The default route's interface has no IPv4 address.
    #[error("default route interface {0} has no IPv4 address")]
    DefaultRouteNoAddress(String),
    /// A route or address names an interface index that is gone.
    #[error("no link with index {0}")]
    NoLinkIndex(u32),
}

/// How an underlay lookup failure reads to the operator: `underlay: <why>`.
pub fn failure_text(e: &super::DataplaneError) -> String {
    match e {
        super::DataplaneError::Underlay(why) => format!("underlay: {why}"),
        other => format!("underlay: {other}"),
    }
}

/// Why a lookup failed, without the `underlay: ` prefix (for a message that names the flag).
pub fn failure_reason(e: &super::DataplaneError) -> String {
    match e {
        super::DataplaneError::Underlay(why) => why.to_string(),
        other => other.to_string(),
    }
}
