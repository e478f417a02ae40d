//! What IPv4 and IPv6 share: the protocol number space, fragment info, and the pseudo header that
//! transport checksums cover.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::checksum;
use crate::error::EmitError;

/// An IP protocol / IPv6 next-header number. A newtype rather than an enum
/// so unknown values round-trip losslessly.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 hop-by-hop options.
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    /// ICMP for IPv4.
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP.
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP.
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 routing header.
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 fragment header.
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// Encapsulating security payload.
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication header.
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMP for IPv6.
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 "no next header".
    pub const IPV6_NONXT: IpProtocol = IpProtocol(59);
    /// IPv6 destination options.
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);

    /// Short lowercase name for known values.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0 => "hopopt",
            1 => "icmp",
            6 => "tcp",
            17 => "udp",
            43 => "ipv6_route",
            44 => "ipv6_frag",
            50 => "esp",
            51 => "ah",
            58 => "icmpv6",
            59 => "ipv6_nonxt",
            60 => "ipv6_opts",
            _ => return None,
        })
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpProtocol({self})")
    }
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        IpProtocol(v)
    }
}

impl From<IpProtocol> for u8 {
    fn from(v: IpProtocol) -> Self {
        v.0
    }
}

/// Fragmentation info of an IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fragment {
    /// Offset of this fragment's data in bytes.
    pub offset: u16,
    /// More-fragments flag.
    pub more: bool,
    /// Identification shared by all fragments of a datagram (16 bits for
    /// IPv4, 32 for IPv6).
    pub ident: u32,
}

impl Fragment {
    /// Whether this fragment carries the upper-layer header.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Partial sum of the IPv4 pseudo header used by TCP and UDP (RFC 793/768).
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, len: u16) -> u32 {
    let s = src.octets();
    let d = dst.octets();
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(proto.0),
        len,
    ];
    checksum::fold(words.iter().map(|&w| u32::from(w)).sum()).into()
}

/// Partial sum of the IPv6 pseudo header (RFC 8200 section 8.1).
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: IpProtocol, len: u32) -> u32 {
    let mut acc = checksum::combine(checksum::sum(&src.octets()), checksum::sum(&dst.octets()));
    acc = checksum::combine(acc, (len >> 16) + (len & 0xffff));
    checksum::combine(acc, u32::from(next_header.0))
}

/// The source and destination of an IP packet: what a transport checksum's pseudo header covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpAddrs {
    /// IPv4 source and destination.
    V4 {
        /// Source.
        src: Ipv4Addr,
        /// Destination.
        dst: Ipv4Addr,
    },
    /// IPv6 source and destination.
    V6 {
        /// Source.
        src: Ipv6Addr,
        /// Destination.
        dst: Ipv6Addr,
    },
}

impl IpAddrs {
    /// The pair, or `None` if the families differ.
    pub fn new(src: IpAddr, dst: IpAddr) -> Option<IpAddrs> {
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => Some(IpAddrs::V4 { src, dst }),
            (IpAddr::V6(src), IpAddr::V6(dst)) => Some(IpAddrs::V6 { src, dst }),
            _ => None,
        }
    }

    /// Source address.
    pub fn src(&self) -> IpAddr {
        match *self {
            IpAddrs::V4 { src, .. } => src.into(),
            IpAddrs::V6 { src, .. } => src.into(),
        }
    }

    /// Destination address.
    pub fn dst(&self) -> IpAddr {
        match *self {
            IpAddrs::V4 { dst, .. } => dst.into(),
            IpAddrs::V6 { dst, .. } => dst.into(),
        }
    }

    /// Whether this is IPv6.
    pub const fn is_ipv6(&self) -> bool {
        matches!(self, IpAddrs::V6 { .. })
    }

    /// Source and destination swapped: the addresses of an answer.
    pub const fn reversed(&self) -> IpAddrs {
        match *self {
            IpAddrs::V4 { src, dst } => IpAddrs::V4 { src: dst, dst: src },
            IpAddrs::V6 { src, dst } => IpAddrs::V6 { src: dst, dst: src },
        }
    }

    /// Partial sum of the pseudo header for a `len`-byte upper-layer packet of protocol `proto`, or
    /// [`EmitError::TooLong`] if `len` does not fit the pseudo header's length field.
    pub fn pseudo_header(&self, proto: IpProtocol, len: usize) -> Result<u32, EmitError> {
        let too_long = |_| EmitError::TooLong(len);
        Ok(match *self {
            IpAddrs::V4 { src, dst } => {
                pseudo_header_v4(src, dst, proto, u16::try_from(len).map_err(too_long)?)
            }
            IpAddrs::V6 { src, dst } => {
                pseudo_header_v6(src, dst, proto, u32::try_from(len).map_err(too_long)?)
            }
        })
    }
}

#[cfg(test)]
mod tests;
