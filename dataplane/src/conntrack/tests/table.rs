//! The table: cap and eviction, expiry, slot reuse, no growth, key symmetry, hash seeding.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use net::TcpFlags;

use crate::conntrack::table::EVICT_SCAN;
use crate::conntrack::{
    ConnTable, Dir, Entry, FlowId, FlowInfo, FlowKey, Full, Lookup, Side, Strictness, TcpSegment,
    TcpState, Timeouts,
};

pub(super) fn udp_key(i: u32) -> FlowKey {
    let a = Ipv4Addr::from(0x0a00_0000 | (i & 0xffff));
    let b = Ipv4Addr::new(192, 168, 0, 1);
    FlowKey::v4(a, 1024 + (i >> 16) as u16, b, 53, 17, 0).0
}

fn assured_udp(t: &mut ConnTable, i: u32, now: u64) -> FlowId {
    let id = t.insert(udp_key(i), Side::First, now).unwrap().id;
    t.get_mut(id).unwrap().record(Dir::Reply, 100, now);
    id
}

fn established_tcp_state() -> TcpState {
    let seg = |flags, seq, ack| TcpSegment {
        flags,
        seq,
        ack,
        window: 1000,
        payload_len: 0,
        wscale: None,
    };
    let mut st = TcpState::from_first(&seg(TcpFlags::SYN, 1, 0), Strictness::Strict).unwrap();
    st.track(
        Dir::Reply,
        &seg(TcpFlags::SYN | TcpFlags::ACK, 100, 2),
        Strictness::Strict,
    );
    st.track(
        Dir::Original,
        &seg(TcpFlags::ACK, 2, 101),
        Strictness::Strict,
    );
    assert!(st.is_established());
    st
}

#[test]
fn entry_layout() {
    assert_eq!(size_of::<Entry>(), 116);
    assert_eq!(align_of::<Entry>(), 4);
    assert_eq!(size_of::<TcpState>(), 36);
    assert_eq!(size_of::<FlowKey>(), 40);
}

#[test]
fn capacity_cap_evicts_unestablished_never_established() {
    const CAP: u32 = 8;
    let mut t = ConnTable::new(CAP as usize, 42);
    // Six answered UDP flows, one established TCP flow, one unanswered UDP flow.
    for i in 0..6 {
        assured_udp(&mut t, i, 0);
    }
    let tcp_key = FlowKey::v4(
        Ipv4Addr::new(10, 9, 9, 9),
        4000,
        Ipv4Addr::new(10, 9, 9, 8),
        80,
        6,
        0,
    )
    .0;
    let tcp = t.insert(tcp_key, Side::First, 0).unwrap().id;
    t.get_mut(tcp)
        .unwrap()
        .tcp_mut()
        .clone_from(&established_tcp_state());
    let lonely = t.insert(udp_key(6), Side::First, 0).unwrap().id;
    assert_eq!(t.len(), CAP as usize);

    // Full: the unanswered flow gives way.
    let ins = t.insert(udp_key(100), Side::First, 5).unwrap();
    let displaced = ins.displaced.expect("an unestablished flow is evicted");
    assert_eq!(displaced.key(), udp_key(6));
    assert!(!displaced.is_assured());
    assert_eq!(ins.id, lonely, "the evicted slot is reused");
    assert_eq!(t.stats().evictions, 1);
    assert_eq!(t.len(), CAP as usize);

    // The newcomer itself is unanswered, so the next one evicts it...
    let ins = t.insert(udp_key(101), Side::First, 6).unwrap();
    assert_eq!(ins.displaced.unwrap().key(), udp_key(100));
    // ...but once it is answered, nothing is evictable: refusal.
    t.get_mut(ins.id).unwrap().record(Dir::Reply, 1, 6);
    assert_eq!(t.insert(udp_key(102), Side::First, 7), Err(Full));
    assert_eq!(t.len(), CAP as usize);
    for i in 0..6 {
        assert!(matches!(t.lookup(&udp_key(i), 7), Lookup::Hit(_)));
    }
    assert!(matches!(t.lookup(&tcp_key, 7), Lookup::Hit(_)));
    assert_eq!(t.find(&udp_key(102)), None);
}

#[test]
fn eviction_takes_slots_in_turn_passing_over_established_flows_until_they_expire() {
    let mut t = ConnTable::new(4, 7);
    assured_udp(&mut t, 0, 0);
    let first = t.insert(udp_key(1), Side::First, 1_000).unwrap().id;
    let second = t.insert(udp_key(2), Side::First, 500).unwrap().id;
    t.insert(udp_key(3), Side::First, 2_000).unwrap();
    // Full: the hand passes the established flow and takes the next unestablished one; the newcomer takes
    // its slot.
    let ins = t.insert(udp_key(4), Side::First, 3_000).unwrap();
    assert_eq!(ins.displaced.unwrap().key(), udp_key(1));
    assert_eq!(ins.id, first);
    // The hand has moved on: the next victim is the flow in the next slot, not the newcomer.
    let ins = t.insert(udp_key(5), Side::First, 3_000).unwrap();
    assert_eq!(ins.displaced.unwrap().key(), udp_key(2));
    assert_eq!(ins.id, second);
    // Once every flow is established nothing gives way...
    for i in [3, 4, 5] {
        let id = t.find(&udp_key(i)).unwrap();
        t.get_mut(id).unwrap().record(Dir::Reply, 1, 3_000);
    }
    assert_eq!(t.insert(udp_key(6), Side::First, 3_000), Err(Full));
    // ...until one is past its timeout: it is dead, and evicted although it was established.
    let late = 1_000 * u64::from(Timeouts::default().udp_stream) + 2_000;
    let ins = t.insert(udp_key(6), Side::First, late).unwrap();
    assert_eq!(ins.displaced.unwrap().key(), udp_key(0));
    assert_eq!(t.stats().evictions, 3);
}

#[test]
fn refusal_work_is_bounded_when_full_of_established_flows() {
    let mut t = ConnTable::new(1_000, 3);
    for i in 0..1_000 {
        assured_udp(&mut t, i, 0);
    }
    for i in 1_000..2_000 {
        assert_eq!(t.insert(udp_key(i), Side::First, 1), Err(Full));
    }
    assert_eq!(t.stats().evictions, 0);
    assert_eq!(t.len(), 1_000);
    // Each refusal looked at EVICT_SCAN slots, not at the table.
    assert_eq!(t.stats().evict_slots_scanned, 1_000 * EVICT_SCAN as u64);
}

#[test]
fn expiry_by_budget_steps() {
    let timeouts = Timeouts {
        udp: 10,
        udp_stream: 20,
        ..Timeouts::default()
    };
    let mut t = ConnTable::with_timeouts(64, 1, &timeouts);
    let ids: Vec<_> = (0..10)
        .map(|i| t.insert(udp_key(i), Side::First, 0).unwrap().id)
        .collect();
    // Flows 0..5 stay active, 5..10 go idle.
    for now in (1_000..=30_000).step_by(1_000) {
        for &id in &ids[..5] {
            t.get_mut(id).unwrap().record(Dir::Original, 10, now);
        }
        assert_eq!(t.expire(now, 0, |_, _| panic!("zero budget")), 0);
    }
    let now = 30_000;
    // Before the timeout nothing goes.
    assert_eq!(t.expire(5_000, 64, |_, _| panic!("not yet")), 0);
    let mut closed = Vec::new();
    let mut calls = 0;
    while closed.len() < 5 {
        t.expire(now, 8, |id, e| closed.push((id, e.key())));
        calls += 1;
        assert!(
            calls <= 64 / 8,
            "a full sweep takes capacity / budget calls"
        );
    }
    closed.sort_by_key(|c| c.0);
    let expected: Vec<_> = ids[5..].iter().map(|&id| (id, t_key(id, &ids))).collect();
    assert_eq!(closed, expected);
    assert_eq!(t.len(), 5);
    for i in 0..5 {
        assert!(matches!(t.lookup(&udp_key(i), now), Lookup::Hit(_)));
    }
    // More sweeps remove nothing else.
    for _ in 0..20 {
        assert_eq!(t.expire(now, 8, |_, _| panic!("active flow expired")), 0);
    }
    // A single call only looks at its budget of slots.
    let mut t = ConnTable::with_timeouts(64, 1, &timeouts);
    for i in 0..64 {
        t.insert(udp_key(i), Side::First, 0).unwrap();
    }
    assert_eq!(t.expire(60_000, 8, |_, _| {}), 8);
    assert_eq!(t.len(), 56);
}

fn t_key(id: FlowId, ids: &[FlowId]) -> FlowKey {
    udp_key(ids.iter().position(|&x| x == id).unwrap() as u32)
}

#[test]
fn timeout_on_lookup() {
    let timeouts = Timeouts {
        udp: 10,
        ..Timeouts::default()
    };
    let mut t = ConnTable::with_timeouts(16, 9, &timeouts);
    let id = t.insert(udp_key(1), Side::First, 1_000).unwrap().id;
    assert_eq!(t.lookup(&udp_key(1), 11_000), Lookup::Hit(id));
    assert_eq!(t.lookup(&udp_key(1), 11_001), Lookup::Expired(id));
    assert_eq!(t.find(&udp_key(1)), Some(id));
    // Not expired yet: reap refuses.
    assert_eq!(t.reap(id, 5_000), None);
    let e = t.reap(id, 11_001).unwrap();
    assert_eq!(e.key(), udp_key(1));
    assert_eq!(t.lookup(&udp_key(1), 11_001), Lookup::Miss);
    assert!(t.is_empty());

    // Re-inserting over an expired entry displaces it (so its close is reported).
    let id = t.insert(udp_key(2), Side::First, 0).unwrap().id;
    assert_eq!(t.lookup(&udp_key(2), 20_000), Lookup::Expired(id));
    let ins = t.insert(udp_key(2), Side::Second, 20_000).unwrap();
    assert_eq!(ins.id, id);
    assert_eq!(ins.displaced.unwrap().originator(), Side::First);
    assert_eq!(t.get(id).unwrap().originator(), Side::Second);
    assert_eq!(t.len(), 1);
    assert_eq!(t.lookup(&udp_key(2), 20_000), Lookup::Hit(id));

    // A clock that appears to go backwards does not expire anything.
    assert_eq!(t.lookup(&udp_key(2), 19_000), Lookup::Hit(id));
}

#[test]
fn remove_and_reinsert_reuse_slots() {
    let mut t = ConnTable::new(4, 5);
    let a = t.insert(udp_key(1), Side::First, 0).unwrap().id;
    let b = t.insert(udp_key(2), Side::First, 0).unwrap().id;
    assert_ne!(a, b);
    let e = t.remove(a).unwrap();
    assert_eq!(e.key(), udp_key(1));
    assert_eq!(t.remove(a), None);
    assert_eq!(t.get(a), None);
    assert_eq!(t.find(&udp_key(1)), None);
    let c = t.insert(udp_key(3), Side::First, 0).unwrap().id;
    assert_eq!(c, a, "the freed slot is reused first");
    assert_eq!(t.get(c).unwrap().key(), udp_key(3));
    assert_eq!(t.find(&udp_key(2)), Some(b));
    for i in 10..12 {
        t.insert(udp_key(i), Side::First, 0).unwrap();
    }
    assert_eq!(t.len(), 4);
    let mut ids: Vec<_> = t.iter().map(|(id, _)| id.index()).collect();
    ids.sort();
    assert_eq!(ids, [0, 1, 2, 3]);
}

#[test]
fn index_never_grows() {
    // The index at its highest load (cap + 50 % is just under a power of two), churned for long.
    const CAP: u32 = 1_365;
    let mut t = ConnTable::new(CAP as usize, 11);
    let alloc = t.index_allocation_bytes();
    let heap = t.heap_bytes();
    assert!(alloc > 0);
    for round in 0..60u32 {
        let base = round * 10_000;
        for i in 0..CAP {
            t.insert(udp_key(base + i), Side::First, 0).unwrap();
        }
        assert_eq!(t.len(), CAP as usize);
        assert_eq!(
            t.insert(udp_key(base + CAP), Side::First, 0)
                .map(|i| i.displaced.is_some()),
            Ok(true)
        );
        for i in 0..CAP {
            if let Some(id) = t.find(&udp_key(base + i)) {
                t.remove(id).unwrap();
            }
        }
        if let Some(id) = t.find(&udp_key(base + CAP)) {
            t.remove(id).unwrap();
        }
        assert!(t.is_empty());
        assert_eq!(t.index_allocation_bytes(), alloc, "round {round}");
    }
    // Interleaved churn at full load.
    for i in 0..CAP {
        assured_udp(&mut t, i, 0);
    }
    for i in 0..50_000u32 {
        let victim = t.find(&udp_key(i % CAP)).unwrap();
        t.remove(victim).unwrap();
        assert!(t.find(&udp_key(i % CAP)).is_none());
        let id = t.insert(udp_key(i % CAP), Side::Second, 0).unwrap().id;
        assert_eq!(t.find(&udp_key(i % CAP)), Some(id));
    }
    assert_eq!(t.index_allocation_bytes(), alloc);
    assert_eq!(t.heap_bytes(), heap);
    assert_eq!(t.index_positions(), 2048);
    t.check_index();
    for i in 0..CAP {
        assert!(t.find(&udp_key(i)).is_some());
    }
}

/// Keys that share a few home positions, at the end of the index and at its start (runs wrap around), removed
/// in an interleaved order: every run stays unbroken (backward-shift deletion) and every key is found or not
/// exactly as it should be.
#[test]
fn removal_keeps_colliding_runs_whole() {
    let mut t = ConnTable::new(256, 0x00c0_111d);
    let positions = t.index_positions() as u64;
    let homes = [positions - 2, positions - 1, 0, 1];
    let keys: Vec<FlowKey> = (0..)
        .map(udp_key)
        .filter(|k| homes.contains(&(t.hash_for_test(k) & (positions - 1))))
        .take(48)
        .collect();
    let mut live: Vec<(FlowKey, FlowId)> = keys
        .iter()
        .map(|&k| (k, t.insert(k, Side::First, 0).unwrap().id))
        .collect();
    t.check_index();
    let mut round = 0;
    while !live.is_empty() {
        round += 1;
        let at = (round * 7) % live.len();
        let (gone, id) = live.swap_remove(at);
        assert_eq!(t.remove(id).map(|e| e.key()), Some(gone));
        t.check_index();
        assert_eq!(t.find(&gone), None);
        for (k, id) in &live {
            assert_eq!(t.find(k), Some(*id));
        }
        if round % 3 == 0 {
            // Reinsert one: it joins the end of its run.
            let id = t.insert(gone, Side::Second, 0).unwrap().id;
            live.push((gone, id));
            t.check_index();
        }
    }
    assert!(t.is_empty());
    assert!(t.index_is_empty_for_test());
}

/// The sweep's copy of the last packet's second wraps every 2^16 s: a flow idle across wraps is still removed,
/// never before its timeout and at most a minute after it.
#[test]
fn sweep_removes_long_idle_flows_across_the_seconds_wrap() {
    const S: u64 = 1000;
    // Just past two wraps: when the flow expires, its wrapped idle time looks like a few seconds. Every
    // timeout that long, so the sweep skips flows idle for up to its most (a minute).
    let timeout_s: u32 = 2 * 65_536 + 2;
    let timeouts = Timeouts {
        tcp_syn: timeout_s,
        tcp_established: timeout_s,
        tcp_fin: timeout_s,
        tcp_time_wait: timeout_s,
        tcp_close: timeout_s,
        udp: timeout_s,
        udp_stream: timeout_s,
        icmp: timeout_s,
        other: timeout_s,
    };
    let mut t = ConnTable::with_timeouts(64, 3, &timeouts);
    t.insert(udp_key(1), Side::First, 0).unwrap();
    // Recently active flows beside it are skipped, and stay.
    let mut now = 0;
    let mut removed_at = None;
    while now <= (u64::from(timeout_s) + 120) * S {
        if let Some(id) = t.find(&udp_key(2)) {
            t.remove(id);
        }
        t.insert(udp_key(2), Side::First, now).unwrap();
        if t.expire(now, 64, |_, e| assert_eq!(e.key(), udp_key(1))) > 0 {
            removed_at = Some(now);
            break;
        }
        now += 7 * S;
    }
    let removed_at = removed_at.expect("removed");
    assert!(removed_at > u64::from(timeout_s) * S);
    assert!(
        removed_at <= (u64::from(timeout_s) + 61 + 7) * S,
        "{removed_at}"
    );
    assert!(t.find(&udp_key(2)).is_some());
}

#[test]
fn key_symmetry_v4_v6_vlan() {
    let a4 = Ipv4Addr::new(10, 0, 0, 1);
    let b4 = Ipv4Addr::new(10, 0, 0, 2);
    let (k1, s1) = FlowKey::v4(a4, 40_000, b4, 80, 6, 0);
    let (k2, s2) = FlowKey::v4(b4, 80, a4, 40_000, 6, 0);
    assert_eq!(k1, k2);
    assert_eq!((s1, s2), (Side::First, Side::Second));
    assert_eq!(k1.endpoint(Side::First), (IpAddr::V4(a4), 40_000));
    assert_eq!(k1.endpoint(Side::Second), (IpAddr::V4(b4), 80));
    // Ordering is by address first, then port.
    let (k, s) = FlowKey::v4(b4, 1, a4, 2, 17, 0);
    assert_eq!(s, Side::Second);
    assert_eq!(k.endpoint(Side::First), (IpAddr::V4(a4), 2));
    // Same address both ways: ordered by port.
    let (_, s) = FlowKey::v4(a4, 9, a4, 8, 17, 0);
    assert_eq!(s, Side::Second);

    let a6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let b6: Ipv6Addr = "2001:db8::2".parse().unwrap();
    let (k3, _) = FlowKey::v6(a6, 5, b6, 6, 17, 100);
    let (k4, _) = FlowKey::v6(b6, 6, a6, 5, 17, 100);
    assert_eq!(k3, k4);
    assert!(k3.is_ipv6() && !k1.is_ipv6());
    assert_eq!(k3.vlan(), 100);
    assert_ne!(k3, FlowKey::v6(a6, 5, b6, 6, 17, 101).0);
    assert_ne!(k3, FlowKey::v6(a6, 5, b6, 6, 17, 0).0);
    assert_ne!(k1, FlowKey::v4(a4, 40_000, b4, 80, 17, 0).0);
    // VLAN tag bits above the id are ignored; the family bit is ours.
    assert_eq!(FlowKey::v4(a4, 1, b4, 2, 17, 0xf064).0.vlan(), 100);
    // An IPv6 packet with IPv4-mapped addresses never matches an IPv4 flow.
    let (m, _) = FlowKey::v6(a4.to_ipv6_mapped(), 40_000, b4.to_ipv6_mapped(), 80, 6, 0);
    assert_ne!(m, k1);
    assert_eq!(
        FlowKey::new(IpAddr::V4(a4), 1, IpAddr::V6(b6), 2, 6, 0),
        None
    );

    // Both directions find the same entry.
    let mut t = ConnTable::new(16, 1);
    let id = t.insert(k1, s1, 0).unwrap().id;
    assert_eq!(t.find(&k2), Some(id));
    let e = t.get(id).unwrap();
    assert_eq!(e.dir_of(s1), Dir::Original);
    assert_eq!(e.dir_of(s2), Dir::Reply);
    assert_eq!(e.endpoint(Dir::Original), (IpAddr::V4(a4), 40_000));
    let id6 = t.insert(k4, Side::Second, 0).unwrap().id;
    assert_eq!(t.find(&k3), Some(id6));
    assert_eq!(
        t.get(id6).unwrap().endpoint(Dir::Original),
        (IpAddr::V6(b6), 6)
    );
}

/// Keys crafted to share a bucket under one seed spread out under another.
#[test]
fn seeded_hash_defeats_crafted_collisions() {
    const BUCKETS: u64 = 1 << 10;
    const WANT: usize = 64;
    let a = ConnTable::new(0, 0x1111_2222_3333_4444);
    let b = ConnTable::new(0, 0x5555_6666_7777_8888);
    let target = a.hash_for_test(&udp_key(0)) & (BUCKETS - 1);
    // The attacker's offline search: tuples that land in one bucket under seed A.
    let crafted: Vec<_> = (0..)
        .map(udp_key)
        .filter(|k| a.hash_for_test(k) & (BUCKETS - 1) == target)
        .take(WANT)
        .collect();
    assert_eq!(crafted.len(), WANT);
    let mut per_bucket: HashMap<u64, usize> = HashMap::new();
    for k in &crafted {
        *per_bucket
            .entry(b.hash_for_test(k) & (BUCKETS - 1))
            .or_default() += 1;
    }
    let worst = per_bucket.values().copied().max().unwrap();
    // 64 keys in 1024 buckets at random: a handful per bucket at most.
    assert!(worst <= 4, "worst bucket holds {worst} crafted keys");
    assert!(per_bucket.len() >= WANT - 8);
    // The hash bits the index stores beside the slot are independent too: a probe rarely meets a false match.
    let tags: std::collections::HashSet<_> =
        crafted.iter().map(|k| b.hash_for_test(k) >> 57).collect();
    assert!(tags.len() > 30);
}

#[test]
fn flow_info_and_listing() {
    let mut t = ConnTable::new(8, 2);
    let (k, side) = FlowKey::v4(
        Ipv4Addr::new(10, 0, 0, 9),
        5353,
        Ipv4Addr::new(10, 0, 0, 1),
        53,
        17,
        7,
    );
    let id = t.insert(k, side.other(), 2_000).unwrap().id;
    let e = t.get_mut(id).unwrap();
    e.set_admission(12, 3);
    e.set_logged(true);
    e.record(Dir::Original, 60, 2_000);
    e.record(Dir::Reply, 120, 2_500);
    e.record(Dir::Reply, 120, 3_000);
    let info = FlowInfo::new(id, t.get(id).unwrap(), 4_000);
    assert_eq!(info.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!((info.sport, info.dport), (53, 5353));
    assert_eq!(info.state, "stream");
    assert_eq!((info.packets_orig, info.bytes_orig), (1, 60));
    assert_eq!((info.packets_reply, info.bytes_reply), (2, 240));
    assert_eq!((info.age_ms, info.idle_ms), (2_000, 1_000));
    assert_eq!(
        (
            info.rule_id,
            info.policy_version,
            info.logged,
            info.monitored
        ),
        (12, 3, true, false)
    );
    assert_eq!(info.vlan, 7);
    let json = serde_json::to_value(info.into_wire()).unwrap();
    assert_eq!(json["src"], "10.0.0.1");
    assert_eq!(json["state"], "stream");
    assert_eq!(json["bytes_reply"], 240);

    // Kill by predicate.
    t.insert(udp_key(1), Side::First, 0).unwrap();
    t.insert(udp_key(2), Side::First, 0).unwrap();
    assert_eq!(t.remove_where(|_, e| e.rule_id() == 12), 1);
    assert_eq!(t.len(), 2);
    assert_eq!(t.iter().count(), 2);
}

#[test]
fn counters_are_48_bit() {
    let mut t = ConnTable::new(1, 2);
    let id = t.insert(udp_key(1), Side::First, 0).unwrap().id;
    let e = t.get_mut(id).unwrap();
    for _ in 0..3 {
        e.record(Dir::Original, u32::MAX, 0);
    }
    assert_eq!(e.bytes(Dir::Original), 3 * u64::from(u32::MAX));
    assert_eq!(e.packets(Dir::Original), 3);
    assert_eq!(e.packets(Dir::Reply), 0);
}

#[test]
fn zero_capacity_refuses_everything() {
    let mut t = ConnTable::new(0, 1);
    assert_eq!(t.insert(udp_key(1), Side::First, 0), Err(Full));
    assert_eq!(t.expire(0, 100, |_, _| {}), 0);
    assert_eq!(t.lookup(&udp_key(1), 0), Lookup::Miss);
}

/// A probe that picked another flow's slot (its stored hash bits matched first) still finds the key.
#[test]
fn confirm_falls_back_to_a_full_lookup() {
    let mut t = ConnTable::new(64, 5);
    let ids: Vec<FlowId> = (0..40)
        .map(|i| t.insert(udp_key(i), Side::First, 0).unwrap().id)
        .collect();
    for (i, &id) in ids.iter().enumerate() {
        let k = udp_key(i as u32);
        let hash = t.hash_for_test(&k);
        assert_eq!(t.probe(hash), Some(id.get()));
        assert_eq!(t.confirm(hash, &k, Some(id.get())), Some(id));
        let wrong = ids[(i + 1) % ids.len()].get();
        assert_eq!(t.confirm(hash, &k, Some(wrong)), Some(id));
        assert_eq!(t.confirm(hash, &k, Some(u32::MAX)), Some(id));
    }
    // No stored hash bits match: nothing there, nothing read.
    let absent = udp_key(1_000);
    let hash = t.hash_for_test(&absent);
    assert_eq!(t.probe(hash), None);
    assert_eq!(t.confirm(hash, &absent, None), None);
}

proptest::proptest! {
    /// A removal given a hint for the flow's hash — its own hash, another flow's, or any number — leaves the
    /// index exactly as a removal that hashes the flow's key.
    #[test]
    fn hinted_removal_matches_plain_removal(
        flows in 1u32..48,
        removals in proptest::collection::vec((0u32..48, 0u8..3, proptest::num::u64::ANY), 1..32),
    ) {
        let (mut hinted, mut plain) = (ConnTable::new(48, 9), ConnTable::new(48, 9));
        for i in 0..flows {
            let k = udp_key(i);
            hinted.insert(k, Side::First, 0).unwrap();
            plain.insert(k, Side::First, 0).unwrap();
        }
        for (slot, kind, any) in removals {
            let id = FlowId::from_index(slot);
            let hint = match (kind, hinted.get(id)) {
                (0, Some(e)) => Some(hinted.hash_for_test(&e.key())),
                (1, _) => Some(hinted.hash_for_test(&udp_key(slot + 1))),
                _ => Some(any),
            };
            proptest::prop_assert_eq!(hinted.remove_hinted(id, hint), plain.remove(id));
            proptest::prop_assert_eq!(hinted.index_for_test(), plain.index_for_test());
            hinted.check_index();
        }
    }
}

proptest::proptest! {
    /// An insert into a full table takes the victim's slot over in place (never vacated, never on the free
    /// list): the table ends exactly as if the victim had been removed and the flow then inserted.
    #[test]
    fn eviction_in_place_matches_removal_then_insert(keys in proptest::collection::vec(0u32..200, 1..300)) {
        let (mut evicting, mut plain) = (ConnTable::new(32, 5), ConnTable::new(32, 5));
        for (now, i) in keys.into_iter().enumerate() {
            let (k, now) = (udp_key(i), now as u64);
            let mut shown = None;
            let id = evicting
                .insert_hashed(
                    evicting.hash_for_test(&k),
                    &k,
                    Side::First,
                    now,
                    |slot, old| shown = Some((slot, *old)),
                    |_| {},
                )
                .unwrap();
            match shown {
                // The key was there: replaced in place in both.
                Some((slot, old)) if old.key_eq(&k) => {
                    proptest::prop_assert_eq!(slot, id);
                    proptest::prop_assert_eq!(plain.insert(k, Side::First, now).unwrap().id, id);
                }
                // An eviction: the victim's own slot, shown before it was overwritten.
                Some((slot, old)) => {
                    proptest::prop_assert_eq!(slot, id);
                    proptest::prop_assert_eq!(plain.remove(id), Some(old));
                    let ins = plain.insert(k, Side::First, now).unwrap();
                    proptest::prop_assert_eq!((ins.id, ins.displaced), (id, None));
                }
                None => {
                    let ins = plain.insert(k, Side::First, now).unwrap();
                    proptest::prop_assert_eq!((ins.id, ins.displaced), (id, None));
                }
            }
            proptest::prop_assert_eq!(evicting.len(), plain.len());
            proptest::prop_assert_eq!(evicting.index_for_test(), plain.index_for_test());
            for s in 0..32 {
                let s = FlowId::from_index(s);
                proptest::prop_assert_eq!(evicting.get(s), plain.get(s));
            }
            evicting.check_index();
        }
    }
}
