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

/// `reading` of an HA member with `role` and `flows` tracked connections.
fn member(
    cur: CountersReport,
    prev: Option<(CountersReport, Duration)>,
    role: protocol::Role,
    flows: u64,
) -> Reading {
    let mut cur = cur;
    cur.totals.flows_active = flows;
    let mut r = reading(cur, prev);
    r.ha = Some(protocol::HaStatus {
        role,
        role_changes: 1,
        links: Vec::new(),
        sync: None,
        desired: Some(role),
        held: None,
        instance: None,
        peer: None,
        heartbeats: None,
    });
    r
}

#[test]
fn a_pairs_counters_and_rates_are_its_members_summed() {
    use protocol::Role::{Active, Standby};
    let active = member(
        report(3000, 300, 64_000),
        Some((report(1000, 100, 32_000), Duration::from_secs(2))),
        Active,
        40,
    );
    // The standby forwards nothing (its drops are `standby`) and holds copies of the active's connections.
    let standby = member(
        report(500, 500, 1000),
        Some((report(300, 300, 600), Duration::from_secs(2))),
        Standby,
        38,
    );
    let v = pair_stats(&[("one", &active), ("two", &standby)]);
    assert_eq!(v["up"], true);
    assert_eq!(v["members"], json!(["one", "two"]));
    assert_eq!(v["policy_version"], 3);
    assert!(v["last_error"].is_null(), "{v}");
    let t = &v["totals"];
    assert_eq!(t["rx_packets"], 3500);
    assert_eq!(t["tx_packets"], 2700);
    assert_eq!(t["drops_total"], 800);
    assert_eq!(t["drops"]["policy_deny"], 800);
    assert_eq!(
        t["flows_active"], 40,
        "the active member's, not a sum with its copies: {v}"
    );
    assert_eq!(v["rates"]["rx_pps"], 1100.0);
    assert_eq!(v["rates"]["drops_pps_by_reason"]["policy_deny"], 200.0);
    assert_eq!(v["interval_s"], 2.0);
    // Workers and ports per member.
    let ports = v["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(
        (&ports[0]["gateway"], &ports[1]["gateway"]),
        (&json!("one"), &json!("two"))
    );
    assert_eq!(v["workers"][1]["gateway"], "two");

    // A member restarted: no rates until it has two readings of its own; totals still add up.
    let restarted = member(
        report(50, 5, 1000),
        Some((report(3000, 300, 64_000), Duration::from_secs(1))),
        Standby,
        0,
    );
    let v = pair_stats(&[("one", &active), ("two", &restarted)]);
    assert!(v["rates"].is_null(), "{v}");
    assert_eq!(v["totals"]["rx_packets"], 3050);
    // A member down: the other's numbers, and why the first is missing.
    let mut down = reading(report(1, 0, 1), None);
    down.up = false;
    down.last_error = Some("unreachable".into());
    let v = pair_stats(&[("one", &down), ("two", &standby)]);
    assert_eq!(v["up"], true);
    assert_eq!(v["last_error"], "one: unreachable");
    assert_eq!(v["totals"]["rx_packets"], 500);
    assert_eq!(
        v["totals"]["flows_active"], 38,
        "no member active: the larger count"
    );
    assert_eq!(v["rates"]["rx_pps"], 100.0);
    // Both down.
    let v = pair_stats(&[("one", &down), ("two", &down)]);
    assert_eq!(v["up"], false);
    assert!(v["totals"].is_null() && v["rates"].is_null(), "{v}");
}
