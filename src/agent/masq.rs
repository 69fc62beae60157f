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
//! half-written. The rules are installed once the subnet is active, re-checked on every
//! reconcile, left in place on SIGTERM and removed by `weft leave`.

use ipnet::Ipv4Net;
use tokio::process::Command;

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

/// Runs `nft` with `args`, feeding `stdin`; the error carries nft's own message.
async fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
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
        .map_err(|e| format!("cannot run nft: {e} (install nftables)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .map_err(|e| format!("nft stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The masquerade rules' state in the agent.
#[derive(Debug, Default)]
pub struct IpMasq {
    installed: Option<(Ipv4Net, Ipv4Net)>,
}

impl IpMasq {
    /// Makes sure the table holds the rules for `network`/`subnet`: replaces it when the subnet
    /// changed or when the table is gone or was edited. Returns whether it wrote anything.
    pub async fn ensure(&mut self, network: Ipv4Net, subnet: Ipv4Net) -> Result<bool, String> {
        if self.installed == Some((network, subnet)) && present(network, subnet).await {
            return Ok(false);
        }
        nft(&["-f", "-"], Some(&ruleset(network, subnet))).await?;
        self.installed = Some((network, subnet));
        Ok(true)
    }

    /// Deletes `table ip weft` (absent is success).
    pub async fn remove(&mut self) -> Result<(), String> {
        self.installed = None;
        // Creating it first makes the delete succeed when it is absent, in one transaction.
        nft(
            &["-f", "-"],
            Some(&format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n")),
        )
        .await
        .map(|_| ())
    }
}

/// Whether the table exists with the four rules for `network`/`subnet`.
async fn present(network: Ipv4Net, subnet: Ipv4Net) -> bool {
    match nft(&["list", "table", "ip", TABLE], None).await {
        Ok(text) => {
            let n = network.to_string();
            let s = subnet.to_string();
            text.matches("masquerade").count() == 2
                && text.matches("return").count() == 2
                && text.contains(&n)
                && text.contains(&s)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
