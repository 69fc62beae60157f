//! PLACEHOLDER: replaced by the real agent at merge. Only the entry point's signature, so that
//! the `weft` binary compiles before `weft::agent` lands.

use std::future::Future;

/// PLACEHOLDER: replaced by the real agent at merge.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("placeholder agent")]
    Placeholder,
}

/// PLACEHOLDER: replaced by the real agent at merge. Returns once `shutdown` completes.
pub async fn run(
    config: crate::Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    tracing::warn!(node = %config.node_name, "placeholder agent: nothing is programmed");
    shutdown.await;
    Ok(())
}
