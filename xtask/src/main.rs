//! `cargo xtask <command>`: everything a developer or CI runs, in Rust so it works the same everywhere.
//!
//! * `deps`  — install the Debian packages Bulkhead needs (DPDK 22.11, libclang, test tools) when missing.
//! * `demo`  — the gateway on the namespace test bed with real traffic crossing it.
//! * `test`  — the whole suite: fmt, clippy, unit and end-to-end tests, a short fuzz run.
//! * `bench` — forwarding throughput against `dpdk-testpmd` on the same input, same run.
//! * `package` — the Debian packages (cargo-deb) of the dataplane, control and pktgen.
//!
//! xtask itself never links DPDK, so it builds on a machine that does not have it yet.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod deps;
mod package;
mod suite;
mod util;

#[derive(Parser)]
#[command(about = "Bulkhead project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install missing Debian packages (needs root).
    Deps,
    /// Run the demo: dataplane between two namespaces, real traffic, counters.
    Demo(demo::Args),
    /// Run the whole test suite (needs root for the namespace tests).
    Test(suite::Args),
    /// Measure forwarding throughput against dpdk-testpmd.
    Bench(bench::Args),
    /// Build the Debian packages (release binaries, cargo-deb) into target/debian.
    Package(package::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Deps => deps::ensure(),
        Command::Demo(args) => deps::ensure().and_then(|()| demo::run(&args)),
        Command::Test(args) => deps::ensure().and_then(|()| suite::suite(&args)),
        Command::Bench(args) => deps::ensure().and_then(|()| bench::bench(&args)),
        Command::Package(args) => deps::ensure().and_then(|()| package::package(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
