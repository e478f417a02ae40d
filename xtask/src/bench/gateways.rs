//! Commit to enforced through control on one and on three gateways: ClassBench acl1_10k as a Bulkhead policy
//! (as the swap suite builds it) put in the draft and committed through the REST API, which prepares it on every
//! gateway at once and then publishes it on all. The figure is the commit's `commit_ms` (from the request to every
//! gateway enforcing it) and the request's round trip. The gateways are release dataplanes on idle `net_null`
//! ports on this machine, reached on their local control sockets, workers with the idle back-off so three share
//! the cores; on separate machines the three prepares would not compete for CPU.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Instant;

use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};

use super::swap::{classbench_policy, idle_ports_config};
use super::{spawn_reporting, Row, Stat, Suite};
use crate::util::{build_release, target_dir, Result};

/// A dataplane on idle ports, its control socket at `dir/control.sock`.
fn start_gateway(bin: &Path, dir: &Path, name: &str) -> Result<Child> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("dataplane.toml");
    std::fs::write(
        &config,
        idle_ports_config("gateways", dir, "idle_sleep_max_us = 1000"),
    )?;
    let (mut child, stdout) = spawn_reporting(
        Command::new(bin.join("bulkhead-dataplane"))
            .arg("--config")
            .arg(&config),
    )?;
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(|l| l.ok())
        .any(|l| l.contains("\"event\":\"ready\""));
    if !ready {
        let _ = child.kill();
        return Err(format!("gateway {name} did not start").into());
    }
    Ok(child)
}

/// Commits `doc` `runs` times (a rule renamed each time, so every commit is a change) through a new control that
/// manages `gateways` (it adopts what they run); answers (commit_ms, round trip ms) per commit.
fn commits(
    bin: &Path,
    dir: &Path,
    gateways: &[(String, std::path::PathBuf)],
    doc: &Value,
    runs: usize,
) -> Result<Vec<(f64, f64)>> {
    let _ = std::fs::remove_dir_all(dir);
    let mut opts = ControlOptions::new(bin.join("bulkhead-control"), dir, Path::new(""));
    // Reconciliation stays out of the way of the measured commits.
    opts.reconcile_interval_ms = 600_000;
    opts.extra = "body_limit_bytes = 33554432\n".into();
    for (name, socket) in gateways {
        opts.extra += &format!(
            "[[gateways]]\nname = \"{name}\"\nsocket = {:?}\n",
            socket.display().to_string()
        );
    }
    let control = Control::start(&opts)?;
    let mut out = Vec::new();
    for i in 0..runs.max(1) {
        let mut doc = doc.clone();
        // Unlike whatever the gateways run already (a previous control's commits, adopted by this one).
        doc["rules"][0]["name"] = json!(format!("acl1-first-{}-{i}", gateways.len()));
        let etag = control.call("GET", "/api/v1/draft", None)?.etag();
        let put = control.write("PUT", "/api/v1/draft", Some(&doc), &etag)?;
        if put.status != 200 {
            return Err(format!("PUT /draft: {} {}", put.status, put.body).into());
        }
        let t0 = Instant::now();
        let r = control.write("POST", "/api/v1/commit", Some(&json!({})), &put.etag())?;
        let round_trip = t0.elapsed().as_secs_f64() * 1e3;
        if r.status != 200 {
            return Err(format!("commit: {} {}", r.status, r.body).into());
        }
        let applied = r.body["gateways"]
            .as_object()
            .is_some_and(|g| g.values().all(|a| a["outcome"] == "applied"));
        if !applied {
            return Err(format!("not applied everywhere: {}", r.body).into());
        }
        let commit_ms = r.body["commit_ms"].as_f64().unwrap_or_default();
        eprintln!(
            "xtask: {} gateway(s), commit {}: {commit_ms:.0} ms (round trip {round_trip:.0} ms)",
            gateways.len(),
            i + 1
        );
        out.push((commit_ms, round_trip));
    }
    Ok(out)
}

pub fn gateways(args: &super::Args) -> Result<Vec<Row>> {
    let rules = classbench::read_rules(&classbench::rules_path(&classbench::dir(), "acl1_10k"))?;
    let doc = classbench_policy(&rules);
    let bin = build_release(&["bulkhead-dataplane", "bulkhead-control"])?;
    let dir = target_dir().join("bench-gateways");
    let _ = std::fs::remove_dir_all(&dir);
    let names = ["g1", "g2", "g3"];
    let mut children = Vec::new();
    let mut sockets = Vec::new();
    for name in names {
        let gw = dir.join(name);
        match start_gateway(&bin, &gw, name) {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(&mut children);
                return Err(e);
            }
        }
        sockets.push((name.to_string(), gw.join("control.sock")));
    }
    let measured =
        commits(&bin, &dir.join("control-1"), &sockets[..1], &doc, args.runs).and_then(|one| {
            let three = commits(&bin, &dir.join("control-3"), &sockets, &doc, args.runs)?;
            Ok((one, three))
        });
    stop(&mut children);
    let (one, three) = measured?;
    let row = |what: String, values: Vec<f64>| Row {
        suite: Suite::Gateways,
        what,
        unit: "ms",
        scale: 1.0,
        bulkhead: Stat::of(values),
        baseline: None,
        target: None,
    };
    let commit = |v: &[(f64, f64)]| v.iter().map(|(c, _)| *c).collect::<Vec<_>>();
    let trip = |v: &[(f64, f64)]| v.iter().map(|(_, t)| *t).collect::<Vec<_>>();
    let n = rules.len();
    Ok(vec![
        row(
            format!("acl1_10k ({n} rules) commit to enforced, 1 gateway"),
            commit(&one),
        ),
        row(
            format!("acl1_10k ({n} rules) commit to enforced, 3 gateways (prepare on all, then publish)"),
            commit(&three),
        ),
        row(
            "commit request round trip, 1 gateway".into(),
            trip(&one),
        ),
        row(
            "commit request round trip, 3 gateways".into(),
            trip(&three),
        ),
    ])
}

fn stop(children: &mut Vec<Child>) {
    for child in children.iter_mut() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    for mut child in children.drain(..) {
        let _ = child.wait();
    }
}
