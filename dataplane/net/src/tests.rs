//! The emit side against the views and the parser: every `Repr` emitted then parsed gives itself back,
//! re-emitting the byte fixtures' headers gives the fixtures byte for byte, and emitted checksums verify.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::ethernet::{EtherType, EthernetFrame, MacAddr};
use crate::icmpv4::{Icmpv4Packet, Icmpv4Repr};
use crate::icmpv6::{Icmpv6Packet, Icmpv6Repr};
use crate::ip::{Fragment, IpAddrs, IpProtocol};
use crate::ipv4::{Ipv4Packet, Ipv4Repr};
use crate::ipv6::{FragmentHeader, Ipv6FragmentRepr, Ipv6Packet, Ipv6Repr, FRAGMENT_HEADER_LEN};
use crate::link::EthernetRepr;
use crate::tcp::{TcpFlags, TcpPacket, TcpRepr};
use crate::udp::{UdpPacket, UdpRepr};
use crate::vlan::VlanRepr;
use crate::{fixtures, parse, EmitError, L3, L4};

/// Re-emits every header of `frame` from its parsed `Repr`s into a zeroed buffer, copying only what no
/// `Repr` describes (payloads, IPv6 options headers, padding): the result must be `frame` again.
fn re_emit(frame: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; frame.len()];
    let eth = EthernetRepr::parse(frame).unwrap();
    let l3 = eth.emit(&mut out).unwrap();
    match eth.ethertype {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(&frame[l3..]).unwrap();
            let repr = Ipv4Repr::parse(&ip);
            let l4 = l3 + ip.header_len();
            let end = l4 + repr.payload_len;
            out[l4..end].copy_from_slice(ip.payload());
            out[end..].copy_from_slice(&frame[end..]);
            repr.emit(&mut out[l3..]).unwrap();
            let addrs = IpAddrs::V4 {
                src: repr.src,
                dst: repr.dst,
            };
            re_emit_l4(repr.protocol, &addrs, &frame[l4..end], &mut out[l4..end]);
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(&frame[l3..]).unwrap();
            let repr = Ipv6Repr::parse(&ip);
            repr.emit(&mut out[l3..]).unwrap();
            let walk = ip.walk_extension_headers().unwrap();
            let (ext, l4) = (l3 + Ipv6Repr::HEADER_LEN, l3 + walk.upper_offset);
            let end = ext + repr.payload_len;
            out[ext..].copy_from_slice(&frame[ext..]);
            if walk.fragment.is_some() {
                // The fragment header is the last extension header before the upper layer here.
                let at = l4 - FRAGMENT_HEADER_LEN;
                out[at..l4].fill(0);
                let h = FragmentHeader::new_checked(&frame[at..l4]).unwrap();
                Ipv6FragmentRepr::parse(&h).emit(&mut out[at..]).unwrap();
            }
            let addrs = IpAddrs::V6 {
                src: repr.src,
                dst: repr.dst,
            };
            re_emit_l4(
                walk.upper_protocol,
                &addrs,
                &frame[l4..end],
                &mut out[l4..end],
            );
        }
        other => panic!("no IP in the fixture: {other}"),
    }
    out
}

/// Zeroes the transport header in `out` and emits it again from what `seg` says.
fn re_emit_l4(proto: IpProtocol, addrs: &IpAddrs, seg: &[u8], out: &mut [u8]) {
    match proto {
        IpProtocol::TCP => {
            let tcp = TcpPacket::new_checked(seg).unwrap();
            let repr = TcpRepr::parse(&tcp);
            out[..repr.header_len()].fill(0);
            repr.emit(out, addrs).unwrap();
        }
        IpProtocol::UDP => {
            let repr = UdpRepr::parse(&UdpPacket::new_checked(seg).unwrap());
            out[..UdpRepr::HEADER_LEN].fill(0);
            repr.emit(out, addrs).unwrap();
        }
        IpProtocol::ICMP => {
            let repr = Icmpv4Repr::parse(&Icmpv4Packet::new_checked(seg).unwrap());
            out[..Icmpv4Repr::HEADER_LEN].fill(0);
            repr.emit(out).unwrap();
        }
        IpProtocol::ICMPV6 => {
            let IpAddrs::V6 { src, dst } = *addrs else {
                panic!("ICMPv6 over IPv4")
            };
            let repr = Icmpv6Repr::parse(&Icmpv6Packet::new_checked(seg).unwrap());
            out[..Icmpv6Repr::HEADER_LEN].fill(0);
            repr.emit(out, src, dst).unwrap();
        }
        other => panic!("unexpected protocol {other}"),
    }
}

#[test]
fn re_emitted_fixtures_are_byte_identical() {
    for fixture in [
        &fixtures::TCP_SYN_V4[..],
        &fixtures::UDP_V6_HBH_FRAG,
        &fixtures::ICMP_ECHO_QINQ,
        &fixtures::ICMP_PORT_UNREACH,
        &fixtures::ICMPV6_NS,
    ] {
        assert_eq!(re_emit(fixture), fixture);
    }
}

#[test]
fn fixture_reprs_hold_the_documented_fields() {
    let eth = EthernetRepr::parse(&fixtures::ICMP_ECHO_QINQ).unwrap();
    let tags: Vec<_> = eth.tags().collect();
    assert_eq!(
        tags,
        [
            VlanRepr {
                tpid: EtherType::QINQ,
                tci: 0x6064
            },
            VlanRepr {
                tpid: EtherType::VLAN,
                tci: 200
            }
        ]
    );
    assert_eq!((tags[0].vid(), eth.header_len()), (100, 22));
    let syn = &fixtures::TCP_SYN_V4[14..];
    let ip = Ipv4Packet::new_checked(syn).unwrap();
    let repr = TcpRepr::parse(&TcpPacket::new_checked(ip.payload()).unwrap());
    assert_eq!(
        (repr.src_port, repr.dst_port, repr.flags),
        (54321, 80, TcpFlags::SYN)
    );
    assert_eq!((repr.options.len(), repr.header_len()), (20, 40));
}

/// A frame of `len` bytes: the link header, an IPv4 or IPv6 header and a transport, body `0x5a`s.
fn build(
    eth: &EthernetRepr,
    addrs: &IpAddrs,
    l4: &L4Choice,
    len: usize,
) -> Result<Vec<u8>, EmitError> {
    let mut f = vec![0x5au8; len];
    let l3 = eth.emit(&mut f)?;
    let l4_at = l3
        + if addrs.is_ipv6() {
            Ipv6Repr::HEADER_LEN
        } else {
            Ipv4Repr::HEADER_LEN
        };
    let payload_len = len.saturating_sub(l4_at);
    match *addrs {
        IpAddrs::V4 { src, dst } => {
            Ipv4Repr::new(src, dst, l4.protocol(false), payload_len).emit(&mut f[l3..])?
        }
        IpAddrs::V6 { src, dst } => {
            Ipv6Repr::new(src, dst, l4.protocol(true), payload_len).emit(&mut f[l3..])?
        }
    }
    let seg = &mut f[l4_at..];
    match l4 {
        L4Choice::Tcp(t) => TcpRepr {
            options: &[2, 4, 5, 0xb4],
            ..*t
        }
        .emit(seg, addrs)?,
        L4Choice::Udp(u) => u.emit(seg, addrs)?,
        L4Choice::Icmp(i) => match *addrs {
            IpAddrs::V4 { .. } => i.emit(seg)?,
            IpAddrs::V6 { src, dst } => Icmpv6Repr {
                msg_type: i.msg_type,
                msg_code: i.msg_code,
                rest_of_header: i.rest_of_header,
            }
            .emit(seg, src, dst)?,
        },
    }
    Ok(f)
}

#[derive(Debug, Clone)]
enum L4Choice {
    Tcp(TcpRepr<'static>),
    Udp(UdpRepr),
    Icmp(Icmpv4Repr),
}

impl L4Choice {
    fn protocol(&self, ipv6: bool) -> IpProtocol {
        match self {
            L4Choice::Tcp(_) => IpProtocol::TCP,
            L4Choice::Udp(_) => IpProtocol::UDP,
            L4Choice::Icmp(_) if ipv6 => IpProtocol::ICMPV6,
            L4Choice::Icmp(_) => IpProtocol::ICMP,
        }
    }
}

fn arb_eth() -> impl Strategy<Value = EthernetRepr> {
    let tag = (
        prop_oneof![
            Just(EtherType::VLAN),
            Just(EtherType::QINQ),
            Just(EtherType::QINQ_OLD)
        ],
        any::<u16>(),
    )
        .prop_map(|(tpid, tci)| VlanRepr { tpid, tci });
    (
        any::<[u8; 6]>(),
        any::<[u8; 6]>(),
        proptest::option::of(tag.clone()),
        proptest::option::of(tag),
    )
        .prop_map(|(s, d, a, b)| EthernetRepr {
            dst: MacAddr(d),
            src: MacAddr(s),
            vlans: [a, a.and(b)],
            ethertype: EtherType::IPV4,
        })
}

fn arb_addrs() -> impl Strategy<Value = IpAddrs> {
    prop_oneof![
        (any::<u32>(), any::<u32>()).prop_map(|(s, d)| IpAddrs::V4 {
            src: Ipv4Addr::from(s),
            dst: Ipv4Addr::from(d)
        }),
        (any::<u128>(), any::<u128>()).prop_map(|(s, d)| IpAddrs::V6 {
            src: Ipv6Addr::from(s),
            dst: Ipv6Addr::from(d)
        }),
    ]
}

fn arb_l4() -> impl Strategy<Value = L4Choice> {
    prop_oneof![
        (
            any::<[u16; 2]>(),
            any::<[u32; 2]>(),
            0u16..0x200,
            any::<u16>()
        )
            .prop_map(|(p, n, f, w)| {
                L4Choice::Tcp(TcpRepr::new(p[0], p[1], n[0], n[1], TcpFlags(f), w))
            }),
        any::<[u16; 2]>().prop_map(|p| L4Choice::Udp(UdpRepr {
            src_port: p[0],
            dst_port: p[1]
        })),
        (any::<u16>(), any::<u16>()).prop_map(|(i, s)| L4Choice::Icmp(Icmpv4Repr::echo(8, i, s))),
    ]
}

proptest! {
    #[test]
    fn emitted_frames_parse_back_to_their_reprs_with_valid_checksums(
        eth in arb_eth(), addrs in arb_addrs(), l4 in arb_l4(), extra in 0usize..64,
    ) {
        let eth = EthernetRepr {
            ethertype: if addrs.is_ipv6() { EtherType::IPV6 } else { EtherType::IPV4 },
            ..eth
        };
        let ip_header = if addrs.is_ipv6() { Ipv6Repr::HEADER_LEN } else { Ipv4Repr::HEADER_LEN };
        let l4_header = match &l4 { L4Choice::Tcp(_) => 24, _ => 8 };
        let len = eth.header_len() + ip_header + l4_header + extra;
        let f = build(&eth, &addrs, &l4, len).unwrap();

        prop_assert_eq!(EthernetRepr::parse(&f).unwrap(), eth);
        let ip = &f[eth.header_len()..];
        let seg = match addrs {
            IpAddrs::V4 { src, dst } => {
                let p = Ipv4Packet::new_checked(ip).unwrap();
                prop_assert!(p.verify_checksum());
                prop_assert_eq!(Ipv4Repr::parse(&p), Ipv4Repr::new(src, dst, l4.protocol(false), ip.len() - 20));
                &ip[20..]
            }
            IpAddrs::V6 { src, dst } => {
                let p = Ipv6Packet::new_checked(ip).unwrap();
                prop_assert_eq!(Ipv6Repr::parse(&p), Ipv6Repr::new(src, dst, l4.protocol(true), ip.len() - 40));
                &ip[40..]
            }
        };
        match (&l4, addrs) {
            (L4Choice::Tcp(t), _) => {
                let p = TcpPacket::new_checked(seg).unwrap();
                prop_assert_eq!(TcpRepr::parse(&p), TcpRepr { options: &[2, 4, 5, 0xb4], ..*t });
                let verified = match addrs {
                    IpAddrs::V4 { src, dst } => p.verify_checksum_v4(src, dst),
                    IpAddrs::V6 { src, dst } => p.verify_checksum_v6(src, dst),
                };
                prop_assert!(verified);
            }
            (L4Choice::Udp(u), _) => {
                let p = UdpPacket::new_checked(seg).unwrap();
                prop_assert_eq!(UdpRepr::parse(&p), *u);
                prop_assert_eq!(usize::from(p.len()), seg.len());
                let verified = match addrs {
                    IpAddrs::V4 { src, dst } => p.verify_checksum_v4(src, dst),
                    IpAddrs::V6 { src, dst } => p.verify_checksum_v6(src, dst),
                };
                prop_assert!(verified);
            }
            (L4Choice::Icmp(i), IpAddrs::V4 { .. }) => {
                let p = Icmpv4Packet::new_checked(seg).unwrap();
                prop_assert_eq!(Icmpv4Repr::parse(&p), *i);
                prop_assert!(p.verify_checksum());
            }
            (L4Choice::Icmp(i), IpAddrs::V6 { src, dst }) => {
                let p = Icmpv6Packet::new_checked(seg).unwrap();
                prop_assert_eq!(Icmpv6Repr::parse(&p).rest_of_header, i.rest_of_header);
                prop_assert!(p.verify_checksum(src, dst));
            }
        }
        // The parser agrees with the views.
        let p = parse(&f).unwrap();
        prop_assert_eq!(p.l3_offset, eth.header_len());
        prop_assert_eq!(p.src_ip(), Some(addrs.src()));
        prop_assert!(!matches!(p.l4, L4::None));
    }

    #[test]
    fn short_buffers_are_refused_untouched(len in 0usize..60) {
        let eth = EthernetRepr::new(MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]), EtherType::IPV4);
        let addrs = IpAddrs::V4 { src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 0, 2) };
        let tcp = L4Choice::Tcp(TcpRepr::new(1, 2, 3, 4, TcpFlags::SYN, 5));
        // 14 + 20 + 24 bytes of headers are needed.
        prop_assert_eq!(build(&eth, &addrs, &tcp, len).is_ok(), len >= 58);
        let mut buf = vec![0xeeu8; len];
        if Ipv4Repr::new(addrs_src(&addrs), Ipv4Addr::LOCALHOST, IpProtocol::TCP, 0).emit(&mut buf).is_err() {
            prop_assert!(buf.iter().all(|&b| b == 0xee));
        }
    }
}

fn addrs_src(a: &IpAddrs) -> Ipv4Addr {
    match a.src() {
        std::net::IpAddr::V4(s) => s,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

#[test]
fn lengths_that_do_not_fit_their_fields_are_refused() {
    let mut buf = [0u8; 64];
    let v4 = Ipv4Repr::new(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::LOCALHOST,
        IpProtocol::UDP,
        65516,
    );
    assert_eq!(v4.emit(&mut buf), Err(EmitError::TooLong(65536)));
    let v6 = Ipv6Repr::new(
        Ipv6Addr::LOCALHOST,
        Ipv6Addr::LOCALHOST,
        IpProtocol::UDP,
        65536,
    );
    assert_eq!(v6.emit(&mut buf), Err(EmitError::TooLong(65536)));
    let tcp = TcpRepr {
        options: &[1, 1, 1],
        ..TcpRepr::new(1, 2, 0, 0, TcpFlags::ACK, 0)
    };
    let addrs = IpAddrs::V4 {
        src: Ipv4Addr::LOCALHOST,
        dst: Ipv4Addr::LOCALHOST,
    };
    assert_eq!(tcp.emit(&mut buf, &addrs), Err(EmitError::BadTcpOptions(3)));
    let mut big = vec![0u8; 65536];
    assert_eq!(
        UdpRepr {
            src_port: 1,
            dst_port: 2
        }
        .emit(&mut big, &addrs),
        Err(EmitError::TooLong(65536))
    );
    assert_eq!(VlanRepr::dot1q(4096), Err(EmitError::BadVlanId(4096)));
    assert_eq!(VlanRepr::dot1q(4095).map(|t| t.vid()), Ok(4095));
}

#[test]
fn ipv4_fragment_fields_and_ipv6_fragment_header_round_trip() {
    let mut buf = [0u8; 20];
    let repr = Ipv4Repr {
        ident: 0xabcd,
        dont_frag: false,
        more_frags: true,
        frag_offset: 1480,
        dscp: 46,
        ecn: 1,
        ttl: 3,
        ..Ipv4Repr::new(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            IpProtocol(47),
            0,
        )
    };
    repr.emit(&mut buf).unwrap();
    let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(Ipv4Repr::parse(&p), repr);
    assert!(p.verify_checksum());

    let mut buf = [0xffu8; 8];
    let frag = Ipv6FragmentRepr {
        next_header: IpProtocol::UDP,
        fragment: Fragment {
            offset: 16,
            more: true,
            ident: 0xdead_beef,
        },
    };
    frag.emit(&mut buf).unwrap();
    assert_eq!(buf, [17, 0, 0, 17, 0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(
        Ipv6FragmentRepr::parse(&FragmentHeader::new_checked(&buf[..]).unwrap()),
        frag
    );
    assert_eq!(
        frag.emit(&mut [0u8; 7]),
        Err(EmitError::BufferTooShort { needed: 8, len: 7 })
    );
}

#[test]
fn emit_through_the_views_matches_the_parser_on_a_tagged_frame() {
    let eth = EthernetRepr {
        vlans: [Some(VlanRepr::dot1q(7).unwrap()), None],
        ..EthernetRepr::new(
            MacAddr([2, 0, 0, 0, 0, 1]),
            MacAddr([2, 0, 0, 0, 0, 2]),
            EtherType::IPV4,
        )
    };
    let addrs = IpAddrs::V4 {
        src: Ipv4Addr::new(10, 0, 0, 1),
        dst: Ipv4Addr::new(10, 0, 0, 2),
    };
    let f = build(
        &eth,
        &addrs,
        &L4Choice::Udp(UdpRepr {
            src_port: 40000,
            dst_port: 53,
        }),
        60,
    )
    .unwrap();
    let p = parse(&f).unwrap();
    assert_eq!(p.vlans, [Some(7), None]);
    assert!(matches!(
        p.l3,
        L3::Ipv4 {
            ttl: 64,
            frag: None,
            ..
        }
    ));
    assert_eq!(
        p.l4,
        L4::Udp {
            sport: 40000,
            dport: 53
        }
    );
    assert_eq!(
        EthernetFrame::new_checked(&f[..]).unwrap().ethertype(),
        EtherType::VLAN
    );
}
