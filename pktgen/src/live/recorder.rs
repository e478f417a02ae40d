//! What came back, and the figures of a run.
//!
//! A stamped packet (see [`super::signature`]) is matched by its sequence
//! number: the packet number says which template it was, hence its group
//! and flow; the TSC in the stamp gives its latency; a number seen twice is
//! a duplicate; a number lower than the highest already received on the same
//! port is a reordered packet. A packet without a stamp (too small to carry
//! one) is matched by its 5-tuple only: its group's arrivals are counted and
//! compared with what the group sent, so loss and verdicts are checked for
//! it, but it has no latency and no reordering figure. Frames that match
//! nothing we sent (the gateway's own traffic, a stamp of another trial) are
//! counted apart and never as received.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::plan::{Dir, Plan};
use super::signature;
use crate::verdicts::Expect;

/// Bits of the sequence number that count packets; the trial is above.
pub const PACKET_BITS: u32 = 48;
const PACKET_MASK: u64 = (1 << PACKET_BITS) - 1;

/// The sequence number of packet `n` of `trial`.
pub fn seq(trial: u16, n: u64) -> u64 {
    (u64::from(trial) << PACKET_BITS) | (n & PACKET_MASK)
}

/// What the sender did.
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Packets handed to the device, per template.
    pub per_template: Vec<u64>,
    /// TSC of the first and the last transmission.
    pub first_tsc: u64,
    /// See `first_tsc`.
    pub last_tsc: u64,
    /// Packets built but never accepted by the device (freed at the end).
    pub unsent: u64,
}

impl Sent {
    /// Zero counts for `templates` templates.
    pub fn new(templates: usize) -> Sent {
        Sent {
            per_template: vec![0; templates],
            ..Sent::default()
        }
    }

    /// Packets transmitted.
    pub fn total(&self) -> u64 {
        self.per_template.iter().sum()
    }
}

/// Receive-side accounting of one trial.
#[derive(Debug, Clone)]
pub struct Recorder {
    trial: u16,
    templates: u64,
    hz: u64,
    latency_ns: Histogram<u64>,
    seen: Vec<u64>,
    highest: [Option<u64>; 2],
    group_rx: Vec<u64>,
    /// Stamped packets matched (duplicates excluded).
    pub stamped: u64,
    /// Unstamped packets matched to a group by their tuple.
    pub unstamped: u64,
    /// Stamped packets whose number had already been received.
    pub duplicates: u64,
    /// Stamped packets that arrived after a higher-numbered one on the same port.
    pub reordered: u64,
    /// Stamps of another trial (late arrivals from an earlier one).
    pub stale: u64,
    /// Frames that match nothing that was sent.
    pub foreign: u64,
}

impl Recorder {
    /// Accounting for `trial` of `plan`, with TSC frequency `hz`.
    pub fn new(plan: &Plan, trial: u16, hz: u64) -> Recorder {
        Recorder {
            trial,
            templates: plan.templates.len() as u64,
            hz: hz.max(1),
            // Auto-resizing, 3 significant digits.
            latency_ns: Histogram::new(3).expect("3 significant digits is a valid precision"),
            seen: Vec::new(),
            highest: [None; 2],
            group_rx: vec![0; plan.groups.len()],
            stamped: 0,
            unstamped: 0,
            duplicates: 0,
            reordered: 0,
            stale: 0,
            foreign: 0,
        }
    }

    /// Accounts for `frame`, received on `side` (0: `--tx` port, 1: `--rx`
    /// port) at TSC `now`.
    pub fn record(&mut self, plan: &Plan, side: usize, frame: &[u8], now: u64) {
        let parsed = net::parse::parse(frame).ok();
        let stamp = parsed
            .as_ref()
            .and_then(|p| signature::slot_parsed(p, frame))
            .and_then(|off| signature::read_at(frame, off));
        let Some(stamp) = stamp else {
            match plan.group_of_parsed(parsed.as_ref()) {
                Some(g) => {
                    self.group_rx[g as usize] += 1;
                    self.unstamped += 1;
                }
                None => self.foreign += 1,
            }
            return;
        };
        if stamp.seq >> PACKET_BITS != u64::from(self.trial) {
            self.stale += 1;
            return;
        }
        let n = stamp.seq & PACKET_MASK;
        let (word, bit) = ((n / 64) as usize, n % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.stamped += 1;
        let template = &plan.templates[(n % self.templates) as usize];
        self.group_rx[template.group as usize] += 1;
        let highest = &mut self.highest[side.min(1)];
        match *highest {
            Some(h) if h > n => self.reordered += 1,
            _ => *highest = Some(n),
        }
        let cycles = now.saturating_sub(stamp.tsc);
        let ns = u128::from(cycles) * 1_000_000_000 / u128::from(self.hz);
        let ns = u64::try_from(ns).unwrap_or(u64::MAX);
        // `record` grows the histogram as needed (`saturating_record` would
        // clamp to its current range); only values beyond any range clamp.
        if self.latency_ns.record(ns).is_err() {
            self.latency_ns.saturating_record(ns);
        }
    }

    /// Packets matched so far (stamped and unstamped).
    pub fn received(&self) -> u64 {
        self.stamped + self.unstamped
    }

    /// Builds the report of the trial.
    pub fn report(&self, plan: &Plan, sent: &Sent, target_pps: Option<f64>) -> Report {
        let mut group_sent = vec![0u64; plan.groups.len()];
        let (mut stamped_sent, mut unstamped_sent) = (0, 0);
        for (t, &n) in plan.templates.iter().zip(&sent.per_template) {
            group_sent[t.group as usize] += n;
            if t.slot.is_some() {
                stamped_sent += n;
            } else {
                unstamped_sent += n;
            }
        }
        let sent_total = sent.total();
        // Unstamped arrivals beyond what a group sent are not matches.
        let matched: u64 = group_sent
            .iter()
            .zip(&self.group_rx)
            .map(|(&s, &r)| s.min(r))
            .sum();
        let secs = sent.last_tsc.saturating_sub(sent.first_tsc) as f64 / self.hz as f64;
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let bytes: u64 = plan
            .templates
            .iter()
            .zip(&sent.per_template)
            .map(|(t, &n)| t.bytes.len() as u64 * n)
            .sum();
        let h = &self.latency_ns;
        let latency = (!h.is_empty()).then(|| Latency {
            samples: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        });
        let verdicts =
            (!plan.verdicts.is_empty()).then(|| verdict_report(plan, &group_sent, &self.group_rx));
        let loss = sent_total.saturating_sub(matched);
        Report {
            target_pps,
            duration_s: secs,
            sent: sent_total,
            received: matched,
            offered_pps: rate(sent_total),
            received_pps: rate(matched),
            offered_bits_per_s: rate(bytes) * 8.0,
            loss,
            loss_ratio: if sent_total > 0 {
                loss as f64 / sent_total as f64
            } else {
                0.0
            },
            stamped: Counts {
                sent: stamped_sent,
                received: self.stamped,
            },
            unstamped: Counts {
                sent: unstamped_sent,
                received: self.unstamped,
            },
            latency_ns: latency,
            reordered: self.reordered,
            duplicates: self.duplicates,
            stale: self.stale,
            foreign: self.foreign,
            tx_unsent: sent.unsent,
            verdicts,
        }
    }
}

fn verdict_report(plan: &Plan, group_sent: &[u64], group_rx: &[u64]) -> VerdictReport {
    // [flow] -> (sent, received) per direction.
    let mut per_flow = vec![[(0u64, 0u64); 2]; plan.verdicts.len()];
    let mut unlabelled = Counts::default();
    for (g, group) in plan.groups.iter().enumerate() {
        let (s, r) = (group_sent[g], group_rx[g]);
        match group.flow {
            Some(f) => {
                let d = match group.dir {
                    Dir::Forward => 0,
                    Dir::Reverse => 1,
                };
                per_flow[f][d].0 += s;
                per_flow[f][d].1 += r;
            }
            None => {
                unlabelled.sent += s;
                unlabelled.received += r.min(s);
            }
        }
    }
    let mut rep = VerdictReport {
        flows: plan.verdicts.len(),
        flows_sent: 0,
        pass_ok: 0,
        drop_ok: 0,
        mismatches: Vec::new(),
        expected_drop_packets: 0,
        unlabelled,
    };
    for (v, [(fs, fr), (rs, rr)]) in plan.verdicts.iter().zip(per_flow) {
        if fs + rs == 0 {
            continue;
        }
        rep.flows_sent += 1;
        let ok = match v.expect {
            Expect::Pass => fr >= fs && rr >= rs,
            Expect::Drop => {
                rep.expected_drop_packets += fs;
                fr == 0
            }
        };
        match (ok, v.expect) {
            (true, Expect::Pass) => rep.pass_ok += 1,
            (true, Expect::Drop) => rep.drop_ok += 1,
            (false, _) => rep.mismatches.push(Mismatch {
                flow: v.flow,
                expect: v.expect,
                decision: v.decision.clone(),
                sent: fs,
                received: fr,
                reply_sent: rs,
                reply_received: rr,
            }),
        }
    }
    rep
}

/// Sent and received packets of a kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Packets sent.
    pub sent: u64,
    /// Packets received (matched).
    pub received: u64,
}

/// Latency percentiles of stamped packets, in nanoseconds (TSC based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Packets measured.
    pub samples: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest.
    pub max: u64,
}

/// A flow whose packets did not meet its expected verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Flow index (sidecar `flow`).
    pub flow: u32,
    /// Expected verdict.
    pub expect: Expect,
    /// The sidecar's reason for it.
    pub decision: String,
    /// Originator packets sent.
    pub sent: u64,
    /// Originator packets received.
    pub received: u64,
    /// Reply packets sent.
    pub reply_sent: u64,
    /// Reply packets received.
    pub reply_received: u64,
}

/// Verdicts checked against the sidecar. A `pass` flow is met when every
/// packet sent, both ways, arrived; a `drop` flow when none of its
/// originator packets arrived (its replies, if the pcap has any, may be
/// allowed as flows of their own and are not judged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictReport {
    /// Flows in the sidecar.
    pub flows: usize,
    /// Flows of which at least one packet was sent.
    pub flows_sent: usize,
    /// `pass` flows met.
    pub pass_ok: usize,
    /// `drop` flows met.
    pub drop_ok: usize,
    /// Flows not met.
    pub mismatches: Vec<Mismatch>,
    /// Originator packets of `drop` flows sent (part of `loss`, by design).
    pub expected_drop_packets: u64,
    /// Packets that belong to no sidecar flow.
    pub unlabelled: Counts,
}

/// The figures of one run (or one trial of a search).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The rate asked for (`None`: as fast as possible).
    pub target_pps: Option<f64>,
    /// From the first to the last transmission.
    pub duration_s: f64,
    /// Packets transmitted.
    pub sent: u64,
    /// Packets received and matched to one sent.
    pub received: u64,
    /// `sent / duration_s`.
    pub offered_pps: f64,
    /// `received / duration_s`.
    pub received_pps: f64,
    /// Offered frame bits per second (no preamble, gap or FCS).
    pub offered_bits_per_s: f64,
    /// `sent - received`.
    pub loss: u64,
    /// `loss / sent`.
    pub loss_ratio: f64,
    /// Packets that carried a stamp.
    pub stamped: Counts,
    /// Packets too small for a stamp, matched by tuple.
    pub unstamped: Counts,
    /// Latency of the stamped packets received.
    pub latency_ns: Option<Latency>,
    /// Stamped packets received after a later one.
    pub reordered: u64,
    /// Stamped packets received twice or more (the extra copies).
    pub duplicates: u64,
    /// Stamps of an earlier trial.
    pub stale: u64,
    /// Frames matching nothing sent.
    pub foreign: u64,
    /// Packets built but refused by the device until the end.
    pub tx_unsent: u64,
    /// Present when a verdict sidecar was given.
    pub verdicts: Option<VerdictReport>,
}

fn si(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.3} G", v / 1e9),
        v if v >= 1e6 => format!("{:.3} M", v / 1e6),
        v if v >= 1e3 => format!("{:.3} k", v / 1e3),
        v => format!("{v:.1} "),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = self
            .target_pps
            .map_or("as fast as possible".into(), |r| format!("{}pps", si(r)));
        writeln!(f, "target rate:  {target}")?;
        writeln!(
            f,
            "offered:      {} packets in {:.3} s = {}pps ({}bit/s)",
            self.sent,
            self.duration_s,
            si(self.offered_pps),
            si(self.offered_bits_per_s)
        )?;
        writeln!(
            f,
            "received:     {} packets = {}pps",
            self.received,
            si(self.received_pps)
        )?;
        writeln!(
            f,
            "loss:         {} packets ({:.4} %)",
            self.loss,
            self.loss_ratio * 100.0
        )?;
        match &self.latency_ns {
            Some(l) => writeln!(
                f,
                "latency (µs): p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} stamped packets)",
                l.p50 as f64 / 1e3,
                l.p90 as f64 / 1e3,
                l.p99 as f64 / 1e3,
                l.max as f64 / 1e3,
                l.samples
            )?,
            None => writeln!(f, "latency:      no stamped packet received")?,
        }
        writeln!(
            f,
            "unstamped:    {} sent, {} received (matched by 5-tuple)",
            self.unstamped.sent, self.unstamped.received
        )?;
        writeln!(
            f,
            "reordered {}, duplicates {}, stale {}, foreign {}, never sent {}",
            self.reordered, self.duplicates, self.stale, self.foreign, self.tx_unsent
        )?;
        if let Some(v) = &self.verdicts {
            writeln!(
                f,
                "verdicts:     {} flows sent of {}: {} pass ok, {} drop ok, {} mismatches",
                v.flows_sent,
                v.flows,
                v.pass_ok,
                v.drop_ok,
                v.mismatches.len()
            )?;
            for m in v.mismatches.iter().take(10) {
                writeln!(
                    f,
                    "  flow {} expected {:?} ({}): {}/{} arrived, replies {}/{}",
                    m.flow,
                    m.expect,
                    m.decision,
                    m.received,
                    m.sent,
                    m.reply_received,
                    m.reply_sent
                )?;
            }
            if v.mismatches.len() > 10 {
                writeln!(f, "  ... {} more (see the JSON)", v.mismatches.len() - 10)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
