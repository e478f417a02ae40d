//! An HA pair on the namespace bed of `testbed::pair` (two switched segments, keepalived configured as
//! docs/ha.md shows, release dataplanes, strict TCP tracking): the traffic gap of SIGKILL failovers, the
//! established connections they lose, and the connection-state sync's rate.
//!
//! * **Failovers.** K interactive TCP sessions (a line every 100 ms each) run through the pair for the whole
//!   suite. Each round SIGKILLs the active member's dataplane under a ping flood (an echo request every
//!   millisecond from side a), waits until the other member is active, and takes the ping's longest outage as
//!   the round's gap; then it starts the killed dataplane again (standby) and waits until its table holds every
//!   session again (bulk resync) and the sync is in step. The preferred member takes mastership back when it
//!   returns (keepalived preemption, after `preempt_delay`): that switch-back's gap is measured the same way.
//!   Every session must survive every round: the sessions that broke are the flows lost.
//! * **Sync rate.** New UDP flows opened through the active as fast as one Python sender can (one datagram
//!   each) for a few seconds: the sync updates the peer acknowledged per second, from the start until the sync
//!   is in step again (the flows' creations and ends, and the periodic refresh of a table kept full), and the
//!   updates counted lost (a full queue).

use std::time::{Duration, Instant};

use testbed::pair::{Pair, PairOptions};

use super::{Row, Stat, Suite};
use crate::util::{build_release, Result};

const ROUNDS: usize = 10;
const SESSIONS: usize = 20;
const SESSIONS_PORT: u16 = 5700;
const FLOWS_SECONDS: f64 = 5.0;
const PING_INTERVAL: Duration = Duration::from_millis(1);
/// Traffic before and after each role change, inside the ping flood.
const MARGIN: Duration = Duration::from_millis(300);

pub fn ha(_args: &super::Args) -> Result<Vec<Row>> {
    let bin = build_release(&["bulkhead-dataplane"])?;
    let mut pair = Pair::start(&PairOptions::new(bin.join("bulkhead-dataplane")))?;
    let sessions = pair.sessions(0, SESSIONS_PORT, SESSIONS, 100)?;
    let all_sessions = |p: &Pair, i: usize| {
        let states = p.members[i].tcp_states(SESSIONS_PORT);
        states.len() == SESSIONS && states.iter().all(|s| s == "established")
    };
    pair.wait_for("the sessions on the standby", |p| all_sessions(p, 1))?;

    let (mut gaps, mut switchbacks, mut killed) = (Vec::new(), Vec::new(), Vec::new());
    let (mut duplicates, mut switchback_lost) = (0, 0);
    for round in 1..=ROUNDS {
        let active = pair
            .active()
            .ok_or_else(|| format!("no single active member: {}", pair.describe()))?;
        let other = 1 - active;
        let flood = pair.ping_flood(PING_INTERVAL)?;
        // The rounds follow keepalived's events, so without a spread every kill would land at the same point of
        // its once-a-second liveness check: kills spread over that second instead.
        std::thread::sleep(MARGIN + Duration::from_millis(100 * round as u64 % 1000));
        pair.kill(active)?;
        pair.wait_active(other)?;
        std::thread::sleep(MARGIN);
        let ping = flood.finish()?;
        let gap = ping.longest_gap.as_secs_f64() * 1e3;
        eprintln!(
            "xtask: round {round}: {} killed, gap {gap:.0} ms ({} of {} pings lost, {} duplicates)",
            pair.members[active].name,
            ping.lost(),
            ping.sent,
            ping.duplicates
        );
        gaps.push(gap);
        killed.push(pair.members[active].name.clone());

        pair.restart(active)?;
        pair.wait_for("the bulk resync of the restarted member", |p| {
            all_sessions(p, active)
        })?;
        if active == 0 {
            // The preferred member takes mastership back after keepalived's preempt_delay.
            let flood = pair.ping_flood(PING_INTERVAL)?;
            pair.wait_active(0)?;
            std::thread::sleep(MARGIN);
            let ping = flood.finish()?;
            let gap = ping.longest_gap.as_secs_f64() * 1e3;
            eprintln!(
                "xtask: round {round}: switch back to g1, gap {gap:.0} ms ({} of {} pings lost, {} duplicates)",
                ping.lost(),
                ping.sent,
                ping.duplicates
            );
            switchbacks.push(gap);
            duplicates += ping.duplicates;
            switchback_lost += ping.lost();
        }
        let now_active = pair.active().unwrap_or(other);
        pair.wait_in_sync(now_active)?;
        pair.wait_for("the sessions on the standby", |p| {
            all_sessions(p, 1 - now_active)
        })?;
    }
    let result = sessions.finish()?;
    eprintln!("xtask: sessions after {ROUNDS} failovers: {result:?}");
    let lost = (SESSIONS - result.ok) as f64;

    let active = pair
        .active()
        .ok_or_else(|| format!("no single active member: {}", pair.describe()))?;
    let m = &pair.members[active];
    let sync_before = m.sync().ok_or("the active reports no sync")?;
    let flows_before = m.counters().ok_or("no counters")?.totals.flows_created;
    let t0 = Instant::now();
    let datagrams = pair.udp_flows(FLOWS_SECONDS)?;
    let burst = t0.elapsed().as_secs_f64();
    let flows = m.counters().ok_or("no counters")?.totals.flows_created - flows_before;
    pair.wait_in_sync(active)?;
    let seconds = t0.elapsed().as_secs_f64();
    let sync_after = m.sync().ok_or("the active reports no sync")?;
    let acked = sync_after.acked - sync_before.acked;
    let sync_lost = (sync_after.lost - sync_before.lost) as f64;
    let flow_rate = flows as f64 / burst;
    eprintln!(
        "xtask: {datagrams} datagrams, {flows} new flows in {burst:.1} s; in step again after {seconds:.1} s: \
         sync sent {}, acked {acked}, lost {sync_lost}",
        sync_after.sent - sync_before.sent
    );
    drop(pair);

    let row = |what: String, unit: &'static str, values: Vec<f64>, target| Row {
        suite: Suite::Ha,
        what,
        unit,
        scale: 1.0,
        bulkhead: Stat::of(values),
        baseline: None,
        target,
    };
    let members: Vec<&str> = killed.iter().map(String::as_str).collect();
    Ok(vec![
        row(
            format!(
                "failover gap, SIGKILL of the active ({ROUNDS} failovers, killed: {}; median, min–max)",
                members.join(" ")
            ),
            "ms",
            gaps,
            None,
        ),
        row(
            "switch-back gap, the preferred member taking mastership back (preemption)".into(),
            "ms",
            switchbacks,
            None,
        ),
        row(
            "pings lost in those switch-backs, all together (a 1 ms flood; the hand-over at a heartbeat)".into(),
            "packets",
            vec![switchback_lost as f64],
            Some("0"),
        ),
        row(
            "pings duplicated in those switch-backs, all together".into(),
            "packets",
            vec![duplicates as f64],
            Some("0"),
        ),
        row(
            format!("established TCP sessions lost across {ROUNDS} failovers (of {SESSIONS})"),
            "flows",
            vec![lost],
            Some("0"),
        ),
        row(
            format!(
                "sync updates acknowledged per second, new UDP flows at {flow_rate:.0}/s through the active \
                 for {FLOWS_SECONDS} s (until the sync is in step again)"
            ),
            "updates/s",
            vec![acked as f64 / seconds],
            None,
        ),
        row(
            "sync updates lost in that run (a flow's change that found its queue full)".into(),
            "updates",
            vec![sync_lost],
            None,
        ),
    ])
}
