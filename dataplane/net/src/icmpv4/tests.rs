use super::*;
use crate::fixtures;
use crate::ip::IpProtocol;
use crate::udp::UdpPacket;
use std::net::Ipv4Addr;

#[test]
fn echo() {
    let ip = Ipv4Packet::new_checked(&fixtures::ICMP_ECHO_QINQ[22..]).unwrap();
    let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(m.msg_type(), types::ECHO_REQUEST);
    assert_eq!(m.msg_code(), 0);
    assert_eq!(m.checksum(), 0x5435);
    assert!(m.verify_checksum());
    assert_eq!(m.echo_ident(), Some(0x1234));
    assert_eq!(m.echo_seq(), Some(1));
    assert_eq!(m.payload(), b"abcdefgh");
    assert_eq!(m.quoted(), None);
    assert_eq!(m.next_hop_mtu(), None);
}

#[test]
fn port_unreachable() {
    let ip = Ipv4Packet::new_checked(&fixtures::ICMP_PORT_UNREACH[14..]).unwrap();
    let m = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(m.msg_type(), types::DEST_UNREACHABLE);
    assert_eq!(m.msg_code(), codes::PORT_UNREACHABLE);
    assert!(m.verify_checksum());
    assert_eq!(m.echo_ident(), None);
    let q = m.quoted().unwrap();
    assert_eq!(q.len(), 28);
    let inner = Ipv4Packet::new_checked_quoted(q).unwrap();
    assert_eq!(inner.protocol(), IpProtocol::UDP);
    assert_eq!(inner.src_addr(), Ipv4Addr::new(192, 168, 1, 100));
    assert_eq!(inner.dst_addr(), Ipv4Addr::new(192, 168, 1, 1));
    let udp = UdpPacket::new_checked_header(inner.payload()).unwrap();
    assert_eq!((udp.src_port(), udp.dst_port()), (40000, 33434));
}

#[test]
fn truncations() {
    for frame in [
        &fixtures::ICMP_PORT_UNREACH[34..],
        &fixtures::ICMP_ECHO_QINQ[42..58],
    ] {
        for n in 0..=frame.len() {
            match Icmpv4Packet::new_checked(&frame[..n]) {
                Ok(m) => {
                    assert!(n >= 8);
                    let _ = (m.echo_ident(), m.rest_of_header(), m.verify_checksum());
                    if let Some(q) = m.quoted() {
                        assert!(q.len() >= 20 && q.len() <= 28);
                    }
                }
                Err(e) => assert_eq!((e, n < 8), (Error::Truncated, true)),
            }
        }
    }
}

/// Fuzzer find: a quoted header whose total length is below its IHL was
/// returned by `quoted()` yet rejected by `new_checked_quoted`.
#[test]
fn regression_quoted_total_len_below_ihl() {
    let input: [u8; 75] = [
        4, 0, 0, 0, 0, 14, 23, 50, 70, 0, 0, 0, 4, 0, 0, 124, 124, 124, 124, 124, 124, 124, 124,
        124, 124, 124, 124, 121, 124, 124, 124, 124, 124, 124, 124, 124, 60, 124, 124, 0, 0, 0, 0,
        8, 8, 0, 4, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
        255, 255, 255, 255, 255, 255, 255, 255, 0, 0, 4, 0,
    ];
    for off in 0..input.len() {
        if let Ok(m) = Icmpv4Packet::new_checked(&input[off..]) {
            if let Some(q) = m.quoted() {
                assert!(Ipv4Packet::new_checked_quoted(q).is_ok(), "offset {off}");
            }
        }
    }
    let mut msg = [0u8; 8 + 28];
    msg[0] = types::TIME_EXCEEDED;
    msg[8] = 0x46; // 24-byte header...
    msg[11] = 20; // ...in a 20-byte packet
    assert_eq!(Icmpv4Packet::new_checked(&msg[..]).unwrap().quoted(), None);
}

#[test]
fn build() {
    let mut buf = [0u8; 8 + 28];
    let mut m = Icmpv4Packet::new_unchecked(&mut buf[..]);
    m.set_msg_type(types::DEST_UNREACHABLE);
    m.set_msg_code(codes::FRAG_NEEDED);
    m.set_rest_of_header(1400);
    m.payload_mut()
        .copy_from_slice(&fixtures::ICMP_PORT_UNREACH[42..]);
    m.fill_checksum();
    let m = Icmpv4Packet::new_checked(&buf[..]).unwrap();
    assert!(m.verify_checksum());
    assert_eq!(m.next_hop_mtu(), Some(1400));
    assert_eq!(m.quoted().map(<[u8]>::len), Some(28));
    let mut buf = [0u8; 8];
    let mut m = Icmpv4Packet::new_unchecked(&mut buf[..]);
    m.set_msg_type(types::ECHO_REPLY);
    m.set_echo_ident(9);
    m.set_echo_seq(10);
    assert_eq!((m.echo_ident(), m.echo_seq()), (Some(9), Some(10)));
}
