//! Flow keys: one canonical, direction-independent key per connection, so both directions of a flow find the
//! same table entry with one hash and one probe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use net::icmpv4::{self, Icmpv4Packet};
use net::icmpv6::{self, Icmpv6Packet};
use net::ipv4::Ipv4Packet;
use net::ipv6::Ipv6Packet;
use net::{IpProtocol, Parsed, L3, L4};

/// Bit of [`FlowKey`]'s VLAN field that marks an IPv6 flow. VLAN ids are 12 bits, so the bit is free; keeping
/// the family in the key means an IPv6 packet with an IPv4-mapped address (`::ffff:a.b.c.d`) can never match an
/// IPv4 flow.
pub(super) const FAMILY_V6: u16 = 0x8000;
const VLAN_MASK: u16 = 0x0fff;

/// Which endpoint of a [`FlowKey`] a packet's source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The lower `(address, port)` endpoint.
    First,
    /// The higher `(address, port)` endpoint.
    Second,
}

impl Side {
    /// The other endpoint.
    pub const fn other(self) -> Side {
        match self {
            Side::First => Side::Second,
            Side::Second => Side::First,
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// Direction of a packet relative to its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The direction of the flow's first packet (client to server).
    Original = 0,
    /// The other direction.
    Reply = 1,
}

impl Dir {
    /// Both directions, in index order.
    pub const BOTH: [Dir; 2] = [Dir::Original, Dir::Reply];

    /// 0 for [`Dir::Original`], 1 for [`Dir::Reply`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The opposite direction.
    pub const fn reverse(self) -> Dir {
        match self {
            Dir::Original => Dir::Reply,
            Dir::Reply => Dir::Original,
        }
    }

    /// Short name, stable for labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dir::Original => "original",
            Dir::Reply => "reply",
        }
    }
}

/// The canonical key of a flow: both endpoints in a fixed order (lower `(address, port)` first), the protocol,
/// the outer VLAN id and the address family. Addresses are 16 bytes (IPv4-mapped for IPv4), so one table
/// serves both families. ICMP echo flows use the echo identifier as the port of both endpoints; protocols
/// without ports use 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub(super) addrs: [[u8; 16]; 2],
    pub(super) ports: [u16; 2],
    /// VLAN id in the low 12 bits, [`FAMILY_V6`] in bit 15.
    pub(super) vlan: u16,
    pub(super) proto: u8,
}

impl FlowKey {
    /// All zero: a placeholder no packet produces (IPv4 keys hold IPv4-mapped addresses, IPv6 keys the family
    /// bit).
    pub(crate) const ZERO: FlowKey = FlowKey {
        addrs: [[0; 16]; 2],
        ports: [0; 2],
        vlan: 0,
        proto: 0,
    };

    /// The key of `src:sport -> dst:dport`, addresses as big-endian numbers (so numeric order is the byte
    /// order of the canonical form), and which endpoint the source is. Integer arithmetic only: building the
    /// key byte by byte through the stack cost store-forwarding stalls on the fast path.
    #[inline(always)]
    fn from_words(
        src: u128,
        sport: u16,
        dst: u128,
        dport: u16,
        proto: u8,
        vlan: u16,
    ) -> (FlowKey, Side) {
        let (lo, hi, ports, side) = if (src, sport) <= (dst, dport) {
            (src, dst, [sport, dport], Side::First)
        } else {
            (dst, src, [dport, sport], Side::Second)
        };
        let key = FlowKey {
            addrs: [lo.to_be_bytes(), hi.to_be_bytes()],
            ports,
            vlan,
            proto,
        };
        (key, side)
    }

    /// The key as three words, for hashing: both addresses (big-endian numbers) and the rest packed.
    #[inline(always)]
    pub(super) fn words(&self) -> (u128, u128, u64) {
        words_of(&self.addrs, self.ports, self.vlan, self.proto)
    }

    /// The key of an IPv4 packet `src:sport -> dst:dport`, and which endpoint its source is.
    #[inline]
    pub fn v4(
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        proto: u8,
        vlan: u16,
    ) -> (FlowKey, Side) {
        // `::ffff:a.b.c.d` as a number.
        let mapped = |a: Ipv4Addr| 0xffff_0000_0000 | u128::from(a.to_bits());
        Self::from_words(
            mapped(src),
            sport,
            mapped(dst),
            dport,
            proto,
            vlan & VLAN_MASK,
        )
    }

    /// The key of an IPv6 packet `src:sport -> dst:dport`, and which endpoint its source is.
    #[inline]
    pub fn v6(
        src: Ipv6Addr,
        sport: u16,
        dst: Ipv6Addr,
        dport: u16,
        proto: u8,
        vlan: u16,
    ) -> (FlowKey, Side) {
        Self::from_words(
            src.to_bits(),
            sport,
            dst.to_bits(),
            dport,
            proto,
            (vlan & VLAN_MASK) | FAMILY_V6,
        )
    }

    /// The key of a packet `src:sport -> dst:dport`; `None` if the two addresses are of different families.
    pub fn new(
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        proto: u8,
        vlan: u16,
    ) -> Option<(FlowKey, Side)> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(Self::v4(s, sport, d, dport, proto, vlan)),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(Self::v6(s, sport, d, dport, proto, vlan)),
            _ => None,
        }
    }

    /// Whether this is an IPv6 flow.
    pub const fn is_ipv6(&self) -> bool {
        self.vlan & FAMILY_V6 != 0
    }

    /// Outer VLAN id (0 if untagged).
    pub const fn vlan(&self) -> u16 {
        self.vlan & VLAN_MASK
    }

    /// IP protocol number (upper-layer protocol for IPv6).
    pub const fn proto(&self) -> u8 {
        self.proto
    }

    /// [`endpoint`](Self::endpoint) as stored: the address's bytes (4 for IPv4, 16 for IPv6) and the port.
    #[inline]
    pub fn raw_endpoint(&self, side: Side) -> (&[u8], u16) {
        let raw = &self.addrs[side.index()];
        let bytes = if self.is_ipv6() { &raw[..] } else { &raw[12..] };
        (bytes, self.ports[side.index()])
    }

    /// Address and port (echo identifier for ICMP echo, 0 for port-less protocols) of one endpoint.
    pub fn endpoint(&self, side: Side) -> (IpAddr, u16) {
        let raw = self.addrs[side.index()];
        let addr = if self.is_ipv6() {
            IpAddr::V6(Ipv6Addr::from(raw))
        } else {
            // Built from an IPv4 address, so always mapped.
            let v6 = Ipv6Addr::from(raw);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        };
        (addr, self.ports[side.index()])
    }
}

/// Hash words of a key given field by field (see [`FlowKey::words`]); also used on stored entries.
#[inline(always)]
pub(super) fn words_of(
    addrs: &[[u8; 16]; 2],
    ports: [u16; 2],
    vlan: u16,
    proto: u8,
) -> (u128, u128, u64) {
    (
        u128::from_be_bytes(addrs[0]),
        u128::from_be_bytes(addrs[1]),
        u64::from(ports[0])
            | (u64::from(ports[1]) << 16)
            | (u64::from(vlan) << 32)
            | (u64::from(proto) << 48),
    )
}

/// The outer VLAN id of a frame, 0 if untagged.
#[inline(always)]
fn outer_vlan(p: &Parsed) -> u16 {
    p.vlans[0].unwrap_or(0)
}

/// The key of a tracked packet and the side its source is on: TCP and UDP by ports, ICMP/ICMPv6 echo by
/// identifier, other IP protocols with ports 0. `None` for what is not keyed this way: non-IP frames,
/// non-first fragments (no transport header), and ICMP messages other than echo (errors are keyed by what
/// they quote, see [`quoted_key`]).
#[inline]
pub fn packet_key(p: &Parsed) -> Option<(FlowKey, Side)> {
    let (sport, dport) = match p.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        L4::Icmp { ident, .. } | L4::Icmpv6 { ident, .. } => {
            let id = ident?;
            (id, id)
        }
        L4::None => {
            p.l4_offset?;
            (0, 0)
        }
    };
    let vlan = outer_vlan(p);
    match p.l3 {
        L3::Ipv4 {
            src, dst, proto, ..
        } => Some(FlowKey::v4(src, sport, dst, dport, proto.0, vlan)),
        L3::Ipv6 { src, dst, next, .. } => Some(FlowKey::v6(src, sport, dst, dport, next.0, vlan)),
        _ => None,
    }
}

/// Ports of a quoted transport header as keyed by [`packet_key`]; `None` for what can have no flow (ICMP
/// messages other than echo, among them errors about errors) or a quote too short to tell.
fn quoted_ports(proto: IpProtocol, l4: &[u8], v6: bool) -> Option<(u16, u16)> {
    let be16 =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*l4.get(i)?, *l4.get(i + 1)?])) };
    match proto {
        IpProtocol::TCP | IpProtocol::UDP => Some((be16(0)?, be16(2)?)),
        IpProtocol::ICMP if !v6 => {
            let id = be16(4)?;
            icmpv4::is_echo(*l4.first()?).then_some((id, id))
        }
        IpProtocol::ICMPV6 if v6 => {
            let id = be16(4)?;
            icmpv6::is_echo(*l4.first()?).then_some((id, id))
        }
        _ => Some((0, 0)),
    }
}

/// Where the IP packet of `p` ends in `frame` (excluding Ethernet padding), as validated by the parser.
pub(super) fn ip_end(frame: &[u8], p: &Parsed) -> Option<usize> {
    let at = |i: usize| -> Option<usize> {
        Some(usize::from(u16::from_be_bytes([
            *frame.get(i)?,
            *frame.get(i + 1)?,
        ])))
    };
    let end = match p.l3 {
        L3::Ipv4 { .. } => p.l3_offset + at(p.l3_offset + 2)?,
        L3::Ipv6 { .. } => p.l3_offset + 40 + at(p.l3_offset + 4)?,
        _ => return None,
    };
    (end <= frame.len()).then_some(end)
}

/// The transport-layer bytes of `frame` (header and payload, without padding).
pub(super) fn l4_bytes<'a>(frame: &'a [u8], p: &Parsed) -> Option<&'a [u8]> {
    frame.get(p.l4_offset?..ip_end(frame, p)?)
}

/// For an ICMP or ICMPv6 error, the key of the flow whose packet it quotes and the side that packet came from.
///
/// The quote must be a whole IP header of the same family plus the start of a first fragment's transport
/// header, and the error must be addressed to the quoted packet's source (errors go back to the sender of the
/// offending packet). The outer VLAN is the flow's. `None` if any of that fails.
pub fn quoted_key(frame: &[u8], p: &Parsed) -> Option<(FlowKey, Side)> {
    let msg = l4_bytes(frame, p)?;
    let vlan = outer_vlan(p);
    match (p.l3, p.l4) {
        (L3::Ipv4 { dst, .. }, L4::Icmp { .. }) => {
            let m = Icmpv4Packet::new_checked(msg).ok()?;
            let ip = Ipv4Packet::new_checked_quoted(m.quoted()?).ok()?;
            if ip.src_addr() != dst || ip.frag_offset() != 0 {
                return None;
            }
            let (sport, dport) = quoted_ports(ip.protocol(), ip.payload(), false)?;
            let (src, qdst, proto) = (ip.src_addr(), ip.dst_addr(), ip.protocol().0);
            Some(FlowKey::v4(src, sport, qdst, dport, proto, vlan))
        }
        (L3::Ipv6 { dst, .. }, L4::Icmpv6 { .. }) => {
            let m = Icmpv6Packet::new_checked(msg).ok()?;
            let ip = Ipv6Packet::new_checked_quoted(m.quoted()?).ok()?;
            if ip.src_addr() != dst {
                return None;
            }
            let walk = ip.walk_extension_headers().ok()?;
            if walk.fragment.is_some_and(|f| !f.is_first()) {
                return None;
            }
            let l4 = ip.payload().get(walk.upper_offset.checked_sub(40)?..)?;
            let (sport, dport) = quoted_ports(walk.upper_protocol, l4, true)?;
            let (src, qdst, proto) = (ip.src_addr(), ip.dst_addr(), walk.upper_protocol.0);
            Some(FlowKey::v6(src, sport, qdst, dport, proto, vlan))
        }
        _ => None,
    }
}
