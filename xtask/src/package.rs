//! `cargo xtask package`: the Debian packages, built by cargo-deb from release binaries.
//!
//! Each package's metadata (`[package.metadata.deb]`: dependencies, files, conffiles, units) lives in its
//! crate's Cargo.toml; its units, maintainer scripts and packaged config in `packaging/<package>/`.

use std::path::PathBuf;
use std::process::Command;

use crate::util::{build_release, cargo, run, target_dir, Result};

/// Cargo package = Debian package.
pub const PACKAGES: [&str; 3] = ["bulkhead-dataplane", "bulkhead-control", "bulkhead-pktgen"];

#[derive(clap::Args)]
pub struct Args {
    /// Directory the .deb files are written to (default: target/debian).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Debian version of the packages, revision included (default: the workspace version, revision 1).
    #[arg(long)]
    deb_version: Option<String>,
}

pub fn package(args: &Args) -> Result {
    ensure_cargo_deb()?;
    build_release(&PACKAGES)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("debian"));
    std::fs::create_dir_all(&out)?;
    for p in PACKAGES {
        let mut c = cargo();
        c.args([
            "deb",
            "--no-build",
            "--locked",
            "--strip",
            "-p",
            p,
            "--output",
        ])
        .arg(&out);
        if let Some(v) = &args.deb_version {
            c.args(["--deb-version", v]);
        }
        run(&mut c)?;
    }
    eprintln!("xtask: packages in {}", out.display());
    Ok(())
}

/// cargo-deb, installed once like cargo-fuzz.
fn ensure_cargo_deb() -> Result {
    let have = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        run(cargo().args(["install", "--locked", "cargo-deb", "--version", "^3"]))?;
    }
    Ok(())
}
