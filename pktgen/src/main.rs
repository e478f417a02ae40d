//! `bulkhead-pktgen`: generates test traffic for the Bulkhead dataplane.

#![forbid(unsafe_code)]

mod gen_cli;

use std::path::PathBuf;
use std::process::ExitCode;

use bulkhead_pktgen::flows::{FlowSet, FlowsConfig};
use bulkhead_pktgen::frame::L4Proto;
use bulkhead_pktgen::prefix::Prefix;
use bulkhead_pktgen::Error;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// Bulkhead's traffic generator.
#[derive(Parser)]
#[command(name = "bulkhead-pktgen", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a pcap of N distinct TCP or UDP flows (deterministic from --seed)
    /// with fixed-size frames, flow-interleaved.
    Flows(FlowsArgs),
    /// Write a pcap of realistic conversations: TCP handshake, data both
    /// ways and FIN/RST teardown, UDP request/response, ICMP echo.
    Conversations(gen_cli::ConversationsArgs),
    /// Write a pcap of conversations drawn from a Bulkhead policy, allowed
    /// and denied, and FILE.verdicts.jsonl with each flow's expected verdict.
    Policy(gen_cli::PolicyArgs),
    /// Turn a ClassBench trace into a pcap (one packet per line), with an
    /// optional sidecar of each packet's expected first-match rule.
    Classbench(gen_cli::ClassbenchArgs),
    /// Write a pcap of hostile traffic: floods, port scan, fragment
    /// tricks, malformed headers, low-entropy tuple sets.
    Attack(gen_cli::AttackArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Proto {
    Tcp,
    Udp,
}

impl From<Proto> for L4Proto {
    fn from(p: Proto) -> Self {
        match p {
            Proto::Tcp => L4Proto::Tcp,
            Proto::Udp => L4Proto::Udp,
        }
    }
}

#[derive(Args)]
struct FlowsArgs {
    /// Output pcap file (Ethernet, microsecond timestamps 1 µs apart).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Number of distinct 5-tuples.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..))]
    flows: u32,
    /// Frame size on the wire in bytes, 4-byte FCS included (RFC 2544),
    /// 64..=9018; pcap records are 4 bytes shorter.
    #[arg(long, value_name = "BYTES", default_value_t = 64)]
    frame_size: usize,
    /// Packets per flow, written round robin (flow0 pkt0, flow1 pkt0, ...).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    packets_per_flow: u32,
    /// Transport: TCP established-flow data segments (ACK|PSH) or UDP datagrams.
    #[arg(long, value_enum, default_value_t = Proto::Tcp)]
    proto: Proto,
    /// Generate IPv6 (default prefixes fd00:a::/48 and fd00:b::/48).
    #[arg(long)]
    ipv6: bool,
    /// Insert an 802.1Q tag (TPID 0x8100) with this VLAN id, 1..=4094.
    #[arg(long, value_name = "VID")]
    vlan: Option<u16>,
    /// Seed of the deterministic generator: same seed, same file.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Source addresses are drawn from this prefix [default: 10.0.0.0/8, or
    /// fd00:a::/48 with --ipv6].
    #[arg(long, value_name = "PREFIX")]
    src_net: Option<Prefix>,
    /// Destination addresses are drawn from this prefix [default:
    /// 172.16.0.0/12, or fd00:b::/48 with --ipv6].
    #[arg(long, value_name = "PREFIX")]
    dst_net: Option<Prefix>,
}

impl FlowsArgs {
    fn config(&self) -> FlowsConfig {
        FlowsConfig {
            flows: self.flows,
            frame_size: self.frame_size,
            packets_per_flow: self.packets_per_flow,
            proto: self.proto.into(),
            ipv6: self.ipv6,
            vlan: self.vlan,
            seed: self.seed,
            src_net: self.src_net,
            dst_net: self.dst_net,
        }
    }
}

fn flows(args: &FlowsArgs) -> Result<(), Error> {
    let set = FlowSet::new(&args.config())?;
    let summary = set.write_pcap(&args.out)?;
    eprintln!("{summary}");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match &cli.command {
        Command::Flows(args) => ("flows", flows(args)),
        Command::Conversations(a) => ("conversations", gen_cli::conversations(a)),
        Command::Policy(a) => ("policy", gen_cli::policy(a)),
        Command::Classbench(a) => ("classbench", gen_cli::classbench(a)),
        Command::Attack(a) => ("attack", gen_cli::attack(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::InvalidArgument { .. }) => {
            // Report like clap's own argument errors: same format, usage of
            // the subcommand, exit code 2.
            let mut cmd = Cli::command();
            cmd.build();
            let sub = cmd
                .find_subcommand_mut(name)
                .expect("dispatched subcommand exists");
            sub.error(clap::error::ErrorKind::ValueValidation, e).exit()
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
