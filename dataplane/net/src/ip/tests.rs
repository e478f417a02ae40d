use super::*;

/// The sum of `bytes` laid out as the pseudo header would be.
fn laid_out(bytes: &[u8]) -> u16 {
    checksum::fold(checksum::sum(bytes))
}

#[test]
fn pseudo_headers() {
    // Pseudo header sums equal the sum of the laid-out bytes.
    let s4 = Ipv4Addr::new(192, 0, 2, 1);
    let d4 = Ipv4Addr::new(198, 51, 100, 7);
    let mut b = Vec::new();
    b.extend_from_slice(&s4.octets());
    b.extend_from_slice(&d4.octets());
    b.extend_from_slice(&[0, 17, 0x12, 0x34]);
    assert_eq!(
        checksum::fold(pseudo_header_v4(s4, d4, IpProtocol::UDP, 0x1234)),
        laid_out(&b)
    );
    let s6: Ipv6Addr = "2001:db8::ffff:1".parse().unwrap();
    let d6: Ipv6Addr = "fe80::abcd".parse().unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(&s6.octets());
    b.extend_from_slice(&d6.octets());
    b.extend_from_slice(&0x0001_0203u32.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 58]);
    assert_eq!(
        checksum::fold(pseudo_header_v6(s6, d6, IpProtocol::ICMPV6, 0x0001_0203)),
        laid_out(&b)
    );
}
