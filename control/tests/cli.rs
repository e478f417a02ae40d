//! The binary's contract for bad configs: a message naming the field, exit code 2.

use std::process::Command;

const EXAMPLE: &str = include_str!("../../config/control.toml");

fn run(config: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!(
        "bh-ctl-cli-{}-{}",
        std::process::id(),
        config.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("control.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead-control"))
        .args(["--check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn example_config_checks() {
    let (code, stderr) = run(EXAMPLE);
    assert_eq!(code, Some(0), "{stderr}");
    // With its IPFIX example switched on.
    let at = EXAMPLE.find("# [[export.ipfix]]").unwrap();
    let ipfix = EXAMPLE[at..].replace("# ", "");
    let (code, stderr) = run(&format!("{}{ipfix}", &EXAMPLE[..at]));
    assert_eq!(code, Some(0), "{stderr}");
}

/// The example with one syslog exporter appended.
fn with_syslog(lines: &str) -> String {
    format!(
        "{EXAMPLE}\n[[export.syslog]]\nname = \"siem\"\naddress = \"127.0.0.1:6514\"\n{lines}\n"
    )
}

#[test]
fn invalid_configs_name_the_field_and_exit_2() {
    let cases = [
        (EXAMPLE.replace("127.0.0.1:8180", "localhost"), "listen"),
        (
            EXAMPLE.replace("confirm_timeout_s = 120", "confirm_timeout_s = 0"),
            "confirm_timeout_s",
        ),
        (
            EXAMPLE.replace("body_limit_bytes = 1048576", "body_limit_bytes = 10"),
            "body_limit_bytes",
        ),
        (EXAMPLE.replace("[metrics]", "[metrics]\npoll = 3"), "poll"),
        (
            EXAMPLE.replace("keep = 5", "keep = \"five\""),
            "flow_log.keep",
        ),
        (EXAMPLE.replace("store_dir =", "# store_dir ="), "store_dir"),
        (EXAMPLE.replace("[web]", "[web]\nroot = 1"), "root"),
        ("listen = [".to_string(), "line 1"),
        (
            with_syslog("transport = \"tls\""),
            "export.syslog[0]: transport \"tls\" needs `ca`",
        ),
        (
            with_syslog("transport = \"tls\"\nca = \"/nonexistent/ca.pem\""),
            "export.syslog[0]: ca /nonexistent/ca.pem",
        ),
        (
            with_syslog("transport = \"smtp\""),
            "export.syslog[0].transport",
        ),
    ];
    for (config, field) in cases {
        let (code, stderr) = run(&config);
        assert_eq!(code, Some(2), "{field}: {stderr}");
        assert!(stderr.contains(field), "expected {field:?} in: {stderr}");
    }
}

#[test]
fn missing_config_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead-control"))
        .args(["--config", "/nonexistent/control.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/control.toml"));
}

#[test]
fn demo_policy_validates() {
    let text = include_str!("../../config/policy-demo.json");
    let p = policy::Policy::from_json(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(p
        .segments()
        .iter()
        .any(|s| s.labels.get("zone").map(String::as_str) == Some("legacy")));
}

/// Control starts and serves without a dataplane, and SIGTERM stops it promptly and cleanly even while an event
/// stream is open (a graceful shutdown would otherwise wait for the stream forever).
#[test]
fn serves_without_a_dataplane_and_stops_promptly_with_a_stream_open() {
    use std::time::{Duration, Instant};
    use testbed::control::{Control, ControlOptions};
    let dir = std::env::temp_dir().join(format!("bh-ctl-cli-{}-stop", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let opts = ControlOptions::new(
        env!("CARGO_BIN_EXE_bulkhead-control"),
        &dir,
        &dir.join("no-dataplane.sock"),
    );
    let mut c = Control::start(&opts).unwrap();
    assert_eq!(
        c.ready["reconcile"]["outcome"], "dataplane_unreachable",
        "{}",
        c.ready
    );
    let h = c.request("GET", "/api/v1/health", None, &[], None).unwrap();
    assert_eq!(
        (h.status, &h.body["dataplane"]["reachable"]),
        (200, &serde_json::json!(false))
    );
    let d = c.call("GET", "/api/v1/draft", None).unwrap();
    assert_eq!(d.status, 200);
    let mut stream = c
        .curl_command()
        .args(["-N", "--max-time", "30", "-o", "/dev/null"])
        .args(["-H", &format!("Authorization: Bearer {}", c.token)])
        .arg(format!("{}/api/v1/flow-log/stream", c.url))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let status = c.stop().unwrap();
    assert!(status.success(), "{status}: {}", c.stderr());
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t0.elapsed()
    );
    let _ = stream.kill();
    let _ = stream.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
