//! IP prefixes (`10.0.0.0/8`, `fd00:a::/48`) to draw addresses from.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::rng::SplitMix64;

/// An IPv4 or IPv6 network: an address with all host bits zero and a
/// prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a string is not a [`Prefix`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/`.
    #[error("expected ADDRESS/LENGTH, e.g. 10.0.0.0/8 or fd00:a::/48")]
    MissingLength,
    /// The part before `/` is not an IP address.
    #[error("'{0}' is not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The length is not a number in range for the family.
    #[error("prefix length '{len}' is not in 0..={max}")]
    BadLength {
        /// The length as given.
        len: String,
        /// 32 or 128.
        max: u8,
    },
    /// Bits past the prefix length are set.
    #[error("host bits are set; did you mean {0}?")]
    HostBitsSet(Prefix),
}

impl Prefix {
    /// The network `addr/len`; `None` if `len` is too long for the family or
    /// host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let p = Prefix::new_truncating(addr, len)?;
        (p.addr == addr).then_some(p)
    }

    /// The network containing `addr` with length `len` (host bits cleared);
    /// `None` if `len` is too long for the family.
    pub fn new_truncating(addr: IpAddr, len: u8) -> Option<Prefix> {
        if len > max_len(&addr) {
            return None;
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & !host_mask32(len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !host_mask128(len))),
        };
        Some(Prefix { addr, len })
    }

    /// `addr/len` as given, for constants; the caller guarantees that `len`
    /// fits the family and no host bits are set.
    pub(crate) const fn from_parts(addr: IpAddr, len: u8) -> Prefix {
        Prefix { addr, len }
    }

    /// The network address.
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether this is an IPv6 prefix.
    pub const fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Number of host bits.
    pub fn host_bits(&self) -> u32 {
        u32::from(max_len(&self.addr) - self.len)
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & !host_mask32(self.len) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                u128::from(a) & !host_mask128(self.len) == u128::from(n)
            }
            _ => false,
        }
    }

    /// Whether `ip` is an address [`random_host`](Self::random_host) can
    /// return: inside the prefix and, where the prefix is big enough to
    /// have them, neither the all-zeros host (IPv4 network address, IPv6
    /// subnet-router anycast) nor the IPv4 all-ones broadcast.
    pub fn is_usable_host(&self, ip: IpAddr) -> bool {
        if !self.contains(ip) {
            return false;
        }
        let h = self.host_bits();
        match ip {
            IpAddr::V4(a) => {
                let host = u32::from(a) & host_mask32(self.len);
                h < 2 || (host != 0 && host != host_mask32(self.len))
            }
            IpAddr::V6(a) => h < 1 || u128::from(a) & host_mask128(self.len) != 0,
        }
    }

    /// Number of addresses [`random_host`](Self::random_host) can return,
    /// saturating at `u128::MAX`.
    pub fn usable_hosts(&self) -> u128 {
        let h = self.host_bits();
        match (self.addr, 1u128.checked_shl(h)) {
            (IpAddr::V4(_), Some(all)) if h < 2 => all,
            (IpAddr::V4(_), Some(all)) => all - 2,
            (IpAddr::V6(_), Some(1)) => 1,
            (IpAddr::V6(_), Some(all)) => all - 1,
            // ::/0 holds 2^128 addresses, all but :: usable.
            (_, None) => u128::MAX,
        }
    }

    /// Number of usable hosts that are also usable hosts of `other`.
    pub fn usable_overlap(&self, other: &Prefix) -> u128 {
        // Prefixes either nest or are disjoint.
        let (outer, inner) = if self.len <= other.len {
            (self, other)
        } else {
            (other, self)
        };
        if !outer.contains(inner.addr) {
            return 0;
        }
        if outer.len == inner.len {
            return inner.usable_hosts();
        }
        // Inside a strictly larger prefix, only the inner prefix's own
        // excluded addresses can be the outer's excluded ones too, and the
        // outer network/broadcast address is at most one of the inner's
        // usable ones when the inner prefix is too small to exclude it.
        let candidates = inner.usable_hosts();
        let lost = [inner.first(), inner.last()]
            .into_iter()
            .filter(|&a| inner.is_usable_host(a) && !outer.is_usable_host(a))
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u128;
        candidates - lost
    }

    fn first(&self) -> IpAddr {
        self.addr
    }

    fn last(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) | host_mask32(self.len))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | host_mask128(self.len))),
        }
    }

    /// A uniformly random usable host address (see
    /// [`is_usable_host`](Self::is_usable_host)).
    pub fn random_host(&self, rng: &mut SplitMix64) -> IpAddr {
        loop {
            let ip = match self.addr {
                IpAddr::V4(n) => {
                    let host = rng.next_u32() & host_mask32(self.len);
                    IpAddr::V4(Ipv4Addr::from(u32::from(n) | host))
                }
                IpAddr::V6(n) => {
                    let host = rng.next_u128() & host_mask128(self.len);
                    IpAddr::V6(Ipv6Addr::from(u128::from(n) | host))
                }
            };
            if self.is_usable_host(ip) {
                return ip;
            }
        }
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn host_mask32(len: u8) -> u32 {
    u32::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

fn host_mask128(len: u8) -> u128 {
    u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or(PrefixError::MissingLength)?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| PrefixError::BadAddress(addr.to_owned()))?;
        let max = max_len(&addr);
        let len_num = len
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| PrefixError::BadLength {
                len: len.to_owned(),
                max,
            })?;
        Prefix::new(addr, len_num)
            .ok_or_else(|| PrefixError::HostBitsSet(Prefix::new_truncating(addr, len_num).unwrap()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(p("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(p("fd00:a::/48").to_string(), "fd00:a::/48");
        assert_eq!(p("0.0.0.0/0").host_bits(), 32);
        assert_eq!(p("::/0").host_bits(), 128);
        assert_eq!(
            "10.0.0.0".parse::<Prefix>(),
            Err(PrefixError::MissingLength)
        );
        assert_eq!(
            "10.0.0/8".parse::<Prefix>(),
            Err(PrefixError::BadAddress("10.0.0".into()))
        );
        assert_eq!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::BadLength {
                len: "33".into(),
                max: 32
            })
        );
        assert!(matches!(
            "fd00::/129".parse::<Prefix>(),
            Err(PrefixError::BadLength { max: 128, .. })
        ));
        let e = "10.1.2.3/8".parse::<Prefix>().unwrap_err();
        assert_eq!(e.to_string(), "host bits are set; did you mean 10.0.0.0/8?");
    }

    #[test]
    fn usable_hosts() {
        assert_eq!(p("10.0.0.0/8").usable_hosts(), (1 << 24) - 2);
        assert_eq!(p("10.0.0.0/30").usable_hosts(), 2);
        assert_eq!(p("10.0.0.0/31").usable_hosts(), 2);
        assert_eq!(p("10.0.0.1/32").usable_hosts(), 1);
        assert_eq!(p("fd00:a::/48").usable_hosts(), (1 << 80) - 1);
        assert_eq!(p("fd00::1/128").usable_hosts(), 1);
        assert_eq!(p("::/0").usable_hosts(), u128::MAX);
    }

    #[test]
    fn random_hosts_are_usable_and_exhaustive() {
        let mut rng = SplitMix64::new(1);
        let net = p("192.168.7.0/29");
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..500 {
            let ip = net.random_host(&mut rng);
            assert!(net.is_usable_host(ip), "{ip}");
            seen.insert(ip);
        }
        assert_eq!(seen.len() as u128, net.usable_hosts());
        assert!(!seen.contains(&"192.168.7.0".parse().unwrap()));
        assert!(!seen.contains(&"192.168.7.7".parse().unwrap()));

        let net6 = p("fd00:a::/126");
        let seen6: std::collections::BTreeSet<_> =
            (0..200).map(|_| net6.random_host(&mut rng)).collect();
        assert_eq!(seen6.len(), 3);
        assert_eq!(
            p("10.0.0.5/32").random_host(&mut rng),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn overlap() {
        assert_eq!(p("10.0.0.0/8").usable_overlap(&p("172.16.0.0/12")), 0);
        assert_eq!(
            p("10.0.0.0/8").usable_overlap(&p("10.1.0.0/16")),
            (1 << 16) - 2
        );
        assert_eq!(
            p("10.1.0.0/16").usable_overlap(&p("10.0.0.0/8")),
            (1 << 16) - 2
        );
        assert_eq!(p("10.0.0.0/24").usable_overlap(&p("10.0.0.0/24")), 254);
        // 10.0.0.0/31 holds 10.0.0.0 (unusable in the /24) and 10.0.0.1.
        assert_eq!(p("10.0.0.0/24").usable_overlap(&p("10.0.0.0/31")), 1);
        assert_eq!(p("10.0.0.0/24").usable_overlap(&p("10.0.0.255/32")), 0);
        assert_eq!(p("10.0.0.0/24").usable_overlap(&p("10.0.0.9/32")), 1);
        assert_eq!(p("10.0.0.0/8").usable_overlap(&p("fd00::/8")), 0);
    }
}
