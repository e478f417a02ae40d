//! The `classbench` workload: a ClassBench trace turned into packets, one
//! per trace line, in trace order, all IPv4.
//!
//! TCP (6) lines become ACK segments and UDP (17) lines datagrams, with the
//! trace's ports. Other protocols cannot carry ports: ICMP (1) lines become
//! echo requests (type 8, code 0, identifier = line number), any other
//! protocol a bare IP payload. The optional sidecar
//! (`X.pcap.rules.jsonl`) gives, per packet, the first rule (0-based, in
//! the rule file's priority order) matching the header *as carried* — for
//! ICMP the type in the source port and the code in the destination port,
//! as Bulkhead's classifier sees it, for other non-TCP/UDP protocols ports
//! 0 — which therefore can differ from a scan over the trace's own ports.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use classbench::{first_match, parse_rules, parse_trace, Packet, Rule};
use net::tcp::TcpFlags;
use serde::{Deserialize, Serialize};

use crate::conversation::Written;
use crate::error::{Error, Result};
use crate::frame::FCS_LEN;
use crate::packet::{build, pattern, IpHeader, Transport};
use crate::pcap::PcapSink;

/// Suffix of the expected-rule sidecar.
pub const RULES_SUFFIX: &str = ".rules.jsonl";

/// One packet's line in the expected-rule sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRule {
    /// Packet index (trace line, blank lines skipped), from 0.
    pub packet: u64,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port as carried (ICMP: type).
    pub sport: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port as carried (ICMP: code).
    pub dport: u16,
    /// First matching rule, 0-based; `None` if no rule matches.
    pub rule: Option<usize>,
}

/// The header a trace line is sent as, with the ports it can carry.
pub fn carried(p: &Packet) -> Packet {
    match p.proto {
        6 | 17 => *p,
        1 => Packet {
            sport: 8,
            dport: 0,
            ..*p
        },
        _ => Packet {
            sport: 0,
            dport: 0,
            ..*p
        },
    }
}

/// The frame of trace line `i` at `frame_len` bytes (FCS excluded; never
/// shorter than the headers).
pub fn frame(i: u64, p: &Packet, frame_len: usize) -> Vec<u8> {
    let (src, dst) = (
        IpAddr::V4(Ipv4Addr::from(p.src)),
        IpAddr::V4(Ipv4Addr::from(p.dst)),
    );
    let t = match p.proto {
        6 => Transport::tcp(p.sport, p.dport, i as u32, 0x1000_0000, TcpFlags::ACK),
        17 => Transport::Udp {
            sport: p.sport,
            dport: p.dport,
        },
        1 => Transport::echo(8, i as u16, 0),
        proto => Transport::Raw { proto },
    };
    let h = IpHeader {
        ident: i as u32,
        ..IpHeader::new(src, dst, p.proto)
    };
    let payload = frame_len.saturating_sub(h.header_len() + t.header_len());
    build(&h, &t, &pattern(payload, i as u8))
}

/// The `classbench` subcommand.
pub fn write_classbench(
    trace: &Path,
    rules: Option<&Path>,
    frame_size: usize,
    limit: Option<u64>,
    out: &Path,
) -> Result<Written> {
    crate::conversation::check_frame_sizes(&[frame_size])?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| Error::Io {
            action: "read",
            path: p.to_owned(),
            source,
        })
    };
    let packets = parse_trace(&read(trace)?)
        .map_err(|e| Error::arg("--trace", format!("{}: {e}", trace.display())))?;
    let rules: Option<Vec<Rule>> = match rules {
        Some(r) => Some(
            parse_rules(&read(r)?)
                .map_err(|e| Error::arg("--rules", format!("{}: {e}", r.display())))?,
        ),
        None => None,
    };
    let n = limit.map_or(packets.len(), |l| packets.len().min(l as usize));
    let mut sink = PcapSink::create(out)?;
    for (i, p) in packets[..n].iter().enumerate() {
        sink.write(&frame(i as u64, p, frame_size - FCS_LEN))?;
    }
    let written = sink.finish()?;
    let sidecar = match &rules {
        Some(rules) => {
            let mut name = out.as_os_str().to_owned();
            name.push(RULES_SUFFIX);
            let path = PathBuf::from(name);
            let io = |source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            };
            let file = File::create(&path).map_err(|source| Error::Io {
                action: "create",
                path: path.clone(),
                source,
            })?;
            let mut w = BufWriter::new(file);
            for (i, p) in packets[..n].iter().enumerate() {
                let c = carried(p);
                let line = ExpectedRule {
                    packet: i as u64,
                    proto: c.proto,
                    src: c.src.into(),
                    sport: c.sport,
                    dst: c.dst.into(),
                    dport: c.dport,
                    rule: first_match(rules, &c),
                };
                serde_json::to_writer(&mut w, &line).map_err(|e| io(e.into()))?;
                w.write_all(b"\n").map_err(io)?;
            }
            w.flush().map_err(io)?;
            Some(path)
        }
        None => None,
    };
    Ok(Written {
        packets: written,
        flows: n,
        unit: "trace lines",
        path: out.to_owned(),
        sidecar,
    })
}
