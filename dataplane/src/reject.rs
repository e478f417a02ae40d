//! Answers for packets a `reject` rule refuses: instead of dropping silently, the gateway tells the sender.
//! TCP gets a reset (RFC 9293 §3.5.2), everything else an ICMP "communication administratively
//! prohibited" error (type 3 code 13, RFC 1812 §5.2.7.1) or its ICMPv6 equivalent (type 1 code 1,
//! RFC 4443 §3.1).
//!
//! [`build_reject`] writes the whole reply frame into a caller-provided buffer: it runs in the poll loop, so
//! it never allocates and never panics, whatever the frame. The reply goes back out of the port the packet
//! came in on: MACs swapped, VLAN tags exactly as received, and it impersonates the packet's destination.
//! It never answers what must not be answered (RFC 1122 §3.2.2, RFC 4443 §2.4 (e)): resets, ICMP errors,
//! non-first fragments, and anything not sent by one unicast host to one unicast host; [`RejectSkip`] says
//! why, for the counters.

use std::net::{Ipv4Addr, Ipv6Addr};

use net::ethernet::{EtherType, EthernetFrame, MacAddr};
use net::icmpv4::{self, Icmpv4Repr};
use net::icmpv6::{self, Icmpv6Repr};
use net::ipv4::{Ipv4Packet, Ipv4Repr};
use net::ipv6::{Ipv6Packet, Ipv6Repr};
use net::tcp::{TcpFlags, TcpRepr};
use net::{EmitError, IpAddrs, IpProtocol, Parsed, L3, L4};

/// Shortest Ethernet frame without FCS; shorter replies (an untagged IPv4 RST is 54 bytes) are zero-padded
/// to it, since not every NIC pads on transmit.
pub const MIN_FRAME_LEN: usize = 60;

/// TTL / hop limit of every reply.
pub const REPLY_TTL: u8 = 64;

/// Largest IPv4 datagram an ICMP error may be (RFC 1812 §4.3.2.3): the quote is cut to fit.
pub const ICMPV4_MAX_DATAGRAM: usize = 576;

/// Largest IPv6 packet an ICMPv6 error may be, the IPv6 minimum MTU (RFC 4443 §2.4 (c)).
pub const ICMPV6_MAX_PACKET: usize = 1280;

/// Longest reply [`build_reject`] ever writes: an ICMPv6 error of [`ICMPV6_MAX_PACKET`] bytes behind an
/// Ethernet header with two VLAN tags. An `out` buffer this long never yields [`RejectSkip::OutTooSmall`].
pub const MAX_REPLY_LEN: usize = ETH_HEADER_LEN + 2 * VLAN_TAG_LEN + ICMPV6_MAX_PACKET;

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
/// Bytes past the network headers an ICMP error quotes at least (RFC 792; RFC 4443 wants more if it fits).
const MIN_QUOTED_PAYLOAD: usize = 8;
/// DSCP of ICMPv4 errors: CS6, internetwork control (RFC 1812 §4.3.2.5).
const ICMPV4_ERROR_DSCP: u8 = 48;
/// ICMPv6 destination-unreachable code "communication with destination administratively prohibited".
const ICMPV6_ADMIN_PROHIBITED: u8 = 1;

/// Why no reply was built. Small and `Copy`, one variant per counter label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectSkip {
    /// Not IPv4 or IPv6 (ARP, other EtherTypes): there is nobody to address a reply to.
    NotIp,
    /// The frame is shorter than, or disagrees with, what `parsed` says of it.
    Malformed,
    /// The destination MAC is broadcast or multicast.
    NonUnicastMac,
    /// The destination IP is not one unicast host — multicast (224/4, ff00::/8), limited broadcast,
    /// unspecified or "this network" (0/8), loopback, reserved (240/4) — so the reply could not come from it.
    NonUnicastDst,
    /// The source does not name one host — an unspecified/zero, multicast, broadcast, loopback or reserved
    /// IP, or a zero or multicast MAC — so there is nobody to answer.
    InvalidSource,
    /// A fragment other than the first: it carries no transport header, and the first fragment gets the
    /// answer.
    NonFirstFragment,
    /// A TCP reset: never reset a reset.
    TcpRst,
    /// An ICMP or ICMPv6 error (or ICMPv6 redirect): never an error about an error.
    IcmpError,
    /// `out` cannot hold the reply (see [`MAX_REPLY_LEN`]).
    OutTooSmall,
}

impl RejectSkip {
    /// Every reason, e.g. to pre-register one counter per label.
    pub const ALL: [RejectSkip; 9] = [
        RejectSkip::NotIp,
        RejectSkip::Malformed,
        RejectSkip::NonUnicastMac,
        RejectSkip::NonUnicastDst,
        RejectSkip::InvalidSource,
        RejectSkip::NonFirstFragment,
        RejectSkip::TcpRst,
        RejectSkip::IcmpError,
        RejectSkip::OutTooSmall,
    ];
    /// Number of reasons.
    pub const COUNT: usize = Self::ALL.len();

    /// Short snake_case name, stable for use as a metrics label.
    pub const fn name(self) -> &'static str {
        match self {
            RejectSkip::NotIp => "not_ip",
            RejectSkip::Malformed => "malformed",
            RejectSkip::NonUnicastMac => "non_unicast_mac",
            RejectSkip::NonUnicastDst => "non_unicast_dst",
            RejectSkip::InvalidSource => "invalid_source",
            RejectSkip::NonFirstFragment => "non_first_fragment",
            RejectSkip::TcpRst => "tcp_rst",
            RejectSkip::IcmpError => "icmp_error",
            RejectSkip::OutTooSmall => "out_too_small",
        }
    }
}

/// Writes the answer to a rejected packet into `out` and returns its length, or says why there is none.
///
/// `parsed` must be `net::parse(frame)`; a frame that disagrees with it yields [`RejectSkip::Malformed`].
///
/// - L2: the MACs are swapped and the VLAN tags (TPIDs and TCIs) copied as received, so the reply returns
///   into the same VLAN on the port the packet arrived on.
/// - TCP gets a reset without options or payload, window 0 (RFC 9293 §3.5.2): if the segment has ACK,
///   `RST` with `seq` = its acknowledgment number; otherwise `RST|ACK` with `seq` 0 and `ack` = its `seq` +
///   payload length + 1 for SYN + 1 for FIN. (Of a fragmented segment only the first fragment's payload is
///   known; the peer then ignores the reset, as it would the silent drop.)
/// - Other IPv4 gets ICMP type 3 code 13 quoting the offending datagram (header, options, payload; never
///   Ethernet padding) as far as fits in a 576-byte datagram (RFC 1812 §4.3.2.3), at least its header and
///   8 bytes of payload. Other IPv6 gets ICMPv6 type 1 code 1 quoting as much of the packet as fits in
///   1280 bytes (RFC 4443 §3.1). A short `out` cuts the quote down to that minimum before giving up.
/// - The IP header is fresh: no options or extension headers, source and destination swapped, TTL / hop
///   limit [`REPLY_TTL`]; IPv4 has DF set and identification 0 (atomic datagram, RFC 6864), DSCP CS6 for
///   ICMP errors (RFC 1812 §4.3.2.5) and 0 for resets. All checksums are filled.
/// - Replies shorter than [`MIN_FRAME_LEN`] are zero-padded to it.
pub fn build_reject(frame: &[u8], parsed: &Parsed, out: &mut [u8]) -> Result<usize, RejectSkip> {
    if !matches!(parsed.l3, L3::Ipv4 { .. } | L3::Ipv6 { .. }) {
        return Err(RejectSkip::NotIp);
    }
    let l3 = parsed.l3_offset;
    let l2 = frame.get(..l3).ok_or(RejectSkip::Malformed)?;
    let eth = EthernetFrame::new_checked(l2).map_err(|_| RejectSkip::Malformed)?;
    let (src_mac, dst_mac) = (eth.src_addr(), eth.dst_addr());
    // The reply keeps this L2 header, so it must lead to the network header `parsed` describes.
    let expected = match parsed.l3 {
        L3::Ipv4 { .. } => EtherType::IPV4,
        _ => EtherType::IPV6,
    };
    if parsed.ethertype != expected || l2[l3 - 2..] != expected.0.to_be_bytes() {
        return Err(RejectSkip::Malformed);
    }
    if dst_mac.is_multicast() {
        return Err(RejectSkip::NonUnicastMac);
    }
    if src_mac.is_multicast() || src_mac == MacAddr::ZERO {
        return Err(RejectSkip::InvalidSource);
    }
    let reply = Reply {
        l2,
        src_mac,
        dst_mac,
    };
    let packet = &frame[l3..];
    match parsed.l3 {
        L3::Ipv4 {
            src,
            dst,
            proto,
            frag,
            ..
        } => {
            if !ipv4_is_host(dst) {
                return Err(RejectSkip::NonUnicastDst);
            }
            if !ipv4_is_host(src) {
                return Err(RejectSkip::InvalidSource);
            }
            if frag.is_some_and(|f| !f.is_first()) {
                return Err(RejectSkip::NonFirstFragment);
            }
            let ip = Ipv4Packet::new_checked(packet).map_err(|_| RejectSkip::Malformed)?;
            if ip.src_addr() != src || ip.dst_addr() != dst || ip.protocol() != proto {
                return Err(RejectSkip::Malformed);
            }
            if !l4_matches(proto, IpProtocol::ICMP, parsed.l4) {
                return Err(RejectSkip::Malformed);
            }
            match parsed.l4 {
                L4::Tcp { flags, .. } if flags.contains(TcpFlags::RST) => Err(RejectSkip::TcpRst),
                L4::Tcp { .. } => reply.tcp_v4(parsed.l4, src, dst, out),
                L4::Icmp { ty, .. } if icmpv4::is_error(ty) => Err(RejectSkip::IcmpError),
                _ => {
                    let datagram = packet
                        .get(..usize::from(ip.total_len()))
                        .ok_or(RejectSkip::Malformed)?;
                    reply.icmp_v4(datagram, ip.header_len(), src, dst, out)
                }
            }
        }
        L3::Ipv6 {
            src,
            dst,
            next,
            frag,
        } => {
            if !ipv6_is_host(dst) {
                return Err(RejectSkip::NonUnicastDst);
            }
            if !ipv6_is_host(src) {
                return Err(RejectSkip::InvalidSource);
            }
            if frag.is_some_and(|f| !f.is_first()) {
                return Err(RejectSkip::NonFirstFragment);
            }
            let ip = Ipv6Packet::new_checked(packet).map_err(|_| RejectSkip::Malformed)?;
            if ip.src_addr() != src || ip.dst_addr() != dst {
                return Err(RejectSkip::Malformed);
            }
            // Where the upper-layer header starts within the packet, for the minimum quote.
            let upper = parsed
                .l4_offset
                .and_then(|o| o.checked_sub(l3))
                .ok_or(RejectSkip::Malformed)?;
            if !l4_matches(next, IpProtocol::ICMPV6, parsed.l4) {
                return Err(RejectSkip::Malformed);
            }
            match parsed.l4 {
                L4::Tcp { flags, .. } if flags.contains(TcpFlags::RST) => Err(RejectSkip::TcpRst),
                L4::Tcp { .. } => reply.tcp_v6(parsed.l4, src, dst, out),
                L4::Icmpv6 { ty, .. } if icmpv6::is_error(ty) || ty == icmpv6::types::REDIRECT => {
                    Err(RejectSkip::IcmpError)
                }
                _ => {
                    let len = IPV6_HEADER_LEN + usize::from(ip.payload_len());
                    let packet = packet.get(..len).ok_or(RejectSkip::Malformed)?;
                    reply.icmp_v6(packet, upper, src, dst, out)
                }
            }
        }
        L3::Arp | L3::Other(_) => Err(RejectSkip::NotIp),
    }
}

/// Whether `l4` is what the parser makes of the first fragment of a `proto` packet, `icmp` being the ICMP
/// protocol of the IP version at hand.
fn l4_matches(proto: IpProtocol, icmp: IpProtocol, l4: L4) -> bool {
    match l4 {
        L4::Tcp { .. } => proto == IpProtocol::TCP,
        L4::Udp { .. } => proto == IpProtocol::UDP,
        L4::Icmp { .. } => proto == IpProtocol::ICMP && icmp == IpProtocol::ICMP,
        L4::Icmpv6 { .. } => proto == IpProtocol::ICMPV6 && icmp == IpProtocol::ICMPV6,
        L4::None => proto != IpProtocol::TCP && proto != IpProtocol::UDP && proto != icmp,
    }
}

/// Whether an IPv4 address can name one host, as the source of a datagram or of our reply: not 0/8 (this
/// network, unspecified), 127/8 (loopback), 224/4 (multicast) or 240/4 (reserved, limited broadcast).
fn ipv4_is_host(a: Ipv4Addr) -> bool {
    !matches!(a.octets()[0], 0 | 127 | 224..=255)
}

/// Whether an IPv6 address can name one host: not unspecified, loopback or multicast.
fn ipv6_is_host(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_loopback() || a.is_multicast())
}

/// The reset answering a segment (RFC 9293 §3.5.2), ports swapped, window 0: `RST` with `seq` = its
/// acknowledgment number if it has ACK; otherwise `RST|ACK` with `ack` = its `seq` + payload length + 1 for
/// SYN + 1 for FIN.
fn rst(l4: L4) -> TcpRepr<'static> {
    let L4::Tcp {
        sport,
        dport,
        flags,
        seq,
        ack,
        payload_len,
        ..
    } = l4
    else {
        return TcpRepr::new(0, 0, 0, 0, TcpFlags::RST, 0);
    };
    if flags.contains(TcpFlags::ACK) {
        return TcpRepr::new(dport, sport, ack, 0, TcpFlags::RST, 0);
    }
    let len = u32::from(payload_len)
        + u32::from(flags.contains(TcpFlags::SYN))
        + u32::from(flags.contains(TcpFlags::FIN));
    TcpRepr::new(
        dport,
        sport,
        0,
        seq.wrapping_add(len),
        TcpFlags::RST | TcpFlags::ACK,
        0,
    )
}

/// What the reply keeps of the offending frame's L2 header.
struct Reply<'f> {
    /// The received Ethernet header and VLAN tags.
    l2: &'f [u8],
    src_mac: MacAddr,
    dst_mac: MacAddr,
}

/// The builders take the offending packet's addresses (`src`, `dst`) and answer from `dst` to `src`.
impl Reply<'_> {
    /// Claims `out[..]` for a reply whose IP packet is `ip_len` bytes, writes the L2 header and zeroes
    /// the rest (so no stale bytes survive in reserved fields or padding). Returns the frame length
    /// (padding included) and the IP packet's slice.
    fn start<'o>(
        &self,
        out: &'o mut [u8],
        ip_len: usize,
    ) -> Result<(usize, &'o mut [u8]), RejectSkip> {
        let l3 = self.l2.len();
        let len = (l3 + ip_len).max(MIN_FRAME_LEN);
        let frame = out.get_mut(..len).ok_or(RejectSkip::OutTooSmall)?;
        let (l2, rest) = frame.split_at_mut(l3);
        l2.copy_from_slice(self.l2);
        // The tags and the EtherType stay as received: the reply is of the same IP version.
        let mut eth = EthernetFrame::new_unchecked(l2);
        eth.set_dst_addr(self.src_mac);
        eth.set_src_addr(self.dst_mac);
        rest.fill(0);
        Ok((len, &mut rest[..ip_len]))
    }

    fn tcp_v4(
        &self,
        seg: L4,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        out: &mut [u8],
    ) -> Result<usize, RejectSkip> {
        let (len, buf) = self.start(out, IPV4_HEADER_LEN + TCP_HEADER_LEN)?;
        let (ip, tcp) = buf.split_at_mut(IPV4_HEADER_LEN);
        ipv4_reply(IpProtocol::TCP, 0, dst, src, tcp.len()).emit(ip)?;
        rst(seg).emit(tcp, &IpAddrs::V4 { src: dst, dst: src })?;
        Ok(len)
    }

    fn tcp_v6(
        &self,
        seg: L4,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        out: &mut [u8],
    ) -> Result<usize, RejectSkip> {
        let (len, buf) = self.start(out, IPV6_HEADER_LEN + TCP_HEADER_LEN)?;
        let (ip, tcp) = buf.split_at_mut(IPV6_HEADER_LEN);
        ipv6_reply(IpProtocol::TCP, dst, src, tcp.len()).emit(ip)?;
        rst(seg).emit(tcp, &IpAddrs::V6 { src: dst, dst: src })?;
        Ok(len)
    }

    /// `datagram` is the offending IPv4 datagram (no padding), `header_len` its header length.
    fn icmp_v4(
        &self,
        datagram: &[u8],
        header_len: usize,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        out: &mut [u8],
    ) -> Result<usize, RejectSkip> {
        let fixed = IPV4_HEADER_LEN + ICMP_HEADER_LEN;
        let quote = self.quote_len(
            datagram.len(),
            header_len + MIN_QUOTED_PAYLOAD,
            ICMPV4_MAX_DATAGRAM - fixed,
            fixed,
            out.len(),
        )?;
        let (len, buf) = self.start(out, fixed + quote)?;
        let (ip, icmp) = buf.split_at_mut(IPV4_HEADER_LEN);
        icmp[ICMP_HEADER_LEN..].copy_from_slice(&datagram[..quote]);
        Icmpv4Repr::dest_unreachable(icmpv4::codes::ADMIN_PROHIBITED).emit(icmp)?;
        ipv4_reply(IpProtocol::ICMP, ICMPV4_ERROR_DSCP, dst, src, icmp.len()).emit(ip)?;
        Ok(len)
    }

    /// `packet` is the offending IPv6 packet (no padding), its upper-layer header at `upper`.
    fn icmp_v6(
        &self,
        packet: &[u8],
        upper: usize,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        out: &mut [u8],
    ) -> Result<usize, RejectSkip> {
        let fixed = IPV6_HEADER_LEN + ICMP_HEADER_LEN;
        let quote = self.quote_len(
            packet.len(),
            upper.saturating_add(MIN_QUOTED_PAYLOAD),
            ICMPV6_MAX_PACKET - fixed,
            fixed,
            out.len(),
        )?;
        let (len, buf) = self.start(out, fixed + quote)?;
        let (ip, icmp) = buf.split_at_mut(IPV6_HEADER_LEN);
        icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote]);
        Icmpv6Repr::dest_unreachable(ICMPV6_ADMIN_PROHIBITED).emit(icmp, dst, src)?;
        ipv6_reply(IpProtocol::ICMPV6, dst, src, icmp.len()).emit(ip)?;
        Ok(len)
    }

    /// How much of an `available`-byte packet to quote: as much as `max` and `out` allow, but at least
    /// `min` (or the whole packet, if shorter).
    fn quote_len(
        &self,
        available: usize,
        min: usize,
        max: usize,
        fixed: usize,
        out_len: usize,
    ) -> Result<usize, RejectSkip> {
        let room = out_len.saturating_sub(self.l2.len() + fixed);
        let quote = available.min(max).min(room);
        if quote < available.min(min) {
            return Err(RejectSkip::OutTooSmall);
        }
        Ok(quote)
    }
}

/// A fresh IPv4 header for a reply: no options, DF set, identification 0 (atomic, RFC 6864), TTL
/// [`REPLY_TTL`].
fn ipv4_reply(
    protocol: IpProtocol,
    dscp: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload_len: usize,
) -> Ipv4Repr {
    Ipv4Repr {
        dscp,
        ttl: REPLY_TTL,
        ..Ipv4Repr::new(src, dst, protocol, payload_len)
    }
}

/// A fresh IPv6 header for a reply: no extension headers, hop limit [`REPLY_TTL`].
fn ipv6_reply(
    next_header: IpProtocol,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload_len: usize,
) -> Ipv6Repr {
    Ipv6Repr {
        hop_limit: REPLY_TTL,
        ..Ipv6Repr::new(src, dst, next_header, payload_len)
    }
}

/// The reply's headers are sized to `out` before they are written, so an emit can only fail on a buffer
/// too short for them.
impl From<EmitError> for RejectSkip {
    fn from(_: EmitError) -> Self {
        RejectSkip::OutTooSmall
    }
}

#[cfg(test)]
mod tests;
