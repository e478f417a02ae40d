//! The whole test suite, as CI runs it.

use std::process::Command;

use crate::util::{cargo, is_root, run, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds of fuzzing the packet parser (0 skips it).
    #[arg(long, default_value_t = 30)]
    fuzz_seconds: u32,
}

pub fn suite(args: &Args) -> Result {
    if !is_root() {
        return Err("the end-to-end tests create network namespaces: run as root".into());
    }
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // One test at a time: every end-to-end bed pins its dataplane worker to lcore 1, and two busy-polling
    // workers time-slicing one core turn latency into tens of milliseconds.
    run(cargo().args([
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ]))?;
    if args.fuzz_seconds > 0 {
        fuzz(args.fuzz_seconds)?;
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}

/// A short libFuzzer run of the parser, seeded with the hand-written fixture frames. cargo-fuzz needs
/// nightly flags (`-Zsanitizer`); RUSTC_BOOTSTRAP lets the installed stable toolchain accept them.
fn fuzz(seconds: u32) -> Result {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        run(cargo().args(["install", "--locked", "cargo-fuzz"]))?;
    }
    let fuzz_dir = crate::util::root().join("fuzz");
    std::fs::create_dir_all(fuzz_dir.join("corpus/parse_frame"))?;
    run(Command::new("cargo")
        .current_dir(&fuzz_dir)
        .env("RUSTC_BOOTSTRAP", "1")
        .args([
            "fuzz",
            "run",
            "parse_frame",
            "corpus/parse_frame",
            "seeds/parse_frame",
            "--",
        ])
        .arg(format!("-max_total_time={seconds}")))
}
