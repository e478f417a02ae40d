//! A `bulkhead-control` process for tests and the demo: started with a generated config on an ephemeral
//! localhost port, reached over HTTPS with `curl` (the client operators use) trusting the certificate the process
//! announces in its `ready` line (its self-signed one unless the config names another), stopped (or killed with
//! SIGKILL) on demand and on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Result};

/// What to start.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The `bulkhead-control` binary.
    pub binary: PathBuf,
    /// Directory for the config, store, tokens, flow log and stderr (kept across restarts).
    pub dir: PathBuf,
    /// The dataplane's control socket; empty when `extra` configures `[[gateways]]` instead.
    pub dataplane_socket: PathBuf,
    pub reconcile_interval_ms: u64,
    /// Appended to the generated config verbatim (e.g. `confirm_timeout_s = 5`).
    pub extra: String,
    /// The web console's directory (`[web] dir`); by default one that does not exist, so none is served.
    pub web_dir: PathBuf,
    /// Extra environment variables of the process (e.g. a crash-test seam).
    pub env: Vec<(String, String)>,
}

impl ControlOptions {
    pub fn new(binary: impl Into<PathBuf>, dir: &Path, dataplane_socket: &Path) -> Self {
        ControlOptions {
            binary: binary.into(),
            dir: dir.to_path_buf(),
            dataplane_socket: dataplane_socket.to_path_buf(),
            reconcile_interval_ms: 500,
            extra: String::new(),
            web_dir: dir.join("web"),
            env: Vec::new(),
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }

    pub fn config_text(&self) -> String {
        // An empty socket path: the gateways are configured in `extra` (`[[gateways]]` tables).
        let socket = if self.dataplane_socket.as_os_str().is_empty() {
            String::new()
        } else {
            format!(
                "dataplane_socket = {:?}\n",
                self.dataplane_socket.display().to_string()
            )
        };
        format!(
            "listen = \"127.0.0.1:0\"\nstore_dir = {:?}\n{socket}\
             reconcile_interval_ms = {}\ndataplane_timeout_ms = 5000\n{}\n\
             [flow_log]\npath = {:?}\n\n[web]\ndir = {:?}\n",
            self.store_dir().display().to_string(),
            self.reconcile_interval_ms,
            self.extra,
            self.dir.join("flows.jsonl").display().to_string(),
            self.web_dir.display().to_string(),
        )
    }
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Value::String` with the raw text when it is not JSON).
    pub body: Value,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn etag(&self) -> String {
        self.header("etag").unwrap_or_default().to_string()
    }
}

/// A running control process.
#[derive(Debug)]
pub struct Control {
    child: Option<Child>,
    pub opts: ControlOptions,
    /// `https://127.0.0.1:PORT` (`http://` with `[tls] plain_http`).
    pub url: String,
    /// The certificate the process serves (PEM), which clients trust; `None` on plain HTTP.
    pub cert: Option<PathBuf>,
    /// Its `ready` line.
    pub ready: Value,
    /// The `admin` token: the first admin secret control leaves in `tokens.initial` at first start, or the admin
    /// line of an old-format token file written before the start.
    pub token: String,
}

impl Control {
    pub fn start(opts: &ControlOptions) -> Result<Control> {
        std::fs::create_dir_all(&opts.dir)?;
        // A token file of the old format (`identity secret` lines) written by a test: control migrates it at start,
        // and its admin secret keeps working.
        let old_admin = std::fs::read_to_string(opts.store_dir().join("tokens"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("admin "))
                    .map(|s| s.trim().to_string())
            });
        let config = opts.dir.join("control.toml");
        std::fs::write(&config, opts.config_text())?;
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(opts.dir.join("control.stderr"))?;
        let mut child = Command::new(&opts.binary)
            .arg("--config")
            .arg(&config)
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: opts.binary.display().to_string(),
                source,
            })?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"] == "ready" {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let mut control = Control {
            child: Some(child),
            opts: opts.clone(),
            url: String::new(),
            cert: None,
            ready: Value::Null,
            token: String::new(),
        };
        let Ok(ready) = rx.recv_timeout(Duration::from_secs(30)) else {
            let status = control.kill9();
            return Err(Error::DataplaneDied {
                status: format!("bulkhead-control did not become ready ({status:?})"),
                stderr: control.stderr(),
            });
        };
        control.url = ready["url"].as_str().unwrap_or_default().to_string();
        control.cert = ready["tls"]["cert"].as_str().map(PathBuf::from);
        control.ready = ready;
        control.token = match old_admin {
            Some(secret) => secret,
            None => read_token(&opts.store_dir().join("tokens.initial"))?,
        };
        Ok(control)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.opts.dir.join("control.stderr")).unwrap_or_default()
    }

    /// Whether the process has ended by itself (and how); `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill9(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::Timeout(Duration::ZERO, "a running control process"));
        };
        crate::terminate(&mut child, crate::STOP_GRACE)
    }

    /// A request with the admin token.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Response> {
        self.request(method, path, body, &[], Some(&self.token))
    }

    /// A write with `If-Match`.
    pub fn write(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        etag: &str,
    ) -> Result<Response> {
        self.request(method, path, body, &[("If-Match", etag)], Some(&self.token))
    }

    /// Any request; `token: None` sends no Authorization header.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<Response> {
        let raw = body.map(|b| b.to_string().into_bytes());
        self.request_raw(method, path, raw.as_deref(), headers, token)
    }

    /// Any request with a raw body.
    pub fn request_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        headers: &[(&str, &str)],
        token: Option<&str>,
    ) -> Result<Response> {
        curl(
            self.curl_command(),
            &self.url,
            method,
            path,
            body,
            headers,
            token,
        )
    }

    /// `curl -sS` trusting this control's certificate, for requests the tests shape themselves.
    pub fn curl_command(&self) -> Command {
        let mut c = Command::new("curl");
        c.arg("-sS");
        if let Some(cert) = &self.cert {
            c.arg("--cacert").arg(cert);
        }
        c
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = crate::terminate(&mut child, crate::STOP_GRACE);
        }
    }
}

/// The first admin secret, which control leaves beside its token file at first start.
fn read_token(path: &Path) -> Result<String> {
    let secret = std::fs::read_to_string(path)?.trim().to_string();
    if secret.is_empty() {
        return Err(Error::Protocol(format!(
            "no admin token in {}",
            path.display()
        )));
    }
    Ok(secret)
}

/// One HTTP request with the curl command `c` (e.g. [`Control::curl_command`], or one with the `--cacert` of a
/// control started otherwise); the status, headers and body it got.
pub fn curl(
    mut c: Command,
    base: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
    token: Option<&str>,
) -> Result<Response> {
    c.args(["-i", "--max-time", "60", "-X", method, "-H", "Expect:"]);
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    for (k, v) in headers {
        c.args(["-H", &format!("{k}: {v}")]);
    }
    if body.is_some() {
        c.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    c.arg(format!("{base}{path}"));
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|source| Error::Spawn {
        cmd: "curl".into(),
        source,
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    let body = body.map(<[u8]>::to_vec);
    let writer = std::thread::spawn(move || {
        if let Some(b) = body {
            let _ = stdin.write_all(&b);
        }
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("curl -X {method} {base}{path}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Protocol(format!("no HTTP status in {head:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()));
    Ok(Response {
        status,
        headers,
        body,
    })
}
