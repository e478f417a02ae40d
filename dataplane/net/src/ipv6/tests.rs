use super::*;
use crate::fixtures;

fn ip() -> &'static [u8] {
    &fixtures::UDP_V6_HBH_FRAG[14..]
}

#[test]
fn fields() {
    let p = Ipv6Packet::new_checked(ip()).unwrap();
    assert_eq!(p.version(), 6);
    assert_eq!(p.traffic_class(), 0x2e);
    assert_eq!(p.flow_label(), 0x12345);
    assert_eq!(p.payload_len(), 36);
    assert_eq!(p.next_header(), IpProtocol::HOPOPT);
    assert_eq!(p.hop_limit(), 64);
    assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
    assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
    assert_eq!(p.payload().len(), 36);
    let w = p.walk_extension_headers().unwrap();
    assert_eq!(w.upper_protocol, IpProtocol::UDP);
    assert_eq!(w.upper_offset, 56);
    assert_eq!(
        w.fragment,
        Some(Fragment {
            offset: 0,
            more: false,
            ident: 0xdeadbeef
        })
    );
    let hbh = ExtHeader::new_checked(p.payload()).unwrap();
    assert_eq!(hbh.next_header(), IpProtocol::IPV6_FRAG);
    assert_eq!(hbh.header_len(), 8);
    assert_eq!(hbh.data(), &[1, 4, 0, 0, 0, 0]);
    let frag = FragmentHeader::new_checked(&p.payload()[8..]).unwrap();
    assert_eq!(frag.next_header(), IpProtocol::UDP);
    assert_eq!(frag.ident(), 0xdeadbeef);
}

#[test]
fn truncations() {
    let ip = ip();
    for n in 0..=ip.len() {
        match Ipv6Packet::new_checked(&ip[..n]) {
            Ok(p) => {
                assert_eq!(n, ip.len());
                assert!(p.walk_extension_headers().is_ok());
            }
            Err(e) => assert_eq!(e, Error::Truncated),
        }
        // The walker on a cut payload never panics, and fails exactly
        // when the chain is cut.
        let payload = &ip[40..n.max(40)];
        let r = walk_extension_headers(IpProtocol::HOPOPT, payload, 40);
        assert_eq!(r.is_ok(), payload.len() >= 16, "len {}", payload.len());
    }
}

#[test]
fn bad_version() {
    let mut ip = ip().to_vec();
    ip[0] = 0x40;
    assert_eq!(Ipv6Packet::new_checked(&ip[..]), Err(Error::Malformed));
}

/// Builds a payload with `n` destination-options headers then UDP.
fn chain(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..n {
        let next = if i + 1 == n { 17 } else { 60 };
        v.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    v.extend_from_slice(&[0; 8]);
    v
}

#[test]
fn header_limit() {
    let ok = chain(MAX_EXT_HEADERS);
    let w = walk_extension_headers(IpProtocol::IPV6_OPTS, &ok, 0).unwrap();
    assert_eq!(w.upper_protocol, IpProtocol::UDP);
    assert_eq!(w.upper_offset, 64);
    let bad = chain(MAX_EXT_HEADERS + 1);
    assert_eq!(
        walk_extension_headers(IpProtocol::IPV6_OPTS, &bad, 0),
        Err(Ipv6WalkError::TooManyHeaders)
    );
}

#[test]
fn hop_by_hop_not_first() {
    let payload = [0u8, 0, 1, 4, 0, 0, 0, 0, 17, 0, 1, 4, 0, 0, 0, 0];
    assert_eq!(
        walk_extension_headers(IpProtocol::IPV6_OPTS, &payload, 0),
        Err(Ipv6WalkError::HopByHopNotFirst)
    );
}

#[test]
fn non_first_fragment_stops() {
    // Fragment at offset 1232 with M set, then what would be TCP data.
    let payload = [6u8, 0, 0x04, 0xd1, 0, 0, 0, 9, 0xff, 0xff];
    let w = walk_extension_headers(IpProtocol::IPV6_FRAG, &payload, 40).unwrap();
    assert_eq!(w.upper_protocol, IpProtocol::TCP);
    assert_eq!(w.upper_offset, 48);
    assert_eq!(
        w.fragment,
        Some(Fragment {
            offset: 1232,
            more: true,
            ident: 9
        })
    );
}

#[test]
fn ah_and_esp() {
    // AH with length field 1 => 12 bytes, then ESP which stops the walk.
    let payload = [50u8, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0xaa];
    let w = walk_extension_headers(IpProtocol::AH, &payload, 0).unwrap();
    assert_eq!(w.upper_protocol, IpProtocol::ESP);
    assert_eq!(w.upper_offset, 12);
    // AH length field 0 would be shorter than AH's own fixed part.
    let payload = [6u8, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        walk_extension_headers(IpProtocol::AH, &payload, 0),
        Err(Ipv6WalkError::Malformed)
    );
    let w = walk_extension_headers(IpProtocol::IPV6_NONXT, &[], 40).unwrap();
    assert_eq!(w.upper_protocol, IpProtocol::IPV6_NONXT);
    assert_eq!(w.upper_offset, 40);
}

#[test]
fn build() {
    let mut buf = [0u8; 40 + 8 + 8 + 4];
    let mut p = Ipv6Packet::new_unchecked(&mut buf[..]);
    p.set_version(6);
    p.set_traffic_class(0xb8);
    p.set_flow_label(0xfffff);
    p.set_payload_len(20);
    p.set_next_header(IpProtocol::IPV6_ROUTE);
    p.set_hop_limit(3);
    p.set_src_addr(Ipv6Addr::LOCALHOST);
    p.set_dst_addr(Ipv6Addr::UNSPECIFIED);
    let payload = p.payload_mut();
    let mut rh = ExtHeader::new_unchecked(&mut payload[..8]);
    rh.set_next_header(IpProtocol::IPV6_FRAG);
    rh.set_header_len(8);
    rh.data_mut().fill(0);
    let mut fh = FragmentHeader::new_unchecked(&mut payload[8..16]);
    fh.set_next_header(IpProtocol::ICMPV6);
    fh.set_frag_offset(64);
    fh.set_more_frags(true);
    fh.set_ident(77);
    fh.set_more_frags(false);
    let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
    assert_eq!(p.version(), 6);
    assert_eq!(p.traffic_class(), 0xb8);
    assert_eq!(p.flow_label(), 0xfffff);
    assert_eq!(p.hop_limit(), 3);
    assert_eq!(p.src_addr(), Ipv6Addr::LOCALHOST);
    let w = p.walk_extension_headers().unwrap();
    assert_eq!(w.upper_protocol, IpProtocol::ICMPV6);
    assert_eq!(w.upper_offset, 56);
    assert_eq!(
        w.fragment,
        Some(Fragment {
            offset: 64,
            more: false,
            ident: 77
        })
    );
}
