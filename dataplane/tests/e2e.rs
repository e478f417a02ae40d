//! End-to-end forwarding: real clients in two namespaces whose only path to each other is the dataplane,
//! under a policy that allows everything (`testbed/policies/open.json`), so what is tested here is the path
//! itself. Enforcement has its own tests (`enforcement.rs`). Needs root (network namespaces), ping, curl,
//! python3, tcpdump and sha256sum.

use std::time::Duration;

use serde_json::Value;
use testbed::{addr, Options, Side, TestBed};

fn bed() -> TestBed {
    let mut opts = Options::new(env!("CARGO_BIN_EXE_bulkhead-dataplane"));
    opts.policy = Some(testbed::policy_file("open.json"));
    TestBed::start(&opts).unwrap_or_else(|e| panic!("test bed: {e}"))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ping(from: &Side, to: &str, count: u32) {
    let n = count.to_string();
    let out = from
        .run(&["ping", "-c", &n, "-i", "0.2", "-W", "3", to])
        .unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success()
            && text.contains(&format!("{count} packets transmitted, {count} received")),
        "ping {to} from {}: {text}{}",
        from.netns,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stops the dataplane and returns its final counters, checking it shut down cleanly and accounted for every
/// packet: each one received was either transmitted or dropped with a reason. (Drops do happen while the bed is
/// wired up: the TAP device refuses frames until the far interface is up.)
fn stop(mut bed: TestBed) -> Value {
    let stopped = bed.stop().unwrap();
    assert!(
        stopped.status.success(),
        "dataplane exit: {}\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("bulkhead-dataplane stopped"),
        "{}",
        stopped.stderr
    );
    let report = stopped.report.expect("a final counters report");
    let drops: u64 = report["totals"]["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        total(&report, "rx_packets"),
        total(&report, "tx_packets") + drops,
        "{report}"
    );
    report
}

fn total(report: &Value, key: &str) -> u64 {
    report["totals"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("totals.{key} in {report}"))
}

#[test]
fn ping_crosses_both_ways_and_is_counted() {
    let bed = bed();
    ping(&bed.a, addr::B4, 5);
    ping(&bed.b, addr::A4, 5);
    let report = stop(bed);
    // 10 echo requests and 10 replies at least (plus ARP), each received on one port and sent on the other.
    assert!(total(&report, "tx_packets") >= 20, "{report}");
    for port in report["ports"].as_array().unwrap() {
        assert!(port["rx_packets"].as_u64().unwrap() >= 10, "{port}");
        assert!(port["tx_packets"].as_u64().unwrap() >= 10, "{port}");
    }
}

#[test]
fn counters_are_readable_while_forwarding() {
    let bed = bed();
    ping(&bed.a, addr::B4, 3);
    let live = bed
        .wait_stats(Duration::from_secs(10), |v| {
            v["totals"]["rx_packets"].as_u64() >= Some(6)
        })
        .expect("a live report with the pings counted");
    assert!(live["workers"][0]["busy_polls"].as_u64().unwrap() > 0);
    assert!(live["workers"][0]["idle_polls"].as_u64().unwrap() > 0);
    stop(bed);
}

/// Serves `file` over HTTP from side b and downloads it from side a; the checksums must match.
fn http_download(bed: &TestBed, host: &str, url_host: &str) {
    let served = bed.dir.join("www");
    std::fs::create_dir_all(&served).unwrap();
    let file = served.join("blob");
    let data: Vec<u8> = (0u32..(6 << 20) / 4)
        .flat_map(|i| i.wrapping_mul(2654435761).to_le_bytes())
        .collect();
    std::fs::write(&file, &data).unwrap();
    let _server = bed
        .b
        .spawn(&[
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            host,
            "--directory",
            served.to_str().unwrap(),
        ])
        .unwrap();
    bed.b.wait_listening(8080).unwrap();
    let got = bed.dir.join("downloaded");
    let url = format!("http://{url_host}:8080/blob");
    let out = bed
        .a
        .run(&[
            "curl",
            "--silent",
            "--show-error",
            "--fail",
            "--max-time",
            "60",
            "--retry",
            "20",
            "--retry-connrefused",
            "--retry-delay",
            "1",
            "-o",
            got.to_str().unwrap(),
            &url,
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum = |p: &std::path::Path| {
        stdout(&testbed::sh(&["sha256sum", p.to_str().unwrap()]).unwrap())[..64].to_string()
    };
    assert_eq!(
        sum(&got),
        sum(&file),
        "downloaded bytes differ from the served file"
    );
}

#[test]
fn tcp_http_download_arrives_intact() {
    let bed = bed();
    http_download(&bed, addr::B4, addr::B4);
    let report = stop(bed);
    // 6 MiB in at most 1514-byte frames: well over 4000 data packets crossed.
    assert!(total(&report, "tx_packets") > 4000, "{report}");
    // The server is on side b: the file leaves the dataplane through port a.
    assert!(
        report["ports"][0]["tx_bytes"].as_u64().unwrap() > 6 << 20,
        "{report}"
    );
}

#[test]
fn udp_request_response() {
    let bed = bed();
    let echo = testbed::script("udp_echo.py");
    let _server = bed
        .b
        .spawn(&["python3", echo.to_str().unwrap(), addr::B4, "5353"])
        .unwrap();
    let probe = testbed::script("udp_probe.py");
    let out = bed
        .a
        .ok(&["python3", probe.to_str().unwrap(), addr::B4, "5353", "200"])
        .unwrap();
    assert_eq!(
        stdout(&out).trim(),
        "200",
        "every datagram answered with its reversed payload"
    );
    stop(bed);
}

#[test]
fn ipv6_ping_and_tcp() {
    let bed = bed();
    ping(&bed.a, addr::B6, 3);
    ping(&bed.b, addr::A6, 3);
    http_download(&bed, addr::B6, &format!("[{}]", addr::B6));
    stop(bed);
}

/// A UDP/IPv4 frame from a made-up host (so the capture sees only what the test sent), with an 802.1Q tag
/// `vid` and, when `outer` is given, an outer tag `(tpid, tci)` in front of it.
fn tagged_udp(vid: u16, outer: Option<(u16, u16)>, sport: u16) -> Vec<u8> {
    use bulkhead_pktgen::frame::{FrameSpec, IpSpec, L4Spec};
    use net::ethernet::{EtherType, MacAddr};
    use net::link::EthernetRepr;
    use net::vlan::VlanRepr;
    let spec = FrameSpec {
        src_mac: MacAddr([0x02, 0, 0, 0, 0xbe, 0xef]),
        dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0x02]),
        vlan: Some(vid),
        ip: IpSpec::v4("10.7.0.1".parse().unwrap(), "10.7.0.2".parse().unwrap()),
        l4: L4Spec::udp(sport, 9),
    };
    let f = spec.build(&[0x5a; 40]).unwrap();
    let Some((tpid, tci)) = outer else {
        return f;
    };
    // The same frame with the outer tag in front of the 802.1Q one.
    let inner = EthernetRepr::parse(&f).unwrap();
    let outer = VlanRepr {
        tpid: EtherType(tpid),
        tci,
    };
    let eth = EthernetRepr {
        vlans: [Some(outer), inner.vlans[0]],
        ..inner
    };
    let ip = &f[inner.header_len()..];
    let mut tagged = vec![0u8; eth.header_len() + ip.len()];
    let l3 = eth.emit(&mut tagged).unwrap();
    tagged[l3..].copy_from_slice(ip);
    tagged
}

#[test]
fn tagged_and_unknown_ethertype_frames_cross_byte_for_byte() {
    // This kernel has no 8021q module, so no VLAN sub-interfaces: frames are sent raw and captured raw.
    let bed = bed();
    let mut unknown = vec![
        0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0xbe, 0xef, 0x88, 0xb5,
    ];
    unknown.extend(0..64u8); // a local-experimental EtherType, which the open policy passes
    let sent = vec![
        tagged_udp(100, None, 1000),                // 802.1Q, VID 100
        tagged_udp(100, Some((0x88a8, 200)), 1001), // QinQ: S-tag 200 (802.1ad), C-tag 100
        tagged_udp(101, Some((0x9100, 300)), 1002), // pre-standard QinQ TPID
        unknown,
    ];
    let file = bed.dir.join("tagged.pcap");
    let capture = bed.b.capture("ether src 02:00:00:00:be:ef", &file).unwrap();
    bed.a.send_frames(&sent).unwrap();
    let got = capture.frames(sent.len(), Duration::from_secs(10)).unwrap();
    assert_eq!(got, sent, "frames must arrive unchanged and in order");
    stop(bed);
}
