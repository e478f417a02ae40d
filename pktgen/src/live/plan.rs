//! The packets of a pcap prepared for sending: each record becomes a
//! [`Template`] with its stamp slot, its direction and its [`Group`].
//!
//! Direction: without a sidecar every packet goes out the `--tx` port and is
//! expected on the `--rx` port. With one, a packet whose 5-tuple (and VLAN)
//! is a flow's originator tuple goes that way too, and a packet with the
//! reversed tuple (a reply) goes out the `--rx` port and is expected on
//! `--tx`, so a stateful gateway sees each conversation the way it would on
//! the wire. ICMP flows are keyed by type and code (the sidecar's sport and
//! dport), a reply by its query's reply type (echo request 8 → echo reply 0,
//! ICMPv6 128 → 129, ...); the ICMP identifier is not in the sidecar, so two
//! echo flows between the same hosts share their counts.
//!
//! A group gathers the packets counted together: one flow's packets in one
//! direction, or (unlabelled packets) all packets of one tuple.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use net::parse::{parse, Parsed, L4};
use pcap_file::pcap::PcapReader;
use pcap_file::DataLink;

use super::signature;
use super::{Error, Result};
use crate::verdicts::Verdict as FlowVerdict;

/// Which way a packet crosses the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    /// Out the `--tx` port, expected on the `--rx` port.
    Forward,
    /// Out the `--rx` port, expected on the `--tx` port (replies).
    Reverse,
}

impl Dir {
    /// Index of the side that sends (0: `--tx`, 1: `--rx`).
    pub fn out_side(self) -> usize {
        match self {
            Dir::Forward => 0,
            Dir::Reverse => 1,
        }
    }
}

/// What identifies a packet's flow on the wire, one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    /// Outer VLAN id.
    pub vlan: Option<u16>,
    /// IP protocol.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port; ICMP: the type; 0 for other protocols without ports.
    pub sport: u16,
    /// Destination port; ICMP: the code; 0 likewise.
    pub dport: u16,
}

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

/// The type of the answer to an ICMP query (echo, timestamp, information,
/// address mask; ICMPv6 echo); other types are their own "reply".
fn icmp_reply_type(proto: u8, ty: u8) -> u8 {
    match (proto, ty) {
        (ICMP, 8) => 0,
        (ICMP, 13) => 14,
        (ICMP, 15) => 16,
        (ICMP, 17) => 18,
        (ICMPV6, 128) => 129,
        _ => ty,
    }
}

impl Key {
    /// The key of a parsed IP packet.
    pub fn of(p: &Parsed) -> Option<Key> {
        let proto = p.ip_proto()?.0;
        let (sport, dport) = match p.l4 {
            L4::Icmp { ty, code, .. } | L4::Icmpv6 { ty, code, .. } => {
                (u16::from(ty), u16::from(code))
            }
            _ if has_ports(proto) => p.ports().unwrap_or((0, 0)),
            _ => (0, 0),
        };
        Some(Key {
            vlan: p.vlans[0],
            proto,
            src: p.src_ip()?,
            dst: p.dst_ip()?,
            sport,
            dport,
        })
    }

    /// The key of a frame, if it parses as IP.
    pub fn of_frame(frame: &[u8]) -> Option<Key> {
        parse(frame).ok().as_ref().and_then(Key::of)
    }

    /// The originator key of a sidecar flow.
    pub fn of_verdict(v: &FlowVerdict) -> Key {
        let (sport, dport) = if has_ports(v.proto) || matches!(v.proto, ICMP | ICMPV6) {
            (v.sport, v.dport)
        } else {
            (0, 0)
        };
        Key {
            vlan: v.vlan,
            proto: v.proto,
            src: v.src,
            dst: v.dst,
            sport,
            dport,
        }
    }

    /// The same flow seen the other way: addresses and ports swapped; for
    /// ICMP, the query type becomes its reply type (the code stays).
    pub fn reversed(&self) -> Key {
        let (sport, dport) = match self.proto {
            ICMP | ICMPV6 => {
                let ty = u8::try_from(self.sport).unwrap_or(u8::MAX);
                (u16::from(icmp_reply_type(self.proto, ty)), self.dport)
            }
            _ => (self.dport, self.sport),
        };
        Key {
            src: self.dst,
            dst: self.src,
            sport,
            dport,
            ..*self
        }
    }
}

/// One packet to send.
#[derive(Debug, Clone)]
pub struct Template {
    /// The frame as recorded.
    pub bytes: Vec<u8>,
    /// Stamp offset and the one's-complement sum of the bytes it replaces;
    /// `None` if the packet is too small (or not a packet we can stamp).
    pub slot: Option<(usize, u16)>,
    /// Which way it goes.
    pub dir: Dir,
    /// Index into [`Plan::groups`].
    pub group: u32,
}

/// Packets counted together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Index into [`Plan::verdicts`], for a labelled flow.
    pub flow: Option<usize>,
    /// Direction of its packets.
    pub dir: Dir,
    /// Their key (`None`: frames that are not IP or do not parse).
    pub key: Option<Key>,
}

/// A pcap ready to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Packets in pcap order.
    pub templates: Vec<Template>,
    /// See [`Group`].
    pub groups: Vec<Group>,
    /// The sidecar's flows (empty without one).
    pub verdicts: Vec<FlowVerdict>,
    // foldhash: this map is looked up per received unstamped packet.
    by_key: hashbrown::HashMap<Option<Key>, u32>,
}

impl Plan {
    /// Builds a plan from frames and (possibly empty) expected verdicts.
    pub fn new(frames: Vec<Vec<u8>>, verdicts: Vec<FlowVerdict>) -> Plan {
        let mut flows: HashMap<Key, (usize, Dir)> = HashMap::new();
        for (i, v) in verdicts.iter().enumerate() {
            let k = Key::of_verdict(v);
            flows.insert(k.reversed(), (i, Dir::Reverse));
            flows.insert(k, (i, Dir::Forward));
        }
        let mut plan = Plan {
            templates: Vec::with_capacity(frames.len()),
            groups: Vec::new(),
            verdicts,
            by_key: hashbrown::HashMap::new(),
        };
        for bytes in frames {
            let key = Key::of_frame(&bytes);
            let (flow, dir) = match key.and_then(|k| flows.get(&k)) {
                Some(&(i, d)) => (Some(i), d),
                None => (None, Dir::Forward),
            };
            let groups = &mut plan.groups;
            let group = *plan.by_key.entry(key).or_insert_with(|| {
                groups.push(Group { flow, dir, key });
                (groups.len() - 1) as u32
            });
            let slot =
                signature::slot(&bytes).map(|off| (off, signature::original_sum(&bytes, off)));
            plan.templates.push(Template {
                bytes,
                slot,
                dir,
                group,
            });
        }
        plan
    }

    /// Reads a pcap (Ethernet link type) and an optional sidecar.
    pub fn load(pcap: &Path, verdicts: Option<&Path>) -> Result<Plan> {
        let frames = read_pcap(pcap)?;
        let verdicts = match verdicts {
            Some(p) => crate::verdicts::read(p)?,
            None => Vec::new(),
        };
        Ok(Plan::new(frames, verdicts))
    }

    /// The group of a received frame that carries no stamp.
    pub fn group_of(&self, frame: &[u8]) -> Option<u32> {
        self.by_key.get(&Key::of_frame(frame)).copied()
    }

    /// [`Plan::group_of`] for a frame already parsed (`None`: it did not parse).
    pub fn group_of_parsed(&self, p: Option<&Parsed>) -> Option<u32> {
        self.by_key.get(&p.and_then(Key::of)).copied()
    }

    /// The largest frame.
    pub fn max_frame(&self) -> usize {
        self.templates
            .iter()
            .map(|t| t.bytes.len())
            .max()
            .unwrap_or(0)
    }

    /// Templates that carry a stamp.
    pub fn stamped(&self) -> usize {
        self.templates.iter().filter(|t| t.slot.is_some()).count()
    }
}

/// The records of an Ethernet pcap.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let err = |reason: String| Error::Pcap {
        path: path.to_owned(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    let mut reader = PcapReader::new(file).map_err(|e| err(e.to_string()))?;
    let link = reader.header().datalink;
    if link != DataLink::ETHERNET {
        return Err(err(format!(
            "link type {link:?}; only Ethernet can be sent"
        )));
    }
    let mut frames = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.map_err(|e| err(format!("record {}: {e}", frames.len())))?;
        frames.push(pkt.data.into_owned());
    }
    if frames.is_empty() {
        return Err(Error::EmptyPcap(path.to_owned()));
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdicts::Expect;

    fn verdict(flow: u32, k: &Key, expect: Expect) -> FlowVerdict {
        FlowVerdict {
            flow,
            proto: k.proto,
            src: k.src,
            sport: k.sport,
            dst: k.dst,
            dport: k.dport,
            vlan: k.vlan,
            expect,
            decision: String::new(),
            rule_id: None,
            packets: 1,
            reply_packets: 1,
        }
    }

    fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, len: usize) -> Vec<u8> {
        use crate::frame::{FrameSpec, IpSpec, L4Spec};
        use net::ethernet::MacAddr;
        let spec = FrameSpec {
            src_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            dst_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            vlan: None,
            ip: IpSpec::from_addrs(IpAddr::from(src), IpAddr::from(dst)).unwrap(),
            l4: L4Spec::Udp { sport, dport },
        };
        spec.build(&vec![0u8; len]).unwrap()
    }

    #[test]
    fn icmp_queries_and_replies_are_told_apart_by_type() {
        let k = |ty: u16, src: [u8; 4], dst: [u8; 4]| Key {
            vlan: None,
            proto: 1,
            src: IpAddr::from(src),
            dst: IpAddr::from(dst),
            sport: ty,
            dport: 0,
        };
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        assert_eq!(k(8, a, b).reversed(), k(0, b, a));
        assert_eq!(k(13, a, b).reversed(), k(14, b, a));
        assert_ne!(k(8, a, b).reversed(), k(13, a, b).reversed());
        let v6 = Key {
            proto: 58,
            sport: 128,
            ..k(0, a, b)
        };
        assert_eq!(v6.reversed().sport, 129);
    }

    #[test]
    fn replies_go_the_other_way_and_unlabelled_packets_forward() {
        let a = udp([10, 0, 0, 1], [10, 0, 0, 2], 1000, 53, 40);
        let b = udp([10, 0, 0, 2], [10, 0, 0, 1], 53, 1000, 4);
        let c = udp([10, 0, 0, 3], [10, 0, 0, 4], 1, 2, 40);
        let k = Key::of_frame(&a).unwrap();
        let plan = Plan::new(
            vec![a.clone(), b.clone(), c.clone(), a.clone()],
            vec![verdict(0, &k, Expect::Pass)],
        );
        let dirs: Vec<Dir> = plan.templates.iter().map(|t| t.dir).collect();
        assert_eq!(
            dirs,
            [Dir::Forward, Dir::Reverse, Dir::Forward, Dir::Forward]
        );
        assert_eq!(plan.groups.len(), 3);
        assert_eq!(plan.templates[0].group, plan.templates[3].group);
        assert_eq!(plan.groups[0].flow, Some(0));
        assert_eq!(plan.groups[1].flow, Some(0));
        assert_eq!(plan.groups[2].flow, None);
        assert!(plan.templates[0].slot.is_some());
        assert!(plan.templates[1].slot.is_none(), "4-byte payload: no room");
        assert_eq!(plan.group_of(&b), Some(1));
        assert_eq!(plan.group_of(&[0u8; 10]), None);
    }
}
