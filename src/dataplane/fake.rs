//! An in-memory data plane with the kernel's semantics, for tests: idempotent adds (replace by
//! key), deletes of missing entries succeed, deleting a device drops its neighbour/FDB entries and
//! the routes through it, routes through a device need the device. Cloning gives another handle
//! on the same kernel, so a test can inspect it and inject drift or failures while an agent runs.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net};

use super::underlay::{UnderlayError, UnderlayInfo, UnderlaySelect};
use super::{Dataplane, DataplaneError, Mac, Op, State};

#[derive(Debug, Default)]
struct Inner {
    state: State,
    /// Links that exist but are not weft's (weft must refuse to take them over).
    foreign_links: BTreeSet<String>,
    /// Op kinds ([`Op::kind`]) whose next apply fails, one failure per entry.
    fail_next: Vec<&'static str>,
    fail_next_observe: bool,
    /// Underlay addresses the fake host does not reach on-link (host-gw / DirectRouting).
    off_link: BTreeSet<IpAddr>,
    /// The host's interfaces toward other hosts; the first holds the default route.
    interfaces: Vec<UnderlayInfo>,
    applied: u64,
    failed: u64,
    observed: u64,
    log: Vec<Op>,
}

/// In-memory kernel. `Clone` shares it.
#[derive(Clone, Debug, Default)]
pub struct FakeDataplane {
    inner: Arc<Mutex<Inner>>,
}

impl FakeDataplane {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent state (every mutation is a
        // single step), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the fake host an underlay interface (the first one added holds the default route),
    /// or replace the one of the same name (a re-created interface: new index, MTU, address).
    pub fn set_interface(&self, link: UnderlayInfo) {
        let mut inner = self.lock();
        match inner
            .interfaces
            .iter_mut()
            .find(|l| l.ifname == link.ifname)
        {
            Some(old) => *old = link,
            None => inner.interfaces.push(link),
        }
    }

    /// Remove the underlay interface `name` (as `ip link del`); returns whether it was there.
    pub fn remove_interface(&self, name: &str) -> bool {
        let mut inner = self.lock();
        let before = inner.interfaces.len();
        inner.interfaces.retain(|l| l.ifname != name);
        inner.interfaces.len() != before
    }

    /// Delete the masquerade table behind weft's back (as `nft delete table ip weft`); returns
    /// whether it was there.
    pub fn remove_masq(&self) -> bool {
        self.lock().state.masq.take().is_some()
    }

    /// What the fake kernel holds now.
    pub fn snapshot(&self) -> State {
        self.lock().state.clone()
    }

    /// Overwrite the whole kernel state (drift of any shape).
    pub fn set_state(&self, state: State) {
        self.lock().state = state;
    }

    /// Remove every route to `dst` (as if an operator ran `ip route del`). Returns whether one
    /// was there.
    pub fn remove_route(&self, dst: Ipv4Net) -> bool {
        let mut inner = self.lock();
        let before = inner.state.routes.len();
        inner.state.routes.retain(|r| r.dst != IpNet::V4(dst));
        inner.state.routes.len() != before
    }

    /// Remove the neighbour entry for `ip`.
    pub fn remove_neighbour(&self, ip: Ipv4Addr) -> bool {
        let mut inner = self.lock();
        let before = inner.state.neighbours.len();
        inner.state.neighbours.retain(|n| n.ip != ip);
        inner.state.neighbours.len() != before
    }

    /// Remove the FDB entry for `mac`.
    pub fn remove_fdb(&self, mac: Mac) -> bool {
        let mut inner = self.lock();
        let before = inner.state.fdb.len();
        inner.state.fdb.retain(|f| f.mac != mac);
        inner.state.fdb.len() != before
    }

    /// Delete the VXLAN device (with everything on it), as `ip link del weft.1` would.
    pub fn delete_device(&self) -> bool {
        let mut inner = self.lock();
        match inner.state.vxlan.take() {
            Some(dev) => {
                drop_device_entries(&mut inner.state, &dev.name, true);
                true
            }
            None => false,
        }
    }

    /// Change the VXLAN device's MTU behind weft's back.
    pub fn set_mtu(&self, mtu: u32) -> bool {
        let mut inner = self.lock();
        match inner.state.vxlan.as_mut() {
            Some(dev) => {
                dev.mtu = mtu;
                true
            }
            None => false,
        }
    }

    /// Make a link named `name` exist that weft does not own.
    pub fn add_foreign_link(&self, name: &str) {
        self.lock().foreign_links.insert(name.to_owned());
    }

    /// The next apply of an op of this kind ([`Op::kind`], e.g. `"add_route"`) fails.
    pub fn fail_next(&self, kind: &'static str) {
        self.lock().fail_next.push(kind);
    }

    /// The next observe fails.
    pub fn fail_next_observe(&self) {
        self.lock().fail_next_observe = true;
    }

    /// Number of ops applied successfully since creation.
    pub fn applied_count(&self) -> u64 {
        self.lock().applied
    }

    /// Number of ops that failed (injected or semantic) since creation.
    pub fn failed_count(&self) -> u64 {
        self.lock().failed
    }

    /// Number of observe calls since creation.
    pub fn observe_count(&self) -> u64 {
        self.lock().observed
    }

    /// Successfully applied ops since the last call.
    pub fn take_log(&self) -> Vec<Op> {
        std::mem::take(&mut self.lock().log)
    }

    /// Make `ip` off-link (`true`) or on-link again (`false`), as if the underlay routes changed.
    /// Every address is on-link until said otherwise.
    pub fn set_off_link(&self, ip: IpAddr, off: bool) {
        let mut inner = self.lock();
        if off {
            inner.off_link.insert(ip);
        } else {
            inner.off_link.remove(&ip);
        }
    }
}

/// The kernel drops entries on a device with it: neighbours and FDB entries (only on the VXLAN
/// device) and routes through it.
fn drop_device_entries(state: &mut State, name: &str, is_vxlan: bool) {
    if is_vxlan {
        state.neighbours.clear();
        state.fdb.clear();
    }
    state.routes.retain(|r| r.device.as_deref() != Some(name));
}

fn injected(kind: &'static str) -> DataplaneError {
    DataplaneError::Io(std::io::Error::other(format!("injected failure: {kind}")))
}

impl Inner {
    fn vxlan_named(&self, name: &str) -> bool {
        self.state.vxlan.as_ref().is_some_and(|d| d.name == name)
    }

    fn link_exists(&self, name: &str) -> bool {
        self.vxlan_named(name)
            || self.state.other_vxlans.contains(name)
            || self.state.other_bridges.contains(name)
            || self.state.bridge.as_ref().is_some_and(|b| b.name == name)
            || self.state.tun.as_ref().is_some_and(|t| t.name == name)
            || self.foreign_links.contains(name)
    }

    fn refuse_foreign(&self, op: &'static str, name: &str) -> Result<(), DataplaneError> {
        if self.foreign_links.contains(name) {
            return Err(DataplaneError::Refused {
                op,
                what: format!("link {name} exists and is not owned by weft"),
            });
        }
        Ok(())
    }

    fn require_vxlan(&self, op: &'static str, name: &str) -> Result<(), DataplaneError> {
        if self.vxlan_named(name) {
            Ok(())
        } else {
            Err(DataplaneError::NoDevice {
                op,
                name: name.to_owned(),
            })
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), DataplaneError> {
        let kind = op.kind();
        match op {
            Op::CreateVxlan(dev) => {
                self.refuse_foreign(kind, &dev.name)?;
                if self
                    .state
                    .bridge
                    .as_ref()
                    .is_some_and(|b| b.name == dev.name)
                {
                    return Err(DataplaneError::Refused {
                        op: kind,
                        what: format!("link {} is a bridge", dev.name),
                    });
                }
                match self.state.vxlan.take() {
                    // Another name beside the device: a second device, listed after it (the
                    // kernel's index order).
                    Some(current) if current.name != dev.name => {
                        self.state.other_vxlans.insert(dev.name.clone());
                        self.state.vxlan = Some(current);
                    }
                    // Recreate: the old device and everything on it go.
                    Some(old) => {
                        drop_device_entries(&mut self.state, &old.name, true);
                        self.state.vxlan = Some(dev.clone());
                    }
                    None => {
                        self.state.other_vxlans.remove(&dev.name);
                        self.state.vxlan = Some(dev.clone());
                    }
                }
            }
            Op::SetVxlanMtu { name, mtu } => {
                self.require_vxlan(kind, name)?;
                if let Some(dev) = self.state.vxlan.as_mut() {
                    dev.mtu = *mtu;
                }
            }
            Op::SetVxlanAddr { name, addr, addr6 } => {
                self.require_vxlan(kind, name)?;
                if let Some(dev) = self.state.vxlan.as_mut() {
                    dev.addr = *addr;
                    dev.addr6 = *addr6;
                }
            }
            Op::DeleteVxlan { name } => {
                self.refuse_foreign(kind, name)?;
                if self.vxlan_named(name) {
                    self.state.vxlan = None;
                    drop_device_entries(&mut self.state, name, true);
                }
                if self.state.other_vxlans.remove(name) {
                    drop_device_entries(&mut self.state, name, false);
                }
            }
            Op::EnsureBridge(bridge) => {
                self.refuse_foreign(kind, &bridge.name)?;
                if self.vxlan_named(&bridge.name) {
                    return Err(DataplaneError::Refused {
                        op: kind,
                        what: format!("link {} is not a bridge", bridge.name),
                    });
                }
                match &self.state.bridge {
                    // Another name beside the bridge: a second one, listed after it.
                    Some(current) if current.name != bridge.name => {
                        self.state.other_bridges.insert(bridge.name.clone());
                    }
                    _ => {
                        self.state.other_bridges.remove(&bridge.name);
                        self.state.bridge = Some(bridge.clone());
                    }
                }
            }
            Op::DeleteBridge { name } => {
                self.refuse_foreign(kind, name)?;
                if self.state.bridge.as_ref().is_some_and(|b| &b.name == name) {
                    self.state.bridge = None;
                    drop_device_entries(&mut self.state, name, false);
                }
                if self.state.other_bridges.remove(name) {
                    drop_device_entries(&mut self.state, name, false);
                }
            }
            Op::AddNeighbour { device, neighbour } => {
                self.require_vxlan(kind, device)?;
                // One entry per IP on a device: an add replaces the link-layer address.
                self.state.neighbours.retain(|n| n.ip != neighbour.ip);
                self.state.neighbours.insert(*neighbour);
            }
            Op::DelNeighbour { device, neighbour } => {
                if self.vxlan_named(device) {
                    self.state.neighbours.retain(|n| n.ip != neighbour.ip);
                }
            }
            Op::AddFdb { device, entry } => {
                self.require_vxlan(kind, device)?;
                // One destination per MAC (replace semantics).
                self.state.fdb.retain(|f| f.mac != entry.mac);
                self.state.fdb.insert(*entry);
            }
            Op::DelFdb { device, entry } => {
                if self.vxlan_named(device) {
                    self.state.fdb.remove(entry);
                }
            }
            Op::AddRoute(route) => {
                if let Some(dev) = route.device.as_ref().filter(|d| !self.link_exists(d)) {
                    return Err(DataplaneError::NoDevice {
                        op: kind,
                        name: dev.clone(),
                    });
                }
                // One route per destination in the table (replace semantics for weft's own).
                self.state.routes.retain(|r| r.dst != route.dst);
                self.state.routes.insert(route.clone());
            }
            Op::DelRoute(route) => {
                self.state.routes.retain(|r| {
                    !(r.dst == route.dst
                        && r.gateway == route.gateway
                        && (route.device.is_none() || r.device == route.device))
                });
            }
            Op::ConfigureTun(t) => {
                self.refuse_foreign(kind, &t.name)?;
                self.state.tun = Some(t.clone());
            }
            Op::SetMasq(m) => self.state.masq = Some(*m),
            Op::DelMasq => self.state.masq = None,
            Op::SetMasq6(m) => self.state.masq6 = Some(*m),
            Op::DelMasq6 => self.state.masq6 = None,
        }
        Ok(())
    }
}

#[async_trait]
impl Dataplane for FakeDataplane {
    async fn onlink(&mut self, ips: &[IpAddr]) -> Result<super::paths::Onlink, DataplaneError> {
        let inner = self.lock();
        Ok(super::paths::Onlink::Known(
            ips.iter()
                .filter(|ip| !inner.off_link.contains(ip))
                .copied()
                .collect(),
        ))
    }

    async fn underlay(
        &mut self,
        select: &UnderlaySelect,
        public_ip: Option<IpAddr>,
    ) -> Result<UnderlayInfo, DataplaneError> {
        let inner = self.lock();
        let holding = |ip: IpAddr| inner.interfaces.iter().find(|l| l.ip == ip);
        let found = match select {
            UnderlaySelect::DefaultRoute => public_ip
                .and_then(holding)
                .or_else(|| inner.interfaces.first()),
            UnderlaySelect::Iface(name) => inner.interfaces.iter().find(|l| &l.ifname == name),
            UnderlaySelect::Addr(ip) => holding(*ip),
        };
        found.cloned().ok_or_else(|| {
            DataplaneError::Underlay(match select {
                UnderlaySelect::DefaultRoute => UnderlayError::NoDefaultRoute,
                UnderlaySelect::Iface(name) => UnderlayError::NoInterface(name.clone()),
                UnderlaySelect::Addr(ip) => UnderlayError::NoAddressHolder(*ip),
            })
        })
    }

    async fn observe(&mut self) -> Result<State, DataplaneError> {
        let mut inner = self.lock();
        inner.observed += 1;
        if std::mem::take(&mut inner.fail_next_observe) {
            return Err(injected("observe"));
        }
        Ok(inner.state.clone())
    }

    async fn apply(&mut self, op: &Op) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        let kind = op.kind();
        if let Some(pos) = inner.fail_next.iter().position(|k| *k == kind) {
            inner.fail_next.remove(pos);
            inner.failed += 1;
            return Err(injected(kind));
        }
        match inner.apply(op) {
            Ok(()) => {
                inner.applied += 1;
                inner.log.push(op.clone());
                Ok(())
            }
            Err(err) => {
                inner.failed += 1;
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::super::{FdbEntry, Neighbour, Route, VxlanDevice, reconcile};
    use super::*;

    fn dev() -> VxlanDevice {
        VxlanDevice {
            underlay_ifindex: None,
            ..VxlanDevice::for_test()
        }
    }

    fn desired() -> State {
        let mut s = State {
            vxlan: Some(dev()),
            ..State::default()
        };
        s.neighbours.insert(Neighbour {
            ip: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0)),
            mac: [2, 0, 0, 0, 1, 1],
        });
        s.fdb.insert(FdbEntry {
            mac: [2, 0, 0, 0, 1, 1],
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        });
        s.routes.insert(Route {
            dst: "10.244.1.0/24".parse().unwrap(),
            gateway: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 0)),
            device: Some("weft.1".into()),
            onlink: true,
            mtu: None,
        });
        s
    }

    #[tokio::test]
    async fn drift_is_repaired_and_counted() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let want = desired();
        reconcile(&mut dp, &want, true).await.unwrap();
        assert_eq!(fake.snapshot(), want);
        assert_eq!(fake.applied_count(), 4);
        assert_eq!(fake.take_log().len(), 4);

        assert!(fake.remove_route("10.244.1.0/24".parse().unwrap()));
        assert!(fake.set_mtu(1300));
        let report = reconcile(&mut dp, &want, true).await.unwrap();
        assert_eq!(report.applied, ["set_mtu", "add_route"]);
        assert_eq!(fake.snapshot(), want);

        assert!(fake.delete_device());
        assert_eq!(fake.snapshot(), State::default());
        reconcile(&mut dp, &want, true).await.unwrap();
        assert_eq!(fake.snapshot(), want);
        assert_eq!(fake.observe_count(), 3);
    }

    #[tokio::test]
    async fn injected_failures_are_reported_once() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        fake.fail_next("add_fdb");
        let report = reconcile(&mut dp, &desired(), true).await.unwrap();
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "add_fdb");
        assert!(fake.snapshot().fdb.is_empty());
        assert_eq!(fake.failed_count(), 1);
        let report = reconcile(&mut dp, &desired(), true).await.unwrap();
        assert!(report.failed.is_empty());
        assert_eq!(fake.snapshot(), desired());

        fake.fail_next_observe();
        assert!(reconcile(&mut dp, &desired(), true).await.is_err());
        assert!(reconcile(&mut dp, &desired(), true).await.is_ok());
    }

    #[tokio::test]
    async fn foreign_links_are_refused() {
        let fake = FakeDataplane::new();
        fake.add_foreign_link("cni0");
        let mut dp = fake.clone();
        let bridge = super::super::Bridge {
            name: "cni0".into(),
            addr: "10.244.3.1/24".parse().ok(),
            addr6: None,
            mtu: 1450,
        };
        let err = dp.apply(&Op::EnsureBridge(bridge)).await.unwrap_err();
        assert!(matches!(err, DataplaneError::Refused { .. }), "{err}");
        let err = dp
            .apply(&Op::DeleteBridge {
                name: "cni0".into(),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, DataplaneError::Refused { .. }), "{err}");
        assert_eq!(fake.snapshot(), State::default());
    }
}
