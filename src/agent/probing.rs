//! The path prober's I/O: one UDP socket on this node's overlay address, port
//! [`PROBE_PORT`], bound once the address exists (the VXLAN device, TUN device or bridge holds
//! it), with DF on everything it sends; the clock; the plan from the driver in, and the paths
//! back out. Every decision is the [`Prober`]'s (`probe/prober.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use weft_proto::envelope::Sealing;
use weft_proto::probe::{MAX_PROBE_LEN, PROBE_PORT, ProbeKeys};

use super::probe_net::{ProbeHub, ProbeSocket};
use crate::metrics::{Metrics, ProbeSnapshot};
use crate::node::core::probes::ProbePlan;
use crate::probe::path::PathState;
use crate::probe::prober::{Me, Prober};
use crate::probe::schedule::ScheduleConfig;

/// What the prober reports to the driver.
#[derive(Clone, Debug, Default)]
pub(super) struct ProbeReport {
    /// Each probed peer's path.
    pub states: BTreeMap<String, PathState>,
    /// When (since the agent's start).
    pub at: Duration,
    /// Whether the socket is bound (this node answers probes, so it announces a summary).
    pub answering: bool,
}

/// How often the bind is retried while the overlay address does not exist yet.
const BIND_RETRY: Duration = Duration::from_secs(1);

/// Runs the prober until `cancel`, on an IPv6 overlay address when `ipv6`. `plan` comes from the driver; `report` goes back to it and
/// `changed` wakes it when a verdict changed or the socket was bound.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run(
    me: Me,
    ipv6: bool,
    hub: Option<ProbeHub>,
    sealing: Sealing,
    started: Instant,
    mut plan: watch::Receiver<ProbePlan>,
    report: watch::Sender<ProbeReport>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let node = me.name.clone();
    let seed = me.generation ^ crate::hash::fnv1a(me.name.as_bytes());
    let first = plan.borrow().clone();
    let mut prober = Prober::new(
        me,
        ProbeKeys::from_sealing(&sealing),
        ipv6,
        first.overlay_mtu,
        ScheduleConfig::default(),
        seed,
    );
    let mut socket: Option<(IpAddr, ProbeSocket)> = None;
    let mut next_bind = Instant::now();
    let mut buf = vec![0u8; MAX_PROBE_LEN + 1];
    let mut last_report = Instant::now();
    let mut current = ProbePlan::default();
    let mut send_errors: u64 = 0;
    loop {
        // Follow the plan: targets, MTU, and the address to answer on.
        let wanted = plan.borrow_and_update().clone();
        let now = started.elapsed();
        if wanted != current {
            if wanted.overlay_mtu != current.overlay_mtu {
                prober.set_overlay_mtu(wanted.overlay_mtu, now);
            }
            prober.set_targets(&wanted.targets, now);
            current = wanted;
        }
        if socket.as_ref().map(|(a, _)| *a) != current.local {
            if socket.take().is_some() {
                debug!(node = %node, "probe address changed; rebinding");
            }
            if let Some(addr) = current.local
                && Instant::now() >= next_bind
            {
                let bound = match &hub {
                    Some(hub) => hub
                        .bind(SocketAddr::new(addr, PROBE_PORT))
                        .map(ProbeSocket::Hub),
                    None => bind(addr).map(ProbeSocket::Udp),
                };
                match bound {
                    Ok(s) => {
                        info!(node = %node, addr = %SocketAddr::new(addr, PROBE_PORT), op = "probe", "answering path probes");
                        socket = Some((addr, s));
                        changed.notify_one();
                    }
                    Err(e) => {
                        debug!(node = %node, %addr, error = %e, "cannot bind the probe socket yet; retrying");
                        next_bind = Instant::now() + BIND_RETRY;
                    }
                }
            }
        }
        prober.refresh_keys(&sealing);

        // Send what is due.
        if let Some((_, s)) = &socket {
            for o in prober.poll(now) {
                if let Err(e) = s.try_send_to(&o.bytes, o.to) {
                    // EMSGSIZE for a sized probe over the device MTU, ENETUNREACH before routes:
                    // a lost probe, which the path judges.
                    send_errors += 1;
                    debug!(node = %node, to = %o.to, error = %e, "probe not sent");
                }
            }
        }
        let mut verdicts_changed = false;
        for (peer, change) in prober.drain_changes() {
            change.log(&node, &peer);
            verdicts_changed = true;
        }
        if verdicts_changed || last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            report.send_replace(ProbeReport {
                states: prober.states(),
                at: started.elapsed(),
                answering: socket.is_some(),
            });
            *metrics.probes.lock().unwrap_or_else(|e| e.into_inner()) = ProbeSnapshot {
                running: socket.is_some(),
                counters: prober.counters().clone(),
                paths: prober.counts(),
                period_s: prober.period().as_secs_f64(),
                send_errors,
            };
            if verdicts_changed {
                changed.notify_one();
            }
        }

        // Wait for a datagram, the plan, or the next thing due: without a socket nothing is
        // sent, so only the next bind attempt is due. Never a wake in the past: this task shares
        // a single-threaded runtime with the agent, and a loop that never waits would starve it.
        let now = Instant::now();
        let wake = match &socket {
            Some(_) => prober.next_wake().map(|at| started + at),
            None => current.local.map(|_| next_bind),
        }
        .unwrap_or(now + Duration::from_secs(1))
        .clamp(now + Duration::from_millis(1), now + Duration::from_secs(1));
        let recv = async {
            match &mut socket {
                Some((_, s)) => s.recv_from(&mut buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            res = plan.changed() => if res.is_err() { break },
            got = recv => match got {
                Ok((n, from)) => {
                    let now = started.elapsed();
                    if let Some(reply) = prober.on_datagram(now, from, &buf[..n])
                        && let Some((_, s)) = &socket
                        && let Err(e) = s.try_send_to(&reply.bytes, reply.to)
                    {
                        send_errors += 1;
                        debug!(node = %node, to = %reply.to, error = %e, "probe reply not sent");
                    }
                }
                Err(e) => {
                    warn!(node = %node, error = %e, "probe socket failed; rebinding");
                    socket = None;
                }
            },
            _ = tokio::time::sleep_until(wake) => {},
        }
    }
}

/// The probe socket on `addr`:[`PROBE_PORT`]: fails while the address is not this host's. DF
/// on every datagram, whatever the path MTU cache says (`IP_PMTUDISC_PROBE`): a full-size probe
/// must test the path, not be fragmented or refused because of an earlier verdict.
fn bind(addr: IpAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(SocketAddr::new(addr, PROBE_PORT))?;
    std.set_nonblocking(true)?;
    let fd = std.as_raw_fd();
    let set = |level: libc::c_int, name: libc::c_int, value: libc::c_int| {
        // SAFETY: setsockopt on a socket this function owns, with a c_int value and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match addr {
        IpAddr::V4(_) => set(
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )?,
        IpAddr::V6(_) => {
            set(
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            )?;
            set(libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 1)?;
        }
    }
    UdpSocket::from_std(std)
}
