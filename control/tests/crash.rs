//! Crash durability: control is killed with SIGKILL at random points while it writes the draft or commits, many
//! times. Every time the store loads again and holds either the old or the new state — never a torn one — and a
//! write that was acknowledged before the kill is never lost.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testbed::control::{Control, ControlOptions};

/// xorshift64*: a reproducible sequence of kill delays (the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Policy `i`, in the normalized form the API answers with (defaults filled in).
fn doc(i: usize) -> Value {
    let mut d = policy_doc();
    d["rules"][0]["name"] = json!(format!("clients-db-{i}"));
    serde_json::to_value(serde_json::from_value::<policy::Document>(d).unwrap()).unwrap()
}

/// Starts a write in a curl process; returns it so the test can kill control while it runs.
fn spawn_write(
    c: &Control,
    method: &str,
    path: &str,
    body: &Value,
    etag: &str,
) -> std::process::Child {
    let mut child = c
        .curl_command()
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            method,
            "-H",
            "Expect:",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", c.token)])
        .args(["-H", &format!("If-Match: {etag}")])
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ])
        .arg(format!("{}{path}", c.url))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.to_string().as_bytes())
        .unwrap();
    child
}

#[test]
fn kill9_during_writes_leaves_old_or_new_state() {
    let dir = test_dir("crash");
    let dp = NullDataplane::start(&dir);
    let opts = control_opts(&dir, &dp.socket);
    let mut c = start_control(&opts);
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    assert_eq!(
        c.write("PUT", "/api/v1/draft", Some(&doc(0)), &etag)
            .unwrap()
            .status,
        200
    );
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let r = c
        .write("POST", "/api/v1/commit", Some(&json!({})), &etag)
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // Kill delays spread over about twice a commit's duration, so kills land before, inside and after it.
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    assert_eq!(
        c.write("PUT", "/api/v1/draft", Some(&doc(1)), &etag)
            .unwrap()
            .status,
        200
    );
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let t0 = Instant::now();
    assert_eq!(
        c.write("POST", "/api/v1/commit", Some(&json!({})), &etag)
            .unwrap()
            .status,
        200
    );
    let span_us = (2 * t0.elapsed().as_micros() as u64).max(2000);
    let seed = std::process::id() as u64 * 0x9E37_79B9 + 1;
    eprintln!("seed {seed}, kill delays up to {span_us} us");
    let mut rng = Rng(seed);
    let mut outcomes = [0usize; 2];

    // 40 kills: 30 during commits, 10 during draft writes.
    for i in 2..42 {
        let before_active = c.call("GET", "/api/v1/active", None).unwrap();
        let before_draft = c.call("GET", "/api/v1/draft", None).unwrap();
        let v_before = before_active.body["version"].as_u64().unwrap();
        let commit_now = i % 4 != 1;
        let mut draft_before = before_draft.clone();
        let write = if commit_now {
            // Change the draft first (acknowledged), then kill during the commit.
            let r = c
                .write("PUT", "/api/v1/draft", Some(&doc(i)), &before_draft.etag())
                .unwrap();
            assert_eq!(r.status, 200);
            draft_before = c.call("GET", "/api/v1/draft", None).unwrap();
            spawn_write(
                &c,
                "POST",
                "/api/v1/commit",
                &json!({"comment": format!("iteration {i}")}),
                &r.etag(),
            )
        } else {
            spawn_write(&c, "PUT", "/api/v1/draft", &doc(i), &before_draft.etag())
        };
        let delay = rng.next() % span_us;
        std::thread::sleep(Duration::from_micros(delay));
        c.kill9();
        let out = write.wait_with_output().unwrap();
        let acknowledged = String::from_utf8_lossy(&out.stdout) == "200";

        // The store loads, and is the old or the new state.
        c = Control::start(&opts)
            .unwrap_or_else(|e| panic!("iteration {i}: the store did not load: {e}"));
        let active = c.call("GET", "/api/v1/active", None).unwrap();
        let draft = c.call("GET", "/api/v1/draft", None).unwrap();
        let v = active.body["version"].as_u64().unwrap();
        if commit_now {
            assert!(
                v == v_before || v == v_before + 1,
                "iteration {i}: version {v} after {v_before}"
            );
            if acknowledged {
                assert_eq!(
                    v,
                    v_before + 1,
                    "iteration {i}: an acknowledged commit was lost"
                );
            }
            let expected = if v == v_before {
                &before_active.body["policy"]
            } else {
                &draft_before.body
            };
            assert_eq!(&active.body["policy"], expected, "iteration {i}");
            assert_eq!(
                draft.body, draft_before.body,
                "iteration {i}: the commit changed the draft"
            );
            outcomes[usize::from(v != v_before)] += 1;
            // The versions list is whole: every version up to the active one has its file.
            let h = c.call("GET", "/api/v1/versions", None).unwrap();
            assert_eq!(
                h.body["versions"].as_array().unwrap().len() as u64,
                v,
                "iteration {i}"
            );
        } else {
            let new = draft.body == doc(i);
            assert!(
                new || draft.body == before_draft.body,
                "iteration {i}: torn draft {}",
                draft.body
            );
            if acknowledged {
                assert!(new, "iteration {i}: an acknowledged draft write was lost");
            }
            outcomes[usize::from(new)] += 1;
            assert_eq!(v, v_before);
        }
        // And the dataplane ends up on the active version (pushed again if the kill came between store and push).
        wait_for(10, "the dataplane to run the active version", || {
            (dp.status()?["policy_version"].as_u64()? == v).then_some(())
        });
        let got = dp.request(json!({"op": "get_policy"})).unwrap();
        assert_eq!(got["policy"], active.body["policy"], "iteration {i}");
        // The audit log still parses (a torn last line is dropped at start).
        assert_eq!(c.call("GET", "/api/v1/audit", None).unwrap().status, 200);
    }
    eprintln!(
        "old state kept {} times, new state {} times",
        outcomes[0], outcomes[1]
    );
}

/// The store directory and the dataplane's version and document: one state a crash run starts from.
struct Snapshot {
    store: std::path::PathBuf,
    version: u64,
    policy: Value,
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// Takes a snapshot of a stopped control's store and of what the dataplane runs.
fn snapshot(opts: &ControlOptions, dp: &NullDataplane, name: &str) -> Snapshot {
    let store = opts.dir.with_file_name(format!("snapshot-{name}"));
    copy_dir(&opts.store_dir(), &store);
    let got = dp.request(json!({"op": "get_policy"})).unwrap();
    Snapshot {
        store,
        version: got["version"].as_u64().unwrap(),
        policy: got["policy"].clone(),
    }
}

/// Puts the store and the dataplane back to `s`.
fn restore(opts: &ControlOptions, dp: &NullDataplane, s: &Snapshot) {
    copy_dir(&s.store, &opts.store_dir());
    dp.request(json!({"op": "load_policy", "policy": s.policy, "version": s.version}))
        .expect("the dataplane takes the snapshot's policy back");
}

/// What a crash run asks of control.
#[derive(Clone, Copy, Debug)]
enum Op {
    Commit,
    Rollback,
    /// Nothing: the confirm deadline of the snapshot has passed, the background task reverts at start.
    Revert,
    DraftWrite,
}

/// Runs `op` on `c`; answers the new active version (or draft revision) if control acknowledged it.
fn run(c: &mut Control, op: Op, draft: &Value) -> Option<u64> {
    let answer = match op {
        Op::Commit => {
            let etag = c.call("GET", "/api/v1/draft", None).ok()?.etag();
            c.write("POST", "/api/v1/commit", Some(&json!({})), &etag)
        }
        Op::Rollback => {
            let etag = c.call("GET", "/api/v1/active", None).ok()?.etag();
            c.write(
                "POST",
                "/api/v1/rollback",
                Some(&json!({"version": 1})),
                &etag,
            )
        }
        Op::DraftWrite => {
            let etag = c.call("GET", "/api/v1/draft", None).ok()?.etag();
            c.write("PUT", "/api/v1/draft", Some(draft), &etag)
        }
        Op::Revert => {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let a = c.call("GET", "/api/v1/active", None).ok()?;
                if a.body["pending_confirm"].is_null() {
                    return a.body["version"].as_u64();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("no revert within 5 s");
        }
    }
    .ok()?;
    (answer.status == 200).then(|| {
        answer.body["version"]
            .as_u64()
            .or(answer.body["revision"].as_u64())
            .unwrap()
    })
}

fn crash_opts(opts: &ControlOptions, at: u32) -> ControlOptions {
    let mut o = opts.clone();
    o.env = vec![("BULKHEAD_CONTROL_CRASH_AT".into(), at.to_string())];
    o
}

/// Waits until control crashed at its crash point (`true`) or it is clear it did not (`false`).
fn crashed(c: &mut Control, answered: bool) -> bool {
    let wait = if answered { 50 } else { 3000 };
    let deadline = Instant::now() + Duration::from_millis(wait);
    loop {
        if let Some(status) = c.exited() {
            assert!(
                c.stderr()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .contains("crash point"),
                "control ended ({status}) without reaching a crash point: {}",
                c.stderr()
            );
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The invariants after a crash and a clean restart: the store loads; the dataplane runs the active version;
/// every intent has exactly one outcome; the version the dataplane enforces has an intent and an `applied`
/// outcome; nothing acknowledged is lost; the audit log's sequence numbers only grow.
fn check(
    opts: &ControlOptions,
    dp: &NullDataplane,
    op: Op,
    acked: Option<u64>,
    draft: &Value,
    at: u32,
) {
    let c = Control::start(opts)
        .unwrap_or_else(|e| panic!("{op:?} crash at {at}: the store did not load: {e}"));
    let active = wait_for(10, "the dataplane to run the active version", || {
        let a = c.call("GET", "/api/v1/active", None).ok()?;
        let v = a.body["version"].as_u64()?;
        let settled = a.body["pending_confirm"]["deadline_unix_ms"]
            .as_u64()
            .is_none_or(|d| d > now_ms());
        (settled && dp.status()?["policy_version"].as_u64()? == v).then_some(a)
    });
    let v = active.body["version"].as_u64().unwrap();
    let entries = c.call("GET", "/api/v1/audit", None).unwrap().body["entries"]
        .as_array()
        .unwrap()
        .clone();
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{op:?} at {at}: seq {seqs:?}"
    );
    for e in entries.iter().filter(|e| e["phase"] == "intent") {
        let outcomes: Vec<&Value> = entries.iter().filter(|o| o["intent"] == e["seq"]).collect();
        assert_eq!(
            outcomes.len(),
            1,
            "{op:?} at {at}: intent {e} has {outcomes:?}"
        );
    }
    let enforced = entries.iter().any(|o| {
        o["phase"] == "outcome" && o["outcome"] == "applied" && o["version_after"] == json!(v)
    });
    assert!(
        enforced,
        "{op:?} at {at}: version {v} is enforced with no applied record: {entries:#?}"
    );
    if let Some(acked) = acked {
        match op {
            Op::DraftWrite => {
                let d = c.call("GET", "/api/v1/draft", None).unwrap();
                assert_eq!(
                    &d.body, draft,
                    "{op:?} at {at}: an acknowledged draft write was lost"
                );
            }
            _ => assert!(
                v >= acked,
                "{op:?} at {at}: acknowledged version {acked} lost ({v} active)"
            ),
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Crash consistency in the manner of the crash-study papers: control aborts at each durable step of a commit,
/// a rollback, an automatic revert and a draft write in turn (the `BULKHEAD_CONTROL_CRASH_AT` seam of debug
/// builds), then again at each step of the recovery that follows (crashes during recovery), and after every
/// run the invariants of [`check`] hold. A real dataplane on `net_null` ports: a run costs two control starts,
/// and the dataplane's state is set back with one `load_policy`, so it stays fast without a fake.
#[test]
fn crash_at_every_durable_step() {
    let dir = test_dir("crashpoints");
    let dp = NullDataplane::start(&dir);
    let mut opts = control_opts(&dir, &dp.socket);
    opts.reconcile_interval_ms = 100;
    let mut c = start_control(&opts);
    let put_draft = |c: &Control, d: &Value| {
        let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
        assert_eq!(
            c.write("PUT", "/api/v1/draft", Some(d), &etag)
                .unwrap()
                .status,
            200
        );
    };
    let commit = |c: &Control, body: Value| {
        let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
        let r = c
            .write("POST", "/api/v1/commit", Some(&body), &etag)
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    };
    put_draft(&c, &doc(1));
    commit(&c, json!({}));
    put_draft(&c, &doc(2));
    c.stop().unwrap();
    let before_commit = snapshot(&opts, &dp, "commit");
    let mut c = start_control(&opts);
    commit(&c, json!({}));
    put_draft(&c, &doc(3));
    c.stop().unwrap();
    let before_rollback = snapshot(&opts, &dp, "rollback");
    let mut c = start_control(&opts);
    commit(&c, json!({"confirm_within_s": 1}));
    c.kill9();
    std::thread::sleep(Duration::from_millis(1100));
    let before_revert = snapshot(&opts, &dp, "revert");
    drop(c);

    let scenarios = [
        (Op::Commit, &before_commit),
        (Op::Rollback, &before_rollback),
        (Op::Revert, &before_revert),
        (Op::DraftWrite, &before_commit),
    ];
    let t0 = Instant::now();
    let mut crashes = 0;
    let mut starts = 0;
    for (op, base) in scenarios {
        let draft = doc(9);
        for at in 1.. {
            assert!(at < 100, "{op:?}: still crashing at step {at}");
            restore(&opts, &dp, base);
            let mut c = match Control::start(&crash_opts(&opts, at)) {
                Ok(c) => c,
                Err(e) => panic!("{op:?} at {at}: control did not start: {e}"),
            };
            starts += 1;
            let acked = run(&mut c, op, &draft);
            if !crashed(&mut c, acked.is_some()) {
                // Fewer durable steps than `at`: every step of this operation has been crashed at.
                c.kill9();
                check(&opts, &dp, op, acked, &draft, at);
                eprintln!("{op:?}: {} crash points", at - 1);
                break;
            }
            crashes += 1;
            // Crash again at each step of the recovery, until a start gets through it.
            for again in 1..50 {
                match Control::start(&crash_opts(&opts, again)) {
                    Err(_) => {
                        starts += 1;
                        crashes += 1;
                    }
                    Ok(mut c) => {
                        starts += 1;
                        // A crash may also come just after ready (the background task's first tick).
                        let _ = crashed(&mut c, true);
                        c.kill9();
                        break;
                    }
                }
            }
            check(&opts, &dp, op, acked, &draft, at);
            starts += 1;
        }
    }
    // And SIGKILLs at reproducible random delays over each operation, between the durable steps too.
    let mut rng = Rng(std::process::id() as u64 * 0x9E37_79B9 + 7);
    for (op, base) in scenarios {
        let draft = doc(9);
        for i in 0..30 {
            restore(&opts, &dp, base);
            let mut c = start_control(&opts);
            starts += 1;
            let pid = c.pid().unwrap().to_string();
            let delay = Duration::from_micros(rng.next() % 40_000);
            let killer = std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = Command::new("kill").args(["-9", &pid]).status();
            });
            let acked = run(&mut c, op, &draft);
            killer.join().unwrap();
            c.kill9();
            crashes += 1;
            check(&opts, &dp, op, acked, &draft, 1000 + i);
            starts += 1;
        }
    }
    eprintln!(
        "{crashes} crashes, {starts} control starts in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(crashes >= 100, "only {crashes} crashes");
}

/// A commit whose audit intent cannot be written does not happen: 500 `store_error`, no version activated,
/// nothing pushed.
#[test]
fn a_commit_that_cannot_be_audited_does_not_happen() {
    let dir = test_dir("audit-full");
    let dp = NullDataplane::start(&dir);
    let opts = control_opts(&dir, &dp.socket);
    let c = start_control(&opts);
    let put_draft = |d: &Value| {
        let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
        assert_eq!(
            c.write("PUT", "/api/v1/draft", Some(d), &etag)
                .unwrap()
                .status,
            200
        );
    };
    let commit = || {
        let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
        c.write("POST", "/api/v1/commit", Some(&json!({})), &etag)
            .unwrap()
    };
    put_draft(&doc(1));
    assert_eq!(commit().status, 200);
    put_draft(&doc(2));
    let audit = opts.store_dir().join("audit.jsonl");
    let kept = opts.dir.join("audit.kept");
    std::fs::rename(&audit, &kept).unwrap();
    std::os::unix::fs::symlink("/dev/full", &audit).unwrap();
    let r = commit();
    std::fs::remove_file(&audit).unwrap();
    std::fs::rename(&kept, &audit).unwrap();
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (500, Some("store_error")),
        "{}",
        r.body
    );
    let h = c.call("GET", "/api/v1/versions", None).unwrap();
    assert_eq!(h.body["active"], 1, "a commit answered as failed is active");
    assert_eq!(
        dp.status().unwrap()["policy_version"],
        1,
        "a commit answered as failed is enforced"
    );
    // With the log back, the commit goes through and is audited as intent and outcome.
    let r = commit();
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = c.call("GET", "/api/v1/audit", None).unwrap().body["entries"].clone();
    let commits: Vec<(&Value, &Value)> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "commit")
        .map(|e| (&e["phase"], &e["version_after"]))
        .collect();
    assert_eq!(
        commits,
        [
            (&json!("intent"), &json!(1)),
            (&json!("outcome"), &json!(1)),
            (&json!("intent"), &json!(2)),
            (&json!("outcome"), &json!(2)),
        ]
    );
}

/// Control started on an older copy of the store does not push its version over the newer one the dataplane
/// runs: it refuses and says so (ready line, health, metric); an explicit commit gets a number above the
/// dataplane's and is enforced.
#[test]
fn reconciliation_never_moves_the_dataplane_back() {
    let dir = test_dir("downgrade");
    let dp = NullDataplane::start(&dir);
    let opts = control_opts(&dir, &dp.socket);
    let mut c = start_control(&opts);
    for i in 1..=2 {
        let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
        c.write("PUT", "/api/v1/draft", Some(&doc(i)), &etag)
            .unwrap();
        let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
        let r = c
            .write("POST", "/api/v1/commit", Some(&json!({})), &etag)
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        if i == 1 {
            copy_dir(&opts.store_dir(), &dir.join("store-at-1"));
        }
    }
    c.stop().unwrap();
    copy_dir(&dir.join("store-at-1"), &opts.store_dir());
    let mut c = start_control(&opts);
    assert_eq!(c.ready["reconcile"]["outcome"], "refused", "{}", c.ready);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        dp.status().unwrap()["policy_version"],
        2,
        "pushed over a newer version"
    );
    let h = c.call("GET", "/api/v1/health", None).unwrap();
    assert_eq!(
        h.body["reconcile_refused"]["active_version"], 1,
        "{}",
        h.body
    );
    assert_eq!(h.body["reconcile_refused"]["dataplane_version"], 2);
    let m = c.call("GET", "/metrics", None).unwrap();
    assert!(
        m.body
            .as_str()
            .unwrap()
            .contains("bulkhead_control_reconcile_refused 1"),
        "{}",
        m.body
    );
    assert!(c.stderr().contains("\"refused\""));
    // The way out: an explicit commit, numbered above the dataplane's version.
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    c.write("PUT", "/api/v1/draft", Some(&doc(3)), &etag)
        .unwrap();
    let etag = c.call("GET", "/api/v1/draft", None).unwrap().etag();
    let r = c
        .write("POST", "/api/v1/commit", Some(&json!({})), &etag)
        .unwrap();
    assert_eq!(
        (r.status, &r.body["version"]),
        (200, &json!(3)),
        "{}",
        r.body
    );
    assert_eq!(dp.status().unwrap()["policy_version"], 3);
    wait_for(5, "the refusal to clear", || {
        c.call("GET", "/api/v1/health", None).ok()?.body["reconcile_refused"]
            .is_null()
            .then_some(())
    });
    c.stop().unwrap();
}
