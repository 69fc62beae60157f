//! `weft docker-opts`: docker daemon options from subnet.env, like flannel's `mk-docker-opts.sh`.

use std::path::PathBuf;

use clap::Args;
use clap::builder::BoolishValueParser;

use crate::config::defaults;

/// Flags of `weft docker-opts`.
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct DockerOptsArgs {
    /// The subnet file `weft run` writes
    #[arg(long, short = 'f', env = "WEFT_SUBNET_FILE", value_name = "FILE", default_value = defaults::SUBNET_FILE)]
    pub subnet_file: PathBuf,
    /// Print `KEY="..."` (an environment file for docker's systemd unit) instead of bare flags
    #[arg(long, env = "WEFT_ENV", value_parser = BoolishValueParser::new())]
    pub env: bool,
    /// The variable name of the environment form (implies --env)
    #[arg(long, short = 'k', env = "WEFT_KEY", value_name = "NAME")]
    pub key: Option<String>,
    /// Write the output to this file (atomically) instead of standard output (implies --env)
    #[arg(long, short = 'd', env = "WEFT_DEST", value_name = "FILE")]
    pub dest: Option<PathBuf>,
}

/// What subnet.env says, as far as docker cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetEnv {
    /// `FLANNEL_SUBNET`: the bridge address with the subnet's prefix length, e.g. `10.244.3.1/24`
    /// (absent in an IPv6-only overlay).
    pub subnet: Option<String>,
    /// `FLANNEL_IPV6_SUBNET`, as the network docker's `--fixed-cidr-v6` wants: e.g.
    /// `fd00:10:244:3::/64` for `fd00:10:244:3::1/64`.
    pub ipv6_subnet: Option<ipnet::Ipv6Net>,
    /// `FLANNEL_MTU`.
    pub mtu: u32,
    /// `FLANNEL_IPMASQ`: weft masquerades, so docker must not.
    pub ip_masq: bool,
}

/// Why subnet.env does not parse.
#[derive(Debug, thiserror::Error)]
pub enum SubnetEnvError {
    /// A key docker needs is missing.
    #[error("no {0}")]
    Missing(&'static str),
    /// A key has a value that does not parse.
    #[error("{key}={value}: {why}")]
    Invalid {
        /// The key.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
}

/// Why `weft docker-opts` failed; each displays as one line.
#[derive(Debug, thiserror::Error)]
pub enum DockerOptsError {
    /// subnet.env cannot be read.
    #[error("{}: {source} (is `weft run` ready?)", path.display())]
    Read {
        /// The subnet file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// subnet.env does not parse.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The subnet file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SubnetEnvError,
    },
    /// `--dest` cannot be written (or is not a regular file: it is left alone).
    #[error(transparent)]
    Write(#[from] crate::files::FileError),
}

/// Parses flannel's subnet.env (`KEY=value` lines; unknown keys ignored).
pub fn parse_subnet_env(text: &str) -> Result<SubnetEnv, SubnetEnvError> {
    let mut subnet = None;
    let mut ipv6_subnet = None;
    let mut mtu = None;
    let mut ip_masq = false;
    for line in text.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"');
        match key.trim() {
            "FLANNEL_SUBNET" => {
                value
                    .parse::<ipnet::Ipv4Net>()
                    .map_err(|e| SubnetEnvError::Invalid {
                        key: "FLANNEL_SUBNET",
                        value: value.to_string(),
                        why: e.to_string(),
                    })?;
                subnet = Some(value.to_string());
            }
            "FLANNEL_IPV6_SUBNET" => {
                let net = value
                    .parse::<ipnet::Ipv6Net>()
                    .map_err(|e| SubnetEnvError::Invalid {
                        key: "FLANNEL_IPV6_SUBNET",
                        value: value.to_string(),
                        why: e.to_string(),
                    })?;
                ipv6_subnet = Some(net.trunc());
            }
            "FLANNEL_MTU" => {
                mtu = Some(value.parse::<u32>().map_err(|e| SubnetEnvError::Invalid {
                    key: "FLANNEL_MTU",
                    value: value.to_string(),
                    why: e.to_string(),
                })?)
            }
            "FLANNEL_IPMASQ" => ip_masq = value == "true",
            _ => {}
        }
    }
    if subnet.is_none() && ipv6_subnet.is_none() {
        return Err(SubnetEnvError::Missing("FLANNEL_SUBNET"));
    }
    Ok(SubnetEnv {
        subnet,
        ipv6_subnet,
        mtu: mtu.ok_or(SubnetEnvError::Missing("FLANNEL_MTU"))?,
        ip_masq,
    })
}

/// The docker flags: `--bip=<first host>/<len>` (IPv4), `--ipv6=true --fixed-cidr-v6=<subnet>`
/// (IPv6), `--mtu=<mtu>`, and `--ip-masq=false` when weft masquerades.
pub fn docker_flags(env: &SubnetEnv) -> String {
    let mut parts = Vec::new();
    if let Some(subnet) = &env.subnet {
        parts.push(format!("--bip={subnet}"));
    }
    if let Some(subnet) = env.ipv6_subnet {
        parts.push(format!("--ipv6=true --fixed-cidr-v6={subnet}"));
    }
    parts.push(format!("--mtu={}", env.mtu));
    let mut flags = parts.join(" ");
    if env.ip_masq {
        flags.push_str(" --ip-masq=false");
    }
    flags
}

/// `weft docker-opts`: the text to print (empty when written to `--dest`). `--dest` is replaced
/// only when it is a regular file (or absent): a symlink, device, FIFO or directory there is
/// refused and left untouched.
pub fn docker_opts(args: &DockerOptsArgs) -> Result<String, DockerOptsError> {
    let text =
        std::fs::read_to_string(&args.subnet_file).map_err(|source| DockerOptsError::Read {
            path: args.subnet_file.clone(),
            source,
        })?;
    let env = parse_subnet_env(&text).map_err(|source| DockerOptsError::Parse {
        path: args.subnet_file.clone(),
        source,
    })?;
    let flags = docker_flags(&env);
    let env_form = args.env || args.key.is_some() || args.dest.is_some();
    let out = if env_form {
        let key = args.key.as_deref().unwrap_or("DOCKER_OPTS");
        format!("{key}=\"{flags}\"\n")
    } else {
        format!("{flags}\n")
    };
    match &args.dest {
        Some(path) => {
            crate::files::write_atomic(path, &out)?;
            Ok(String::new())
        }
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_from_subnet_env() {
        let env = parse_subnet_env(
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
        )
        .unwrap();
        assert_eq!(docker_flags(&env), "--bip=10.244.3.1/24 --mtu=1450");
        let env = parse_subnet_env(
            "FLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        assert_eq!(
            docker_flags(&env),
            "--bip=10.244.3.1/24 --mtu=1400 --ip-masq=false"
        );
        assert!(parse_subnet_env("FLANNEL_MTU=1450\n").is_err());
        assert!(parse_subnet_env("FLANNEL_SUBNET=bogus\nFLANNEL_MTU=1\n").is_err());
    }

    #[test]
    fn dual_stack_and_ipv6_only_subnet_env_give_dockers_ipv6_flags() {
        let text = crate::files::subnet_env_families(
            Some((
                "10.244.0.0/16".parse().unwrap(),
                "10.244.3.0/24".parse().unwrap(),
            )),
            Some((
                "fd00:10:244::/56".parse().unwrap(),
                "fd00:10:244:3::/64".parse().unwrap(),
            )),
            1450,
            false,
        );
        let env = parse_subnet_env(&text).unwrap();
        assert_eq!(
            docker_flags(&env),
            "--bip=10.244.3.1/24 --ipv6=true --fixed-cidr-v6=fd00:10:244:3::/64 --mtu=1450"
        );
        let env = parse_subnet_env(
            "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64\nFLANNEL_MTU=1430\n",
        )
        .unwrap();
        assert_eq!(
            docker_flags(&env),
            "--ipv6=true --fixed-cidr-v6=fd00:10:244:3::/64 --mtu=1430"
        );
        assert!(
            parse_subnet_env("FLANNEL_IPV6_SUBNET=10.0.0.1/24\nFLANNEL_MTU=1\n").is_err(),
            "an IPv4 subnet under the IPv6 key is refused"
        );
    }

    #[test]
    fn env_form_and_dest() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subnet.env");
        std::fs::write(&file, "FLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\n").unwrap();
        let mut args = DockerOptsArgs {
            subnet_file: file,
            env: false,
            key: None,
            dest: None,
        };
        assert_eq!(
            docker_opts(&args).unwrap(),
            "--bip=10.244.9.1/24 --mtu=1450\n"
        );
        args.key = Some("DOCKER_NETWORK_OPTIONS".into());
        assert_eq!(
            docker_opts(&args).unwrap(),
            "DOCKER_NETWORK_OPTIONS=\"--bip=10.244.9.1/24 --mtu=1450\"\n"
        );
        let dest = dir.path().join("docker_opts.env");
        args.dest = Some(dest.clone());
        assert_eq!(docker_opts(&args).unwrap(), "");
        assert!(
            std::fs::read_to_string(dest)
                .unwrap()
                .starts_with("DOCKER_NETWORK_OPTIONS=")
        );
    }

    #[test]
    fn dest_that_is_not_a_regular_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subnet.env");
        std::fs::write(&file, "FLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1450\n").unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let link = dir.path().join("docker_opts.env");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let args = DockerOptsArgs {
            subnet_file: file,
            env: false,
            key: None,
            dest: Some(link.clone()),
        };
        let err = docker_opts(&args).unwrap_err();
        assert!(matches!(err, DockerOptsError::Write(_)), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_link(&link).unwrap(), victim);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
