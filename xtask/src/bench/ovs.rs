//! OVS-DPDK's userspace connection tracker as a baseline: Debian's `ovs-vswitchd-dpdk` (OVS 3.1 on DPDK 22.11)
//! forwarding the same pcap to the same sink as testpmd and Bulkhead, through `ct()` flows that commit new
//! connections and pass established ones, on one PMD core (lcore 1, the main thread on lcore 0). Everything
//! it creates lives in a fresh directory per run (its database, sockets, pid and log files: `OVS_RUNDIR` and
//! friends point there), and it is stopped when the run ends, also on error. OVS's DPDK needs hugepages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{reserve_hugepages, run_capture, STARTUP_TIMEOUT};
use crate::util::{run, Result};

/// The vswitchd binary of `openvswitch-switch-dpdk`.
const VSWITCHD: &str = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk";
const SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";

/// The OpenFlow tables: untracked IP goes through conntrack; a new connection is committed and forwarded, an
/// established one forwarded; anything else (invalid, not IP) dropped.
const FLOWS: [&str; 5] = [
    "table=0,priority=10,in_port=1,ip,ct_state=-trk,actions=ct(table=1)",
    "table=1,priority=10,in_port=1,ip,ct_state=+trk+new,actions=ct(commit),output:2",
    "table=1,priority=10,in_port=1,ip,ct_state=+trk+est,actions=output:2",
    "table=1,priority=5,actions=drop",
    "table=0,priority=1,actions=drop",
];

/// One OVS-DPDK measurement: packets per second sent to the sink, one sample per second (after `warm`), and
/// the connections its tracker held at the end.
pub struct OvsRun {
    pub pps: Vec<f64>,
    pub connections: u64,
}

/// A running ovsdb-server and ovs-vswitchd in their own directory; stopped on drop.
struct Ovs {
    dir: PathBuf,
}

impl Ovs {
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for var in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
            c.env(var, &self.dir);
        }
        c
    }

    /// A daemon's pid file and log in the directory, detached.
    fn daemon_args(&self, name: &str) -> [String; 3] {
        [
            format!(
                "--pidfile={}",
                self.dir.join(format!("{name}.pid")).display()
            ),
            "--detach".into(),
            format!(
                "--log-file={}",
                self.dir.join(format!("{name}.log")).display()
            ),
        ]
    }

    fn db(&self) -> String {
        format!("unix:{}", self.dir.join("db.sock").display())
    }

    fn vsctl(&self, args: &[&str]) -> Result {
        run(self
            .command("ovs-vsctl")
            .arg(format!("--db={}", self.db()))
            .args(args))
    }

    fn ofctl(&self, args: &[&str]) -> Result<String> {
        let bridge = format!("unix:{}", self.dir.join("br0.mgmt").display());
        run_capture(
            self.command("ovs-ofctl")
                .arg(args[0])
                .arg(bridge)
                .args(&args[1..]),
        )
    }

    /// Packets the sink port (OpenFlow port 2) has sent, read from the datapath.
    fn sink_tx(&self) -> Result<u64> {
        let out = run_capture(
            self.command("ovs-ofctl")
                .arg("dump-ports")
                .arg(format!("unix:{}", self.dir.join("br0.mgmt").display()))
                .arg("2"),
        )?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("tx pkts="))
            .and_then(|rest| rest.split(',').next()?.trim().parse().ok())
            .ok_or_else(|| format!("no tx count in `ovs-ofctl dump-ports`: {out}").into())
    }

    fn connections(&self) -> Result<u64> {
        let out = run_capture(
            self.command("ovs-appctl")
                .arg("-t")
                .arg(self.dir.join("ovs-vswitchd.ctl"))
                .arg("dpctl/ct-get-nconns"),
        )?;
        out.trim()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("unexpected `dpctl/ct-get-nconns` answer: {out}").into())
    }

    fn stop_pidfile(&self, name: &str) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join(name)) else {
            return;
        };
        let pid = pid.trim();
        let _ = Command::new("kill").args(["-TERM", pid]).status();
        let gone = Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists()
            && gone.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        self.stop_pidfile("ovs-vswitchd.pid");
        self.stop_pidfile("ovsdb-server.pid");
    }
}

/// Starts OVS-DPDK forwarding `pcap` (replayed from memory) to a `net_null` sink through conntrack, measures
/// it for `seconds` after it starts forwarding, and stops it.
pub fn measure(dir: &Path, pcap: &Path, memory_mb: u32, seconds: u64) -> Result<OvsRun> {
    reserve_hugepages()?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let ovs = Ovs {
        dir: dir.to_path_buf(),
    };
    let conf = dir.join("conf.db");
    run(ovs
        .command("ovsdb-tool")
        .arg("create")
        .arg(&conf)
        .arg(SCHEMA))?;
    run(ovs
        .command("ovsdb-server")
        .arg(format!("--remote=punix:{}", dir.join("db.sock").display()))
        .args(ovs.daemon_args("ovsdb-server"))
        .arg(&conf))?;
    ovs.vsctl(&["--no-wait", "init"])?;
    let extra = format!(
        "other_config:dpdk-extra=--no-pci --file-prefix=bench-ovs-{}",
        std::process::id()
    );
    let memory = format!("other_config:dpdk-socket-mem={memory_mb}");
    ovs.vsctl(&[
        "--no-wait",
        "set",
        "Open_vSwitch",
        ".",
        "other_config:dpdk-init=true",
        &memory,
        &extra,
        "other_config:pmd-cpu-mask=0x2",
        "other_config:dpdk-lcore-mask=0x1",
    ])?;
    run(ovs
        .command(VSWITCHD)
        .arg(ovs.db())
        .arg(format!(
            "--unixctl={}",
            dir.join("ovs-vswitchd.ctl").display()
        ))
        .args(ovs.daemon_args("ovs-vswitchd")))?;
    ovs.vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
    ])?;
    let source = format!(
        "options:dpdk-devargs=net_pcap0,rx_pcap={},infinite_rx=1",
        pcap.display()
    );
    ovs.vsctl(&[
        "add-port",
        "br0",
        "p0",
        "--",
        "set",
        "Interface",
        "p0",
        "type=dpdk",
        &source,
        "ofport_request=1",
    ])?;
    ovs.vsctl(&[
        "add-port",
        "br0",
        "p1",
        "--",
        "set",
        "Interface",
        "p1",
        "type=dpdk",
        "options:dpdk-devargs=net_null0,no-rx=1",
        "ofport_request=2",
    ])?;
    ovs.ofctl(&["del-flows"])?;
    for flow in FLOWS {
        ovs.ofctl(&["add-flow", flow])?;
    }
    // One sample per second once packets flow; the first ones are warm-up like every other program's.
    let t0 = Instant::now();
    let mut last = (Instant::now(), ovs.sink_tx()?);
    let mut pps = Vec::new();
    let mut since: Option<Instant> = None;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = (Instant::now(), ovs.sink_tx()?);
        let rate = (now.1 - last.1) as f64 / now.0.duration_since(last.0).as_secs_f64();
        last = now;
        match since {
            Some(t) => {
                pps.push(rate);
                if t.elapsed() >= Duration::from_secs(seconds) {
                    break;
                }
            }
            None if rate > 0.0 => {
                since = Some(Instant::now());
                pps.push(rate);
            }
            None if t0.elapsed() > STARTUP_TIMEOUT => {
                return Err(format!(
                    "OVS-DPDK did not start forwarding within {STARTUP_TIMEOUT:?} (see {})",
                    dir.join("ovs-vswitchd.log").display()
                )
                .into())
            }
            None => {}
        }
    }
    let connections = ovs.connections()?;
    Ok(OvsRun {
        pps: super::warm(pps, "OVS-DPDK", |&r| r > 0.0)?,
        connections,
    })
}

/// Writes the first `packets` packets of the classic pcap file `src` (either byte order) to `dst`.
pub fn pcap_prefix(src: &Path, dst: &Path, packets: usize) -> Result {
    let bytes = std::fs::read(src)?;
    let le = match bytes.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d]) => false,
        _ => return Err(format!("{}: not a classic pcap file", src.display()).into()),
    };
    let mut end = 24;
    for _ in 0..packets {
        let Some(len) = bytes.get(end + 8..end + 12) else {
            break;
        };
        let len = [len[0], len[1], len[2], len[3]];
        let len = if le {
            u32::from_le_bytes(len)
        } else {
            u32::from_be_bytes(len)
        };
        end = (end + 16 + len as usize).min(bytes.len());
    }
    std::fs::write(dst, &bytes[..end])?;
    Ok(())
}
