//! The kernel data plane over rtnetlink: observes and applies [`State`] for the vxlan and host-gw
//! backends, discovers the underlay, and removes everything weft owns (`weft leave`).
//!
//! Ownership: routes are weft's iff their protocol is [`RTPROT_WEFT`] (main table); links iff
//! their alias is [`LINK_ALIAS`]. Nothing else is modified. Adds that find an equal entry and
//! deletes that find nothing succeed. One request (or dump) is in flight at a time: every method
//! takes `&mut self` and awaits each request before the next.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVxlan, RouteMessageBuilder};
use tokio::task::JoinHandle;

use super::underlay::{UnderlayError, UnderlayInfo, UnderlaySelect};
use super::{
    Bridge, Dataplane, DataplaneError, FdbEntry, LINK_ALIAS, Mac, Neighbour, Op, RTPROT_WEFT,
    Route, State, TunLink, VxlanDevice,
};

// ---------------------------------------------------------------------------------------------
// Errors

fn nl(op: &'static str) -> impl FnOnce(rtnetlink::Error) -> DataplaneError {
    move |source| DataplaneError::Netlink { op, source }
}

/// The positive errno of a netlink error reply, if that is what the error is.
fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().saturating_abs()),
        _ => None,
    }
}

/// `Ok` for success and for the listed errnos (idempotent adds and deletes).
fn tolerate(
    result: Result<(), rtnetlink::Error>,
    op: &'static str,
    ok_errnos: &[i32],
) -> Result<(), DataplaneError> {
    match result {
        Ok(()) => Ok(()),
        Err(err) if errno(&err).is_some_and(|e| ok_errnos.contains(&e)) => {
            tracing::debug!(op, error = %err, "already in the wanted state");
            Ok(())
        }
        Err(err) => Err(DataplaneError::Netlink { op, source: err }),
    }
}

// ---------------------------------------------------------------------------------------------
// Connection

/// An rtnetlink socket whose connection task is aborted on drop.
struct Conn {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Conn {
    fn open() -> Result<Self, DataplaneError> {
        let (connection, handle, _unsolicited) = rtnetlink::new_connection()?;
        let task = tokio::spawn(connection);
        Ok(Self { handle, task })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Parsed kernel objects (pure conversions from netlink messages)

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct VxlanAttrs {
    vni: Option<u32>,
    port: Option<u16>,
    local: Option<IpAddr>,
    link: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Vxlan(VxlanAttrs),
    Bridge,
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Link {
    index: u32,
    name: String,
    alias: Option<String>,
    kind: Kind,
    mtu: u32,
    mac: Option<Mac>,
    up: bool,
}

impl Link {
    fn owned(&self) -> bool {
        self.alias.as_deref() == Some(LINK_ALIAS)
    }

    fn is_vxlan(&self) -> bool {
        matches!(self.kind, Kind::Vxlan(_))
    }

    fn is_bridge(&self) -> bool {
        self.kind == Kind::Bridge
    }
}

fn mac_from(bytes: &[u8]) -> Option<Mac> {
    <Mac>::try_from(bytes).ok()
}

fn parse_link(msg: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut alias = None;
    let mut kind = Kind::Other;
    let mut mtu = 0;
    let mut mac = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::IfAlias(a) if !a.is_empty() => alias = Some(a.clone()),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::Address(a) => mac = mac_from(a),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::Vxlan) if kind == Kind::Other => {
                            kind = Kind::Vxlan(VxlanAttrs::default());
                        }
                        LinkInfo::Kind(InfoKind::Bridge) => kind = Kind::Bridge,
                        LinkInfo::Data(InfoData::Vxlan(data)) => {
                            kind = Kind::Vxlan(parse_vxlan(data));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Link {
        index: msg.header.index,
        name: name?,
        alias,
        kind,
        mtu,
        mac,
        up: msg.header.flags.contains(LinkFlags::Up),
    })
}

fn parse_vxlan(data: &[InfoVxlan]) -> VxlanAttrs {
    let mut attrs = VxlanAttrs::default();
    for item in data {
        match item {
            InfoVxlan::Id(id) => attrs.vni = Some(*id),
            InfoVxlan::Port(p) => attrs.port = Some(*p),
            InfoVxlan::Local(ip) if !ip.is_unspecified() => attrs.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) if !ip.is_unspecified() => {
                attrs.local = Some(IpAddr::V6(*ip));
            }
            InfoVxlan::Link(idx) if *idx != 0 => attrs.link = Some(*idx),
            _ => {}
        }
    }
    attrs
}

/// An interface address: (ifindex, address with prefix, scope).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Addr {
    index: u32,
    net: IpNet,
    scope: AddressScope,
}

fn parse_addr(msg: &AddressMessage) -> Option<Addr> {
    let mut address = None;
    let mut local = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Address(a) => address = Some(*a),
            AddressAttribute::Local(a) => local = Some(*a),
            _ => {}
        }
    }
    // For IPv4 IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS.
    let ip = local.or(address)?;
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    Some(Addr {
        index: msg.header.index,
        net,
        scope: msg.header.scope,
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::from(b));
    }
    <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from)
}

fn neighbour_ip(addr: &NeighbourAddress) -> Option<IpAddr> {
    match addr {
        NeighbourAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        NeighbourAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        NeighbourAddress::Other(bytes) => ip_from_bytes(bytes),
        _ => None,
    }
}

/// (destination, link-layer address) of a neighbour or FDB message.
fn neighbour_parts(msg: &NeighbourMessage) -> (Option<IpAddr>, Option<Mac>) {
    let mut dst = None;
    let mut lladdr = None;
    for attr in &msg.attributes {
        match attr {
            NeighbourAttribute::Destination(a) => dst = neighbour_ip(a),
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = mac_from(l),
            _ => {}
        }
    }
    (dst, lladdr)
}

/// A permanent IPv4 or IPv6 neighbour on `ifindex`.
fn parse_neighbour(msg: &NeighbourMessage, ifindex: u32) -> Option<Neighbour> {
    if msg.header.ifindex != ifindex || msg.header.state != NeighbourState::Permanent {
        return None;
    }
    match neighbour_parts(msg) {
        (Some(ip), Some(mac)) => Some(Neighbour { ip, mac }),
        _ => None,
    }
}

/// A permanent `self` FDB entry with a destination on `ifindex`.
fn parse_fdb(msg: &NeighbourMessage, ifindex: u32) -> Option<FdbEntry> {
    if msg.header.ifindex != ifindex
        || msg.header.state != NeighbourState::Permanent
        || !msg.header.flags.contains(NeighbourFlags::Own)
    {
        return None;
    }
    match neighbour_parts(msg) {
        (Some(dst), Some(mac)) if mac != [0; 6] => Some(FdbEntry { mac, dst }),
        _ => None,
    }
}

fn route_table(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn route_v4(addr: &RouteAddress) -> Option<Ipv4Addr> {
    match addr {
        RouteAddress::Inet(v4) => Some(*v4),
        _ => None,
    }
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The unspecified address of a route message's family.
fn unspecified_of(msg: &RouteMessage) -> IpAddr {
    if msg.header.address_family == AddressFamily::Inet6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// A unicast route of the main table in `dst`'s family.
fn is_main_unicast_like(msg: &RouteMessage, dst: &IpNet) -> bool {
    let family = match dst {
        IpNet::V4(_) => AddressFamily::Inet,
        IpNet::V6(_) => AddressFamily::Inet6,
    };
    msg.header.address_family == family
        && msg.header.kind == RouteType::Unicast
        && route_table(msg) == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// A route's destination (the family's unspecified address when absent: the default route).
fn route_dst(msg: &RouteMessage) -> IpAddr {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => route_ip(d),
            _ => None,
        })
        .unwrap_or_else(|| unspecified_of(msg))
}

/// An IPv4 unicast route of the main table (the only routes weft reads to choose or check paths).
fn is_main_v4_unicast(msg: &RouteMessage) -> bool {
    msg.header.address_family == AddressFamily::Inet
        && msg.header.kind == RouteType::Unicast
        && route_table(msg) == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// A route's IPv4 destination (0.0.0.0 when absent: the default route).
fn route_dst_v4(msg: &RouteMessage) -> Ipv4Addr {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => route_v4(d),
            _ => None,
        })
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

/// A route's metric (0 when absent).
fn route_priority(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn is_weft_main(msg: &RouteMessage) -> bool {
    msg.header.protocol == RouteProtocol::from(RTPROT_WEFT)
        && route_table(msg) == u32::from(RouteHeader::RT_TABLE_MAIN)
}

/// A weft route (IPv4 or IPv6) in the main table. The device is reported only when it is a link
/// weft owns (a host-gw route resolves to the underlay interface, which the desired state leaves
/// open).
fn parse_route(msg: &RouteMessage, links: &HashMap<u32, Link>) -> Option<Route> {
    let family = msg.header.address_family;
    if !(family == AddressFamily::Inet || family == AddressFamily::Inet6) || !is_weft_main(msg) {
        return None;
    }
    let mut dst = unspecified_of(msg);
    let mut gateway = None;
    let mut oif = None;
    let mut mtu = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a)?,
            RouteAttribute::Gateway(a) => gateway = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Metrics(metrics) => {
                mtu = metrics.iter().find_map(|m| match m {
                    RouteMetric::Mtu(v) if *v != 0 => Some(*v),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    let dst = IpNet::new(dst, msg.header.destination_prefix_length).ok()?;
    let device = oif
        .and_then(|i| links.get(&i))
        .filter(|l| l.owned())
        .map(|l| l.name.clone());
    // A route straight to a weft device (the udp backend's weft0) has no gateway.
    let gateway = match gateway {
        Some(g) => g,
        None if device.is_some() => unspecified_of(msg),
        None => return None,
    };
    Some(Route {
        dst,
        gateway,
        device,
        onlink: msg.header.flags.contains(RouteFlags::Onlink),
        mtu,
    })
}

// ---------------------------------------------------------------------------------------------
// Requests shared by the data plane and the free functions

async fn dump_links(handle: &Handle) -> Result<Vec<Link>, DataplaneError> {
    let msgs: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("dump links"))?;
    Ok(msgs.iter().filter_map(parse_link).collect())
}

async fn dump_addrs(handle: &Handle) -> Result<Vec<Addr>, DataplaneError> {
    let msgs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl("dump addresses"))?;
    Ok(msgs.iter().filter_map(parse_addr).collect())
}

async fn dump_routes(handle: &Handle, v6: bool) -> Result<Vec<RouteMessage>, DataplaneError> {
    let filter = if v6 {
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
    } else {
        RouteMessageBuilder::<Ipv4Addr>::new().build()
    };
    handle
        .route()
        .get(filter)
        .execute()
        .try_collect()
        .await
        .map_err(nl("dump routes"))
}

async fn dump_neighbours(
    handle: &Handle,
    family: AddressFamily,
) -> Result<Vec<NeighbourMessage>, DataplaneError> {
    handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(nl("dump neighbours"))
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<Link>, DataplaneError> {
    let result: Result<Vec<LinkMessage>, _> = handle
        .link()
        .get()
        .match_name(name)
        .execute()
        .try_collect()
        .await;
    match result {
        Ok(msgs) => Ok(msgs.iter().filter_map(parse_link).next()),
        Err(err) if errno(&err) == Some(libc::ENODEV) => Ok(None),
        Err(err) => Err(DataplaneError::Netlink {
            op: "get link",
            source: err,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The data plane

/// The kernel data plane through one rtnetlink socket.
pub struct NetlinkDataplane {
    conn: Conn,
}

impl NetlinkDataplane {
    /// Open the rtnetlink socket (in the calling thread's network namespace) and spawn its
    /// connection task; the task is aborted when the data plane is dropped.
    pub async fn new() -> Result<Self, DataplaneError> {
        Ok(Self {
            conn: Conn::open()?,
        })
    }

    fn handle(&self) -> &Handle {
        &self.conn.handle
    }

    /// Remove every route with protocol [`RTPROT_WEFT`] in the main table (IPv4 and IPv6) and
    /// every link with alias [`LINK_ALIAS`] (`weft leave`).
    pub async fn remove_all_owned(&mut self) -> Result<(), DataplaneError> {
        for v6 in [false, true] {
            for msg in dump_routes(self.handle(), v6).await? {
                if !is_weft_main(&msg) {
                    continue;
                }
                let result = self.handle().route().del(msg).execute().await;
                tolerate(result, "del route", &[libc::ESRCH, libc::ENOENT])?;
            }
        }
        for link in dump_links(self.handle()).await? {
            if link.owned() {
                tracing::info!(ifindex = link.index, name = %link.name, "removing weft link");
                let result = self.handle().link().del(link.index).execute().await;
                tolerate(result, "del link", &[libc::ENODEV])?;
            }
        }
        Ok(())
    }

    /// The link named `name` if weft owns it; `Refused` if it exists and is someone else's.
    async fn owned_link(
        &self,
        op: &'static str,
        name: &str,
    ) -> Result<Option<Link>, DataplaneError> {
        match link_by_name(self.handle(), name).await? {
            Some(link) if !link.owned() => Err(DataplaneError::Refused {
                op,
                what: format!("link {name} exists and is not owned by weft"),
            }),
            other => Ok(other),
        }
    }

    async fn require_owned(&self, op: &'static str, name: &str) -> Result<Link, DataplaneError> {
        self.owned_link(op, name)
            .await?
            .ok_or_else(|| DataplaneError::NoDevice {
                op,
                name: name.to_owned(),
            })
    }

    async fn set_alias(&self, index: u32) -> Result<(), DataplaneError> {
        let msg = LinkUnspec::new_with_index(index).alias(LINK_ALIAS).build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("set alias"))
    }

    /// Leaves `want` as the only address of its family on `index` (IPv6: the only global one;
    /// the kernel's link-local address stays). `None`: no address of the family (`v6`) at all.
    /// IPv6 addresses skip duplicate detection: they are this node's own subnet's.
    async fn keep_only_addr(
        &self,
        index: u32,
        v6: bool,
        want: Option<IpNet>,
    ) -> Result<(), DataplaneError> {
        if let Some(net) = want {
            let mut request = self
                .handle()
                .address()
                .add(index, net.addr(), net.prefix_len())
                .replace();
            if v6 {
                request
                    .message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            tolerate(request.execute().await, "add address", &[libc::EEXIST])?;
        }
        let msgs: Vec<AddressMessage> = self
            .handle()
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(nl("dump addresses"))?;
        for msg in msgs {
            let Some(addr) = parse_addr(&msg) else {
                continue;
            };
            let of_family =
                addr.net.addr().is_ipv6() == v6 && !(v6 && addr.scope == AddressScope::Link);
            if addr.index == index && of_family && Some(addr.net) != want {
                let result = self.handle().address().del(msg).execute().await;
                tolerate(result, "del address", &[libc::EADDRNOTAVAIL, libc::ENOENT])?;
            }
        }
        Ok(())
    }

    async fn create_vxlan(&self, dev: &VxlanDevice) -> Result<(), DataplaneError> {
        const OP: &str = "create_vxlan";
        if let Some(link) = link_by_name(self.handle(), &dev.name).await? {
            // A VXLAN link with exactly our name and no alias at all is one weft created but
            // could not label (the alias is set right after creation): take it back.
            let half_created = link.is_vxlan() && link.alias.is_none();
            if !link.owned() && !half_created {
                return Err(DataplaneError::Refused {
                    op: OP,
                    what: format!("link {} exists and is not owned by weft", dev.name),
                });
            }
            tracing::info!(name = %dev.name, ifindex = link.index, "recreating VXLAN device");
            let result = self.handle().link().del(link.index).execute().await;
            tolerate(result, "delete link", &[libc::ENODEV])?;
        }
        let mut builder = LinkVxlan::new(&dev.name, dev.vni)
            .port(dev.port)
            .learning(false);
        builder = match dev.local_ip {
            IpAddr::V4(ip) => builder.local(ip),
            IpAddr::V6(ip) => builder.local6(ip),
        };
        if let Some(index) = dev.underlay_ifindex {
            builder = builder.dev(index);
        }
        let msg = builder.mtu(dev.mtu).address(dev.mac.to_vec()).build();
        self.handle()
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(nl("create vxlan"))?;
        let link = link_by_name(self.handle(), &dev.name)
            .await?
            .ok_or_else(|| DataplaneError::NoDevice {
                op: OP,
                name: dev.name.clone(),
            })?;
        self.set_alias(link.index).await?;
        self.keep_only_addr(link.index, false, dev.addr.map(|a| IpNet::V4(a.into())))
            .await?;
        self.keep_only_addr(
            link.index,
            true,
            dev.addr6.map(|a| IpNet::V6(Ipv6Net::from(a))),
        )
        .await?;
        let up = LinkUnspec::new_with_index(link.index).up().build();
        self.handle()
            .link()
            .set(up)
            .execute()
            .await
            .map_err(nl("set link up"))?;
        tracing::info!(name = %dev.name, ifindex = link.index, vni = dev.vni, "VXLAN device created");
        Ok(())
    }

    async fn ensure_bridge(&self, bridge: &Bridge) -> Result<(), DataplaneError> {
        const OP: &str = "ensure_bridge";
        let link = match self.owned_link(OP, &bridge.name).await? {
            Some(link) if !link.is_bridge() => {
                return Err(DataplaneError::Refused {
                    op: OP,
                    what: format!("link {} is not a bridge", bridge.name),
                });
            }
            Some(link) => link,
            None => {
                let msg = LinkBridge::new(&bridge.name).mtu(bridge.mtu).build();
                self.handle()
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(nl("create bridge"))?;
                let link = link_by_name(self.handle(), &bridge.name)
                    .await?
                    .ok_or_else(|| DataplaneError::NoDevice {
                        op: OP,
                        name: bridge.name.clone(),
                    })?;
                self.set_alias(link.index).await?;
                tracing::info!(name = %bridge.name, ifindex = link.index, "bridge created");
                link
            }
        };
        let msg = LinkUnspec::new_with_index(link.index)
            .mtu(bridge.mtu)
            .up()
            .build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("set bridge"))?;
        self.keep_only_addr(link.index, false, bridge.addr.map(IpNet::V4))
            .await?;
        self.keep_only_addr(link.index, true, bridge.addr6.map(IpNet::V6))
            .await
    }

    /// Configures the udp tunnel's TUN device, which the tunnel created (weft's by name: the
    /// alias marks it on the first pass).
    async fn configure_tun(&self, tun: &TunLink) -> Result<(), DataplaneError> {
        const OP: &str = "tun_link";
        let link = link_by_name(self.handle(), &tun.name)
            .await?
            .ok_or_else(|| DataplaneError::NoDevice {
                op: OP,
                name: tun.name.clone(),
            })?;
        if !link.owned() && link.alias.is_some() {
            return Err(DataplaneError::Refused {
                op: OP,
                what: format!("link {} exists and is not owned by weft", tun.name),
            });
        }
        let msg = LinkUnspec::new_with_index(link.index)
            .mtu(tun.mtu)
            // The TX thread drains the queue in batches; the default 500 drops under a burst
            // and TCP then backs off (measured: 2,700 retransmits in 5 s at 500, none at 10,000).
            .txqueuelen(10_000)
            .alias(LINK_ALIAS)
            .up()
            .build();
        self.handle()
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl("configure tun"))?;
        // IPv6 on the TUN device only in a dual-stack overlay (otherwise its router
        // solicitations would count as drops). /proc/sys/net is this network namespace's.
        let disable = if tun.addr6.is_some() { "0" } else { "1" };
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", tun.name),
            disable,
        );
        self.keep_only_addr(link.index, false, tun.addr.map(|a| IpNet::V4(a.into())))
            .await?;
        if tun.addr6.is_some() {
            self.keep_only_addr(
                link.index,
                true,
                tun.addr6.map(|a| IpNet::V6(Ipv6Net::from(a))),
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_link(&self, op: &'static str, name: &str) -> Result<(), DataplaneError> {
        if let Some(link) = self.owned_link(op, name).await? {
            let result = self.handle().link().del(link.index).execute().await;
            tolerate(result, "delete link", &[libc::ENODEV])?;
            tracing::info!(name, ifindex = link.index, "link deleted");
        }
        Ok(())
    }

    /// The netlink message for `route` (either family: gateway and destination of one family,
    /// which [`Route`]s built by weft always are; a mixed one is refused).
    fn route_message(route: &Route, oif: Option<u32>) -> Result<RouteMessage, DataplaneError> {
        let mixed = |e| DataplaneError::Refused {
            op: "route",
            what: format!("route {} via {}: {e}", route.dst, route.gateway),
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.dst.network(), route.dst.prefix_len())
            .map_err(mixed)?
            .table_id(u32::from(RouteHeader::RT_TABLE_MAIN))
            .protocol(RouteProtocol::from(RTPROT_WEFT));
        if !route.gateway.is_unspecified() {
            builder = builder.gateway(route.gateway).map_err(mixed)?;
        }
        if let Some(oif) = oif {
            builder = builder.output_interface(oif);
        }
        if route.onlink {
            builder = builder.onlink();
        }
        let mut msg = builder.build();
        if let Some(mtu) = route.mtu {
            msg.attributes
                .push(RouteAttribute::Metrics(vec![RouteMetric::Mtu(mtu)]));
        }
        Ok(msg)
    }

    /// The route in the main table to exactly `dst` (default tos and metric), if any.
    async fn existing_route(&self, dst: IpNet) -> Result<Option<RouteMessage>, DataplaneError> {
        Ok(dump_routes(self.handle(), dst.addr().is_ipv6())
            .await?
            .into_iter()
            .find(|msg| {
                is_main_unicast_like(msg, &dst)
                    && msg.header.destination_prefix_length == dst.prefix_len()
                    && route_dst(msg) == dst.network()
                    && msg.header.tos == 0
                    && route_priority(msg) == 0
            }))
    }

    async fn add_route(&self, route: &Route) -> Result<(), DataplaneError> {
        const OP: &str = "add_route";
        let oif = match &route.device {
            Some(name) => Some(
                link_by_name(self.handle(), name)
                    .await?
                    .ok_or_else(|| DataplaneError::NoDevice {
                        op: OP,
                        name: name.clone(),
                    })?
                    .index,
            ),
            None => None,
        };
        let msg = Self::route_message(route, oif)?;
        match self.handle().route().add(msg.clone()).execute().await {
            Ok(()) => return Ok(()),
            Err(err) if errno(&err) == Some(libc::EEXIST) => {}
            Err(err) => {
                return Err(DataplaneError::Netlink {
                    op: OP,
                    source: err,
                });
            }
        }
        // A route to this destination exists: replace it only if it is ours.
        match self.existing_route(route.dst).await? {
            Some(existing) if !is_weft_main(&existing) => Err(DataplaneError::Refused {
                op: OP,
                what: format!(
                    "a route to {} exists and is not owned by weft (protocol {:?})",
                    route.dst, existing.header.protocol
                ),
            }),
            _ => self
                .handle()
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(nl(OP)),
        }
    }

    async fn del_route(&self, route: &Route) -> Result<(), DataplaneError> {
        let oif = match &route.device {
            Some(name) => match link_by_name(self.handle(), name).await? {
                Some(link) => Some(link.index),
                // The device is gone and the route with it.
                None => return Ok(()),
            },
            None => None,
        };
        let mut msg = Self::route_message(route, oif)?;
        msg.header.scope = RouteScope::NoWhere;
        // The kernel does not match metrics on delete; leave them out.
        msg.attributes
            .retain(|a| !matches!(a, RouteAttribute::Metrics(_)));
        let result = self.handle().route().del(msg).execute().await;
        tolerate(result, "del_route", &[libc::ESRCH, libc::ENOENT])
    }

    fn neighbour_message(family: AddressFamily, index: u32) -> NeighbourMessage {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        msg.header.ifindex = index;
        msg
    }

    async fn apply_op(&mut self, op: &Op) -> Result<(), DataplaneError> {
        let kind = op.kind();
        match op {
            Op::CreateVxlan(dev) => self.create_vxlan(dev).await,
            Op::SetVxlanMtu { name, mtu } => {
                let link = self.require_owned(kind, name).await?;
                let msg = LinkUnspec::new_with_index(link.index).mtu(*mtu).build();
                self.handle()
                    .link()
                    .set(msg)
                    .execute()
                    .await
                    .map_err(nl("set mtu"))
            }
            Op::SetVxlanAddr { name, addr, addr6 } => {
                let link = self.require_owned(kind, name).await?;
                self.keep_only_addr(link.index, false, addr.map(|a| IpNet::V4(a.into())))
                    .await?;
                self.keep_only_addr(link.index, true, addr6.map(|a| IpNet::V6(Ipv6Net::from(a))))
                    .await
            }
            Op::DeleteVxlan { name } | Op::DeleteBridge { name } => {
                self.delete_link(kind, name).await
            }
            Op::EnsureBridge(bridge) => self.ensure_bridge(bridge).await,
            Op::ConfigureTun(tun) => self.configure_tun(tun).await,
            Op::AddNeighbour { device, neighbour } => {
                let link = self.require_owned(kind, device).await?;
                self.handle()
                    .neighbours()
                    .add(link.index, neighbour.ip)
                    .link_layer_address(&neighbour.mac)
                    .state(NeighbourState::Permanent)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add neighbour"))
            }
            Op::DelNeighbour { device, neighbour } => {
                let Some(link) = link_by_name(self.handle(), device).await? else {
                    return Ok(());
                };
                let (family, dst) = match neighbour.ip {
                    IpAddr::V4(v4) => (AddressFamily::Inet, NeighbourAddress::Inet(v4)),
                    IpAddr::V6(v6) => (AddressFamily::Inet6, NeighbourAddress::Inet6(v6)),
                };
                let mut msg = Self::neighbour_message(family, link.index);
                msg.attributes.push(NeighbourAttribute::Destination(dst));
                let result = self.handle().neighbours().del(msg).execute().await;
                tolerate(result, "del neighbour", &[libc::ENOENT, libc::ESRCH])
            }
            Op::AddFdb { device, entry } => {
                let link = self.require_owned(kind, device).await?;
                self.handle()
                    .neighbours()
                    .add_bridge(link.index, &entry.mac)
                    .flags(NeighbourFlags::Own)
                    .state(NeighbourState::Permanent)
                    .destination(entry.dst)
                    .replace()
                    .execute()
                    .await
                    .map_err(nl("add fdb"))
            }
            Op::DelFdb { device, entry } => {
                let Some(link) = link_by_name(self.handle(), device).await? else {
                    return Ok(());
                };
                let mut msg = Self::neighbour_message(AddressFamily::Bridge, link.index);
                msg.header.flags = NeighbourFlags::Own;
                msg.header.state = NeighbourState::Permanent;
                msg.attributes
                    .push(NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()));
                msg.attributes
                    .push(NeighbourAttribute::Destination(entry.dst.into()));
                let result = self.handle().neighbours().del(msg).execute().await;
                tolerate(result, "del fdb", &[libc::ENOENT, libc::ESRCH])
            }
            Op::AddRoute(route) => self.add_route(route).await,
            Op::DelRoute(route) => self.del_route(route).await,
            Op::SetMasq(m) => Ok(super::masq::install(*m).await?),
            Op::DelMasq => Ok(super::masq::remove().await?),
            Op::SetMasq6(m) => Ok(super::masq::install6(*m).await?),
            Op::DelMasq6 => Ok(super::masq::remove6().await?),
        }
    }

    async fn observe_state(&mut self) -> Result<State, DataplaneError> {
        let links = dump_links(self.handle()).await?;
        // weft's links of one kind, by index: the first is the device, the rest are leftovers.
        let owned = |pred: fn(&Link) -> bool| -> Vec<Link> {
            let mut ours: Vec<Link> = links
                .iter()
                .filter(|l| l.owned() && pred(l))
                .cloned()
                .collect();
            ours.sort_by_key(|l| l.index);
            ours
        };
        let mut vxlans = owned(Link::is_vxlan).into_iter();
        let vxlan_link = vxlans.next();
        let mut bridges = owned(Link::is_bridge).into_iter();
        let bridge_link = bridges.next();
        // The udp tunnel's device, configured (weft's alias) and up.
        let tun_link = links
            .iter()
            .find(|l| l.name == super::TUN_DEVICE && l.owned() && l.up)
            .cloned();
        let addrs = if vxlan_link.is_some() || bridge_link.is_some() || tun_link.is_some() {
            dump_addrs(self.handle()).await?
        } else {
            Vec::new()
        };
        let v4_on = |index: u32| -> Vec<Ipv4Net> {
            addrs
                .iter()
                .filter(|a| a.index == index)
                .filter_map(|a| match a.net {
                    IpNet::V4(n) => Some(n),
                    IpNet::V6(_) => None,
                })
                .collect()
        };
        // Global IPv6 addresses (the kernel's link-local one is not weft's).
        let v6_on = |index: u32| -> Vec<Ipv6Net> {
            addrs
                .iter()
                .filter(|a| a.index == index && a.scope != AddressScope::Link)
                .filter_map(|a| match a.net {
                    IpNet::V6(n) => Some(n),
                    IpNet::V4(_) => None,
                })
                .collect()
        };

        let mut state = State {
            other_vxlans: vxlans.map(|l| l.name).collect(),
            other_bridges: bridges.map(|l| l.name).collect(),
            ..State::default()
        };
        if let Some(link) = &vxlan_link {
            let Kind::Vxlan(attrs) = &link.kind else {
                return Err(DataplaneError::Refused {
                    op: "observe",
                    what: format!("link {} is not a VXLAN device", link.name),
                });
            };
            state.vxlan = Some(VxlanDevice {
                name: link.name.clone(),
                vni: attrs.vni.unwrap_or(0),
                port: attrs.port.unwrap_or(0),
                local_ip: attrs.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                underlay_ifindex: attrs.link,
                mac: link.mac.unwrap_or([0; 6]),
                mtu: link.mtu,
                // None, or exactly one /32; anything else reads as unspecified (replaced).
                addr: match v4_on(link.index).as_slice() {
                    [] => None,
                    [one] if one.prefix_len() == 32 => Some(one.addr()),
                    _ => Some(Ipv4Addr::UNSPECIFIED),
                },
                // None, or exactly one /128; anything else reads as unspecified (replaced).
                addr6: match v6_on(link.index).as_slice() {
                    [] => None,
                    [one] if one.prefix_len() == 128 => Some(one.addr()),
                    _ => Some(Ipv6Addr::UNSPECIFIED),
                },
            });
            for family in [AddressFamily::Inet, AddressFamily::Inet6] {
                for msg in dump_neighbours(self.handle(), family).await? {
                    if let Some(n) = parse_neighbour(&msg, link.index) {
                        state.neighbours.insert(n);
                    }
                }
            }
            for msg in dump_neighbours(self.handle(), AddressFamily::Bridge).await? {
                if let Some(f) = parse_fdb(&msg, link.index) {
                    state.fdb.insert(f);
                }
            }
        }
        if let Some(link) = &bridge_link {
            state.bridge = Some(Bridge {
                name: link.name.clone(),
                // None or exactly one address; anything else is not what weft configures (the
                // default: replaced).
                addr: match v4_on(link.index).as_slice() {
                    [] => None,
                    [one] => Some(*one),
                    _ => Some(Ipv4Net::default()),
                },
                addr6: match v6_on(link.index).as_slice() {
                    [] => None,
                    [one] => Some(*one),
                    _ => Some(Ipv6Net::default()),
                },
                mtu: link.mtu,
            });
        }
        let by_index: HashMap<u32, Link> = links.into_iter().map(|l| (l.index, l)).collect();
        for v6 in [false, true] {
            for msg in dump_routes(self.handle(), v6).await? {
                if let Some(route) = parse_route(&msg, &by_index) {
                    state.routes.insert(route);
                }
            }
        }
        if let Some(link) = &tun_link {
            let on = v4_on(link.index);
            state.tun = Some(TunLink {
                name: link.name.clone(),
                mtu: link.mtu,
                // Exactly one /32, or it is not what weft configures (0.0.0.0: reconfigured).
                addr: match on.as_slice() {
                    [] => None,
                    [one] if one.prefix_len() == 32 => Some(one.addr()),
                    _ => Some(Ipv4Addr::UNSPECIFIED),
                },
                addr6: match v6_on(link.index).as_slice() {
                    [] => None,
                    [one] if one.prefix_len() == 128 => Some(one.addr()),
                    _ => Some(Ipv6Addr::UNSPECIFIED),
                },
            });
        }
        state.masq = super::masq::observe().await;
        state.masq6 = super::masq::observe6().await;
        Ok(state)
    }
}

#[async_trait::async_trait]
impl Dataplane for NetlinkDataplane {
    async fn onlink(&mut self, ips: &[IpAddr]) -> Result<super::paths::Onlink, DataplaneError> {
        let addrs = dump_addrs(self.handle()).await?;
        let routes = if ips.iter().any(|ip| ip.is_ipv4()) {
            dump_routes(self.handle(), false).await?
        } else {
            Vec::new()
        };
        Ok(super::paths::Onlink::Known(
            ips.iter()
                .copied()
                .filter(|ip| onlink_by_routes(&routes, &addrs, *ip))
                .collect(),
        ))
    }

    async fn underlay(
        &mut self,
        select: &UnderlaySelect,
        public_ip: Option<IpAddr>,
    ) -> Result<UnderlayInfo, DataplaneError> {
        let links = dump_links(self.handle()).await?;
        let addrs = dump_addrs(self.handle()).await?;
        let routes = match select {
            UnderlaySelect::DefaultRoute => dump_routes(self.handle(), false).await?,
            _ => Vec::new(),
        };
        select_underlay(select, public_ip, &links, &addrs, &routes)
    }

    async fn observe(&mut self) -> Result<State, DataplaneError> {
        self.observe_state().await
    }

    async fn apply(&mut self, op: &Op) -> Result<(), DataplaneError> {
        let result = self.apply_op(op).await;
        match &result {
            Ok(()) => tracing::debug!(op = op.kind(), "applied"),
            Err(err) => tracing::debug!(op = op.kind(), error = %err, "apply failed"),
        }
        result
    }
}

// ---------------------------------------------------------------------------------------------
// Underlay discovery

/// The interface of the IPv4 default route in the main table (lowest metric).
fn default_route_oif(routes: &[RouteMessage]) -> Option<u32> {
    routes
        .iter()
        .filter(|m| is_main_v4_unicast(m) && m.header.destination_prefix_length == 0)
        .filter_map(|m| {
            let priority = route_priority(m);
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                RouteAttribute::MultiPath(hops) => hops.first().map(|h| h.interface_index),
                _ => None,
            })?;
            Some((priority, oif))
        })
        .min()
        .map(|(_, oif)| oif)
}

/// The address an interface is known by: its first global IPv4 address, else its first global
/// IPv6 address.
fn primary_addr(addrs: &[Addr], index: u32) -> Option<IpAddr> {
    let on_link = || {
        addrs
            .iter()
            .filter(move |a| a.index == index && a.scope == AddressScope::Universe)
    };
    on_link()
        .find(|a| a.net.addr().is_ipv4())
        .or_else(|| on_link().find(|a| a.net.addr().is_ipv6()))
        .map(|a| a.net.addr())
}

fn select_underlay(
    select: &UnderlaySelect,
    public_ip: Option<IpAddr>,
    links: &[Link],
    addrs: &[Addr],
    routes: &[RouteMessage],
) -> Result<UnderlayInfo, DataplaneError> {
    let holder = |ip: IpAddr| addrs.iter().find(|a| a.net.addr() == ip).map(|a| a.index);
    let link_at = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .ok_or(DataplaneError::Underlay(UnderlayError::NoLinkIndex(index)))
    };
    let (link, ip) = match select {
        UnderlaySelect::Addr(ip) => {
            let index = holder(*ip).ok_or(DataplaneError::Underlay(
                UnderlayError::NoAddressHolder(*ip),
            ))?;
            (link_at(index)?, *ip)
        }
        UnderlaySelect::Iface(name) => {
            let link = links.iter().find(|l| &l.name == name).ok_or_else(|| {
                DataplaneError::Underlay(UnderlayError::NoInterface(name.clone()))
            })?;
            let ip = primary_addr(addrs, link.index).ok_or_else(|| {
                DataplaneError::Underlay(UnderlayError::NoGlobalAddress(name.clone()))
            })?;
            (link, ip)
        }
        UnderlaySelect::DefaultRoute => {
            // A --public-ip held by a local interface names the underlay itself.
            if let Some((index, ip)) = public_ip.and_then(|ip| holder(ip).map(|i| (i, ip))) {
                (link_at(index)?, ip)
            } else {
                let index = default_route_oif(routes)
                    .ok_or(DataplaneError::Underlay(UnderlayError::NoDefaultRoute))?;
                let link = link_at(index)?;
                let ip = addrs
                    .iter()
                    .find(|a| {
                        a.index == index
                            && a.net.addr().is_ipv4()
                            && a.scope == AddressScope::Universe
                    })
                    .map(|a| a.net.addr())
                    .ok_or_else(|| {
                        DataplaneError::Underlay(UnderlayError::DefaultRouteNoAddress(
                            link.name.clone(),
                        ))
                    })?;
                (link, ip)
            }
        }
    };
    Ok(UnderlayInfo {
        ifname: link.name.clone(),
        ifindex: link.index,
        ip,
        mtu: link.mtu,
        ipv6: addrs
            .iter()
            .filter(|a| a.index == link.index && a.scope == AddressScope::Universe)
            .find_map(|a| match a.net.addr() {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            }),
    })
}

/// Find the underlay: `--iface NAME`, `--iface ADDR` (the interface holding it), or the
/// interface of the IPv4 default route (or, if `public_ip` is held by a local interface, that
/// one) with its first IPv4 address.
pub async fn discover_underlay(
    select: &UnderlaySelect,
    public_ip: Option<IpAddr>,
) -> Result<UnderlayInfo, DataplaneError> {
    let mut dp = NetlinkDataplane::new().await?;
    dp.underlay(select, public_ip).await
}

/// The underlay `select` names on this host, read from the kernel (nothing changed). A dry run
/// with a `public_ip` needs no usable interface: an announced address is all it needs (this is
/// how many agents share one machine's loopback), so it gets a stand-in with MTU 1500.
pub async fn discover(
    select: &UnderlaySelect,
    public_ip: Option<IpAddr>,
    dry_run: bool,
) -> Result<UnderlayInfo, DataplaneError> {
    match discover_underlay(select, public_ip).await {
        Ok(u) => Ok(u),
        Err(e) => match public_ip {
            Some(ip) if dry_run => {
                tracing::info!(error = %e, %ip, "dry run: no usable underlay interface; assuming MTU 1500");
                Ok(UnderlayInfo {
                    ifname: "dry-run".to_string(),
                    ifindex: 0,
                    ip,
                    mtu: 1500,
                    ipv6: None,
                })
            }
            _ => Err(e),
        },
    }
}

fn onlink_in(addrs: &[Addr], ip: IpAddr) -> bool {
    addrs.iter().any(|a| {
        a.net.prefix_len() < a.net.max_prefix_len() && a.net.contains(&ip) && a.net.addr() != ip
    })
}

/// Whether the kernel reaches `ip` without a gateway: for IPv4, the main-table unicast route
/// that best matches it (longest prefix, then lowest metric) has no gateway (a connected subnet,
/// or a device route an operator added); for IPv6, a connected subnet holds it. The host's own
/// addresses are not on-link.
fn onlink_by_routes(routes: &[RouteMessage], addrs: &[Addr], ip: IpAddr) -> bool {
    if addrs.iter().any(|a| a.net.addr() == ip) {
        return false;
    }
    let IpAddr::V4(v4) = ip else {
        return onlink_in(addrs, ip);
    };
    let best = routes
        .iter()
        .filter(|m| is_main_v4_unicast(m))
        .filter_map(|m| {
            let net = Ipv4Net::new(route_dst_v4(m), m.header.destination_prefix_length).ok()?;
            if !net.contains(&v4) {
                return None;
            }
            Some((std::cmp::Reverse(net.prefix_len()), route_priority(m), m))
        })
        .min_by_key(|(len, prio, _)| (*len, *prio));
    best.is_some_and(|(_, _, m)| {
        !m.attributes.iter().any(|a| {
            matches!(
                a,
                RouteAttribute::Gateway(_) | RouteAttribute::MultiPath(_) | RouteAttribute::Via(_)
            )
        })
    })
}

/// Whether `ip` lies inside a connected subnet of some interface (host-gw needs its peers
/// there). Host addresses (/32, /128) and the host's own addresses do not count.
pub async fn is_onlink(ip: IpAddr) -> Result<bool, DataplaneError> {
    let conn = Conn::open()?;
    let addrs = dump_addrs(&conn.handle).await?;
    Ok(onlink_in(&addrs, ip))
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::RouteHeader;

    use super::*;

    fn link_msg(
        index: u32,
        name: &str,
        alias: Option<&str>,
        kind: Option<InfoKind>,
    ) -> LinkMessage {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.into()));
        msg.attributes.push(LinkAttribute::Mtu(1500));
        if let Some(a) = alias {
            msg.attributes.push(LinkAttribute::IfAlias(a.into()));
        }
        if let Some(k) = kind {
            let mut infos = vec![LinkInfo::Kind(k.clone())];
            if k == InfoKind::Vxlan {
                infos.push(LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(1),
                    InfoVxlan::Port(8472),
                    InfoVxlan::Local(Ipv4Addr::new(192, 0, 2, 1)),
                    InfoVxlan::Link(0),
                ])));
            }
            msg.attributes.push(LinkAttribute::LinkInfo(infos));
        }
        msg
    }

    #[test]
    fn links_parse_and_ownership() {
        let l = parse_link(&link_msg(7, "weft.1", Some("weft"), Some(InfoKind::Vxlan))).unwrap();
        assert!(l.owned() && l.is_vxlan());
        assert_eq!(
            l.kind,
            Kind::Vxlan(VxlanAttrs {
                vni: Some(1),
                port: Some(8472),
                local: Some("192.0.2.1".parse().unwrap()),
                link: None,
            })
        );
        let b = parse_link(&link_msg(8, "cni0", Some("other"), Some(InfoKind::Bridge))).unwrap();
        assert!(!b.owned() && b.is_bridge());
        let e = parse_link(&link_msg(2, "eth0", None, None)).unwrap();
        assert_eq!(e.kind, Kind::Other);
        assert!(parse_link(&LinkMessage::default()).is_none());
    }

    fn route_msg(proto: u8, table: u8, dst: &str, gw: Ipv4Addr, oif: u32) -> RouteMessage {
        let net: Ipv4Net = dst.parse().unwrap();
        let mut msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(net.network(), net.prefix_len())
            .gateway(gw)
            .output_interface(oif)
            .protocol(RouteProtocol::from(proto))
            .onlink()
            .build();
        msg.header.table = table;
        msg
    }

    #[test]
    fn routes_parse_only_weft_main() {
        let links: HashMap<u32, Link> = [
            parse_link(&link_msg(7, "weft.1", Some("weft"), Some(InfoKind::Vxlan))).unwrap(),
            parse_link(&link_msg(2, "eth0", None, None)).unwrap(),
        ]
        .into_iter()
        .map(|l| (l.index, l))
        .collect();
        let gw = Ipv4Addr::new(10, 244, 1, 0);
        let r = parse_route(
            &route_msg(87, RouteHeader::RT_TABLE_MAIN, "10.244.1.0/24", gw, 7),
            &links,
        )
        .unwrap();
        assert_eq!(
            r,
            Route {
                dst: "10.244.1.0/24".parse().unwrap(),
                gateway: IpAddr::V4(gw),
                device: Some("weft.1".into()),
                onlink: true,
                mtu: None,
            }
        );
        // Through a link weft does not own: the device is left open (host-gw).
        let r = parse_route(
            &route_msg(87, RouteHeader::RT_TABLE_MAIN, "10.244.1.0/24", gw, 2),
            &links,
        )
        .unwrap();
        assert_eq!(r.device, None);
        assert!(
            parse_route(
                &route_msg(4, RouteHeader::RT_TABLE_MAIN, "10.244.1.0/24", gw, 7),
                &links
            )
            .is_none()
        );
        assert!(parse_route(&route_msg(87, 100, "10.244.1.0/24", gw, 7), &links).is_none());
    }

    #[test]
    fn fdb_and_neighbour_filters() {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = 7;
        msg.header.state = NeighbourState::Permanent;
        msg.header.flags = NeighbourFlags::Own;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]));
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Other(
                vec![192, 0, 2, 9],
            )));
        assert_eq!(
            parse_fdb(&msg, 7),
            Some(FdbEntry {
                mac: [2, 0, 0, 0, 0, 9],
                dst: "192.0.2.9".parse().unwrap()
            })
        );
        assert_eq!(parse_fdb(&msg, 8), None);
        let mut bad = msg.clone();
        bad.attributes[1] = NeighbourAttribute::Destination(NeighbourAddress::Other(vec![1, 2, 3]));
        assert_eq!(parse_fdb(&bad, 7), None);
        let mut short_mac = msg.clone();
        short_mac.attributes[0] = NeighbourAttribute::LinkLayerAddress(vec![1, 2]);
        assert_eq!(parse_fdb(&short_mac, 7), None);

        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.ifindex = 7;
        n.header.state = NeighbourState::Reachable;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                Ipv4Addr::new(10, 244, 1, 0),
            )));
        n.attributes
            .push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(
            parse_neighbour(&n, 7),
            None,
            "only permanent entries are weft's"
        );
        n.header.state = NeighbourState::Permanent;
        assert_eq!(
            parse_neighbour(&n, 7),
            Some(Neighbour {
                ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0)),
                mac: [2, 0, 0, 0, 0, 9]
            })
        );
    }

    fn addr(index: u32, net: &str) -> Addr {
        Addr {
            index,
            net: net.parse().unwrap(),
            scope: AddressScope::Universe,
        }
    }

    #[test]
    fn underlay_selection() {
        let links = vec![
            parse_link(&link_msg(1, "lo", None, None)).unwrap(),
            parse_link(&link_msg(2, "eth0", None, None)).unwrap(),
            parse_link(&link_msg(3, "eth1", None, None)).unwrap(),
        ];
        let addrs = vec![
            addr(1, "127.0.0.1/8"),
            addr(2, "2001:db8::1/64"),
            addr(2, "192.0.2.1/24"),
            addr(3, "198.51.100.7/24"),
        ];
        let mut default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(Ipv4Addr::new(192, 0, 2, 254))
            .output_interface(2)
            .build();
        default.header.protocol = RouteProtocol::Boot;
        let routes = vec![default];

        let u =
            select_underlay(&UnderlaySelect::DefaultRoute, None, &links, &addrs, &routes).unwrap();
        assert_eq!(
            (u.ifname.as_str(), u.ip),
            ("eth0", "192.0.2.1".parse().unwrap())
        );
        assert_eq!(u.mtu, 1500);
        let u = select_underlay(
            &UnderlaySelect::DefaultRoute,
            Some("198.51.100.7".parse().unwrap()),
            &links,
            &addrs,
            &routes,
        )
        .unwrap();
        assert_eq!(u.ifname, "eth1");
        // A public IP that no interface holds (NAT) does not change the choice.
        let u = select_underlay(
            &UnderlaySelect::DefaultRoute,
            Some("203.0.113.1".parse().unwrap()),
            &links,
            &addrs,
            &routes,
        )
        .unwrap();
        assert_eq!(u.ifname, "eth0");
        let u = select_underlay(
            &UnderlaySelect::Iface("eth1".into()),
            None,
            &links,
            &addrs,
            &[],
        )
        .unwrap();
        assert_eq!((u.ifindex, u.ip), (3, "198.51.100.7".parse().unwrap()));
        let u = select_underlay(
            &UnderlaySelect::Addr("192.0.2.1".parse().unwrap()),
            None,
            &links,
            &addrs,
            &[],
        )
        .unwrap();
        assert_eq!(u.ifname, "eth0");
        assert!(matches!(
            select_underlay(&UnderlaySelect::DefaultRoute, None, &links, &addrs, &[]),
            Err(DataplaneError::Underlay(_))
        ));
        assert!(
            select_underlay(
                &UnderlaySelect::Iface("nope".into()),
                None,
                &links,
                &addrs,
                &[]
            )
            .is_err()
        );
        assert!(
            select_underlay(
                &UnderlaySelect::Addr("10.0.0.1".parse().unwrap()),
                None,
                &links,
                &addrs,
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn onlink_by_routes_follows_the_best_route() {
        let addrs = vec![addr(2, "192.0.2.1/24")];
        let connected = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(192, 0, 2, 0), 24)
            .output_interface(2)
            .build();
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(Ipv4Addr::new(192, 0, 2, 254))
            .output_interface(2)
            .build();
        let routes = vec![default.clone(), connected.clone()];
        let on = |routes: &[RouteMessage], ip: &str| {
            onlink_by_routes(routes, &addrs, ip.parse().unwrap())
        };
        assert!(on(&routes, "192.0.2.7"));
        assert!(!on(&routes, "198.51.100.3"), "via the default gateway");
        assert!(!on(&routes, "192.0.2.1"), "own address");
        // A more specific route via a router takes a peer off-link.
        let mut routed = routes.clone();
        routed.push(route_msg(
            4,
            254,
            "192.0.2.128/25",
            Ipv4Addr::new(192, 0, 2, 254),
            2,
        ));
        assert!(!on(&routed, "192.0.2.200"));
        assert!(on(&routed, "192.0.2.100"));
        // A device route makes a peer on another subnet on-link.
        let mut devroute = routes.clone();
        devroute.push(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(Ipv4Addr::new(198, 51, 100, 0), 24)
                .output_interface(2)
                .build(),
        );
        assert!(on(&devroute, "198.51.100.3"));
        assert!(!on(&[], "192.0.2.7"), "no route at all");
    }

    #[test]
    fn onlink_check() {
        let addrs = vec![addr(2, "192.0.2.1/24"), addr(5, "10.244.3.0/32")];
        assert!(onlink_in(&addrs, "192.0.2.77".parse().unwrap()));
        assert!(!onlink_in(&addrs, "192.0.2.1".parse().unwrap()));
        assert!(!onlink_in(&addrs, "198.51.100.1".parse().unwrap()));
        assert!(!onlink_in(&addrs, "10.244.3.0".parse().unwrap()));
    }
}
