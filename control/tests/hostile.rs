//! What a hostile client tries against control's HTTP side, each reproduced with real sockets against control
//! served in process (no dataplane: none of these needs one).

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

mod local;

struct Server {
    local: local::Local,
    client: reqwest::Client,
}

impl std::ops::Deref for Server {
    type Target = local::Local;
    fn deref(&self) -> &local::Local {
        &self.local
    }
}

impl Server {
    /// Control with a small console directory; `extra` is added to the top of its control.toml.
    async fn start(name: &str, extra: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("bh-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("web/js")).unwrap();
        std::fs::write(dir.join("web/index.html"), "<title>console</title>").unwrap();
        std::fs::write(dir.join("web/js/app.js"), "console.log(1)").unwrap();
        let local = local::start(&dir, extra).await;
        Server {
            client: local
                .client_builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            local,
        }
    }

    /// `method path` with the token, the draft's current ETag in `If-Match` and a JSON body; the status and the
    /// answer.
    async fn send(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let draft = self
            .client
            .get(format!("{}/api/v1/draft", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let etag = draft.headers()["etag"].clone();
        let r = self
            .client
            .request(method.parse().unwrap(), format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("If-Match", etag)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, authorization: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .header("Authorization", authorization)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let s = Server::start("bearer", "").await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let (status, body) = s
            .get("/api/v1/version", &format!("{scheme} {}", s.token))
            .await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let (status, _) = s
        .get("/api/v1/version", &format!("Basic {}", s.token))
        .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn static_files_never_follow_a_symlink_out_of_the_web_directory() {
    let s = Server::start("symlink", "").await;
    let secret = s.dir.join("secret.txt");
    std::fs::write(&secret, "the network's weak spots").unwrap();
    std::os::unix::fs::symlink(&secret, s.dir.join("web/leak.txt")).unwrap();
    std::os::unix::fs::symlink(&s.dir, s.dir.join("web/js/up")).unwrap();
    // A symlink that stays inside is still served.
    std::os::unix::fs::symlink("app.js", s.dir.join("web/js/same.js")).unwrap();
    for path in [
        "/leak.txt",
        "/js/up/secret.txt",
        "/js/%75p/secret.txt",
        "/js/up/",
    ] {
        let (status, body) = s.get(path, "").await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(!body.contains("weak spots"), "{path}: {body}");
    }
    for (path, content) in [
        ("/", "<title>console</title>"),
        ("/index.html", "<title>console</title>"),
        ("/js/app.js", "console.log(1)"),
        ("/js/same.js", "console.log(1)"),
    ] {
        assert_eq!(s.get(path, "").await, (200, content.to_string()), "{path}");
    }
}

#[tokio::test]
async fn no_redirect_is_protocol_relative() {
    let s = Server::start("redirect", "").await;
    for (path, expected) in [("//js", "/js/"), ("/js", "/js/"), ("///js", "/js/")] {
        let r = s
            .client
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 307, "{path}");
        let location = r.headers()["location"].to_str().unwrap();
        assert_eq!(location, expected, "{path}");
    }
}

#[tokio::test]
async fn repeated_json_keys_are_refused_with_their_path() {
    let s = Server::start("duplicates", "").await;
    let rule = r#"{"id": 1, "name": "r", "from": "any", "to": "any", "service": "any", "action": "deny", "action": "allow"}"#;
    let doc = format!(
        r#"{{"format": "bulkhead.policy/v1", "segments": [], "services": [], "rules": [{rule}],
            "settings": {{"default_action": "deny"}}}}"#
    );
    let message = "key \"action\" appears more than once; write it once";
    for (method, path, body, at) in [
        ("PUT", "/api/v1/draft", doc.as_str(), "rules[0]"),
        ("POST", "/api/v1/validate", doc.as_str(), "rules[0]"),
        ("POST", "/api/v1/draft/rules", rule, "(document)"),
    ] {
        let (status, answer) = s.send(method, path, body).await;
        assert_eq!(status, 422, "{method} {path}: {answer}");
        assert_eq!(
            answer,
            json!({"error": {"code": "invalid_body", "message": "the body repeats a key",
                "details": [{"path": at, "message": message}]}}),
            "{method} {path}"
        );
    }
    let (status, draft) = s.send("GET", "/api/v1/draft", "").await;
    assert_eq!((status, &draft["rules"]), (200, &json!([])));
    // Bodies without repeats are read as before.
    let (status, answer) = s
        .send(
            "POST",
            "/api/v1/validate",
            &doc.replace(r#", "action": "allow""#, ""),
        )
        .await;
    assert_eq!((status, &answer["valid"]), (200, &json!(true)), "{answer}");
    let (status, answer) = s.send("POST", "/api/v1/validate", "{\"format\": ").await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("bad_json")),
        "{answer}"
    );
}

#[tokio::test]
async fn a_rotated_token_ends_the_streams_opened_with_it() {
    let s = Server::start("rotate", "").await;
    let mut stream = s
        .client
        .get(format!("{}/api/v1/flow-log/stream", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    let (status, answer) = s.send("POST", "/api/v1/token/rotate", "").await;
    assert_eq!(status, 200, "{answer}");
    // The keep-alive comes every 15 s; the stream must end long before.
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
    // The new token opens a stream again; the old one is refused.
    let new = answer["token"].as_str().unwrap();
    let (status, _) = s
        .get(
            "/api/v1/flow-log/stream?kind=denied",
            &format!("Bearer {}", s.token),
        )
        .await;
    assert_eq!(status, 401);
    let again = s
        .client
        .get(format!("{}/api/v1/flow-log/stream", s.url))
        .bearer_auth(new)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 200);
}

/// TLS connections that sent `text` (an unfinished request) and nothing more.
async fn holding(s: &Server, n: usize, text: &str) -> Vec<TlsStream<TcpStream>> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut c = s.connect_tls().await.unwrap();
        c.write_all(text.as_bytes()).await.unwrap();
        c.flush().await.unwrap();
        held.push(c);
    }
    held
}

/// What the server sends on `c` until it closes it (panics if it is still open after `secs`).
async fn until_closed(c: &mut (impl AsyncRead + Unpin), secs: u64) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(secs), async {
        let mut buf = [0u8; 1024];
        // A reset counts as closed too.
        while let Ok(n @ 1..) = c.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "still open after {secs} s");
    String::from_utf8_lossy(&got).into_owned()
}

const SHORT_TIMEOUTS: &str =
    "header_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\nmax_connections = 300";

#[tokio::test]
async fn unfinished_requests_are_closed_after_the_header_timeout() {
    let s = Server::start("slow-headers", SHORT_TIMEOUTS).await;
    let mut held = holding(&s, 200, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n").await;
    // Meanwhile the API answers.
    assert_eq!(s.get("/api/v1/health", "").await.0, 200);
    for c in &mut held {
        until_closed(c, 10).await;
    }
    // An idle keep-alive connection is closed the same way after its answer.
    let mut idle = holding(&s, 1, "GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let answer = until_closed(&mut idle[0], 10).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(s.counters.refused.get(), 0);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let s = Server::start("slow-body", SHORT_TIMEOUTS).await;
    let request = format!(
        "PUT /api/v1/draft HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nIf-Match: \"draft-1\"\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"format\"",
        s.token
    );
    let mut slow = holding(&s, 1, &request).await;
    let answer = until_closed(&mut slow[0], 10).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_read_timeout_ms"), "{answer}");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_the_api_recovers() {
    let s = Server::start(
        "cap",
        "header_read_timeout_ms = 1000\nbody_read_timeout_ms = 1000\nmax_connections = 20",
    )
    .await;
    let _full = holding(&s, 20, "GET / HTTP/1.1\r\n").await;
    // Closed without an answer (not even a TLS handshake), long before the header timeout would close them.
    for _ in 0..30 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        assert_eq!(until_closed(&mut c, 10).await, "");
    }
    let refused = s.counters.refused.get();
    assert!(refused >= 30, "{refused}");
    // The held connections time out; the API answers again.
    let health = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s
                .client
                .get(format!("{}/api/v1/health", s.url))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    assert!(health.is_ok(), "the API never answered again");
}

/// A valid document of `segments` segments and `rules` rules between them.
fn large_document(segments: usize, rules: usize) -> String {
    let segments: Vec<Value> = (0..segments)
        .map(|i| json!({"name": format!("s{i}"), "prefixes": [format!("10.{}.{}.0/24", i / 256, i % 256)]}))
        .collect();
    let rules: Vec<Value> = (0..rules)
        .map(|i| {
            json!({"id": i + 1, "name": format!("r{i}"), "from": {"segment": format!("s{}", i % segments.len())},
                "to": {"segment": format!("s{}", (i * 7 + 1) % segments.len())}, "service": "any", "action": "allow"})
        })
        .collect();
    json!({"format": "bulkhead.policy/v1", "segments": segments, "services": [], "rules": rules,
        "settings": {"default_action": "deny"}})
    .to_string()
}

#[tokio::test]
async fn health_answers_while_a_large_draft_is_validated() {
    let s = Server::start("large-draft", "body_limit_bytes = 67108864").await;
    let etag = |s: &Server| {
        let req = s
            .client
            .get(format!("{}/api/v1/draft/settings", s.url))
            .bearer_auth(&s.token);
        async move {
            req.send().await.unwrap().headers()["etag"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let before = etag(&s).await;
    let doc = large_document(10_000, 50_000);
    let request = format!(
        "PUT /api/v1/draft HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nIf-Match: {before}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}",
        s.token,
        doc.len()
    );
    let mut put = s.connect_tls().await.unwrap();
    let upload = tokio::spawn(async move {
        put.write_all(request.as_bytes()).await.unwrap();
        put.flush().await.unwrap();
        put
    });
    let mut put = upload.await.unwrap();
    // The draft is stored before it is validated: once its ETag changes, validation is running or ahead.
    while etag(&s).await == before {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.get("/api/v1/health", "").await.0, 200);
    // Health answered, and the PUT has not: its answer waits for the validation.
    let mut byte = [0u8; 1];
    let pending = tokio::time::timeout(Duration::ZERO, put.read(&mut byte)).await;
    assert!(
        pending.is_err(),
        "the PUT answered before health: {pending:?}"
    );
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    while !String::from_utf8_lossy(&answer).contains("\"valid\"") {
        let n = put.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"valid\":true"), "{answer}");
}
