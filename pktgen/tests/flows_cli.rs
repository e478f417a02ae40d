//! Runs the `bulkhead-pktgen flows` binary and checks the pcap it writes.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use net::ipv4::Ipv4Packet;
use net::ipv6::Ipv6Packet;
use net::tcp::{TcpFlags, TcpPacket};
use net::udp::UdpPacket;
use net::{parse, Parsed, L3, L4};
use pcap_file::pcap::PcapReader;
use pcap_file::{DataLink, TsResolution};

const BIN: &str = env!("CARGO_BIN_EXE_bulkhead-pktgen");

fn tmp(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pktgen-flows-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run bulkhead-pktgen")
}

/// Runs `flows --out <path> <args>` and expects success.
fn flows(path: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("flows")
        .arg("--out")
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "flows {args:?} failed: {stderr}");
    stderr
}

struct Record {
    ts: Duration,
    orig_len: u32,
    data: Vec<u8>,
}

fn read_pcap(path: &Path) -> Vec<Record> {
    let file = std::fs::File::open(path).unwrap();
    let mut r = PcapReader::new(file).unwrap();
    let h = r.header();
    assert_eq!(h.datalink, DataLink::ETHERNET);
    assert_eq!(h.ts_resolution, TsResolution::MicroSecond);
    assert_eq!((h.version_major, h.version_minor), (2, 4));
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        out.push(Record {
            ts: p.timestamp,
            orig_len: p.orig_len,
            data: p.data.into_owned(),
        });
    }
    out
}

type Tuple = (IpAddr, IpAddr, u16, u16, u8);

fn tuple(p: &Parsed) -> Tuple {
    let (sport, dport) = p.ports().expect("TCP or UDP");
    (
        p.src_ip().unwrap(),
        p.dst_ip().unwrap(),
        sport,
        dport,
        p.ip_proto().unwrap().0,
    )
}

/// Checks one frame's lengths and checksums with the `net` views and
/// returns its parse.
fn check_frame(frame: &[u8]) -> Parsed {
    let p = parse(frame).unwrap_or_else(|e| panic!("unparseable frame: {e}"));
    let l3 = &frame[p.l3_offset..];
    let l4_offset = p.l4_offset.unwrap();
    match p.l3 {
        L3::Ipv4 {
            src,
            dst,
            ttl,
            frag,
            ..
        } => {
            let ip = Ipv4Packet::new_checked(l3).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), l3.len());
            assert!(ip.dont_frag() && frag.is_none());
            assert_eq!(ttl, 64);
            let seg = &frame[l4_offset..];
            match p.l4 {
                L4::Tcp { .. } => {
                    assert!(TcpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v4(src, dst))
                }
                L4::Udp { .. } => {
                    let udp = UdpPacket::new_checked(seg).unwrap();
                    assert_eq!(usize::from(udp.len()), seg.len());
                    assert_ne!(udp.checksum(), 0);
                    assert!(udp.verify_checksum_v4(src, dst));
                }
                other => panic!("unexpected L4 {other:?}"),
            }
        }
        L3::Ipv6 { src, dst, .. } => {
            let ip = Ipv6Packet::new_checked(l3).unwrap();
            assert_eq!(usize::from(ip.payload_len()) + 40, l3.len());
            assert_eq!(ip.hop_limit(), 64);
            let seg = &frame[l4_offset..];
            match p.l4 {
                L4::Tcp { .. } => {
                    assert!(TcpPacket::new_checked(seg)
                        .unwrap()
                        .verify_checksum_v6(src, dst))
                }
                L4::Udp { .. } => {
                    let udp = UdpPacket::new_checked(seg).unwrap();
                    assert_eq!(usize::from(udp.len()), seg.len());
                    assert!(udp.verify_checksum_v6(src, dst));
                }
                other => panic!("unexpected L4 {other:?}"),
            }
        }
        other => panic!("unexpected L3 {other:?}"),
    }
    p
}

fn tcpdump() -> Option<PathBuf> {
    let fixed = PathBuf::from("/usr/bin/tcpdump");
    if fixed.is_file() {
        return Some(fixed);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("tcpdump"))
            .find(|p| p.is_file())
    })
}

/// Whether a tcpdump output line carries one of its malformation warnings.
/// Tokens are compared whole so hex checksums and IPv6 addresses such as
/// `0xfbad` or `fd00:bad::1` do not count.
fn tcpdump_warning(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.contains("truncated")
        || lower.contains("[|")
        || lower
            .split(|c: char| c.is_whitespace() || "[](),;".contains(c))
            .any(|t| t == "bad" || t.starts_with("bad-"))
}

/// `tcpdump -nn -r` must print exactly `packets` lines with no warnings, and
/// `-vv` must find every checksum correct. tcpdump is one of the suite's
/// packages (`cargo xtask deps`): without it the check fails.
fn check_with_tcpdump(path: &Path, packets: usize) {
    let tcpdump = tcpdump().unwrap_or_else(|| {
        panic!(
            "tcpdump not found (install it: cargo xtask deps); cannot check {}",
            path.display()
        )
    });
    let out = Command::new(&tcpdump)
        .arg("-nn")
        .arg("-r")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tcpdump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), packets);
    let warnings: Vec<_> = stdout.lines().filter(|l| tcpdump_warning(l)).collect();
    assert!(warnings.is_empty(), "tcpdump warnings: {warnings:#?}");
    for l in String::from_utf8_lossy(&out.stderr).lines() {
        assert!(!tcpdump_warning(l), "tcpdump warning: {l}");
    }

    let out = Command::new(&tcpdump)
        .arg("-nn")
        .arg("-vv")
        .arg("-r")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let ok = stdout.matches("(correct)").count() + stdout.matches("[udp sum ok]").count();
    assert_eq!(ok, packets, "not every L4 checksum verified by tcpdump");
    assert!(
        !stdout.contains("incorrect"),
        "tcpdump found a bad checksum"
    );
    let warnings: Vec<_> = stdout.lines().filter(|l| tcpdump_warning(l)).collect();
    assert!(warnings.is_empty(), "tcpdump -vv warnings: {warnings:#?}");
}

#[test]
fn default_tcp_flows_at_64_bytes() {
    let path = tmp("default.pcap");
    let stderr = flows(&path, &["--seed", "1"]);
    assert_eq!(
        stderr.trim_end(),
        format!(
            "wrote 4096 packets of 64 bytes (4096 flows) to {}",
            path.display()
        )
    );
    let recs = read_pcap(&path);
    assert_eq!(recs.len(), 4096);
    let mut tuples = HashSet::new();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.data.len(), 60);
        assert_eq!(r.orig_len, 60);
        assert_eq!(r.ts, Duration::from_micros(i as u64));
        let p = check_frame(&r.data);
        assert_eq!(p.vlans, [None, None]);
        let L4::Tcp {
            flags,
            payload_len,
            sport,
            dport,
            ..
        } = p.l4
        else {
            panic!("not TCP: {p:?}")
        };
        assert_eq!(flags, TcpFlags::ACK | TcpFlags::PSH);
        assert_eq!(payload_len, 6);
        assert!(sport >= 1024);
        assert!([80, 443, 22, 53, 3306, 5432, 502, 102, 8080].contains(&dport));
        let (src, dst) = (p.src_ip().unwrap(), p.dst_ip().unwrap());
        assert!(matches!(src, IpAddr::V4(a) if a.octets()[0] == 10), "{src}");
        assert!(
            matches!(dst, IpAddr::V4(a) if a.octets()[0] == 172 && a.octets()[1] & 0xf0 == 16),
            "{dst}"
        );
        tuples.insert(tuple(&p));
    }
    assert_eq!(tuples.len(), 4096);
    check_with_tcpdump(&path, 4096);
}

#[test]
fn udp_ipv6_vlan_round_robin() {
    let path = tmp("udp6.pcap");
    flows(
        &path,
        &[
            "--flows",
            "100",
            "--packets-per-flow",
            "3",
            "--proto",
            "udp",
            "--ipv6",
            "--vlan",
            "42",
            "--frame-size",
            "128",
            "--seed",
            "9",
        ],
    );
    let recs = read_pcap(&path);
    assert_eq!(recs.len(), 300);
    let parsed: Vec<_> = recs
        .iter()
        .map(|r| {
            assert_eq!(r.data.len(), 124);
            check_frame(&r.data)
        })
        .collect();
    let tuples: HashSet<_> = parsed.iter().map(tuple).collect();
    assert_eq!(tuples.len(), 100);
    for (i, p) in parsed.iter().enumerate() {
        assert_eq!(p.vlans, [Some(42), None]);
        assert!(matches!(p.l4, L4::Udp { .. }));
        // Round robin: record i belongs to flow i % 100.
        assert_eq!(tuple(p), tuple(&parsed[i % 100]));
        let src = p.src_ip().unwrap().to_string();
        let dst = p.dst_ip().unwrap().to_string();
        assert!(src.starts_with("fd00:a:0:"), "{src}");
        assert!(dst.starts_with("fd00:b:0:"), "{dst}");
    }
    check_with_tcpdump(&path, 300);
}

#[test]
fn tcp_sequence_advances_per_flow() {
    let path = tmp("seq.pcap");
    flows(
        &path,
        &[
            "--flows",
            "7",
            "--packets-per-flow",
            "4",
            "--frame-size",
            "200",
            "--vlan",
            "3",
        ],
    );
    let recs = read_pcap(&path);
    assert_eq!(recs.len(), 28);
    let payload = 196 - 58;
    let seg = |i: usize| {
        let p = check_frame(&recs[i].data);
        let L4::Tcp {
            seq,
            ack,
            payload_len,
            ..
        } = p.l4
        else {
            panic!()
        };
        assert_eq!(usize::from(payload_len), payload);
        let ident = Ipv4Packet::new_checked(&recs[i].data[18..])
            .unwrap()
            .ident();
        (seq, ack, ident)
    };
    for flow in 0..7 {
        let (seq0, ack0, id0) = seg(flow);
        for k in 1..4 {
            let (seq, ack, id) = seg(k * 7 + flow);
            assert_eq!(seq, seq0.wrapping_add((k * payload) as u32));
            assert_eq!(ack, ack0);
            assert_eq!(id, id0.wrapping_add(k as u16));
        }
    }
    check_with_tcpdump(&path, 28);
}

#[test]
fn jumbo_frames() {
    let path = tmp("jumbo.pcap");
    flows(
        &path,
        &[
            "--flows",
            "5",
            "--frame-size",
            "9018",
            "--ipv6",
            "--vlan",
            "4094",
        ],
    );
    let recs = read_pcap(&path);
    assert_eq!(recs.len(), 5);
    for r in &recs {
        assert_eq!(r.data.len(), 9014);
        check_frame(&r.data);
    }
    check_with_tcpdump(&path, 5);
}

#[test]
fn same_seed_same_bytes_different_seed_different_bytes() {
    let (a, b, c) = (tmp("seed-a.pcap"), tmp("seed-b.pcap"), tmp("seed-c.pcap"));
    let args = [
        "--flows",
        "512",
        "--packets-per-flow",
        "2",
        "--proto",
        "udp",
    ];
    flows(&a, &[&args[..], &["--seed", "77"]].concat());
    flows(&b, &[&args[..], &["--seed", "77"]].concat());
    flows(&c, &[&args[..], &["--seed", "78"]].concat());
    let (a, b, c) = (
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap(),
        std::fs::read(c).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.len(), c.len());
    assert_ne!(a, c);
}

#[test]
fn custom_prefixes_are_respected() {
    let path = tmp("nets.pcap");
    flows(
        &path,
        &[
            "--flows",
            "300",
            "--src-net",
            "192.168.10.0/24",
            "--dst-net",
            "192.168.20.16/28",
        ],
    );
    for r in read_pcap(&path) {
        let p = check_frame(&r.data);
        let (IpAddr::V4(s), IpAddr::V4(d)) = (p.src_ip().unwrap(), p.dst_ip().unwrap()) else {
            panic!()
        };
        assert_eq!(s.octets()[..3], [192, 168, 10]);
        assert!(!matches!(s.octets()[3], 0 | 255), "{s}");
        assert_eq!(d.octets()[..3], [192, 168, 20]);
        assert!((17..=30).contains(&d.octets()[3]), "{d}");
    }
}

/// Runs `flows` with bad arguments: exit code 2, the argument named, and no
/// output file.
fn expect_bad_args(args: &[&str], arg: &str, detail: &str) {
    let path = tmp("bad.pcap");
    let out = Command::new(BIN)
        .arg("flows")
        .arg("--out")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(arg),
        "{args:?}: {stderr:?} does not name {arg}"
    );
    assert!(
        stderr.contains(detail),
        "{args:?}: {stderr:?} lacks {detail:?}"
    );
    assert!(!path.exists(), "{args:?} created the output file");
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    expect_bad_args(&["--frame-size", "10"], "--frame-size", "10");
    expect_bad_args(&["--frame-size", "9019"], "--frame-size", "64..=9018");
    expect_bad_args(&["--flows", "0"], "--flows", "0");
    expect_bad_args(&["--packets-per-flow", "0"], "--packets-per-flow", "0");
    expect_bad_args(
        &["--ipv6", "--vlan", "5"],
        "--frame-size",
        "Ethernet+802.1Q+IPv6+TCP headers (78 bytes)",
    );
    expect_bad_args(
        &["--ipv6", "--vlan", "5", "--frame-size", "81"],
        "--frame-size",
        "the minimum is 82",
    );
    expect_bad_args(&["--vlan", "4095"], "--vlan", "1..=4094");
    expect_bad_args(&["--vlan", "0"], "--vlan", "1..=4094");
    expect_bad_args(&["--proto", "sctp"], "--proto", "sctp");
    expect_bad_args(
        &["--src-net", "10.1.0.0/8"],
        "--src-net",
        "did you mean 10.0.0.0/8",
    );
    expect_bad_args(&["--dst-net", "172.16.0.0"], "--dst-net", "ADDRESS/LENGTH");
    expect_bad_args(
        &["--ipv6", "--frame-size", "128", "--src-net", "10.0.0.0/8"],
        "--src-net",
        "IPv4 prefix",
    );
    expect_bad_args(&["--dst-net", "fd00::/16"], "--dst-net", "--ipv6");
    expect_bad_args(
        &[
            "--flows",
            "600000",
            "--src-net",
            "10.0.0.1/32",
            "--dst-net",
            "10.0.0.2/32",
        ],
        "--flows",
        "give only 580581",
    );

    // No --out at all.
    let out = run(&["flows"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
}

#[test]
fn io_errors_name_the_file_and_exit_1() {
    let path = tmp("no-such-dir").join("x.pcap");
    let out = Command::new(BIN)
        .arg("flows")
        .arg("--out")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&*path.to_string_lossy()), "{stderr}");
}

#[test]
fn help_lists_the_flows_subcommand() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("flows"));
    let out = run(&["flows", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for arg in [
        "--out",
        "--flows",
        "--frame-size",
        "--packets-per-flow",
        "--proto",
        "--ipv6",
        "--vlan",
        "--seed",
        "--src-net",
        "--dst-net",
    ] {
        assert!(help.contains(arg), "help lacks {arg}");
    }
}
