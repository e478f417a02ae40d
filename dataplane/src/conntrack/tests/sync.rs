//! The HA sync's wire form of a flow: records read back as written, and a flow exported from one tracker and
//! imported into another (another seed, another clock) continues there under strict TCP tracking.

use std::net::{IpAddr, Ipv4Addr};

use net::TcpFlags;

use super::frames::{frame, tcp};
use super::table::udp_key;
use crate::conntrack::sync::{SyncNotes, NOTES};
use crate::conntrack::{
    Admission, Dir, FlowId, FlowInfo, FlowKey, FlowRecord, RecordError, Refusal, Strictness,
    TcpConnState, TcpRefusal, Timeouts, Track, Tracker, RECORD_LEN,
};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const PSH: TcpFlags = TcpFlags::PSH;

fn v4(a: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, a))
}

fn run(t: &mut Tracker, f: &[u8], now: u64) -> Track {
    let parsed = net::parse(f).expect("test frame parses");
    t.process(f, &parsed, now)
}

/// An empty tracker under strict TCP tracking.
fn strict_tracker(seed: u64) -> Tracker {
    Tracker::new(64, seed, &Timeouts::default(), Strictness::Strict)
}

/// The SYN of `10.0.0.1:40000 -> 10.0.0.2:80`.
fn client_syn() -> Vec<u8> {
    frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, SYN, 100, 0, 64_240, Some(7), 0),
    )
}

/// `10.0.0.1:40000 -> 10.0.0.2:80` through its handshake and one data segment each way, on a tracker of
/// its own; returns the tracker and the flow.
fn established(seed: u64) -> (Tracker, FlowId) {
    let (mut t, syn) = (strict_tracker(seed), client_syn());
    let Track::New(new) = run(&mut t, &syn, 1_000) else {
        panic!("a SYN starts a flow")
    };
    let admission = Admission {
        rule_id: 7,
        policy_version: 3,
        log: true,
        monitor: false,
        segment: None,
    };
    let id = t.commit_new(&new, admission, 1_000).unwrap().id;
    for (f, now) in [
        (
            frame(
                None,
                v4(2),
                v4(1),
                &tcp(80, 40_000, SYN | ACK, 9_000, 101, 65_160, Some(8), 0),
            ),
            1_001,
        ),
        (
            frame(
                None,
                v4(1),
                v4(2),
                &tcp(40_000, 80, ACK, 101, 9_001, 502, None, 0),
            ),
            1_002,
        ),
        (
            frame(
                None,
                v4(1),
                v4(2),
                &tcp(40_000, 80, ACK | PSH, 101, 9_001, 502, None, 300),
            ),
            1_003,
        ),
        (
            frame(
                None,
                v4(2),
                v4(1),
                &tcp(80, 40_000, ACK | PSH, 9_001, 401, 509, None, 1_000),
            ),
            1_004,
        ),
    ] {
        assert!(matches!(run(&mut t, &f, now), Track::Known { .. }));
    }
    (t, id)
}

/// The state of [`established`]'s flow, exported right after its last segment.
fn exported() -> crate::conntrack::FlowState {
    let (t, id) = established(1);
    t.table().export(id, 1_004).unwrap()
}

fn round_trip(r: &FlowRecord) -> FlowRecord {
    let mut b = [0u8; RECORD_LEN];
    r.emit(&mut b);
    FlowRecord::parse(&b).unwrap()
}

#[test]
fn records_read_back_as_written() {
    let (t, id) = established(1);
    let state = t.table().export(id, 5_000).unwrap();
    assert_eq!(state.tcp.state(), TcpConnState::Established);
    assert_eq!((state.idle_ms, state.age_s), (3_996, 4));
    assert_eq!(
        (state.rule_id, state.policy_version, state.logged),
        (7, 3, true)
    );
    let r = FlowRecord::State(state);
    assert_eq!(round_trip(&r), r);
    let closed = FlowRecord::Closed(state.key);
    assert_eq!(round_trip(&closed), closed);
    let closed = FlowRecord::Closed(udp_key(9));
    assert_eq!(round_trip(&closed), closed);
}

#[test]
fn malformed_records_are_precise_errors() {
    let (t, id) = established(1);
    let mut b = [0u8; RECORD_LEN];
    FlowRecord::State(t.table().export(id, 5_000).unwrap()).emit(&mut b);
    assert_eq!(FlowRecord::parse(&b[..100]), Err(RecordError::Length(100)));
    let with = |at: usize, v: u8| {
        let mut c = b;
        c[at] = v;
        FlowRecord::parse(&c)
    };
    assert_eq!(with(0, 9), Err(RecordError::Kind(9)));
    assert_eq!(with(40, 0x40), Err(RecordError::Flags(0x40)));
    assert_eq!(with(41, 9), Err(RecordError::TcpState(9)));
    assert_eq!(with(46, 1), Err(RecordError::Reserved));
    // A closed record carries nothing beyond the key.
    let mut c = [0u8; RECORD_LEN];
    FlowRecord::Closed(udp_key(1)).emit(&mut c);
    c[100] = 1;
    assert_eq!(FlowRecord::parse(&c), Err(RecordError::Reserved));
}

#[test]
fn an_imported_flow_continues_under_strict_tracking() {
    let (active, id) = established(1);
    // The standby: another seed, and a clock far from the active's.
    let mut standby = Tracker::new(64, 2, &Timeouts::default(), Strictness::Strict);
    let next = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, ACK | PSH, 401, 10_001, 502, None, 100),
    );
    // Without the state, a mid-stream segment is not a connection a strict tracker will start.
    assert!(matches!(
        run(&mut standby, &next, 900_000),
        Track::Drop(Refusal::Tcp(_))
    ));

    let FlowRecord::State(state) = round_trip(&FlowRecord::State(
        active.table().export(id, 5_000).unwrap(),
    )) else {
        panic!("a state record")
    };
    let imported = standby.table_mut().import(&state, 900_000).unwrap();
    assert_eq!(imported.displaced, None);
    let (a, s) = (
        FlowInfo::new(id, active.table().get(id).unwrap(), 5_000),
        FlowInfo::new(
            imported.id,
            standby.table().get(imported.id).unwrap(),
            900_000,
        ),
    );
    assert_eq!(
        (
            s.src,
            s.sport,
            s.dst,
            s.dport,
            s.state,
            s.rule_id,
            s.policy_version
        ),
        (
            a.src,
            a.sport,
            a.dst,
            a.dport,
            a.state,
            a.rule_id,
            a.policy_version
        )
    );
    let e = standby.table().get(imported.id).unwrap();
    assert_eq!(
        (
            e.packets(Dir::Original),
            e.bytes(Dir::Reply),
            e.idle_ms(900_000)
        ),
        (3, 44 + 1_040, 3_996)
    );
    let mut expected = *active.table().get(id).unwrap().tcp();
    expected.mark_synced();
    assert_eq!(e.tcp(), &expected);

    // The next segments continue on the standby; one far beyond anything a sender may have sent since the
    // sync (more than the largest window) is refused as it would be on the active.
    match run(&mut standby, &next, 900_001) {
        Track::Known { id: i, dir, .. } => assert_eq!((i, dir), (imported.id, Dir::Original)),
        other => panic!("{other:?}"),
    }
    let beyond = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, ACK, 10_001 + (3 << 29), 501, 509, None, 10),
    );
    assert_eq!(
        run(&mut standby, &beyond, 900_002),
        Track::Drop(Refusal::Tcp(TcpRefusal::OutOfWindow))
    );

    // A later update overwrites the flow in place; a closed record's key finds it.
    let again = standby.table_mut().import(&state, 900_003).unwrap();
    assert_eq!((again.id, again.displaced), (imported.id, None));
    assert_eq!(standby.table().len(), 1);
    assert_eq!(standby.table().find(&state.key), Some(imported.id));
}

#[test]
fn imported_counters_beyond_48_bits_are_held_at_the_maximum() {
    let (t, id) = established(1);
    let mut state = t.table().export(id, 5_000).unwrap();
    state.packets[0] = u64::MAX;
    state.bytes[1] = 1 << 50;
    let mut other = Tracker::new(8, 3, &Timeouts::default(), Strictness::Strict);
    let got = other.table_mut().import(&state, 10).unwrap().id;
    let e = other.table().get(got).unwrap();
    assert_eq!(
        (e.packets(Dir::Original), e.bytes(Dir::Reply)),
        ((1 << 48) - 1, (1 << 48) - 1)
    );
}

/// Each frame, at its time, is a packet of flow `id` in its direction.
fn passes(t: &mut Tracker, id: FlowId, frames: &[(&Vec<u8>, u64, Dir)]) {
    for &(f, now, dir) in frames {
        match run(t, f, now) {
            Track::Known { id: i, dir: d, .. } => assert_eq!((i, d), (id, dir)),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn an_imported_flow_catches_up_once_with_what_it_did_not_see() {
    let (mut active, id) = established(1);
    let state = active.table().export(id, 1_004).unwrap();
    // After the export the connection moves on through the active: 300 bytes from the client, 500 back.
    for (f, now) in [
        (
            frame(
                None,
                v4(1),
                v4(2),
                &tcp(40_000, 80, ACK | PSH, 401, 10_001, 502, None, 300),
            ),
            1_005,
        ),
        (
            frame(
                None,
                v4(2),
                v4(1),
                &tcp(80, 40_000, ACK | PSH, 10_001, 701, 509, None, 500),
            ),
            1_006,
        ),
    ] {
        assert!(matches!(run(&mut active, &f, now), Track::Known { .. }));
    }
    let mut standby = Tracker::new(64, 2, &Timeouts::default(), Strictness::Strict);
    let got = standby.table_mut().import(&state, 50_000).unwrap().id;
    // A segment far ahead of anything is refused even now.
    let wild = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, ACK, 701, 10_501 + (1 << 30), 502, None, 10),
    );
    assert_eq!(
        run(&mut standby, &wild, 50_001),
        Track::Drop(Refusal::Tcp(TcpRefusal::OutOfWindow))
    );
    // The standby takes over: the client's next segment acknowledges data it never saw, and the server's
    // follows data it never saw. Both continue, and teach it the windows.
    let client = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, ACK | PSH, 701, 10_501, 502, None, 50),
    );
    let server = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, ACK | PSH, 10_501, 751, 509, None, 60),
    );
    passes(
        &mut standby,
        got,
        &[
            (&client, 50_002, Dir::Original),
            (&server, 50_003, Dir::Reply),
        ],
    );
    // Once caught up, tracking is as strict as ever: the same far-ahead segment is still refused, and the
    // catch-up is not granted again.
    let wild = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, ACK, 751, 10_561 + 100_000, 502, None, 10),
    );
    assert_eq!(
        run(&mut standby, &wild, 50_004),
        Track::Drop(Refusal::Tcp(TcpRefusal::OutOfWindow))
    );
}

#[test]
fn an_imported_bulk_transfer_megabytes_ahead_continues_after_a_failover() {
    // A download went on through the active for a sync period after the export: megabytes the standby never
    // saw, more than any window.
    let mut standby = strict_tracker(2);
    let got = standby.table_mut().import(&exported(), 50_000).unwrap().id;
    const AHEAD: u32 = 8 << 20;
    // The server's retransmission of what the client has not acknowledged reaches the new active first (the
    // client, receiving nothing, sends nothing); then the client acknowledges it.
    let server = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, ACK | PSH, 10_001 + AHEAD, 401, 509, None, 1_000),
    );
    let client = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, ACK, 401, 10_001 + AHEAD + 1_000, 502, None, 0),
    );
    let next = frame(
        None,
        v4(2),
        v4(1),
        &tcp(
            80,
            40_000,
            ACK | PSH,
            10_001 + AHEAD + 1_000,
            401,
            509,
            None,
            1_000,
        ),
    );
    passes(
        &mut standby,
        got,
        &[
            (&server, 50_001, Dir::Reply),
            (&client, 50_002, Dir::Original),
            (&next, 50_003, Dir::Reply),
        ],
    );
    // Caught up: as far ahead again is refused.
    let wild = frame(
        None,
        v4(2),
        v4(1),
        &tcp(
            80,
            40_000,
            ACK | PSH,
            10_001 + 2 * AHEAD,
            401,
            509,
            None,
            1_000,
        ),
    );
    assert_eq!(
        run(&mut standby, &wild, 50_004),
        Track::Drop(Refusal::Tcp(TcpRefusal::OutOfWindow))
    );
}

#[test]
fn a_sweep_stopped_by_a_full_queue_resumes_at_the_flow_that_did_not_fit() {
    // 40 flows; the queue takes 7 per call (a sender draining less than a slice between two iterations).
    let state = exported();
    let mut t = strict_tracker(2);
    for i in 0..40 {
        let mut s = state;
        s.key = udp_key(i);
        t.table_mut().import(&s, 2_000).unwrap();
    }
    let mut taken = Vec::new();
    let mut cursor = 0;
    for call in 1.. {
        let (mut room, mut refused) = (7, false);
        cursor = t.table().export_slots(cursor, 16, 2_001, |s| {
            refused = room == 0;
            if !refused {
                room -= 1;
                taken.push(s.key);
            }
            !refused
        });
        if cursor == 0 && !refused {
            break;
        }
        assert!(call < 100, "the sweep does not end");
    }
    // Every flow exactly once: nothing taken is exported again, nothing skipped.
    assert_eq!(taken.len(), 40);
    let mut keys: Vec<FlowKey> = (0..40).map(udp_key).collect();
    keys.sort_by_key(|k| format!("{k:?}"));
    taken.sort_by_key(|k| format!("{k:?}"));
    assert_eq!(taken, keys);
}

/// What the tracker noted for the HA sync since the last call: removed keys, then created or changed flows
/// with their TCP state.
fn take(t: &mut Tracker, now: u64) -> (Vec<FlowKey>, Vec<(FlowKey, TcpConnState)>) {
    let (mut ended, mut changed) = (Vec::new(), Vec::new());
    let overflowed = t.take_notes(
        now,
        |k| ended.push(k),
        |s| changed.push((s.key, s.tcp.state())),
    );
    assert!(!overflowed);
    (ended, changed)
}

#[test]
fn the_packet_path_notes_new_changed_and_removed_flows_while_noting() {
    let (mut t, syn) = (strict_tracker(5), client_syn());
    t.set_noting(true);
    let Track::New(new) = run(&mut t, &syn, 1_000) else {
        panic!("a SYN starts a flow")
    };
    let key = *new.key();
    let id = t.commit_new(&new, Admission::default(), 1_000).unwrap().id;
    assert_eq!(
        take(&mut t, 1_000),
        (vec![], vec![(key, TcpConnState::SynSent)])
    );
    let steps = [
        (
            v4(2),
            v4(1),
            tcp(80, 40_000, SYN | ACK, 9_000, 101, 65_160, Some(8), 0),
            Some(TcpConnState::SynRecv),
        ),
        (
            v4(1),
            v4(2),
            tcp(40_000, 80, ACK, 101, 9_001, 502, None, 0),
            Some(TcpConnState::Established),
        ),
        // Data both ways: the connection state stays, nothing is noted (the sweep refreshes the windows).
        (
            v4(1),
            v4(2),
            tcp(40_000, 80, ACK | PSH, 101, 9_001, 502, None, 300),
            None,
        ),
        (
            v4(2),
            v4(1),
            tcp(80, 40_000, ACK | PSH, 9_001, 401, 509, None, 1_000),
            None,
        ),
    ];
    for (src, dst, seg, state) in steps {
        assert!(matches!(
            run(&mut t, &frame(None, src, dst, &seg), 1_001),
            Track::Known { .. }
        ));
        let noted = state.map(|s| vec![(key, s)]).unwrap_or_default();
        assert_eq!(take(&mut t, 1_001), (vec![], noted));
    }
    t.remove(id).unwrap();
    assert_eq!(take(&mut t, 1_002), (vec![key], vec![]));

    // Off (a standby, a single gateway): nothing is noted.
    t.set_noting(false);
    let Track::New(new) = run(&mut t, &syn, 2_000) else {
        panic!("a SYN starts a flow")
    };
    let id = t.commit_new(&new, Admission::default(), 2_000).unwrap().id;
    t.remove(id).unwrap();
    assert_eq!(take(&mut t, 2_000), (vec![], vec![]));
}

#[test]
fn notes_beyond_their_room_are_dropped_and_reported() {
    let mut notes = SyncNotes::new();
    notes.set_on(true);
    for i in 0..=NOTES as u32 {
        notes.changed(FlowId::from_index(i));
        // The same flow twice in a row is noted once.
        notes.changed(FlowId::from_index(i));
    }
    let mut n = 0;
    assert!(
        notes.take(|_| {}, |_| n += 1),
        "the note that did not fit is reported"
    );
    assert_eq!(n, NOTES);
    assert!(!notes.take(|_| {}, |_| n += 1), "taking forgets");
    assert_eq!(n, NOTES);
}
