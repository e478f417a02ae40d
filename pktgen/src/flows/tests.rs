use super::*;
use net::{parse, L4};

fn cfg() -> FlowsConfig {
    FlowsConfig::default()
}

fn p(s: &str) -> Option<Prefix> {
    Some(s.parse().unwrap())
}

fn arg_of(r: Result<FlowSet>) -> (&'static str, String) {
    match r {
        Err(Error::InvalidArgument { arg, reason }) => (arg, reason),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn defaults_match_the_documented_prefixes() {
    assert_eq!(DEFAULT_SRC_NET_V4, "10.0.0.0/8".parse().unwrap());
    assert_eq!(DEFAULT_DST_NET_V4, "172.16.0.0/12".parse().unwrap());
    assert_eq!(DEFAULT_SRC_NET_V6, "fd00:a::/48".parse().unwrap());
    assert_eq!(DEFAULT_DST_NET_V6, "fd00:b::/48".parse().unwrap());
}

#[test]
fn flows_are_distinct_in_range_and_deterministic() {
    for (ipv6, proto) in [(false, L4Proto::Tcp), (true, L4Proto::Udp)] {
        let c = FlowsConfig {
            ipv6,
            proto,
            frame_size: 128,
            ..cfg()
        };
        let set = FlowSet::new(&c).unwrap();
        assert_eq!(set.flows().len(), 4096);
        let tuples: HashSet<_> = set.flows().iter().map(|f| f.tuple).collect();
        assert_eq!(tuples.len(), 4096);
        for f in set.flows() {
            let t = f.tuple;
            assert!(set.src_net().is_usable_host(t.src), "{t:?}");
            assert!(set.dst_net().is_usable_host(t.dst), "{t:?}");
            assert!(is_source_port(t.sport), "{t:?}");
            assert!(DST_PORTS.contains(&t.dport));
            assert_eq!(t.proto, proto.ip_protocol().0);
            assert!(f.flow_label <= 0xfffff);
        }
        // Every destination port shows up with this many flows.
        let dports: HashSet<_> = set.flows().iter().map(|f| f.tuple.dport).collect();
        assert_eq!(dports.len(), DST_PORTS.len());

        assert_eq!(FlowSet::new(&c).unwrap().flows(), set.flows());
        let other = FlowSet::new(&FlowsConfig { seed: 2, ..c }).unwrap();
        assert_ne!(other.flows(), set.flows());
    }
}

#[test]
fn tiny_tuple_space_is_bounded_exactly() {
    // 2 sources x 1 destination, and 10.0.0.1 -> 10.0.0.1 is excluded:
    // one address pair, so only the ports can vary.
    let c = FlowsConfig {
        src_net: p("10.0.0.0/31"),
        dst_net: p("10.0.0.1/32"),
        flows: 20_000,
        ..cfg()
    };
    let space = tuple_space(&c.src_net.unwrap(), &c.dst_net.unwrap());
    assert_eq!(source_port_count(), 64512 - 3);
    assert_eq!(space, (64512 - 3) * 9);
    let set = FlowSet::new(&c).unwrap();
    let tuples: HashSet<_> = set.flows().iter().map(|f| f.tuple).collect();
    assert_eq!(tuples.len(), 20_000);
    let src: IpAddr = "10.0.0.0".parse().unwrap();
    assert!(set.flows().iter().all(|f| f.tuple.src == src));

    let at = |flows| FlowsConfig { flows, ..c.clone() };
    assert!(validate(&at(space as u32)).is_ok());
    let (arg, reason) = arg_of(FlowSet::new(&at(space as u32 + 1)));
    assert_eq!(arg, "--flows");
    assert!(reason.contains("give only 580581"), "{reason}");
}

#[test]
fn frames_follow_the_flows_round_robin() {
    let c = FlowsConfig {
        flows: 5,
        packets_per_flow: 3,
        frame_size: 100,
        ..cfg()
    };
    let set = FlowSet::new(&c).unwrap();
    let mut frames = Vec::new();
    set.for_each_frame(|f| {
        frames.push(f.to_vec());
        Ok(())
    })
    .unwrap();
    assert_eq!(frames.len() as u64, set.packet_count());
    assert_eq!(frames.len(), 15);
    let payload_len = 96 - 54;
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f.len(), 96);
        let (k, flow) = (i / 5, &set.flows()[i % 5]);
        let parsed = parse(f).unwrap();
        assert_eq!(parsed.src_ip(), Some(flow.tuple.src));
        assert_eq!(parsed.dst_ip(), Some(flow.tuple.dst));
        let L4::Tcp {
            seq,
            ack,
            payload_len: pl,
            ..
        } = parsed.l4
        else {
            panic!("not TCP")
        };
        assert_eq!(usize::from(pl), payload_len);
        assert_eq!(seq, flow.seq.wrapping_add((k * payload_len) as u32));
        assert_eq!(ack, flow.ack);
        let ip = net::ipv4::Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.ident(), flow.ident.wrapping_add(k as u16));
    }
}

#[test]
fn invalid_arguments_are_named() {
    let cases: &[(FlowsConfig, &str, &str)] = &[
            (FlowsConfig { flows: 0, ..cfg() }, "--flows", "not in 1..="),
            (
                FlowsConfig {
                    flows: MAX_FLOWS + 1,
                    ..cfg()
                },
                "--flows",
                "not in 1..=",
            ),
            (
                FlowsConfig {
                    packets_per_flow: 0,
                    ..cfg()
                },
                "--packets-per-flow",
                "at least 1",
            ),
            (FlowsConfig { frame_size: 10, ..cfg() }, "--frame-size", "10 is not in 64..=9018"),
            (FlowsConfig { frame_size: 9019, ..cfg() }, "--frame-size", "9019 is not in 64..=9018"),
            (
                FlowsConfig {
                    frame_size: 81,
                    ipv6: true,
                    vlan: Some(10),
                    ..cfg()
                },
                "--frame-size",
                "81 is too small for Ethernet+802.1Q+IPv6+TCP headers (78 bytes) plus the 4-byte FCS; the minimum is 82",
            ),
            (
                FlowsConfig {
                    ipv6: true,
                    proto: L4Proto::Udp,
                    ..cfg()
                },
                "--frame-size",
                "the minimum is 66",
            ),
            (FlowsConfig { vlan: Some(0), ..cfg() }, "--vlan", "VLAN id 0 is not in 1..=4094"),
            (FlowsConfig { vlan: Some(4095), ..cfg() }, "--vlan", "4095"),
            (
                FlowsConfig {
                    ipv6: true,
                    frame_size: 128,
                    src_net: p("10.0.0.0/8"),
                    ..cfg()
                },
                "--src-net",
                "10.0.0.0/8 is an IPv4 prefix but --ipv6 was given",
            ),
            (
                FlowsConfig {
                    dst_net: p("fd00::/8"),
                    ..cfg()
                },
                "--dst-net",
                "add --ipv6",
            ),
        ];
    for (c, want_arg, want_reason) in cases {
        let (arg, reason) = arg_of(FlowSet::new(c));
        assert_eq!(arg, *want_arg, "{c:?}");
        assert!(
            reason.contains(want_reason),
            "{reason:?} lacks {want_reason:?}"
        );
    }
}

#[test]
fn exact_minimum_sizes_are_accepted() {
    for (ipv6, vlan, proto, size) in [
        (false, false, L4Proto::Tcp, 64),
        (false, true, L4Proto::Tcp, 64),
        (true, false, L4Proto::Udp, 66),
        (true, true, L4Proto::Udp, 70),
        (true, false, L4Proto::Tcp, 78),
        (true, true, L4Proto::Tcp, 82),
    ] {
        let c = FlowsConfig {
            flows: 3,
            ipv6,
            vlan: vlan.then_some(42),
            proto,
            frame_size: size,
            ..cfg()
        };
        let set = FlowSet::new(&c).unwrap();
        set.for_each_frame(|f| {
            assert_eq!(f.len(), size - 4);
            parse(f).map(|_| ()).map_err(|e| panic!("{e}"))
        })
        .unwrap();
    }
}

#[test]
fn summary_line() {
    let s = Summary {
        packets: 4096,
        frame_size: 64,
        flows: 4096,
        path: "/tmp/x.pcap".into(),
    };
    assert_eq!(
        s.to_string(),
        "wrote 4096 packets of 64 bytes (4096 flows) to /tmp/x.pcap"
    );
}
