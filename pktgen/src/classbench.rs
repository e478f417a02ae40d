//! ClassBench rule sets and traces, the standard benchmark of packet classification (the format
//! `dpdk-test-acl` reads), with the linear scan that defines their meaning: rules in file order, first match
//! wins. The TCP-flags column is ignored, as `dpdk-test-acl` does.

use std::path::{Path, PathBuf};

/// One rule: `@src/len<TAB>dst/len<TAB>sp_lo : sp_hi<TAB>dp_lo : dp_hi<TAB>proto/mask<TAB>flags/mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Source prefix: address and length.
    pub src: (u32, u32),
    /// Destination prefix: address and length.
    pub dst: (u32, u32),
    /// Source port range, inclusive.
    pub sport: (u16, u16),
    /// Destination port range, inclusive.
    pub dport: (u16, u16),
    /// Protocol value and mask.
    pub proto: (u8, u8),
}

/// One trace line: `src dst sport dport proto flags rule`, addresses as unsigned 32-bit integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
}

/// Where the data sets live: `$BULKHEAD_CLASSBENCH`, else `shared/data/classbench` beside the project root.
pub fn dir() -> PathBuf {
    std::env::var_os("BULKHEAD_CLASSBENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/classbench")
        })
}

fn prefix_mask(len: u32) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len)
    }
}

impl Rule {
    /// Whether the rule matches the packet.
    pub fn matches(&self, p: &Packet) -> bool {
        let pm = |(addr, len): (u32, u32), x: u32| (x ^ addr) & prefix_mask(len) == 0;
        pm(self.src, p.src)
            && pm(self.dst, p.dst)
            && (self.sport.0..=self.sport.1).contains(&p.sport)
            && (self.dport.0..=self.dport.1).contains(&p.dport)
            && (p.proto & self.proto.1) == (self.proto.0 & self.proto.1)
    }
}

/// Index of the first rule matching `p`, as a linear scan in priority order finds it.
pub fn first_match(rules: &[Rule], p: &Packet) -> Option<usize> {
    rules.iter().position(|r| r.matches(p))
}

fn ipv4(s: &str) -> Result<u32, String> {
    s.parse::<std::net::Ipv4Addr>()
        .map(u32::from)
        .map_err(|e| format!("{s:?}: {e}"))
}

fn prefix(s: &str) -> Result<(u32, u32), String> {
    let (addr, len) = s.split_once('/').ok_or_else(|| format!("{s:?}: no /len"))?;
    let len: u32 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if len > 32 {
        return Err(format!("{s:?}: prefix longer than 32"));
    }
    Ok((ipv4(addr)?, len))
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: no lo : hi"))?;
    let p = |x: &str| x.trim().parse::<u16>().map_err(|e| format!("{s:?}: {e}"));
    Ok((p(lo)?, p(hi)?))
}

fn hex_pair(s: &str) -> Result<(u64, u64), String> {
    let (v, m) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: no value/mask"))?;
    let h = |x: &str| {
        u64::from_str_radix(x.trim_start_matches("0x").trim_start_matches("0X"), 16)
            .map_err(|e| format!("{s:?}: {e}"))
    };
    Ok((h(v)?, h(m)?))
}

/// Parses a rule file (one rule per line, in priority order).
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: String| format!("rule line {}: {e}", n + 1);
        let body = line
            .strip_prefix('@')
            .ok_or_else(|| at("no leading @".into()))?;
        let cols: Vec<&str> = body.split('\t').map(str::trim).collect();
        if cols.len() < 5 {
            return Err(at(format!("{} columns", cols.len())));
        }
        let (proto, proto_mask) = hex_pair(cols[4]).map_err(at)?;
        let proto = u8::try_from(proto).map_err(|e| at(e.to_string()))?;
        let proto_mask = u8::try_from(proto_mask).map_err(|e| at(e.to_string()))?;
        rules.push(Rule {
            src: prefix(cols[0]).map_err(at)?,
            dst: prefix(cols[1]).map_err(at)?,
            sport: port_range(cols[2]).map_err(at)?,
            dport: port_range(cols[3]).map_err(at)?,
            proto: (proto, proto_mask),
        });
    }
    Ok(rules)
}

/// Parses a trace file (one packet header per line).
pub fn parse_trace(text: &str) -> Result<Vec<Packet>, String> {
    let mut packets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        let at = |e: String| format!("trace line {}: {e}", n + 1);
        if cols.len() < 5 {
            return Err(at(format!("{} columns", cols.len())));
        }
        let num = |i: usize| cols[i].parse::<u64>().map_err(|e| at(e.to_string()));
        let narrow = |v: u64, max: u64| {
            if v <= max {
                Ok(v)
            } else {
                Err(at(format!("{v} out of range")))
            }
        };
        packets.push(Packet {
            src: narrow(num(0)?, u32::MAX.into())? as u32,
            dst: narrow(num(1)?, u32::MAX.into())? as u32,
            sport: narrow(num(2)?, u16::MAX.into())? as u16,
            dport: narrow(num(3)?, u16::MAX.into())? as u16,
            proto: narrow(num(4)?, u8::MAX.into())? as u8,
        });
    }
    Ok(packets)
}

/// A rule set and its trace.
pub type DataSet = (Vec<Rule>, Vec<Packet>);

/// Loads `<dir>/<name>` and `<dir>/<name>_trace`: `Ok(None)` if the data set is not on this machine, an error
/// naming the file if it is there but malformed.
pub fn load(dir: &Path, name: &str) -> Result<Option<DataSet>, String> {
    let (rules_path, trace_path) = (dir.join(name), dir.join(format!("{name}_trace")));
    let (Ok(rules), Ok(trace)) = (
        std::fs::read_to_string(&rules_path),
        std::fs::read_to_string(&trace_path),
    ) else {
        return Ok(None);
    };
    let rules = parse_rules(&rules).map_err(|e| format!("{}: {e}", rules_path.display()))?;
    let trace = parse_trace(&trace).map_err(|e| format!("{}: {e}", trace_path.display()))?;
    Ok(Some((rules, trace)))
}
