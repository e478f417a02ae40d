//! The gateway config file (TOML). Parsing rejects unknown keys; validation names the offending field, so a
//! typo in `config/*.toml` is a precise message at start, never a silently different gateway.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: Eal,
    pub workers: Workers,
    #[serde(default)]
    pub mempool: MempoolCfg,
    #[serde(default)]
    pub rings: Rings,
    pub ports: Vec<PortCfg>,
    pub links: Vec<Link>,
    #[serde(default)]
    pub stats: Stats,
    #[serde(default)]
    pub policy: PolicyCfg,
    #[serde(default)]
    pub conntrack: ConntrackCfg,
    #[serde(default)]
    pub events: EventsCfg,
    #[serde(default)]
    pub control_socket: ControlSocketCfg,
    /// The control protocol over TLS with required client certificates, for a control process on another
    /// machine. Absent: local sockets only.
    #[serde(default)]
    pub remote_control: Option<RemoteControlCfg>,
    /// Membership of an active/standby pair: present, the gateway starts as standby (forwarding nothing) and
    /// takes the role `set_role` gives it. Absent: a single gateway, always forwarding.
    #[serde(default)]
    pub ha: Option<HaCfg>,
}

/// `[ha]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HaCfg {
    /// How often the data ports' link state is read (ms). When a port loses its link, the port it is linked
    /// to is taken down too, and brought up again when the link returns.
    pub link_check_ms: u64,
    /// A file for keepalived's `track_file`: `0` while every data port has its link, `1` when one has lost it
    /// (with `weight 0`, keepalived then gives up mastership). Absent: not written.
    pub track_file: Option<PathBuf>,
    /// Connection-state sync: where this member receives the active's updates (on the HA link).
    pub sync_listen: Option<SocketAddr>,
    /// Where the peer receives them: while active, this member sends its flows' state there.
    pub sync_peer: Option<SocketAddr>,
    /// Updates each worker may queue for the sync thread (full: counted as lost, and a resync follows).
    pub sync_queue: u32,
    /// Every flow's state is sent again at this period (TCP windows, counters), by a sweep of each worker's
    /// table at `sync_budget` slots per poll-loop iteration.
    pub sync_refresh_ms: u64,
    pub sync_budget: u32,
    /// Split-brain guard: every member sends a heartbeat out of each data port at this period (ms).
    pub heartbeat_ms: u64,
    /// Tells two pairs on the same segments apart: heartbeats of another pair are other EtherTypes' frames.
    pub pair_id: u32,
    /// A member told active stays standby while it has heard an active peer within this time (ms); a held
    /// member becomes active once the peer has been silent this long.
    pub peer_silence_ms: u64,
    /// A member told standby while a peer that does not (yet) want to be active is heard keeps forwarding
    /// at most this long (ms), so a planned switchover has no gap.
    pub handover_ms: u64,
}

impl Default for HaCfg {
    fn default() -> Self {
        HaCfg {
            link_check_ms: 100,
            track_file: None,
            sync_listen: None,
            sync_peer: None,
            sync_queue: 16384,
            sync_refresh_ms: 1000,
            sync_budget: 256,
            heartbeat_ms: 100,
            pair_id: 1,
            peer_silence_ms: 300,
            handover_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyCfg {
    /// Where the last committed policy is kept (`policy.json`), so the gateway enforces it after a restart even
    /// when no control process is running.
    pub state_dir: PathBuf,
    /// The local control socket (Unix stream, JSON lines) the control process talks to.
    pub control_socket: PathBuf,
    /// A policy document loaded at start when `state_dir` holds none (then persisted as the committed policy).
    /// Without either, the gateway forwards nothing until a policy is loaded: it fails closed.
    pub bootstrap: Option<PathBuf>,
    /// Most rules a policy may have (per-rule counters are sized from it).
    pub max_rules: u32,
}

impl Default for PolicyCfg {
    fn default() -> Self {
        PolicyCfg {
            state_dir: "/var/lib/bulkhead".into(),
            control_socket: "/run/bulkhead/dataplane.sock".into(),
            bootstrap: None,
            max_rules: 16_384,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ConntrackCfg {
    /// Hard cap of tracked connections per worker; the table is allocated at start and never grows.
    pub flows_per_worker: u32,
    /// Table slots examined for expiry per poll-loop iteration.
    pub expiry_budget: u32,
}

impl Default for ConntrackCfg {
    fn default() -> Self {
        ConntrackCfg {
            flows_per_worker: 262_144,
            expiry_budget: 64,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventsCfg {
    /// Flow events each worker can queue before further ones are dropped (and counted).
    pub queue_per_worker: u32,
    /// Denied-flow events per second and worker; beyond that they are counted, not queued.
    pub denied_per_second: u32,
    /// Events the management thread keeps for the control socket until they are read.
    pub buffer: u32,
}

impl Default for EventsCfg {
    fn default() -> Self {
        EventsCfg {
            queue_per_worker: 4096,
            denied_per_second: 1000,
            buffer: 65_536,
        }
    }
}

/// `[control_socket]`: how many clients the control socket serves and for how long, and an optional second
/// socket reserved for `bulkhead-control`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSocketCfg {
    /// Connections `policy.control_socket` serves at once; further ones get an error and are closed.
    pub max_connections: u32,
    /// How long a client may take to send a whole request line, counted from when it connected or received its
    /// previous answer (so also how long an idle connection stays open); then the connection is closed.
    pub idle_timeout_ms: u64,
    /// How long a client may take to read a whole answer; then the connection is closed.
    pub reply_timeout_ms: u64,
    /// A second socket for `bulkhead-control` alone, with connections of its own: no other local client can
    /// crowd control out of it (point control's `dataplane_socket` here).
    pub reserved_path: Option<PathBuf>,
    /// Connections the reserved socket serves at once.
    pub reserved_connections: u32,
    /// The reserved socket's mode: 0o600 (the dataplane's user only) or 0o660 (its group too).
    pub reserved_mode: u32,
    /// The group (numeric id) of the reserved socket, so control can run as a user of its own in that group.
    pub reserved_gid: Option<u32>,
}

impl Default for ControlSocketCfg {
    fn default() -> Self {
        ControlSocketCfg {
            max_connections: 16,
            idle_timeout_ms: 5_000,
            reply_timeout_ms: 10_000,
            reserved_path: None,
            reserved_connections: 16,
            reserved_mode: 0o600,
            reserved_gid: None,
        }
    }
}

/// `[remote_control]`: the control protocol on a TCP listener, TLS only, every client authenticated by its
/// certificate. There is no plaintext form. Idle and reply timeouts are `[control_socket]`'s.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RemoteControlCfg {
    /// Address and port to listen on (port 0: any free port, announced in the `ready` event).
    pub listen: SocketAddr,
    /// The dataplane's certificate chain (PEM, leaf first) and its private key (PEM).
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates issued by this CA (PEM; expiry checked) are accepted.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// Client certificates with one of these SHA-256 fingerprints (hex, colons optional, as `openssl x509
    /// -fingerprint -sha256` prints them) are accepted.
    #[serde(default)]
    pub client_pins: Vec<String>,
    /// Connections served at once; further ones are closed at once (and counted).
    #[serde(default = "default_remote_connections")]
    pub max_connections: u32,
    /// Time for a client to complete the TLS handshake; then the connection is closed (and counted).
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
}

fn default_remote_connections() -> u32 {
    16
}

fn default_handshake_timeout_ms() -> u64 {
    5_000
}

impl RemoteControlCfg {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.client_ca.is_none() && self.client_pins.is_empty() {
            return Err(invalid(
                "remote_control",
                "set client_ca, client_pins or both: every client must present a certificate one of them accepts",
            ));
        }
        for (i, pin) in self.client_pins.iter().enumerate() {
            if crate::remote::parse_pin(pin).is_none() {
                return Err(invalid(
                    format!("remote_control.client_pins[{i}]"),
                    format!(
                        "{pin:?} is not a SHA-256 fingerprint (64 hex digits, colons optional)"
                    ),
                ));
            }
        }
        for (field, p) in [
            ("remote_control.cert", &self.cert),
            ("remote_control.key", &self.key),
        ] {
            if p.as_os_str().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if !(1..=1024).contains(&self.max_connections) {
            return Err(invalid(
                "remote_control.max_connections",
                format!("{} is not in 1..=1024", self.max_connections),
            ));
        }
        if !(100..=600_000).contains(&self.handshake_timeout_ms) {
            return Err(invalid(
                "remote_control.handshake_timeout_ms",
                format!("{} is not in 100..=600000", self.handshake_timeout_ms),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Eal {
    /// Distinguishes this DPDK process's runtime files from any other's on the machine.
    pub file_prefix: String,
    /// The core of the main (management) thread; it must not be a worker core.
    pub main_core: u32,
    /// Back DPDK memory with hugepages (production) or with ordinary memory (`--no-huge`, tests).
    pub hugepages: bool,
    pub memory_mb: u32,
    /// DPDK log level (`--log-level`), e.g. `notice`, `warning`.
    pub log_level: String,
    /// Further EAL arguments, passed through verbatim.
    pub extra_args: Vec<String>,
}

impl Default for Eal {
    fn default() -> Self {
        Eal {
            file_prefix: "bulkhead".into(),
            main_core: 0,
            hugepages: true,
            memory_mb: 512,
            log_level: "notice".into(),
            extra_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workers {
    /// One poll-mode worker per core, pinned. Each worker owns queue i of every port.
    pub cores: Vec<u32>,
    /// Packets per RX burst.
    #[serde(default = "default_burst")]
    pub burst: usize,
    /// Idle back-off: the longest a worker sleeps when its queues stay empty, in microseconds (0: never
    /// sleep, pure polling). A deliberate exception to the poll loop's no-syscall rule that lets idle workers
    /// yield their core, at the cost of up to this much latency for the first packet after a quiet spell.
    #[serde(default)]
    pub idle_sleep_max_us: u32,
    /// Consecutive empty polls before the first sleep (the sleeps then double from 2 µs to the maximum).
    #[serde(default = "default_idle_polls_before_sleep")]
    pub idle_polls_before_sleep: u32,
}

fn default_burst() -> usize {
    32
}

fn default_idle_polls_before_sleep() -> u32 {
    1000
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MempoolCfg {
    pub mbufs: u32,
    pub cache: u32,
    /// Bytes per buffer, headroom (128) included; 2176 holds a 1518-byte frame plus VLAN tags.
    pub data_room: u16,
}

impl Default for MempoolCfg {
    fn default() -> Self {
        MempoolCfg {
            mbufs: 32767,
            cache: 256,
            data_room: 2176,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Rings {
    pub rx: u16,
    pub tx: u16,
}

impl Default for Rings {
    fn default() -> Self {
        Rings { rx: 1024, tx: 1024 }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortCfg {
    /// The operator's name for the port (`outside`, `plc-segment`, ...).
    pub name: String,
    /// A PCI address (`0000:03:00.0`) or a DPDK virtual device string (`net_tap0,iface=bh-out`).
    pub device: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Two port names: what arrives on one leaves on the other, both ways.
    pub ports: [String; 2],
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Stats {
    /// Print counters every this many milliseconds (0: only at shutdown).
    pub interval_ms: u64,
}

/// How DPDK is told about a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// A NIC, by PCI address (normalized with its domain, as DPDK names the port).
    Pci(String),
    /// A virtual device: `args` go to `--vdev`; `name` (before the first comma) names the port.
    Vdev { name: String, args: String },
}

impl Device {
    pub fn parse(s: &str) -> Result<Device, String> {
        if let Some(pci) = normalize_pci(s) {
            return Ok(Device::Pci(pci));
        }
        let name = s.split(',').next().unwrap_or_default();
        if name.starts_with("net_") && name.len() > 4 && !name.contains(char::is_whitespace) {
            return Ok(Device::Vdev {
                name: name.into(),
                args: s.into(),
            });
        }
        Err(format!(
            "{s:?} is neither a PCI address (0000:03:00.0) nor a DPDK virtual device (net_tap0,iface=...)"
        ))
    }

    /// The DPDK port name of the device.
    pub fn port_name(&self) -> &str {
        match self {
            Device::Pci(addr) => addr,
            Device::Vdev { name, .. } => name,
        }
    }
}

/// `0000:03:00.0` or `03:00.0` → `0000:03:00.0`.
fn normalize_pci(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, devfn) = match parts.as_slice() {
        [d, b, df] => (*d, *b, *df),
        [b, df] => ("0000", *b, *df),
        _ => return None,
    };
    let (dev, func) = devfn.split_once('.')?;
    let hex = |x: &str, n: usize| x.len() == n && x.chars().all(|c| c.is_ascii_hexdigit());
    let ok = hex(domain, 4) && hex(bus, 2) && hex(dev, 2) && func.len() == 1 && func <= "7";
    ok.then(|| {
        format!(
            "{}:{}:{}.{}",
            domain.to_lowercase(),
            bus.to_lowercase(),
            dev.to_lowercase(),
            func
        )
    })
}

/// DPDK builds for at most this many lcores (RTE_MAX_LCORE in Debian's build).
const MAX_LCORE: u32 = 128;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                source,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "config".into(),
            source,
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks everything that can be checked before DPDK starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let e = &self.eal;
        if e.file_prefix.is_empty() || e.file_prefix.contains(['/', ' ']) {
            return Err(invalid(
                "eal.file_prefix",
                "must be a non-empty name without '/' or spaces",
            ));
        }
        if e.main_core >= MAX_LCORE {
            return Err(invalid(
                "eal.main_core",
                format!("{} is not below {MAX_LCORE}", e.main_core),
            ));
        }
        if e.memory_mb < 64 {
            return Err(invalid(
                "eal.memory_mb",
                format!("{} MiB is too little (at least 64)", e.memory_mb),
            ));
        }

        let w = &self.workers;
        if w.cores.is_empty() {
            return Err(invalid(
                "workers.cores",
                "at least one worker core is needed",
            ));
        }
        let mut seen = HashSet::new();
        for (i, &core) in w.cores.iter().enumerate() {
            let field = format!("workers.cores[{i}]");
            if core == e.main_core {
                return Err(invalid(
                    field,
                    format!("core {core} is eal.main_core; workers need their own cores"),
                ));
            }
            if core >= MAX_LCORE {
                return Err(invalid(
                    field,
                    format!("core {core} is not below {MAX_LCORE}"),
                ));
            }
            if !seen.insert(core) {
                return Err(invalid(field, format!("core {core} is listed twice")));
            }
        }
        if let Some(online) = online_cpus() {
            for (i, core) in std::iter::once(&e.main_core).chain(&w.cores).enumerate() {
                if !online.contains(core) {
                    let field = if i == 0 {
                        "eal.main_core".to_string()
                    } else {
                        format!("workers.cores[{}]", i - 1)
                    };
                    return Err(invalid(
                        field,
                        format!("CPU {core} is not online on this machine"),
                    ));
                }
            }
        }
        if !(1..=dpdk::MAX_BURST).contains(&w.burst) {
            return Err(invalid(
                "workers.burst",
                format!("{} is not in 1..={}", w.burst, dpdk::MAX_BURST),
            ));
        }

        if w.idle_sleep_max_us > 100_000 {
            return Err(invalid(
                "workers.idle_sleep_max_us",
                format!("{} is above 100000 (100 ms)", w.idle_sleep_max_us),
            ));
        }
        if !(1..=1_000_000).contains(&w.idle_polls_before_sleep) {
            return Err(invalid(
                "workers.idle_polls_before_sleep",
                format!("{} is not in 1..=1000000", w.idle_polls_before_sleep),
            ));
        }

        for (field, n) in [("rings.rx", self.rings.rx), ("rings.tx", self.rings.tx)] {
            if !(64..=16384).contains(&n) {
                return Err(invalid(
                    field,
                    format!("{n} descriptors is not in 64..=16384"),
                ));
            }
        }

        if self.ports.len() < 2 {
            return Err(invalid(
                "ports",
                "a bump in the wire needs at least two ports",
            ));
        }
        let mut names = HashSet::new();
        let mut devices = HashSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if p.name.is_empty()
                || !p
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            {
                return Err(invalid(
                    format!("ports[{i}].name"),
                    format!("{:?} must be letters, digits, '-', '_' or '.'", p.name),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(invalid(
                    format!("ports[{i}].name"),
                    format!("{:?} is used by another port", p.name),
                ));
            }
            let dev =
                Device::parse(&p.device).map_err(|r| invalid(format!("ports[{i}].device"), r))?;
            if !devices.insert(dev.port_name().to_string()) {
                return Err(invalid(
                    format!("ports[{i}].device"),
                    format!("{} is used by another port", dev.port_name()),
                ));
            }
        }

        let mut linked = HashSet::new();
        for (i, l) in self.links.iter().enumerate() {
            for (j, name) in l.ports.iter().enumerate() {
                let field = format!("links[{i}].ports[{j}]");
                if !names.contains(name.as_str()) {
                    return Err(invalid(field, format!("no port is named {name:?}")));
                }
                if !linked.insert(name.as_str()) {
                    return Err(invalid(
                        field,
                        format!("port {name:?} is already in a link"),
                    ));
                }
            }
        }
        if let Some(p) = self
            .ports
            .iter()
            .find(|p| !linked.contains(p.name.as_str()))
        {
            return Err(invalid(
                "links",
                format!(
                    "port {:?} is in no link: its traffic would go nowhere",
                    p.name
                ),
            ));
        }

        if !(1024..=16_777_216).contains(&self.conntrack.flows_per_worker) {
            return Err(invalid(
                "conntrack.flows_per_worker",
                format!(
                    "{} is not in 1024..=16777216",
                    self.conntrack.flows_per_worker
                ),
            ));
        }
        if !(1..=4096).contains(&self.conntrack.expiry_budget) {
            return Err(invalid(
                "conntrack.expiry_budget",
                format!("{} is not in 1..=4096", self.conntrack.expiry_budget),
            ));
        }
        if !(16..=1_048_576).contains(&self.events.queue_per_worker) {
            return Err(invalid(
                "events.queue_per_worker",
                format!("{} is not in 16..=1048576", self.events.queue_per_worker),
            ));
        }
        for (field, p) in [
            ("policy.state_dir", &self.policy.state_dir),
            ("policy.control_socket", &self.policy.control_socket),
        ] {
            if p.as_os_str().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if !(1..=policy::limits::MAX_RULES as u32).contains(&self.policy.max_rules) {
            return Err(invalid(
                "policy.max_rules",
                format!(
                    "{} is not in 1..={}",
                    self.policy.max_rules,
                    policy::limits::MAX_RULES
                ),
            ));
        }
        check_socket_path("policy.control_socket", &self.policy.control_socket)?;
        self.control_socket.validate(&self.policy.control_socket)?;
        if let Some(remote) = &self.remote_control {
            remote.validate()?;
        }
        if let Some(ha) = &self.ha {
            if !(10..=10_000).contains(&ha.link_check_ms) {
                return Err(invalid(
                    "ha.link_check_ms",
                    format!("{} is not in 10..=10000", ha.link_check_ms),
                ));
            }
            if ha
                .track_file
                .as_ref()
                .is_some_and(|p| p.file_name().is_none())
            {
                return Err(invalid("ha.track_file", "must name a file"));
            }
            if !(64..=1 << 22).contains(&ha.sync_queue) {
                return Err(invalid(
                    "ha.sync_queue",
                    format!("{} is not in 64..=4194304", ha.sync_queue),
                ));
            }
            if !(50..=60_000).contains(&ha.sync_refresh_ms) {
                return Err(invalid(
                    "ha.sync_refresh_ms",
                    format!("{} is not in 50..=60000", ha.sync_refresh_ms),
                ));
            }
            if !(1..=65_536).contains(&ha.sync_budget) {
                return Err(invalid(
                    "ha.sync_budget",
                    format!("{} is not in 1..=65536", ha.sync_budget),
                ));
            }
            if !(10..=10_000).contains(&ha.heartbeat_ms) {
                return Err(invalid(
                    "ha.heartbeat_ms",
                    format!("{} is not in 10..=10000", ha.heartbeat_ms),
                ));
            }
            // Two heartbeats at least: one lost frame must not make a held member active.
            if !(2 * ha.heartbeat_ms..=60_000).contains(&ha.peer_silence_ms) {
                return Err(invalid(
                    "ha.peer_silence_ms",
                    format!(
                        "{} is not in {}..=60000 (at least twice ha.heartbeat_ms)",
                        ha.peer_silence_ms,
                        2 * ha.heartbeat_ms
                    ),
                ));
            }
            if ha.handover_ms > 60_000 {
                return Err(invalid(
                    "ha.handover_ms",
                    format!("{} is not in 0..=60000", ha.handover_ms),
                ));
            }
        }

        let needed = self.min_mbufs();
        if self.mempool.mbufs < needed {
            return Err(invalid(
                "mempool.mbufs",
                format!(
                    "{} cannot fill every ring, cache and burst; at least {needed} are needed",
                    self.mempool.mbufs
                ),
            ));
        }
        if self.mempool.cache > 512 {
            return Err(invalid(
                "mempool.cache",
                format!("{} is above DPDK's limit of 512", self.mempool.cache),
            ));
        }
        if self.mempool.data_room < 128 + 1518 {
            return Err(invalid(
                "mempool.data_room",
                format!(
                    "{} bytes cannot hold a 1518-byte frame after the 128-byte headroom",
                    self.mempool.data_room
                ),
            ));
        }
        Ok(())
    }

    /// Buffers that can be parked at once: full RX and TX rings on every queue, every lcore's cache, and a
    /// burst in flight per worker and path.
    pub fn min_mbufs(&self) -> u32 {
        let queues = self.workers.cores.len() as u32;
        let ports = self.ports.len() as u32;
        let lcores = queues + 1;
        ports * queues * (u32::from(self.rings.rx) + u32::from(self.rings.tx))
            + lcores * self.mempool.cache
            + queues * ports * dpdk::MAX_BURST as u32
    }

    /// The EAL command line for this config (`argv[0]` included).
    pub fn eal_args(&self) -> Vec<String> {
        let e = &self.eal;
        let mut cores = vec![e.main_core];
        cores.extend(&self.workers.cores);
        let mut args = vec![
            "bulkhead-dataplane".to_string(),
            "-l".into(),
            cores
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            format!("--main-lcore={}", e.main_core),
            format!("--file-prefix={}", e.file_prefix),
            "-m".into(),
            e.memory_mb.to_string(),
            format!("--log-level={}", e.log_level),
        ];
        if !e.hugepages {
            args.push("--no-huge".into());
        }
        let mut any_pci = false;
        for p in &self.ports {
            // validate() accepted every device.
            match Device::parse(&p.device) {
                Ok(Device::Pci(addr)) => {
                    any_pci = true;
                    args.extend(["-a".into(), addr]);
                }
                Ok(Device::Vdev { args: vdev, .. }) => args.push(format!("--vdev={vdev}")),
                Err(_) => {}
            }
        }
        if !any_pci {
            args.push("--no-pci".into());
        }
        args.extend(e.extra_args.iter().cloned());
        args
    }
}

impl ControlSocketCfg {
    fn validate(&self, control_socket: &Path) -> Result<(), ConfigError> {
        for (field, n) in [
            ("control_socket.max_connections", self.max_connections),
            (
                "control_socket.reserved_connections",
                self.reserved_connections,
            ),
        ] {
            if !(1..=1024).contains(&n) {
                return Err(invalid(field, format!("{n} is not in 1..=1024")));
            }
        }
        for (field, ms) in [
            ("control_socket.idle_timeout_ms", self.idle_timeout_ms),
            ("control_socket.reply_timeout_ms", self.reply_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                return Err(invalid(field, format!("{ms} is not in 100..=600000")));
            }
        }
        if ![0o600, 0o660].contains(&self.reserved_mode) {
            return Err(invalid(
                "control_socket.reserved_mode",
                format!("{:#o} is neither 0o600 nor 0o660", self.reserved_mode),
            ));
        }
        match &self.reserved_path {
            Some(path) => {
                check_socket_path("control_socket.reserved_path", path)?;
                if path == control_socket {
                    return Err(invalid(
                        "control_socket.reserved_path",
                        "is policy.control_socket; the reserved socket needs a path of its own",
                    ));
                }
            }
            None if self.reserved_gid.is_some() => {
                return Err(invalid(
                    "control_socket.reserved_gid",
                    "applies to the reserved socket: set control_socket.reserved_path too",
                ));
            }
            None => {}
        }
        Ok(())
    }
}

/// A Unix socket path: not empty, and short enough for `sun_path` (108 bytes including the terminating NUL).
fn check_socket_path(field: &str, path: &Path) -> Result<(), ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if path.as_os_str().len() > 107 {
        return Err(invalid(
            field,
            "is longer than a Unix socket path may be (107 bytes)",
        ));
    }
    Ok(())
}

/// CPUs the kernel reports online (`/sys/devices/system/cpu/online`, e.g. `0-3,8`), if readable.
fn online_cpus() -> Option<HashSet<u32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let mut cpus = HashSet::new();
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u32>().ok()?..=b.parse::<u32>().ok()?),
            None => {
                cpus.insert(part.parse().ok()?);
            }
        }
    }
    Some(cpus)
}
