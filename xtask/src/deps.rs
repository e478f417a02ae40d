//! The machine's set-up: Debian packages, installed only when missing (so a prepared machine is not touched).

use std::process::Command;

use crate::util::{is_root, run, Result};

/// What building, testing, the demo and the benchmarks need.
const PACKAGES: &[&str] = &[
    // DPDK 22.11 LTS: libraries, headers, pkg-config file, dpdk-testpmd and dpdk-test-acl.
    "dpdk",
    "dpdk-dev",
    "libdpdk-dev",
    "pkg-config",
    // bindgen.
    "libclang-dev",
    // The namespace test bed and the clients that cross it.
    "iproute2",
    "iputils-ping",
    "curl",
    "python3",
    "tcpdump",
    "iperf3",
    "coreutils",
    // A real Prometheus server and promtool for the metrics tests.
    "prometheus",
    // The web console's browser tests: headless Chromium driven through ChromeDriver, and a font to render
    // its screenshots with (a recommendation of chromium, which --no-install-recommends leaves out).
    "chromium",
    "chromium-driver",
    "fonts-liberation",
    // The Debian packages (`cargo xtask package`) and their test: dpkg-shlibdeps for the library dependencies,
    // lintian, systemd-analyze and systemd-sysusers, setpriv/unshare/nsenter for the throwaway install.
    "dpkg-dev",
    "lintian",
    "systemd",
    "util-linux",
    "adduser",
    // The TLS tests: certificate fingerprints and the public-key hash Chromium trusts, read independently; the
    // dataplane remote listener's certificates, made with the commands of docs/remote-gateways.md.
    "openssl",
    // SIEM export tests: a real syslog receiver with its TLS driver, nfdump's IPFIX collector, and a venv for
    // the reference Community ID implementation from PyPI.
    "rsyslog",
    "rsyslog-gnutls",
    "nfdump",
    "python3-venv",
    // The HA pair's test bed and benchmark (`testbed::pair`): VRRP deciding which member is active, configured
    // as docs/ha.md shows.
    "keepalived",
    // The stateful and new-flow benchmarks' second baseline: OVS-DPDK's userspace connection tracker.
    "openvswitch-switch-dpdk",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

pub fn ensure() -> Result {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "missing Debian packages: {}; run `sudo cargo xtask deps`",
            missing.join(" ")
        )
        .into());
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}
