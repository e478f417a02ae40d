//! The `send` and `rfc2544` subcommands: arguments and glue.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::{json, Value};

use super::engine::{self, Setup, TrialSpec, MAX_FRAME};
use super::plan::Plan;
use super::rfc2544::{self, SearchConfig, TrialOutcome};
use super::Error as LiveError;
use crate::{Error, Result};

/// Arguments shared by `send` and `rfc2544`.
#[derive(Args, Debug, Clone)]
pub struct LiveArgs {
    /// The packets to send (Ethernet pcap), in order, looped.
    #[arg(long, value_name = "FILE")]
    pub pcap: PathBuf,
    /// Expected verdicts (`X.pcap.verdicts.jsonl`): replies go out the --rx
    /// port, and flows that do not get their verdict are reported.
    #[arg(long, value_name = "FILE")]
    pub verdicts: Option<PathBuf>,
    /// Sending device, a DPDK vdev string, e.g.
    /// 'net_memif0,role=client,socket=/tmp/a.sock', 'net_tap0,iface=pg0'.
    #[arg(long, value_name = "VDEV")]
    pub tx: String,
    /// Receiving device (the far side of the gateway); may equal --tx for a
    /// loopback device.
    #[arg(long, value_name = "VDEV")]
    pub rx: String,
    /// EAL cores: the first sends (and receives, if it is the only one); a
    /// second receives. Use cores nothing else spins on.
    #[arg(long, value_name = "LIST", default_value = "0", value_delimiter = ',')]
    pub cores: Vec<u32>,
    /// EAL --file-prefix [default: bulkhead-pktgen-<pid>].
    #[arg(long, value_name = "NAME")]
    pub file_prefix: Option<String>,
    /// Use hugepages (default: --no-huge).
    #[arg(long)]
    pub hugepages: bool,
    /// EAL memory, MB.
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub memory_mb: u32,
    /// Extra EAL argument, verbatim (repeatable), e.g. --eal-arg=--log-level=*:debug.
    #[arg(long = "eal-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub eal_args: Vec<String>,
    /// Packets per burst, 1..=64.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub burst: u16,
    /// Descriptors per queue.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub ring: u16,
    /// Packet buffers.
    #[arg(long, value_name = "N", default_value_t = 16383)]
    pub mbufs: u32,
    /// Seconds to wait for the links (a memif peer) to come up.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub link_timeout: f64,
    /// After sending, keep receiving this long at most (ms).
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub drain_ms: u64,
    /// With replies in the pcap (a sidecar): before the sending direction
    /// turns, wait until everything sent has arrived, or this long (ms)
    /// after the last transmission.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub turn_wait_ms: u64,
    /// Write the JSON report here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// `send` arguments.
#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub live: LiveArgs,
    /// Packets per second (token bucket on the TSC); omitted: as fast as
    /// possible.
    #[arg(long, value_name = "PPS")]
    pub rate: Option<f64>,
    /// Send for this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Send this many packets [default without --duration: the pcap once].
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `rfc2544` arguments.
#[derive(Args, Debug, Clone)]
pub struct Rfc2544Args {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub live: LiveArgs,
    /// Seconds per trial (RFC 2544 asks for 60; shorter trials are coarser).
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    pub trial_duration: f64,
    /// Stop the search when the bounds are this close (packets/s).
    #[arg(long, value_name = "PPS", default_value_t = 1000.0)]
    pub resolution: f64,
    /// Top of the search; omitted: the generator's full speed, measured by
    /// the first trial.
    #[arg(long, value_name = "PPS")]
    pub max_rate: Option<f64>,
    /// Loss ratio a trial may have and pass (0: RFC 2544's zero loss).
    #[arg(long, value_name = "RATIO", default_value_t = 0.0)]
    pub loss_tolerance: f64,
    /// Most trials, confirmations included.
    #[arg(long, value_name = "N", default_value_t = 40)]
    pub max_trials: usize,
}

fn secs(arg: &'static str, s: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| Error::arg(arg, format!("{s} is not a positive number of seconds")))
}

fn positive(arg: &'static str, v: Option<f64>) -> Result<Option<f64>> {
    match v {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            Err(Error::arg(arg, format!("{r} is not a positive rate")))
        }
        v => Ok(v),
    }
}

impl LiveArgs {
    fn setup(&self) -> Result<Setup> {
        if self.cores.is_empty() || self.cores.len() > 2 {
            return Err(Error::arg(
                "--cores",
                "give one core (send and receive) or two (send, receive)",
            ));
        }
        if self.cores.len() == 2 && self.cores[0] == self.cores[1] {
            return Err(Error::arg("--cores", "the two cores must differ"));
        }
        Ok(Setup {
            cores: self.cores.clone(),
            file_prefix: self
                .file_prefix
                .clone()
                .unwrap_or_else(|| format!("bulkhead-pktgen-{}", std::process::id())),
            hugepages: self.hugepages,
            memory_mb: self.memory_mb,
            tx_dev: self.tx.clone(),
            rx_dev: self.rx.clone(),
            eal_args: self.eal_args.clone(),
            burst: usize::from(self.burst),
            ring: self.ring,
            mbufs: self.mbufs,
            link_timeout: secs("--link-timeout", self.link_timeout)?,
        })
    }

    fn plan(&self) -> Result<Plan> {
        let plan = Plan::load(&self.pcap, self.verdicts.as_deref())?;
        if let Some((index, t)) = plan
            .templates
            .iter()
            .enumerate()
            .find(|(_, t)| t.bytes.len() > MAX_FRAME)
        {
            return Err(LiveError::FrameTooLarge {
                path: self.pcap.clone(),
                index,
                len: t.bytes.len(),
                max: MAX_FRAME,
            }
            .into());
        }
        Ok(plan)
    }

    fn emit(&self, v: &Value) -> Result<()> {
        let text = serde_json::to_string_pretty(v).expect("JSON values serialize") + "\n";
        match &self.json {
            Some(path) => std::fs::write(path, text).map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            }),
            None => {
                print!("{text}");
                Ok(())
            }
        }
    }
}

/// SIGINT/SIGTERM end the sending early; the run still drains and reports.
fn stop_flag() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registration fails only for forbidden signals; these are not.
        let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
    }
    stop
}

fn stats_json(s: &dpdk::PortStats) -> Value {
    json!({
        "rx_packets": s.rx_packets, "tx_packets": s.tx_packets,
        "rx_missed": s.rx_missed, "rx_errors": s.rx_errors, "tx_errors": s.tx_errors,
        "rx_nombuf": s.rx_nombuf,
    })
}

fn setup_json(setup: &Setup, plan: &Plan) -> Value {
    json!({
        "eal": setup.eal_argv(),
        "templates": plan.templates.len(),
        "stamped_templates": plan.stamped(),
        "flows_in_sidecar": plan.verdicts.len(),
    })
}

/// `bulkhead-pktgen send`.
pub fn send(args: &SendArgs) -> Result<()> {
    let rate = positive("--rate", args.rate)?;
    let duration = args.duration.map(|d| secs("--duration", d)).transpose()?;
    if args.count == Some(0) {
        return Err(Error::arg("--count", "must be at least 1"));
    }
    let setup = args.live.setup()?;
    let plan = args.live.plan()?;
    let count = match (args.count, duration) {
        (None, None) => Some(plan.templates.len() as u64),
        (c, _) => c,
    };
    let spec = TrialSpec {
        rate_pps: rate,
        duration,
        count,
        drain: Duration::from_millis(args.live.drain_ms),
        turn_wait: Duration::from_millis(args.live.turn_wait_ms),
    };
    let stop = stop_flag();
    let (report, stats) = engine::run(&setup, &plan, &stop, |e| {
        let r = e.trial(&spec)?;
        Ok((r, e.port_stats()?))
    })?;
    eprint!("{report}");
    args.live.emit(&json!({
        "command": "send",
        "setup": setup_json(&setup, &plan),
        "report": report,
        "port_stats": {"tx_side": stats_json(&stats[0]), "rx_side": stats_json(&stats[1])},
    }))?;
    match report.verdicts.as_ref().map_or(0, |v| v.mismatches.len()) {
        0 => Ok(()),
        n => Err(LiveError::VerdictMismatches(n).into()),
    }
}

/// `bulkhead-pktgen rfc2544`.
pub fn rfc2544(args: &Rfc2544Args) -> Result<()> {
    let trial = secs("--trial-duration", args.trial_duration)?;
    let max = positive("--max-rate", args.max_rate)?;
    if !(args.resolution.is_finite() && args.resolution >= 1.0) {
        return Err(Error::arg("--resolution", "must be at least 1 packet/s"));
    }
    if !(0.0..1.0).contains(&args.loss_tolerance) {
        return Err(Error::arg("--loss-tolerance", "must be in [0, 1)"));
    }
    let setup = args.live.setup()?;
    let plan = args.live.plan()?;
    let cfg = SearchConfig {
        max_pps: max,
        resolution_pps: args.resolution,
        loss_tolerance: args.loss_tolerance,
        max_trials: args.max_trials.max(1),
        ..SearchConfig::default()
    };
    let stop = stop_flag();
    let drain = Duration::from_millis(args.live.drain_ms);
    let (result, reports) = engine::run(&setup, &plan, &stop, |e| {
        let mut reports = Vec::new();
        let result = rfc2544::search(&cfg, |rate| {
            let spec = TrialSpec {
                rate_pps: rate,
                duration: Some(trial),
                count: None,
                drain,
                turn_wait: Duration::from_millis(args.live.turn_wait_ms),
            };
            let r = e.trial(&spec).map_err(|source| LiveError::Trial {
                rate: rate.unwrap_or(f64::INFINITY),
                source: Box::new(source),
            })?;
            eprintln!(
                "trial {:>2}: target {:>12} pps, offered {:>12.0} pps, loss {} of {} ({:.4} %)",
                reports.len() + 1,
                rate.map_or("max".into(), |r| format!("{r:.0}")),
                r.offered_pps,
                r.loss,
                r.sent,
                r.loss_ratio * 100.0
            );
            let outcome = TrialOutcome {
                sent: r.sent,
                received: r.received,
                offered_pps: r.offered_pps,
            };
            reports.push(r);
            Ok::<_, LiveError>(outcome)
        })?;
        Ok((result, reports))
    })?;
    if result.short_trials() > 0 {
        eprintln!(
            "warning: {} trial(s) offered less than 95 % of their target rate: the generator, not the device, fell short there",
            result.short_trials()
        );
    }
    match result.throughput_pps {
        Some(t) => eprintln!(
            "throughput: {t:.0} pps{}{}",
            if result.confirmed {
                " (confirmed)"
            } else {
                " (not confirmed)"
            },
            if result.limited_by_generator {
                "; no loss at the generator's full speed: the generator, not the device, is the limit"
            } else {
                ""
            }
        ),
        None => eprintln!("throughput: none (every rate tried lost packets)"),
    }
    args.live.emit(&json!({
        "command": "rfc2544",
        "setup": setup_json(&setup, &plan),
        "trial_duration_s": args.trial_duration,
        "resolution_pps": args.resolution,
        "loss_tolerance": args.loss_tolerance,
        "result": result,
        "trial_reports": reports,
    }))
}
