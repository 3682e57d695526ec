//! Criterion benchmarks of the pure core: inspecting a 3-certificate chain with its key,
//! and computing a renewal time (with and without maintenance windows).
//!
//! Run: `cargo bench --bench inspect`. Figures are reported in docs/performance.md.

use certrot::config::{CronSpec, Policy, Window};
use certrot::policy::{Validity, renewal};
use certrot::units::Span;
use certrot_sandbox::ca::{KeyAlg, LocalCa};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use time::{Duration, OffsetDateTime};

fn benches(c: &mut Criterion) {
    let ca = LocalCa::with_intermediate("bench CA").expect("CA");
    let now = OffsetDateTime::now_utc();
    for (label, alg) in [
        ("ecdsa-p256", KeyAlg::EcdsaP256),
        ("rsa-2048", KeyAlg::Rsa2048),
    ] {
        let issued = ca
            .issue(
                "bench",
                alg,
                now - Duration::hours(1),
                now + Duration::days(7),
            )
            .expect("issue");
        // Out of order on purpose: root, leaf, intermediate.
        let blocks: Vec<&str> = issued
            .chain_pem
            .split_inclusive("-----END CERTIFICATE-----\n")
            .collect();
        let shuffled = format!("{}{}{}", blocks[2], blocks[0], blocks[1]);
        c.bench_function(&format!("inspect 3-cert chain + key ({label})"), |b| {
            b.iter(|| {
                certrot::x509::inspect(
                    black_box(shuffled.as_bytes()),
                    "chain",
                    black_box(issued.key_pem.as_bytes()),
                    "key",
                )
                .expect("inspect")
            })
        });
        c.bench_function(&format!("parse 3-cert chain only ({label})"), |b| {
            b.iter(|| {
                certrot::x509::parse_chain(black_box(shuffled.as_bytes()), "chain").expect("chain")
            })
        });
        c.bench_function(&format!("parse + validate key only ({label})"), |b| {
            b.iter(|| {
                certrot::x509::parse_key(black_box(issued.key_pem.as_bytes()), "key").expect("key")
            })
        });
    }
    let v = Validity {
        not_before: now,
        not_after: now + Duration::days(7),
    };
    let plain = Policy::default();
    c.bench_function("renewal time (default policy)", |b| {
        b.iter(|| renewal(black_box(&plain), black_box(v), "0a:1b:2c:3d"))
    });
    let windowed = Policy {
        windows: vec![Window {
            cron: CronSpec::parse("0 0 2 * * Mon-Fri").expect("cron"),
            duration: Span::hours(2),
        }],
        ..Policy::default()
    };
    c.bench_function("renewal time (one maintenance window)", |b| {
        b.iter(|| renewal(black_box(&windowed), black_box(v), "0a:1b:2c:3d"))
    });
}

criterion_group!(inspect, benches);
criterion_main!(inspect);
