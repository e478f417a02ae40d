//! The binary's contract for bad input: a precise message naming the field, and a non-zero exit.

use std::process::Command;

fn run_with(config: &str) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!(
        "bulkhead-cli-{}-{}",
        std::process::id(),
        config.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = include_str!("../../config/dataplane.toml");

#[test]
fn example_config_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args([
            "--check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../config/dataplane.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--vdev=net_tap0,iface=bh-outside"));
}

#[test]
fn invalid_configs_name_the_field_and_exit_2() {
    let cases = [
        (
            GOOD.replace("cores = [1]", "cores = [0]"),
            "workers.cores[0]",
        ),
        (GOOD.replace("burst = 32", "burst = 500"), "workers.burst"),
        (
            GOOD.replace("mbufs = 16383", "mbufs = 100"),
            "mempool.mbufs",
        ),
        (
            GOOD.replace("net_tap1,iface=bh-inside", "eth7"),
            "ports[1].device",
        ),
        (
            GOOD.replace(
                "ports = [\"outside\", \"inside\"]",
                "ports = [\"outside\", \"dmz\"]",
            ),
            "links[0].ports[1]",
        ),
        (
            GOOD.replace("[rings]", "[rings]\nrxx = 5"),
            "unknown field `rxx`",
        ),
        (
            GOOD.replace("memory_mb = 512", "memory_mb = \"lots\""),
            "memory_mb",
        ),
        (
            GOOD.replace("idle_timeout_ms = 5000", "idle_timeout_ms = 0"),
            "control_socket.idle_timeout_ms",
        ),
        (
            GOOD.replace("reply_timeout_ms = 10000", "reply_timeout_ms = 99"),
            "control_socket.reply_timeout_ms",
        ),
        (
            GOOD.replace("max_connections = 16", "max_connections = 0"),
            "control_socket.max_connections",
        ),
        (
            GOOD.replace("reserved_connections = 16", "reserved_connections = 5000"),
            "control_socket.reserved_connections",
        ),
        (
            GOOD.replace("reserved_mode = 0o600", "reserved_mode = 0o666"),
            "control_socket.reserved_mode",
        ),
        (
            GOOD.replace(
                "reserved_path = \"/run/bulkhead/control.sock\"",
                "reserved_path = \"/run/bulkhead/dataplane.sock\"",
            ),
            "control_socket.reserved_path",
        ),
        (
            GOOD.replace(
                "reserved_path = \"/run/bulkhead/control.sock\"",
                "reserved_gid = 990",
            ),
            "control_socket.reserved_gid",
        ),
        (
            format!("{GOOD}\n[ha]\nheartbeat_ms = 100\npeer_silence_ms = 150\n"),
            "ha.peer_silence_ms",
        ),
        (
            format!("{GOOD}\n[ha]\nheartbeat_ms = 5\n"),
            "ha.heartbeat_ms",
        ),
        ("not toml at all [".to_string(), "TOML parse error"),
    ];
    for (config, field) in cases {
        let (code, stderr) = run_with(&config);
        assert_eq!(code, Some(2), "{field}: {stderr}");
        assert!(stderr.contains(field), "expected {field:?} in: {stderr}");
    }
}

#[test]
fn missing_config_file_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .args(["--config", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/x.toml"));
}

/// A persisted state file whose policy repeats a key (say, edited by hand to read "deny" first) stops the start
/// with an error naming the file and the key, instead of enforcing the last of the two.
#[test]
fn a_state_file_that_repeats_a_key_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("bulkhead-cli-state-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("policy.json"),
        r#"{"version": 3, "policy": {"format": "bulkhead.policy/v1", "rules": [{"id": 1, "name": "r",
            "from": "any", "to": "any", "service": "any", "action": "deny", "action": "allow"}]}}"#,
    )
    .unwrap();
    // The example config, on null devices and in this test's directory.
    let config = GOOD
        .replace(
            r#"file_prefix = "bulkhead""#,
            &format!(r#"file_prefix = "cli-state-{}""#, std::process::id()),
        )
        .replace("net_tap0,iface=bh-outside", "net_null90,no-rx=1")
        .replace("net_tap1,iface=bh-inside", "net_null91,no-rx=1")
        .replace(r#""/var/lib/bulkhead""#, &format!("{state:?}"))
        .replace(
            r#""/run/bulkhead/dataplane.sock""#,
            &format!("{:?}", dir.join("dp.sock")),
        )
        .replace(
            r#""/run/bulkhead/control.sock""#,
            &format!("{:?}", dir.join("control.sock")),
        );
    assert!(!config.contains("/run/bulkhead") && !config.contains("net_tap"));
    let path = dir.join("dataplane.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"))
        .arg("--config")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A dataplane that accepted the file would run (enforcing "allow"): give it a while, then stop it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let status = status.unwrap_or_else(|| panic!("the dataplane started on the file: {stderr}"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("policy.json"), "{stderr}");
    assert!(
        stderr.contains(r#"policy.rules[0]: key "action" appears more than once"#),
        "{stderr}"
    );
}
