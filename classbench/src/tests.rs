use super::*;

const RULE: &str =
    "@237.73.3.4/32\t67.236.63.0/24\t0 : 65535\t1711 : 1711\t0x06/0xFF\t0x0000/0x0200\t";

fn ip(s: &str) -> u32 {
    u32::from(s.parse::<std::net::Ipv4Addr>().unwrap())
}

#[test]
fn a_rule_line_parses_into_prefixes_ranges_and_protocol() {
    let rules = parse_rules(&format!(
        "{RULE}\n\n@0.0.0.0/0\t0.0.0.0/0\t0 : 0\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n"
    ))
    .unwrap();
    assert_eq!(
        rules,
        [
            Rule {
                src: (ip("237.73.3.4"), 32),
                dst: (ip("67.236.63.0"), 24),
                sport: (0, 65535),
                dport: (1711, 1711),
                proto: (6, 0xff),
            },
            Rule {
                src: (0, 0),
                dst: (0, 0),
                sport: (0, 0),
                dport: (0, 65535),
                proto: (0, 0),
            },
        ]
    );
}

#[test]
fn a_trace_line_parses_and_its_flags_and_rule_columns_are_ignored() {
    let trace = parse_trace("1923697128\t2273746465\t0\t1221\t6\t4294967295\t261\n").unwrap();
    assert_eq!(
        trace,
        [Packet {
            src: 1923697128,
            dst: 2273746465,
            sport: 0,
            dport: 1221,
            proto: 6,
        }]
    );
}

#[test]
fn the_first_listed_matching_rule_wins() {
    let rules = parse_rules(&format!(
        "{RULE}\n@237.73.3.0/24\t0.0.0.0/0\t0 : 65535\t1000 : 2000\t0x00/0x00\t0x0000/0x0000\n"
    ))
    .unwrap();
    let p = Packet {
        src: ip("237.73.3.4"),
        dst: ip("67.236.63.9"),
        sport: 5,
        dport: 1711,
        proto: 6,
    };
    assert_eq!(first_match(&rules, &p), Some(0));
    // Outside the first rule's destination prefix, its port, its protocol: the second (wildcard protocol).
    assert_eq!(
        first_match(
            &rules,
            &Packet {
                dst: ip("67.236.64.9"),
                ..p
            }
        ),
        Some(1)
    );
    assert_eq!(first_match(&rules, &Packet { dport: 1712, ..p }), Some(1));
    assert_eq!(first_match(&rules, &Packet { proto: 17, ..p }), Some(1));
    // Outside both: the second rule's port range ends at 2000 and its source prefix is a /24.
    assert_eq!(first_match(&rules, &Packet { dport: 2001, ..p }), None);
    assert_eq!(
        first_match(
            &rules,
            &Packet {
                src: ip("237.73.4.4"),
                ..p
            }
        ),
        None
    );
}

#[test]
fn malformed_lines_are_reported_with_their_line_number() {
    let bad_rule = |text: &str| parse_rules(text).unwrap_err();
    assert_eq!(bad_rule(&format!("{RULE}\nno at sign")).line, 2);
    assert!(bad_rule("@1.2.3.4/33\t0.0.0.0/0\t0 : 1\t0 : 1\t0x06/0xFF")
        .reason
        .contains("longer than 32"));
    assert!(bad_rule("@1.2.3.4/8\t0.0.0.0/0\t0 : 1\t0 : 1")
        .reason
        .contains("4 columns"));
    assert!(bad_rule("@1.2.3.4/8\t0.0.0.0/0\t0 : 1\t0 : 1\t0x100/0xFF")
        .reason
        .contains("out of range"));
    let e = parse_trace("1 2 3 4 6 0 0\n1 2 3 65536 6 0 0\n").unwrap_err();
    assert_eq!((e.file, e.line), ("trace", 2));
    assert_eq!(e.to_string(), "trace line 2: 65536 out of range");
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let dir = Path::new("/nonexistent-classbench");
    let e = load(dir, "acl1_1k").unwrap_err();
    assert!(
        matches!(&e, Error::Read { path, .. } if path == &dir.join("acl1_1k")),
        "{e}"
    );
    assert!(e
        .to_string()
        .starts_with("cannot read ClassBench file /nonexistent-classbench/acl1_1k: "));
}

/// Every shipped file parses whole, with the row counts its README states.
#[test]
fn the_shipped_sets_load_with_their_documented_sizes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let sets: [(&str, usize, Option<usize>); 6] = [
        ("acl1_1k", 878, Some(8780)),
        ("acl1_10k", 9761, None),
        ("fw1_1k", 761, Some(7610)),
        ("fw1_10k", 9416, Some(94182)),
        ("ipc1_1k", 923, Some(9325)),
        ("ipc1_10k", 8739, Some(87474)),
    ];
    for (name, rules, trace) in sets {
        assert_eq!(
            read_rules(&rules_path(&dir, name)).unwrap().len(),
            rules,
            "{name}"
        );
        let trace_file = trace_path(&dir, name);
        match trace {
            Some(n) => assert_eq!(read_trace(&trace_file).unwrap().len(), n, "{name}"),
            None => assert!(!trace_file.exists(), "{name}"),
        }
    }
    let shipped = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        shipped,
        6 + 5,
        "the rule sets and their traces, nothing else"
    );
}
