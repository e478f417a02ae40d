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

/// The `stats` answer for an HA pair, from its members' readings (`members`: each one's name and reading).
/// Packet, flow and drop counters and their rates are the members' summed: traffic crosses one member or the
/// other, so their sum is the pair's, across failovers. Not summed: `flows_active` is the active member's (the
/// standby tracks copies of the same connections; without a sole active member, the larger count), and the
/// rates are `null` while any member that answers has none (its first reading, or it restarted). Workers and
/// ports are listed per member, each naming its `gateway`; `last_error` names the members that cannot be read.
pub(crate) fn pair_stats(members: &[(&str, &Reading)]) -> Value {
    let answers: Vec<(&str, Value, bool)> = members
        .iter()
        .map(|(name, r)| {
            let active =
                r.ha.as_ref()
                    .is_some_and(|h| h.role == protocol::Role::Active);
            (*name, stats(r), active)
        })
        .collect();
    let up: Vec<&(&str, Value, bool)> =
        answers.iter().filter(|(_, s, _)| s["up"] == true).collect();
    let errors: Vec<String> = answers
        .iter()
        .filter(|(_, s, _)| s["up"] != true)
        .map(|(name, s, _)| format!("{name}: {}", s["last_error"].as_str().unwrap_or("not read")))
        .collect();
    // Null when a member that answers has none (the rates after its restart, say): a partial sum would lie.
    let summed = |field: &str| -> Value {
        let mut sum: Option<Value> = None;
        for (_, s, _) in &up {
            let v = &s[field];
            if v.is_null() {
                return Value::Null;
            }
            match &mut sum {
                Some(x) => add_numbers(x, v),
                None => sum = Some(v.clone()),
            }
        }
        sum.unwrap_or(Value::Null)
    };
    let mut totals = summed("totals");
    if !totals.is_null() {
        let flows =
            |(_, s, _): &&(&str, Value, bool)| s["totals"]["flows_active"].as_u64().unwrap_or(0);
        let sole_active = match up
            .iter()
            .filter(|(_, _, active)| *active)
            .collect::<Vec<_>>()[..]
        {
            [one] => Some(flows(one)),
            _ => None,
        };
        totals["flows_active"] =
            json!(sole_active.unwrap_or_else(|| up.iter().map(flows).max().unwrap_or(0)));
    }
    let versions: Vec<&Value> = up.iter().map(|(_, s, _)| &s["policy_version"]).collect();
    let version = match versions.split_first() {
        Some((v, rest)) if rest.iter().all(|o| o == v) => (*v).clone(),
        _ => Value::Null,
    };
    let rows = |field: &str| -> Vec<Value> {
        answers
            .iter()
            .flat_map(|(name, s, _)| {
                s[field]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |mut row| {
                        row["gateway"] = json!(name);
                        row
                    })
            })
            .collect()
    };
    // RFC 3339 times in the same (UTC) form order as strings.
    let read_at = up
        .iter()
        .filter_map(|(_, s, _)| s["read_at"].as_str())
        .max();
    let interval_s = up
        .iter()
        .filter_map(|(_, s, _)| s["interval_s"].as_f64())
        .reduce(f64::max);
    json!({
        "up": !up.is_empty(),
        "members": members.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
        "read_at": read_at,
        "interval_s": interval_s,
        "policy_version": version,
        "last_error": (!errors.is_empty()).then(|| errors.join("; ")),
        "totals": totals,
        "rates": summed("rates"),
        "workers": rows("workers"),
        "ports": rows("ports"),
    })
}

/// Adds every number of `b` to the number at the same place in `a` (objects by key; what `a` lacks is taken
/// from `b`). Whole numbers stay whole.
fn add_numbers(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(k) {
                    Some(x) => add_numbers(x, v),
                    None => {
                        a.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (a @ Value::Number(_), Value::Number(n)) => {
            *a = match (a.as_u64(), n.as_u64()) {
                (Some(x), Some(y)) => json!(x + y),
                _ => json!(a.as_f64().unwrap_or(0.0) + n.as_f64().unwrap_or(0.0)),
            };
        }
        _ => {}
    }
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
