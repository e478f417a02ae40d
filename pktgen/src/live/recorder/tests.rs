use super::*;
use crate::flows::{FlowSet, FlowsConfig};
use crate::frame::L4Proto;
use crate::live::plan::Key;
use crate::live::signature::{self, Stamp};
use crate::verdicts::Verdict as FlowVerdict;

fn plan(frame_size: usize, flows: u32, with_verdicts: bool) -> Plan {
    let set = FlowSet::new(&FlowsConfig {
        flows,
        frame_size,
        proto: L4Proto::Udp,
        ..FlowsConfig::default()
    })
    .unwrap();
    let mut frames = Vec::new();
    set.for_each_frame(|f| {
        frames.push(f.to_vec());
        Ok(())
    })
    .unwrap();
    let verdicts = if with_verdicts {
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let k = Key::of_frame(f).unwrap();
                FlowVerdict {
                    flow: i as u32,
                    proto: k.proto,
                    src: k.src,
                    sport: k.sport,
                    dst: k.dst,
                    dport: k.dport,
                    vlan: k.vlan,
                    expect: if i % 2 == 0 {
                        Expect::Pass
                    } else {
                        Expect::Drop
                    },
                    decision: "test".into(),
                    rule_id: None,
                    packets: 1,
                    reply_packets: 0,
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    Plan::new(frames, verdicts)
}

/// The frame the sender would transmit as packet `n`.
fn stamped(plan: &Plan, trial: u16, n: u64, tsc: u64) -> Vec<u8> {
    let t = &plan.templates[(n % plan.templates.len() as u64) as usize];
    let mut f = t.bytes.clone();
    if let Some((off, sum)) = t.slot {
        signature::write(
            &mut f,
            off,
            sum,
            Stamp {
                seq: seq(trial, n),
                tsc,
            },
        );
    }
    f
}

fn sent(plan: &Plan, n: u64, hz: u64) -> Sent {
    let mut s = Sent::new(plan.templates.len());
    for i in 0..n {
        s.per_template[(i % plan.templates.len() as u64) as usize] += 1;
    }
    s.first_tsc = 0;
    s.last_tsc = hz; // one second
    s
}

#[test]
fn counts_loss_latency_reordering_duplicates_and_stale() {
    let hz = 1_000_000_000; // 1 cycle = 1 ns
    let p = plan(128, 4, false);
    let mut r = Recorder::new(&p, 3, hz);
    // 10 packets sent; 7 arrive: 0..5, then 7, then 6 (reordered), 7 again (duplicate).
    for n in 0..5 {
        r.record(&p, 1, &stamped(&p, 3, n, 100), 100 + 1000 * (n + 1));
    }
    r.record(&p, 1, &stamped(&p, 3, 7, 0), 10_000);
    r.record(&p, 1, &stamped(&p, 3, 6, 0), 10_000);
    r.record(&p, 1, &stamped(&p, 3, 7, 0), 10_000);
    r.record(&p, 1, &stamped(&p, 2, 8, 0), 10_000);
    r.record(&p, 1, &[0u8; 60], 10_000);
    let rep = r.report(&p, &sent(&p, 10, hz), None);
    assert_eq!(rep.sent, 10);
    assert_eq!(rep.received, 7);
    assert_eq!(rep.loss, 3);
    assert_eq!(rep.reordered, 1);
    assert_eq!(rep.duplicates, 1);
    assert_eq!(rep.stale, 1);
    assert_eq!(rep.foreign, 1);
    assert_eq!((rep.offered_pps, rep.received_pps), (10.0, 7.0));
    let l = rep.latency_ns.unwrap();
    assert_eq!(l.samples, 7);
    // The histogram keeps 3 significant digits.
    let near = |got: u64, want: u64| got.abs_diff(want) * 1000 <= want;
    assert!(near(l.min, 1000), "{l:?}");
    assert!(near(l.max, 10_000), "{l:?}");
    assert!(near(l.p50, 4000), "{l:?}");
}

#[test]
fn unstamped_packets_are_matched_by_tuple() {
    let hz = 1000;
    let p = plan(64, 4, false);
    assert_eq!(p.stamped(), 0);
    let mut r = Recorder::new(&p, 0, hz);
    // 8 sent (two rounds of 4 flows); flow 0 arrives three times, flow 1 once.
    for n in [0, 4, 0, 1] {
        r.record(&p, 1, &stamped(&p, 0, n, 0), 0);
    }
    let rep = r.report(&p, &sent(&p, 8, hz), None);
    assert_eq!(
        rep.unstamped,
        Counts {
            sent: 8,
            received: 4
        }
    );
    assert_eq!(rep.received, 3, "the third copy of flow 0 is not a match");
    assert_eq!(rep.loss, 5);
    assert!(rep.latency_ns.is_none());
}

#[test]
fn verdict_mismatches_both_ways() {
    let p = plan(128, 6, true);
    let mut r = Recorder::new(&p, 0, 1000);
    // Flows 0, 2, 4 should pass, 1, 3, 5 drop. Arrive: 0, 2 (pass ok), 3 (drop violated).
    for n in [0, 2, 3] {
        r.record(&p, 1, &stamped(&p, 0, n, 0), 0);
    }
    let rep = r.report(&p, &sent(&p, 6, 1000), Some(6.0));
    let v = rep.verdicts.clone().unwrap();
    assert_eq!((v.flows, v.flows_sent, v.pass_ok, v.drop_ok), (6, 6, 2, 2));
    let bad: Vec<(u32, Expect)> = v.mismatches.iter().map(|m| (m.flow, m.expect)).collect();
    assert_eq!(bad, [(3, Expect::Drop), (4, Expect::Pass)]);
    assert_eq!(v.expected_drop_packets, 3);
    assert!(rep.to_string().contains("2 mismatches"));
}
