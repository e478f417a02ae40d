//! `dpdk::acl` against a real EAL and the real rte_acl: one test running named checks in order (see `support`).

mod support;

use std::time::Duration;

use dpdk::acl::{
    AclBuilder, AclContext, Alg, FieldDef, FieldKind, FieldValue, Layout, LayoutError, Rule,
    RuleError, MAX_FIELDS, MAX_PRIORITY,
};
use dpdk::{lcore, Eal, Error};
use support::{run_checks, Check};
use FieldKind::{Bitmask, Mask, Range};

/// Shorthand for the many layouts below.
fn def(kind: FieldKind, size: u8, field_index: u8, input_index: u8, offset: u32) -> FieldDef {
    FieldDef::new(kind, size, field_index, input_index, offset)
}

/// The classic 5-tuple layout of l3fwd-acl and dpdk-test-acl, at IPv4-header offsets (the ports follow a
/// 20-byte header): protocol 1 byte, addresses 4 bytes each, ports 2 + 2 bytes sharing one input group.
fn ipv4_layout() -> Layout {
    Layout::new(&[
        def(Bitmask, 1, 0, 0, 9),
        def(Mask, 4, 1, 1, 12),
        def(Mask, 4, 2, 2, 16),
        def(Range, 2, 3, 3, 20),
        def(Range, 2, 4, 3, 22),
    ])
    .expect("the classic IPv4 layout")
}

/// An IPv4 header and L4 ports, fields in network order: what the dataplane classifies.
fn v4(proto: u8, src: u32, dst: u32, sport: u16, dport: u16) -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0] = 0x45;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.to_be_bytes());
    h[16..20].copy_from_slice(&dst.to_be_bytes());
    h[20..22].copy_from_slice(&sport.to_be_bytes());
    h[22..24].copy_from_slice(&dport.to_be_bytes());
    h
}

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

fn ip6(s: &str) -> u128 {
    u128::from(s.parse::<std::net::Ipv6Addr>().unwrap())
}

/// A 5-tuple rule; `None` is a wildcard.
#[derive(Clone, Copy, Default)]
struct V4 {
    proto: Option<u8>,
    src: Option<(u32, u32)>,
    dst: Option<(u32, u32)>,
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
}

impl V4 {
    fn fields(&self) -> Vec<FieldValue> {
        let (p, pm) = self.proto.map_or((0, 0), |p| (p, 0xff));
        let pre = |x: Option<(u32, u32)>| {
            x.map_or(FieldValue::prefix(0, 0), |(a, l)| {
                FieldValue::prefix(a.into(), l)
            })
        };
        let rng = |x: Option<(u16, u16)>| {
            let (lo, hi) = x.unwrap_or((0, u16::MAX));
            FieldValue::range(lo.into(), hi.into())
        };
        vec![
            FieldValue::bitmask(p.into(), pm),
            pre(self.src),
            pre(self.dst),
            rng(self.sport),
            rng(self.dport),
        ]
    }
}

/// A context where `rules[i]` reports `i + 1` and the first listed matching rule wins.
fn first_wins<'e>(
    eal: &'e Eal,
    name: &str,
    layout: &Layout,
    rules: &[Vec<FieldValue>],
) -> AclContext<'e> {
    let mut b = AclBuilder::new(eal, name, layout, rules.len() as u32).expect("builder");
    for (i, fields) in rules.iter().enumerate() {
        b.add_rule(&Rule {
            priority: MAX_PRIORITY - i as i32,
            userdata: i as u32 + 1,
            category_mask: 1,
            fields,
        })
        .expect("rule");
    }
    b.build(1).expect("build")
}

fn one(acl: &AclContext<'_>, input: &[u8]) -> u32 {
    let mut r = [u32::MAX];
    acl.classify(&[input], &mut r).expect("classify");
    r[0]
}

fn all(acl: &AclContext<'_>, inputs: &[&[u8]]) -> Vec<u32> {
    let mut r = vec![u32::MAX; inputs.len()];
    acl.classify(inputs, &mut r).expect("classify");
    r
}

#[test]
fn acl_on_a_real_eal() {
    let eal = support::start_eal("acl", &[]);

    let checks: &[(&str, Check)] = &[
        (
            "ipv4_five_tuple_first_listed_wins",
            ipv4_five_tuple_first_listed_wins,
        ),
        (
            "priority_not_insertion_order_decides",
            priority_not_insertion_order_decides,
        ),
        (
            "byte_order_host_values_network_inputs",
            byte_order_host_values_network_inputs,
        ),
        ("port_range_edges", port_range_edges),
        ("wildcards_and_no_match", wildcards_and_no_match),
        (
            "ipv6_as_4_byte_chunks_and_as_8_byte_fields",
            ipv6_as_4_byte_chunks_and_as_8_byte_fields,
        ),
        ("invalid_layouts_rejected", invalid_layouts_rejected),
        (
            "invalid_rules_and_capacity_rejected",
            invalid_rules_and_capacity_rejected,
        ),
        (
            "short_inputs_and_bad_arguments_rejected",
            short_inputs_and_bad_arguments_rejected,
        ),
        (
            "empty_rule_sets_classify_to_no_match",
            empty_rule_sets_classify_to_no_match,
        ),
        ("categories", categories),
        ("algorithms", |eal| {
            algorithms(eal);
        }),
        (
            "classbench_differential_against_linear_scan",
            classbench_differential_against_linear_scan,
        ),
        (
            "classify_concurrently_from_two_lcores",
            classify_concurrently_from_two_lcores,
        ),
    ];
    run_checks("acl", &eal, Duration::from_secs(600), checks);
}

fn five_tuple_rules() -> Vec<Vec<FieldValue>> {
    [
        // 1: web to one subnet from 10/8
        V4 {
            proto: Some(6),
            src: Some((ip("10.0.0.0"), 8)),
            dst: Some((ip("192.168.1.0"), 24)),
            dport: Some((80, 80)),
            ..V4::default()
        },
        // 2: anything to low ports of 192.168/16
        V4 {
            dst: Some((ip("192.168.0.0"), 16)),
            dport: Some((0, 1023)),
            ..V4::default()
        },
        // 3: DNS
        V4 {
            proto: Some(17),
            dport: Some((53, 53)),
            ..V4::default()
        },
        // 4: everything from 172.16/12
        V4 {
            src: Some((ip("172.16.0.0"), 12)),
            ..V4::default()
        },
    ]
    .iter()
    .map(V4::fields)
    .collect()
}

fn ipv4_five_tuple_first_listed_wins(eal: &Eal) {
    let acl = first_wins(eal, "v4", &ipv4_layout(), &five_tuple_rules());
    assert_eq!(acl.input_len(), 24);
    let cases = [
        (v4(6, ip("10.1.2.3"), ip("192.168.1.7"), 1234, 80), 1), // also matches 2: first wins
        (v4(6, ip("11.1.2.3"), ip("192.168.1.7"), 1234, 80), 2),
        (v4(6, ip("10.1.2.3"), ip("192.168.1.7"), 1234, 81), 2),
        (v4(17, ip("10.1.2.3"), ip("192.168.1.7"), 1234, 80), 2), // not TCP
        (v4(17, ip("10.1.2.3"), ip("192.168.9.9"), 5353, 53), 2), // also matches 3
        (v4(17, ip("8.8.8.8"), ip("1.1.1.1"), 5353, 53), 3),
        (v4(6, ip("8.8.8.8"), ip("1.1.1.1"), 5353, 53), 0),
        (v4(17, ip("8.8.8.8"), ip("1.1.1.1"), 5353, 54), 0),
        (v4(6, ip("172.20.0.1"), ip("1.1.1.1"), 1, 9999), 4),
        (v4(6, ip("172.32.0.1"), ip("1.1.1.1"), 1, 9999), 0),
    ];
    for (input, want) in &cases {
        assert_eq!(one(&acl, input), *want, "input {input:?}");
    }
    // Many inputs at once, more than one chunk of pointers: the same answers.
    let inputs: Vec<&[u8]> = (0..300).map(|i| &cases[i % cases.len()].0[..]).collect();
    let got = all(&acl, &inputs);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(*r, cases[i % cases.len()].1);
    }
    // Only the first inputs.len() results are written.
    let mut r = [7u32; 4];
    acl.classify(&[&cases[0].0, &cases[6].0], &mut r).unwrap();
    assert_eq!(r, [1, 0, 7, 7]);
}

fn priority_not_insertion_order_decides(eal: &Eal) {
    // The same rules with the priorities reversed: now the last listed matching rule wins.
    let rules = five_tuple_rules();
    let mut b = AclBuilder::new(eal, "v4-rev", &ipv4_layout(), 4).unwrap();
    for (i, fields) in rules.iter().enumerate() {
        b.add_rule(&Rule {
            priority: 1 + i as i32,
            userdata: i as u32 + 1,
            category_mask: 1,
            fields,
        })
        .unwrap();
    }
    let acl = b.build(1).unwrap();
    assert_eq!(
        one(&acl, &v4(6, ip("10.1.2.3"), ip("192.168.1.7"), 1234, 80)),
        2
    );
    assert_eq!(
        one(&acl, &v4(17, ip("10.1.2.3"), ip("192.168.9.9"), 5353, 53)),
        3
    );
    assert_eq!(
        one(&acl, &v4(6, ip("11.1.2.3"), ip("192.168.1.7"), 1234, 80)),
        2
    );
}

fn byte_order_host_values_network_inputs(eal: &Eal) {
    // One field of every kind and width: 4-byte prefix, 2-byte range, 2-byte bitmask, 8-byte prefix.
    let layout = Layout::new(&[
        def(Bitmask, 1, 0, 0, 0),
        def(Mask, 4, 1, 1, 4),
        def(Range, 2, 2, 2, 8),
        def(Bitmask, 2, 3, 2, 10),
        def(Mask, 8, 4, 3, 16),
    ])
    .unwrap();
    assert_eq!(layout.input_len(), 24);
    let acl = first_wins(
        eal,
        "order",
        &layout,
        &[vec![
            FieldValue::bitmask(0, 0),
            FieldValue::prefix(0x0a01_0200, 24),
            FieldValue::range(0x0102, 0x0102),
            FieldValue::bitmask(0x1200, 0xff00),
            FieldValue::prefix(0x2001_0db8_0000_0000, 32),
        ]],
    );
    let build = |le: usize| {
        let mut x = [0u8; 24];
        let (a, b, c, d) = (
            0x0a01_0203u32,
            0x0102u16,
            0x12abu16,
            0x2001_0db8_aaaa_bbbbu64,
        );
        x[4..8].copy_from_slice(&if le == 1 {
            a.to_le_bytes()
        } else {
            a.to_be_bytes()
        });
        x[8..10].copy_from_slice(&if le == 2 {
            b.to_le_bytes()
        } else {
            b.to_be_bytes()
        });
        x[10..12].copy_from_slice(&if le == 3 {
            c.to_le_bytes()
        } else {
            c.to_be_bytes()
        });
        x[16..24].copy_from_slice(&if le == 4 {
            d.to_le_bytes()
        } else {
            d.to_be_bytes()
        });
        x
    };
    assert_eq!(one(&acl, &build(0)), 1, "all fields big-endian: match");
    for field in 1..=4 {
        assert_eq!(
            one(&acl, &build(field)),
            0,
            "field {field} little-endian: no match"
        );
    }
}

fn port_range_edges(eal: &Eal) {
    let acl = first_wins(
        eal,
        "ports",
        &ipv4_layout(),
        &[
            V4 {
                dport: Some((1024, 2048)),
                ..V4::default()
            }
            .fields(),
            V4 {
                dport: Some((0, 0)),
                ..V4::default()
            }
            .fields(),
            V4 {
                dport: Some((65535, 65535)),
                ..V4::default()
            }
            .fields(),
            V4 {
                sport: Some((7, 7)),
                dport: Some((3000, 3001)),
                ..V4::default()
            }
            .fields(),
        ],
    );
    let d = |port| one(&acl, &v4(6, 1, 2, 1000, port));
    for (port, want) in [
        (0, 2),
        (1, 0),
        (1023, 0),
        (1024, 1),
        (1500, 1),
        (2048, 1),
        (2049, 0),
        (65534, 0),
        (65535, 3),
    ] {
        assert_eq!(d(port), want, "dport {port}");
    }
    let s = |sport, dport| one(&acl, &v4(6, 1, 2, sport, dport));
    assert_eq!(s(7, 3000), 4);
    assert_eq!(s(7, 3001), 4);
    assert_eq!(s(7, 3002), 0);
    assert_eq!(s(6, 3000), 0);
    assert_eq!(s(8, 3001), 0);
}

fn wildcards_and_no_match(eal: &Eal) {
    let layout = ipv4_layout();
    let any: Vec<FieldValue> = layout.fields().iter().map(FieldDef::any).collect();
    assert_eq!(any, V4::default().fields());
    let exact = V4 {
        proto: Some(1),
        src: Some((ip("1.2.3.4"), 32)),
        dst: Some((ip("5.6.7.8"), 32)),
        sport: Some((0, 0)),
        dport: Some((0, 0)),
    };
    let acl = first_wins(eal, "wild", &layout, &[exact.fields(), any.clone()]);
    assert_eq!(one(&acl, &v4(1, ip("1.2.3.4"), ip("5.6.7.8"), 0, 0)), 1);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..1000 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = seed.to_be_bytes();
        let p = v4(
            x[0],
            seed as u32,
            (seed >> 32) as u32,
            u16::from_be_bytes([x[1], x[2]]),
            u16::from_be_bytes([x[3], x[4]]),
        );
        assert_eq!(one(&acl, &p), 2, "the wildcard rule matches anything");
    }
    let exact_only = first_wins(eal, "exact", &layout, &[exact.fields()]);
    assert_eq!(
        one(&exact_only, &v4(1, ip("1.2.3.4"), ip("5.6.7.8"), 0, 0)),
        1
    );
    assert_eq!(
        one(&exact_only, &v4(1, ip("1.2.3.5"), ip("5.6.7.8"), 0, 0)),
        0
    );
    assert_eq!(
        one(&exact_only, &v4(1, ip("1.2.3.4"), ip("5.6.7.8"), 0, 1)),
        0
    );
    assert_eq!(
        one(&exact_only, &v4(2, ip("1.2.3.4"), ip("5.6.7.8"), 0, 0)),
        0
    );
}

/// IPv6 header (next header at 6, addresses at 8 and 24) followed by the L4 ports at 40 and 42.
fn v6(proto: u8, src: u128, dst: u128, sport: u16, dport: u16) -> [u8; 44] {
    let mut h = [0u8; 44];
    h[0] = 0x60;
    h[6] = proto;
    h[8..24].copy_from_slice(&src.to_be_bytes());
    h[24..40].copy_from_slice(&dst.to_be_bytes());
    h[40..42].copy_from_slice(&sport.to_be_bytes());
    h[42..44].copy_from_slice(&dport.to_be_bytes());
    h
}

#[derive(Clone, Copy)]
struct V6 {
    proto: Option<u8>,
    src: (u128, u32),
    dst: (u128, u32),
    dport: (u16, u16),
}

impl V6 {
    fn matches(&self, p: &[u8; 44]) -> bool {
        let addr = |o: usize| u128::from_be_bytes(p[o..o + 16].try_into().unwrap());
        let pm = |(a, l): (u128, u32), x: u128| l == 0 || (a ^ x) >> (128 - l) == 0;
        let dport = u16::from_be_bytes([p[42], p[43]]);
        self.proto.is_none_or(|x| x == p[6])
            && pm(self.src, addr(8))
            && pm(self.dst, addr(24))
            && (self.dport.0..=self.dport.1).contains(&dport)
    }

    /// Addresses as `chunk`-byte prefix fields (4 or 8).
    fn fields(&self, chunk: u32) -> Vec<FieldValue> {
        let bits = chunk * 8;
        let split = |(a, l): (u128, u32)| {
            (0..128 / bits).map(move |k| {
                let v = (a >> (128 - bits * (k + 1))) as u64 & (u64::MAX >> (64 - bits));
                FieldValue::prefix(v, l.saturating_sub(bits * k).min(bits))
            })
        };
        let (p, pm) = self.proto.map_or((0, 0), |p| (p, 0xff));
        let mut f = vec![FieldValue::bitmask(p.into(), pm)];
        f.extend(split(self.src));
        f.extend(split(self.dst));
        f.push(FieldValue::range(0, 65535));
        f.push(FieldValue::range(self.dport.0.into(), self.dport.1.into()));
        f
    }
}

/// IPv6 5-tuple with addresses as `chunk`-byte Mask fields, each chunk its own input group.
fn ipv6_layout(chunk: u8) -> Layout {
    let n = 16 / chunk;
    let mut defs = vec![def(Bitmask, 1, 0, 0, 6)];
    for k in 0..2 * n {
        defs.push(def(
            Mask,
            chunk,
            1 + k,
            1 + k,
            8 + u32::from(k) * u32::from(chunk),
        ));
    }
    defs.push(def(Range, 2, 1 + 2 * n, 1 + 2 * n, 40));
    defs.push(def(Range, 2, 2 + 2 * n, 1 + 2 * n, 42));
    Layout::new(&defs).unwrap()
}

fn ipv6_as_4_byte_chunks_and_as_8_byte_fields(eal: &Eal) {
    let any = (0u128, 0u32);
    let rules = [
        V6 {
            proto: Some(6),
            src: (ip6("2001:db8::1"), 128),
            dst: any,
            dport: (22, 22),
        },
        V6 {
            proto: None,
            src: (ip6("2001:db8:0:1::"), 64),
            dst: any,
            dport: (1000, 2000),
        },
        V6 {
            proto: None,
            src: (ip6("2001:db8::"), 32),
            dst: any,
            dport: (0, 65535),
        },
        V6 {
            proto: Some(58),
            src: any,
            dst: (ip6("fe80::"), 10),
            dport: (0, 65535),
        },
        V6 {
            proto: Some(17),
            src: any,
            dst: (ip6("ff02::1:2"), 128),
            dport: (547, 547),
        },
    ];
    let l4 = ipv6_layout(4);
    let l8 = ipv6_layout(8);
    assert_eq!((l4.fields().len(), l8.fields().len()), (11, 7));
    assert_eq!((l4.input_len(), l8.input_len()), (44, 44));
    let by4 = first_wins(
        eal,
        "v6x4",
        &l4,
        &rules.iter().map(|r| r.fields(4)).collect::<Vec<_>>(),
    );
    let by8 = first_wins(
        eal,
        "v6x8",
        &l8,
        &rules.iter().map(|r| r.fields(8)).collect::<Vec<_>>(),
    );

    let named = [
        (v6(6, ip6("2001:db8::1"), ip6("2001:db8::2"), 5000, 22), 1),
        (v6(6, ip6("2001:db8::1"), ip6("2001:db8::2"), 5000, 23), 3),
        (v6(17, ip6("2001:db8:0:1::9"), ip6("::1"), 5000, 1500), 2),
        (v6(17, ip6("2001:db8:0:2::9"), ip6("::1"), 5000, 1500), 3),
        (v6(58, ip6("2002::1"), ip6("fe80::1"), 0, 0), 4),
        (v6(58, ip6("2002::1"), ip6("fec0::1"), 0, 0), 0),
        (v6(17, ip6("fe80::5"), ip6("ff02::1:2"), 546, 547), 5),
        (v6(17, ip6("fe80::5"), ip6("ff02::1:3"), 546, 547), 0),
    ];
    for (p, want) in &named {
        assert_eq!((one(&by4, p), one(&by8, p)), (*want, *want), "{p:?}");
    }
    // Random packets near the rules' prefixes, against a linear scan.
    let bases = [
        ip6("2001:db8::1"),
        ip6("2001:db8:0:1::"),
        ip6("fe80::"),
        ip6("ff02::1:2"),
        0,
    ];
    let mut seed = 42u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed
    };
    let mut matched = 0;
    for _ in 0..5000 {
        let (a, b, c) = (next(), next(), next());
        let flip = |base: u128, r: u64| {
            if (r >> 7) & 3 == 0 {
                base ^ (1u128 << (r % 128))
            } else {
                base
            }
        };
        let src = flip(bases[(a % 5) as usize], b);
        let dst = flip(bases[(b % 5) as usize], c);
        let proto = [6, 17, 58][(c % 3) as usize];
        let dport = [22, 23, 547, 999, 1000, 2000, 2001][(a >> 8) as usize % 7];
        let p = v6(proto, src, dst, 1, dport);
        let want = rules
            .iter()
            .position(|r| r.matches(&p))
            .map_or(0, |i| i as u32 + 1);
        matched += u32::from(want != 0);
        assert_eq!((one(&by4, &p), one(&by8, &p)), (want, want), "{p:?}");
    }
    assert!(
        matched > 1000,
        "the random packets exercise the rules ({matched} matched)"
    );
}

fn invalid_layouts_rejected(_eal: &Eal) {
    let bad = |defs: &[FieldDef]| match Layout::new(defs) {
        Err(Error::AclLayout(e)) => e,
        other => panic!("{defs:?} gave {other:?}"),
    };
    let proto = def(Bitmask, 1, 0, 0, 0);
    assert_eq!(bad(&[]), LayoutError::Empty);
    let many: Vec<FieldDef> = std::iter::once(proto)
        .chain((1..=MAX_FIELDS as u8).map(|i| def(Mask, 4, i, i, 4 * u32::from(i))))
        .collect();
    assert_eq!(bad(&many), LayoutError::TooManyFields(MAX_FIELDS + 1));
    assert!(
        Layout::new(&many[..MAX_FIELDS]).is_ok(),
        "{MAX_FIELDS} fields are fine"
    );
    assert_eq!(
        bad(&[proto, def(Mask, 3, 1, 1, 4)]),
        LayoutError::BadSize { field: 1, size: 3 }
    );
    assert_eq!(
        bad(&[def(Range, 2, 0, 0, 0), def(Mask, 4, 1, 1, 4)]),
        LayoutError::FirstFieldSize(2)
    );
    assert_eq!(
        bad(&[def(Bitmask, 1, 1, 0, 0), def(Mask, 4, 0, 1, 4)]),
        LayoutError::FirstFieldIndex(1)
    );
    assert_eq!(
        bad(&[proto, def(Mask, 4, 1, 0, 4)]),
        LayoutError::FirstFieldShared(0)
    );
    assert_eq!(
        bad(&[proto, def(Mask, 4, 1, 1, 4), def(Mask, 4, 1, 2, 8)]),
        LayoutError::FieldIndex {
            field: 2,
            index: 1,
            count: 3
        }
    );
    assert_eq!(
        bad(&[proto, def(Mask, 4, 1, 1, 4), def(Mask, 4, 3, 2, 8)]),
        LayoutError::FieldIndex {
            field: 2,
            index: 3,
            count: 3
        }
    );
    assert_eq!(
        bad(&[
            proto,
            def(Mask, 4, 1, 1, 4),
            def(Mask, 4, 2, 2, 8),
            def(Mask, 4, 3, 1, 12)
        ]),
        LayoutError::InputIndexReused {
            field: 3,
            input_index: 1
        }
    );
    // rte_acl accepts these two and then silently misclassifies (observed on 22.11): a group's fields must be
    // adjacent and fill exactly 4 bytes.
    assert_eq!(
        bad(&[proto, def(Range, 2, 1, 1, 4), def(Range, 2, 2, 1, 8)]),
        LayoutError::GroupGap {
            field: 2,
            input_index: 1,
            expected: 6,
            found: 8
        }
    );
    assert_eq!(
        bad(&[proto, def(Range, 2, 1, 1, 4), def(Mask, 4, 2, 2, 8)]),
        LayoutError::GroupSize {
            field: 1,
            input_index: 1,
            bytes: 2
        }
    );
    assert_eq!(
        bad(&[proto, def(Mask, 4, 1, 1, 4), def(Mask, 4, 2, 1, 8)]),
        LayoutError::GroupSize {
            field: 1,
            input_index: 1,
            bytes: 8
        }
    );
    assert_eq!(
        bad(&[proto, def(Mask, 8, 1, 1, 4), def(Mask, 4, 2, 1, 12)]),
        LayoutError::GroupSize {
            field: 1,
            input_index: 1,
            bytes: 12
        }
    );
    // Field indexes may be any permutation, as long as the first field has index 0.
    let permuted = Layout::new(&[proto, def(Mask, 4, 2, 1, 4), def(Mask, 4, 1, 2, 8)]).unwrap();
    assert_eq!(permuted.input_len(), 12);
}

fn invalid_rules_and_capacity_rejected(eal: &Eal) {
    let layout = ipv4_layout();
    let any = V4::default().fields();
    let rule = Rule {
        priority: 1,
        userdata: 1,
        category_mask: 1,
        fields: &any,
    };
    let mut b = AclBuilder::new(eal, "rules", &layout, 2).unwrap();
    let rule_err = |b: &mut AclBuilder<'_>, r: &Rule<'_>| match b.add_rule(r) {
        Err(Error::AclRule(e)) => e,
        other => panic!("{r:?} gave {other:?}"),
    };
    assert_eq!(
        rule_err(
            &mut b,
            &Rule {
                userdata: 0,
                ..rule
            }
        ),
        RuleError::ZeroUserdata
    );
    assert_eq!(
        rule_err(
            &mut b,
            &Rule {
                priority: 0,
                ..rule
            }
        ),
        RuleError::Priority(0)
    );
    assert_eq!(
        rule_err(
            &mut b,
            &Rule {
                priority: MAX_PRIORITY + 1,
                ..rule
            }
        ),
        RuleError::Priority(MAX_PRIORITY + 1)
    );
    assert_eq!(
        rule_err(
            &mut b,
            &Rule {
                category_mask: 0,
                ..rule
            }
        ),
        RuleError::CategoryMask(0)
    );
    assert_eq!(
        rule_err(
            &mut b,
            &Rule {
                category_mask: 1 << 16,
                ..rule
            }
        ),
        RuleError::CategoryMask(1 << 16)
    );
    assert_eq!(
        rule_err(
            &mut b,
            &Rule {
                fields: &any[..2],
                ..rule
            }
        ),
        RuleError::FieldCount {
            expected: 5,
            got: 2
        }
    );
    let mut f = any.clone();
    f[0] = FieldValue::bitmask(0x100, 0xff);
    assert!(matches!(
        rule_err(&mut b, &Rule { fields: &f, ..rule }),
        RuleError::TooWide {
            field_index: 0,
            what: "value",
            ..
        }
    ));
    f[0] = any[0];
    f[1] = FieldValue::prefix(0, 33);
    assert_eq!(
        rule_err(&mut b, &Rule { fields: &f, ..rule }),
        RuleError::PrefixTooLong {
            field_index: 1,
            len: 33,
            bits: 32
        }
    );
    f[1] = any[1];
    f[4] = FieldValue::range(10, 9);
    assert_eq!(
        rule_err(&mut b, &Rule { fields: &f, ..rule }),
        RuleError::EmptyRange {
            field_index: 4,
            lo: 10,
            hi: 9
        }
    );
    assert!(b.is_empty(), "refused rules are not added");

    b.add_rule(&rule).unwrap();
    b.add_rule(&Rule {
        userdata: 2,
        priority: 2,
        ..rule
    })
    .unwrap();
    assert!(matches!(
        b.add_rule(&rule),
        Err(Error::AclFull { max_rules: 2 })
    ));
    assert_eq!(b.len(), 2);
    let acl = b.build(1).unwrap();
    assert_eq!(one(&acl, &v4(6, 1, 2, 3, 4)), 2);

    // DPDK would compute the storage size in 32 bits and wrap.
    assert!(matches!(
        AclBuilder::new(eal, "huge", &layout, u32::MAX),
        Err(Error::AclCapacity {
            max_rules: u32::MAX,
            rule_size: 96
        })
    ));
    // Names are labels: the same one twice gives two distinct contexts.
    let a = AclBuilder::new(eal, "same", &layout, 1).unwrap();
    let b = AclBuilder::new(eal, "same", &layout, 1).unwrap();
    assert_ne!(a.name(), b.name());
    assert!(a.name().starts_with("same-"));
    assert!(AclBuilder::new(eal, "nul\0", &layout, 1).is_err());
}

fn short_inputs_and_bad_arguments_rejected(eal: &Eal) {
    let acl = first_wins(eal, "short", &ipv4_layout(), &five_tuple_rules());
    let good = v4(6, 1, 2, 3, 4);
    let mut r = [9u32; 3];
    assert!(matches!(
        acl.classify(&[&good, &good[..23], &good], &mut r),
        Err(Error::AclInputTooShort {
            index: 1,
            len: 23,
            need: 24
        })
    ));
    assert_eq!(r, [9, 9, 9], "nothing is classified when an input is short");
    assert!(matches!(
        acl.classify(&[&good, &good], &mut r[..1]),
        Err(Error::AclResultsTooShort {
            inputs: 2,
            need: 2,
            got: 1
        })
    ));
    assert!(matches!(
        acl.classify_categories(&[&good], 3, &mut r),
        Err(Error::AclCategories(3))
    ));
    assert!(matches!(
        acl.classify_categories(&[&good], 0, &mut r),
        Err(Error::AclCategories(0))
    ));
    assert!(matches!(
        acl.classify_categories(&[&good], 4, &mut r),
        Err(Error::AclResultsTooShort { need: 4, .. })
    ));
    acl.classify(&[], &mut []).unwrap();
    for n in [0, 17] {
        let b = AclBuilder::new(eal, "cats", &ipv4_layout(), 1).unwrap();
        assert!(matches!(b.build(n), Err(Error::AclCategories(c)) if c == n));
    }
}

fn empty_rule_sets_classify_to_no_match(eal: &Eal) {
    let layout = ipv4_layout();
    let inputs = [
        v4(6, 1, 2, 3, 4),
        v4(17, ip("10.0.0.1"), ip("10.0.0.2"), 53, 53),
    ];
    let inputs: Vec<&[u8]> = inputs.iter().map(|i| &i[..]).collect();
    let check = |acl: &AclContext<'_>| {
        assert!(acl.is_empty());
        let mut r = [u32::MAX; 2];
        acl.classify(&inputs, &mut r).unwrap();
        assert_eq!(r, [0, 0]);
        let mut r = [u32::MAX; 8];
        acl.classify_categories(&inputs, 4, &mut r).unwrap();
        assert_eq!(r, [0; 8]);
        // Still checks its inputs: the contract does not depend on the rule set.
        assert!(matches!(
            acl.classify(&[&inputs[0][..10]], &mut r),
            Err(Error::AclInputTooShort { .. })
        ));
    };
    // No rules at all (rte_acl_build says EINVAL; the safe layer builds an empty context).
    let acl = AclBuilder::new(eal, "empty", &layout, 16)
        .unwrap()
        .build(1)
        .unwrap();
    check(&acl);
    assert_eq!(acl.rules(), 0);
    // Room for none.
    check(
        &AclBuilder::new(eal, "none", &layout, 0)
            .unwrap()
            .build(1)
            .unwrap(),
    );
    // Rules, but none in the categories built.
    let any = V4::default().fields();
    let mut b = AclBuilder::new(eal, "othercat", &layout, 1).unwrap();
    b.add_rule(&Rule {
        priority: 1,
        userdata: 5,
        category_mask: 0b10,
        fields: &any,
    })
    .unwrap();
    let acl = b.build(1).unwrap();
    check(&acl);
    assert_eq!(acl.rules(), 1);
}

fn categories(eal: &Eal) {
    let layout = ipv4_layout();
    let tcp = V4 {
        proto: Some(6),
        ..V4::default()
    }
    .fields();
    let any = V4::default().fields();
    let mut b = AclBuilder::new(eal, "cats", &layout, 3).unwrap();
    b.add_rule(&Rule {
        priority: 3,
        userdata: 10,
        category_mask: 0b01,
        fields: &tcp,
    })
    .unwrap();
    b.add_rule(&Rule {
        priority: 3,
        userdata: 20,
        category_mask: 0b10,
        fields: &tcp,
    })
    .unwrap();
    b.add_rule(&Rule {
        priority: 1,
        userdata: 30,
        category_mask: 0b11,
        fields: &any,
    })
    .unwrap();
    let acl = b.build(2).unwrap();
    assert_eq!(acl.categories(), 2);
    let (t, u) = (v4(6, 1, 2, 3, 4), v4(17, 1, 2, 3, 4));
    let mut r = [u32::MAX; 8];
    acl.classify_categories(&[&t, &u], 4, &mut r).unwrap();
    assert_eq!(r, [10, 20, 0, 0, 30, 30, 0, 0]);
    let mut r = [u32::MAX; 2];
    acl.classify(&[&t, &u], &mut r).unwrap();
    assert_eq!(r, [10, 30], "classify reports category 0");
}

/// Checks every algorithm's availability; returns the usable ones.
fn algorithms(eal: &Eal) -> Vec<Alg> {
    let mut acl = first_wins(eal, "algs", &ipv4_layout(), &five_tuple_rules());
    let best = acl.algorithm();
    assert_ne!(best, Alg::Default, "Default is resolved to DPDK's choice");
    let probe = v4(6, ip("10.1.2.3"), ip("192.168.1.7"), 1234, 80);
    let mut usable = Vec::new();
    for alg in [
        Alg::Scalar,
        Alg::Sse,
        Alg::Avx2,
        Alg::Neon,
        Alg::Altivec,
        Alg::Avx512x16,
        Alg::Avx512x32,
    ] {
        let before = acl.algorithm();
        match acl.set_algorithm(alg) {
            Ok(a) => {
                assert_eq!((a, acl.algorithm()), (alg, alg));
                assert_eq!(one(&acl, &probe), 1, "{alg:?}");
                usable.push(alg);
            }
            Err(Error::AclAlgorithmUnsupported(a)) => {
                assert_eq!(a, alg);
                assert_eq!(
                    acl.algorithm(),
                    before,
                    "a refused algorithm changes nothing"
                );
            }
            Err(e) => panic!("{alg:?}: {e}"),
        }
    }
    assert!(usable.contains(&Alg::Scalar));
    assert!(usable.contains(&best));
    #[cfg(target_arch = "x86_64")]
    {
        assert!(!usable.contains(&Alg::Neon) && !usable.contains(&Alg::Altivec));
        if std::arch::is_x86_feature_detected!("avx2") {
            assert!(usable.contains(&Alg::Avx2));
        }
        if !std::arch::is_x86_feature_detected!("avx512f") {
            assert!(!usable.contains(&Alg::Avx512x16) && !usable.contains(&Alg::Avx512x32));
        }
        // Without --force-max-simd-bitwidth=512 the EAL caps SIMD at 256 bits.
        assert!(!usable.contains(&Alg::Avx512x32));
    }
    assert_eq!(acl.set_algorithm(Alg::Default).unwrap(), best);
    eprintln!("  default algorithm {best:?}; usable {usable:?}");
    usable
}

fn classbench_differential_against_linear_scan(eal: &Eal) {
    let dir = classbench::dir();
    let usable = algorithms(eal);
    let layout = ipv4_layout();
    for set in ["acl1_1k", "fw1_1k", "ipc1_1k"] {
        let (rules, trace) = classbench::load(&dir, set).unwrap_or_else(|e| panic!("{e}"));
        let fields: Vec<Vec<FieldValue>> = rules
            .iter()
            .map(|r| {
                vec![
                    FieldValue::bitmask(r.proto.0.into(), r.proto.1.into()),
                    FieldValue::prefix(r.src.0.into(), r.src.1),
                    FieldValue::prefix(r.dst.0.into(), r.dst.1),
                    FieldValue::range(r.sport.0.into(), r.sport.1.into()),
                    FieldValue::range(r.dport.0.into(), r.dport.1.into()),
                ]
            })
            .collect();
        let mut acl = first_wins(eal, set, &layout, &fields);
        // The trace, plus each line with one bit flipped: near misses that reach other rules, or none.
        let mut seed = 7u64;
        let mutated = trace.iter().map(|p| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let bit = (seed >> 33) % 104;
            let mut q = *p;
            match bit {
                0..=31 => q.src ^= 1 << bit,
                32..=63 => q.dst ^= 1 << (bit - 32),
                64..=79 => q.sport ^= 1 << (bit - 64),
                80..=95 => q.dport ^= 1 << (bit - 80),
                _ => q.proto ^= 1 << (bit - 96),
            }
            q
        });
        let packets: Vec<classbench::Packet> = trace.iter().copied().chain(mutated).collect();
        let headers: Vec<[u8; 24]> = packets
            .iter()
            .map(|p| v4(p.proto, p.src, p.dst, p.sport, p.dport))
            .collect();
        let inputs: Vec<&[u8]> = headers.iter().map(|p| &p[..]).collect();
        let truth: Vec<u32> = packets
            .iter()
            .map(|p| classbench::first_match(&rules, p).map_or(0, |i| i as u32 + 1))
            .collect();
        for &alg in &usable {
            acl.set_algorithm(alg).unwrap();
            let got = all(&acl, &inputs);
            let wrong: Vec<usize> = (0..got.len()).filter(|&i| got[i] != truth[i]).collect();
            assert!(
                wrong.is_empty(),
                "{set} with {alg:?}: {} of {} differ, first at trace line {}: rte_acl {} vs linear scan {}",
                wrong.len(),
                got.len(),
                wrong[0] + 1,
                got[wrong[0]],
                truth[wrong[0]]
            );
        }
        let matched = truth.iter().filter(|&&t| t != 0).count();
        let (orig, muts) = truth.split_at(trace.len());
        let changed = orig.iter().zip(muts).filter(|(a, b)| a != b).count();
        let distinct: std::collections::HashSet<u32> = truth.iter().copied().collect();
        eprintln!(
            "  {set}: {} rules; {} trace lines + {} one-bit mutations ({} changed the answer): {} matched, {} no match, {} distinct winning rules; identical to the linear scan under {:?}",
            rules.len(),
            trace.len(),
            trace.len(),
            changed,
            matched,
            truth.len() - matched,
            distinct.len() - usize::from(distinct.contains(&0)),
            usable
        );
    }
}

fn classify_concurrently_from_two_lcores(eal: &Eal) {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    let acl = first_wins(eal, "shared", &ipv4_layout(), &five_tuple_rules());
    assert_send_sync(&acl);
    let packets: Vec<[u8; 24]> = (0..256u32)
        .map(|i| {
            v4(
                [6, 17][i as usize % 2],
                ip("10.0.0.0") + i * 7919,
                ip("192.168.0.0") + i * 31,
                1000,
                (i % 100) as u16 + 20,
            )
        })
        .collect();
    let inputs: Vec<&[u8]> = packets.iter().map(|p| &p[..]).collect();
    let expected = all(&acl, &inputs);
    let rounds = 2000;
    let check = || {
        let mut r = [0u32; 256];
        for _ in 0..rounds {
            acl.classify(&inputs, &mut r).unwrap();
            assert_eq!(&r[..], &expected[..]);
        }
    };
    let ((), joined) = lcore::scope(eal, |s| {
        s.spawn(1, check).expect("launch on lcore 1");
        check();
    });
    assert!(
        joined.panicked.is_empty(),
        "the worker saw the same results"
    );
}
