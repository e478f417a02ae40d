//! A SYN flood beside an established-flow stream: the input of the flood benchmark and of the dataplane's
//! flood test. Everything goes from clients to one server ([`SERVER`], port 80), so a policy that allows the
//! server's port admits both and only connection tracking and the flood limits tell them apart.
//!
//! * The **established stream**: `flows` TCP connections from distinct clients in 10.1.0.0/16 (optionally
//!   opened by a three-way handshake, the server's SYN-ACK included, for strict tracking), then data segments
//!   round-robin over the connections, each connection's in sequence.
//! * The **flood**: SYNs from spoofed random sources in 100.64.0.0/10 and, for a share of them, from a few
//!   heavy sources in 172.16.0.0/24 that send many each (what per-source limits are for).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use net::TcpFlags;

use crate::frame::{FrameSpec, IpSpec, L4Spec};
use crate::pcap::PcapSink;
use crate::rng::SplitMix64;
use crate::Result;

/// The server every packet goes to.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
/// The server's port.
pub const SERVER_PORT: u16 = 80;
const CLIENT_SEQ: u32 = 1_000;
const SERVER_SEQ: u32 = 500_000;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodConfig {
    /// Seed of the flood's sources, ports and sequence numbers.
    pub seed: u64,
    /// Connections of the established stream.
    pub flows: u32,
    /// Data segments per connection.
    pub segments_per_flow: u32,
    /// Open each connection with a three-way handshake (strict tracking); without, the stream is data only
    /// (loose tracking picks it up mid-stream, and a replayed loop of it stays valid).
    pub handshakes: bool,
    /// SYNs in the flood.
    pub syns: u32,
    /// Heavy sources (0: every SYN from a random source).
    pub heavy_sources: u32,
    /// Share of the SYNs sent by the heavy sources, in [0, 1].
    pub heavy_share: f64,
    /// Frame length without FCS; frames are padded up to it (0: as short as the headers allow).
    pub frame_len: usize,
}

/// The `i`-th client of the established stream.
pub fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a01_0000 | (i & 0xffff))
}

/// Whether `addr` is a client of the established stream.
pub fn is_client(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V4(a) if u32::from(a) >> 16 == 0x0a01)
}

/// The `i`-th heavy flood source.
pub fn heavy_source(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xac10_0000 | (i & 0xff))
}

/// A padded frame; these headers always fit their length fields.
fn build(spec: FrameSpec, payload: usize, frame_len: usize) -> Vec<u8> {
    let mut f = spec
        .build_padded(&vec![0x5a; payload])
        .expect("flood frames fit their length fields");
    if f.len() < frame_len {
        f.resize(frame_len, 0);
    }
    f
}

fn spec(src: Ipv4Addr, dst: Ipv4Addr, l4: L4Spec) -> FrameSpec {
    FrameSpec::new(IpSpec::v4(src, dst), l4)
}

/// The established stream: the handshakes (if asked) first, then the data segments round-robin over the
/// connections.
pub fn established(cfg: &FloodConfig) -> Vec<Vec<u8>> {
    let payload = 64;
    let sport = |i: u32| 10_000 + (i % 50_000) as u16;
    let mut out = Vec::new();
    if cfg.handshakes {
        // Phase by phase (every SYN, then every SYN-ACK, then every ACK), as a round trip separates them on a
        // wire: a gateway judges a burst at a time, so a SYN and its answer in one burst would both be first
        // packets.
        let syn_ack = TcpFlags(TcpFlags::SYN.0 | TcpFlags::ACK.0);
        for i in 0..cfg.flows {
            let (c, p) = (client(i), sport(i));
            let syn = L4Spec::tcp(p, SERVER_PORT, CLIENT_SEQ, 0, TcpFlags::SYN);
            out.push(build(spec(c, SERVER, syn), 0, cfg.frame_len));
        }
        for i in 0..cfg.flows {
            let (c, p) = (client(i), sport(i));
            let sa = L4Spec::tcp(SERVER_PORT, p, SERVER_SEQ, CLIENT_SEQ + 1, syn_ack);
            out.push(build(spec(SERVER, c, sa), 0, cfg.frame_len));
        }
        for i in 0..cfg.flows {
            let (c, p) = (client(i), sport(i));
            let ack = L4Spec::tcp(
                p,
                SERVER_PORT,
                CLIENT_SEQ + 1,
                SERVER_SEQ + 1,
                TcpFlags::ACK,
            );
            out.push(build(spec(c, SERVER, ack), 0, cfg.frame_len));
        }
    }
    for k in 0..cfg.segments_per_flow {
        for i in 0..cfg.flows {
            let (c, p) = (client(i), sport(i));
            let seq = CLIENT_SEQ + 1 + k * payload as u32;
            let data = L4Spec::tcp_data(p, SERVER_PORT, seq, SERVER_SEQ + 1);
            out.push(build(spec(c, SERVER, data), payload, cfg.frame_len));
        }
    }
    out
}

/// The flood's SYNs, with the source of each.
pub fn syn_flood(cfg: &FloodConfig) -> Vec<(Ipv4Addr, Vec<u8>)> {
    let mut rng = SplitMix64::new(cfg.seed);
    let mut out = Vec::with_capacity(cfg.syns as usize);
    for _ in 0..cfg.syns {
        let heavy =
            cfg.heavy_sources > 0 && (rng.next_u64() as f64 / u64::MAX as f64) < cfg.heavy_share;
        let src = if heavy {
            heavy_source(rng.below(u64::from(cfg.heavy_sources)) as u32)
        } else {
            // 100.64.0.0/10: shared address space, never a real client here.
            Ipv4Addr::from(0x6440_0000 | (rng.next_u32() & 0x003f_ffff))
        };
        let sport = 1024 + rng.below(64_512) as u16;
        let syn = L4Spec::tcp(sport, SERVER_PORT, rng.next_u32(), 0, TcpFlags::SYN);
        out.push((src, build(spec(src, SERVER, syn), 0, cfg.frame_len)));
    }
    out
}

/// Writes `frames` to a pcap at `path`; returns how many.
pub fn write_pcap<'a>(path: &Path, frames: impl IntoIterator<Item = &'a [u8]>) -> Result<u64> {
    let mut sink = PcapSink::create(path)?;
    for f in frames {
        sink.write(f)?;
    }
    sink.finish()
}
