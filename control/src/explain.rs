//! Explain: how a policy judges one flow, and which tracked connections a draft would cut.

use std::net::IpAddr;

use axum::http::StatusCode;
use policy::{proto, Decision, Flow, Policy};
use protocol::{FlowFilter, FlowInfo};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use std::sync::Arc;

use crate::error::ApiError;
use crate::gateway::{Gateway, Gateways};

/// The flow to explain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or a protocol number.
    pub protocol: ProtoSpec,
    /// Destination port (tcp/udp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Source port (tcp/udp); absent means an ephemeral one (it matters only for services with source_ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// ICMP type and code (default: echo request, code 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// 802.1Q VLAN id; absent for untagged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The gateway whose tracked connections are examined, or an HA pair (its active member's; default: every
    /// gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProtoSpec {
    Number(u8),
    Name(String),
}

pub fn parse_proto(s: &str) -> Option<u8> {
    match s {
        "tcp" => Some(proto::TCP),
        "udp" => Some(proto::UDP),
        "icmp" => Some(proto::ICMP),
        "icmpv6" => Some(proto::ICMPV6),
        n => n.parse().ok(),
    }
}

/// The source port a client would use when none is given: any ephemeral port.
const EPHEMERAL: u16 = 49152;

impl Request {
    pub fn flow(&self) -> Result<Flow, ApiError> {
        let invalid = |field: &str, msg: &str| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_flow",
                "the flow cannot be judged",
            )
            .detail(field, msg)
        };
        let p = match &self.protocol {
            ProtoSpec::Number(n) => *n,
            ProtoSpec::Name(s) => parse_proto(s)
                .ok_or_else(|| invalid("protocol", "expected tcp, udp, icmp, icmpv6 or 0..=255"))?,
        };
        if self.src.is_ipv4() != self.dst.is_ipv4() {
            return Err(invalid(
                "dst",
                "src and dst must be of the same address family",
            ));
        }
        if self.vlan.is_some_and(|v| v == 0 || v > 4094) {
            return Err(invalid("vlan", "must be in 1..=4094"));
        }
        let ported = p == proto::TCP || p == proto::UDP;
        let icmp = p == proto::ICMP || p == proto::ICMPV6;
        if !ported && (self.port.is_some() || self.source_port.is_some()) {
            return Err(invalid("port", "ports apply to tcp and udp only"));
        }
        if !icmp && (self.icmp_type.is_some() || self.icmp_code.is_some()) {
            return Err(invalid(
                "icmp_type",
                "icmp_type/icmp_code apply to icmp and icmpv6 only",
            ));
        }
        Ok(if ported {
            let dport = self
                .port
                .ok_or_else(|| invalid("port", "required for tcp and udp"))?;
            Flow::new(
                self.src,
                self.dst,
                self.vlan,
                p,
                self.source_port.unwrap_or(EPHEMERAL),
                dport,
            )
        } else if icmp {
            let echo = if p == proto::ICMP { 8 } else { 128 };
            Flow::icmp(
                self.src,
                self.dst,
                self.vlan,
                p == proto::ICMPV6,
                self.icmp_type.unwrap_or(echo),
                self.icmp_code.unwrap_or(0),
            )
        } else {
            Flow::other(self.src, self.dst, self.vlan, p)
        })
    }
}

fn names(p: &Policy, a: IpAddr, vlan: Option<u16>) -> Vec<String> {
    p.segments_of(a, vlan)
        .into_iter()
        .map(|s| s.name.clone())
        .collect()
}

/// Verdict, deciding rule or default, and segment membership of both ends.
pub fn judge(p: &Policy, flow: &Flow) -> Value {
    let d = p.evaluate(flow);
    let verdict = if d.would_deny() {
        "allow (monitor: would deny)"
    } else if d.passes() {
        "allow"
    } else {
        match d.action() {
            policy::Action::Reject => "reject",
            _ => "deny",
        }
    };
    let matched = match d {
        Decision::Rule {
            index,
            id,
            action,
            mode,
        } => {
            let r = &p.rules()[index];
            json!({"type": "rule", "id": id, "name": r.name, "position": index, "action": action, "mode": mode,
                   "tier": p.tier_name_of(index)})
        }
        Decision::Default { action, monitored } => {
            json!({"type": "default", "action": action, "monitored": monitored})
        }
        Decision::TierDefault { tier, monitored } => {
            json!({"type": "tier_default", "tier": p.tiers()[tier].name, "action": "deny", "monitored": monitored})
        }
    };
    json!({
        "verdict": verdict,
        "passes": d.passes(),
        "would_deny": d.would_deny(),
        "matched": matched,
        "src_segments": names(p, flow.src, flow.vlan),
        "dst_segments": names(p, flow.dst, flow.vlan),
    })
}

/// A tracked connection as the dataplane lists it, judged again in its original direction.
fn tracked_flow(f: &FlowInfo) -> Flow {
    let vlan = (f.vlan != 0).then_some(f.vlan);
    let (src, dst) = (f.src, f.dst);
    match f.proto {
        // Tracked ICMP connections are echo exchanges: the original direction is the request.
        proto::ICMP => Flow::icmp(src, dst, vlan, false, 8, 0),
        proto::ICMPV6 => Flow::icmp(src, dst, vlan, true, 128, 0),
        proto::TCP | proto::UDP => Flow::new(src, dst, vlan, f.proto, f.sport, f.dport),
        p => Flow::other(src, dst, vlan, p),
    }
}

/// Most connections examined for one explain request.
const SCAN_LIMIT: usize = 100_000;
/// Most cut connections listed in the answer (all are counted).
const LIST_LIMIT: usize = 1000;

/// Which currently tracked connections of `gateways` `draft` would cut if committed (asked of all at once); each
/// cut connection names its gateway, and `gateways` says what each one counted (or why it could not).
pub async fn connections_cut(gateways: &[Arc<Gateway>], draft: &Policy) -> Value {
    let all = FlowFilter::default();
    let listed = Gateways::each(gateways, |g| g.client.flows(&all, SCAN_LIMIT)).await;
    let keep = draft.settings().on_policy_change == policy::OnPolicyChange::Keep;
    let mut cut = Vec::new();
    let (mut count, mut tracked, mut truncated) = (0usize, 0usize, false);
    let mut per = serde_json::Map::new();
    let mut reached = 0;
    let mut last_error = None;
    for (g, listed) in gateways.iter().zip(listed) {
        let listed = match listed {
            Ok(v) => v,
            Err(e) => {
                let error = format!("tracked connections unavailable: {e}");
                per.insert(g.name().into(), json!({"error": error}));
                last_error = Some(error);
                continue;
            }
        };
        reached += 1;
        let mut here = 0usize;
        if !keep {
            for f in &listed.flows {
                let flow = tracked_flow(f);
                if !draft.evaluate(&flow).passes() {
                    here += 1;
                    if cut.len() < LIST_LIMIT {
                        let mut c = serde_json::to_value(f).unwrap_or_default();
                        c["gateway"] = json!(g.name());
                        c["draft"] = judge(draft, &flow);
                        cut.push(c);
                    }
                }
            }
        }
        count += here;
        tracked += listed.flows.len();
        truncated |= listed.truncated;
        per.insert(
            g.name().into(),
            json!({"tracked": listed.flows.len(), "would_cut": here, "scan_truncated": listed.truncated}),
        );
    }
    if reached == 0 {
        if let Some(error) = last_error {
            return json!({"error": error, "gateways": per});
        }
    }
    json!({
        "tracked": tracked,
        "scan_truncated": truncated,
        "on_policy_change": draft.settings().on_policy_change,
        "would_cut": count,
        "cut": cut,
        "list_truncated": count > cut.len(),
        "gateways": per,
    })
}
