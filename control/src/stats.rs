//! `GET /api/v1/stats`: the gateway's counters and rates for the console's dashboard, from the metrics poller's
//! last two good readings of the dataplane's `counters` report. A request never reaches the dataplane.
//!
//! Rates are the deltas between the last two good readings divided by the time between them. They are `null`
//! at the first reading and whenever a counter went backwards (the dataplane restarted between the readings):
//! a negative or wrapped rate would be a lie. While the dataplane cannot be read, only `up`, `last_error` and
//! the poller's state are given; no stale number is repeated.

use serde_json::{json, Map, Value};

use crate::metrics::{went_backwards, Reading};
use crate::time;
use protocol::{PortCounters, WorkerSnapshot};

/// The `stats` answer for the poller's current readings.
pub(crate) fn stats(r: &Reading) -> Value {
    let (Some(cur), Some((read_at, at)), true) = (&r.report, r.read_at, r.up) else {
        return json!({
            "up": false,
            "read_at": null,
            "interval_s": null,
            "policy_version": null,
            "last_error": r.last_error.clone().unwrap_or_else(|| "not read yet".into()),
            "totals": null,
            "rates": null,
            "workers": [],
            "ports": [],
        });
    };
    // The previous reading counts only if nothing went backwards since (same dataplane process).
    let prev = r
        .previous
        .as_ref()
        .map(|(p, then)| (p, at.saturating_duration_since(*then).as_secs_f64()))
        .filter(|(p, dt)| *dt > 0.0 && !went_backwards(p, cur));
    let t = &cur.totals;
    let drops_total: u64 = t.drops.values().sum();
    let rates = prev.map(|(p, dt)| {
        let (a, b) = (&p.totals, t);
        let per_s = |new: u64, old: u64| new.saturating_sub(old) as f64 / dt;
        let by_reason: Map<String, Value> = b
            .drops
            .iter()
            .map(|(k, n)| {
                let old = a.drops.get(k).copied().unwrap_or(0);
                (k.clone(), json!(per_s(*n, old)))
            })
            .collect();
        json!({
            "rx_pps": per_s(b.rx_packets, a.rx_packets),
            "tx_pps": per_s(b.tx_packets, a.tx_packets),
            "drops_pps": per_s(drops_total, a.drops.values().sum()),
            "new_flows_ps": per_s(b.flows_created, a.flows_created),
            "closed_flows_ps": per_s(b.flows_closed, a.flows_closed),
            "would_deny_pps": per_s(b.would_deny, a.would_deny),
            "drops_pps_by_reason": by_reason,
        })
    });
    let workers: Vec<Value> = cur
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let rx_pps = prev.and_then(|(p, dt)| {
                let old = p.workers.get(i)?;
                Some(w.rx_packets.checked_sub(old.rx_packets)? as f64 / dt)
            });
            json!({
                "worker": i,
                "rx_packets": w.rx_packets,
                "tx_packets": w.tx_packets,
                "flows_active": w.flows_active,
                "busy_ratio": r.busy_ratio.get(i).copied().unwrap_or(0.0),
                "rx_pps": rx_pps,
            })
        })
        .collect();
    let ports: Vec<Value> = cur
        .ports
        .iter()
        .map(|port| {
            let old = prev.and_then(|(p, dt)| {
                let o = p.ports.iter().find(|o| o.name == port.name)?;
                (!port_went_backwards(o, port)).then_some((o, dt))
            });
            let rate = |f: fn(&PortCounters) -> u64, scale: f64| {
                old.map(|(o, dt)| (f(port) - f(o)) as f64 * scale / dt)
            };
            json!({
                "name": port.name,
                "rx_packets": port.rx_packets,
                "tx_packets": port.tx_packets,
                "rx_bytes": port.rx_bytes,
                "tx_bytes": port.tx_bytes,
                "rx_missed": port.rx_missed,
                "rx_errors": port.rx_errors,
                "tx_errors": port.tx_errors,
                "rx_nombuf": port.rx_nombuf,
                "rx_pps": rate(|p| p.rx_packets, 1.0),
                "tx_pps": rate(|p| p.tx_packets, 1.0),
                "rx_bps": rate(|p| p.rx_bytes, 8.0),
                "tx_bps": rate(|p| p.tx_bytes, 8.0),
            })
        })
        .collect();
    json!({
        "up": true,
        "read_at": time::rfc3339(read_at),
        "interval_s": prev.map(|(_, dt)| dt),
        "policy_version": cur.policy_version,
        "last_error": null,
        "totals": totals(t, drops_total),
        "rates": rates,
        "workers": workers,
        "ports": ports,
    })
}

fn totals(t: &WorkerSnapshot, drops_total: u64) -> Value {
    json!({
        "rx_packets": t.rx_packets,
        "tx_packets": t.tx_packets,
        "flows_active": t.flows_active,
        "flows_created": t.flows_created,
        "flows_closed": t.flows_closed,
        "flows_evicted": t.flows_evicted,
        "would_deny": t.would_deny,
        "rejects_sent": t.rejects_sent,
        "drops": t.drops,
        "drops_total": drops_total,
    })
}

fn port_went_backwards(old: &PortCounters, new: &PortCounters) -> bool {
    new.rx_packets < old.rx_packets
        || new.tx_packets < old.tx_packets
        || new.rx_bytes < old.rx_bytes
        || new.tx_bytes < old.tx_bytes
}

#[cfg(test)]
mod tests {
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
}
