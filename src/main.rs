//! The `weft` binary: parse the command line, set up logging, build the configuration, and hand
//! over to the library. Exit codes: 0 success, 1 runtime error, 2 usage or configuration error.

use std::error::Error;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

use weft::Config;
use weft::cli::Command;
use weft::cli::parse::ParseError;
use weft::config::{HostChecks, LogFormat, RunArgs};

fn main() -> ExitCode {
    let parsed = match weft::cli::parse::parse(std::env::args_os(), std::env::vars_os()) {
        Ok(parsed) => parsed,
        Err(ParseError::Usage(line)) => return refuse(&line),
        Err(ParseError::Display { error, code }) => {
            return match error.print() {
                Ok(()) => ExitCode::from(code),
                Err(e) => output_failed(&e),
            };
        }
    };
    match parsed.cli.command {
        Command::Run(args) => run(*args, &parsed.warnings),
        Command::Status(args) if args.watch.is_some() => client(weft::cli::status_watch(&args)),
        Command::Status(args) => client(weft::cli::status(&args)),
        Command::DockerOpts(args) => match weft::cli::docker_opts(&args) {
            Ok(text) => emit(&text),
            Err(e) => {
                say(&format!("weft: {e}"));
                ExitCode::from(1)
            }
        },
        Command::Leave(args) => client(weft::cli::leave(&args)),
        Command::Keys(cmd) => client(weft::cli::keys::run(&cmd)),
        Command::Keygen(args) => match weft::cli::keygen(&args) {
            Ok(text) => emit(&text),
            Err(e) => fail(&e),
        },
        Command::Version => emit(&format!("{}\n", weft::cli::version_string())),
    }
}

/// Writes `text` to standard output; a failed write (`> /dev/full`, a closed pipe) is one line
/// on standard error and exit status 1, never a panic.
fn emit(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => output_failed(&e),
    }
}

fn output_failed(e: &std::io::Error) -> ExitCode {
    say(&format!("weft: cannot write to standard output: {e}"));
    ExitCode::from(1)
}

/// One line on standard error (ignoring a failure to write it: there is nowhere else to say it).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{}", line.replace('\n', " "));
}

/// A usage or configuration error: one line, exit status 2.
fn refuse(line: &dyn std::fmt::Display) -> ExitCode {
    say(&format!("weft: {line}"));
    ExitCode::from(2)
}

fn run(args: RunArgs, warnings: &[String]) -> ExitCode {
    // The format is validated with the rest below; until then fall back to text.
    let format = args
        .log_format
        .as_deref()
        .and_then(LogFormat::from_name)
        .unwrap_or(LogFormat::Text);
    init_tracing(format);
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let check_only = args.check_config;
    let clock_offset_ms = args.clock_offset_ms.unwrap_or(0);
    let checks = HostChecks::from_args(&args);
    let config = match Config::from_run_args(args) {
        Ok(config) => config,
        Err(e) => return refuse(&e),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    // The same checks for `run` and `--check-config`, before anything touches the kernel.
    if let Err(e) = runtime.block_on(weft::config::preflight(&config, &checks)) {
        return refuse(&e);
    }
    if check_only {
        return emit(&format!("{config:#?}\n"));
    }
    match runtime.block_on(run_agent(config, clock_offset_ms)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e)
            if e.downcast_ref::<weft::agent::AgentError>()
                .is_some_and(weft::agent::AgentError::is_config) =>
        {
            refuse(&e)
        }
        Err(e) => fail(e.as_ref()),
    }
}

/// Runs the agent until SIGINT or SIGTERM; SIGHUP reloads the keyring.
async fn run_agent(
    config: Config,
    clock_offset_ms: i64,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    let shutdown = shutdown_signal()?;
    let hangup = signal(SignalKind::hangup());
    let handle = weft::agent::Agent::new(config)
        .clock_offset_ms(clock_offset_ms)
        .start()
        .await?;
    match hangup {
        Ok(mut hup) => {
            let store = handle.keys();
            let metrics = handle.metrics();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    match &store {
                        Some(store) => {
                            let _ = weft::metrics::reload_keys(store, &metrics);
                        }
                        None => tracing::info!(
                            "SIGHUP: gossip is not sealed (--insecure), no keyring to reload"
                        ),
                    }
                }
            });
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot handle SIGHUP; keyring reloads need `weft keys reload`"
        ),
    }
    handle.stop_on(shutdown);
    handle.wait().await?;
    Ok(())
}

/// A future that completes at the first SIGINT or SIGTERM; a second one exits at once. The
/// handlers are installed before this returns, so no signal is lost while the agent starts.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down (send it again to exit at once)"
        );
        let _ = tx.send(());
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!("second signal: exiting without finishing the shutdown");
        std::process::exit(130);
    });
    Ok(async move {
        let _ = rx.await;
    })
}

fn client(request: impl Future<Output = Result<String, weft::cli::CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match runtime.block_on(request) {
        Ok(text) => emit(&text),
        Err(e) => fail(&e),
    }
}

/// The agent's control plane (gossip, lease, API) is light and runs on one thread: a
/// multi-thread runtime only added idle wake-ups, thread stacks and malloc arenas (the udp
/// tunnel's packet loops have their own threads). glibc gets at most two arenas for the same
/// reason (it would otherwise create one per thread that ever allocated, up to 8 per core).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("weft")
        .build()
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Prints `weft: <error>: <cause>: ...` on one line (skipping causes the message already shows)
/// and returns exit code 1.
fn fail(error: &(dyn Error + 'static)) -> ExitCode {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    say(&format!("weft: {line}"));
    ExitCode::from(1)
}
