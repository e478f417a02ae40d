//! Syslog export: RFC 5424 messages with a JSON or CEF body, over UDP (RFC 5426: one message per datagram),
//! TCP (RFC 6587 octet counting) or TLS (RFC 5425: octet counting over TLS, the receiver verified against a
//! configured CA, an optional client certificate).
//!
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BODY`: MSGID is `flow` or `audit`; the severity is
//! notice (5) for denied flows and audit entries, informational (6) for the rest.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::{client::TlsStream, TlsConnector};

use super::{
    connected_udp, Counters, DropReason, ExportedFlow, Format, Item, Link, SyslogConfig, Transport,
};
use crate::store::AuditEntry;
use crate::tls::{provider, read_certs};
use protocol::EventKind;
use std::net::IpAddr;

const SEVERITY_NOTICE: u8 = 5;
const SEVERITY_INFO: u8 = 6;

/// Whether `s` may be a HOSTNAME or APP-NAME (RFC 5424 `PRINTUSASCII`, 1..=`max` characters).
pub fn is_printable_token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (33..=126).contains(&b))
}

/// The fixed parts of every message of one receiver.
#[derive(Debug, Clone)]
pub struct Header {
    pub facility: u8,
    pub hostname: String,
    pub app_name: String,
    pub procid: u32,
}

impl Header {
    fn line(&self, severity: u8, msgid: &str, time: SystemTime) -> String {
        format!(
            "<{}>1 {} {} {} {} {} - ",
            u16::from(self.facility) * 8 + u16::from(severity),
            crate::time::rfc3339(time),
            self.hostname,
            self.app_name,
            self.procid,
            msgid
        )
    }
}

/// One RFC 5424 message (without transport framing).
pub fn message(header: &Header, format: Format, item: &Item) -> String {
    match item {
        Item::Flow(f) => {
            let severity = if f.event.kind == EventKind::Denied {
                SEVERITY_NOTICE
            } else {
                SEVERITY_INFO
            };
            let mut m = header.line(severity, "flow", f.end_time());
            match format {
                Format::Json => m.push_str(&flow_json(f).to_string()),
                Format::Cef => m.push_str(&flow_cef(f, &header.hostname)),
            }
            m
        }
        Item::Audit(a) => {
            let time = humantime::parse_rfc3339(&a.time).unwrap_or_else(|_| SystemTime::now());
            let mut m = header.line(SEVERITY_NOTICE, "audit", time);
            match format {
                Format::Json => {
                    let mut v = serde_json::to_value(a.as_ref()).unwrap_or(Value::Null);
                    if let Value::Object(map) = &mut v {
                        map.insert("type".into(), "audit".into());
                    }
                    m.push_str(&v.to_string());
                }
                Format::Cef => m.push_str(&audit_cef(a, &header.hostname)),
            }
            m
        }
    }
}

/// The JSON body of a flow: the flow-log entry (the event, `seq`, `community_id`, `conn_state` when known)
/// and `"type": "flow"`.
pub fn flow_json(f: &ExportedFlow) -> Value {
    let mut v = serde_json::to_value(&f.event).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("type".into(), "flow".into());
        map.insert("seq".into(), f.seq.into());
        f.add_derived_fields(map);
    }
    v
}

/// A CEF header field: `\` and `|` escaped.
fn cef_header(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|")
}

/// A CEF extension value: `\`, `=` and line breaks escaped.
fn cef_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// Builds `CEF:0|Bulkhead|Bulkhead Gateway|version|signature|name|severity|extension`.
struct Cef {
    out: String,
}

impl Cef {
    fn new(signature: &str, name: &str, severity: u8) -> Cef {
        Cef {
            out: format!(
                "CEF:0|Bulkhead|Bulkhead Gateway|{}|{}|{}|{}|",
                cef_header(env!("CARGO_PKG_VERSION")),
                cef_header(signature),
                cef_header(name),
                severity
            ),
        }
    }

    fn field(&mut self, key: &str, value: impl std::fmt::Display) -> &mut Cef {
        if !self.out.ends_with('|') {
            self.out.push(' ');
        }
        self.out.push_str(key);
        self.out.push('=');
        self.out.push_str(&cef_value(&value.to_string()));
        self
    }

    /// A custom string field `csN` with its label.
    fn custom(&mut self, n: u8, label: &str, value: impl std::fmt::Display) -> &mut Cef {
        self.field(&format!("cs{n}"), value)
            .field(&format!("cs{n}Label"), label)
    }

    /// A custom number field `cnN` with its label.
    fn number(&mut self, n: u8, label: &str, value: u64) -> &mut Cef {
        self.field(&format!("cn{n}"), value)
            .field(&format!("cn{n}Label"), label)
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

/// The CEF body of a flow (see `docs/export.md` for the keys).
pub fn flow_cef(f: &ExportedFlow, hostname: &str) -> String {
    let e = &f.event;
    let (signature, name, severity) = match e.kind {
        EventKind::New => ("flow:new", "Flow allowed", 3),
        EventKind::Denied => ("flow:denied", "Flow denied", 5),
        EventKind::Closed => ("flow:closed", "Flow closed", 3),
    };
    let mut c = Cef::new(signature, name, severity);
    c.field("rt", crate::time::unix_ms(f.end_time()))
        .field("dvchost", hostname)
        .field("externalId", f.seq)
        .field("act", e.verdict.as_str());
    match (e.src, e.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            c.field("src", s).field("dst", d);
        }
        (s, d) => {
            c.field("c6a2", s)
                .field("c6a2Label", "Source IPv6 Address")
                .field("c6a3", d)
                .field("c6a3Label", "Destination IPv6 Address");
        }
    }
    c.field("spt", e.sport)
        .field("dpt", e.dport)
        .field("proto", proto_name(e.proto))
        .field("out", e.bytes[0])
        .field("in", e.bytes[1])
        .custom(1, "ruleId", e.rule_id)
        .custom(2, "communityId", &f.community_id)
        .custom(3, "srcSegments", e.src_segments.join(","))
        .custom(4, "dstSegments", e.dst_segments.join(","))
        .number(1, "policyVersion", u64::from(e.policy_version))
        .number(2, "packetsOut", e.packets[0])
        .number(3, "packetsIn", e.packets[1]);
    if e.vlan != 0 {
        c.field("cs6", e.vlan).field("cs6Label", "vlan");
    }
    if let Some(state) = f.conn_state {
        c.custom(5, "connState", state);
    }
    c.out
}

/// The CEF body of an audit entry.
pub fn audit_cef(a: &AuditEntry, hostname: &str) -> String {
    let time = humantime::parse_rfc3339(&a.time).unwrap_or_else(|_| SystemTime::now());
    let mut c = Cef::new(
        &format!("audit:{}", a.action),
        &format!("Audit {}", a.action),
        3,
    );
    c.field("rt", crate::time::unix_ms(time))
        .field("dvchost", hostname)
        .field("externalId", a.seq)
        .field("suser", &a.who)
        .field("act", &a.action);
    if let Some(object) = &a.object {
        c.custom(1, "object", object);
    }
    if let Some(v) = a.version_before {
        c.number(1, "versionBefore", v);
    }
    if let Some(v) = a.version_after {
        c.number(2, "versionAfter", v);
    }
    if let Some(phase) = &a.phase {
        c.custom(2, "phase", json_word(phase));
    }
    if let Some(outcome) = &a.outcome {
        c.field("outcome", json_word(outcome));
    }
    if !a.details.is_null() {
        c.field("msg", &a.details);
    }
    c.out
}

/// A serde enum's JSON spelling, without quotes.
fn json_word(v: &impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error(transparent)]
    File(#[from] crate::tls::TlsError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// How to reach one receiver.
pub struct Sender {
    config: SyslogConfig,
    header: Header,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

enum Connection {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Sender {
    /// Reads the TLS files now, so a missing or bad file stops control's start with a precise error.
    pub fn new(config: &SyslogConfig) -> Result<Sender, SendError> {
        let hostname = config.hostname.clone().unwrap_or_else(local_hostname);
        let header = Header {
            facility: config.facility,
            hostname,
            app_name: config.app_name.clone(),
            procid: std::process::id(),
        };
        let tls = match config.transport {
            Transport::Tls => Some(tls_connector(config)?),
            Transport::Udp | Transport::Tcp => None,
        };
        Ok(Sender {
            config: config.clone(),
            header,
            tls,
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, SendError> {
        tokio::net::lookup_host(&self.config.address)
            .await?
            .next()
            .ok_or_else(|| SendError::Resolve(self.config.address.clone()))
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        let addr = self.resolve().await?;
        match self.config.transport {
            Transport::Udp => Ok(Connection::Udp(connected_udp(&addr.to_string()).await?)),
            Transport::Tcp => Ok(Connection::Tcp(TcpStream::connect(addr).await?)),
            Transport::Tls => {
                let (connector, name) = self.tls.as_ref().expect("a TLS sender has a connector");
                let tcp = TcpStream::connect(addr).await?;
                let tls = connector.connect(name.clone(), tcp).await?;
                Ok(Connection::Tls(Box::new(tls)))
            }
        }
    }
}

impl Connection {
    /// Sends one message with the transport's framing.
    async fn send(&mut self, message: &str) -> io::Result<()> {
        match self {
            Connection::Udp(s) => s.send(message.as_bytes()).await.map(drop),
            Connection::Tcp(s) => s.write_all(&octet_counted(message)).await,
            Connection::Tls(s) => {
                s.write_all(&octet_counted(message)).await?;
                s.flush().await
            }
        }
    }

    /// Resolves when a stream receiver closes the connection (receivers send nothing, so any read that
    /// returns is the end); never for UDP.
    async fn closed(&mut self) {
        let mut buf = [0u8; 256];
        loop {
            let read = match self {
                Connection::Udp(_) => return std::future::pending().await,
                Connection::Tcp(s) => s.read(&mut buf).await,
                Connection::Tls(s) => s.read(&mut buf).await,
            };
            if !matches!(read, Ok(n) if n > 0) {
                return;
            }
        }
    }
}

/// RFC 5425 / RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(message: &str) -> Vec<u8> {
    let mut out = format!("{} ", message.len()).into_bytes();
    out.extend_from_slice(message.as_bytes());
    out
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| is_printable_token(h, 255))
        .unwrap_or_else(|| "-".into())
}

fn tls_connector(config: &SyslogConfig) -> Result<(TlsConnector, ServerName<'static>), SendError> {
    let ca = config.ca.as_ref().expect("validated: tls has a ca");
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs("ca", ca)? {
        roots
            .add(cert)
            .map_err(|e| SendError::Tls(format!("ca {}: {e}", ca.display())))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| SendError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let client = match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs("client_cert", cert)?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| SendError::Tls(format!("client_key {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| SendError::Tls(e.to_string()))?
        }
        _ => builder.with_no_client_auth(),
    };
    let name = config
        .server_name
        .clone()
        .unwrap_or_else(|| super::host_of(&config.address).to_string());
    let name = ServerName::try_from(name.clone())
        .map_err(|_| SendError::Tls(format!("{name:?} is not a valid server name")))?;
    Ok((TlsConnector::from(Arc::new(client)), name))
}

/// The syslog task: connects, sends what its queue holds, and on any failure counts the item lost, backs off
/// and reconnects (the queue meanwhile fills and overflows, counted by the feeding side).
pub async fn run(sender: Sender, mut rx: mpsc::Receiver<Item>, counters: Counters) {
    let config = &sender.config;
    let mut link = Link::new(
        &config.name,
        &config.address,
        config.pacing(),
        counters.clone(),
    );
    loop {
        let mut conn = match sender.connect().await {
            Ok(c) => c,
            Err(e) => {
                link.down(&e).await;
                continue;
            }
        };
        link.up();
        let error = loop {
            let item = tokio::select! {
                item = rx.recv() => item,
                () = conn.closed() => break io::Error::new(io::ErrorKind::ConnectionReset, "closed by the receiver"),
            };
            let Some(item) = item else {
                // Control is stopping.
                link.close();
                return;
            };
            let message = message(&sender.header, config.format, &item);
            match conn.send(&message).await {
                Ok(()) => counters.sent.inc(),
                Err(e) => {
                    counters.dropped(DropReason::SendError, 1);
                    break e;
                }
            }
        };
        link.down(&error).await;
    }
}
