use super::*;
use crate::fixtures;

fn syn_ip() -> &'static [u8] {
    &fixtures::TCP_SYN_V4[14..]
}

#[test]
fn fields() {
    let p = Ipv4Packet::new_checked(syn_ip()).unwrap();
    assert_eq!(p.version(), 4);
    assert_eq!(p.ihl(), 5);
    assert_eq!(p.header_len(), 20);
    assert_eq!((p.dscp(), p.ecn()), (0, 0));
    assert_eq!(p.total_len(), 60);
    assert_eq!(p.ident(), 0x1c46);
    assert!(p.dont_frag());
    assert!(!p.more_frags());
    assert_eq!(p.frag_offset(), 0);
    assert!(!p.is_fragment());
    assert_eq!(p.ttl(), 64);
    assert_eq!(p.protocol(), IpProtocol::TCP);
    assert_eq!(p.checksum(), 0x268f);
    assert!(p.verify_checksum());
    assert_eq!(p.src_addr(), Ipv4Addr::new(192, 168, 1, 100));
    assert_eq!(p.dst_addr(), Ipv4Addr::new(93, 184, 216, 34));
    assert!(p.options().is_empty());
    assert_eq!(p.payload().len(), 40);
}

/// The worked example from the IPv4 header checksum literature.
#[test]
fn known_checksum() {
    let mut buf = [0u8; 0x73];
    buf[..20].copy_from_slice(&[
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ]);
    let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
    assert!(p.verify_checksum());
    let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
    p.set_checksum(0);
    assert!(!p.verify_checksum());
    p.fill_checksum();
    assert_eq!(p.checksum(), 0xb861);
}

#[test]
fn padding_excluded_from_payload() {
    let frame = &fixtures::ICMP_ECHO_QINQ[22..];
    let p = Ipv4Packet::new_checked(frame).unwrap();
    assert_eq!(frame.len(), 38);
    assert_eq!(p.total_len(), 36);
    assert_eq!(p.payload().len(), 16);
}

#[test]
fn truncations() {
    let ip = syn_ip();
    for n in 0..=ip.len() {
        match Ipv4Packet::new_checked(&ip[..n]) {
            Ok(p) => {
                assert_eq!(n, ip.len());
                assert_eq!(p.payload().len(), 40);
            }
            Err(e) => assert_eq!(e, Error::Truncated),
        }
    }
}

#[test]
fn malformed() {
    let mut ip = syn_ip().to_vec();
    // Version 6 in an IPv4 header.
    ip[0] = 0x65;
    assert_eq!(Ipv4Packet::new_checked(&ip[..]), Err(Error::Malformed));
    // IHL below the minimum.
    ip[0] = 0x44;
    assert_eq!(Ipv4Packet::new_checked(&ip[..]), Err(Error::Malformed));
    // IHL beyond the buffer.
    ip[0] = 0x4f;
    assert_eq!(Ipv4Packet::new_checked(&ip[..40]), Err(Error::Truncated));
    // IHL beyond total length.
    ip[2..4].copy_from_slice(&56u16.to_be_bytes());
    assert_eq!(Ipv4Packet::new_checked(&ip[..]), Err(Error::Malformed));
    // Total length shorter than the header.
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(Ipv4Packet::new_checked(&ip[..]), Err(Error::Malformed));
    // Total length beyond the buffer.
    ip[2..4].copy_from_slice(&61u16.to_be_bytes());
    assert_eq!(Ipv4Packet::new_checked(&ip[..]), Err(Error::Truncated));
    // ...which a quoted header tolerates.
    let q = Ipv4Packet::new_checked_quoted(&ip[..28]).unwrap();
    assert_eq!(q.payload().len(), 8);
}

#[test]
fn options_and_fragments() {
    let mut buf = [0u8; 40];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    p.set_version(4);
    p.set_header_len(24);
    p.set_dscp(46);
    p.set_ecn(1);
    p.set_total_len(40);
    p.set_ident(7);
    p.set_more_frags(true);
    p.set_frag_offset(1480);
    p.set_ttl(1);
    p.set_protocol(IpProtocol::UDP);
    p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
    p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
    p.options_mut().copy_from_slice(&[0x94, 0x04, 0, 0]); // router alert
    p.payload_mut().fill(0xee);
    p.fill_checksum();
    let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!((p.dscp(), p.ecn()), (46, 1));
    assert_eq!(p.options(), &[0x94, 0x04, 0, 0]);
    assert!(p.more_frags() && !p.dont_frag() && p.is_fragment());
    assert_eq!(p.frag_offset(), 1480);
    assert_eq!(p.payload(), &[0xee; 16]);
    let mut buf2 = buf;
    let mut p = Ipv4Packet::new_unchecked(&mut buf2[..]);
    p.set_more_frags(false);
    assert!(p.is_fragment());
    p.set_frag_offset(0);
    assert!(!p.is_fragment());
    p.set_dont_frag(true);
    assert!(p.dont_frag());
    p.clear_flags();
    assert!(!p.dont_frag());
}

#[test]
fn protocol_display() {
    assert_eq!(IpProtocol::TCP.to_string(), "tcp");
    assert_eq!(IpProtocol(200).to_string(), "200");
}
