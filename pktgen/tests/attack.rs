//! The `attack` workload: every malformed kind is rejected by `net::parse`
//! with its documented error, the fragment kinds have the fragment layout
//! they claim, floods and scans have their shape, and the low-entropy
//! tuple sets keep their invariants; the CLI writes exactly `--count`
//! packets that tcpdump reads.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;

use bulkhead_pktgen::attack::{generate, AttackConfig, Family, Kind, Weighted};
use net::parse::Layer;
use net::tcp::TcpFlags;
use net::{parse, Fragment, ParseError, Parsed, L4};

fn cfg(kinds: &[Kind], count: u64, family: Family, vlan: Option<u16>) -> AttackConfig {
    AttackConfig {
        kinds: kinds
            .iter()
            .map(|&kind| Weighted { kind, weight: 1 })
            .collect(),
        count,
        target_v4: Ipv4Addr::new(10, 99, 0, 2),
        target_v6: "fd00:99::2".parse().unwrap(),
        family,
        vlan,
        seed: 3,
    }
}

fn frames(kind: Kind, count: u64, family: Family, vlan: Option<u16>) -> Vec<Vec<u8>> {
    let ps = generate(&cfg(&[kind], count, family, vlan)).unwrap();
    assert_eq!(ps.len() as u64, count);
    assert!(ps.iter().all(|p| p.kind == kind));
    ps.into_iter().map(|p| p.frame).collect()
}

#[test]
fn malformed_kinds_are_rejected_with_their_parse_error() {
    let kinds = [
        (Kind::BadIhl, ParseError::BadIhl),
        (
            Kind::TruncatedTcp,
            ParseError::Truncated { layer: Layer::Tcp },
        ),
        (Kind::BadTotalLength, ParseError::BadTotalLength),
        (Kind::BadPayloadLength, ParseError::BadPayloadLength),
        (Kind::BadUdpLength, ParseError::BadUdpLength),
        (Kind::BadTcpOffset, ParseError::BadTcpDataOffset),
    ];
    for (kind, want) in kinds {
        assert_eq!(kind.expected_error(), Some(want));
        for family in [Family::V4, Family::V6] {
            for vlan in [None, Some(42)] {
                let fs = frames(kind, 16, family, vlan);
                let mut v6 = 0;
                for f in &fs {
                    assert!(f.len() >= 60);
                    assert_eq!(parse(f), Err(want), "{kind:?} {family:?} {vlan:?}");
                    let et = u16::from_be_bytes(if vlan.is_some() {
                        [f[16], f[17]]
                    } else {
                        [f[12], f[13]]
                    });
                    v6 += usize::from(et == 0x86dd);
                }
                // Families where the field exists; the others keep theirs.
                let expect_v6 = match kind {
                    Kind::BadIhl | Kind::BadTotalLength => 0,
                    Kind::BadPayloadLength => fs.len(),
                    _ if family == Family::V6 => fs.len(),
                    _ => 0,
                };
                assert_eq!(v6, expect_v6, "{kind:?} {family:?}");
            }
        }
    }
    // The other kinds parse (or, frag-tiny, partly).
    for k in Kind::ALL {
        if k.expected_error().is_none() && k != Kind::FragTiny {
            for f in frames(k, 12, Family::Both, None) {
                parse(&f).unwrap_or_else(|e| panic!("{k:?}: {e}"));
            }
        }
    }
}

fn frag(p: &Parsed) -> Fragment {
    p.fragment().expect("a fragment")
}

#[test]
fn fragment_kinds_have_their_layout() {
    for family in [Family::V4, Family::V6] {
        // Tiny: an 8-byte first fragment (rejected: the TCP header is cut),
        // then the rest at offset 8.
        let fs = frames(Kind::FragTiny, 20, family, None);
        for pair in fs.chunks(2) {
            assert_eq!(
                parse(&pair[0]),
                Err(ParseError::Truncated { layer: Layer::Tcp })
            );
            let second = parse(&pair[1]).unwrap();
            let f = frag(&second);
            assert_eq!((f.offset, f.more), (8, false));
            assert_eq!(second.l4, L4::None);
        }
        // Overlap: 24 bytes at 0, then data from 16 on: bytes 16..24 twice.
        let fs = frames(Kind::FragOverlap, 20, family, None);
        let mut idents = HashSet::new();
        for pair in fs.chunks(2) {
            let (a, b) = (parse(&pair[0]).unwrap(), parse(&pair[1]).unwrap());
            let (fa, fb) = (frag(&a), frag(&b));
            assert_eq!(
                (fa.offset, fa.more, fb.offset, fb.more),
                (0, true, 16, false)
            );
            assert_eq!(fa.ident, fb.ident);
            assert!(idents.insert(fa.ident));
            assert!(matches!(a.l4, L4::Tcp { flags, .. } if flags == TcpFlags::SYN));
        }
        // Incomplete: first and middle fragments, more-fragments always set.
        let fs = frames(Kind::FragIncomplete, 20, family, None);
        for pair in fs.chunks(2) {
            let (a, b) = (parse(&pair[0]).unwrap(), parse(&pair[1]).unwrap());
            assert_eq!((frag(&a).offset, frag(&b).offset), (0, 24));
            assert!(frag(&a).more && frag(&b).more);
            assert_eq!(frag(&a).ident, frag(&b).ident);
        }
    }
}

#[test]
fn floods_and_scans_have_their_shape() {
    let target4: IpAddr = Ipv4Addr::new(10, 99, 0, 2).into();
    let target6: IpAddr = "fd00:99::2".parse::<Ipv6Addr>().unwrap().into();
    for family in [Family::V4, Family::V6] {
        let target = if family == Family::V6 {
            target6
        } else {
            target4
        };
        for (kind, flags) in [
            (Kind::SynFlood, TcpFlags::SYN),
            (Kind::AckFlood, TcpFlags::ACK),
        ] {
            let fs = frames(kind, 500, family, Some(7));
            let mut srcs = HashSet::new();
            for f in &fs {
                let p = parse(f).unwrap();
                assert_eq!(p.vlans, [Some(7), None]);
                assert_eq!(p.dst_ip(), Some(target));
                assert!(matches!(p.l4, L4::Tcp { flags: fl, dport: 80, .. } if fl == flags));
                srcs.insert(p.src_ip().unwrap());
            }
            // Random sources: essentially all distinct.
            assert!(srcs.len() > 490, "{kind:?}: {}", srcs.len());
        }
        let fs = frames(Kind::UdpFlood, 200, family, None);
        assert!(fs
            .iter()
            .all(|f| matches!(parse(f).unwrap().l4, L4::Udp { .. })));
        let fs = frames(Kind::PortScan, 300, family, None);
        let ps: Vec<Parsed> = fs.iter().map(|f| parse(f).unwrap()).collect();
        let src = ps[0].src_ip();
        for (i, p) in ps.iter().enumerate() {
            assert_eq!(p.src_ip(), src, "one scanner");
            assert!(matches!(p.l4, L4::Tcp { dport, flags, .. }
                if usize::from(dport) == i + 1 && flags == TcpFlags::SYN));
        }
    }
}

#[test]
fn hash_collide_sets_keep_their_invariants() {
    let fs = frames(Kind::HashCollide, 400, Family::V4, None);
    let tuples: Vec<(u32, u32, u16, u16)> = fs
        .iter()
        .map(|f| {
            let p = parse(f).unwrap();
            let (IpAddr::V4(s), IpAddr::V4(d)) = (p.src_ip().unwrap(), p.dst_ip().unwrap()) else {
                panic!()
            };
            let (sp, dp) = p.ports().unwrap();
            (s.into(), d.into(), sp, dp)
        })
        .collect();
    let distinct: HashSet<_> = tuples.iter().collect();
    assert_eq!(distinct.len(), tuples.len(), "every tuple is a new flow");
    // Even events: one field (the source port) varies.
    let one: Vec<_> = tuples.iter().step_by(2).collect();
    assert!(one
        .iter()
        .all(|t| (t.0, t.1, t.3) == (one[0].0, one[0].1, one[0].3)));
    // Odd events: src ^ dst and sport ^ dport constant.
    let xor: Vec<_> = tuples.iter().skip(1).step_by(2).collect();
    let (a, b) = (xor[0].0 ^ xor[0].1, xor[0].2 ^ xor[0].3);
    assert!(xor.iter().all(|t| t.0 ^ t.1 == a && t.2 ^ t.3 == b));
}

#[test]
fn weights_steer_the_mix_and_the_cli_writes_count_packets() {
    let mut c = cfg(&[Kind::SynFlood, Kind::UdpFlood], 4000, Family::V4, None);
    c.kinds[0].weight = 3;
    let ps = generate(&c).unwrap();
    let syn = ps.iter().filter(|p| p.kind == Kind::SynFlood).count();
    // 3:1 of 4000, within a wide binomial margin.
    assert!((2800..=3200).contains(&syn), "{syn}");

    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let out = dir.join("attack-cli.pcap");
    let o = Command::new(env!("CARGO_BIN_EXE_bulkhead-pktgen"))
        .args([
            "attack",
            "--kind",
            "syn-flood=2,frag-tiny,bad-ihl",
            "--count",
            "101",
            "--family",
            "both",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&out).unwrap()).unwrap();
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        p.unwrap();
        n += 1;
    }
    assert_eq!(n, 101);
    if let Ok(t) = Command::new("tcpdump")
        .args(["-nn", "-r"])
        .arg(&out)
        .output()
    {
        assert!(t.status.success());
        let lines = String::from_utf8_lossy(&t.stdout);
        assert_eq!(lines.lines().filter(|l| l.starts_with("00:")).count(), 101);
    }
}
