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

#[test]
fn an_ha_pair_shows_roles_and_sync_resyncs_and_gets_every_commit() {
    let (p1, p2) = (free_port(), free_port());
    let beds = [member(p1, p2), member(p2, p1)];
    let dir = test_dir("ha-pair");
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
    let c = start_control(&copts);

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
