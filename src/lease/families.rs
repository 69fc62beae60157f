//! The IPv6 half of a claim: a node's IPv6 subnet is the one at the same index in the IPv6
//! network as its IPv4 subnet in the IPv4 network (10.244.3.0/24 in 10.244.0.0/16 goes with
//! fd00:10:244:3::/64 in fd00:10:244::/56), so one claim, settled by one rule, covers both
//! families and no second contest can disagree with the first.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use ipnet::{Ipv4Net, Ipv6Net};

/// The IPv6 overlay a node runs: flannel's `IPv6Network`, `IPv6SubnetLen`, `IPv6SubnetMin` and
/// `IPv6SubnetMax`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Pool {
    pub network: Ipv6Net,
    pub subnet_len: u8,
    /// First subnet that may be claimed (default: the network's second subnet).
    pub subnet_min: Ipv6Addr,
    /// Last subnet that may be claimed (default: the network's last subnet).
    pub subnet_max: Ipv6Addr,
}

/// The index of `subnet` (a `/subnet_len`) inside `network`: 10.244.3.0/24 in 10.244.0.0/16 is 3.
/// `None` when it is not such a subnet of `network`.
pub fn ipv4_index(network: Ipv4Net, subnet: Ipv4Net) -> Option<u64> {
    if !network.contains(&subnet) || subnet.prefix_len() <= network.prefix_len() {
        return None;
    }
    let offset = u32::from(subnet.network()) - u32::from(network.network());
    Some(u64::from(offset >> (32 - u32::from(subnet.prefix_len()))))
}

/// The indices of the claimable IPv4 subnets `min..=max` (addresses of `/subnet_len` subnets).
pub fn ipv4_index_range(
    network: Ipv4Net,
    subnet_len: u8,
    min: Ipv4Addr,
    max: Ipv4Addr,
) -> Option<RangeInclusive<u64>> {
    let at = |addr| ipv4_index(network, Ipv4Net::new(addr, subnet_len).ok()?.trunc());
    Some(at(min)?..=at(max)?)
}

impl Ipv6Pool {
    /// How many bits a subnet index has (subnet length − network length).
    fn index_bits(&self) -> u32 {
        u32::from(self.subnet_len.saturating_sub(self.network.prefix_len()))
    }

    /// The subnet at `index`, if the network has that many.
    pub fn subnet_at(&self, index: u64) -> Option<Ipv6Net> {
        let bits = self.index_bits();
        if bits < 64 && index >> bits != 0 {
            return None;
        }
        let shift = 128 - u32::from(self.subnet_len);
        let offset = u128::from(index).checked_shl(shift)?;
        let addr = u128::from(self.network.network()).checked_add(offset)?;
        Ipv6Net::new(Ipv6Addr::from(addr), self.subnet_len).ok()
    }

    /// The index of `subnet` in the network; `None` when it is not one of its `/subnet_len`s or
    /// the index does not fit 64 bits.
    pub fn index_of(&self, subnet: Ipv6Net) -> Option<u64> {
        if subnet.prefix_len() != self.subnet_len || !self.network.contains(&subnet) {
            return None;
        }
        let offset = u128::from(subnet.network()) - u128::from(self.network.network());
        u64::try_from(offset >> (128 - u32::from(self.subnet_len))).ok()
    }

    /// The indices of the claimable subnets (`subnet_min..=subnet_max`).
    pub fn index_range(&self) -> Option<RangeInclusive<u64>> {
        let at = |addr| self.index_of(Ipv6Net::new(addr, self.subnet_len).ok()?.trunc());
        Some(at(self.subnet_min)?..=at(self.subnet_max)?)
    }

    /// The IPv6 subnet claimed together with the IPv4 `subnet` of `network`: the same index,
    /// when it lies in this pool's claimable range.
    pub fn paired_with(&self, network: Ipv4Net, subnet: Ipv4Net) -> Option<Ipv6Net> {
        let index = ipv4_index(network, subnet)?;
        self.index_range()?
            .contains(&index)
            .then(|| self.subnet_at(index))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(network: &str, len: u8) -> Ipv6Pool {
        let network: Ipv6Net = network.parse().unwrap();
        let last = Ipv6Pool {
            network,
            subnet_len: len,
            subnet_min: network.network(),
            subnet_max: network.network(),
        };
        let count_bits = u32::from(len - network.prefix_len()).min(63);
        Ipv6Pool {
            subnet_min: last.subnet_at(1).unwrap().network(),
            subnet_max: last.subnet_at((1u64 << count_bits) - 1).unwrap().network(),
            ..last
        }
    }

    #[test]
    fn the_ipv6_subnet_has_the_ipv4_subnets_index() {
        let v4: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let p = pool("fd00:10:244::/56", 64);
        let pair = |s: &str| p.paired_with(v4, s.parse().unwrap()).map(|n| n.to_string());
        assert_eq!(pair("10.244.3.0/24").as_deref(), Some("fd00:10:244:3::/64"));
        assert_eq!(
            pair("10.244.255.0/24").as_deref(),
            Some("fd00:10:244:ff::/64")
        );
        // Index 0 is below the default minimum, as the IPv4 network's first subnet is.
        assert_eq!(pair("10.244.0.0/24"), None);
        // Not a subnet of the IPv4 network.
        assert_eq!(pair("10.245.3.0/24"), None);
    }

    #[test]
    fn indices_round_trip_and_out_of_range_is_none() {
        let p = pool("fd00:10:244::/56", 64);
        for i in [1u64, 2, 17, 255] {
            let s = p.subnet_at(i).unwrap();
            assert_eq!(p.index_of(s), Some(i));
        }
        assert_eq!(p.subnet_at(256), None);
        assert_eq!(p.index_of("fd00:10:245::/64".parse().unwrap()), None);
        assert_eq!(p.index_of("fd00:10:244:3::/80".parse().unwrap()), None);
        assert_eq!(p.index_range(), Some(1..=255));
    }

    #[test]
    fn a_smaller_ipv6_range_leaves_the_larger_ipv4_indices_unpaired() {
        let v4: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let p = pool("fd00::/60", 64); // 16 subnets
        assert!(p.paired_with(v4, "10.0.15.0/24".parse().unwrap()).is_some());
        assert_eq!(p.paired_with(v4, "10.0.16.0/24".parse().unwrap()), None);
    }

    #[test]
    fn wide_pools_do_not_overflow() {
        let p = pool("fd00::/8", 124);
        let last = p.subnet_at(u64::MAX >> 1).unwrap();
        assert_eq!(p.index_of(last), Some(u64::MAX >> 1));
        let v4: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            p.paired_with(v4, "10.0.0.16/28".parse().unwrap())
                .map(|n| n.to_string())
                .as_deref(),
            Some("fd00::10/124")
        );
        assert_eq!(
            ipv4_index_range(
                v4,
                24,
                "10.0.1.0".parse().unwrap(),
                "10.255.255.0".parse().unwrap()
            ),
            Some(1..=65535)
        );
    }
}
