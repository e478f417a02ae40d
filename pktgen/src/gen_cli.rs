//! Command-line arguments of the pcap-generating subcommands other than
//! `flows` (`conversations`, `policy`, `classbench`, `attack`), kept apart
//! from `main.rs` so that it only dispatches.

use std::path::PathBuf;

use bulkhead_pktgen::attack::{self, write_attack, AttackConfig, Weighted};
use bulkhead_pktgen::classbench_gen::write_classbench;
use bulkhead_pktgen::conversation::{
    write_conversations, ConversationsConfig, Family, ProtoChoice, TeardownChoice,
};
use bulkhead_pktgen::policy_traffic::{load_policy, write_policy_traffic, PolicyTrafficConfig};
use bulkhead_pktgen::verdicts::Expect;
use bulkhead_pktgen::Error;
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
pub enum ConvProto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FamilyArg {
    Ipv4,
    Ipv6,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TeardownArg {
    Fin,
    Rst,
    Mixed,
}

impl From<FamilyArg> for Family {
    fn from(f: FamilyArg) -> Family {
        match f {
            FamilyArg::Ipv4 => Family::V4,
            FamilyArg::Ipv6 => Family::V6,
            FamilyArg::Both => Family::Both,
        }
    }
}

#[derive(Args)]
pub struct ConversationsArgs {
    /// Output pcap file (Ethernet, microsecond timestamps 1 µs apart).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Number of conversations.
    #[arg(long, value_name = "N", default_value_t = 64)]
    flows: u32,
    /// Data packets per conversation, both directions together (request,
    /// response, request, ...); TCP adds 3 handshake packets and 3 (FIN) or
    /// 1 (RST) teardown packets.
    #[arg(long, value_name = "M", default_value_t = 4)]
    packets: u32,
    /// Frame sizes on the wire (FCS included), 64..=9018, comma-separated;
    /// each data packet's size is drawn from the list. Handshake, teardown
    /// and other control packets are minimum-size.
    #[arg(
        long,
        value_name = "BYTES",
        value_delimiter = ',',
        default_value = "128"
    )]
    frame_size: Vec<usize>,
    /// Transports, comma-separated, assigned to the flows round robin.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "tcp,udp,icmp"
    )]
    proto: Vec<ConvProto>,
    /// Address family: IPv4, IPv6, or both (alternating flows).
    #[arg(long, value_enum, default_value_t = FamilyArg::Ipv4)]
    family: FamilyArg,
    /// 802.1Q VLAN ids, comma-separated, drawn per flow (default untagged).
    #[arg(long, value_name = "VID", value_delimiter = ',')]
    vlan: Vec<u16>,
    /// How TCP conversations end.
    #[arg(long, value_enum, default_value_t = TeardownArg::Mixed)]
    teardown: TeardownArg,
    /// Seed of the deterministic generator: same seed, same file.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
}

pub fn conversations(a: &ConversationsArgs) -> Result<(), Error> {
    let cfg = ConversationsConfig {
        flows: a.flows,
        packets: a.packets,
        frame_sizes: a.frame_size.clone(),
        protos: a
            .proto
            .iter()
            .map(|p| match p {
                ConvProto::Tcp => ProtoChoice::Tcp,
                ConvProto::Udp => ProtoChoice::Udp,
                ConvProto::Icmp => ProtoChoice::Icmp,
            })
            .collect(),
        family: a.family.into(),
        vlans: a.vlan.clone(),
        teardown: match a.teardown {
            TeardownArg::Fin => TeardownChoice::Fin,
            TeardownArg::Rst => TeardownChoice::Rst,
            TeardownArg::Mixed => TeardownChoice::Mixed,
        },
        seed: a.seed,
    };
    eprintln!("{}", write_conversations(&cfg, &a.out)?);
    Ok(())
}

#[derive(Args)]
pub struct PolicyArgs {
    /// The Bulkhead policy (JSON) traffic is drawn from.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Output pcap file; the expected verdicts go to FILE.verdicts.jsonl.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Flows per rule and case (inside the rule; service, source,
    /// destination or VLAN outside it) and for the default.
    #[arg(long, value_name = "N", default_value_t = 4)]
    flows_per_case: u32,
    /// Data packets per conversation, as for `conversations`.
    #[arg(long, value_name = "M", default_value_t = 2)]
    packets: u32,
    /// Frame sizes on the wire (FCS included), comma-separated.
    #[arg(
        long,
        value_name = "BYTES",
        value_delimiter = ',',
        default_value = "128"
    )]
    frame_size: Vec<usize>,
    /// Seed of the deterministic generator: same seed, same files.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
}

pub fn policy(a: &PolicyArgs) -> Result<(), Error> {
    let policy = load_policy(&a.policy)?;
    let cfg = PolicyTrafficConfig {
        per_case: a.flows_per_case,
        packets: a.packets,
        frame_sizes: a.frame_size.clone(),
        seed: a.seed,
    };
    let (written, verdicts) = write_policy_traffic(&policy, &cfg, &a.out)?;
    let pass = verdicts.iter().filter(|v| v.expect == Expect::Pass).count();
    eprintln!(
        "{written} ({pass} expected to pass, {} to drop)",
        verdicts.len() - pass
    );
    Ok(())
}

#[derive(Args)]
pub struct ClassbenchArgs {
    /// ClassBench trace (`src dst sport dport proto flags rule` per line).
    #[arg(long, value_name = "FILE")]
    trace: PathBuf,
    /// ClassBench rule file: also write FILE.rules.jsonl, each packet's
    /// expected first-match rule (0-based).
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Output pcap file, one packet per trace line.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Frame size on the wire (FCS included), 64..=9018.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    frame_size: usize,
    /// Only the first N trace lines.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
}

pub fn classbench(a: &ClassbenchArgs) -> Result<(), Error> {
    let w = write_classbench(&a.trace, a.rules.as_deref(), a.frame_size, a.limit, &a.out)?;
    eprintln!("{w}");
    Ok(())
}

#[derive(Args)]
pub struct AttackArgs {
    /// Output pcap file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Kinds with optional relative weights, comma-separated, e.g.
    /// `syn-flood=3,port-scan,bad-ihl`. Kinds: syn-flood, ack-flood,
    /// udp-flood, port-scan, frag-tiny, frag-overlap, frag-incomplete,
    /// bad-ihl, truncated-tcp, bad-total-length, bad-payload-length,
    /// bad-udp-length, bad-tcp-offset, hash-collide.
    #[arg(
        long,
        value_name = "KIND[=WEIGHT]",
        value_delimiter = ',',
        required = true
    )]
    kind: Vec<Weighted>,
    /// Packets to write.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    count: u64,
    /// The attacked IPv4 host.
    #[arg(long, value_name = "ADDR", default_value = "10.99.0.2")]
    target: std::net::Ipv4Addr,
    /// The attacked IPv6 host.
    #[arg(long, value_name = "ADDR", default_value = "fd00:99::2")]
    target6: std::net::Ipv6Addr,
    /// Address family; IPv4-only kinds (bad-ihl, bad-total-length) stay
    /// IPv4 and bad-payload-length stays IPv6.
    #[arg(long, value_enum, default_value_t = FamilyArg::Ipv4)]
    family: FamilyArg,
    /// Insert an 802.1Q tag with this VLAN id.
    #[arg(long, value_name = "VID")]
    vlan: Option<u16>,
    /// Seed of the deterministic generator: same seed, same file.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
}

pub fn attack(a: &AttackArgs) -> Result<(), Error> {
    let cfg = AttackConfig {
        kinds: a.kind.clone(),
        count: a.count,
        target_v4: a.target,
        target_v6: a.target6,
        family: match a.family {
            FamilyArg::Ipv4 => attack::Family::V4,
            FamilyArg::Ipv6 => attack::Family::V6,
            FamilyArg::Both => attack::Family::Both,
        },
        vlan: a.vlan,
        seed: a.seed,
    };
    let (written, per_kind) = write_attack(&cfg, &a.out)?;
    let kinds: Vec<String> = per_kind
        .iter()
        .map(|(k, n)| format!("{} {n}", k.name()))
        .collect();
    eprintln!("{written} ({})", kinds.join(", "));
    Ok(())
}
