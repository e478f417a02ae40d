//! Golden messages: every file in `fixtures/` is one line of the protocol as the dataplane and its clients
//! exchange it (pretty-printed). Each must decode into its type and encode back to exactly the same text, so
//! any change to the wire shows up as a changed fixture in review.

use std::path::PathBuf;

use protocol::{
    decode_reply, decode_request, encode_reply, encode_request, CountersReport, DiscardResult,
    ErrorCode, ErrorReply, EventBatch, EventKind, FlowFilter, FlowList, KillResult,
    LoadPolicyResult, PolicyState, PreparedPolicy, Request, ResyncResult, Role, RoleChange, Status,
    SyncState, Verdict,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("{name}.json"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A line as the fixtures show it: pretty-printed, a newline at the end.
fn pretty(line: &str) -> String {
    let value: Value = serde_json::from_str(line).unwrap();
    serde_json::to_string_pretty(&value).unwrap() + "\n"
}

/// Decodes the reply fixture `name` as `T`, checks it encodes back to the same text, returns it.
fn reply<T: DeserializeOwned + Serialize>(name: &str) -> Result<T, ErrorReply> {
    let text = fixture(name);
    let line = serde_json::to_string(&serde_json::from_str::<Value>(&text).unwrap()).unwrap();
    let answer = decode_reply::<T>(&line).unwrap_or_else(|e| panic!("{name}: {e}"));
    let id: Value = serde_json::from_str::<Value>(&line).unwrap()["id"].clone();
    assert_eq!(pretty(&encode_reply(&id, &answer)), text, "{name}");
    answer
}

fn request(name: &str) -> Request {
    let text = fixture(name);
    let line = serde_json::to_string(&serde_json::from_str::<Value>(&text).unwrap()).unwrap();
    let (id, request) = decode_request(&line);
    let request = request.unwrap_or_else(|e| panic!("{name}: {e}"));
    let id = (!id.is_null()).then_some(id);
    assert_eq!(
        pretty(&encode_request(id.as_ref(), &request)),
        text,
        "{name}"
    );
    request
}

#[test]
fn requests() {
    assert_eq!(request("request_status"), Request::Status {});
    assert_eq!(request("request_counters"), Request::Counters {});
    assert_eq!(request("request_get_policy"), Request::GetPolicy {});
    assert!(matches!(
        request("request_load_policy"),
        Request::LoadPolicy {
            version: Some(3),
            ..
        }
    ));
    assert_eq!(
        request("request_flows"),
        Request::Flows {
            filter: FlowFilter {
                port: Some(502),
                proto: Some(6),
                ..Default::default()
            },
            limit: Some(5)
        }
    );
    assert_eq!(
        request("request_kill_flows"),
        Request::KillFlows {
            filter: FlowFilter {
                addr: Some("10.99.0.1".parse().unwrap()),
                ..Default::default()
            }
        }
    );
    assert_eq!(
        request("request_events"),
        Request::Events { max: Some(10_000) }
    );
    assert!(matches!(
        request("request_prepare_policy"),
        Request::PreparePolicy { version: 4, .. }
    ));
    assert_eq!(
        request("request_publish_policy"),
        Request::PublishPolicy { version: 4 }
    );
    assert_eq!(
        request("request_discard_prepared"),
        Request::DiscardPrepared { version: 4 }
    );
    assert_eq!(
        request("request_set_role"),
        Request::SetRole { role: Role::Active }
    );
    assert_eq!(request("request_resync"), Request::Resync {});
}

#[test]
fn two_step_requests_need_a_version() {
    for op in ["prepare_policy", "publish_policy", "discard_prepared"] {
        let line = format!("{{\"v\":1,\"op\":\"{op}\",\"policy\":{{}}}}");
        let (_, request) = decode_request(&line);
        assert_eq!(request.unwrap_err().code, ErrorCode::BadRequest, "{op}");
    }
}

#[test]
fn status() {
    let s = reply::<Status>("status").unwrap();
    assert_eq!(
        (s.policy_version, s.rules, s.workers),
        (Some(3), 7, vec![1])
    );
    assert_eq!(s.prepared_version, None);
    assert_eq!(s.classifier.as_deref(), Some("avx2"));
    let s = reply::<Status>("status_before_policy").unwrap();
    assert_eq!((s.policy_version, s.policy_loaded_at), (None, None));
    assert_eq!(s.classifier, None);
    let s = reply::<Status>("status_prepared").unwrap();
    assert_eq!((s.policy_version, s.prepared_version), (Some(3), Some(4)));
    assert_eq!(s.remote_control.unwrap().handshake_failures, 3);
    assert_eq!(s.ha, None);
    let ha = reply::<Status>("status_ha").unwrap().ha.unwrap();
    assert_eq!(ha.role, Role::Active);
    assert_eq!(ha.links.len(), 2);
    assert_eq!(ha.sync.unwrap().state, SyncState::InSync);
    assert_eq!(ha.desired, Some(Role::Active));
    assert_eq!(ha.peer.unwrap().role, Role::Standby);
    assert_eq!(ha.heartbeats.unwrap().sent, 166);
    assert_eq!(reply::<ResyncResult>("resync").unwrap().workers, 1);
    assert_eq!(
        reply::<RoleChange>("set_role").unwrap(),
        RoleChange {
            role: Role::Active,
            previous: Role::Standby,
            effective: Some(Role::Active),
            held: None,
        }
    );
    // Told active, held standby by an active peer (the split-brain guard).
    assert_eq!(
        reply::<RoleChange>("set_role_held").unwrap(),
        RoleChange {
            role: Role::Active,
            previous: Role::Standby,
            effective: Some(Role::Standby),
            held: Some(protocol::Hold::PeerActive),
        }
    );
}

#[test]
fn counters() {
    let c = reply::<CountersReport>("counters").unwrap();
    assert_eq!(c.totals, protocol::WorkerSnapshot::sum(&c.workers));
    assert_eq!(c.totals.drops["policy_deny"], 1);
    assert_eq!(c.rules[0].name, "default");
    assert_eq!(c.ports.len(), 2);
    let c = reply::<CountersReport>("counters_before_policy").unwrap();
    assert!(c.rules.is_empty() && c.policy_version.is_none());
}

#[test]
fn policy() {
    let l = reply::<LoadPolicyResult>("load_policy").unwrap();
    assert_eq!((l.version, l.flat_rules.ipv4), (3, 7));
    let p = reply::<PolicyState>("get_policy").unwrap();
    assert_eq!(p.version, Some(3));
    assert_eq!(p.policy.unwrap()["format"], "bulkhead.policy/v1");
    let p = reply::<PolicyState>("get_policy_before_policy").unwrap();
    assert_eq!((p.version, p.policy), (None, None));
    let p = reply::<PreparedPolicy>("prepare_policy").unwrap();
    assert_eq!((p.version, p.flat_rules.ipv6), (4, 7));
    assert_eq!(
        reply::<DiscardResult>("discard_prepared").unwrap(),
        DiscardResult {
            version: 4,
            discarded: true
        }
    );
}

#[test]
fn flows_and_events() {
    let f = reply::<FlowList>("flows").unwrap();
    assert_eq!(
        (f.flows[0].dport, f.flows[0].state.as_str()),
        (8080, "syn_sent")
    );
    assert_eq!(reply::<KillResult>("kill_flows").unwrap().killed, 1);
    let e = reply::<EventBatch>("events").unwrap();
    assert_eq!(
        e.events
            .iter()
            .map(|e| (e.kind, e.verdict))
            .collect::<Vec<_>>(),
        [
            (EventKind::New, Verdict::Allow),
            (EventKind::Denied, Verdict::Deny)
        ]
    );
    assert_eq!(e.events[1].tcp_state, None);
    assert_eq!(
        (e.events[0].tcp_flags, e.events[1].tcp_flags),
        (Some([0x02, 0]), None)
    );
    // An event from a dataplane that predates `tcp_flags` still decodes.
    let mut older: Value = serde_json::from_str(&fixture("events")).unwrap();
    for ev in older["result"]["events"].as_array_mut().unwrap() {
        ev.as_object_mut().unwrap().remove("tcp_flags");
    }
    let line = serde_json::to_string(&older).unwrap();
    let e = decode_reply::<EventBatch>(&line).unwrap().unwrap();
    assert_eq!(e.events[0].tcp_flags, None);
}

#[test]
fn errors() {
    for (name, code) in [
        ("error_invalid_policy", ErrorCode::InvalidPolicy),
        ("error_unsupported_version", ErrorCode::UnsupportedVersion),
        ("error_bad_json", ErrorCode::BadJson),
        ("error_not_prepared", ErrorCode::NotPrepared),
        ("error_not_ha", ErrorCode::NotHa),
    ] {
        assert_eq!(reply::<Status>(name).unwrap_err().code, code, "{name}");
    }
}
