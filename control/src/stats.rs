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
mod tests;
