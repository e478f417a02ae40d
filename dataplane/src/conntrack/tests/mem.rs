//! Memory per flow at one million flows, measured from the process's resident set.

use std::net::Ipv4Addr;

use crate::conntrack::{ConnTable, Entry, FlowKey};

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn bytes_per_flow_at_one_million() {
    const CAP: usize = 1_000_000;
    let before = resident_bytes();
    let mut t = ConnTable::new(CAP, 0xdead_beef);
    for i in 0..CAP as u32 {
        let src = Ipv4Addr::from(0x0a00_0000 | i);
        let (k, side) = FlowKey::v4(
            src,
            1024 + (i % 50_000) as u16,
            Ipv4Addr::new(192, 0, 2, 1),
            443,
            6,
            0,
        );
        t.insert(k, side, 0).unwrap();
    }
    assert_eq!(t.len(), CAP);
    let after = resident_bytes();
    let measured = after.saturating_sub(before) as f64 / CAP as f64;
    let index = t.index_allocation_bytes() as f64 / CAP as f64;
    let computed = t.heap_bytes() as f64 / CAP as f64;
    println!(
        "conntrack memory at {CAP} flows: entry {} B + index {index:.1} B + sweep seconds {} B = {computed:.1} \
         B/flow computed, {measured:.1} B/flow measured (RSS delta)",
        size_of::<Entry>(),
        size_of::<u16>()
    );
    assert!(computed <= 128.0, "{computed} B/flow");
    // Generous: other tests run concurrently in this process.
    assert!(measured <= 256.0, "{measured} B/flow");
}
