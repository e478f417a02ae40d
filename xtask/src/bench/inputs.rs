//! The pcaps the rate suites replay (deterministic: same arguments, same bytes).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::Path;

use bulkhead_pktgen::frame::{FrameSpec, IpSpec, L4Spec, FCS_LEN};
use bulkhead_pktgen::pcap::PcapSink;
use bulkhead_pktgen::rng::SplitMix64;
use classbench::Rule;
use net::TcpFlags;

use crate::util::Result;

/// IEEE 802 local experimental EtherType: not IP, so a policy with `drop_other_ethertypes: false` passes it
/// without state.
const EXPERIMENTAL_ETHERTYPE: u16 = 0x88b5;

/// `count` frames of `frame_size` bytes on the wire (FCS excluded from the file), differing in their source
/// MAC, carrying an EtherType the open policy forwards statelessly.
pub fn l2_frames(path: &Path, frame_size: usize, count: u32) -> Result {
    let len = frame_size
        .checked_sub(FCS_LEN)
        .filter(|&l| l >= 14)
        .ok_or("frame size too small")?;
    let mut sink = PcapSink::create(path)?;
    for i in 0..count {
        let mut f = vec![0u8; len];
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, (i >> 8) as u8, i as u8]);
        f[12..14].copy_from_slice(&EXPERIMENTAL_ETHERTYPE.to_be_bytes());
        sink.write(&f)?;
    }
    sink.finish()?;
    Ok(())
}

/// What [`classbench_new_flows`] wrote.
pub struct NewFlowInput {
    pub packets: u32,
    pub rules_used: usize,
    pub rules_total: usize,
}

/// A random value of the prefix `(addr, len)`.
fn in_prefix(rng: &mut SplitMix64, (addr, len): (u32, u32)) -> u32 {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (addr & mask) | (rng.next_u32() & !mask)
}

fn in_range(rng: &mut SplitMix64, (lo, hi): (u16, u16)) -> u16 {
    rng.range_inclusive(lo as u64, hi as u64) as u16
}

/// `n` distinct connections, each the first packet of its flow (a TCP SYN, or a UDP datagram), with headers
/// drawn inside a rule chosen at random among the TCP/UDP (or any-protocol: TCP) rules of `rules` — so each
/// matches some rule — written as `frame_size`-byte frames.
pub fn classbench_new_flows(
    rules: &[Rule],
    n: u32,
    frame_size: usize,
    path: &Path,
) -> Result<NewFlowInput> {
    let usable: Vec<&Rule> = rules
        .iter()
        .filter(|r| r.proto.1 == 0 || matches!(r.proto.0, 6 | 17))
        .collect();
    if usable.is_empty() {
        return Err("no TCP/UDP rule to draw flows from".into());
    }
    let len = frame_size
        .checked_sub(FCS_LEN)
        .ok_or("frame size too small")?;
    let mut rng = SplitMix64::new(0x006e_6577_666c_6f77);
    let mut seen = HashSet::with_capacity(n as usize);
    let mut sink = PcapSink::create(path)?;
    let mut attempts = 0u64;
    while seen.len() < n as usize {
        attempts += 1;
        if attempts > 50 * n as u64 {
            return Err(format!("could only draw {} distinct flows", seen.len()).into());
        }
        let r = usable[rng.below(usable.len() as u64) as usize];
        let (src, dst) = (in_prefix(&mut rng, r.src), in_prefix(&mut rng, r.dst));
        let (sport, dport) = (in_range(&mut rng, r.sport), in_range(&mut rng, r.dport));
        let udp = r.proto.1 != 0 && r.proto.0 == 17;
        if !seen.insert((src, dst, sport, dport, udp)) {
            continue;
        }
        let l4 = if udp {
            L4Spec::udp(sport, dport)
        } else {
            L4Spec::Tcp {
                sport,
                dport,
                seq: rng.next_u32(),
                ack: 0,
                flags: TcpFlags::SYN,
                window: L4Spec::DEFAULT_WINDOW,
            }
        };
        let spec = FrameSpec::new(IpSpec::v4(Ipv4Addr::from(src), Ipv4Addr::from(dst)), l4);
        let payload = vec![0u8; len.saturating_sub(spec.header_len())];
        sink.write(&spec.build(&payload)?)?;
    }
    sink.finish()?;
    Ok(NewFlowInput {
        packets: n,
        rules_used: usable.len(),
        rules_total: rules.len(),
    })
}
