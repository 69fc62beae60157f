//! The agent's files: flannel-format `subnet.env` and the persisted state, both written
//! atomically (temporary file in the same directory, fsync, rename).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use weft_proto::PersistedState;

/// Writes `contents` to `path` atomically, creating the parent directory.
pub fn write_atomic(path: &Path, contents: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// flannel's subnet.env: what the flannel CNI plugin and docker's `--bip` read.
pub fn subnet_env(network: Ipv4Net, subnet: Ipv4Net, mtu: u32, ip_masq: bool) -> String {
    let first = first_host(subnet);
    format!(
        "FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={first}/{}\nFLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={ip_masq}\n",
        subnet.prefix_len()
    )
}

/// The subnet's first host address (the bridge's), e.g. 10.244.3.1 for 10.244.3.0/24.
pub fn first_host(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1))
}

/// `<state-dir>/state.json`.
pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

/// Reads the persisted state; a missing file is `Ok(None)`, a corrupt one an error to log.
pub fn load_state(state_dir: &Path) -> Result<Option<PersistedState>, String> {
    let path = state_path(state_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) => PersistedState::from_json(&s)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Writes the persisted state to `<state-dir>/state.json` atomically.
pub fn save_state(state_dir: &Path, state: &PersistedState) -> std::io::Result<()> {
    write_atomic(&state_path(state_dir), &state.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_env_is_flannel_format() {
        let env = subnet_env(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
            1450,
            false,
        );
        assert_eq!(
            env,
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/x.env");
        write_atomic(&p, "a").unwrap();
        write_atomic(&p, "b").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
