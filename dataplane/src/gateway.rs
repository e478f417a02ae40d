//! Brings the gateway up from a [`Config`], runs it until asked to stop, and brings it down cleanly.
//!
//! Threads: the main lcore runs this module (start-up, periodic counter reports, shutdown); each worker lcore
//! runs [`worker::run`] on the queues it owns. Nothing here is on the packet path.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use dpdk::rcu::RcuCell;
use dpdk::{lcore, Eal, Mempool, Port, PortConfig, PortStats};
use protocol::{ErrorCode, ErrorReply, PortCounters, Reply, Request, Role};
use serde_json::json;

use crate::clock::Clock;
use crate::config::{Config, Device};
use crate::conntrack::{Strictness, Tracker};
use crate::counters::{Counters, DropReason, WorkerSnapshot};
use crate::events;
use crate::ha::guard::{Guard, GuardCfg};
use crate::ha::heartbeat::{BeatSender, PeerCell, WorkerBeats};
use crate::ha::sync::{SyncShared, WorkerSync};
use crate::ha::{self, LinkWatch, Member, RoleCell};
use crate::management::{Management, StateError};
use crate::remote::{RemoteError, RemoteTls};
use crate::ruleset::Ruleset;
use crate::socket::{self, Handler};
use crate::worker::{IdleBackoff, Worker};

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
    #[error("policy state: {0}")]
    State(#[from] StateError),
    #[error("control socket: {0}")]
    Socket(std::io::Error),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// A control socket could not be created at the path its config field names.
    #[error("{field}: {source}")]
    SocketBind {
        field: &'static str,
        source: std::io::Error,
    },
}

/// Counters of one port, read from the device, under the port's configured name.
fn port_counters(name: &str, s: PortStats) -> PortCounters {
    PortCounters {
        name: name.to_string(),
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

/// Sets a flag when dropped, so the workers are told to stop on every way out of the main loop (errors and
/// unwinding included); otherwise the lcore scope would wait for them forever.
struct StopOnExit<'a>(&'a AtomicBool);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A control request on its way from a socket thread to the management loop, with where to send the answer.
type Envelope = (Request, Sender<Result<Reply, ErrorReply>>);

/// The socket threads' side: forwards each request to the management loop on the main lcore (which owns the
/// EAL, and so is the only thread that may build classifiers) and waits for its answer.
struct Forward(Sender<Envelope>);

impl Handler for Forward {
    fn handle(&self, request: Request) -> Result<Reply, ErrorReply> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let busy = || {
            ErrorReply::new(
                ErrorCode::Internal,
                "the dataplane's management loop is not answering",
            )
        };
        self.0.send((request, tx)).map_err(|_| busy())?;
        rx.recv_timeout(Duration::from_secs(120))
            .map_err(|_| busy())?
    }
}

/// Runs the gateway until `stop_requested` becomes true; each time `reload_requested` becomes true (SIGHUP) it
/// is reset and the remote listener's pins (from `config_path`) and certificates are read again.
/// Machine-readable events (one JSON object per line) go to `events`; a human summary goes to stderr.
pub fn run(
    cfg: &Config,
    config_path: &std::path::Path,
    stop_requested: &AtomicBool,
    reload_requested: &AtomicBool,
    events: &mut dyn Write,
) -> Result<(), GatewayError> {
    // The remote listener's files are read before anything starts: unusable ones stop the start here.
    let remote_tls = match &cfg.remote_control {
        Some(rc) => Some(Arc::new(RemoteTls::load(rc, Some(config_path))?)),
        None => None,
    };
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

    // Policy before traffic: the last committed version (or the bootstrap one) is published before any port
    // starts; without one the workers drop everything until a policy arrives.
    let cell: RcuCell<Ruleset<'_>> = RcuCell::new(workers as u32)?;
    let counters = Counters::new(workers, Management::rule_slots(cfg));
    let clock = Clock::new(dpdk::tsc(), dpdk::tsc_hz(&eal));
    // A member of an HA pair starts as standby; a single gateway is always active.
    let role = RoleCell::new(match cfg.ha {
        Some(_) => Role::Standby,
        None => Role::Active,
    });
    // Connection-state sync with the HA peer, when configured.
    let sync_cfg = cfg
        .ha
        .as_ref()
        .filter(|ha| ha.sync_peer.is_some() || ha.sync_listen.is_some());
    let sync_shared = SyncShared::new(workers);
    let sync_listener =
        match sync_cfg.and_then(|ha| ha.sync_listen) {
            Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|source| {
                GatewayError::SocketBind {
                    field: "ha.sync_listen",
                    source,
                }
            })?),
            None => None,
        };
    // The split-brain guard's heartbeats over the data segments.
    let instance = ha::new_instance();
    let peer_cell = PeerCell::default();
    let member = cfg.ha.as_ref().map(|ha| Member {
        role: &role,
        peer: &peer_cell,
        guard: Guard::new(
            GuardCfg {
                peer_silence_ms: ha.peer_silence_ms,
                handover_ms: ha.handover_ms,
                tie_ms: ha.heartbeat_ms,
            },
            instance,
        ),
        instance,
    });
    let mut mgmt = Management::new(
        &eal,
        cfg,
        &cell,
        &counters,
        clock,
        member,
        sync_cfg.map(|_| &sync_shared),
    );
    if cfg.ha.is_some() {
        eprintln!("bulkhead-dataplane: HA member: standby (forwarding nothing) until set_role makes it active");
    }
    match mgmt.restore()? {
        Some(v) => eprintln!(
            "bulkhead-dataplane: enforcing policy version {v} (rte_acl classifier: {})",
            mgmt.classifier().map_or("none", |alg| alg.name())
        ),
        None => eprintln!("bulkhead-dataplane: no policy yet: forwarding nothing until one is loaded (fail-closed)"),
    }

    // Bound before the ports start: a second dataplane on the same socket stops here, and `ready` (below)
    // means clients can connect.
    let (sockets, remote) = control_sockets(cfg, remote_tls)?;

    let mut started = Vec::with_capacity(ports.len());
    for (port, pc) in ports.iter().zip(&cfg.ports) {
        let q = port.start().map_err(|source| port_error(pc, source))?;
        started.push((
            q.rx.into_iter().map(Some).collect::<Vec<_>>(),
            q.tx.into_iter().map(Some).collect::<Vec<_>>(),
        ));
    }
    let peer = peers(cfg);
    let mut macs = Vec::with_capacity(ports.len());
    for (port, pc) in ports.iter().zip(&cfg.ports) {
        macs.push(port.mac().map_err(|source| port_error(pc, source))?);
    }
    let seed_state = std::collections::hash_map::RandomState::new();
    let mut crew = Vec::with_capacity(workers);
    let (mut sync_outs, mut sync_inboxes) = (Vec::new(), Vec::new());
    for w in 0..workers {
        let sync = sync_cfg.map(|ha| {
            let (out, out_rx) = crossbeam_channel::bounded(ha.sync_queue as usize);
            let (inbox_tx, inbox) = crossbeam_channel::bounded(ha.sync_queue as usize);
            sync_outs.push(out_rx);
            sync_inboxes.push(inbox_tx);
            WorkerSync::new(
                w,
                &sync_shared,
                out,
                inbox,
                ha.sync_refresh_ms,
                ha.sync_budget as usize,
            )
        });
        let (sink, source) = events::queue(cfg.events.queue_per_worker as usize);
        let (commands_tx, commands_rx) = crossbeam_channel::bounded(4);
        mgmt.sources.push(source);
        mgmt.commands.push(commands_tx);
        // A per-boot random seed: flow tuples crafted to collide in the table cannot target an unknown seed.
        let seed = std::hash::BuildHasher::hash_one(&seed_state, w);
        crew.push(Worker {
            index: w as u16,
            rx: started
                .iter_mut()
                .map(|(rx, _)| rx[w].take().expect("one RX queue per worker"))
                .collect(),
            tx: started
                .iter_mut()
                .map(|(_, tx)| tx[w].take().expect("one TX queue per worker"))
                .collect(),
            peer: peer.clone(),
            burst: cfg.workers.burst,
            counters: counters.worker(w),
            tracker: Tracker::new(
                cfg.conntrack.flows_per_worker as usize,
                seed,
                &Default::default(),
                Strictness::Strict,
            ),
            policy: cell.reader()?,
            events: sink,
            commands: commands_rx,
            clock,
            expiry_budget: cfg.conntrack.expiry_budget as usize,
            denied_events_per_sec: cfg.events.denied_per_second,
            pool: &pool,
            idle: IdleBackoff {
                sleep_max_us: cfg.workers.idle_sleep_max_us,
                polls_before_sleep: cfg.workers.idle_polls_before_sleep,
            },
            role: &role,
            sync,
            beats: cfg.ha.as_ref().map(|ha| WorkerBeats {
                pair_id: ha.pair_id,
                instance,
                peer: &peer_cell,
                role: &role,
                sender: (w == 0).then(|| {
                    BeatSender::new(
                        ha.pair_id,
                        instance,
                        macs.iter().map(|m| net::ethernet::MacAddr(*m)).collect(),
                        ha.heartbeat_ms,
                    )
                }),
            }),
        });
    }
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

    let workers_stop = AtomicBool::new(false);
    let started_at = Instant::now();
    let (result, joined) = lcore::scope(&eal, |scope| -> Result<(), GatewayError> {
        let _stop = StopOnExit(&workers_stop);
        for (w, worker) in crew.into_iter().enumerate() {
            let stop = &workers_stop;
            scope.spawn(cfg.workers.cores[w], move || worker.run(stop))?;
        }
        let server_stop = AtomicBool::new(false);
        let (req_tx, req_rx) = crossbeam_channel::bounded::<Envelope>(16);
        std::thread::scope(|threads| -> Result<(), GatewayError> {
            let _server_stop = StopOnExit(&server_stop);
            let server = threads.spawn(|| socket::serve(sockets, &Forward(req_tx), &server_stop));
            if let Some(peer) = sync_cfg.and_then(|ha| ha.sync_peer) {
                let (shared, outs, role, stop) = (&sync_shared, &sync_outs, &role, &server_stop);
                threads.spawn(move || ha::sync::run_sender(shared, outs, peer, role, stop));
            }
            if let Some(listener) = sync_listener {
                let (shared, inboxes, stop) = (&sync_shared, &sync_inboxes, &server_stop);
                threads.spawn(move || ha::sync::run_receiver(shared, listener, inboxes, stop));
            }
            emit(
                events,
                &json!({
                    "event": "ready", "ports": info, "workers": cfg.workers.cores,
                    "policy_version": mgmt.version(), "control_socket": cfg.policy.control_socket,
                    "remote_control": remote.as_ref().map(|(_, addr)| addr.to_string()),
                    "ha_role": cfg.ha.as_ref().map(|_| role.role()),
                }),
            )?;
            let reserved = match &cfg.control_socket.reserved_path {
                Some(path) => format!(" (reserved for control: {})", path.display()),
                None => String::new(),
            };
            let remote_line = match &remote {
                Some((tls, addr)) => format!(
                    ", remote control (TLS) on {addr}, certificate SHA-256 {}",
                    tls.fingerprint()
                ),
                None => String::new(),
            };
            eprintln!("bulkhead-dataplane: {} port(s), {workers} worker(s), control socket {}{reserved}{remote_line}; SIGINT/SIGTERM to stop",
                ports.len(), cfg.policy.control_socket.display());

            // Link-state propagation, for a member of an HA pair.
            let mut links = cfg.ha.as_ref().map(|ha| {
                let watch = LinkWatch::new(peer.clone());
                write_track_file(ha.track_file.as_deref(), &watch);
                (
                    watch,
                    Duration::from_millis(ha.link_check_ms),
                    Instant::now(),
                )
            });
            // A member of a pair steps its split-brain guard at every turn of this loop: often enough that
            // it reacts to the peer's heartbeats within a few milliseconds.
            let wait = Duration::from_millis(if cfg.ha.is_some() { 5 } else { 20 });
            let interval = Duration::from_millis(cfg.stats.interval_ms);
            let mut next_report = started_at + interval;
            let mut last = (started_at, WorkerSnapshot::default());
            while !stop_requested.load(Ordering::Relaxed) {
                if server.is_finished() {
                    break;
                }
                if let Ok((request, reply)) = req_rx.recv_timeout(wait) {
                    let mut answer = mgmt.handle(request);
                    // The ports belong to this loop, not to management: their counters join here.
                    match &mut answer {
                        Ok(Reply::Counters(report)) => report.ports = port_reports(cfg, &ports),
                        Ok(Reply::Status(status)) => {
                            status.remote_control =
                                remote.as_ref().map(|(tls, addr)| tls.status(*addr));
                            if let (Some(ha), Some((watch, ..))) = (&mut status.ha, &links) {
                                ha.links = watch.links(cfg.ports.iter().map(|p| p.name.as_str()));
                            }
                            if let (Some(ha), Some(sync)) = (&mut status.ha, sync_cfg) {
                                ha.sync = Some(sync_shared.status(&role, sync));
                            }
                        }
                        _ => {}
                    }
                    let _ = reply.send(answer);
                }
                mgmt.collect_events();
                mgmt.step_ha();
                if let Some((watch, period, next)) = &mut links {
                    if Instant::now() >= *next {
                        *next += *period;
                        check_links(cfg, &ports, watch);
                    }
                }
                if reload_requested.swap(false, Ordering::Relaxed) {
                    reload(remote.as_ref().map(|(tls, _)| &**tls));
                }
                if !interval.is_zero() && Instant::now() >= next_report {
                    next_report += interval;
                    let snaps = counters.snapshot();
                    emit(events, &report("stats", started_at, cfg, &ports, &snaps))?;
                    let total = WorkerSnapshot::sum(&snaps);
                    eprintln!("{}", rate_line(started_at, &last, &total));
                    last = (Instant::now(), total);
                }
            }
            server_stop.store(true, Ordering::Relaxed);
            match server.join() {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(GatewayError::Socket(e)),
                Err(_) => Err(GatewayError::Socket(std::io::Error::other(
                    "control socket thread panicked",
                ))),
            }
        })
    });
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

/// Reads every data port's link, takes down (or brings back) the ports linked to one that lost (or regained)
/// its link, and rewrites the track file when what keepalived sees changes.
fn check_links(cfg: &Config, ports: &[Port<'_>], watch: &mut LinkWatch) {
    let lost_before = watch.any_lost();
    let reading: Vec<Option<bool>> = ports.iter().map(|p| p.link_up().ok()).collect();
    for change in watch.step(&reading) {
        let name = &cfg.ports[change.port].name;
        let (what, why) = if change.up {
            ("up", "its linked port's link returned")
        } else {
            ("down", "its linked port lost its link")
        };
        match ports[change.port].set_link(change.up) {
            Ok(()) => eprintln!("bulkhead-dataplane: port {name:?} {what}: {why}"),
            Err(e) => eprintln!(
                "bulkhead-dataplane: port {name:?}: cannot set the link {what} ({why}): {e}"
            ),
        }
    }
    if watch.any_lost() != lost_before {
        write_track_file(
            cfg.ha.as_ref().and_then(|ha| ha.track_file.as_deref()),
            watch,
        );
    }
}

/// Writes keepalived's track file (atomically, so keepalived never reads half of it), if one is configured.
fn write_track_file(path: Option<&std::path::Path>, watch: &LinkWatch) {
    if let Some(path) = path {
        if let Err(e) = crate::persist::write_atomic(path, watch.track_value()) {
            eprintln!("bulkhead-dataplane: ha.track_file: {e}");
        }
    }
}

/// For each port, the index of the port it is linked to.
fn peers(cfg: &Config) -> Vec<usize> {
    let index = |name: &str| {
        cfg.ports
            .iter()
            .position(|p| p.name == name)
            .expect("validated link")
    };
    let mut peer = vec![0; cfg.ports.len()];
    for link in &cfg.links {
        let (a, b) = (index(&link.ports[0]), index(&link.ports[1]));
        peer[a] = b;
        peer[b] = a;
    }
    peer
}

/// SIGHUP: the remote listener's certificate, key, CA and pins are read again (the workers are not touched).
fn reload(remote: Option<&RemoteTls>) {
    match remote {
        Some(tls) => match tls.reload() {
            Ok(fingerprint) => eprintln!(
                "bulkhead-dataplane: SIGHUP: remote control certificates reloaded; serving SHA-256 {fingerprint}"
            ),
            Err(e) => eprintln!(
                "bulkhead-dataplane: SIGHUP: {e}; the remote listener keeps its previous certificates"
            ),
        },
        None => eprintln!("bulkhead-dataplane: SIGHUP: no remote listener configured; nothing to reload"),
    }
}

/// The control endpoints and their limits: `policy.control_socket`, when configured the socket reserved for
/// control, and the remote listener (with its TLS side and bound address).
#[allow(clippy::type_complexity)]
fn control_sockets(
    cfg: &Config,
    remote_tls: Option<Arc<RemoteTls>>,
) -> Result<
    (
        Vec<(socket::Endpoint, socket::Limits)>,
        Option<(Arc<RemoteTls>, SocketAddr)>,
    ),
    GatewayError,
> {
    let c = &cfg.control_socket;
    let limits = |max_connections: u32| socket::Limits {
        max_connections: max_connections as usize,
        idle_timeout: Duration::from_millis(c.idle_timeout_ms),
        reply_timeout: Duration::from_millis(c.reply_timeout_ms),
        max_line: socket::MAX_LINE,
    };
    let bind = |field, path, access| {
        socket::bind(path, access).map_err(|source| GatewayError::SocketBind { field, source })
    };
    let mut sockets = vec![(
        socket::Endpoint::Unix(bind(
            "policy.control_socket",
            &cfg.policy.control_socket,
            socket::Access::OWNER,
        )?),
        limits(c.max_connections),
    )];
    if let Some(path) = &c.reserved_path {
        let access = socket::Access {
            mode: c.reserved_mode,
            gid: c.reserved_gid,
        };
        sockets.push((
            socket::Endpoint::Unix(bind("control_socket.reserved_path", path, access)?),
            limits(c.reserved_connections),
        ));
    }
    let mut remote = None;
    if let (Some(rc), Some(tls)) = (&cfg.remote_control, remote_tls) {
        let bound = |source| GatewayError::SocketBind {
            field: "remote_control.listen",
            source,
        };
        let listener = socket::TlsListener::bind(rc.listen, tls.clone()).map_err(bound)?;
        remote = Some((tls, listener.local_addr().map_err(bound)?));
        sockets.push((socket::Endpoint::Tls(listener), limits(rc.max_connections)));
    }
    Ok((sockets, remote))
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

fn emit(out: &mut dyn Write, value: &serde_json::Value) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Every port's device counters, by configured name.
fn port_reports(cfg: &Config, ports: &[Port<'_>]) -> Vec<PortCounters> {
    ports
        .iter()
        .zip(&cfg.ports)
        .map(|(p, pc)| port_counters(&pc.name, p.stats().unwrap_or_default()))
        .collect()
}

fn report(
    event: &str,
    since: Instant,
    cfg: &Config,
    ports: &[Port<'_>],
    snaps: &[WorkerSnapshot],
) -> serde_json::Value {
    let ports = port_reports(cfg, ports);
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
    (then, before): &(Instant, WorkerSnapshot),
    now: &WorkerSnapshot,
) -> String {
    let dt = then.elapsed().as_secs_f64().max(1e-9);
    let mpps = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt / 1e6;
    let busy = WorkerSnapshot {
        busy_polls: now.busy_polls - before.busy_polls,
        idle_polls: now.idle_polls - before.idle_polls,
        ..Default::default()
    };
    format!(
        "[{:>8.1}s] rx {:>7.3} Mpps  tx {:>7.3} Mpps  drops {:>10}  flows {:>8}  busy {:>5.1}%",
        since.elapsed().as_secs_f64(),
        mpps(now.rx_packets, before.rx_packets),
        mpps(now.tx_packets, before.tx_packets),
        now.dropped() - before.dropped(),
        now.flows_active,
        busy.busy_ratio() * 100.0
    )
}

fn summary(cfg: &Config, ports: &[Port<'_>], snaps: &[WorkerSnapshot]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("bulkhead-dataplane stopped. Counters:\n");
    for (snap, core) in snaps.iter().zip(&cfg.workers.cores) {
        let drops: Vec<String> = DropReason::ALL
            .iter()
            .filter_map(|r| {
                snap.drops
                    .get(r.name())
                    .filter(|n| **n > 0)
                    .map(|n| format!("{} {n}", r.name()))
            })
            .collect();
        let _ = writeln!(
            s,
            "  worker core {core}: rx {} tx {} flows created {} would-deny {} drops [{}] busy {:.1}%",
            snap.rx_packets,
            snap.tx_packets,
            snap.flows_created,
            snap.would_deny,
            drops.join(", "),
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
