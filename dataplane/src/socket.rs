//! The dataplane's local control socket: how `bulkhead-control` (or an operator with `socat`) loads a policy,
//! reads counters, lists and kills flows, and drains flow events.
//!
//! Transport: a Unix stream socket (mode 0600), one message of the [`protocol`] crate per line each way. A
//! malformed request gets an error answer on the same connection; it never takes the dataplane down.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use protocol::{decode_request, encode_reply, ErrorCode, ErrorReply, Reply, Request};
use serde_json::Value;

/// Answers requests. Implemented by the gateway's management side; called from the socket threads.
pub trait Handler: Sync {
    fn handle(&self, request: Request) -> Result<Reply, ErrorReply>;
}

/// Largest request line accepted (a large policy document fits comfortably).
const MAX_LINE: u64 = 64 << 20;
/// Concurrent connections; further ones are answered with an error and closed.
const MAX_CONNECTIONS: usize = 16;
/// How often blocked reads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How often the listener looks for a new connection: short, so a client that connects per request (scripts,
/// `socat`) is not slowed down; it only costs the management thread a wake-up per interval.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// The bound control socket. Binding is separate from serving so the dataplane can announce itself ready only
/// once clients can connect.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: std::path::PathBuf,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates the control socket at `path` (mode 0600), replacing a stale socket file but never a live one.
pub fn bind(path: &Path) -> std::io::Result<Listener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket file left by a previous process that is no longer listening is replaced; a live one is not, and
    // anything that is not a socket (a mistyped path pointing at a policy or a log) is never deleted.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket; refusing to replace it (choose another policy.control_socket)",
                    path.display()
                ),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running process", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(Listener {
        listener,
        path: path.to_path_buf(),
    })
}

/// Serves the control socket until `stop` is set. Runs on a management thread, never on a worker. The socket
/// file is removed when the listener is dropped.
pub fn serve(listener: Listener, handler: &dyn Handler, stop: &AtomicBool) -> std::io::Result<()> {
    let active = AtomicUsize::new(0);
    let result = std::thread::scope(|s| -> std::io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            match listener.listener.accept() {
                Ok((conn, _)) => {
                    if active.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                        active.fetch_sub(1, Ordering::AcqRel);
                        let err = refusal(ErrorCode::Internal, "too many control connections");
                        let _ = writeln!(&conn, "{err}");
                        continue;
                    }
                    let active = &active;
                    s.spawn(move || {
                        let _ = connection(conn, handler, stop);
                        active.fetch_sub(1, Ordering::AcqRel);
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(ACCEPT_POLL)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    drop(listener);
    result
}

fn connection(conn: UnixStream, handler: &dyn Handler, stop: &AtomicBool) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(POLL))?;
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match (&mut reader)
            .take(MAX_LINE + 1 - line.len() as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return Ok(()),
            Ok(_) if line.last() == Some(&b'\n') || line.len() as u64 > MAX_LINE => {
                let answer = if line.len() as u64 > MAX_LINE {
                    let answer = refusal(
                        ErrorCode::TooLarge,
                        format!("request longer than {MAX_LINE} bytes"),
                    );
                    writer.write_all(answer.as_bytes())?;
                    writer.write_all(b"\n")?;
                    return Ok(());
                } else {
                    answer(&line, handler)
                };
                writer.write_all(answer.as_bytes())?;
                writer.write_all(b"\n")?;
                line.clear();
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn answer(line: &[u8], handler: &dyn Handler) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    let (id, request) = decode_request(text);
    encode_reply(&id, &request.and_then(|r| handler.handle(r)))
}

/// The answer line for a connection that cannot be served (no request was read, so no id).
fn refusal(code: ErrorCode, message: impl Into<String>) -> String {
    encode_reply::<Reply>(&Value::Null, &Err(ErrorReply::new(code, message)))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, request: Request) -> Result<Reply, ErrorReply> {
            match request {
                Request::KillFlows { .. } => {
                    Ok(Reply::KillFlows(protocol::KillResult { killed: 3 }))
                }
                _ => Err(ErrorReply::new(ErrorCode::Internal, "not here")),
            }
        }
    }

    #[test]
    fn serves_lines_and_survives_garbage() {
        let path = std::env::temp_dir().join(format!("bulkhead-ctl-{}.sock", std::process::id()));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let listener = bind(&path).unwrap();
            s.spawn(|| serve(listener, &Echo, &stop).unwrap());
            let conn = loop {
                if let Ok(c) = UnixStream::connect(&path) {
                    break c;
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mut w = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            let mut ask = |line: &[u8]| {
                w.write_all(line).unwrap();
                let mut out = String::new();
                r.read_line(&mut out).unwrap();
                serde_json::from_str::<Value>(&out).unwrap()
            };
            assert_eq!(
                ask(b"{\"v\":1,\"id\":1,\"op\":\"kill_flows\"}\n")["result"]["killed"],
                3
            );
            assert_eq!(ask(b"\xff\xfe garbage\n")["error"]["code"], "bad_json");
            assert_eq!(
                ask(b"{\"v\":1,\"op\":\"counters\"}\n")["error"]["message"],
                "not here"
            );
            assert_eq!(ask(b"{\"v\":1,\"id\":2,\"op\":\"status\"}\n")["id"], 2);
            // A second process cannot take over a live socket.
            assert_eq!(
                bind(&path).unwrap_err().kind(),
                std::io::ErrorKind::AddrInUse
            );
            stop.store(true, Ordering::Relaxed);
        });
        assert!(!path.exists(), "the socket file is removed at shutdown");
    }

    #[test]
    fn only_a_stale_socket_is_replaced() {
        let dir = std::env::temp_dir().join(format!("bh-sock-kind-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // A regular file with data: an error naming the path, and the file untouched.
        let file = dir.join("policy.json");
        std::fs::write(&file, b"{\"precious\": true}").unwrap();
        let e = bind(&file).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"precious\": true}");
        // A directory and a symlink (even to a socket) are not sockets either.
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(bind(&sub).is_err());
        assert!(sub.is_dir());
        // A socket nobody listens on any more is replaced.
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&stale, &link).unwrap();
        assert!(bind(&link).is_err());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let listener = bind(&stale).unwrap();
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
