//! The TCP state machine with sequence-number and window tracking.
//!
//! Modelled on Linux's `nf_conntrack_proto_tcp` and on Guido van Rooij's "Real Stateful TCP Packet Filtering
//! in IP Filter". Per direction we keep the highest sequence number sent (`end`), the highest right edge of
//! the window the peer has offered (`maxend`), the largest window seen (`maxwin`), the highest
//! acknowledgment sent (`maxack`) and the window scale. A segment from direction *d* is in window when
//!
//! 1. `seq <= maxend[d]` (it starts no later than the receiver allows),
//! 2. `end > end[d] - maxwin[r]` (it is not older than a window),
//! 3. `ack <= end[r]` (it acknowledges nothing the peer has not sent), and
//! 4. `ack >= end[r] - max(maxwin[d], 66000)` (nor something ancient),
//!
//! all in serial (wrap-around) arithmetic. [`Strictness::Strict`] drops segments that fail (the caller counts
//! them and never answers); [`Strictness::Loose`] lets them through without learning from them, as Linux's
//! `be_liberal` does.
//!
//! The closing states are derived from per-direction "FIN seen" and "FIN acknowledged" bits rather than from
//! Linux's coarser table, so a retransmitted FIN cannot advance the state: one FIN unacknowledged is
//! [`FinWait`](TcpConnState::FinWait), acknowledged [`CloseWait`](TcpConnState::CloseWait), both FINs seen
//! [`LastAck`](TcpConnState::LastAck), both acknowledged [`TimeWait`](TcpConnState::TimeWait).

use net::TcpFlags;

use super::key::Dir;
use super::Timeouts;

/// How closely TCP is policed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strictness {
    /// Only a SYN creates a flow; segments outside the tracked windows are dropped; RSTs must match exactly.
    #[default]
    Strict,
    /// Mid-stream pickup from a plain ACK is allowed (e.g. after a gateway restart); window violations are
    /// let through without updating the tracking; RSTs need only be within the window.
    Loose,
}

/// Connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TcpConnState {
    /// SYN seen from the originator.
    SynSent,
    /// Simultaneous open: SYNs seen both ways, no SYN-ACK yet.
    SynSent2,
    /// SYN-ACK seen.
    SynRecv,
    /// Three-way handshake completed.
    Established,
    /// One side sent a FIN that is not yet acknowledged.
    FinWait,
    /// One side's FIN was acknowledged; the other side may still send.
    CloseWait,
    /// Both sides sent a FIN; waiting for the last acknowledgment.
    LastAck,
    /// Both FINs acknowledged.
    TimeWait,
    /// Reset.
    Close,
}

impl TcpConnState {
    /// Every state.
    pub const ALL: [TcpConnState; 9] = [
        TcpConnState::SynSent,
        TcpConnState::SynSent2,
        TcpConnState::SynRecv,
        TcpConnState::Established,
        TcpConnState::FinWait,
        TcpConnState::CloseWait,
        TcpConnState::LastAck,
        TcpConnState::TimeWait,
        TcpConnState::Close,
    ];

    /// Short snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpConnState::SynSent => "syn_sent",
            TcpConnState::SynSent2 => "syn_sent2",
            TcpConnState::SynRecv => "syn_recv",
            TcpConnState::Established => "established",
            TcpConnState::FinWait => "fin_wait",
            TcpConnState::CloseWait => "close_wait",
            TcpConnState::LastAck => "last_ack",
            TcpConnState::TimeWait => "time_wait",
            TcpConnState::Close => "close",
        }
    }

    /// Handshake completed and neither closed nor reset: such a flow is never evicted to make room.
    pub const fn is_assured(self) -> bool {
        matches!(
            self,
            TcpConnState::Established
                | TcpConnState::FinWait
                | TcpConnState::CloseWait
                | TcpConnState::LastAck
        )
    }
}

/// Idle timeout of a TCP flow in `state`, in milliseconds.
pub fn timeout_ms(state: TcpConnState, t: &Timeouts) -> u64 {
    let secs = match state {
        TcpConnState::SynSent | TcpConnState::SynSent2 | TcpConnState::SynRecv => t.tcp_syn,
        TcpConnState::Established => t.tcp_established,
        TcpConnState::FinWait | TcpConnState::CloseWait | TcpConnState::LastAck => t.tcp_fin,
        TcpConnState::TimeWait => t.tcp_time_wait,
        TcpConnState::Close => t.tcp_close,
    };
    u64::from(secs) * 1000
}

/// What the state machine needs from one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Control bits.
    pub flags: TcpFlags,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number (meaningful with ACK).
    pub ack: u32,
    /// Window field as on the wire (unscaled).
    pub window: u16,
    /// Bytes of data.
    pub payload_len: u16,
    /// Window-scale option (read from SYNs and SYN-ACKs only).
    pub wscale: Option<u8>,
}

impl TcpSegment {
    /// Sequence number just past this segment (SYN and FIN count one).
    #[inline]
    fn end(&self) -> u32 {
        let mut end = self.seq.wrapping_add(u32::from(self.payload_len));
        if self.flags.contains(TcpFlags::SYN) {
            end = end.wrapping_add(1);
        }
        if self.flags.contains(TcpFlags::FIN) {
            end = end.wrapping_add(1);
        }
        end
    }

    #[inline]
    fn has(&self, f: TcpFlags) -> bool {
        self.flags.contains(f)
    }
}

/// Why a TCP segment was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TcpRefusal {
    /// A flag combination no TCP sends: NULL, SYN+FIN, SYN+RST, FIN without ACK, XMAS, ...
    InvalidFlags,
    /// The first packet of an untracked flow is not a SYN (strict) nor a plain ACK (loose).
    NotSyn,
    /// A SYN where none is acceptable (e.g. from the responder of an established flow, or a new SYN inside an
    /// established flow in strict mode).
    UnexpectedSyn,
    /// A SYN-ACK nobody asked for: for an untracked flow, from the originator, or not matching the handshake.
    UnexpectedSynAck,
    /// A segment the current state does not allow (data or FIN before the handshake's SYN-ACK).
    InvalidState,
    /// Sequence or acknowledgment number outside the tracked window (strict mode).
    OutOfWindow,
    /// RST whose sequence number is not acceptable.
    RstOutOfWindow,
}

impl TcpRefusal {
    /// Every reason.
    pub const ALL: [TcpRefusal; 7] = [
        TcpRefusal::InvalidFlags,
        TcpRefusal::NotSyn,
        TcpRefusal::UnexpectedSyn,
        TcpRefusal::UnexpectedSynAck,
        TcpRefusal::InvalidState,
        TcpRefusal::OutOfWindow,
        TcpRefusal::RstOutOfWindow,
    ];

    /// Short snake_case name, stable for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            TcpRefusal::InvalidFlags => "tcp_invalid_flags",
            TcpRefusal::NotSyn => "tcp_not_syn",
            TcpRefusal::UnexpectedSyn => "tcp_unexpected_syn",
            TcpRefusal::UnexpectedSynAck => "tcp_unexpected_syn_ack",
            TcpRefusal::InvalidState => "tcp_invalid_state",
            TcpRefusal::OutOfWindow => "tcp_out_of_window",
            TcpRefusal::RstOutOfWindow => "tcp_rst_out_of_window",
        }
    }
}

/// Outcome of [`track`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpVerdict {
    /// Forward the segment; the state has been updated.
    Accept,
    /// A SYN on a flow in TIME_WAIT or CLOSE: a new connection reusing the tuple. Nothing was updated; the
    /// caller treats it as a new flow (policy check, then a fresh [`TcpState::from_first`]).
    Reopen,
    /// Drop the segment silently (and count it); the state is unchanged.
    Drop(TcpRefusal),
}

// Per-direction flag byte: window scale in the low nibble, then flags.
const WF_SCALE: u8 = 0x0f;
/// The direction's SYN carried a window-scale option.
const WF_WSCALE_OPT: u8 = 0x10;
/// `maxack` holds an acknowledgment number.
const WF_MAXACK: u8 = 0x20;
/// The direction sent a FIN.
const WF_FIN: u8 = 0x40;
/// The direction's FIN was acknowledged.
const WF_FIN_ACKED: u8 = 0x80;

/// Flow-wide flag: picked up mid-stream, windows unknown, so never police them.
const TF_LIBERAL: u8 = 0x01;
/// An accepted RST from the original direction; `<< 1` for the reply direction. Set only on the RST path,
/// never on the established-ACK shortcut, so telling who reset costs the common packet nothing.
const TF_RST_ORIGINAL: u8 = 0x02;
/// The responder sent a SYN (its SYN-ACK, or a simultaneous open's SYN).
const TF_REPLY_SYN: u8 = 0x08;
/// Imported by an HA standby, the original direction may still catch up once (`catch_up`); `<< 1` for the
/// reply direction.
const TF_SYNCED: u8 = 0x10;

/// RFC 7323's largest shift.
const MAX_WSCALE: u8 = 14;
/// Largest window a scaled 16-bit field can express.
const MAX_WINDOW: u32 = 0xffff << MAX_WSCALE;
/// How far ahead of an imported state's windows a sender's sequence number may be when it catches up: what
/// it sent since the state was synced, which a bulk transfer makes megabytes (a sync period of a few hundred
/// Mbit/s) — more than any window. A window would stall such a transfer for good after a failover: the
/// sender's retransmission is refused again and again, and the receiver, seeing nothing, acknowledges nothing
/// that could help. Bounded by the largest window TCP can express; the acknowledgement, which a blind sender
/// must guess too, stays within a window.
const CATCH_UP_SEQ: u32 = MAX_WINDOW;
/// Minimum span of acknowledgment numbers accepted below the peer's `end` (Linux's `MAXACKWINCONST`).
const MAXACKWINCONST: u32 = 66_000;

/// `a` is before `b` in sequence space.
#[inline]
fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` is after `b` in sequence space.
#[inline]
fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// Whether a flag combination is one a TCP may send (Linux's `tcp_valid_flags`; PSH, ECE, CWR and NS are
/// ignored).
#[inline]
pub fn valid_flags(f: TcpFlags) -> bool {
    const FIN: u16 = TcpFlags::FIN.0;
    const SYN: u16 = TcpFlags::SYN.0;
    const RST: u16 = TcpFlags::RST.0;
    const ACK: u16 = TcpFlags::ACK.0;
    const URG: u16 = TcpFlags::URG.0;
    let m = f.bits() & (FIN | SYN | RST | ACK | URG);
    m == SYN
        || m == SYN | URG
        || m == SYN | ACK
        || m == RST
        || m == RST | ACK
        || m == FIN | ACK
        || m == FIN | ACK | URG
        || m == ACK
        || m == ACK | URG
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Syn,
    SynAck,
    Fin,
    Ack,
    Rst,
}

/// Classifies valid flags.
#[inline]
fn kind(f: TcpFlags) -> Kind {
    if f.contains(TcpFlags::RST) {
        Kind::Rst
    } else if f.contains(TcpFlags::SYN) {
        if f.contains(TcpFlags::ACK) {
            Kind::SynAck
        } else {
            Kind::Syn
        }
    } else if f.contains(TcpFlags::FIN) {
        Kind::Fin
    } else {
        Kind::Ack
    }
}

/// Everything tracked about one TCP connection (36 bytes). Arrays are indexed by [`Dir::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpState {
    // `pub(super)` for the HA sync's wire form (`sync.rs`) only.
    pub(super) end: [u32; 2],
    pub(super) maxend: [u32; 2],
    pub(super) maxwin: [u32; 2],
    pub(super) maxack: [u32; 2],
    pub(super) wflags: [u8; 2],
    pub(super) state: TcpConnState,
    pub(super) tflags: u8,
}

impl Default for TcpState {
    fn default() -> Self {
        TcpState::EMPTY
    }
}

impl TcpState {
    /// Nothing seen yet.
    pub const EMPTY: TcpState = TcpState {
        end: [0; 2],
        maxend: [0; 2],
        maxwin: [0; 2],
        maxack: [0; 2],
        wflags: [0; 2],
        state: TcpConnState::SynSent,
        tflags: 0,
    };

    /// The tracking state for the first segment of an untracked flow, which is [`Dir::Original`]: a SYN gives
    /// [`SynSent`](TcpConnState::SynSent); in loose mode a plain ACK (with or without data) gives a
    /// mid-stream pickup in [`Established`](TcpConnState::Established), whose windows are never policed.
    pub fn from_first(seg: &TcpSegment, strictness: Strictness) -> Result<TcpState, TcpRefusal> {
        if !valid_flags(seg.flags) {
            return Err(TcpRefusal::InvalidFlags);
        }
        let mut s = TcpState::EMPTY;
        match kind(seg.flags) {
            Kind::Syn => {
                s.init_sender(0, seg);
                Ok(s)
            }
            Kind::SynAck => Err(TcpRefusal::UnexpectedSynAck),
            Kind::Ack if strictness == Strictness::Loose => {
                let end = seg.end();
                let win = u32::from(seg.window).max(1);
                s.end[0] = end;
                s.maxwin[0] = win;
                s.maxend[0] = end.wrapping_add(win);
                s.maxack[0] = seg.ack;
                s.wflags[0] = WF_MAXACK;
                // The receiver is unknown until it speaks; until then it has sent up to what was acked.
                s.end[1] = seg.ack;
                s.maxend[1] = seg.ack.wrapping_add(win);
                s.state = TcpConnState::Established;
                s.tflags = TF_LIBERAL;
                Ok(s)
            }
            _ => Err(TcpRefusal::NotSyn),
        }
    }

    /// Current state.
    pub const fn state(&self) -> TcpConnState {
        self.state
    }

    /// Whether the state is [`Established`](TcpConnState::Established).
    pub const fn is_established(&self) -> bool {
        matches!(self.state, TcpConnState::Established)
    }

    /// See [`TcpConnState::is_assured`].
    pub const fn is_assured(&self) -> bool {
        self.state.is_assured()
    }

    /// Window scale in effect for `dir` (0 unless both SYNs carried the option).
    pub const fn wscale(&self, dir: Dir) -> u8 {
        self.wflags[dir.index()] & WF_SCALE
    }

    /// Whether the flow was picked up mid-stream (loose mode), so its windows are not policed.
    #[inline]
    pub const fn picked_up(&self) -> bool {
        self.tflags & TF_LIBERAL != 0
    }

    /// The TCP control flags each direction ([`Dir::index`] order) is known to have sent, in header bit positions:
    /// SYN (the originator's unless the flow was picked up mid-stream; the responder's SYN-ACK, with ACK), FIN
    /// and RST once accepted. Recorded off the per-packet shortcut, when the state machine handles them anyway.
    pub const fn flags_seen(&self) -> [u8; 2] {
        const FIN: u8 = TcpFlags::FIN.0 as u8;
        const SYN: u8 = TcpFlags::SYN.0 as u8;
        const RST: u8 = TcpFlags::RST.0 as u8;
        const ACK: u8 = TcpFlags::ACK.0 as u8;
        let mut seen = [0u8; 2];
        let mut d = 0;
        while d < 2 {
            if self.wflags[d] & WF_FIN != 0 {
                seen[d] |= FIN;
            }
            if self.tflags & (TF_RST_ORIGINAL << d) != 0 {
                seen[d] |= RST;
            }
            d += 1;
        }
        if !self.picked_up() {
            seen[0] |= SYN;
        }
        if self.tflags & TF_REPLY_SYN != 0 {
            seen[1] |= SYN | ACK;
        }
        seen
    }

    /// Highest sequence number `dir` has sent (plus one).
    pub const fn seq_end(&self, dir: Dir) -> u32 {
        self.end[dir.index()]
    }

    #[inline]
    fn fin(&self, d: usize) -> bool {
        self.wflags[d] & WF_FIN != 0
    }

    /// (Re)initializes direction `d` from its SYN or SYN-ACK.
    fn init_sender(&mut self, d: usize, seg: &TcpSegment) {
        let end = seg.end();
        self.end[d] = end;
        self.maxend[d] = end;
        self.maxwin[d] = u32::from(seg.window).max(1);
        self.maxack[d] = 0;
        self.wflags[d] = match seg.wscale {
            Some(s) => WF_WSCALE_OPT | s.min(MAX_WSCALE),
            None => 0,
        };
    }

    /// RFC 7323: scaling is in effect only if both SYNs carried the option.
    fn negotiate_scale(&mut self) {
        if self.wflags[0] & self.wflags[1] & WF_WSCALE_OPT == 0 {
            self.wflags[0] &= !WF_SCALE;
            self.wflags[1] &= !WF_SCALE;
        }
    }

    /// First segment from direction `d` of a picked-up flow: learn what we can from it.
    fn init_midstream(&mut self, d: usize, seg: &TcpSegment) {
        let r = d ^ 1;
        let end = seg.end();
        let win = (u32::from(seg.window) << self.wscale_of(d)).max(1);
        self.end[d] = end;
        self.maxwin[d] = win;
        self.maxend[d] = end.wrapping_add(win);
        let ack = if seg.has(TcpFlags::ACK) {
            seg.ack
        } else {
            self.end[r]
        };
        if self.maxwin[r] == 0 {
            self.end[r] = ack;
            self.maxend[r] = ack;
        } else if ack == self.end[r].wrapping_add(1) {
            // Likely the answer to a keepalive.
            self.end[r] = ack;
        }
    }

    #[inline]
    fn wscale_of(&self, d: usize) -> u8 {
        self.wflags[d] & WF_SCALE
    }

    /// The acknowledgment number used by the checks: without ACK (or with the zero ACK of broken RSTs) the
    /// segment is taken to acknowledge everything.
    #[inline]
    fn effective_ack(&self, d: usize, seg: &TcpSegment) -> u32 {
        if !seg.has(TcpFlags::ACK) || (seg.has(TcpFlags::RST) && seg.ack == 0) {
            self.end[d ^ 1]
        } else {
            seg.ack
        }
    }

    /// Checks 1–4 of the module documentation for a segment from direction `d`.
    #[inline]
    fn window_ok(&self, d: usize, seg: &TcpSegment) -> bool {
        let r = d ^ 1;
        let end = seg.end();
        let ack = self.effective_ack(d, seg);
        let in_recv_win = self.maxwin[r] == 0
            || after(
                end,
                self.end[d].wrapping_sub(self.maxwin[r]).wrapping_sub(1),
            );
        let maxackwin = self.maxwin[d].max(MAXACKWINCONST);
        !after(seg.seq, self.maxend[d])
            && in_recv_win
            && !after(ack, self.end[r])
            && after(ack, self.end[r].wrapping_sub(maxackwin).wrapping_sub(1))
    }

    /// Marks a state imported from an HA peer (`ConnTable::import`): its windows may trail the connection by
    /// up to a sync period.
    pub(super) fn mark_synced(&mut self) {
        self.tflags |= TF_SYNCED | TF_SYNCED << 1;
    }

    /// For a state imported from an HA peer, once per direction: a segment that failed the window check only
    /// by being ahead of the tracked windows — its sequence number at most [`CATCH_UP_SEQ`] beyond them, its
    /// acknowledgement at most a window beyond them and not ancient — is accepted and learned from, so a
    /// standby that takes over continues strict tracking where the active left off instead of dropping the
    /// segments it did not see sent. Runs only after a failed check, never on the common path.
    #[cold]
    fn catch_up(&mut self, d: usize, seg: &TcpSegment) -> bool {
        let bit = TF_SYNCED << d;
        if self.tflags & bit == 0 {
            return false;
        }
        let r = d ^ 1;
        let slack = self.maxwin[d].max(self.maxwin[r]).max(MAXACKWINCONST);
        let ack = self.effective_ack(d, seg);
        let ahead = !after(seg.seq, self.maxend[d].wrapping_add(CATCH_UP_SEQ))
            && !after(ack, self.end[r].wrapping_add(slack))
            && after(ack, self.end[r].wrapping_sub(slack).wrapping_sub(1));
        if !ahead {
            return false;
        }
        self.tflags &= !bit;
        // The peer did send what this acknowledges, and the receiver let this far.
        if after(ack, self.end[r]) {
            self.end[r] = ack;
        }
        if after(seg.end(), self.maxend[d]) {
            self.maxend[d] = seg.end();
        }
        self.window_update(d, seg);
        true
    }

    /// Learns from an in-window segment from direction `d`.
    #[inline]
    fn window_update(&mut self, d: usize, seg: &TcpSegment) {
        let r = d ^ 1;
        let end = seg.end();
        let ack = self.effective_ack(d, seg);
        let mut win = u32::from(seg.window);
        if !seg.has(TcpFlags::SYN) {
            win <<= self.wscale_of(d);
        }
        if self.maxwin[d] < win {
            self.maxwin[d] = win;
        }
        if after(end, self.end[d]) {
            self.end[d] = end;
        }
        if seg.has(TcpFlags::ACK)
            && (self.wflags[d] & WF_MAXACK == 0 || after(seg.ack, self.maxack[d]))
        {
            self.maxack[d] = seg.ack;
            self.wflags[d] |= WF_MAXACK;
        }
        if self.maxwin[r] != 0 && after(end, self.maxend[d]) {
            let grow = end.wrapping_sub(self.maxend[d]);
            self.maxwin[r] = self.maxwin[r].saturating_add(grow).min(MAX_WINDOW);
        }
        let right = ack.wrapping_add(win);
        if after(right, self.maxend[r].wrapping_sub(1)) {
            self.maxend[r] = if win == 0 {
                right.wrapping_add(1)
            } else {
                right
            };
        }
    }

    /// The closing state implied by the FIN bits, if any FIN was seen.
    #[inline]
    fn closing_state(&self) -> Option<TcpConnState> {
        let acked = |d: usize| self.wflags[d] & WF_FIN_ACKED != 0;
        Some(match (self.fin(0), self.fin(1)) {
            (false, false) => return None,
            (true, true) if acked(0) && acked(1) => TcpConnState::TimeWait,
            (true, true) => TcpConnState::LastAck,
            (true, false) if acked(0) => TcpConnState::CloseWait,
            (false, true) if acked(1) => TcpConnState::CloseWait,
            _ => TcpConnState::FinWait,
        })
    }

    /// Processes one segment of this flow travelling in `dir`. See the module documentation.
    #[inline]
    pub fn track(&mut self, dir: Dir, seg: &TcpSegment, strictness: Strictness) -> TcpVerdict {
        self.track_noting_change(dir, seg, strictness).0
    }

    /// [`track`](Self::track), answering besides whether the connection state changed (the HA sync sends the
    /// flow at once then). The plain ACK of an established connection never changes it: its shortcut answers
    /// `false` without comparing anything.
    #[inline]
    pub fn track_noting_change(
        &mut self,
        dir: Dir,
        seg: &TcpSegment,
        strictness: Strictness,
    ) -> (TcpVerdict, bool) {
        let liberal = strictness == Strictness::Loose || self.picked_up();
        if let Some(verdict) = self.established_ack(dir.index(), seg, liberal) {
            return (verdict, false);
        }
        let before = self.state;
        let verdict = self.track_general(dir, seg, strictness);
        (verdict, self.state != before)
    }

    /// Nearly every packet of a flow: a plain ACK (with or without data, URG and PSH aside) of an established
    /// connection in which neither side has sent a FIN, from a side that has spoken before. For such a segment
    /// the flag, state and closing checks of [`track_general`](Self::track_general) are decided in advance —
    /// its verdict and resulting state are the same (a property test holds them equal) — leaving only the
    /// window check and update. `None` for any other segment.
    #[inline(always)]
    fn established_ack(&mut self, d: usize, seg: &TcpSegment, liberal: bool) -> Option<TcpVerdict> {
        const CONTROL: u16 = TcpFlags::FIN.0 | TcpFlags::SYN.0 | TcpFlags::RST.0 | TcpFlags::ACK.0;
        let plain_ack = seg.flags.bits() & CONTROL == TcpFlags::ACK.0;
        let no_fin = (self.wflags[0] | self.wflags[1]) & WF_FIN == 0;
        if !(plain_ack && no_fin && self.state == TcpConnState::Established && self.maxwin[d] != 0)
        {
            return None;
        }
        Some(if self.window_ok(d, seg) {
            self.window_update(d, seg);
            TcpVerdict::Accept
        } else if liberal || self.catch_up(d, seg) {
            TcpVerdict::Accept
        } else {
            TcpVerdict::Drop(TcpRefusal::OutOfWindow)
        })
    }

    /// [`track`](Self::track) for any segment, without the shortcut for the common case.
    fn track_general(&mut self, dir: Dir, seg: &TcpSegment, strictness: Strictness) -> TcpVerdict {
        if !valid_flags(seg.flags) {
            return TcpVerdict::Drop(TcpRefusal::InvalidFlags);
        }
        let liberal = strictness == Strictness::Loose || self.picked_up();
        match kind(seg.flags) {
            Kind::Rst => self.on_rst(dir.index(), seg, liberal),
            Kind::Syn => self.on_syn(dir, seg, liberal),
            Kind::SynAck => self.on_syn_ack(dir, seg),
            Kind::Fin => self.on_segment(dir, seg, true, liberal),
            Kind::Ack => self.on_segment(dir, seg, false, liberal),
        }
    }

    fn on_syn(&mut self, dir: Dir, seg: &TcpSegment, liberal: bool) -> TcpVerdict {
        use TcpConnState::*;
        let d = dir.index();
        match (self.state, dir) {
            // RFC 1122 reuse of a finished connection's tuple (either side may be the new client).
            (TimeWait | Close, _) => TcpVerdict::Reopen,
            // Retransmitted SYN, or a client that re-initialized with a new ISN before any answer.
            (SynSent, Dir::Original) => {
                self.init_sender(d, seg);
                TcpVerdict::Accept
            }
            // Simultaneous open.
            (SynSent, Dir::Reply) => {
                self.init_sender(d, seg);
                self.tflags |= TF_REPLY_SYN;
                self.state = SynSent2;
                TcpVerdict::Accept
            }
            // Retransmitted SYN: same ISN, nothing acknowledged yet.
            (SynSent2 | SynRecv, _)
                if seg.end() == self.end[d] && self.wflags[d] & WF_MAXACK == 0 =>
            {
                TcpVerdict::Accept
            }
            // A new SYN inside a live connection (e.g. a restarted client). Linux lets it through unchanged so the
            // server's challenge ACK can resynchronize; strict mode drops it like any out-of-window segment.
            (SynRecv | Established | FinWait | CloseWait | LastAck, Dir::Original) if liberal => {
                TcpVerdict::Accept
            }
            _ => TcpVerdict::Drop(TcpRefusal::UnexpectedSyn),
        }
    }

    fn on_syn_ack(&mut self, dir: Dir, seg: &TcpSegment) -> TcpVerdict {
        use TcpConnState::*;
        let d = dir.index();
        let r = d ^ 1;
        match self.state {
            SynSent if dir == Dir::Reply => {
                // It must acknowledge exactly the SYN.
                if seg.ack != self.end[r] {
                    return TcpVerdict::Drop(TcpRefusal::UnexpectedSynAck);
                }
                self.init_sender(d, seg);
                self.negotiate_scale();
                self.window_update(d, seg);
                self.tflags |= TF_REPLY_SYN;
                self.state = SynRecv;
                TcpVerdict::Accept
            }
            // Simultaneous open: each side acknowledges the other's SYN, repeating its own ISN.
            SynSent2 => {
                if seg.ack != self.end[r] || seg.end() != self.end[d] {
                    return TcpVerdict::Drop(TcpRefusal::UnexpectedSynAck);
                }
                self.negotiate_scale();
                self.window_update(d, seg);
                self.state = SynRecv;
                TcpVerdict::Accept
            }
            // Retransmitted SYN-ACK, or the second one of a simultaneous open.
            SynRecv
                if self.maxwin[d] != 0 && seg.end() == self.end[d] && seg.ack == self.end[r] =>
            {
                self.window_update(d, seg);
                TcpVerdict::Accept
            }
            // A late retransmission: harmless if still within the window; learn nothing from it.
            Established | FinWait | CloseWait | LastAck if self.window_ok(d, seg) => {
                TcpVerdict::Accept
            }
            _ => TcpVerdict::Drop(TcpRefusal::UnexpectedSynAck),
        }
    }

    /// ACK or FIN (with or without data).
    #[inline]
    fn on_segment(&mut self, dir: Dir, seg: &TcpSegment, fin: bool, liberal: bool) -> TcpVerdict {
        use TcpConnState::*;
        let d = dir.index();
        let r = d ^ 1;
        if matches!(self.state, SynSent | SynSent2) {
            return TcpVerdict::Drop(TcpRefusal::InvalidState);
        }
        if self.maxwin[d] == 0 {
            self.init_midstream(d, seg);
        }
        // Nothing may follow a FIN.
        let past_fin = self.fin(d) && after(seg.end(), self.end[d]);
        if !past_fin && self.window_ok(d, seg) {
            self.window_update(d, seg);
        } else if !liberal && (past_fin || !self.catch_up(d, seg)) {
            return TcpVerdict::Drop(TcpRefusal::OutOfWindow);
        }
        if fin {
            self.wflags[d] |= WF_FIN;
        }
        if seg.has(TcpFlags::ACK) && self.fin(r) && !before(seg.ack, self.end[r]) {
            self.wflags[r] |= WF_FIN_ACKED;
        }
        self.state = match self.state {
            TimeWait | Close => self.state,
            s => match self.closing_state() {
                Some(closing) => closing,
                // The originator's ACK of the SYN-ACK completes the handshake.
                None if s == SynRecv && dir == Dir::Original && !before(seg.ack, self.end[r]) => {
                    Established
                }
                None => s,
            },
        };
        TcpVerdict::Accept
    }

    fn on_rst(&mut self, d: usize, seg: &TcpSegment, liberal: bool) -> TcpVerdict {
        let r = d ^ 1;
        let ok = if self.maxwin[d] == 0 {
            // This side never spoke: only the answer to a SYN is plausible, an RST+ACK acknowledging exactly it.
            liberal || (seg.has(TcpFlags::ACK) && seg.ack == self.end[r])
        } else if liberal {
            !after(seg.seq, self.maxend[d])
                && (self.maxwin[r] == 0
                    || after(
                        seg.seq,
                        self.end[d].wrapping_sub(self.maxwin[r]).wrapping_sub(1),
                    ))
        } else {
            // RFC 5961 exact match: the receiver's next expected sequence number, i.e. what it last
            // acknowledged, or the sender's next sequence number (RST right after data, nothing lost).
            seg.seq == self.end[d] || (self.wflags[r] & WF_MAXACK != 0 && seg.seq == self.maxack[r])
        };
        if !ok {
            return TcpVerdict::Drop(TcpRefusal::RstOutOfWindow);
        }
        self.tflags |= TF_RST_ORIGINAL << d;
        self.state = TcpConnState::Close;
        TcpVerdict::Accept
    }
}

/// Processes one segment of a tracked flow travelling in `dir`; see [`TcpState::track`].
pub fn track(
    state: &mut TcpState,
    dir: Dir,
    seg: &TcpSegment,
    strictness: Strictness,
) -> TcpVerdict {
    state.track(dir, seg, strictness)
}

#[cfg(test)]
mod fast_path {
    use proptest::prelude::*;

    use super::*;

    /// Sequence numbers near a few bases, so segments land inside, at the edges of and outside the windows.
    fn seqno(bases: [u32; 3]) -> impl Strategy<Value = u32> {
        (0..3usize, -70_000i64..70_000).prop_map(move |(b, d)| bases[b].wrapping_add(d as u32))
    }

    fn state() -> impl Strategy<Value = TcpState> {
        let bases = [0x1000_0000, 0x8000_0000, 0xffff_f000];
        (
            prop::array::uniform8(seqno(bases)),
            (
                prop::array::uniform2(prop_oneof![Just(0u32), 1u32..70_000, 1u32..0x4000_0000]),
                any::<[u8; 2]>(),
                prop::sample::select(TcpConnState::ALL.to_vec()),
                prop_oneof![4 => Just(TcpConnState::Established), 1 => Just(TcpConnState::FinWait)],
                (any::<bool>(), prop::bool::weighted(0.25)),
            ),
        )
            .prop_map(
                |(s, (maxwin, wflags, any_state, likely, (liberal, fin_seen)))| TcpState {
                    end: [s[0], s[1]],
                    maxend: [s[2], s[3]],
                    maxwin,
                    maxack: [s[4], s[5]],
                    // The shortcut's conditions hold most of the time, not always: the random FIN bits
                    // are kept in a quarter of the states, and about a third are not Established.
                    wflags: if fin_seen {
                        wflags
                    } else {
                        wflags.map(|w| w & !(WF_FIN | WF_FIN_ACKED))
                    },
                    state: if s[6] % 4 == 0 { any_state } else { likely },
                    tflags: u8::from(liberal),
                },
            )
    }

    fn segment() -> impl Strategy<Value = TcpSegment> {
        let bases = [0x1000_0000, 0x8000_0000, 0xffff_f000];
        (
            prop_oneof![
                6 => Just(TcpFlags::ACK.0),
                2 => Just(TcpFlags::ACK.0 | TcpFlags::PSH.0),
                1 => Just(TcpFlags::ACK.0 | TcpFlags::URG.0),
                1 => 0u16..0x200,
            ],
            seqno(bases),
            seqno(bases),
            any::<u16>(),
            prop_oneof![Just(0u16), 1u16..1500],
        )
            .prop_map(|(flags, seq, ack, window, payload_len)| TcpSegment {
                flags: TcpFlags(flags),
                seq,
                ack,
                window,
                payload_len,
                wscale: None,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// The established-ACK shortcut gives exactly the verdict and state of the general path.
        #[test]
        fn shortcut_matches_general_path(
            s in state(),
            seg in segment(),
            reply in any::<bool>(),
            strict in any::<bool>(),
        ) {
            let dir = if reply { Dir::Reply } else { Dir::Original };
            let strictness = if strict { Strictness::Strict } else { Strictness::Loose };
            let (mut fast, mut general) = (s, s);
            let v_fast = fast.track(dir, &seg, strictness);
            let v_general = general.track_general(dir, &seg, strictness);
            prop_assert_eq!(v_fast, v_general);
            prop_assert_eq!(fast, general);
        }
    }

    /// The generator reaches the shortcut, in and out of window, and the cases it must leave alone.
    #[test]
    fn generator_covers_the_shortcut() {
        use proptest::strategy::ValueTree;
        use proptest::test_runner::TestRunner;
        let mut runner = TestRunner::deterministic();
        let (mut taken, mut in_window, mut declined) = (0, 0, 0);
        for _ in 0..5_000 {
            let mut s = state().new_tree(&mut runner).unwrap().current();
            let seg = segment().new_tree(&mut runner).unwrap().current();
            let ok = s.maxwin[0] != 0 && s.window_ok(0, &seg);
            match s.established_ack(0, &seg, false) {
                Some(_) => {
                    taken += 1;
                    in_window += usize::from(ok);
                }
                None => declined += 1,
            }
        }
        assert!(
            taken > 500 && in_window > 50 && declined > 500,
            "{taken} {in_window} {declined}"
        );
    }
}
