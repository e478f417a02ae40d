//! TCP conformance: crafted segment sequences with exact verdicts and drop reasons.

use net::TcpFlags;

use crate::conntrack::tcp::valid_flags;
use crate::conntrack::{
    timeout_ms, track, Dir, Strictness, TcpConnState, TcpRefusal, TcpSegment, TcpState, TcpVerdict,
    Timeouts,
};

const O: Dir = Dir::Original;
const R: Dir = Dir::Reply;
const STRICT: Strictness = Strictness::Strict;
const LOOSE: Strictness = Strictness::Loose;

const SYN: TcpFlags = TcpFlags::SYN;
const ACK: TcpFlags = TcpFlags::ACK;
const FIN: TcpFlags = TcpFlags::FIN;
const RST: TcpFlags = TcpFlags::RST;
const PSH: TcpFlags = TcpFlags::PSH;
const URG: TcpFlags = TcpFlags::URG;

fn f(flags: &[TcpFlags]) -> TcpFlags {
    flags.iter().fold(TcpFlags::empty(), |a, &b| a | b)
}

fn seg(flags: TcpFlags, seq: u32, ack: u32, window: u16, len: u16) -> TcpSegment {
    TcpSegment {
        flags,
        seq,
        ack,
        window,
        payload_len: len,
        wscale: None,
    }
}

fn syn(seq: u32, ws: Option<u8>) -> TcpSegment {
    TcpSegment {
        wscale: ws,
        ..seg(SYN, seq, 0, 64240, 0)
    }
}

fn syn_ack(seq: u32, ack: u32, ws: Option<u8>) -> TcpSegment {
    TcpSegment {
        wscale: ws,
        ..seg(SYN | ACK, seq, ack, 65160, 0)
    }
}

const ACCEPT: TcpVerdict = TcpVerdict::Accept;

fn drop(r: TcpRefusal) -> TcpVerdict {
    TcpVerdict::Drop(r)
}

/// Client ISN and server ISN of the usual test connection.
const C: u32 = 1_000;
const S: u32 = 50_000;

/// A connection after the three-way handshake, client data starting at `c + 1`, server data at `s + 1`.
fn established_with(c: u32, s: u32, strictness: Strictness) -> TcpState {
    let mut st = TcpState::from_first(&syn(c, None), strictness).unwrap();
    assert_eq!(st.state(), TcpConnState::SynSent);
    assert_eq!(
        st.track(R, &syn_ack(s, c.wrapping_add(1), None), strictness),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::SynRecv);
    assert_eq!(
        st.track(
            O,
            &seg(ACK, c.wrapping_add(1), s.wrapping_add(1), 502, 0),
            strictness
        ),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::Established);
    assert!(st.is_established());
    st
}

fn established(strictness: Strictness) -> TcpState {
    established_with(C, S, strictness)
}

#[test]
fn three_way_handshake() {
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    assert_eq!(st.state(), TcpConnState::SynSent);
    assert!(!st.is_established());
    assert_eq!(st.track(R, &syn_ack(S, C + 1, None), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    assert!(!st.is_assured());
    // The free function is the same machine.
    assert_eq!(
        track(&mut st, O, &seg(ACK, C + 1, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::Established);
    assert!(st.is_assured());
}

#[test]
fn handshake_ack_that_acknowledges_nothing_does_not_establish() {
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    assert_eq!(st.track(R, &syn_ack(S, C + 1, None), STRICT), ACCEPT);
    // In window (acks the server's ISN itself) but not the SYN-ACK: accepted, still SYN_RECV.
    assert_eq!(st.track(O, &seg(ACK, C + 1, S, 502, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    // ACK from the server side in SYN_RECV does not establish either.
    assert_eq!(st.track(R, &seg(ACK, S + 1, C + 1, 509, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    assert_eq!(st.track(O, &seg(ACK, C + 1, S + 1, 502, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::Established);
}

#[test]
fn data_both_ways() {
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &seg(ACK | PSH, C + 1, S + 1, 502, 100), STRICT),
        ACCEPT
    );
    assert_eq!(st.seq_end(O), C + 101);
    assert_eq!(
        st.track(R, &seg(ACK, S + 1, C + 101, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(R, &seg(ACK | PSH, S + 1, C + 101, 509, 1400), STRICT),
        ACCEPT
    );
    assert_eq!(st.seq_end(R), S + 1401);
    assert_eq!(
        st.track(O, &seg(ACK, C + 101, S + 1401, 502, 0), STRICT),
        ACCEPT
    );
    // A retransmission of old data is still acceptable.
    assert_eq!(
        st.track(O, &seg(ACK | PSH, C + 1, S + 1401, 502, 100), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::Established);
}

#[test]
fn fin_teardown_client_first() {
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::FinWait);
    assert!(st.is_assured());
    // A retransmitted FIN changes nothing.
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::FinWait);
    assert_eq!(st.track(R, &seg(ACK, S + 1, C + 2, 509, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::CloseWait);
    // The server may still send data.
    assert_eq!(
        st.track(R, &seg(ACK | PSH, S + 1, C + 2, 509, 10), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::CloseWait);
    assert_eq!(
        st.track(R, &seg(FIN | ACK, S + 11, C + 2, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::LastAck);
    assert_eq!(
        st.track(O, &seg(ACK, C + 2, S + 12, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::TimeWait);
    assert!(!st.is_assured());
    // A late retransmitted FIN and its ACK stay in TIME_WAIT.
    assert_eq!(
        st.track(R, &seg(FIN | ACK, S + 11, C + 2, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(O, &seg(ACK, C + 2, S + 12, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::TimeWait);
}

#[test]
fn fin_teardown_server_first() {
    let mut st = established(STRICT);
    assert_eq!(
        st.track(R, &seg(FIN | ACK, S + 1, C + 1, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::FinWait);
    assert_eq!(st.track(O, &seg(ACK, C + 1, S + 2, 502, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::CloseWait);
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, S + 2, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::LastAck);
    assert_eq!(st.track(R, &seg(ACK, S + 2, C + 2, 509, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::TimeWait);
}

#[test]
fn simultaneous_close() {
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(R, &seg(FIN | ACK, S + 1, C + 1, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::LastAck);
    assert_eq!(st.track(O, &seg(ACK, C + 2, S + 2, 502, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::LastAck);
    assert_eq!(st.track(R, &seg(ACK, S + 2, C + 2, 509, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::TimeWait);
}

#[test]
fn data_after_fin_is_dropped_in_strict_mode() {
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(O, &seg(ACK | PSH, C + 2, S + 1, 502, 10), STRICT),
        drop(TcpRefusal::OutOfWindow)
    );
    assert_eq!(st.state(), TcpConnState::FinWait);
}

#[test]
fn rst_teardown_exact_sequence() {
    // At the sender's next sequence number.
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &seg(ACK | PSH, C + 1, S + 1, 502, 100), STRICT),
        ACCEPT
    );
    assert_eq!(st.track(O, &seg(RST, C + 101, 0, 0, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::Close);
    assert!(!st.is_assured());

    // At what the receiver last acknowledged (the sender had more in flight, lost downstream).
    let mut st = established(STRICT);
    assert_eq!(
        st.track(R, &seg(ACK | PSH, S + 1, C + 1, 509, 1000), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(O, &seg(ACK, C + 1, S + 501, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(R, &seg(RST | ACK, S + 501, C + 1, 0, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::Close);
}

#[test]
fn rst_out_of_window_is_dropped_and_flow_kept() {
    for strictness in [STRICT, LOOSE] {
        let mut st = established(strictness);
        let far = seg(RST, C + 1 + 10_000_000, 0, 0, 0);
        assert_eq!(
            st.track(O, &far, strictness),
            drop(TcpRefusal::RstOutOfWindow)
        );
        assert_eq!(st.state(), TcpConnState::Established);
        let old = seg(RST, C.wrapping_sub(10_000_000), 0, 0, 0);
        assert_eq!(
            st.track(O, &old, strictness),
            drop(TcpRefusal::RstOutOfWindow)
        );
        assert_eq!(st.state(), TcpConnState::Established);
    }
}

#[test]
fn in_window_but_inexact_rst_strict_drops_loose_accepts() {
    let blind = seg(RST, C + 1 + 300, 0, 0, 0);
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &blind, STRICT),
        drop(TcpRefusal::RstOutOfWindow)
    );
    assert_eq!(st.state(), TcpConnState::Established);
    let mut st = established(LOOSE);
    assert_eq!(st.track(O, &blind, LOOSE), ACCEPT);
    assert_eq!(st.state(), TcpConnState::Close);
}

#[test]
fn rst_answering_a_syn() {
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    assert_eq!(
        st.track(R, &seg(RST | ACK, 0, C + 7, 0, 0), STRICT),
        drop(TcpRefusal::RstOutOfWindow)
    );
    assert_eq!(
        st.track(R, &seg(RST, 0, 0, 0, 0), STRICT),
        drop(TcpRefusal::RstOutOfWindow)
    );
    assert_eq!(st.state(), TcpConnState::SynSent);
    assert_eq!(st.track(R, &seg(RST | ACK, 0, C + 1, 0, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::Close);
}

/// `flags_seen` as header bits.
fn bits(flags: &[TcpFlags]) -> u8 {
    f(flags).bits() as u8
}

#[test]
fn flags_seen_tell_who_opened_closed_and_reset() {
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    assert_eq!(st.flags_seen(), [bits(&[SYN]), 0]);
    // A refused RST is not recorded; the accepted answer to the SYN is.
    let _ = st.track(R, &seg(RST, 0, 0, 0, 0), STRICT);
    assert_eq!(st.flags_seen(), [bits(&[SYN]), 0]);
    assert_eq!(st.track(R, &seg(RST | ACK, 0, C + 1, 0, 0), STRICT), ACCEPT);
    assert_eq!(st.flags_seen(), [bits(&[SYN]), bits(&[RST])]);

    let mut st = established(STRICT);
    assert_eq!(st.flags_seen(), [bits(&[SYN]), bits(&[SYN, ACK])]);
    assert_eq!(
        st.track(R, &seg(FIN | ACK, S + 1, C + 1, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.flags_seen(), [bits(&[SYN]), bits(&[SYN, ACK, FIN])]);
    assert_eq!(st.track(O, &seg(RST, C + 1, 0, 0, 0), STRICT), ACCEPT);
    assert_eq!(st.flags_seen(), [bits(&[SYN, RST]), bits(&[SYN, ACK, FIN])]);

    // Picked up mid-stream: no SYN was seen from anyone.
    let st = TcpState::from_first(&seg(ACK, C, S, 502, 10), LOOSE).unwrap();
    assert_eq!(st.flags_seen(), [0, 0]);
}

#[test]
fn invalid_flag_combinations() {
    let cases = [
        f(&[SYN, FIN]),
        f(&[SYN, RST]),
        f(&[SYN, FIN, ACK]),
        TcpFlags::empty(),   // NULL
        f(&[FIN, PSH, URG]), // XMAS
        f(&[FIN, SYN, RST, PSH, ACK, URG]),
        FIN, // FIN without ACK
        f(&[FIN, RST]),
        f(&[FIN, RST, ACK]),
        PSH,
        URG,
        f(&[SYN, ACK, URG]),
    ];
    for flags in cases {
        let s = seg(flags, C, 0, 1000, 0);
        assert_eq!(
            TcpState::from_first(&s, STRICT),
            Err(TcpRefusal::InvalidFlags),
            "{flags}"
        );
        assert_eq!(
            TcpState::from_first(&s, LOOSE),
            Err(TcpRefusal::InvalidFlags),
            "{flags}"
        );
        let mut st = established(STRICT);
        let before = st;
        let s = seg(flags, C + 1, S + 1, 502, 0);
        assert_eq!(
            st.track(O, &s, STRICT),
            drop(TcpRefusal::InvalidFlags),
            "{flags}"
        );
        assert_eq!(st, before);
    }
}

#[test]
fn valid_flags_is_exactly_linux_table() {
    // FIN, SYN, RST, PSH, ACK, URG in every combination; PSH never matters.
    let valid: [u16; 9] = [0x02, 0x22, 0x12, 0x04, 0x14, 0x11, 0x31, 0x10, 0x30];
    for bits in 0u16..64 {
        let flags = TcpFlags::from_bits_truncate(bits);
        let expect = valid.contains(&(bits & !0x08));
        assert_eq!(valid_flags(flags), expect, "{flags}");
        // ECE/CWR never matter either.
        assert_eq!(valid_flags(flags | TcpFlags::ECE | TcpFlags::CWR), expect);
    }
}

#[test]
fn unsolicited_syn_ack() {
    assert_eq!(
        TcpState::from_first(&syn_ack(S, C + 1, None), STRICT),
        Err(TcpRefusal::UnexpectedSynAck)
    );
    assert_eq!(
        TcpState::from_first(&syn_ack(S, C + 1, None), LOOSE),
        Err(TcpRefusal::UnexpectedSynAck)
    );
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    // SYN-ACK acknowledging something else than our SYN.
    assert_eq!(
        st.track(R, &syn_ack(S, C + 1000, None), STRICT),
        drop(TcpRefusal::UnexpectedSynAck)
    );
    // SYN-ACK from the originator.
    assert_eq!(
        st.track(O, &syn_ack(S, C + 1, None), STRICT),
        drop(TcpRefusal::UnexpectedSynAck)
    );
    assert_eq!(st.state(), TcpConnState::SynSent);
    // SYN-ACK with another ISN once the handshake is past.
    let mut st = established(STRICT);
    assert_eq!(
        st.track(R, &syn_ack(S + 90_000_000, C + 1, None), STRICT),
        drop(TcpRefusal::UnexpectedSynAck)
    );
}

#[test]
fn data_before_handshake_strict_vs_loose() {
    let data = seg(ACK | PSH, C, S, 502, 100);
    assert_eq!(TcpState::from_first(&data, STRICT), Err(TcpRefusal::NotSyn));
    for s in [
        seg(FIN | ACK, C, S, 502, 0),
        seg(RST, C, 0, 0, 0),
        seg(RST | ACK, C, S, 0, 0),
    ] {
        assert_eq!(TcpState::from_first(&s, STRICT), Err(TcpRefusal::NotSyn));
        assert_eq!(TcpState::from_first(&s, LOOSE), Err(TcpRefusal::NotSyn));
    }
    // Loose: mid-stream pickup, and the other side is learnt from its first segment.
    let mut st = TcpState::from_first(&data, LOOSE).unwrap();
    assert_eq!(st.state(), TcpConnState::Established);
    assert!(st.picked_up());
    assert_eq!(st.track(R, &seg(ACK, S, C + 100, 1000, 0), LOOSE), ACCEPT);
    assert_eq!(
        st.track(R, &seg(ACK | PSH, S, C + 100, 1000, 500), LOOSE),
        ACCEPT
    );
    assert_eq!(
        st.track(O, &seg(ACK | PSH, C + 100, S + 500, 502, 100), LOOSE),
        ACCEPT
    );
    // A picked-up flow is never policed, even once the gateway turns strict.
    assert_eq!(
        st.track(
            O,
            &seg(ACK | PSH, C + 90_000_000, S + 500, 502, 100),
            STRICT
        ),
        ACCEPT
    );
    // And in SYN_SENT, data from the originator before the SYN-ACK is invalid.
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    assert_eq!(
        st.track(O, &seg(ACK | PSH, C + 1, 0, 502, 10), STRICT),
        drop(TcpRefusal::InvalidState)
    );
    assert_eq!(
        st.track(R, &seg(ACK, S, C + 1, 502, 0), STRICT),
        drop(TcpRefusal::InvalidState)
    );
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, 0, 502, 0), STRICT),
        drop(TcpRefusal::InvalidState)
    );
    assert_eq!(st.state(), TcpConnState::SynSent);
}

#[test]
fn simultaneous_open() {
    const A: u32 = 7_000;
    const B: u32 = 900_000;
    let mut st = TcpState::from_first(&syn(A, Some(2)), STRICT).unwrap();
    assert_eq!(st.track(R, &syn(B, Some(3)), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynSent2);
    // Retransmitted SYN in SYN_SENT2.
    assert_eq!(st.track(R, &syn(B, Some(3)), STRICT), ACCEPT);
    assert_eq!(st.track(O, &syn(A, Some(2)), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynSent2);
    // Data before any SYN-ACK is invalid.
    assert_eq!(
        st.track(O, &seg(ACK, A + 1, B + 1, 500, 10), STRICT),
        drop(TcpRefusal::InvalidState)
    );
    // A SYN-ACK not acknowledging the peer's SYN.
    assert_eq!(
        st.track(O, &syn_ack(A, B + 5, Some(2)), STRICT),
        drop(TcpRefusal::UnexpectedSynAck)
    );
    assert_eq!(st.track(O, &syn_ack(A, B + 1, Some(2)), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    assert_eq!(st.track(R, &syn_ack(B, A + 1, Some(3)), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    assert_eq!(st.track(O, &seg(ACK, A + 1, B + 1, 500, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::Established);
    assert_eq!((st.wscale(O), st.wscale(R)), (2, 3));
    assert_eq!(
        st.track(R, &seg(ACK | PSH, B + 1, A + 1, 500, 100), STRICT),
        ACCEPT
    );
}

#[test]
fn retransmitted_syn_and_syn_ack() {
    let mut st = TcpState::from_first(&syn(C, None), STRICT).unwrap();
    assert_eq!(st.track(O, &syn(C, None), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynSent);
    // The client re-initializes with a new ISN before any answer: the SYN-ACK must answer the new one.
    assert_eq!(st.track(O, &syn(C + 5_000, None), STRICT), ACCEPT);
    assert_eq!(
        st.track(R, &syn_ack(S, C + 1, None), STRICT),
        drop(TcpRefusal::UnexpectedSynAck)
    );
    assert_eq!(st.track(R, &syn_ack(S, C + 5_001, None), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    // SYN-ACK lost downstream: the client retransmits its SYN, the server its SYN-ACK.
    assert_eq!(st.track(O, &syn(C + 5_000, None), STRICT), ACCEPT);
    assert_eq!(st.track(R, &syn_ack(S, C + 5_001, None), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::SynRecv);
    // A SYN with yet another ISN in SYN_RECV: strict drops, loose ignores.
    let mut loose = st;
    assert_eq!(
        st.track(O, &syn(C + 77, None), STRICT),
        drop(TcpRefusal::UnexpectedSyn)
    );
    assert_eq!(loose.track(O, &syn(C + 77, None), LOOSE), ACCEPT);
    assert_eq!(loose.state(), TcpConnState::SynRecv);
    assert_eq!(
        st.track(O, &seg(ACK, C + 5_001, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::Established);
    // A late SYN-ACK retransmission after the handshake is still in window: let through, nothing learnt.
    let before = st;
    assert_eq!(st.track(R, &syn_ack(S, C + 5_001, None), STRICT), ACCEPT);
    assert_eq!(st, before);
}

#[test]
fn syn_inside_established_flow() {
    let mut st = established(STRICT);
    let before = st;
    assert_eq!(
        st.track(O, &syn(123_456_789, None), STRICT),
        drop(TcpRefusal::UnexpectedSyn)
    );
    assert_eq!(
        st.track(R, &syn(123_456_789, None), STRICT),
        drop(TcpRefusal::UnexpectedSyn)
    );
    assert_eq!(st, before);
    // Loose (Linux): a restarted client's SYN passes unchanged so the server's challenge ACK can resync.
    assert_eq!(st.track(O, &syn(123_456_789, None), LOOSE), ACCEPT);
    assert_eq!(st, before);
    assert_eq!(
        st.track(R, &syn(123_456_789, None), LOOSE),
        drop(TcpRefusal::UnexpectedSyn)
    );
}

#[test]
fn sequence_wraparound() {
    let c = u32::MAX - 10;
    let s = u32::MAX - 3_000;
    let mut st = established_with(c, s, STRICT);
    let mut cseq = c.wrapping_add(1);
    let mut sseq = s.wrapping_add(1);
    // Five 1000-byte segments each way: both sequence spaces cross 2^32.
    for _ in 0..5 {
        assert_eq!(
            st.track(O, &seg(ACK | PSH, cseq, sseq, 502, 1000), STRICT),
            ACCEPT
        );
        cseq = cseq.wrapping_add(1000);
        assert_eq!(
            st.track(R, &seg(ACK | PSH, sseq, cseq, 509, 1000), STRICT),
            ACCEPT
        );
        sseq = sseq.wrapping_add(1000);
        assert_eq!(st.track(O, &seg(ACK, cseq, sseq, 502, 0), STRICT), ACCEPT);
    }
    assert!(cseq < 10_000 && sseq < 10_000);
    assert_eq!(st.seq_end(O), cseq);
    // An ACK for data the server never sent, past the wrap: dropped.
    assert_eq!(
        st.track(O, &seg(ACK, cseq, sseq.wrapping_add(5_000), 502, 0), STRICT),
        drop(TcpRefusal::OutOfWindow)
    );
    // Data far beyond the window, past the wrap: dropped.
    assert_eq!(
        st.track(
            O,
            &seg(ACK | PSH, cseq.wrapping_add(1 << 30), sseq, 502, 10),
            STRICT
        ),
        drop(TcpRefusal::OutOfWindow)
    );
    // A retransmission from before the wrap is fine.
    assert_eq!(
        st.track(
            O,
            &seg(ACK | PSH, c.wrapping_add(1), sseq, 502, 1000),
            STRICT
        ),
        ACCEPT
    );
    // FIN teardown across the wrap.
    assert_eq!(
        st.track(O, &seg(FIN | ACK, cseq, sseq, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(
            R,
            &seg(FIN | ACK, sseq, cseq.wrapping_add(1), 509, 0),
            STRICT
        ),
        ACCEPT
    );
    assert_eq!(
        st.track(
            O,
            &seg(ACK, cseq.wrapping_add(1), sseq.wrapping_add(1), 502, 0),
            STRICT
        ),
        ACCEPT
    );
    assert_eq!(st.state(), TcpConnState::TimeWait);
}

/// Handshake where the server offers a 1024-byte window in its SYN-ACK and then advertises window field
/// 1024 again; with scale 7 that is 128 KiB.
fn scaled(client_ws: Option<u8>, server_ws: Option<u8>) -> TcpState {
    let mut st = TcpState::from_first(&syn(C, client_ws), STRICT).unwrap();
    let mut sa = syn_ack(S, C + 1, server_ws);
    sa.window = 1024;
    assert_eq!(st.track(R, &sa, STRICT), ACCEPT);
    assert_eq!(
        st.track(O, &seg(ACK, C + 1, S + 1, 1024, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(R, &seg(ACK, S + 1, C + 1, 1024, 0), STRICT),
        ACCEPT
    );
    st
}

#[test]
fn window_scaling() {
    // Both SYNs carry the option: 1024 << 7 = 131072 bytes may be in flight.
    let mut st = scaled(Some(7), Some(7));
    assert_eq!((st.wscale(O), st.wscale(R)), (7, 7));
    let mut seq = C + 1;
    for _ in 0..80 {
        assert_eq!(
            st.track(O, &seg(ACK | PSH, seq, S + 1, 1024, 1460), STRICT),
            ACCEPT
        );
        seq += 1460;
    }
    assert!(seq - (C + 1) > 100_000);
    // Beyond the scaled window: dropped.
    assert_eq!(
        st.track(
            O,
            &seg(ACK | PSH, C + 1 + 140_000, S + 1, 1024, 1460),
            STRICT
        ),
        drop(TcpRefusal::OutOfWindow)
    );

    // Only one side offers scaling: neither is scaled, and the same burst overruns the 1024-byte window.
    for (c, s) in [(Some(7), None), (None, Some(7))] {
        let mut st = scaled(c, s);
        assert_eq!((st.wscale(O), st.wscale(R)), (0, 0));
        assert_eq!(
            st.track(O, &seg(ACK | PSH, C + 1, S + 1, 1024, 1000), STRICT),
            ACCEPT
        );
        assert_eq!(
            st.track(O, &seg(ACK | PSH, C + 1 + 1460, S + 1, 1024, 1460), STRICT),
            drop(TcpRefusal::OutOfWindow)
        );
        // Loose lets it through.
        assert_eq!(
            st.track(O, &seg(ACK | PSH, C + 1 + 1460, S + 1, 1024, 1460), LOOSE),
            ACCEPT
        );
    }
    // Out-of-range shifts are clamped to 14.
    let st = scaled(Some(200), Some(15));
    assert_eq!((st.wscale(O), st.wscale(R)), (14, 14));
}

#[test]
fn time_wait_and_close_reopen() {
    let mut st = established(STRICT);
    assert_eq!(
        st.track(O, &seg(FIN | ACK, C + 1, S + 1, 502, 0), STRICT),
        ACCEPT
    );
    assert_eq!(
        st.track(R, &seg(FIN | ACK, S + 1, C + 2, 509, 0), STRICT),
        ACCEPT
    );
    assert_eq!(st.track(O, &seg(ACK, C + 2, S + 2, 502, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::TimeWait);
    let before = st;
    assert_eq!(
        st.track(O, &syn(C + 100_000, None), STRICT),
        TcpVerdict::Reopen
    );
    assert_eq!(
        st.track(R, &syn(S + 100_000, None), STRICT),
        TcpVerdict::Reopen
    );
    assert_eq!(st, before);
    // SYN-ACK in TIME_WAIT is not a reopen.
    assert_eq!(
        st.track(R, &syn_ack(S, C + 1, None), STRICT),
        drop(TcpRefusal::UnexpectedSynAck)
    );

    let mut st = established(STRICT);
    assert_eq!(st.track(R, &seg(RST, S + 1, 0, 0, 0), STRICT), ACCEPT);
    assert_eq!(st.state(), TcpConnState::Close);
    assert_eq!(
        st.track(O, &syn(C + 100_000, None), STRICT),
        TcpVerdict::Reopen
    );
}

#[test]
fn out_of_window_data_strict_drops_loose_accepts() {
    let far = seg(ACK | PSH, C + 1 + 5_000_000, S + 1, 502, 100);
    let mut st = established(STRICT);
    let before = st;
    assert_eq!(st.track(O, &far, STRICT), drop(TcpRefusal::OutOfWindow));
    assert_eq!(st, before);
    let mut st = established(LOOSE);
    let before = st;
    assert_eq!(st.track(O, &far, LOOSE), ACCEPT);
    // Accepted but not learnt from.
    assert_eq!(st, before);
    // Ancient data (more than a window behind).
    let mut st = established(STRICT);
    assert_eq!(
        st.track(
            O,
            &seg(ACK | PSH, C.wrapping_sub(2_000_000), S + 1, 502, 100),
            STRICT
        ),
        drop(TcpRefusal::OutOfWindow)
    );
    // An ACK of data never sent (blind injection) and an ancient ACK.
    assert_eq!(
        st.track(O, &seg(ACK, C + 1, S + 1 + 1_000, 502, 0), STRICT),
        drop(TcpRefusal::OutOfWindow)
    );
    assert_eq!(
        st.track(
            O,
            &seg(ACK, C + 1, S.wrapping_sub(1_000_000), 502, 0),
            STRICT
        ),
        drop(TcpRefusal::OutOfWindow)
    );
}

#[test]
fn timeouts_by_state() {
    let t = Timeouts::default();
    let secs = |s| timeout_ms(s, &t) / 1000;
    assert_eq!(secs(TcpConnState::SynSent), u64::from(t.tcp_syn));
    assert_eq!(secs(TcpConnState::SynSent2), u64::from(t.tcp_syn));
    assert_eq!(secs(TcpConnState::SynRecv), u64::from(t.tcp_syn));
    assert_eq!(
        secs(TcpConnState::Established),
        u64::from(t.tcp_established)
    );
    for s in [
        TcpConnState::FinWait,
        TcpConnState::CloseWait,
        TcpConnState::LastAck,
    ] {
        assert_eq!(secs(s), u64::from(t.tcp_fin));
    }
    assert_eq!(secs(TcpConnState::TimeWait), u64::from(t.tcp_time_wait));
    assert_eq!(secs(TcpConnState::Close), u64::from(t.tcp_close));
    let names: Vec<_> = TcpConnState::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(names.len(), 9);
    assert!(names.iter().all(|n| !n.is_empty()));
}
