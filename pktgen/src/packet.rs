//! General packet building for the conversation, policy, ClassBench and
//! attack workloads: any transport (TCP with any flags, UDP, ICMP/ICMPv6,
//! a raw protocol), optional IPv4 fragmentation or an IPv6 fragment
//! header, and Ethernet padding to the 60-byte minimum.
//!
//! The transport segment is built first, whole, with its checksum over the
//! whole datagram (as the sender's stack computes it); the IP layer then
//! wraps it or a slice of it, so fragments carry exactly the bytes of the
//! datagram they belong to. Every header is written with the `net` views.

use std::net::IpAddr;

use net::ethernet::{EtherType, EthernetFrame, MacAddr};
use net::icmpv4::Icmpv4Packet;
use net::icmpv6::Icmpv6Packet;
use net::ip::IpProtocol;
use net::ipv4::Ipv4Packet;
use net::ipv6::{FragmentHeader, Ipv6Packet, FRAGMENT_HEADER_LEN};
use net::tcp::{TcpFlags, TcpPacket};
use net::udp::UdpPacket;
use net::vlan::VlanTag;

use crate::frame::{DEFAULT_DST_MAC, DEFAULT_SRC_MAC, FCS_LEN, MIN_FRAME_SIZE};

/// Shortest frame written, FCS excluded: shorter frames get zero padding
/// after the IP packet, as an Ethernet sender adds.
pub const MIN_FRAME_LEN: usize = MIN_FRAME_SIZE - FCS_LEN;

/// A transport header (the payload is passed separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP without options.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Sequence number.
        seq: u32,
        /// Acknowledgment number.
        ack: u32,
        /// Control bits.
        flags: TcpFlags,
        /// Receive window.
        window: u16,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP over IPv4, or ICMPv6 over IPv6 (chosen by the address family).
    /// `rest` is the 4 bytes after the checksum (echo: ident << 16 | seq).
    Icmp {
        /// Message type.
        ty: u8,
        /// Message code.
        code: u8,
        /// Rest of the header.
        rest: u32,
    },
    /// Any other protocol: the payload follows the IP header directly.
    Raw {
        /// IP protocol number.
        proto: u8,
    },
}

impl Transport {
    /// The IP protocol number, given the family (ICMP is 1 or 58).
    pub fn ip_protocol(&self, ipv6: bool) -> u8 {
        match *self {
            Transport::Tcp { .. } => IpProtocol::TCP.0,
            Transport::Udp { .. } => IpProtocol::UDP.0,
            Transport::Icmp { .. } if ipv6 => IpProtocol::ICMPV6.0,
            Transport::Icmp { .. } => IpProtocol::ICMP.0,
            Transport::Raw { proto } => proto,
        }
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        match self {
            Transport::Tcp { .. } => TcpPacket::<&[u8]>::MIN_HEADER_LEN,
            Transport::Udp { .. } | Transport::Icmp { .. } => 8,
            Transport::Raw { .. } => 0,
        }
    }

    /// A TCP header with the default window.
    pub fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: TcpFlags) -> Transport {
        Transport::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window: crate::frame::L4Spec::DEFAULT_WINDOW,
        }
    }

    /// An ICMP/ICMPv6 echo request or reply header.
    pub fn echo(ty: u8, ident: u16, seq: u16) -> Transport {
        Transport::Icmp {
            ty,
            code: 0,
            rest: (u32::from(ident) << 16) | u32::from(seq),
        }
    }
}

/// The transport segment (header + payload) with its checksum computed for
/// `src` → `dst`. Mixed address families are a caller bug: the checksum is
/// then left zero.
pub fn segment(src: IpAddr, dst: IpAddr, t: &Transport, payload: &[u8]) -> Vec<u8> {
    let hl = t.header_len();
    let mut seg = vec![0u8; hl + payload.len()];
    seg[hl..].copy_from_slice(payload);
    let pair = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(Ok((s, d))),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(Err((s, d))),
        _ => None,
    };
    match *t {
        Transport::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window,
        } => {
            let mut tcp = TcpPacket::new_unchecked(&mut seg[..]);
            tcp.set_src_port(sport);
            tcp.set_dst_port(dport);
            tcp.set_seq_number(seq);
            tcp.set_ack_number(ack);
            tcp.set_header_len(hl);
            tcp.set_flags(flags);
            tcp.set_window_len(window);
            tcp.set_urgent_at(0);
            match pair {
                Some(Ok((s, d))) => tcp.fill_checksum_v4(s, d),
                Some(Err((s, d))) => tcp.fill_checksum_v6(s, d),
                None => {}
            }
        }
        Transport::Udp { sport, dport } => {
            let len = u16::try_from(seg.len()).unwrap_or(u16::MAX);
            let mut udp = UdpPacket::new_unchecked(&mut seg[..]);
            udp.set_src_port(sport);
            udp.set_dst_port(dport);
            udp.set_len(len);
            match pair {
                Some(Ok((s, d))) => udp.fill_checksum_v4(s, d),
                Some(Err((s, d))) => udp.fill_checksum_v6(s, d),
                None => {}
            }
        }
        Transport::Icmp { ty, code, rest } => match pair {
            Some(Err((s, d))) => {
                let mut icmp = Icmpv6Packet::new_unchecked(&mut seg[..]);
                icmp.set_msg_type(ty);
                icmp.set_msg_code(code);
                icmp.set_rest_of_header(rest);
                icmp.fill_checksum(s, d);
            }
            _ => {
                let mut icmp = Icmpv4Packet::new_unchecked(&mut seg[..]);
                icmp.set_msg_type(ty);
                icmp.set_msg_code(code);
                icmp.set_rest_of_header(rest);
                icmp.fill_checksum();
            }
        },
        Transport::Raw { .. } => {}
    }
    seg
}

/// Link and network fields of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// One 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number of the (upper-layer) payload.
    pub proto: u8,
    /// IPv4 identification; IPv6 fragment-header identification.
    pub ident: u32,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 don't-fragment flag (ignored for fragments and IPv6).
    pub dont_frag: bool,
    /// IPv6 flow label.
    pub flow_label: u32,
    /// Fragment offset (bytes, a multiple of 8) and more-fragments flag:
    /// IPv4 flags/offset, or an IPv6 fragment header.
    pub frag: Option<(u16, bool)>,
}

impl IpHeader {
    /// Default MACs, TTL 64, DF set, no VLAN, not a fragment.
    pub fn new(src: IpAddr, dst: IpAddr, proto: u8) -> IpHeader {
        IpHeader {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlan: None,
            src,
            dst,
            proto,
            ident: 0,
            ttl: 64,
            dont_frag: true,
            flow_label: 0,
            frag: None,
        }
    }

    /// Length of the Ethernet [+ VLAN] and IP [+ fragment] headers.
    pub fn header_len(&self) -> usize {
        let l2 = 14 + if self.vlan.is_some() { 4 } else { 0 };
        let l3 = match self.src {
            IpAddr::V4(_) => 20,
            IpAddr::V6(_) => {
                40 + if self.frag.is_some() {
                    FRAGMENT_HEADER_LEN
                } else {
                    0
                }
            }
        };
        l2 + l3
    }

    /// The mirror image: MACs and addresses swapped.
    pub fn reversed(&self) -> IpHeader {
        IpHeader {
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
            src: self.dst,
            dst: self.src,
            ..*self
        }
    }

    /// The frame carrying `ip_payload` (a transport segment or a slice of
    /// one), zero-padded to [`MIN_FRAME_LEN`]. The IP length fields and
    /// the IPv4 header checksum are correct; `ip_payload` must fit them
    /// (at most 65515 bytes), as every generated frame does.
    pub fn frame(&self, ip_payload: &[u8]) -> Vec<u8> {
        let hl = self.header_len();
        let mut f = vec![0u8; (hl + ip_payload.len()).max(MIN_FRAME_LEN)];
        f[hl..hl + ip_payload.len()].copy_from_slice(ip_payload);
        let l2 = if self.vlan.is_some() { 18 } else { 14 };
        let ip_type = if self.src.is_ipv6() {
            EtherType::IPV6
        } else {
            EtherType::IPV4
        };
        let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
        eth.set_dst_addr(self.dst_mac);
        eth.set_src_addr(self.src_mac);
        match self.vlan {
            None => eth.set_ethertype(ip_type),
            Some(vid) => {
                eth.set_ethertype(EtherType::VLAN);
                let mut tag = VlanTag::new_unchecked(eth.payload_mut());
                tag.set_tci(0);
                tag.set_vid(vid & 0x0fff);
                tag.set_ethertype(ip_type);
            }
        }
        let ip_len = hl - l2 + ip_payload.len();
        let l3 = &mut f[l2..l2 + ip_len];
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut ip = Ipv4Packet::new_unchecked(l3);
                ip.set_version(4);
                ip.set_header_len(20);
                ip.set_dscp(0);
                ip.set_ecn(0);
                ip.set_total_len(u16::try_from(ip_len).unwrap_or(u16::MAX));
                ip.set_ident(self.ident as u16);
                ip.clear_flags();
                match self.frag {
                    Some((offset, more)) => {
                        ip.set_more_frags(more);
                        ip.set_frag_offset(offset);
                    }
                    None => ip.set_dont_frag(self.dont_frag),
                }
                ip.set_ttl(self.ttl);
                ip.set_protocol(IpProtocol(self.proto));
                ip.set_src_addr(src);
                ip.set_dst_addr(dst);
                ip.fill_checksum();
            }
            (src, dst) => {
                let mut ip = Ipv6Packet::new_unchecked(l3);
                ip.set_version(6);
                ip.set_traffic_class(0);
                ip.set_flow_label(self.flow_label & 0x000f_ffff);
                ip.set_payload_len(u16::try_from(ip_len - 40).unwrap_or(u16::MAX));
                ip.set_hop_limit(self.ttl);
                if let IpAddr::V6(s) = src {
                    ip.set_src_addr(s);
                }
                if let IpAddr::V6(d) = dst {
                    ip.set_dst_addr(d);
                }
                match self.frag {
                    Some((offset, more)) => {
                        ip.set_next_header(IpProtocol::IPV6_FRAG);
                        let mut fh = FragmentHeader::new_unchecked(&mut ip.payload_mut()[..8]);
                        fh.set_next_header(IpProtocol(self.proto));
                        fh.set_frag_offset(offset);
                        fh.set_more_frags(more);
                        fh.set_ident(self.ident);
                    }
                    None => ip.set_next_header(IpProtocol(self.proto)),
                }
            }
        }
        f
    }
}

/// A whole (unfragmented) frame: `header` with its protocol taken from `t`,
/// carrying `t` and `payload`.
pub fn build(header: &IpHeader, t: &Transport, payload: &[u8]) -> Vec<u8> {
    let h = IpHeader {
        proto: t.ip_protocol(header.src.is_ipv6()),
        ..*header
    };
    h.frame(&segment(h.src, h.dst, t, payload))
}

/// Payload bytes that make a frame of `frame_len` bytes (FCS excluded)
/// from headers of `header_len` bytes; empty if the headers alone reach it.
pub fn payload_for(frame_len: usize, header_len: usize) -> usize {
    frame_len.saturating_sub(header_len)
}

/// A deterministic, recognisable payload: byte `i` is `(seed + i) as u8`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::{parse, Fragment, L3, L4};

    fn v4() -> (IpAddr, IpAddr) {
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
    }

    fn v6() -> (IpAddr, IpAddr) {
        ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
    }

    #[test]
    fn icmp_echo_both_families_parse_and_verify() {
        let (s, d) = v4();
        let f = build(
            &IpHeader::new(s, d, 0),
            &Transport::echo(8, 0x1234, 7),
            b"abcd",
        );
        assert_eq!(f.len(), MIN_FRAME_LEN);
        let p = parse(&f).unwrap();
        assert_eq!(
            p.l4,
            L4::Icmp {
                ty: 8,
                code: 0,
                ident: Some(0x1234)
            }
        );
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), 20 + 8 + 4);
        assert!(Icmpv4Packet::new_checked(ip.into_payload())
            .unwrap()
            .verify_checksum());

        let (s, d) = v6();
        let mut h = IpHeader::new(s, d, 0);
        h.vlan = Some(30);
        let f = build(&h, &Transport::echo(128, 9, 1), &[0; 100]);
        let p = parse(&f).unwrap();
        assert_eq!(p.vlans, [Some(30), None]);
        assert_eq!(
            p.l4,
            L4::Icmpv6 {
                ty: 128,
                code: 0,
                ident: Some(9)
            }
        );
        let ip = Ipv6Packet::new_checked(&f[18..]).unwrap();
        let (IpAddr::V6(s6), IpAddr::V6(d6)) = (s, d) else {
            unreachable!()
        };
        assert!(Icmpv6Packet::new_checked(ip.into_payload())
            .unwrap()
            .verify_checksum(s6, d6));
    }

    #[test]
    fn fragments_carry_the_fragment_fields() {
        for (s, d) in [v4(), v6()] {
            let mut h = IpHeader::new(s, d, 17);
            h.ident = 0xabcd;
            h.frag = Some((16, true));
            let f = h.frame(&[0u8; 24]);
            let p = parse(&f).unwrap();
            assert_eq!(
                p.fragment(),
                Some(Fragment {
                    offset: 16,
                    more: true,
                    ident: 0xabcd
                })
            );
            assert_eq!(p.l4, L4::None);
            assert_eq!(p.ip_proto(), Some(IpProtocol::UDP));
        }
    }

    #[test]
    fn raw_protocol_and_reversal() {
        let (s, d) = v4();
        let h = IpHeader::new(s, d, 0);
        let f = build(&h.reversed(), &Transport::Raw { proto: 47 }, &[1; 40]);
        let p = parse(&f).unwrap();
        assert!(matches!(
            p.l3,
            L3::Ipv4 {
                proto: IpProtocol(47),
                ..
            }
        ));
        assert_eq!(p.src_ip(), Some(d));
        assert_eq!(p.l4, L4::None);
        assert_eq!(f.len(), 14 + 20 + 40);
    }
}
