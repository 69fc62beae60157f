//! The HTTP servers behind the local API (axum): the TCP listener (read-only calls; mutating
//! ones refused) and the control socket (everything), shut down by a cancellation token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::NODE_HEADER;
use super::control::{self, ControlError, ControlListener, Peer, Refusals, RefuseReason};
use super::handler::{ApiState, Reply};

/// Why the API could not listen.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The TCP address (`--api`).
    #[error("local API on {addr}: {source}")]
    Tcp {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket under `--state-dir`.
    #[error("control socket: {0}")]
    Control(#[from] ControlError),
}

/// The API's bound sockets, ready to [`serve`].
#[derive(Debug)]
pub struct Listeners {
    tcp: tokio::net::TcpListener,
    control: ControlListener,
    refusals: Arc<Refusals>,
}

impl Listeners {
    /// Binds the control socket `<state_dir>/api.sock` (first: a second agent on the same state
    /// dir stops here) and the TCP address `api`. Warns when `api` is not a loopback address.
    pub async fn bind(api: SocketAddr, state_dir: &Path, node: &str) -> Result<Self, BindError> {
        let mut allowed = vec![0, control::euid()];
        allowed.dedup();
        Self::bind_allowing(api, state_dir, node, allowed).await
    }

    /// [`Listeners::bind`] with the uids the control socket serves.
    pub(crate) async fn bind_allowing(
        api: SocketAddr,
        state_dir: &Path,
        node: &str,
        allowed: Vec<u32>,
    ) -> Result<Self, BindError> {
        let path = control::socket_path(state_dir);
        let refusals = Arc::new(Refusals::default());
        let control = ControlListener::bind(&path, allowed)?;
        let tcp = tokio::net::TcpListener::bind(api)
            .await
            .map_err(|source| BindError::Tcp { addr: api, source })?;
        if !api.ip().is_loopback() {
            tracing::warn!(node, api = %api, op = "api", "the local API listens on a non-loopback address: other hosts can read /v1/status and /metrics (mutating calls stay on the control socket)");
        }
        Ok(Listeners {
            tcp,
            control,
            refusals,
        })
    }

    /// The TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The control socket's path.
    pub fn control_path(&self) -> &Path {
        self.control.path()
    }

    /// The refusal counters.
    pub fn refusals(&self) -> Arc<Refusals> {
        self.refusals.clone()
    }
}

fn header_value(node: &str) -> HeaderValue {
    HeaderValue::from_str(node)
        .ok()
        .filter(|_| node.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or(HeaderValue::from_static("?"))
}

#[derive(Clone)]
struct Shared {
    api: ApiState,
    refusals: Arc<Refusals>,
    control_path: PathBuf,
}

impl FromRef<Shared> for ApiState {
    fn from_ref(s: &Shared) -> ApiState {
        s.api.clone()
    }
}

/// The mutating routes: what only the control socket serves.
const MUTATING: [&str; 5] = [
    "/v1/leave",
    "/v1/keys/install",
    "/v1/keys/use",
    "/v1/keys/remove",
    "/v1/keys/reload",
];

fn read_only() -> Router<Shared> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/keys", get(super::keys::list))
        .fallback(|| async { Reply(StatusCode::NOT_FOUND, "no such endpoint".into()) })
}

/// Adds [`NODE_HEADER`] to every answer.
fn with_node(router: Router<Shared>, shared: Shared) -> Router {
    let value = header_value(&shared.api.node);
    router
        .layer(axum::middleware::map_response(move |mut r: Response| {
            let value = value.clone();
            async move {
                r.headers_mut().insert(NODE_HEADER, value);
                r
            }
        }))
        .with_state(shared)
}

fn tcp_router(shared: Shared) -> Router {
    let mut router = read_only();
    for path in MUTATING {
        router = router.route(path, post(refuse_tcp));
    }
    with_node(router, shared)
}

fn control_router(shared: Shared) -> Router {
    let router = read_only()
        .route("/v1/leave", post(leave))
        .route("/v1/keys/install", post(super::keys::install))
        .route("/v1/keys/use", post(super::keys::use_key))
        .route("/v1/keys/remove", post(super::keys::remove))
        .route("/v1/keys/reload", post(super::keys::reload))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            check_peer,
        ));
    with_node(router, shared)
}

/// On the control socket, every request of a peer whose uid is not allowed is refused (403),
/// counted and logged, whatever it asks (the socket's 0600 mode is the first fence).
async fn check_peer(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if peer.allowed {
        return next.run(request).await;
    }
    s.refusals.refuse(
        RefuseReason::PeerUid,
        format_args!(
            "{} {} on {} from uid {} (pid {})",
            request.method(),
            request.uri().path(),
            s.control_path.display(),
            peer.uid.map_or("unknown".to_string(), |u| u.to_string()),
            peer.pid.map_or("unknown".to_string(), |p| p.to_string()),
        ),
    );
    Reply(
        StatusCode::FORBIDDEN,
        format!(
            "refused: {} accepts only root and the user that runs the agent",
            s.control_path.display()
        ),
    )
    .into_response()
}

/// Serves both listeners until `cancel` fires; in-flight requests (a leave) complete first. The
/// control socket's file is removed when it stops.
pub async fn serve(listeners: Listeners, state: ApiState, cancel: CancellationToken) {
    let shared = Shared {
        api: state,
        refusals: listeners.refusals.clone(),
        control_path: listeners.control.path().to_path_buf(),
    };
    let tcp = axum::serve(
        listeners.tcp,
        tcp_router(shared.clone()).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(cancel.clone().cancelled_owned());
    let control = axum::serve(
        listeners.control,
        control_router(shared).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(cancel.cancelled_owned());
    let (tcp, control) = tokio::join!(tcp.into_future(), control.into_future());
    for (which, result) in [("TCP", tcp), ("control socket", control)] {
        if let Err(e) = result {
            tracing::warn!(error = %e, op = "api", "local API ({which}) stopped");
        }
    }
}

async fn refuse_tcp(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
) -> Reply {
    s.refusals.refuse(
        RefuseReason::Tcp,
        format_args!("POST {} from {peer} over TCP", uri.path()),
    );
    Reply(
        StatusCode::FORBIDDEN,
        format!(
            "POST {} is refused over TCP: changes go through the control socket {} (root or the agent's user; `weft leave` and `weft keys` use it)",
            uri.path(),
            s.control_path.display()
        ),
    )
}

async fn readyz(State(s): State<ApiState>) -> impl IntoResponse {
    let report = s.status.borrow();
    if report.ready {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        let why = report.ready_reason.as_deref().unwrap_or("starting");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
    }
}

/// The report is serialized where it lies (it holds every peer and route: cloning it for each
/// poll cost more than writing it).
async fn status(State(s): State<ApiState>) -> Response {
    let body = serde_json::to_vec(&*s.status.borrow());
    match body {
        Ok(body) => (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => Reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    let mut text = s.api.metrics.render(&[]);
    // The agent's exposition ends with `# EOF`; the API's own counters go before it.
    const EOF: &str = "# EOF\n";
    if text.ends_with(EOF) {
        text.truncate(text.len() - EOF.len());
    }
    text.push_str(&s.refusals.exposition());
    text.push_str(EOF);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn leave(State(s): State<ApiState>) -> Reply {
    let (tx, rx) = oneshot::channel();
    if s.leave.send(tx).await.is_err() {
        return Reply(StatusCode::SERVICE_UNAVAILABLE, "agent is stopping".into());
    }
    match rx.await {
        Ok(answer) => Reply(StatusCode::OK, answer),
        Err(_) => Reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "agent stopped before leaving".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{ApiAnswer, StatusReport};
    use super::*;
    use crate::cli::http::{self, Endpoint};
    use crate::metrics::Metrics;
    use tokio::sync::{mpsc, watch};

    const T: Duration = Duration::from_secs(5);

    /// An API for node `h1` on 127.0.0.1:0 and `<dir>/api.sock`, whose agent answers every leave.
    async fn api(
        dir: &Path,
    ) -> (
        SocketAddr,
        Arc<Refusals>,
        mpsc::Receiver<oneshot::Sender<String>>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        api_allowing(dir, vec![0, control::euid()]).await
    }

    async fn api_allowing(
        dir: &Path,
        allowed: Vec<u32>,
    ) -> (
        SocketAddr,
        Arc<Refusals>,
        mpsc::Receiver<oneshot::Sender<String>>,
        CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let listeners =
            Listeners::bind_allowing("127.0.0.1:0".parse().unwrap(), dir, "h1", allowed)
                .await
                .unwrap();
        let addr = listeners.tcp_addr().unwrap();
        let refusals = listeners.refusals();
        let (leave, leave_rx) = mpsc::channel(4);
        let state = ApiState {
            node: "h1".into(),
            status: watch::channel(StatusReport {
                node_name: "h1".into(),
                ..StatusReport::default()
            })
            .1,
            metrics: Arc::new(Metrics::default()),
            leave,
            keys: None,
            key_view: watch::channel(Vec::new()).1,
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(listeners, state, cancel.clone()));
        (addr, refusals, leave_rx, cancel, task)
    }

    #[tokio::test]
    async fn changes_are_refused_over_tcp_and_served_on_the_control_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (addr, refusals, mut leave_rx, cancel, task) = api(dir.path()).await;
        let tcp = Endpoint::Tcp(addr.to_string());
        let socket = dir.path().join("api.sock");

        for path in MUTATING {
            let r = http::post(&tcp, path, b"{\"key\":\"x\",\"id\":\"aabbccdd\"}", T)
                .await
                .unwrap();
            assert_eq!((r.status, r.node.as_deref()), (403, Some("h1")), "{path}");
            let answer: ApiAnswer = serde_json::from_slice(&r.body).unwrap();
            assert!(
                answer.message.contains(&socket.display().to_string()),
                "{path}: {}",
                answer.message
            );
        }
        assert!(
            leave_rx.try_recv().is_err(),
            "a leave over TCP reached the agent"
        );
        assert_eq!(refusals.count(RefuseReason::Tcp), MUTATING.len() as u64);

        // Read-only calls stay on TCP, every answer (a 404 too) names the node.
        let r = http::get(&tcp, "/v1/status", T).await.unwrap();
        assert_eq!((r.status, r.node.as_deref()), (200, Some("h1")));
        let r = http::get(&tcp, "/no/such/thing", T).await.unwrap();
        assert_eq!((r.status, r.node.as_deref()), (404, Some("h1")));
        let r = http::get(&tcp, "/metrics", T).await.unwrap();
        let text = r.text();
        assert!(
            text.contains("weft_api_refused_total{reason=\"tcp\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_up 1\n") && text.ends_with("# EOF\n"),
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");

        // The same leave through the control socket reaches the agent; the client prints the
        // agent's own confirmation, naming the node.
        let agent = tokio::spawn(async move {
            let reply = leave_rx.recv().await.unwrap();
            reply
                .send("left: subnet 10.244.3.0/24 released, routes and devices removed\n".into())
                .unwrap();
        });
        let text = crate::cli::leave(&crate::cli::LeaveArgs {
            state_dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap();
        assert_eq!(
            text,
            "node h1: left: subnet 10.244.3.0/24 released, routes and devices removed\n"
        );
        agent.await.unwrap();
        // The control socket serves the read-only calls too.
        let r = http::get(&Endpoint::Unix(socket.clone()), "/v1/status", T)
            .await
            .unwrap();
        assert_eq!((r.status, r.node.as_deref()), (200, Some("h1")));

        cancel.cancel();
        tokio::time::timeout(T, task).await.unwrap().unwrap();
        assert!(!socket.exists(), "the control socket outlived the API");
    }

    #[tokio::test]
    async fn a_second_api_on_the_same_state_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (_addr, _r, _rx, cancel, task) = api(dir.path()).await;
        let e = Listeners::bind("127.0.0.1:0".parse().unwrap(), dir.path(), "h2")
            .await
            .unwrap_err();
        assert!(
            matches!(e, BindError::Control(ControlError::InUse(_))),
            "{e}"
        );
        cancel.cancel();
        task.await.unwrap();
    }

    /// The second fence: a peer whose uid is not allowed (here: this test's own, since only
    /// another uid is) gets 403 for every request on the control socket, counted; its leave
    /// never reaches the agent.
    #[tokio::test]
    async fn other_users_on_the_control_socket_are_refused_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let stranger_only = vec![control::euid().wrapping_add(4242)];
        let (_addr, refusals, mut leave_rx, cancel, task) =
            api_allowing(dir.path(), stranger_only).await;
        let socket = dir.path().join("api.sock");
        let e = crate::cli::leave(&crate::cli::LeaveArgs {
            state_dir: dir.path().to_path_buf(),
        })
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "the weft agent h1 at {0} refused (403): refused: {0} accepts only root and the user that runs the agent",
                socket.display()
            )
        );
        let r = http::get(&Endpoint::Unix(socket), "/v1/status", T)
            .await
            .unwrap();
        assert_eq!((r.status, r.node.as_deref()), (403, Some("h1")));
        assert!(
            leave_rx.try_recv().is_err(),
            "a refused leave reached the agent"
        );
        assert_eq!(refusals.count(RefuseReason::PeerUid), 2);
        assert_eq!(refusals.count(RefuseReason::Tcp), 0);
        cancel.cancel();
        task.await.unwrap();
    }

    /// Log lines written while `f` runs on this thread.
    async fn logged<F: std::future::Future>(f: F) -> (F::Output, String) {
        #[derive(Clone, Default)]
        struct Buf(Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let out = {
            let _guard = tracing::subscriber::set_default(subscriber);
            f.await
        };
        let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
        (out, text)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_non_loopback_api_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let (l, log) = logged(Listeners::bind(
            "127.0.0.1:0".parse().unwrap(),
            &dir.path().join("a"),
            "h1",
        ))
        .await;
        l.unwrap();
        assert!(!log.contains("non-loopback"), "{log}");
        let (l, log) = logged(Listeners::bind(
            "0.0.0.0:0".parse().unwrap(),
            &dir.path().join("b"),
            "h1",
        ))
        .await;
        l.unwrap();
        assert_eq!(log.matches("non-loopback address").count(), 1, "{log}");
        assert!(log.contains("WARN"), "{log}");
    }
}
