//! `--ip-masq`: flannel's masquerade rules, in the nftables tables that weft owns (`table ip weft`,
//! and `table ip6 weft` for a dual-stack overlay) and programs through the `nft` tool. weft never
//! touches any other table.
//!
//! The rules (for overlay network N and this node's subnet S):
//! - N → N: not masqueraded (containers see each other's real addresses);
//! - N → anywhere else except multicast: masqueraded (containers reach the outside world);
//! - outside N → S: not masqueraded (traffic into this node's containers keeps its source);
//! - outside N → N: masqueraded (the host talking to remote containers gets replies back).
//!
//! The whole table is replaced in one `nft -f` transaction, so a reconcile never leaves it
//! half-written. The table is part of the data plane's [`super::State`] (`masq`): desired once
//! the subnet is active with `--ip-masq`, observed by reading the table back
//! ([`observe`]), so a table removed or edited behind weft's back is repaired by the next
//! reconcile, left in place on SIGTERM and removed by `weft leave` like every other thing weft
//! owns. The netlink data plane calls these; the fake models the table in memory.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use tokio::process::Command;

use super::{Masquerade, Masquerade6};

/// The nftables table weft owns (in the `ip` family, and in `ip6` for a dual-stack overlay).
pub const TABLE: &str = "weft";

/// An nftables address family with its multicast range (never masqueraded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
}

/// The `nft -f` script that (re)creates the family's weft table with the masquerade rules.
fn rules(family: Family, network: &str, subnet: &str) -> String {
    let (f, mc) = (family.name(), family.multicast());
    format!(
        "table {f} {TABLE} {{}}\n\
         delete table {f} {TABLE}\n\
         table {f} {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\t{f} saddr {network} {f} daddr {network} return\n\
         \t\t{f} saddr {network} {f} daddr != {mc} masquerade fully-random\n\
         \t\t{f} saddr != {network} {f} daddr {subnet} return\n\
         \t\t{f} saddr != {network} {f} daddr {network} masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
}

/// The `nft -f` script that (re)creates `table ip weft` with the masquerade rules.
pub fn ruleset(network: Ipv4Net, subnet: Ipv4Net) -> String {
    rules(Family::V4, &network.to_string(), &subnet.to_string())
}

/// The same for the IPv6 overlay: `table ip6 weft`.
pub fn ruleset6(network: Ipv6Net, subnet: Ipv6Net) -> String {
    rules(Family::V6, &network.to_string(), &subnet.to_string())
}

/// Why an `nft` call failed.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    /// `nft` could not be started (not installed).
    #[error("cannot run nft: {0} (install nftables)")]
    Spawn(#[source] std::io::Error),
    /// Talking to the `nft` process failed.
    #[error("nft: {0}")]
    Io(#[source] std::io::Error),
    /// `nft` refused; `stderr` is its own message.
    #[error("nft {args}: {stderr}")]
    Refused {
        /// The arguments it was given.
        args: String,
        /// What it said.
        stderr: String,
    },
}

/// Runs `nft` with `args`, feeding `stdin`; the error carries nft's own message.
async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, MasqError> {
    use std::process::Stdio;
    use tokio::io::AsyncWriteExt;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(MasqError::Spawn)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(MasqError::Io)?;
    }
    let out = child.wait_with_output().await.map_err(MasqError::Io)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(MasqError::Refused {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Replaces `table ip weft` with the rules for `m`, in one transaction.
pub async fn install(m: Masquerade) -> Result<(), MasqError> {
    nft(&["-f", "-"], Some(&ruleset(m.network, m.subnet)))
        .await
        .map(|_| ())
}

/// Replaces `table ip6 weft` with the rules for `m`, in one transaction.
pub async fn install6(m: Masquerade6) -> Result<(), MasqError> {
    nft(&["-f", "-"], Some(&ruleset6(m.network, m.subnet)))
        .await
        .map(|_| ())
}

/// Deletes `table ip weft` (absent is success).
pub async fn remove() -> Result<(), MasqError> {
    remove_family(Family::V4).await
}

/// Deletes `table ip6 weft` (absent is success).
pub async fn remove6() -> Result<(), MasqError> {
    remove_family(Family::V6).await
}

async fn remove_family(family: Family) -> Result<(), MasqError> {
    let f = family.name();
    // Creating it first makes the delete succeed when it is absent, in one transaction.
    nft(
        &["-f", "-"],
        Some(&format!(
            "table {f} {TABLE} {{}}\ndelete table {f} {TABLE}\n"
        )),
    )
    .await
    .map(|_| ())
}

/// What `table ip weft` holds now: `None` when it is absent (or `nft` is not installed, so
/// nothing can have made it); the rules it holds when they are flannel's four for some
/// network and subnet; [`UNREADABLE`] when the table exists in any other shape (edited), so
/// that a reconcile replaces it or, without `--ip-masq`, removes it.
pub async fn observe() -> Option<Masquerade> {
    match nft(&["list", "table", "ip", TABLE], None).await {
        Ok(text) => Some(parse(&text).unwrap_or(UNREADABLE)),
        Err(_) => None,
    }
}

/// The same for `table ip6 weft` ([`UNREADABLE6`] when edited).
pub async fn observe6() -> Option<Masquerade6> {
    match nft(&["list", "table", "ip6", TABLE], None).await {
        Ok(text) => Some(parse6(&text).unwrap_or(UNREADABLE6)),
        Err(_) => None,
    }
}

/// How a `table ip6 weft` that is not the four rules is observed: as rules for ::/128.
pub const UNREADABLE6: Masquerade6 = Masquerade6 {
    network: Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128),
    subnet: Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 128),
};

/// How a `table ip weft` that is not flannel's four rules is observed: as rules for 0.0.0.0/32,
/// which no desired state holds.
pub const UNREADABLE: Masquerade = Masquerade {
    network: Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 32),
    subnet: Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 32),
};

/// The network and subnet of `nft list table ip weft` output, when its rules are exactly the
/// four of [`ruleset`].
pub fn parse(listing: &str) -> Option<Masquerade> {
    let (network, subnet) = parse_family(listing, Family::V4)?;
    Some(Masquerade {
        network: network.parse().ok()?,
        subnet: subnet.parse().ok()?,
    })
}

/// The same for `nft list table ip6 weft` and [`ruleset6`].
pub fn parse6(listing: &str) -> Option<Masquerade6> {
    let (network, subnet) = parse_family(listing, Family::V6)?;
    Some(Masquerade6 {
        network: network.parse().ok()?,
        subnet: subnet.parse().ok()?,
    })
}

/// The network and subnet (as nft prints them) of a listing whose rules are exactly the four of
/// [`rules`] for them.
fn parse_family(listing: &str, family: Family) -> Option<(String, String)> {
    let f = family.name();
    let prefix = format!("{f} ");
    let rule_lines: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix) || l.contains("masquerade") || l.ends_with("return"))
        .collect();
    let subnet_rule = rule_lines
        .iter()
        .find(|l| l.starts_with(&format!("{f} saddr != ")) && l.ends_with(" return"))?;
    let words: Vec<&str> = subnet_rule.split_whitespace().collect();
    // <f> saddr != N <f> daddr S return
    let (network, subnet) = match words.as_slice() {
        [f1, "saddr", "!=", n, f2, "daddr", s, "return"] if *f1 == f && *f2 == f => {
            (n.to_string(), s.to_string())
        }
        _ => return None,
    };
    let expected = rules(family, &network, &subnet);
    let want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with(&prefix))
        .collect();
    (rule_lines == want).then_some((network, subnet))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_of_the_four_rules_reads_back_and_anything_else_does_not() {
        let m = Masquerade {
            network: "10.244.0.0/16".parse().unwrap(),
            subnet: "10.244.3.0/24".parse().unwrap(),
        };
        // As `nft list table ip weft` prints it.
        let listing = "table ip weft {\n\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return\n\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n\t\tip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return\n\t\tip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random\n\t}\n}\n";
        assert_eq!(parse(listing), Some(m));
        let edited = listing.replace(
            "\t\tip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random\n",
            "",
        );
        assert_eq!(parse(&edited), None);
        let extra = listing.replace(
            "policy accept;\n",
            "policy accept;\n\t\tip saddr 1.2.3.4 accept\n",
        );
        assert_eq!(parse(&extra), None);
        assert_eq!(parse("table ip weft {\n}\n"), None);
        assert_ne!(Some(UNREADABLE), Some(m));
    }

    #[test]
    fn the_ipv6_table_holds_the_same_four_rules_and_reads_back() {
        let m = Masquerade6 {
            network: "fd00:10:244::/56".parse().unwrap(),
            subnet: "fd00:10:244:3::/64".parse().unwrap(),
        };
        let text = ruleset6(m.network, m.subnet);
        assert!(text.contains("ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade"));
        assert!(text.contains("ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:3::/64 return"));
        for line in text
            .lines()
            .filter(|l| l.starts_with("table") || l.starts_with("delete"))
        {
            assert!(line.contains("table ip6 weft"), "{line}");
        }
        // A listing as nft prints it (the script minus its first two lines) reads back; the
        // IPv4 parser does not take it, nor the IPv6 one an IPv4 listing.
        let listing: String = text.lines().skip(2).map(|l| format!("{l}\n")).collect();
        assert_eq!(parse6(&listing), Some(m));
        assert_eq!(parse(&listing), None);
        let v4: String = ruleset(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        )
        .lines()
        .skip(2)
        .map(|l| format!("{l}\n"))
        .collect();
        assert_eq!(parse6(&v4), None);
        assert!(parse(&v4).is_some());
    }

    #[test]
    fn ruleset_has_flannels_four_rules_in_the_weft_table_only() {
        let text = ruleset(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
        );
        assert!(text.contains("ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return"));
        assert!(
            text.contains("ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random")
        );
        assert!(text.contains("ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return"));
        assert!(text.contains("ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade"));
        for line in text
            .lines()
            .filter(|l| l.starts_with("table") || l.starts_with("delete"))
        {
            assert!(line.contains("table ip weft"), "{line}");
        }
    }
}
