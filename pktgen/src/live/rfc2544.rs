//! The RFC 2544 (section 26.1) throughput search: the highest offered rate
//! at which the device forwards every frame, found by binary search on the
//! rate, each step a trial of fixed duration, then confirmed by one more
//! trial at the rate found.
//!
//! The search is independent of how a trial is run: it calls a closure with
//! a rate (`None`: as fast as the generator can) and gets back what was sent
//! and received. Steps:
//!
//! 1. A trial at the top rate (`max_pps`, or the generator's full speed).
//!    Zero loss there ends the search: the device is not the bottleneck
//!    (`limited_by_generator`).
//! 2. Binary search between 0 and the top: a trial with loss within
//!    `loss_tolerance` (0 by the RFC) raises the floor, any other lowers the
//!    ceiling, until the two are within `resolution_pps`.
//! 3. Confirmation at the floor. If it fails, that rate is dropped and the
//!    search resumes below it (at most `max_confirmations` times).

use serde::Serialize;

/// Parameters of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    /// The top rate; `None`: the generator's full speed, as measured by the
    /// first trial.
    pub max_pps: Option<f64>,
    /// Stop when the floor and the ceiling are this close (packets/s).
    pub resolution_pps: f64,
    /// Loss ratio a trial may have and still pass (0: RFC 2544).
    pub loss_tolerance: f64,
    /// Most trials in all, confirmations included.
    pub max_trials: usize,
    /// Most confirmation trials.
    pub max_confirmations: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            max_pps: None,
            resolution_pps: 1000.0,
            loss_tolerance: 0.0,
            max_trials: 40,
            max_confirmations: 3,
        }
    }
}

/// What a trial measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrialOutcome {
    /// Packets sent.
    pub sent: u64,
    /// Packets received.
    pub received: u64,
    /// The rate actually offered (below the target when the generator
    /// cannot keep up).
    pub offered_pps: f64,
}

impl TrialOutcome {
    /// Lost share of what was sent.
    pub fn loss_ratio(&self) -> f64 {
        if self.sent == 0 {
            return 1.0;
        }
        self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }
}

/// Why a trial was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// At the top rate.
    Top,
    /// A binary-search step.
    Search,
    /// Confirmation of the result.
    Confirm,
}

/// One trial of the search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrialRecord {
    /// Why it ran.
    pub phase: Phase,
    /// The rate asked for (`None`: full speed).
    pub target_pps: Option<f64>,
    /// What it measured.
    pub outcome: TrialOutcome,
    /// `outcome.loss_ratio()`.
    pub loss_ratio: f64,
    /// Loss within tolerance.
    pub passed: bool,
    /// The generator offered less than 95 % of the target: this trial
    /// tested a lower rate than asked (a busy or too slow generator core).
    pub offered_short: bool,
}

/// The result of a search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// The throughput: the highest confirmed zero-loss rate (packets/s), or
    /// `None` when even the lowest rate tried lost packets.
    pub throughput_pps: Option<f64>,
    /// The top rate searched from.
    pub top_pps: f64,
    /// The top rate passed: the generator, not the device, set the limit.
    pub limited_by_generator: bool,
    /// The confirmation trial at `throughput_pps` passed.
    pub confirmed: bool,
    /// Every trial, in order.
    pub trials: Vec<TrialRecord>,
}

impl SearchResult {
    /// Trials whose offered rate fell short of their target; when any
    /// passed, the throughput is only as good as the generator.
    pub fn short_trials(&self) -> usize {
        self.trials.iter().filter(|t| t.offered_short).count()
    }
}

/// Runs the search; `trial(rate)` runs one trial (`None`: full speed).
pub fn search<E>(
    cfg: &SearchConfig,
    mut trial: impl FnMut(Option<f64>) -> Result<TrialOutcome, E>,
) -> Result<SearchResult, E> {
    let mut trials = Vec::new();
    let mut run = |phase, rate: Option<f64>, trials: &mut Vec<TrialRecord>| {
        let outcome = trial(rate)?;
        let loss_ratio = outcome.loss_ratio();
        let passed = outcome.sent > 0 && loss_ratio <= cfg.loss_tolerance;
        let offered_short = rate.is_some_and(|r| outcome.offered_pps < 0.95 * r);
        trials.push(TrialRecord {
            phase,
            target_pps: rate,
            outcome,
            loss_ratio,
            passed,
            offered_short,
        });
        Ok::<_, E>((passed, outcome))
    };

    let (passed, first) = run(Phase::Top, cfg.max_pps, &mut trials)?;
    let top = cfg.max_pps.unwrap_or(first.offered_pps);
    if passed {
        return Ok(SearchResult {
            throughput_pps: Some(top),
            top_pps: top,
            limited_by_generator: true,
            confirmed: true,
            trials,
        });
    }
    let resolution = cfg.resolution_pps.max(1.0);
    // Rates that passed a search step, ascending (each raised the floor),
    // kept to fall back on when a confirmation fails.
    let mut passes: Vec<f64> = Vec::new();
    let (mut lo, mut hi) = (0.0_f64, top);
    let mut confirmations = 0;
    loop {
        while hi - lo > resolution && trials.len() < cfg.max_trials {
            let mid = (lo + hi) / 2.0;
            let (ok, _) = run(Phase::Search, Some(mid), &mut trials)?;
            if ok {
                lo = mid;
                passes.push(mid);
            } else {
                hi = mid;
            }
        }
        let Some(&best) = passes.last().filter(|&&b| b == lo) else {
            // Nothing passed in this range.
            return Ok(SearchResult {
                throughput_pps: None,
                top_pps: top,
                limited_by_generator: false,
                confirmed: false,
                trials,
            });
        };
        if confirmations >= cfg.max_confirmations || trials.len() >= cfg.max_trials {
            return Ok(SearchResult {
                throughput_pps: Some(best),
                top_pps: top,
                limited_by_generator: false,
                confirmed: false,
                trials,
            });
        }
        confirmations += 1;
        let (ok, _) = run(Phase::Confirm, Some(best), &mut trials)?;
        if ok {
            return Ok(SearchResult {
                throughput_pps: Some(best),
                top_pps: top,
                limited_by_generator: false,
                confirmed: true,
                trials,
            });
        }
        // Resume below the rate that failed its confirmation.
        passes.retain(|&p| p < best);
        hi = best;
        lo = passes.last().copied().unwrap_or(0.0);
    }
}

#[cfg(test)]
mod tests;
