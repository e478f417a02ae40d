//! Client of the dataplane's local control socket (JSON lines, protocol v1; see
//! `dataplane/src/control/protocol.rs`). One connection per request: the dataplane may restart at any time and
//! control must never hold state that a restart invalidates.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// The protocol version this client speaks.
pub const PROTOCOL_VERSION: u64 = 1;

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
        code: String,
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

    /// Sends `request` (an object with `op` and its arguments; `v` is added) and returns its `result`.
    pub async fn request(&self, mut request: Value) -> Result<Value, DataplaneError> {
        request["v"] = json!(PROTOCOL_VERSION);
        match tokio::time::timeout(self.timeout, self.exchange(&request)).await {
            Ok(answer) => answer,
            Err(_) => Err(DataplaneError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, request: &Value) -> Result<Value, DataplaneError> {
        let mut stream = UnixStream::connect(&self.path).await.map_err(|source| {
            DataplaneError::Unreachable {
                path: self.path.clone(),
                source,
            }
        })?;
        let mut line = request.to_string();
        line.push('\n');
        stream.write_all(line.as_bytes()).await?;
        let mut answer = String::new();
        BufReader::new(stream).read_line(&mut answer).await?;
        if answer.is_empty() {
            return Err(DataplaneError::Protocol(
                "connection closed without an answer".into(),
            ));
        }
        let mut answer: Value = serde_json::from_str(&answer)
            .map_err(|e| DataplaneError::Protocol(format!("{e}: {answer:?}")))?;
        if answer["ok"] == json!(true) {
            return Ok(answer["result"].take());
        }
        let error = &answer["error"];
        match error["code"].as_str() {
            Some(code) => Err(DataplaneError::Refused {
                code: code.to_string(),
                message: error["message"].as_str().unwrap_or_default().to_string(),
                details: error["details"]
                    .as_array()
                    .map(|d| {
                        d.iter()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            None => Err(DataplaneError::Protocol(format!(
                "neither a result nor an error: {answer}"
            ))),
        }
    }

    /// Process, active policy version, workers, uptime.
    pub async fn status(&self) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "status"})).await
    }

    /// Every counter: totals, per worker, per rule, per port.
    pub async fn counters(&self) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "counters"})).await
    }

    /// Validates, compiles, persists and publishes `policy` as `version`.
    pub async fn load_policy(&self, policy: &Value, version: u64) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "load_policy", "policy": policy, "version": version}))
            .await
    }

    /// The active policy document and its version (`null` before the first policy).
    pub async fn get_policy(&self) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "get_policy"})).await
    }

    /// Tracked connections matching `filter` (fields: addr, src, dst, port, proto, rule_id), at most `limit`.
    pub async fn flows(&self, filter: &Value, limit: usize) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "flows", "filter": filter, "limit": limit}))
            .await
    }

    /// Removes the tracked connections matching `filter`.
    pub async fn kill_flows(&self, filter: &Value) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "kill_flows", "filter": filter}))
            .await
    }

    /// Flow events queued since the last call, at most `max`.
    pub async fn events(&self, max: usize) -> Result<Value, DataplaneError> {
        self.request(json!({"op": "events", "max": max})).await
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
        let dp = answer_once(&d, "{\"v\":1,\"ok\":true,\"result\":{\"x\":1}}\n").await;
        assert_eq!(dp.status().await.unwrap(), json!({"x": 1}));
        let d = tempdir("err");
        let dp = answer_once(
            &d,
            "{\"v\":1,\"ok\":false,\"error\":{\"code\":\"invalid_policy\",\"message\":\"2 errors\",\"details\":[\"a\",\"b\"]}}\n",
        )
        .await;
        match dp.load_policy(&json!({}), 3).await {
            Err(DataplaneError::Refused {
                code,
                message,
                details,
            }) => {
                assert_eq!(code, "invalid_policy");
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
