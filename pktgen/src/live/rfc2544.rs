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
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A device that forwards at most `capacity` packets/s, behind a
    /// generator that offers at most `generator` packets/s; one-second trials.
    fn device(
        capacity: f64,
        generator: f64,
    ) -> impl FnMut(Option<f64>) -> Result<TrialOutcome, Infallible> {
        move |rate| {
            let offered = rate.unwrap_or(generator).min(generator);
            let sent = offered.round() as u64;
            let received = offered.min(capacity).round() as u64;
            Ok(TrialOutcome {
                sent,
                received,
                offered_pps: offered,
            })
        }
    }

    #[test]
    fn finds_the_capacity_within_the_resolution() {
        for capacity in [1.0e3, 123_456.0, 2.5e6, 9.99e6] {
            let cfg = SearchConfig {
                resolution_pps: 1000.0,
                ..SearchConfig::default()
            };
            let r = search(&cfg, device(capacity, 1.0e7)).unwrap();
            let t = r.throughput_pps.unwrap();
            assert!(t <= capacity && capacity - t <= 1000.0, "{capacity}: {t}");
            assert!(r.confirmed && !r.limited_by_generator);
            assert_eq!(r.top_pps, 1.0e7);
            assert_eq!(r.trials[0].phase, Phase::Top);
            assert_eq!(r.trials.last().unwrap().phase, Phase::Confirm);
            // log2(1e7 / 1e3) ~ 13.3 halvings, plus the top and the confirmation.
            assert!(r.trials.len() <= 16, "{} trials", r.trials.len());
        }
    }

    #[test]
    fn a_device_faster_than_the_generator_is_reported_as_such() {
        let r = search(&SearchConfig::default(), device(5.0e6, 1.0e6)).unwrap();
        assert_eq!(r.throughput_pps, Some(1.0e6));
        assert!(r.limited_by_generator);
        assert_eq!(r.trials.len(), 1);
        assert_eq!(r.trials[0].target_pps, None);
    }

    #[test]
    fn an_explicit_top_rate_is_searched_below() {
        let cfg = SearchConfig {
            max_pps: Some(50_000.0),
            resolution_pps: 100.0,
            ..SearchConfig::default()
        };
        let r = search(&cfg, device(20_000.0, 1.0e9)).unwrap();
        let t = r.throughput_pps.unwrap();
        assert!((19_900.0..=20_000.0).contains(&t), "{t}");
        assert!(r.trials.iter().all(|t| t.target_pps.unwrap() <= 50_000.0));
    }

    #[test]
    fn a_failed_confirmation_resumes_below() {
        // Passes everything up to 30k, except that the first confirmation
        // trial loses a packet (say, a burst of other traffic).
        let mut inner = device(30_000.0, 1.0e6);
        let mut confirmations = 0;
        let mut phase_of_next = Vec::new();
        let cfg = SearchConfig {
            max_pps: Some(64_000.0),
            resolution_pps: 500.0,
            ..SearchConfig::default()
        };
        let r = search(&cfg, |rate| {
            let mut o = inner(rate)?;
            phase_of_next.push(rate);
            let n = phase_of_next.len();
            // The confirmation repeats the previous passing rate; detect it by
            // the rate equal to an earlier one.
            if phase_of_next[..n - 1].contains(&rate) {
                confirmations += 1;
                if confirmations == 1 {
                    o.received -= 1;
                }
            }
            Ok::<_, Infallible>(o)
        })
        .unwrap();
        let t = r.throughput_pps.unwrap();
        let confirms: Vec<&TrialRecord> = r
            .trials
            .iter()
            .filter(|t| t.phase == Phase::Confirm)
            .collect();
        assert_eq!(confirms.len(), 2);
        assert!(!confirms[0].passed && confirms[1].passed);
        assert!(r.confirmed);
        assert!(t < confirms[0].target_pps.unwrap(), "{t}");
        assert!(t <= 30_000.0);
    }

    #[test]
    fn trials_the_generator_cannot_offer_are_flagged() {
        // The generator tops out at 40k: trials above it are short.
        let cfg = SearchConfig {
            max_pps: Some(100_000.0),
            resolution_pps: 1000.0,
            ..SearchConfig::default()
        };
        let r = search(&cfg, device(30_000.0, 40_000.0)).unwrap();
        assert!(r.short_trials() > 0);
        for t in &r.trials {
            assert_eq!(
                t.offered_short,
                t.target_pps.unwrap() > 40_000.0 / 0.95,
                "{t:?}"
            );
        }
    }

    #[test]
    fn nothing_passes_on_a_dead_device() {
        let r = search(&SearchConfig::default(), device(0.0, 1.0e6)).unwrap();
        assert_eq!(r.throughput_pps, None);
        assert!(!r.confirmed);
        assert!(r.trials.iter().all(|t| !t.passed));
    }

    #[test]
    fn loss_tolerance_accepts_small_loss() {
        // 1 % loss at every rate: fails at tolerance 0, passes at 2 %.
        let lossy = |rate: Option<f64>| {
            let r = rate.unwrap_or(1.0e5);
            Ok::<_, Infallible>(TrialOutcome {
                sent: r as u64,
                received: (r * 0.99) as u64,
                offered_pps: r,
            })
        };
        assert_eq!(
            search(&SearchConfig::default(), lossy)
                .unwrap()
                .throughput_pps,
            None
        );
        let cfg = SearchConfig {
            loss_tolerance: 0.02,
            ..SearchConfig::default()
        };
        let r = search(&cfg, lossy).unwrap();
        assert_eq!(r.throughput_pps, Some(1.0e5));
    }
}
