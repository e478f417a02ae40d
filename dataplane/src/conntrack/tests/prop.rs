//! Model check: random interleavings of inserts, lookups, removes, activity and expiry agree with a HashMap.

use std::collections::HashMap;

use proptest::prelude::*;

use super::table::udp_key;
use crate::conntrack::{ConnTable, Dir, FlowKey, Lookup, Side, Timeouts};

#[derive(Debug, Clone)]
enum Op {
    Insert(u32),
    Lookup(u32),
    Touch(u32),
    Reply(u32),
    Remove(u32),
    Advance(u64),
    Expire(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..POOL).prop_map(Op::Insert),
        3 => (0..POOL).prop_map(Op::Lookup),
        2 => (0..POOL).prop_map(Op::Touch),
        1 => (0..POOL).prop_map(Op::Reply),
        2 => (0..POOL).prop_map(Op::Remove),
        2 => (0..8_000u64).prop_map(Op::Advance),
        2 => (0..40usize).prop_map(Op::Expire),
    ]
}

const POOL: u32 = 48;
const CAP: usize = 64;

/// What the model knows of a flow.
#[derive(Debug, Clone, Copy)]
struct Model {
    last_seen: u64,
    replied: bool,
}

fn timeouts() -> Timeouts {
    Timeouts {
        udp: 5,
        udp_stream: 12,
        ..Timeouts::default()
    }
}

fn expired(m: &Model, now: u64) -> bool {
    let t = if m.replied { 12_000 } else { 5_000 };
    now - m.last_seen > t
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn table_agrees_with_a_hashmap(ops in prop::collection::vec(op(), 1..400), seed: u64) {
        let mut t = ConnTable::with_timeouts(CAP, seed, &timeouts());
        let alloc = t.index_allocation_bytes();
        let mut model: HashMap<FlowKey, Model> = HashMap::new();
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Insert(i) => {
                    let k = udp_key(i);
                    let ins = t.insert(k, Side::First, now).unwrap();
                    // Only a same-key entry can be displaced: the pool is smaller than the table.
                    prop_assert_eq!(ins.displaced.is_some(), model.contains_key(&k));
                    model.insert(k, Model { last_seen: now, replied: false });
                }
                Op::Lookup(i) => {
                    let k = udp_key(i);
                    match (t.lookup(&k, now), model.get(&k)) {
                        (Lookup::Hit(id), Some(m)) => {
                            prop_assert!(!expired(m, now));
                            prop_assert_eq!(t.get(id).unwrap().key(), k);
                        }
                        (Lookup::Expired(_), Some(m)) => prop_assert!(expired(m, now)),
                        (Lookup::Miss, None) => {}
                        (got, want) => prop_assert!(false, "lookup {:?} vs model {:?}", got, want),
                    }
                }
                Op::Touch(i) | Op::Reply(i) => {
                    let k = udp_key(i);
                    if let Lookup::Hit(id) = t.lookup(&k, now) {
                        let reply = matches!(op, Op::Reply(_));
                        let dir = if reply { Dir::Reply } else { Dir::Original };
                        t.get_mut(id).unwrap().record(dir, 10, now);
                        let m = model.get_mut(&k).unwrap();
                        m.last_seen = now;
                        m.replied |= reply;
                    }
                }
                Op::Remove(i) => {
                    let k = udp_key(i);
                    match t.find(&k) {
                        Some(id) => {
                            prop_assert_eq!(t.remove(id).unwrap().key(), k);
                            prop_assert!(model.remove(&k).is_some());
                        }
                        None => prop_assert!(!model.contains_key(&k)),
                    }
                }
                Op::Advance(dt) => now += dt,
                Op::Expire(budget) => {
                    let mut gone = Vec::new();
                    t.expire(now, budget, |_, e| gone.push(e.key()));
                    prop_assert!(gone.len() <= budget);
                    for k in gone {
                        let m = model.remove(&k);
                        prop_assert!(m.is_some_and(|m| expired(&m, now)), "{:?} expired early", k);
                    }
                }
            }
            // Same membership, same size, no growth.
            prop_assert_eq!(t.len(), model.len());
            for i in 0..POOL {
                let k = udp_key(i);
                prop_assert_eq!(t.find(&k).is_some(), model.contains_key(&k));
            }
            prop_assert_eq!(t.iter().count(), model.len());
            prop_assert_eq!(t.index_allocation_bytes(), alloc);
            t.check_index();
        }
    }
}

mod hostile {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use net::TcpFlags;
    use proptest::prelude::*;

    use crate::conntrack::tests::frames::{frame, ip_packet, quote_v4, L4Spec};
    use crate::conntrack::{Admission, Prepared, Strictness, Timeouts, Track, Tracker};
    use crate::ruleset::{flow_input, key_input, V6_INPUT};

    fn addr(v6: bool, i: u8) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(i)))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))
        }
    }

    fn flags() -> impl Strategy<Value = TcpFlags> {
        const S: u16 = TcpFlags::SYN.0;
        const A: u16 = TcpFlags::ACK.0;
        const F: u16 = TcpFlags::FIN.0;
        const R: u16 = TcpFlags::RST.0;
        const P: u16 = TcpFlags::PSH.0;
        prop_oneof![
            4 => prop::sample::select(vec![S, S | A, A, A | P, F | A, R, R | A]),
            1 => 0u16..0x200,
        ]
        .prop_map(TcpFlags::from_bits_truncate)
    }

    fn tcp() -> impl Strategy<Value = L4Spec> {
        let seq = || prop_oneof![any::<u32>(), 0..3_000u32, (u32::MAX - 3_000)..=u32::MAX];
        let header = (0..2u16, 0..2u16, flags(), seq(), seq());
        let rest = (any::<u16>(), proptest::option::of(0..20u8), 0..1500usize);
        (header, rest).prop_map(
            |((sp, dp, flags, seq, ack), (window, wscale, len))| L4Spec::Tcp {
                sport: 1000 + sp,
                dport: 80 + dp,
                flags,
                seq,
                ack,
                window,
                wscale,
                len,
            },
        )
    }

    fn l4() -> impl Strategy<Value = L4Spec> {
        prop_oneof![
            6 => tcp(),
            2 => (0..2u16, 0..2u16).prop_map(|(sport, dport)| L4Spec::Udp { sport, dport, len: 4 }),
            2 => (any::<bool>(), 0..2u16).prop_map(|(request, ident)| L4Spec::Echo { request, ident }),
            1 => any::<u8>().prop_map(|ty| L4Spec::IcmpOther { ty }),
            1 => (0..255u8).prop_map(|proto| L4Spec::Raw { proto }),
        ]
    }

    #[derive(Debug, Clone)]
    struct Pkt {
        v6: bool,
        vlan: Option<u16>,
        src: u8,
        dst: u8,
        l4: L4Spec,
        /// Wrap the packet in an ICMP error sent to its source instead.
        as_error: Option<u8>,
        /// Corrupt one byte of the frame (offset, xor).
        flip: Option<(usize, u8)>,
        dt: u64,
    }

    fn pkt() -> impl Strategy<Value = Pkt> {
        (
            Just(false),
            proptest::option::weighted(0.2, 1..3u16),
            1..3u8,
            1..3u8,
            l4(),
            proptest::option::weighted(0.1, 0..5u8),
            proptest::option::weighted(0.05, (0..120usize, 1..=255u8)),
            0..20_000u64,
        )
            .prop_map(|(v6, vlan, src, dst, l4, as_error, flip, dt)| Pkt {
                v6,
                vlan,
                src,
                dst,
                l4,
                as_error,
                flip,
                dt,
            })
    }

    fn build(p: &Pkt) -> Vec<u8> {
        let (s, d) = (addr(p.v6, p.src), addr(p.v6, p.dst));
        let mut f = match p.as_error {
            None => frame(p.vlan, s, d, &p.l4),
            Some(ty) => {
                let inner = ip_packet(s, d, &p.l4);
                let quoted = if p.v6 { inner } else { quote_v4(&inner) };
                frame(
                    p.vlan,
                    addr(p.v6, 9),
                    s,
                    &L4Spec::Error {
                        ty,
                        code: 0,
                        quoted,
                    },
                )
            }
        };
        if let Some((off, x)) = p.flip {
            let n = f.len();
            f[off % n] ^= x;
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Arbitrary, partly corrupted traffic, all of it admitted: no panic, and the table stays consistent.
        #[test]
        fn hostile_traffic_keeps_the_table_consistent(
            mut pkts in prop::collection::vec(pkt(), 1..300),
            loose: bool,
            v6: bool,
        ) {
            for p in &mut pkts {
                p.v6 = v6;
            }
            let strictness = if loose { Strictness::Loose } else { Strictness::Strict };
            let mut t = Tracker::new(16, 99, &Timeouts::default(), strictness);
            let alloc = t.table().index_allocation_bytes();
            let mut now = 0;
            for p in &pkts {
                now += p.dt;
                let f = build(p);
                let Ok(parsed) = net::parse(&f) else { continue };
                match t.process(&f, &parsed, now) {
                    Track::New(n) => {
                        let _ = t.commit_new(&n, Admission::default(), now);
                    }
                    Track::Known { id, .. } | Track::Related { id, .. } => {
                        prop_assert!(t.table().get(id).is_some());
                    }
                    Track::Untracked(_) | Track::Drop(_) => {}
                }
                t.expire(now, 2, |_, _| {});
                prop_assert!(t.table().len() <= 16);
                prop_assert_eq!(t.table().iter().count(), t.table().len());
                for (id, e) in t.table().iter() {
                    prop_assert_eq!(t.table().find(&e.key()), Some(id));
                }
                prop_assert_eq!(t.table().index_allocation_bytes(), alloc);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// The common frame's prepare, straight from its fields, gives exactly the `Prepared` of the general
        /// prepare over its `Parsed` (key, hash, side, IP length, TCP segment with a SYN's window scale).
        #[test]
        fn common_prepare_agrees_with_parsed_prepare(p in pkt(), seed: u64) {
            let f = build(&p);
            let t = Tracker::new(16, seed, &Timeouts::default(), Strictness::Strict);
            if let Some(c) = net::parse_common(&f) {
                let parsed = net::parse(&f).expect("the common frame parses");
                let (mut general, mut common) = (Prepared::EMPTY, Prepared::EMPTY);
                t.prepare_into(&f, &parsed, &mut general);
                t.prepare_common(&f, &c, &mut common);
                prop_assert_eq!(general, common);
            }
        }

        /// A TCP or UDP flow's first packet is classified from its key and side (the worker's common new flow,
        /// never parsed) with exactly the classifier input of the packet parsed.
        #[test]
        fn key_input_agrees_with_flow_input(p in pkt(), seed: u64) {
            let f = build(&p);
            let mut t = Tracker::new(16, seed, &Timeouts::default(), Strictness::Loose);
            let Ok(parsed) = net::parse(&f) else { return Ok(()) };
            if let Track::New(n) = t.process(&f, &parsed, 0) {
                let (mut from_key, mut from_packet) = ([0; V6_INPUT], [0; V6_INPUT]);
                let by_key = key_input(n.key(), n.originator(), &mut from_key);
                let by_packet = flow_input(&parsed, &mut from_packet);
                if matches!(parsed.l4, net::L4::Tcp { .. } | net::L4::Udp { .. }) {
                    prop_assert!(by_key.is_some());
                    prop_assert_eq!(by_key, by_packet);
                } else if !matches!(n.key().proto(), 6 | 17) {
                    prop_assert_eq!(by_key, None);
                }
            }
        }
    }

    /// The generator gives the common path what it must agree on: TCP (SYNs with a window scale among them)
    /// and UDP, untagged and tagged.
    #[test]
    fn generator_covers_the_common_path() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut tcp, mut syn_wscale, mut udp, mut tagged) = (0, 0, 0, 0);
        for _ in 0..2_000 {
            let p = pkt().new_tree(&mut runner).unwrap().current();
            let Some(c) = net::parse_common(&build(&p)) else {
                continue;
            };
            tagged += usize::from(c.vlan.is_some());
            match (c.l4, &p.l4) {
                (net::L4::Tcp { flags, .. }, L4Spec::Tcp { wscale, .. }) => {
                    tcp += 1;
                    syn_wscale += usize::from(flags.contains(TcpFlags::SYN) && wscale.is_some());
                }
                (net::L4::Udp { .. }, _) => udp += 1,
                _ => {}
            }
        }
        assert!(
            tcp > 300 && syn_wscale > 20 && udp > 100 && tagged > 50,
            "{tcp} {syn_wscale} {udp} {tagged}"
        );
    }

    /// Commits a burst's new flows after the burst, as the worker does (passing over a flow an earlier packet of
    /// the burst already committed).
    fn commit_burst(t: &mut Tracker, tracks: &[Track], now: u64) {
        for track in tracks {
            if let Track::New(n) = track {
                if t.table().find(n.key()).is_none() {
                    let _ = t.commit_new(n, Admission::default(), now);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// The worker's burst pipeline (prepare all, probe all, finish in order) decides exactly what
        /// `process` packet by packet decides, and leaves the same table.
        #[test]
        fn burst_pipeline_agrees_with_process(
            mut pkts in prop::collection::vec(pkt(), 1..300),
            sizes in prop::collection::vec(1..=8usize, 300),
            loose: bool,
            v6: bool,
            seed: u64,
        ) {
            for p in &mut pkts {
                p.v6 = v6;
            }
            let strictness = if loose { Strictness::Loose } else { Strictness::Strict };
            let mut a = Tracker::new(16, seed, &Timeouts::default(), strictness);
            let mut b = Tracker::new(16, seed, &Timeouts::default(), strictness);
            let frames: Vec<Vec<u8>> = pkts.iter().map(build).collect();
            let mut now = 0;
            let (mut at, mut k) = (0, 0);
            while at < frames.len() {
                let burst = &frames[at..(at + sizes[k]).min(frames.len())];
                now += pkts[at].dt;
                at += burst.len();
                k += 1;
                let parsed: Vec<Option<net::Parsed>> = burst.iter().map(|f| net::parse(f).ok()).collect();

                let mut one_by_one = Vec::new();
                for (f, p) in burst.iter().zip(&parsed) {
                    if let Some(p) = p {
                        one_by_one.push(a.process(f, p, now));
                    }
                }
                // The common frames straight from their fields, as the worker does.
                let mut prepared: Vec<Prepared> = burst
                    .iter()
                    .zip(&parsed)
                    .filter_map(|(f, p)| {
                        let p = p.as_ref()?;
                        Some(match net::parse_common(f) {
                            Some(c) => {
                                let mut pr = Prepared::EMPTY;
                                b.prepare_common(f, &c, &mut pr);
                                pr
                            }
                            None => b.prepare(f, p),
                        })
                    })
                    .collect();
                // As the worker does: every index prefetch, then every probe, then the finishes in order.
                for p in &prepared {
                    b.prefetch_index(p);
                }
                for p in &mut prepared {
                    b.probe(p);
                }
                let pipelined: Vec<Track> = parsed
                    .iter()
                    .flatten()
                    .zip(&prepared)
                    .map(|(_, pr)| b.finish(pr, now))
                    .collect();
                prop_assert_eq!(&one_by_one, &pipelined);

                commit_burst(&mut a, &one_by_one, now);
                commit_burst(&mut b, &pipelined, now);
                a.expire(now, 2, |_, _| {});
                b.expire(now, 2, |_, _| {});
                let ea: Vec<_> = a.table().iter().map(|(id, e)| (id, *e)).collect();
                let eb: Vec<_> = b.table().iter().map(|(id, e)| (id, *e)).collect();
                prop_assert_eq!(ea, eb);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// `commit_new` inserts with the hash the lookup carried, not one computed again: the carried hash is
        /// the table's hash of the key, and a new flow from a tracker with another seed (whose hash this table
        /// must not trust) is hashed again, so every committed flow stays findable by its key.
        #[test]
        fn commit_uses_the_carried_hash_only_from_its_own_tracker(
            pkts in prop::collection::vec(pkt(), 1..200),
            seed: u64,
            other: u64,
        ) {
            let mut own = Tracker::new(16, seed, &Timeouts::default(), Strictness::Loose);
            let mut foreign = Tracker::new(16, other, &Timeouts::default(), Strictness::Loose);
            let mut now = 0;
            for p in &pkts {
                now += p.dt;
                let f = build(p);
                let Ok(parsed) = net::parse(&f) else { continue };
                // The flow as another tracker saw it, committed here.
                if let Track::New(n) = foreign.process(&f, &parsed, now) {
                    let _ = own.commit_new(&n, Admission::default(), now);
                }
                if let Track::New(n) = own.process(&f, &parsed, now) {
                    prop_assert_eq!(n.hash(), own.table().hash(n.key()));
                    let _ = own.commit_new(&n, Admission::default(), now);
                }
                own.expire(now, 2, |_, _| {});
                own.table().check_index();
                for (id, e) in own.table().iter() {
                    prop_assert_eq!(own.table().find(&e.key()), Some(id));
                }
            }
        }
    }
}
