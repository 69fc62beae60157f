//! Rendering of a [`StatusReport`] as `weft status` prints it: header lines about this node, then
//! one aligned row per node, like `serf members`. Pure: text in, text out.

use std::fmt::Write;

use crate::api::{NodeStatus, StatusReport};

const HEADERS: [&str; 6] = ["NAME", "UNDERLAY", "SUBNET", "STATE", "LIVENESS", "ROUTES"];

/// The full `weft status` text, ending with a newline.
pub fn render_status(report: &StatusReport) -> String {
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

    let rows: Vec<[String; 6]> = report.nodes.iter().map(row).collect();
    let mut widths = HEADERS.map(|h| h.chars().count());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    push_row(&mut out, &HEADERS.map(String::from), &widths);
    for r in &rows {
        push_row(&mut out, r, &widths);
    }
    out
}

fn row(node: &NodeStatus) -> [String; 6] {
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
    ]
}

fn push_row(out: &mut String, cells: &[String; 6], widths: &[usize; 6]) {
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
}
