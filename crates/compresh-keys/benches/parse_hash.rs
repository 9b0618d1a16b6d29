//! Cost of checking a presented key: parse alone, parse + SHA-256, and SHA-256 of 32 bytes
//! alone as the baseline measured in the same run.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use sha2::{Digest, Sha256};

use compresh_keys::ApiKey;

fn parse_hash(c: &mut Criterion) {
    let key = ApiKey::generate();
    let text = key.expose_secret().to_owned();

    let mut group = c.benchmark_group("keys");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| black_box(black_box(text.as_str()).parse::<ApiKey>()));
    });
    group.bench_function("parse+hash", |b| {
        b.iter(|| {
            black_box(text.as_str())
                .parse::<ApiKey>()
                .map(|key| black_box(key.hash()))
        });
    });
    group.bench_function("sha256 of 32 bytes", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(text.as_bytes()))));
    });
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn`; a private module keeps it out of
// `missing_docs` without allowing the lint for the whole file.
mod group {
    criterion::criterion_group!(benches, super::parse_hash);
}
criterion_main!(group::benches);
