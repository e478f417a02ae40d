use super::*;
use net::icmpv4::Icmpv4Packet;
use net::icmpv6::Icmpv6Packet;
use net::ipv6::{ExtHeader, Ipv6FragmentRepr};
use net::link::EthernetRepr;
use net::tcp::TcpPacket;
use net::udp::{UdpPacket, UdpRepr};
use net::vlan::{VlanRepr, VlanTag};
use net::{parse, Fragment};
use proptest::prelude::*;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
const V4_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const V4_B: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);
const V6_A: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const V6_B: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, 0, 2);
const SPORT: u16 = 40000;
const DPORT: u16 = 443;

/// A VLAN tag as (TPID, TCI).
type Tag = (EtherType, u16);
const UNTAGGED: &[Tag] = &[];
/// PCP 5, VID 123.
const DOT1Q: &[Tag] = &[(EtherType::VLAN, 0xa07b)];
/// S-tag PCP 3 DEI VID 100, C-tag PCP 1 VID 200.
const QINQ: &[Tag] = &[(EtherType::QINQ, 0x7064), (EtherType::VLAN, 0x20c8)];
/// Pre-standard 0x9100 outer tag.
const QINQ_OLD: &[Tag] = &[(EtherType::QINQ_OLD, 0x0fff), (EtherType::VLAN, 0x0001)];

// ---- frame builders (tests only; they allocate), all through `net`'s emit side ----

fn ethernet(dst: MacAddr, src: MacAddr, tags: &[Tag], ty: EtherType, l3: &[u8]) -> Vec<u8> {
    let mut eth = EthernetRepr::new(src, dst, ty);
    for (slot, &(tpid, tci)) in eth.vlans.iter_mut().zip(tags) {
        *slot = Some(VlanRepr { tpid, tci });
    }
    let mut f = vec![0u8; eth.header_len() + l3.len()];
    let l3_off = eth.emit(&mut f).unwrap();
    f[l3_off..].copy_from_slice(l3);
    f
}

/// IPv4 header fields of an offending datagram.
#[derive(Clone)]
struct V4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    options: Vec<u8>,
    frag_offset: u16,
    more_frags: bool,
}

fn v4(proto: IpProtocol) -> V4 {
    V4 {
        src: V4_A,
        dst: V4_B,
        proto,
        options: Vec::new(),
        frag_offset: 0,
        more_frags: false,
    }
}

fn ipv4(h: &V4, l4: &[u8]) -> Vec<u8> {
    let hl = 20 + h.options.len();
    let mut p = vec![0u8; hl + l4.len()];
    let repr = Ipv4Repr {
        dscp: 10,
        ecn: 1,
        ident: 0x1234,
        dont_frag: false,
        more_frags: h.more_frags,
        frag_offset: h.frag_offset,
        ttl: 63,
        ..Ipv4Repr::new(h.src, h.dst, h.proto, hl - 20 + l4.len())
    };
    repr.emit(&mut p).unwrap();
    // Options are not part of `Ipv4Repr`: widen the header and sum it again.
    let mut ip = Ipv4Packet::new_unchecked(&mut p[..]);
    ip.set_header_len(hl);
    ip.options_mut().copy_from_slice(&h.options);
    ip.fill_checksum();
    p[hl..].copy_from_slice(l4);
    p
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: IpProtocol, ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + ext.len() + l4.len()];
    let repr = Ipv6Repr {
        traffic_class: 0xb8,
        flow_label: 0x12345,
        hop_limit: 63,
        ..Ipv6Repr::new(src, dst, next, ext.len() + l4.len())
    };
    repr.emit(&mut p).unwrap();
    p[40..40 + ext.len()].copy_from_slice(ext);
    p[40 + ext.len()..].copy_from_slice(l4);
    p
}

/// A hop-by-hop or destination-options header holding one PadN option.
fn options_header(next: IpProtocol) -> [u8; 8] {
    let mut h = [0u8; 8];
    let mut e = ExtHeader::new_unchecked(&mut h[..]);
    e.set_next_header(next);
    e.set_header_len(8);
    e.data_mut().copy_from_slice(&[1, 4, 0, 0, 0, 0]);
    h
}

fn fragment_header(next: IpProtocol, offset: u16, more: bool) -> [u8; 8] {
    let mut h = [0u8; 8];
    let fragment = Fragment {
        offset,
        more,
        ident: 0xdead_beef,
    };
    let repr = Ipv6FragmentRepr {
        next_header: next,
        fragment,
    };
    repr.emit(&mut h).unwrap();
    h
}

/// A TCP segment; its checksum is left zero (the offending packets' transport checksums do not matter).
fn tcp_with(flags: TcpFlags, seq: u32, ack: u32, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let repr = TcpRepr {
        urgent: 7,
        options,
        ..TcpRepr::new(SPORT, DPORT, seq, ack, flags, 64240)
    };
    let mut s = vec![0u8; repr.header_len() + payload.len()];
    s[repr.header_len()..].copy_from_slice(payload);
    repr.emit(
        &mut s,
        &IpAddrs::V4 {
            src: V4_A,
            dst: V4_B,
        },
    )
    .unwrap();
    TcpPacket::new_unchecked(&mut s[..]).set_checksum(0);
    s
}

fn tcp(flags: TcpFlags, seq: u32, ack: u32, payload_len: usize) -> Vec<u8> {
    tcp_with(flags, seq, ack, &[], &vec![0x5a; payload_len])
}

/// A UDP datagram; its checksum is left zero, as for [`tcp_with`].
fn udp(payload_len: usize) -> Vec<u8> {
    let mut d = vec![0u8; 8 + payload_len];
    for (i, b) in d[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let repr = UdpRepr {
        src_port: SPORT,
        dst_port: 53,
    };
    repr.emit(
        &mut d,
        &IpAddrs::V4 {
            src: V4_A,
            dst: V4_B,
        },
    )
    .unwrap();
    UdpPacket::new_unchecked(&mut d[..]).set_checksum(0);
    d
}

fn icmp(ty: u8, code: u8) -> Vec<u8> {
    let mut m = vec![0u8; 8 + 28];
    m[8..].copy_from_slice(&ipv4(&v4(IpProtocol::UDP), &udp(0)));
    let repr = Icmpv4Repr {
        msg_type: ty,
        msg_code: code,
        rest_of_header: 0x0001_0002,
    };
    repr.emit(&mut m).unwrap();
    m
}

fn icmpv6(ty: u8, code: u8) -> Vec<u8> {
    let mut m = vec![0u8; 8 + 48];
    m[8..].copy_from_slice(&ipv6(V6_B, V6_A, IpProtocol::UDP, &[], &udp(0)));
    let repr = Icmpv6Repr {
        msg_type: ty,
        msg_code: code,
        rest_of_header: 0x0001_0002,
    };
    repr.emit(&mut m, V6_A, V6_B).unwrap();
    m
}

fn frame_v4(tags: &[Tag], h: &V4, l4: &[u8]) -> Vec<u8> {
    ethernet(MAC_B, MAC_A, tags, EtherType::IPV4, &ipv4(h, l4))
}

fn frame_v6(tags: &[Tag], next: IpProtocol, ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let p = ipv6(V6_A, V6_B, next, ext, l4);
    ethernet(MAC_B, MAC_A, tags, EtherType::IPV6, &p)
}

// ---- running and checking ----

/// Parses `frame`, builds the reply into a buffer full of stale bytes and checks it.
fn reject(frame: &[u8]) -> Result<Vec<u8>, RejectSkip> {
    reject_into(frame, MAX_REPLY_LEN)
}

fn reject_into(frame: &[u8], out_len: usize) -> Result<Vec<u8>, RejectSkip> {
    let parsed = parse(frame).expect("test frame parses");
    let mut out = vec![0xa5u8; out_len];
    let n = build_reject(frame, &parsed, &mut out)?;
    assert!(n <= out_len);
    let reply = out[..n].to_vec();
    check_reply(frame, &parsed, &reply);
    Ok(reply)
}

/// The offending IP packet, without Ethernet padding.
fn original_packet<'a>(frame: &'a [u8], parsed: &Parsed) -> &'a [u8] {
    let p = &frame[parsed.l3_offset..];
    let len = match parsed.l3 {
        L3::Ipv4 { .. } => usize::from(Ipv4Packet::new_checked(p).unwrap().total_len()),
        _ => 40 + usize::from(Ipv6Packet::new_checked(p).unwrap().payload_len()),
    };
    &p[..len]
}

/// What every reply must satisfy; returns the reply parsed.
fn check_reply(frame: &[u8], parsed: &Parsed, reply: &[u8]) -> Parsed {
    let r = parse(reply).expect("reply parses");
    assert!((MIN_FRAME_LEN..=MAX_REPLY_LEN).contains(&reply.len()));
    let fe = EthernetFrame::new_checked(frame).unwrap();
    let re = EthernetFrame::new_checked(reply).unwrap();
    assert_eq!(re.dst_addr(), fe.src_addr());
    assert_eq!(re.src_addr(), fe.dst_addr());
    // TPIDs, TCIs and the EtherType exactly as received.
    assert_eq!(r.l3_offset, parsed.l3_offset);
    assert_eq!(reply[12..r.l3_offset], frame[12..parsed.l3_offset]);
    assert_eq!((r.vlans, r.ethertype), (parsed.vlans, parsed.ethertype));
    let l3 = r.l3_offset;
    let original = original_packet(frame, parsed);
    // Where the original's upper-layer header starts, for the minimum quote.
    let upper = parsed.l4_offset.unwrap() - l3;
    let ip_end = match (r.l3, parsed.l3) {
        (
            L3::Ipv4 {
                src,
                dst,
                proto,
                frag,
                ttl,
            },
            L3::Ipv4 {
                src: osrc,
                dst: odst,
                ..
            },
        ) => {
            assert_eq!((src, dst), (odst, osrc));
            assert_eq!((frag, ttl), (None, REPLY_TTL));
            let ip = Ipv4Packet::new_checked(&reply[l3..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(ip.header_len(), 20);
            assert!(ip.dont_frag());
            assert_eq!((ip.ident(), ip.ecn()), (0, 0));
            match proto {
                IpProtocol::TCP => {
                    assert_eq!(ip.dscp(), 0);
                    check_rst(ip.payload(), parsed.l4);
                    let t = TcpPacket::new_checked(ip.payload()).unwrap();
                    assert!(t.verify_checksum_v4(src, dst));
                }
                IpProtocol::ICMP => {
                    assert_eq!(ip.dscp(), 48);
                    assert!(usize::from(ip.total_len()) <= ICMPV4_MAX_DATAGRAM);
                    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
                    assert!(icmp.verify_checksum());
                    assert_eq!(
                        (icmp.msg_type(), icmp.msg_code(), icmp.rest_of_header()),
                        (3, 13, 0)
                    );
                    assert_eq!(
                        r.l4,
                        L4::Icmp {
                            ty: 3,
                            code: 13,
                            ident: None
                        }
                    );
                    // A prefix of the original datagram, at least its header + 8 bytes.
                    let quote = icmp.payload();
                    assert!(original.starts_with(quote));
                    let hl = Ipv4Packet::new_checked(original).unwrap().header_len();
                    assert_eq!(hl, upper);
                    let min = original.len().min(hl + 8);
                    assert!(quote.len() >= min);
                    assert_eq!(icmp.quoted().unwrap(), &original[..min]);
                }
                p => panic!("reply of protocol {p}"),
            }
            l3 + usize::from(ip.total_len())
        }
        (
            L3::Ipv6 {
                src,
                dst,
                next,
                frag,
            },
            L3::Ipv6 {
                src: osrc,
                dst: odst,
                ..
            },
        ) => {
            assert_eq!((src, dst), (odst, osrc));
            assert_eq!(frag, None);
            let ip = Ipv6Packet::new_checked(&reply[l3..]).unwrap();
            assert_eq!(ip.hop_limit(), REPLY_TTL);
            assert_eq!((ip.traffic_class(), ip.flow_label()), (0, 0));
            // No extension headers: the fixed header names the upper layer.
            assert_eq!(ip.next_header(), next);
            assert_eq!(r.l4_offset, Some(l3 + 40));
            match next {
                IpProtocol::TCP => {
                    check_rst(ip.payload(), parsed.l4);
                    let t = TcpPacket::new_checked(ip.payload()).unwrap();
                    assert!(t.verify_checksum_v6(src, dst));
                }
                IpProtocol::ICMPV6 => {
                    assert!(40 + usize::from(ip.payload_len()) <= ICMPV6_MAX_PACKET);
                    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
                    assert!(icmp.verify_checksum(src, dst));
                    assert_eq!(
                        (icmp.msg_type(), icmp.msg_code(), icmp.rest_of_header()),
                        (1, 1, 0)
                    );
                    assert_eq!(
                        r.l4,
                        L4::Icmpv6 {
                            ty: 1,
                            code: 1,
                            ident: None
                        }
                    );
                    let quote = icmp.quoted().unwrap();
                    assert!(original.starts_with(quote));
                    assert!(quote.len() >= original.len().min(upper + 8));
                }
                p => panic!("reply of protocol {p}"),
            }
            l3 + 40 + usize::from(ip.payload_len())
        }
        other => panic!("reply {other:?} to {:?}", parsed.l3),
    };
    // Zero padding, only up to the minimum frame length.
    assert_eq!(reply.len(), ip_end.max(MIN_FRAME_LEN));
    assert!(reply[ip_end..].iter().all(|&b| b == 0));
    r
}

/// The reset answering `offending`, by the RFC 9293 rules restated.
fn check_rst(segment: &[u8], offending: L4) {
    let t = TcpPacket::new_checked(segment).unwrap();
    assert_eq!(segment.len(), 20, "no options, no payload");
    assert_eq!(segment[12], 0x50, "data offset 5, reserved bits clear");
    assert_eq!((t.window_len(), t.urgent_at()), (0, 0));
    let L4::Tcp {
        sport,
        dport,
        flags,
        seq,
        ack,
        payload_len,
        ..
    } = offending
    else {
        panic!("RST for {offending:?}");
    };
    assert_eq!((t.src_port(), t.dst_port()), (dport, sport));
    let expected = if flags.contains(TcpFlags::ACK) {
        (ack, 0, TcpFlags::RST)
    } else {
        let syn_fin =
            u32::from(flags.contains(TcpFlags::SYN)) + u32::from(flags.contains(TcpFlags::FIN));
        let ack = seq.wrapping_add(u32::from(payload_len) + syn_fin);
        (0, ack, TcpFlags::RST | TcpFlags::ACK)
    };
    assert_eq!((t.seq_number(), t.ack_number(), t.flags()), expected);
}

fn tcp_reply(r: &Parsed) -> (u16, u16, TcpFlags, u32, u32) {
    match r.l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
            window,
            payload_len,
        } => {
            assert_eq!((window, payload_len), (0, 0));
            (sport, dport, flags, seq, ack)
        }
        other => panic!("not TCP: {other:?}"),
    }
}

// ---- TCP ----

#[test]
fn syn_v4_gets_rst_ack() {
    // The ACK field is garbage without the ACK flag and must be ignored.
    let frame = frame_v4(
        UNTAGGED,
        &v4(IpProtocol::TCP),
        &tcp(TcpFlags::SYN, 1000, 0x1111, 0),
    );
    let reply = reject(&frame).unwrap();
    assert_eq!(reply.len(), MIN_FRAME_LEN, "54 bytes padded to 60");
    let r = parse(&reply).unwrap();
    let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
    assert_eq!((eth.dst_addr(), eth.src_addr()), (MAC_A, MAC_B));
    assert_eq!(eth.ethertype(), EtherType::IPV4);
    assert_eq!(r.vlans, [None, None]);
    let L3::Ipv4 {
        src, dst, proto, ..
    } = r.l3
    else {
        panic!()
    };
    assert_eq!((src, dst, proto), (V4_B, V4_A, IpProtocol::TCP));
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    assert_eq!((ip.total_len(), ip.ttl(), ip.dont_frag()), (40, 64, true));
    assert!(!ip.more_frags() && ip.frag_offset() == 0);
    assert_eq!(
        tcp_reply(&r),
        (DPORT, SPORT, TcpFlags::RST | TcpFlags::ACK, 0, 1001)
    );
}

#[test]
fn segment_with_ack_gets_bare_rst() {
    // Timestamps option and 100 bytes of data: the reset has neither.
    let ts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let seg = tcp_with(
        TcpFlags::ACK | TcpFlags::PSH,
        5,
        0xdead_beef,
        &ts,
        &[7; 100],
    );
    let frame = frame_v4(UNTAGGED, &v4(IpProtocol::TCP), &seg);
    let r = parse(&reject(&frame).unwrap()).unwrap();
    assert_eq!(tcp_reply(&r), (DPORT, SPORT, TcpFlags::RST, 0xdead_beef, 0));
}

#[test]
fn rst_numbers_count_syn_fin_and_payload() {
    let (syn, fin, ack) = (TcpFlags::SYN, TcpFlags::FIN, TcpFlags::ACK);
    // (offending flags, seq, ack, payload length, expected (flags, seq, ack))
    let cases = [
        (syn, 1000, 0, 0, (TcpFlags::RST | ack, 0, 1001)),
        (fin, 1000, 0, 0, (TcpFlags::RST | ack, 0, 1001)),
        (syn | fin, u32::MAX, 0, 0, (TcpFlags::RST | ack, 0, 1)),
        (
            fin | TcpFlags::PSH,
            0xffff_fff0,
            0,
            32,
            (TcpFlags::RST | ack, 0, 0x11),
        ),
        (TcpFlags::empty(), 7, 0, 0, (TcpFlags::RST | ack, 0, 7)),
        (TcpFlags::PSH, 100, 0, 10, (TcpFlags::RST | ack, 0, 110)),
        (syn, 100, 0, 5, (TcpFlags::RST | ack, 0, 106)),
        (syn | ack, 100, 555, 0, (TcpFlags::RST, 555, 0)),
        (fin | ack, 100, 0, 3, (TcpFlags::RST, 0, 0)),
        (ack, 1, u32::MAX, 1000, (TcpFlags::RST, u32::MAX, 0)),
    ];
    for (flags, seq, a, len, (eflags, eseq, eack)) in cases {
        let seg = tcp(flags, seq, a, len);
        let f4 = frame_v4(UNTAGGED, &v4(IpProtocol::TCP), &seg);
        let f6 = frame_v6(UNTAGGED, IpProtocol::TCP, &[], &seg);
        for frame in [f4, f6] {
            let r = parse(&reject(&frame).unwrap()).unwrap();
            let (_, _, rflags, rseq, rack) = tcp_reply(&r);
            assert_eq!(
                (rflags, rseq, rack),
                (eflags, eseq, eack),
                "{flags} seq {seq}"
            );
        }
    }
}

/// Linux's SYN 192.168.1.100:54321 -> 93.184.216.34:80 with options (from the `net` fixtures).
#[test]
fn linux_syn_fixture_gets_rst_ack() {
    const TCP_SYN_V4: [u8; 74] = [
        0x52, 0x54, 0x00, 0x12, 0x35, 0x02, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x00, 0x45,
        0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x26, 0x8f, 0xc0, 0xa8, 0x01, 0x64,
        0x5d, 0xb8, 0xd8, 0x22, 0xd4, 0x31, 0x00, 0x50, 0x6b, 0x8b, 0x45, 0x67, 0x00, 0x00, 0x00,
        0x00, 0xa0, 0x02, 0xfa, 0xf0, 0x99, 0x5b, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02,
        0x08, 0x0a, 0x0a, 0x1b, 0x2c, 0x3d, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];
    let reply = reject(&TCP_SYN_V4).unwrap();
    let r = parse(&reply).unwrap();
    assert_eq!(
        r.src_ip().unwrap(),
        std::net::IpAddr::from([93, 184, 216, 34])
    );
    assert_eq!(
        r.dst_ip().unwrap(),
        std::net::IpAddr::from([192, 168, 1, 100])
    );
    assert_eq!(
        tcp_reply(&r),
        (80, 54321, TcpFlags::RST | TcpFlags::ACK, 0, 0x6b8b_4568)
    );
    assert_eq!(
        (&reply[..6], &reply[6..12]),
        (&TCP_SYN_V4[6..12], &TCP_SYN_V4[..6])
    );
}

#[test]
fn syn_v6_gets_rst_ack_without_extension_headers() {
    let mut ext = options_header(IpProtocol::IPV6_OPTS).to_vec();
    ext.extend(options_header(IpProtocol::TCP));
    let frame = frame_v6(
        UNTAGGED,
        IpProtocol::HOPOPT,
        &ext,
        &tcp(TcpFlags::SYN, 41, 0, 0),
    );
    let reply = reject(&frame).unwrap();
    assert_eq!(reply.len(), 14 + 40 + 20);
    let r = parse(&reply).unwrap();
    assert_eq!(
        r.l3,
        L3::Ipv6 {
            src: V6_B,
            dst: V6_A,
            next: IpProtocol::TCP,
            frag: None
        }
    );
    let ip = Ipv6Packet::new_checked(&reply[14..]).unwrap();
    assert_eq!(
        (ip.payload_len(), ip.next_header(), ip.hop_limit()),
        (20, IpProtocol::TCP, 64)
    );
    assert_eq!(
        tcp_reply(&r),
        (DPORT, SPORT, TcpFlags::RST | TcpFlags::ACK, 0, 42)
    );
}

#[test]
fn vlan_tags_are_kept_as_received() {
    let seg = tcp(TcpFlags::SYN, 1, 0, 0);
    for tags in [DOT1Q, QINQ, QINQ_OLD] {
        let frames = [
            frame_v4(tags, &v4(IpProtocol::TCP), &seg),
            frame_v4(tags, &v4(IpProtocol::UDP), &udp(30)),
            frame_v6(tags, IpProtocol::TCP, &[], &seg),
            frame_v6(tags, IpProtocol::UDP, &[], &udp(30)),
        ];
        for frame in frames {
            let reply = reject(&frame).unwrap();
            let eth = EthernetFrame::new_checked(&reply[..]).unwrap();
            assert_eq!((eth.dst_addr(), eth.src_addr()), (MAC_A, MAC_B));
            // Each TPID names the tag after it; the last tag names the IP version.
            let mut next_type = eth.ethertype();
            let mut rest = eth.payload();
            for &(tpid, tci) in tags {
                assert_eq!(next_type, tpid);
                let tag = VlanTag::new_checked(rest).unwrap();
                assert_eq!(tag.tci(), tci);
                next_type = tag.ethertype();
                rest = tag.into_payload();
            }
            assert_eq!(next_type, parse(&frame).unwrap().ethertype);
            let r = parse(&reply).unwrap();
            let vids: Vec<_> = tags.iter().map(|t| Some(t.1 & 0xfff)).collect();
            assert_eq!(r.vlans[..tags.len()], vids[..]);
            assert_eq!(r.l3_offset, 14 + 4 * tags.len());
        }
    }
}

// ---- ICMPv4 ----

#[test]
fn udp_v4_gets_admin_prohibited_quoting_the_datagram() {
    let h = v4(IpProtocol::UDP);
    let frame = frame_v4(UNTAGGED, &h, &udp(20));
    let original = ipv4(&h, &udp(20));
    let reply = reject(&frame).unwrap();
    let r = parse(&reply).unwrap();
    assert!(matches!(
        r.l3,
        L3::Ipv4 {
            src: V4_B,
            dst: V4_A,
            proto: IpProtocol::ICMP,
            ..
        }
    ));
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    assert_eq!(usize::from(ip.total_len()), 20 + 8 + original.len());
    assert_eq!((ip.ttl(), ip.dscp()), (64, 48));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (3, 13));
    assert_eq!(icmp.quoted().unwrap(), &original[..28]);
    assert_eq!(icmp.payload(), &original[..]);
    assert_eq!(reply.len(), 14 + 28 + original.len());
}

#[test]
fn icmp_quote_keeps_ip_options() {
    let mut h = v4(IpProtocol::UDP);
    // Record route with room for one address, then end of list.
    h.options = vec![7, 7, 4, 0, 0, 0, 0, 0];
    let original = ipv4(&h, &udp(40));
    let reply = reject(&frame_v4(DOT1Q, &h, &udp(40))).unwrap();
    let ip = Ipv4Packet::new_checked(&reply[18..]).unwrap();
    assert!(ip.options().is_empty());
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    let quote = icmp.quoted().unwrap();
    assert_eq!(quote.len(), 28 + 8);
    assert_eq!(quote, &original[..36]);
    assert_eq!(
        Ipv4Packet::new_checked_quoted(quote).unwrap().options(),
        &h.options[..]
    );
    assert_eq!(icmp.payload(), &original[..]);
}

#[test]
fn icmp_v4_reply_is_capped_at_576_bytes() {
    let h = v4(IpProtocol::UDP);
    let original = ipv4(&h, &udp(1400));
    let reply = reject(&frame_v4(QINQ, &h, &udp(1400))).unwrap();
    assert_eq!(reply.len(), 22 + 576);
    let ip = Ipv4Packet::new_checked(&reply[22..]).unwrap();
    assert_eq!(ip.total_len(), 576);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.payload(), &original[..576 - 28]);
}

#[test]
fn icmp_v4_quote_excludes_ethernet_padding() {
    let h = v4(IpProtocol::UDP);
    let original = ipv4(&h, &udp(2));
    let mut frame = frame_v4(UNTAGGED, &h, &udp(2));
    frame.resize(60, 0xee);
    let reply = reject(&frame).unwrap();
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.payload(), &original[..]);
    assert_eq!(reply.len(), 14 + 28 + 30);
}

#[test]
fn echo_and_other_protocols_get_admin_prohibited() {
    let echo = icmp(icmpv4::types::ECHO_REQUEST, 0);
    let reply = reject(&frame_v4(UNTAGGED, &v4(IpProtocol::ICMP), &echo)).unwrap();
    assert_eq!(
        parse(&reply).unwrap().l4,
        L4::Icmp {
            ty: 3,
            code: 13,
            ident: None
        }
    );
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    assert_eq!(ip.total_len(), 28 + 20 + 36);
    // GRE, and a protocol without payload: the quote is the bare header.
    for (proto, payload) in [
        (IpProtocol(47), vec![0, 0, 8, 0]),
        (IpProtocol(253), vec![]),
    ] {
        let h = v4(proto);
        let reply = reject(&frame_v4(UNTAGGED, &h, &payload)).unwrap();
        let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.payload(), &ipv4(&h, &payload)[..]);
    }
    // ICMPv6 inside IPv4 is just another protocol.
    let reply = reject(&frame_v4(UNTAGGED, &v4(IpProtocol::ICMPV6), &icmpv6(1, 0)));
    assert!(reply.is_ok());
}

#[test]
fn first_fragments_are_answered() {
    let mut h = v4(IpProtocol::UDP);
    h.more_frags = true;
    // The UDP length covers data in later fragments.
    let mut dgram = udp(64);
    dgram.truncate(8 + 16);
    let reply = reject(&frame_v4(UNTAGGED, &h, &dgram)).unwrap();
    let ip = Ipv4Packet::new_checked(&reply[14..]).unwrap();
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.payload(), &ipv4(&h, &dgram)[..]);

    let frag = fragment_header(IpProtocol::UDP, 0, true);
    let frame = frame_v6(UNTAGGED, IpProtocol::IPV6_FRAG, &frag, &dgram);
    let p = parse(&frame).unwrap();
    assert_eq!(
        p.fragment(),
        Some(Fragment {
            offset: 0,
            more: true,
            ident: 0xdead_beef
        })
    );
    let reply = reject(&frame).unwrap();
    let ip = Ipv6Packet::new_checked(&reply[14..]).unwrap();
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.payload(), &frame[14..]);
}

// ---- ICMPv6 ----

#[test]
fn udp_v6_gets_admin_prohibited_quoting_the_packet() {
    let original = ipv6(V6_A, V6_B, IpProtocol::UDP, &[], &udp(100));
    let reply = reject(&frame_v6(UNTAGGED, IpProtocol::UDP, &[], &udp(100))).unwrap();
    let r = parse(&reply).unwrap();
    assert_eq!(
        r.l3,
        L3::Ipv6 {
            src: V6_B,
            dst: V6_A,
            next: IpProtocol::ICMPV6,
            frag: None
        }
    );
    let ip = Ipv6Packet::new_checked(&reply[14..]).unwrap();
    assert_eq!(usize::from(ip.payload_len()), 8 + original.len());
    assert_eq!((ip.next_header(), ip.hop_limit()), (IpProtocol::ICMPV6, 64));
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(V6_B, V6_A));
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (1, 1));
    assert_eq!(icmp.quoted().unwrap(), &original[..]);
    assert_eq!(reply.len(), 14 + 48 + original.len());
}

#[test]
fn icmpv6_reply_is_capped_at_1280_bytes() {
    let ext = options_header(IpProtocol::UDP);
    let frame = frame_v6(QINQ, IpProtocol::HOPOPT, &ext, &udp(1400));
    let reply = reject(&frame).unwrap();
    assert_eq!(reply.len(), 22 + 1280);
    let ip = Ipv6Packet::new_checked(&reply[22..]).unwrap();
    assert_eq!(40 + usize::from(ip.payload_len()), ICMPV6_MAX_PACKET);
    let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(icmp.quoted().unwrap(), &frame[22..22 + 1280 - 48]);
}

#[test]
fn icmpv6_echo_gets_admin_prohibited() {
    let echo = icmpv6(icmpv6::types::ECHO_REQUEST, 0);
    let reply = reject(&frame_v6(DOT1Q, IpProtocol::ICMPV6, &[], &echo)).unwrap();
    assert_eq!(
        parse(&reply).unwrap().l4,
        L4::Icmpv6 {
            ty: 1,
            code: 1,
            ident: None
        }
    );
}

// ---- frames that get no answer (RejectSkip) ----

#[test]
fn no_rst_for_a_rst() {
    for flags in [
        TcpFlags::RST,
        TcpFlags::RST | TcpFlags::ACK,
        TcpFlags::RST | TcpFlags::SYN,
    ] {
        let seg = tcp(flags, 1, 2, 0);
        let f4 = frame_v4(UNTAGGED, &v4(IpProtocol::TCP), &seg);
        let f6 = frame_v6(QINQ, IpProtocol::TCP, &[], &seg);
        assert_eq!(reject(&f4), Err(RejectSkip::TcpRst));
        assert_eq!(reject(&f6), Err(RejectSkip::TcpRst));
    }
}

#[test]
fn no_error_about_an_icmp_error() {
    use icmpv4::types as t4;
    for (ty, code) in [
        (t4::DEST_UNREACHABLE, 3),
        (t4::DEST_UNREACHABLE, 13),
        (t4::SOURCE_QUENCH, 0),
        (t4::REDIRECT, 1),
        (t4::TIME_EXCEEDED, 0),
        (t4::PARAMETER_PROBLEM, 0),
    ] {
        let frame = frame_v4(UNTAGGED, &v4(IpProtocol::ICMP), &icmp(ty, code));
        assert_eq!(reject(&frame), Err(RejectSkip::IcmpError), "type {ty}");
    }
    use icmpv6::types as t6;
    for ty in [
        t6::DEST_UNREACHABLE,
        t6::PACKET_TOO_BIG,
        t6::TIME_EXCEEDED,
        t6::PARAMETER_PROBLEM,
        t6::REDIRECT,
    ] {
        let frame = frame_v6(UNTAGGED, IpProtocol::ICMPV6, &[], &icmpv6(ty, 0));
        assert_eq!(reject(&frame), Err(RejectSkip::IcmpError), "type {ty}");
    }
}

#[test]
fn no_answer_to_non_first_fragments() {
    for (proto, more) in [(IpProtocol::UDP, true), (IpProtocol::TCP, false)] {
        let mut h = v4(proto);
        h.frag_offset = 1480;
        h.more_frags = more;
        let frame = frame_v4(UNTAGGED, &h, &[0; 64]);
        assert_eq!(reject(&frame), Err(RejectSkip::NonFirstFragment));
    }
    let mut ext = fragment_header(IpProtocol::TCP, 1232, false).to_vec();
    ext.extend([0; 64]);
    let frame = frame_v6(DOT1Q, IpProtocol::IPV6_FRAG, &ext, &[]);
    assert_eq!(reject(&frame), Err(RejectSkip::NonFirstFragment));
}

#[test]
fn no_answer_to_broadcast_or_multicast_mac() {
    let seg = tcp(TcpFlags::SYN, 1, 0, 0);
    let ip4 = ipv4(&v4(IpProtocol::TCP), &seg);
    let ip6 = ipv6(V6_A, V6_B, IpProtocol::UDP, &[], &udp(4));
    for dst in [MacAddr::BROADCAST, MacAddr([0x01, 0, 0x5e, 0, 0, 1])] {
        let frame = ethernet(dst, MAC_A, UNTAGGED, EtherType::IPV4, &ip4);
        assert_eq!(reject(&frame), Err(RejectSkip::NonUnicastMac));
    }
    for dst in [MacAddr::BROADCAST, MacAddr([0x33, 0x33, 0, 0, 0, 1])] {
        let frame = ethernet(dst, MAC_A, DOT1Q, EtherType::IPV6, &ip6);
        assert_eq!(reject(&frame), Err(RejectSkip::NonUnicastMac));
    }
}

#[test]
fn no_answer_to_non_unicast_ip_destinations() {
    for dst in [
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::new(239, 1, 2, 3),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(240, 0, 0, 1),
    ] {
        for (proto, l4) in [
            (IpProtocol::UDP, udp(4)),
            (IpProtocol::TCP, tcp(TcpFlags::SYN, 1, 0, 0)),
        ] {
            let h = V4 { dst, ..v4(proto) };
            assert_eq!(
                reject(&frame_v4(UNTAGGED, &h, &l4)),
                Err(RejectSkip::NonUnicastDst),
                "{dst}"
            );
        }
    }
    for dst in ["ff02::1", "ff05::1:3", "ff0e::101", "::", "::1"] {
        let dst: Ipv6Addr = dst.parse().unwrap();
        let p = ipv6(V6_A, dst, IpProtocol::UDP, &[], &udp(4));
        let frame = ethernet(MAC_B, MAC_A, UNTAGGED, EtherType::IPV6, &p);
        assert_eq!(reject(&frame), Err(RejectSkip::NonUnicastDst), "{dst}");
    }
}

#[test]
fn no_answer_to_invalid_sources() {
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(224, 1, 1, 1),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::LOCALHOST,
    ] {
        let h = V4 {
            src,
            ..v4(IpProtocol::UDP)
        };
        assert_eq!(
            reject(&frame_v4(UNTAGGED, &h, &udp(4))),
            Err(RejectSkip::InvalidSource),
            "{src}"
        );
    }
    for src in ["::", "ff02::1", "::1"] {
        let src: Ipv6Addr = src.parse().unwrap();
        let p = ipv6(
            src,
            V6_B,
            IpProtocol::TCP,
            &[],
            &tcp(TcpFlags::SYN, 1, 0, 0),
        );
        let frame = ethernet(MAC_B, MAC_A, UNTAGGED, EtherType::IPV6, &p);
        assert_eq!(reject(&frame), Err(RejectSkip::InvalidSource), "{src}");
    }
    let ip4 = ipv4(&v4(IpProtocol::UDP), &udp(4));
    for src in [
        MacAddr::ZERO,
        MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
        MacAddr::BROADCAST,
    ] {
        let frame = ethernet(MAC_B, src, UNTAGGED, EtherType::IPV4, &ip4);
        assert_eq!(reject(&frame), Err(RejectSkip::InvalidSource), "{src}");
    }
}

#[test]
fn out_too_small() {
    let syn = frame_v4(UNTAGGED, &v4(IpProtocol::TCP), &tcp(TcpFlags::SYN, 1, 0, 0));
    assert_eq!(reject_into(&syn, 0), Err(RejectSkip::OutTooSmall));
    assert_eq!(
        reject_into(&syn, MIN_FRAME_LEN - 1),
        Err(RejectSkip::OutTooSmall)
    );
    assert_eq!(
        reject_into(&syn, MIN_FRAME_LEN).unwrap().len(),
        MIN_FRAME_LEN
    );
    let syn6 = frame_v6(QINQ, IpProtocol::TCP, &[], &tcp(TcpFlags::SYN, 1, 0, 0));
    assert_eq!(reject_into(&syn6, 22 + 59), Err(RejectSkip::OutTooSmall));
    assert!(reject_into(&syn6, 22 + 60).is_ok());

    // A short `out` cuts the quote down to the header + 8 bytes, then gives up.
    let h = v4(IpProtocol::UDP);
    let udp4 = frame_v4(DOT1Q, &h, &udp(1000));
    let min4 = 18 + 28 + 28;
    let reply = reject_into(&udp4, min4).unwrap();
    assert_eq!(reply.len(), min4);
    assert_eq!(reply[18 + 28..], ipv4(&h, &udp(1000))[..28]);
    assert_eq!(reject_into(&udp4, min4 + 100).unwrap().len(), min4 + 100);
    assert_eq!(reject_into(&udp4, min4 - 1), Err(RejectSkip::OutTooSmall));

    // IPv6: at least the header, extension headers and 8 bytes of the upper layer.
    let ext = options_header(IpProtocol::UDP);
    let udp6 = frame_v6(UNTAGGED, IpProtocol::HOPOPT, &ext, &udp(1000));
    let min6 = 14 + 48 + 40 + 8 + 8;
    let reply = reject_into(&udp6, min6).unwrap();
    assert_eq!(reply.len(), min6);
    assert_eq!(reply[14 + 48..], udp6[14..14 + 56]);
    assert_eq!(reject_into(&udp6, min6 - 1), Err(RejectSkip::OutTooSmall));
    assert_eq!(reject_into(&udp6, min6 + 1).unwrap().len(), min6 + 1);
    let whole = 14 + 48 + 40 + 8 + 8 + 1000;
    assert_eq!(reject_into(&udp6, MAX_REPLY_LEN - 1).unwrap().len(), whole);
}

#[test]
fn non_ip_is_not_answered() {
    let arp = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 0x0a, 10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2,
    ];
    let frame = ethernet(MAC_B, MAC_A, DOT1Q, EtherType::ARP, &arp);
    assert_eq!(reject(&frame), Err(RejectSkip::NotIp));
    let lldp = ethernet(MAC_B, MAC_A, UNTAGGED, EtherType(0x88cc), &[0; 46]);
    assert_eq!(reject(&lldp), Err(RejectSkip::NotIp));
}

#[test]
fn frame_disagreeing_with_parsed_is_malformed() {
    let syn = frame_v4(DOT1Q, &v4(IpProtocol::TCP), &tcp(TcpFlags::SYN, 1, 0, 0));
    let parsed = parse(&syn).unwrap();
    let mut out = [0u8; MAX_REPLY_LEN];
    for cut in [0, 10, 17, 20, 37] {
        assert_eq!(
            build_reject(&syn[..cut], &parsed, &mut out),
            Err(RejectSkip::Malformed)
        );
    }
    // Another packet at the same offsets.
    let other = frame_v4(
        DOT1Q,
        &V4 {
            src: V4_B,
            ..v4(IpProtocol::TCP)
        },
        &tcp(TcpFlags::SYN, 1, 0, 0),
    );
    assert_eq!(
        build_reject(&other, &parsed, &mut out),
        Err(RejectSkip::Malformed)
    );
    // IPv6 bytes where IPv4 was parsed.
    let v6 = frame_v6(DOT1Q, IpProtocol::TCP, &[], &tcp(TcpFlags::SYN, 1, 0, 0));
    assert_eq!(
        build_reject(&v6, &parsed, &mut out),
        Err(RejectSkip::Malformed)
    );
    // Offsets out of range.
    for l3_offset in [0, 13, 16, usize::MAX] {
        let p = Parsed {
            l3_offset,
            ..parsed
        };
        assert_eq!(build_reject(&syn, &p, &mut out), Err(RejectSkip::Malformed));
    }
    let udp6 = frame_v6(UNTAGGED, IpProtocol::UDP, &[], &udp(8));
    let p6 = parse(&udp6).unwrap();
    for l4_offset in [None, Some(0)] {
        let p = Parsed { l4_offset, ..p6 };
        assert_eq!(
            build_reject(&udp6, &p, &mut out),
            Err(RejectSkip::Malformed)
        );
    }
    let p = Parsed {
        l4: L4::None,
        ..parse(&syn).unwrap()
    };
    assert_eq!(build_reject(&syn, &p, &mut out), Err(RejectSkip::Malformed));
}

#[test]
fn skip_names_are_unique_labels() {
    let mut names: Vec<_> = RejectSkip::ALL.iter().map(|s| s.name()).collect();
    assert!(names
        .iter()
        .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), RejectSkip::COUNT);
    for (i, s) in RejectSkip::ALL.iter().enumerate() {
        assert_eq!(*s as usize, i);
    }
}

// ---- properties ----

/// A plausible frame: VLAN tags, IPv4 or IPv6 (with optional extension headers and fragmentation),
/// TCP/UDP/ICMP/other with random fields, mostly unicast addresses, random trailing padding.
fn arb_frame() -> impl Strategy<Value = Vec<u8>> {
    let tags = prop::collection::vec(
        (
            prop::sample::select(vec![0x8100u16, 0x88a8, 0x9100]),
            any::<u16>(),
        ),
        0..=2,
    );
    let v4_addr = prop_oneof![
        4 => (1u8..224, any::<[u8; 3]>()).prop_map(|(a, r)| Ipv4Addr::new(a, r[0], r[1], r[2])),
        1 => any::<[u8; 4]>().prop_map(Ipv4Addr::from),
    ];
    let v6_addr = prop_oneof![
        4 => any::<[u8; 16]>().prop_map(|mut a| { a[0] = 0x20; Ipv6Addr::from(a) }),
        1 => any::<[u8; 16]>().prop_map(Ipv6Addr::from),
    ];
    let proto = prop_oneof![
        Just(IpProtocol::TCP),
        Just(IpProtocol::UDP),
        Just(IpProtocol::ICMP),
        Just(IpProtocol::ICMPV6),
        any::<u8>().prop_map(IpProtocol),
    ];
    let mac = prop_oneof![4 => Just(MAC_B), 1 => any::<[u8; 6]>().prop_map(MacAddr)];
    (
        tags,
        any::<bool>(),
        (v4_addr.clone(), v4_addr, v6_addr.clone(), v6_addr),
        proto,
        (
            any::<u16>(),
            any::<u32>(),
            any::<u32>(),
            prop::sample::select(vec![0u8, 1, 2, 3, 4, 5, 8, 11, 128, 135, 137]),
        ),
        prop::collection::vec(any::<u8>(), 0..1500),
        prop_oneof![
            3 => Just((0u16, false)),
            1 => Just((0, true)),
            1 => (1u16..8191, any::<bool>()).prop_map(|(o, m)| (o * 8, m))
        ],
        0u8..4,
        (mac, prop::collection::vec(any::<u8>(), 0..8)),
    )
        .prop_map(
            |(
                tags,
                is_v6,
                addrs,
                proto,
                (flags, seq, ack, icmp_ty),
                payload,
                (frag_off, more),
                ext,
                (dst_mac, pad),
            )| {
                let l4 = match proto {
                    IpProtocol::TCP => {
                        tcp_with(TcpFlags::from_bits_truncate(flags), seq, ack, &[], &payload)
                    }
                    IpProtocol::UDP => {
                        let mut d = udp(payload.len());
                        d[8..].copy_from_slice(&payload);
                        d
                    }
                    IpProtocol::ICMP | IpProtocol::ICMPV6 => {
                        let mut m = vec![icmp_ty, 0, 0, 0, 0, 0, 0, 0];
                        m.extend(&payload);
                        m
                    }
                    _ => payload,
                };
                let tags: Vec<Tag> = tags
                    .into_iter()
                    .map(|(t, tci)| (EtherType(t), tci))
                    .collect();
                let mut frame = if is_v6 {
                    let mut hdrs = Vec::new();
                    let mut first = proto;
                    if frag_off != 0 || more || ext & 2 != 0 {
                        hdrs.extend(fragment_header(first, frag_off, more));
                        first = IpProtocol::IPV6_FRAG;
                    }
                    if ext & 1 != 0 {
                        let mut h = options_header(first).to_vec();
                        h.extend(hdrs);
                        hdrs = h;
                        first = IpProtocol::HOPOPT;
                    }
                    let l4 = &l4[..l4.len().min(65535 - hdrs.len())];
                    let p = ipv6(addrs.2, addrs.3, first, &hdrs, l4);
                    ethernet(dst_mac, MAC_A, &tags, EtherType::IPV6, &p)
                } else {
                    let h = V4 {
                        src: addrs.0,
                        dst: addrs.1,
                        proto,
                        options: if ext & 1 != 0 {
                            vec![1, 1, 1, 0]
                        } else {
                            Vec::new()
                        },
                        frag_offset: frag_off,
                        more_frags: more,
                    };
                    ethernet(dst_mac, MAC_A, &tags, EtherType::IPV4, &ipv4(&h, &l4))
                };
                frame.extend(pad);
                frame
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn random_bytes_never_panic(
        frame in prop::collection::vec(any::<u8>(), 0..1600),
        ethertype in prop::sample::select(vec![None, Some(0x0800u16), Some(0x86dd), Some(0x8100)]),
        out_len in 0usize..1600,
    ) {
        let mut frame = frame;
        if let (Some(t), true) = (ethertype, frame.len() >= 15) {
            frame[12..14].copy_from_slice(&t.to_be_bytes());
            frame[14] = if t == 0x86dd { 0x60 } else { 0x45 };
        }
        let mut out = vec![0xa5u8; out_len];
        if let Ok(parsed) = parse(&frame) {
            if let Ok(n) = build_reject(&frame, &parsed, &mut out) {
                prop_assert!(n <= out_len);
                check_reply(&frame, &parsed, &out[..n]);
            }
        }
    }

    #[test]
    fn plausible_frames_get_valid_replies(
        frame in arb_frame(),
        out_len in prop_oneof![Just(MAX_REPLY_LEN), 0usize..MAX_REPLY_LEN],
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut frame = frame;
        for (i, v) in flips {
            let i = i.index(frame.len());
            frame[i] = v;
        }
        let Ok(parsed) = parse(&frame) else { return Ok(()) };
        let mut out = vec![0xa5u8; out_len];
        match build_reject(&frame, &parsed, &mut out) {
            Ok(n) => {
                prop_assert!(n <= out_len);
                check_reply(&frame, &parsed, &out[..n]);
            }
            Err(RejectSkip::OutTooSmall) => prop_assert!(out_len < MAX_REPLY_LEN),
            Err(RejectSkip::Malformed) => prop_assert!(false, "parse(frame) is never malformed"),
            Err(_) => {}
        }
    }

    #[test]
    fn mismatched_parsed_never_panics(a in arb_frame(), b in arb_frame(), out_len in 0usize..1600) {
        if let Ok(parsed) = parse(&a) {
            let mut out = vec![0u8; out_len];
            if let Ok(n) = build_reject(&b, &parsed, &mut out) {
                prop_assert!(n <= out_len);
            }
        }
    }
}

/// FNV-1a, enough to fingerprint a corpus of replies.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Offending frames and reply buffer lengths drawn deterministically from `arb_frame`, with every reply
/// (or the reason there is none), fingerprinted together.
fn corpus_fingerprint() -> (u64, usize) {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut h, mut answered) = (0xcbf2_9ce4_8422_2325u64, 0);
    for i in 0..4096usize {
        let frame = arb_frame().new_tree(&mut runner).unwrap().current();
        let Ok(parsed) = parse(&frame) else { continue };
        // Mostly roomy buffers, some that cut the quote or refuse.
        let out_len = [MAX_REPLY_LEN, 1600, 100, 64, 80][i % 5];
        let mut out = vec![0xa5u8; out_len];
        h = fnv(h, &frame);
        h = fnv(h, &out_len.to_be_bytes());
        match build_reject(&frame, &parsed, &mut out) {
            Ok(n) => {
                answered += 1;
                h = fnv(h, &out[..n]);
            }
            Err(skip) => h = fnv(h, skip.name().as_bytes()),
        }
    }
    (h, answered)
}

/// Replies written before the reply builder moved onto `net`'s emit side, kept to prove it writes the
/// same bytes: the fingerprint of a 4096-frame corpus and four replies in full.
#[test]
fn replies_are_byte_identical_to_those_recorded() {
    assert_eq!(corpus_fingerprint(), (0xa8be_7e47_9983_7b50, 1441));
    let cases = [
        (
            frame_v4(UNTAGGED, &v4(IpProtocol::TCP), &tcp(TcpFlags::SYN, 1000, 0, 0)),
            "02000000000a02000000000b0800450000280000400040066ec8c00002070a00000101bb9c400000000000\
             0003e95014000041e40000000000000000",
        ),
        (
            frame_v4(QINQ, &v4(IpProtocol::UDP), &udp(20)),
            "02000000000a02000000000b88a87064810020c8080045c0004c0000400040016de9c00002070a00000103\
             0d05fd0000000045290030123400003f119d580a000001c00002079c400035001c00000001020304050607\
             08090a0b0c0d0e0f10111213",
        ),
        (
            frame_v6(DOT1Q, IpProtocol::TCP, &[], &tcp(TcpFlags::ACK | TcpFlags::FIN, 5, 77, 3)),
            "02000000000a02000000000b8100a07b86dd600000000014064020010db8beef0000000000000000000220\
             010db800000000000000000000000101bb9c400000004d0000000050040000f7330000",
        ),
        (
            frame_v6(UNTAGGED, IpProtocol::UDP, &[], &udp(10)),
            "02000000000a02000000000b86dd6000000000423a4020010db8beef0000000000000000000220010db800\
             000000000000000000000101017900000000006b8123450012113f20010db8000000000000000000000001\
             20010db8beef000000000000000000029c4000350012000000010203040506070809",
        ),
    ];
    for (frame, want) in cases {
        let got: String = reject(&frame)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
    }
}
