use std::sync::Arc;
use std::time::{Duration, SystemTime};

use protocol::{EventKind, FlowEvent, Verdict};

use super::ipfix::{self, Packer};
use super::syslog::{self, Header};
use super::*;

fn event(kind: EventKind, src: &str, dst: &str) -> FlowEvent {
    FlowEvent {
        kind,
        time_ms: 5000,
        time: "2026-12-07T11:40:17.431Z".into(),
        worker: 0,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 40000,
        dport: 443,
        proto: 6,
        vlan: 12,
        src_segments: vec!["eng|a=b".into()],
        dst_segments: vec!["ot".into(), "scada".into()],
        verdict: Verdict::Allow,
        rule_id: 10,
        policy_version: 3,
        packets: [6, 5],
        bytes: [700, 5000],
        duration_ms: 2500,
        tcp_state: Some("time_wait".into()),
        tcp_flags: Some([0x03, 0x13]),
        limit: None,
    }
}

fn config(text: &str) -> Result<ExportConfig, String> {
    let c: ExportConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

#[test]
fn config_is_checked() {
    let ok = config(
        r#"
        [[syslog]]
        name = "siem"
        address = "127.0.0.1:6514"
        transport = "tls"
        format = "cef"
        ca = "/etc/ca.pem"
        streams = ["flows"]
        [[ipfix]]
        name = "nf"
        address = "127.0.0.1:4739"
        "#,
    )
    .unwrap();
    assert_eq!(ok.syslog[0].facility, 16);
    assert_eq!(ok.ipfix[0].max_message_bytes, 1400);
    let refused = [
        (
            r#"[[syslog]]
            name = "a"
            address = "h:1"
            transport = "tls""#,
            "needs `ca`",
        ),
        (
            r#"[[syslog]]
            name = "A b"
            address = "h:1"
            transport = "udp""#,
            "name",
        ),
        (
            r#"[[syslog]]
            name = "a"
            address = "h:1"
            transport = "udp"
            [[ipfix]]
            name = "a"
            address = "h:2""#,
            "used twice",
        ),
        (
            r#"[[syslog]]
            name = "a"
            address = "h:1"
            transport = "udp"
            ca = "x""#,
            "tls\" only",
        ),
        (
            r#"[[ipfix]]
            name = "a"
            address = "h:1"
            max_message_bytes = 100"#,
            "512..=65000",
        ),
        (
            r#"[[syslog]]
            name = "a"
            address = "h:1"
            transport = "smoke""#,
            "unknown variant",
        ),
    ];
    for (text, want) in refused {
        let err = config(text).unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
    }
}

fn header() -> Header {
    Header {
        facility: 16,
        hostname: "gw1".into(),
        app_name: "bulkhead".into(),
        procid: 42,
    }
}

#[test]
fn a_flow_as_rfc5424_json() {
    let flow = ExportedFlow::new(9, event(EventKind::Closed, "10.0.0.1", "10.0.0.2"));
    let m = syslog::message(&header(), Format::Json, &Item::Flow(flow.clone()));
    let (head, body) = m.split_at(m.find('{').unwrap());
    assert_eq!(
        head,
        "<134>1 2026-12-07T11:40:17.431Z gw1 bulkhead 42 flow - "
    );
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["type"], "flow");
    assert_eq!(v["seq"], 9);
    assert_eq!(v["community_id"], flow.community_id.as_str());
    assert_eq!(v["conn_state"], "SF");
    assert_eq!(v["src"], "10.0.0.1");
    let framed = syslog::octet_counted(&m);
    assert_eq!(framed, format!("{} {m}", m.len()).into_bytes());
}

#[test]
fn a_flow_as_cef_escapes_its_fields() {
    let flow = ExportedFlow::new(9, event(EventKind::Denied, "10.0.0.1", "10.0.0.2"));
    let cef = syslog::flow_cef(&flow, "gw1");
    assert!(cef.starts_with("CEF:0|Bulkhead|Bulkhead Gateway|"), "{cef}");
    assert!(cef.contains("|flow:denied|Flow denied|5|rt="), "{cef}");
    assert!(
        cef.contains(" src=10.0.0.1 dst=10.0.0.2 spt=40000 dpt=443 proto=TCP"),
        "{cef}"
    );
    assert!(cef.contains(r"cs3=eng|a\=b cs3Label=srcSegments"), "{cef}");
    assert!(cef.contains(&format!(
        "cs2={} cs2Label=communityId",
        flow.community_id.replace('=', "\\=")
    )));
    let v6 = ExportedFlow::new(1, event(EventKind::New, "2001:db8::1", "2001:db8::2"));
    let cef = syslog::flow_cef(&v6, "gw|1");
    assert!(
        cef.contains("c6a2=2001:db8::1 c6a2Label=Source IPv6 Address"),
        "{cef}"
    );
    let mut audit = crate::store::AuditEntry::new("alice", "commit");
    audit.time = "2026-12-07T11:40:17.431Z".into();
    audit.version_after = Some(4);
    audit.details = serde_json::json!({"comment": "a=b\nc"});
    let cef = syslog::audit_cef(&audit, "gw1");
    assert!(cef.contains("|audit:commit|Audit commit|3|"), "{cef}");
    assert!(
        cef.contains(" suser=alice act=commit cn2=4 cn2Label=versionAfter"),
        "{cef}"
    );
    assert!(cef.contains(r#"msg={"comment":"a\=b\\nc"}"#), "{cef}");
}

/// Reads an IPFIX message back: (sets as (id, body)), checking the lengths add up.
fn sets(m: &[u8]) -> Vec<(u16, Vec<u8>)> {
    assert_eq!(u16::from_be_bytes([m[0], m[1]]), 10);
    assert_eq!(usize::from(u16::from_be_bytes([m[2], m[3]])), m.len());
    let mut out = Vec::new();
    let mut at = 16;
    while at < m.len() {
        let id = u16::from_be_bytes([m[at], m[at + 1]]);
        let len = usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
        out.push((id, m[at + 4..at + len].to_vec()));
        at += len;
    }
    assert_eq!(at, m.len());
    out
}

#[test]
fn ipfix_templates_and_records_fit_the_message_size() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut packer = Packer::new(7, 600);
    let mut messages: Vec<Vec<u8>> = packer.push_templates(now).into_iter().collect();
    let mut records = 0;
    for i in 0..20 {
        let (src, dst) = if i % 3 == 0 {
            ("2001:db8::1", "2001:db8::2")
        } else {
            ("10.0.0.1", "10.0.0.2")
        };
        let flow = ExportedFlow::new(i, event(EventKind::Closed, src, dst));
        let (template, rec) = ipfix::record(&flow);
        records += 1;
        messages.extend(packer.push_record(template, &rec, now));
    }
    messages.extend(packer.finish(now));
    assert!(messages.len() > 2);
    let mut seen = 0;
    let mut expected_sequence = 0u32;
    for m in &messages {
        assert!(m.len() <= 600, "{} bytes", m.len());
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            expected_sequence
        );
        assert_eq!(u32::from_be_bytes(m[12..16].try_into().unwrap()), 7);
        for (id, body) in sets(m) {
            match id {
                2 => {
                    // Two templates: 256 (v4) and 257 (v6), 21 fields each.
                    assert_eq!(&body[0..4], &[1, 0, 0, 21]);
                }
                ipfix::TEMPLATE_V4 | ipfix::TEMPLATE_V6 => {
                    let n = count_records(id, &body);
                    seen += n;
                    expected_sequence += n as u32;
                }
                other => panic!("set {other}"),
            }
        }
    }
    assert_eq!(seen, records);
}

/// Walks the records of a data set with the template's field lengths.
fn count_records(template: u16, mut body: &[u8]) -> usize {
    let (_, fields) = ipfix::template(template == ipfix::TEMPLATE_V6);
    let mut n = 0;
    while !body.is_empty() {
        for f in &fields {
            let len = if f.len == 65535 {
                let l = usize::from(body[0]);
                body = &body[1..];
                l
            } else {
                usize::from(f.len)
            };
            body = &body[len..];
        }
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let registry = Registry::new();
    let metrics = ExportMetrics::new();
    metrics.register(&registry).unwrap();
    let counters = metrics.exporter("x");
    let (tx, _rx) = mpsc::channel(2);
    let exporters = Exporters {
        feeds: vec![Feed {
            streams: vec![Stream::Flows],
            tx,
            counters: counters.clone(),
        }],
    };
    let flow = ExportedFlow::new(1, event(EventKind::New, "10.0.0.1", "10.0.0.2"));
    for _ in 0..5 {
        exporters.offer_flow(&flow);
    }
    exporters.offer_audit(&crate::store::AuditEntry::new("a", "commit"));
    assert_eq!(
        counters.queue_full.get(),
        3,
        "audit is not this exporter's stream"
    );
    let _ = Arc::clone(&flow);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let mut b = Backoff::new(Pacing {
        queue: 1,
        backoff_ms: 100,
        max_backoff_ms: 350,
    });
    let waits: Vec<u64> = (0..4).map(|_| b.next_wait().as_millis() as u64).collect();
    assert_eq!(waits, [100, 200, 350, 350]);
    b.reset();
    assert_eq!(b.next_wait(), Duration::from_millis(100));
}

/// Reads a record's fixed fields back: (ports, counts `[orig packets, orig bytes, reply packets, reply bytes]`,
/// tcpControlBits, flowEndReason, firewallEvent, rule, version, the four strings).
fn decode_v4_record(r: &[u8]) -> (u16, u16, [u64; 4], u16, u8, u8, u32, u32, Vec<String>) {
    let be16 = |at: usize| u16::from_be_bytes([r[at], r[at + 1]]);
    let be64 = |at: usize| u64::from_be_bytes(r[at..at + 8].try_into().unwrap());
    let be32 = |at: usize| u32::from_be_bytes(r[at..at + 4].try_into().unwrap());
    // 4+4 addresses, 2+2 ports, 1 proto, 2 vlan, 8+8 times, then the counters at 31.
    let counts = [be64(31), be64(39), be64(47), be64(55)];
    let mut strings = Vec::new();
    let mut at = 75;
    for _ in 0..4 {
        let len = usize::from(r[at]);
        strings.push(String::from_utf8(r[at + 1..at + 1 + len].to_vec()).unwrap());
        at += 1 + len;
    }
    assert_eq!(at, r.len());
    (
        be16(8),
        be16(10),
        counts,
        be16(63),
        r[65],
        r[66],
        be32(67),
        be32(71),
        strings,
    )
}

#[test]
fn ipfix_records_carry_both_directions_and_what_happened() {
    let flow = ExportedFlow::new(3, event(EventKind::Closed, "10.0.0.1", "10.0.0.2"));
    let (template, r) = ipfix::record(&flow);
    assert_eq!(template, ipfix::TEMPLATE_V4);
    let (sport, dport, counts, flags, end, firewall, rule, version, strings) = decode_v4_record(&r);
    assert_eq!((sport, dport), (40000, 443));
    assert_eq!(counts, [6, 700, 5, 5000]);
    assert_eq!((flags, end, firewall), (0x13, 3, 2));
    assert_eq!((rule, version), (10, 3));
    assert_eq!(
        strings,
        ["eng|a=b", "ot,scada", flow.community_id.as_str(), "SF"]
    );
    // Created: no counts yet (the closed record counts the whole flow); denied ICMP: type and code.
    let created = ExportedFlow::new(1, event(EventKind::New, "10.0.0.1", "10.0.0.2"));
    let (_, _, counts, _, end, firewall, ..) = decode_v4_record(&ipfix::record(&created).1);
    assert_eq!((counts, end, firewall), ([0; 4], 0, 1));
    let mut ping = event(EventKind::Denied, "10.0.0.2", "10.0.0.1");
    (
        ping.proto,
        ping.sport,
        ping.dport,
        ping.tcp_state,
        ping.tcp_flags,
    ) = (1, 8, 0, None, None);
    let denied = ExportedFlow::new(2, ping);
    let (sport, dport, counts, _, _, firewall, ..) = decode_v4_record(&ipfix::record(&denied).1);
    assert_eq!((sport, dport, counts[0], firewall), (0, 8 << 8, 6, 3));
}

#[tokio::test(start_paused = true)]
async fn ipfix_sends_templates_at_start_and_on_schedule() {
    let collector = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let config: ExportConfig = toml::from_str(&format!(
        "[[ipfix]]\nname = \"c\"\naddress = \"{}\"\ntemplate_interval_s = 60\nobservation_domain = 9\n",
        collector.local_addr().unwrap()
    ))
    .unwrap();
    let counters = ExportMetrics::new().exporter("c");
    let (tx, rx) = mpsc::channel(8);
    let task = tokio::spawn(ipfix::run(config.ipfix[0].clone(), rx, counters.clone()));
    let mut buf = [0u8; 2048];
    let mut next = async || {
        let n = collector.recv(&mut buf).await.unwrap();
        sets(&buf[..n])
            .into_iter()
            .map(|(id, _)| id)
            .collect::<Vec<u16>>()
    };
    let start = tokio::time::Instant::now();
    assert_eq!(next().await, [2], "templates first");
    let flow = ExportedFlow::new(1, event(EventKind::Closed, "10.0.0.1", "10.0.0.2"));
    tx.send(Item::Flow(flow)).await.unwrap();
    assert_eq!(next().await, [ipfix::TEMPLATE_V4]);
    assert_eq!(counters.sent.get(), 1);
    assert_eq!(next().await, [2], "templates again");
    assert!(start.elapsed() >= Duration::from_secs(60));
    drop(tx);
    task.await.unwrap();
    assert_eq!(counters.connected.get(), 0);
}
