//! Counters the agent keeps and `/metrics` exposes in Prometheus text format.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cluster::RecordRejects;
use crate::cluster::transport::GossipCounters;

/// Monotonic counters and gauges, shared between the agent loop and the API.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Gossip datagrams, bytes and drops, kept by the sealed transport.
    pub gossip: Arc<GossipCounters>,
    /// The udp tunnel's packets, bytes and drops (rendered only while a tunnel runs).
    pub tunnel: Arc<crate::tunnel::TunnelCounters>,
    pub nodes_alive: AtomicU64,
    pub nodes_dead: AtomicU64,
    pub bad_records: AtomicU64,
    pub claims: AtomicU64,
    pub claims_lost: AtomicU64,
    pub active_claims_lost: AtomicU64,
    pub identity_conflicts: AtomicU64,
    pub reconciles: AtomicU64,
    pub reconcile_ops: AtomicU64,
    pub reconcile_failures: AtomicU64,
    pub peers_programmed: AtomicU64,
    pub ready: AtomicU64,
    /// Milliseconds from start to ready (0 until ready).
    pub time_to_ready_ms: AtomicU64,
    /// Peer records rejected before use, by reason.
    pub records_rejected: Arc<RecordRejects>,
    /// Keyring reloads (SIGHUP, `weft keys reload`) that succeeded and failed.
    pub key_reloads: AtomicU64,
    pub key_reload_failures: AtomicU64,
}

impl Metrics {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(c: &AtomicU64, n: u64) {
        c.store(n, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, extra: &[(&str, &str, u64)]) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 13] = [
            (
                "weft_nodes",
                "gauge",
                "{liveness=\"alive\"}",
                g(&self.nodes_alive),
            ),
            (
                "weft_nodes",
                "gauge",
                "{liveness=\"dead\"}",
                g(&self.nodes_dead),
            ),
            ("weft_bad_records", "gauge", "", g(&self.bad_records)),
            ("weft_claims_total", "counter", "", g(&self.claims)),
            (
                "weft_claims_lost_total",
                "counter",
                "{was_active=\"false\"}",
                g(&self.claims_lost),
            ),
            (
                "weft_claims_lost_total",
                "counter",
                "{was_active=\"true\"}",
                g(&self.active_claims_lost),
            ),
            (
                "weft_identity_conflicts_total",
                "counter",
                "",
                g(&self.identity_conflicts),
            ),
            ("weft_reconciles_total", "counter", "", g(&self.reconciles)),
            (
                "weft_reconcile_ops_total",
                "counter",
                "",
                g(&self.reconcile_ops),
            ),
            (
                "weft_reconcile_failures_total",
                "counter",
                "",
                g(&self.reconcile_failures),
            ),
            (
                "weft_peers_programmed",
                "gauge",
                "",
                g(&self.peers_programmed),
            ),
            ("weft_ready", "gauge", "", g(&self.ready)),
            (
                "weft_time_to_ready_seconds",
                "gauge",
                "",
                g(&self.time_to_ready_ms) / 1000,
            ),
        ];
        let mut out = String::new();
        let mut last = "";
        for (name, kind, labels, value) in rows {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last = name;
            }
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        let s = self.gossip.snapshot();
        let gossip: [(&str, &str, &str, u64); 13] = [
            (
                "weft_gossip_datagrams_total",
                "counter",
                "{direction=\"in\"}",
                s.datagrams_in,
            ),
            (
                "weft_gossip_datagrams_total",
                "counter",
                "{direction=\"out\"}",
                s.datagrams_out,
            ),
            (
                "weft_gossip_bytes_total",
                "counter",
                "{direction=\"in\"}",
                s.bytes_in,
            ),
            (
                "weft_gossip_bytes_total",
                "counter",
                "{direction=\"out\"}",
                s.bytes_out,
            ),
            (
                "weft_gossip_dropped_total",
                "counter",
                "{reason=\"malformed\"}",
                s.drop_malformed,
            ),
            (
                "weft_gossip_dropped_total",
                "counter",
                "{reason=\"unknown_key\"}",
                s.drop_unknown_key,
            ),
            (
                "weft_gossip_dropped_total",
                "counter",
                "{reason=\"auth\"}",
                s.drop_auth,
            ),
            (
                "weft_gossip_dropped_total",
                "counter",
                "{reason=\"replay\"}",
                s.drop_replay,
            ),
            (
                "weft_gossip_dropped_total",
                "counter",
                "{reason=\"plaintext\"}",
                s.drop_plaintext,
            ),
            (
                "weft_gossip_dropped_total",
                "counter",
                "{reason=\"oversized\"}",
                s.drop_oversized,
            ),
            (
                "weft_gossip_send_errors_total",
                "counter",
                "",
                s.send_errors,
            ),
            (
                "weft_gossip_relays_evicted_total",
                "counter",
                "",
                s.relays_evicted,
            ),
            ("weft_up", "gauge", "", 1),
        ];
        for (name, kind, labels, value) in gossip {
            if name != last {
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last = name;
            }
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        let _ = writeln!(out, "# TYPE weft_records_rejected_total counter");
        for (reason, n) in self.records_rejected.snapshot() {
            let _ = writeln!(
                out,
                "weft_records_rejected_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# TYPE weft_key_reloads_total counter");
        let _ = writeln!(
            out,
            "weft_key_reloads_total{{result=\"ok\"}} {}",
            g(&self.key_reloads)
        );
        let _ = writeln!(
            out,
            "weft_key_reloads_total{{result=\"error\"}} {}",
            g(&self.key_reload_failures)
        );
        for (name, labels, value) in extra {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        self.tunnel.render(&mut out);
        out
    }
}
