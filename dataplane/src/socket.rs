//! The dataplane's local control socket: how `bulkhead-control` (or an operator with `socat`) loads a policy,
//! reads counters, lists and kills flows, and drains flow events.
//!
//! Transport: a Unix stream socket (mode 0600), one message of the [`protocol`] crate per line each way. A
//! malformed request gets an error answer on the same connection; it never takes the dataplane down.
//!
//! Every socket serves a bounded number of connections, and none for long without progress: a client that does
//! not send a whole request line in time, or does not read its answer in time, is disconnected. An optional
//! second socket, reserved for control, has connections of its own, so no other local client can crowd control
//! out, however often it reconnects.
//!
//! The remote listener (`[remote_control]`) is served by the same loop with the same handling: each of its
//! connections first completes a TLS handshake with a client certificate ([`crate::remote`]), then reads and
//! answers lines exactly as a local connection does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::remote::{RemoteTls, TlsStream};

use protocol::{decode_request, encode_reply, ErrorCode, ErrorReply, Reply, Request};
use serde_json::Value;

/// Answers requests. Implemented by the gateway's management side; called from the socket threads.
pub trait Handler: Sync {
    fn handle(&self, request: Request) -> Result<Reply, ErrorReply>;
}

/// Largest request line accepted (a large policy document fits comfortably).
pub const MAX_LINE: u64 = 64 << 20;
/// How often blocked reads look at the stop flag and the idle deadline.
const POLL: Duration = Duration::from_millis(100);
/// How often the listener looks for a new connection: short, so a client that connects per request (scripts,
/// `socat`) is not slowed down; it only costs the management thread a wake-up per interval.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// What one socket allows its clients.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; further ones are answered with an error and closed.
    pub max_connections: usize,
    /// Time to send a whole request line, from connecting or from the previous answer.
    pub idle_timeout: Duration,
    /// Time to read a whole answer.
    pub reply_timeout: Duration,
    /// Largest request line; a longer one is answered `too_large` and the connection closed.
    pub max_line: u64,
}

/// Who may connect besides the dataplane's own user: the socket file's mode and group.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub mode: u32,
    /// The socket file's group; `None` keeps the dataplane's.
    pub gid: Option<u32>,
}

impl Access {
    /// The dataplane's user only.
    pub const OWNER: Access = Access {
        mode: 0o600,
        gid: None,
    };
}

/// A bound control socket. Binding is separate from serving so the dataplane can announce itself ready only
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

/// Creates a control socket at `path` with `access`, replacing a stale socket file but never a live one.
pub fn bind(path: &Path, access: Access) -> std::io::Result<Listener> {
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
                    "{} exists and is not a socket; refusing to replace it (choose another path)",
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
    // From here on the file is removed again on any error (the Listener's drop).
    let listener = Listener {
        listener,
        path: path.to_path_buf(),
    };
    let named =
        |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    // The group first: until the mode is set, only the owner can connect.
    if access.gid.is_some() {
        std::os::unix::fs::chown(path, None, access.gid).map_err(named)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode)).map_err(named)?;
    listener.listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The remote listener: TLS over TCP, every client authenticated by its certificate.
pub struct TlsListener {
    listener: TcpListener,
    tls: Arc<RemoteTls>,
}

impl TlsListener {
    /// Binds `addr` (port 0: any free port); connections are served with `tls`.
    pub fn bind(addr: SocketAddr, tls: Arc<RemoteTls>) -> std::io::Result<TlsListener> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(TlsListener { listener, tls })
    }

    /// The bound address (with the port chosen when 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// Where control requests come in.
pub enum Endpoint {
    /// A local control socket.
    Unix(Listener),
    /// The remote listener.
    Tls(TlsListener),
}

/// A connection just accepted, before anything is read.
enum Incoming<'a> {
    Unix(UnixStream),
    Tcp(TcpStream, &'a RemoteTls),
}

impl Endpoint {
    fn accept(&self) -> std::io::Result<Incoming<'_>> {
        match self {
            Endpoint::Unix(l) => l.listener.accept().map(|(c, _)| Incoming::Unix(c)),
            Endpoint::Tls(l) => l.listener.accept().map(|(c, _)| Incoming::Tcp(c, &l.tls)),
        }
    }
}

/// A connection's byte stream: a Unix socket, or an authenticated TLS session.
trait Stream: Read + Write {
    /// Bounds how long one write to the underlying socket may block.
    fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Stream for UnixStream {
    fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_write_timeout(self, timeout)
    }
}

impl Stream for TlsStream {
    fn set_write_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TlsStream::set_write_timeout(self, timeout)
    }
}

/// Serves every endpoint, each under its own limits, until `stop` is set. Runs on a management thread (one std
/// thread per connection), never on a worker. The socket files are removed when the listeners are dropped.
pub fn serve(
    endpoints: Vec<(Endpoint, Limits)>,
    handler: &dyn Handler,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let active: Vec<AtomicUsize> = endpoints.iter().map(|_| AtomicUsize::new(0)).collect();
    let result = std::thread::scope(|s| -> std::io::Result<()> {
        while !stop.load(Ordering::Relaxed) {
            let mut accepted = false;
            // One accept per endpoint and round: a client that keeps connecting to one cannot keep the loop
            // from another.
            for ((endpoint, limits), active) in endpoints.iter().zip(&active) {
                let incoming = match endpoint.accept() {
                    Ok(incoming) => incoming,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    // A TCP client that reset before it was accepted is its own problem.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                    Err(e) => return Err(e),
                };
                accepted = true;
                if active.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
                    active.fetch_sub(1, Ordering::AcqRel);
                    match incoming {
                        Incoming::Unix(mut conn) => {
                            let err = refusal(ErrorCode::Internal, "too many control connections");
                            let _ = send(&mut conn, err, Instant::now() + POLL);
                        }
                        // No answer without a handshake, which would hold a thread: closed and counted.
                        Incoming::Tcp(_, tls) => {
                            tls.counters.over_limit.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    continue;
                }
                s.spawn(move || {
                    match incoming {
                        Incoming::Unix(conn) => {
                            let _ = unix_connection(conn, handler, stop, limits);
                        }
                        Incoming::Tcp(tcp, tls) => {
                            if let Some(mut session) = tls.handshake(tcp, POLL, stop) {
                                if connection(&mut session, handler, stop, limits).is_ok() {
                                    session.close();
                                }
                            }
                        }
                    }
                    active.fetch_sub(1, Ordering::AcqRel);
                });
            }
            if !accepted {
                std::thread::sleep(ACCEPT_POLL);
            }
        }
        Ok(())
    });
    drop(endpoints);
    result
}

fn unix_connection(
    mut conn: UnixStream,
    handler: &dyn Handler,
    stop: &AtomicBool,
    limits: &Limits,
) -> std::io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(POLL))?;
    connection(&mut conn, handler, stop, limits)
}

/// Reads request lines from `stream` (whose reads time out every [`POLL`]) and answers each, until the client
/// hangs up, idles, sends too much or `stop` is set.
fn connection<S: Stream>(
    stream: &mut S,
    handler: &dyn Handler,
    stop: &AtomicBool,
    limits: &Limits,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut deadline = Instant::now() + limits.idle_timeout;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= deadline {
            let err = refusal(
                ErrorCode::BadRequest,
                format!(
                    "no complete request line within {} ms: connection closed",
                    limits.idle_timeout.as_millis()
                ),
            );
            return send(&mut **reader.get_mut(), err, Instant::now() + POLL);
        }
        // Never more than one byte past the limit is buffered, however long the line.
        match (&mut reader)
            .take(limits.max_line + 1 - line.len() as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) => return Ok(()),
            Ok(_) if line.len() as u64 > limits.max_line => {
                let err = refusal(
                    ErrorCode::TooLarge,
                    format!("request longer than {} bytes", limits.max_line),
                );
                return send(
                    &mut **reader.get_mut(),
                    err,
                    Instant::now() + limits.reply_timeout,
                );
            }
            Ok(_) if line.last() == Some(&b'\n') => {
                let answer = answer(&line, handler);
                send(
                    &mut **reader.get_mut(),
                    answer,
                    Instant::now() + limits.reply_timeout,
                )?;
                line.clear();
                deadline = Instant::now() + limits.idle_timeout;
            }
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a read or write failed only because the socket's timeout passed (try again).
pub(crate) fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Writes `line` and its newline, or fails at `deadline`: a client that does not read its answer cannot hold its
/// connection (and a thread) for longer.
fn send<S: Stream + ?Sized>(
    conn: &mut S,
    mut line: String,
    deadline: Instant,
) -> std::io::Result<()> {
    line.push('\n');
    let mut rest = line.as_bytes();
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(std::io::Error::from(std::io::ErrorKind::TimedOut))
        } else {
            Ok(left)
        }
    };
    while !rest.is_empty() {
        conn.set_write_timeout(Some(left()?))?;
        match conn.write(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // A TLS session may still hold some of it (a Unix socket holds nothing).
    conn.set_write_timeout(Some(left()?))?;
    conn.flush()
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
    use std::path::PathBuf;

    struct Echo;
    impl Handler for Echo {
        fn handle(&self, request: Request) -> Result<Reply, ErrorReply> {
            match request {
                Request::KillFlows { .. } => {
                    Ok(Reply::KillFlows(protocol::KillResult { killed: 3 }))
                }
                // An answer far larger than a socket's buffers, for the slow reader.
                Request::GetPolicy {} => Ok(Reply::GetPolicy(protocol::PolicyState {
                    version: Some(1),
                    policy: Some(Value::String("x".repeat(16 << 20))),
                })),
                _ => Err(ErrorReply::new(ErrorCode::Internal, "not here")),
            }
        }
    }

    /// Sets its flag when dropped, also when a test panics: the scope's threads then end and the panic shows.
    struct StopOnDrop<'a>(&'a AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }

    /// Serves `sockets` (paths and their limits) with [`Echo`] while `test` runs, and stops after it, also when it
    /// panics.
    fn serving(sockets: &[(&Path, Limits)], test: impl FnOnce()) {
        let listeners = sockets
            .iter()
            .map(|(path, limits)| (Endpoint::Unix(bind(path, Access::OWNER).unwrap()), *limits))
            .collect();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| serve(listeners, &Echo, &stop).unwrap());
            let _stop = StopOnDrop(&stop);
            test();
        });
    }

    const KILL: &[u8] = b"{\"v\":1,\"op\":\"kill_flows\"}\n";

    /// Limits with timeouts short enough for a test.
    fn quick(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            idle_timeout: Duration::from_millis(300),
            reply_timeout: Duration::from_millis(300),
            max_line: MAX_LINE,
        }
    }

    /// A fresh socket path for one test.
    fn sock(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bh-sock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("ctl.sock")
    }

    fn connect(path: &Path) -> UnixStream {
        loop {
            if let Ok(c) = UnixStream::connect(path) {
                c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                return c;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one request line on a fresh connection and returns the answer line as JSON.
    fn ask(path: &Path, line: &[u8]) -> Value {
        let conn = connect(path);
        // A refused connection may be closed before the request is written; its refusal is still there to read.
        let _ = (&conn).write_all(line);
        read_answer(&conn)
    }

    fn read_answer(conn: &UnixStream) -> Value {
        let mut out = String::new();
        BufReader::new(conn).read_line(&mut out).unwrap();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    }

    /// True once the server has closed `conn` (whatever it said first), false if it still holds it open after
    /// the read timeout. A reset counts as closed: the server hung up without reading all that was sent.
    fn closed_by_server(conn: &UnixStream) -> bool {
        let mut rest = Vec::new();
        match (&*conn).read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    }

    #[test]
    fn serves_lines_and_survives_garbage() {
        let path = sock("lines");
        serving(&[(&path, quick(16))], || {
            let conn = connect(&path);
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
                bind(&path, Access::OWNER).unwrap_err().kind(),
                std::io::ErrorKind::AddrInUse
            );
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
        let e = bind(&file, Access::OWNER).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains(&file.display().to_string()), "{e}");
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"precious\": true}");
        // A directory and a symlink (even to a socket) are not sockets either.
        let sub = dir.join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(bind(&sub, Access::OWNER).is_err());
        assert!(sub.is_dir());
        // A socket nobody listens on any more is replaced.
        let stale = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let link = dir.join("link.sock");
        std::os::unix::fs::symlink(&stale, &link).unwrap();
        assert!(bind(&link, Access::OWNER).is_err());
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let listener = bind(&stale, Access::OWNER).unwrap();
        drop(listener);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_reserved_socket_answers_while_idle_clients_fill_the_other_until_they_time_out() {
        let public = sock("idle-public");
        let reserved = public.with_file_name("reserved.sock");
        serving(&[(&public, quick(16)), (&reserved, quick(16))], || {
            // Sixteen clients that connect and say nothing (one of them half a line) fill the public socket.
            let idle: Vec<UnixStream> = (0..16).map(|_| connect(&public)).collect();
            (&idle[0]).write_all(b"{\"v\":1,").unwrap();
            let t0 = Instant::now();
            std::thread::sleep(Duration::from_millis(50));
            let refused = ask(&public, KILL);
            assert_eq!(refused["error"]["message"], "too many control connections");
            // Control's socket is not theirs to fill.
            assert_eq!(ask(&reserved, KILL)["result"]["killed"], 3);
            // The idle ones are told why and disconnected after the idle timeout, not before.
            for conn in &idle {
                let bye = read_answer(conn);
                assert!(
                    bye["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("no complete request line within 300 ms"),
                    "{bye}"
                );
                assert!(closed_by_server(conn));
            }
            let waited = t0.elapsed();
            assert!(
                waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
                "{waited:?}"
            );
            // ...and their slots serve again.
            assert_eq!(ask(&public, KILL)["result"]["killed"], 3);
            // A client that idles between requests is closed too: the deadline restarts with each answer.
            let conn = connect(&public);
            (&conn).write_all(KILL).unwrap();
            assert_eq!(read_answer(&conn)["result"]["killed"], 3);
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(read_answer(&conn)["error"]["code"], "bad_request");
            assert!(closed_by_server(&conn));
        });
    }

    #[test]
    fn a_client_that_keeps_reconnecting_cannot_starve_the_reserved_socket() {
        let public = sock("hog-public");
        let reserved = public.with_file_name("reserved.sock");
        let hog_stop = AtomicBool::new(false);
        serving(&[(&public, quick(16)), (&reserved, quick(16))], || {
            std::thread::scope(|s| {
                // Keeps every public slot taken: reconnects as soon as a connection is refused or timed out, and
                // keeps up to 64 connections open.
                let _hog_stop = StopOnDrop(&hog_stop);
                let hog = s.spawn(|| {
                    let mut held = std::collections::VecDeque::new();
                    let mut connections = 0u32;
                    while !hog_stop.load(Ordering::Relaxed) {
                        if let Ok(c) = UnixStream::connect(&public) {
                            connections += 1;
                            held.push_back(c);
                            if held.len() > 64 {
                                held.pop_front();
                            }
                        }
                    }
                    connections
                });
                std::thread::sleep(Duration::from_millis(100));
                let started = Instant::now();
                for _ in 0..50 {
                    let t0 = Instant::now();
                    assert_eq!(ask(&reserved, KILL)["result"]["killed"], 3);
                    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
                }
                // Long enough for the hog's first connections to time out and be replaced.
                while started.elapsed() < Duration::from_millis(700) {
                    assert_eq!(ask(&reserved, KILL)["result"]["killed"], 3);
                }
                hog_stop.store(true, Ordering::Relaxed);
                assert!(hog.join().unwrap() > 64, "the hog kept reconnecting");
            })
        });
    }

    #[test]
    fn a_client_that_does_not_read_its_answer_is_disconnected() {
        let path = sock("slow-reader");
        // One connection: the slow reader holds the only slot until its reply times out.
        serving(&[(&path, quick(1))], || {
            let slow = connect(&path);
            (&slow)
                .write_all(b"{\"v\":1,\"op\":\"get_policy\"}\n")
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let t0 = Instant::now();
            loop {
                let answer = ask(&path, KILL);
                if answer["ok"] == true {
                    break;
                }
                assert!(t0.elapsed() < Duration::from_secs(3), "{answer}");
                std::thread::sleep(Duration::from_millis(50));
            }
            // The slow reader got part of its 16 MiB answer, then the end of the connection.
            let mut got = Vec::new();
            let _ = (&slow).read_to_end(&mut got);
            assert!(got.len() < 16 << 20, "{} bytes", got.len());
        });
    }

    #[test]
    fn an_endless_line_is_cut_at_the_limit_and_answered_too_large() {
        let path = sock("endless");
        let limits = Limits {
            max_line: 4096,
            ..quick(16)
        };
        serving(&[(&path, limits)], || {
            let conn = connect(&path);
            let writer = conn.try_clone().unwrap();
            // Writes until the server hangs up: far more than the limit, and never a newline.
            let flood = std::thread::spawn(move || {
                let chunk = [b'x'; 4096];
                let mut sent = 0usize;
                while sent < 64 << 20 {
                    match (&writer).write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                sent
            });
            let answer = read_answer(&conn);
            assert_eq!(answer["error"]["code"], "too_large", "{answer}");
            assert!(closed_by_server(&conn));
            assert!(flood.join().unwrap() < 64 << 20, "the server hung up");
        });
    }

    #[test]
    fn the_reserved_socket_gets_its_mode_and_group() {
        let path = sock("access");
        // Our own group: changing to it needs no privilege.
        let gid = std::os::unix::fs::MetadataExt::gid(
            &std::fs::metadata(path.parent().unwrap()).unwrap(),
        );
        let listener = bind(
            &path,
            Access {
                mode: 0o660,
                gid: Some(gid),
            },
        )
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(std::os::unix::fs::MetadataExt::gid(&meta), gid);
        drop(listener);
        assert!(!path.exists());
    }
}
