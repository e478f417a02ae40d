//! Realistic conversations: TCP (three-way handshake, data both ways with
//! correct sequence and acknowledgment numbers, FIN or RST teardown), UDP
//! request/response, ICMP/ICMPv6 echo request/reply, one-way ICMP messages
//! and raw-protocol exchanges, over IPv4 or IPv6, optionally VLAN-tagged.
//!
//! A [`Conversation`] knows its tuple and per-flow state and produces its
//! frames in wire order, each tagged with its [`Direction`];
//! [`write_interleaved`] writes many conversations round robin (packet 0
//! of every flow, then packet 1 of those that have one, ...) to a pcap.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use net::tcp::TcpFlags;

use crate::error::{Error, Result};
use crate::flows::{
    is_source_port, DEFAULT_DST_NET_V4, DEFAULT_DST_NET_V6, DEFAULT_SRC_NET_V4, DEFAULT_SRC_NET_V6,
    DST_PORTS, SRC_PORTS,
};
use crate::frame::{pattern, FrameSpec, IpSpec, L4Spec, FCS_LEN, MAX_FRAME_SIZE, MIN_FRAME_SIZE};
use crate::pcap::PcapSink;
use crate::prefix::Prefix;
use crate::rng::SplitMix64;

/// UDP services requests are sent to: DNS, NTP, SNMP, syslog, mDNS.
pub const UDP_PORTS: [u16; 5] = [53, 123, 161, 514, 5353];

/// What a conversation exchanges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// TCP: handshake, data, teardown.
    Tcp,
    /// UDP request/response.
    Udp,
    /// ICMP (IPv4) or ICMPv6 (IPv6) echo request/reply; `ident` is the echo
    /// identifier.
    Echo {
        /// Echo identifier.
        ident: u16,
    },
    /// One-way ICMP/ICMPv6 messages of this type and code (no reply).
    IcmpMessage {
        /// Type.
        ty: u8,
        /// Code.
        code: u8,
    },
    /// Any other IP protocol: payload right after the IP header, both ways.
    Raw {
        /// IP protocol number.
        proto: u8,
    },
}

/// How a TCP conversation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Teardown {
    /// FIN|ACK from the originator, FIN|ACK from the responder, final ACK.
    Fin,
    /// RST|ACK from the originator.
    Rst,
}

/// Which side sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The originator (client) → responder (server).
    Orig,
    /// Responder → originator.
    Reply,
}

/// One conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// What is exchanged.
    pub kind: Kind,
    /// Originator's address.
    pub src: IpAddr,
    /// Responder's address.
    pub dst: IpAddr,
    /// Originator's port (TCP/UDP; 0 otherwise).
    pub sport: u16,
    /// Responder's port (TCP/UDP; 0 otherwise).
    pub dport: u16,
    /// VLAN id of every frame, both ways.
    pub vlan: Option<u16>,
    /// Initial sequence numbers (originator, responder).
    pub isn: (u32, u32),
    /// First IPv4 identification of each side; IPv6 flow label (low 20 bits
    /// of the first).
    pub ident: (u16, u16),
    /// Frame length (FCS excluded) of each data packet in order; data
    /// packets alternate originator, responder, originator, ... (one-way
    /// kinds: all from the originator). A data packet always carries at
    /// least one byte, so it is longer than asked when the headers alone
    /// reach the length.
    pub data_frames: Vec<usize>,
    /// TCP teardown.
    pub teardown: Teardown,
}

impl Conversation {
    /// The IP protocol number.
    pub fn proto(&self) -> u8 {
        let v6 = self.src.is_ipv6();
        match self.kind {
            Kind::Tcp => 6,
            Kind::Udp => 17,
            Kind::Echo { .. } | Kind::IcmpMessage { .. } => {
                if v6 {
                    58
                } else {
                    1
                }
            }
            Kind::Raw { proto } => proto,
        }
    }

    /// The flow as the policy sees the originator's packets (ICMP: type in
    /// `sport`, code in `dport`).
    pub fn policy_flow(&self) -> policy::Flow {
        let (sport, dport) = match self.kind {
            Kind::Tcp | Kind::Udp => (self.sport, self.dport),
            Kind::Echo { .. } => (u16::from(self.echo_types().0), 0),
            Kind::IcmpMessage { ty, code } => (ty.into(), code.into()),
            Kind::Raw { .. } => (0, 0),
        };
        policy::Flow::new(self.src, self.dst, self.vlan, self.proto(), sport, dport)
    }

    /// Echo request and reply types of the family.
    fn echo_types(&self) -> (u8, u8) {
        if self.src.is_ipv6() {
            (128, 129)
        } else {
            (8, 0)
        }
    }

    /// Every frame in wire order with its direction.
    pub fn frames(&self) -> Vec<(Direction, Vec<u8>)> {
        let mut out = Vec::new();
        let ip = match IpSpec::from_addrs(self.src, self.dst)
            .expect("conversations never mix families")
        {
            IpSpec::V6 {
                src,
                dst,
                hop_limit,
                ..
            } => IpSpec::V6 {
                src,
                dst,
                flow_label: (u32::from(self.ident.0) << 4 | 0x5) & 0x000f_ffff,
                hop_limit,
            },
            v4 => v4,
        };
        let base = FrameSpec {
            vlan: self.vlan,
            ..FrameSpec::new(ip, L4Spec::Raw { proto: 0 })
        };
        let mut idents = (self.ident.0, self.ident.1);
        // Appends one frame, advancing that side's IPv4 identification.
        let mut push = |dir: Direction, t: &L4Spec, payload: &[u8]| {
            let (h, id) = match dir {
                Direction::Orig => (base, &mut idents.0),
                Direction::Reply => (base.reversed(), &mut idents.1),
            };
            let spec = FrameSpec {
                ip: h.ip.with_ident(*id),
                l4: *t,
                ..h
            };
            *id = id.wrapping_add(1);
            let frame = spec.build_padded(payload).expect("conversation frames fit");
            out.push((dir, frame));
        };
        let dir_of = |i: usize| {
            if i & 1 == 0 {
                Direction::Orig
            } else {
                Direction::Reply
            }
        };
        let hl = |t: &L4Spec| FrameSpec { l4: *t, ..base }.header_len();
        let payload = |frame_len: usize, t: &L4Spec, i: usize| {
            pattern(frame_len.saturating_sub(hl(t)).max(1), i as u8)
        };
        let (sp, dp) = (self.sport, self.dport);
        match self.kind {
            Kind::Tcp => {
                use TcpFlags as F;
                let (mut c, mut s) = (self.isn.0, self.isn.1);
                let tcp = |dir: Direction, seq, ack, flags| match dir {
                    Direction::Orig => L4Spec::tcp(sp, dp, seq, ack, flags),
                    Direction::Reply => L4Spec::tcp(dp, sp, seq, ack, flags),
                };
                push(Direction::Orig, &tcp(Direction::Orig, c, 0, F::SYN), &[]);
                c = c.wrapping_add(1);
                push(
                    Direction::Reply,
                    &tcp(Direction::Reply, s, c, F::SYN | F::ACK),
                    &[],
                );
                s = s.wrapping_add(1);
                push(Direction::Orig, &tcp(Direction::Orig, c, s, F::ACK), &[]);
                for (i, &len) in self.data_frames.iter().enumerate() {
                    let dir = dir_of(i);
                    let (seq, ack) = match dir {
                        Direction::Orig => (c, s),
                        Direction::Reply => (s, c),
                    };
                    let t = tcp(dir, seq, ack, F::ACK | F::PSH);
                    let data = payload(len, &t, i);
                    let n = data.len() as u32;
                    push(dir, &t, &data);
                    match dir {
                        Direction::Orig => c = c.wrapping_add(n),
                        Direction::Reply => s = s.wrapping_add(n),
                    }
                }
                match self.teardown {
                    Teardown::Fin => {
                        push(
                            Direction::Orig,
                            &tcp(Direction::Orig, c, s, F::FIN | F::ACK),
                            &[],
                        );
                        c = c.wrapping_add(1);
                        push(
                            Direction::Reply,
                            &tcp(Direction::Reply, s, c, F::FIN | F::ACK),
                            &[],
                        );
                        s = s.wrapping_add(1);
                        push(Direction::Orig, &tcp(Direction::Orig, c, s, F::ACK), &[]);
                    }
                    Teardown::Rst => {
                        push(
                            Direction::Orig,
                            &tcp(Direction::Orig, c, s, F::RST | F::ACK),
                            &[],
                        );
                    }
                }
            }
            Kind::Udp => {
                for (i, &len) in self.data_frames.iter().enumerate() {
                    let dir = dir_of(i);
                    let t = match dir {
                        Direction::Orig => L4Spec::Udp {
                            sport: sp,
                            dport: dp,
                        },
                        Direction::Reply => L4Spec::Udp {
                            sport: dp,
                            dport: sp,
                        },
                    };
                    push(dir, &t, &payload(len, &t, i));
                }
            }
            Kind::Echo { ident } => {
                let (req, rep) = self.echo_types();
                for (i, &len) in self.data_frames.iter().enumerate() {
                    let dir = dir_of(i);
                    let ty = if dir == Direction::Orig { req } else { rep };
                    let t = L4Spec::echo(ty, ident, (i / 2) as u16);
                    // A reply echoes the request's data.
                    let data = payload(len, &t, i & !1);
                    push(dir, &t, &data);
                }
            }
            Kind::IcmpMessage { ty, code } => {
                for (i, &len) in self.data_frames.iter().enumerate() {
                    let t = L4Spec::Icmp { ty, code, rest: 0 };
                    push(Direction::Orig, &t, &payload(len, &t, i));
                }
            }
            Kind::Raw { proto } => {
                for (i, &len) in self.data_frames.iter().enumerate() {
                    let t = L4Spec::Raw { proto };
                    push(dir_of(i), &t, &payload(len, &t, i));
                }
            }
        }
        out
    }
}

/// Per-conversation frame counts written by [`write_interleaved`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Originator-direction frames.
    pub orig: u64,
    /// Reply-direction frames.
    pub reply: u64,
}

/// Writes the conversations' frames round robin to a pcap at `path`,
/// skipping the reply direction of those for which `replies(i)` is false
/// (e.g. flows the gateway drops: the responder never sees the request).
/// Returns the counts per conversation and the total.
pub fn write_interleaved(
    convs: &[Conversation],
    path: &Path,
    replies: impl Fn(usize) -> bool,
) -> Result<(Vec<Counts>, u64)> {
    let mut sink = PcapSink::create(path)?;
    let frames: Vec<Vec<(Direction, Vec<u8>)>> = convs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let keep = replies(i);
            c.frames()
                .into_iter()
                .filter(|(d, _)| keep || *d == Direction::Orig)
                .collect()
        })
        .collect();
    let mut counts = vec![Counts::default(); convs.len()];
    let longest = frames.iter().map(Vec::len).max().unwrap_or(0);
    for k in 0..longest {
        for (i, f) in frames.iter().enumerate() {
            if let Some((dir, bytes)) = f.get(k) {
                sink.write(bytes)?;
                match dir {
                    Direction::Orig => counts[i].orig += 1,
                    Direction::Reply => counts[i].reply += 1,
                }
            }
        }
    }
    let total = sink.finish()?;
    Ok((counts, total))
}

/// Address families to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
    /// Alternating IPv4 and IPv6 flows.
    Both,
}

/// Transport mix of the `conversations` subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtoChoice {
    /// TCP conversations.
    Tcp,
    /// UDP request/response.
    Udp,
    /// ICMP/ICMPv6 echo.
    Icmp,
}

/// Teardown choice of the `conversations` subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeardownChoice {
    /// Every TCP conversation ends with FIN.
    Fin,
    /// Every TCP conversation ends with RST.
    Rst,
    /// Three in four end with FIN, the others with RST (drawn per flow).
    Mixed,
}

/// What the `conversations` subcommand generates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationsConfig {
    /// Number of conversations (`--flows`).
    pub flows: u32,
    /// Data packets per conversation (`--packets`), both directions
    /// together; TCP adds 3 handshake and 1 or 3 teardown packets.
    pub packets: u32,
    /// Frame sizes on the wire, FCS included (`--frame-size`), each data
    /// packet's drawn from the list.
    pub frame_sizes: Vec<usize>,
    /// Transports, assigned to flows round robin (`--proto`).
    pub protos: Vec<ProtoChoice>,
    /// Address families (`--family`).
    pub family: Family,
    /// VLAN ids drawn per flow (`--vlan`); empty: untagged.
    pub vlans: Vec<u16>,
    /// TCP teardown (`--teardown`).
    pub teardown: TeardownChoice,
    /// RNG seed (`--seed`).
    pub seed: u64,
}

/// Most conversations one run may ask for.
pub const MAX_CONVERSATIONS: u32 = 1 << 20;
/// Most data packets per conversation.
pub const MAX_PACKETS: u32 = 1 << 16;

/// Checks the configuration and draws its conversations.
pub fn conversations(cfg: &ConversationsConfig) -> Result<Vec<Conversation>> {
    if !(1..=MAX_CONVERSATIONS).contains(&cfg.flows) {
        return Err(Error::arg(
            "--flows",
            format!("{} is not in 1..={MAX_CONVERSATIONS}", cfg.flows),
        ));
    }
    if !(1..=MAX_PACKETS).contains(&cfg.packets) {
        return Err(Error::arg(
            "--packets",
            format!("{} is not in 1..={MAX_PACKETS}", cfg.packets),
        ));
    }
    check_frame_sizes(&cfg.frame_sizes)?;
    if cfg.protos.is_empty() {
        return Err(Error::arg("--proto", "no protocol given"));
    }
    check_vlans(&cfg.vlans)?;
    let mut rng = SplitMix64::new(cfg.seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(cfg.flows as usize);
    let mut i = 0u32;
    while out.len() < cfg.flows as usize {
        let v6 = match cfg.family {
            Family::V4 => false,
            Family::V6 => true,
            Family::Both => out.len() % 2 == 1,
        };
        let (src_net, dst_net) = if v6 {
            (DEFAULT_SRC_NET_V6, DEFAULT_DST_NET_V6)
        } else {
            (DEFAULT_SRC_NET_V4, DEFAULT_DST_NET_V4)
        };
        let proto = cfg.protos[out.len() % cfg.protos.len()];
        let c = draw(&mut rng, cfg, proto, &src_net, &dst_net);
        i += 1;
        let key = (c.kind, c.src, c.dst, c.sport, c.dport, c.vlan);
        if seen.insert(key) {
            out.push(c);
        } else if i > cfg.flows.saturating_mul(16) {
            // Unreachable with the default /8, /12 and /48 prefixes; a bound
            // keeps a mistake from looping forever.
            return Err(Error::arg(
                "--flows",
                "too many flows for the address space",
            ));
        }
    }
    Ok(out)
}

fn draw(
    rng: &mut SplitMix64,
    cfg: &ConversationsConfig,
    proto: ProtoChoice,
    src_net: &Prefix,
    dst_net: &Prefix,
) -> Conversation {
    let src = src_net.random_host(rng);
    let dst = dst_net.random_host(rng);
    let sport = loop {
        let p =
            rng.range_inclusive(u64::from(*SRC_PORTS.start()), u64::from(*SRC_PORTS.end())) as u16;
        if is_source_port(p) {
            break p;
        }
    };
    let (kind, sport, dport) = match proto {
        ProtoChoice::Tcp => (Kind::Tcp, sport, *rng.choose(&DST_PORTS)),
        ProtoChoice::Udp => (Kind::Udp, sport, *rng.choose(&UDP_PORTS)),
        ProtoChoice::Icmp => (
            Kind::Echo {
                ident: rng.next_u32() as u16,
            },
            0,
            0,
        ),
    };
    let vlan = (!cfg.vlans.is_empty()).then(|| *rng.choose(&cfg.vlans));
    let teardown = match cfg.teardown {
        TeardownChoice::Fin => Teardown::Fin,
        TeardownChoice::Rst => Teardown::Rst,
        TeardownChoice::Mixed => {
            if rng.below(4) == 0 {
                Teardown::Rst
            } else {
                Teardown::Fin
            }
        }
    };
    let data_frames = (0..cfg.packets)
        .map(|_| rng.choose(&cfg.frame_sizes) - FCS_LEN)
        .collect();
    Conversation {
        kind,
        src,
        dst,
        sport,
        dport,
        vlan,
        isn: (rng.next_u32(), rng.next_u32()),
        ident: (rng.next_u32() as u16, rng.next_u32() as u16),
        data_frames,
        teardown,
    }
}

/// Checks `--frame-size` values: RFC 2544 sizes, FCS included.
pub fn check_frame_sizes(sizes: &[usize]) -> Result<()> {
    if sizes.is_empty() {
        return Err(Error::arg("--frame-size", "no size given"));
    }
    for &s in sizes {
        if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&s) {
            return Err(Error::arg(
                "--frame-size",
                format!(
                    "{s} is not in {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} \
                     (frame size on the wire, {FCS_LEN}-byte FCS included)"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks `--vlan` values.
pub fn check_vlans(vlans: &[u16]) -> Result<()> {
    match vlans.iter().find(|v| !(1..=4094).contains(*v)) {
        Some(v) => Err(Error::arg(
            "--vlan",
            format!("VLAN id {v} is not in 1..=4094"),
        )),
        None => Ok(()),
    }
}

/// What a generating subcommand wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Frames in the pcap.
    pub packets: u64,
    /// How many of `unit` the file holds.
    pub flows: usize,
    /// What `flows` counts: "flows", "trace lines", "attack events".
    pub unit: &'static str,
    /// The pcap.
    pub path: PathBuf,
    /// The sidecar, if one was written.
    pub sidecar: Option<PathBuf>,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {} packets ({} {}) to {}",
            self.packets,
            self.flows,
            self.unit,
            self.path.display()
        )?;
        if let Some(s) = &self.sidecar {
            write!(f, ", sidecar {}", s.display())?;
        }
        Ok(())
    }
}

/// The `conversations` subcommand: draws and writes the conversations.
pub fn write_conversations(cfg: &ConversationsConfig, path: &Path) -> Result<Written> {
    let convs = conversations(cfg)?;
    let (_, packets) = write_interleaved(&convs, path, |_| true)?;
    Ok(Written {
        packets,
        flows: convs.len(),
        unit: "flows",
        path: path.to_owned(),
        sidecar: None,
    })
}

#[cfg(test)]
mod tests;
