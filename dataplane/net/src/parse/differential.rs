//! The shortcut of [`parse_into`] (and [`parse_common`], which it is made
//! of) against the general parser: for every input, the same `Result` and,
//! on success, the same `Parsed`.
//!
//! Frames start valid (IPv4 carrying TCP or UDP, with 0 to 3 VLAN tags) and
//! are then bent exactly where the shortcut decides whether it applies:
//! EtherTypes and tag protocol ids, version/IHL, total length, fragment
//! bits, protocol number, TCP data offset, UDP length, truncation at any
//! length, and a few arbitrary bytes.

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// What `out` holds before each call, so a write by a shortcut that then
/// declines is seen (no parse produces `l3_offset` 9999).
const SENTINEL: Parsed = Parsed {
    l3_offset: 9999,
    ..Parsed::EMPTY
};

/// Runs the shortcut, the general parser and `parse_into` on `frame` and
/// checks that they agree. Returns whether the shortcut took the frame.
fn agree(frame: &[u8]) -> Result<bool, TestCaseError> {
    let mut general = SENTINEL;
    let want = parse_general(frame, &mut general);
    let mut short = SENTINEL;
    let taken = shortcut(frame, &mut short);
    if taken {
        prop_assert_eq!(
            want,
            Ok(()),
            "shortcut took a frame the general parser rejects"
        );
        prop_assert_eq!(short, general);
    } else {
        prop_assert_eq!(short, SENTINEL, "shortcut declined but wrote to `out`");
    }
    // `parse_common` takes exactly the shortcut's frames, with the same result.
    let common = parse_common(frame);
    prop_assert_eq!(common.is_some(), taken);
    if let Some(c) = common {
        prop_assert_eq!(c.parsed(), general);
        prop_assert_eq!(c.l3_offset(), general.l3_offset);
        prop_assert_eq!(Some(c.l4_offset()), general.l4_offset);
    }
    let mut via = SENTINEL;
    prop_assert_eq!(parse_into(frame, &mut via), want);
    if want.is_ok() {
        prop_assert_eq!(via, general);
    }
    Ok(taken)
}

/// How a length field is set: right, a little off, or anything.
#[derive(Debug, Clone, Copy)]
enum LenField {
    Right,
    Off(i16),
    Raw(u16),
}

impl LenField {
    fn apply(self, right: usize) -> u16 {
        match self {
            LenField::Right => right as u16,
            LenField::Off(d) => (right as i32 + i32::from(d)) as u16,
            LenField::Raw(v) => v,
        }
    }
}

fn len_field() -> impl Strategy<Value = LenField> {
    prop_oneof![
        12 => Just(LenField::Right),
        2 => (-4i16..=4).prop_map(LenField::Off),
        2 => (-45i16..=45).prop_map(LenField::Off),
        1 => any::<u16>().prop_map(LenField::Raw),
    ]
}

/// A frame to build. Each field is right (for the shortcut) most of the
/// time: about a fifth of the frames take the shortcut, and most others
/// have one or two things wrong.
#[derive(Debug, Clone)]
struct Mutant {
    /// (tag protocol id, TCI) per VLAN tag.
    tags: Vec<(u16, u16)>,
    ethertype: u16,
    /// Version/IHL byte if not 0x40 | the header's real length in words.
    ver_ihl: Option<u8>,
    /// IPv4 option words.
    ip_opt_words: usize,
    total: LenField,
    flags_frag: u16,
    proto: u8,
    /// Whether a TCP header (else UDP) follows, if not as `proto` says.
    tcp_bytes: Option<bool>,
    /// TCP data offset nibble if not the header's real length in words.
    doff: Option<u8>,
    tcp_opt_words: usize,
    tcp_flags: u16,
    udp_len: LenField,
    payload_len: usize,
    /// Bytes after the IP datagram (Ethernet padding).
    padding: usize,
    /// Bytes that fill addresses, ports, sequence numbers, payload.
    fill: [u8; 32],
    truncate: Option<Index>,
    flips: Vec<(Index, u8)>,
}

/// `usual` eight times in nine, else from `other`.
fn rarely<T: Clone + core::fmt::Debug + 'static>(
    usual: T,
    other: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = T> {
    prop_oneof![8 => Just(usual), 1 => other]
}

fn mutant() -> impl Strategy<Value = Mutant> {
    let tpid = prop_oneof![
        4 => Just(0x8100u16),
        1 => Just(0x88a8),
        1 => Just(0x9100),
        1 => Just(0x0800),
        1 => any::<u16>(),
    ];
    let tags = prop_oneof![
        8 => Just(Vec::new()),
        6 => proptest::collection::vec((tpid, any::<u16>()), 1..=1),
        1 => proptest::collection::vec((Just(0x8100u16), any::<u16>()), 2..=3),
    ];
    let ethertype = prop_oneof![
        20 => Just(0x0800u16),
        1 => Just(0x86dd),
        1 => Just(0x0806),
        1 => Just(0x8100),
        1 => any::<u16>(),
    ];
    let ver_ihl = rarely(
        None,
        prop_oneof![(0x40u8..=0x4f).prop_map(Some), any::<u8>().prop_map(Some)],
    );
    let flags_frag = prop_oneof![
        8 => Just(0u16),
        8 => Just(0x4000),
        1 => Just(0x8000),
        1 => Just(0x2000),
        1 => 1u16..=0x1fff,
        1 => (0u16..=12).prop_map(|b| 1 << b),
        1 => any::<u16>(),
    ];
    let proto = prop_oneof![
        8 => Just(6u8),
        8 => Just(17),
        1 => Just(1),
        1 => any::<u8>(),
    ];
    let l4 = (
        rarely(None, any::<bool>().prop_map(Some)),
        rarely(None, (0u8..=15).prop_map(Some)),
        prop_oneof![3 => Just(0usize), 1 => 0usize..=10],
        any::<u16>(),
        len_field(),
    );
    let payload_len = prop_oneof![2 => Just(0usize), 2 => 0usize..=16, 1 => 0usize..=1500];
    let damage = (
        rarely(None, any::<Index>().prop_map(Some)),
        rarely(
            Vec::new(),
            proptest::collection::vec((any::<Index>(), any::<u8>()), 1..=3),
        ),
    );
    (
        (
            tags,
            ethertype,
            ver_ihl,
            rarely(0usize, 1usize..=10),
            len_field(),
            flags_frag,
        ),
        (
            proto,
            l4,
            payload_len,
            0usize..=24,
            any::<[u8; 32]>(),
            damage,
        ),
    )
        .prop_map(
            |(
                (tags, ethertype, ver_ihl, ip_opt_words, total, flags_frag),
                (
                    proto,
                    (tcp_bytes, doff, tcp_opt_words, tcp_flags, udp_len),
                    payload_len,
                    padding,
                    fill,
                    (truncate, flips),
                ),
            )| Mutant {
                tags,
                ethertype,
                ver_ihl,
                ip_opt_words,
                total,
                flags_frag,
                proto,
                tcp_bytes,
                doff,
                tcp_opt_words,
                tcp_flags,
                udp_len,
                payload_len,
                padding,
                fill,
                truncate,
                flips,
            },
        )
}

/// Writes the frame `m` describes, byte by byte (no views: they would
/// refuse some of the broken headers wanted here).
fn build(m: &Mutant) -> Vec<u8> {
    let fill = |i: usize| m.fill[i % m.fill.len()];
    let mut f: Vec<u8> = (0..12).map(fill).collect();
    for &(tpid, tci) in &m.tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&m.ethertype.to_be_bytes());
    let l3 = f.len();
    let mut l4 = Vec::new();
    if m.tcp_bytes.unwrap_or(m.proto == 6) {
        let doff = m.doff.unwrap_or(5 + m.tcp_opt_words as u8);
        l4.extend((0..12).map(|i| fill(i + 7)));
        l4.extend_from_slice(&((u16::from(doff) << 12) | (m.tcp_flags & 0x0fff)).to_be_bytes());
        l4.extend((0..6 + 4 * m.tcp_opt_words).map(|i| fill(i + 3)));
    } else {
        l4.extend((0..4).map(|i| fill(i + 5)));
        l4.extend_from_slice(&m.udp_len.apply(8 + m.payload_len).to_be_bytes());
        l4.extend_from_slice(&[fill(1), fill(2)]);
    }
    l4.extend((0..m.payload_len).map(|i| fill(i + 11)));
    let hl = 20 + 4 * m.ip_opt_words;
    let total = m.total.apply(hl + l4.len());
    f.push(m.ver_ihl.unwrap_or(0x40 | (5 + m.ip_opt_words as u8)));
    f.push(fill(0));
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[fill(3), fill(4)]);
    f.extend_from_slice(&m.flags_frag.to_be_bytes());
    f.push(fill(5));
    f.push(m.proto);
    f.extend_from_slice(&[fill(6), fill(7)]);
    f.extend((0..8 + 4 * m.ip_opt_words).map(|i| fill(i + 13)));
    assert_eq!(f.len(), l3 + hl);
    f.extend_from_slice(&l4);
    f.extend((0..m.padding).map(|i| fill(i + 17)));
    for (at, byte) in &m.flips {
        let i = at.index(f.len());
        f[i] = *byte;
    }
    if let Some(at) = m.truncate {
        f.truncate(at.index(f.len() + 1));
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60_000))]

    #[test]
    fn shortcut_agrees_with_general_parser(m in mutant()) {
        agree(&build(&m))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// Every prefix of a frame, from empty to whole.
    #[test]
    fn shortcut_agrees_on_every_truncation(m in mutant()) {
        let f = build(&m);
        for n in 0..=f.len().min(200) {
            agree(&f[..n])?;
        }
    }
}

/// A valid frame: `tags` VLAN tags (802.1Q), IPv4 without options, TCP
/// with `tcp_opt_words` option words or UDP, `payload_len` bytes of data.
fn valid(tags: usize, proto: u8, tcp_opt_words: usize, payload_len: usize) -> Vec<u8> {
    build(&Mutant {
        tags: vec![(0x8100, 0x2abc); tags],
        ethertype: 0x0800,
        ver_ihl: None,
        ip_opt_words: 0,
        total: LenField::Right,
        flags_frag: 0x4000,
        proto,
        tcp_bytes: None,
        doff: None,
        tcp_opt_words,
        tcp_flags: 0x018,
        udp_len: LenField::Right,
        payload_len,
        padding: 0,
        fill: core::array::from_fn(|i| i as u8 * 7 + 1),
        truncate: None,
        flips: Vec::new(),
    })
}

/// [`agree`] outside proptest.
fn taken(frame: &[u8]) -> bool {
    agree(frame).unwrap_or_else(|e| panic!("{e}"))
}

/// The generator and the differential check only mean something if the
/// shortcut really takes the common frames (and declines the rest).
#[test]
fn shortcut_takes_the_common_frames() {
    for tags in 0..=1 {
        for (proto, opts, payload) in [(6, 0, 0), (6, 3, 100), (17, 0, 12), (17, 0, 0)] {
            let mut f = valid(tags, proto, opts, payload);
            // Ethernet padding up to the 60-byte minimum.
            f.resize(f.len().max(60), 0);
            assert!(taken(&f), "{tags} tags, proto {proto}");
            for n in 0..f.len() {
                // Too short to hold the IPv4 datagram.
                if n < 14 + 4 * tags + 20 + if proto == 6 { 20 + 4 * opts } else { 8 } + payload {
                    assert!(!taken(&f[..n]), "{tags} tags, cut at {n}");
                }
            }
        }
    }
    // Two tags, a fragment, IPv4 options, IPv6, ICMP: the general path.
    let mut qinq = valid(2, 6, 0, 10);
    qinq.resize(80, 0);
    assert!(!taken(&qinq));
    for (at, byte) in [
        (14 + 6, 0x20),
        (14 + 7, 1),
        (14, 0x46),
        (12, 0x86),
        (14 + 9, 1),
    ] {
        let mut f = valid(0, 6, 0, 30);
        f[at] = byte;
        assert!(!taken(&f), "byte {at} = {byte:#x}");
    }
}
