//! Membership of an active/standby pair (`[ha]`). Which member is active is decided outside the dataplane
//! (keepalived, over the HA link); its notify scripts set the role through the control protocol (`set_role`,
//! or `bulkhead-dataplane role`, [`set_role_over_socket`]). A member starts as standby. A standby forwards
//! nothing: its workers drop every received packet as [`DropReason::Standby`](crate::counters::DropReason),
//! so the two members can never loop or duplicate frames between the segments they share.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use protocol::{ErrorReply, HaStatus, Request, Role, RoleChange, Status};

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
                role_changes: 2
            }
        );
    }
}
