//! The `flows` workload: a deterministic set of distinct 5-tuples, each
//! sending a few identical-size packets, written flow-interleaved.

use core::fmt;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::frame::{
    FrameSpec, IpSpec, L4Proto, L4Spec, Layers, FCS_LEN, MAX_FRAME_SIZE, MIN_FRAME_SIZE,
};
use crate::pcap::PcapSink;
use crate::prefix::Prefix;
use crate::rng::SplitMix64;

/// Destination ports flows are drawn from: web, SSH, DNS, MySQL,
/// PostgreSQL, Modbus/TCP, S7comm (ISO-TSAP), HTTP alternate.
pub const DST_PORTS: [u16; 9] = [80, 443, 22, 53, 3306, 5432, 502, 102, 8080];
/// Source ports are drawn uniformly from this range, minus the
/// [`DST_PORTS`] in it (3306, 5432, 8080), so that every flow is
/// unambiguously client to server.
pub const SRC_PORTS: RangeInclusive<u16> = 1024..=65535;
/// Most flows one run may ask for (bounded to keep memory reasonable).
pub const MAX_FLOWS: u32 = 1 << 24;
/// Valid VLAN ids for `--vlan` (0 is priority tagging, 4095 reserved).
pub const VLAN_IDS: RangeInclusive<u16> = 1..=4094;

/// Default IPv4 source prefix.
pub const DEFAULT_SRC_NET_V4: Prefix = prefix_v4(Ipv4Addr::new(10, 0, 0, 0), 8);
/// Default IPv4 destination prefix.
pub const DEFAULT_DST_NET_V4: Prefix = prefix_v4(Ipv4Addr::new(172, 16, 0, 0), 12);
/// Default IPv6 source prefix.
pub const DEFAULT_SRC_NET_V6: Prefix = prefix_v6(Ipv6Addr::new(0xfd00, 0xa, 0, 0, 0, 0, 0, 0), 48);
/// Default IPv6 destination prefix.
pub const DEFAULT_DST_NET_V6: Prefix = prefix_v6(Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 0), 48);

const fn prefix_v4(a: Ipv4Addr, len: u8) -> Prefix {
    Prefix::from_parts(IpAddr::V4(a), len)
}

const fn prefix_v6(a: Ipv6Addr, len: u8) -> Prefix {
    Prefix::from_parts(IpAddr::V6(a), len)
}

/// What to generate; the fields mirror the `flows` subcommand's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowsConfig {
    /// Number of distinct 5-tuples (`--flows`).
    pub flows: u32,
    /// RFC 2544 frame size on the wire, FCS included (`--frame-size`).
    pub frame_size: usize,
    /// Packets sent by each flow (`--packets-per-flow`).
    pub packets_per_flow: u32,
    /// Transport protocol (`--proto`).
    pub proto: L4Proto,
    /// IPv6 instead of IPv4 (`--ipv6`).
    pub ipv6: bool,
    /// 802.1Q VLAN id (`--vlan`).
    pub vlan: Option<u16>,
    /// RNG seed (`--seed`).
    pub seed: u64,
    /// Source prefix (`--src-net`); `None` for the family's default.
    pub src_net: Option<Prefix>,
    /// Destination prefix (`--dst-net`); `None` for the family's default.
    pub dst_net: Option<Prefix>,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            flows: 4096,
            frame_size: 64,
            packets_per_flow: 1,
            proto: L4Proto::Tcp,
            ipv6: false,
            vlan: None,
            seed: 1,
            src_net: None,
            dst_net: None,
        }
    }
}

/// A transport 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FiveTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// One generated flow and the per-flow header state of its packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The flow's 5-tuple.
    pub tuple: FiveTuple,
    /// TCP sequence number of the first data byte.
    pub seq: u32,
    /// TCP acknowledgment number (constant: the peer sends nothing).
    pub ack: u32,
    /// IPv4 identification of the first packet; later ones increment.
    pub ident: u16,
    /// IPv6 flow label.
    pub flow_label: u32,
}

impl Flow {
    /// The headers of this flow's packet number `k` (counting from 0) when
    /// every packet carries `payload_len` bytes: TCP sequence numbers
    /// advance by the payload length, IPv4 idents by one.
    ///
    /// # Panics
    ///
    /// If the tuple mixes IPv4 and IPv6 addresses (generated flows never do).
    pub fn frame_spec(&self, k: u32, payload_len: usize, vlan: Option<u16>) -> FrameSpec {
        let t = &self.tuple;
        let ip = match (t.src, t.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => IpSpec::V4 {
                src,
                dst,
                ident: self.ident.wrapping_add(k as u16),
                ttl: 64,
                dont_frag: true,
            },
            (IpAddr::V6(src), IpAddr::V6(dst)) => IpSpec::V6 {
                src,
                dst,
                flow_label: self.flow_label,
                hop_limit: 64,
            },
            _ => unreachable!("flows never mix address families"),
        };
        let l4 = if t.proto == L4Proto::Tcp.ip_protocol().0 {
            // Sequence space wraps modulo 2^32.
            let advanced = (u64::from(k) * payload_len as u64) as u32;
            L4Spec::tcp_data(t.sport, t.dport, self.seq.wrapping_add(advanced), self.ack)
        } else {
            L4Spec::udp(t.sport, t.dport)
        };
        FrameSpec {
            vlan,
            ..FrameSpec::new(ip, l4)
        }
    }
}

/// A validated configuration with its generated flows, ready to emit.
#[derive(Debug, Clone)]
pub struct FlowSet {
    config: FlowsConfig,
    src_net: Prefix,
    dst_net: Prefix,
    flows: Vec<Flow>,
}

/// What [`FlowSet::write_pcap`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Records written.
    pub packets: u64,
    /// Frame size on the wire (FCS included).
    pub frame_size: usize,
    /// Distinct flows.
    pub flows: u32,
    /// The file.
    pub path: PathBuf,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} packets of {} bytes ({} flows) to {}",
            self.packets,
            self.frame_size,
            self.flows,
            self.path.display()
        )
    }
}

impl FlowSet {
    /// Checks `config` and draws its flows.
    pub fn new(config: &FlowsConfig) -> Result<FlowSet> {
        let (src_net, dst_net) = validate(config)?;
        let flows = generate(config, &src_net, &dst_net);
        Ok(FlowSet {
            config: config.clone(),
            src_net,
            dst_net,
            flows,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FlowsConfig {
        &self.config
    }

    /// The source prefix in use (given or default).
    pub fn src_net(&self) -> Prefix {
        self.src_net
    }

    /// The destination prefix in use (given or default).
    pub fn dst_net(&self) -> Prefix {
        self.dst_net
    }

    /// The flows, in generation order.
    pub fn flows(&self) -> &[Flow] {
        &self.flows
    }

    /// The header stack of every packet.
    pub fn layers(&self) -> Layers {
        layers(&self.config)
    }

    /// Length of each frame as captured (frame size less FCS).
    pub fn frame_len(&self) -> usize {
        self.config.frame_size - FCS_LEN
    }

    /// Total packets.
    pub fn packet_count(&self) -> u64 {
        self.flows.len() as u64 * u64::from(self.config.packets_per_flow)
    }

    /// Calls `emit` with every frame (without FCS) in output order:
    /// round robin over the flows, `packets_per_flow` rounds.
    pub fn for_each_frame(&self, mut emit: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let mut frame = vec![0u8; self.frame_len()];
        let payload_len = self.frame_len() - self.layers().header_len();
        // The payload stays all zeros: writing headers never touches it.
        for k in 0..self.config.packets_per_flow {
            for flow in &self.flows {
                flow.frame_spec(k, payload_len, self.config.vlan)
                    .write(&mut frame)
                    .expect("validated frame size fits the headers");
                emit(&frame)?;
            }
        }
        Ok(())
    }

    /// Writes every frame to a pcap file at `path`.
    pub fn write_pcap(&self, path: &Path) -> Result<Summary> {
        let mut sink = PcapSink::create(path)?;
        self.for_each_frame(|f| sink.write(f))?;
        let packets = sink.finish()?;
        Ok(Summary {
            packets,
            frame_size: self.config.frame_size,
            flows: self.config.flows,
            path: path.to_owned(),
        })
    }
}

/// Whether the generator may use `port` as a source port.
pub fn is_source_port(port: u16) -> bool {
    SRC_PORTS.contains(&port) && !DST_PORTS.contains(&port)
}

/// Number of source ports the generator draws from.
pub fn source_port_count() -> u32 {
    let excluded = DST_PORTS.iter().filter(|p| SRC_PORTS.contains(p)).count() as u32;
    u32::from(SRC_PORTS.end() - SRC_PORTS.start()) + 1 - excluded
}

fn layers(config: &FlowsConfig) -> Layers {
    Layers {
        vlan: config.vlan.is_some(),
        ipv6: config.ipv6,
        l4: config.proto,
    }
}

/// Checks every argument and their combinations; returns the prefixes to
/// use.
fn validate(config: &FlowsConfig) -> Result<(Prefix, Prefix)> {
    if config.flows == 0 || config.flows > MAX_FLOWS {
        return Err(Error::arg(
            "--flows",
            format!("{} is not in 1..={MAX_FLOWS}", config.flows),
        ));
    }
    if config.packets_per_flow == 0 {
        return Err(Error::arg("--packets-per-flow", "must be at least 1"));
    }
    let size = config.frame_size;
    if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&size) {
        return Err(Error::arg(
            "--frame-size",
            format!(
                "{size} is not in {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} \
                 (RFC 2544 frame size on the wire, {FCS_LEN}-byte FCS included)"
            ),
        ));
    }
    let layers = layers(config);
    if size < layers.min_frame_size() {
        return Err(Error::arg(
            "--frame-size",
            format!(
                "{size} is too small for {} headers ({} bytes) plus the {FCS_LEN}-byte FCS; \
                 the minimum is {}",
                layers.describe(),
                layers.header_len(),
                layers.min_frame_size()
            ),
        ));
    }
    if let Some(vid) = config.vlan {
        if !VLAN_IDS.contains(&vid) {
            return Err(Error::arg(
                "--vlan",
                format!(
                    "VLAN id {vid} is not in {}..={}",
                    VLAN_IDS.start(),
                    VLAN_IDS.end()
                ),
            ));
        }
    }
    let (def_src, def_dst) = if config.ipv6 {
        (DEFAULT_SRC_NET_V6, DEFAULT_DST_NET_V6)
    } else {
        (DEFAULT_SRC_NET_V4, DEFAULT_DST_NET_V4)
    };
    let src = config.src_net.unwrap_or(def_src);
    let dst = config.dst_net.unwrap_or(def_dst);
    for (arg, net) in [("--src-net", src), ("--dst-net", dst)] {
        match (config.ipv6, net.is_ipv6()) {
            (true, false) => {
                return Err(Error::arg(
                    arg,
                    format!("{net} is an IPv4 prefix but --ipv6 was given"),
                ))
            }
            (false, true) => {
                return Err(Error::arg(
                    arg,
                    format!("{net} is an IPv6 prefix; add --ipv6 to generate IPv6"),
                ))
            }
            _ => {}
        }
    }
    let available = tuple_space(&src, &dst);
    if u128::from(config.flows) > available {
        return Err(Error::arg(
            "--flows",
            format!(
                "{} distinct 5-tuples requested but --src-net {src} and --dst-net {dst} \
                 give only {available} ({} source ports, {} destination ports, \
                 source address != destination address)",
                config.flows,
                source_port_count(),
                DST_PORTS.len()
            ),
        ));
    }
    Ok((src, dst))
}

/// Number of distinct 5-tuples the generator can draw.
fn tuple_space(src: &Prefix, dst: &Prefix) -> u128 {
    let pairs = src
        .usable_hosts()
        .saturating_mul(dst.usable_hosts())
        .saturating_sub(src.usable_overlap(dst));
    let ports = u128::from(source_port_count()) * DST_PORTS.len() as u128;
    pairs.saturating_mul(ports)
}

/// Draws `config.flows` distinct 5-tuples and their per-flow state. The
/// sequence of draws depends only on the seed and the arguments, so the
/// result is reproducible.
fn generate(config: &FlowsConfig, src_net: &Prefix, dst_net: &Prefix) -> Vec<Flow> {
    let mut rng = SplitMix64::new(config.seed);
    let proto = config.proto.ip_protocol().0;
    let n = config.flows as usize;
    let mut seen = HashSet::with_capacity(n);
    let mut flows = Vec::with_capacity(n);
    while flows.len() < n {
        let src = src_net.random_host(&mut rng);
        let dst = dst_net.random_host(&mut rng);
        let sport =
            rng.range_inclusive(u64::from(*SRC_PORTS.start()), u64::from(*SRC_PORTS.end())) as u16;
        let dport = *rng.choose(&DST_PORTS);
        if src == dst || !is_source_port(sport) {
            continue;
        }
        let tuple = FiveTuple {
            src,
            dst,
            sport,
            dport,
            proto,
        };
        if !seen.insert(tuple) {
            continue;
        }
        flows.push(Flow {
            tuple,
            seq: rng.next_u32(),
            ack: rng.next_u32(),
            ident: rng.next_u32() as u16,
            flow_label: rng.next_u32() & 0x000f_ffff,
        });
    }
    flows
}

#[cfg(test)]
mod tests;
