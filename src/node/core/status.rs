//! The [`StatusReport`] (`weft status`, `/v1/status`, `/readyz`) from the node's state and what
//! the files answered.

use weft_proto::ClaimState;

use super::{FileFacts, Node};
use crate::api::{ClaimStatus, Liveness, NodeStatus, StatusReport};
use crate::lease::{Phase, Verdict};

impl Node {
    /// What `/v1/status`, `weft status` and `/readyz` show now.
    pub fn status(&self, files: &dyn FileFacts) -> StatusReport {
        let w = self;
        let (state, claim) = match w.lease.phase() {
            Phase::Warmup { .. } => (ClaimStatus::Searching, None),
            Phase::Searching { .. } => (ClaimStatus::Searching, None),
            Phase::Claimed { subnet, .. } => (ClaimStatus::Claimed, Some(*subnet)),
            Phase::Active { subnet, .. } => (ClaimStatus::Active, Some(*subnet)),
            Phase::Refused { .. } => (ClaimStatus::Refused, None),
            Phase::Leaving { subnet, .. } => (ClaimStatus::Leaving, *subnet),
        };
        let own = claim.map(|s| w.subnets_of(s)).unwrap_or_default();
        let (subnet, ipv6_subnet) = (own.v4, own.v6);
        let applied_ok = w.programming.applied_ok();
        let ready_reason = match w.lease.phase() {
            _ if !w.config.seeds.is_empty() && w.first_live_peer.is_none() => Some(format!(
                "no seed reachable yet ({}); retrying",
                w.config.seeds.join(", ")
            )),
            Phase::Warmup { .. } => Some("listening to the mesh before claiming".to_string()),
            Phase::Searching { reason } => Some(reason.clone()),
            Phase::Claimed { subnet, .. } => Some(format!("claim on {subnet} settling")),
            Phase::Refused { reason } => Some(format!("identity conflict: {reason}")),
            Phase::Leaving { .. } => Some("leaving".to_string()),
            // CNI hands out addresses from subnet.env: not ready until it names the active subnet.
            Phase::Active { subnet, .. }
                if !files.subnet_env_holds(&w.subnet_env_text(*subnet)) =>
            {
                Some(match files.subnet_env_failure() {
                    Some(e) => format!("subnet.env does not hold {subnet}: {e}; retrying"),
                    None => format!(
                        "subnet.env ({}) not written yet for {subnet}",
                        files.subnet_env_path()
                    ),
                })
            }
            Phase::Active { .. } if files.state_failure().is_some() => Some(format!(
                "state file not saved: {}; retrying",
                files.state_failure().unwrap_or_default()
            )),
            Phase::Active { .. } if !applied_ok => {
                Some("data plane not fully programmed".to_string())
            }
            Phase::Active { .. } => None,
        };
        let mut warnings = w.warnings.clone();
        let failures = [
            ("subnet.env not written", files.subnet_env_failure()),
            ("state file not saved", files.state_failure()),
            ("udp peers file not saved", files.udp_peers_failure()),
        ];
        for (what, e) in failures {
            if let Some(e) = e {
                warnings.push(format!("{what}: {e}; retrying"));
            }
        }
        if let Phase::Refused { reason } = w.lease.phase() {
            warnings.push(format!("identity conflict: {reason}"));
        }

        let mut nodes = vec![NodeStatus {
            name: w.config.node_name.clone(),
            generation: w.generation,
            underlay_ip: w.announce_ip.to_string(),
            subnet,
            ipv6_subnet,
            state,
            liveness: Liveness::Alive,
            is_self: true,
            programmed: applied_ok,
            reason: None,
            path: None,
        }];
        for r in &w.view.members {
            // Superseded generations are noise for an operator: show the current one only.
            if matches!(r.verdict, Verdict::Superseded { .. }) {
                continue;
            }
            let record = r.record();
            let programmed = w
                .programming
                .programmed(&r.member.name)
                .is_some_and(|s| Some(s) == r.holds);
            let reason = if programmed {
                None
            } else {
                Some(match &r.verdict {
                    Verdict::Usable if r.holds.is_none() => "no subnet claimed".to_string(),
                    Verdict::Usable if w.lease.claim().is_none() => {
                        "this node has no claim yet".to_string()
                    }
                    Verdict::Usable if w.skipped.contains_key(&r.member.name) => {
                        w.skipped.get(&r.member.name).cloned().unwrap_or_default()
                    }
                    Verdict::Usable => match r
                        .holds
                        .and_then(|s| w.view.held().get(&s).map(|b| b.name.to_string()))
                    {
                        Some(winner) if winner != r.member.name => {
                            format!("subnet held by {winner}")
                        }
                        _ => match w.lease.claim() {
                            Some((own, _)) if Some(own) == r.holds => {
                                "subnet contested with this node".to_string()
                            }
                            _ => "not yet programmed".to_string(),
                        },
                    },
                    Verdict::Superseded { by_generation } => {
                        format!("superseded by generation {by_generation}")
                    }
                    Verdict::Refused(why) => format!("refused: {why}"),
                    Verdict::Invalid(why) => format!("invalid record: {why}"),
                    Verdict::Expired => "dead beyond the reservation period".to_string(),
                    Verdict::Leaving => "left the mesh".to_string(),
                })
            };
            nodes.push(NodeStatus {
                name: r.member.name.clone(),
                generation: r.member.generation,
                underlay_ip: record
                    .map(|x| x.underlay_ip.to_string())
                    .unwrap_or_default(),
                subnet: record.and_then(|x| x.subnet).map(crate::lease::cidr_to_net),
                ipv6_subnet: record
                    .and_then(|x| x.families.ipv6?.subnet)
                    .map(crate::lease::ipv6_net),
                state: match record.map(|x| (x.state, crate::lease::claimed_net(x).is_some())) {
                    Some((ClaimState::Leaving, _)) => ClaimStatus::Leaving,
                    Some((_, false)) | None => ClaimStatus::None,
                    Some((ClaimState::Claimed, true)) => ClaimStatus::Claimed,
                    Some((ClaimState::Active, true)) => ClaimStatus::Active,
                },
                liveness: if r.member.alive {
                    Liveness::Alive
                } else {
                    Liveness::Dead
                },
                is_self: false,
                programmed,
                reason,
                path: w.path_report(&r.member.name),
            });
        }
        nodes.sort_by(|a, b| (&a.name, a.generation).cmp(&(&b.name, b.generation)));

        StatusReport {
            node_name: w.config.node_name.clone(),
            generation: w.generation,
            underlay_ip: w.announce_ip.to_string(),
            backend: match w.config.backend {
                weft_proto::Backend::Vxlan if w.config.direct_routing => "vxlan (DirectRouting)",
                weft_proto::Backend::Vxlan => "vxlan",
                weft_proto::Backend::HostGw => "host-gw",
                weft_proto::Backend::Udp => "udp",
            }
            .to_string(),
            network: match (w.config.ipv4, w.config.ipv6) {
                (false, Some(pool)) => pool.network.to_string(),
                _ => w.config.network.to_string(),
            },
            subnet,
            ipv6_subnet,
            state,
            ready: ready_reason.is_none(),
            ready_reason,
            insecure: w.config.insecure,
            warnings,
            nodes,
            paths: w.fleet_report(),
        }
    }
}
