//! The management side of the dataplane, on the main lcore: it owns the policy lifecycle — load, validate,
//! compile, persist, publish — and answers control requests. Workers never wait for it; it talks to them only
//! through the RCU cell (new policy versions), their counters (read), their event queues (drained) and their
//! command queues (flow listing and killing, answered between bursts).
//!
//! Publishing order for a new version: compile it (off the fast path), persist it durably, then publish it.
//! A version that cannot be persisted is not published, so what the gateway enforces is always what it will
//! enforce after a restart.
//!
//! Two-step loading splits this for clients that drive several gateways: `prepare_policy` compiles a version
//! and persists it as *pending* (`pending.json`, never read back as the enforced state), `publish_policy`
//! persists it as the enforced state (`policy.json`) and publishes it. At most one version is pending; a
//! restart removes it, so the gateway comes back with the last published version.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TryRecvError};
use dpdk::rcu::RcuCell;
use dpdk::Eal;
use policy::Policy;
use protocol::{
    CountersReport, DiscardResult, ErrorCode, ErrorReply, EventBatch, FlatRules, FlowFilter,
    FlowList, KillResult, LoadPolicyResult, PolicyState, PreparedPolicy, Reply, Request,
    ResyncResult, RuleCounters, Status, SwapTimes, WorkerSnapshot,
};

use crate::clock::Clock;
use crate::config::Config;
use crate::conntrack::FlowInfo;
use crate::counters::Counters;
use crate::events::{EventSource, FlowEvent};
use crate::ha::sync::SyncShared;
use crate::ha::Member;
use crate::persist;
use crate::ruleset::Ruleset;
use crate::worker::Command;

/// Problems at start-up that must stop the gateway rather than be papered over.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Io(#[from] persist::PersistError),
    #[error("{path}: not a policy state file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The policy the gateway enforces.
struct Active {
    version: u32,
    policy: Policy,
    loaded: std::time::SystemTime,
    /// The rte_acl algorithm its ruleset classifies with.
    classifier: dpdk::acl::Alg,
}

/// A compiled version, ready to publish.
struct Compiled<'eal> {
    version: u32,
    policy: Policy,
    ruleset: Ruleset<'eal>,
    /// The state file's content for this version.
    state: Vec<u8>,
    compile: Duration,
}

/// Rule id → counter slot, stable for as long as the id exists. Slot 0 is the default action.
#[derive(Default)]
struct Slots {
    by_id: hashbrown::HashMap<u32, u32>,
    free: Vec<u32>,
}

impl Slots {
    fn new(capacity: u32) -> Self {
        Slots {
            by_id: Default::default(),
            free: (1..capacity).rev().collect(),
        }
    }

    /// Gives every id of `policy` a slot (keeping existing ones); `None` if slots run out.
    fn assign(&mut self, policy: &Policy) -> Option<()> {
        for r in policy.rules() {
            if !self.by_id.contains_key(&r.id) {
                let slot = self.free.pop()?;
                self.by_id.insert(r.id, slot);
            }
        }
        Some(())
    }

    /// Frees the slots of ids none of `policies` has (after the versions that used them are gone).
    fn retain(&mut self, policies: &[&Policy]) {
        let keep: hashbrown::HashSet<u32> = policies
            .iter()
            .flat_map(|p| p.rules().iter().map(|r| r.id))
            .collect();
        let free = &mut self.free;
        self.by_id.retain(|id, slot| {
            let k = keep.contains(id);
            if !k {
                free.push(*slot);
            }
            k
        });
    }
}

/// Timing of the last policy swap.
#[derive(Debug, Default, Clone, Copy)]
struct SwapStats {
    compile: Duration,
    persist: Duration,
    grace: Duration,
}

impl SwapStats {
    fn times(&self) -> SwapTimes {
        SwapTimes {
            compile_ms: self.compile.as_secs_f64() * 1e3,
            persist_ms: self.persist.as_secs_f64() * 1e3,
            grace_period_us: self.grace.as_secs_f64() * 1e6,
        }
    }
}

pub struct Management<'m, 'eal> {
    eal: &'eal Eal,
    cfg: &'m Config,
    cell: &'m RcuCell<Ruleset<'eal>>,
    counters: &'m Counters,
    clock: Clock,
    started: Instant,
    active: Option<Active>,
    /// The version prepared by `prepare_policy`, persisted as pending and not published.
    pending: Option<Compiled<'eal>>,
    slots: Slots,
    last_swap: SwapStats,
    pub sources: Vec<EventSource>,
    pub commands: Vec<Sender<Command>>,
    recent: VecDeque<FlowEvent>,
    events_overflow: u64,
    /// The HA role and its split-brain guard, for a member of a pair (`[ha]`).
    ha: Option<Member<'m>>,
    /// Connection-state sync with the peer, when configured.
    sync: Option<&'m SyncShared>,
}

/// What `policy.json` in the state directory holds.
fn state_document(version: u32, policy: &Policy) -> PolicyState {
    PolicyState {
        version: Some(version),
        policy: Some(serde_json::to_value(policy.document()).unwrap_or_default()),
    }
}

impl<'m, 'eal> Management<'m, 'eal> {
    pub fn new(
        eal: &'eal Eal,
        cfg: &'m Config,
        cell: &'m RcuCell<Ruleset<'eal>>,
        counters: &'m Counters,
        clock: Clock,
        ha: Option<Member<'m>>,
        sync: Option<&'m SyncShared>,
    ) -> Self {
        Management {
            eal,
            cfg,
            cell,
            counters,
            clock,
            started: Instant::now(),
            active: None,
            pending: None,
            slots: Slots::new(Self::rule_slots(cfg) as u32),
            last_swap: SwapStats::default(),
            sources: Vec::new(),
            commands: Vec::new(),
            recent: VecDeque::new(),
            events_overflow: 0,
            ha,
            sync,
        }
    }

    /// The workers' clock now.
    fn now_ms(&self) -> u64 {
        self.clock.ms(dpdk::tsc())
    }

    /// Steps the split-brain guard of a member of a pair (the main loop calls it every few milliseconds).
    pub fn step_ha(&mut self) {
        let now = self.now_ms();
        if let Some(member) = &mut self.ha {
            member.step(now);
        }
    }

    /// Counter slots per worker: during a swap, the rules of both versions may hold one.
    pub fn rule_slots(cfg: &Config) -> usize {
        2 * cfg.policy.max_rules as usize + 1
    }

    fn state_file(&self) -> PathBuf {
        self.cfg.policy.state_dir.join("policy.json")
    }

    fn pending_file(&self) -> PathBuf {
        self.cfg.policy.state_dir.join("pending.json")
    }

    /// Loads the last committed policy, or the bootstrap one, and publishes it. Without either the gateway
    /// stays closed. A state file that exists but cannot be used is an error, never a silent fresh start.
    pub fn restore(&mut self) -> Result<Option<u32>, StateError> {
        // A version prepared and never published is not what the gateway enforces: forget it.
        let pending = self.pending_file();
        match std::fs::remove_file(&pending) {
            Ok(()) => eprintln!(
                "bulkhead-dataplane: {}: removed a prepared policy version that was never published",
                pending.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StateError::Io(persist::PersistError {
                    action: "cannot remove",
                    path: pending,
                    source,
                }))
            }
        }
        let path = self.state_file();
        if let Some(bytes) = persist::read_if_exists(&path)? {
            let corrupt = |reason: String| StateError::Corrupt {
                path: path.clone(),
                reason,
            };
            // Repeated keys are refused here too: a state file edited by hand must not read otherwise than it looks.
            let v = policy::json::parse_value(&bytes).map_err(|e| corrupt(e.to_string()))?;
            let version = v["version"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| corrupt("no valid \"version\"".into()))?;
            let policy =
                Policy::from_value(v["policy"].clone()).map_err(|e| corrupt(e.to_string()))?;
            self.install(policy, version, false)
                .map_err(|e| StateError::Invalid {
                    path: path.clone(),
                    reason: e.message,
                })?;
            return Ok(Some(version));
        }
        if let Some(boot) = &self.cfg.policy.bootstrap {
            let invalid = |reason: String| StateError::Invalid {
                path: boot.clone(),
                reason,
            };
            let text = std::fs::read_to_string(boot).map_err(|e| invalid(e.to_string()))?;
            let policy = Policy::from_json(&text).map_err(|e| invalid(e.to_string()))?;
            self.install(policy, 1, true)
                .map_err(|e| invalid(e.message))?;
            return Ok(Some(1));
        }
        Ok(None)
    }

    /// Compiles, (persists,) publishes.
    fn install(
        &mut self,
        policy: Policy,
        version: u32,
        persist_it: bool,
    ) -> Result<LoadPolicyResult, ErrorReply> {
        let compiled = self.compile(policy, version)?;
        let persist = if persist_it {
            match self.persist_active(&compiled) {
                Ok(d) => d,
                Err(e) => {
                    drop(compiled);
                    self.release_slots();
                    return Err(e);
                }
            }
        } else {
            Duration::ZERO
        };
        Ok(self.publish(compiled, persist))
    }

    /// Validates the rule count and builds the classifier of `policy` (its rules get counter slots).
    fn compile(&mut self, policy: Policy, version: u32) -> Result<Compiled<'eal>, ErrorReply> {
        let t0 = Instant::now();
        self.slots.assign(&policy).ok_or_else(|| {
            ErrorReply::new(ErrorCode::InvalidPolicy, "more rules than policy.max_rules")
        })?;
        let slots = &self.slots.by_id;
        let built = Ruleset::build(
            self.eal,
            &policy,
            version,
            self.cfg.policy.max_rules as usize,
            |id| slots.get(&id).copied().unwrap_or(0),
        );
        let ruleset = match built {
            Ok(r) => r,
            Err(e) => {
                // Give back the slots this attempt took.
                self.release_slots();
                return Err(ErrorReply::new(ErrorCode::InvalidPolicy, e.to_string()));
            }
        };
        let state = match persist::state_bytes(version, policy.document()) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.release_slots();
                return Err(ErrorReply::new(
                    ErrorCode::Internal,
                    format!("policy not applied: {e}"),
                ));
            }
        };
        Ok(Compiled {
            version,
            policy,
            ruleset,
            state,
            compile: t0.elapsed(),
        })
    }

    /// Makes `compiled` the enforced state on disk (what a restart publishes).
    fn persist_active(&self, compiled: &Compiled<'eal>) -> Result<Duration, ErrorReply> {
        let t0 = Instant::now();
        persist::write_atomic(&self.state_file(), &compiled.state).map_err(|e| {
            ErrorReply::new(ErrorCode::Internal, format!("policy not applied: {e}"))
        })?;
        Ok(t0.elapsed())
    }

    /// Publishes a compiled (and, unless restored, persisted) version to the workers.
    fn publish(&mut self, compiled: Compiled<'eal>, persist: Duration) -> LoadPolicyResult {
        let Compiled {
            version,
            policy,
            ruleset,
            compile,
            ..
        } = compiled;
        let (flat, classifier) = (ruleset.flat_rules, ruleset.classifier());
        let grace = self.cell.publish(Box::new(ruleset));
        self.last_swap = SwapStats {
            compile,
            persist,
            grace,
        };
        self.active = Some(Active {
            version,
            policy,
            loaded: std::time::SystemTime::now(),
            classifier,
        });
        // The previous version is gone from every worker: its rules' slots may be reused.
        self.release_slots();
        let times = self.last_swap.times();
        LoadPolicyResult {
            version,
            flat_rules: flat_rules(flat),
            compile_ms: times.compile_ms,
            persist_ms: times.persist_ms,
            grace_period_us: times.grace_period_us,
        }
    }

    /// Frees the counter slots of rules neither the enforced nor the pending version has.
    fn release_slots(&mut self) {
        let mut keep = Vec::new();
        keep.extend(self.active.as_ref().map(|a| &a.policy));
        keep.extend(self.pending.as_ref().map(|p| &p.policy));
        self.slots.retain(&keep);
    }

    /// `prepare_policy` (once the pending version is forgotten): compiles `policy` and persists it as pending.
    fn prepare(&mut self, policy: Policy, version: u32) -> Result<PreparedPolicy, ErrorReply> {
        let compiled = self.compile(policy, version)?;
        let t0 = Instant::now();
        if let Err(e) = persist::write_atomic(&self.pending_file(), &compiled.state) {
            drop(compiled);
            self.release_slots();
            return Err(ErrorReply::new(
                ErrorCode::Internal,
                format!("policy not prepared: {e}"),
            ));
        }
        let persist = t0.elapsed();
        let prepared = PreparedPolicy {
            version,
            flat_rules: flat_rules(compiled.ruleset.flat_rules),
            compile_ms: compiled.compile.as_secs_f64() * 1e3,
            persist_ms: persist.as_secs_f64() * 1e3,
        };
        self.pending = Some(compiled);
        Ok(prepared)
    }

    /// `publish_policy`: persists the pending version `version` as the enforced state, then publishes it. If
    /// it cannot be persisted it stays pending.
    fn publish_pending(&mut self, version: u32) -> Result<LoadPolicyResult, ErrorReply> {
        let compiled = match self.pending.take() {
            Some(p) if p.version == version => p,
            other => {
                let now = other
                    .as_ref()
                    .map_or("none".to_string(), |p| p.version.to_string());
                self.pending = other;
                return Err(ErrorReply::new(
                    ErrorCode::NotPrepared,
                    format!("version {version} is not prepared (pending: {now})"),
                ));
            }
        };
        let persist = match self.persist_active(&compiled) {
            Ok(d) => d,
            Err(e) => {
                self.pending = Some(compiled);
                return Err(e);
            }
        };
        let result = self.publish(compiled, persist);
        // Published and persisted as the enforced state: the pending file has served. A failure to remove it
        // must not answer a publish that took effect as failed; a restart removes it anyway.
        if let Err(e) = self.remove_pending_file() {
            eprintln!(
                "bulkhead-dataplane: version {version} published, but {}",
                e.message
            );
        }
        Ok(result)
    }

    /// `discard_prepared`: forgets the pending version if it is `version`.
    fn discard(&mut self, version: u32) -> Result<DiscardResult, ErrorReply> {
        let discarded = self.pending.as_ref().is_some_and(|p| p.version == version);
        if discarded {
            self.forget_pending()?;
        }
        Ok(DiscardResult { version, discarded })
    }

    /// Drops the pending version, its file and its counter slots.
    fn forget_pending(&mut self) -> Result<(), ErrorReply> {
        if self.pending.take().is_some() {
            self.release_slots();
            self.remove_pending_file()?;
        }
        Ok(())
    }

    fn remove_pending_file(&self) -> Result<(), ErrorReply> {
        let path = self.pending_file();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ErrorReply::new(
                ErrorCode::Internal,
                format!("cannot remove {}: {e}", path.display()),
            )),
        }
    }

    /// The rte_acl algorithm the enforced policy classifies with.
    pub fn classifier(&self) -> Option<dpdk::acl::Alg> {
        self.active.as_ref().map(|a| a.classifier)
    }

    pub fn version(&self) -> Option<u32> {
        self.active.as_ref().map(|a| a.version)
    }

    /// Moves queued worker events into the buffer the control socket reads (oldest dropped when full).
    pub fn collect_events(&mut self) {
        let cap = self.cfg.events.buffer as usize;
        let mut batch = Vec::new();
        for s in &self.sources {
            s.drain(cap, &mut batch);
        }
        for ev in batch {
            if self.recent.len() == cap {
                self.recent.pop_front();
                self.events_overflow += 1;
            }
            self.recent.push_back(ev);
        }
    }

    pub fn handle(&mut self, request: Request) -> Result<Reply, ErrorReply> {
        match request {
            Request::Status {} => {
                // What the workers may have changed since the last step (a release) shows as decided.
                self.step_ha();
                Ok(Reply::Status(self.status()))
            }
            Request::Counters {} => Ok(Reply::Counters(self.counters_report())),
            Request::LoadPolicy { policy, version } => {
                let policy = Policy::from_value(policy).map_err(policy_error)?;
                let next = self.version().unwrap_or(0).wrapping_add(1).max(1);
                let version = match version {
                    None => next,
                    Some(v) => u32::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                        ErrorReply::new(
                            ErrorCode::BadRequest,
                            format!("version {v} is not in 1..=4294967295"),
                        )
                    })?,
                };
                // One step: a version left pending is superseded.
                self.forget_pending()?;
                self.install(policy, version, true).map(Reply::LoadPolicy)
            }
            Request::PreparePolicy { policy, version } => {
                // A prepare replaces the pending version, whether or not it succeeds.
                self.forget_pending()?;
                let policy = Policy::from_value(policy).map_err(policy_error)?;
                if version == 0 {
                    return Err(ErrorReply::new(
                        ErrorCode::BadRequest,
                        "version 0 is not in 1..=4294967295",
                    ));
                }
                self.prepare(policy, version).map(Reply::PreparePolicy)
            }
            Request::PublishPolicy { version } => {
                self.publish_pending(version).map(Reply::LoadPolicy)
            }
            Request::DiscardPrepared { version } => {
                self.discard(version).map(Reply::DiscardPrepared)
            }
            Request::GetPolicy {} => Ok(Reply::GetPolicy(match &self.active {
                Some(a) => state_document(a.version, &a.policy),
                None => PolicyState {
                    version: None,
                    policy: None,
                },
            })),
            Request::Flows { filter, limit } => self
                .flows(filter, limit.unwrap_or(1000).min(1_000_000))
                .map(Reply::Flows),
            Request::KillFlows { filter } => self.kill(filter).map(Reply::KillFlows),
            Request::Events { max } => Ok(Reply::Events(self.events(max.unwrap_or(10_000)))),
            Request::SetRole { role } => {
                let now = self.now_ms();
                let member = self.ha.as_mut().ok_or_else(|| {
                    ErrorReply::new(
                        ErrorCode::NotHa,
                        "this gateway is not a member of an HA pair (its config has no [ha] section)",
                    )
                })?;
                Ok(Reply::SetRole(member.tell(role, now)))
            }
            Request::Resync {} => {
                let sync = self.sync.ok_or_else(|| {
                    ErrorReply::new(
                        ErrorCode::NotHa,
                        "this gateway syncs no connection state (its [ha] section has no sync_peer)",
                    )
                })?;
                sync.request_resync();
                Ok(Reply::Resync(ResyncResult {
                    workers: self.cfg.workers.cores.len(),
                }))
            }
        }
    }

    fn status(&self) -> Status {
        let flows: u64 = self
            .counters
            .snapshot()
            .iter()
            .map(|w| w.flows_active)
            .sum();
        Status {
            policy_version: self.version(),
            policy_loaded_at: self.active.as_ref().map(|a| humantime(a.loaded)),
            rules: self.active.as_ref().map_or(0, |a| a.policy.rules().len()),
            workers: self.cfg.workers.cores.clone(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            flows_active: flows,
            dpdk: dpdk::runtime_version(),
            classifier: self.classifier().map(|alg| alg.name().to_string()),
            last_swap: self.last_swap.times(),
            prepared_version: self.pending.as_ref().map(|p| p.version),
            // The listener belongs to the main loop, which adds it.
            remote_control: None,
            ha: self.ha.as_ref().map(|m| m.status(self.now_ms())),
        }
    }

    /// Every counter but the ports' (the main loop owns the ports and adds theirs).
    fn counters_report(&self) -> CountersReport {
        let snaps = self.counters.snapshot();
        let rules: Vec<RuleCounters> = match &self.active {
            Some(a) => std::iter::once((0, "default".to_string()))
                .chain(a.policy.rules().iter().map(|r| (r.id, r.name.clone())))
                .map(|(id, name)| {
                    let slot = if id == 0 {
                        0
                    } else {
                        self.slots.by_id.get(&id).copied().unwrap_or(u32::MAX)
                    };
                    rule_entry(self.counters.rule(id, slot), &name, &self.clock)
                })
                .collect(),
            None => Vec::new(),
        };
        CountersReport {
            policy_version: self.version(),
            totals: WorkerSnapshot::sum(&snaps),
            workers: snaps,
            rules,
            events_buffer_overflow: self.events_overflow,
            ports: Vec::new(),
        }
    }

    /// Asks every worker, then waits for the answers without blocking on a channel: a worker's reply must
    /// never have to wake a sleeping thread (that would be a system call on the worker).
    fn ask<T>(
        &self,
        make: impl Fn() -> (Command, crossbeam_channel::Receiver<T>),
    ) -> Result<Vec<T>, ErrorReply> {
        let mut pending = Vec::new();
        for tx in &self.commands {
            let (cmd, rx) = make();
            tx.try_send(cmd).map_err(|_| {
                ErrorReply::new(ErrorCode::Internal, "a worker's command queue is full")
            })?;
            pending.push(rx);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut answers = Vec::new();
        for rx in pending {
            loop {
                match rx.try_recv() {
                    Ok(a) => {
                        answers.push(a);
                        break;
                    }
                    Err(TryRecvError::Empty) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => {
                        return Err(ErrorReply::new(
                            ErrorCode::Internal,
                            "a worker did not answer",
                        ))
                    }
                }
            }
        }
        Ok(answers)
    }

    fn flows(&self, filter: FlowFilter, limit: usize) -> Result<FlowList, ErrorReply> {
        let lists = self.ask(|| {
            let (reply, rx) = crossbeam_channel::bounded(1);
            (
                Command::List {
                    filter: filter.clone(),
                    out: Vec::with_capacity(limit),
                    reply,
                },
                rx,
            )
        })?;
        let mut flows: Vec<FlowInfo> = lists.into_iter().flatten().collect();
        let truncated = flows.len() > limit;
        flows.truncate(limit);
        Ok(FlowList {
            flows: flows.into_iter().map(FlowInfo::into_wire).collect(),
            truncated,
        })
    }

    fn kill(&self, filter: FlowFilter) -> Result<KillResult, ErrorReply> {
        let counts = self.ask(|| {
            let (reply, rx) = crossbeam_channel::bounded(1);
            (
                Command::Kill {
                    filter: filter.clone(),
                    reply,
                },
                rx,
            )
        })?;
        Ok(KillResult {
            killed: counts.iter().sum(),
        })
    }

    fn events(&mut self, max: usize) -> EventBatch {
        let n = max.min(self.recent.len());
        let policy = self.active.as_ref().map(|a| &a.policy);
        let segments = |ip, vlan: u16| -> Vec<String> {
            policy.map_or_else(Vec::new, |p| {
                p.segments_of(ip, (vlan != 0).then_some(vlan))
                    .into_iter()
                    .map(|s| s.name.clone())
                    .collect()
            })
        };
        let active = self.active.as_ref();
        let tier_of = TierNames::new(active.map(|a| (a.version, &a.policy)));
        let events = self
            .recent
            .drain(..n)
            .map(|e| {
                let tier = tier_of.name(&e);
                e.into_wire(
                    humantime(self.clock.wall(e.time_ms)),
                    segments(e.src, e.vlan),
                    segments(e.dst, e.vlan),
                    tier,
                )
            })
            .collect();
        EventBatch {
            events,
            remaining: self.recent.len(),
        }
    }
}

/// The deciding tier's name of an event, for a tiered policy: the worker's tier index when the event is of the
/// active version, else the tier of the event's rule id in the active version.
struct TierNames<'p> {
    active: Option<(u32, &'p Policy)>,
    tier_by_rule: hashbrown::HashMap<u32, usize>,
}

impl<'p> TierNames<'p> {
    fn new(active: Option<(u32, &'p Policy)>) -> Self {
        let active = active.filter(|(_, p)| p.document().format == policy::Format::V2);
        let tier_by_rule = active.map_or_else(Default::default, |(_, p)| {
            p.rules()
                .iter()
                .enumerate()
                .map(|(i, r)| (r.id, p.tier_of(i)))
                .collect()
        });
        TierNames {
            active,
            tier_by_rule,
        }
    }

    fn name(&self, e: &crate::events::FlowEvent) -> Option<String> {
        let (version, policy) = self.active?;
        let tier = match e.tier {
            Some(t) if e.policy_version == version => usize::from(t),
            _ => *self.tier_by_rule.get(&e.rule_id)?,
        };
        policy.tiers().get(tier).map(|t| t.name.clone())
    }
}

fn flat_rules((ipv4, ipv6): (usize, usize)) -> FlatRules {
    FlatRules { ipv4, ipv6 }
}

fn policy_error(e: policy::PolicyError) -> ErrorReply {
    match e {
        policy::PolicyError::Invalid(errors) => {
            let mut a = ErrorReply::new(
                ErrorCode::InvalidPolicy,
                format!("{} validation error(s)", errors.len()),
            );
            a.details = errors.iter().map(|e| e.to_string()).collect();
            a
        }
        other => ErrorReply::new(ErrorCode::InvalidPolicy, other.to_string()),
    }
}

/// One rule's line of the `counters` report: its counters, its name, and `last_hit` as wall-clock time
/// (`null`: never hit), so a client need not know when the dataplane started.
fn rule_entry(r: RuleCounters, name: &str, clock: &Clock) -> RuleCounters {
    RuleCounters {
        name: name.to_string(),
        last_hit: r.last_hit_ms.map(|ms| humantime(clock.wall(ms))),
        ..r
    }
}

/// RFC 3339 UTC with milliseconds.
fn humantime(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::{humantime, rule_entry};
    use crate::clock::Clock;
    use protocol::RuleCounters;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn management_rule_entry_gives_last_hit_as_wall_time() {
        let clock = Clock::new(0, 1_000_000_000);
        let start = clock.wall(0);
        let hit = RuleCounters {
            rule_id: 7,
            packets: 3,
            bytes: 180,
            flows: 1,
            last_hit_ms: Some(1_500),
            ..Default::default()
        };
        let v = serde_json::to_value(rule_entry(hit, "web", &clock)).unwrap();
        assert_eq!(v["rule_id"], 7);
        assert_eq!(v["name"], "web");
        assert_eq!(
            (v["packets"].clone(), v["bytes"].clone(), v["flows"].clone()),
            (3.into(), 180.into(), 1.into())
        );
        assert_eq!(v["last_hit_ms"], 1_500);
        assert_eq!(
            v["last_hit"],
            humantime(start + Duration::from_millis(1_500))
        );
        let never = RuleCounters {
            rule_id: 8,
            ..Default::default()
        };
        let v = serde_json::to_value(rule_entry(never, "unused", &clock)).unwrap();
        assert!(v["last_hit"].is_null(), "{v}");
        assert!(v["last_hit_ms"].is_null(), "{v}");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(humantime(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            humantime(UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(
            humantime(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
    }
}
