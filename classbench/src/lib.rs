//! ClassBench rule sets and traces, the standard benchmark of packet classification (the format
//! `dpdk-test-acl` reads), with the linear scan that defines their meaning: rules in file order, first match
//! wins. The TCP-flags column is ignored, as `dpdk-test-acl` does.
//!
//! The sets the tests and benchmarks use ship in this crate's `data/` (see its README for where they come
//! from); [`dir`] finds them. A missing or malformed file is an [`Error`] naming it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

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

/// A line of a rule or trace file that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file} line {line}: {reason}")]
pub struct ParseError {
    /// `"rule"` or `"trace"`.
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A ClassBench file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or unreadable.
    #[error("cannot read ClassBench file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is there but malformed.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The first bad line.
        source: ParseError,
    },
}

/// Where the data sets live: `$BULKHEAD_CLASSBENCH` if set (to run on other ClassBench families), else the
/// `data/` directory shipped with this crate.
pub fn dir() -> PathBuf {
    std::env::var_os("BULKHEAD_CLASSBENCH").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
        PathBuf::from,
    )
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

fn rule(line: &str) -> Result<Rule, String> {
    let body = line.strip_prefix('@').ok_or("no leading @")?;
    let cols: Vec<&str> = body.split('\t').map(str::trim).collect();
    if cols.len() < 5 {
        return Err(format!("{} columns", cols.len()));
    }
    let (proto, proto_mask) = hex_pair(cols[4])?;
    Ok(Rule {
        src: prefix(cols[0])?,
        dst: prefix(cols[1])?,
        sport: port_range(cols[2])?,
        dport: port_range(cols[3])?,
        proto: (
            u8::try_from(proto).map_err(|e| e.to_string())?,
            u8::try_from(proto_mask).map_err(|e| e.to_string())?,
        ),
    })
}

fn packet(cols: &[&str]) -> Result<Packet, String> {
    if cols.len() < 5 {
        return Err(format!("{} columns", cols.len()));
    }
    let num = |i: usize, max: u64| match cols[i].parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        Ok(v) => Err(format!("{v} out of range")),
        Err(e) => Err(e.to_string()),
    };
    Ok(Packet {
        src: num(0, u32::MAX.into())? as u32,
        dst: num(1, u32::MAX.into())? as u32,
        sport: num(2, u16::MAX.into())? as u16,
        dport: num(3, u16::MAX.into())? as u16,
        proto: num(4, u8::MAX.into())? as u8,
    })
}

/// Parses a rule file (one rule per line, in priority order; blank lines skipped).
pub fn parse_rules(text: &str) -> Result<Vec<Rule>, ParseError> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        rules.push(rule(line).map_err(|reason| ParseError {
            file: "rule",
            line: n + 1,
            reason,
        })?);
    }
    Ok(rules)
}

/// Parses a trace file (one packet header per line; blank lines skipped).
pub fn parse_trace(text: &str) -> Result<Vec<Packet>, ParseError> {
    let mut packets = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.is_empty() {
            continue;
        }
        packets.push(packet(&cols).map_err(|reason| ParseError {
            file: "trace",
            line: n + 1,
            reason,
        })?);
    }
    Ok(packets)
}

fn read<T>(path: &Path, parse: fn(&str) -> Result<T, ParseError>) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|source| Error::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Reads a rule file.
pub fn read_rules(path: &Path) -> Result<Vec<Rule>, Error> {
    read(path, parse_rules)
}

/// Reads a trace file.
pub fn read_trace(path: &Path) -> Result<Vec<Packet>, Error> {
    read(path, parse_trace)
}

/// The rule file of set `name` (e.g. `acl1_1k`) in `dir`.
pub fn rules_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The trace file of set `name` in `dir` (not every set has one: `acl1_10k` does not).
pub fn trace_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}_trace"))
}

/// A rule set and its trace.
pub type DataSet = (Vec<Rule>, Vec<Packet>);

/// Loads set `name` from `dir`: its rules and its trace.
pub fn load(dir: &Path, name: &str) -> Result<DataSet, Error> {
    Ok((
        read_rules(&rules_path(dir, name))?,
        read_trace(&trace_path(dir, name))?,
    ))
}

#[cfg(test)]
mod tests;
