//! Test helper: private network namespaces with unique names, removed (with every process in
//! them) on drop, plus the root/skip policy shared by privileged tests.
//!
//! Use from an integration test with `#[path = "common/netns.rs"] mod netns;`.
#![allow(dead_code)]

use std::fs::File;
use std::io;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Whether privileged network tests can run here. When they cannot, prints why and returns
/// false, unless `WEFT_REQUIRE_NETNS=1`, in which case it panics (CI must not skip).
pub fn netns_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let reason = if euid != 0 {
        Some("not running as root")
    } else if Command::new("ip").arg("-V").output().is_err() {
        Some("the `ip` tool (iproute2) is not installed")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) => {
            if std::env::var("WEFT_REQUIRE_NETNS").as_deref() == Ok("1") {
                panic!("{test}: cannot run ({why}) and WEFT_REQUIRE_NETNS=1");
            }
            eprintln!("SKIPPED {test}: {why} (set WEFT_REQUIRE_NETNS=1 to make this a failure)");
            false
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace `/run/netns/<name>` that is deleted on drop.
pub struct NetnsGuard {
    name: String,
}

fn check(output: Output, what: &str) -> io::Result<String> {
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{what} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl NetnsGuard {
    /// Create `<prefix>-<pid>-<n>` (unique within the machine at this moment).
    pub fn new(prefix: &str) -> io::Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        check(
            Command::new("ip").args(["netns", "add", &name]).output()?,
            "ip netns add",
        )?;
        let guard = Self { name };
        guard.ip(&["link", "set", "lo", "up"])?;
        Ok(guard)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> ARGS…`, returning stdout; an error on a non-zero exit.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()?;
        check(out, &format!("ip -n {} {}", self.name, args.join(" ")))
    }

    /// `bridge -n <ns> ARGS…`.
    pub fn bridge(&self, args: &[&str]) -> io::Result<String> {
        let out = Command::new("bridge")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()?;
        check(out, &format!("bridge -n {} {}", self.name, args.join(" ")))
    }

    /// `ip netns exec <ns> PROGRAM ARGS…`.
    pub fn exec(&self, program: &str, args: &[&str]) -> io::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()?;
        check(out, &format!("{program} in {}", self.name))
    }

    /// Run `f` on a fresh thread that has entered the namespace (sockets it opens live there),
    /// returning its result; a panic in `f` is propagated.
    pub fn run_in<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let handle = std::thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Like [`run_in`](Self::run_in) with a current-thread tokio runtime inside the namespace.
    pub fn block_on<F, Fut, R>(&self, f: F) -> R
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = R>,
        R: Send + 'static,
    {
        self.run_in(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            rt.block_on(f())
        })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: ip netns del {}: {e}", self.name),
        }
    }
}
