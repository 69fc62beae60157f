//! Rendering of a [`StatusReport`] as `weft status` prints it: header lines about this node, then
//! one aligned row per node, like `serf members`. Pure: text in, text out.

use std::fmt::Write;

use crate::api::{NodeStatus, StatusReport};
use crate::probe::PathReport;

const HEADERS: [&str; 7] = [
    "NAME", "UNDERLAY", "SUBNET", "STATE", "LIVENESS", "ROUTES", "PATH",
];

/// The full `weft status` text, ending with a newline.
pub fn render_status(report: &StatusReport) -> String {
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    render_status_at(report, now_unix_ms)
}

/// [`render_status`] with ages counted to `now_unix_ms`.
pub fn render_status_at(report: &StatusReport, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} (generation {}), underlay {}, backend {}, network {}",
        clean(&report.node_name),
        report.generation,
        clean(&report.underlay_ip),
        clean(&report.backend),
        clean(&report.network),
    );
    let subnet = match (report.subnet, report.ipv6_subnet) {
        (Some(s), Some(v6)) => Some(format!("{s} and {v6}")),
        (Some(s), None) => Some(s.to_string()),
        (None, Some(v6)) => Some(v6.to_string()),
        (None, None) => None,
    };
    let _ = writeln!(
        out,
        "subnet {}, state {}",
        subnet.as_deref().unwrap_or("none"),
        report.state
    );
    if report.ready {
        out.push_str("ready\n");
    } else {
        match &report.ready_reason {
            Some(reason) => {
                let _ = writeln!(out, "not ready: {}", clean(reason));
            }
            None => out.push_str("not ready\n"),
        }
    }
    if report.insecure {
        out.push_str("warning: gossip is not authenticated nor encrypted (--insecure)\n");
    }
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {}", clean(warning));
    }
    out.push('\n');

    // The PATH column once this agent probes (it reports the fleet's paths).
    let columns = if report.paths.is_some() { 7 } else { 6 };
    let rows: Vec<Vec<String>> = report
        .nodes
        .iter()
        .map(|n| row(n, now_unix_ms).into_iter().take(columns).collect())
        .collect();
    let headers: Vec<String> = HEADERS
        .iter()
        .take(columns)
        .map(|h| h.to_string())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    push_row(&mut out, &headers, &widths);
    for r in &rows {
        push_row(&mut out, r, &widths);
    }
    out
}

/// The PATH cell: `ok 0.42ms`, `down (no answer for 32s)`, `mtu 1400`, `unknown`, or `-` when
/// this agent does not probe the node (itself, a node without routes, one that does not answer
/// probes).
pub fn path_cell(path: Option<&PathReport>, now_unix_ms: u64) -> String {
    let Some(p) = path else {
        return "-".into();
    };
    match p.state.as_str() {
        "ok" => match p.rtt_ms {
            Some(ms) => format!(
                "ok {}",
                crate::probe::path::format_rtt(std::time::Duration::from_secs_f64(
                    (ms / 1000.0).clamp(0.0, 3600.0)
                ))
            ),
            None => "ok".into(),
        },
        "down" => match p.reason.as_deref() {
            Some("no answer") => format!(
                "down (no answer for {}s)",
                now_unix_ms.saturating_sub(p.since) / 1000
            ),
            reason => format!("down ({})", clean(reason.unwrap_or("?"))),
        },
        "mtu" => format!("mtu {}", p.mtu.unwrap_or(0)),
        other => clean(other),
    }
}

fn row(node: &NodeStatus, now_unix_ms: u64) -> [String; 7] {
    let routes = if node.is_self {
        "self".to_string()
    } else if node.programmed {
        "yes".to_string()
    } else {
        match &node.reason {
            Some(reason) => format!("no ({})", clean(reason)),
            None => "no".to_string(),
        }
    };
    [
        clean(&node.name),
        clean(&node.underlay_ip),
        match (node.subnet, node.ipv6_subnet) {
            (Some(s), Some(v6)) => format!("{s},{v6}"),
            (Some(s), None) => s.to_string(),
            (None, Some(v6)) => v6.to_string(),
            (None, None) => "-".into(),
        },
        node.state.to_string(),
        node.liveness.to_string(),
        routes,
        path_cell(node.path.as_ref(), now_unix_ms),
    ]
}

fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        line.push_str(cell);
        if i + 1 < cells.len() {
            let pad = width.saturating_sub(cell.chars().count()) + 2;
            line.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// Text from peers reaches the terminal: replace control characters (escape sequences, newlines).
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClaimStatus, Liveness};

    fn node(name: &str, ip: &str, subnet: Option<&str>) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            generation: 1,
            underlay_ip: ip.into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            ipv6_subnet: None,
            state: ClaimStatus::Active,
            liveness: Liveness::Alive,
            is_self: false,
            programmed: true,
            reason: None,
            path: None,
        }
    }

    #[test]
    fn renders_header_and_aligned_rows() {
        let mut me = node("h1", "172.31.250.11", Some("10.244.1.0/24"));
        me.is_self = true;
        let peer = node("host-number-2", "172.31.250.12", Some("10.244.7.0/24"));
        let mut dead = node("h3", "172.31.250.13", Some("10.244.9.0/24"));
        dead.liveness = Liveness::Dead;
        dead.programmed = false;
        dead.reason = Some("reservation expired".into());
        let mut searching = node("h4", "172.31.250.14", None);
        searching.state = ClaimStatus::None;
        searching.programmed = false;
        let report = StatusReport {
            node_name: "h1".into(),
            generation: 42,
            underlay_ip: "172.31.250.11".into(),
            backend: "vxlan".into(),
            network: "10.244.0.0/16".into(),
            subnet: Some("10.244.1.0/24".parse().unwrap()),
            ipv6_subnet: None,
            state: ClaimStatus::Active,
            ready: true,
            ready_reason: None,
            insecure: true,
            warnings: vec!["node h9 claims our name from 10.0.0.9".into()],
            nodes: vec![me, peer, dead, searching],
            paths: None,
        };
        let expected = "\
node h1 (generation 42), underlay 172.31.250.11, backend vxlan, network 10.244.0.0/16
subnet 10.244.1.0/24, state active
ready
warning: gossip is not authenticated nor encrypted (--insecure)
warning: node h9 claims our name from 10.0.0.9

NAME           UNDERLAY       SUBNET         STATE   LIVENESS  ROUTES
h1             172.31.250.11  10.244.1.0/24  active  alive     self
host-number-2  172.31.250.12  10.244.7.0/24  active  alive     yes
h3             172.31.250.13  10.244.9.0/24  active  dead      no (reservation expired)
h4             172.31.250.14  -              none    alive     no
";
        assert_eq!(render_status(&report), expected);
    }

    #[test]
    fn a_dual_stack_node_shows_both_subnets() {
        let mut me = node("h1", "172.31.250.11", Some("10.244.1.0/24"));
        me.is_self = true;
        me.ipv6_subnet = Some("fd00:10:244:1::/64".parse().unwrap());
        let report = StatusReport {
            node_name: "h1".into(),
            subnet: me.subnet,
            ipv6_subnet: me.ipv6_subnet,
            state: ClaimStatus::Active,
            ready: true,
            nodes: vec![me],
            ..StatusReport::default()
        };
        let text = render_status(&report);
        assert!(
            text.contains("subnet 10.244.1.0/24 and fd00:10:244:1::/64, state active"),
            "{text}"
        );
        assert!(text.contains("10.244.1.0/24,fd00:10:244:1::/64"), "{text}");
        let json = serde_json::to_string(&report).unwrap();
        assert!(
            json.contains(r#""ipv6_subnet":"fd00:10:244:1::/64""#),
            "{json}"
        );
        // IPv6-only: the IPv6 subnet alone, and `subnet` null in the JSON.
        let v6_only = StatusReport {
            subnet: None,
            ..report.clone()
        };
        let text = render_status(&v6_only);
        assert!(
            text.contains("subnet fd00:10:244:1::/64, state active"),
            "{text}"
        );
        let json = serde_json::to_string(&v6_only).unwrap();
        assert!(json.contains(r#""subnet":null"#), "{json}");
        let v4_only = serde_json::to_string(&StatusReport::default()).unwrap();
        assert!(
            !v4_only.contains("ipv6"),
            "IPv4-only JSON is unchanged: {v4_only}"
        );
    }

    #[test]
    fn not_ready_and_hostile_text() {
        let report = StatusReport {
            node_name: "h1\u{1b}[2J".into(),
            state: ClaimStatus::Searching,
            ready_reason: Some("no seed reachable yet:\n10.0.0.1:7947".into()),
            ..StatusReport::default()
        };
        let text = render_status(&report);
        assert!(text.starts_with("node h1?[2J (generation 0)"), "{text}");
        assert!(text.contains("subnet none, state searching\n"), "{text}");
        assert!(
            text.contains("not ready: no seed reachable yet:?10.0.0.1:7947\n"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'));
        assert!(
            text.ends_with("NAME  UNDERLAY  SUBNET  STATE  LIVENESS  ROUTES\n"),
            "{text}"
        );
    }

    #[test]
    fn the_path_column_and_the_fleet_view() {
        let mut me = node("h1", "172.31.250.11", Some("10.244.1.0/24"));
        me.is_self = true;
        let path =
            |state: &str, rtt_ms: f64, mtu: Option<u32>, since: u64, reason: Option<&str>| {
                Some(PathReport {
                    state: state.into(),
                    rtt_ms: Some(rtt_ms),
                    mtu,
                    since,
                    reason: reason.map(Into::into),
                })
            };
        let mut ok = node("h2", "172.31.250.12", Some("10.244.2.0/24"));
        ok.path = path("ok", 0.42, None, 0, None);
        let mut down = node("h3", "172.31.250.13", Some("10.244.3.0/24"));
        down.path = path("down", 0.5, None, 1_000, Some("no answer"));
        let mut mtu = node("h4", "172.31.250.14", Some("10.244.4.0/24"));
        mtu.path = path(
            "mtu",
            0.5,
            Some(1350),
            0,
            Some("small passes, full-size does not"),
        );
        let report = StatusReport {
            node_name: "h1".into(),
            nodes: vec![me, ok, down, mtu],
            paths: Some(crate::probe::fleet::FleetReport::default()),
            ..StatusReport::default()
        };
        let text = render_status_at(&report, 13_500);
        assert!(text.contains("ROUTES  PATH\n"), "{text}");
        assert!(text.contains("self    -\n"), "{text}");
        assert!(text.contains("yes     ok 0.42ms\n"), "{text}");
        assert!(
            text.contains("yes     down (no answer for 12s)\n"),
            "{text}"
        );
        assert!(text.contains("yes     mtu 1350\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["nodes"][1]["path"]["state"], "ok");
        assert_eq!(json["nodes"][1]["path"]["rtt_ms"], 0.42);
        assert_eq!(json["nodes"][3]["path"]["mtu"], 1350);
    }
}
