//! The `weft` command line: the clap tree (every flag also a `WEFT_*` variable) and the client
//! commands `status`, `leave` and `version`, which talk to a running agent's local API.

pub mod docker_opts;
pub mod http;
pub mod keys;
pub mod parse;
pub mod table;

use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use crate::api::StatusReport;
use crate::config::{RunArgs, defaults};

pub use docker_opts::{DockerOptsArgs, docker_opts};
pub use table::render_status;

/// How long `weft status` waits for the API.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `weft leave` waits: the agent announces it is leaving and removes its data plane.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(60);

/// weft: a container overlay-network agent (flannel's data plane over a gossip mesh, no etcd).
#[derive(Parser, Debug)]
#[command(name = "weft", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: join the mesh, claim a subnet, program this host.
    Run(Box<RunArgs>),
    /// Show this node, its subnet and every node it knows.
    Status(StatusArgs),
    /// Decommission this node: release its subnet and remove its data plane at once.
    Leave(LeaveArgs),
    /// Print the version.
    Version,
    /// Make a new cluster key (base64 of 32 random bytes) for --cluster-key-file.
    Keygen(KeygenArgs),
    /// Manage the cluster keyring of the running agent (rotation without downtime).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Print docker daemon options (--bip, --mtu) from subnet.env, like flannel's mk-docker-opts.sh.
    DockerOpts(DockerOptsArgs),
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct KeygenArgs {
    /// Write the key to this file (mode 0600) instead of standard output
    #[arg(long, short, env = "WEFT_OUT", value_name = "FILE")]
    pub out: Option<std::path::PathBuf>,
}

/// `weft keygen`: a fresh key, printed or written to a new file that only its owner can read.
pub fn keygen(args: &KeygenArgs) -> Result<String, std::io::Error> {
    let rng = ring::rand::SystemRandom::new();
    let key = weft_proto::envelope::generate_key(&rng)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let text = format!("{}\n", weft_proto::envelope::encode_key(&key));
    match &args.out {
        None => Ok(text),
        Some(path) => {
            // A new file only (never over an existing key), complete or not at all.
            crate::agent::files::create_atomic(path, text.as_bytes(), 0o600).map_err(|e| {
                let msg = e.to_string();
                std::io::Error::new(e.into_io().kind(), msg)
            })?;
            Ok(format!(
                "wrote a new cluster key (id {:08x}) to {}\n",
                weft_proto::envelope::key_id(&key),
                path.display()
            ))
        }
    }
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct StatusArgs {
    /// The agent's local API
    #[arg(long, env = "WEFT_API", value_name = "ADDR:PORT", default_value = defaults::API)]
    pub api: String,
    /// Print the raw status report as JSON
    #[arg(long, env = "WEFT_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Redraw every SECS seconds (default 2) until interrupted
    #[arg(long, env = "WEFT_WATCH", value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct LeaveArgs {
    /// The agent's local API
    #[arg(long, env = "WEFT_API", value_name = "ADDR:PORT", default_value = defaults::API)]
    pub api: String,
}

/// Errors of the client commands; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach the weft API at {api}: {source} (is `weft run` running with --api {api}?)"
    )]
    Unreachable {
        api: String,
        #[source]
        source: http::HttpError,
    },
    #[error("the weft API at {api} answered {status}: {body}")]
    Refused {
        api: String,
        status: u16,
        body: String,
    },
    #[error("the weft API at {api} sent an invalid status report: {source}")]
    Decode {
        api: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Input(String),
}

/// `weft status`: the rendered table, or the pretty JSON with `--json`.
pub async fn status(args: &StatusArgs) -> Result<String, CliError> {
    let response = http::get(&args.api, "/v1/status", STATUS_TIMEOUT)
        .await
        .map_err(|source| CliError::Unreachable {
            api: args.api.clone(),
            source,
        })?;
    if !response.is_success() {
        return Err(refused(&args.api, &response));
    }
    let decode = |source| CliError::Decode {
        api: args.api.clone(),
        source,
    };
    if args.json {
        let value: serde_json::Value = serde_json::from_slice(&response.body).map_err(decode)?;
        let mut text = serde_json::to_string_pretty(&value).map_err(decode)?;
        text.push('\n');
        return Ok(text);
    }
    let report: StatusReport = serde_json::from_slice(&response.body).map_err(decode)?;
    Ok(render_status(&report))
}

/// `weft status --watch`: redraws the status (or the error reaching the agent) every `watch`
/// seconds until the process is interrupted.
pub async fn status_watch(args: &StatusArgs) -> Result<String, CliError> {
    use std::io::Write;
    let every = Duration::from_secs(args.watch.unwrap_or(2).max(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let body = match status(args).await {
            Ok(text) => text,
            Err(e) => format!("{e}\n"),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let frame = format!(
            "\x1b[H\x1b[2JEvery {}s: weft status ({})    unix time {now}\n\n{body}",
            every.as_secs(),
            args.api
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

/// `weft leave`: the agent's answer.
pub async fn leave(args: &LeaveArgs) -> Result<String, CliError> {
    let response = http::post(&args.api, "/v1/leave", b"{}", LEAVE_TIMEOUT)
        .await
        .map_err(|source| CliError::Unreachable {
            api: args.api.clone(),
            source,
        })?;
    if !response.is_success() {
        return Err(refused(&args.api, &response));
    }
    let text = response.text();
    let text = text.trim();
    Ok(if text.is_empty() {
        "leave requested\n".to_string()
    } else {
        format!("{text}\n")
    })
}

pub(crate) fn refused(api: &str, response: &http::Response) -> CliError {
    let mut body: String = response
        .text()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().count() > 200 {
        body = body.chars().take(200).collect::<String>() + "...";
    }
    let body = body.trim();
    CliError::Refused {
        api: api.to_string(),
        status: response.status,
        body: if body.is_empty() {
            response.reason.clone()
        } else {
            body.to_string()
        },
    }
}

/// `weft version`: the crate version, plus the git commit when the build set `WEFT_GIT_HASH`.
pub fn version_string() -> String {
    match option_env!("WEFT_GIT_HASH") {
        Some(hash) if !hash.is_empty() => format!("weft {} ({hash})", env!("CARGO_PKG_VERSION")),
        _ => format!("weft {}", env!("CARGO_PKG_VERSION")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag of every subcommand can be set by `WEFT_<FLAG_NAME>`.
    #[test]
    fn every_flag_has_a_weft_env_var() {
        let cli = Cli::command();
        let mut checked = 0;
        for sub in cli.get_subcommands() {
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let expected = format!("WEFT_{}", long.to_ascii_uppercase().replace('-', "_"));
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                assert_eq!(
                    env.as_deref(),
                    Some(expected.as_str()),
                    "weft {} --{long}",
                    sub.get_name()
                );
                checked += 1;
            }
        }
        // 37 flags of `run`, 3 of `status`, 1 of `leave`, 1 of `keygen`, 4 of `docker-opts`.
        assert_eq!(checked, 46);
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_flags() {
        let cli = Cli::try_parse_from([
            "weft",
            "run",
            "--node-name",
            "h1",
            "--seeds",
            "a:1,b:2",
            "--seeds",
            "c:3",
            "--insecure",
            "--gossip-interval",
            "200ms",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        assert_eq!(args.node_name.as_deref(), Some("h1"));
        assert_eq!(args.seeds, vec!["a:1", "b:2", "c:3"]);
        assert!(args.insecure);
        assert!(!args.ip_masq);
        assert_eq!(args.gossip_interval.as_deref(), Some("200ms"));
        let cli = Cli::try_parse_from(["weft", "status", "--json"]).unwrap();
        let Command::Status(args) = cli.command else {
            panic!("not status")
        };
        assert!(args.json);
        assert!(Cli::try_parse_from(["weft", "run", "--bogus"]).is_err());
    }

    #[test]
    fn version_names_the_crate_version() {
        assert!(version_string().starts_with(&format!("weft {}", env!("CARGO_PKG_VERSION"))));
    }

    /// Serves one canned HTTP response on loopback and returns its address.
    async fn serve_once(response: &'static [u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(response).await;
        });
        addr
    }

    #[tokio::test]
    async fn status_renders_table_and_json() {
        const BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"node_name\":\"h1\",\"generation\":7,\"underlay_ip\":\"192.0.2.1\",\"backend\":\"vxlan\",\"network\":\"10.244.0.0/16\",\"subnet\":\"10.244.1.0/24\",\"state\":\"active\",\"ready\":true,\"ready_reason\":null,\"insecure\":false,\"warnings\":[],\"nodes\":[{\"name\":\"h1\",\"generation\":7,\"underlay_ip\":\"192.0.2.1\",\"subnet\":\"10.244.1.0/24\",\"state\":\"active\",\"liveness\":\"alive\",\"is_self\":true,\"programmed\":false,\"reason\":null}]}";
        let api = serve_once(BODY).await;
        let text = status(&StatusArgs {
            api,
            json: false,
            watch: None,
        })
        .await
        .unwrap();
        assert!(
            text.contains("h1    192.0.2.1  10.244.1.0/24  active  alive     self"),
            "{text}"
        );
        let api = serve_once(BODY).await;
        let text = status(&StatusArgs {
            api,
            json: true,
            watch: None,
        })
        .await
        .unwrap();
        assert!(text.contains("\n  \"ready\": true,\n"), "{text}");
    }

    #[tokio::test]
    async fn status_errors() {
        let api =
            serve_once(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n")
                .await;
        let e = status(&StatusArgs {
            api,
            json: false,
            watch: None,
        })
        .await
        .unwrap_err();
        assert!(e.to_string().ends_with("answered 500: oops"), "{e}");
        let api = serve_once(b"HTTP/1.1 200 OK\r\n\r\n{\"nodes\": 1}").await;
        let e = status(&StatusArgs {
            api,
            json: false,
            watch: None,
        })
        .await
        .unwrap_err();
        assert!(matches!(e, CliError::Decode { .. }), "{e}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let api = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = leave(&LeaveArgs { api: api.clone() }).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("cannot reach the weft API at {api}: ")),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[tokio::test]
    async fn leave_prints_the_answer() {
        let api =
            serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"left\": \"h1\"}\n\n\n")
                .await;
        assert_eq!(
            leave(&LeaveArgs { api }).await.unwrap(),
            "{\"left\": \"h1\"}\n"
        );
    }
}
