//! `weft-sim`: runs N weft agents (in this process over chitchat's in-memory transport or sealed
//! loopback UDP, or as N `weft run --dry-run` processes) and prints what the scenarios measured as
//! a markdown table row (and JSON with `--json`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use weft::config::parse_duration;
use weft_sim::{LinkKind, Report, Scenario, SimConfig};

// A thousand agents in one process allocate and free from two threads all the time; glibc's
// malloc spent about a third of the simulator's CPU at N = 1,000 (perf). `weft run` keeps glibc:
// with mimalloc an idle agent's RSS went from 11 to 21 MB (BENCHMARKS.md, round 5).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(name = "weft-sim", version, about)]
struct Args {
    /// Number of agents
    #[arg(long, default_value = "10")]
    nodes: usize,
    /// Probability that a received gossip message is dropped (channel and udp links)
    #[arg(long, default_value = "0")]
    loss: f64,
    /// Delay added to every received gossip message (channel and udp links)
    #[arg(long, default_value = "0s", value_parser = dur)]
    delay: Duration,
    /// channel | udp | process
    #[arg(long, default_value = "channel", value_parser = link)]
    link: LinkKind,
    /// cold | join | kill | leave | idle | partition | all
    #[arg(long, default_value = "all", value_parser = scenario)]
    scenario: Scenario,
    #[arg(long, default_value = "1s", value_parser = dur)]
    gossip_interval: Duration,
    /// Live peers per gossip round [default: weft's]
    #[arg(long)]
    gossip_fanout: Option<usize>,
    /// Claim settle period [default: weft's, max(10 x gossip interval, 5s)]
    #[arg(long, value_parser = dur)]
    settle: Option<Duration>,
    #[arg(long, default_value = "2h", value_parser = dur)]
    dead_node_grace: Duration,
    /// Idle window for bytes, CPU, memory and false deaths
    #[arg(long, default_value = "60s", value_parser = dur)]
    idle: Duration,
    /// How long the two halves stay apart
    #[arg(long, default_value = "60s", value_parser = dur)]
    partition: Duration,
    /// Give up on a scenario after this long
    #[arg(long, default_value = "300s", value_parser = dur)]
    timeout: Duration,
    /// Seed nodes given to every other node
    #[arg(long, default_value = "3")]
    seeds: usize,
    /// Pad node names to this many characters
    #[arg(long, default_value = "6")]
    name_len: usize,
    /// Status poll period [default: from N and the link]
    #[arg(long, value_parser = dur)]
    poll: Option<Duration>,
    /// The weft binary for --link process [default: $WEFT_BIN or next to weft-sim]
    #[arg(long)]
    weft_bin: Option<PathBuf>,
    /// Keep state files and process logs here [default: a temp dir, removed]
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Print the table header first
    #[arg(long)]
    header: bool,
    /// Also print the report as JSON (one line)
    #[arg(long)]
    json: bool,
}

fn dur(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn link(s: &str) -> Result<LinkKind, String> {
    LinkKind::from_name(s).ok_or_else(|| "channel | udp | process".to_string())
}

fn scenario(s: &str) -> Result<Scenario, String> {
    Scenario::from_name(s)
        .ok_or_else(|| "cold | join | kill | leave | idle | partition | all".to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = SimConfig {
        nodes: args.nodes,
        loss: args.loss,
        delay: args.delay,
        link: args.link,
        scenario: args.scenario,
        gossip_interval: args.gossip_interval,
        gossip_fanout: args.gossip_fanout,
        settle: args.settle,
        dead_node_grace: args.dead_node_grace,
        idle: args.idle,
        partition: args.partition,
        timeout: args.timeout,
        seeds: args.seeds,
        name_len: args.name_len,
        weft_bin: args.weft_bin,
        work_dir: args.work_dir,
        poll: args.poll,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-sim: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(weft_sim::run(cfg)) {
        Ok(report) => {
            print(&args.header, &report);
            if args.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            }
            for note in &report.notes {
                eprintln!("note: {note}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weft-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print(header: &bool, report: &Report) {
    if *header {
        println!("{}", Report::markdown_header());
    }
    println!("{}", report.markdown_row());
}
