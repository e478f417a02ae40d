//! Reader of the expected-verdict sidecar `X.pcap.verdicts.jsonl`: one JSON
//! object per flow of the pcap, e.g.
//!
//! ```text
//! {"flow": 0, "proto": 6, "src": "10.0.0.1", "sport": 40000, "dst": "10.1.0.1", "dport": 443,
//!  "vlan": null, "expect": "pass", "decision": "rule 10 allow", "rule_id": 10,
//!  "packets": 5, "reply_packets": 4}
//! ```
//!
//! For ICMP, `sport` is the type and `dport` the code of the originator's
//! messages. Blank lines are skipped; any other bad line is an error naming
//! its number.

use std::io::BufRead;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use super::{Error, Result};

/// The verdict a flow should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Every packet of the flow crosses the gateway.
    Pass,
    /// None of the flow's packets crosses.
    Drop,
}

/// One flow's expected verdict.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowVerdict {
    /// Flow index in the pcap's generator.
    pub flow: u32,
    /// IP protocol number.
    pub proto: u8,
    /// Originator address.
    pub src: IpAddr,
    /// Originator port (ICMP: type).
    pub sport: u16,
    /// Responder address.
    pub dst: IpAddr,
    /// Responder port (ICMP: code).
    pub dport: u16,
    /// 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// The expected verdict.
    pub expect: Expect,
    /// Why (the policy's reference evaluation, as text).
    pub decision: String,
    /// The deciding rule, if a rule (not the default action) decided.
    pub rule_id: Option<u32>,
    /// Originator-direction packets of the flow in the pcap.
    pub packets: u64,
    /// Reply-direction packets of the flow in the pcap.
    pub reply_packets: u64,
}

/// Reads a sidecar file.
pub fn read(path: &Path) -> Result<Vec<FlowVerdict>> {
    let err = |line, reason: String| Error::Sidecar {
        path: path.to_owned(),
        line,
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(0, e.to_string()))?;
    parse(std::io::BufReader::new(file)).map_err(|(line, reason)| err(line, reason))
}

/// Parses sidecar lines; an error carries the 1-based line number.
pub fn parse(reader: impl BufRead) -> std::result::Result<Vec<FlowVerdict>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| (i + 1, e.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: FlowVerdict = serde_json::from_str(&line).map_err(|e| (i + 1, e.to_string()))?;
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"flow": 0, "proto": 6, "src": "10.0.0.1", "sport": 40000, "dst": "10.1.0.1", "dport": 443, "vlan": null, "expect": "pass", "decision": "rule 10", "rule_id": 10, "packets": 5, "reply_packets": 4}

{"flow": 1, "proto": 1, "src": "fd00::1", "sport": 8, "dst": "fd00::2", "dport": 0, "vlan": 7, "expect": "drop", "decision": "default deny", "rule_id": null, "packets": 1, "reply_packets": 0}
"#;

    #[test]
    fn parses_the_documented_format() {
        let v = parse(GOOD.as_bytes()).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].expect, Expect::Pass);
        assert_eq!(v[0].rule_id, Some(10));
        assert_eq!(v[1].vlan, Some(7));
        assert_eq!(v[1].src, "fd00::1".parse::<IpAddr>().unwrap());
        assert_eq!(v[1].expect, Expect::Drop);
    }

    #[test]
    fn bad_lines_are_named() {
        let bad = GOOD.replace("\"drop\"", "\"maybe\"");
        let (line, reason) = parse(bad.as_bytes()).unwrap_err();
        assert_eq!(line, 3);
        assert!(reason.contains("maybe"), "{reason}");
        let (line, _) = parse("{\"flow\": 1}\n".as_bytes()).unwrap_err();
        assert_eq!(line, 1);
        let (line, _) = parse("not json\n".as_bytes()).unwrap_err();
        assert_eq!(line, 1);
    }
}
