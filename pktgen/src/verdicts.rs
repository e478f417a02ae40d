//! The expected-verdict sidecar: for a pcap `X.pcap`, the file
//! `X.pcap.verdicts.jsonl` holds one JSON object per generated flow saying
//! whether the gateway should pass or drop it and why, so a live run can
//! compare what arrives with what the policy's reference evaluation says.
//!
//! ```json
//! {"flow":0,"proto":6,"src":"10.1.0.5","sport":40000,"dst":"10.2.0.9","dport":502,"vlan":null,
//!  "expect":"pass","decision":"rule 10 (eng-to-plc) allow","rule_id":10,"packets":6,"reply_packets":4}
//! ```
//!
//! For ICMP and ICMPv6, `sport` is the type and `dport` the code, as in
//! [`policy::Flow::icmp`]. `packets` counts the flow's frames in the
//! originator direction, `reply_packets` those in the reply direction.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use policy::{Decision, Mode, Policy};
use serde::{Deserialize, Serialize};

/// Suffix appended to a pcap's file name to name its sidecar.
pub const SUFFIX: &str = ".verdicts.jsonl";

/// What the gateway should do with a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Forwarded (an allow, or a deny that is only monitored).
    Pass,
    /// Dropped.
    Drop,
}

impl Expect {
    /// `Pass` when `passes`, else `Drop`.
    pub fn from_passes(passes: bool) -> Expect {
        if passes {
            Expect::Pass
        } else {
            Expect::Drop
        }
    }
}

/// One flow's line in the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// Index of the flow in generation order.
    pub flow: u32,
    /// IP protocol number.
    pub proto: u8,
    /// Originator's address.
    pub src: IpAddr,
    /// Originator's port (ICMP: type).
    pub sport: u16,
    /// Responder's address.
    pub dst: IpAddr,
    /// Responder's port (ICMP: code).
    pub dport: u16,
    /// 802.1Q VLAN id of the flow's frames, `None` when untagged.
    pub vlan: Option<u16>,
    /// The expected verdict.
    pub expect: Expect,
    /// Human-readable reason, e.g. `rule 10 (hmi-web) allow`, `default deny`,
    /// `rule 50 (legacy) monitor would-deny`.
    pub decision: String,
    /// Id of the deciding rule, `None` for the default action.
    pub rule_id: Option<u32>,
    /// Frames of this flow in the originator direction.
    pub packets: u64,
    /// Frames of this flow in the reply direction.
    pub reply_packets: u64,
}

impl Verdict {
    /// The flow as the policy sees it (originator direction).
    pub fn policy_flow(&self) -> policy::Flow {
        policy::Flow::new(
            self.src, self.dst, self.vlan, self.proto, self.sport, self.dport,
        )
    }
}

/// Why a sidecar could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum VerdictsError {
    /// Opening, reading or writing the file failed.
    #[error("cannot {action} '{}': {source}", path.display())]
    Io {
        /// "open", "read", "create" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a valid verdict object.
    #[error("{}:{line}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The cause.
        source: serde_json::Error,
    },
}

/// The sidecar path of a pcap: `X.pcap` → `X.pcap.verdicts.jsonl`.
pub fn sidecar_path(pcap: &Path) -> PathBuf {
    let mut name = pcap.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Human-readable text of a decision: `rule 10 (hmi-web) allow`,
/// `rule 50 (legacy) monitor would-deny`, `default deny`,
/// `default deny monitored would-deny`, `tier global default deny`.
pub fn describe(policy: &Policy, decision: &Decision) -> String {
    let action = policy::Action::as_str;
    match *decision {
        Decision::Rule {
            index, id, mode, ..
        } => {
            let name = policy.rules().get(index).map_or("?", |r| r.name.as_str());
            let what = if decision.would_deny() {
                "monitor would-deny"
            } else if mode == Mode::Monitor {
                // A monitor-mode allow is an allow.
                "monitor allow"
            } else {
                action(decision.action())
            };
            format!("rule {id} ({name}) {what}")
        }
        Decision::Default {
            action: a,
            monitored,
        } => {
            if monitored {
                format!("default {} monitored would-deny", action(a))
            } else {
                format!("default {}", action(a))
            }
        }
        Decision::TierDefault { tier, monitored } => {
            let name = policy.tiers().get(tier).map_or("?", |t| t.name.as_str());
            if monitored {
                format!("tier {name} default deny monitored would-deny")
            } else {
                format!("tier {name} default deny")
            }
        }
    }
}

/// The rule id of a decision, `None` for a default (the policy's or a tier's).
pub fn rule_id(decision: &Decision) -> Option<u32> {
    match *decision {
        Decision::Rule { id, .. } => Some(id),
        Decision::Default { .. } | Decision::TierDefault { .. } => None,
    }
}

/// Writes `verdicts` as JSON lines to `path`.
pub fn write(path: &Path, verdicts: &[Verdict]) -> Result<(), VerdictsError> {
    let io = |action, source| VerdictsError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(|e| io("create", e))?;
    let mut w = BufWriter::new(file);
    for v in verdicts {
        serde_json::to_writer(&mut w, v).map_err(|e| io("write", e.into()))?;
        w.write_all(b"\n").map_err(|e| io("write", e))?;
    }
    w.flush().map_err(|e| io("write", e))
}

/// Reads a sidecar written by [`write`]; blank lines are skipped.
pub fn read(path: &Path) -> Result<Vec<Verdict>, VerdictsError> {
    let io = |action, source| VerdictsError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(|e| io("open", e))?;
    let mut out = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io("read", e))?;
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str(&line).map_err(|source| VerdictsError::Json {
            path: path.to_owned(),
            line: n + 1,
            source,
        })?;
        out.push(v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verdict {
        Verdict {
            flow: 3,
            proto: 1,
            src: "10.0.0.1".parse().unwrap(),
            sport: 8,
            dst: "fd00::1".parse().unwrap(),
            dport: 0,
            vlan: Some(20),
            expect: Expect::Drop,
            decision: "default deny".into(),
            rule_id: None,
            packets: 2,
            reply_packets: 0,
        }
    }

    #[test]
    fn json_shape_is_the_agreed_one() {
        let s = serde_json::to_string(&sample()).unwrap();
        assert_eq!(
            s,
            r#"{"flow":3,"proto":1,"src":"10.0.0.1","sport":8,"dst":"fd00::1","dport":0,"vlan":20,"expect":"drop","decision":"default deny","rule_id":null,"packets":2,"reply_packets":0}"#
        );
    }

    #[test]
    fn write_read_round_trip_and_errors_name_the_line() {
        let dir = std::env::temp_dir().join(format!("pktgen-verdicts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pcap = dir.join("x.pcap");
        let side = sidecar_path(&pcap);
        assert_eq!(side, dir.join("x.pcap.verdicts.jsonl"));
        let mut b = sample();
        b.flow = 4;
        b.expect = Expect::Pass;
        b.vlan = None;
        b.rule_id = Some(10);
        write(&side, &[sample(), b.clone()]).unwrap();
        assert_eq!(read(&side).unwrap(), vec![sample(), b]);

        std::fs::write(&side, "\n{\"flow\":1}\n").unwrap();
        let e = read(&side).unwrap_err();
        assert!(matches!(e, VerdictsError::Json { line: 2, .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            read(&side).unwrap_err(),
            VerdictsError::Io { action: "open", .. }
        ));
    }
}
