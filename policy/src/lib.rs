//! Bulkhead's policy model, shared by the dataplane, the control process and the traffic generator: the JSON
//! document ([`Document`]), its validation ([`validate()`], [`Policy::new`]), the reference evaluation
//! ([`Policy::evaluate`]) and the compilation to flat 5-tuple rules for the classifier ([`Policy::compile`]).
//!
//! # The document
//!
//! ```json
//! {
//!   "format": "bulkhead.policy/v1",
//!   "segments": [{"name": "ot-legacy", "prefixes": ["10.99.0.2/32", "fd00:99::2/128"],
//!                 "vlans": [20], "labels": {"zone": "ot"}, "mode": "enforce"}],
//!   "services": [{"name": "modbus", "protocol": "tcp", "ports": ["502"]},
//!                {"name": "ping", "protocol": "icmp", "icmp_type": 8}],
//!   "rules": [{"id": 10, "name": "eng-to-plc", "from": {"segment": "engineering"},
//!              "to": {"labels": {"zone": "ot"}}, "service": "modbus", "action": "allow"}],
//!   "settings": {"default_action": "deny"}
//! }
//! ```
//!
//! Loading ([`Policy::from_json`]) reports a syntax error with its line and column, a type error (wrong type,
//! unknown field, unknown variant) with the JSON path of the value, and semantic problems (unknown names,
//! duplicates, host bits, bad ranges, ...) all at once, each as a [`ValidationError`] `path: message`.
//!
//! A rule may carry `provenance` — where it came from, e.g. `{"source": "suggested", "window": {"from": ...,
//! "to": ...}, "conversations": 12, "flows": 340, "first_seen": ..., "last_seen": ..., "created": ...,
//! "note": ...}` — which is documentation only: it never changes a verdict and compilation ignores it.
//!
//! # Compatibility
//!
//! The format tag names what a reader must understand to enforce a document. A new *optional* field that never
//! changes a verdict (such as `provenance`) keeps `bulkhead.policy/v1`; a field that changes what a document
//! allows, or a changed meaning, needs a new tag, so that an older reader refuses the document instead of
//! misreading it (every object refuses unknown fields). A reader older than an optional field refuses a document
//! that uses it as an unknown field — nothing is misread — so readers (the dataplane) are upgraded before writers
//! (control) use it.
//!
//! # Semantics
//!
//! These are exactly what [`Policy::evaluate`] does; the first match over [`Compiled`] gives the same decision
//! for every flow.
//!
//! * **Flow.** A [`Flow`] is `(src, dst, vlan, proto, sport, dport)`; `vlan` is `None` for untagged frames. For
//!   ICMP (protocol 1) and ICMPv6 (58), `sport` carries the ICMP type and `dport` the code ([`Flow::icmp`]).
//! * **Segment membership.** An address is in a segment when one of the segment's prefixes contains it and, if
//!   the segment lists `vlans`, the frame's VLAN id is one of them — untagged traffic is never in a segment
//!   that lists VLANs. Segments may overlap: an address can be in several ([`Policy::segments_of`]).
//! * **Selectors.** `"any"` matches every address. `{"segment": S}` matches the members of S.
//!   `{"labels": L}` matches the members of every segment whose labels include all pairs of L.
//!   `{"prefix": P}` matches every address in P, whatever the VLAN. A prefix never contains an address of the
//!   other family, so a rule between families simply never matches (it is not an error).
//! * **Services.** `"any"` (built in) matches every flow, whatever the protocol. A user service matches when
//!   the flow's protocol is the service's (protocol `any`: every protocol), `dport` is in one of `ports`,
//!   `sport` in one of `source_ports`, `sport` equals `icmp_type` and `dport` equals `icmp_code`; each
//!   constraint that is absent matches every value (port 0 included).
//! * **Rules.** Rules are ordered; the first rule whose `from` matches src, whose `to` matches dst (both with
//!   the flow's VLAN) and whose service matches the flow decides: [`Decision::Rule`]. The rule's own `mode`
//!   governs it: in `enforce` its action applies; in `monitor` a deny or reject lets the packet pass and
//!   counts it as would-deny (a monitor-mode allow is an allow). Segment modes do not change the decision of a
//!   matching rule.
//! * **Default.** When no rule matches, `settings.default_action` applies: [`Decision::Default`]. If that
//!   action is deny or reject and src or dst is in a segment whose mode is `monitor`, the default is
//!   *monitored*: the packet passes and counts as would-deny.
//! * **Verdict.** [`Decision::passes`] is true for an allow and for a monitored deny/reject (by a
//!   monitor-mode rule or a monitored default); [`Decision::would_deny`] is true for the latter only.
//! * **Mixed families.** A flow whose src and dst are of different families cannot come from a packet; it
//!   matches no rule and is never monitored: the plain default applies.
//!
//! # Flood limits
//!
//! `settings.flood_limits` ([`FloodLimits`]) bounds what a source (an IPv4 address, an IPv6 /64) or a segment
//! may take of a gateway that legacy segments share, without touching the connections that matter:
//! `half_open_per_source` (TCP connections whose handshake has not completed, at most 64),
//! `new_per_second_per_source` (new connections in each whole second) and `connections_per_segment` (connections
//! opened from a segment: the most specific one holding the source address with the frame's VLAN; sources in no
//! segment are not counted). 0 turns a limit off, the default; the object is left out of a document that sets
//! none, so such documents read and serialize as before. Limits apply to new connections the rules allow, never
//! to packets of tracked connections, each enforced by every dataplane worker over the connections it tracks. An
//! older reader refuses a document that sets them as an unknown field, so nothing is misread (see
//! Compatibility).
//!
//! ```json
//! "settings": {"flood_limits": {"half_open_per_source": 16, "new_per_second_per_source": 200,
//!                               "connections_per_segment": 20000}}
//! ```
//!
//! # Compilation
//!
//! [`Policy::compile`] expands each rule into [`FlatRule`]s — from-side prefixes × to-side prefixes × VLAN
//! conditions × service ranges, `any` being `0.0.0.0/0` and `::/0` — in rule order, then appends, for every
//! monitor-mode segment S (when the default action is not allow), "src in S" and "dst in S" flat rules that
//! stand for the monitored default. See the [`compile`] module for the details and reductions.
#![forbid(unsafe_code)]

pub mod compile;
mod error;
mod eval;
pub mod json;
mod model;
mod policy;
pub mod validate;

pub use compile::{
    first_match, CompileError, CompileStats, Compiled, FlatRule, Prefix, RuleInfo, RuleRef,
    RuleStats, ShadowReason, Shadowed, FULL_RANGE,
};
pub use error::{PolicyError, ValidationError};
pub use eval::{Decision, Flow};
pub use model::{
    proto, Action, Document, FloodLimits, Format, Mode, OnPolicyChange, PortRange, Protocol,
    Provenance, ProvenanceSource, Rule, Segment, Selector, Service, Settings, TcpStrictness,
    TimeWindow, Timeouts, ANY_SERVICE, FORMAT_V1,
};
pub use policy::Policy;
pub use validate::{limits, validate};

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
