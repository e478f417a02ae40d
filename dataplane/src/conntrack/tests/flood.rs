//! Flood limits at admission and the table's eviction policy under a SYN flood.

use std::net::{IpAddr, Ipv4Addr};

use net::TcpFlags;
use policy::FloodLimits;

use super::frames::{frame, tcp, L4Spec};
use crate::conntrack::sources::{MIN_SOURCES, WAYS};
use crate::conntrack::{
    Admission, CommitError, Dir, FloodLimit, FlowId, Refusal, SegmentKey, Strictness, TcpConnState,
    Timeouts, Track, Tracker,
};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;

fn addr(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

const SERVER: u32 = 0x00ff_0001;

fn tracker(capacity: usize, limits: FloodLimits) -> Tracker {
    let mut t = Tracker::new(capacity, 0x5eed, &Timeouts::default(), Strictness::Strict);
    t.set_flood_limits(limits);
    t
}

fn run(t: &mut Tracker, f: &[u8], now: u64) -> Track {
    let parsed = net::parse(f).expect("test frame parses");
    t.process(f, &parsed, now)
}

fn syn(src: u32, sport: u16) -> Vec<u8> {
    frame(
        None,
        addr(src),
        addr(SERVER),
        &tcp(sport, 80, SYN, 1_000, 0, 64_240, None, 0),
    )
}

/// Offers a new flow's first packet to the tracker as a worker would after the policy allowed it.
fn offer(t: &mut Tracker, f: &[u8], now: u64) -> Result<FlowId, CommitError> {
    match run(t, f, now) {
        Track::New(n) => t.commit_new(&n, Admission::default(), now).map(|c| c.id),
        other => panic!("expected a new flow, got {other:?}"),
    }
}

/// SYN-ACK and ACK of the flow `src:sport -> SERVER:80` opened by [`syn`]: it becomes established.
fn complete(t: &mut Tracker, src: u32, sport: u16, now: u64) {
    let sa = frame(
        None,
        addr(SERVER),
        addr(src),
        &tcp(80, sport, SYN | ACK, 5_000, 1_001, 65_160, None, 0),
    );
    assert!(matches!(run(t, &sa, now), Track::Known { .. }));
    let ack = frame(
        None,
        addr(src),
        addr(SERVER),
        &tcp(sport, 80, ACK, 1_001, 5_001, 502, None, 0),
    );
    assert!(matches!(run(t, &ack, now), Track::Known { .. }));
}

/// A data segment of an established flow from `src:sport`, `k` segments of 100 bytes in.
fn data(src: u32, sport: u16, k: u32) -> Vec<u8> {
    frame(
        None,
        addr(src),
        addr(SERVER),
        &tcp(sport, 80, ACK, 1_001 + 100 * k, 5_001, 502, None, 100),
    )
}

#[test]
fn half_open_per_source_refuses_and_counts_completed_handshakes_out() {
    let limits = FloodLimits {
        half_open_per_source: 3,
        ..FloodLimits::default()
    };
    let mut t = tracker(1024, limits);
    for port in 1..=3 {
        offer(&mut t, &syn(1, port), 0).expect("under the limit");
    }
    assert_eq!(
        offer(&mut t, &syn(1, 4), 0),
        Err(CommitError::Limit(FloodLimit::HalfOpenPerSource))
    );
    // Another source has its own count.
    offer(&mut t, &syn(2, 1), 0).expect("another source");
    // A completed handshake is half-open no longer: room for one more.
    complete(&mut t, 1, 1, 10);
    offer(&mut t, &syn(1, 4), 20).expect("one handshake completed");
    assert_eq!(
        offer(&mut t, &syn(1, 5), 20),
        Err(CommitError::Limit(FloodLimit::HalfOpenPerSource))
    );
    // Half-open flows that time out stop counting (tcp_syn: 30 s).
    offer(&mut t, &syn(1, 5), 31_000).expect("the half-open flows expired");
    // Non-TCP flows are not half-open.
    let udp = frame(
        None,
        addr(1),
        addr(SERVER),
        &L4Spec::Udp {
            sport: 53,
            dport: 53,
            len: 0,
        },
    );
    offer(&mut t, &udp, 31_000).expect("udp is never half-open");
}

#[test]
fn an_ipv6_source_is_its_slash_64() {
    let limits = FloodLimits {
        half_open_per_source: 2,
        ..FloodLimits::default()
    };
    let mut t = tracker(1024, limits);
    let v6 = |net: u16, host: u16| -> IpAddr {
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2001, 0xdb8, 0, net, 0, 0, 0, host,
        ))
    };
    let syn6 = |src: IpAddr, sport: u16| {
        frame(
            None,
            src,
            v6(0xffff, 1),
            &tcp(sport, 80, SYN, 1_000, 0, 64_240, None, 0),
        )
    };
    // Two hosts of one /64 share its limit: changing the interface identifier does not step past it.
    offer(&mut t, &syn6(v6(1, 1), 1), 0).unwrap();
    offer(&mut t, &syn6(v6(1, 2), 1), 0).unwrap();
    assert_eq!(
        offer(&mut t, &syn6(v6(1, 3), 1), 0),
        Err(CommitError::Limit(FloodLimit::HalfOpenPerSource))
    );
    offer(&mut t, &syn6(v6(2, 1), 1), 0).expect("another /64");
}

#[test]
fn new_per_second_per_source_refuses_within_the_second() {
    let limits = FloodLimits {
        new_per_second_per_source: 2,
        ..FloodLimits::default()
    };
    let mut t = tracker(1024, limits);
    offer(&mut t, &syn(1, 1), 1_000).unwrap();
    offer(&mut t, &syn(1, 2), 1_500).unwrap();
    assert_eq!(
        offer(&mut t, &syn(1, 3), 1_999),
        Err(CommitError::Limit(FloodLimit::NewPerSecondPerSource))
    );
    offer(&mut t, &syn(2, 3), 1_999).expect("another source");
    offer(&mut t, &syn(1, 3), 2_000).expect("the next second");
    // Limits off: nothing is refused, and the table is not consulted.
    t.set_flood_limits(FloodLimits::default());
    for port in 10..20 {
        offer(&mut t, &syn(1, port), 2_001).unwrap();
    }
}

#[test]
fn a_full_source_table_evicts_the_least_recently_used_source_and_counts() {
    let limits = FloodLimits {
        new_per_second_per_source: 1,
        ..FloodLimits::default()
    };
    let mut t = tracker(1024, limits);
    assert_eq!(t.sources().capacity(), MIN_SOURCES);
    // Source 1 at its limit in second 0; then more sources than slots, one per second.
    offer(&mut t, &syn(1, 1), 0).unwrap();
    let sources = 4 * MIN_SOURCES as u32;
    for s in 0..sources {
        offer(&mut t, &syn(1_000 + s, 1), 1_000 * u64::from(s / 8))
            .expect("a new source is never refused");
    }
    assert!(t.sources().evictions() >= u64::from(sources) - MIN_SOURCES as u64);
    assert!(t.sources().evictions() <= u64::from(sources) + WAYS as u64);
}

/// Offers a new flow from `segment`, as a worker does while the per-segment limit is on.
fn offer_from(
    t: &mut Tracker,
    f: &[u8],
    segment: SegmentKey,
    now: u64,
) -> Result<FlowId, CommitError> {
    match run(t, f, now) {
        Track::New(n) => {
            let admission = Admission {
                segment: Some(segment),
                ..Admission::default()
            };
            t.commit_new(&n, admission, now).map(|c| c.id)
        }
        other => panic!("expected a new flow, got {other:?}"),
    }
}

#[test]
fn connections_per_segment_counts_flows_in_and_out() {
    let limits = FloodLimits {
        connections_per_segment: 3,
        ..FloodLimits::default()
    };
    let (plant, office) = (SegmentKey(7), SegmentKey(8));
    let mut t = tracker(1024, limits);
    let ids: Vec<FlowId> = (1..=3)
        .map(|port| offer_from(&mut t, &syn(1, port), plant, 0).unwrap())
        .collect();
    assert_eq!(
        offer_from(&mut t, &syn(2, 1), plant, 0),
        Err(CommitError::Limit(FloodLimit::ConnectionsPerSegment))
    );
    offer_from(&mut t, &syn(2, 1), office, 0).expect("another segment");
    offer(&mut t, &syn(3, 1), 0).expect("a source in no segment");
    assert_eq!(t.segments().count(plant), 3);
    // A removed flow (a kill, a revocation) is counted out.
    assert!(t.remove(ids[0]).is_some());
    assert_eq!(t.segments().count(plant), 2);
    offer_from(&mut t, &syn(2, 2), plant, 10).expect("room again");
    // So are expired ones (tcp_syn: 30 s), and killed ones.
    let mut closed = 0;
    t.expire(40_000, 1024, |_, _| closed += 1);
    assert_eq!((closed, t.segments().count(plant)), (5, 0));
    offer_from(&mut t, &syn(2, 3), plant, 40_000).unwrap();
    assert_eq!(t.remove_where(|_, _| true), 1);
    assert_eq!(t.segments().count(plant), 0);
    // Limit off: nothing refused, nothing counted.
    t.set_flood_limits(FloodLimits::default());
    for port in 10..20 {
        offer_from(&mut t, &syn(1, port), plant, 40_001).unwrap();
    }
    assert_eq!(t.segments().count(plant), 0);
}

#[test]
fn flows_evicted_for_new_ones_are_counted_out_of_their_segment() {
    let limits = FloodLimits {
        connections_per_segment: 1_000,
        ..FloodLimits::default()
    };
    let plant = SegmentKey(7);
    let mut t = tracker(16, limits);
    for port in 1..=40 {
        offer_from(&mut t, &syn(1, port), plant, 0).expect("half-open flows make room");
    }
    assert_eq!(t.table().len(), 16);
    assert_eq!(t.segments().count(plant), 16);
}

#[test]
fn each_limit_has_its_refusal_label() {
    assert_eq!(
        Refusal::Limit(FloodLimit::HalfOpenPerSource).as_str(),
        "half_open_per_source"
    );
    assert_eq!(
        Refusal::Limit(FloodLimit::NewPerSecondPerSource).as_str(),
        "new_per_second_per_source"
    );
    assert_eq!(
        Refusal::Limit(FloodLimit::ConnectionsPerSegment).as_str(),
        "connections_per_segment"
    );
}

/// Under a SYN flood from random sources that fills the table many times over, every established flow stays
/// and keeps passing: only half-open flows are evicted to make room, and a new flow that finds only established
/// ones is refused.
#[test]
fn a_syn_flood_never_evicts_an_established_flow() {
    const CAPACITY: usize = 256;
    const ESTABLISHED: u32 = 200;
    let mut t = tracker(CAPACITY, FloodLimits::default());
    let mut ids = Vec::new();
    for c in 0..ESTABLISHED {
        let sport = 10_000 + c as u16;
        ids.push(offer(&mut t, &syn(c, sport), 0).unwrap());
        complete(&mut t, c, sport, 0);
    }
    let mut refused = 0;
    let mut rng = 0x1234_5678_9abc_def0u64;
    for k in 0..20 * CAPACITY as u32 {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let src = (rng as u32) | 0x0100_0000;
        match offer(&mut t, &syn(src, rng as u16 | 1), 100) {
            Ok(_) => {}
            Err(CommitError::Full) => refused += 1,
            Err(e) => panic!("no limit is on: {e:?}"),
        }
        // The established stream interleaved with the flood: every packet passes.
        let c = k % ESTABLISHED;
        match run(&mut t, &data(c, 10_000 + c as u16, k / ESTABLISHED), 100) {
            Track::Known { id, dir, .. } => assert_eq!((id, dir), (ids[c as usize], Dir::Original)),
            other => panic!("established flow {c} lost: {other:?}"),
        }
    }
    assert_eq!(t.table().len(), CAPACITY);
    for (c, &id) in ids.iter().enumerate() {
        let e = t.table().get(id).expect("established flow kept");
        assert_eq!(e.tcp().state(), TcpConnState::Established, "flow {c}");
    }
    assert!(t.stats().evictions > 0);
    // A new flow whose eviction scan met only established flows is refused, never let in over one.
    assert!(refused > 0);
}
