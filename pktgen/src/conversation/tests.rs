use super::*;
use net::{parse, L4};

fn conv(kind: Kind, v6: bool, teardown: Teardown) -> Conversation {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        ("fd00:a::1".parse().unwrap(), "fd00:b::2".parse().unwrap())
    } else {
        ("10.0.0.1".parse().unwrap(), "172.16.0.2".parse().unwrap())
    };
    Conversation {
        kind,
        src,
        dst,
        sport: 40000,
        dport: 80,
        vlan: Some(7),
        isn: (u32::MAX - 2, 1000),
        ident: (1, 2),
        data_frames: vec![200, 300, 9014],
        teardown,
    }
}

#[test]
fn tcp_seq_ack_track_both_sides_across_wraparound() {
    let c = conv(Kind::Tcp, false, Teardown::Fin);
    let frames = c.frames();
    use TcpFlags as F;
    let want = [
        F::SYN,
        F::SYN | F::ACK,
        F::ACK,
        F::ACK | F::PSH,
        F::ACK | F::PSH,
        F::ACK | F::PSH,
        F::FIN | F::ACK,
        F::FIN | F::ACK,
        F::ACK,
    ];
    assert_eq!(frames.len(), want.len());
    // Headers are 18 + 20 + 20 bytes: the data is 142, 242 and 8956 bytes.
    let (c0, s0) = (u32::MAX - 2, 1000u32);
    let c1 = c0.wrapping_add(1);
    let s1 = s0 + 1;
    let seq_ack = [
        (c0, 0),
        (s0, c1),
        (c1, s1),
        (c1, s1),
        (s1, c1.wrapping_add(142)),
        (c1.wrapping_add(142), s1 + 242),
        (c1.wrapping_add(142 + 8956), s1 + 242),
        (s1 + 242, c1.wrapping_add(142 + 8956 + 1)),
        (c1.wrapping_add(142 + 8956 + 1), s1 + 242 + 1),
    ];
    for (i, (dir, f)) in frames.iter().enumerate() {
        let p = parse(f).unwrap();
        let L4::Tcp {
            sport,
            seq,
            ack,
            flags,
            ..
        } = p.l4
        else {
            panic!("frame {i} is not TCP")
        };
        assert_eq!(sport == 40000, *dir == Direction::Orig, "frame {i}");
        assert_eq!(flags, want[i], "frame {i}");
        assert_eq!((seq, ack), seq_ack[i], "frame {i}");
        assert_eq!(p.vlans, [Some(7), None]);
    }
    assert_eq!(frames[5].1.len(), 9014);
    let rst = conv(Kind::Tcp, true, Teardown::Rst).frames();
    assert_eq!(rst.len(), 7);
    let p = parse(&rst[6].1).unwrap();
    assert!(matches!(p.l4, L4::Tcp { flags, .. } if flags == F::RST | F::ACK));
}

#[test]
fn echo_and_udp_alternate_and_reply_mirrors() {
    for v6 in [false, true] {
        let c = conv(Kind::Echo { ident: 77 }, v6, Teardown::Fin);
        let f = c.frames();
        assert_eq!(f.len(), 3);
        let (req, rep) = if v6 { (128, 129) } else { (8, 0) };
        for (i, (dir, b)) in f.iter().enumerate() {
            let p = parse(b).unwrap();
            let (ty, ident) = match p.l4 {
                L4::Icmp { ty, ident, .. } | L4::Icmpv6 { ty, ident, .. } => (ty, ident),
                other => panic!("{other:?}"),
            };
            assert_eq!(ident, Some(77));
            let orig = i % 2 == 0;
            assert_eq!(*dir == Direction::Orig, orig);
            assert_eq!(ty, if orig { req } else { rep });
            assert_eq!(p.src_ip(), Some(if orig { c.src } else { c.dst }));
        }
        assert_eq!(c.policy_flow().sport, u16::from(req));
        let u = conv(Kind::Udp, v6, Teardown::Fin).frames();
        let p = parse(&u[1].1).unwrap();
        assert_eq!(
            p.l4,
            L4::Udp {
                sport: 80,
                dport: 40000
            }
        );
    }
}
