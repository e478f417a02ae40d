//! `bulkhead-dataplane --config config/dataplane.toml`

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bulkhead_dataplane::{config::Config, gateway, remote::RemoteTls};
use clap::Parser;

/// Bulkhead's poll-mode dataplane: forwards frames between paired ports.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Gateway config file (TOML); see config/dataplane.toml.
    #[arg(long, short)]
    config: PathBuf,
    /// Validate the config, print the EAL command line it implies, and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::load(&args.config) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("bulkhead-dataplane: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        // The remote listener's certificate, key, CA and pins are read and checked as a start would.
        if let Some(rc) = &cfg.remote_control {
            if let Err(e) = RemoteTls::load(rc, None) {
                eprintln!("bulkhead-dataplane: invalid config: {e}");
                return ExitCode::from(2);
            }
        }
        println!(
            "{}: ok\nEAL: {}",
            args.config.display(),
            cfg.eal_args().join(" ")
        );
        return ExitCode::SUCCESS;
    }

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("bulkhead-dataplane: cannot install the handler for signal {signal}: {e}");
            return ExitCode::FAILURE;
        }
    }
    // SIGHUP: the remote listener reads its certificates again.
    let reload = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload)) {
        eprintln!("bulkhead-dataplane: cannot install the handler for SIGHUP: {e}");
        return ExitCode::FAILURE;
    }
    match gateway::run(
        &cfg,
        &args.config,
        &stop,
        &reload,
        &mut std::io::stdout().lock(),
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead-dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}
