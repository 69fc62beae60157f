//! Raw values and where they came from: a flag, its `WEFT_*` variable, or a net-conf.json key
//! (errors name what the operator wrote), with the rules every field shares: an empty value is
//! never the default, flags override the file, the file overrides the default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};

use super::duration::{format_duration, parse_duration};
use super::error::ConfigError;
use super::netconf::{NetConf, net_conf_field};

/// Which flags were set through their `WEFT_*` variable: errors name what the operator wrote.
pub(crate) struct Names<'a>(&'a [String]);

impl<'a> Names<'a> {
    pub(crate) fn new(from_env: &'a [String]) -> Self {
        Names(from_env)
    }

    /// `--network`, or `WEFT_NETWORK` when the value came from the environment.
    pub(crate) fn of(&self, flag: &str) -> String {
        let long = flag.trim_start_matches("--");
        if self.0.iter().any(|f| f == long) {
            env_var(long)
        } else {
            flag.to_string()
        }
    }
}

/// The variable that sets `--long-name`: `WEFT_LONG_NAME`.
pub fn env_var(long: &str) -> String {
    format!(
        "WEFT_{}",
        long.trim_start_matches("--")
            .to_ascii_uppercase()
            .replace('-', "_")
    )
}

/// An empty value where a value is required: never silently the default.
pub(super) fn empty(field: &str, hint: &str) -> ConfigError {
    ConfigError::invalid(field, "", format!("empty value ({hint})"))
}

/// A raw value and the name of the field it came from (flag or net-conf key).
pub(crate) struct Raw {
    pub(super) field: String,
    pub(super) value: String,
}

/// The given flag value, refused when empty (`--network ""`, `WEFT_NETWORK=`).
pub(super) fn given(
    names: &Names,
    flag: &str,
    arg: Option<String>,
    default: Option<&str>,
) -> Result<Option<Raw>, ConfigError> {
    let Some(value) = arg else { return Ok(None) };
    let field = names.of(flag);
    if value.trim().is_empty() {
        let hint = match default {
            Some(d) => format!("omit it to use the default, {d}"),
            None => "omit it to leave it unset".to_string(),
        };
        return Err(empty(&field, &hint));
    }
    Ok(Some(Raw { field, value }))
}

/// Flag if set, else the net-conf value if present, else the default.
pub(super) fn pick(
    names: &Names,
    flag: &str,
    arg: Option<String>,
    conf: Option<(&str, &Path, Option<String>)>,
    default: &str,
) -> Result<Raw, ConfigError> {
    if let Some(raw) = given(names, flag, arg, Some(default))? {
        return Ok(raw);
    }
    if let Some((key, path, Some(value))) = conf {
        return Ok(Raw {
            field: net_conf_field(key, path),
            value,
        });
    }
    Ok(Raw {
        field: names.of(flag),
        value: default.to_string(),
    })
}

/// Like [`pick`] without a default.
pub(super) fn pick_opt(
    names: &Names,
    flag: &str,
    arg: Option<String>,
    conf: Option<(&str, &Path, Option<String>)>,
) -> Result<Option<Raw>, ConfigError> {
    if let Some(raw) = given(names, flag, arg, None)? {
        return Ok(Some(raw));
    }
    Ok(match conf {
        Some((key, path, Some(value))) => Some(Raw {
            field: net_conf_field(key, path),
            value,
        }),
        _ => None,
    })
}

pub(super) fn flag_opt(
    names: &Names,
    flag: &str,
    arg: Option<String>,
) -> Result<Option<Raw>, ConfigError> {
    given(names, flag, arg, None)
}

pub(super) fn flag(
    names: &Names,
    flag: &str,
    arg: Option<String>,
    default: &str,
) -> Result<Raw, ConfigError> {
    pick(names, flag, arg, None, default)
}

impl Raw {
    pub(super) fn invalid(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.field.clone(), self.value.clone(), reason)
    }

    pub(super) fn parse<T: std::str::FromStr>(&self) -> Result<T, ConfigError>
    where
        T::Err: Into<super::error::ParseError>,
    {
        self.value
            .trim()
            .parse::<T>()
            .map_err(|e| ConfigError::parse(self.field.clone(), self.value.clone(), e))
    }

    /// An integer in `range`; anything else (negative, too large, not a number) says the range.
    pub(super) fn int_in<T>(&self, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let (lo, hi) = (*range.start(), *range.end());
        match self.value.trim().parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.invalid(format!("must be a whole number from {lo} to {hi}"))),
        }
    }

    pub(super) fn duration(&self) -> Result<Duration, ConfigError> {
        parse_duration(&self.value)
            .map_err(|e| ConfigError::parse(self.field.clone(), self.value.clone(), e))
    }

    /// A duration in `min..=max`.
    pub(super) fn duration_in(
        &self,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration()?;
        if d < min {
            return Err(self.invalid(format!("must be at least {}", format_duration(min))));
        }
        if d > max {
            return Err(self.invalid(format!("must be at most {}", format_duration(max))));
        }
        Ok(d)
    }

    /// An address peers send to: unicast, and loopback only in a `--dry-run` mesh on one
    /// machine (peers on a real network cannot reach 127.0.0.1).
    pub(super) fn peer_ip(&self, ip: IpAddr, dry_run: bool) -> Result<IpAddr, ConfigError> {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(self.invalid("not a unicast address"));
        }
        if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
            return Err(self.invalid("the broadcast address is not a host's address"));
        }
        if ip.is_loopback() && !dry_run {
            return Err(self.invalid(
                "a loopback address cannot be reached by other hosts (only a --dry-run mesh on \
                 one machine may use it)",
            ));
        }
        Ok(ip)
    }

    pub(super) fn ipv4(&self) -> Result<Ipv4Addr, ConfigError> {
        if self.value.trim().parse::<std::net::Ipv6Addr>().is_ok() {
            return Err(self.invalid(
                "IPv6: the IPv6 overlay has its own flags (--ipv6-network, --ipv6-subnet-min/max)",
            ));
        }
        self.parse()
    }

    /// `ADDR/LEN`, IPv4, with no host bits set.
    pub(super) fn cidr(&self) -> Result<Ipv4Net, ConfigError> {
        let text = self.value.trim();
        let Some((addr, len)) = text.split_once('/') else {
            return Err(self.invalid("expected ADDR/LEN, e.g. 10.244.0.0/16"));
        };
        let addr = Raw {
            field: self.field.clone(),
            value: addr.to_string(),
        }
        .ipv4()
        .map_err(|e| match e {
            ConfigError::Parse { source, .. } => {
                ConfigError::parse(self.field.clone(), self.value.clone(), source)
            }
            ConfigError::Invalid { reason, .. } => self.invalid(reason),
            other => other,
        })?;
        let net = Ipv4Net::new(addr, self.prefix_len(len, 32)?).unwrap_or_default();
        self.no_host_bits(IpNet::V4(net), IpAddr::V4(addr))?;
        Ok(net)
    }

    /// The prefix length after the `/` of a CIDR, at most `max`.
    pub(super) fn prefix_len(&self, len: &str, max: u8) -> Result<u8, ConfigError> {
        let len: u8 = len
            .parse()
            .map_err(|e| ConfigError::parse(self.field.clone(), self.value.clone(), e))?;
        if len > max {
            return Err(self.invalid(format!("prefix length {len} is larger than {max}")));
        }
        Ok(len)
    }

    /// Refuses a network written with host bits set, naming the network meant.
    pub(super) fn no_host_bits(&self, net: IpNet, written: IpAddr) -> Result<(), ConfigError> {
        if net.network() != written {
            return Err(self.invalid(format!("host bits are set (did you mean {}?)", net.trunc())));
        }
        Ok(())
    }

    pub(super) fn socket_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.parse()
    }
}

pub(super) fn conf_str<'a>(
    net_conf: &'a Option<(PathBuf, NetConf)>,
    key: &'a str,
    get: impl Fn(&NetConf) -> Option<String>,
) -> Option<(&'a str, &'a Path, Option<String>)> {
    net_conf
        .as_ref()
        .map(|(path, conf)| (key, path.as_path(), get(conf)))
}
