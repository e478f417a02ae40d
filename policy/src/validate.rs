//! Semantic validation: everything a well-typed [`Document`] can still get wrong. All problems are collected,
//! so one round trip through the API or an editor shows the whole list.

use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::IpNet;

use crate::error::ValidationError;
use crate::model::{Document, FloodLimits, PortRange, Provenance, Selector, Service, ANY_SERVICE};

/// Size limits. They keep a mistaken or hostile document from exhausting the control process or the
/// classifier's memory; real deployments sit far below them.
pub mod limits {
    pub const MAX_SEGMENTS: usize = 10_000;
    pub const MAX_SERVICES: usize = 10_000;
    pub const MAX_RULES: usize = 100_000;
    /// All segments' prefixes together.
    pub const MAX_PREFIXES: usize = 100_000;
    /// Per `ports` or `source_ports` list.
    pub const MAX_PORT_RANGES: usize = 1_024;
    /// Per segment.
    pub const MAX_LABELS: usize = 64;
    /// Characters in a name, label key or label value.
    pub const MAX_NAME: usize = 64;
    /// Characters in a description.
    pub const MAX_DESCRIPTION: usize = 1_024;
}

use limits::*;

/// Every problem in `doc`; empty means valid.
pub fn validate(doc: &Document) -> Vec<ValidationError> {
    let mut v = Validator {
        errors: Vec::new(),
        hint_budget: HINT_BUDGET,
    };
    v.segments(doc);
    v.services(doc);
    v.rules(doc);
    v.settings(doc);
    v.errors
}

/// Edit-distance cells one validation may spend on "did you mean" hints (about 20 ms). Hints cost the length of
/// the wrong name times that of each known name, so a hostile document — thousands of segments, rules naming
/// unknown ones — would otherwise pin a CPU for minutes; past the budget, errors simply come without a hint.
const HINT_BUDGET: usize = 16 << 20;

struct Validator {
    errors: Vec<ValidationError>,
    /// What is left of [`HINT_BUDGET`].
    hint_budget: usize,
}

impl Validator {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ValidationError::new(path, message));
    }

    fn count(&mut self, path: &str, what: &str, n: usize, limit: usize) {
        if n > limit {
            self.err(path, format!("too many {what}: {n} (the limit is {limit})"));
        }
    }

    /// Names are referred to from other places and shown in logs: keep them to a safe, unambiguous alphabet.
    fn name(&mut self, path: String, what: &str, name: &str) {
        let ok = !name.is_empty()
            && name.chars().count() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok {
            self.err(
                path,
                format!(
                    "{what} {} is not valid: use 1 to {MAX_NAME} characters from A-Z a-z 0-9 _ . -",
                    quoted(name)
                ),
            );
        }
    }

    fn description(&mut self, path: String, description: &Option<String>) {
        if let Some(d) = description {
            let n = d.chars().count();
            if n > MAX_DESCRIPTION {
                self.err(
                    path,
                    format!("description is {n} characters long (the limit is {MAX_DESCRIPTION})"),
                );
            }
        }
    }

    fn prefix(&mut self, path: String, net: &IpNet) {
        let network = net.trunc();
        if network != *net {
            self.err(
                path,
                format!("{net} has host bits set; did you mean {network}?"),
            );
        }
    }

    fn segments(&mut self, doc: &Document) {
        self.count("segments", "segments", doc.segments.len(), MAX_SEGMENTS);
        let total: usize = doc.segments.iter().map(|s| s.prefixes.len()).sum();
        self.count(
            "segments",
            "prefixes in all segments together",
            total,
            MAX_PREFIXES,
        );
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in doc.segments.iter().enumerate() {
            let at = format!("segments[{i}]");
            self.name(format!("{at}.name"), "segment name", &s.name);
            if let Some(first) = seen.insert(&s.name, i) {
                seen.insert(&s.name, first);
                self.err(
                    format!("{at}.name"),
                    format!(
                        "duplicate segment name {:?} (also segments[{first}])",
                        s.name
                    ),
                );
            }
            self.description(format!("{at}.description"), &s.description);
            if s.prefixes.is_empty() {
                self.err(
                    format!("{at}.prefixes"),
                    "a segment needs at least one prefix",
                );
            }
            for (j, net) in s.prefixes.iter().enumerate() {
                self.prefix(format!("{at}.prefixes[{j}]"), net);
            }
            if let Some(vlans) = &s.vlans {
                if vlans.is_empty() {
                    self.err(
                        format!("{at}.vlans"),
                        "an empty VLAN list would match no traffic; omit \"vlans\" to accept any VLAN and untagged frames",
                    );
                }
                let mut seen_vlan = HashSet::new();
                for (j, &vlan) in vlans.iter().enumerate() {
                    if !(1..=4094).contains(&vlan) {
                        self.err(
                            format!("{at}.vlans[{j}]"),
                            format!("VLAN id {vlan} is out of range 1..=4094"),
                        );
                    } else if !seen_vlan.insert(vlan) {
                        self.err(
                            format!("{at}.vlans[{j}]"),
                            format!("duplicate VLAN id {vlan}"),
                        );
                    }
                }
            }
            self.count(
                &format!("{at}.labels"),
                "labels",
                s.labels.len(),
                MAX_LABELS,
            );
            self.labels(&format!("{at}.labels"), &s.labels);
        }
    }

    fn labels(&mut self, at: &str, labels: &BTreeMap<String, String>) {
        for (k, value) in labels {
            self.name(format!("{at}.{k}"), "label key", k);
            self.name(format!("{at}.{k}"), "label value", value);
        }
    }

    fn services(&mut self, doc: &Document) {
        self.count("services", "services", doc.services.len(), MAX_SERVICES);
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, s) in doc.services.iter().enumerate() {
            let at = format!("services[{i}]");
            self.name(format!("{at}.name"), "service name", &s.name);
            if s.name == ANY_SERVICE {
                self.err(
                    format!("{at}.name"),
                    "\"any\" is reserved for the built-in service that matches all traffic",
                );
            } else if let Some(first) = seen.insert(&s.name, i) {
                seen.insert(&s.name, first);
                self.err(
                    format!("{at}.name"),
                    format!(
                        "duplicate service name {:?} (also services[{first}])",
                        s.name
                    ),
                );
            }
            self.description(format!("{at}.description"), &s.description);
            self.service_fields(&at, s);
        }
    }

    fn service_fields(&mut self, at: &str, s: &Service) {
        for (field, list) in [("ports", &s.ports), ("source_ports", &s.source_ports)] {
            let Some(list) = list else { continue };
            if !s.protocol.has_ports() {
                self.err(
                    format!("{at}.{field}"),
                    format!(
                        "{field} apply only to tcp and udp services, not to {}",
                        s.protocol
                    ),
                );
                continue;
            }
            if list.is_empty() {
                self.err(
                    format!("{at}.{field}"),
                    format!(
                        "an empty list would match no packet; omit \"{field}\" to match every port"
                    ),
                );
            }
            self.count(
                &format!("{at}.{field}"),
                "port ranges",
                list.len(),
                MAX_PORT_RANGES,
            );
            for (j, r) in list.iter().enumerate() {
                self.port_range(format!("{at}.{field}[{j}]"), *r);
            }
        }
        for (field, value) in [("icmp_type", s.icmp_type), ("icmp_code", s.icmp_code)] {
            if value.is_some() && !s.protocol.has_icmp() {
                self.err(
                    format!("{at}.{field}"),
                    format!(
                        "{field} applies only to icmp and icmpv6 services, not to {}",
                        s.protocol
                    ),
                );
            }
        }
        if s.icmp_code.is_some() && s.icmp_type.is_none() && s.protocol.has_icmp() {
            self.err(
                format!("{at}.icmp_code"),
                "icmp_code needs icmp_type (a code means nothing without its type)",
            );
        }
    }

    fn port_range(&mut self, path: String, r: PortRange) {
        if r.lo == 0 || r.hi == 0 {
            self.err(
                path,
                format!("port 0 in \"{r}\" is not a valid port (1..=65535)"),
            );
        } else if r.lo > r.hi {
            self.err(
                path,
                format!(
                    "port range \"{r}\" is reversed; did you mean \"{}-{}\"?",
                    r.hi, r.lo
                ),
            );
        }
    }

    fn rules(&mut self, doc: &Document) {
        self.count("rules", "rules", doc.rules.len(), MAX_RULES);
        let segments: HashSet<&str> = doc.segments.iter().map(|s| s.name.as_str()).collect();
        let services: HashSet<&str> = doc.services.iter().map(|s| s.name.as_str()).collect();
        let mut ids: HashMap<u32, usize> = HashMap::new();
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, r) in doc.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            if r.id == 0 {
                self.err(format!("{at}.id"), "rule ids start at 1");
            } else if let Some(first) = ids.insert(r.id, i) {
                ids.insert(r.id, first);
                self.err(
                    format!("{at}.id"),
                    format!("duplicate rule id {} (also rules[{first}])", r.id),
                );
            }
            self.name(format!("{at}.name"), "rule name", &r.name);
            if let Some(first) = names.insert(&r.name, i) {
                names.insert(&r.name, first);
                self.err(
                    format!("{at}.name"),
                    format!("duplicate rule name {:?} (also rules[{first}])", r.name),
                );
            }
            self.description(format!("{at}.description"), &r.description);
            if let Some(p) = &r.provenance {
                self.provenance(&format!("{at}.provenance"), p);
            }
            for (side, sel) in [("from", &r.from), ("to", &r.to)] {
                self.selector(&format!("{at}.{side}"), sel, doc, &segments);
            }
            if r.service != ANY_SERVICE && !services.contains(r.service.as_str()) {
                let hint = suggestion(
                    &r.service,
                    services.iter().copied().chain([ANY_SERVICE]),
                    &mut self.hint_budget,
                );
                self.err(
                    format!("{at}.service"),
                    format!("unknown service {}{hint}", quoted(&r.service)),
                );
            }
        }
    }

    /// Provenance never changes a verdict; only its size is bounded (times stay text as written).
    fn provenance(&mut self, at: &str, p: &Provenance) {
        self.description(format!("{at}.note"), &p.note);
        let times = [
            ("first_seen", &p.first_seen),
            ("last_seen", &p.last_seen),
            ("created", &p.created),
        ];
        let window = p
            .window
            .as_ref()
            .map(|w| [("window.from", &w.from), ("window.to", &w.to)]);
        let window = window.iter().flatten().map(|(k, v)| (*k, Some(*v)));
        for (field, value) in times.iter().map(|(k, v)| (*k, v.as_ref())).chain(window) {
            if let Some(v) = value {
                let n = v.chars().count();
                if n > MAX_NAME {
                    self.err(
                        format!("{at}.{field}"),
                        format!("{n} characters long (the limit is {MAX_NAME})"),
                    );
                }
            }
        }
    }

    fn selector(&mut self, at: &str, sel: &Selector, doc: &Document, segments: &HashSet<&str>) {
        match sel {
            Selector::Any => {}
            Selector::Segment(name) => {
                if !segments.contains(name.as_str()) {
                    let hint = suggestion(name, segments.iter().copied(), &mut self.hint_budget);
                    self.err(
                        format!("{at}.segment"),
                        format!("unknown segment {}{hint}", quoted(name)),
                    );
                }
            }
            Selector::Labels(labels) => {
                if labels.is_empty() {
                    self.err(
                        format!("{at}.labels"),
                        "an empty label selector would select every segment; name at least one label (or use \"any\")",
                    );
                } else if !doc.segments.iter().any(|s| labels_match(labels, &s.labels)) {
                    let wanted: Vec<String> =
                        labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    self.err(
                        format!("{at}.labels"),
                        format!("no segment has all the labels {}", wanted.join(", ")),
                    );
                }
            }
            Selector::Prefix(net) => self.prefix(format!("{at}.prefix"), net),
        }
    }

    fn settings(&mut self, doc: &Document) {
        for (field, secs) in doc.settings.timeouts.fields() {
            if secs == 0 {
                self.err(
                    format!("settings.timeouts.{field}"),
                    "a timeout must be at least 1 second",
                );
            }
        }
        let max = FloodLimits::MAX_HALF_OPEN_PER_SOURCE;
        if doc.settings.flood_limits.half_open_per_source > max {
            self.err(
                "settings.flood_limits.half_open_per_source",
                format!("at most {max} (0 turns the limit off)"),
            );
        }
    }
}

/// Whether a segment's labels include every pair of a selector.
pub(crate) fn labels_match(
    wanted: &BTreeMap<String, String>,
    have: &BTreeMap<String, String>,
) -> bool {
    wanted.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// `; did you mean "x"?` for the closest known name, when it is close enough to be a likely typo (case
/// differences are free). Spends at most `budget` edit-distance cells, then gives up (no hint).
fn suggestion<'a>(wrong: &str, known: impl Iterator<Item = &'a str>, budget: &mut usize) -> String {
    let wrong = wrong.to_lowercase();
    let wrong_len = wrong.chars().count();
    // No valid name is longer than MAX_NAME, so a longer one is no typo of one.
    if wrong_len > MAX_NAME {
        return String::new();
    }
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let k_len = k.chars().count();
        let allowed = 2.max(k_len / 4);
        // The distance is at least the difference in length.
        if wrong_len.abs_diff(k_len) > allowed {
            continue;
        }
        let cost = (wrong_len + 1) * (k_len + 1);
        if cost > *budget {
            return String::new();
        }
        *budget -= cost;
        let d = edit_distance(&wrong, &k.to_lowercase());
        if d <= allowed && best.is_none_or(|b| (d, k) < b) {
            best = Some((d, k));
        }
    }
    match best {
        Some((_, k)) => format!("; did you mean {k:?}?"),
        None => String::new(),
    }
}

/// A name as an error shows it: quoted, and cut short (to four times the longest valid name) when it is far
/// longer than any valid name, so one hostile name cannot make every error that repeats it huge.
fn quoted(name: &str) -> String {
    match name.char_indices().nth(4 * MAX_NAME) {
        Some((end, _)) => format!(
            "{:?}... ({} characters)",
            &name[..end],
            name.chars().count()
        ),
        None => format!("{name:?}"),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("modbus", "modbus"), 0);
        assert_eq!(edit_distance("modbsu", "modbus"), 2);
        assert_eq!(edit_distance("engneering", "engineering"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggestion_only_for_close_names() {
        let budget = &mut HINT_BUDGET.clone();
        assert_eq!(
            suggestion(
                "engneering",
                ["engineering", "ot-legacy"].into_iter(),
                budget
            ),
            "; did you mean \"engineering\"?"
        );
        assert_eq!(
            suggestion("printers", ["engineering", "ot-legacy"].into_iter(), budget),
            ""
        );
    }

    /// A hostile document: thousands of segments and rules naming unknown ones, one of them very long. Hints stop
    /// when the budget is spent (so validation time is bounded), and the long name is cut short in its error.
    #[test]
    fn hints_cost_a_bounded_amount_of_work() {
        let names: Vec<String> = (0..3000).map(|i| format!("segment-{i:05}")).collect();
        let mut budget = HINT_BUDGET;
        let long = "x".repeat(100_000);
        assert_eq!(
            suggestion(&long, names.iter().map(String::as_str), &mut budget),
            ""
        );
        assert_eq!(
            budget, HINT_BUDGET,
            "a name longer than any valid one costs nothing"
        );
        let mut hinted = 0;
        for i in 0..10_000 {
            let typo = format!("segment-{:05}x", i % 3000);
            if !suggestion(&typo, names.iter().map(String::as_str), &mut budget).is_empty() {
                hinted += 1;
            }
        }
        assert!(hinted > 10, "the first typos get their hint");
        assert!(hinted < 10_000, "the budget ran out: {hinted} hints");
        assert!(quoted(&long).len() < 300, "{}", quoted(&long));
        assert!(quoted(&long).ends_with("... (100000 characters)"));
        assert_eq!(quoted("eng"), "\"eng\"");
    }
}
