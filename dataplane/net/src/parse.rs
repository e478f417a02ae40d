//! The per-packet parser the dataplane runs on every received frame.
//!
//! One pass, no allocation, no panics: it validates exactly what later
//! stages rely on (lengths and offsets), extracts the fields flow lookup
//! and policy need into a small `Copy` value, and reports any malformed
//! input with a precise [`ParseError`] suitable as a drop-counter label.
//! It does not verify checksums (NICs usually do) or TCP options.

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::ethernet::EtherType;
use crate::ip::{Fragment, IpProtocol};
use crate::ipv6::{walk_extension_headers, Ipv6WalkError};
use crate::tcp::TcpFlags;
use crate::{icmpv4, icmpv6};

/// The network layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    /// IPv4.
    Ipv4 {
        /// Source address.
        src: Ipv4Addr,
        /// Destination address.
        dst: Ipv4Addr,
        /// Payload protocol.
        proto: IpProtocol,
        /// `Some` if the packet is any fragment (MF set or offset != 0).
        frag: Option<Fragment>,
        /// Time to live.
        ttl: u8,
    },
    /// IPv6.
    Ipv6 {
        /// Source address.
        src: Ipv6Addr,
        /// Destination address.
        dst: Ipv6Addr,
        /// Upper-layer protocol after the extension headers.
        next: IpProtocol,
        /// `Some` if a fragment header was present.
        frag: Option<Fragment>,
    },
    /// Ethernet/IPv4 ARP; the parser has checked that an
    /// [`ArpPacket`](crate::arp::ArpPacket) at `l3_offset` is valid.
    Arp,
    /// Any other EtherType, not looked into.
    Other(EtherType),
}

/// The transport layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Control bits.
        flags: TcpFlags,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Receive window (unscaled).
        window: u16,
        /// Bytes of segment data in this packet.
        payload_len: u16,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP over IPv4.
    Icmp {
        /// Message type.
        ty: u8,
        /// Message code.
        code: u8,
        /// Identifier of echo requests/replies.
        ident: Option<u16>,
    },
    /// ICMPv6.
    Icmpv6 {
        /// Message type.
        ty: u8,
        /// Message code.
        code: u8,
        /// Identifier of echo requests/replies.
        ident: Option<u16>,
    },
    /// No transport header: a non-first fragment, an unknown protocol, or
    /// not IP at all.
    None,
}

/// Everything the dataplane needs from one frame, by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Parsed {
    /// Outer and inner VLAN ids, in wire order.
    pub vlans: [Option<u16>; 2],
    /// The innermost EtherType (after any VLAN tags).
    pub ethertype: EtherType,
    /// Where the network header starts in the frame.
    pub l3_offset: usize,
    /// Network layer.
    pub l3: L3,
    /// Where the transport header starts, if this packet contains it (IP,
    /// not a non-first fragment; set even for protocols not decoded in
    /// [`L4`]).
    pub l4_offset: Option<usize>,
    /// Transport layer.
    pub l4: L4,
}

impl Parsed {
    /// A placeholder (an empty frame of EtherType 0), e.g. to initialize an
    /// array that [`parse_into`] fills.
    pub const EMPTY: Parsed = Parsed {
        vlans: [None; 2],
        ethertype: EtherType(0),
        l3_offset: 0,
        l3: L3::Other(EtherType(0)),
        l4_offset: None,
        l4: L4::None,
    };

    /// Number of VLAN tags (0, 1 or 2).
    pub fn vlan_count(&self) -> usize {
        self.vlans.iter().flatten().count()
    }

    /// Source IP address, for IP packets.
    pub fn src_ip(&self) -> Option<IpAddr> {
        match self.l3 {
            L3::Ipv4 { src, .. } => Some(src.into()),
            L3::Ipv6 { src, .. } => Some(src.into()),
            _ => None,
        }
    }

    /// Destination IP address, for IP packets.
    pub fn dst_ip(&self) -> Option<IpAddr> {
        match self.l3 {
            L3::Ipv4 { dst, .. } => Some(dst.into()),
            L3::Ipv6 { dst, .. } => Some(dst.into()),
            _ => None,
        }
    }

    /// Transport protocol, for IP packets (upper layer for IPv6).
    pub fn ip_proto(&self) -> Option<IpProtocol> {
        match self.l3 {
            L3::Ipv4 { proto, .. } => Some(proto),
            L3::Ipv6 { next, .. } => Some(next),
            _ => None,
        }
    }

    /// Fragment info, for IP packets that are fragments.
    pub fn fragment(&self) -> Option<Fragment> {
        match self.l3 {
            L3::Ipv4 { frag, .. } | L3::Ipv6 { frag, .. } => frag,
            _ => None,
        }
    }

    /// `(source, destination)` ports for TCP and UDP.
    pub fn ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => Some((sport, dport)),
            _ => None,
        }
    }
}

/// The header in which a frame ended too early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Ethernet header.
    Ethernet,
    /// A VLAN tag.
    Vlan,
    /// ARP body.
    Arp,
    /// IPv4 fixed header.
    Ipv4,
    /// IPv6 fixed header.
    Ipv6,
    /// An IPv6 extension header.
    Ipv6Ext,
    /// TCP header.
    Tcp,
    /// UDP header.
    Udp,
    /// ICMP header.
    Icmp,
    /// ICMPv6 header.
    Icmpv6,
}

impl Layer {
    /// Short snake_case name.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Layer::Ethernet => "ethernet",
            Layer::Vlan => "vlan",
            Layer::Arp => "arp",
            Layer::Ipv4 => "ipv4",
            Layer::Ipv6 => "ipv6",
            Layer::Ipv6Ext => "ipv6_ext",
            Layer::Tcp => "tcp",
            Layer::Udp => "udp",
            Layer::Icmp => "icmp",
            Layer::Icmpv6 => "icmpv6",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`parse`] rejected a frame; one variant per reason so drops can be
/// counted precisely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ParseError {
    /// The frame ends inside a fixed-size header.
    #[error("truncated {layer} header")]
    Truncated {
        /// Which header.
        layer: Layer,
    },
    /// More than two VLAN tags.
    #[error("more than two VLAN tags")]
    TooManyVlanTags,
    /// ARP with non-Ethernet/IPv4 address sizes.
    #[error("ARP is not Ethernet/IPv4")]
    BadArp,
    /// The IP version nibble disagrees with the EtherType.
    #[error("IP version does not match EtherType")]
    BadIpVersion,
    /// IPv4 IHL below 5 or past the end of the frame.
    #[error("bad IPv4 header length")]
    BadIhl,
    /// IPv4 total length below the header length or past the frame.
    #[error("bad IPv4 total length")]
    BadTotalLength,
    /// IPv6 payload length past the end of the frame.
    #[error("bad IPv6 payload length")]
    BadPayloadLength,
    /// More than [`MAX_EXT_HEADERS`](crate::ipv6::MAX_EXT_HEADERS) IPv6
    /// extension headers.
    #[error("too many IPv6 extension headers")]
    TooManyExtHeaders,
    /// IPv6 hop-by-hop options anywhere but first.
    #[error("IPv6 hop-by-hop header not first")]
    HopByHopNotFirst,
    /// An IPv6 extension header with an impossible length.
    #[error("malformed IPv6 extension header")]
    BadExtHeader,
    /// TCP data offset below 5 or past the end of the segment.
    #[error("bad TCP data offset")]
    BadTcpDataOffset,
    /// UDP length below 8 or past the end of the datagram.
    #[error("bad UDP length")]
    BadUdpLength,
}

impl ParseError {
    /// Every error value, e.g. to pre-register one counter per label.
    pub const ALL: [ParseError; 21] = [
        ParseError::Truncated {
            layer: Layer::Ethernet,
        },
        ParseError::Truncated { layer: Layer::Vlan },
        ParseError::Truncated { layer: Layer::Arp },
        ParseError::Truncated { layer: Layer::Ipv4 },
        ParseError::Truncated { layer: Layer::Ipv6 },
        ParseError::Truncated {
            layer: Layer::Ipv6Ext,
        },
        ParseError::Truncated { layer: Layer::Tcp },
        ParseError::Truncated { layer: Layer::Udp },
        ParseError::Truncated { layer: Layer::Icmp },
        ParseError::Truncated {
            layer: Layer::Icmpv6,
        },
        ParseError::TooManyVlanTags,
        ParseError::BadArp,
        ParseError::BadIpVersion,
        ParseError::BadIhl,
        ParseError::BadTotalLength,
        ParseError::BadPayloadLength,
        ParseError::TooManyExtHeaders,
        ParseError::HopByHopNotFirst,
        ParseError::BadExtHeader,
        ParseError::BadTcpDataOffset,
        ParseError::BadUdpLength,
    ];

    /// Short snake_case name, stable for use as a metrics label.
    pub const fn as_str(&self) -> &'static str {
        match self {
            ParseError::Truncated { layer } => match layer {
                Layer::Ethernet => "truncated_ethernet",
                Layer::Vlan => "truncated_vlan",
                Layer::Arp => "truncated_arp",
                Layer::Ipv4 => "truncated_ipv4",
                Layer::Ipv6 => "truncated_ipv6",
                Layer::Ipv6Ext => "truncated_ipv6_ext",
                Layer::Tcp => "truncated_tcp",
                Layer::Udp => "truncated_udp",
                Layer::Icmp => "truncated_icmp",
                Layer::Icmpv6 => "truncated_icmpv6",
            },
            ParseError::TooManyVlanTags => "too_many_vlan_tags",
            ParseError::BadArp => "bad_arp",
            ParseError::BadIpVersion => "bad_ip_version",
            ParseError::BadIhl => "bad_ihl",
            ParseError::BadTotalLength => "bad_total_length",
            ParseError::BadPayloadLength => "bad_payload_length",
            ParseError::TooManyExtHeaders => "too_many_ext_headers",
            ParseError::HopByHopNotFirst => "hop_by_hop_not_first",
            ParseError::BadExtHeader => "bad_ext_header",
            ParseError::BadTcpDataOffset => "bad_tcp_data_offset",
            ParseError::BadUdpLength => "bad_udp_length",
        }
    }
}

const fn truncated(layer: Layer) -> ParseError {
    ParseError::Truncated { layer }
}

/// Big-endian u16 at `i`; callers have checked `i + 2 <= b.len()`.
#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Big-endian u32 at `i`; callers have checked `i + 4 <= b.len()`.
#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Most VLAN tags accepted; deeper stacking is not used by any supported
/// deployment and would only serve to evade VLAN-based policy.
pub const MAX_VLAN_TAGS: usize = 2;

/// Parses one Ethernet frame (without FCS).
///
/// Non-first fragments parse successfully with [`L4::None`] and no
/// `l4_offset`; the first fragment's UDP length may exceed the fragment.
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let mut out = Parsed::EMPTY;
    parse_into(frame, &mut out)?;
    Ok(out)
}

/// [`parse`] into a caller's `Parsed` (e.g. a slot of a burst's array),
/// which saves copying the result on the fast path. On error `out` holds
/// unspecified (but valid) values.
#[inline]
pub fn parse_into(frame: &[u8], out: &mut Parsed) -> Result<(), ParseError> {
    if shortcut(frame, out) {
        return Ok(());
    }
    parse_general(frame, out)
}

/// The overwhelmingly common frame — IPv4 with a 20-byte header, not a
/// fragment, carrying TCP or UDP, untagged or behind one VLAN tag — decoded
/// by [`parse_common`] to plain values: what connection tracking needs of
/// an established flow's packet, without building a [`Parsed`].
/// [`parsed`](Self::parsed) is exactly what [`parse`] returns for the
/// frame (held equal by a property test).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Frame {
    /// The VLAN id of the tag, if the frame has one.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// The IPv4 total length (header and payload, without Ethernet
    /// padding).
    pub total_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// [`L4::Tcp`] or [`L4::Udp`].
    pub l4: L4,
}

impl Ipv4Frame {
    /// Where the IPv4 header starts in the frame.
    #[inline(always)]
    pub const fn l3_offset(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    /// Where the transport header starts in the frame.
    #[inline(always)]
    pub const fn l4_offset(&self) -> usize {
        self.l3_offset() + 20
    }

    /// The transport protocol.
    #[inline(always)]
    pub const fn proto(&self) -> IpProtocol {
        match self.l4 {
            L4::Tcp { .. } => IpProtocol::TCP,
            _ => IpProtocol::UDP,
        }
    }

    /// What [`parse`] returns for this frame.
    #[inline(always)]
    pub fn parsed(&self) -> Parsed {
        Parsed {
            vlans: [self.vlan, None],
            ethertype: EtherType::IPV4,
            l3_offset: self.l3_offset(),
            l3: L3::Ipv4 {
                src: self.src,
                dst: self.dst,
                proto: self.proto(),
                frag: None,
                ttl: self.ttl,
            },
            l4_offset: Some(self.l4_offset()),
            l4: self.l4,
        }
    }
}

/// Decodes the common frame (see [`Ipv4Frame`]) in a few loads and
/// compares; `None` for any other frame, which [`parse`] decides. Where it
/// answers, [`parse`] succeeds with [`Ipv4Frame::parsed`].
#[inline(always)]
pub fn parse_common(frame: &[u8]) -> Option<Ipv4Frame> {
    // The shortest frame it takes: Ethernet, IPv4 and 20 bytes after that.
    let eth = frame.first_chunk::<54>()?;
    // EtherType IPv4 and version 4 with IHL 5, in one compare (comparing
    // the EtherType alone, the compiler merged it with the tag checks
    // into a switch).
    if [eth[12], eth[13], eth[14]] == [0x08, 0x00, 0x45] {
        return common_ipv4::<14>(frame, None);
    }
    // One tag; a second one (or anything but IPv4) fails the check of the
    // inner EtherType and takes the general path.
    if EtherType(u16::from_be_bytes([eth[12], eth[13]])).is_vlan()
        && [eth[16], eth[17], eth[18]] == [0x08, 0x00, 0x45]
    {
        let vid = u16::from_be_bytes([eth[14], eth[15]]) & 0x0fff;
        return common_ipv4::<18>(frame, Some(vid));
    }
    None
}

/// [`parse_into`]'s shortcut: the common frame through [`parse_common`].
/// Returns `false`, having written nothing, for anything else, which
/// [`parse_general`] then decides.
#[inline(always)]
fn shortcut(frame: &[u8], out: &mut Parsed) -> bool {
    match parse_common(frame) {
        Some(f) => {
            *out = f.parsed();
            true
        }
        None => false,
    }
}

/// The IPv4/TCP-or-UDP part of [`parse_common`], for an IPv4 header at
/// `OFF` (the caller has checked the EtherType and that the header starts
/// with version 4, IHL 5).
#[inline(always)]
fn common_ipv4<const OFF: usize>(frame: &[u8], vlan: Option<u16>) -> Option<Ipv4Frame> {
    // One length check covers every fixed-offset read below: the IPv4
    // header and the 20 bytes after it (a TCP header, or a UDP header and
    // more: the smallest UDP frame on the wire is padded to 60 bytes).
    let (ip, l4) = frame.get(OFF..)?.first_chunk::<40>()?.split_at(20);
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // Neither the MF flag nor a fragment offset; the total length within
    // the frame (and covering the headers: checked below, per protocol).
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || total > frame.len() - OFF {
        return None;
    }
    let l4 = match IpProtocol(ip[9]) {
        IpProtocol::TCP => {
            let off_flags = u16::from_be_bytes([l4[12], l4[13]]);
            let hl = usize::from(off_flags >> 12) * 4;
            let headers = 20 + hl;
            // Data offset 5 or more and within the segment, which implies
            // a total length of at least 40.
            if hl < 20 || headers > total {
                return None;
            }
            L4::Tcp {
                sport: u16::from_be_bytes([l4[0], l4[1]]),
                dport: u16::from_be_bytes([l4[2], l4[3]]),
                flags: TcpFlags::from_bits_truncate(off_flags),
                seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
                ack: u32::from_be_bytes([l4[8], l4[9], l4[10], l4[11]]),
                window: u16::from_be_bytes([l4[14], l4[15]]),
                // Less than `total`, a u16: the cast does not truncate.
                payload_len: (total - headers) as u16,
            }
        }
        IpProtocol::UDP => {
            let len = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            // Length 8 or more and within the datagram, which implies a
            // total length of at least 28.
            if len < 8 || len + 20 > total {
                return None;
            }
            L4::Udp {
                sport: u16::from_be_bytes([l4[0], l4[1]]),
                dport: u16::from_be_bytes([l4[2], l4[3]]),
            }
        }
        _ => return None,
    };
    Some(Ipv4Frame {
        vlan,
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        // At most the frame's length minus the header offset: a u16 read.
        total_len: total as u16,
        ttl: ip[8],
        l4,
    })
}

/// The parser for every frame: VLAN stacks, IPv6 and its extension
/// headers, fragments, ARP, ICMP, and the precise error for malformed
/// input. [`parse_into`] goes here when its shortcut does not apply.
#[inline]
fn parse_general(frame: &[u8], out: &mut Parsed) -> Result<(), ParseError> {
    if frame.len() < 14 {
        return Err(truncated(Layer::Ethernet));
    }
    let mut ethertype = EtherType(be16(frame, 12));
    let mut off = 14;
    let mut vlans = [None; MAX_VLAN_TAGS];
    let mut tags = 0;
    while ethertype.is_vlan() {
        if tags == MAX_VLAN_TAGS {
            return Err(ParseError::TooManyVlanTags);
        }
        let tag = frame.get(off..off + 4).ok_or(truncated(Layer::Vlan))?;
        vlans[tags] = Some(be16(tag, 0) & 0x0fff);
        ethertype = EtherType(be16(tag, 2));
        off += 4;
        tags += 1;
    }
    // The layers write straight into `out` (helpers are force-inlined):
    // returning enums by value went through stack temporaries whose copies
    // caused store-forwarding stalls that dominated the profile.
    out.vlans = vlans;
    out.ethertype = ethertype;
    out.l3_offset = off;
    out.l3 = L3::Other(ethertype);
    out.l4_offset = None;
    out.l4 = L4::None;
    let l3_bytes = &frame[off..];
    match ethertype {
        EtherType::IPV4 => parse_ipv4(l3_bytes, off, out)?,
        EtherType::IPV6 => parse_ipv6(l3_bytes, off, out)?,
        EtherType::ARP => {
            parse_arp(l3_bytes)?;
            out.l3 = L3::Arp;
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn parse_arp(b: &[u8]) -> Result<(), ParseError> {
    if b.len() < 8 {
        return Err(truncated(Layer::Arp));
    }
    if b[4] != 6 || b[5] != 4 {
        return Err(ParseError::BadArp);
    }
    if b.len() < 28 {
        return Err(truncated(Layer::Arp));
    }
    Ok(())
}

#[inline(always)]
fn parse_ipv4(b: &[u8], base: usize, out: &mut Parsed) -> Result<(), ParseError> {
    if b.len() < 20 {
        return Err(truncated(Layer::Ipv4));
    }
    if b[0] >> 4 != 4 {
        return Err(ParseError::BadIpVersion);
    }
    let hl = usize::from(b[0] & 0x0f) * 4;
    if hl < 20 || hl > b.len() {
        return Err(ParseError::BadIhl);
    }
    let total = usize::from(be16(b, 2));
    if total < hl || total > b.len() {
        return Err(ParseError::BadTotalLength);
    }
    let flags_frag = be16(b, 6);
    let offset = (flags_frag & 0x1fff) << 3;
    let more = flags_frag & 0x2000 != 0;
    let frag = (more || offset != 0).then_some(Fragment {
        offset,
        more,
        ident: u32::from(be16(b, 4)),
    });
    let proto = IpProtocol(b[9]);
    out.l3 = L3::Ipv4 {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        proto,
        frag,
        ttl: b[8],
    };
    if offset != 0 {
        return Ok(());
    }
    out.l4 = parse_l4(proto, &b[hl..total], false, more)?;
    out.l4_offset = Some(base + hl);
    Ok(())
}

#[inline(always)]
fn parse_ipv6(b: &[u8], base: usize, out: &mut Parsed) -> Result<(), ParseError> {
    if b.len() < 40 {
        return Err(truncated(Layer::Ipv6));
    }
    if b[0] >> 4 != 6 {
        return Err(ParseError::BadIpVersion);
    }
    let end = 40 + usize::from(be16(b, 4));
    if end > b.len() {
        return Err(ParseError::BadPayloadLength);
    }
    let walk = walk_extension_headers(IpProtocol(b[6]), &b[40..end], 40).map_err(|e| match e {
        Ipv6WalkError::Truncated => truncated(Layer::Ipv6Ext),
        Ipv6WalkError::TooManyHeaders => ParseError::TooManyExtHeaders,
        Ipv6WalkError::HopByHopNotFirst => ParseError::HopByHopNotFirst,
        Ipv6WalkError::Malformed => ParseError::BadExtHeader,
    })?;
    let mut src = [0u8; 16];
    src.copy_from_slice(&b[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&b[24..40]);
    out.l3 = L3::Ipv6 {
        src: Ipv6Addr::from(src),
        dst: Ipv6Addr::from(dst),
        next: walk.upper_protocol,
        frag: walk.fragment,
    };
    let (first, more) = match walk.fragment {
        Some(f) => (f.is_first(), f.more),
        None => (true, false),
    };
    if !first {
        return Ok(());
    }
    // The walker keeps upper_offset within the payload.
    let upper = b.get(walk.upper_offset..end).unwrap_or_default();
    out.l4 = parse_l4(walk.upper_protocol, upper, true, more)?;
    out.l4_offset = Some(base + walk.upper_offset);
    Ok(())
}

/// Decodes the transport header in `b` (the packet's upper-layer bytes).
/// `fragmented` is set for a first fragment, whose UDP length may cover
/// data in later fragments.
#[inline(always)]
fn parse_l4(proto: IpProtocol, b: &[u8], v6: bool, fragmented: bool) -> Result<L4, ParseError> {
    match proto {
        IpProtocol::TCP => {
            if b.len() < 20 {
                return Err(truncated(Layer::Tcp));
            }
            let hl = usize::from(b[12] >> 4) * 4;
            if hl < 20 || hl > b.len() {
                return Err(ParseError::BadTcpDataOffset);
            }
            Ok(L4::Tcp {
                sport: be16(b, 0),
                dport: be16(b, 2),
                flags: TcpFlags::from_bits_truncate(be16(b, 12)),
                seq: be32(b, 4),
                ack: be32(b, 8),
                window: be16(b, 14),
                payload_len: u16::try_from(b.len() - hl).unwrap_or(u16::MAX),
            })
        }
        IpProtocol::UDP => {
            if b.len() < 8 {
                return Err(truncated(Layer::Udp));
            }
            let len = usize::from(be16(b, 4));
            if len < 8 || (!fragmented && len > b.len()) {
                return Err(ParseError::BadUdpLength);
            }
            Ok(L4::Udp {
                sport: be16(b, 0),
                dport: be16(b, 2),
            })
        }
        IpProtocol::ICMP if !v6 => {
            if b.len() < 8 {
                return Err(truncated(Layer::Icmp));
            }
            Ok(L4::Icmp {
                ty: b[0],
                code: b[1],
                ident: icmpv4::is_echo(b[0]).then(|| be16(b, 4)),
            })
        }
        IpProtocol::ICMPV6 if v6 => {
            if b.len() < 8 {
                return Err(truncated(Layer::Icmpv6));
            }
            Ok(L4::Icmpv6 {
                ty: b[0],
                code: b[1],
                ident: icmpv6::is_echo(b[0]).then(|| be16(b, 4)),
            })
        }
        _ => Ok(L4::None),
    }
}

#[cfg(test)]
mod differential;
#[cfg(test)]
mod tests;
