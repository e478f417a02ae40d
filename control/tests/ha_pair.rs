//! One control and an HA pair of two real dataplanes (`[ha]` with connection-state sync between them): control
//! shows each member's role and sync as the dataplanes report them (the test plays keepalived and sets the roles
//! through the active's control socket), resyncs on demand, commits to both members (the standby prepares and
//! publishes like any gateway) and exports the role and sync figures as metrics. Needs root.

mod common;

use common::*;
use protocol::{Request, Role, RoleChange, Status};
use serde_json::Value;
use testbed::control::{Control, ControlOptions};
use testbed::{Options, TestBed};

const PAIR: &str = "hapair-x";
const MEMBERS: [&str; 2] = ["hapair-x1", "hapair-x2"];

/// A member that receives sync updates on `listen` and sends them to `peer`.
fn member(listen: u16, peer: u16) -> TestBed {
    let mut opts = Options::new(dataplane_bin());
    opts.policy =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"));
    // Two dataplanes share this machine's cores: idle workers yield theirs.
    opts.idle_sleep_max_us = 1000;
    opts.ha = Some(format!(
        "sync_listen = \"127.0.0.1:{listen}\"\nsync_peer = \"127.0.0.1:{peer}\"\nsync_refresh_ms = 200"
    ));
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
}

fn listing(c: &Control) -> Value {
    let r = c.call("GET", "/api/v1/gateways", None).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn entry<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
}

fn metric(c: &Control, series: &str) -> Option<f64> {
    let text = c.call("GET", "/metrics", None).unwrap().body;
    let text = text.as_str().unwrap_or_default().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The pair's two members and a control that manages them.
fn pair_and_control(name: &str) -> ([TestBed; 2], Control) {
    let (p1, p2) = (testbed::free_port(), testbed::free_port());
    let beds = [member(p1, p2), member(p2, p1)];
    let dir = test_dir(name);
    let mut copts = ControlOptions::new(
        control_bin(),
        &dir.join("control"),
        std::path::Path::new(""),
    );
    copts.extra = MEMBERS
        .iter()
        .zip(&beds)
        .map(|(name, bed)| {
            format!(
                "[[gateways]]\nname = \"{name}\"\nsocket = {:?}\npair = \"{PAIR}\"\n",
                bed.control_socket().display().to_string()
            )
        })
        .collect::<String>()
        + "[metrics]\npoll_ms = 200\n";
    (beds, start_control(&copts))
}

#[test]
fn an_ha_pair_shows_roles_and_sync_resyncs_and_gets_every_commit() {
    let (beds, c) = pair_and_control("ha-pair");

    // Both start as standby: no active member.
    wait_for(30, "both members listed as standby", || {
        let l = listing(&c);
        MEMBERS
            .iter()
            .all(|m| entry(&l, m)["role"] == "standby")
            .then_some(())
    });
    let l = listing(&c);
    assert_eq!(l["pairs"][0]["name"], PAIR, "{l}");
    assert_eq!(l["pairs"][0]["members"], serde_json::json!(MEMBERS), "{l}");
    assert!(l["pairs"][0]["active"].is_null(), "{l}");
    assert_eq!(entry(&l, MEMBERS[0])["pair"], PAIR);

    // keepalived makes the first active: control shows it within a poll, and the sync completes.
    let change: RoleChange = beds[0]
        .ask(&Request::SetRole { role: Role::Active })
        .unwrap();
    assert_eq!(change.role, Role::Active);
    let l = wait_for(30, "the first member active and the sync complete", || {
        let l = listing(&c);
        (l["pairs"][0]["active"] == MEMBERS[0] && l["pairs"][0]["sync_complete"] == true)
            .then_some(l)
    });
    let active = entry(&l, MEMBERS[0]);
    assert_eq!(active["role"], "active", "{l}");
    assert_eq!(active["ha"]["sync"]["sending"], true, "{l}");
    assert_eq!(active["ha"]["sync"]["state"], "in_sync", "{l}");
    assert_eq!(entry(&l, MEMBERS[1])["role"], "standby", "{l}");
    assert!(l["pairs"][0]["flows_active"][MEMBERS[1]].is_u64(), "{l}");

    // An on-demand resync, through the API; an unknown gateway is a 404.
    let r = c
        .call(
            "POST",
            &format!("/api/v1/gateways/{}/resync", MEMBERS[0]),
            None,
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["workers"], 1, "{}", r.body);
    let r = c
        .call("POST", "/api/v1/gateways/nowhere/resync", None)
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(audit_actions(&c).iter().any(|a| a == "gateway.resync"));
    wait_for(30, "the sync complete again", || {
        (listing(&c)["pairs"][0]["sync_complete"] == true).then_some(())
    });

    // A commit reaches both members: the standby prepares and publishes like the active.
    let r = edit_and_commit(&c, 30);
    let v = r["version"].as_u64().unwrap();
    for name in MEMBERS {
        assert_eq!(r["gateways"][name]["outcome"], "applied", "{r}");
    }
    for bed in &beds {
        let s: Status = bed.ask(&Request::Status {}).unwrap();
        assert_eq!(s.policy_version.map(u64::from), Some(v), "{s:?}");
    }

    // Rules health for the pair: its members' counters summed (known rules, no error).
    let r = c
        .call("GET", &format!("/api/v1/rules/health?gateway={PAIR}"), None)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    // The metrics carry each member's role and the sync's figures.
    let series =
        |name: &str, gateway: &str, label: &str| format!("{name}{{gateway=\"{gateway}\",{label}}}");
    wait_for(30, "the HA metrics", || {
        let active = metric(
            &c,
            &series("bulkhead_ha_role", MEMBERS[0], "role=\"active\""),
        );
        let standby = metric(
            &c,
            &series("bulkhead_ha_role", MEMBERS[1], "role=\"standby\""),
        );
        let in_sync = metric(
            &c,
            &series("bulkhead_ha_sync_state", MEMBERS[0], "state=\"in_sync\""),
        );
        (active == Some(1.0) && standby == Some(1.0) && in_sync == Some(1.0)).then_some(())
    });
    let sent = metric(
        &c,
        &series(
            "bulkhead_ha_sync_updates_total",
            MEMBERS[0],
            "outcome=\"sent\"",
        ),
    );
    let acked = metric(
        &c,
        &series(
            "bulkhead_ha_sync_updates_total",
            MEMBERS[0],
            "outcome=\"acked\"",
        ),
    );
    assert!(sent.is_some() && acked.is_some(), "{sent:?} {acked:?}");
    assert_eq!(
        metric(
            &c,
            &format!("bulkhead_ha_sync_lag{{gateway=\"{}\"}}", MEMBERS[0])
        ),
        Some(0.0)
    );
}

/// `GET path`, asserting a 200.
fn get(c: &Control, path: &str) -> Value {
    let r = c.call("GET", path, None).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body
}

/// The rule that allows ping in the example policy.
const PING_RULE: u32 = 20;

/// Packets of [`PING_RULE`] as rules health counts them for `gateway` (a member or the pair); `None` while its
/// counters cannot be read.
fn counted(c: &Control, gateway: &str) -> Option<u64> {
    let v = get(c, &format!("/api/v1/rules/health?gateway={gateway}"));
    v["rules"]
        .as_array()?
        .iter()
        .find(|r| r["id"] == PING_RULE)?["packets"]
        .as_u64()
}

/// Packets of [`PING_RULE`] as the member's dataplane counts them now (since its start).
fn dataplane_counts(bed: &TestBed) -> u64 {
    let report: protocol::CountersReport = bed.ask(&Request::Counters {}).unwrap();
    report
        .rules
        .iter()
        .find(|r| r.rule_id == PING_RULE)
        .map_or(0, |r| r.packets)
}

/// Makes member `active` the active one as keepalived does: the other standby first.
fn make_active(c: &Control, beds: &[TestBed; 2], active: usize) {
    let _: RoleChange = beds[1 - active]
        .ask(&Request::SetRole {
            role: Role::Standby,
        })
        .unwrap();
    let _: RoleChange = beds[active]
        .ask(&Request::SetRole { role: Role::Active })
        .unwrap();
    wait_for(30, "control to see the new active member", || {
        (listing(c)["pairs"][0]["active"] == MEMBERS[active]).then_some(())
    });
}

/// Three pings across the member's bed.
fn ping(bed: &TestBed) {
    bed.a
        .ok(&["ping", "-c", "3", "-i", "0.2", "-W", "2", testbed::addr::B4])
        .unwrap();
}

/// Waits until the pair's count in control is `want`, and returns it.
fn pair_counts(c: &Control, want: u64, what: &str) -> u64 {
    wait_for(30, what, || {
        (counted(c, PAIR) == Some(want)).then_some(want)
    })
}

/// The members named by `items` (each with a `gateway`, or a `key.gateway`), sorted and deduplicated.
fn gateways_of(items: &Value) -> Vec<String> {
    let mut names: Vec<String> = items
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["gateway"].as_str().or(i["key"]["gateway"].as_str()))
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_pairs_traffic_through_either_member_is_one_history_and_one_count() {
    let (mut beds, c) = pair_and_control("ha-pair-views");

    // Through the first member: the pair counts what it counts.
    make_active(&c, &beds, 0);
    ping(&beds[0]);
    let first = dataplane_counts(&beds[0]);
    assert!(first > 0, "the first member counted the pings");
    assert_eq!(
        dataplane_counts(&beds[1]),
        0,
        "the standby forwards nothing"
    );
    pair_counts(&c, first, "the pair's count: the first member's");

    // A failover; the same traffic now crosses the second member. Its connections are listed and killed as the
    // pair's, on both members (the first holds the synced copies).
    make_active(&c, &beds, 1);
    let pinging = beds[1]
        .a
        .spawn(&["ping", "-i", "0.2", testbed::addr::B4])
        .unwrap();
    let flows = wait_for(30, "the ping's connection on both members", || {
        let v = get(&c, &format!("/api/v1/flows?gateway={PAIR}&proto=icmp"));
        (gateways_of(&v["flows"]) == MEMBERS).then_some(v)
    });
    for f in flows["flows"].as_array().unwrap() {
        assert_eq!(f["pair"], PAIR, "{flows}");
    }
    let only = get(
        &c,
        &format!("/api/v1/flows?gateway={}&proto=icmp", MEMBERS[1]),
    );
    assert_eq!(gateways_of(&only["flows"]), [MEMBERS[1]], "{only}");
    // Explain examines the active member's connections only.
    let r = c
        .call(
            "POST",
            "/api/v1/explain",
            Some(
                &serde_json::json!({"src": testbed::addr::A4, "dst": testbed::addr::B4,
                                     "protocol": "icmp", "gateway": PAIR}),
            ),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let examined: Vec<&String> = r.body["connections"]["gateways"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(examined, [MEMBERS[1]], "{}", r.body);
    let r = c
        .call(
            "POST",
            "/api/v1/flows/kill",
            Some(&serde_json::json!({"gateway": PAIR, "proto": 1})),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    for m in MEMBERS {
        assert!(r.body["gateways"][m]["killed"].is_u64(), "{}", r.body);
    }
    let most = MEMBERS
        .iter()
        .map(|m| r.body["gateways"][m]["killed"].as_u64().unwrap())
        .max();
    assert_eq!(r.body["killed"].as_u64(), most, "counted once: {}", r.body);
    drop(pinging);
    ping(&beds[1]);
    let second = dataplane_counts(&beds[1]);
    assert!(second > 0);
    assert_eq!(
        dataplane_counts(&beds[0]),
        first,
        "the first member is standby now"
    );
    let total = pair_counts(&c, first + second, "the pair's count: both members'");

    // Stats: the members' counters summed.
    wait_for(30, "the pair's stats as its members' sum", || {
        let pair = get(&c, &format!("/api/v1/stats?gateway={PAIR}"));
        let rx = |g: &str| {
            get(&c, &format!("/api/v1/stats?gateway={g}"))["totals"]["rx_packets"].as_u64()
        };
        let sum = rx(MEMBERS[0])? + rx(MEMBERS[1])?;
        assert_eq!(pair["members"], serde_json::json!(MEMBERS), "{pair}");
        (pair["up"] == true && pair["totals"]["rx_packets"].as_u64() == Some(sum)).then_some(())
    });

    // One history: the pair's conversations and flow-log events are both members', each naming its member.
    let conversations = wait_for(30, "both members' conversations in the history", || {
        let v = get(
            &c,
            &format!("/api/v1/history/conversations?gateway={PAIR}&proto=icmp&group=window"),
        );
        (gateways_of(&v["conversations"]) == MEMBERS).then_some(v)
    });
    assert!(
        conversations["matched"].as_u64() >= Some(2),
        "{conversations}"
    );
    let first_only = get(
        &c,
        &format!(
            "/api/v1/history/conversations?gateway={}&proto=icmp",
            MEMBERS[0]
        ),
    );
    assert_eq!(gateways_of(&first_only["conversations"]), [MEMBERS[0]]);
    let map = |gateway: &str| -> u64 {
        let v = get(
            &c,
            &format!("/api/v1/history/map?gateway={gateway}&proto=icmp"),
        );
        v["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["allowed"].as_u64().unwrap())
            .sum()
    };
    // Events still arriving change the counts between the three reads: until they agree.
    wait_for(30, "the pair's map as its members' sum", || {
        let (one, two) = (map(MEMBERS[0]), map(MEMBERS[1]));
        (one > 0 && two > 0 && map(PAIR) == one + two).then_some(())
    });
    let events = get(
        &c,
        &format!("/api/v1/flow-log?gateway={PAIR}&proto=icmp&kind=new"),
    );
    assert_eq!(gateways_of(&events["events"]), MEMBERS, "{events}");

    // The active member restarts (keepalived would have moved the role first; here no traffic runs): while it
    // is away and after, the pair's count never goes down, though the member counts from zero again.
    std::thread::scope(|s| {
        let restarting = s.spawn(|| beds[1].restart().unwrap());
        while !restarting.is_finished() {
            if let Some(n) = counted(&c, PAIR) {
                assert!(
                    n >= total,
                    "the pair lost hits while a member restarted: {n} < {total}"
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    });
    assert_eq!(
        dataplane_counts(&beds[1]),
        0,
        "a restarted member counts from zero"
    );
    wait_for(30, "control to read the restarted member", || {
        counted(&c, MEMBERS[1]).filter(|_| entry(&listing(&c), MEMBERS[1])["role"] == "standby")
    });
    assert_eq!(counted(&c, PAIR), Some(total), "no counted hit lost");
    assert_eq!(
        counted(&c, MEMBERS[1]),
        Some(second),
        "the member's own count goes on too"
    );
    // And it counts up from there.
    make_active(&c, &beds, 1);
    ping(&beds[1]);
    let after = dataplane_counts(&beds[1]);
    assert!(after > 0);
    pair_counts(&c, total + after, "the pair's count after the restart");
}
