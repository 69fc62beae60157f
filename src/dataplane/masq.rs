//! `--ip-masq`: flannel's masquerade rules, in an nftables table that weft owns (`table ip weft`)
//! and programs through the `nft` tool. weft never touches any other table.
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

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tokio::process::Command;

use super::Masquerade;

/// The nftables table weft owns.
pub const TABLE: &str = "weft";

/// The `nft -f` script that (re)creates `table ip weft` with the masquerade rules.
pub fn ruleset(network: Ipv4Net, subnet: Ipv4Net) -> String {
    format!(
        "table ip {TABLE} {{}}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {network} ip daddr {network} return\n\
         \t\tip saddr {network} ip daddr != 224.0.0.0/4 masquerade fully-random\n\
         \t\tip saddr != {network} ip daddr {subnet} return\n\
         \t\tip saddr != {network} ip daddr {network} masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
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

/// Deletes `table ip weft` (absent is success).
pub async fn remove() -> Result<(), MasqError> {
    // Creating it first makes the delete succeed when it is absent, in one transaction.
    nft(
        &["-f", "-"],
        Some(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")),
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

/// How a `table ip weft` that is not flannel's four rules is observed: as rules for 0.0.0.0/32,
/// which no desired state holds.
pub const UNREADABLE: Masquerade = Masquerade {
    network: Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 32),
    subnet: Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 32),
};

/// The network and subnet of `nft list table ip weft` output, when its rules are exactly the
/// four of [`ruleset`].
pub fn parse(listing: &str) -> Option<Masquerade> {
    let rules: Vec<&str> = listing
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ip ") || l.contains("masquerade") || l.ends_with("return"))
        .collect();
    let subnet_rule = rules
        .iter()
        .find(|l| l.starts_with("ip saddr != ") && l.ends_with(" return"))?;
    let words: Vec<&str> = subnet_rule.split_whitespace().collect();
    // ip saddr != N ip daddr S return
    let (network, subnet) = match words.as_slice() {
        ["ip", "saddr", "!=", n, "ip", "daddr", s, "return"] => (n.parse().ok()?, s.parse().ok()?),
        _ => return None,
    };
    let expected = ruleset(network, subnet);
    let want: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("ip "))
        .collect();
    (rules == want).then_some(Masquerade { network, subnet })
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
