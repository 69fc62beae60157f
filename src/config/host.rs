//! The checks of the host that `weft run` and `weft run --check-config` share once the values
//! parse: the cluster key file (well-formed, private), the state directory and the subnet file's
//! directory (usable for writing), and the underlay (found, outside the overlay). Both commands
//! run [`preflight`] before anything touches the kernel, so they refuse exactly the same inputs.

use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::args::RunArgs;
use super::error::ConfigError;
use super::raw::Names;
use super::{Config, UnderlaySelect};
use crate::keys;

/// What the host checks need besides the [`Config`].
#[derive(Clone, Debug, Default)]
pub struct HostChecks {
    /// `--allow-open-key-perms`: accept a key file other users can read.
    pub allow_open_key_perms: bool,
    /// Create a missing state directory and subnet-file directory (`run`); a check only
    /// verifies that they could be created (`--check-config`).
    pub create_dirs: bool,
    /// Flags set through their `WEFT_*` variable, for naming them in errors.
    pub from_env: Vec<String>,
}

impl HostChecks {
    /// The checks `weft run` (or `--check-config`) asks for.
    pub fn from_args(args: &RunArgs) -> HostChecks {
        HostChecks {
            allow_open_key_perms: args.allow_open_key_perms,
            create_dirs: !args.check_config,
            from_env: args.from_env.clone(),
        }
    }

    fn name(&self, flag: &str) -> String {
        Names::new(&self.from_env).of(flag)
    }
}

/// Every check of the host, in the order `run` meets them: key file, state directory, subnet
/// file, underlay.
pub async fn preflight(config: &Config, checks: &HostChecks) -> Result<(), ConfigError> {
    check_host(config, checks)?;
    let underlay =
        crate::dataplane::netlink::discover(&config.underlay, config.public_ip, config.dry_run)
            .await
            .map_err(|e| {
                underlay_error(
                    config,
                    checks,
                    &crate::dataplane::underlay::failure_reason(&e),
                )
            })?;
    check_underlay(config, checks, underlay.ip)
}

/// The checks that need no netlink: key file, state directory, subnet file.
pub fn check_host(config: &Config, checks: &HostChecks) -> Result<(), ConfigError> {
    check_key_file(config, checks)?;
    check_dir(
        &config.state_dir,
        &checks.name("--state-dir"),
        checks.create_dirs,
    )?;
    check_subnet_file(
        &config.subnet_file,
        &checks.name("--subnet-file"),
        checks.create_dirs,
    )
}

/// The underlay could not be found (`reason`: why, as
/// [`failure_reason`](crate::dataplane::underlay::failure_reason) says it): one line naming
/// `--iface` (or its variable).
pub fn underlay_error(config: &Config, checks: &HostChecks, reason: &str) -> ConfigError {
    let field = checks.name("--iface");
    let reason = reason.to_string();
    match &config.underlay {
        UnderlaySelect::Iface(name) => ConfigError::invalid(field, name.as_str(), reason),
        UnderlaySelect::Addr(ip) => ConfigError::invalid(field, ip.to_string(), reason),
        UnderlaySelect::DefaultRoute => ConfigError::Underlay {
            field: format!("{field} (unset: the default route's interface)"),
            reason,
        },
    }
}

/// The overlay network must not contain the address this node announces or sends from (the
/// rule of [`check_underlay_overlap`](super::check_underlay_overlap), naming what was set).
pub fn check_underlay(
    config: &Config,
    checks: &HostChecks,
    underlay_ip: IpAddr,
) -> Result<(), ConfigError> {
    let announce = config.public_ip.unwrap_or(underlay_ip);
    for ip in [announce, underlay_ip] {
        super::check_underlay_overlap(config.network, ip).map_err(|e| match e {
            ConfigError::Invalid { value, reason, .. } => ConfigError::Invalid {
                field: checks.name("--network"),
                value,
                reason,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// The cluster key file: read and parsed exactly as the agent does, and private unless
/// `--allow-open-key-perms` (a key other users can read lets them join and read the mesh).
fn check_key_file(config: &Config, checks: &HostChecks) -> Result<(), ConfigError> {
    let Some(path) = config
        .cluster_key_file
        .as_deref()
        .filter(|_| !config.insecure)
    else {
        return Ok(());
    };
    let err = |source| ConfigError::KeyFile {
        field: checks.name("--cluster-key-file"),
        source,
    };
    let file = keys::load(path).map_err(err)?;
    file.to_keyring()
        .map_err(|e| err(keys::KeyStoreError::Key(e)))?;
    if !checks.allow_open_key_perms {
        keys::check_private(path).map_err(err)?;
    }
    Ok(())
}

fn path_err(field: &str, path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError::Path {
        field: field.to_string(),
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A directory the agent writes in: it exists (or, with `create`, is created; without, its
/// nearest existing ancestor is a writable directory), is a directory, and a probe file can be
/// created and removed in it (this catches read-only filesystems, which root's permission
/// bits do not).
fn check_dir(path: &Path, field: &str, create: bool) -> Result<(), ConfigError> {
    let cannot_write =
        |e: std::io::Error| path_err(field, path, format!("cannot write in it: {e}"));
    let cannot_create = |e: std::io::Error| path_err(field, path, format!("cannot create it: {e}"));
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Err(path_err(field, path, "not a directory")),
        Ok(_) => probe(path).map_err(cannot_write),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // The same verdict with or without `create`: the nearest existing ancestor must be
            // a directory this process can create entries in.
            let (ancestor, meta) = nearest_existing(path).map_err(cannot_create)?;
            if !meta.is_dir() {
                return Err(path_err(
                    field,
                    path,
                    format!(
                        "cannot create it: {} is not a directory",
                        ancestor.display()
                    ),
                ));
            }
            nix::unistd::access(
                &ancestor,
                nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
            )
            .map_err(|errno| cannot_create(std::io::Error::from_raw_os_error(errno as i32)))?;
            if create {
                std::fs::create_dir_all(path).map_err(cannot_create)?;
                probe(path).map_err(cannot_write)?;
            }
            Ok(())
        }
        Err(e) => Err(path_err(field, path, format!("cannot use it: {e}"))),
    }
}

/// The closest ancestor of `path` that exists, with its metadata.
fn nearest_existing(path: &Path) -> std::io::Result<(PathBuf, std::fs::Metadata)> {
    let mut cur = path.parent();
    while let Some(dir) = cur {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match std::fs::metadata(dir) {
            Ok(meta) => return Ok((dir.to_path_buf(), meta)),
            Err(e) if e.kind() == ErrorKind::NotFound => cur = dir.parent(),
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::from(ErrorKind::NotFound))
}

/// Creates and removes a file in `dir`.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(format!(".weft-probe.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)
}

/// The subnet file is replaced by renaming a new file over it: it must be a regular file (or
/// absent) in a directory the agent can write.
fn check_subnet_file(path: &Path, field: &str, create: bool) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => return Err(path_err(field, path, "a directory, not a file")),
        Ok(meta) if !meta.is_file() => return Err(path_err(field, path, "not a regular file")),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(path_err(field, path, format!("cannot use it: {e}"))),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    check_dir(parent, field, create).map_err(|e| match e {
        ConfigError::Path { reason, .. } => path_err(
            field,
            path,
            format!("its directory {}: {reason}", parent.display()),
        ),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn underlay_inside_the_overlay_names_what_was_set() {
        let config = Config::with_defaults("n1").unwrap();
        let checks = HostChecks {
            from_env: vec!["network".into()],
            ..HostChecks::default()
        };
        let e = check_underlay(&config, &checks, "10.244.3.3".parse().unwrap()).unwrap_err();
        assert_eq!(e.field(), "WEFT_NETWORK");
        assert!(e.to_string().contains("underlay address 10.244.3.3"), "{e}");
        check_underlay(&config, &checks, "192.0.2.1".parse().unwrap()).unwrap();
        let e = underlay_error(
            &config,
            &checks,
            &crate::dataplane::underlay::failure_reason(
                &crate::dataplane::DataplaneError::Underlay(
                    crate::dataplane::underlay::UnderlayError::NoDefaultRoute,
                ),
            ),
        );
        assert_eq!(
            e.to_string(),
            "invalid --iface (unset: the default route's interface): no IPv4 default route: choose the interface with --iface"
        );
    }

    #[test]
    fn dirs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let e = check_dir(&file, "--state-dir", true)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("not a directory"), "{e}");
        let under_file = file.join("sub");
        let e = check_dir(&under_file, "--state-dir", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot"), "{e}");
        let e = check_dir(&under_file, "--state-dir", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot"), "{e}");
        let new = dir.path().join("a/b");
        check_dir(&new, "--state-dir", false).unwrap();
        assert!(!new.exists(), "a check creates nothing");
        check_dir(&new, "--state-dir", true).unwrap();
        assert!(new.is_dir());
        assert_eq!(
            std::fs::read_dir(&new).unwrap().count(),
            0,
            "the probe is removed"
        );
        let e = check_subnet_file(dir.path(), "--subnet-file", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a directory, not a file"), "{e}");
        let e = check_subnet_file(Path::new("/dev/null"), "--subnet-file", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        check_subnet_file(&dir.path().join("x/subnet.env"), "--subnet-file", false).unwrap();
    }
}
