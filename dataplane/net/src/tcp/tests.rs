use super::*;
use crate::fixtures;

const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 100);
const DST: Ipv4Addr = Ipv4Addr::new(93, 184, 216, 34);

fn seg() -> &'static [u8] {
    &fixtures::TCP_SYN_V4[34..]
}

#[test]
fn fields() {
    let t = TcpPacket::new_checked(seg()).unwrap();
    assert_eq!(t.src_port(), 54321);
    assert_eq!(t.dst_port(), 80);
    assert_eq!(t.seq_number(), 0x6b8b4567);
    assert_eq!(t.ack_number(), 0);
    assert_eq!(t.data_offset(), 10);
    assert_eq!(t.header_len(), 40);
    assert_eq!(t.flags(), TcpFlags::SYN);
    assert_eq!(t.window_len(), 64240);
    assert_eq!(t.checksum(), 0x995b);
    assert_eq!(t.urgent_at(), 0);
    assert!(t.payload().is_empty());
    assert!(t.verify_checksum_v4(SRC, DST));
    assert!(!t.verify_checksum_v4(SRC, Ipv4Addr::new(1, 2, 3, 4)));
    let opts: Vec<_> = t.options().collect();
    assert_eq!(
        opts,
        vec![
            Ok(TcpOption::Mss(1460)),
            Ok(TcpOption::SackPermitted),
            Ok(TcpOption::Timestamps {
                tsval: 0x0a1b2c3d,
                tsecr: 0
            }),
            Ok(TcpOption::NoOp),
            Ok(TcpOption::WindowScale(7)),
        ]
    );
}

#[test]
fn truncations() {
    let s = seg();
    for n in 0..=s.len() {
        match TcpPacket::new_checked(&s[..n]) {
            Ok(t) => {
                assert_eq!(n, s.len());
                assert_eq!(t.options().count(), 5);
            }
            Err(e) => assert_eq!(e, Error::Truncated),
        }
        // Every cut of the option area ends in at most one error.
        let opts = &s[20..n.max(20)];
        let items: Vec<_> = TcpOptions::new(opts).collect();
        assert!(items.iter().filter(|r| r.is_err()).count() <= 1);
        if let Some(pos) = items.iter().position(|r| r.is_err()) {
            assert_eq!(pos, items.len() - 1);
        }
    }
}

#[test]
fn bad_data_offset() {
    let mut s = seg().to_vec();
    s[12] = 0x40;
    assert_eq!(TcpPacket::new_checked(&s[..]), Err(Error::Malformed));
    s[12] = 0x00;
    assert_eq!(TcpPacket::new_checked(&s[..]), Err(Error::Malformed));
    s[12] = 0xf0;
    assert_eq!(TcpPacket::new_checked(&s[..]), Err(Error::Truncated));
}

#[test]
fn malformed_options() {
    let cases: [(&[u8], Vec<Result<TcpOption>>); 8] = [
        // Length 0 would loop forever if trusted.
        (
            &[1, 99, 0, 1, 1],
            vec![Ok(TcpOption::NoOp), Err(Error::Malformed)],
        ),
        // Length 1 cannot even cover kind and length.
        (&[99, 1, 1, 1], vec![Err(Error::Malformed)]),
        // Length overrunning the option area.
        (&[2, 4, 5], vec![Err(Error::Truncated)]),
        (&[99, 40, 0, 0], vec![Err(Error::Truncated)]),
        // Kind without a length byte.
        (&[1, 2], vec![Ok(TcpOption::NoOp), Err(Error::Truncated)]),
        // Known kinds with the wrong length.
        (&[2, 3, 5, 1], vec![Err(Error::Malformed)]),
        (&[5, 6, 0, 0, 0, 0], vec![Err(Error::Malformed)]),
        // EOL ends the list even if garbage follows.
        (&[0, 2, 0, 1], vec![Ok(TcpOption::EndOfList)]),
    ];
    for (bytes, want) in cases {
        let got: Vec<_> = TcpOptions::new(bytes).collect();
        assert_eq!(got, want, "{bytes:?}");
    }
}

#[test]
fn sack_and_unknown() {
    let bytes = [
        5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 10, 0, 0, 0, 20, 30, 4, 0xab, 0xcd,
    ];
    let opts: Vec<_> = TcpOptions::new(&bytes).map(Result::unwrap).collect();
    let TcpOption::Sack(blocks) = opts[0] else {
        panic!("not a SACK: {:?}", opts[0]);
    };
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks.iter().collect::<Vec<_>>(), vec![(1, 2), (10, 20)]);
    assert_eq!(
        opts[1],
        TcpOption::Unknown {
            kind: 30,
            data: &[0xab, 0xcd]
        }
    );
    // emit() reproduces the input.
    let mut out = [0u8; 22];
    let n = opts[0].emit(&mut out).unwrap();
    let m = opts[1].emit(&mut out[n..]).unwrap();
    assert_eq!(n + m, 22);
    assert_eq!(out, bytes);
    assert_eq!(opts[0].emit(&mut [0u8; 3]), Err(Error::Truncated));
}

#[test]
fn flags() {
    let sa = TcpFlags::SYN | TcpFlags::ACK;
    assert_eq!(sa.to_string(), "SA");
    assert!(sa.contains(TcpFlags::SYN) && !sa.contains(TcpFlags::FIN));
    let all = TcpFlags::from_bits_truncate(0xffff);
    assert_eq!(all.to_string(), "FSRPAUECN");
    assert_eq!(all.bits(), 0x1ff);
    let mut f = TcpFlags::empty();
    assert!(f.is_empty());
    assert_eq!(f.to_string(), "");
    f.insert(TcpFlags::FIN | TcpFlags::PSH);
    f.remove(TcpFlags::PSH);
    assert_eq!(f, TcpFlags::FIN);
}

#[test]
fn build_and_checksum() {
    let src6: Ipv6Addr = "2001:db8::a".parse().unwrap();
    let dst6: Ipv6Addr = "2001:db8::b".parse().unwrap();
    let mut buf = [0u8; 32 + 5];
    let mut t = TcpPacket::new_unchecked(&mut buf[..]);
    t.set_src_port(1);
    t.set_dst_port(2);
    t.set_seq_number(3);
    t.set_ack_number(4);
    t.set_header_len(32);
    t.set_flags(TcpFlags::ACK | TcpFlags::PSH | TcpFlags::NS);
    t.set_window_len(5);
    t.set_urgent_at(6);
    let o = t.options_mut();
    let n = TcpOption::Timestamps { tsval: 1, tsecr: 2 }
        .emit(o)
        .unwrap();
    TcpOption::NoOp.emit(&mut o[n..]).unwrap();
    TcpOption::NoOp.emit(&mut o[n + 1..]).unwrap();
    t.payload_mut().copy_from_slice(b"hello");
    t.fill_checksum_v6(src6, dst6);
    let t = TcpPacket::new_checked(&buf[..]).unwrap();
    assert!(t.verify_checksum_v6(src6, dst6));
    assert!(!t.verify_checksum_v6(dst6, "::1".parse().unwrap()));
    assert_eq!(t.data_offset(), 8);
    assert_eq!(t.flags(), TcpFlags::ACK | TcpFlags::PSH | TcpFlags::NS);
    assert_eq!(t.payload(), b"hello");
    assert_eq!(t.options().count(), 3);
    let mut buf2 = buf;
    let mut t = TcpPacket::new_unchecked(&mut buf2[..]);
    t.fill_checksum_v4(SRC, DST);
    assert!(t.verify_checksum_v4(SRC, DST));
    // Refilling the fixture reproduces its checksum.
    let mut syn = seg().to_vec();
    let mut t = TcpPacket::new_unchecked(&mut syn[..]);
    t.fill_checksum_v4(SRC, DST);
    assert_eq!(t.checksum(), 0x995b);
}
