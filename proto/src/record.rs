//! The node record: the one atomic chitchat value each node publishes under [`RECORD_KEY`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde::{Deserialize, Serialize};

/// The chitchat key under which every node publishes its record.
pub const RECORD_KEY: &str = "weft/node";

/// Longest encoded record [`NodeRecord::decode`] accepts, in bytes of the base64 string.
pub const MAX_RECORD_LEN: usize = 2048;

/// Record format major version this code writes and reads. A different major is refused.
pub const FORMAT_MAJOR: u8 = 1;

/// Record format minor version this code writes. Newer minors only append fields to the body:
/// minor 1 appends [`FamiliesV1`] (whether IPv4 is on, the IPv6 overlay).
pub const FORMAT_MINOR: u8 = 1;

/// Largest claim stamp a record may carry (2^53 − 1 ms, about the year 287,000; also the
/// largest integer a JSON reader keeps exact). Stamps are hybrid-logical: never below what the
/// claimant had seen, so one far-future stamp lifts every later one; the bound keeps them from
/// ever saturating, which would let the node-name tie-break decide contests.
pub const MAX_CLAIM_TIME_MS: u64 = (1 << 53) - 1;

/// Longest node name, in bytes (a DNS name).
pub const MAX_NODE_NAME_LEN: usize = 253;

/// Which data plane a node uses for its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Backend {
    Vxlan,
    HostGw,
    Udp,
}

/// Where a node's subnet claim stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ClaimState {
    /// Announced, inside the settle period: may still yield.
    Claimed,
    /// Settled: subnet.env written, bridge configured.
    Active,
    /// `weft leave` in progress: the subnet is released, peers remove its routes.
    Leaving,
}

/// An IPv4 prefix as it travels on the wire (address + prefix length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub len: u8,
}

/// An IPv6 prefix as it travels on the wire (address + prefix length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv6Cidr {
    pub addr: Ipv6Addr,
    pub len: u8,
}

/// What a node with an IPv6 overlay announces beside its IPv4 part (record format minor 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ipv6Overlay {
    /// The IPv6 overlay network the node was configured with (mixed clusters are refused).
    pub network: Ipv6Cidr,
    /// The node's IPv6 subnet, claimed together with its IPv4 one; `None` while it has no claim.
    pub subnet: Option<Ipv6Cidr>,
    /// The node's IPv6 underlay address (`--public-ipv6`, or the interface's global address),
    /// when it has one: peers send its IPv6 overlay traffic there.
    pub underlay_ip: Option<Ipv6Addr>,
}

/// The fields format minor 1 appends after the minor-0 body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamiliesV1 {
    /// Whether the node runs an IPv4 overlay (false: IPv6-only; the IPv4 fields of the body then
    /// mean nothing and `subnet` is `None`).
    pub ipv4: bool,
    /// The node's IPv6 overlay, when it runs one.
    pub ipv6: Option<Ipv6Overlay>,
}

impl Default for FamiliesV1 {
    /// What a minor-0 record means: IPv4 only.
    fn default() -> Self {
        FamiliesV1 {
            ipv4: true,
            ipv6: None,
        }
    }
}

/// What a node tells the mesh about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_name: String,
    pub underlay_ip: IpAddr,
    pub backend: Backend,
    /// The overlay network this node was configured with (mixed clusters are refused).
    pub network: Ipv4Cidr,
    /// VXLAN network identifier (0 when the backend is not vxlan).
    pub vni: u32,
    /// The claimed subnet; `None` while the node has no claim (searching, refused identity).
    pub subnet: Option<Ipv4Cidr>,
    /// The claim's stamp: a hybrid logical clock in Unix milliseconds, never below the claimant's
    /// wall clock nor below any claim it had seen in the mesh when it claimed (at most
    /// [`MAX_CLAIM_TIME_MS`]).
    pub claim_time_ms: u64,
    pub state: ClaimState,
    /// VTEP MAC (vxlan); all zero for other backends.
    pub vtep_mac: [u8; 6],
    /// VXLAN destination port or UDP tunnel port.
    pub tunnel_port: u16,
    /// X25519 public key for the udp backend's encryption.
    pub public_key: Option<[u8; 32]>,
    /// The address families the node runs (minor 1; a minor-0 record reads as IPv4 only). Not
    /// part of the minor-0 body: encoded after it, see [`NodeRecord::encode`].
    #[serde(skip)]
    pub families: FamiliesV1,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record is not valid base64")]
    Base64,
    #[error("record too short")]
    Truncated,
    #[error("record too long ({0} bytes)")]
    TooLong(usize),
    #[error("unsupported record format {0}")]
    UnsupportedVersion(u8),
    #[error("record body does not decode")]
    Body(#[source] postcard::Error),
    #[error("invalid record: {0}")]
    Invalid(&'static str),
    /// A field of a decoded record fails validation; `field` is also the metric label.
    #[error("invalid record {field}: {why}")]
    Field {
        field: &'static str,
        why: &'static str,
    },
}

/// Every label [`RecordError::reason`] can return (`weft_records_rejected_total{reason}` is
/// exported for each, zeros included).
pub const REJECT_REASONS: &[&str] = &[
    "malformed",
    "too_long",
    "version",
    "invalid",
    "node_name",
    "underlay_ip",
    "network",
    "subnet",
    "claim_time",
    "vtep_mac",
    "vni",
    "families",
    "ipv6_network",
    "ipv6_subnet",
    "ipv6_underlay_ip",
];

impl RecordError {
    /// A short label for counting rejections (`weft_records_rejected_total{reason}`): `malformed`,
    /// `too_long`, `version`, or the name of the field that failed validation.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Base64 | RecordError::Truncated | RecordError::Body(_) => "malformed",
            RecordError::TooLong(_) => "too_long",
            RecordError::UnsupportedVersion(_) => "version",
            RecordError::Invalid(_) => "invalid",
            RecordError::Field { field, .. } => field,
        }
    }
}

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

fn field(field: &'static str, why: &'static str) -> RecordError {
    RecordError::Field { field, why }
}

/// Where a record's underlay address may point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A real network: loopback addresses are refused.
    Network,
    /// Every agent on one machine's loopback (only when this agent's own address is loopback).
    Loopback,
}

/// Why `ip` cannot be a peer's underlay address (unspecified, multicast, broadcast, loopback),
/// if it cannot.
pub fn bad_underlay_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(ip) if ip.is_unspecified() => Some("unspecified address"),
        IpAddr::V4(ip) if ip.is_multicast() => Some("multicast address"),
        IpAddr::V4(ip) if ip.is_broadcast() => Some("broadcast address"),
        IpAddr::V4(ip) if ip.is_loopback() => Some("loopback address"),
        IpAddr::V6(ip) if ip.is_unspecified() => Some("unspecified address"),
        IpAddr::V6(ip) if ip.is_multicast() => Some("multicast address"),
        IpAddr::V6(ip) if ip.is_loopback() => Some("loopback address"),
        IpAddr::V6(ip) => ip
            .to_ipv4_mapped()
            .and_then(|v4| bad_underlay_ip(IpAddr::V4(v4))),
        IpAddr::V4(_) => None,
    }
}

impl Ipv4Cidr {
    /// A prefix, checked: `len` at most 32 and no host bits set in `addr`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, RecordError> {
        let cidr = Ipv4Cidr { addr, len };
        cidr.validate()?;
        Ok(cidr)
    }

    /// The netmask as a host-order integer (`len` clamped to 32).
    pub fn mask(&self) -> u32 {
        match self.len {
            0 => 0,
            l if l >= 32 => u32::MAX,
            l => u32::MAX << (32 - u32::from(l)),
        }
    }

    /// `len` ≤ 32 and the address is aligned to the prefix (host bits zero).
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.len > 32 {
            return Err(RecordError::Invalid("prefix length over 32"));
        }
        if u32::from(self.addr) & !self.mask() != 0 {
            return Err(RecordError::Invalid("prefix address has host bits set"));
        }
        Ok(())
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains_addr(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Whether `other` lies entirely inside this prefix (equal prefixes included).
    pub fn contains(&self, other: &Ipv4Cidr) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = RecordError;

    /// Parses `a.b.c.d/len`, refusing host bits and lengths over 32.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or(RecordError::Invalid("prefix lacks '/len'"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| RecordError::Invalid("prefix address is not IPv4"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| RecordError::Invalid("prefix length is not a number"))?;
        Ipv4Cidr::new(addr, len)
    }
}

impl Ipv6Cidr {
    /// A prefix, checked: `len` at most 128 and no host bits set in `addr`.
    pub fn new(addr: Ipv6Addr, len: u8) -> Result<Self, RecordError> {
        let cidr = Ipv6Cidr { addr, len };
        cidr.validate()?;
        Ok(cidr)
    }

    /// The netmask as a host-order integer (`len` clamped to 128).
    pub fn mask(&self) -> u128 {
        match self.len {
            0 => 0,
            l if l >= 128 => u128::MAX,
            l => u128::MAX << (128 - u32::from(l)),
        }
    }

    /// `len` ≤ 128 and the address is aligned to the prefix (host bits zero).
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.len > 128 {
            return Err(RecordError::Invalid("prefix length over 128"));
        }
        if u128::from(self.addr) & !self.mask() != 0 {
            return Err(RecordError::Invalid("prefix address has host bits set"));
        }
        Ok(())
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains_addr(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & self.mask() == u128::from(self.addr) & self.mask()
    }

    /// Whether `other` lies entirely inside this prefix (equal prefixes included).
    pub fn contains(&self, other: &Ipv6Cidr) -> bool {
        other.len >= self.len && self.contains_addr(other.addr)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = RecordError;

    /// Parses `addr/len`, refusing host bits and lengths over 128.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s
            .split_once('/')
            .ok_or(RecordError::Invalid("prefix lacks '/len'"))?;
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| RecordError::Invalid("prefix address is not IPv6"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| RecordError::Invalid("prefix length is not a number"))?;
        Ipv6Cidr::new(addr, len)
    }
}

/// Whether `name` is a valid node name: 1..=253 bytes of `[A-Za-z0-9._-]`.
pub fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NODE_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl NodeRecord {
    /// Encodes the record as the chitchat value: base64 (standard alphabet, no padding) of
    /// `[FORMAT_MAJOR][FORMAT_MINOR][postcard body][postcard FamiliesV1]`. A minor-0 reader
    /// reads the body and ignores the rest.
    pub fn encode(&self) -> String {
        // Serializing owned, plain data into a Vec cannot fail: postcard only errors on a full
        // fixed buffer or on types it does not support, and these types are fixed at compile time.
        let bytes = postcard::to_extend(self, vec![FORMAT_MAJOR, FORMAT_MINOR])
            .expect("postcard serialization of NodeRecord into a Vec cannot fail");
        let bytes = postcard::to_extend(&self.families, bytes)
            .expect("postcard serialization of FamiliesV1 into a Vec cannot fail");
        STANDARD_NO_PAD.encode(bytes)
    }

    /// Decodes a chitchat value produced by [`NodeRecord::encode`] (of this or any newer minor
    /// format: bytes after the body this version knows are ignored). Does not call
    /// [`NodeRecord::validate`]; callers must.
    pub fn decode(s: &str) -> Result<NodeRecord, RecordError> {
        if s.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong(s.len()));
        }
        let bytes = STANDARD_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| RecordError::Base64)?;
        let [major, minor, body @ ..] = bytes.as_slice() else {
            return Err(RecordError::Truncated);
        };
        if *major != FORMAT_MAJOR {
            return Err(RecordError::UnsupportedVersion(*major));
        }
        let (mut record, rest) =
            postcard::take_from_bytes::<NodeRecord>(body).map_err(RecordError::Body)?;
        if *minor >= 1 {
            // Minor 1's fields are required in a minor ≥ 1 record; what newer minors append
            // after them is ignored.
            let (families, _newer) =
                postcard::take_from_bytes::<FamiliesV1>(rest).map_err(RecordError::Body)?;
            record.families = families;
        }
        Ok(record)
    }

    /// Checks that need no context (no peer view, no configuration). Errors are
    /// [`RecordError::Field`], naming the field.
    pub fn validate(&self) -> Result<(), RecordError> {
        self.validate_in(Scope::Network)
    }

    /// [`NodeRecord::validate`], where `scope` says whether loopback underlay addresses are
    /// acceptable: only in a mesh whose every agent shares one machine's loopback (the
    /// simulator and `--dry-run` test meshes), never on a real network.
    pub fn validate_in(&self, scope: Scope) -> Result<(), RecordError> {
        if !is_valid_node_name(&self.node_name) {
            return Err(field(
                "node_name",
                "must be 1..=253 bytes of [A-Za-z0-9._-]",
            ));
        }
        match bad_underlay_ip(self.underlay_ip) {
            Some(_) if scope == Scope::Loopback && self.underlay_ip.is_loopback() => {}
            Some(why) => return Err(field("underlay_ip", why)),
            None => {}
        }
        if self.network.len > 32 {
            return Err(field("network", "prefix length over 32"));
        }
        if self.network.validate().is_err() {
            return Err(field("network", "prefix address has host bits set"));
        }
        if let Some(subnet) = &self.subnet {
            if subnet.len > 32 {
                return Err(field("subnet", "prefix length over 32"));
            }
            if subnet.validate().is_err() {
                return Err(field("subnet", "not aligned: host bits set"));
            }
            if !self.network.contains(subnet) {
                return Err(field("subnet", "not inside the network"));
            }
            if self.claim_time_ms > MAX_CLAIM_TIME_MS {
                return Err(field("claim_time", "beyond 2^53 - 1 ms"));
            }
        }
        if !self.families.ipv4 && self.subnet.is_some() {
            return Err(field("subnet", "an IPv4 subnet from an IPv6-only node"));
        }
        if !self.families.ipv4 && self.families.ipv6.is_none() {
            return Err(field("families", "neither IPv4 nor IPv6"));
        }
        if let Some(v6) = &self.families.ipv6 {
            if v6.network.validate().is_err() {
                return Err(field("ipv6_network", "prefix over 128 or host bits set"));
            }
            if let Some(subnet) = &v6.subnet {
                if subnet.validate().is_err() {
                    return Err(field("ipv6_subnet", "not aligned: host bits set"));
                }
                if !v6.network.contains(subnet) {
                    return Err(field("ipv6_subnet", "not inside the IPv6 network"));
                }
                if self.claim_time_ms > MAX_CLAIM_TIME_MS {
                    return Err(field("claim_time", "beyond 2^53 - 1 ms"));
                }
            }
            if let Some(ip) = v6.underlay_ip {
                match bad_underlay_ip(IpAddr::V6(ip)) {
                    Some(_) if scope == Scope::Loopback && ip.is_loopback() => {}
                    Some(why) => return Err(field("ipv6_underlay_ip", why)),
                    None if ip.to_ipv4_mapped().is_some() => {
                        return Err(field("ipv6_underlay_ip", "an IPv4-mapped address"));
                    }
                    None => {}
                }
            }
        }
        if self.backend == Backend::Vxlan {
            if self.vtep_mac[0] & 1 != 0 {
                return Err(field("vtep_mac", "not unicast"));
            }
            if self.vtep_mac == [0; 6] {
                return Err(field("vtep_mac", "all zero"));
            }
            if self.vni > MAX_VNI {
                return Err(field("vni", "over 24 bits"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> NodeRecord {
        NodeRecord {
            node_name: "node-1".into(),
            underlay_ip: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 10)),
            backend: Backend::Vxlan,
            network: Ipv4Cidr::new(Ipv4Addr::new(10, 244, 0, 0), 16).unwrap(),
            vni: 1,
            subnet: Some(Ipv4Cidr::new(Ipv4Addr::new(10, 244, 3, 0), 24).unwrap()),
            claim_time_ms: 1_700_000_000_000,
            state: ClaimState::Active,
            vtep_mac: [0x0a, 0x58, 0x0a, 0xf4, 0x03, 0x00],
            tunnel_port: 8472,
            public_key: None,
            families: FamiliesV1::default(),
        }
    }

    #[test]
    fn round_trip_sample() {
        let r = sample();
        let s = r.encode();
        assert!(s.len() <= MAX_RECORD_LEN);
        assert_eq!(NodeRecord::decode(&s), Ok(r.clone()));
        assert_eq!(r.validate(), Ok(()));
    }

    #[test]
    fn trailing_extension_bytes_are_ignored() {
        let r = sample();
        let mut bytes = STANDARD_NO_PAD.decode(r.encode()).unwrap();
        bytes[1] = 7; // a newer minor
        bytes.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0x01]);
        let s = STANDARD_NO_PAD.encode(&bytes);
        assert_eq!(NodeRecord::decode(&s), Ok(r));
    }

    #[test]
    fn unknown_major_is_refused() {
        let mut bytes = STANDARD_NO_PAD.decode(sample().encode()).unwrap();
        bytes[0] = 2;
        let s = STANDARD_NO_PAD.encode(&bytes);
        assert_eq!(
            NodeRecord::decode(&s),
            Err(RecordError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert_eq!(NodeRecord::decode(""), Err(RecordError::Truncated));
        assert_eq!(NodeRecord::decode("AQ"), Err(RecordError::Truncated));
        assert_eq!(NodeRecord::decode("not base64!"), Err(RecordError::Base64));
        // Padding is not part of the format.
        assert_eq!(NodeRecord::decode("AQA="), Err(RecordError::Base64));
        assert!(matches!(
            NodeRecord::decode("AQA"),
            Err(RecordError::Body(_))
        ));
        let long = "A".repeat(MAX_RECORD_LEN + 1);
        assert_eq!(
            NodeRecord::decode(&long),
            Err(RecordError::TooLong(MAX_RECORD_LEN + 1))
        );
        // A truncated body fails.
        let s = sample().encode();
        let bytes = STANDARD_NO_PAD.decode(&s).unwrap();
        for cut in 2..bytes.len() {
            let t = STANDARD_NO_PAD.encode(&bytes[..cut]);
            assert!(NodeRecord::decode(&t).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn validation() {
        let ok = sample();
        let check = |f: &dyn Fn(&mut NodeRecord)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate()
        };
        assert!(check(&|r| r.node_name = String::new()).is_err());
        assert!(check(&|r| r.node_name = "a".repeat(254)).is_err());
        assert!(check(&|r| r.node_name = "a".repeat(253)).is_ok());
        assert!(check(&|r| r.node_name = "bad name".into()).is_err());
        assert!(check(&|r| r.node_name = "bad/name".into()).is_err());
        assert!(check(&|r| r.node_name = "Host_1.example-a".into()).is_ok());
        assert!(check(&|r| r.node_name = "nœud".into()).is_err());
        assert!(check(&|r| r.underlay_ip = "0.0.0.0".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "224.0.0.1".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "255.255.255.255".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "::".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "ff02::1".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "fd00::1".parse().unwrap()).is_ok());
        assert!(check(&|r| r.underlay_ip = "127.0.0.1".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "127.3.2.1".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "::1".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "::ffff:127.0.0.1".parse().unwrap()).is_err());
        assert!(check(&|r| r.underlay_ip = "::ffff:10.0.0.1".parse().unwrap()).is_ok());
        assert!(check(&|r| r.vni = MAX_VNI + 1).is_err());
        assert!(check(&|r| r.vni = MAX_VNI).is_ok());
        assert!(check(&|r| r.network.len = 33).is_err());
        assert!(check(&|r| r.network.len = 8).is_err()); // 10.244.0.0/8 has host bits
        assert!(check(&|r| r.subnet = None).is_ok());
        assert!(check(&|r| r.subnet = Some("10.245.3.0/24".parse().unwrap())).is_err());
        assert!(
            check(&|r| r.subnet = Some(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 3, 1),
                len: 24
            }))
            .is_err()
        );
        assert!(check(&|r| r.subnet = Some("10.0.0.0/8".parse().unwrap())).is_err());
        assert!(check(&|r| r.subnet = Some("10.244.0.0/16".parse().unwrap())).is_ok());
        assert!(check(&|r| r.vtep_mac = [0; 6]).is_err());
        assert!(check(&|r| r.vtep_mac = [1, 0, 0, 0, 0, 1]).is_err());
        assert!(
            check(&|r| {
                r.backend = Backend::HostGw;
                r.vtep_mac = [0; 6];
            })
            .is_ok()
        );
    }

    #[test]
    fn rejection_reasons_name_the_field() {
        let reason = |f: &dyn Fn(&mut NodeRecord)| {
            let mut r = sample();
            f(&mut r);
            r.validate_in(Scope::Network).err().map(|e| e.reason())
        };
        assert_eq!(reason(&|_| {}), None);
        assert_eq!(reason(&|r| r.node_name.clear()), Some("node_name"));
        assert_eq!(
            reason(&|r| r.underlay_ip = "127.0.0.1".parse().unwrap()),
            Some("underlay_ip")
        );
        assert_eq!(reason(&|r| r.network.len = 40), Some("network"));
        // A loopback mesh (every agent on one machine) accepts loopback peers, nothing else.
        let mut r = sample();
        r.underlay_ip = "127.77.0.2".parse().unwrap();
        assert!(r.validate_in(Scope::Loopback).is_ok());
        r.underlay_ip = "0.0.0.0".parse().unwrap();
        assert!(r.validate_in(Scope::Loopback).is_err());
        assert_eq!(
            reason(&|r| r.subnet = Some(Ipv4Cidr {
                addr: Ipv4Addr::new(10, 244, 3, 7),
                len: 24
            })),
            Some("subnet")
        );
        assert_eq!(
            reason(&|r| r.subnet = Some("192.168.0.0/24".parse().unwrap())),
            Some("subnet")
        );
        assert_eq!(reason(&|r| r.vtep_mac = [0xff; 6]), Some("vtep_mac"));
        // Claim stamps are not judged by the reader's clock (a reader whose clock is behind
        // would take every settled claim for one "from the future"), only by an absolute bound.
        assert_eq!(reason(&|r| r.claim_time_ms = 4_000_000_000_000_000), None);
        assert_eq!(reason(&|r| r.claim_time_ms = MAX_CLAIM_TIME_MS), None);
        assert_eq!(
            reason(&|r| r.claim_time_ms = MAX_CLAIM_TIME_MS + 1),
            Some("claim_time")
        );
        // Without a subnet the claim time means nothing.
        assert_eq!(
            reason(&|r| {
                r.subnet = None;
                r.claim_time_ms = u64::MAX;
            }),
            None
        );
        // The IPv6 part (format minor 1).
        let v6 = |f: &dyn Fn(&mut FamiliesV1)| {
            let mut r = sample();
            r.families.ipv6 = Some(Ipv6Overlay {
                network: "fd00:10:244::/56".parse().unwrap(),
                subnet: Some("fd00:10:244:3::/64".parse().unwrap()),
                underlay_ip: Some("2001:db8::a".parse().unwrap()),
            });
            f(&mut r.families);
            r.validate_in(Scope::Network).err().map(|e| e.reason())
        };
        assert_eq!(v6(&|_| {}), None);
        let set_subnet = |s: &str| {
            let s: Ipv6Cidr = s.parse().unwrap();
            move |f: &mut FamiliesV1| f.ipv6.as_mut().unwrap().subnet = Some(s)
        };
        assert_eq!(v6(&set_subnet("fd00:10:245::/64")), Some("ipv6_subnet"));
        assert_eq!(v6(&set_subnet("fd00:10::/48")), Some("ipv6_subnet"));
        assert_eq!(
            v6(&|f| f.ipv6.as_mut().unwrap().subnet = Some(Ipv6Cidr {
                addr: "fd00:10:244:3::1".parse().unwrap(),
                len: 64
            })),
            Some("ipv6_subnet")
        );
        assert_eq!(
            v6(&|f| f.ipv6.as_mut().unwrap().network.len = 129),
            Some("ipv6_network")
        );
        for bad in ["::", "::1", "ff02::1", "::ffff:10.0.0.1"] {
            let ip: Ipv6Addr = bad.parse().unwrap();
            assert_eq!(
                v6(&|f| f.ipv6.as_mut().unwrap().underlay_ip = Some(ip)),
                Some("ipv6_underlay_ip"),
                "{bad}"
            );
        }
        // IPv6-only: no IPv4 subnet may travel with it, and some family must be on.
        assert_eq!(v6(&|f| f.ipv4 = false), Some("subnet"));
        let mut r = sample();
        r.subnet = None;
        r.families.ipv4 = false;
        assert_eq!(r.validate().err().map(|e| e.reason()), Some("families"));
        assert_eq!(RecordError::UnsupportedVersion(2).reason(), "version");
        // Every label validation uses is exported.
        let src = include_str!("record.rs");
        for part in src.split("field(\"").skip(1) {
            let label = &part[..part.find('"').unwrap()];
            assert!(
                REJECT_REASONS.contains(&label),
                "{label} is not in REJECT_REASONS"
            );
        }
        assert_eq!(RecordError::Base64.reason(), "malformed");
        assert_eq!(RecordError::TooLong(3000).reason(), "too_long");
    }

    #[test]
    fn cidr_parse_and_display() {
        let c: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/16");
        assert!("10.244.0.1/16".parse::<Ipv4Cidr>().is_err());
        assert!("10.244.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.244.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("0.0.0.0/0".parse::<Ipv4Cidr>().is_ok());
        assert!("1.2.3.4/32".parse::<Ipv4Cidr>().is_ok());
        assert!(c.contains(&"10.244.255.0/24".parse().unwrap()));
        let c6: Ipv6Cidr = "fd00:10:244::/56".parse().unwrap();
        assert_eq!(c6.to_string(), "fd00:10:244::/56");
        assert!("fd00:10:244::1/56".parse::<Ipv6Cidr>().is_err());
        assert!("fd00::/129".parse::<Ipv6Cidr>().is_err());
        assert!("10.0.0.0/8".parse::<Ipv6Cidr>().is_err());
        assert!("::/0".parse::<Ipv6Cidr>().is_ok());
        assert!(c6.contains(&"fd00:10:244:ff::/64".parse().unwrap()));
        assert!(!c6.contains(&"fd00:10:245::/64".parse().unwrap()));
        assert!(!c.contains(&"10.245.0.0/24".parse().unwrap()));
        assert!(!c.contains(&"10.0.0.0/8".parse().unwrap()));
    }

    pub(crate) fn arb_families() -> impl Strategy<Value = FamiliesV1> {
        let cidr6 = (any::<[u8; 16]>(), any::<u8>()).prop_map(|(a, len)| Ipv6Cidr {
            addr: Ipv6Addr::from(a),
            len,
        });
        let overlay = (
            cidr6.clone(),
            proptest::option::of(cidr6),
            proptest::option::of(any::<[u8; 16]>().prop_map(Ipv6Addr::from)),
        )
            .prop_map(|(network, subnet, underlay_ip)| Ipv6Overlay {
                network,
                subnet,
                underlay_ip,
            });
        (any::<bool>(), proptest::option::of(overlay))
            .prop_map(|(ipv4, ipv6)| FamiliesV1 { ipv4, ipv6 })
    }

    pub(crate) fn arb_record() -> impl Strategy<Value = NodeRecord> {
        let ip = prop_oneof![
            any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
            any::<[u8; 16]>().prop_map(|b| IpAddr::V6(std::net::Ipv6Addr::from(b))),
        ];
        let backend = prop_oneof![
            Just(Backend::Vxlan),
            Just(Backend::HostGw),
            Just(Backend::Udp)
        ];
        let state = prop_oneof![
            Just(ClaimState::Claimed),
            Just(ClaimState::Active),
            Just(ClaimState::Leaving)
        ];
        let cidr = (any::<[u8; 4]>(), any::<u8>()).prop_map(|(a, len)| Ipv4Cidr {
            addr: Ipv4Addr::from(a),
            len,
        });
        (
            "[A-Za-z0-9._-]{1,253}",
            ip,
            backend,
            cidr.clone(),
            any::<u32>(),
            proptest::option::of(cidr),
            any::<u64>(),
            state,
            any::<[u8; 6]>(),
            any::<u16>(),
            proptest::option::of(any::<[u8; 32]>()),
        )
            .prop_flat_map(|t| (Just(t), arb_families()))
            .prop_map(
                |(
                    (
                        node_name,
                        underlay_ip,
                        backend,
                        network,
                        vni,
                        subnet,
                        claim_time_ms,
                        state,
                        vtep_mac,
                        tunnel_port,
                        public_key,
                    ),
                    families,
                )| NodeRecord {
                    node_name,
                    underlay_ip,
                    backend,
                    network,
                    vni,
                    subnet,
                    claim_time_ms,
                    state,
                    vtep_mac,
                    tunnel_port,
                    public_key,
                    families,
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(r in arb_record()) {
            let s = r.encode();
            prop_assert!(s.len() <= MAX_RECORD_LEN);
            prop_assert_eq!(NodeRecord::decode(&s), Ok(r));
        }

        #[test]
        fn prop_round_trip_with_extensions(r in arb_record(), minor in any::<u8>(),
                                           ext in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = STANDARD_NO_PAD.decode(r.encode()).unwrap();
            bytes[1] = minor;
            bytes.extend_from_slice(&ext);
            // A minor-0 reader of the same bytes sees the body only: IPv4 by default.
            let mut expect = r;
            if minor == 0 {
                expect.families = FamiliesV1::default();
            }
            prop_assert_eq!(NodeRecord::decode(&STANDARD_NO_PAD.encode(&bytes)), Ok(expect));
        }

        #[test]
        fn prop_decode_arbitrary_string_never_panics(s in ".{0,3000}") {
            let _ = NodeRecord::decode(&s);
        }

        #[test]
        fn prop_decode_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..1600)
        ) {
            if let Ok(r) = NodeRecord::decode(&STANDARD_NO_PAD.encode(&bytes)) {
                let _ = r.validate();
            }
        }

        #[test]
        fn prop_decode_mutated_never_panics(r in arb_record(), pos in any::<usize>(), val in any::<u8>()) {
            let mut bytes = STANDARD_NO_PAD.decode(r.encode()).unwrap();
            let i = pos % bytes.len();
            bytes[i] = val;
            if let Ok(d) = NodeRecord::decode(&STANDARD_NO_PAD.encode(&bytes)) {
                let _ = d.validate();
            }
        }
    }
}
