use super::*;

fn policy() -> Policy {
    Policy::from_value(json!({
            "format": "bulkhead.policy/v1",
            "segments": [
                {"name": "a", "prefixes": ["10.0.0.0/24"]},
                {"name": "b", "prefixes": ["10.0.1.0/24"]},
                {"name": "v6", "prefixes": ["fd00::/64"]}
            ],
            "rules": [
                {"id": 1, "name": "a-b", "from": {"segment": "a"}, "to": {"segment": "b"}, "service": "any",
                 "action": "allow", "description": "everything from a to b"},
                {"id": 2, "name": "a-b-again", "from": {"segment": "a"}, "to": {"segment": "b"}, "service": "any",
                 "action": "deny"},
                {"id": 3, "name": "a-v6", "from": {"segment": "a"}, "to": {"segment": "v6"}, "service": "any",
                 "action": "allow", "mode": "monitor"}
            ]
        }))
        .unwrap()
}

fn stats(id: u32, packets: u64, last_hit: Option<&str>) -> (u32, RuleCounters) {
    (
        id,
        RuleCounters {
            rule_id: id,
            packets,
            bytes: packets * 100,
            flows: 1,
            last_hit: last_hit.map(String::from),
            ..Default::default()
        },
    )
}

#[test]
fn counters_staleness_and_shadowing() {
    let now = humantime::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
    let counters = (
        now,
        HashMap::from([
            stats(0, 7, Some("2026-11-21T11:59:00.000Z")),
            stats(1, 5, Some("2026-11-21T11:00:00.000Z")),
        ]),
    );
    let q = RulesHealthQuery {
        which: Which::Active,
        stale_after_s: 1800,
        gateway: None,
    };
    let p = policy();
    let sh = shadowing(&p);
    let v = report(&q, Some(4), Some((&p, &sh)), Some(&counters), now);
    assert_eq!(v["version"], 4);
    assert_eq!(v["read_at"], "2026-11-21T12:00:00.000Z");
    let r = &v["rules"];
    assert_eq!(r[0]["packets"], 5);
    assert_eq!(r[0]["description"], "everything from a to b");
    assert_eq!(r[0]["stale"], true, "last hit an hour ago, window 30 min");
    assert_eq!(r[0]["shadowed"], Value::Null);
    assert_eq!(r[1]["shadowed"], json!({"reason": "covered_by", "by": [1]}));
    assert_eq!(r[1]["packets"], 0, "not in the reading: zeros");
    assert_eq!(r[1]["last_hit"], Value::Null);
    assert_eq!(r[1]["stale"], true);
    assert_eq!(
        r[2]["shadowed"],
        json!({"reason": "matches_nothing", "by": []})
    );
    assert_eq!(
        (r[2]["position"].clone(), r[2]["mode"].clone()),
        (json!(2), json!("monitor"))
    );
    assert_eq!(
        v["default"],
        json!({"action": "deny", "packets": 7, "bytes": 700, "flows": 1,
                   "last_hit": "2026-11-21T11:59:00.000Z"})
    );
    let q = RulesHealthQuery {
        which: Which::Active,
        stale_after_s: 7200,
        gateway: None,
    };
    let v = report(&q, Some(4), Some((&p, &sh)), Some(&counters), now);
    assert_eq!(v["rules"][0]["stale"], false, "within two hours");
}

#[test]
fn without_a_reading_shadowing_is_still_given() {
    let q = RulesHealthQuery {
        which: Which::Draft,
        stale_after_s: 60,
        gateway: None,
    };
    let p = policy();
    let v = report(
        &q,
        None,
        Some((&p, &shadowing(&p))),
        None,
        SystemTime::now(),
    );
    assert_eq!(v["policy"], "draft");
    assert_eq!(v["read_at"], Value::Null);
    let r = &v["rules"][1];
    assert_eq!(r["packets"], Value::Null);
    assert_eq!(r["stale"], Value::Null);
    assert_eq!(r["shadowed"]["reason"], "covered_by");
    assert_eq!(v["default"]["packets"], Value::Null);
}

#[test]
fn the_cache_answers_per_key() {
    let cache = ShadowCache::default();
    let p = policy();
    let a = cache.get(CacheKey::Active(1), &p);
    assert!(
        Arc::ptr_eq(&a, &cache.get(CacheKey::Active(1), &p)),
        "computed once"
    );
    let open = Policy::from_value(json!({"format": "bulkhead.policy/v1"})).unwrap();
    let d = cache.get(CacheKey::Draft(1), &open);
    assert!(d.is_empty(), "another key: computed for that policy");
    assert_eq!(cache.get(CacheKey::Active(1), &p).len(), 2);
}

#[test]
fn a_pairs_counters_are_the_sum_of_its_members() {
    let t1 = humantime::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
    let t2 = humantime::parse_rfc3339("2026-11-21T12:00:01Z").unwrap();
    let active = HashMap::from([
        stats(1, 10, Some("2026-11-21T11:59:00Z")),
        stats(2, 5, None),
    ]);
    let standby = HashMap::from([
        stats(1, 3, Some("2026-11-21T11:00:00Z")),
        stats(3, 7, Some("2026-11-21T11:30:00Z")),
    ]);
    let (at, sum) = pair_counters([(t1, active), (t2, standby)]).unwrap();
    assert_eq!(at, t2);
    assert_eq!(
        (sum[&1].packets, sum[&1].bytes, sum[&1].flows),
        (13, 1300, 2)
    );
    assert_eq!(sum[&1].last_hit.as_deref(), Some("2026-11-21T11:59:00Z"));
    assert_eq!((sum[&2].packets, sum[&2].last_hit.as_deref()), (5, None));
    assert_eq!(
        (sum[&3].packets, sum[&3].last_hit.as_deref()),
        (7, Some("2026-11-21T11:30:00Z"))
    );
    assert!(pair_counters([]).is_none());
}

/// A counters report of one dataplane process: `idle` polls so far, and each rule's packets.
fn counters(idle: u64, rules: &[(u32, u64)]) -> protocol::CountersReport {
    let totals = protocol::WorkerSnapshot {
        idle_polls: idle,
        ..Default::default()
    };
    protocol::CountersReport {
        workers: vec![totals.clone()],
        totals,
        rules: rules.iter().map(|&(id, n)| stats(id, n, None).1).collect(),
        ..Default::default()
    }
}

fn packets(r: &Reading) -> Vec<(u32, u64)> {
    let (_, by_id) = rule_counters(r).unwrap();
    let mut v: Vec<(u32, u64)> = by_id.values().map(|c| (c.rule_id, c.packets)).collect();
    v.sort();
    v
}

#[test]
fn a_restarted_gateway_keeps_counting_up() {
    let mut r = Reading::default();
    assert!(rule_counters(&r).is_none(), "never read");
    r.succeed(counters(100, &[(0, 1), (1, 10)]), Duration::ZERO);
    assert_eq!(packets(&r), [(0, 1), (1, 10)]);
    r.succeed(counters(200, &[(0, 1), (1, 15)]), Duration::ZERO);
    assert_eq!(packets(&r), [(0, 1), (1, 15)], "the same process: as read");
    // The dataplane restarts: it counts from zero, and its earlier counts are kept.
    r.succeed(counters(5, &[(0, 0), (1, 2)]), Duration::ZERO);
    assert_eq!(r.resets, 1);
    assert_eq!(packets(&r), [(0, 1), (1, 17)]);
    // A restart whose rules happen to count more already: the polls went backwards, so it is one all the same.
    r.succeed(counters(1, &[(0, 3), (1, 20)]), Duration::ZERO);
    assert_eq!(packets(&r), [(0, 4), (1, 37)]);
    // A rule that leaves the policy keeps what it counted; one whose slot starts again is not lost either.
    r.succeed(counters(50, &[(0, 3), (2, 4)]), Duration::ZERO);
    assert_eq!(packets(&r), [(0, 4), (1, 37), (2, 4)]);
    r.succeed(counters(60, &[(0, 3), (1, 1), (2, 1)]), Duration::ZERO);
    assert_eq!(packets(&r), [(0, 4), (1, 38), (2, 5)]);
    // Unreachable: no counters for the gateway alone; they come back whole.
    r.fail("unreachable", "gone".into());
    assert!(rule_counters(&r).is_none());
    r.succeed(counters(70, &[(0, 3), (1, 1), (2, 1)]), Duration::ZERO);
    assert_eq!(packets(&r), [(0, 4), (1, 38), (2, 5)]);
}

#[test]
fn a_pair_loses_no_hit_across_a_failover_and_a_member_restart() {
    let (mut one, mut two) = (Reading::default(), Reading::default());
    let sum = |one: &Reading, two: &Reading| -> Option<u64> {
        let (_, by_id) = pair_rule_counters(&[("one", one), ("two", two)])?;
        Some(by_id[&1].packets)
    };
    assert_eq!(sum(&one, &two), None, "no member read yet");
    // Member one is active and counts; member two, the standby, counts nothing.
    one.succeed(counters(100, &[(1, 10)]), Duration::ZERO);
    two.succeed(counters(100, &[(1, 0)]), Duration::ZERO);
    assert_eq!(sum(&one, &two), Some(10));
    // Failover: two counts from where it was, one stops counting.
    two.succeed(counters(200, &[(1, 6)]), Duration::ZERO);
    assert_eq!(sum(&one, &two), Some(16));
    // One restarts: while it cannot be read its hits still count, and after it they are still there.
    one.fail("unreachable", "restarting".into());
    assert_eq!(sum(&one, &two), Some(16));
    one.succeed(counters(3, &[(1, 0)]), Duration::ZERO);
    assert_eq!(sum(&one, &two), Some(16));
    // Back to one: it counts up from there.
    one.succeed(counters(10, &[(1, 4)]), Duration::ZERO);
    assert_eq!(sum(&one, &two), Some(20));
    // Neither can be read: no counters (not a stale sum).
    one.fail("unreachable", "gone".into());
    two.fail("unreachable", "gone".into());
    assert_eq!(sum(&one, &two), None);
}
