//! Client of a dataplane's control protocol (the messages of the `protocol` crate, one per line), over its local
//! Unix socket or its remote TLS listener (mutual TLS: control presents a client certificate and checks the
//! gateway's against a CA or a pin; see [`crate::gateway`]). One connection per request: the dataplane may
//! restart at any time and control must never hold state that a restart invalidates. A gateway that cannot be
//! reached is not tried again before a backoff (doubling up to [`MAX_BACKOFF`]) has passed: requests meanwhile
//! fail at once, so pollers and commits never queue behind a dead address.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{
    decode_reply, encode_request, CountersReport, DiscardResult, ErrorCode, EventBatch, FlowFilter,
    FlowList, KillResult, LoadPolicyResult, PolicyState, PreparedPolicy, Request, Status,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

pub use protocol::PROTOCOL_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The socket is absent or refuses connections, or the TLS handshake fails: the dataplane is down or
    /// starting, or not the gateway the certificate settings name.
    #[error("dataplane unreachable at {at}: {source}")]
    Unreachable { at: String, source: std::io::Error },
    #[error("dataplane did not answer within {0:?}")]
    Timeout(Duration),
    #[error("dataplane connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("dataplane sent a malformed answer: {0}")]
    Protocol(String),
    /// The dataplane answered with an error (`code` is its machine-readable code, e.g. `invalid_policy`).
    #[error("dataplane refused: {message}")]
    Refused {
        code: ErrorCode,
        message: String,
        details: Vec<String>,
    },
}

/// The name of the one gateway of a config that gives only `dataplane_socket`.
pub const LOCAL: &str = "local";

/// How a gateway is reached.
#[derive(Clone)]
pub enum Transport {
    /// Its local control socket.
    Unix(PathBuf),
    /// Its remote listener, over mutual TLS.
    Tls {
        address: String,
        connector: TlsConnector,
        server_name: ServerName<'static>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Unix(path) => write!(f, "{}", path.display()),
            Transport::Tls { address, .. } => write!(f, "tls://{address}"),
        }
    }
}

/// First wait before reconnecting to a gateway that could not be reached.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait before reconnecting.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// When a gateway that could not be reached may be tried again (shared by every clone of a client).
#[derive(Debug, Default)]
struct Backoff {
    wait: Option<Duration>,
    retry_at: Option<Instant>,
    /// Why the last attempt failed.
    error: String,
}

/// A gateway's name, where it listens, and how long to wait for an answer.
#[derive(Debug, Clone)]
pub struct Dataplane {
    name: Arc<str>,
    transport: Transport,
    timeout: Duration,
    backoff: Arc<Mutex<Backoff>>,
}

impl Dataplane {
    /// The dataplane on the local control socket `path`, named [`LOCAL`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Dataplane::with_transport(LOCAL, Transport::Unix(path.into()))
    }

    pub fn with_transport(name: &str, transport: Transport) -> Self {
        Dataplane {
            name: name.into(),
            transport,
            timeout: Duration::from_secs(30),
            backoff: Arc::default(),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The gateway's name (its `[[gateways]] name`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Sends `request` and returns its result, read as `T` (the result type of the request's op).
    pub async fn request<T: DeserializeOwned>(
        &self,
        request: &Request,
    ) -> Result<T, DataplaneError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(DataplaneError::Timeout(self.timeout)),
        }
    }

    async fn exchange<T: DeserializeOwned>(&self, request: &Request) -> Result<T, DataplaneError> {
        self.may_try()?;
        let connected = match &self.transport {
            Transport::Unix(path) => UnixStream::connect(path)
                .await
                .map(|s| Box::new(s) as Box<dyn Stream>),
            Transport::Tls {
                address,
                connector,
                server_name,
            } => match TcpStream::connect(address.as_str()).await {
                Ok(tcp) => connector
                    .connect(server_name.clone(), tcp)
                    .await
                    .map(|s| Box::new(s) as Box<dyn Stream>),
                Err(e) => Err(e),
            },
        };
        let stream = connected.map_err(|source| {
            self.failed(&source);
            DataplaneError::Unreachable {
                at: self.transport.to_string(),
                source,
            }
        })?;
        self.reached();
        let answer = self.ask(stream, request).await?;
        if answer.is_empty() {
            return Err(DataplaneError::Protocol(
                "connection closed without an answer".into(),
            ));
        }
        match decode_reply(&answer) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(refusal)) => Err(DataplaneError::Refused {
                code: refusal.code,
                message: refusal.message,
                details: refusal.details,
            }),
            Err(e) => Err(DataplaneError::Protocol(format!(
                "{e}: {:?}",
                answer.trim_end()
            ))),
        }
    }

    /// Writes `request` as one line and reads one answer line.
    async fn ask(&self, mut stream: Box<dyn Stream>, request: &Request) -> std::io::Result<String> {
        let mut line = encode_request(None, request);
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        stream.flush().await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        Ok(answer)
    }

    /// Refuses at once while the backoff after a failed connection runs.
    fn may_try(&self) -> Result<(), DataplaneError> {
        let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match backoff.retry_at {
            Some(at) if Instant::now() < at => Err(DataplaneError::Unreachable {
                at: self.transport.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!(
                        "{} (next attempt in {} ms)",
                        backoff.error,
                        at.saturating_duration_since(Instant::now()).as_millis()
                    ),
                ),
            }),
            _ => Ok(()),
        }
    }

    fn failed(&self, error: &std::io::Error) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        backoff.error = error.to_string();
        let wait = backoff
            .wait
            .map_or(FIRST_BACKOFF, |w| (w * 2).min(MAX_BACKOFF));
        backoff.wait = Some(wait);
        backoff.retry_at = Some(Instant::now() + wait);
    }

    fn reached(&self) {
        *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = Backoff::default();
    }

    /// Process, active policy version, workers, uptime.
    pub async fn status(&self) -> Result<Status, DataplaneError> {
        self.request(&Request::Status {}).await
    }

    /// Every counter: totals, per worker, per rule, per port.
    pub async fn counters(&self) -> Result<CountersReport, DataplaneError> {
        self.request(&Request::Counters {}).await
    }

    /// Validates, compiles, persists and publishes `policy` as `version`.
    pub async fn load_policy(
        &self,
        policy: &Value,
        version: u64,
    ) -> Result<LoadPolicyResult, DataplaneError> {
        let request = Request::LoadPolicy {
            policy: policy.clone(),
            version: Some(version),
        };
        self.request(&request).await
    }

    /// Validates, compiles and persists `policy` as the pending `version`, without publishing it.
    pub async fn prepare_policy(
        &self,
        policy: &Value,
        version: u64,
    ) -> Result<PreparedPolicy, DataplaneError> {
        let request = Request::PreparePolicy {
            policy: policy.clone(),
            version: wire_version(version)?,
        };
        self.request(&request).await
    }

    /// Publishes the pending `version` (`not_prepared` when another or none is pending).
    pub async fn publish_policy(&self, version: u64) -> Result<LoadPolicyResult, DataplaneError> {
        self.request(&Request::PublishPolicy {
            version: wire_version(version)?,
        })
        .await
    }

    /// Forgets the pending `version`.
    pub async fn discard_prepared(&self, version: u64) -> Result<DiscardResult, DataplaneError> {
        self.request(&Request::DiscardPrepared {
            version: wire_version(version)?,
        })
        .await
    }

    /// The active policy document and its version (`None` before the first policy).
    pub async fn get_policy(&self) -> Result<PolicyState, DataplaneError> {
        self.request(&Request::GetPolicy {}).await
    }

    /// Tracked connections matching `filter`, at most `limit`.
    pub async fn flows(
        &self,
        filter: &FlowFilter,
        limit: usize,
    ) -> Result<FlowList, DataplaneError> {
        let request = Request::Flows {
            filter: filter.clone(),
            limit: Some(limit),
        };
        self.request(&request).await
    }

    /// Removes the tracked connections matching `filter`.
    pub async fn kill_flows(&self, filter: &FlowFilter) -> Result<KillResult, DataplaneError> {
        let request = Request::KillFlows {
            filter: filter.clone(),
        };
        self.request(&request).await
    }

    /// Flow events queued since the last call, at most `max`.
    pub async fn events(&self, max: usize) -> Result<EventBatch, DataplaneError> {
        self.request(&Request::Events { max: Some(max) }).await
    }
}

/// A version number as the two-step ops carry it (control's numbers stay far below 2³²).
fn wire_version(version: u64) -> Result<u32, DataplaneError> {
    u32::try_from(version).map_err(|_| {
        DataplaneError::Protocol(format!("version {version} does not fit the protocol"))
    })
}

/// A connection to a dataplane: a Unix socket or a TLS stream over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use tokio::net::UnixListener;

    async fn answer_once(dir: &Path, reply: &'static str) -> Dataplane {
        let path = dir.join("dp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, mut w) = stream.into_split();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            let req: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(req["v"], 1);
            w.write_all(reply.as_bytes()).await.unwrap();
        });
        Dataplane::new(path)
    }

    fn tempdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bh-dpclient-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn results_and_refusals() {
        let d = tempdir("ok");
        let dp = answer_once(&d, "{\"v\":1,\"ok\":true,\"result\":{\"killed\":4}}\n").await;
        assert_eq!(
            dp.kill_flows(&FlowFilter::default()).await.unwrap(),
            KillResult { killed: 4 }
        );
        let d = tempdir("err");
        let dp = answer_once(
            &d,
            "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"invalid_policy\",\"message\":\"2 errors\",\"details\":[\"a\",\"b\"]}}\n",
        )
        .await;
        match dp.load_policy(&Value::Null, 3).await {
            Err(DataplaneError::Refused {
                code,
                message,
                details,
            }) => {
                assert_eq!(code, ErrorCode::InvalidPolicy);
                assert_eq!(message, "2 errors");
                assert_eq!(details, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn garbage_and_absence_are_errors() {
        let d = tempdir("garbage");
        let dp = answer_once(&d, "not json\n").await;
        assert!(matches!(
            dp.status().await,
            Err(DataplaneError::Protocol(_))
        ));
        let dp = Dataplane::new(d.join("nobody.sock"));
        assert!(matches!(
            dp.status().await,
            Err(DataplaneError::Unreachable { .. })
        ));
    }
}
