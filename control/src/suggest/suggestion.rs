//! Least-privilege allow rules proposed from observed conversations.
//!
//! Only conversations the draft leaves to its default action get a rule: what a draft rule already allows
//! needs none, and what a draft rule denies was decided on purpose (the suggestion never overrides it). The
//! proposed rules are appended after the draft's, so they change nothing a draft rule decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use policy::{
    proto, Action, Decision, Document, IpNet, Mode, Policy, PolicyError, PortRange, Protocol,
    Provenance, ProvenanceSource, Rule, Selector, Service, TimeWindow,
};
use protocol::Verdict;
use serde::Serialize;

use super::{index, Seen, Tuple, Window};
use crate::history::Conversation;
use crate::time::{from_unix_ms, rfc3339};

/// Which conversations to consider: those with an end in the scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// Members of any of these segments.
    Segments(Vec<String>),
    /// Members of a segment whose labels include all these pairs.
    Labels(BTreeMap<String, String>),
}

/// How widely proposed rules may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Host to host (/32, /128): exactly what was seen.
    Hosts,
    /// Segment to segment where every seen host of both behaves alike, host to host elsewhere.
    Segments,
    /// As `Segments`, with the segments' labels as selectors.
    Labels,
}

#[derive(Debug, Clone)]
pub struct SuggestOptions {
    pub scope: Scope,
    pub grouping: Grouping,
    /// Also propose rules for conversations that were denied (not only allowed and would-deny ones).
    pub include_denied: bool,
    /// The window the conversations come from, and the time of the suggestion (provenance).
    pub window: Window,
    pub now_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SuggestError {
    #[error("unknown segment {0:?} in the scope")]
    UnknownSegment(String),
    /// The draft plus the proposal does not validate (e.g. past a size limit).
    #[error("the draft with the suggestion is not a valid policy: {0}")]
    Invalid(#[from] PolicyError),
}

/// One proposed rule, with what it covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SuggestedRule {
    pub rule: Rule,
    /// Distinct tuples (source, destination, VLAN, protocol, port) and what they add up to.
    pub conversations: u64,
    #[serde(flatten)]
    pub seen: Seen,
}

/// Share of the observed conversations (distinct tuples) and of their flows that a policy allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Coverage {
    pub conversations: u64,
    pub conversations_allowed: u64,
    pub flows: u64,
    pub flows_allowed: u64,
    /// Both as fractions (1 when nothing was observed).
    pub conversation_share: f64,
    pub flow_share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    pub rules: Vec<SuggestedRule>,
    /// New services the rules use (an existing one is reused whenever it matches exactly).
    pub services: Vec<Service>,
    /// Observed conversations an explicit draft rule denies: left alone.
    pub left_to_draft_rules: u64,
    /// Coverage by the draft alone, and by the draft plus the suggestion.
    pub coverage_before: Coverage,
    pub coverage_after: Coverage,
}

/// One side of a proposed rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Group {
    Host(IpAddr),
    Segment(String),
    Labels(BTreeMap<String, String>),
}

impl Group {
    fn selector(&self) -> Selector {
        match self {
            Group::Host(a) => Selector::Prefix(IpNet::from(*a)),
            Group::Segment(s) => Selector::Segment(s.clone()),
            Group::Labels(l) => Selector::Labels(l.clone()),
        }
    }

    /// For names: only the characters names allow.
    fn label(&self) -> String {
        let text = match self {
            Group::Host(a) => a.to_string(),
            Group::Segment(s) => s.clone(),
            Group::Labels(l) => l
                .iter()
                .map(|(k, v)| format!("{k}.{v}"))
                .collect::<Vec<_>>()
                .join("."),
        };
        text.replace(':', "_")
    }

    fn describe(&self) -> String {
        match self {
            Group::Host(a) => format!("host {a}"),
            Group::Segment(s) => format!("segment {s}"),
            Group::Labels(l) => format!("labels {}", serde_json::to_string(l).unwrap_or_default()),
        }
    }
}

/// Proposes allow rules for the observed conversations `draft` leaves to its default action.
pub fn suggest(
    conversations: &[Conversation],
    draft: &Policy,
    options: &SuggestOptions,
) -> Result<Suggestion, SuggestError> {
    if let Scope::Segments(names) = &options.scope {
        if let Some(unknown) = names.iter().find(|n| draft.segment(n).is_none()) {
            return Err(SuggestError::UnknownSegment(unknown.clone()));
        }
    }
    let observed = index(conversations, |c| {
        let wanted = match c.key.verdict {
            Verdict::Allow | Verdict::WouldDeny => true,
            Verdict::Deny | Verdict::Reject => options.include_denied,
        };
        wanted.then(|| Tuple::of(&c.key))
    });
    let mut tuples: Vec<(Tuple, Seen)> = observed
        .into_iter()
        .filter(|(t, _)| in_scope(draft, &options.scope, t))
        .collect();
    tuples.sort_unstable_by_key(|(t, _)| *t);

    // The tuples only the default decides, and the seen hosts of each group (for "behaves alike").
    let mut uncovered: Vec<(Tuple, Seen, Group, Group)> = Vec::new();
    let mut before = Coverage::default();
    let mut left_to_draft_rules = 0;
    let mut members: HashMap<Group, BTreeSet<IpAddr>> = HashMap::new();
    for (t, seen) in &tuples {
        let vlan = (t.vlan != 0).then_some(t.vlan);
        let from = group_of(draft, options.grouping, t.src, vlan);
        let to = group_of(draft, options.grouping, t.dst, vlan);
        members.entry(from.clone()).or_default().insert(t.src);
        members.entry(to.clone()).or_default().insert(t.dst);
        let decision = draft.evaluate(&t.flow());
        before.count(seen, super::whatif::verdict(&decision) == Verdict::Allow);
        match decision {
            Decision::Rule {
                action: Action::Allow,
                ..
            }
            | Decision::Default {
                action: Action::Allow,
                ..
            } => {}
            // A tier's deny default is the draft's own decision, like a deny rule.
            Decision::Rule { .. } | Decision::TierDefault { .. } => left_to_draft_rules += 1,
            Decision::Default { .. } => uncovered.push((*t, *seen, from, to)),
        }
    }

    // Services by (protocol, port): an existing exact one, or a new one.
    let mut services = Services::new(draft);
    // Candidate rules between groups, with the host pairs they were seen between.
    type Pairs = BTreeMap<(IpAddr, IpAddr), (Tuple, Seen)>;
    let mut candidates: BTreeMap<(Group, Group, String), Pairs> = BTreeMap::new();
    for (t, seen, from, to) in &uncovered {
        let service = services.for_tuple(t);
        candidates
            .entry((from.clone(), to.clone(), service))
            .or_default()
            .insert((t.src, t.dst), (*t, *seen));
    }
    let mut proposed: BTreeMap<(Group, Group, String), Vec<(Tuple, Seen)>> = BTreeMap::new();
    for ((from, to, service), pairs) in candidates {
        let alike = match (&from, &to) {
            (Group::Host(_), Group::Host(_)) => true,
            _ => behaves_alike(&pairs, &members[&from], &members[&to]),
        };
        if alike {
            proposed.insert((from, to, service), pairs.into_values().collect());
        } else {
            for ((src, dst), covered) in pairs {
                proposed
                    .entry((Group::Host(src), Group::Host(dst), service.clone()))
                    .or_default()
                    .push(covered);
            }
        }
    }

    let mut next_id = draft.rules().iter().map(|r| r.id).max().unwrap_or(0);
    let window = TimeWindow {
        from: rfc3339(from_unix_ms(options.window.from_unix_ms)),
        to: rfc3339(from_unix_ms(options.window.to_unix_ms)),
    };
    let created = rfc3339(from_unix_ms(options.now_unix_ms));
    let mut names: BTreeSet<String> = draft.rules().iter().map(|r| r.name.clone()).collect();
    let mut rules = Vec::new();
    let mut covers = Vec::new();
    for ((from, to, service), covered) in proposed {
        next_id += 1;
        let mut seen = covered[0].1;
        for (_, s) in &covered[1..] {
            seen.add(s);
        }
        let first_seen = rfc3339(from_unix_ms(seen.first_unix_ms));
        let last_seen = rfc3339(from_unix_ms(seen.last_unix_ms));
        let description = format!(
            "Suggested from traffic seen between {} and {}: {} to {} on {service}, {} conversation(s), {} flow(s), first seen {first_seen}, last seen {last_seen}.",
            window.from,
            window.to,
            from.describe(),
            to.describe(),
            covered.len(),
            seen.flows,
        );
        let rule = Rule {
            id: next_id,
            name: unique_name(
                &mut names,
                &format!("s{next_id}-{}-{}-{service}", from.label(), to.label()),
            ),
            description: Some(description),
            from: from.selector(),
            to: to.selector(),
            service,
            action: Action::Allow,
            log: false,
            mode: Mode::Enforce,
            provenance: Some(Provenance {
                source: ProvenanceSource::Suggested,
                window: Some(window.clone()),
                conversations: Some(covered.len() as u64),
                flows: Some(seen.flows),
                first_seen: Some(first_seen),
                last_seen: Some(last_seen),
                created: Some(created.clone()),
                note: None,
            }),
        };
        rules.push(SuggestedRule {
            rule,
            conversations: covered.len() as u64,
            seen,
        });
        covers.push(covered);
    }

    let after = Policy::new(with_suggestion(
        draft.document(),
        &services.new,
        rules.iter().map(|r| r.rule.clone()),
    ))?;
    // The proposed rules come after every draft rule, and all allow: a tuple a draft rule decides keeps its
    // verdict, and one the draft leaves to its default is allowed exactly when a proposed rule matches it —
    // checked on the rule made for it, with the evaluator's own selector and service matching.
    let mut coverage_after = before;
    for (rule, covered) in rules.iter().zip(&covers) {
        for (t, seen) in covered {
            let flow = t.flow();
            let matched = after.selector_matches(&rule.rule.from, t.src, flow.vlan)
                && after.selector_matches(&rule.rule.to, t.dst, flow.vlan)
                && after.service_matches(&rule.rule.service, &flow);
            if matched {
                coverage_after.conversations_allowed += 1;
                coverage_after.flows_allowed += seen.flows;
            }
        }
    }
    let (coverage_before, coverage_after) = (before.shared(), coverage_after.shared());
    Ok(Suggestion {
        rules,
        services: services.new,
        left_to_draft_rules,
        coverage_before,
        coverage_after,
    })
}

/// `draft` with the new services and rules appended (rules after the draft's own).
pub fn with_suggestion(
    draft: &Document,
    services: &[Service],
    rules: impl IntoIterator<Item = Rule>,
) -> Document {
    let mut doc = draft.clone();
    doc.services.extend(services.iter().cloned());
    doc.rules.extend(rules);
    doc
}

fn in_scope(policy: &Policy, scope: &Scope, t: &Tuple) -> bool {
    let vlan = (t.vlan != 0).then_some(t.vlan);
    let selected = |addr| match scope {
        Scope::All => true,
        Scope::Segments(names) => names
            .iter()
            .any(|n| policy.selector_matches(&Selector::Segment(n.clone()), addr, vlan)),
        Scope::Labels(labels) => {
            policy.selector_matches(&Selector::Labels(labels.clone()), addr, vlan)
        }
    };
    selected(t.src) || selected(t.dst)
}

/// The group an address falls in: its first segment (in document order) under `Segments`, that segment's
/// labels under `Labels` (its name when it has none), the host itself otherwise or when in no segment.
fn group_of(policy: &Policy, grouping: Grouping, addr: IpAddr, vlan: Option<u16>) -> Group {
    let segment = match grouping {
        Grouping::Hosts => None,
        Grouping::Segments | Grouping::Labels => policy.segments_of(addr, vlan).first().copied(),
    };
    match (grouping, segment) {
        (Grouping::Labels, Some(s)) if !s.labels.is_empty() => Group::Labels(s.labels.clone()),
        (_, Some(s)) => Group::Segment(s.name.clone()),
        (_, None) => Group::Host(addr),
    }
}

/// Whether every seen host of `from` reached every seen host of `to` (itself excepted): then a rule between
/// the groups allows no pair of seen hosts that did not talk. Every pair's ends are seen hosts of the groups, so
/// it is a matter of counting.
fn behaves_alike<V>(
    pairs: &BTreeMap<(IpAddr, IpAddr), V>,
    from: &BTreeSet<IpAddr>,
    to: &BTreeSet<IpAddr>,
) -> bool {
    let both = from.intersection(to).count();
    let talked = pairs.keys().filter(|(s, d)| s != d).count();
    talked == from.len() * to.len() - both
}

fn unique_name(taken: &mut BTreeSet<String>, wanted: &str) -> String {
    let base: String = wanted.chars().take(policy::limits::MAX_NAME).collect();
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        let suffix = format!("-{n}");
        let keep = policy::limits::MAX_NAME - suffix.len();
        name = format!("{}{suffix}", base.chars().take(keep).collect::<String>());
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// Service names by (protocol, port): the draft's exact ones first, then new ones.
struct Services {
    by_tuple: HashMap<(u8, u16), String>,
    names: BTreeSet<String>,
    existing: Vec<Service>,
    new: Vec<Service>,
}

impl Services {
    fn new(draft: &Policy) -> Services {
        Services {
            by_tuple: HashMap::new(),
            names: draft.services().iter().map(|s| s.name.clone()).collect(),
            existing: draft.services().to_vec(),
            new: Vec::new(),
        }
    }

    fn for_tuple(&mut self, t: &Tuple) -> String {
        if let Some(name) = self.by_tuple.get(&(t.proto, t.service)) {
            return name.clone();
        }
        let wanted = exact_service(t);
        let name = match self.existing.iter().find(|s| same_service(s, &wanted)) {
            Some(s) => s.name.clone(),
            None => {
                let name = unique_name(&mut self.names, &wanted.name);
                self.new.push(Service {
                    name: name.clone(),
                    ..wanted
                });
                name
            }
        };
        self.by_tuple.insert((t.proto, t.service), name.clone());
        name
    }
}

/// The narrowest service of a tuple: its protocol and port (or ICMP type and code).
fn exact_service(t: &Tuple) -> Service {
    let (ty, code) = ((t.service >> 8) as u8, (t.service & 0xff) as u8);
    let (name, protocol, ports, icmp_type, icmp_code) = match t.proto {
        proto::TCP => (
            format!("tcp-{}", t.service),
            Protocol::Tcp,
            Some(t.service),
            None,
            None,
        ),
        proto::UDP => (
            format!("udp-{}", t.service),
            Protocol::Udp,
            Some(t.service),
            None,
            None,
        ),
        proto::ICMP => (
            format!("icmp-{ty}-{code}"),
            Protocol::Icmp,
            None,
            Some(ty),
            Some(code),
        ),
        proto::ICMPV6 => (
            format!("icmpv6-{ty}-{code}"),
            Protocol::Icmpv6,
            None,
            Some(ty),
            Some(code),
        ),
        n => (format!("proto-{n}"), Protocol::Number(n), None, None, None),
    };
    Service {
        name,
        description: Some("Suggested from observed traffic.".into()),
        protocol,
        // Port 0 (seen, but not a valid service port) leaves the port open rather than making an invalid
        // service.
        ports: ports
            .filter(|&p| p != 0)
            .map(|p| vec![PortRange::single(p)]),
        source_ports: None,
        icmp_type,
        icmp_code,
    }
}

/// The same traffic: protocol by number, ports, ICMP type and code.
fn same_service(a: &Service, b: &Service) -> bool {
    a.protocol.number() == b.protocol.number()
        && a.protocol.number().is_some()
        && a.ports == b.ports
        && a.source_ports.is_none()
        && b.source_ports.is_none()
        && a.icmp_type == b.icmp_type
        && a.icmp_code == b.icmp_code
}

impl Coverage {
    fn count(&mut self, seen: &Seen, allowed: bool) {
        self.conversations += 1;
        self.flows += seen.flows;
        if allowed {
            self.conversations_allowed += 1;
            self.flows_allowed += seen.flows;
        }
    }

    /// With the shares filled in.
    fn shared(mut self) -> Coverage {
        let share = |n: u64, d: u64| if d == 0 { 1.0 } else { n as f64 / d as f64 };
        self.conversation_share = share(self.conversations_allowed, self.conversations);
        self.flow_share = share(self.flows_allowed, self.flows);
        self
    }
}
