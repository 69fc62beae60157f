//! The process link: one `weft run --dry-run` process per agent on a loopback address, polled
//! over its local API.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;

use weft::api::StatusReport;
use weft::cli::http;
use weft::config::{Config, format_duration};

const HTTP_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Proc {
    child: Option<tokio::process::Child>,
    pub pid: Option<u32>,
    api: http::Endpoint,
    /// The control socket (`weft leave` goes there).
    control: http::Endpoint,
    /// Latest `/v1/status`, if the last poll answered.
    pub status: Option<StatusReport>,
}

impl Proc {
    pub async fn spawn(
        bin: &Path,
        c: &Config,
        dir: &Path,
        pass_settle: bool,
    ) -> Result<Proc, String> {
        let node_dir = dir.join(&c.node_name);
        std::fs::create_dir_all(&node_dir).map_err(|e| format!("{}: {e}", node_dir.display()))?;
        let log = std::fs::File::create(node_dir.join("log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let api = std::net::SocketAddr::new(c.listen.ip(), 7948);
        let mut cmd = tokio::process::Command::new(bin);
        cmd.arg("run")
            .arg("--dry-run")
            .args(["--node-name", &c.node_name])
            .args(["--public-ip", &c.listen.ip().to_string()])
            .args(["--listen", &c.listen.to_string()])
            .args(["--api", &api.to_string()])
            .args(["--network", &c.network.to_string()])
            .args(["--subnet-len", &c.subnet_len.to_string()])
            .args(["--subnet-min", &c.subnet_min.to_string()])
            .args(["--subnet-max", &c.subnet_max.to_string()])
            .arg("--state-dir")
            .arg(&c.state_dir)
            .arg("--subnet-file")
            .arg(&c.subnet_file)
            .args(["--gossip-interval", &format_duration(c.gossip_interval)])
            .args(["--gossip-fanout", &c.gossip_fanout.to_string()])
            .args(["--dead-node-grace", &format_duration(c.dead_node_grace)])
            .args(["--reservation", &format_duration(c.reservation)])
            .args(["--cluster-id", &c.cluster_id]);
        if pass_settle {
            cmd.args(["--settle", &format_duration(c.settle)]);
        }
        if !c.seeds.is_empty() {
            cmd.args(["--seeds", &c.seeds.join(",")]);
        }
        match &c.cluster_key_file {
            Some(k) => {
                cmd.arg("--cluster-key-file").arg(k);
            }
            None => {
                cmd.arg("--insecure");
            }
        }
        cmd.env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        // The agents die with the simulator, even if it is killed.
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
        Ok(Proc {
            pid: child.id(),
            child: Some(child),
            api: http::Endpoint::Tcp(api.to_string()),
            control: http::Endpoint::Unix(weft::api::socket_path(&c.state_dir)),
            status: None,
        })
    }

    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
        self.status = None;
    }

    /// `POST /v1/leave`, in the background: the answer comes once the leave has spread.
    pub fn leave(&mut self) -> tokio::task::JoinHandle<Result<(), String>> {
        let control = self.control.clone();
        tokio::spawn(async move {
            let r = http::post(&control, "/v1/leave", b"{}", Duration::from_secs(60))
                .await
                .map_err(|e| e.to_string())?;
            if !r.is_success() {
                return Err(format!("HTTP {}", r.status));
            }
            Ok(())
        })
    }

    async fn refresh(&mut self) {
        self.status = match http::get(&self.api, "/v1/status", HTTP_TIMEOUT).await {
            Ok(r) if r.is_success() => serde_json::from_slice(&r.body).ok(),
            _ => None,
        };
    }

    /// Gossip bytes in + out from `/metrics`.
    pub async fn gossip_bytes(&self) -> Option<u64> {
        let r = http::get(&self.api, "/metrics", HTTP_TIMEOUT).await.ok()?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        let sum = text
            .lines()
            .filter(|l| l.starts_with("weft_gossip_bytes_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Some(sum)
    }
}

/// CPU seconds used so far by process `pid` and its RSS in MB: the CPU from the process's CPU
/// clock (nanoseconds; /proc's clock ticks of 10 ms put an idle agent's minute on a grid of
/// 0.01 CPU-s), else from /proc.
pub(super) fn cpu_and_rss(pid: u32) -> Option<(f64, f64)> {
    let cpu = process_cpu_clock(pid).or_else(|| proc_stat_cpu(pid))?;
    Some((cpu, crate::rss_mb(Some(pid))?))
}

/// The CPU time of process `pid` (all its threads) in seconds, from its CPU-time clock.
fn process_cpu_clock(pid: u32) -> Option<f64> {
    let pid = libc::pid_t::try_from(pid).ok()?;
    let mut clock: libc::clockid_t = 0;
    // SAFETY: `clock` is a valid place for the id; the call has no other preconditions.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    clock_seconds(clock)
}

fn clock_seconds(clock: libc::clockid_t) -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// The CPU time of process `pid` in seconds from /proc/<pid>/stat (user + system clock ticks).
fn proc_stat_cpu(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Polls every process's status, 64 at a time.
pub(super) async fn refresh_all(procs: Vec<&mut Proc>) {
    futures::stream::iter(procs)
        .for_each_concurrent(64, |p| p.refresh())
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_clock_counts_this_process_and_agrees_with_proc() {
        let pid = std::process::id();
        // Some CPU to count.
        let mut x = 0u64;
        for _ in 0..5_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        // Read between two readings of this process's own CPU clock, it lies between them.
        let low = clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap();
        let (cpu, rss) = cpu_and_rss(pid).expect("cpu and rss of this process");
        let from_proc = proc_stat_cpu(pid).expect("/proc/self/stat");
        let high = clock_seconds(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap();
        assert!(
            low > 0.0 && low <= cpu && cpu <= high,
            "{low} ≤ {cpu} ≤ {high}"
        );
        assert!(rss > 0.0);
        // /proc's ticks count the same time, rounded down to whole ticks (read before `high`).
        assert!(
            from_proc <= high && high - from_proc < 0.5,
            "{from_proc} vs {high}"
        );
    }
}
