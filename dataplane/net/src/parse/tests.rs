use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::arp::ArpPacket;
use crate::ethernet::{EthernetFrame, MacAddr};
use crate::fixtures;
use crate::icmpv4::Icmpv4Packet;
use crate::icmpv6::Icmpv6Packet;
use crate::ipv4::Ipv4Packet;
use crate::ipv6::{ExtHeader, FragmentHeader, Ipv6Packet};
use crate::tcp::TcpPacket;
use crate::udp::UdpPacket;
use crate::vlan::VlanTag;

/// Checks a successful parse against the views, so the fast path and the
/// views cannot silently disagree.
fn cross_check(frame: &[u8], p: &Parsed) {
    assert!(p.l3_offset <= frame.len());
    assert!(p.l4_offset.is_none_or(|o| o <= frame.len()));
    let eth = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(
        p.vlan_count(),
        (p.l3_offset - EthernetFrame::<&[u8]>::HEADER_LEN) / 4
    );
    if p.vlan_count() == 0 {
        assert_eq!(eth.ethertype(), p.ethertype);
    } else {
        let tag = VlanTag::new_checked(&frame[14..]).unwrap();
        assert_eq!(Some(tag.vid()), p.vlans[0]);
    }
    let l3 = &frame[p.l3_offset..];
    match p.l3 {
        L3::Ipv4 {
            src,
            dst,
            proto,
            frag,
            ttl,
        } => {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            assert_eq!((ip.src_addr(), ip.dst_addr()), (src, dst));
            assert_eq!((ip.protocol(), ip.ttl()), (proto, ttl));
            assert_eq!(ip.is_fragment(), frag.is_some());
            if let Some(f) = frag {
                assert_eq!(f.offset, ip.frag_offset());
                assert_eq!(f.more, ip.more_frags());
                assert_eq!(f.ident, u32::from(ip.ident()));
            }
            match p.l4_offset {
                Some(o) => {
                    assert_eq!(o, p.l3_offset + ip.header_len());
                    cross_check_l4(ip.payload(), p.l4, frag.is_some());
                }
                None => {
                    assert!(frag.is_some_and(|f| !f.is_first()));
                    assert_eq!(p.l4, L4::None);
                }
            }
        }
        L3::Ipv6 {
            src,
            dst,
            next,
            frag,
        } => {
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            assert_eq!((ip.src_addr(), ip.dst_addr()), (src, dst));
            let w = ip.walk_extension_headers().unwrap();
            assert_eq!(w.upper_protocol, next);
            assert_eq!(w.fragment, frag);
            match p.l4_offset {
                Some(o) => {
                    assert_eq!(o, p.l3_offset + w.upper_offset);
                    let end = 40 + usize::from(ip.payload_len());
                    let upper = &l3[w.upper_offset..end];
                    cross_check_l4(upper, p.l4, frag.is_some());
                }
                None => {
                    assert!(frag.is_some_and(|f| !f.is_first()));
                    assert_eq!(p.l4, L4::None);
                }
            }
        }
        L3::Arp => {
            ArpPacket::new_checked(l3).unwrap();
            assert_eq!(p.l4_offset, None);
        }
        L3::Other(et) => {
            assert_eq!(et, p.ethertype);
            assert_eq!(p.l4_offset, None);
        }
    }
}

fn cross_check_l4(b: &[u8], l4: L4, fragmented: bool) {
    match l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
            window,
            payload_len,
        } => {
            let t = TcpPacket::new_checked(b).unwrap();
            assert_eq!((t.src_port(), t.dst_port()), (sport, dport));
            assert_eq!((t.seq_number(), t.ack_number()), (seq, ack));
            assert_eq!((t.flags(), t.window_len()), (flags, window));
            assert_eq!(t.payload().len(), usize::from(payload_len));
            for _ in t.options() {}
        }
        L4::Udp { sport, dport } => {
            let u = if fragmented {
                UdpPacket::new_checked_header(b).unwrap()
            } else {
                UdpPacket::new_checked(b).unwrap()
            };
            assert_eq!((u.src_port(), u.dst_port()), (sport, dport));
        }
        L4::Icmp { ty, code, ident } => {
            let m = Icmpv4Packet::new_checked(b).unwrap();
            assert_eq!(
                (m.msg_type(), m.msg_code(), m.echo_ident()),
                (ty, code, ident)
            );
        }
        L4::Icmpv6 { ty, code, ident } => {
            let m = Icmpv6Packet::new_checked(b).unwrap();
            assert_eq!(
                (m.msg_type(), m.msg_code(), m.echo_ident()),
                (ty, code, ident)
            );
        }
        L4::None => {}
    }
}

fn parse_ok(frame: &[u8]) -> Parsed {
    let p = parse(frame).unwrap_or_else(|e| panic!("{e} ({})", e.as_str()));
    cross_check(frame, &p);
    p
}

#[test]
fn tcp_syn_v4() {
    let p = parse_ok(&fixtures::TCP_SYN_V4);
    assert_eq!(p.vlans, [None, None]);
    assert_eq!(p.ethertype, EtherType::IPV4);
    assert_eq!(p.l3_offset, 14);
    assert_eq!(
        p.l3,
        L3::Ipv4 {
            src: Ipv4Addr::new(192, 168, 1, 100),
            dst: Ipv4Addr::new(93, 184, 216, 34),
            proto: IpProtocol::TCP,
            frag: None,
            ttl: 64,
        }
    );
    assert_eq!(p.l4_offset, Some(34));
    assert_eq!(
        p.l4,
        L4::Tcp {
            sport: 54321,
            dport: 80,
            flags: TcpFlags::SYN,
            seq: 0x6b8b4567,
            ack: 0,
            window: 64240,
            payload_len: 0,
        }
    );
    assert_eq!(p.ports(), Some((54321, 80)));
    assert_eq!(p.ip_proto(), Some(IpProtocol::TCP));
    assert_eq!(p.src_ip(), Some(Ipv4Addr::new(192, 168, 1, 100).into()));
    assert_eq!(p.dst_ip(), Some(Ipv4Addr::new(93, 184, 216, 34).into()));
    assert_eq!(p.fragment(), None);
}

#[test]
fn udp_v6_hbh_frag() {
    let p = parse_ok(&fixtures::UDP_V6_HBH_FRAG);
    assert_eq!(p.ethertype, EtherType::IPV6);
    assert_eq!(
        p.l3,
        L3::Ipv6 {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next: IpProtocol::UDP,
            frag: Some(Fragment {
                offset: 0,
                more: false,
                ident: 0xdeadbeef
            }),
        }
    );
    assert_eq!(p.l4_offset, Some(14 + 40 + 8 + 8));
    assert_eq!(
        p.l4,
        L4::Udp {
            sport: 40000,
            dport: 53
        }
    );
}

#[test]
fn icmp_echo_qinq() {
    let p = parse_ok(&fixtures::ICMP_ECHO_QINQ);
    assert_eq!(p.vlans, [Some(100), Some(200)]);
    assert_eq!(p.vlan_count(), 2);
    assert_eq!(p.ethertype, EtherType::IPV4);
    assert_eq!(p.l3_offset, 22);
    assert_eq!(
        p.l3,
        L3::Ipv4 {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            proto: IpProtocol::ICMP,
            frag: None,
            ttl: 64,
        }
    );
    assert_eq!(p.l4_offset, Some(42));
    assert_eq!(
        p.l4,
        L4::Icmp {
            ty: 8,
            code: 0,
            ident: Some(0x1234)
        }
    );
    assert_eq!(p.ports(), None);
    // The S-tag's PCP is not part of the id.
    let tag = VlanTag::new_checked(&fixtures::ICMP_ECHO_QINQ[14..]).unwrap();
    assert_eq!((tag.pcp(), tag.ethertype()), (3, EtherType::VLAN));
}

#[test]
fn icmp_port_unreachable() {
    let p = parse_ok(&fixtures::ICMP_PORT_UNREACH);
    assert_eq!(
        p.l4,
        L4::Icmp {
            ty: 3,
            code: 3,
            ident: None
        }
    );
}

#[test]
fn icmpv6_ns() {
    let p = parse_ok(&fixtures::ICMPV6_NS);
    assert_eq!(
        p.l3,
        L3::Ipv6 {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1:ff00:2".parse().unwrap(),
            next: IpProtocol::ICMPV6,
            frag: None,
        }
    );
    assert_eq!(
        p.l4,
        L4::Icmpv6 {
            ty: 135,
            code: 0,
            ident: None
        }
    );
    assert_eq!(p.l4_offset, Some(54));
}

#[test]
fn arp_request() {
    let p = parse_ok(&fixtures::ARP_REQUEST);
    assert_eq!(p.l3, L3::Arp);
    assert_eq!(p.ethertype, EtherType::ARP);
    assert_eq!((p.l4_offset, p.l4), (None, L4::None));
    assert_eq!(p.src_ip(), None);
    let arp = ArpPacket::new_checked(&fixtures::ARP_REQUEST[p.l3_offset..]).unwrap();
    assert_eq!(arp.tpa(), Ipv4Addr::new(192, 168, 1, 1));
}

#[test]
fn other_ethertype() {
    let mut f = fixtures::ARP_REQUEST;
    f[12..14].copy_from_slice(&0x88ccu16.to_be_bytes()); // LLDP
    let p = parse_ok(&f);
    assert_eq!(p.l3, L3::Other(EtherType(0x88cc)));
}

/// Every prefix of every fixture either fails or parses to exactly what the
/// whole frame parses to (possible only when the cut removes padding).
#[test]
fn truncations() {
    for frame in fixtures::ALL {
        let full = parse_ok(frame);
        for n in 0..frame.len() {
            if let Ok(p) = parse(&frame[..n]) {
                cross_check(&frame[..n], &p);
                assert_eq!(p, full, "prefix {n} of {frame:02x?}");
            }
        }
    }
}

/// Flipping any single bit of any fixture never panics, and whatever parses
/// agrees with the views.
#[test]
fn bit_flips() {
    for frame in fixtures::ALL {
        let mut f = frame.to_vec();
        for i in 0..f.len() * 8 {
            f[i / 8] ^= 1 << (i % 8);
            if let Ok(p) = parse(&f) {
                cross_check(&f, &p);
            }
            f[i / 8] ^= 1 << (i % 8);
        }
    }
}

fn syn() -> Vec<u8> {
    fixtures::TCP_SYN_V4.to_vec()
}

#[test]
fn ipv4_malformed() {
    let mut f = syn();
    f[14] = 0x65;
    assert_eq!(parse(&f), Err(ParseError::BadIpVersion));
    f[14] = 0x44;
    assert_eq!(parse(&f), Err(ParseError::BadIhl));
    f[14] = 0x40;
    assert_eq!(parse(&f), Err(ParseError::BadIhl));
    // IHL 15 (60 bytes) needs more than the 40 bytes left after 14 + 20.
    f[14] = 0x4f;
    assert_eq!(parse(&f[..14 + 40]), Err(ParseError::BadIhl));
    // IHL within the frame but beyond total length.
    f[16..18].copy_from_slice(&56u16.to_be_bytes());
    assert_eq!(parse(&f), Err(ParseError::BadTotalLength));
    f[14] = 0x45;
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(parse(&f), Err(ParseError::BadTotalLength));
    f[16..18].copy_from_slice(&61u16.to_be_bytes());
    assert_eq!(parse(&f), Err(ParseError::BadTotalLength));
    assert_eq!(
        parse(&f[..33]),
        Err(ParseError::Truncated { layer: Layer::Ipv4 })
    );
}

#[test]
fn tcp_malformed() {
    let mut f = syn();
    f[34 + 12] = 0x40;
    assert_eq!(parse(&f), Err(ParseError::BadTcpDataOffset));
    f[34 + 12] = 0xb0;
    assert_eq!(parse(&f), Err(ParseError::BadTcpDataOffset));
    // A segment too short for the fixed header (tiny first fragment).
    let mut f = syn();
    f[16..18].copy_from_slice(&(20u16 + 16).to_be_bytes());
    f[20] |= 0x20; // MF
    assert_eq!(parse(&f), Err(ParseError::Truncated { layer: Layer::Tcp }));
}

#[test]
fn tcp_bad_options_are_not_parse_errors() {
    // parse() does not look at options; the iterator reports them.
    let mut f = syn();
    f[54..58].copy_from_slice(&[2, 0, 0, 0]);
    let p = parse_ok(&f);
    assert!(matches!(p.l4, L4::Tcp { .. }));
    let t = TcpPacket::new_checked(&f[34..]).unwrap();
    assert_eq!(
        t.options().collect::<Vec<_>>(),
        vec![Err(crate::Error::Malformed)]
    );
}

fn udp_v4_frame(udp_len: u16, frag_flags: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 12];
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_ethertype(EtherType::IPV4);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip.set_version(4);
    ip.set_header_len(20);
    ip.set_total_len(32);
    ip.set_protocol(IpProtocol::UDP);
    ip.set_more_frags(frag_flags & 1 != 0);
    ip.set_frag_offset(frag_flags & !1);
    ip.fill_checksum();
    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    udp.set_src_port(1);
    udp.set_dst_port(2);
    udp.set_len(udp_len);
    f
}

#[test]
fn udp_lengths() {
    assert_eq!(parse(&udp_v4_frame(7, 0)), Err(ParseError::BadUdpLength));
    assert_eq!(parse(&udp_v4_frame(0, 0)), Err(ParseError::BadUdpLength));
    assert_eq!(parse(&udp_v4_frame(13, 0)), Err(ParseError::BadUdpLength));
    let p = parse_ok(&udp_v4_frame(12, 0));
    assert_eq!(p.l4, L4::Udp { sport: 1, dport: 2 });
    // A first fragment's length covers later fragments.
    let p = parse_ok(&udp_v4_frame(3000, 1));
    assert_eq!(p.l4, L4::Udp { sport: 1, dport: 2 });
    assert_eq!(
        p.fragment(),
        Some(Fragment {
            offset: 0,
            more: true,
            ident: 0
        })
    );
    // ...but still cannot be below 8.
    assert_eq!(parse(&udp_v4_frame(7, 1)), Err(ParseError::BadUdpLength));
}

#[test]
fn ipv4_non_first_fragment() {
    for flags in [1480 | 1, 1480] {
        // Garbage where a UDP header would be is fine: it is data.
        let p = parse_ok(&udp_v4_frame(0, flags));
        assert_eq!(p.l4, L4::None);
        assert_eq!(p.l4_offset, None);
        assert_eq!(
            p.fragment(),
            Some(Fragment {
                offset: 1480,
                more: flags & 1 != 0,
                ident: 0
            })
        );
    }
}

/// The IPv6 fixture with the fragment header's offset/flags replaced.
fn v6_frag(off_flags: u16) -> Vec<u8> {
    let mut f = fixtures::UDP_V6_HBH_FRAG.to_vec();
    f[14 + 40 + 8 + 2..14 + 40 + 8 + 4].copy_from_slice(&off_flags.to_be_bytes());
    f
}

#[test]
fn ipv6_fragments() {
    let p = parse_ok(&v6_frag(1));
    assert_eq!(p.fragment().map(|f| (f.offset, f.more)), Some((0, true)));
    assert!(matches!(p.l4, L4::Udp { .. }));
    let p = parse_ok(&v6_frag(1232 | 1));
    assert_eq!(p.fragment().map(|f| (f.offset, f.more)), Some((1232, true)));
    assert_eq!((p.l4, p.l4_offset), (L4::None, None));
    assert_eq!(p.ip_proto(), Some(IpProtocol::UDP));
}

/// Builds an IPv6 frame whose payload is `ext` followed by an 8-byte UDP
/// header; `first` is the fixed header's next-header value.
fn v6_with_ext(first: u8, ext: &[u8]) -> Vec<u8> {
    let mut f = fixtures::UDP_V6_HBH_FRAG[..54].to_vec();
    f[14 + 6] = first;
    f.extend_from_slice(ext);
    f.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
    let plen = u16::try_from(f.len() - 54).unwrap();
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f
}

fn opts_chain(n: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    for i in 0..n {
        ext.extend_from_slice(&[if i + 1 == n { 17 } else { 60 }, 0, 1, 4, 0, 0, 0, 0]);
    }
    ext
}

#[test]
fn ipv6_ext_headers() {
    let p = parse_ok(&v6_with_ext(60, &opts_chain(8)));
    assert_eq!(p.l4, L4::Udp { sport: 1, dport: 2 });
    assert_eq!(p.l4_offset, Some(54 + 64));
    assert_eq!(
        parse(&v6_with_ext(60, &opts_chain(9))),
        Err(ParseError::TooManyExtHeaders)
    );
    // Hop-by-hop after a destination-options header.
    let ext = [0, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    assert_eq!(
        parse(&v6_with_ext(60, &ext)),
        Err(ParseError::HopByHopNotFirst)
    );
    // An extension header running past the payload length.
    let ext = [17, 4, 1, 4, 0, 0, 0, 0];
    assert_eq!(
        parse(&v6_with_ext(60, &ext)),
        Err(ParseError::Truncated {
            layer: Layer::Ipv6Ext
        })
    );
    // AH too short to hold itself.
    let ext = [17, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(parse(&v6_with_ext(51, &ext)), Err(ParseError::BadExtHeader));
    // ESP is opaque: no transport header, but its offset is known.
    let p = parse_ok(&v6_with_ext(50, &[]));
    assert_eq!(p.ip_proto(), Some(IpProtocol::ESP));
    assert_eq!((p.l4, p.l4_offset), (L4::None, Some(54)));
}

#[test]
fn ipv6_malformed() {
    let mut f = fixtures::UDP_V6_HBH_FRAG.to_vec();
    f[14] = 0x45;
    assert_eq!(parse(&f), Err(ParseError::BadIpVersion));
    let mut f = fixtures::UDP_V6_HBH_FRAG.to_vec();
    f[18..20].copy_from_slice(&37u16.to_be_bytes());
    assert_eq!(parse(&f), Err(ParseError::BadPayloadLength));
    assert_eq!(
        parse(&f[..53]),
        Err(ParseError::Truncated { layer: Layer::Ipv6 })
    );
    // ICMP (v4) inside IPv6 is not decoded as either ICMP flavour.
    let p = parse_ok(&v6_with_ext(1, &[]));
    assert_eq!(p.l4, L4::None);
}

#[test]
fn vlan_tags() {
    // One tag.
    let mut f = fixtures::ICMP_ECHO_QINQ.to_vec();
    f.drain(14..18);
    f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
    let p = parse_ok(&f);
    assert_eq!(p.vlans, [Some(200), None]);
    assert_eq!(p.l3_offset, 18);
    // Three tags.
    let mut f = fixtures::ICMP_ECHO_QINQ.to_vec();
    f.splice(18..18, [0x00, 0x2a, 0x91, 0x00]);
    f[16..18].copy_from_slice(&0x9100u16.to_be_bytes());
    assert_eq!(parse(&f), Err(ParseError::TooManyVlanTags));
    assert_eq!(parse(&f[..22]), Err(ParseError::TooManyVlanTags));
    assert_eq!(
        parse(&f[..17]),
        Err(ParseError::Truncated { layer: Layer::Vlan })
    );
}

#[test]
fn arp_malformed() {
    let mut f = fixtures::ARP_REQUEST;
    f[18] = 8;
    assert_eq!(parse(&f), Err(ParseError::BadArp));
    assert_eq!(
        parse(&fixtures::ARP_REQUEST[..41]),
        Err(ParseError::Truncated { layer: Layer::Arp })
    );
}

#[test]
fn error_labels_are_unique_snake_case() {
    let mut seen = std::collections::HashSet::new();
    for e in ParseError::ALL {
        let s = e.as_str();
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
        assert!(seen.insert(s), "duplicate label {s}");
        assert!(!e.to_string().is_empty());
    }
    assert_eq!(
        ParseError::Truncated {
            layer: Layer::Ipv6Ext
        }
        .to_string(),
        "truncated ipv6_ext header"
    );
}

#[test]
fn parsed_stays_small() {
    // It is returned by value per packet; keep it within two cache lines.
    assert!(core::mem::size_of::<Parsed>() <= 128);
    assert!(core::mem::size_of::<ParseError>() <= 2);
}

// ---- Structured generation -------------------------------------------------

#[derive(Debug, Clone)]
enum IpSpec {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
        opt_words: usize,
        /// First fragment with MF set.
        first_frag: Option<u16>,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hbh: bool,
        opts: usize,
        /// Atomic or first fragment: (more, ident).
        frag: Option<(bool, u32)>,
    },
}

#[derive(Debug, Clone)]
enum L4Spec {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u16,
        seq: u32,
        ack: u32,
        window: u16,
        opt_words: usize,
        payload_len: usize,
    },
    Udp {
        sport: u16,
        dport: u16,
        payload_len: usize,
    },
    Icmp {
        ty: u8,
        code: u8,
        ident: u16,
        payload_len: usize,
    },
}

#[derive(Debug, Clone)]
struct FrameSpec {
    vlans: Vec<u16>,
    ip: IpSpec,
    l4: L4Spec,
    padding: usize,
}

/// Writes the frame described by `spec` using only the views' setters, and
/// returns it with the `Parsed` it must produce.
fn build(spec: &FrameSpec) -> (Vec<u8>, Parsed) {
    let l4_len = match spec.l4 {
        L4Spec::Tcp {
            opt_words,
            payload_len,
            ..
        } => 20 + 4 * opt_words + payload_len,
        L4Spec::Udp { payload_len, .. } | L4Spec::Icmp { payload_len, .. } => 8 + payload_len,
    };
    let l3_hdr = match spec.ip {
        IpSpec::V4 { opt_words, .. } => 20 + 4 * opt_words,
        IpSpec::V6 {
            hbh, opts, frag, ..
        } => 40 + 8 * (usize::from(hbh) + opts + usize::from(frag.is_some())),
    };
    let l3_offset = 14 + 4 * spec.vlans.len();
    let ip_len = l3_hdr + l4_len;
    let mut f = vec![0u8; l3_offset + ip_len + spec.padding];
    let ethertype = match spec.ip {
        IpSpec::V4 { .. } => EtherType::IPV4,
        IpSpec::V6 { .. } => EtherType::IPV6,
    };
    let mut eth = EthernetFrame::new_unchecked(&mut f[..]);
    eth.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 2]));
    eth.set_src_addr(MacAddr([2, 0, 0, 0, 0, 1]));
    let mut vlans = [None; 2];
    let mut next_type = ethertype;
    let mut rest = eth.payload_mut();
    let outer_tpid = if spec.vlans.len() == 2 {
        EtherType::QINQ
    } else {
        EtherType::VLAN
    };
    // Write tags outermost first; each tag holds the next type.
    for (i, &vid) in spec.vlans.iter().enumerate() {
        vlans[i] = Some(vid & 0xfff);
        let mut tag = VlanTag::new_unchecked(&mut rest[..4]);
        tag.set_vid(vid);
        tag.set_pcp(i as u8);
        tag.set_ethertype(if i + 1 == spec.vlans.len() {
            ethertype
        } else {
            EtherType::VLAN
        });
        rest = &mut rest[4..];
    }
    if !spec.vlans.is_empty() {
        next_type = outer_tpid;
    }
    EthernetFrame::new_unchecked(&mut f[..]).set_ethertype(next_type);

    let mut frag = None;
    let l4_offset;
    let proto;
    let l3 = &mut f[l3_offset..l3_offset + ip_len];
    let l3_parsed = match spec.ip {
        IpSpec::V4 {
            src,
            dst,
            ttl,
            opt_words,
            first_frag,
        } => {
            proto = match spec.l4 {
                L4Spec::Tcp { .. } => IpProtocol::TCP,
                L4Spec::Udp { .. } => IpProtocol::UDP,
                L4Spec::Icmp { .. } => IpProtocol::ICMP,
            };
            let mut ip = Ipv4Packet::new_unchecked(&mut l3[..]);
            ip.set_version(4);
            ip.set_header_len(l3_hdr);
            ip.set_total_len(u16::try_from(ip_len).unwrap());
            ip.set_ttl(ttl);
            ip.set_protocol(proto);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            for (i, b) in ip.options_mut().iter_mut().enumerate() {
                // NOPs, then End of List in the last byte.
                *b = if i + 1 == opt_words * 4 { 0 } else { 1 };
            }
            if let Some(ident) = first_frag {
                ip.set_ident(ident);
                ip.set_more_frags(true);
                frag = Some(Fragment {
                    offset: 0,
                    more: true,
                    ident: u32::from(ident),
                });
            } else {
                ip.set_dont_frag(true);
            }
            ip.fill_checksum();
            l4_offset = l3_offset + l3_hdr;
            L3::Ipv4 {
                src,
                dst,
                proto,
                frag,
                ttl,
            }
        }
        IpSpec::V6 {
            src,
            dst,
            hbh,
            opts,
            frag: frag_spec,
        } => {
            proto = match spec.l4 {
                L4Spec::Tcp { .. } => IpProtocol::TCP,
                L4Spec::Udp { .. } => IpProtocol::UDP,
                L4Spec::Icmp { .. } => IpProtocol::ICMPV6,
            };
            let mut chain = Vec::new();
            if hbh {
                chain.push(IpProtocol::HOPOPT);
            }
            chain.extend(std::iter::repeat_n(IpProtocol::IPV6_OPTS, opts));
            if frag_spec.is_some() {
                chain.push(IpProtocol::IPV6_FRAG);
            }
            let mut ip = Ipv6Packet::new_unchecked(&mut l3[..]);
            ip.set_version(6);
            ip.set_payload_len(u16::try_from(ip_len - 40).unwrap());
            ip.set_next_header(chain.first().copied().unwrap_or(proto));
            ip.set_hop_limit(64);
            ip.set_src_addr(src);
            ip.set_dst_addr(dst);
            let payload = ip.payload_mut();
            for (i, &kind) in chain.iter().enumerate() {
                let next = chain.get(i + 1).copied().unwrap_or(proto);
                let hdr = &mut payload[i * 8..i * 8 + 8];
                if kind == IpProtocol::IPV6_FRAG {
                    let (more, ident) = frag_spec.unwrap();
                    let mut fh = FragmentHeader::new_unchecked(hdr);
                    fh.set_next_header(next);
                    fh.set_more_frags(more);
                    fh.set_ident(ident);
                    frag = Some(Fragment {
                        offset: 0,
                        more,
                        ident,
                    });
                } else {
                    let mut eh = ExtHeader::new_unchecked(hdr);
                    eh.set_next_header(next);
                    eh.set_header_len(8);
                    eh.data_mut().copy_from_slice(&[1, 4, 0, 0, 0, 0]);
                }
            }
            l4_offset = l3_offset + l3_hdr;
            L3::Ipv6 {
                src,
                dst,
                next: proto,
                frag,
            }
        }
    };
    let l4_slice = &mut f[l4_offset..l4_offset + l4_len];
    let l4 = match spec.l4 {
        L4Spec::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
            window,
            opt_words,
            payload_len,
        } => {
            let mut t = TcpPacket::new_unchecked(&mut l4_slice[..]);
            t.set_src_port(sport);
            t.set_dst_port(dport);
            t.set_seq_number(seq);
            t.set_ack_number(ack);
            t.set_header_len(20 + 4 * opt_words);
            t.set_flags(TcpFlags::from_bits_truncate(flags));
            t.set_window_len(window);
            let o = t.options_mut();
            let mut at = 0;
            while at + 4 <= o.len() {
                at += crate::tcp::TcpOption::Mss(1460).emit(&mut o[at..]).unwrap();
            }
            t.payload_mut().fill(0x5a);
            L4::Tcp {
                sport,
                dport,
                flags: TcpFlags::from_bits_truncate(flags),
                seq,
                ack,
                window,
                payload_len: u16::try_from(payload_len).unwrap(),
            }
        }
        L4Spec::Udp { sport, dport, .. } => {
            let mut u = UdpPacket::new_unchecked(&mut l4_slice[..]);
            u.set_src_port(sport);
            u.set_dst_port(dport);
            u.set_len(u16::try_from(l4_len).unwrap());
            L4::Udp { sport, dport }
        }
        L4Spec::Icmp {
            ty, code, ident, ..
        } => {
            let v6 = matches!(spec.ip, IpSpec::V6 { .. });
            let mut m = Icmpv4Packet::new_unchecked(&mut l4_slice[..]);
            m.set_msg_type(ty);
            m.set_msg_code(code);
            m.set_echo_ident(ident);
            if v6 {
                L4::Icmpv6 {
                    ty,
                    code,
                    ident: crate::icmpv6::is_echo(ty).then_some(ident),
                }
            } else {
                L4::Icmp {
                    ty,
                    code,
                    ident: crate::icmpv4::is_echo(ty).then_some(ident),
                }
            }
        }
    };
    let parsed = Parsed {
        vlans,
        ethertype,
        l3_offset,
        l3: l3_parsed,
        l4_offset: Some(l4_offset),
        l4,
    };
    (f, parsed)
}

fn ip_spec() -> impl Strategy<Value = IpSpec> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0usize..=10,
            proptest::option::of(any::<u16>()),
        )
            .prop_map(|(s, d, ttl, opt_words, first_frag)| IpSpec::V4 {
                src: s.into(),
                dst: d.into(),
                ttl,
                opt_words,
                first_frag,
            }),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<bool>(),
            0usize..=6,
            proptest::option::of((any::<bool>(), any::<u32>())),
        )
            .prop_map(|(s, d, hbh, opts, frag)| IpSpec::V6 {
                src: s.into(),
                dst: d.into(),
                hbh,
                opts,
                frag,
            }),
    ]
}

fn l4_spec() -> impl Strategy<Value = L4Spec> {
    prop_oneof![
        (
            any::<(u16, u16, u16)>(),
            any::<(u32, u32, u16)>(),
            0usize..=10,
            0usize..600
        )
            .prop_map(
                |((sport, dport, flags), (seq, ack, window), opt_words, payload_len)| {
                    L4Spec::Tcp {
                        sport,
                        dport,
                        flags,
                        seq,
                        ack,
                        window,
                        opt_words,
                        payload_len,
                    }
                }
            ),
        (any::<u16>(), any::<u16>(), 0usize..600).prop_map(|(sport, dport, payload_len)| {
            L4Spec::Udp {
                sport,
                dport,
                payload_len,
            }
        }),
        (any::<u8>(), any::<u8>(), any::<u16>(), 0usize..100).prop_map(
            |(ty, code, ident, payload_len)| L4Spec::Icmp {
                ty,
                code,
                ident,
                payload_len,
            }
        ),
    ]
}

fn frame_spec() -> impl Strategy<Value = FrameSpec> {
    (
        proptest::collection::vec(0u16..4096, 0..=2),
        ip_spec(),
        l4_spec(),
        0usize..32,
    )
        .prop_map(|(vlans, ip, l4, padding)| FrameSpec {
            vlans,
            ip,
            l4,
            padding,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Ok(p) = parse(&bytes) {
            cross_check(&bytes, &p);
        }
    }

    /// Random bytes behind a valid Ethernet/VLAN/IP prefix reach the deeper
    /// layers far more often than fully random input.
    #[test]
    fn never_panics_behind_valid_prefix(
        which in 0usize..fixtures::ALL.len(),
        cut in 0usize..100,
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let base = fixtures::ALL[which];
        let mut f = base[..cut.min(base.len())].to_vec();
        f.extend_from_slice(&tail);
        if let Ok(p) = parse(&f) {
            cross_check(&f, &p);
        }
    }

    #[test]
    fn round_trips_generated_frames(spec in frame_spec()) {
        let (frame, want) = build(&spec);
        let got = parse(&frame);
        prop_assert_eq!(got, Ok(want));
        cross_check(&frame, &want);
    }
}

/// Walking down the layers with temporaries, as the dataplane does.
#[test]
fn into_payload_outlives_views() {
    fn tcp_payload_of(frame: &[u8]) -> Option<&[u8]> {
        let eth = EthernetFrame::new_checked(frame).ok()?.into_payload();
        let ip = Ipv4Packet::new_checked(eth).ok()?.into_payload();
        let tcp = TcpPacket::new_checked(ip).ok()?;
        assert_eq!(tcp.into_options().count(), 5);
        Some(tcp.into_payload())
    }
    assert_eq!(tcp_payload_of(&fixtures::TCP_SYN_V4), Some(&[][..]));
    let frame = &fixtures::UDP_V6_HBH_FRAG[..];
    let ip = Ipv6Packet::new_checked(&frame[14..])
        .unwrap()
        .into_payload();
    let udp = UdpPacket::new_checked(&ip[16..]).unwrap().into_payload();
    assert_eq!(udp, b"hello bulkhd");
    let qinq = &fixtures::ICMP_ECHO_QINQ[14..];
    let inner = VlanTag::new_checked(qinq).unwrap().into_payload();
    let ip = VlanTag::new_checked(inner).unwrap().into_payload();
    let icmp = Ipv4Packet::new_checked(ip).unwrap().into_payload();
    assert_eq!(
        Icmpv4Packet::new_checked(icmp).unwrap().into_payload(),
        b"abcdefgh"
    );
    let ns = Ipv6Packet::new_checked(&fixtures::ICMPV6_NS[14..])
        .unwrap()
        .into_payload();
    assert_eq!(
        Icmpv6Packet::new_checked(ns).unwrap().into_payload().len(),
        24
    );
}
