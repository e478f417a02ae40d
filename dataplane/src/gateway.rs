//! Brings the gateway up from a [`Config`], runs it until asked to stop, and brings it down cleanly.
//!
//! Threads: the main lcore runs this module (start-up, periodic counter reports, shutdown); each worker lcore
//! runs [`worker::run`] on the queues it owns. Nothing here is on the packet path.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dpdk::{lcore, Eal, Mempool, Port, PortConfig, PortStats, RxQueue, TxQueue};
use serde::Serialize;
use serde_json::json;

use crate::config::{Config, Device};
use crate::counters::{Counters, WorkerSnapshot};
use crate::worker::{self, Path};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Dpdk(#[from] dpdk::Error),
    #[error("port {port:?} ({device}): {source}")]
    Port {
        port: String,
        device: String,
        source: dpdk::Error,
    },
    #[error("port {port:?} ({driver}) supports {max} queue(s) per direction, but {workers} workers need one each; use fewer workers or a multi-queue device")]
    TooFewQueues {
        port: String,
        driver: String,
        max: u16,
        workers: usize,
    },
    #[error("worker core {0} is not available to DPDK")]
    LcoreUnavailable(u32),
    #[error("worker on core {0} panicked; the gateway stopped")]
    WorkerPanicked(u32),
    #[error("cannot write the counters report: {0}")]
    Report(#[from] std::io::Error),
}

/// Counters of one port, read from the device.
#[derive(Debug, Serialize)]
struct PortReport<'a> {
    name: &'a str,
    #[serde(flatten)]
    stats: PortStatsJson,
}

#[derive(Debug, Serialize)]
struct PortStatsJson {
    rx_packets: u64,
    tx_packets: u64,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_missed: u64,
    rx_errors: u64,
    tx_errors: u64,
    rx_nombuf: u64,
}

impl From<PortStats> for PortStatsJson {
    fn from(s: PortStats) -> Self {
        PortStatsJson {
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rx_missed: s.rx_missed,
            rx_errors: s.rx_errors,
            tx_errors: s.tx_errors,
            rx_nombuf: s.rx_nombuf,
        }
    }
}

/// Sets a flag when dropped, so the workers are told to stop on every way out of the main loop (errors and
/// unwinding included); otherwise the lcore scope would wait for them forever.
struct StopOnExit<'a>(&'a AtomicBool);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the gateway until `stop_requested` becomes true. Machine-readable events (one JSON object per line)
/// go to `events`; a human summary goes to stderr.
pub fn run(
    cfg: &Config,
    stop_requested: &AtomicBool,
    events: &mut dyn Write,
) -> Result<(), GatewayError> {
    let eal = Eal::init(&cfg.eal_args())?;
    for &core in &cfg.workers.cores {
        if !eal.lcore_enabled(core) {
            return Err(GatewayError::LcoreUnavailable(core));
        }
    }
    let pool = Mempool::new(
        &eal,
        "bulkhead_mbufs",
        cfg.mempool.mbufs,
        cfg.mempool.cache,
        cfg.mempool.data_room,
        None,
    )?;
    let workers = cfg.workers.cores.len();
    let mut ports = open_ports(&eal, cfg, &pool)?;

    let mut started = Vec::with_capacity(ports.len());
    for (port, pc) in ports.iter().zip(&cfg.ports) {
        let q = port.start().map_err(|source| port_error(pc, source))?;
        started.push((
            q.rx.into_iter().map(Some).collect::<Vec<_>>(),
            q.tx.into_iter().map(Some).collect::<Vec<_>>(),
        ));
    }
    let mut per_worker = assign_paths(cfg, &mut started);
    drop(started);

    let mut info = Vec::new();
    for (port, pc) in ports.iter().zip(&cfg.ports) {
        let dev = port.info().map_err(|source| port_error(pc, source))?;
        let mac = port.mac().map_err(|source| port_error(pc, source))?;
        info.push(json!({
            "name": pc.name, "device": pc.device, "port_id": port.id(), "driver": dev.driver,
            "mac": mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
        }));
    }

    let counters = Counters::new(workers);
    let workers_stop = AtomicBool::new(false);
    let started_at = Instant::now();
    let (result, joined) = lcore::scope(&eal, |scope| -> Result<(), GatewayError> {
        let _stop = StopOnExit(&workers_stop);
        for (w, paths) in per_worker.iter_mut().enumerate() {
            let core = cfg.workers.cores[w];
            let (c, stop, burst) = (counters.worker(w), &workers_stop, cfg.workers.burst);
            scope.spawn(core, move || worker::run(paths, burst, c, stop))?;
        }
        emit(
            events,
            &json!({"event": "ready", "ports": info, "workers": cfg.workers.cores}),
        )?;
        eprintln!("bulkhead-dataplane: forwarding on {} port(s) with {workers} worker(s); SIGINT/SIGTERM to stop", ports.len());

        let interval = Duration::from_millis(cfg.stats.interval_ms);
        let mut next_report = started_at + interval;
        let mut last = (started_at, WorkerSnapshot::default());
        while !stop_requested.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            if !interval.is_zero() && Instant::now() >= next_report {
                next_report += interval;
                let snaps = counters.snapshot();
                emit(events, &report("stats", started_at, cfg, &ports, &snaps))?;
                let total = WorkerSnapshot::sum(&snaps);
                eprintln!("{}", rate_line(started_at, last, total));
                last = (Instant::now(), total);
            }
        }
        Ok(())
    });
    drop(per_worker);
    let snaps = counters.snapshot();
    emit(events, &report("stopped", started_at, cfg, &ports, &snaps))?;
    eprint!("{}", summary(cfg, &ports, &snaps));
    for port in &mut ports {
        port.stop()?;
    }
    if let Some(&core) = joined.panicked.first() {
        return Err(GatewayError::WorkerPanicked(core));
    }
    result
}

fn port_error(pc: &crate::config::PortCfg, source: dpdk::Error) -> GatewayError {
    GatewayError::Port {
        port: pc.name.clone(),
        device: pc.device.clone(),
        source,
    }
}

/// Finds, checks and configures every port: one RX and one TX queue per worker.
fn open_ports<'a>(
    eal: &'a Eal,
    cfg: &Config,
    pool: &'a Mempool<'a>,
) -> Result<Vec<Port<'a>>, GatewayError> {
    let workers = cfg.workers.cores.len();
    let port_cfg = PortConfig {
        rx_queues: workers as u16,
        tx_queues: workers as u16,
        rx_ring: cfg.rings.rx,
        tx_ring: cfg.rings.tx,
        promiscuous: true,
    };
    cfg.ports
        .iter()
        .map(|pc| {
            // validate() accepted the device string.
            let dev = Device::parse(&pc.device)
                .map_err(|_| port_error(pc, dpdk::Error::NoSuchPort(pc.device.clone())))?;
            let mut port =
                Port::by_name(eal, dev.port_name()).map_err(|source| port_error(pc, source))?;
            let info = port.info().map_err(|source| port_error(pc, source))?;
            let max = info.max_rx_queues.min(info.max_tx_queues);
            if usize::from(max) < workers {
                return Err(GatewayError::TooFewQueues {
                    port: pc.name.clone(),
                    driver: info.driver,
                    max,
                    workers,
                });
            }
            port.configure(&port_cfg, pool)
                .map_err(|source| port_error(pc, source))?;
            Ok(port)
        })
        .collect()
}

type PortQueues<'p> = (Vec<Option<RxQueue<'p>>>, Vec<Option<TxQueue<'p>>>);

/// Worker `w` owns queue `w` of every port: for each link it forwards a→b and b→a.
fn assign_paths<'p>(cfg: &Config, queues: &mut [PortQueues<'p>]) -> Vec<Vec<Path<'p>>> {
    let index = |name: &str| {
        cfg.ports
            .iter()
            .position(|p| p.name == name)
            .expect("validated link")
    };
    (0..cfg.workers.cores.len())
        .map(|w| {
            let mut paths = Vec::new();
            for link in &cfg.links {
                let (a, b) = (index(&link.ports[0]), index(&link.ports[1]));
                for (from, to) in [(a, b), (b, a)] {
                    let rx = queues[from].0[w]
                        .take()
                        .expect("each RX queue is assigned once");
                    let tx = queues[to].1[w]
                        .take()
                        .expect("each TX queue is assigned once");
                    paths.push(Path { rx, tx });
                }
            }
            paths
        })
        .collect()
}

fn emit(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

fn report(
    event: &str,
    since: Instant,
    cfg: &Config,
    ports: &[Port<'_>],
    snaps: &[WorkerSnapshot],
) -> serde_json::Value {
    let ports: Vec<_> = ports
        .iter()
        .zip(&cfg.ports)
        .map(|(p, pc)| {
            let stats = p.stats().unwrap_or_default();
            serde_json::to_value(PortReport {
                name: &pc.name,
                stats: stats.into(),
            })
            .unwrap_or_default()
        })
        .collect();
    let workers: Vec<_> = snaps
        .iter()
        .zip(&cfg.workers.cores)
        .map(|(s, core)| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["core"] = json!(core);
            v["busy_ratio"] = json!(s.busy_ratio());
            v
        })
        .collect();
    json!({
        "event": event,
        "uptime_s": since.elapsed().as_secs_f64(),
        "totals": WorkerSnapshot::sum(snaps),
        "workers": workers,
        "ports": ports,
    })
}

fn rate_line(
    since: Instant,
    (then, before): (Instant, WorkerSnapshot),
    now: WorkerSnapshot,
) -> String {
    let dt = then.elapsed().as_secs_f64().max(1e-9);
    let mpps = |a: u64, b: u64| (a - b) as f64 / dt / 1e6;
    let drops: u64 = now.drops.0.iter().sum::<u64>() - before.drops.0.iter().sum::<u64>();
    let busy = WorkerSnapshot {
        busy_polls: now.busy_polls - before.busy_polls,
        idle_polls: now.idle_polls - before.idle_polls,
        ..Default::default()
    };
    format!(
        "[{:>8.1}s] rx {:>7.3} Mpps  tx {:>7.3} Mpps  drops {:>10}  busy {:>5.1}%",
        since.elapsed().as_secs_f64(),
        mpps(now.rx_packets, before.rx_packets),
        mpps(now.tx_packets, before.tx_packets),
        drops,
        busy.busy_ratio() * 100.0
    )
}

fn summary(cfg: &Config, ports: &[Port<'_>], snaps: &[WorkerSnapshot]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("bulkhead-dataplane stopped. Counters:\n");
    for (snap, core) in snaps.iter().zip(&cfg.workers.cores) {
        let _ = writeln!(
            s,
            "  worker core {core}: rx {} tx {} drops {:?} busy {:.1}%",
            snap.rx_packets,
            snap.tx_packets,
            crate::counters::DropReason::ALL.map(|r| (r.name(), snap.drops.0[r as usize])),
            snap.busy_ratio() * 100.0
        );
    }
    for (p, pc) in ports.iter().zip(&cfg.ports) {
        let st = p.stats().unwrap_or_default();
        let _ = writeln!(
            s,
            "  port {}: rx {} pkts / {} B, tx {} pkts / {} B, missed {}, errors rx {} tx {}",
            pc.name,
            st.rx_packets,
            st.rx_bytes,
            st.tx_packets,
            st.tx_bytes,
            st.rx_missed,
            st.rx_errors,
            st.tx_errors
        );
    }
    s
}
