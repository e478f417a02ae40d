//! An HA pair with keepalived deciding (testbed::pair: two switched segments, each member in a namespace of its
//! own, keepalived configured as docs/ha.md shows): SIGKILL of the active mid-transfer, a planned switchover and
//! back, a lost data link, a restarted standby, the HA link cut (split brain). Outcomes and counts, never times
//! (the traffic gap is printed). Needs root, keepalived, tcpdump, curl, ping and python3.

use std::time::Duration;

use protocol::{CountersReport, Hold, Role};
use testbed::pair::{Pair, PairOptions};

fn pair() -> Pair {
    Pair::start(&PairOptions::new(env!("CARGO_BIN_EXE_bulkhead-dataplane")))
        .unwrap_or_else(|e| panic!("pair bed: {e}"))
}

/// The new active forwarded and refused nothing of the connections it took over.
fn assert_took_over(pair: &Pair, i: usize) {
    let c: CountersReport = pair.members[i].counters().expect("the new active answers");
    assert!(c.totals.tx_packets > 0, "the new active forwarded nothing");
    for reason in ["tcp_invalid", "tcp_out_of_window"] {
        assert_eq!(c.totals.drops[reason], 0, "{reason}: {:?}", c.totals.drops);
    }
}

/// Every session ran to the end, every line echoed.
fn assert_all_completed(sessions: testbed::pair::Sessions, count: usize) {
    let result = sessions.finish().unwrap();
    assert_eq!((result.ok, &result.broken), (count, &vec![]), "{result:?}");
}

/// Prints what the ping flood saw (a measurement, not asserted).
fn report(what: &str, ping: &testbed::pair::PingResult) {
    println!(
        "{what}: longest traffic gap {} ms ({} of {} pings lost, {} duplicates)",
        ping.longest_gap.as_millis(),
        ping.lost(),
        ping.sent,
        ping.duplicates
    );
}

fn assert_no_rst(rsts: [testbed::Capture; 2]) {
    for (side, capture) in ["a", "b"].iter().zip(rsts) {
        let frames = capture.frames(1, Duration::from_millis(300)).unwrap();
        assert!(frames.is_empty(), "{} RST(s) on side {side}", frames.len());
    }
}

#[test]
fn ha_sigkill_of_the_active_mid_download_keeps_the_download_and_a_session() {
    let mut pair = pair();
    let rsts = pair.capture_rsts().unwrap();
    let session = pair.sessions(0, 5601, 1, 50).unwrap();
    let flood = pair.ping_flood(Duration::from_millis(2)).unwrap();
    let download = pair.download(200, "40M", 8080).unwrap();
    pair.wait_for("a third of the download", |_| {
        download.received() >= download.size / 3
    })
    .unwrap();
    let at_kill = download.received();

    pair.kill(0).unwrap();
    pair.wait_active(1).unwrap();

    assert!(download.finish().unwrap(), "the download's SHA-256 differs");
    assert_all_completed(session, 1);
    let ping = flood.finish().unwrap();
    report(
        &format!("failover: killed at {} MiB of 200", at_kill >> 20),
        &ping,
    );
    assert_eq!(ping.duplicates, 0);
    assert_took_over(&pair, 1);
    assert_no_rst(rsts);
}

#[test]
fn ha_lost_data_link_of_the_active_moves_mastership_to_the_peer_and_back() {
    let pair = pair();
    let [g1, _] = &pair.members;
    let session = pair.sessions(0, 5602, 1, 50).unwrap();
    let flood = pair.ping_flood(Duration::from_millis(5)).unwrap();

    // Port a of the active loses its link: it holds port b down, its track file reads 1, keepalived puts it
    // in FAULT and the peer takes over.
    g1.set_data_link(0, false).unwrap();
    pair.wait_for("g1 holding port b down", |_| {
        links(g1) == [(false, false), (false, true)]
            && std::fs::read_to_string(g1.track_file()).unwrap_or_default() == "1\n"
    })
    .unwrap();
    pair.wait_active(1).unwrap();
    assert!(ping(&pair), "no traffic through g2");

    // The link returns: so does port b, and g1 (preferred) takes mastership back.
    g1.set_data_link(0, true).unwrap();
    pair.wait_for("g1's links up again", |_| {
        links(g1) == [(true, false), (true, false)]
            && std::fs::read_to_string(g1.track_file()).unwrap_or_default() == "0\n"
    })
    .unwrap();
    pair.wait_active(0).unwrap();
    assert!(ping(&pair), "no traffic through g1 again");

    assert_all_completed(session, 1);
    report("link lost and back", &flood.finish().unwrap());
}

/// (up, held down) of each data port of `m`.
fn links(m: &testbed::pair::Member) -> Vec<(bool, bool)> {
    m.status()
        .and_then(|s| s.ha)
        .map(|ha| ha.links.iter().map(|l| (l.up, l.held_down)).collect())
        .unwrap_or_default()
}

fn ping(pair: &Pair) -> bool {
    pair.a()
        .run(&["ping", "-c", "3", "-i", "0.2", "-W", "1", testbed::addr::B4])
        .unwrap()
        .status
        .success()
}

#[test]
fn ha_restarted_standby_resyncs_and_a_failover_then_keeps_every_flow() {
    const SESSIONS: usize = 20;
    let port = 5603;
    let mut pair = pair();
    let sessions = pair.sessions(0, port, SESSIONS, 100).unwrap();
    let all_established = |m: &testbed::pair::Member| {
        let states = m.tcp_states(port);
        states.len() == SESSIONS && states.iter().all(|s| s == "established")
    };
    pair.wait_for("the sessions on the standby", |p| {
        all_established(&p.members[1])
    })
    .unwrap();

    // The standby restarts with an empty table while the sessions run: the active reconnects and resyncs it
    // in bulk.
    pair.kill(1).unwrap();
    pair.restart(1).unwrap();
    assert!(pair.members[1].tcp_states(port).len() < SESSIONS || pair.members[1].sync().is_some());
    pair.wait_for("the bulk resync of the restarted standby", |p| {
        all_established(&p.members[1])
            && p.members[0]
                .sync()
                .is_some_and(|s| s.state == protocol::SyncState::InSync)
    })
    .unwrap();
    pair.wait_active(0).unwrap();

    // Then the active dies: every session continues through the restarted member.
    let rsts = pair.capture_rsts().unwrap();
    pair.kill(0).unwrap();
    pair.wait_active(1).unwrap();
    assert_all_completed(sessions, SESSIONS);
    assert_took_over(&pair, 1);
    assert_no_rst(rsts);
}

#[test]
fn ha_planned_switchover_and_back_lose_no_packet() {
    let mut pair = pair();
    let session = pair.sessions(0, 5604, 1, 50).unwrap();
    let flood = pair.ping_flood(Duration::from_millis(2)).unwrap();

    // Maintenance of g1: its keepalived stops (it tells the peer, which takes over, and runs its notify_stop).
    // The two notify scripts run in either order; the guard hands over at a heartbeat.
    pair.members[0].stop_keepalived().unwrap();
    pair.wait_active(1).unwrap();
    assert!(ping(&pair), "no traffic through g2");
    // Back in service: g1, preferred, takes mastership back after its preempt delay.
    pair.members[0].start_keepalived().unwrap();
    pair.wait_active(0).unwrap();

    assert_no_loss(
        &pair,
        "planned switchover and back",
        &flood.finish().unwrap(),
    );
    assert_all_completed(session, 1);
    assert_took_over(&pair, 1);
}

/// Reports a ping flood and asserts it lost and duplicated nothing, naming each member's drops if it did.
fn assert_no_loss(pair: &Pair, what: &str, ping: &testbed::pair::PingResult) {
    report(what, ping);
    assert_eq!(
        (ping.lost(), ping.duplicates),
        (0, 0),
        "{what}: {ping:?}\n{}",
        drops(pair)
    );
}

/// Each member's drops by reason (what explains a lost packet).
fn drops(pair: &Pair) -> String {
    pair.members
        .iter()
        .map(|m| {
            let drops = m.counters().map(|c| c.totals.drops).unwrap_or_default();
            let nonzero: Vec<_> = drops.iter().filter(|(_, n)| **n > 0).collect();
            format!("{}: {nonzero:?}", m.name)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// (role told, why held) of member `i`.
fn told_and_held(pair: &Pair, i: usize) -> Option<(Option<Role>, Option<Hold>)> {
    let ha = pair.members[i].status()?.ha?;
    Some((ha.desired, ha.held))
}

#[test]
fn ha_link_cut_leaves_one_member_forwarding_until_it_dies() {
    let mut pair = pair();
    let session = pair.sessions(0, 5605, 1, 50).unwrap();
    let flood = pair.ping_flood(Duration::from_millis(2)).unwrap();

    // Split brain: the HA link is cut, each keepalived hears no peer and is master. g2's dataplane, told active,
    // still hears g1's heartbeats on the data segments and stays standby: one path between the segments.
    pair.cut_ha_link().unwrap();
    pair.wait_for("both masters, g2 held by g1", |p| {
        p.members[0].is_master()
            && p.members[1].is_master()
            && told_and_held(p, 1) == Some((Some(Role::Active), Some(Hold::PeerActive)))
    })
    .unwrap();
    // Two seconds of split brain under the ping flood: nothing lost, nothing duplicated.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pair.members[0].role(), Some(Role::Active));
    assert_eq!(pair.members[1].role(), Some(Role::Standby));
    assert_no_loss(&pair, "HA link cut", &flood.finish().unwrap());

    // The active dies while the link is cut: g2 hears nothing more and becomes active by itself.
    let flood = pair.ping_flood(Duration::from_millis(2)).unwrap();
    pair.kill(0).unwrap();
    pair.wait_for("g2 active by itself", |p| {
        told_and_held(p, 1) == Some((Some(Role::Active), None))
            && p.members[1].role() == Some(Role::Active)
    })
    .unwrap();
    assert!(ping(&pair), "no traffic through g2");
    // The link and g1 return: keepalived hands mastership back to g1 (preferred), with no duplicate.
    pair.restore_ha_link().unwrap();
    pair.restart(0).unwrap();
    pair.wait_active(0).unwrap();
    let after = flood.finish().unwrap();
    report("HA link cut, the active killed, both back", &after);
    assert_eq!(after.duplicates, 0, "{after:?}");
    assert_all_completed(session, 1);
    assert_took_over(&pair, 1);
}
