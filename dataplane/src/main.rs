//! `bulkhead-dataplane --config config/dataplane.toml`, or
//! `bulkhead-dataplane role --socket PATH [active|standby]` (for keepalived's notify scripts).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use bulkhead_dataplane::{config::Config, gateway, ha, remote::RemoteTls};
use clap::{Parser, Subcommand, ValueEnum};
use protocol::Role;

/// Bulkhead's poll-mode dataplane: forwards frames between paired ports.
#[derive(Parser)]
#[command(version, subcommand_negates_reqs = true)]
struct Args {
    /// Gateway config file (TOML); see config/dataplane.toml.
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    /// Validate the config, print the EAL command line it implies, and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Set (or, without a role, print) the HA role of a running dataplane through its local control socket.
    /// Exit status: 0 done (printing: active), 3 printing: standby, 1 the dataplane could not be asked or
    /// refused, 4 it is not a member of an HA pair.
    Role {
        /// The dataplane's control socket (`policy.control_socket`).
        #[arg(long)]
        socket: PathBuf,
        role: Option<RoleArg>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Active,
    Standby,
}

/// Exit status of `role` when printing the role of a standby (so a track script can test it).
const EXIT_STANDBY: u8 = 3;
/// Exit status of `role` for a dataplane without `[ha]`.
const EXIT_NOT_HA: u8 = 4;

fn role_command(socket: &std::path::Path, role: Option<RoleArg>) -> ExitCode {
    let failed = |e: ha::RoleCommandError| {
        eprintln!("bulkhead-dataplane role: {e}");
        match e {
            ha::RoleCommandError::NotHa => ExitCode::from(EXIT_NOT_HA),
            _ => ExitCode::FAILURE,
        }
    };
    match role {
        Some(arg) => {
            let role = match arg {
                RoleArg::Active => Role::Active,
                RoleArg::Standby => Role::Standby,
            };
            match ha::set_role_over_socket(socket, role) {
                Ok(change) => {
                    let held = match (change.effective, change.held) {
                        (Some(effective), Some(hold)) => {
                            format!(", held {effective}: {}", ha::hold_reason(hold))
                        }
                        _ => String::new(),
                    };
                    println!("{} (was {}){held}", change.role, change.previous);
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
        None => match ha::role_over_socket(socket) {
            Ok(ha) => {
                let role = ha.role;
                match (ha.desired, ha.held) {
                    (Some(desired), Some(hold)) => {
                        println!("{role} (told {desired}, held: {})", ha::hold_reason(hold))
                    }
                    _ => println!("{role}"),
                }
                match role {
                    Role::Active => ExitCode::SUCCESS,
                    Role::Standby => ExitCode::from(EXIT_STANDBY),
                }
            }
            Err(e) => failed(e),
        },
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Role { socket, role }) = &args.command {
        return role_command(socket, *role);
    }
    // clap requires --config without a subcommand; this only keeps the types honest.
    let Some(config) = args.config else {
        eprintln!("bulkhead-dataplane: --config is required");
        return ExitCode::from(2);
    };
    let cfg = match Config::load(&config) {
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
            config.display(),
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
    match gateway::run(&cfg, &config, &stop, &reload, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bulkhead-dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}
