//! Classification alone, measured the way `dpdk-test-acl` measures it, on the same ClassBench rules and trace:
//! the same 5-tuple layout (proto, src, dst, ports), rules in file order (first listed wins), bursts of 256
//! lookups, one category, cycles counted with the TSC. The one difference is the code path: Bulkhead's safe
//! `dpdk::acl` layer (input length checks, pointer arrays built on the stack) instead of test-acl's direct
//! calls. `cargo xtask bench classify` runs both side by side.
//!
//! ```text
//! cargo run --release -p bulkhead-dataplane --example classify -- RULES TRACE ITERATIONS ALG LCORE
//! ```

use std::path::Path;

use dpdk::acl::{AclBuilder, Alg, FieldDef, FieldKind, FieldValue, Layout, Rule, MAX_PRIORITY};
use dpdk::Eal;

const INPUT: usize = 16;
const BURST: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, rules_path, trace_path, iterations, alg, lcore] = args.as_slice() else {
        return Err(
            "usage: classify RULES TRACE ITERATIONS ALG(scalar|sse|avx2|avx512x16|avx512x32) LCORE"
                .into(),
        );
    };
    let iterations: usize = iterations.parse()?;
    let alg = match alg.as_str() {
        "scalar" => Alg::Scalar,
        "sse" => Alg::Sse,
        "avx2" => Alg::Avx2,
        "avx512x16" => Alg::Avx512x16,
        "avx512x32" => Alg::Avx512x32,
        other => return Err(format!("unknown algorithm {other}").into()),
    };
    let rules = classbench::read_rules(Path::new(rules_path))?;
    let trace = classbench::read_trace(Path::new(trace_path))?;
    let prefix = format!("--file-prefix=bench-classify-{}", std::process::id());
    let eal = Eal::init(&[
        "classify",
        "--no-huge",
        "-m",
        "2048",
        "--no-pci",
        &prefix,
        "-l",
        lcore,
        "--log-level=*:warning",
        "--force-max-simd-bitwidth=512",
    ])?;

    use FieldKind::{Bitmask, Mask, Range};
    let layout = Layout::new(&[
        FieldDef::new(Bitmask, 1, 0, 0, 0),
        FieldDef::new(Mask, 4, 1, 1, 4),
        FieldDef::new(Mask, 4, 2, 2, 8),
        FieldDef::new(Range, 2, 3, 3, 12),
        FieldDef::new(Range, 2, 4, 3, 14),
    ])?;
    let t0 = std::time::Instant::now();
    let mut b = AclBuilder::new(&eal, "classbench", &layout, rules.len() as u32)?;
    for (i, r) in rules.iter().enumerate() {
        let fields = [
            FieldValue::bitmask(u64::from(r.proto.0), u64::from(r.proto.1)),
            FieldValue::prefix(u64::from(r.src.0), r.src.1),
            FieldValue::prefix(u64::from(r.dst.0), r.dst.1),
            FieldValue::range(u64::from(r.sport.0), u64::from(r.sport.1)),
            FieldValue::range(u64::from(r.dport.0), u64::from(r.dport.1)),
        ];
        b.add_rule(&Rule {
            priority: MAX_PRIORITY - i as i32,
            userdata: i as u32 + 1,
            category_mask: 1,
            fields: &fields,
        })?;
    }
    let mut ctx = b.build(1)?;
    let build = t0.elapsed();
    ctx.set_algorithm(alg)?;

    let inputs: Vec<[u8; INPUT]> = trace
        .iter()
        .map(|p| {
            let mut x = [0u8; INPUT];
            x[0] = p.proto;
            x[4..8].copy_from_slice(&p.src.to_be_bytes());
            x[8..12].copy_from_slice(&p.dst.to_be_bytes());
            x[12..14].copy_from_slice(&p.sport.to_be_bytes());
            x[14..16].copy_from_slice(&p.dport.to_be_bytes());
            x
        })
        .collect();
    let refs: Vec<&[u8]> = inputs.iter().map(|x| &x[..]).collect();
    let mut results = vec![0u32; refs.len()];

    // The answers must be right before their speed means anything.
    for chunk in 0..refs.len().div_ceil(BURST) {
        let r = chunk * BURST..((chunk + 1) * BURST).min(refs.len());
        ctx.classify(&refs[r.clone()], &mut results[r])?;
    }
    let wrong = trace
        .iter()
        .zip(&results)
        .filter(|(p, got)| classbench::first_match(&rules, p).map_or(0, |i| i as u32 + 1) != **got)
        .count();
    if wrong > 0 {
        return Err(format!(
            "{wrong} of {} lookups disagree with a linear scan",
            trace.len()
        )
        .into());
    }

    let hz = dpdk::tsc_hz(&eal) as f64;
    let start = dpdk::tsc();
    for _ in 0..iterations {
        for chunk in 0..refs.len().div_ceil(BURST) {
            let r = chunk * BURST..((chunk + 1) * BURST).min(refs.len());
            ctx.classify(&refs[r.clone()], &mut results[r])?;
        }
    }
    let cycles = (dpdk::tsc() - start) as f64;
    let pkts = (iterations * refs.len()) as f64;
    println!(
        "classify: {} rules, {} lookups x {iterations}, {:?}, build {:.3} s: {:.2} cycles/pkt, {:.0} pkt/sec",
        rules.len(),
        refs.len(),
        ctx.algorithm(),
        build.as_secs_f64(),
        cycles / pkts,
        pkts / (cycles / hz)
    );
    Ok(())
}
