//! The policy document as written: plain data with serde derives, so the REST API can read, edit and write it.
//!
//! These types accept anything well-typed; [`crate::validate`] decides whether it makes sense. Keeping the two
//! apart lets the API hold (and report on) a draft that does not validate yet.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// The only document format this crate reads and writes.
pub const FORMAT_V1: &str = "bulkhead.policy/v1";

/// The name of the built-in service that matches every protocol and port.
pub const ANY_SERVICE: &str = "any";

/// IP protocol numbers the policy gives names to.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// A whole policy document. `segments`, `services` and `rules` may be omitted (empty): such a document just
/// applies the default action to everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub format: Format,
    #[serde(default)]
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub services: Vec<Service>,
    #[serde(default)]
    pub rules: Vec<Rule>,
    #[serde(default)]
    pub settings: Settings,
}

impl Default for Document {
    fn default() -> Self {
        Document {
            format: Format::V1,
            segments: Vec::new(),
            services: Vec::new(),
            rules: Vec::new(),
            settings: Settings::default(),
        }
    }
}

/// The document's `format` tag; versioned so that a later format is refused rather than misread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Format {
    #[default]
    #[serde(rename = "bulkhead.policy/v1")]
    V1,
}

/// A named set of addresses (optionally restricted to VLANs) that rules refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// CIDR prefixes, either family. Host bits must be zero (checked by validation, not here, so that the
    /// error can suggest the intended prefix).
    #[serde(deserialize_with = "de_prefixes", serialize_with = "ser_prefixes")]
    pub prefixes: Vec<IpNet>,
    /// When present, only frames tagged with one of these VLAN ids are in the segment (untagged ones are not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlans: Option<Vec<u16>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "de_labels"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub mode: Mode,
}

/// A protocol plus optional port or ICMP constraints, referred to by name from rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub protocol: Protocol,
    /// Destination ports (tcp/udp only); absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortRange>>,
    /// Source ports (tcp/udp only); absent means every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ports: Option<Vec<PortRange>>,
    /// ICMP type (icmp/icmpv6 only); absent means every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code (only together with `icmp_type`); absent means every code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
}

/// One ordered policy rule; the first rule that matches a flow decides it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable identity across edits (counters and logs refer to it), unlike the rule's position.
    pub id: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub from: Selector,
    pub to: Selector,
    /// A service name, or `"any"`.
    pub service: String,
    pub action: Action,
    #[serde(default)]
    pub log: bool,
    #[serde(default)]
    pub mode: Mode,
    /// Where the rule came from (e.g. suggested from observed traffic), kept so a reviewer can see later why it
    /// exists. Documentation only: it never changes a verdict, and compilation ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// A rule's origin. Every field but `source` is optional; times are RFC 3339 text as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    pub source: ProvenanceSource,
    /// The window of observed traffic the rule was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeWindow>,
    /// Conversations (distinct source, destination, protocol, port) the rule covered when it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<u64>,
    /// Flows those conversations carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// When the rule was proposed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// How a rule came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvenanceSource {
    /// Proposed from observed conversations by control's rule suggestion.
    Suggested,
    /// Written by a person (the default meaning of a rule without provenance).
    Manual,
    /// Brought in from another system.
    Imported,
}

/// A time interval, RFC 3339 text, `from` inclusive and `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    pub from: String,
    pub to: String,
}

/// Which addresses one side of a rule covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every address (`"any"`).
    Any,
    /// The members of one segment (`{"segment": NAME}`).
    Segment(String),
    /// The members of every segment whose labels include all these pairs (`{"labels": {...}}`).
    Labels(BTreeMap<String, String>),
    /// Every address in a prefix, whatever the VLAN (`{"prefix": CIDR}`).
    Prefix(IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    /// Drop silently.
    Deny,
    /// Drop and tell the sender (TCP RST / ICMP unreachable), so clients fail fast instead of timing out.
    Reject,
}

/// `monitor` lets traffic through that would be denied and counts it: a way to roll a policy out safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Monitor,
}

/// A service's protocol. Numbers are kept as written (`6` stays `6`), but mean the same as their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Every protocol.
    Any,
    Number(u8),
}

impl Protocol {
    /// The IP protocol number, `None` for [`Protocol::Any`].
    pub fn number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(proto::TCP),
            Protocol::Udp => Some(proto::UDP),
            Protocol::Icmp => Some(proto::ICMP),
            Protocol::Icmpv6 => Some(proto::ICMPV6),
            Protocol::Any => None,
            Protocol::Number(n) => Some(n),
        }
    }

    /// Whether `ports`/`source_ports` make sense (tcp or udp, by name or number).
    pub fn has_ports(self) -> bool {
        matches!(self.number(), Some(proto::TCP | proto::UDP))
    }

    /// Whether `icmp_type`/`icmp_code` make sense (icmp or icmpv6, by name or number).
    pub fn has_icmp(self) -> bool {
        matches!(self.number(), Some(proto::ICMP | proto::ICMPV6))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::Any => f.write_str("any"),
            Protocol::Number(n) => write!(f, "protocol {n}"),
        }
    }
}

/// An inclusive port range, written `"N"` or `"LO-HI"` (a bare JSON number is accepted too).
///
/// Any `u16` pair parses; validation rejects port 0 and reversed ranges so that all such mistakes are
/// reported together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    pub fn single(port: u16) -> Self {
        PortRange { lo: port, hi: port }
    }

    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// Global behaviour; every field has a default so a document may omit `settings` entirely.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// What happens to a flow no rule matches. Least privilege means `deny`.
    pub default_action: Action,
    pub tcp_strictness: TcpStrictness,
    pub timeouts: Timeouts,
    pub on_policy_change: OnPolicyChange,
    /// Let ARP through so hosts on either side can still resolve each other.
    pub pass_arp: bool,
    /// Let IPv6 neighbor discovery through, for the same reason.
    pub pass_neighbor_discovery: bool,
    /// Drop ethertypes other than IPv4, IPv6 (and ARP when passed): they cannot be policed.
    pub drop_other_ethertypes: bool,
    /// Limits on new connections that keep floods and scans from crowding out the connections that matter.
    /// Left out of the document when all are off, so documents that do not use them read as before.
    #[serde(skip_serializing_if = "FloodLimits::is_off")]
    pub flood_limits: FloodLimits,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_action: Action::Deny,
            tcp_strictness: TcpStrictness::Strict,
            timeouts: Timeouts::default(),
            on_policy_change: OnPolicyChange::Reevaluate,
            pass_arp: true,
            pass_neighbor_discovery: true,
            drop_other_ethertypes: true,
            flood_limits: FloodLimits::default(),
        }
    }
}

/// Limits on new connections, each enforced by every worker over the connections it tracks (a source's flows
/// are spread over workers by RSS); 0 turns a limit off, which is the default. A new flow over a limit is
/// dropped, counted under its limit and reported by a denied flow event naming it; established connections are
/// never touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FloodLimits {
    /// Most half-open TCP connections (SYN seen, handshake not completed) one source — an IPv4 address, an IPv6
    /// /64 — may hold, at most [`FloodLimits::MAX_HALF_OPEN_PER_SOURCE`].
    pub half_open_per_source: u32,
    /// Most new connections one source may open per second (whole seconds of the worker's clock).
    pub new_per_second_per_source: u32,
    /// Most connections opened from one segment (the most specific segment holding the source address; sources
    /// in no segment are not counted), so one segment cannot take the whole connection table.
    pub connections_per_segment: u32,
}

impl FloodLimits {
    /// Largest `half_open_per_source`: the dataplane keeps that many half-open connections per source in a
    /// table allocated at start.
    pub const MAX_HALF_OPEN_PER_SOURCE: u32 = 64;

    /// Whether every limit is off.
    pub fn is_off(&self) -> bool {
        *self == FloodLimits::default()
    }
}

/// How closely connection tracking follows the TCP state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TcpStrictness {
    /// A connection starts with a SYN; mid-stream packets of unknown connections are dropped.
    #[default]
    Strict,
    /// Mid-stream pickup is allowed (useful right after a gateway restart).
    Loose,
}

/// What a new policy means for connections that already exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnPolicyChange {
    /// Existing connections are judged again by the new policy at their next packet.
    #[default]
    Reevaluate,
    /// Existing connections stay allowed until they end.
    Keep,
}

/// Connection-tracking idle timeouts, in seconds (each at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub tcp_syn: u32,
    pub tcp_established: u32,
    pub tcp_fin: u32,
    pub tcp_time_wait: u32,
    pub tcp_close: u32,
    pub udp: u32,
    /// A UDP flow that has seen traffic both ways.
    pub udp_stream: u32,
    pub icmp: u32,
    pub other: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: 30,
            tcp_established: 7440,
            tcp_fin: 120,
            tcp_time_wait: 120,
            tcp_close: 10,
            udp: 60,
            udp_stream: 180,
            icmp: 30,
            other: 60,
        }
    }
}

impl Timeouts {
    /// `(field name, value)` pairs, so validation can name the offending field.
    pub fn fields(&self) -> [(&'static str, u32); 9] {
        [
            ("tcp_syn", self.tcp_syn),
            ("tcp_established", self.tcp_established),
            ("tcp_fin", self.tcp_fin),
            ("tcp_time_wait", self.tcp_time_wait),
            ("tcp_close", self.tcp_close),
            ("udp", self.udp),
            ("udp_stream", self.udp_stream),
            ("icmp", self.icmp),
            ("other", self.other),
        ]
    }
}

// ---- serde by hand, where the derive would give poor errors or the wrong shape ----

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Protocol::Number(n) => s.serialize_u8(*n),
            named => s.collect_str(named),
        }
    }
}

const PROTOCOL_EXPECTED: &str =
    r#""tcp", "udp", "icmp", "icmpv6", "any" or a protocol number 0..=255"#;

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PROTOCOL_EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                Ok(match v {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    "icmp" => Protocol::Icmp,
                    "icmpv6" => Protocol::Icmpv6,
                    "any" => Protocol::Any,
                    _ => {
                        return Err(E::custom(format!(
                            "unknown protocol {v:?}, expected {PROTOCOL_EXPECTED}"
                        )))
                    }
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Protocol, E> {
                u8::try_from(v)
                    .map(Protocol::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} out of range 0..=255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Protocol, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("protocol number {v} out of range 0..=255")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a port "N" or a port range "LO-HI""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                let port = |s: &str| -> Result<u16, E> {
                    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(E::custom(format!(
                            r#"{v:?} is not a port or port range; write "N" or "LO-HI", e.g. "502" or "8080-8081""#
                        )));
                    }
                    s.parse::<u16>().map_err(|_| {
                        let inside = if s == v {
                            String::new()
                        } else {
                            format!(" in {v:?}")
                        };
                        E::custom(format!("port {s}{inside} is out of range 1..=65535"))
                    })
                };
                match v.split_once('-') {
                    None => port(v).map(PortRange::single),
                    Some((lo, hi)) => Ok(PortRange {
                        lo: port(lo)?,
                        hi: port(hi)?,
                    }),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| E::custom(format!("port {v} is out of range 1..=65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("port {v} is out of range 1..=65535")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A CIDR prefix with an error message that says what to write instead.
struct Cidr(IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 or IPv6 prefix in CIDR notation")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
                if let Ok(net) = v.parse::<IpNet>() {
                    // ipnet reads "010.0.0.0/8" as 10.0.0.0/8, the standard library (and so explain) refuses it,
                    // and inet_aton-style tools read 010 as octal 8: refuse it here too.
                    let addr = v.split_once('/').map_or(v, |(addr, _)| addr);
                    if addr.parse::<std::net::IpAddr>().is_err() {
                        return Err(E::custom(format!(
                            "{v:?}: an address with leading zeros is ambiguous (some tools read 010 as octal 8); write \"{net}\""
                        )));
                    }
                    return Ok(Cidr(net));
                }
                if let Ok(addr) = v.parse::<std::net::IpAddr>() {
                    let len = if addr.is_ipv4() { 32 } else { 128 };
                    return Err(E::custom(format!(
                        "{v:?} has no prefix length; for this one host write \"{addr}/{len}\""
                    )));
                }
                Err(E::custom(format!(
                    "{v:?} is not an IPv4 or IPv6 prefix in CIDR notation (e.g. \"10.0.0.0/8\", \"fd00::/64\")"
                )))
            }
        }
        d.deserialize_str(V)
    }
}

fn de_prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Vec::<Cidr>::deserialize(d)?
        .into_iter()
        .map(|c| c.0)
        .collect())
}

fn ser_prefixes<S: Serializer>(prefixes: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(prefixes.iter().map(ToString::to_string))
}

/// Labels as a map that refuses a repeated key: JSON parsers would otherwise keep the last one silently.
fn de_labels<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of string labels")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                let value: String = map.next_value()?;
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("duplicate label {key:?}")));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(V)
}

const SELECTOR_KEYS: &[&str] = &["segment", "labels", "prefix"];

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selector::Any => s.serialize_str("any"),
            Selector::Segment(name) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("segment", name)?;
                m.end()
            }
            Selector::Labels(labels) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("labels", labels)?;
                m.end()
            }
            Selector::Prefix(net) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("prefix", &net.to_string())?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Selector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#""any" or an object with one of "segment", "labels", "prefix""#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Selector, E> {
                if v == "any" {
                    Ok(Selector::Any)
                } else {
                    Err(E::custom(format!(
                        r#"{v:?} is not a selector: write "any", {{"segment": {v:?}}}, {{"labels": {{...}}}} or {{"prefix": "CIDR"}}"#
                    )))
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Selector, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom(
                        r#"empty selector: write "any" or an object with one of "segment", "labels", "prefix""#,
                    ));
                };
                let selector = match key.as_str() {
                    "segment" => Selector::Segment(map.next_value()?),
                    "labels" => Selector::Labels(map.next_value_seed(LabelsSeed)?),
                    "prefix" => Selector::Prefix(map.next_value::<Cidr>()?.0),
                    other => return Err(de::Error::unknown_field(other, SELECTOR_KEYS)),
                };
                if let Some(extra) = map.next_key::<String>()? {
                    return Err(de::Error::custom(format!(
                        "a selector takes exactly one of \"segment\", \"labels\", \"prefix\"; {extra:?} comes after {key:?}"
                    )));
                }
                Ok(selector)
            }
        }
        d.deserialize_any(V)
    }
}

struct LabelsSeed;

impl<'de> de::DeserializeSeed<'de> for LabelsSeed {
    type Value = BTreeMap<String, String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        de_labels(d)
    }
}
