//! The OpenAPI 3.1 document served at `/api/v1/openapi.json`. A test checks that its operations are exactly the
//! routes the router serves.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::auth::{Right, Role};

/// (method, path, summary, request body, If-Match needed)
type Op = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

/// Every operation. Bodies name a schema in `components`; If-Match names which ETag it takes.
pub const OPERATIONS: &[Op] = &[
    (
        "get",
        "/api/v1/health",
        "Liveness, active version, each gateway's reachability and version (no token needed)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/version",
        "Versions of control, API, policy format, dataplane protocol",
        None,
        None,
    ),
    ("get", "/api/v1/openapi.json", "This document", None, None),
    (
        "get",
        "/api/v1/draft",
        "The whole draft document (ETag: draft revision)",
        None,
        None,
    ),
    (
        "put",
        "/api/v1/draft",
        "Import: replace the whole draft",
        Some("Document"),
        Some("draft"),
    ),
    (
        "post",
        "/api/v1/draft/reset",
        "Replace the draft by the active policy",
        None,
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/settings",
        "Draft settings",
        None,
        None,
    ),
    (
        "put",
        "/api/v1/draft/settings",
        "Replace the draft settings",
        Some("Settings"),
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/segments",
        "Draft segments",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/draft/segments",
        "Add a segment (?position=N)",
        Some("Segment"),
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/segments/{key}",
        "One draft segment by name",
        None,
        None,
    ),
    (
        "put",
        "/api/v1/draft/segments/{key}",
        "Create or replace a segment",
        Some("Segment"),
        Some("draft"),
    ),
    (
        "delete",
        "/api/v1/draft/segments/{key}",
        "Delete a segment",
        None,
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/services",
        "Draft services",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/draft/services",
        "Add a service (?position=N)",
        Some("Service"),
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/services/{key}",
        "One draft service by name",
        None,
        None,
    ),
    (
        "put",
        "/api/v1/draft/services/{key}",
        "Create or replace a service",
        Some("Service"),
        Some("draft"),
    ),
    (
        "delete",
        "/api/v1/draft/services/{key}",
        "Delete a service",
        None,
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/rules",
        "Draft rules, in order",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/draft/rules",
        "Add a rule (?position=N; default: last)",
        Some("Rule"),
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/rules/{key}",
        "One draft rule by id",
        None,
        None,
    ),
    (
        "put",
        "/api/v1/draft/rules/{key}",
        "Create or replace a rule (?position=N moves it)",
        Some("Rule"),
        Some("draft"),
    ),
    (
        "delete",
        "/api/v1/draft/rules/{key}",
        "Delete a rule",
        None,
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/active",
        "The active version: metadata, pending confirm, document (ETag: active version)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/settings",
        "Active settings (read-only)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/segments",
        "Active segments (read-only)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/segments/{key}",
        "One active segment",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/services",
        "Active services (read-only)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/services/{key}",
        "One active service",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/rules",
        "Active rules (read-only)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/active/rules/{key}",
        "One active rule",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/export/{which}",
        "Export a document: draft, active or a version number",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/validate",
        "Validate the draft (empty body) or the posted document",
        Some("Document"),
        None,
    ),
    (
        "get",
        "/api/v1/diff",
        "Objects added/removed/changed (?from=active&to=draft; also version numbers)",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/commit",
        "Commit the draft as the next version and push it to the dataplane",
        Some("Commit"),
        Some("draft"),
    ),
    (
        "get",
        "/api/v1/draft/submission",
        "The draft revision submitted for approval (two-person rule), if any",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/draft/submission",
        "Submit the draft revision for approval by another identity",
        Some("Submission"),
        Some("draft"),
    ),
    (
        "delete",
        "/api/v1/draft/submission",
        "Withdraw (author) or reject (approver) the submission",
        Some("Withdrawal"),
        None,
    ),
    (
        "get",
        "/api/v1/scheduled-commit",
        "The scheduled commit, if any (waiting, or failed with its error)",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/scheduled-commit",
        "Validate the draft now and commit it at the given time",
        Some("ScheduledCommit"),
        Some("draft"),
    ),
    (
        "delete",
        "/api/v1/scheduled-commit",
        "Cancel the scheduled commit",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/confirm",
        "Confirm a commit made with confirm_within_s",
        None,
        Some("active"),
    ),
    (
        "post",
        "/api/v1/revert",
        "Revert the version awaiting confirmation now, before its deadline",
        None,
        Some("active"),
    ),
    (
        "post",
        "/api/v1/rollback",
        "Activate a copy of an earlier version as the next version",
        Some("Rollback"),
        Some("active"),
    ),
    (
        "get",
        "/api/v1/versions",
        "Version history, newest first",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/versions/{version}",
        "One version: metadata and document",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/explain",
        "Verdict for a flow under draft and active; connections the draft would cut",
        Some("Flow"),
        None,
    ),
    (
        "post",
        "/api/v1/suggest",
        "Allow rules proposed from the conversations of a window, with provenance and coverage",
        Some("SuggestRequest"),
        None,
    ),
    (
        "post",
        "/api/v1/suggest/apply",
        "Add a proposal's rules (all or selected) and their new services to the draft",
        Some("SuggestApply"),
        Some("draft"),
    ),
    (
        "post",
        "/api/v1/what-if",
        "Replay a window of conversations through the draft or a posted document",
        Some("WhatIfRequest"),
        None,
    ),
    (
        "get",
        "/api/v1/flows",
        "Tracked connections of every gateway, or of one (?gateway&addr&src&dst&port&proto&rule_id&limit)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/gateways",
        "The managed gateways: reachability, the version each runs, in sync, last contact and error; HA role and sync, and the pairs",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/gateways/{name}/resync",
        "Ask an HA member for a bulk resync of its connection state to its peer",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/flows/kill",
        "Kill tracked connections matching a filter, on every gateway or one (gateway)",
        Some("FlowFilter"),
        None,
    ),
    (
        "get",
        "/api/v1/stats",
        "Gateway counters and rates from the metrics poller's last two readings (never a dataplane request)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/rules/health",
        "Per rule: counters, last hit, stale, shadowed (?policy=active|draft&stale_after_s=N)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/traffic/map",
        "Segment-to-segment traffic from the flow log in memory (?window_s=N&proto=&port=)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/history/conversations",
        "Conversations of the flow history, per bucket or over the window, with filters and paging",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/history/map",
        "Segment map over the flow history; drill down to host pairs and services",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/history/rules",
        "Per rule: flows decided and last hit over a window of the flow history",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/history/unsegmented",
        "Addresses in no segment, grouped by subnet and peers, as candidate segments",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/audit",
        "Audit log (?since=SEQ&limit=N)",
        None,
        None,
    ),
    (
        "post",
        "/api/v1/token/rotate",
        "Replace the caller's token; the old one stops working",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/whoami",
        "The caller: identity, role, rights, token id, expiry",
        None,
        None,
    ),
    ("get", "/api/v1/tokens", "Every token (never a secret)", None, None),
    (
        "post",
        "/api/v1/tokens",
        "Create a token; its secret is answered this once",
        Some("NewToken"),
        None,
    ),
    (
        "post",
        "/api/v1/tokens/{id}/rotate",
        "A new secret for a token (answered this once); the old one stops working",
        None,
        None,
    ),
    (
        "delete",
        "/api/v1/tokens/{id}",
        "Revoke a token (409 for the last active admin token)",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/flow-log",
        "Recent flow events (new, denied, closed) with filters",
        None,
        None,
    ),
    (
        "get",
        "/api/v1/flow-log/stream",
        "Flow events as they happen (server-sent events)",
        None,
        None,
    ),
    (
        "get",
        "/metrics",
        "Prometheus metrics (text exposition format)",
        None,
        None,
    ),
];

/// Query parameters: (the operations that take it, as `"method path"`, name, schema, description). A test
/// checks that each operation documents exactly the parameters its route takes.
const QUERY: &[(&[&str], &str, &str, &str)] = &[
    (
        GATEWAY,
        "gateway",
        S,
        "One gateway by its configured name, or an HA pair by its name: both members (flows and the flow log: default every gateway; stats and rules health: default the first configured; a pair's stats and rule counters are its members' summed)",
    ),
    (
        &["get /api/v1/rules/health"],
        "policy",
        r#"{"enum": ["active", "draft"], "default": "active"}"#,
        "Which policy's rules to report",
    ),
    (
        &["get /api/v1/rules/health"],
        "stale_after_s",
        r#"{"type": "integer", "minimum": 1, "default": 86400}"#,
        "A rule not hit for longer than this (or never) is stale",
    ),
    (
        &["get /api/v1/traffic/map"],
        "window_s",
        r#"{"type": "integer", "minimum": 1, "maximum": 86400, "default": 900}"#,
        "Only events whose time is within this many seconds before now",
    ),
    (&["get /api/v1/traffic/map"], "proto", S, PROTO),
    (
        &["get /api/v1/traffic/map"],
        "port",
        PORT,
        "Either port of the flow",
    ),
    (
        HISTORY,
        "from",
        r#"{"type": "string", "format": "date-time"}"#,
        "Start of the window (not with window_s); default: to minus window_s, or the whole retention",
    ),
    (
        HISTORY,
        "to",
        r#"{"type": "string", "format": "date-time"}"#,
        "End of the window (default: now)",
    ),
    (
        HISTORY,
        "window_s",
        r#"{"type": "integer", "minimum": 1, "maximum": 315360000}"#,
        "The window's length back from to (not with from)",
    ),
    (
        &[
            "get /api/v1/history/map",
            "get /api/v1/history/rules",
            "get /api/v1/history/unsegmented",
        ],
        "policy",
        r#"{"enum": ["active", "draft"], "default": "active"}"#,
        "Whose segments (or rules) apply to the stored addresses",
    ),
    (HISTORY_FILTER, "proto", S, PROTO),
    (
        HISTORY_FILTER,
        "gateway",
        S,
        "The gateway that reported the conversation, or an HA pair: either member",
    ),
    (
        HISTORY_FILTER,
        "tier",
        S,
        "The tier that decided (-: no tier, i.e. a v1 policy, the policy's default, or stored before tiers were kept)",
    ),
    (HISTORY_FILTER, "port", PORT, "Destination port (the service)"),
    (
        HISTORY_FILTER,
        "vlan",
        r#"{"type": "integer", "minimum": 0, "maximum": 4094}"#,
        "Outer VLAN id (0: untagged)",
    ),
    (
        HISTORY_FILTER,
        "verdict",
        S,
        "allow, deny, reject, would_deny or a comma-separated list",
    ),
    (
        &["get /api/v1/history/conversations"],
        "src",
        S,
        "Source address or prefix",
    ),
    (
        &["get /api/v1/history/conversations"],
        "dst",
        S,
        "Destination address or prefix",
    ),
    (
        &["get /api/v1/history/conversations"],
        "addr",
        S,
        "Either address within this address or prefix",
    ),
    (
        &["get /api/v1/history/conversations"],
        "rule_id",
        INT,
        "The deciding rule (0: the default action)",
    ),
    (
        &["get /api/v1/history/conversations"],
        "group",
        r#"{"enum": ["bucket", "window"], "default": "bucket"}"#,
        "One entry per conversation and bucket, or per conversation over the window",
    ),
    (
        &["get /api/v1/history/conversations"],
        "limit",
        r#"{"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}"#,
        "At most this many conversations",
    ),
    (
        &["get /api/v1/history/conversations"],
        "offset",
        INT,
        "Skip this many matching conversations first",
    ),
    (
        &["get /api/v1/history/map"],
        "src_segment",
        S,
        "With dst_segment: the host pairs of this segment pair (-: in no segment)",
    ),
    (
        &["get /api/v1/history/map"],
        "dst_segment",
        S,
        "With src_segment: the host pairs of this segment pair",
    ),
    (
        &["get /api/v1/history/map"],
        "src",
        S,
        "With dst and the segments: the services of this host pair",
    ),
    (
        &["get /api/v1/history/map"],
        "dst",
        S,
        "With src and the segments: the services of this host pair",
    ),
    (
        FLOW_LOG,
        "kind",
        S,
        "new, denied, closed or a comma-separated list",
    ),
    (FLOWS, "src", S, "Source address"),
    (FLOWS, "dst", S, "Destination address"),
    (FLOWS, "addr", S, "Either address"),
    (FLOWS, "port", PORT, "Either port"),
    (FLOWS, "proto", S, PROTO),
    (
        FLOWS,
        "rule_id",
        INT,
        "The deciding rule (0: the default action)",
    ),
    (
        FLOW_LOG,
        "src_segment",
        S,
        "A segment in the event's src_segments (-: in no segment)",
    ),
    (
        FLOW_LOG,
        "dst_segment",
        S,
        "A segment in the event's dst_segments (-: in no segment)",
    ),
    (
        FLOW_LOG,
        "tier",
        S,
        "The tier that decided (-: no tier, i.e. a v1 policy or the policy's default)",
    ),
    (
        &["get /api/v1/flow-log"],
        "since",
        INT,
        "Only events with a greater seq (then the oldest limit after it)",
    ),
    (
        &["get /api/v1/flow-log"],
        "limit",
        r#"{"type": "integer", "minimum": 1, "default": 100}"#,
        "At most this many events",
    ),
    (
        &["get /api/v1/flow-log/stream"],
        "since",
        INT,
        "Replay what memory holds after this seq first",
    ),
    (
        &["get /api/v1/flows"],
        "limit",
        r#"{"type": "integer", "minimum": 0, "default": 1000, "maximum": 100000}"#,
        "At most this many connections",
    ),
    (
        &["get /api/v1/diff"],
        "from",
        r#"{"type": "string", "default": "active"}"#,
        "draft, active or a version number",
    ),
    (
        &["get /api/v1/diff"],
        "to",
        r#"{"type": "string", "default": "draft"}"#,
        "draft, active or a version number",
    ),
    (
        &["get /api/v1/audit"],
        "since",
        INT,
        "Only entries with a greater seq",
    ),
    (
        &["get /api/v1/audit"],
        "limit",
        r#"{"type": "integer", "minimum": 0, "default": 1000}"#,
        "At most this many entries (the newest)",
    ),
    (
        DRAFT_OBJECT_WRITES,
        "position",
        INT,
        "Where the object goes in its list (0-based; default: last when created, unchanged when replaced)",
    ),
    (
        DRAFT_OBJECT_WRITES,
        "tier",
        r#"{"type": "string"}"#,
        "Rules of a tiered draft: the tier a created rule goes in (required with several tiers), or the tier an existing rule moves to; the position is within it. Segments and services refuse it (they are document-wide)",
    ),
];
/// The draft's object writes take a position and, for rules, a tier.
const DRAFT_OBJECT_WRITES: &[&str] = &[
    "post /api/v1/draft/segments",
    "put /api/v1/draft/segments/{key}",
    "post /api/v1/draft/services",
    "put /api/v1/draft/services/{key}",
    "post /api/v1/draft/rules",
    "put /api/v1/draft/rules/{key}",
];
/// Where a `gateway` parameter picks one gateway (or an HA pair).
const GATEWAY: &[&str] = &[
    "get /api/v1/flow-log",
    "get /api/v1/flow-log/stream",
    "get /api/v1/flows",
    "get /api/v1/stats",
    "get /api/v1/rules/health",
];
/// The flow log and its stream take the same filters; tracked connections take those of a single flow.
const FLOW_LOG: &[&str] = &["get /api/v1/flow-log", "get /api/v1/flow-log/stream"];
const FLOWS: &[&str] = &[
    "get /api/v1/flow-log",
    "get /api/v1/flow-log/stream",
    "get /api/v1/flows",
];
/// Every history route takes a window; the conversations and the map take the same filters.
const HISTORY: &[&str] = &[
    "get /api/v1/history/conversations",
    "get /api/v1/history/map",
    "get /api/v1/history/rules",
    "get /api/v1/history/unsegmented",
];
const HISTORY_FILTER: &[&str] = &[
    "get /api/v1/history/conversations",
    "get /api/v1/history/map",
];
const PROTO: &str = "tcp, udp, icmp, icmpv6 or 0-255";
const S: &str = r#"{"type": "string"}"#;
const INT: &str = r#"{"type": "integer", "minimum": 0}"#;
const PORT: &str = r#"{"type": "integer", "minimum": 0, "maximum": 65535}"#;

/// Answer schemas of the console's endpoints: (path, schema name).
const ANSWERS: &[(&str, &str)] = &[
    ("/api/v1/stats", "Stats"),
    ("/api/v1/rules/health", "RulesHealth"),
    ("/api/v1/traffic/map", "TrafficMap"),
];

fn answer_schemas() -> Value {
    let n = json!({"type": "integer"});
    let nn = json!({"type": ["integer", "null"]});
    let f = json!({"type": ["number", "null"]});
    let t = json!({"type": ["string", "null"], "format": "date-time"});
    json!({
        "Stats": {"type": "object", "required": ["up", "read_at", "interval_s", "policy_version", "last_error",
                  "totals", "rates", "workers", "ports"], "properties": {
            "up": {"type": "boolean"}, "read_at": t, "interval_s": f, "policy_version": nn,
            "last_error": {"type": ["string", "null"]},
            "totals": {"type": ["object", "null"], "properties": {
                "rx_packets": n, "tx_packets": n, "flows_active": n, "flows_created": n, "flows_closed": n,
                "flows_evicted": n, "would_deny": n, "rejects_sent": n,
                "drops": {"type": "object", "additionalProperties": n}, "drops_total": n}},
            "rates": {"type": ["object", "null"], "description": "null at the first reading and across a dataplane restart",
                "properties": {"rx_pps": f, "tx_pps": f, "drops_pps": f, "new_flows_ps": f, "closed_flows_ps": f,
                    "would_deny_pps": f, "drops_pps_by_reason": {"type": "object", "additionalProperties": f}}},
            "workers": {"type": "array", "items": {"type": "object", "properties": {
                "worker": n, "rx_packets": n, "tx_packets": n, "flows_active": n, "busy_ratio": f, "rx_pps": f}}},
            "ports": {"type": "array", "items": {"type": "object", "properties": {
                "name": {"type": "string"}, "rx_packets": n, "tx_packets": n, "rx_bytes": n, "tx_bytes": n,
                "rx_missed": n, "rx_errors": n, "tx_errors": n, "rx_nombuf": n,
                "rx_pps": f, "tx_pps": f, "rx_bps": f, "tx_bps": f}}}}},
        "RulesHealth": {"type": "object", "required": ["policy", "version", "stale_after_s", "read_at", "rules", "default"],
            "properties": {
            "policy": {"enum": ["active", "draft"]}, "version": nn, "stale_after_s": n, "read_at": t,
            "rules": {"type": "array", "items": {"type": "object", "properties": {
                "position": n, "id": n, "name": {"type": "string"}, "description": {"type": ["string", "null"]},
                "action": {"enum": ["allow", "deny", "reject"]}, "mode": {"enum": ["enforce", "monitor"]},
                "packets": nn, "bytes": nn, "flows": nn, "last_hit": t, "stale": {"type": ["boolean", "null"]},
                "shadowed": {"type": ["object", "null"], "properties": {
                    "reason": {"enum": ["covered_by", "matches_nothing"]}, "by": {"type": "array", "items": n}}}}}},
            "default": {"type": ["object", "null"], "properties": {"action": {"enum": ["allow", "deny", "reject"]},
                "packets": nn, "bytes": nn, "flows": nn, "last_hit": t}}}},
        "TrafficMap": {"type": "object", "required": ["window_s", "from", "to", "events_considered", "truncated", "nodes", "edges"],
            "properties": {
            "window_s": n, "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"},
            "events_considered": n, "truncated": {"type": "boolean"},
            "nodes": {"type": "array", "items": {"type": "object", "properties": {
                "id": {"type": "string"}, "name": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "prefixes": {"type": "array", "items": {"type": "string"}},
                "mode": {"enum": ["enforce", "monitor", null]}, "observed": {"type": "boolean"}}}},
            "edges": {"type": "array", "items": {"type": "object", "properties": {
                "from": {"type": "string"}, "to": {"type": "string"}, "allowed": n, "denied": n, "would_deny": n,
                "packets": n, "bytes": n, "last_seen": {"type": "string", "format": "date-time"},
                "services": {"type": "array", "items": {"type": "object", "properties": {"proto": n, "port": n, "flows": n}}},
                "rules": {"type": "array", "items": {"type": "object", "properties": {
                    "id": n, "name": {"type": ["string", "null"]}, "flows": n}}}}}}}},
    })
}

fn schemas() -> Value {
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message", "details"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object", "properties": {
                    "path": {"type": "string"}, "message": {"type": "string"}}}}}}}},
        "Document": {"type": "object", "description": "A bulkhead.policy/v1 document (see the policy crate)",
            "required": ["format"], "properties": {"format": {"const": "bulkhead.policy/v1"},
            "segments": {"type": "array", "items": {"$ref": "#/components/schemas/Segment"}},
            "services": {"type": "array", "items": {"$ref": "#/components/schemas/Service"}},
            "rules": {"type": "array", "items": {"$ref": "#/components/schemas/Rule"}},
            "settings": {"$ref": "#/components/schemas/Settings"}}},
        "Segment": {"type": "object", "required": ["name", "prefixes"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "prefixes": {"type": "array", "items": {"type": "string"}},
            "vlans": {"type": "array", "items": {"type": "integer"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "mode": {"enum": ["enforce", "monitor"]}}},
        "Service": {"type": "object", "required": ["name", "protocol"], "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "protocol": {"oneOf": [{"enum": ["tcp", "udp", "icmp", "icmpv6", "any"]}, {"type": "integer"}]},
            "ports": {"type": "array", "items": {"type": "string"}},
            "source_ports": {"type": "array", "items": {"type": "string"}},
            "icmp_type": {"type": "integer"}, "icmp_code": {"type": "integer"}}},
        "Rule": {"type": "object", "required": ["id", "name", "from", "to", "service", "action"], "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "description": {"type": "string"},
            "from": {}, "to": {}, "service": {"type": "string"},
            "action": {"enum": ["allow", "deny", "reject"]}, "log": {"type": "boolean"},
            "mode": {"enum": ["enforce", "monitor"]},
            "provenance": {"$ref": "#/components/schemas/Provenance"}}},
        "Provenance": {"type": "object", "required": ["source"], "properties": {
            "source": {"enum": ["suggested", "manual", "imported"]},
            "window": {"$ref": "#/components/schemas/Window"},
            "conversations": {"type": "integer"}, "flows": {"type": "integer"},
            "first_seen": {"type": "string"}, "last_seen": {"type": "string"},
            "created": {"type": "string"}, "note": {"type": "string"}}},
        "Window": {"type": "object", "properties": {
            "from": {"type": "string", "format": "date-time"}, "to": {"type": "string", "format": "date-time"}}},
        "SuggestRequest": {"type": "object", "properties": {
            "window": {"$ref": "#/components/schemas/Window"},
            "scope": {"type": "object", "properties": {
                "segments": {"type": "array", "items": {"type": "string"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "grouping": {"enum": ["hosts", "segments", "labels"]},
            "include_denied": {"type": "boolean"}}},
        "SuggestApply": {"type": "object", "required": ["proposal"], "properties": {
            "proposal": {"type": "object"},
            "rule_ids": {"type": "array", "items": {"type": "integer"}}}},
        "WhatIfRequest": {"type": "object", "properties": {
            "window": {"$ref": "#/components/schemas/Window"},
            "policy": {"$ref": "#/components/schemas/Document"},
            "limit": {"type": "integer", "minimum": 0, "maximum": 10000}}},
        "Settings": {"type": "object"},
        "Commit": {"type": "object", "properties": {"comment": {"type": "string"},
            "confirm_within_s": {"type": "integer", "minimum": 1, "maximum": 86400},
            "confirm": {"type": "boolean"}}},
        "Submission": {"type": "object", "properties": {"comment": {"type": "string"}}},
        "Withdrawal": {"type": "object", "properties": {"reason": {"type": "string"}}},
        "ScheduledCommit": {"type": "object", "required": ["at"], "properties": {
            "at": {"type": "string", "format": "date-time"}, "comment": {"type": "string"},
            "confirm_within_s": {"type": "integer", "minimum": 1, "maximum": 86400},
            "confirm": {"type": "boolean"}}},
        "Rollback": {"type": "object", "required": ["version"], "properties": {
            "version": {"type": "integer"}, "comment": {"type": "string"}}},
        "Flow": {"type": "object", "required": ["src", "dst", "protocol"], "properties": {
            "src": {"type": "string"}, "dst": {"type": "string"},
            "protocol": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "port": {"type": "integer"}, "source_port": {"type": "integer"},
            "icmp_type": {"type": "integer"}, "icmp_code": {"type": "integer"}, "vlan": {"type": "integer"},
            "gateway": {"type": "string"}}},
        "NewToken": {"type": "object", "required": ["identity", "role"], "properties": {
            "identity": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[!-~]+$"},
            "role": {"enum": ["viewer", "operator", "author", "approver", "admin"]},
            "description": {"type": "string", "maxLength": 200},
            "expires_at": {"type": "string", "format": "date-time"},
            "expires_in_s": {"type": "integer", "minimum": 1}}},
        "FlowFilter": {"type": "object", "properties": {
            "addr": {"type": "string"}, "src": {"type": "string"}, "dst": {"type": "string"},
            "port": {"type": "integer"}, "proto": {"type": "integer"}, "rule_id": {"type": "integer"},
            "gateway": {"type": "string"}, "all": {"type": "boolean"}}},
    })
}

pub fn document() -> Value {
    let rights: BTreeMap<String, Option<Right>> = crate::api::route_table()
        .into_iter()
        .map(|r| {
            (
                format!("{} {}", r.method.as_str().to_lowercase(), r.path),
                r.right,
            )
        })
        .collect();
    let mut paths = Map::new();
    for (method, path, summary, body, etag) in OPERATIONS {
        let id = format!("{method} {path}");
        let mut op = json!({
            "summary": summary,
            "operationId": id,
            "responses": {
                "200": {"description": "OK"},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        match rights.get(&id).copied().flatten() {
            Some(right) => {
                op["x-bulkhead-right"] = json!(right);
                let error = json!({"$ref": "#/components/schemas/Error"});
                op["responses"]["401"] = json!({"description": "No valid token (missing, unknown, expired or revoked)",
                    "content": {"application/json": {"schema": error}}});
                op["responses"]["403"] = json!({"description": format!("The caller's role lacks the `{right}` right"),
                    "content": {"application/json": {"schema": error}}});
                op["description"] = json!(format!(
                    "Needs the `{right}` right (roles: {}); 403 otherwise.",
                    Role::ALL
                        .iter()
                        .filter(|r| r.has(right))
                        .map(|r| r.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            None => op["security"] = json!([]),
        }
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        for (_, name, schema, description) in QUERY.iter().filter(|q| q.0.contains(&id.as_str())) {
            let schema: Value = serde_json::from_str(schema).expect("valid schema JSON");
            params.push(json!({"name": name, "in": "query", "required": false,
                "description": description, "schema": schema}));
        }
        if let Some(which) = etag {
            params.push(json!({"name": "If-Match", "in": "header", "required": true,
                "description": format!("The current {which} ETag (\"{which}-N\"); 428 when missing, 409 when stale"),
                "schema": {"type": "string"}}));
        }
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some((_, schema)) = ANSWERS.iter().find(|a| a.0 == *path) {
            op["responses"]["200"]["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
        }
        if let Some(schema) = body {
            op["requestBody"] = json!({"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}});
        }
        paths
            .entry(path.to_string())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("an object")
            .insert(method.to_string(), op);
    }
    let mut all_schemas = schemas();
    if let (Some(a), Value::Object(b)) = (all_schemas.as_object_mut(), answer_schemas()) {
        a.extend(b);
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Bulkhead control API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Policy lifecycle, explain, flows, audit, metrics and flow log of a Bulkhead gateway. See docs/api.md."},
        "servers": [{"url": "https://127.0.0.1:8180"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": all_schemas,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The document lists exactly the routes the router serves (the API's and the flow log's route tables, and
    /// the metrics router's `/metrics`), each with exactly the query parameters its route takes.
    #[test]
    fn documents_exactly_the_served_routes_and_their_parameters() {
        let served: BTreeMap<(String, String), BTreeSet<String>> = crate::api::route_table()
            .into_iter()
            .map(|r| {
                let names = r.query.iter().map(|n| n.to_string()).collect();
                ((r.method.as_str().to_lowercase(), r.path), names)
            })
            .collect();
        let doc = document();
        let mut documented = BTreeMap::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let names: BTreeSet<String> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().unwrap().to_string())
                    .collect();
                documented.insert((method.clone(), path.clone()), names);
            }
        }
        let missing: Vec<_> = served
            .keys()
            .filter(|k| !documented.contains_key(k))
            .collect();
        let extra: Vec<_> = documented
            .keys()
            .filter(|k| !served.contains_key(k))
            .collect();
        assert!(missing.is_empty(), "served but undocumented: {missing:?}");
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
        assert_eq!(
            documented.len(),
            OPERATIONS.len(),
            "no operation listed twice"
        );
        for (op, names) in &served {
            assert_eq!(&documented[op], names, "query parameters of {op:?}");
        }
        // Each operation names the right it needs; health alone needs none.
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let public = path == "/api/v1/health";
                assert_eq!(op["x-bulkhead-right"].is_null(), public, "{method} {path}");
            }
        }
    }
}
