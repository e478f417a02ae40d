//! What the DPDK integration tests share. DPDK allows one EAL per process, so each test file is one `#[test]`
//! that starts the EAL with [`start_eal`] and runs its named checks against it in order with [`run_checks`].

// Each test file compiles this module on its own and uses part of it.
#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use dpdk::Eal;

/// EAL arguments for test `name`: ordinary memory (`--no-huge`, 256 MiB), no PCI devices, lcores 0 and 1,
/// warnings only, and a file prefix of its own so that test processes running at once do not share DPDK's
/// runtime files; `extra` (e.g. a `--vdev`) goes before the log level.
pub fn eal_args(name: &str, extra: &[&str]) -> Vec<String> {
    let program = format!("{name}-test");
    let prefix = format!("--file-prefix=dpdk-{name}-{}", std::process::id());
    let fixed = [
        &program,
        "--no-huge",
        "-m",
        "256",
        "--no-pci",
        &prefix,
        "-l",
        "0,1",
    ];
    fixed
        .into_iter()
        .chain(extra.iter().copied())
        .chain(["--log-level=*:warning"])
        .map(String::from)
        .collect()
}

/// Starts this process's one EAL with [`eal_args`].
pub fn start_eal(name: &str, extra: &[&str]) -> Eal {
    let eal = Eal::init(&eal_args(name, extra)).expect("EAL init");
    assert!(eal.lcore_enabled(1), "the tests run workers on lcore 1");
    eal
}

/// A named check, run against the one EAL of this process.
pub type Check = fn(&Eal);

/// Runs `checks` in order, printing each name as it passes. A check still running after `limit` aborts the
/// process, so a deadlock fails the test instead of hanging it.
pub fn run_checks(suite: &str, eal: &Eal, limit: Duration, checks: &[(&str, Check)]) {
    for (name, check) in checks {
        let _watchdog = Watchdog::new(format!("{suite} check {name}"), limit);
        check(eal);
        eprintln!("{suite} check {name} ... ok");
    }
}

/// Aborts the process unless dropped within `limit`.
struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    fn new(what: String, limit: Duration) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("{what} did not finish within {limit:?} (deadlock?)");
                std::process::abort();
            }
        });
        Watchdog(Some(tx))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}
