//! One query-parameter policy for every route: an unknown parameter, or one given twice, is a 400 with the same
//! error shape naming it, whatever the endpoint (checked over the whole route table, in process, with no
//! dataplane: the check comes before any work).

use bulkhead_control::api::{self, Route};
use serde_json::{json, Value};

mod local;

struct Server {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("bh-query-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let local = local::start(&dir, "").await;
        Server {
            client: local.client(),
            url: local.url,
            token: local.token,
        }
    }

    /// The error of `method path?query` (JSON body `{}` for writes: the query is refused before the body is read).
    async fn error(&self, route: &Route, query: &str) -> (u16, Value) {
        let path = route
            .path
            .replace("{key}", "k")
            .replace("{version}", "1")
            .replace("{which}", "draft");
        let resp = self
            .client
            .request(route.method.clone(), format!("{}{path}?{query}", self.url))
            .bearer_auth(&self.token)
            .header("If-Match", "\"draft-0\"")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        (status, body)
    }
}

fn every_route() -> Vec<Route> {
    let mut all = api::protected_routes().table;
    all.extend(api::public_routes().table);
    all.extend(api::flow_log::routes().table);
    all
}

#[tokio::test]
async fn unknown_and_repeated_parameters_are_refused_alike_on_every_route() {
    let s = Server::start("policy").await;
    let routes = every_route();
    assert!(routes.len() > 40, "{}", routes.len());
    for route in &routes {
        let (status, body) = s.error(route, "nonsense=1").await;
        let known = if route.query.is_empty() {
            "this endpoint takes none".to_string()
        } else {
            format!("known: {}", route.query.join(", "))
        };
        assert_eq!(status, 400, "{route:?}: {body}");
        assert_eq!(
            body,
            json!({"error": {"code": "bad_request",
                "message": format!("unknown query parameter `nonsense`; {known}"),
                "details": [{"path": "nonsense", "message": format!("unknown; {known}")}]}}),
            "{route:?}"
        );
        // A known parameter given twice: refused before either value is looked at.
        if let Some(name) = route.query.first() {
            let (status, body) = s.error(route, &format!("{name}=1&{name}=2")).await;
            assert_eq!(status, 400, "{route:?}: {body}");
            assert_eq!(
                body,
                json!({"error": {"code": "bad_request",
                    "message": format!("query parameter `{name}` is given more than once"),
                    "details": [{"path": name, "message": "given more than once"}]}}),
                "{route:?}"
            );
        }
    }
    // /metrics (its own router) follows the same policy.
    let metrics = Route {
        method: axum::http::Method::GET,
        path: "/metrics".into(),
        query: &[],
    };
    let (status, body) = s.error(&metrics, "name=x").await;
    assert_eq!(
        (status, body["error"]["details"][0]["path"].as_str()),
        (400, Some("name"))
    );
}

#[tokio::test]
async fn bad_values_name_the_parameter_and_what_it_must_be() {
    let s = Server::start("values").await;
    let get = |path: &str| Route {
        method: axum::http::Method::GET,
        path: format!("/api/v1{path}"),
        query: &[],
    };
    for (path, query, message) in [
        ("/flows", "port=http", "query parameter `port`: \"http\" is not a port (0-65535)"),
        ("/flows", "src=x", "query parameter `src`: \"x\" is not an IPv4 or IPv6 address"),
        ("/flows", "limit=-1", "query parameter `limit`: \"-1\" is not a number of connections (0, 1, ...)"),
        ("/flow-log", "proto=sctp", "query parameter `proto`: \"sctp\" is not a protocol: tcp, udp, icmp, icmpv6 or a number 0-255"),
        ("/traffic/map", "proto=sctp", "query parameter `proto`: \"sctp\" is not a protocol: tcp, udp, icmp, icmpv6 or a number 0-255"),
        ("/traffic/map", "window_s=0", "query parameter `window_s`: \"0\" is not a number of seconds, 1 to 86400"),
        ("/rules/health", "policy=both", "query parameter `policy`: \"both\" is not active or draft"),
        ("/rules/health", "stale_after_s=0", "query parameter `stale_after_s`: \"0\" is not a number of seconds, at least 1"),
        ("/audit", "since=x", "query parameter `since`: \"x\" is not an audit sequence number (0, 1, ...)"),
        ("/audit", "limit=many", "query parameter `limit`: \"many\" is not a number of entries (0, 1, ...)"),
    ] {
        let (status, body) = s.error(&get(path), query).await;
        assert_eq!(status, 400, "{path}?{query}: {body}");
        let name = query.split('=').next().unwrap();
        assert_eq!(
            body,
            json!({"error": {"code": "bad_request", "message": message,
                "details": [{"path": name, "message": message}]}}),
            "{path}?{query}"
        );
    }
    let post = Route {
        method: axum::http::Method::POST,
        path: "/api/v1/draft/rules".into(),
        query: &[],
    };
    let (status, body) = s.error(&post, "position=first").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["error"]["message"],
        "query parameter `position`: \"first\" is not a position (0, 1, ...)"
    );
    // Values that parse still reach the endpoint: the diff of two empty documents.
    let r = s
        .client
        .get(format!("{}/api/v1/diff?from=draft&to=active", s.url))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
