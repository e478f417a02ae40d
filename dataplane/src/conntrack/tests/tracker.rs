//! The per-packet entry point, on real frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use net::TcpFlags;

use super::frames::{frame, ip_packet, quote_v4, tcp, L4Spec};
use crate::conntrack::{
    Admission, CommitError, Dir, FlowId, FlowInfo, NewFlow, Refusal, Strictness, TcpConnState,
    TcpRefusal, Timeouts, Track, Tracker, Untracked,
};

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const PSH: TcpFlags = TcpFlags::PSH;

fn v4(a: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, a))
}

fn v6(a: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, a))
}

fn tracker() -> Tracker {
    Tracker::new(1024, 0xfeed, &Timeouts::default(), Strictness::Strict)
}

fn run(t: &mut Tracker, f: &[u8], now: u64) -> Track {
    let parsed = net::parse(f).expect("test frame parses");
    t.process(f, &parsed, now)
}

fn admit() -> Admission {
    Admission {
        rule_id: 7,
        policy_version: 3,
        log: true,
        monitor: false,
        segment: None,
    }
}

fn expect_new(track: Track) -> NewFlow {
    match track {
        Track::New(n) => n,
        other => panic!("expected New, got {other:?}"),
    }
}

fn commit(t: &mut Tracker, track: Track, now: u64) -> FlowId {
    let n = expect_new(track);
    t.commit_new(&n, admit(), now).expect("room").id
}

/// Runs a frame that opens a flow and commits it.
fn open(t: &mut Tracker, f: &[u8], now: u64) -> FlowId {
    let track = run(t, f, now);
    commit(t, track, now)
}

fn known(track: Track) -> (FlowId, Dir) {
    match track {
        Track::Known { id, dir, .. } => (id, dir),
        other => panic!("expected Known, got {other:?}"),
    }
}

/// Runs the three-way handshake of `c:40000 -> s:80` through the tracker; returns the flow.
fn tcp_handshake(t: &mut Tracker, vlan: Option<u16>, c: IpAddr, s: IpAddr) -> FlowId {
    let syn = frame(
        vlan,
        c,
        s,
        &tcp(40_000, 80, SYN, 100, 0, 64_240, Some(7), 0),
    );
    let id = open(t, &syn, 1_000);
    let sa = frame(
        vlan,
        s,
        c,
        &tcp(80, 40_000, SYN | ACK, 9_000, 101, 65_160, Some(8), 0),
    );
    assert_eq!(known(run(t, &sa, 1_001)), (id, Dir::Reply));
    let ack = frame(vlan, c, s, &tcp(40_000, 80, ACK, 101, 9_001, 502, None, 0));
    assert_eq!(known(run(t, &ack, 1_002)), (id, Dir::Original));
    id
}

#[test]
fn tcp_flow_through_the_tracker() {
    let mut t = tracker();
    let id = tcp_handshake(&mut t, None, v4(1), v4(2));
    let e = t.table().get(id).unwrap();
    assert_eq!(e.tcp().state(), TcpConnState::Established);
    // Window scale read from the SYN and SYN-ACK options.
    assert_eq!(
        (e.tcp().wscale(Dir::Original), e.tcp().wscale(Dir::Reply)),
        (7, 8)
    );
    assert_eq!((e.rule_id(), e.policy_version(), e.logged()), (7, 3, true));
    assert_eq!((e.packets(Dir::Original), e.packets(Dir::Reply)), (2, 1));
    // IP bytes: 20 + 20 + 4 (wscale option) for the SYN, 40 for the ACK.
    assert_eq!(e.bytes(Dir::Original), 44 + 40);
    let data = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, ACK | PSH, 9_001, 101, 509, None, 1_000),
    );
    match run(&mut t, &data, 2_000) {
        Track::Known {
            id: i,
            dir,
            policy_version,
        } => assert_eq!((i, dir, policy_version), (id, Dir::Reply, 3)),
        other => panic!("{other:?}"),
    }
    // Out of window: dropped, counted by the caller.
    let bad = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, ACK, 9_001 + (1 << 30), 101, 509, None, 10),
    );
    assert_eq!(
        run(&mut t, &bad, 2_001),
        Track::Drop(Refusal::Tcp(TcpRefusal::OutOfWindow))
    );
    let info = FlowInfo::new(id, t.table().get(id).unwrap(), 3_000);
    assert_eq!(
        (info.src, info.sport, info.dst, info.dport),
        (v4(1), 40_000, v4(2), 80)
    );
    assert_eq!(info.state, "established");
    assert_eq!(info.packets_reply, 2);
}

#[test]
fn strict_and_loose_first_packets() {
    let mut t = tracker();
    let data = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, ACK, 100, 200, 502, None, 10),
    );
    assert_eq!(
        run(&mut t, &data, 0),
        Track::Drop(Refusal::Tcp(TcpRefusal::NotSyn))
    );
    let sa = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, SYN | ACK, 9_000, 101, 1000, None, 0),
    );
    assert_eq!(
        run(&mut t, &sa, 0),
        Track::Drop(Refusal::Tcp(TcpRefusal::UnexpectedSynAck))
    );
    let xmas = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 80, FIN | PSH | TcpFlags::URG, 1, 0, 1, None, 0),
    );
    assert_eq!(
        run(&mut t, &xmas, 0),
        Track::Drop(Refusal::Tcp(TcpRefusal::InvalidFlags))
    );
    t.set_strictness(Strictness::Loose);
    let id = open(&mut t, &data, 0);
    let back = frame(
        None,
        v4(2),
        v4(1),
        &tcp(80, 40_000, ACK, 200, 110, 1000, None, 50),
    );
    assert_eq!(known(run(&mut t, &back, 1)), (id, Dir::Reply));
    assert!(t.table().get(id).unwrap().tcp().picked_up());
}

#[test]
fn denied_flows_leave_no_state() {
    let mut t = tracker();
    let syn = frame(
        None,
        v4(1),
        v4(2),
        &tcp(40_000, 22, SYN, 100, 0, 64_240, None, 0),
    );
    for now in 0..5 {
        expect_new(run(&mut t, &syn, now));
    }
    assert!(t.table().is_empty());
}

#[test]
fn time_wait_reopen_replaces_the_old_flow() {
    let mut t = tracker();
    let (c, s) = (v4(1), v4(2));
    let id = tcp_handshake(&mut t, None, c, s);
    let steps = [
        (c, s, tcp(40_000, 80, FIN | ACK, 101, 9_001, 502, None, 0)),
        (s, c, tcp(80, 40_000, FIN | ACK, 9_001, 102, 509, None, 0)),
        (c, s, tcp(40_000, 80, ACK, 102, 9_002, 502, None, 0)),
    ];
    for (src, dst, l4) in &steps {
        known(run(&mut t, &frame(None, *src, *dst, l4), 2_000));
    }
    assert_eq!(
        t.table().get(id).unwrap().tcp().state(),
        TcpConnState::TimeWait
    );
    // The server reuses the tuple for a connection the other way round: a new flow, checked by policy.
    let syn = frame(None, s, c, &tcp(80, 40_000, SYN, 777, 0, 1000, None, 0));
    let n = expect_new(run(&mut t, &syn, 3_000));
    assert!(n.reuses_entry());
    let committed = t.commit_new(&n, admit(), 3_000).unwrap();
    assert_eq!(committed.id, id);
    let old = committed.displaced.expect("the finished flow is reported");
    assert_eq!(old.tcp().state(), TcpConnState::TimeWait);
    let e = t.table().get(id).unwrap();
    assert_eq!(e.tcp().state(), TcpConnState::SynSent);
    assert_eq!(e.endpoint(Dir::Original), (s, 80));
    assert_eq!(t.table().len(), 1);
}

#[test]
fn udp_pseudo_connection_becomes_stream() {
    let mut t = tracker();
    let q = frame(
        None,
        v4(1),
        v4(2),
        &L4Spec::Udp {
            sport: 5353,
            dport: 53,
            len: 20,
        },
    );
    let id = open(&mut t, &q, 0);
    let e = t.table().get(id).unwrap();
    assert!(!e.seen_reply() && !e.is_assured());
    assert_eq!(t.table().timeout_of(e), 60_000);
    assert_eq!(known(run(&mut t, &q, 1)), (id, Dir::Original));
    let r = frame(
        None,
        v4(2),
        v4(1),
        &L4Spec::Udp {
            sport: 53,
            dport: 5353,
            len: 100,
        },
    );
    assert_eq!(known(run(&mut t, &r, 2)), (id, Dir::Reply));
    let e = t.table().get(id).unwrap();
    assert!(e.seen_reply() && e.is_assured());
    assert_eq!(e.state_name(), "stream");
    assert_eq!(t.table().timeout_of(e), 180_000);
    assert_eq!(e.bytes(Dir::Reply), 128);
}

#[test]
fn expired_flow_is_new_again_and_reported_on_commit() {
    let mut t = tracker();
    let q = frame(
        None,
        v4(1),
        v4(2),
        &L4Spec::Udp {
            sport: 1,
            dport: 2,
            len: 0,
        },
    );
    let id = open(&mut t, &q, 0);
    let n = expect_new(run(&mut t, &q, 60_001));
    assert!(n.reuses_entry());
    let c = t.commit_new(&n, admit(), 60_001).unwrap();
    assert_eq!(c.id, id);
    assert!(c.displaced.is_some());
}

#[test]
fn icmp_echo_v4_and_v6() {
    for (a, b) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        let mut t = tracker();
        let req = frame(
            None,
            a,
            b,
            &L4Spec::Echo {
                request: true,
                ident: 0x1234,
            },
        );
        let rep = frame(
            None,
            b,
            a,
            &L4Spec::Echo {
                request: false,
                ident: 0x1234,
            },
        );
        assert_eq!(
            run(&mut t, &rep, 0),
            Track::Drop(Refusal::IcmpUnsolicitedReply)
        );
        let n = expect_new(run(&mut t, &req, 0));
        // Denied (not committed): the reply is still unsolicited.
        assert_eq!(
            run(&mut t, &rep, 0),
            Track::Drop(Refusal::IcmpUnsolicitedReply)
        );
        let id = t.commit_new(&n, admit(), 0).unwrap().id;
        assert_eq!(known(run(&mut t, &rep, 1)), (id, Dir::Reply));
        assert_eq!(known(run(&mut t, &req, 2)), (id, Dir::Original));
        // Another identifier is another flow.
        let other = frame(
            None,
            b,
            a,
            &L4Spec::Echo {
                request: false,
                ident: 0x4321,
            },
        );
        assert_eq!(
            run(&mut t, &other, 2),
            Track::Drop(Refusal::IcmpUnsolicitedReply)
        );
        // The responder may not ride the flow with requests of its own, nor the originator send replies.
        let rev_req = frame(
            None,
            b,
            a,
            &L4Spec::Echo {
                request: true,
                ident: 0x1234,
            },
        );
        assert_eq!(
            run(&mut t, &rev_req, 3),
            Track::Drop(Refusal::IcmpEchoDirection)
        );
        let rev_rep = frame(
            None,
            a,
            b,
            &L4Spec::Echo {
                request: false,
                ident: 0x1234,
            },
        );
        assert_eq!(
            run(&mut t, &rev_rep, 3),
            Track::Drop(Refusal::IcmpEchoDirection)
        );
        // After the ICMP timeout the reply is unsolicited again.
        assert_eq!(
            run(&mut t, &rep, 31_000),
            Track::Drop(Refusal::IcmpUnsolicitedReply)
        );
    }
}

#[test]
fn icmp_errors_related_v4() {
    let mut t = tracker();
    let (c, s, router) = (v4(1), v4(2), v4(254));
    let udp = L4Spec::Udp {
        sport: 40_000,
        dport: 53,
        len: 30,
    };
    let id = open(&mut t, &frame(None, c, s, &udp), 0);
    let quoted = quote_v4(&ip_packet(c, s, &udp));
    // Port unreachable from the server, and time exceeded from a router, back to the client.
    for (from, ty, code) in [(s, 3, 3), (router, 11, 0), (router, 12, 0), (s, 3, 4)] {
        let err = frame(
            None,
            from,
            c,
            &L4Spec::Error {
                ty,
                code,
                quoted: quoted.clone(),
            },
        );
        assert_eq!(
            run(&mut t, &err, 1),
            Track::Related {
                id,
                dir: Dir::Reply
            },
            "type {ty}"
        );
    }
    // An error about a packet the server sent travels the original direction.
    let udp_back = L4Spec::Udp {
        sport: 53,
        dport: 40_000,
        len: 30,
    };
    let q_back = quote_v4(&ip_packet(s, c, &udp_back));
    let err = frame(
        None,
        router,
        s,
        &L4Spec::Error {
            ty: 11,
            code: 0,
            quoted: q_back,
        },
    );
    assert_eq!(
        run(&mut t, &err, 1),
        Track::Related {
            id,
            dir: Dir::Original
        }
    );
    // Addressed to the wrong host (not the quoted source): unrelated.
    let err = frame(
        None,
        router,
        v4(3),
        &L4Spec::Error {
            ty: 3,
            code: 1,
            quoted: quoted.clone(),
        },
    );
    assert_eq!(
        run(&mut t, &err, 1),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    // Quoting an untracked flow: unrelated.
    let other = quote_v4(&ip_packet(
        c,
        s,
        &L4Spec::Udp {
            sport: 40_001,
            dport: 53,
            len: 0,
        },
    ));
    let err = frame(
        None,
        s,
        c,
        &L4Spec::Error {
            ty: 3,
            code: 3,
            quoted: other,
        },
    );
    assert_eq!(
        run(&mut t, &err, 1),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    // On another VLAN: unrelated.
    let err = frame(
        Some(5),
        s,
        c,
        &L4Spec::Error {
            ty: 3,
            code: 3,
            quoted: quoted.clone(),
        },
    );
    assert_eq!(
        run(&mut t, &err, 1),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    // A truncated quote: unrelated.
    let err = frame(
        None,
        s,
        c,
        &L4Spec::Error {
            ty: 3,
            code: 3,
            quoted: quoted[..22].to_vec(),
        },
    );
    assert_eq!(
        run(&mut t, &err, 1),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    // Redirects are not relatable errors: left to stateless policy.
    let err = frame(
        None,
        router,
        c,
        &L4Spec::Error {
            ty: 5,
            code: 1,
            quoted: quoted.clone(),
        },
    );
    assert_eq!(run(&mut t, &err, 1), Track::Untracked(Untracked::IcmpInfo));
    // Once the flow has expired: unrelated.
    let err = frame(
        None,
        s,
        c,
        &L4Spec::Error {
            ty: 3,
            code: 3,
            quoted,
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_000_000),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );

    // Errors about TCP and about echo flows.
    let tcp_id = tcp_handshake(&mut t, None, c, s);
    let q = quote_v4(&ip_packet(
        c,
        s,
        &tcp(40_000, 80, ACK, 101, 9_001, 502, None, 100),
    ));
    let err = frame(
        None,
        router,
        c,
        &L4Spec::Error {
            ty: 3,
            code: 4,
            quoted: q,
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_500),
        Track::Related {
            id: tcp_id,
            dir: Dir::Reply
        }
    );
    let echo = L4Spec::Echo {
        request: true,
        ident: 9,
    };
    let echo_id = open(&mut t, &frame(None, c, s, &echo), 1_500);
    let err = frame(
        None,
        router,
        c,
        &L4Spec::Error {
            ty: 11,
            code: 0,
            quoted: quote_v4(&ip_packet(c, s, &echo)),
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_600),
        Track::Related {
            id: echo_id,
            dir: Dir::Reply
        }
    );
}

#[test]
fn icmp_errors_related_v6() {
    let mut t = tracker();
    let (c, s, router) = (v6(1), v6(2), v6(0xfe));
    let id = tcp_handshake(&mut t, None, c, s);
    let inner = ip_packet(
        c,
        s,
        &tcp(40_000, 80, ACK | PSH, 101, 9_001, 502, None, 1_400),
    );
    // Packet too big quotes as much as fits.
    for ty in [1, 2, 3, 4] {
        let err = frame(
            None,
            router,
            c,
            &L4Spec::Error {
                ty,
                code: 0,
                quoted: inner[..1_000].to_vec(),
            },
        );
        assert_eq!(
            run(&mut t, &err, 1_100),
            Track::Related {
                id,
                dir: Dir::Reply
            },
            "type {ty}"
        );
    }
    // Unknown flow, wrong destination, or a quote cut inside the transport header: unrelated.
    let other = ip_packet(c, s, &tcp(40_001, 80, ACK, 101, 9_001, 502, None, 0));
    let err = frame(
        None,
        router,
        c,
        &L4Spec::Error {
            ty: 2,
            code: 0,
            quoted: other,
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_100),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    let err = frame(
        None,
        router,
        s,
        &L4Spec::Error {
            ty: 2,
            code: 0,
            quoted: inner[..200].to_vec(),
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_100),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    let err = frame(
        None,
        router,
        c,
        &L4Spec::Error {
            ty: 1,
            code: 0,
            quoted: inner[..42].to_vec(),
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_100),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    // An IPv4 quote inside ICMPv6: unrelated.
    let q4 = quote_v4(&ip_packet(
        v4(1),
        v4(2),
        &L4Spec::Udp {
            sport: 1,
            dport: 2,
            len: 0,
        },
    ));
    let err = frame(
        None,
        router,
        c,
        &L4Spec::Error {
            ty: 1,
            code: 0,
            quoted: q4,
        },
    );
    assert_eq!(
        run(&mut t, &err, 1_100),
        Track::Drop(Refusal::IcmpErrorUnrelated)
    );
    // Neighbour discovery is not tracked.
    let ns = frame(None, c, s, &L4Spec::IcmpOther { ty: 135 });
    assert_eq!(
        run(&mut t, &ns, 1_100),
        Track::Untracked(Untracked::IcmpInfo)
    );
}

#[test]
fn both_directions_and_vlans() {
    let mut t = tracker();
    for (a, b) in [(v4(1), v4(2)), (v6(1), v6(2))] {
        let untagged = tcp_handshake(&mut t, None, a, b);
        let tagged = tcp_handshake(&mut t, Some(10), a, b);
        let other_vlan = tcp_handshake(&mut t, Some(11), a, b);
        assert_ne!(untagged, tagged);
        assert_ne!(tagged, other_vlan);
        let back = frame(
            Some(10),
            b,
            a,
            &tcp(80, 40_000, ACK, 9_001, 101, 509, None, 0),
        );
        assert_eq!(known(run(&mut t, &back, 1_100)), (tagged, Dir::Reply));
    }
    assert_eq!(t.table().len(), 6);
}

#[test]
fn untracked_and_other_protocols() {
    let mut t = tracker();
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.resize(60, 0);
    assert_eq!(run(&mut t, &arp, 0), Track::Untracked(Untracked::NotIp));
    // A non-first fragment.
    let mut frag = frame(
        None,
        v4(1),
        v4(2),
        &L4Spec::Udp {
            sport: 1,
            dport: 2,
            len: 40,
        },
    );
    frag[14 + 6] = 0x00;
    frag[14 + 7] = 0x05; // offset 40 bytes
    assert_eq!(run(&mut t, &frag, 0), Track::Untracked(Untracked::Fragment));
    // GRE: a port-less pseudo-connection.
    let gre = frame(None, v4(1), v4(2), &L4Spec::Raw { proto: 47 });
    let id = open(&mut t, &gre, 0);
    let back = frame(None, v4(2), v4(1), &L4Spec::Raw { proto: 47 });
    assert_eq!(known(run(&mut t, &back, 1)), (id, Dir::Reply));
    assert_eq!(t.table().get(id).unwrap().state_name(), "replied");
    assert_eq!(t.table().timeout_of(t.table().get(id).unwrap()), 60_000);
}

#[test]
fn commit_on_a_full_table() {
    let mut t = Tracker::new(2, 1, &Timeouts::default(), Strictness::Strict);
    for port in [1, 2] {
        let q = frame(
            None,
            v4(1),
            v4(2),
            &L4Spec::Udp {
                sport: port,
                dport: 53,
                len: 0,
            },
        );
        open(&mut t, &q, 0);
        let r = frame(
            None,
            v4(2),
            v4(1),
            &L4Spec::Udp {
                sport: 53,
                dport: port,
                len: 0,
            },
        );
        known(run(&mut t, &r, 0));
    }
    let q = frame(
        None,
        v4(1),
        v4(2),
        &L4Spec::Udp {
            sport: 3,
            dport: 53,
            len: 0,
        },
    );
    let n = expect_new(run(&mut t, &q, 1));
    assert_eq!(t.commit_new(&n, admit(), 1), Err(CommitError::Full));
    let mut closed = 0;
    assert_eq!(t.expire(400_000, 2, |_, _| closed += 1), 2);
    assert_eq!(closed, 2);
    assert!(t.commit_new(&n, admit(), 400_000).is_ok());
}

#[test]
fn drop_reason_labels_are_dense_and_unique() {
    let mut seen = std::collections::HashSet::new();
    for (i, r) in Refusal::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(seen.insert(r.as_str()));
    }
}
