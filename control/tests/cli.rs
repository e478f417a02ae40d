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
