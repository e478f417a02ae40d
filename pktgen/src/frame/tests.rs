use super::*;
use net::icmpv4::Icmpv4Packet;
use net::icmpv6::Icmpv6Packet;
use net::{parse, L3, L4};

const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 1, 2, 3);
const V4_DST: Ipv4Addr = Ipv4Addr::new(172, 16, 9, 8);
const V6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 0x1234);
const V6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xb, 0, 0x55, 0, 0, 0xabcd, 1);

fn spec(ipv6: bool, l4: L4Proto, vlan: Option<u16>) -> FrameSpec {
    let ip = if ipv6 {
        IpSpec::V6 {
            src: V6_SRC,
            dst: V6_DST,
            flow_label: 0xabcde,
            hop_limit: 64,
        }
    } else {
        IpSpec::V4 {
            src: V4_SRC,
            dst: V4_DST,
            ident: 0xbeef,
            ttl: 64,
            dont_frag: true,
        }
    };
    let l4 = match l4 {
        L4Proto::Tcp => L4Spec::tcp_data(40001, 502, 0xfffff000, 0x1234_5678),
        L4Proto::Udp => L4Spec::udp(53000, 53),
    };
    FrameSpec {
        vlan,
        ..FrameSpec::new(ip, l4)
    }
}

/// Builds a frame of `len` bytes with a patterned payload and checks
/// that it parses back to exactly the requested fields, with valid
/// checksums and exact lengths.
fn check_round_trip(spec: &FrameSpec, len: usize) {
    let mut frame = vec![0u8; len];
    let hl = spec.header_len();
    for (i, b) in frame[hl..].iter_mut().enumerate() {
        *b = (i * 7 + 1) as u8;
    }
    let payload = frame[hl..].to_vec();
    spec.write(&mut frame).unwrap();

    let p = parse(&frame).unwrap_or_else(|e| panic!("{spec:?} at {len}: {e}"));
    let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(eth.src_addr(), DEFAULT_SRC_MAC);
    assert_eq!(eth.dst_addr(), DEFAULT_DST_MAC);
    assert!(eth.src_addr().is_local() && eth.src_addr().is_unicast());
    let l3_offset = match spec.vlan {
        Some(vid) => {
            assert_eq!(eth.ethertype(), EtherType::VLAN);
            assert_eq!(p.vlans, [Some(vid), None]);
            let tag = VlanTag::new_checked(eth.payload()).unwrap();
            assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (0, false, vid));
            18
        }
        None => {
            assert_eq!(p.vlans, [None, None]);
            14
        }
    };
    assert_eq!(p.l3_offset, l3_offset);
    let l3 = &frame[l3_offset..];
    let proto = spec.l4.ip_protocol(spec.ip.is_ipv6());

    let seg: &[u8] = match spec.ip {
        IpSpec::V4 {
            src,
            dst,
            ident,
            ttl,
            dont_frag,
        } => {
            assert_eq!(p.ethertype, EtherType::IPV4);
            assert_eq!(
                p.l3,
                L3::Ipv4 {
                    src,
                    dst,
                    proto,
                    frag: None,
                    ttl
                }
            );
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), l3.len());
            assert_eq!(ip.ident(), ident);
            assert_eq!(ip.dont_frag(), dont_frag);
            assert!(!ip.is_fragment());
            assert_eq!((ip.dscp(), ip.ecn(), ip.header_len()), (0, 0, 20));
            let seg = ip.into_payload();
            match spec.l4 {
                L4Spec::Tcp { .. } => assert!(TcpPacket::new_checked(seg)
                    .unwrap()
                    .verify_checksum_v4(src, dst)),
                _ => {
                    let udp = UdpPacket::new_checked(seg).unwrap();
                    assert_ne!(udp.checksum(), 0);
                    assert!(udp.verify_checksum_v4(src, dst));
                }
            }
            seg
        }
        IpSpec::V6 {
            src,
            dst,
            flow_label,
            hop_limit,
        } => {
            assert_eq!(p.ethertype, EtherType::IPV6);
            assert_eq!(
                p.l3,
                L3::Ipv6 {
                    src,
                    dst,
                    next: proto,
                    frag: None
                }
            );
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            assert_eq!(usize::from(ip.payload_len()) + 40, l3.len());
            assert_eq!(ip.flow_label(), flow_label);
            assert_eq!(ip.hop_limit(), hop_limit);
            assert_eq!(ip.traffic_class(), 0);
            let seg = ip.into_payload();
            match spec.l4 {
                L4Spec::Tcp { .. } => assert!(TcpPacket::new_checked(seg)
                    .unwrap()
                    .verify_checksum_v6(src, dst)),
                _ => assert!(UdpPacket::new_checked(seg)
                    .unwrap()
                    .verify_checksum_v6(src, dst)),
            }
            seg
        }
    };
    assert_eq!(p.l4_offset, Some(hl - spec.l4.header_len()));

    match spec.l4 {
        L4Spec::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window,
        } => {
            assert_eq!(
                p.l4,
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                    seq,
                    ack,
                    window,
                    payload_len: payload.len() as u16,
                }
            );
            assert_eq!(flags, TcpFlags::ACK | TcpFlags::PSH);
            let tcp = TcpPacket::new_checked(seg).unwrap();
            assert_eq!((tcp.header_len(), tcp.urgent_at()), (20, 0));
            assert_eq!(tcp.payload(), &payload[..]);
        }
        L4Spec::Udp { sport, dport } => {
            assert_eq!(p.l4, L4::Udp { sport, dport });
            let udp = UdpPacket::new_checked(seg).unwrap();
            assert_eq!(usize::from(udp.len()), seg.len());
            assert_eq!(udp.payload(), &payload[..]);
        }
        other => panic!("round trips cover TCP and UDP, not {other:?}"),
    }
}

#[test]
fn all_layer_combinations_round_trip_at_min_and_jumbo_sizes() {
    let mut n = 0;
    for ipv6 in [false, true] {
        for l4 in [L4Proto::Tcp, L4Proto::Udp] {
            for vlan in [None, Some(1), Some(100), Some(4094)] {
                let s = spec(ipv6, l4, vlan);
                let layers = Layers {
                    vlan: vlan.is_some(),
                    ipv6,
                    l4,
                };
                let min = layers.min_frame_size() - FCS_LEN;
                assert_eq!(layers.header_len(), s.header_len());
                for len in [min, min + 1, 1500 + 14, MAX_FRAME_SIZE - FCS_LEN] {
                    check_round_trip(&s, len);
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 64);
}

#[test]
fn header_lengths_and_min_sizes() {
    let l = |vlan, ipv6, l4| Layers { vlan, ipv6, l4 };
    assert_eq!(l(false, false, L4Proto::Tcp).header_len(), 54);
    assert_eq!(l(false, false, L4Proto::Udp).header_len(), 42);
    assert_eq!(l(true, false, L4Proto::Tcp).header_len(), 58);
    assert_eq!(l(false, true, L4Proto::Tcp).header_len(), 74);
    assert_eq!(l(true, true, L4Proto::Tcp).header_len(), 78);
    assert_eq!(l(true, true, L4Proto::Udp).header_len(), 66);
    assert_eq!(l(false, false, L4Proto::Tcp).min_frame_size(), 64);
    assert_eq!(l(true, true, L4Proto::Tcp).min_frame_size(), 82);
    assert_eq!(l(false, true, L4Proto::Udp).min_frame_size(), 66);
    assert_eq!(
        l(true, true, L4Proto::Tcp).describe(),
        "Ethernet+802.1Q+IPv6+TCP"
    );
    assert_eq!(
        l(false, false, L4Proto::Udp).describe(),
        "Ethernet+IPv4+UDP"
    );
}

#[test]
fn zero_payload_is_fine() {
    let s = spec(true, L4Proto::Tcp, Some(7));
    check_round_trip(&s, s.header_len());
}

#[test]
fn errors() {
    let s = spec(false, L4Proto::Tcp, None);
    let mut short = [0u8; 53];
    assert_eq!(
        s.write(&mut short),
        Err(FrameError::TooShort {
            len: 53,
            header_len: 54
        })
    );
    let mut huge = vec![0u8; 14 + 65536];
    assert_eq!(
        s.write(&mut huge),
        Err(FrameError::TooLong { len: 14 + 65536 })
    );
    let mut ok = vec![0u8; 14 + 65535];
    s.write(&mut ok).unwrap();
    parse(&ok).unwrap();

    let mut v6 = vec![0u8; 14 + 40 + 65536];
    assert!(spec(true, L4Proto::Udp, None).write(&mut v6).is_err());
    let bad_vlan = FrameSpec {
        vlan: Some(4096),
        ..s
    };
    assert_eq!(
        bad_vlan.write(&mut [0u8; 64]),
        Err(FrameError::BadVlanId(4096))
    );
}

#[test]
fn build_and_udp_lengths_with_ipv4() {
    let s = FrameSpec::new(IpSpec::v4(V4_SRC, V4_DST), L4Spec::udp(1, 2));
    let f = s.build(b"hello").unwrap();
    assert_eq!(f.len(), 42 + 5);
    let udp = UdpPacket::new_checked(&f[34..]).unwrap();
    assert_eq!(udp.len(), 13);
    assert_eq!(udp.payload(), b"hello");
    assert_eq!(IpSpec::from_addrs(V4_SRC.into(), V6_DST.into()), None);
    assert_eq!(
        IpSpec::from_addrs(V6_SRC.into(), V6_DST.into()),
        Some(IpSpec::v6(V6_SRC, V6_DST))
    );
}

fn spec_of(src: &str, dst: &str, l4: L4Spec) -> FrameSpec {
    let ip = IpSpec::from_addrs(src.parse().unwrap(), dst.parse().unwrap()).unwrap();
    FrameSpec::new(ip, l4)
}

#[test]
fn icmp_echo_both_families_parse_and_verify() {
    let f = spec_of("10.0.0.1", "10.0.0.2", L4Spec::echo(8, 0x1234, 7))
        .build_padded(b"abcd")
        .unwrap();
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

    let spec = FrameSpec {
        vlan: Some(30),
        ..spec_of("fd00::1", "fd00::2", L4Spec::echo(128, 9, 1))
    };
    let f = spec.build_padded(&[0; 100]).unwrap();
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
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    assert!(Icmpv6Packet::new_checked(ip.into_payload())
        .unwrap()
        .verify_checksum(src, dst));
}

#[test]
fn fragments_carry_the_fragment_fields() {
    for (s, d) in [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2")] {
        let spec = spec_of(s, d, L4Spec::udp(1, 2));
        let frag = Fragment {
            offset: 16,
            more: true,
            ident: 0xabcd,
        };
        let f = spec.fragment(Some(frag), &[0u8; 24]).unwrap();
        let p = parse(&f).unwrap();
        assert_eq!(p.fragment(), Some(frag));
        assert_eq!(p.l4, L4::None);
        assert_eq!(p.ip_proto(), Some(IpProtocol::UDP));
    }
    // A segment cut short and carried whole: the IP length says where it ends.
    let spec = spec_of(
        "10.0.0.1",
        "10.0.0.2",
        L4Spec::tcp(1, 2, 3, 4, TcpFlags::SYN),
    );
    let seg = spec.segment(&[]).unwrap();
    assert_eq!(seg.len(), 20);
    let f = spec.fragment(None, &seg[..12]).unwrap();
    assert_eq!(f.len(), MIN_FRAME_LEN);
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert_eq!((ip.total_len(), ip.dont_frag()), (32, true));
    assert!(ip.verify_checksum());
}

#[test]
fn raw_protocol_and_reversal() {
    let spec = spec_of("10.0.0.1", "10.0.0.2", L4Spec::Raw { proto: 47 });
    let f = spec.reversed().build_padded(&[1; 40]).unwrap();
    let p = parse(&f).unwrap();
    assert!(matches!(
        p.l3,
        L3::Ipv4 {
            proto: IpProtocol(47),
            ..
        }
    ));
    assert_eq!(p.src_ip(), Some(spec.ip.dst()));
    assert_eq!(p.l4, L4::None);
    assert_eq!(f.len(), 14 + 20 + 40);
    let eth = EthernetFrame::new_checked(&f[..]).unwrap();
    assert_eq!(
        (eth.src_addr(), eth.dst_addr()),
        (DEFAULT_DST_MAC, DEFAULT_SRC_MAC)
    );
}
