//! The DPDK side of a live run: the EAL, the two ports, and the send and
//! receive loops.
//!
//! Sides: side 0 is the `--tx` device, side 1 the `--rx` device (they may
//! be the same device, e.g. a loopback `net_ring`). Forward packets leave on
//! side 0, replies on side 1 (see [`super::plan`]); both sides are received
//! from.
//!
//! Cores: with one EAL lcore (`--cores 0`, the default) a single loop on it
//! sends and receives in turn; with two (`--cores 0,1`) the second polls the
//! receive queues while the first sends. Each lcore spins on its core, so
//! give pktgen cores that nothing else spins on: on a 2-core machine running
//! the dataplane's worker on core 1, that leaves core 0 alone (shared with
//! the dataplane's mostly idle main thread), and the figures are then those
//! of one core generating and receiving, not the gateway's capacity.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dpdk::{lcore, tsc, tsc_hz, Burst, Eal, Mbuf, Mempool, Port, PortConfig, RxQueue, TxQueue};

use super::plan::Plan;
use super::recorder::{seq, Recorder, Report, Sent};
use super::signature::{self, Stamp};
use super::{Error, Result};

/// Packet buffer headroom DPDK reserves in every mbuf.
const HEADROOM: usize = 128;
/// Largest frame the generator sends (9000-byte MTU jumbo with a VLAN tag).
pub const MAX_FRAME: usize = 9022;

/// How to bring up DPDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// EAL lcores (`-l`); the first is the main lcore, a second one (if any)
    /// receives.
    pub cores: Vec<u32>,
    /// EAL `--file-prefix`: unique per DPDK process on the machine.
    pub file_prefix: String,
    /// Use hugepages (otherwise `--no-huge`).
    pub hugepages: bool,
    /// EAL memory in MB (`-m`).
    pub memory_mb: u32,
    /// The sending device (side 0), a vdev string such as
    /// `net_memif0,role=client,socket=/tmp/a.sock`.
    pub tx_dev: String,
    /// The receiving device (side 1).
    pub rx_dev: String,
    /// More EAL arguments, verbatim.
    pub eal_args: Vec<String>,
    /// Packets per burst (1..=64).
    pub burst: usize,
    /// Descriptors per queue.
    pub ring: u16,
    /// Mbufs in the pool.
    pub mbufs: u32,
    /// How long to wait for the ports' links to come up.
    pub link_timeout: Duration,
}

impl Setup {
    /// The EAL command line.
    pub fn eal_argv(&self) -> Vec<String> {
        let cores: Vec<String> = self.cores.iter().map(u32::to_string).collect();
        let mut a = vec![
            "bulkhead-pktgen".to_string(),
            "-l".into(),
            cores.join(","),
            format!("--main-lcore={}", self.cores.first().copied().unwrap_or(0)),
            format!("--file-prefix={}", self.file_prefix),
            "--no-pci".into(),
            "-m".into(),
            self.memory_mb.to_string(),
        ];
        if !self.hugepages {
            a.push("--no-huge".into());
        }
        a.push(format!("--vdev={}", self.tx_dev));
        if dev_name(&self.rx_dev) != dev_name(&self.tx_dev) {
            a.push(format!("--vdev={}", self.rx_dev));
        }
        a.extend(self.eal_args.iter().cloned());
        a
    }
}

/// The port name DPDK gives a vdev: the part before its first comma.
pub fn dev_name(dev: &str) -> &str {
    dev.split(',').next().unwrap_or(dev).trim()
}

/// When a trial ends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialSpec {
    /// Packets per second; `None`: as fast as possible.
    pub rate_pps: Option<f64>,
    /// Stop sending after this long...
    pub duration: Option<Duration>,
    /// ...or after this many packets, whichever comes first.
    pub count: Option<u64>,
    /// After the last packet is sent, keep receiving for at most this long
    /// (less if everything sent has arrived).
    pub drain: Duration,
    /// With replies in the plan: before the direction changes, wait until
    /// everything sent so far has arrived, or this long after the last
    /// transmission (the rest was dropped, or is late).
    pub turn_wait: Duration,
}

/// A running DPDK setup; see [`run`].
pub struct Engine<'a> {
    eal: &'a Eal,
    pool: &'a Mempool<'a>,
    ports: &'a [Port<'a>],
    rx: Vec<RxQueue<'a>>,
    tx: Vec<TxQueue<'a>>,
    /// Port index of each side.
    side_port: [usize; 2],
    rx_lcore: Option<u32>,
    plan: &'a Plan,
    hz: u64,
    burst: usize,
    trial: u16,
    stop: &'a AtomicBool,
}

/// Brings up the EAL and the ports, waits for the links, and runs `f`.
/// `stop` ends the current trial's sending early (SIGINT).
pub fn run<R>(
    setup: &Setup,
    plan: &Plan,
    stop: &AtomicBool,
    f: impl FnOnce(&mut Engine<'_>) -> Result<R>,
) -> Result<R> {
    let eal = Eal::init(&setup.eal_argv())?;
    let hz = tsc_hz(&eal);
    let data_room = u16::try_from(plan.max_frame().max(2048) + HEADROOM)
        .expect("frames are checked against MAX_FRAME");
    let pool = Mempool::new(&eal, "pktgen", setup.mbufs, 256, data_room, None)?;
    let names = [dev_name(&setup.tx_dev), dev_name(&setup.rx_dev)];
    let mut ports = vec![Port::by_name(&eal, names[0])?];
    if names[1] != names[0] {
        ports.push(Port::by_name(&eal, names[1])?);
    }
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_ring: setup.ring,
        tx_ring: setup.ring,
        promiscuous: true,
    };
    for p in &mut ports {
        p.configure(&cfg, &pool)?;
    }
    let ports = ports;
    let mut rx = Vec::new();
    let mut tx = Vec::new();
    for p in &ports {
        let q = p.start()?;
        rx.extend(q.rx);
        tx.extend(q.tx);
    }
    let started = Instant::now();
    for p in &ports {
        while !p.link_up()? {
            if started.elapsed() >= setup.link_timeout {
                return Err(Error::LinkDown {
                    port: p.name().into(),
                    waited: setup.link_timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let mut engine = Engine {
        eal: &eal,
        pool: &pool,
        ports: &ports,
        rx,
        tx,
        side_port: if ports.len() == 1 { [0, 0] } else { [0, 1] },
        rx_lcore: setup.cores.get(1).copied(),
        plan,
        hz,
        burst: setup.burst.clamp(1, dpdk::MAX_BURST),
        trial: 0,
        stop,
    };
    f(&mut engine)
}

impl Engine<'_> {
    /// TSC frequency.
    pub fn hz(&self) -> u64 {
        self.hz
    }

    /// Device counters of side 0 and side 1.
    pub fn port_stats(&self) -> Result<[dpdk::PortStats; 2]> {
        Ok([
            self.ports[self.side_port[0]].stats()?,
            self.ports[self.side_port[1]].stats()?,
        ])
    }

    /// Sends and receives one trial and reports it.
    pub fn trial(&mut self, spec: &TrialSpec) -> Result<Report> {
        self.trial = self.trial.wrapping_add(1);
        let plan = self.plan;
        let mut rec = Recorder::new(plan, self.trial, self.hz);
        let mut sent = Sent::new(plan.templates.len());
        let drain_cycles = cycles(spec.drain, self.hz);
        let side_of_port = |port: usize| usize::from(self.side_port[1] == port && port != 0);
        let sides: Vec<usize> = (0..self.rx.len()).map(side_of_port).collect();
        match self.rx_lcore {
            None => {
                let mut rx = Some((&mut self.rx[..], &mut rec, &sides[..]));
                tx_loop_parts(
                    &mut self.tx,
                    self.pool,
                    self.side_port,
                    plan,
                    self.trial,
                    self.hz,
                    self.burst,
                    self.stop,
                    spec,
                    &mut sent,
                    &mut rx,
                    None,
                );
                // Drain: receive until everything sent is in or time is up.
                let end = tsc().saturating_add(drain_cycles);
                let total = sent.total();
                let (queues, rec, sides) = rx.take().expect("set above");
                while tsc() < end && rec.received() < total {
                    poll(queues, rec, plan, sides);
                }
            }
            Some(lc) => {
                let deadline = AtomicU64::new(u64::MAX);
                let target = AtomicU64::new(u64::MAX);
                let received = AtomicU64::new(0);
                let (eal, rxq) = (self.eal, &mut self.rx);
                let rec_ref = &mut rec;
                let sides_ref = &sides[..];
                let (launched, joined) = lcore::scope(eal, |s| {
                    s.spawn(lc, || {
                        let (deadline, target, received) = (&deadline, &target, &received);
                        loop {
                            poll(rxq, rec_ref, plan, sides_ref);
                            received.store(rec_ref.received(), Ordering::Release);
                            if tsc() >= deadline.load(Ordering::Acquire)
                                || rec_ref.received() >= target.load(Ordering::Acquire)
                            {
                                break;
                            }
                        }
                    })?;
                    let mut none = None;
                    tx_loop_parts(
                        &mut self.tx,
                        self.pool,
                        self.side_port,
                        plan,
                        self.trial,
                        self.hz,
                        self.burst,
                        self.stop,
                        spec,
                        &mut sent,
                        &mut none,
                        Some(&received),
                    );
                    target.store(sent.total(), Ordering::Release);
                    deadline.store(tsc().saturating_add(drain_cycles), Ordering::Release);
                    Ok::<_, Error>(())
                });
                // An error here means the receive lcore never started;
                // nothing is left running either way (the scope joined).
                launched?;
                if !joined.panicked.is_empty() {
                    return Err(Error::RxPanicked(lc));
                }
            }
        }
        Ok(rec.report(plan, &sent, spec.rate_pps))
    }
}

type RxParts<'q, 'p, 'r> = Option<(&'q mut [RxQueue<'p>], &'r mut Recorder, &'r [usize])>;

fn cycles(d: Duration, hz: u64) -> u64 {
    u64::try_from(d.as_nanos() * u128::from(hz) / 1_000_000_000).unwrap_or(u64::MAX)
}

/// Receives one burst from each queue and accounts for it.
#[inline]
fn poll(queues: &mut [RxQueue<'_>], rec: &mut Recorder, plan: &Plan, sides: &[usize]) {
    for (q, &side) in queues.iter_mut().zip(sides) {
        let mut b = Burst::new();
        if q.rx(&mut b) > 0 {
            let now = tsc();
            for data in b.iter() {
                rec.record(plan, side, data, now);
            }
            b.clear();
        }
    }
}

/// The send loop: builds stamped packets from the plan's templates in order
/// (looping over them), paced by a token bucket on the TSC when a rate is
/// set, and hands them to the side each goes out on. Packets the device
/// refuses stay in their burst and are retried, so pcap order holds per
/// side. With `rx`, it also receives between bursts (single-core mode).
#[allow(clippy::too_many_arguments)]
fn tx_loop_parts<'p>(
    txq: &mut [TxQueue<'p>],
    pool: &'p Mempool<'p>,
    side_port: [usize; 2],
    plan: &Plan,
    trial: u16,
    hz: u64,
    burst: usize,
    stop: &AtomicBool,
    spec: &TrialSpec,
    sent: &mut Sent,
    rx: &mut RxParts<'_, '_, '_>,
    rx_count: Option<&AtomicU64>,
) {
    let t = plan.templates.len() as u64;
    let mut bursts: [Burst<'p>; 2] = [Burst::with_capacity(burst), Burst::with_capacity(burst)];
    let mut pending: [Vec<u32>; 2] = [Vec::with_capacity(burst), Vec::with_capacity(burst)];
    let start = tsc();
    let end = spec.duration.map(|d| start.saturating_add(cycles(d, hz)));
    let per_cycle = spec.rate_pps.map(|r| r / hz as f64);
    // Up to 1 ms of credit (at least a burst): a loop delayed by an
    // interrupt or a preempting thread catches up at full speed, so the
    // average rate holds, in bursts no larger than `burst`.
    // Bursts of one or two packets cost nearly as much as full ones (a
    // device call each), which would cap paced rates far below full speed:
    // wait for 20 µs worth of packets (1..=burst) before building a batch.
    let min_batch = spec
        .rate_pps
        .map_or(1.0, |r| (r * 20e-6).clamp(1.0, burst as f64));
    // With replies in the plan, a request and its reply leave on different
    // ports, and the gateway polls its ports independently: only time keeps
    // a reply behind its request. So no catch-up credit (the pacing gap
    // holds after a stall, at the cost of the average rate), and a batch
    // never mixes sides.
    let two_way = plan.templates.iter().any(|t| t.dir.out_side() == 1);
    let turn_wait = cycles(spec.turn_wait, hz);
    let mut last_side: Option<usize> = None;
    let depth = match spec.rate_pps {
        Some(_) if two_way => min_batch,
        Some(r) => (r / 1000.0).max(burst as f64),
        None => burst as f64,
    };
    let mut tokens = 0.0_f64;
    let mut last = start;
    let mut n: u64 = 0;

    let mut transmit =
        |bursts: &mut [Burst<'p>; 2], pending: &mut [Vec<u32>; 2], sent: &mut Sent| {
            for side in 0..2 {
                if bursts[side].is_empty() {
                    continue;
                }
                let k = txq[side_port[side]].tx(&mut bursts[side]);
                if k > 0 {
                    for &ti in &pending[side][..k] {
                        sent.per_template[ti as usize] += 1;
                    }
                    pending[side].drain(..k);
                    let now = tsc();
                    if sent.first_tsc == 0 {
                        sent.first_tsc = now;
                    }
                    sent.last_tsc = now;
                }
            }
        };

    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = tsc();
        if end.is_some_and(|e| now >= e) || spec.count.is_some_and(|c| n >= c) {
            break;
        }
        let mut budget = match per_cycle {
            None => burst,
            Some(pc) => {
                tokens = (tokens + now.saturating_sub(last) as f64 * pc).min(depth);
                last = now;
                if tokens >= min_batch {
                    (tokens as usize).min(burst)
                } else {
                    0
                }
            }
        };
        if let Some(c) = spec.count {
            budget = budget.min(usize::try_from(c - n).unwrap_or(usize::MAX));
        }
        let mut made = 0;
        let mut batch_side = None;
        while made < budget {
            let ti = (n % t) as usize;
            let tpl = &plan.templates[ti];
            let side = tpl.dir.out_side();
            if bursts[side].is_full() {
                break;
            }
            if two_way {
                // Hand packets to the devices in pcap order across sides:
                // the other side's queued packets go first.
                if batch_side.is_some_and(|s| s != side) || !bursts[1 - side].is_empty() {
                    break;
                }
                // A turn (a reply after requests, say) waits for what was
                // sent to come out of the gateway, as a real peer would: the
                // gateway polls its ports independently, and a stall there
                // would otherwise let the reply overtake.
                if last_side.is_some_and(|s| s != side) {
                    let received = match (rx.as_ref(), rx_count) {
                        (Some((_, rec, _)), _) => rec.received(),
                        (None, Some(c)) => c.load(Ordering::Acquire),
                        (None, None) => u64::MAX,
                    };
                    let quiet = now.saturating_sub(sent.last_tsc) >= turn_wait;
                    if received < sent.total() && !quiet {
                        break;
                    }
                }
                batch_side = Some(side);
                last_side = Some(side);
            }
            let Some(mut m) = Mbuf::alloc(pool) else {
                break;
            };
            // The pool's data room was sized for the largest template.
            let Some(buf) = m.append(tpl.bytes.len()) else {
                break;
            };
            buf.copy_from_slice(&tpl.bytes);
            if let Some((off, sum)) = tpl.slot {
                signature::write(
                    buf,
                    off,
                    sum,
                    Stamp {
                        seq: seq(trial, n),
                        tsc: now,
                    },
                );
            }
            if bursts[side].push(m).is_err() {
                break;
            }
            pending[side].push(ti as u32);
            n += 1;
            made += 1;
        }
        if per_cycle.is_some() {
            tokens -= made as f64;
        }
        transmit(&mut bursts, &mut pending, sent);
        if let Some((queues, rec, sides)) = rx.as_mut() {
            poll(queues, rec, plan, sides);
        }
    }
    // Give the device a moment to take what is still queued here.
    let flush_end = tsc().saturating_add(hz / 10);
    while (!bursts[0].is_empty() || !bursts[1].is_empty()) && tsc() < flush_end {
        transmit(&mut bursts, &mut pending, sent);
        if let Some((queues, rec, sides)) = rx.as_mut() {
            poll(queues, rec, plan, sides);
        }
    }
    sent.unsent = (bursts[0].clear() + bursts[1].clear()) as u64;
}
