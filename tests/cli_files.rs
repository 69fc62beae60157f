//! The `weft` binary and the files it writes: `weft docker-opts -d FILE` replaces FILE only when it
//! is a regular file (or absent). A symlink, a FIFO, a directory or a device node there is refused
//! with one line and exit code 1, and left exactly as it was; `weft keygen --out FILE` writes a new
//! file only. Everything lives in a temporary directory (the device node is made there with mknod,
//! which needs root; without root that case prints why it skips).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output};

fn docker_opts(subnet_env: &Path, dest: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft"));
    for (key, _) in std::env::vars() {
        if key.starts_with("WEFT_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("docker-opts")
        .arg("-f")
        .arg(subnet_env)
        .arg("-d")
        .arg(dest)
        .output()
        .expect("run weft")
}

fn subnet_env(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("subnet.env");
    std::fs::write(
        &file,
        "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
    )
    .unwrap();
    file
}

/// Exit code 1, one line on stderr naming DEST and saying why, nothing on stdout.
fn assert_refused(out: &Output, dest: &Path, kind: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("weft: "), "{stderr}");
    assert!(stderr.contains(&dest.display().to_string()), "{stderr}");
    assert!(stderr.contains(kind), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// The directory's entries, sorted (no temporary file may be left).
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn docker_opts_dest_symlink_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let env = subnet_env(dir.path());
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.path().join("docker_opts.env");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = docker_opts(&env, &link);
    assert_refused(&out, &link, "symbolic link");
    assert_eq!(std::fs::read_link(&link).unwrap(), victim);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        listing(dir.path()),
        ["docker_opts.env", "subnet.env", "victim"]
    );
}

#[test]
fn docker_opts_dest_fifo_and_directory_are_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let env = subnet_env(dir.path());
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let out = docker_opts(&env, &fifo);
    assert_refused(&out, &fifo, "FIFO");
    assert!(fifo.symlink_metadata().unwrap().file_type().is_fifo());
    let subdir = dir.path().join("opts.d");
    std::fs::create_dir(&subdir).unwrap();
    let out = docker_opts(&env, &subdir);
    assert_refused(&out, &subdir, "directory");
    assert!(subdir.symlink_metadata().unwrap().is_dir());
    assert_eq!(listing(dir.path()), ["fifo", "opts.d", "subnet.env"]);
}

#[test]
fn docker_opts_dest_device_is_refused_and_untouched() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("WEFT_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("mknod needs root and WEFT_REQUIRE_NETNS=1");
        }
        eprintln!(
            "SKIPPED docker_opts_dest_device_is_refused_and_untouched: mknod needs root (set WEFT_REQUIRE_NETNS=1 to make this a failure)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = subnet_env(dir.path());
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    // A null device (1,3) and a loop block device (7,0), made here: never the system's own.
    let null = dir.path().join("null");
    mknod(
        &null,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(1, 3),
    )
    .unwrap();
    let block = dir.path().join("loop");
    mknod(
        &block,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o600),
        makedev(7, 0),
    )
    .unwrap();
    let out = docker_opts(&env, &null);
    assert_refused(&out, &null, "character device");
    let out = docker_opts(&env, &block);
    assert_refused(&out, &block, "block device");
    let null_type = null.symlink_metadata().unwrap().file_type();
    assert!(null_type.is_char_device());
    assert!(
        block
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_block_device()
    );
    assert_eq!(listing(dir.path()), ["loop", "null", "subnet.env"]);
}

#[test]
fn docker_opts_dest_regular_file_is_replaced_and_a_missing_directory_made() {
    let dir = tempfile::tempdir().unwrap();
    let env = subnet_env(dir.path());
    let dest = dir.path().join("run/flannel/docker");
    let out = docker_opts(&env, &dest);
    assert!(out.status.success(), "{out:?}");
    let want = "DOCKER_OPTS=\"--bip=10.244.9.1/24 --mtu=1450\"\n";
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), want);
    std::fs::write(&dest, "old\n").unwrap();
    let out = docker_opts(&env, &dest);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), want);
    assert_eq!(listing(dest.parent().unwrap()), ["docker"]);
}

#[test]
fn keygen_out_writes_a_new_0600_file_and_never_replaces_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keygen = |out: &Path| {
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg("keygen")
            .arg("--out")
            .arg(out)
            .env_remove("WEFT_OUT")
            .output()
            .expect("run weft")
    };
    let key = dir.path().join("cluster.key");
    let out = keygen(&key);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Again: refused, the key stays.
    let out = keygen(&key);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
    // A symlink at --out: refused, its target not created.
    let link = dir.path().join("link.key");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    let out = keygen(&link);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!dir.path().join("elsewhere").exists());
    assert_eq!(listing(dir.path()), ["cluster.key", "link.key"]);
}
