//! `weft keys list|install|use|remove|reload`: the cluster keyring of a running agent, through
//! its local API (`/v1/keys`). Rotation without downtime:
//!
//! 1. `weft keygen -o new.key`, copy it to every node, `weft keys install new.key` on each;
//! 2. when `weft keys list` shows every live node holding it, `weft keys use <id>` on each;
//! 3. when every live node seals with it, `weft keys remove <old id>` on each.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, Subcommand};

use super::{CliError, STATUS_TIMEOUT, control_endpoint, get_json, post_checked, read_endpoint};
use crate::api::{KeyRequest, KeysReport};
use crate::config::defaults;

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum KeysCommand {
    /// Show this node's keys and which key ids every node announced
    List(KeysListArgs),
    /// Install a key (a file made by `weft keygen`, or - for standard input): it opens gossip
    Install(KeysInstallArgs),
    /// Make an installed key primary: it seals this node's gossip from now on
    Use(KeysIdArgs),
    /// Remove a key that is not primary
    Remove(KeysIdArgs),
    /// Re-read --cluster-key-file (what SIGHUP does)
    Reload(KeysApiArgs),
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KeysApiArgs {
    /// The agent's --state-dir: the request goes to its control socket DIR/api.sock
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KeysListArgs {
    /// The agent's local API over TCP [default: 127.0.0.1:7948, unless --state-dir is given]
    #[arg(long, env = "WEFT_API", value_name = "ADDR:PORT")]
    pub api: Option<String>,
    /// Ask the agent run with this --state-dir, through its control socket DIR/api.sock
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the raw report as JSON
    #[arg(long, env = "WEFT_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KeysInstallArgs {
    /// The agent's --state-dir: the key goes to its control socket DIR/api.sock, never to TCP
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Key file (base64 of 32 bytes), or - to read standard input
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KeysIdArgs {
    /// The agent's --state-dir: the request goes to its control socket DIR/api.sock
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
    /// Skip the check that every live node is ready for the change
    #[arg(long, env = "WEFT_FORCE", value_parser = BoolishValueParser::new())]
    pub force: bool,
    /// Key id: 8 hex digits, as `weft keys list` shows
    #[arg(value_name = "ID")]
    pub id: String,
}

/// Runs one `weft keys` command and returns what to print.
pub async fn run(cmd: &KeysCommand) -> Result<String, CliError> {
    match cmd {
        KeysCommand::List(a) => list(a).await,
        KeysCommand::Install(a) => {
            let text = read_key_text(&a.file)?;
            let key = weft_proto::envelope::decode_key(&text)
                .map_err(|e| CliError::Input(format!("{}: {e}", a.file.display())))?;
            let body = KeyRequest {
                key: Some(weft_proto::envelope::encode_key(&key).trim().to_string()),
                ..KeyRequest::default()
            };
            post(&a.state_dir, "/v1/keys/install", &body).await
        }
        KeysCommand::Use(a) => post(&a.state_dir, "/v1/keys/use", &id_request(a)).await,
        KeysCommand::Remove(a) => post(&a.state_dir, "/v1/keys/remove", &id_request(a)).await,
        KeysCommand::Reload(a) => {
            post(&a.state_dir, "/v1/keys/reload", &KeyRequest::default()).await
        }
    }
}

fn id_request(a: &KeysIdArgs) -> KeyRequest {
    KeyRequest {
        id: Some(a.id.trim().to_ascii_lowercase()),
        force: a.force,
        key: None,
    }
}

/// The key file's text (`-`: standard input), at most one byte over the longest key file.
fn read_key_text(file: &std::path::Path) -> Result<String, CliError> {
    use std::io::Read;
    let limit = weft_proto::envelope::MAX_KEY_FILE_LEN as u64 + 1;
    let mut text = String::new();
    let result = if file.as_os_str() == "-" {
        std::io::stdin().take(limit).read_to_string(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(limit).read_to_string(&mut text))
    };
    result.map_err(|e| CliError::Input(format!("{}: {e}", file.display())))?;
    Ok(text)
}

/// Every change goes to the control socket (key material included: the client checks who
/// listens there before sending).
async fn post(
    state_dir: &std::path::Path,
    path: &str,
    body: &KeyRequest,
) -> Result<String, CliError> {
    let json = serde_json::to_vec(body).unwrap_or_default();
    post_checked(&control_endpoint(state_dir), path, &json, STATUS_TIMEOUT).await
}

async fn list(a: &KeysListArgs) -> Result<String, CliError> {
    let to = read_endpoint(a.api.as_deref(), a.state_dir.as_deref());
    let report: KeysReport = get_json(&to, "/v1/keys").await?;
    if a.json {
        let mut text = serde_json::to_string_pretty(&report)
            .map_err(|source| CliError::Decode { api: to, source })?;
        text.push('\n');
        return Ok(text);
    }
    Ok(render(&report))
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(80)
        .collect()
}

/// The `weft keys list` text.
pub fn render(report: &KeysReport) -> String {
    let mut out = String::new();
    if report.insecure {
        out.push_str(
            "warning: gossip is not authenticated nor encrypted (--insecure): no keyring\n",
        );
    } else {
        let _ = writeln!(
            out,
            "keyring {}: primary {}, installed {}",
            clean(report.path.as_deref().unwrap_or("?")),
            clean(report.primary.as_deref().unwrap_or("?")),
            report
                .installed
                .iter()
                .map(|k| clean(k))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let live: Vec<_> = report.nodes.iter().filter(|n| n.alive).collect();
    // Per key: how many live nodes hold it and seal with it (the rotation progress).
    let mut ids: Vec<&String> = report.installed.iter().collect();
    for n in &live {
        for k in &n.keys {
            if !ids.contains(&k) {
                ids.push(k);
            }
        }
    }
    for id in ids {
        let holding = live.iter().filter(|n| n.keys.contains(id)).count();
        let sealing = live
            .iter()
            .filter(|n| n.primary.as_deref() == Some(id.as_str()))
            .count();
        let _ = writeln!(
            out,
            "key {}: installed on {holding}/{} live nodes, primary on {sealing}",
            clean(id),
            live.len()
        );
    }
    out.push('\n');
    let rows: Vec<[String; 4]> = report
        .nodes
        .iter()
        .map(|n| {
            [
                if n.is_self {
                    format!("{} (self)", clean(&n.name))
                } else {
                    clean(&n.name)
                },
                if n.alive { "alive" } else { "dead" }.to_string(),
                n.primary
                    .as_deref()
                    .map(clean)
                    .unwrap_or_else(|| "-".into()),
                if n.keys.is_empty() {
                    "-".to_string()
                } else {
                    n.keys
                        .iter()
                        .map(|k| clean(k))
                        .collect::<Vec<_>>()
                        .join(",")
                },
            ]
        })
        .collect();
    let headers = ["NAME", "LIVENESS", "PRIMARY", "KEYS"].map(String::from);
    let mut widths = headers.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(&headers).chain(&rows) {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeKeys;

    #[test]
    fn renders_rotation_progress() {
        let node = |name: &str, alive, is_self, primary: &str, keys: &[&str]| NodeKeys {
            name: name.into(),
            generation: 1,
            alive,
            is_self,
            primary: Some(primary.into()),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        };
        let report = KeysReport {
            insecure: false,
            path: Some("/etc/weft/keys".into()),
            primary: Some("aaaaaaaa".into()),
            installed: vec!["aaaaaaaa".into(), "bbbbbbbb".into()],
            nodes: vec![
                node("h1", true, true, "aaaaaaaa", &["aaaaaaaa", "bbbbbbbb"]),
                node("h2", true, false, "aaaaaaaa", &["aaaaaaaa"]),
                node("h3", false, false, "cccccccc", &["cccccccc"]),
            ],
        };
        let text = render(&report);
        assert!(
            text.starts_with(
                "keyring /etc/weft/keys: primary aaaaaaaa, installed aaaaaaaa, bbbbbbbb\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("key aaaaaaaa: installed on 2/2 live nodes, primary on 2\n"),
            "{text}"
        );
        assert!(
            text.contains("key bbbbbbbb: installed on 1/2 live nodes, primary on 0\n"),
            "{text}"
        );
        assert!(
            !text.contains("key cccccccc"),
            "dead nodes do not count: {text}"
        );
        assert!(
            text.contains("h1 (self)  alive     aaaaaaaa  aaaaaaaa,bbbbbbbb\n"),
            "{text}"
        );
        assert!(
            text.contains("h3         dead      cccccccc  cccccccc\n"),
            "{text}"
        );
        let insecure = render(&KeysReport {
            insecure: true,
            ..KeysReport::default()
        });
        assert!(
            insecure.starts_with("warning: gossip is not authenticated"),
            "{insecure}"
        );
    }
}
