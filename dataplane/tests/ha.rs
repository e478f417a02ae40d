//! A member of an HA pair (`[ha]`): it starts as standby and forwards nothing, every packet counted as
//! `standby`; `set_role` (sent by the `bulkhead-dataplane role` command keepalived's notify scripts run) makes
//! it active and standby again. Needs root and ping.

use std::process::Output;

use protocol::{CountersReport, Request, Role, RoleChange, Status};
use testbed::{addr, Options, TestBed};

fn bed(ha: bool) -> TestBed {
    let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
    opts.policy = Some(testbed::policy_file("open.json"));
    // Beds of this file may run beside another dataplane: idle workers yield the shared cores.
    opts.idle_sleep_max_us = 1000;
    opts.ha = ha;
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
}

fn ping(bed: &TestBed) -> bool {
    bed.a
        .run(&["ping", "-c", "2", "-i", "0.2", "-W", "1", addr::B4])
        .unwrap()
        .status
        .success()
}

/// `bulkhead-dataplane role --socket <bed's socket> [role]`.
fn role_command(bed: &TestBed, role: Option<&str>) -> Output {
    let socket = bed.control_socket();
    let mut args = vec!["role", "--socket", socket.to_str().unwrap()];
    args.extend(role);
    std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args(&args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn counters(bed: &TestBed) -> CountersReport {
    bed.ask(&Request::Counters {}).unwrap()
}

/// Every packet received is forwarded or dropped under a reason, in every worker.
fn assert_accounted(c: &CountersReport) {
    for w in c.workers.iter().chain([&c.totals]) {
        assert_eq!(w.rx_packets, w.tx_packets + w.dropped(), "{w:?}");
    }
}

#[test]
fn ha_member_starts_standby_and_forwards_only_while_active() {
    let bed = bed(true);
    let status: Status = bed.ask(&Request::Status {}).unwrap();
    let ha = status.ha.expect("an [ha] member reports its role");
    assert_eq!((ha.role, ha.role_changes), (Role::Standby, 0));
    assert_eq!(bed.ready()["ha_role"], "standby");

    // Standby: nothing crosses, and everything received is counted as `standby`.
    assert!(!ping(&bed), "a standby forwarded a ping");
    let c = counters(&bed);
    assert!(c.totals.drops["standby"] >= 2, "{:?}", c.totals.drops);
    assert_eq!(c.totals.tx_packets, 0);
    assert_accounted(&c);
    let out = role_command(&bed, None);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(3), "standby")
    );

    // Active, by the command keepalived's notify script runs.
    let out = role_command(&bed, Some("active"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "active (was standby)");
    assert!(ping(&bed), "the active member does not forward");
    let out = role_command(&bed, None);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "active")
    );

    // Standby again, by the control protocol: the standby count grows, nothing more is forwarded.
    let before = counters(&bed);
    let change: RoleChange = bed
        .ask(&Request::SetRole {
            role: Role::Standby,
        })
        .unwrap();
    assert_eq!(
        change,
        RoleChange {
            role: Role::Standby,
            previous: Role::Active
        }
    );
    assert!(!ping(&bed), "a standby forwarded a ping");
    let after = counters(&bed);
    assert!(after.totals.drops["standby"] >= before.totals.drops["standby"] + 2);
    assert_eq!(after.totals.tx_packets, before.totals.tx_packets);
    assert_accounted(&after);
    let status: Status = bed.ask(&Request::Status {}).unwrap();
    assert_eq!(status.ha.unwrap().role_changes, 2);
}

#[test]
fn ha_role_on_a_single_gateway_is_not_ha() {
    let bed = bed(false);
    let status: Status = bed.ask(&Request::Status {}).unwrap();
    assert_eq!(status.ha, None);
    match bed.ask::<RoleChange>(&Request::SetRole {
        role: Role::Standby,
    }) {
        Err(testbed::Error::Refused(e)) => assert_eq!(e.code, protocol::ErrorCode::NotHa),
        other => panic!("expected not_ha, got {other:?}"),
    }
    // The single gateway still forwards.
    assert!(ping(&bed));
    let out = role_command(&bed, Some("standby"));
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // A socket nobody serves: a precise error, exit status 1.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args([
            "role",
            "--socket",
            "/nonexistent/bulkhead-ha.sock",
            "active",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bulkhead-ha.sock"));
}
