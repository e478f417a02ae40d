//! Membership of an active/standby pair (`[ha]`). Which member is active is decided outside the dataplane
//! (keepalived, over the HA link); its notify scripts set the role through the control protocol (`set_role`,
//! or `bulkhead-dataplane role`, [`set_role_over_socket`]). A member starts as standby. A standby forwards
//! nothing: its workers drop every received packet as [`DropReason::Standby`](crate::counters::DropReason),
//! so the two members can never loop or duplicate frames between the segments they share. The split-brain
//! guard ([`guard`], fed by [`heartbeat`]s over the data segments) may hold a member in the other role than
//! the one it was told: never two actives, and a planned switchover without a gap.

pub mod guard;
pub mod heartbeat;
pub mod sync;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;

use protocol::{
    ErrorReply, HaPeer, HaStatus, HeartbeatCounts, Hold, PortLink, Request, Role, RoleChange,
    Status,
};

use guard::{Guard, Why};
use heartbeat::PeerCell;

/// [`RoleCell`] states.
const ACTIVE: u8 = 0;
const STANDBY: u8 = 1;
/// Standby, held by an active peer: a worker that hears the peer say it is standby makes it active at once.
const HELD: u8 = 2;

/// The role, shared by the management thread (its writer) and the workers (one relaxed load per loop
/// iteration; a worker also makes a held member active on the peer's heartbeat, [`release`](Self::release)).
#[derive(Debug)]
pub struct RoleCell {
    state: AtomicU8,
    /// The role told (`ACTIVE`/`STANDBY`), for the heartbeats.
    desired: AtomicU8,
    changes: AtomicU64,
    /// [`crate::clock::Clock`] milliseconds of the last change to active.
    active_since: AtomicU64,
}

impl RoleCell {
    /// A member of a pair starts as standby (it forwards nothing until told it is active); a single gateway
    /// is always active.
    pub fn new(initial: Role) -> Self {
        let state = match initial {
            Role::Active => ACTIVE,
            Role::Standby => STANDBY,
        };
        RoleCell {
            state: AtomicU8::new(state),
            desired: AtomicU8::new(state),
            changes: AtomicU64::new(0),
            active_since: AtomicU64::new(0),
        }
    }

    /// Whether the workers must drop everything. A worker reads it once per loop iteration; a change takes
    /// effect at the next iteration of every worker.
    #[inline(always)]
    pub fn is_standby(&self) -> bool {
        self.state.load(Relaxed) != ACTIVE
    }

    pub fn role(&self) -> Role {
        if self.is_standby() {
            Role::Standby
        } else {
            Role::Active
        }
    }

    /// The role last told.
    pub fn desired(&self) -> Role {
        if self.desired.load(Relaxed) == ACTIVE {
            Role::Active
        } else {
            Role::Standby
        }
    }

    pub fn active_since(&self) -> u64 {
        self.active_since.load(Relaxed)
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Relaxed)
    }

    /// A worker heard the peer say it is standby: a member held by it becomes active now (`now`: the
    /// worker's clock). Answers whether it did.
    pub fn release(&self, now: u64) -> bool {
        if self
            .state
            .compare_exchange(HELD, ACTIVE, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        self.active_since.store(now, Relaxed);
        self.changes.fetch_add(1, Relaxed);
        true
    }

    /// Publishes the guard's decision, unless a worker changed the state since it was `seen` (then nothing
    /// changes and the answer is false: decide again).
    fn publish(&self, seen: u8, g: &Guard) -> bool {
        let state = match (g.role(), g.hold()) {
            (Role::Active, _) => ACTIVE,
            (Role::Standby, Some(Hold::PeerActive)) => HELD,
            (Role::Standby, _) => STANDBY,
        };
        let desired = match g.desired() {
            Role::Active => ACTIVE,
            Role::Standby => STANDBY,
        };
        self.desired.store(desired, Relaxed);
        if state == ACTIVE && seen != ACTIVE {
            self.active_since.store(g.active_since(), Relaxed);
        }
        if self
            .state
            .compare_exchange(seen, state, Relaxed, Relaxed)
            .is_err()
        {
            return false;
        }
        if (state == ACTIVE) != (seen == ACTIVE) {
            self.changes.fetch_add(1, Relaxed);
        }
        true
    }
}

/// A member of a pair, as the management thread runs it: the role the workers read, the peer's latest
/// heartbeat, and the guard deciding between them.
#[derive(Debug)]
pub struct Member<'m> {
    pub role: &'m RoleCell,
    pub peer: &'m PeerCell,
    pub guard: Guard,
    pub instance: u64,
}

impl Member<'_> {
    /// `set_role`: the role told, the one told before, and the role the member has now.
    pub fn tell(&mut self, role: Role, now: u64) -> RoleChange {
        let previous = self.guard.desired();
        self.decide(now, Some(role));
        RoleChange {
            role,
            previous,
            effective: Some(self.guard.role()),
            held: self.guard.hold(),
        }
    }

    /// Steps the guard (the management loop, every few milliseconds).
    pub fn step(&mut self, now: u64) {
        self.decide(now, None);
    }

    fn decide(&mut self, now: u64, told: Option<Role>) {
        loop {
            let seen = self.role.state.load(Relaxed);
            if seen == ACTIVE && self.guard.role() == Role::Standby {
                self.guard.released(self.role.active_since());
                if self.guard.role() == Role::Active {
                    log_change(Role::Active, self.guard.desired(), Why::PeerStandby);
                }
            }
            let peer = self.peer.latest();
            let why = match told {
                Some(role) => self.guard.tell(role, now, peer.as_ref()),
                None => self.guard.step(now, peer.as_ref()),
            };
            if self.role.publish(seen, &self.guard) {
                if let Some(why) = why {
                    log_change(self.guard.role(), self.guard.desired(), why);
                }
                return;
            }
        }
    }

    pub fn status(&self, now: u64) -> HaStatus {
        let (sent, received) = self.peer.counts();
        HaStatus {
            role: self.role.role(),
            role_changes: self.role.changes(),
            // The ports belong to the main loop, which adds their links.
            links: Vec::new(),
            sync: None,
            desired: Some(self.guard.desired()),
            held: self.guard.hold(),
            instance: Some(format!("{:016x}", self.instance)),
            peer: self.peer.latest().map(|p| {
                Box::new(HaPeer {
                    heard_ms_ago: now.saturating_sub(p.heard_at),
                    instance: format!("{:016x}", p.instance),
                    role: p.role,
                    desired: p.desired,
                    active_for_ms: p.active_for_ms,
                })
            }),
            heartbeats: Some(HeartbeatCounts { sent, received }),
        }
    }
}

fn log_change(role: Role, desired: Role, why: Why) {
    eprintln!(
        "bulkhead-dataplane: HA role {role} (told {desired}): {}",
        why.as_str()
    );
}

/// A random instance id for this run (never 0): tells this member's heartbeats from its peer's, and a
/// restarted peer from the one before.
pub fn new_instance() -> u64 {
    use std::hash::BuildHasher;
    let state = std::collections::hash_map::RandomState::new();
    state.hash_one((std::process::id(), std::time::SystemTime::now())) | 1
}

/// Link-state propagation: a bump in the wire must not hide a lost link from the neighbours. When a data port
/// loses its link, the port it is linked to is taken down too (its neighbour sees the carrier go, and moves
/// to the other member's path); when the link returns, so does the held port. Pure state: the main loop reads
/// the devices, feeds [`step`](Self::step) and applies the changes it answers.
#[derive(Debug, Clone)]
pub struct LinkWatch {
    /// For each port, the index of the port it is linked to.
    peer: Vec<usize>,
    /// The last reading of each port (for a held port: false).
    up: Vec<bool>,
    /// For each port held down, the port whose lost link it mirrors.
    held_by: Vec<Option<usize>>,
}

/// A change [`LinkWatch::step`] asks of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetLink {
    pub port: usize,
    pub up: bool,
}

impl LinkWatch {
    /// Every port up and none held, for ports linked as `peer` says.
    pub fn new(peer: Vec<usize>) -> Self {
        let n = peer.len();
        LinkWatch {
            peer,
            up: vec![true; n],
            held_by: vec![None; n],
        }
    }

    /// Takes a reading of every port's link (`None`: unreadable, taken as up); answers what to change. A held
    /// port's own reading is ignored (it is down because it is held).
    pub fn step(&mut self, reading: &[Option<bool>]) -> Vec<SetLink> {
        let mut changes = Vec::new();
        for (p, r) in reading.iter().enumerate() {
            self.up[p] = self.held_by[p].is_none() && r.unwrap_or(true);
        }
        // Release first: a held port whose peer is back comes up.
        for q in 0..self.held_by.len() {
            if let Some(p) = self.held_by[q] {
                if self.up[p] {
                    self.held_by[q] = None;
                    // Taken as up until the next reading says otherwise.
                    self.up[q] = true;
                    changes.push(SetLink { port: q, up: true });
                }
            }
        }
        for p in 0..self.up.len() {
            let q = self.peer[p];
            if !self.up[p] && self.held_by[p].is_none() && self.held_by[q].is_none() && self.up[q] {
                self.held_by[q] = Some(p);
                self.up[q] = false;
                changes.push(SetLink { port: q, up: false });
            }
        }
        changes
    }

    /// Whether a port has lost its link by itself (not held by the gateway): what keepalived tracks.
    pub fn any_lost(&self) -> bool {
        (0..self.up.len()).any(|p| !self.up[p] && self.held_by[p].is_none())
    }

    /// The ports' links for `status`, under their configured names.
    pub fn links<'n>(&self, names: impl Iterator<Item = &'n str>) -> Vec<PortLink> {
        names
            .enumerate()
            .map(|(p, name)| PortLink {
                port: name.to_string(),
                up: self.up[p],
                held_down: self.held_by[p].is_some(),
            })
            .collect()
    }

    /// The track file's content (keepalived `track_file`, weight 0: non-zero is a fault).
    pub fn track_value(&self) -> &'static [u8] {
        if self.any_lost() {
            b"1\n"
        } else {
            b"0\n"
        }
    }
}

/// Why the `role` command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum RoleCommandError {
    #[error("{path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the dataplane closed the connection without answering")]
    NoAnswer { path: String },
    #[error("{path}: unreadable answer: {reason}")]
    BadAnswer { path: String, reason: String },
    #[error("the dataplane refused: {0} ({code})", code = .0.code)]
    Refused(ErrorReply),
    #[error("the dataplane is not a member of an HA pair (its config has no [ha] section)")]
    NotHa,
}

/// Bounds every step of the `role` command, so a notify script never hangs on a stuck dataplane.
const ROLE_COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// One request over the local control socket at `socket`, its answer decoded as `T`.
fn ask<T: serde::de::DeserializeOwned>(
    socket: &Path,
    request: &Request,
) -> Result<T, RoleCommandError> {
    let path = socket.display().to_string();
    let io = |source| RoleCommandError::Socket {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(io)?;
    stream
        .set_read_timeout(Some(ROLE_COMMAND_TIMEOUT))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(ROLE_COMMAND_TIMEOUT))
        .map_err(io)?;
    let mut line = protocol::encode_request(None, request);
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(RoleCommandError::NoAnswer { path });
    }
    match protocol::decode_reply::<T>(answer.trim_end()) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) if e.code == protocol::ErrorCode::NotHa => Err(RoleCommandError::NotHa),
        Ok(Err(e)) => Err(RoleCommandError::Refused(e)),
        Err(e) => Err(RoleCommandError::BadAnswer {
            path,
            reason: e.to_string(),
        }),
    }
}

/// `bulkhead-dataplane role --socket PATH active|standby`: sets the role of the dataplane behind `socket`.
pub fn set_role_over_socket(socket: &Path, role: Role) -> Result<RoleChange, RoleCommandError> {
    ask(socket, &Request::SetRole { role })
}

/// `bulkhead-dataplane role --socket PATH`: the role of the dataplane behind `socket` (`role`), the one it
/// was told and why it is held in the other.
pub fn role_over_socket(socket: &Path) -> Result<HaStatus, RoleCommandError> {
    let status: Status = ask(socket, &Request::Status {})?;
    status.ha.ok_or(RoleCommandError::NotHa)
}

/// Why a member is held in the other role than the one told, for people.
pub fn hold_reason(hold: Hold) -> &'static str {
    match hold {
        Hold::PeerActive => "an active peer is heard on the data segments",
        Hold::Handover => "forwarding until the peer wants to be active",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_starts_standby_and_a_worker_releases_only_a_held_member() {
        let cell = RoleCell::new(Role::Standby);
        assert!(cell.is_standby());
        assert_eq!(
            (cell.role(), cell.desired()),
            (Role::Standby, Role::Standby)
        );
        // Plain standby: a heartbeat of a standby peer changes nothing.
        assert!(!cell.release(5));
        let cfg = guard::GuardCfg {
            peer_silence_ms: 300,
            handover_ms: 1000,
            tie_ms: 100,
        };
        let peer = PeerCell::default();
        let mut member = Member {
            role: &cell,
            peer: &peer,
            guard: Guard::new(cfg, 1),
            instance: 1,
        };
        // Told active with an active peer heard: held.
        let beat = heartbeat::Beat {
            pair_id: 1,
            instance: 2,
            role: Role::Active,
            desired: Role::Active,
            active_for_ms: 50,
            seq: 1,
        };
        peer.heard(&beat, 10);
        let change = member.tell(Role::Active, 10);
        assert_eq!(
            change,
            RoleChange {
                role: Role::Active,
                previous: Role::Standby,
                effective: Some(Role::Standby),
                held: Some(Hold::PeerActive),
            }
        );
        assert!(cell.is_standby());
        assert_eq!(cell.desired(), Role::Active);
        // A worker hears the peer say it is standby: active at once, and counted.
        peer.heard(
            &heartbeat::Beat {
                role: Role::Standby,
                active_for_ms: 0,
                seq: 2,
                ..beat
            },
            20,
        );
        assert!(cell.release(20));
        assert!(!cell.is_standby());
        assert_eq!((cell.changes(), cell.active_since()), (1, 20));
        // The guard learns it at its next step and keeps it.
        member.step(25);
        let status = member.status(25);
        assert_eq!(
            (
                status.role,
                status.desired,
                status.held,
                status.role_changes
            ),
            (Role::Active, Some(Role::Active), None, 1)
        );
        assert_eq!(member.guard.active_since(), 20);
    }

    #[test]
    fn a_lost_link_takes_the_linked_port_down_until_it_returns() {
        let up = Some(true);
        let down = Some(false);
        // Ports 0-1 linked, 2-3 linked.
        let mut w = LinkWatch::new(vec![1, 0, 3, 2]);
        assert_eq!(w.step(&[up, up, up, up]), []);
        assert_eq!(w.track_value(), b"0\n");
        assert_eq!(
            w.step(&[down, up, up, up]),
            [SetLink { port: 1, up: false }]
        );
        assert!(w.any_lost());
        // The held port reads down now; nothing more changes while the link stays away.
        assert_eq!(w.step(&[down, down, up, up]), []);
        let links = w.links(["a", "b", "c", "d"].into_iter());
        assert_eq!(
            links
                .iter()
                .map(|l| (l.up, l.held_down))
                .collect::<Vec<_>>(),
            [(false, false), (false, true), (true, false), (true, false)]
        );
        assert_eq!(w.track_value(), b"1\n");
        // The link returns: so does the held port.
        assert_eq!(w.step(&[up, down, up, up]), [SetLink { port: 1, up: true }]);
        assert_eq!(w.step(&[up, up, up, up]), []);
        assert!(!w.any_lost());
        // An unreadable port is taken as up.
        assert_eq!(w.step(&[None, up, up, up]), []);
    }

    #[test]
    fn both_sides_lost_converges_without_flapping() {
        let (up, down) = (Some(true), Some(false));
        let mut w = LinkWatch::new(vec![1, 0]);
        // Both really down: nothing to mirror.
        assert_eq!(w.step(&[down, down]), []);
        // Port 0 returns while port 1 is still down: 0 is held down.
        assert_eq!(w.step(&[up, down]), [SetLink { port: 0, up: false }]);
        assert_eq!(w.step(&[down, down]), []);
        assert_eq!(w.step(&[down, up]), [SetLink { port: 0, up: true }]);
        assert_eq!(w.step(&[up, up]), []);
    }
}
