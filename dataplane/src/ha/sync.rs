//! Connection-state sync, active → standby, over the HA link.
//!
//! **Workers** ([`WorkerSync::step`], once per poll-loop iteration). On the active member each worker first
//! queues what its packet path noted since the last iteration (flows created, TCP state changes, removed
//! flows: [`Tracker::take_notes`]), so those reach the standby as they happen; a note that finds the queue
//! full is counted and asks a resync of that worker's table. Then it sweeps
//! its table by a budget of slots per iteration — a full sweep every `sync_refresh_ms`, and at once when a
//! resync is asked — and `try_send`s each flow's state ([`FlowRecord`]) into its bounded queue: no
//! allocation, lock or system call. A full queue stops the sweep at the flow that did not fit; it resumes
//! there at the next iteration (nothing is lost, the sweep is only later). On the standby each worker
//! applies the updates of its inbox to its own table ([`ConnTable::import`]), a budget per iteration, so each
//! table keeps a single writer and needs no lock; the standby then continues strict TCP tracking where the active left off. Updates of a flow go
//! from worker *i* of the active to worker *i* of the standby: the pair must have the same workers and the
//! same RSS (as two identical members do), so both directions of a flow meet in that worker on both.
//!
//! **The sync thread** ([`run_sender`]) batches the active's updates and sends them over TCP to the peer's
//! `sync_listen` with application sequence numbers; the peer acknowledges each batch once its records are in
//! the workers' inboxes ([`run_receiver`]). Unacknowledged batches are kept (bounded) and sent again after a
//! reconnection (`resent`), so "lagging by N" is the number of updates sent and not yet acknowledged, and a
//! batch that falls out of the bound is `lost` and answered by a resync. Every (re)connection starts a bulk
//! resync: each worker sweeps its whole table again. TCP is the transport (ordering, retransmission on the
//! wire); the sequence numbers and acks are what make the sync's own progress visible.
//!
//! Frames: a batch is `[1][seq u64][worker u16][count u16]` followed by `count` records of
//! [`RECORD_LEN`] bytes; an acknowledgement is `[2][seq u64]` (big-endian).
//!
//! **Not authenticated yet**: the link carries connection state in the clear and accepts any peer; it must be
//! a dedicated link between the two members (a crossover cable or a VLAN of its own).

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use crossbeam_utils::CachePadded;
use protocol::{SyncState, SyncStatus};

use crate::conntrack::{FlowKey, FlowRecord, Tracker, RECORD_LEN};
use crate::ha::RoleCell;

const BATCH: u8 = 1;
const ACK: u8 = 2;
const BATCH_HEADER: usize = 13;
/// Records per batch at most.
const BATCH_RECORDS: usize = 64;
/// Rounds of batches (one per worker with updates) written per turn before the acknowledgements are read.
const BATCHES_PER_TURN: usize = 64;
/// Batches kept for resending at most; older ones are lost (and a resync follows).
const MAX_UNACKED: usize = 4096;
/// A write to the peer that takes longer ends the connection (it is made again, and unacknowledged batches
/// resent).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the workers and the sync threads share.
#[derive(Debug)]
pub struct SyncShared {
    /// Per worker: a bulk resync is asked, or in progress (cleared by the worker when its sweep ends).
    resync: Box<[CachePadded<AtomicBool>]>,
    /// Per worker: updates that found the queue full.
    lost: Box<[CachePadded<AtomicU64>]>,
    sent: AtomicU64,
    acked: AtomicU64,
    resent: AtomicU64,
    /// Updates in batches that fell out of the resend window.
    dropped: AtomicU64,
    received: AtomicU64,
    /// Updates sent and not yet acknowledged.
    lag: AtomicU64,
    /// The sender's connection to the peer is up.
    connected: AtomicBool,
    /// The receiver serves a connection from the peer.
    receiving: AtomicBool,
}

impl SyncShared {
    pub fn new(workers: usize) -> Self {
        SyncShared {
            resync: (0..workers).map(|_| Default::default()).collect(),
            lost: (0..workers).map(|_| Default::default()).collect(),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            receiving: AtomicBool::new(false),
        }
    }

    /// Asks every worker for a bulk resync (a peer joined, or an operator asked).
    pub fn request_resync(&self) {
        for r in self.resync.iter() {
            r.store(true, Relaxed);
        }
    }

    pub fn status(&self, role: &RoleCell, cfg: &crate::config::HaCfg) -> SyncStatus {
        let lag = self.lag.load(Relaxed);
        let sending = role.role() == protocol::Role::Active;
        // The active's view is the complete one (lag, resync); a standby knows whether the peer is connected.
        let connected = if sending {
            self.connected.load(Relaxed)
        } else {
            self.receiving.load(Relaxed)
        };
        let state = if !connected {
            SyncState::Disconnected
        } else if sending && self.resync.iter().any(|r| r.load(Relaxed)) {
            SyncState::Resyncing
        } else if lag > 0 {
            SyncState::Lagging
        } else {
            SyncState::InSync
        };
        SyncStatus {
            sending,
            peer: cfg.sync_peer.map(|a| a.to_string()),
            listen: cfg.sync_listen.map(|a| a.to_string()),
            state,
            lag,
            sent: self.sent.load(Relaxed),
            acked: self.acked.load(Relaxed),
            resent: self.resent.load(Relaxed),
            lost: self.lost.iter().map(|l| l.load(Relaxed)).sum::<u64>()
                + self.dropped.load(Relaxed),
            received: self.received.load(Relaxed),
        }
    }
}

/// One worker's side of the sync (see the module docs).
pub struct WorkerSync<'a> {
    pub index: usize,
    pub shared: &'a SyncShared,
    pub out: Sender<FlowRecord>,
    pub inbox: Receiver<FlowRecord>,
    pub refresh_ms: u64,
    pub budget: usize,
    cursor: usize,
    sweeping: bool,
    resync_sweep: bool,
    next_sweep: u64,
    /// The tracker notes what its packet path changes (this member is active).
    noting: bool,
}

impl<'a> WorkerSync<'a> {
    pub fn new(
        index: usize,
        shared: &'a SyncShared,
        out: Sender<FlowRecord>,
        inbox: Receiver<FlowRecord>,
        refresh_ms: u64,
        budget: usize,
    ) -> Self {
        WorkerSync {
            index,
            shared,
            out,
            inbox,
            refresh_ms,
            budget,
            cursor: 0,
            sweeping: false,
            resync_sweep: false,
            next_sweep: 0,
            noting: false,
        }
    }

    /// Sends the end of a flow (killed or expired on the active).
    pub fn closed(&self, key: FlowKey) {
        send(self.shared, self.index, &self.out, FlowRecord::Closed(key));
    }

    /// Once per poll-loop iteration: the standby applies updates, the active sweeps its table.
    #[inline]
    pub fn step(&mut self, standby: bool, tracker: &mut Tracker, now: u64) {
        if standby {
            for _ in 0..self.budget {
                match self.inbox.try_recv() {
                    Ok(FlowRecord::State(state)) => {
                        // A full table of established flows refuses it; the next refresh tries again.
                        let _ = tracker.import(&state, now);
                    }
                    Ok(FlowRecord::Closed(key)) => {
                        if let Some(id) = tracker.table().find(&key) {
                            tracker.remove(id);
                        }
                    }
                    Err(_) => break,
                }
            }
            self.sweeping = false;
            if self.noting {
                tracker.set_noting(false);
                self.noting = false;
            }
            return;
        }
        if !self.noting {
            tracker.set_noting(true);
            self.noting = true;
        }
        // What the packet path changed since the last iteration goes out at once; the sweep below refreshes
        // the rest (TCP windows, counters, idle times).
        let (shared, index, out) = (self.shared, self.index, &self.out);
        let overflowed = tracker.take_notes(
            now,
            |key| send(shared, index, out, FlowRecord::Closed(key)),
            |state| send(shared, index, out, FlowRecord::State(state)),
        );
        if overflowed {
            shared.resync[index].store(true, Relaxed);
        }
        let resync = &self.shared.resync[self.index];
        if !self.resync_sweep && resync.load(Relaxed) {
            (self.sweeping, self.resync_sweep, self.cursor) = (true, true, 0);
        } else if !self.sweeping && now >= self.next_sweep {
            (self.sweeping, self.cursor) = (true, 0);
        }
        if !self.sweeping {
            return;
        }
        let mut full = false;
        let out = &self.out;
        let next = tracker
            .table()
            .export_slots(self.cursor, self.budget, now, |state| {
                full = matches!(
                    out.try_send(FlowRecord::State(state)),
                    Err(TrySendError::Full(_))
                );
                !full
            });
        if full {
            // The sweep resumes with the flow that did not fit at the next iteration: nothing is lost, the
            // sweep is only later. (Retrying the whole slice instead refilled the queue with its head again
            // and again: a sweep, and so a resync, that never ended while the sender drained less than a slice
            // per iteration.)
            self.cursor = next;
            return;
        }
        self.cursor = next;
        if next == 0 {
            self.sweeping = false;
            self.next_sweep = now + self.refresh_ms;
            if self.resync_sweep {
                self.resync_sweep = false;
                resync.store(false, Relaxed);
            }
        }
    }
}

/// Queues one update of worker `index`; a full queue is counted and answered by a resync of that worker's
/// table (a lost end is not: the standby expires the flow by its timeouts).
#[inline]
fn send(shared: &SyncShared, index: usize, out: &Sender<FlowRecord>, record: FlowRecord) {
    if let Err(TrySendError::Full(_)) = out.try_send(record) {
        let lost = &shared.lost[index];
        lost.store(lost.load(Relaxed) + 1, Relaxed);
        shared.resync[index].store(true, Relaxed);
    }
}

/// A batch kept until acknowledged.
struct Unacked {
    seq: u64,
    records: u64,
    frame: Vec<u8>,
}

/// The active's sync thread: batches the workers' updates and sends them to `peer` (see the module docs).
/// While this member is standby it discards what the workers queue and holds no connection.
pub fn run_sender(
    shared: &SyncShared,
    outs: &[Receiver<FlowRecord>],
    peer: SocketAddr,
    role: &RoleCell,
    stop: &AtomicBool,
) {
    let mut conn: Option<TcpStream> = None;
    let mut unacked: VecDeque<Unacked> = VecDeque::new();
    let mut seq = 0u64;
    let mut record = [0u8; RECORD_LEN];
    let mut acks: Vec<u8> = Vec::new();
    while !stop.load(Relaxed) {
        if role.is_standby() {
            for rx in outs {
                while rx.try_recv().is_ok() {}
            }
            conn = None;
            shared.connected.store(false, Relaxed);
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let Some(stream) = conn.as_mut() else {
            match TcpStream::connect_timeout(&peer, Duration::from_secs(1)) {
                Ok(s) => {
                    acks.clear();
                    let _ = s.set_nodelay(true);
                    let _ = s.set_read_timeout(Some(Duration::from_millis(2)));
                    // A peer that stops reading ends the connection rather than holding this thread (and the
                    // gateway's shutdown) forever.
                    let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                    conn = Some(s);
                    shared.connected.store(true, Relaxed);
                    // A peer (re)joined: what it missed is sent again, and every table swept for it.
                    let mut ok = true;
                    for b in &unacked {
                        shared.resent.fetch_add(b.records, Relaxed);
                        if let Some(s) = conn.as_mut() {
                            ok &= s.write_all(&b.frame).is_ok();
                        }
                    }
                    if !ok {
                        conn = None;
                        shared.connected.store(false, Relaxed);
                    }
                    shared.request_resync();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
            continue;
        };
        let mut wrote = false;
        let mut failed = false;
        // Batches go out back to back, up to a bound per turn, before the acknowledgements are read: one batch
        // per round trip (stop and wait) held the pair to about 12 000 updates per second.
        for _ in 0..BATCHES_PER_TURN {
            let mut round = false;
            for (w, rx) in outs.iter().enumerate() {
                let mut frame = Vec::with_capacity(BATCH_HEADER + BATCH_RECORDS * RECORD_LEN);
                let mut count = 0u16;
                frame.extend_from_slice(&[BATCH]);
                frame.extend_from_slice(&(seq + 1).to_be_bytes());
                frame.extend_from_slice(&(w as u16).to_be_bytes());
                frame.extend_from_slice(&[0, 0]);
                while usize::from(count) < BATCH_RECORDS {
                    let Ok(r) = rx.try_recv() else { break };
                    r.emit(&mut record);
                    frame.extend_from_slice(&record);
                    count += 1;
                }
                if count == 0 {
                    continue;
                }
                frame[11..13].copy_from_slice(&count.to_be_bytes());
                seq += 1;
                round = true;
                failed |= stream.write_all(&frame).is_err();
                shared.sent.fetch_add(u64::from(count), Relaxed);
                shared.lag.fetch_add(u64::from(count), Relaxed);
                unacked.push_back(Unacked {
                    seq,
                    records: u64::from(count),
                    frame,
                });
                if unacked.len() > MAX_UNACKED {
                    if let Some(old) = unacked.pop_front() {
                        shared.dropped.fetch_add(old.records, Relaxed);
                        shared.lag.fetch_sub(old.records, Relaxed);
                        shared.request_resync();
                    }
                }
            }
            wrote |= round;
            if !round || failed {
                break;
            }
        }
        // Acknowledgements: whatever has arrived (the read times out at once when nothing has); an ack split
        // across reads waits in `acks` for its rest.
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => acks.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let whole = acks.len() - acks.len() % 9;
        for ack in acks[..whole].chunks_exact(9) {
            if ack[0] != ACK {
                failed = true;
                break;
            }
            let upto = u64::from_be_bytes(ack[1..9].try_into().unwrap_or_default());
            while unacked.front().is_some_and(|b| b.seq <= upto) {
                if let Some(b) = unacked.pop_front() {
                    shared.acked.fetch_add(b.records, Relaxed);
                    shared.lag.fetch_sub(b.records, Relaxed);
                }
            }
        }
        acks.drain(..whole);
        if failed {
            conn = None;
            shared.connected.store(false, Relaxed);
        } else if !wrote {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// The standby's side: accepts the active's connection on `listener`, hands each record to the inbox of the
/// worker that sent it, and acknowledges each batch (see the module docs).
pub fn run_receiver(
    shared: &SyncShared,
    listener: TcpListener,
    inboxes: &[Sender<FlowRecord>],
    stop: &AtomicBool,
) {
    let _ = listener.set_nonblocking(true);
    while !stop.load(Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.receiving.store(true, Relaxed);
                serve(shared, &listener, stream, inboxes, stop);
                shared.receiving.store(false, Relaxed);
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sets a connection from the peer up for [`serve`].
fn configure(stream: &TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
}

fn serve(
    shared: &SyncShared,
    listener: &TcpListener,
    mut stream: TcpStream,
    inboxes: &[Sender<FlowRecord>],
    stop: &AtomicBool,
) {
    configure(&stream);
    // Records are read through a buffer (a read per record was a system call per record); acks are written
    // to the stream itself.
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::with_capacity(1 << 16, clone);
    let mut header = [0u8; BATCH_HEADER];
    let mut record = [0u8; RECORD_LEN];
    while !stop.load(Relaxed) {
        // A timeout before a frame starts checks `stop`, and takes a newer connection from the peer if one
        // waits (a peer that vanished without closing leaves the old one silent forever); a timeout within a
        // frame ends the connection (the active sends its unacknowledged batches again).
        match reader.read(&mut header[..1]) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Ok((newer, _)) = listener.accept() {
                    let Ok(clone) = newer.try_clone() else {
                        return;
                    };
                    stream = newer;
                    configure(&stream);
                    reader = BufReader::with_capacity(1 << 16, clone);
                }
                continue;
            }
            Err(_) => return,
        }
        if header[0] != BATCH || reader.read_exact(&mut header[1..]).is_err() {
            return;
        }
        let seq = u64::from_be_bytes(header[1..9].try_into().unwrap_or_default());
        let worker = usize::from(u16::from_be_bytes([header[9], header[10]]));
        let count = u16::from_be_bytes([header[11], header[12]]);
        for _ in 0..count {
            if reader.read_exact(&mut record).is_err() {
                return;
            }
            let Ok(r) = FlowRecord::parse(&record) else {
                return;
            };
            shared.received.fetch_add(1, Relaxed);
            if let Some(inbox) = inboxes.get(worker) {
                if inbox.try_send(r).is_err() {
                    shared.dropped.fetch_add(1, Relaxed);
                }
            }
        }
        let mut ack = [0u8; 9];
        ack[0] = ACK;
        ack[1..9].copy_from_slice(&seq.to_be_bytes());
        if stream.write_all(&ack).is_err() {
            return;
        }
    }
}
