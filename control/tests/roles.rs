//! Roles, tokens and failed authentications, against control served in process (no dataplane: a route that
//! needs one answers 503, which is still "allowed"). The route × role walk covers the whole route table, and
//! checks it against the tables of docs/api.md.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::Method;
use bulkhead_control::api::{self, Route};
use bulkhead_control::auth::{Right, Role};
use serde_json::{json, Value};

mod local;

fn fresh_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("bh-roles-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Control in process with a client that trusts its certificate, and the requests these tests make to it.
struct Server(local::Local, reqwest::Client);

async fn start(name: &str, extra: &str) -> Server {
    Server::new(local::start(&fresh_dir(name), extra).await)
}

impl Server {
    fn new(local: local::Local) -> Server {
        let client = local.client();
        Server(local, client)
    }

    /// `method path` with `token` (none: no Authorization), `If-Match: "draft-0"` and a JSON body: the status,
    /// the headers and the answer.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .1
            .request(method, format!("{}{path}", self.0.url))
            .header("If-Match", "\"draft-0\"")
            .header("Content-Type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        if headers
            .get("content-type")
            .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"))
        {
            return (status, headers, Value::Null); // endless: the headers say enough
        }
        let text = r.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, headers, body)
    }

    async fn admin(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let (status, _, answer) = self.send(method, path, Some(&self.0.token), &body).await;
        (status, answer)
    }

    /// A new token of `role`: (id, secret).
    async fn new_token(&self, identity: &str, role: Role) -> (String, String) {
        let (status, answer) = self
            .admin(
                Method::POST,
                "/api/v1/tokens",
                json!({"identity": identity, "role": role}),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
        (
            answer["id"].as_str().unwrap().into(),
            answer["token"].as_str().unwrap().into(),
        )
    }

    /// Opens the flow-log stream with `token`.
    async fn stream(&self, token: &str) -> reqwest::Response {
        let stream = self
            .1
            .get(format!("{}/api/v1/flow-log/stream", self.0.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status().as_u16(), 200);
        stream
    }

    /// The status of `GET /whoami` with `token`, and the reason of a refusal.
    async fn whoami_refusal(&self, token: &str) -> (u16, Option<String>) {
        let (status, _, answer) = self
            .send(Method::GET, "/api/v1/whoami", Some(token), &Value::Null)
            .await;
        let reason = answer["error"]["details"][0]["message"].as_str();
        (status, reason.map(str::to_string))
    }

    async fn metric(&self, series: &str) -> u64 {
        let (_, _, text) = self
            .send(Method::GET, "/metrics", Some(&self.0.token), &Value::Null)
            .await;
        let text = text.as_str().unwrap().to_string();
        text.lines()
            .find_map(|l| l.strip_prefix(series))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }
}

/// Whether `stream` ends within 10 s (the keep-alive comes every 15 s).
async fn ends(mut stream: reqwest::Response) -> bool {
    tokio::time::timeout(Duration::from_secs(10), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await
    .is_ok()
}

/// The two tables of docs/api.md: role → rights, and route → right.
fn documented() -> (BTreeMap<String, Vec<String>>, BTreeMap<String, String>) {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    let mut roles = BTreeMap::new();
    let mut routes = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 4 || !cells[1].starts_with('`') {
            continue;
        }
        let unquote = |s: &str| s.trim_matches('`').to_string();
        let first = unquote(cells[1]);
        if Role::parse(&first).is_some() {
            let rights = cells[2].split(',').map(|r| unquote(r.trim())).collect();
            roles.insert(first, rights);
        } else if first.contains(" /") {
            routes.insert(first, unquote(cells[2]));
        }
    }
    (roles, routes)
}

fn route_name(r: &Route) -> String {
    format!("{} {}", r.method, r.path)
}

#[test]
fn the_documented_tables_are_the_code() {
    let (roles, routes) = documented();
    let expected_roles: BTreeMap<String, Vec<String>> = Role::ALL
        .iter()
        .map(|r| {
            let rights = r.rights().iter().map(|x| x.name().to_string()).collect();
            (r.name().to_string(), rights)
        })
        .collect();
    assert_eq!(roles, expected_roles, "the role table of docs/api.md");
    let served: BTreeMap<String, String> = api::route_table()
        .iter()
        .map(|r| {
            let right = r
                .right
                .map_or("none (public)".to_string(), |x| x.name().into());
            (route_name(r), right)
        })
        .collect();
    if routes != served {
        let table: String = served
            .iter()
            .map(|(r, x)| format!("| `{r}` | `{x}` |\n"))
            .collect();
        panic!("the route table of docs/api.md differs from the served routes; it should read:\n{table}");
    }
}

#[tokio::test]
async fn every_route_for_every_role_is_allowed_or_403_naming_the_right() {
    let s = start("walk", "").await;
    let routes = api::route_table();
    assert!(routes.len() > 45, "{}", routes.len());
    let mut tokens = Vec::new();
    for role in Role::ALL {
        let (_, secret) = s.new_token(&format!("walker-{role}"), role).await;
        tokens.push((role, secret));
    }
    let mut refused = 0;
    for (role, token) in &mut tokens {
        for route in &routes {
            let path = route
                .path
                .replace("{key}", "k")
                .replace("{version}", "1")
                .replace("{which}", "draft")
                .replace("{id}", "no-such-token");
            let (status, _, answer) = s
                .send(
                    route.method.clone(),
                    &path,
                    Some(token.as_str()),
                    &json!({}),
                )
                .await;
            let name = route_name(route);
            match route.right {
                Some(right) if !role.has(right) => {
                    refused += 1;
                    assert_eq!(status, 403, "{role} {name}: {answer}");
                    assert_eq!(
                        answer["error"]["code"], "forbidden",
                        "{role} {name}: {answer}"
                    );
                    assert_eq!(
                        answer["error"]["details"],
                        json!([{"path": "right", "message": right.name()},
                               {"path": "role", "message": role.name()}]),
                        "{role} {name}"
                    );
                    let message = answer["error"]["message"].as_str().unwrap();
                    assert!(message.contains(&format!("`{right}`")), "{message}");
                }
                _ => {
                    assert!(
                        status != 403 && status != 401,
                        "{role} {name}: {status} {answer}"
                    );
                    if name == "POST /api/v1/token/rotate" {
                        // The caller's own token was rotated: go on with the new one.
                        assert_eq!(status, 200, "{answer}");
                        *token = answer["token"].as_str().unwrap().to_string();
                    }
                }
            }
        }
    }
    // Every right but `read` is refused to someone.
    assert!(refused > 40, "{refused}");
}

#[tokio::test]
async fn tokens_are_created_listed_rotated_revoked_and_audited() {
    let s = start("tokens", "").await;
    let (status, me) = s.admin(Method::GET, "/api/v1/whoami", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(
        (me["identity"].as_str(), me["role"].as_str()),
        (Some("admin"), Some("admin"))
    );
    assert_eq!(me["rights"].as_array().unwrap().len(), Right::ALL.len());
    let admin_id = me["token_id"].as_str().unwrap().to_string();

    // Bad identities, roles and expiries are named.
    for (body, path) in [
        (
            json!({"identity": "two words", "role": "viewer"}),
            "identity",
        ),
        (
            json!({"identity": "x".repeat(65), "role": "viewer"}),
            "identity",
        ),
        (json!({"identity": "ok", "role": "root"}), "role"),
        (
            json!({"identity": "ok", "role": "viewer", "description": "a\u{7}"}),
            "description",
        ),
        (
            json!({"identity": "ok", "role": "viewer", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"identity": "ok", "role": "viewer", "expires_at": "2000-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"identity": "ok", "role": "viewer", "expires_in_s": 0}),
            "expires_in_s",
        ),
    ] {
        let (status, answer) = s.admin(Method::POST, "/api/v1/tokens", body.clone()).await;
        assert_eq!(status, 422, "{body}: {answer}");
        assert_eq!(
            answer["error"]["details"][0]["path"], path,
            "{body}: {answer}"
        );
    }

    let (status, created) = s
        .admin(
            Method::POST,
            "/api/v1/tokens",
            json!({"identity": "grafana", "role": "viewer", "description": "dashboards", "expires_in_s": 3600}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["token"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "active");
    assert!(created["expires_at"].is_string());
    let (status, _, me) = s
        .send(Method::GET, "/api/v1/whoami", Some(&secret), &Value::Null)
        .await;
    assert_eq!((status, me["role"].as_str()), (200, Some("viewer")));

    // The list shows every token, with its last use, and never a secret or a hash.
    let (_, list) = s.admin(Method::GET, "/api/v1/tokens", Value::Null).await;
    let text = list.to_string();
    assert!(
        !text.contains(&secret) && !text.contains("sha256"),
        "{text}"
    );
    let listed = list["tokens"].as_array().unwrap();
    let grafana = listed.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert_eq!(grafana["identity"], "grafana");
    assert!(grafana["last_used_at"].is_string(), "{grafana}");

    // Rotation: the old secret stops working, the new one works.
    let (status, rotated) = s
        .admin(
            Method::POST,
            &format!("/api/v1/tokens/{id}/rotate"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(
        s.whoami_refusal(&secret).await,
        (401, Some("unknown".into()))
    );
    assert_eq!(s.whoami_refusal(&new).await, (200, None));

    // A stream opened with a token ends when it is revoked; the revoked token is refused as such.
    let stream = s.stream(&new).await;
    let (status, revoked) = s
        .admin(Method::DELETE, &format!("/api/v1/tokens/{id}"), Value::Null)
        .await;
    assert_eq!(
        (status, revoked["state"].as_str()),
        (200, Some("revoked")),
        "{revoked}"
    );
    assert!(ends(stream).await, "the stream outlived its revoked token");
    assert_eq!(s.whoami_refusal(&new).await, (401, Some("revoked".into())));
    let (status, again) = s
        .admin(Method::DELETE, &format!("/api/v1/tokens/{id}"), Value::Null)
        .await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("token_revoked"))
    );

    // An expired token is refused, and a stream opened with it ends at the expiry.
    let (status, short) = s
        .admin(
            Method::POST,
            "/api/v1/tokens",
            json!({"identity": "short", "role": "operator", "expires_in_s": 1}),
        )
        .await;
    assert_eq!(status, 201);
    let short = short["token"].as_str().unwrap().to_string();
    let stream = s.stream(&short).await;
    assert!(ends(stream).await, "the stream outlived its token's expiry");
    assert_eq!(
        s.whoami_refusal(&short).await,
        (401, Some("expired".into()))
    );

    // The last admin token cannot be revoked; once there is another, it can.
    let (status, answer) = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/tokens/{admin_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("last_admin")),
        "{answer}"
    );
    let (_, second) = s.new_token("second-admin", Role::Admin).await;
    let (status, _) = s
        .admin(
            Method::DELETE,
            &format!("/api/v1/tokens/{admin_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        !s.0.dir.join("store/tokens.initial").exists(),
        "the first secret is forgotten once revoked"
    );

    // Every change is audited with the token id, never a secret; the token file holds no secret either.
    let (status, _, audit) = s
        .send(Method::GET, "/api/v1/audit", Some(&second), &Value::Null)
        .await;
    assert_eq!(status, 200);
    let actions: Vec<(String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().into(),
                e["details"]["token_id"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(
        actions.contains(&("token.create".into(), id.clone())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("token.rotate".into(), id.clone())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("token.revoke".into(), id.clone())),
        "{actions:?}"
    );
    assert!(
        actions.contains(&("token.revoke".into(), admin_id.clone())),
        "{actions:?}"
    );
    let stored = std::fs::read_to_string(s.0.dir.join("store/tokens")).unwrap();
    let logged = std::fs::read_to_string(s.0.dir.join("store/audit.jsonl")).unwrap();
    for secret in [&s.0.token, &secret, &new, &short, &second] {
        assert!(!audit.to_string().contains(secret.as_str()));
        assert!(!logged.contains(secret.as_str()));
        assert!(!stored.contains(secret.as_str()));
    }
}

#[tokio::test]
async fn an_old_token_file_migrates_and_its_secrets_keep_working_as_admin() {
    let dir = fresh_dir("migrate");
    let tokens = dir.join("store/tokens");
    std::fs::create_dir_all(tokens.parent().unwrap()).unwrap();
    let old = "admin 6a1f0c9e2b7d4a8f6a1f0c9e2b7d4a8f\nci ci-secret-0123456789\n";
    std::fs::write(&tokens, old).unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let s = Server::new(local::start(&dir, "").await);
    for (identity, secret) in [
        ("admin", "6a1f0c9e2b7d4a8f6a1f0c9e2b7d4a8f"),
        ("ci", "ci-secret-0123456789"),
    ] {
        let (status, _, me) = s
            .send(Method::GET, "/api/v1/whoami", Some(secret), &Value::Null)
            .await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(
            (me["identity"].as_str(), me["role"].as_str()),
            (Some(identity), Some("admin"))
        );
    }
    let text = std::fs::read_to_string(&tokens).unwrap();
    assert!(text.contains("bulkhead.tokens/v1"), "{text}");
    assert!(
        !text.contains("6a1f0c9e2b7d4a8f6a1f0c9e2b7d4a8f")
            && !text.contains("ci-secret-0123456789"),
        "{text}"
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&tokens).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn failed_authentications_are_counted_and_slowed_per_address() {
    let s = start(
        "failures",
        "auth = { free_failures = 2, failure_delay_ms = 10, max_failure_delay_ms = 40 }",
    )
    .await;
    let bad = "not-a-token-not-a-token";
    let mut delays = Vec::new();
    for _ in 0..6 {
        let (status, headers, answer) = s
            .send(Method::GET, "/api/v1/version", Some(bad), &Value::Null)
            .await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(
            answer["error"]["details"][0],
            json!({"path": "Authorization", "message": "unknown"})
        );
        let reported = answer["error"]["details"][1]["message"].as_str().map(|m| {
            m.strip_prefix("answered after ")
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        });
        assert_eq!(
            headers.contains_key("retry-after"),
            reported.is_some(),
            "{answer}"
        );
        delays.push(reported.unwrap_or(0));
    }
    // Two free failures, then a delay that doubles up to its bound.
    assert_eq!(delays, [0, 0, 10, 20, 40, 40]);
    // A success from the address starts it afresh.
    let (status, _, _) = s
        .send(
            Method::GET,
            "/api/v1/version",
            Some(&s.0.token),
            &Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    let (_, headers, _) = s
        .send(Method::GET, "/api/v1/version", Some(bad), &Value::Null)
        .await;
    assert!(!headers.contains_key("retry-after"));
    let (status, _, answer) = s.send(Method::GET, "/metrics", None, &Value::Null).await;
    assert_eq!(
        (status, &answer["error"]["details"][0]["message"]),
        (401, &json!("missing"))
    );
    for (reason, count) in [
        ("unknown", 7),
        ("missing", 1),
        ("expired", 0),
        ("revoked", 0),
    ] {
        let series = format!("bulkhead_control_auth_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(s.metric(&series).await, count, "{series}");
    }
}
