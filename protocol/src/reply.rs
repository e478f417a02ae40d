//! The result of each request. Field names, nesting and `null`s are the wire format: see the crate's version
//! rule before changing any of them.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Role;

/// Any result, as the dataplane sends it (clients decode the type of the op they asked for).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Status(Status),
    Counters(CountersReport),
    LoadPolicy(LoadPolicyResult),
    PreparePolicy(PreparedPolicy),
    DiscardPrepared(DiscardResult),
    GetPolicy(PolicyState),
    Flows(FlowList),
    KillFlows(KillResult),
    Events(EventBatch),
    SetRole(RoleChange),
    Resync(ResyncResult),
}

/// `resync`: a bulk resync was asked of every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResyncResult {
    pub workers: usize,
}

/// `status`: the process and its policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The enforced policy version; `None` before the first policy (the gateway is closed).
    pub policy_version: Option<u32>,
    /// RFC 3339 wall time the enforced policy was published.
    pub policy_loaded_at: Option<String>,
    /// Rules of the enforced policy.
    pub rules: usize,
    /// The workers' lcores.
    pub workers: Vec<u32>,
    pub uptime_s: f64,
    /// Tracked connections, all workers together.
    pub flows_active: u64,
    /// The DPDK runtime's version string.
    pub dpdk: String,
    /// The rte_acl algorithm the enforced policy classifies with (`avx512x32`, `avx2`, ...: DPDK's names);
    /// absent before the first policy and from an older dataplane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// How long the last policy swap took (zeros before the first).
    pub last_swap: SwapTimes,
    /// The version prepared and not yet published, if any (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepared_version: Option<u32>,
    /// The remote control listener (TLS), when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_control: Option<RemoteControlStatus>,
    /// This gateway's part in an HA pair, when it is a member of one (`[ha]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

/// A member of an HA pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaStatus {
    pub role: Role,
    /// Role changes since the start (a member starts as standby).
    pub role_changes: u64,
    /// The data ports' links, in config order (link-state propagation).
    #[serde(default)]
    pub links: Vec<PortLink>,
    /// Connection-state sync with the peer, when configured (`sync_listen`/`sync_peer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    /// The role this member was last told (`set_role`); `role` is the one it has (they differ while it is
    /// held). Absent from an older dataplane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Role>,
    /// Why `role` is not `desired` (absent when they agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Hold>,
    /// This run's instance id (random per start, 16 hex digits), as its heartbeats carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The peer's latest heartbeat over the data segments (absent: none heard since the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Box<HaPeer>>,
    /// Heartbeat frames sent (one per data port each period) and the peer's received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<HeartbeatCounts>,
}

/// Why an HA member's role is not the one it was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// Told active, it stays standby: an active peer was heard within `peer_silence_ms` (split brain, or the
    /// peer has not handed over yet).
    PeerActive,
    /// Told standby, it keeps forwarding until the peer wants to be active (or `handover_ms` passes), so a
    /// planned switchover has no gap.
    Handover,
}

impl Hold {
    pub const fn as_str(self) -> &'static str {
        match self {
            Hold::PeerActive => "peer_active",
            Hold::Handover => "handover",
        }
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The peer of an HA pair as its latest heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaPeer {
    /// Milliseconds since it was heard.
    pub heard_ms_ago: u64,
    /// Its instance id (16 hex digits).
    pub instance: String,
    /// The role it has, and the one it was told.
    pub role: Role,
    pub desired: Role,
    /// How long it had been active when it sent the heartbeat (0: standby).
    pub active_for_ms: u64,
}

/// Heartbeat frames of an HA member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatCounts {
    pub sent: u64,
    pub received: u64,
}

/// Connection-state sync as one member sees it. Counts are of updates (one flow's state or end each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// This member sends (it is active); otherwise it receives.
    pub sending: bool,
    /// Where updates are sent (the peer's `sync_listen`), and where this member receives them.
    pub peer: Option<String>,
    pub listen: Option<String>,
    pub state: SyncState,
    /// Updates sent and not yet acknowledged.
    pub lag: u64,
    pub sent: u64,
    pub acked: u64,
    /// Updates sent again after a reconnection.
    pub resent: u64,
    /// Updates that never made it: a full worker queue or inbox, or a batch beyond the resend window (each
    /// answered by a resync).
    pub lost: u64,
    /// Updates received from the peer.
    pub received: u64,
}

/// Where the sync stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// No connection with the peer. (A standby reports `in_sync` while the active is connected to it: only
    /// the active knows the lag.)
    Disconnected,
    /// A bulk resync is in progress (a peer joined, or one was asked).
    Resyncing,
    /// Updates are sent and not yet acknowledged (`lag`).
    Lagging,
    /// Everything sent is acknowledged.
    InSync,
}

/// A data port's link as the HA member sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortLink {
    /// The port's configured name.
    pub port: String,
    /// The device reports its link up (false while the gateway holds the port down).
    pub up: bool,
    /// The gateway took the port down because the port it is linked to lost its link.
    pub held_down: bool,
}

/// `set_role`: the role told now, and the one told before (equal when nothing changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleChange {
    pub role: Role,
    pub previous: Role,
    /// The role the member has after the request (absent from an older dataplane, whose role was always
    /// the one told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<Role>,
    /// Why `effective` is not `role` (absent when they agree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Hold>,
}

/// The remote control listener: where it listens, the certificate it serves, what its clients did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteControlStatus {
    /// The bound address and port.
    pub listen: String,
    /// SHA-256 of the served certificate (`AB:CD:...`).
    pub cert_sha256: String,
    /// Handshakes completed (authenticated clients).
    pub sessions: u64,
    /// Handshakes refused or broken: no client certificate, an unknown, expired or unpinned one, not TLS.
    pub handshake_failures: u64,
    /// Handshakes not completed in time.
    pub handshake_timeouts: u64,
    /// Connections closed at once because the listener served its maximum.
    pub over_limit: u64,
    /// Certificate reloads (SIGHUP) that took effect, and those that kept the previous files.
    pub reloads: u64,
    pub reload_failures: u64,
}

/// The stages of a policy swap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SwapTimes {
    pub compile_ms: f64,
    pub persist_ms: f64,
    /// Time until every worker had left the previous version.
    pub grace_period_us: f64,
}

/// `counters`: every counter of the dataplane.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CountersReport {
    pub policy_version: Option<u32>,
    /// The sum over workers.
    pub totals: WorkerSnapshot,
    pub workers: Vec<WorkerSnapshot>,
    /// The default action (rule id 0) first, then the enforced policy's rules; empty before the first policy.
    pub rules: Vec<RuleCounters>,
    /// Flow events the dataplane's buffer dropped because nobody drained them in time.
    pub events_buffer_overflow: u64,
    /// Device counters per port.
    pub ports: Vec<PortCounters>,
}

/// A reading of one worker's counters (or their sum).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Poll-loop iterations that moved at least one packet, and those that found every queue empty.
    pub busy_polls: u64,
    pub idle_polls: u64,
    /// Packets that passed only because of monitor mode.
    pub would_deny: u64,
    pub flows_created: u64,
    /// Flows that ended: expired, closed, displaced, revoked or killed.
    pub flows_closed: u64,
    /// Flows tracked at the time of reading.
    pub flows_active: u64,
    /// Unestablished flows evicted to make room for new ones in a full table.
    pub flows_evicted: u64,
    /// Source addresses that lost their place in the flood limits' per-source table to a new source (the
    /// table is full: many sources, e.g. spoofed ones). Absent from older dataplanes (read as 0).
    #[serde(default)]
    pub flood_sources_evicted: u64,
    pub rejects_sent: u64,
    /// Flow events lost because the worker's event queue was full.
    pub events_dropped: u64,
    /// Denied-flow events not emitted because of the per-worker rate limit.
    pub events_rate_limited: u64,
    /// Dropped packets by reason (every reason, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// Malformed packets by parse error.
    pub malformed: BTreeMap<String, u64>,
    /// Connection-tracking refusals by reason.
    pub conntrack: BTreeMap<String, u64>,
}

impl WorkerSnapshot {
    /// Sums readings (for totals across workers).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a WorkerSnapshot>) -> WorkerSnapshot {
        let mut acc = WorkerSnapshot::default();
        for w in all {
            acc.rx_packets += w.rx_packets;
            acc.tx_packets += w.tx_packets;
            acc.busy_polls += w.busy_polls;
            acc.idle_polls += w.idle_polls;
            acc.would_deny += w.would_deny;
            acc.flows_created += w.flows_created;
            acc.flows_closed += w.flows_closed;
            acc.flows_active += w.flows_active;
            acc.flows_evicted += w.flows_evicted;
            acc.flood_sources_evicted += w.flood_sources_evicted;
            acc.rejects_sent += w.rejects_sent;
            acc.events_dropped += w.events_dropped;
            acc.events_rate_limited += w.events_rate_limited;
            for (into, from) in [
                (&mut acc.drops, &w.drops),
                (&mut acc.malformed, &w.malformed),
                (&mut acc.conntrack, &w.conntrack),
            ] {
                for (k, v) in from {
                    *into.entry(k.clone()).or_default() += v;
                }
            }
        }
        acc
    }

    /// Packets dropped for any reason.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }

    /// Share of polls that found work, 0..=1.
    pub fn busy_ratio(&self) -> f64 {
        let total = self.busy_polls + self.idle_polls;
        if total == 0 {
            0.0
        } else {
            self.busy_polls as f64 / total as f64
        }
    }
}

/// One rule's counters, all workers together.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCounters {
    /// 0: the default action.
    pub rule_id: u32,
    /// The rule's name (`default` for the default action).
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
    /// New flows and denied packets the rule decided.
    pub flows: u64,
    /// Milliseconds since the dataplane started, of the last hit; `None`: never hit.
    pub last_hit_ms: Option<u64>,
    /// RFC 3339 wall time of the last hit; `None`: never hit.
    pub last_hit: Option<String>,
}

/// One port's device counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortCounters {
    /// The port's configured name.
    pub name: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Packets the device dropped because no receive descriptor was free.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    /// Receive failures for lack of packet buffers.
    pub rx_nombuf: u64,
}

/// `load_policy`: the version now enforced, and what publishing it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPolicyResult {
    pub version: u32,
    /// Classifier rules the policy compiled to, per address family.
    pub flat_rules: FlatRules,
    pub compile_ms: f64,
    pub persist_ms: f64,
    pub grace_period_us: f64,
}

/// `prepare_policy`: the version now pending (persisted, not enforced) and what preparing it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedPolicy {
    pub version: u32,
    /// Classifier rules the policy compiled to, per address family.
    pub flat_rules: FlatRules,
    pub compile_ms: f64,
    pub persist_ms: f64,
}

/// `discard_prepared`: whether the named version was pending and is now forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscardResult {
    pub version: u32,
    pub discarded: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatRules {
    pub ipv4: usize,
    pub ipv6: usize,
}

/// `get_policy`: the enforced policy document and its version (both `None` before the first policy). Also the
/// dataplane's state file format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyState {
    pub version: Option<u32>,
    pub policy: Option<Value>,
}

/// `flows`: the tracked connections that matched, at most the asked limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowList {
    pub flows: Vec<FlowInfo>,
    /// More connections matched than were listed.
    pub truncated: bool,
}

/// One tracked connection, originator first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowInfo {
    /// Slot of the flow in its worker's table.
    pub id: u32,
    /// IP protocol number.
    pub proto: u8,
    /// Outer VLAN id, 0 if untagged.
    pub vlan: u16,
    /// Originator address.
    pub src: IpAddr,
    /// Originator port (echo identifier for ICMP echo, 0 for port-less protocols).
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port.
    pub dport: u16,
    /// State name (TCP state, or `unreplied` / `replied` / `stream`).
    pub state: String,
    /// Packets from the originator.
    pub packets_orig: u64,
    /// IP bytes from the originator.
    pub bytes_orig: u64,
    /// Packets from the responder.
    pub packets_reply: u64,
    /// IP bytes from the responder.
    pub bytes_reply: u64,
    /// Time since creation (second resolution).
    pub age_ms: u64,
    /// Time since the last packet.
    pub idle_ms: u64,
    /// Rule that admitted the flow.
    pub rule_id: u32,
    /// Policy version that admitted it.
    pub policy_version: u32,
    /// The rule asked for logging.
    pub logged: bool,
    /// Admitted in monitor mode.
    pub monitored: bool,
}

/// `kill_flows`: how many tracked connections were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillResult {
    pub killed: usize,
}

/// `events`: the oldest queued flow events, and how many are still queued.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub events: Vec<FlowEvent>,
    pub remaining: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    New,
    Denied,
    Closed,
}

impl EventKind {
    /// The kind as it travels (`new`, `denied`, `closed`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::New => "new",
            EventKind::Denied => "denied",
            EventKind::Closed => "closed",
        }
    }
}

/// What the policy decided for the flow (or its first packet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Allow,
    Deny,
    Reject,
    /// Would have been denied; passed because of monitor mode.
    WouldDeny,
}

impl Verdict {
    /// The verdict as it travels (`allow`, `would_deny`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Reject => "reject",
            Verdict::WouldDeny => "would_deny",
        }
    }
}

/// A flow admitted, denied or closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEvent {
    pub kind: EventKind,
    /// Milliseconds since the dataplane started.
    pub time_ms: u64,
    /// RFC 3339 wall time of `time_ms`.
    pub time: String,
    pub worker: u16,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Outer VLAN id; 0 when untagged.
    pub vlan: u16,
    /// Names of the policy's segments each address is in (empty: none, or no policy).
    pub src_segments: Vec<String>,
    pub dst_segments: Vec<String>,
    pub verdict: Verdict,
    /// The deciding rule's id; 0 for the default action.
    pub rule_id: u32,
    /// The name of the tier that decided (its rule, or its `deny` default), for a tiered
    /// (`bulkhead.policy/v2`) policy; absent for a v1 policy and for the policy's default. Absent from older
    /// dataplanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    pub policy_version: u32,
    /// Original direction, reply direction.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub duration_ms: u64,
    /// TCP state when the flow closed (`time_wait`, `close`, ...), if TCP.
    pub tcp_state: Option<String>,
    /// TCP control flags each side is known to have sent, `[original, reply]`, in header bit positions: SYN
    /// 0x02 (the responder's SYN-ACK also sets ACK 0x10), FIN 0x01 and RST 0x04 once accepted in window; `None`
    /// for other protocols and denied packets. Absent from older dataplanes (read as `None`).
    #[serde(default)]
    pub tcp_flags: Option<[u8; 2]>,
    /// On a denied event: the flood limit (`settings.flood_limits`, e.g. `half_open_per_source`) that refused a
    /// flow the policy allows. Absent otherwise (and from older dataplanes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl FlowEvent {
    /// The ICMP or ICMPv6 type and code of the event; `None` for other protocols. A denied ICMP packet's event
    /// carries its own type and code in `sport` and `dport` (as the policy judged it); a tracked ICMP flow is an
    /// echo exchange keyed by its identifier (in both ports), opened by an echo request (type 8 / 128, code 0).
    pub fn icmp_type_code(&self) -> Option<(u8, u8)> {
        const ICMP: u8 = 1;
        const ICMPV6: u8 = 58;
        match (self.proto, self.kind) {
            (ICMP | ICMPV6, EventKind::Denied) => Some((self.sport as u8, self.dport as u8)),
            (ICMP, EventKind::New | EventKind::Closed) => Some((8, 0)),
            (ICMPV6, EventKind::New | EventKind::Closed) => Some((128, 0)),
            _ => None,
        }
    }
}
