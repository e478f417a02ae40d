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
