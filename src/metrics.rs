//! Counters the agent keeps and `/metrics` exposes in the Prometheus/OpenMetrics text format
//! (encoded by the `prometheus-client` crate).
//!
//! The handle is [`Metrics`]: plain atomics that the agent loop bumps with [`Metrics::add`] and
//! [`Metrics::set`], labelled families for what has a label (reconcile operations by kind, nodes
//! by liveness and state), the gossip transport's [`GossipCounters`], the UDP tunnel's
//! [`TunnelCounters`] and the rejected-record counts. [`Metrics::render`] builds the exposition at
//! scrape time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::cluster::RecordRejects;
use crate::cluster::transport::{GOSSIP_METRICS, GossipCounters};
use crate::keys::{KeyStore, KeyStoreError};
use crate::udp::{DropReason, TunnelCounters};

/// Label set of a family: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Monotonic counters and gauges, shared between the agent loop and the API.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Gossip datagrams, bytes and drops, kept by the sealed transport.
    pub gossip: Arc<GossipCounters>,
    /// UDP tunnel packets, bytes and drops (filled by the udp backend).
    pub tunnel: Arc<TunnelCounters>,
    /// Live nodes, this one included.
    pub nodes_alive: AtomicU64,
    /// Nodes chitchat considers dead but still remembers.
    pub nodes_dead: AtomicU64,
    /// Node records that failed to decode or validate.
    pub bad_records: AtomicU64,
    /// Gossip SYNs the fan-out skipped (chitchat picks 3 peers a round; see `--gossip-fanout`).
    pub gossip_syns_skipped: AtomicU64,
    /// Subnet claims this node made.
    pub claims: AtomicU64,
    /// Claims lost to an earlier claim while settling.
    pub claims_lost: AtomicU64,
    /// Active subnets lost to an older claim (after a partition healed).
    pub active_claims_lost: AtomicU64,
    /// Identity conflicts detected (same name, or same underlay IP).
    pub identity_conflicts: AtomicU64,
    /// Reconcile passes.
    pub reconciles: AtomicU64,
    /// Data-plane operations applied.
    pub reconcile_ops: AtomicU64,
    /// Data-plane operations that failed (and failed observations).
    pub reconcile_failures: AtomicU64,
    /// Peers whose routes are programmed.
    pub peers_programmed: AtomicU64,
    /// 1 once ready.
    pub ready: AtomicU64,
    /// Milliseconds from start to ready (0 until ready).
    pub time_to_ready_ms: AtomicU64,
    /// Peer records rejected before use, by reason.
    pub records_rejected: Arc<RecordRejects>,
    /// Keyring reloads (SIGHUP, `weft keys reload`) that succeeded.
    pub key_reloads: AtomicU64,
    /// Keyring reloads that failed (the keys in use stayed).
    pub key_reload_failures: AtomicU64,
    /// Data-plane operations by `kind` (and `result`: `ok` | `failed`).
    pub reconcile_ops_by_kind: Family<Labels, Counter>,
    /// Nodes by `liveness` and `state`, as of the last status.
    pub nodes_by_state: Family<Labels, Gauge>,
    /// Writes of the agent's files by `file` (`subnet_env`, `state`, `udp_peers`) and `result`.
    pub file_writes: Family<Labels, Counter>,
    /// 1 while a file does not hold what the agent wants (its last write failed), by `file`.
    pub file_write_pending: Family<Labels, Gauge>,
    /// 1 per subnet this node claims, by `family` (`ipv4`, `ipv6`) and `subnet`: at most two
    /// series.
    pub subnets: Family<Labels, Gauge>,
    /// What the path probes counted and found, as of the prober's last report.
    pub probes: std::sync::Mutex<ProbeSnapshot>,
}

/// The path probes' figures (`weft_probes_*`, `weft_paths`, `weft_path_rtt_seconds`): bounded
/// whatever the number of peers.
#[derive(Clone, Debug, Default)]
pub struct ProbeSnapshot {
    /// Whether this agent probes (answers on its overlay address).
    pub running: bool,
    /// The prober's counters.
    pub counters: crate::probe::prober::Counters,
    /// Paths by verdict.
    pub paths: crate::probe::PathCounts,
    /// Seconds between two rounds to the same peer.
    pub period_s: f64,
    /// Probes and replies the socket refused to send (a lost probe to the path).
    pub send_errors: u64,
}

/// A histogram whose buckets were counted elsewhere (the prober's RTT samples).
#[derive(Debug)]
struct CountedHistogram {
    sum: f64,
    count: u64,
    /// Per-bucket (not cumulative) counts, +Inf last.
    buckets: Vec<(f64, u64)>,
}

impl prometheus_client::encoding::EncodeMetric for CountedHistogram {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum,
            self.count,
            &self.buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(c: &AtomicU64, n: u64) {
        c.store(n, Ordering::Relaxed);
    }

    /// Counts one data-plane operation of `kind`.
    pub fn op(&self, kind: &str, ok: bool) {
        let labels = vec![
            ("kind", kind.to_string()),
            ("result", if ok { "ok" } else { "failed" }.to_string()),
        ];
        self.reconcile_ops_by_kind.get_or_create(&labels).inc();
    }

    /// Counts one write of the agent's file `file`; `pending` while it failed.
    pub fn file_write(&self, file: &str, ok: bool) {
        let labels = vec![
            ("file", file.to_string()),
            ("result", if ok { "ok" } else { "failed" }.to_string()),
        ];
        self.file_writes.get_or_create(&labels).inc();
        self.file_write_pending
            .get_or_create(&vec![("file", file.to_string())])
            .set(i64::from(!ok));
    }

    /// Replaces the subnets this node claims (none, one family's or both).
    pub fn set_subnets(&self, ipv4: Option<ipnet::Ipv4Net>, ipv6: Option<ipnet::Ipv6Net>) {
        self.subnets.clear();
        let rows = [
            ("ipv4", ipv4.map(|s| s.to_string())),
            ("ipv6", ipv6.map(|s| s.to_string())),
        ];
        for (family, subnet) in rows {
            if let Some(subnet) = subnet {
                let labels = vec![("family", family.to_string()), ("subnet", subnet)];
                self.subnets.get_or_create(&labels).set(1);
            }
        }
    }

    /// Replaces the node counts by liveness and state.
    pub fn set_nodes<'a>(&self, nodes: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.nodes_by_state.clear();
        for (liveness, state) in nodes {
            let labels = vec![
                ("liveness", liveness.to_string()),
                ("state", state.to_string()),
            ];
            self.nodes_by_state.get_or_create(&labels).inc();
        }
    }

    /// The exposition (OpenMetrics text, which Prometheus reads). `extra` rows are appended as
    /// untyped samples `(name, labels, value)` with labels written `{k="v"}` or empty.
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut reg = Registry::with_prefix("weft");
        let counter = |reg: &mut Registry, name: &str, help: &str, v: u64| {
            reg.register(name, help, ConstCounter::new(v));
        };
        let gauge = |reg: &mut Registry, name: &str, help: &str, v: i64| {
            reg.register(name, help, ConstGauge::new(v));
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);

        let nodes = Family::<Labels, Gauge>::default();
        nodes
            .get_or_create(&vec![("liveness", "alive".to_string())])
            .set(as_i64(g(&self.nodes_alive)));
        nodes
            .get_or_create(&vec![("liveness", "dead".to_string())])
            .set(as_i64(g(&self.nodes_dead)));
        reg.register("nodes", "Known nodes by liveness", nodes);
        reg.register(
            "nodes_by_state",
            "Known nodes by liveness and claim state",
            self.nodes_by_state.clone(),
        );
        gauge(
            &mut reg,
            "bad_records",
            "Node records that failed to decode or validate",
            as_i64(g(&self.bad_records)),
        );
        counter(&mut reg, "claims", "Subnet claims made", g(&self.claims));
        reg.register(
            "claims_lost",
            "Claims lost to an earlier claim",
            labelled(&[
                (&[("was_active", "false")], g(&self.claims_lost)),
                (&[("was_active", "true")], g(&self.active_claims_lost)),
            ]),
        );
        counter(
            &mut reg,
            "identity_conflicts",
            "Identity conflicts detected",
            g(&self.identity_conflicts),
        );
        counter(
            &mut reg,
            "reconciles",
            "Reconcile passes",
            g(&self.reconciles),
        );
        counter(
            &mut reg,
            "reconcile_ops",
            "Data-plane operations applied",
            g(&self.reconcile_ops),
        );
        counter(
            &mut reg,
            "reconcile_failures",
            "Data-plane operations or observations that failed",
            g(&self.reconcile_failures),
        );
        reg.register(
            "reconcile_ops_by_kind",
            "Data-plane operations by kind and result",
            self.reconcile_ops_by_kind.clone(),
        );
        gauge(
            &mut reg,
            "peers_programmed",
            "Peers whose routes are programmed",
            as_i64(g(&self.peers_programmed)),
        );
        gauge(&mut reg, "ready", "1 once ready", as_i64(g(&self.ready)));
        reg.register(
            "subnet_info",
            "1 per subnet this node claims, by address family and subnet",
            self.subnets.clone(),
        );
        reg.register(
            "file_writes",
            "Writes of subnet.env, the state file and the udp peers file, by file and result",
            self.file_writes.clone(),
        );
        reg.register(
            "file_write_pending",
            "1 while the file's last write failed (retried every step), by file",
            self.file_write_pending.clone(),
        );
        reg.register(
            "time_to_ready_seconds",
            "Seconds from start to ready (0 until ready)",
            ConstGauge::new(g(&self.time_to_ready_ms) as f64 / 1000.0),
        );

        let exported = self.gossip.snapshot().exported();
        for (family, help) in GOSSIP_METRICS {
            let rows: Vec<_> = exported.iter().filter(|(f, ..)| f == family).collect();
            match rows.as_slice() {
                [(_, "", _, v)] => counter(&mut reg, family, help, *v),
                _ => {
                    let fam = Family::<Labels, Counter>::default();
                    for (_, key, value, v) in &rows {
                        fam.get_or_create(&vec![(*key, value.to_string())])
                            .inc_by(*v);
                    }
                    reg.register(*family, *help, fam);
                }
            }
        }
        counter(
            &mut reg,
            "gossip_syns_skipped",
            "Gossip exchanges chitchat wanted that the fan-out skipped",
            g(&self.gossip_syns_skipped),
        );

        let t = &self.tunnel;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        reg.register(
            "tunnel_packets",
            "UDP tunnel frames",
            labelled(&[
                (&[("dir", "rx")], load(&t.rx_packets)),
                (&[("dir", "tx")], load(&t.tx_packets)),
            ]),
        );
        reg.register(
            "tunnel_bytes",
            "UDP tunnel bytes",
            labelled(&[
                (&[("dir", "rx")], load(&t.rx_bytes)),
                (&[("dir", "tx")], load(&t.tx_bytes)),
            ]),
        );
        let on = |b: &AtomicBool| i64::from(b.load(Ordering::Relaxed));
        let running = on(&t.enabled);
        gauge(
            &mut reg,
            "tunnel_udp_gso",
            "1 while the udp tunnel sends runs of frames with UDP GSO (0 once the kernel refused it)",
            running * (1 - on(&t.gso_refused)),
        );
        gauge(
            &mut reg,
            "tunnel_udp_gro",
            "1 while the udp tunnel's socket receives with UDP GRO",
            running * on(&t.gro),
        );
        let drops = Family::<Labels, Counter>::default();
        for r in DropReason::ALL {
            drops
                .get_or_create(&vec![("reason", r.label().to_string())])
                .inc_by(t.drops(r));
        }
        reg.register(
            "tunnel_drops",
            "UDP tunnel packets dropped, by reason",
            drops,
        );

        let rejected = Family::<Labels, Counter>::default();
        for (reason, n) in self.records_rejected.snapshot() {
            rejected
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(n);
        }
        reg.register(
            "records_rejected",
            "Peer records ignored because they failed a check, by reason",
            rejected,
        );
        reg.register(
            "key_reloads",
            "Keyring reloads (SIGHUP, weft keys reload), by result",
            labelled(&[
                (&[("result", "ok")], g(&self.key_reloads)),
                (&[("result", "error")], g(&self.key_reload_failures)),
            ]),
        );
        gauge(&mut reg, "up", "1 while the agent runs", 1);
        self.render_probes(&mut reg);

        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &reg);
        for (name, labels, value) in extra {
            out.push_str(&format!("{name}{labels} {value}\n"));
        }
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }
}

impl Metrics {
    fn render_probes(&self, reg: &mut Registry) {
        let p = self
            .probes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let c = &p.counters;
        reg.register(
            "probes",
            "Path probes sent, answered (replies to our requests), and requests we answered or left unanswered over the reply budget",
            labelled(&[
                (&[("kind", "sent")], c.sent),
                (&[("kind", "answered")], c.answered),
                (&[("kind", "replied")], c.replies),
                (&[("kind", "limited")], c.limited),
                (&[("kind", "send_error")], p.send_errors),
            ]),
        );
        let drops = Family::<Labels, Counter>::default();
        for reason in weft_proto::probe::ProbeError::REASONS
            .iter()
            .copied()
            .chain(["unexpected"])
        {
            drops
                .get_or_create(&vec![("reason", reason.to_string())])
                .inc_by(c.dropped.get(reason).copied().unwrap_or(0));
        }
        reg.register(
            "probes_dropped",
            "Probe datagrams refused, by reason (unexpected: a reply to nothing outstanding)",
            drops,
        );
        let paths = Family::<Labels, Gauge>::default();
        for (state, n) in p.paths.labelled() {
            paths
                .get_or_create(&vec![("state", state.to_string())])
                .set(n as i64);
        }
        reg.register(
            "paths",
            "Paths to peers by state, as probes find them",
            paths,
        );
        let mut buckets: Vec<(f64, u64)> = crate::probe::RTT_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(c.rtt_buckets.iter().copied())
            .collect();
        buckets.truncate(crate::probe::RTT_BUCKETS.len() + 1);
        reg.register(
            "path_rtt_seconds",
            "Round-trip time of small path probes",
            CountedHistogram {
                sum: c.rtt_sum,
                count: c.rtt_buckets.iter().sum(),
                buckets,
            },
        );
        reg.register(
            "probe_period_seconds",
            "How often each peer is probed (grows beyond 100 peers to keep the budget)",
            ConstGauge::new(p.period_s),
        );
    }
}

/// A counter family with one series per label set.
fn labelled(pairs: &[(&[(&'static str, &str)], u64)]) -> Family<Labels, Counter> {
    let fam = Family::<Labels, Counter>::default();
    for (labels, v) in pairs {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        fam.get_or_create(&labels).inc_by(*v);
    }
    fam
}

/// Reloads the keyring, logging and counting the outcome (SIGHUP, `weft keys reload`).
pub fn reload_keys(store: &KeyStore, metrics: &Metrics) -> Result<bool, KeyStoreError> {
    match store.reload() {
        Ok(changed) => {
            Metrics::add(&metrics.key_reloads, 1);
            let ids = store.ids();
            tracing::info!(
                path = %store.path().display(),
                primary = %weft_proto::keyfile::format_id(ids.primary),
                keys = ids.installed.len(),
                changed,
                op = "keys",
                "keyring reloaded"
            );
            Ok(changed)
        }
        Err(e) => {
            Metrics::add(&metrics.key_reload_failures, 1);
            tracing::error!(error = %e, op = "keys", "keyring reload failed; keeping the current keys");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_gossip_counter_is_exported_once_under_its_family() {
        let m = Metrics::default();
        m.gossip.drop_misdirected.store(7, Ordering::Relaxed);
        m.gossip.send_errors.store(3, Ordering::Relaxed);
        m.gossip.hellos_sent.store(5, Ordering::Relaxed);
        let text = m.render(&[]);
        for line in [
            "weft_gossip_dropped_total{reason=\"misdirected\"} 7",
            "weft_gossip_send_errors_total 3",
            "weft_gossip_hellos_total{kind=\"sent\"} 5",
            "weft_gossip_datagrams_total{direction=\"in\"} 0",
            "weft_gossip_digest_nacks_total{direction=\"received\"} 0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let snapshot = m.gossip.snapshot();
        assert_eq!(snapshot.drops(), 7);
        for (family, key, value, _) in snapshot.exported() {
            assert!(
                GOSSIP_METRICS.iter().any(|(f, _)| *f == family),
                "{family} has no help text, so it is not exported"
            );
            let sample = if key.is_empty() {
                format!("weft_{family}_total ")
            } else {
                format!("weft_{family}_total{{{key}=\"{value}\"}} ")
            };
            assert_eq!(text.matches(&sample).count(), 1, "{sample}");
        }
    }

    #[test]
    fn render_shows_counters_and_families() {
        let m = Metrics::default();
        Metrics::add(&m.claims, 2);
        Metrics::set(&m.nodes_alive, 3);
        m.op("add_route", true);
        m.op("add_route", false);
        m.set_nodes([
            ("alive", "active"),
            ("alive", "active"),
            ("dead", "claimed"),
        ]);
        m.tunnel.rx_bytes.store(100, Ordering::Relaxed);
        m.file_write("subnet_env", false);
        m.file_write("subnet_env", true);
        m.file_write("state", false);
        m.set_subnets(None, "fd00:10:244:3::/64".parse().ok());
        let text = m.render(&[]);
        assert!(!text.contains("family=\"ipv4\""), "IPv6-only: no IPv4 row");
        for line in [
            "weft_subnet_info{family=\"ipv6\",subnet=\"fd00:10:244:3::/64\"} 1",
            "weft_claims_total 2",
            "weft_nodes{liveness=\"alive\"} 3",
            "weft_reconcile_ops_by_kind_total{kind=\"add_route\",result=\"ok\"} 1",
            "weft_reconcile_ops_by_kind_total{kind=\"add_route\",result=\"failed\"} 1",
            "weft_nodes_by_state{liveness=\"alive\",state=\"active\"} 2",
            "weft_nodes_by_state{liveness=\"dead\",state=\"claimed\"} 1",
            "weft_tunnel_bytes_total{dir=\"rx\"} 100",
            "weft_tunnel_drops_total{reason=\"spoofed_source\"} 0",
            "weft_records_rejected_total{reason=\"underlay_ip\"} 0",
            "weft_gossip_dropped_total{reason=\"auth\"} 0",
            "# TYPE weft_claims counter",
            "weft_file_writes_total{file=\"subnet_env\",result=\"failed\"} 1",
            "weft_file_writes_total{file=\"subnet_env\",result=\"ok\"} 1",
            "weft_file_write_pending{file=\"subnet_env\"} 0",
            "weft_file_write_pending{file=\"state\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn probe_figures_are_a_fixed_set_of_series() {
        let m = Metrics::default();
        let mut counters = crate::probe::prober::Counters {
            sent: 10,
            answered: 8,
            replies: 7,
            limited: 1,
            ..Default::default()
        };
        counters.dropped.insert("auth", 3);
        counters.rtt_buckets[0] = 2;
        counters.rtt_buckets[3] = 1;
        counters.rtt_buckets[crate::probe::RTT_BUCKETS.len()] = 1;
        counters.rtt_sum = 3.5;
        *m.probes.lock().unwrap() = ProbeSnapshot {
            running: true,
            counters,
            paths: crate::probe::PathCounts {
                unknown: 0,
                ok: 998,
                down: 1,
                mtu: 1,
            },
            period_s: 100.0,
            send_errors: 2,
        };
        let text = m.render(&[]);
        for line in [
            "weft_probes_total{kind=\"sent\"} 10",
            "weft_probes_total{kind=\"answered\"} 8",
            "weft_probes_total{kind=\"limited\"} 1",
            "weft_probes_total{kind=\"send_error\"} 2",
            "weft_probes_dropped_total{reason=\"auth\"} 3",
            "weft_probes_dropped_total{reason=\"unexpected\"} 0",
            "weft_paths{state=\"ok\"} 998",
            "weft_paths{state=\"down\"} 1",
            "weft_path_rtt_seconds_count 4",
            "weft_path_rtt_seconds_bucket{le=\"0.0001\"} 2",
            "weft_path_rtt_seconds_bucket{le=\"0.001\"} 3",
            "weft_path_rtt_seconds_bucket{le=\"2.0\"} 3",
            "weft_path_rtt_seconds_bucket{le=\"+Inf\"} 4",
            "weft_probe_period_seconds 100.0",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let series = text
            .lines()
            .filter(|l| l.starts_with("weft_path") || l.starts_with("weft_probe"))
            .count();
        // 5 + 5 + 4 + (15 buckets + sum + count) + 1, whatever the number of peers.
        assert_eq!(series, 32, "{text}");
    }
}
