//! Client of the dataplane's local control socket (the messages of the `protocol` crate, one per line). One
//! connection per request: the dataplane may restart at any time and control must never hold state that a
//! restart invalidates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::{
    decode_reply, encode_request, CountersReport, ErrorCode, EventBatch, FlowFilter, FlowList,
    KillResult, LoadPolicyResult, PolicyState, Request, Status,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

pub use protocol::PROTOCOL_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The socket is absent or refuses connections: the dataplane is down or starting.
    #[error("dataplane unreachable at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
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

/// Where the dataplane listens, and how long to wait for an answer.
#[derive(Debug, Clone)]
pub struct Dataplane {
    path: PathBuf,
    timeout: Duration,
}

impl Dataplane {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Dataplane {
            path: path.into(),
            timeout: Duration::from_secs(30),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.path
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
        let mut stream = UnixStream::connect(&self.path).await.map_err(|source| {
            DataplaneError::Unreachable {
                path: self.path.clone(),
                source,
            }
        })?;
        let mut line = encode_request(None, request);
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
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
