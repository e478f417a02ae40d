//! Membership of an active/standby pair (`[ha]`). Which member is active is decided outside the dataplane
//! (keepalived, over the HA link); its notify scripts set the role through the control protocol (`set_role`,
//! or `bulkhead-dataplane role`, [`set_role_over_socket`]). A member starts as standby. A standby forwards
//! nothing: its workers drop every received packet as [`DropReason::Standby`](crate::counters::DropReason),
//! so the two members can never loop or duplicate frames between the segments they share.

pub mod sync;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use protocol::{ErrorReply, HaStatus, PortLink, Request, Role, RoleChange, Status};

/// The role, shared by the management thread (the only writer) and the workers (one relaxed load per loop
/// iteration).
#[derive(Debug)]
pub struct RoleCell {
    standby: AtomicBool,
    changes: AtomicU64,
}

impl RoleCell {
    /// A member of a pair starts as standby (it forwards nothing until told it is active); a single gateway
    /// is always active.
    pub fn new(initial: Role) -> Self {
        RoleCell {
            standby: AtomicBool::new(initial == Role::Standby),
            changes: AtomicU64::new(0),
        }
    }

    /// Whether the workers must drop everything. A worker reads it once per loop iteration; a change takes
    /// effect at the next iteration of every worker.
    #[inline(always)]
    pub fn is_standby(&self) -> bool {
        self.standby.load(Relaxed)
    }

    pub fn role(&self) -> Role {
        if self.is_standby() {
            Role::Standby
        } else {
            Role::Active
        }
    }

    /// Sets the role; answers it with the one before.
    pub fn set(&self, role: Role) -> RoleChange {
        let previous = self.role();
        if previous != role {
            self.standby.store(role == Role::Standby, Relaxed);
            self.changes.fetch_add(1, Relaxed);
        }
        RoleChange { role, previous }
    }

    pub fn status(&self) -> HaStatus {
        HaStatus {
            role: self.role(),
            role_changes: self.changes.load(Relaxed),
            // The ports belong to the main loop, which adds their links.
            links: Vec::new(),
            sync: None,
        }
    }
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

/// `bulkhead-dataplane role --socket PATH`: the role of the dataplane behind `socket`.
pub fn role_over_socket(socket: &Path) -> Result<Role, RoleCommandError> {
    let status: Status = ask(socket, &Request::Status {})?;
    status.ha.map(|ha| ha.role).ok_or(RoleCommandError::NotHa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_starts_standby_and_counts_changes() {
        let cell = RoleCell::new(Role::Standby);
        assert!(cell.is_standby());
        assert_eq!(
            cell.set(Role::Active),
            RoleChange {
                role: Role::Active,
                previous: Role::Standby
            }
        );
        assert!(!cell.is_standby());
        // Setting the role it has is answered, not counted.
        assert_eq!(cell.set(Role::Active).previous, Role::Active);
        cell.set(Role::Standby);
        assert_eq!(
            cell.status(),
            HaStatus {
                role: Role::Standby,
                role_changes: 2,
                links: Vec::new(),
                sync: None,
            }
        );
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
