//! Crash durability: control is killed with SIGKILL at random points while it writes the draft or commits, many
//! times. Every time the store loads again and holds either the old or the new state — never a torn one — and a
//! write that was acknowledged before the kill is never lost.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use testbed::control::Control;

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
    let mut child = Command::new("curl")
        .args([
            "-sS",
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
