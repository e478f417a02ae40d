use std::time::{Duration, Instant, SystemTime};

use protocol::CountersReport;

use super::*;

fn report(rx: u64, drops: u64, port_bytes: u64) -> CountersReport {
    let w = WorkerSnapshot {
        rx_packets: rx,
        tx_packets: rx - drops,
        flows_created: rx / 10,
        drops: [("policy_deny".to_string(), drops)].into(),
        ..Default::default()
    };
    CountersReport {
        policy_version: Some(3),
        totals: w.clone(),
        workers: vec![w],
        ports: vec![PortCounters {
            name: "a".into(),
            rx_packets: rx,
            rx_bytes: port_bytes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn reading(cur: CountersReport, prev: Option<(CountersReport, Duration)>) -> Reading {
    let at = Instant::now() + Duration::from_secs(10);
    Reading {
        up: true,
        report: Some(cur),
        read_at: Some((SystemTime::now(), at)),
        previous: prev.map(|(p, ago)| (p, at - ago)),
        busy_ratio: vec![0.25],
        ..Default::default()
    }
}

#[test]
fn rates_are_deltas_over_the_interval() {
    let r = reading(
        report(3000, 300, 64_000),
        Some((report(1000, 100, 32_000), Duration::from_secs(2))),
    );
    let v = stats(&r);
    assert_eq!(v["up"], true);
    assert_eq!(v["interval_s"], 2.0);
    assert_eq!(v["policy_version"], 3);
    assert_eq!(v["totals"]["rx_packets"], 3000);
    assert_eq!(v["totals"]["drops_total"], 300);
    assert_eq!(v["totals"]["drops"]["policy_deny"], 300);
    let rates = &v["rates"];
    assert_eq!(rates["rx_pps"], 1000.0);
    assert_eq!(rates["tx_pps"], 900.0);
    assert_eq!(rates["drops_pps"], 100.0);
    assert_eq!(rates["new_flows_ps"], 100.0);
    assert_eq!(rates["drops_pps_by_reason"]["policy_deny"], 100.0);
    assert_eq!(v["workers"][0]["rx_pps"], 1000.0);
    assert_eq!(v["workers"][0]["busy_ratio"], 0.25);
    assert_eq!(v["ports"][0]["rx_pps"], 1000.0);
    assert_eq!(v["ports"][0]["rx_bps"], 128_000.0);
    assert_eq!(v["ports"][0]["tx_bps"], 0.0);
}

#[test]
fn no_rates_at_the_first_reading_or_across_a_restart() {
    let v = stats(&reading(report(3000, 300, 64_000), None));
    assert_eq!(v["totals"]["rx_packets"], 3000);
    assert!(v["rates"].is_null() && v["interval_s"].is_null(), "{v}");
    assert!(v["workers"][0]["rx_pps"].is_null());
    assert!(v["ports"][0]["rx_pps"].is_null());
    // The dataplane restarted: its counters are lower than before.
    let v = stats(&reading(
        report(50, 5, 1000),
        Some((report(3000, 300, 64_000), Duration::from_secs(1))),
    ));
    assert!(v["rates"].is_null(), "{v}");
    assert!(v["workers"][0]["rx_pps"].is_null());
    assert!(v["ports"][0]["rx_bps"].is_null());
    assert_eq!(v["totals"]["rx_packets"], 50);
}

#[test]
fn down_repeats_no_stale_number() {
    let mut r = reading(
        report(3000, 300, 64_000),
        Some((report(1000, 100, 32_000), Duration::from_secs(2))),
    );
    r.up = false;
    r.last_error = Some("dataplane unreachable".into());
    let v = stats(&r);
    assert_eq!(
        v,
        json!({"up": false, "read_at": null, "interval_s": null, "policy_version": null,
                   "last_error": "dataplane unreachable", "totals": null, "rates": null,
                   "workers": [], "ports": []})
    );
}
