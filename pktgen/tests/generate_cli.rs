//! Runs the `conversations`, `policy`, `classbench` and `attack`
//! subcommands and checks what they write: the frames parse back with the
//! `net` views (and tcpdump) with correct checksums, have
//! the requested shape, the verdict sidecar agrees with the policy's
//! reference evaluation and with the packets, and the same seed gives the
//! same bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bulkhead_pktgen::classbench_gen::{carried, ExpectedRule};
use bulkhead_pktgen::verdicts::{self, Expect};
use classbench::first_match;
use net::icmpv4::Icmpv4Packet;
use net::icmpv6::Icmpv6Packet;
use net::ipv4::Ipv4Packet;
use net::ipv6::Ipv6Packet;
use net::tcp::{TcpFlags, TcpPacket};
use net::udp::UdpPacket;
use net::{parse, Parsed, L3, L4};
use pcap_file::pcap::PcapReader;
use policy::Policy;

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead-pktgen");

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pktgen-generate-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs `bulkhead-pktgen <sub> --out <out> <args>`, expecting success.
fn run(sub: &str, out: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .arg(sub)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{sub} {args:?} failed: {stderr}");
    stderr
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let mut r = PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut last = None;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        assert_eq!(p.orig_len as usize, p.data.len());
        // Timestamps strictly increase.
        assert!(last.is_none_or(|t: Duration| p.timestamp > t));
        last = Some(p.timestamp);
        out.push(p.data.into_owned());
    }
    out
}

fn l3_bytes<'a>(f: &'a [u8], p: &Parsed) -> &'a [u8] {
    &f[p.l3_offset..]
}

/// Verifies every checksum of a well-formed frame with the `net` views.
fn verify_checksums(f: &[u8]) {
    let p = parse(f).unwrap();
    match p.l3 {
        L3::Ipv4 { src, dst, .. } => {
            let ip = Ipv4Packet::new_checked(l3_bytes(f, &p)).unwrap();
            assert!(ip.verify_checksum());
            let seg = ip.into_payload();
            match p.l4 {
                L4::Tcp { .. } => {
                    assert!(TcpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v4(src, dst))
                }
                L4::Udp { .. } => {
                    assert!(UdpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v4(src, dst))
                }
                L4::Icmp { .. } => {
                    assert!(Icmpv4Packet::new_checked(seg).unwrap().verify_checksum())
                }
                // A raw protocol (e.g. GRE): no transport checksum.
                L4::None => {}
                ref other => panic!("unexpected {other:?}"),
            }
        }
        L3::Ipv6 { src, dst, .. } => {
            let seg = Ipv6Packet::new_checked(l3_bytes(f, &p))
                .unwrap()
                .into_payload();
            match p.l4 {
                L4::Tcp { .. } => {
                    assert!(TcpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(src, dst))
                }
                L4::Udp { .. } => {
                    assert!(UdpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(src, dst))
                }
                L4::Icmpv6 { .. } => assert!(Icmpv6Packet::new_checked(seg)
                    .unwrap()
                    .verify_checksum(src, dst)),
                // A raw protocol (e.g. GRE): no transport checksum.
                L4::None => {}
                ref other => panic!("unexpected {other:?}"),
            }
        }
        ref other => panic!("not IP: {other:?}"),
    }
}

fn tcpdump() -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tcpdump"))
            .find(|p| p.is_file())
    })
}

/// tcpdump markers of a bad checksum (IPv4 header, TCP, UDP, ICMP, ICMPv6).
const BAD_CHECKSUM: [&str; 5] = [
    "incorrect",
    "bad cksum",
    "bad udp cksum",
    "wrong icmp cksum",
    "bad icmp6 cksum",
];

/// tcpdump (required: `cargo xtask test` installs it) reads all `packets`
/// records, and with `-vv` flags no checksum and verifies `verified`
/// transport checksums (TCP, UDP, ICMPv6: the ones it reports as good).
fn check_with_tcpdump(path: &Path, packets: usize, verified: Option<usize>) {
    let tcpdump = tcpdump()
        .expect("tcpdump is not on PATH: this check needs it (the Debian package tcpdump)");
    let out = Command::new(&tcpdump)
        .args(["-nn", "-vv", "-r"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Records start with their timestamp at column 0; -vv continues IPv4
    // packets on an indented second line.
    let records = stdout.lines().filter(|l| l.starts_with("00:")).count();
    assert_eq!(records, packets);
    if let Some(verified) = verified {
        for bad in BAD_CHECKSUM {
            assert!(!stdout.contains(bad), "tcpdump says {bad}:\n{stdout}");
        }
        let ok = stdout.matches("(correct)").count()
            + stdout.matches("[udp sum ok]").count()
            + stdout.matches("[icmp6 sum ok]").count();
        assert_eq!(ok, verified, "transport checksums tcpdump verified");
    }
}

fn tcp_flags(p: &Parsed) -> Option<TcpFlags> {
    match p.l4 {
        L4::Tcp { flags, .. } => Some(flags),
        _ => None,
    }
}

/// A direction-independent key of a frame's conversation.
fn conv_key(p: &Parsed) -> (u8, [(IpAddr, u16); 2]) {
    let (s, d) = (p.src_ip().unwrap(), p.dst_ip().unwrap());
    let (sp, dp) = match p.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        // Both directions of an echo exchange carry its identifier.
        L4::Icmp { ident, .. } | L4::Icmpv6 { ident, .. } => (ident.unwrap(), ident.unwrap()),
        _ => (0, 0),
    };
    let mut ends = [(s, sp), (d, dp)];
    ends.sort();
    (p.ip_proto().unwrap().0, ends)
}

#[test]
fn conversations_have_the_requested_shape_and_parse_everywhere() {
    let path = tmp("conv.pcap");
    let stderr = run(
        "conversations",
        &path,
        &[
            "--flows",
            "9",
            "--packets",
            "4",
            "--proto",
            "tcp,udp,icmp",
            "--family",
            "both",
            "--vlan",
            "10,20",
            "--frame-size",
            "128,1518,9018",
            "--teardown",
            "fin",
            "--seed",
            "5",
        ],
    );
    // TCP: 3 + 4 + 3; UDP and ICMP: 4; three flows of each.
    let total = 3 * 10 + 3 * 4 + 3 * 4;
    assert!(
        stderr.contains(&format!("wrote {total} packets (9 flows)")),
        "{stderr}"
    );
    let frames = read_pcap(&path);
    assert_eq!(frames.len(), total);

    let mut convs: HashMap<_, Vec<Parsed>> = HashMap::new();
    let mut order = Vec::new();
    let mut v6 = 0;
    for f in &frames {
        verify_checksums(f);
        let p = parse(f).unwrap();
        let vid = p.vlans[0].expect("tagged");
        assert!(vid == 10 || vid == 20);
        assert_eq!(p.vlans[1], None);
        if matches!(p.l3, L3::Ipv6 { .. }) {
            v6 += 1;
        }
        let data = match p.l4 {
            L4::Tcp { payload_len, .. } => payload_len > 0,
            _ => true,
        };
        if data {
            // 128, 1518 or 9018 on the wire, less the FCS.
            assert!([124, 1514, 9014].contains(&f.len()), "{}", f.len());
        } else {
            assert!(
                f.len() == 60 || f.len() == 78 || f.len() == 82,
                "{}",
                f.len()
            );
        }
        let k = conv_key(&p);
        if !convs.contains_key(&k) {
            order.push(k);
        }
        convs.entry(k).or_default().push(p);
    }
    assert_eq!(convs.len(), 9);
    assert!(v6 > 0 && v6 < frames.len(), "both families: {v6}");
    use TcpFlags as F;
    let tcp_seq = [
        F::SYN,
        F::SYN | F::ACK,
        F::ACK,
        F::ACK | F::PSH,
        F::ACK | F::PSH,
        F::ACK | F::PSH,
        F::ACK | F::PSH,
        F::FIN | F::ACK,
        F::FIN | F::ACK,
        F::ACK,
    ];
    let (mut tcp, mut udp, mut icmp) = (0, 0, 0);
    for k in &order {
        let ps = &convs[k];
        // Every frame of a conversation carries the same VLAN.
        assert!(ps.iter().all(|p| p.vlans == ps[0].vlans));
        let first = ps[0];
        match first.l4 {
            L4::Tcp { .. } => {
                tcp += 1;
                let flags: Vec<_> = ps.iter().map(|p| tcp_flags(p).unwrap()).collect();
                assert_eq!(flags, tcp_seq);
                // Direction alternates as a real exchange does, and each
                // side acknowledges exactly what the other sent.
                let mut next = HashMap::new();
                for p in ps {
                    let L4::Tcp {
                        seq,
                        ack,
                        flags,
                        payload_len,
                        ..
                    } = p.l4
                    else {
                        unreachable!()
                    };
                    let me = p.src_ip().unwrap();
                    let peer = p.dst_ip().unwrap();
                    if let Some(&n) = next.get(&me) {
                        assert_eq!(seq, n, "sequence continues");
                    }
                    if flags.contains(F::ACK) {
                        assert_eq!(Some(&ack), next.get(&peer), "ack = peer's next seq");
                    }
                    let len = u32::from(payload_len) + u32::from(flags.intersects(F::SYN | F::FIN));
                    next.insert(me, seq.wrapping_add(len));
                }
            }
            L4::Udp { sport, dport } => {
                udp += 1;
                assert_eq!(ps.len(), 4);
                for (i, p) in ps.iter().enumerate() {
                    let want = if i % 2 == 0 {
                        (sport, dport)
                    } else {
                        (dport, sport)
                    };
                    assert_eq!(p.ports(), Some(want));
                }
            }
            L4::Icmp { .. } | L4::Icmpv6 { .. } => {
                icmp += 1;
                let types: Vec<u8> = ps
                    .iter()
                    .map(|p| match p.l4 {
                        L4::Icmp { ty, code: 0, .. } | L4::Icmpv6 { ty, code: 0, .. } => ty,
                        other => panic!("{other:?}"),
                    })
                    .collect();
                assert!(
                    types == [8, 0, 8, 0] || types == [128, 129, 128, 129],
                    "{types:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((tcp, udp, icmp), (3, 3, 3));
    let icmpv4 = frames
        .iter()
        .filter(|f| matches!(parse(f).unwrap().l4, L4::Icmp { .. }))
        .count();
    check_with_tcpdump(&path, frames.len(), Some(frames.len() - icmpv4));
}

#[test]
fn rst_teardown_and_minimum_sizes() {
    let path = tmp("rst.pcap");
    run(
        "conversations",
        &path,
        &[
            "--flows",
            "2",
            "--packets",
            "1",
            "--proto",
            "tcp",
            "--teardown",
            "rst",
            "--frame-size",
            "64",
        ],
    );
    let frames = read_pcap(&path);
    assert_eq!(frames.len(), 2 * 5);
    let flags: Vec<_> = frames
        .iter()
        .map(|f| tcp_flags(&parse(f).unwrap()).unwrap())
        .collect();
    use TcpFlags as F;
    // Round robin over the two flows.
    for (i, want) in [
        F::SYN,
        F::SYN | F::ACK,
        F::ACK,
        F::ACK | F::PSH,
        F::RST | F::ACK,
    ]
    .iter()
    .enumerate()
    {
        assert_eq!((flags[2 * i], flags[2 * i + 1]), (*want, *want));
    }
    assert!(frames.iter().all(|f| f.len() == 60));
    check_with_tcpdump(&path, frames.len(), Some(frames.len()));
}

#[test]
fn invalid_arguments_exit_2_and_name_the_argument() {
    for (sub, args, needle) in [
        ("conversations", &["--frame-size", "63"][..], "--frame-size"),
        ("conversations", &["--vlan", "4095"][..], "--vlan"),
        ("conversations", &["--flows", "0"][..], "--flows"),
        ("attack", &["--kind", "syn-flood=0"][..], "--kind"),
        (
            "attack",
            &["--kind", "syn-flood", "--count", "0"][..],
            "--count",
        ),
    ] {
        let out = Command::new(BIN)
            .arg(sub)
            .args(["--out", "/nonexistent/x.pcap"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{sub} {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{err}");
    }
    let out = Command::new(BIN)
        .args([
            "policy",
            "--policy",
            "/nonexistent.json",
            "--out",
            "/tmp/x.pcap",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.json"));
}

/// A policy exercising VLAN-listing segments, prefix selectors, label
/// selectors, a monitor-mode segment, reject, UDP source ports and a raw
/// protocol service, on top of the shipped one's shapes.
const POLICY: &str = r#"{
  "format": "bulkhead.policy/v1",
  "segments": [
    {"name": "plc", "prefixes": ["10.20.0.0/24", "fd00:20::/64"], "vlans": [20, 21], "labels": {"zone": "ot"}},
    {"name": "hmi", "prefixes": ["10.30.0.0/28"], "vlans": [20], "labels": {"zone": "ot", "role": "hmi"}},
    {"name": "it", "prefixes": ["192.168.0.0/16", "fd00:1::/64"], "labels": {"zone": "it"}},
    {"name": "lab", "prefixes": ["172.20.0.0/24"], "mode": "monitor"}
  ],
  "services": [
    {"name": "modbus", "protocol": "tcp", "ports": ["502"]},
    {"name": "web", "protocol": "tcp", "ports": ["80", "8000-8100"]},
    {"name": "ntp", "protocol": "udp", "ports": ["123"], "source_ports": ["123"]},
    {"name": "ping", "protocol": "icmp", "icmp_type": 8, "icmp_code": 0},
    {"name": "ping6", "protocol": "icmpv6", "icmp_type": 128},
    {"name": "gre", "protocol": 47}
  ],
  "rules": [
    {"id": 1, "name": "hmi-to-plc", "from": {"segment": "hmi"}, "to": {"segment": "plc"}, "service": "modbus", "action": "allow"},
    {"id": 2, "name": "it-web-hmi", "from": {"labels": {"zone": "it"}}, "to": {"labels": {"role": "hmi"}}, "service": "web", "action": "allow"},
    {"id": 3, "name": "ntp", "from": {"prefix": "10.20.0.0/24"}, "to": "any", "service": "ntp", "action": "allow"},
    {"id": 4, "name": "ping", "from": {"segment": "it"}, "to": {"labels": {"zone": "ot"}}, "service": "ping", "action": "allow"},
    {"id": 5, "name": "ping6", "from": {"segment": "it"}, "to": {"segment": "plc"}, "service": "ping6", "action": "allow", "mode": "monitor"},
    {"id": 6, "name": "no-gre", "from": "any", "to": {"segment": "plc"}, "service": "gre", "action": "reject"},
    {"id": 7, "name": "it-to-plc-web-monitored", "from": {"segment": "it"}, "to": {"segment": "plc"}, "service": "web", "action": "deny", "mode": "monitor"}
  ],
  "settings": {"default_action": "deny"}
}"#;

/// The originator-direction flow a frame belongs to, as the policy sees
/// it, and whether the frame is a reply (then the flow is mirrored back).
fn flow_of(p: &Parsed) -> (policy::Flow, policy::Flow) {
    let (s, d) = (p.src_ip().unwrap(), p.dst_ip().unwrap());
    let vlan = p.vlans[0];
    let proto = p.ip_proto().unwrap().0;
    let (sp, dp) = match p.l4 {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
        L4::Icmp { ty, code, .. } | L4::Icmpv6 { ty, code, .. } => (ty.into(), code.into()),
        _ => (0, 0),
    };
    let as_is = policy::Flow::new(s, d, vlan, proto, sp, dp);
    let mirrored = match p.l4 {
        // An echo reply belongs to the flow of the request it answers.
        L4::Icmp { ty: 0, .. } => policy::Flow::new(d, s, vlan, proto, 8, 0),
        L4::Icmpv6 { ty: 129, .. } => policy::Flow::new(d, s, vlan, proto, 128, 0),
        _ => policy::Flow::new(d, s, vlan, proto, dp, sp),
    };
    (as_is, mirrored)
}

fn check_policy_traffic(policy_json: &str, name: &str, args: &[&str]) {
    let policy = Policy::from_json(policy_json).unwrap();
    let policy_path = tmp(&format!("{name}.json"));
    std::fs::write(&policy_path, policy_json).unwrap();
    let path = tmp(&format!("{name}.pcap"));
    let mut all = vec!["--policy", policy_path.to_str().unwrap()];
    all.extend_from_slice(args);
    let stderr = run("policy", &path, &all);
    let sidecar = verdicts::sidecar_path(&path);
    assert!(stderr.contains(&sidecar.display().to_string()), "{stderr}");
    let verdicts = verdicts::read(&sidecar).unwrap();
    assert!(!verdicts.is_empty());

    // The sidecar is the reference evaluation.
    let mut by_flow = HashMap::new();
    for (i, v) in verdicts.iter().enumerate() {
        assert_eq!(v.flow as usize, i);
        let d = policy.evaluate(&v.policy_flow());
        assert_eq!(v.expect, Expect::from_passes(d.passes()), "{v:?}");
        assert_eq!(v.rule_id, verdicts::rule_id(&d), "{v:?}");
        assert_eq!(v.decision, verdicts::describe(&policy, &d));
        assert!(v.packets > 0);
        match v.expect {
            Expect::Drop => assert_eq!(v.reply_packets, 0, "{v:?}"),
            Expect::Pass => assert!(
                v.reply_packets > 0 || v.proto == 1 || v.proto == 58,
                "{v:?}"
            ),
        }
        assert!(
            by_flow.insert(v.policy_flow(), i).is_none(),
            "duplicate {v:?}"
        );
    }
    // Every rule is exercised, and both verdicts occur.
    for r in policy.rules() {
        assert!(
            verdicts.iter().any(|v| v.rule_id == Some(r.id)),
            "rule {} never decides",
            r.id
        );
    }
    assert!(verdicts.iter().any(|v| v.rule_id.is_none()));
    assert!(verdicts.iter().any(|v| v.expect == Expect::Pass));
    assert!(verdicts.iter().any(|v| v.expect == Expect::Drop));

    // The packets are the flows of the sidecar, in the counts it gives,
    // and re-evaluating each originator packet gives its verdict.
    let frames = read_pcap(&path);
    let mut counts = vec![(0u64, 0u64); verdicts.len()];
    for f in &frames {
        verify_checksums(f);
        let p = parse(f).unwrap();
        let (as_is, mirrored) = flow_of(&p);
        if let Some(&i) = by_flow.get(&as_is) {
            counts[i].0 += 1;
            let d = policy.evaluate(&as_is);
            assert_eq!(Expect::from_passes(d.passes()), verdicts[i].expect);
        } else {
            let i = *by_flow
                .get(&mirrored)
                .unwrap_or_else(|| panic!("frame of no flow: {p:?}"));
            counts[i].1 += 1;
        }
    }
    for (v, (o, r)) in verdicts.iter().zip(counts) {
        assert_eq!((v.packets, v.reply_packets), (o, r), "{v:?}");
    }
    let icmpv4 = frames
        .iter()
        .filter(|f| matches!(parse(f).unwrap().l4, L4::Icmp { .. }))
        .count();
    let raw = frames
        .iter()
        .filter(|f| matches!(parse(f).unwrap().l4, L4::None))
        .count();
    check_with_tcpdump(&path, frames.len(), Some(frames.len() - icmpv4 - raw));
}

#[test]
fn policy_sidecar_matches_reference_evaluation_and_packets() {
    check_policy_traffic(
        POLICY,
        "policy-custom",
        &["--flows-per-case", "3", "--packets", "3", "--seed", "9"],
    );
}

#[test]
fn shipped_policy_sidecar_matches_reference_evaluation_and_packets() {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/policy.json"),
    )
    .unwrap();
    check_policy_traffic(&shipped, "policy-shipped", &["--frame-size", "64,1518"]);
}

#[test]
fn policy_traffic_uses_segment_vlans_and_tags_outside_them() {
    let path = tmp("policy-vlan.pcap");
    let pol = tmp("policy-vlan.json");
    std::fs::write(&pol, POLICY).unwrap();
    run("policy", &path, &["--policy", pol.to_str().unwrap()]);
    let v = verdicts::read(&verdicts::sidecar_path(&path)).unwrap();
    // Rule 1 (hmi on VLAN 20 to plc on 20/21): its inside flows carry the
    // VLAN both segments list and pass; its VLAN-outside flows are
    // untagged or carry an id neither lists, and are dropped.
    let rule1 = |x: &&verdicts::Verdict| x.rule_id == Some(1);
    assert!(v.iter().filter(rule1).all(|x| x.vlan == Some(20)));
    assert!(v.iter().filter(rule1).count() >= 4);
    assert!(v
        .iter()
        .any(|x| x.vlan.is_none() && x.expect == Expect::Drop));
    assert!(v
        .iter()
        .any(|x| { x.vlan.is_some_and(|id| ![20, 21].contains(&id)) && x.expect == Expect::Drop }));
}

#[test]
fn classbench_trace_becomes_one_packet_per_line_with_expected_rules() {
    // acl1_1k's first lines hold TCP, UDP, ICMP and other protocols.
    let dir = classbench::dir();
    let (rules_path, trace_path) = (
        classbench::rules_path(&dir, "acl1_1k"),
        classbench::trace_path(&dir, "acl1_1k"),
    );
    let rules = classbench::read_rules(&rules_path).unwrap_or_else(|e| panic!("{e}"));
    let trace = classbench::read_trace(&trace_path).unwrap_or_else(|e| panic!("{e}"));
    let n = trace.len().min(3000);
    let path = tmp("cb.pcap");
    run(
        "classbench",
        &path,
        &[
            "--trace",
            trace_path.to_str().unwrap(),
            "--rules",
            rules_path.to_str().unwrap(),
            "--limit",
            &n.to_string(),
            "--frame-size",
            "128",
        ],
    );
    let frames = read_pcap(&path);
    assert_eq!(frames.len(), n);
    let mut side = Vec::new();
    for line in std::fs::read_to_string(format!("{}.rules.jsonl", path.display()))
        .unwrap()
        .lines()
    {
        side.push(serde_json::from_str::<ExpectedRule>(line).unwrap());
    }
    assert_eq!(side.len(), n);
    let mut transport = 0;
    for (i, (f, t)) in frames.iter().zip(&trace).enumerate() {
        assert_eq!(f.len(), 124);
        let p = parse(f).unwrap();
        assert_eq!(
            p.src_ip(),
            Some(IpAddr::from(std::net::Ipv4Addr::from(t.src)))
        );
        assert_eq!(
            p.dst_ip(),
            Some(IpAddr::from(std::net::Ipv4Addr::from(t.dst)))
        );
        assert_eq!(p.ip_proto().unwrap().0, t.proto);
        match t.proto {
            6 | 17 => {
                transport += 1;
                verify_checksums(f);
                assert_eq!(p.ports(), Some((t.sport, t.dport)));
                // For TCP and UDP the carried header is the trace's.
                assert_eq!(side[i].rule, first_match(&rules, t));
            }
            1 => {
                verify_checksums(f);
                assert!(matches!(p.l4, L4::Icmp { ty: 8, code: 0, .. }));
            }
            _ => assert_eq!(p.l4, L4::None),
        }
        let c = carried(t);
        assert_eq!(side[i].packet, i as u64);
        assert_eq!((side[i].sport, side[i].dport), (c.sport, c.dport));
        assert_eq!(side[i].rule, first_match(&rules, &c));
    }
    assert!(transport > 0);
    check_with_tcpdump(&path, n, None);
}

#[test]
fn same_seed_same_bytes_for_every_subcommand() {
    let pol = tmp("det-policy.json");
    std::fs::write(&pol, POLICY).unwrap();
    let cases: [(&str, Vec<&str>); 3] = [
        (
            "conversations",
            vec!["--family", "both", "--vlan", "5", "--frame-size", "64,9018"],
        ),
        ("policy", vec!["--policy", pol.to_str().unwrap()]),
        (
            "attack",
            vec![
                "--kind",
                "syn-flood,frag-overlap=2,bad-ihl,hash-collide",
                "--family",
                "both",
            ],
        ),
    ];
    for (sub, args) in cases {
        let read = |seed: &str, tag: &str| {
            let p = tmp(&format!("det-{sub}-{tag}.pcap"));
            let mut a = args.clone();
            a.extend(["--seed", seed]);
            run(sub, &p, &a);
            let side = verdicts::sidecar_path(&p);
            (std::fs::read(&p).unwrap(), std::fs::read(&side).ok())
        };
        let a = read("7", "a");
        let b = read("7", "b");
        let c = read("8", "c");
        assert_eq!(a, b, "{sub}: same seed, different bytes");
        assert_ne!(a.0, c.0, "{sub}: seed ignored");
    }
}
