//! The `weft` command line: the clap tree (every flag also a `WEFT_*` variable) and the client
//! commands `status`, `leave` and `version`, which talk to a running agent's local API:
//! `leave` (and `weft keys` changes) through the control socket `<--state-dir>/api.sock`,
//! `status` over TCP (`--api`) or that socket. Every answer must carry weft's node header;
//! what prints is the agent's own confirmation.

pub mod docker_opts;
pub mod http;
pub mod keys;
pub mod parse;
pub mod table;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};

use crate::api::{ApiAnswer, StatusReport};
use crate::config::{RunArgs, defaults};

pub use docker_opts::{DockerOptsArgs, docker_opts};
pub use http::Endpoint;
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
            crate::files::create_atomic(path, text.as_bytes(), 0o600).map_err(|e| {
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
    /// The agent's local API over TCP [default: 127.0.0.1:7948, unless --state-dir is given]
    #[arg(long, env = "WEFT_API", value_name = "ADDR:PORT")]
    pub api: Option<String>,
    /// Ask the agent run with this --state-dir, through its control socket DIR/api.sock
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the raw status report as JSON
    #[arg(long, env = "WEFT_JSON", value_parser = BoolishValueParser::new())]
    pub json: bool,
    /// Show every broken path of the fleet (who, to whom, since when, why), from every live
    /// node's gossiped summary
    #[arg(long, env = "WEFT_PATHS", value_parser = BoolishValueParser::new())]
    pub paths: bool,
    /// Redraw every SECS seconds (default 2) until interrupted
    #[arg(long, env = "WEFT_WATCH", value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

impl StatusArgs {
    /// Where `weft status` asks.
    pub fn endpoint(&self) -> Endpoint {
        read_endpoint(self.api.as_deref(), self.state_dir.as_deref())
    }
}

#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct LeaveArgs {
    /// The agent's --state-dir: the request goes to its control socket DIR/api.sock
    #[arg(long, env = "WEFT_STATE_DIR", value_name = "DIR", default_value = defaults::STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Read-only calls: `--api` when given, else the control socket of `--state-dir` when given,
/// else the default TCP address.
pub fn read_endpoint(api: Option<&str>, state_dir: Option<&Path>) -> Endpoint {
    match (api, state_dir) {
        (Some(api), _) => Endpoint::Tcp(api.to_string()),
        (None, Some(dir)) => Endpoint::Unix(crate::api::socket_path(dir)),
        (None, None) => Endpoint::Tcp(defaults::API.to_string()),
    }
}

/// Mutating calls: always the control socket of `state_dir`.
pub fn control_endpoint(state_dir: &Path) -> Endpoint {
    Endpoint::Unix(crate::api::socket_path(state_dir))
}

/// Errors of the client commands; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the weft agent at {api}: {source} ({})", hint(.api))]
    Unreachable {
        api: Endpoint,
        #[source]
        source: http::HttpError,
    },
    /// Something answered that does not carry weft's header: its answer is not shown.
    #[error(
        "{api} is not a weft agent (it answered HTTP {status} without a {} header); its answer is not shown",
        crate::api::NODE_HEADER
    )]
    NotWeft { api: Endpoint, status: u16 },
    #[error("the weft agent {node} at {api} refused ({status}): {body}")]
    Refused {
        api: Endpoint,
        node: String,
        status: u16,
        body: String,
    },
    #[error("the weft agent at {api} sent an invalid answer: {source}")]
    Decode {
        api: Endpoint,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Input(String),
}

fn hint(api: &Endpoint) -> String {
    match api {
        Endpoint::Tcp(addr) => format!("is `weft run` running with --api {addr}?"),
        Endpoint::Unix(path) => format!(
            "is `weft run` running with --state-dir {}, and are you root or its user?",
            path.parent().unwrap_or(Path::new(".")).display()
        ),
    }
}

async fn send(
    to: &Endpoint,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<http::Response, CliError> {
    let result = match body {
        None => http::get(to, path, timeout).await,
        Some(body) => http::post(to, path, body, timeout).await,
    };
    result.map_err(|source| CliError::Unreachable {
        api: to.clone(),
        source,
    })
}

/// The agent's node name when `response` is a weft success; the refusal (with the agent's
/// message) or [`CliError::NotWeft`] otherwise. Nothing of a non-weft answer is kept.
pub(crate) fn checked(to: &Endpoint, response: &http::Response) -> Result<String, CliError> {
    let Some(node) = response.node.clone() else {
        return Err(CliError::NotWeft {
            api: to.clone(),
            status: response.status,
        });
    };
    if response.is_success() {
        return Ok(node);
    }
    let message = serde_json::from_slice::<ApiAnswer>(&response.body)
        .map(|a| a.message)
        .unwrap_or_else(|_| response.text());
    Err(CliError::Refused {
        api: to.clone(),
        node,
        status: response.status,
        body: one_line(&message, &response.reason),
    })
}

/// POSTs `body` to `path` and returns the confirmation to print: `node NAME: MESSAGE`.
pub(crate) async fn post_checked(
    to: &Endpoint,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<String, CliError> {
    let response = send(to, path, Some(body), timeout).await?;
    let node = checked(to, &response)?;
    let answer: ApiAnswer =
        serde_json::from_slice(&response.body).map_err(|source| CliError::Decode {
            api: to.clone(),
            source,
        })?;
    Ok(format!(
        "node {node}: {}\n",
        one_line(&answer.message, "done")
    ))
}

/// GETs `path` and decodes the JSON answer.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    to: &Endpoint,
    path: &str,
) -> Result<T, CliError> {
    let response = send(to, path, None, STATUS_TIMEOUT).await?;
    checked(to, &response)?;
    serde_json::from_slice(&response.body).map_err(|source| CliError::Decode {
        api: to.clone(),
        source,
    })
}

/// `weft status`: the rendered table, or the pretty JSON with `--json`.
pub async fn status(args: &StatusArgs) -> Result<String, CliError> {
    let to = args.endpoint();
    if args.json {
        let value: serde_json::Value = get_json(&to, "/v1/status").await?;
        let mut text = serde_json::to_string_pretty(&value)
            .map_err(|source| CliError::Decode { api: to, source })?;
        text.push('\n');
        return Ok(text);
    }
    let report: StatusReport = get_json(&to, "/v1/status").await?;
    if args.paths {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        return Ok(match &report.paths {
            Some(paths) => format!(
                "paths seen from {}:\n{}",
                report.node_name,
                paths.render(now_ms)
            ),
            None => format!(
                "{} does not probe paths yet (no overlay address, or no subnet)\n",
                report.node_name
            ),
        });
    }
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
            args.endpoint()
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(frame.as_bytes());
        let _ = out.flush();
    }
}

/// `weft leave`, through the control socket: the agent's confirmation, naming the node and the
/// subnet it released.
pub async fn leave(args: &LeaveArgs) -> Result<String, CliError> {
    post_checked(
        &control_endpoint(&args.state_dir),
        "/v1/leave",
        b"{}",
        LEAVE_TIMEOUT,
    )
    .await
}

/// At most 200 characters of `text` on one line, or `fallback` when it is empty.
fn one_line(text: &str, fallback: &str) -> String {
    let mut body: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.chars().count() > 200 {
        body = body.chars().take(200).collect::<String>() + "...";
    }
    let body = body.trim();
    if body.is_empty() {
        fallback.to_string()
    } else {
        body.to_string()
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
        // 44 flags of `run`, 5 of `status`, 1 of `leave`, 1 of `keygen`, 4 of `docker-opts`.
        assert_eq!(checked, 55);
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

    fn tcp(api: String) -> StatusArgs {
        StatusArgs {
            api: Some(api),
            state_dir: None,
            json: false,
            paths: false,
            watch: None,
        }
    }

    #[tokio::test]
    async fn status_renders_table_and_json() {
        const BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nweft-node: h1\r\n\r\n{\"node_name\":\"h1\",\"generation\":7,\"underlay_ip\":\"192.0.2.1\",\"backend\":\"vxlan\",\"network\":\"10.244.0.0/16\",\"subnet\":\"10.244.1.0/24\",\"state\":\"active\",\"ready\":true,\"ready_reason\":null,\"insecure\":false,\"warnings\":[],\"nodes\":[{\"name\":\"h1\",\"generation\":7,\"underlay_ip\":\"192.0.2.1\",\"subnet\":\"10.244.1.0/24\",\"state\":\"active\",\"liveness\":\"alive\",\"is_self\":true,\"programmed\":false,\"reason\":null}]}";
        let api = serve_once(BODY).await;
        let text = status(&tcp(api)).await.unwrap();
        assert!(
            text.contains("h1    192.0.2.1  10.244.1.0/24  active  alive     self"),
            "{text}"
        );
        let api = serve_once(BODY).await;
        let text = status(&StatusArgs {
            json: true,
            ..tcp(api)
        })
        .await
        .unwrap();
        assert!(text.contains("\n  \"ready\": true,\n"), "{text}");
    }

    #[tokio::test]
    async fn status_errors() {
        let api = serve_once(
            b"HTTP/1.1 500 Internal Server Error\r\nweft-node: h1\r\nContent-Length: 18\r\n\r\n{\"message\":\"oops\"}",
        )
        .await;
        let e = status(&tcp(api)).await.unwrap_err();
        assert!(e.to_string().ends_with("refused (500): oops"), "{e}");
        let api = serve_once(b"HTTP/1.1 200 OK\r\nweft-node: h1\r\n\r\n{\"nodes\": 1}").await;
        let e = status(&tcp(api)).await.unwrap_err();
        assert!(matches!(e, CliError::Decode { .. }), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = leave(&LeaveArgs {
            state_dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap_err();
        let text = e.to_string();
        let socket = dir.path().join("api.sock");
        assert!(
            text.starts_with(&format!(
                "cannot reach the weft agent at {}: ",
                socket.display()
            )),
            "{text}"
        );
        assert!(text.contains("--state-dir"), "{text}");
        assert!(!text.contains('\n'));
    }

    /// Something that is not weft answers on the API's port: whatever it says (an HTML page, an
    /// empty `{}` with 200) is not printed, and no command reports success.
    #[tokio::test]
    async fn a_server_that_is_not_weft_is_named_not_printed() {
        for raw in [
            &b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 44\r\n\r\n<html><body>It works! secret</body></html>\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        ] {
            let raw: &'static [u8] = Box::leak(raw.to_vec().into_boxed_slice());
            let api = serve_once(raw).await;
            let e = status(&tcp(api.clone())).await.unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, CliError::NotWeft { .. }), "{text}");
            assert!(text.starts_with(&format!("{api} is not a weft agent")), "{text}");
            assert!(!text.contains("html") && !text.contains("secret"), "{text}");
            let api = serve_once(raw).await;
            let e = keys::run(&keys::KeysCommand::List(keys::KeysListArgs {
                api: Some(api),
                state_dir: None,
                json: false,
            }))
            .await
            .unwrap_err();
            assert!(matches!(e, CliError::NotWeft { .. }), "{e}");
        }
    }

    #[test]
    fn endpoints_follow_the_flags() {
        let dir = Path::new("/srv/weft-a");
        assert_eq!(
            read_endpoint(None, None),
            Endpoint::Tcp("127.0.0.1:7948".into())
        );
        assert_eq!(
            read_endpoint(None, Some(dir)),
            Endpoint::Unix(dir.join("api.sock"))
        );
        assert_eq!(
            read_endpoint(Some("127.0.0.1:9"), Some(dir)),
            Endpoint::Tcp("127.0.0.1:9".into())
        );
        let cli = Cli::try_parse_from(["weft", "leave", "--state-dir", "/srv/weft-a"]).unwrap();
        let Command::Leave(args) = cli.command else {
            panic!("not leave")
        };
        assert_eq!(
            control_endpoint(&args.state_dir),
            Endpoint::Unix(dir.join("api.sock"))
        );
        let cli = Cli::try_parse_from(["weft", "leave"]).unwrap();
        let Command::Leave(args) = cli.command else {
            panic!("not leave")
        };
        assert_eq!(args.state_dir, Path::new("/var/lib/weft"));
        // Changes never go to TCP: `--api` is not a flag of leave or of the keys changes.
        assert!(Cli::try_parse_from(["weft", "leave", "--api", "127.0.0.1:7948"]).is_err());
        assert!(
            Cli::try_parse_from(["weft", "keys", "install", "k", "--api", "127.0.0.1:7948"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["weft", "keys", "use", "aabbccdd", "--api", "x:1"]).is_err());
    }
}
