//! TCP conformance across the running dataplane: crafted segment sequences sent as raw frames from both
//! namespaces, each step's verdict checked by what arrives on the far side, and the drop-reason counters
//! checked exactly. The demo policy (`config/policy.json`, strict TCP) allows side A (10.99.0.1) to reach
//! side B (10.99.0.2) on tcp/8080; every scenario uses its own client port.
//!
//! The frames are addressed to MACs no interface has, so neither kernel answers them (no RST from a closed
//! port muddles the sequence); the dataplane is a transparent bridge and forwards them all the same, and
//! tcpdump (promiscuous) sees them arrive. Needs root, python3 and tcpdump.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bulkhead_pktgen::frame::{FrameSpec, IpSpec, L4Spec};
use net::{MacAddr, TcpFlags};
use serde_json::{json, Value};
use testbed::{addr, Options, TestBed};

const SERVER_PORT: u16 = 8080;
const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0xaa, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0xbb, 0x01]);
/// Client and server initial sequence numbers.
const C: u32 = 1_000;
const S: u32 = 5_000_000;

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;
const PSH: TcpFlags = TcpFlags::PSH;
const URG: TcpFlags = TcpFlags::URG;

fn flags(f: &[TcpFlags]) -> TcpFlags {
    TcpFlags(f.iter().fold(0, |acc, x| acc | x.0))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// The client side (A), which the policy lets open connections.
    A,
    /// The server side (B).
    B,
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Pass,
    /// Dropped, counted under this connection-tracking reason (`counters.totals.conntrack.<reason>`).
    Dropped(&'static str),
}

struct Step {
    from: End,
    flags: TcpFlags,
    seq: u32,
    ack: u32,
    payload: usize,
    expect: Expect,
}

fn step(from: End, flags: TcpFlags, seq: u32, ack: u32, expect: Expect) -> Step {
    Step {
        from,
        flags,
        seq,
        ack,
        payload: 0,
        expect,
    }
}

fn data(from: End, seq: u32, ack: u32, len: usize, expect: Expect) -> Step {
    Step {
        payload: len,
        ..step(from, flags(&[ACK, PSH]), seq, ack, expect)
    }
}

use End::{A, B};
use Expect::{Dropped, Pass};

/// The three-way handshake, all passing.
fn handshake() -> Vec<Step> {
    vec![
        step(A, SYN, C, 0, Pass),
        step(B, flags(&[SYN, ACK]), S, C + 1, Pass),
        step(A, ACK, C + 1, S + 1, Pass),
    ]
}

fn frame(s: &Step, client_port: u16) -> Vec<u8> {
    let a: Ipv4Addr = addr::A4.parse().unwrap();
    let b: Ipv4Addr = addr::B4.parse().unwrap();
    let (src_mac, dst_mac, ip, sport, dport) = match s.from {
        A => (MAC_A, MAC_B, IpSpec::v4(a, b), client_port, SERVER_PORT),
        B => (MAC_B, MAC_A, IpSpec::v4(b, a), SERVER_PORT, client_port),
    };
    let spec = FrameSpec {
        src_mac,
        dst_mac,
        vlan: None,
        ip,
        l4: L4Spec::Tcp {
            sport,
            dport,
            seq: s.seq,
            ack: s.ack,
            flags: s.flags,
            window: 64240,
        },
    };
    spec.build(&vec![0x42; s.payload]).unwrap()
}

fn ctl(bed: &TestBed, request: Value) -> Value {
    let typed: protocol::Request = serde_json::from_value(request.clone()).unwrap();
    let reply = bed.control(&typed).unwrap();
    assert_eq!(reply["ok"], true, "{request} -> {reply}");
    reply["result"].clone()
}

fn totals(bed: &TestBed) -> Value {
    ctl(bed, json!({"op": "counters"}))["totals"].clone()
}

/// TCP flags of the captured frames, in order.
fn tcp_flags_of(frames: &[Vec<u8>]) -> Vec<TcpFlags> {
    frames
        .iter()
        .map(|f| match net::parse(f) {
            Ok(p) => match p.l4 {
                net::L4::Tcp { flags, .. } => flags,
                other => panic!("not TCP: {other:?}"),
            },
            Err(e) => panic!("captured an unparsable frame: {e:?}"),
        })
        .collect()
}

/// Sends `steps` in order, one at a time (each after the dataplane has received the previous one), and checks
/// the frames that crossed in each direction and the drop counters.
fn scenario(bed: &TestBed, name: &str, client_port: u16, steps: &[Step]) {
    let dir = bed.dir.clone();
    let at_b = bed
        .b
        .capture(
            &format!("ether src {MAC_A} and tcp port {client_port}"),
            &dir.join(format!("{name}-b.pcap")),
        )
        .unwrap();
    let at_a = bed
        .a
        .capture(
            &format!("ether src {MAC_B} and tcp port {client_port}"),
            &dir.join(format!("{name}-a.pcap")),
        )
        .unwrap();
    let before = totals(bed);
    for s in steps {
        let rx = totals(bed)["rx_packets"].as_u64().unwrap();
        let side = if s.from == A { &bed.a } else { &bed.b };
        side.send_frames(&[frame(s, client_port)]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while totals(bed)["rx_packets"].as_u64().unwrap() <= rx {
            assert!(
                Instant::now() < deadline,
                "{name}: the dataplane never received {s:?}",
                s = (s.from, s.flags)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let expected = |from: End| -> Vec<TcpFlags> {
        steps
            .iter()
            .filter(|s| s.from == from && matches!(s.expect, Pass))
            .map(|s| s.flags)
            .collect()
    };
    let (want_b, want_a) = (expected(A), expected(B));
    // Frames that should not arrive are waited for a little too, so a wrong pass would be seen.
    let got_b = tcp_flags_of(
        &at_b
            .frames(want_b.len() + 1, Duration::from_millis(1500))
            .unwrap(),
    );
    let got_a = tcp_flags_of(
        &at_a
            .frames(want_a.len() + 1, Duration::from_millis(500))
            .unwrap(),
    );
    assert_eq!(
        got_b, want_b,
        "{name}: segments from A that reached B (expected those marked Pass)"
    );
    assert_eq!(got_a, want_a, "{name}: segments from B that reached A");

    let after = totals(bed);
    let delta = |group: &str, key: &str| {
        after[group][key].as_u64().unwrap() - before[group][key].as_u64().unwrap()
    };
    let reasons = after["conntrack"].as_object().unwrap().keys().cloned();
    for reason in reasons {
        let want = steps
            .iter()
            .filter(|s| matches!(s.expect, Dropped(r) if r == reason))
            .count() as u64;
        assert_eq!(
            delta("conntrack", &reason),
            want,
            "{name}: conntrack.{reason}"
        );
    }
    let window = ["tcp_out_of_window", "tcp_rst_out_of_window"];
    let dropped = |out_of_window: bool| {
        steps
            .iter()
            .filter(|s| matches!(s.expect, Dropped(r) if window.contains(&r) == out_of_window))
            .count() as u64
    };
    assert_eq!(
        delta("drops", "tcp_invalid"),
        dropped(false),
        "{name}: drops.tcp_invalid"
    );
    assert_eq!(
        delta("drops", "tcp_out_of_window"),
        dropped(true),
        "{name}: drops.tcp_out_of_window"
    );
}

/// The state the dataplane reports for the scenario's connection.
fn state(bed: &TestBed, client_port: u16) -> String {
    let flows = ctl(
        bed,
        json!({"op": "flows", "filter": {"port": client_port, "proto": 6}}),
    );
    let flows = flows["flows"].as_array().unwrap();
    assert_eq!(
        flows.len(),
        1,
        "one connection on port {client_port}: {flows:?}"
    );
    flows[0]["state"].as_str().unwrap().to_string()
}

fn demo_bed() -> TestBed {
    let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
    opts.policy = Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
}

#[test]
fn tcp_sequences_get_exact_verdicts_and_counts() {
    let bed = demo_bed();

    let mut s = handshake();
    s.extend([
        data(A, C + 1, S + 1, 10, Pass),
        step(B, ACK, S + 1, C + 11, Pass),
        step(A, flags(&[FIN, ACK]), C + 11, S + 1, Pass),
        step(B, flags(&[FIN, ACK]), S + 1, C + 12, Pass),
        step(A, ACK, C + 12, S + 2, Pass),
    ]);
    scenario(&bed, "fin-teardown", 41001, &s);
    assert_eq!(state(&bed, 41001), "time_wait");

    // A new connection reusing the tuple of one in TIME_WAIT: judged by the policy as a new flow, it replaces
    // the finished one and completes its handshake.
    let mut s = handshake();
    s.push(data(A, C + 1, S + 1, 10, Pass));
    scenario(&bed, "time-wait-reopen", 41001, &s);
    assert_eq!(state(&bed, 41001), "established");

    // Both ends send a SYN; each answers the other's with a SYN-ACK.
    scenario(
        &bed,
        "simultaneous-open",
        41002,
        &[
            step(A, SYN, C, 0, Pass),
            step(B, SYN, S, 0, Pass),
            step(A, flags(&[SYN, ACK]), C, S + 1, Pass),
            step(B, flags(&[SYN, ACK]), S, C + 1, Pass),
            step(A, ACK, C + 1, S + 1, Pass),
            data(B, S + 1, C + 1, 20, Pass),
        ],
    );
    assert_eq!(state(&bed, 41002), "established");

    // A RST exactly at the sender's next sequence number ends the connection.
    let mut s = handshake();
    s.push(step(B, flags(&[RST, ACK]), S + 1, C + 1, Pass));
    scenario(&bed, "rst-teardown", 41003, &s);
    assert_eq!(state(&bed, 41003), "close");

    // A blind RST far outside the window is dropped silently and the connection lives on.
    let mut s = handshake();
    s.extend([
        step(
            B,
            RST,
            S + 1 + 10_000_000,
            0,
            Dropped("tcp_rst_out_of_window"),
        ),
        // In the window but not exactly at the next sequence number: strict mode drops it too.
        step(B, RST, S + 1 + 300, 0, Dropped("tcp_rst_out_of_window")),
        data(A, C + 1, S + 1, 10, Pass),
        // Data far beyond what the receiver advertised.
        data(
            A,
            C + 1 + 50_000_000,
            S + 1,
            10,
            Dropped("tcp_out_of_window"),
        ),
    ]);
    scenario(&bed, "out-of-window", 41004, &s);
    assert_eq!(state(&bed, 41004), "established");

    // Invalid flag combinations, as a first packet and inside a connection.
    let mut s = vec![
        step(A, flags(&[SYN, FIN]), C, 0, Dropped("tcp_invalid_flags")),
        step(A, TcpFlags(0), C, 0, Dropped("tcp_invalid_flags")),
        step(
            A,
            flags(&[FIN, PSH, URG]),
            C,
            0,
            Dropped("tcp_invalid_flags"),
        ),
        step(A, flags(&[SYN, RST]), C, 0, Dropped("tcp_invalid_flags")),
    ];
    s.extend(handshake());
    s.extend([
        step(
            A,
            flags(&[SYN, FIN]),
            C + 1,
            S + 1,
            Dropped("tcp_invalid_flags"),
        ),
        step(B, FIN, S + 1, 0, Dropped("tcp_invalid_flags")),
        data(A, C + 1, S + 1, 5, Pass),
    ]);
    scenario(&bed, "invalid-flags", 41005, &s);
    assert_eq!(state(&bed, 41005), "established");

    // Nothing may start from the far side with a SYN-ACK, nor mid-stream in strict mode.
    scenario(
        &bed,
        "unsolicited",
        41006,
        &[
            step(
                B,
                flags(&[SYN, ACK]),
                S,
                C + 1,
                Dropped("tcp_unexpected_syn_ack"),
            ),
            data(A, C + 1, S + 1, 10, Dropped("tcp_not_syn")),
        ],
    );
    let none = ctl(&bed, json!({"op": "flows", "filter": {"port": 41006}}));
    assert!(none["flows"].as_array().unwrap().is_empty(), "{none}");
}
