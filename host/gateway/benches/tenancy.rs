//! Tenant resolution from a client id: a two-`*` pattern against client ids up to 64 KiB
//! (Mosquitto accepts client ids up to 65,535 bytes): a miss without separators, a miss with a
//! separator at every byte, and a match near the end. The backtracking matcher this replaced
//! took 2.5 s for one 2,000-byte client id.
//!
//! `cargo bench -p mqtt-policy-gateway --bench tenancy`
// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mqtt_policy_gateway::tenancy::Pattern;

fn bench(c: &mut Criterion) {
    let pattern = Pattern::parse("*:{tenant}:*").expect("pattern");
    let mut group = c.benchmark_group("two-star pattern *:{tenant}:*");
    for len in [23, 2_000, 64 << 10] {
        // No ':' at all: every split is tried and fails, the worst case for backtracking.
        let miss = "x".repeat(len);
        assert_eq!(pattern.extract(&miss), None);
        group.bench_with_input(BenchmarkId::new("miss", len), &miss, |b, id| b.iter(|| pattern.extract(black_box(id))));
        // A separator at every byte: every position is a candidate start, and none is a name.
        let dense = ":".repeat(len);
        assert_eq!(pattern.extract(&dense), None);
        group.bench_with_input(BenchmarkId::new("dense miss", len), &dense, |b, id| {
            b.iter(|| pattern.extract(black_box(id)))
        });
        // The tenant near the end, after a long run of name characters.
        let mut hit = "x".repeat(len.max(16));
        let at = hit.len() - 8;
        hit.replace_range(at..at + 6, ":acme:");
        assert_eq!(pattern.extract(&hit), Some("acme"));
        group.bench_with_input(BenchmarkId::new("match", len), &hit, |b, id| b.iter(|| pattern.extract(black_box(id))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
