//! The `attack` workload: hostile and malformed traffic, to check that the
//! gateway drops and counts it without harm.
//!
//! Every packet is built with the `net` views; the malformed kinds break
//! exactly one length or offset field (the IPv4 header checksum is
//! recomputed after, so a checksum-verifying stage sees only the intended
//! defect; transport checksums are left as computed before the change) and [`Kind::expected_error`] names the [`ParseError`] that
//! `net::parse` — the dataplane's parser — must report for them.
//!
//! ## Hash collisions
//!
//! The dataplane hashes flow keys with foldhash keyed by a per-boot random
//! seed, so no fixed set of tuples collides in *its* table: finding one
//! needs the seed, which never leaves the process. `hash-collide`
//! therefore sends two kinds of fixed, low-entropy key sets, alternating:
//!
//! - **one field varies**: the same addresses and destination port, source
//!   ports 1024, 1025, ... — the pattern that bucket-index hashes built
//!   from a few low bits, or from a port alone, put in few buckets;
//! - **XOR-symmetric**: `src = S ^ k`, `dst = D ^ k`, `sport = P ^ j`,
//!   `dport = Q ^ j`, so `src ^ dst` and `sport ^ dport` are the same for
//!   every tuple: every one of them collides under an unkeyed XOR-fold
//!   hash (a common hand-written flow hash, and symmetric by design).
//!
//! A keyed hash spreads both sets evenly, so they measure that the table's
//! hashing does not degrade on structured keys (lookup cost, occupancy,
//! probe lengths stay flat), which a weak hash would fail; they do not
//! force collisions in the dataplane's table, and this tool does not claim
//! they do.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::str::FromStr;

use net::parse::Layer;
use net::tcp::TcpFlags;
use net::{Fragment, ParseError};

use crate::conversation::Written;
use crate::error::{Error, Result};
use crate::frame::{pattern, FrameSpec, IpSpec, L4Spec};
use crate::pcap::PcapSink;
use crate::rng::SplitMix64;

/// One kind of hostile traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// TCP SYNs from random sources to the target.
    SynFlood,
    /// TCP ACKs (no connection) from random sources.
    AckFlood,
    /// UDP datagrams from random sources.
    UdpFlood,
    /// SYNs from one source to successive destination ports.
    PortScan,
    /// A first fragment holding only 8 bytes of the TCP header, then the
    /// rest (IPv4 and IPv6 fragment header).
    FragTiny,
    /// Two fragments whose data overlap (the second rewrites the end of the
    /// TCP header and the start of the data).
    FragOverlap,
    /// A first and a middle fragment of a datagram whose last fragment
    /// never comes.
    FragIncomplete,
    /// IPv4 IHL below 5 or past the end of the frame.
    BadIhl,
    /// TCP header cut short by the IP length.
    TruncatedTcp,
    /// IPv4 total length past the frame or below the header length.
    BadTotalLength,
    /// IPv6 payload length past the frame.
    BadPayloadLength,
    /// UDP length below 8 or past the datagram.
    BadUdpLength,
    /// TCP data offset below 5 or past the segment.
    BadTcpOffset,
    /// Low-entropy tuple sets (see the module documentation).
    HashCollide,
}

impl Kind {
    /// Every kind, in `--kind` order.
    pub const ALL: [Kind; 14] = [
        Kind::SynFlood,
        Kind::AckFlood,
        Kind::UdpFlood,
        Kind::PortScan,
        Kind::FragTiny,
        Kind::FragOverlap,
        Kind::FragIncomplete,
        Kind::BadIhl,
        Kind::TruncatedTcp,
        Kind::BadTotalLength,
        Kind::BadPayloadLength,
        Kind::BadUdpLength,
        Kind::BadTcpOffset,
        Kind::HashCollide,
    ];

    /// The `--kind` name.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::SynFlood => "syn-flood",
            Kind::AckFlood => "ack-flood",
            Kind::UdpFlood => "udp-flood",
            Kind::PortScan => "port-scan",
            Kind::FragTiny => "frag-tiny",
            Kind::FragOverlap => "frag-overlap",
            Kind::FragIncomplete => "frag-incomplete",
            Kind::BadIhl => "bad-ihl",
            Kind::TruncatedTcp => "truncated-tcp",
            Kind::BadTotalLength => "bad-total-length",
            Kind::BadPayloadLength => "bad-payload-length",
            Kind::BadUdpLength => "bad-udp-length",
            Kind::BadTcpOffset => "bad-tcp-offset",
            Kind::HashCollide => "hash-collide",
        }
    }

    /// What `net::parse` reports for every packet of a malformed kind;
    /// `None` for kinds whose packets parse. (`frag-tiny`'s first
    /// fragments are rejected as a truncated TCP header; its other
    /// fragments parse, so it has no single answer and returns `None`.)
    pub const fn expected_error(self) -> Option<ParseError> {
        match self {
            Kind::BadIhl => Some(ParseError::BadIhl),
            Kind::TruncatedTcp => Some(ParseError::Truncated { layer: Layer::Tcp }),
            Kind::BadTotalLength => Some(ParseError::BadTotalLength),
            Kind::BadPayloadLength => Some(ParseError::BadPayloadLength),
            Kind::BadUdpLength => Some(ParseError::BadUdpLength),
            Kind::BadTcpOffset => Some(ParseError::BadTcpDataOffset),
            _ => None,
        }
    }

    /// Whether the kind exists for this family (IHL and total length are
    /// IPv4 fields, the payload length an IPv6 one).
    pub const fn supports(self, v6: bool) -> bool {
        match self {
            Kind::BadIhl | Kind::BadTotalLength => !v6,
            Kind::BadPayloadLength => v6,
            _ => true,
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown kind '{s}'; one of: {}", names.join(", "))
            })
    }
}

/// A kind with its relative weight: `syn-flood=3` (weight 1 if omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Weighted {
    /// The kind.
    pub kind: Kind,
    /// Relative share of the packets, 1..=1000.
    pub weight: u32,
}

impl FromStr for Weighted {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Weighted, String> {
        let (name, weight) = match s.split_once('=') {
            Some((n, w)) => {
                let w: u32 = w
                    .parse()
                    .map_err(|_| format!("weight '{w}' of '{n}' is not a number"))?;
                if !(1..=1000).contains(&w) {
                    return Err(format!("weight {w} of '{n}' is not in 1..=1000"));
                }
                (n, w)
            }
            None => (s, 1),
        };
        Ok(Weighted {
            kind: name.parse()?,
            weight,
        })
    }
}

/// Address family mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only (kinds that exist only for IPv6 stay IPv6).
    V4,
    /// IPv6 only (kinds that exist only for IPv4 stay IPv4).
    V6,
    /// Each event draws its family.
    Both,
}

/// What the `attack` subcommand generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackConfig {
    /// Kinds and weights (`--kind`).
    pub kinds: Vec<Weighted>,
    /// Packets to write (`--count`).
    pub count: u64,
    /// The attacked host (`--target`), IPv4.
    pub target_v4: Ipv4Addr,
    /// The attacked host (`--target6`), IPv6.
    pub target_v6: Ipv6Addr,
    /// Family (`--family`).
    pub family: Family,
    /// VLAN id of every frame (`--vlan`).
    pub vlan: Option<u16>,
    /// Seed (`--seed`).
    pub seed: u64,
}

/// Most packets one run may write.
pub const MAX_COUNT: u64 = 1 << 26;

/// One generated packet and the kind it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttackPacket {
    /// The kind.
    pub kind: Kind,
    /// Index of the event (one packet, or a fragment train) it belongs to.
    pub event: u64,
    /// The frame (FCS excluded).
    pub frame: Vec<u8>,
}

/// A random unicast global-looking source: IPv4 first octet 1..=223 but
/// not 10 or 127; IPv6 in 2000::/3.
fn random_src(rng: &mut SplitMix64, v6: bool) -> IpAddr {
    if v6 {
        let a = (rng.next_u128() & !(0b111u128 << 125)) | (0b001u128 << 125);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        loop {
            let a = rng.next_u32();
            let first = a >> 24;
            if (1..=223).contains(&first) && first != 10 && first != 127 {
                return IpAddr::V4(Ipv4Addr::from(a));
            }
        }
    }
}

/// State shared across the events of a run (the scanner's next port, the
/// collision sets' counters).
struct Gen<'a> {
    cfg: &'a AttackConfig,
    rng: SplitMix64,
    scan_src: [IpAddr; 2],
    scan_port: u16,
    collide: u32,
    ident: u32,
}

impl Gen<'_> {
    /// The frame of `l4` from `src` to `dst`, tagged as configured, IPv4 identification from the event
    /// counter.
    fn spec(&self, src: IpAddr, dst: IpAddr, l4: L4Spec) -> FrameSpec {
        let ip = IpSpec::from_addrs(src, dst).expect("attack addresses share a family");
        FrameSpec {
            vlan: self.cfg.vlan,
            // IPv4 identifications are 16 bits wide: the counter wraps there.
            ..FrameSpec::new(ip.with_ident(self.ident as u16), l4)
        }
    }

    /// [`spec`](Self::spec) built into a padded frame; generated frames always fit.
    fn build(&self, src: IpAddr, dst: IpAddr, l4: L4Spec, payload: &[u8]) -> Vec<u8> {
        self.spec(src, dst, l4)
            .build_padded(payload)
            .expect("attack frames fit their length fields")
    }

    fn target(&self, v6: bool) -> IpAddr {
        if v6 {
            self.cfg.target_v6.into()
        } else {
            self.cfg.target_v4.into()
        }
    }

    /// One event of `kind`: one packet, or a fragment train.
    fn event(&mut self, kind: Kind, v6: bool) -> Vec<Vec<u8>> {
        self.ident = self.ident.wrapping_add(1);
        let dst = self.target(v6);
        let src = random_src(&mut self.rng, v6);
        let sport = self.rng.range_inclusive(1024, 65535) as u16;
        let seq = self.rng.next_u32();
        match kind {
            Kind::SynFlood => {
                let t = L4Spec::tcp(sport, 80, seq, 0, TcpFlags::SYN);
                vec![self.build(src, dst, t, &[])]
            }
            Kind::AckFlood => {
                let ack = self.rng.next_u32();
                let t = L4Spec::tcp(sport, 80, seq, ack, TcpFlags::ACK);
                vec![self.build(src, dst, t, &[])]
            }
            Kind::UdpFlood => {
                let dport = self.rng.range_inclusive(1, 65535) as u16;
                let t = L4Spec::Udp { sport, dport };
                vec![self.build(src, dst, t, &pattern(18, 0))]
            }
            Kind::PortScan => {
                let src = self.scan_src[usize::from(v6)];
                let dport = self.scan_port;
                self.scan_port = self.scan_port.checked_add(1).unwrap_or(1);
                let t = L4Spec::tcp(sport, dport, seq, 0, TcpFlags::SYN);
                vec![self.build(src, dst, t, &[])]
            }
            Kind::FragTiny | Kind::FragOverlap | Kind::FragIncomplete => {
                let t = L4Spec::tcp(sport, 80, seq, 0, TcpFlags::SYN);
                // A 20-byte header and 44 bytes of data: 64 bytes, 8 blocks.
                let spec = self.spec(src, dst, t);
                let seg = spec.segment(&pattern(44, 0x40)).expect("a 64-byte segment");
                let ident = self.ident;
                let frag = |offset: u16, more: bool, data: &[u8]| {
                    let f = Fragment {
                        offset,
                        more,
                        ident,
                    };
                    spec.fragment(Some(f), data).expect("fragments fit")
                };
                match kind {
                    Kind::FragTiny => vec![frag(0, true, &seg[..8]), frag(8, false, &seg[8..])],
                    Kind::FragOverlap => {
                        // The second fragment starts at 16, inside the
                        // first's 24 bytes, with different bytes there.
                        let mut second = seg[16..].to_vec();
                        second[..8].fill(0xee);
                        vec![frag(0, true, &seg[..24]), frag(16, false, &second)]
                    }
                    _ => vec![frag(0, true, &seg[..24]), frag(24, true, &seg[24..48])],
                }
            }
            Kind::BadIhl => {
                let t = L4Spec::tcp(sport, 80, seq, 0, TcpFlags::SYN);
                let mut f = self.build(src, dst, t, &[]);
                let l3 = self.l3_offset();
                // IHL 4 (below the minimum) or 15 (60 bytes, past the 46
                // bytes after the Ethernet header here), alternating.
                let ihl = if self.ident & 1 == 0 { 4 } else { 15 };
                f[l3] = 0x40 | ihl;
                refill_ipv4_checksum(&mut f, l3, usize::from(ihl) * 4);
                vec![f]
            }
            Kind::TruncatedTcp => {
                let t = L4Spec::tcp(sport, 80, seq, 0, TcpFlags::SYN);
                let spec = self.spec(src, dst, t);
                let seg = spec.segment(&[]).expect("a 20-byte segment");
                // Only 12 bytes of the 20-byte header, and the IP length
                // says so: the frame ends (before padding) inside TCP.
                vec![spec.fragment(None, &seg[..12]).expect("fits")]
            }
            Kind::BadTotalLength => {
                let t = udp_like(sport);
                let mut f = self.build(src, dst, t, &pattern(10, 0));
                let l3 = self.l3_offset();
                let avail = (f.len() - l3) as u16;
                let bogus = if self.ident & 1 == 0 { avail + 100 } else { 12 };
                f[l3 + 2..l3 + 4].copy_from_slice(&bogus.to_be_bytes());
                refill_ipv4_checksum(&mut f, l3, 20);
                vec![f]
            }
            Kind::BadPayloadLength => {
                let t = udp_like(sport);
                let mut f = self.build(src, dst, t, &pattern(10, 0));
                let l3 = self.l3_offset();
                let avail = (f.len() - l3 - 40) as u16;
                f[l3 + 4..l3 + 6].copy_from_slice(&(avail + 200).to_be_bytes());
                vec![f]
            }
            Kind::BadUdpLength => {
                let t = udp_like(sport);
                let mut f = self.build(src, dst, t, &pattern(10, 0));
                let l4 = self.l3_offset() + if v6 { 40 } else { 20 };
                let bogus: u16 = if self.ident & 1 == 0 { 4 } else { 18 + 64 };
                f[l4 + 4..l4 + 6].copy_from_slice(&bogus.to_be_bytes());
                vec![f]
            }
            Kind::BadTcpOffset => {
                let t = L4Spec::tcp(sport, 80, seq, 0, TcpFlags::SYN);
                let mut f = self.build(src, dst, t, &[]);
                let l4 = self.l3_offset() + if v6 { 40 } else { 20 };
                // Data offset 2 words, or 15 (60 bytes) in a 20-byte segment.
                let doff: u8 = if self.ident & 1 == 0 { 2 } else { 15 };
                f[l4 + 12] = (f[l4 + 12] & 0x0f) | (doff << 4);
                vec![f]
            }
            Kind::HashCollide => {
                let k = self.collide;
                self.collide = self.collide.wrapping_add(1);
                let base_src = collide_base(v6, 0x0a63_0000);
                let (src, dst, sport, dport) = if k & 1 == 0 {
                    let n = (k / 2) % 64512;
                    (base_src, dst, 1024 + n as u16, 443)
                } else {
                    let m = (k / 2) & 0xffff;
                    let j = ((k / 2) & 0x3ff) as u16;
                    (xor_low(base_src, m), xor_low(dst, m), 40000 ^ j, 443 ^ j)
                };
                let t = L4Spec::tcp(sport, dport, seq, 0, TcpFlags::SYN);
                vec![self.build(src, dst, t, &[])]
            }
        }
    }

    fn l3_offset(&self) -> usize {
        FrameSpec {
            vlan: self.cfg.vlan,
            ..FrameSpec::new(
                IpSpec::v4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
                udp_like(0),
            )
        }
        .l2_len()
    }
}

/// A UDP header to port 53 from `sport`.
fn udp_like(sport: u16) -> L4Spec {
    L4Spec::udp(sport, 53)
}

/// Fixed source of the collision sets: 10.99.x.y-style, or fd00:99::.
fn collide_base(v6: bool, v4: u32) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x99, 0, 0, 0, 0, 0, 0x100))
    } else {
        IpAddr::V4(Ipv4Addr::from(v4 | 0x0100))
    }
}

/// `a` with its low 16 bits XORed with `m`.
fn xor_low(a: IpAddr, m: u32) -> IpAddr {
    match a {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (m & 0xffff))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ u128::from(m & 0xffff))),
    }
}

/// Recomputes an IPv4 header checksum over `hl` header bytes at `l3`
/// (clamped to the frame), so that only the intended field is wrong.
fn refill_ipv4_checksum(f: &mut [u8], l3: usize, hl: usize) {
    let end = (l3 + hl.max(20)).min(f.len());
    f[l3 + 10..l3 + 12].fill(0);
    let c = net::checksum::checksum(&f[l3..end]);
    f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
}

/// Draws the run's packets.
pub fn generate(cfg: &AttackConfig) -> Result<Vec<AttackPacket>> {
    if cfg.kinds.is_empty() {
        return Err(Error::arg("--kind", "no kind given"));
    }
    if !(1..=MAX_COUNT).contains(&cfg.count) {
        return Err(Error::arg(
            "--count",
            format!("{} is not in 1..={MAX_COUNT}", cfg.count),
        ));
    }
    crate::conversation::check_vlans(cfg.vlan.as_slice())?;
    let mut rng = SplitMix64::new(cfg.seed);
    let scan_src = [random_src(&mut rng, false), random_src(&mut rng, true)];
    let mut g = Gen {
        cfg,
        rng,
        scan_src,
        scan_port: 1,
        collide: 0,
        ident: 0,
    };
    let total: u64 = cfg.kinds.iter().map(|w| u64::from(w.weight)).sum();
    let mut out = Vec::with_capacity(cfg.count as usize);
    let mut event = 0;
    while (out.len() as u64) < cfg.count {
        let mut pick = g.rng.below(total);
        let kind = cfg
            .kinds
            .iter()
            .find(|w| {
                let hit = pick < u64::from(w.weight);
                pick = pick.saturating_sub(u64::from(w.weight));
                hit
            })
            .map_or(cfg.kinds[0].kind, |w| w.kind);
        let v6 = match cfg.family {
            Family::V4 => false,
            Family::V6 => true,
            Family::Both => g.rng.below(2) == 1,
        };
        let v6 = if kind.supports(v6) { v6 } else { !v6 };
        for frame in g.event(kind, v6) {
            if (out.len() as u64) < cfg.count {
                out.push(AttackPacket { kind, event, frame });
            }
        }
        event += 1;
    }
    Ok(out)
}

/// The `attack` subcommand: writes the packets; returns the file summary
/// and the packet count per kind.
pub fn write_attack(cfg: &AttackConfig, path: &Path) -> Result<(Written, Vec<(Kind, u64)>)> {
    let packets = generate(cfg)?;
    let mut sink = PcapSink::create(path)?;
    let mut per_kind: Vec<(Kind, u64)> = Vec::new();
    let events = packets.last().map_or(0, |p| p.event as usize + 1);
    for p in &packets {
        sink.write(&p.frame)?;
        match per_kind.iter_mut().find(|(k, _)| *k == p.kind) {
            Some((_, n)) => *n += 1,
            None => per_kind.push((p.kind, 1)),
        }
    }
    per_kind.sort();
    let written = sink.finish()?;
    Ok((
        Written {
            packets: written,
            flows: events,
            unit: "attack events",
            path: path.to_owned(),
            sidecar: None,
        },
        per_kind,
    ))
}
