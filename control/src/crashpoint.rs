//! A test seam for the crash-consistency test: with `BULKHEAD_CONTROL_CRASH_AT=N` in its environment, a debug
//! build of control aborts (as a SIGKILL would stop it: no cleanup, no flush) at the Nth durable step since it
//! started. Durable steps are the store's writes (before a temporary file is renamed, after the rename, in the
//! middle of an audit line) and the answers of dataplane pushes, so a test can enumerate every point of a commit,
//! a rollback, a revert or an audit append instead of hoping a timed kill lands there. Release builds have no
//! such seam: [`reached`] is always false there.
//!
//! A second seam for the gateway tests: with `BULKHEAD_CONTROL_PAUSE_BEFORE_PUBLISH_MS=N`, a debug build waits N
//! milliseconds between preparing a version on the gateways and publishing it, so a test can kill a gateway in
//! between. Release builds never wait.

#[cfg(debug_assertions)]
mod seam {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    static STEPS: AtomicU64 = AtomicU64::new(0);
    static CRASH_AT: OnceLock<Option<u64>> = OnceLock::new();

    pub fn reached() -> bool {
        let Some(at) = *CRASH_AT.get_or_init(|| {
            std::env::var("BULKHEAD_CONTROL_CRASH_AT")
                .ok()
                .and_then(|v| v.parse().ok())
        }) else {
            return false;
        };
        STEPS.fetch_add(1, Ordering::SeqCst) + 1 == at
    }
}

/// Counts one durable step; true when the process is to crash here (the caller may first leave a torn write).
#[cfg(debug_assertions)]
pub fn reached() -> bool {
    seam::reached()
}

#[cfg(not(debug_assertions))]
pub fn reached() -> bool {
    false
}

/// Counts one durable step and aborts the process if it is the one named by `BULKHEAD_CONTROL_CRASH_AT`.
pub fn step(what: &str) {
    if reached() {
        crash(what);
    }
}

/// Aborts the process, saying where (the crash test reads it from the stderr file).
pub fn crash(what: &str) -> ! {
    eprintln!("bulkhead-control: crash point reached: {what}");
    std::process::abort()
}

/// Waits `BULKHEAD_CONTROL_PAUSE_BEFORE_PUBLISH_MS` between prepare and publish (debug builds only).
pub async fn pause_before_publish() {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("BULKHEAD_CONTROL_PAUSE_BEFORE_PUBLISH_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("bulkhead-control: pausing {ms} ms before publishing");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}
