//! Cost of each stage of the gateway's request path, with a baseline measured in the same run.
//!
//! Stages, in request order:
//! - `auth`: take the key out of the `Authorization` header, parse + checksum + SHA-256 it, and
//!   look it up in the store's snapshot (1,000 keys, real `Store` in a temp dir);
//! - `limiter`: one `KeyedLimiter::check` on one of 1,000 active keys;
//! - `provider key (cache hit)`: `UpstreamCache::get`, what every request after the first pays;
//!   `provider key (vault decrypt)`: a full `KeyRing::open`, what a cache miss pays;
//! - `header rewrite`: clone the SDK's header set and `rewrite_request_headers` it, next to the
//!   baseline `clone SDK headers` (the clone alone), so the rewrite's own cost is the difference.
//!
//! Run: `cargo bench -p compresh-benches -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;

use criterion::{criterion_main, Criterion, Throughput};
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;

use compresh::master_keys::MasterKeys;
use compresh::upstreams::UpstreamCache;
use compresh_forward::{rewrite_request_headers, ProviderKind, Upstream};
use compresh_keys::{extract_key, ApiKey, KeyId};
use compresh_ratelimit::{KeyedLimiter, Tiers};
use compresh_store::{NewApiKey, NewProvider, Store};
use compresh_vault::{KeyRing, MasterSecret, ProviderSecret};

const KEYS: usize = 1_000;

/// The headers the OpenAI Python SDK sends with a chat completion.
fn sdk_headers(key: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "127.0.0.1:8080"),
        ("accept-encoding", "gzip, deflate"),
        ("connection", "keep-alive"),
        ("accept", "application/json"),
        ("content-type", "application/json"),
        ("user-agent", "OpenAI/Python 1.54.0"),
        ("x-stainless-lang", "python"),
        ("x-stainless-package-version", "1.54.0"),
        ("x-stainless-os", "Linux"),
        ("x-stainless-arch", "x64"),
        ("x-stainless-runtime", "CPython"),
        ("x-stainless-runtime-version", "3.12.3"),
        ("x-stainless-async", "false"),
        ("x-stainless-retry-count", "0"),
        ("content-length", "172"),
    ] {
        headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    headers
}

fn hot_path(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("compresh.db")).unwrap();
    let account = store.create_account("bench", "pro").unwrap();
    let mut presented = None;
    for i in 0..KEYS {
        let key = ApiKey::generate();
        store
            .insert_key(NewApiKey {
                id: KeyId::generate(),
                account_id: account.id,
                name: format!("k{i}"),
                environment: None,
                hint: key.hint(),
                hash: key.hash(),
                rpm: Some(100_000_000),
                allowed_providers: vec![],
                allowed_models: vec![],
                expires_at: None,
            })
            .unwrap();
        if i == KEYS / 2 {
            presented = Some(key);
        }
    }
    let presented = presented.unwrap();
    let headers = sdk_headers(presented.expose_secret());
    let record = store
        .snapshot()
        .key_by_hash(&presented.hash())
        .unwrap()
        .clone();

    let ring = KeyRing::new(1, MasterSecret::generate());
    let ring_text = ring.to_text();
    let (master_keys, _) = MasterKeys::load(dir.path(), Some(ring_text.as_str())).unwrap();
    let sealed = ring
        .seal(&ProviderSecret::new(
            "sk-proj-0123456789abcdefghijklmnopqrstuv".to_owned(),
        ))
        .unwrap();
    let provider = store
        .upsert_provider(NewProvider {
            account_id: account.id,
            name: "openai".to_owned(),
            kind: "openai".to_owned(),
            base_url: Some("http://127.0.0.1:9/v1".to_owned()),
            ciphertext: sealed.token.clone(),
            key_version: sealed.version,
            hint: "stuv".to_owned(),
        })
        .unwrap();
    let cache = UpstreamCache::default();
    cache.get(&provider, &master_keys).unwrap();
    let upstream = Upstream::new(
        "openai",
        ProviderKind::OpenAi,
        Some("http://127.0.0.1:9/v1"),
        Some(ProviderSecret::new(
            "sk-proj-0123456789abcdefghijklmnopqrstuv".to_owned(),
        )),
    )
    .unwrap();

    let limiter: KeyedLimiter<String> = KeyedLimiter::new();
    let key_ids: Vec<String> = (0..KEYS)
        .map(|_| KeyId::generate().as_str().to_owned())
        .collect();
    let policy = Tiers::default().policy_for("pro", NonZeroU32::new(100_000_000));
    for id in &key_ids {
        limiter.check(id.as_str(), &policy);
    }
    // The gateway limits by the key id of the authenticated record.
    let limited = record.id.as_str();
    limiter.check(limited, &policy);

    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline: clone SDK headers", |b| {
        b.iter(|| black_box(black_box(&headers).clone()));
    });
    group.bench_function("auth: extract + parse + hash + snapshot lookup", |b| {
        b.iter(|| {
            let headers = black_box(&headers);
            let key = extract_key(
                headers
                    .get(http::header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
                headers.get("x-api-key").map(HeaderValue::as_bytes),
            )
            .unwrap();
            let snapshot = store.snapshot();
            black_box(snapshot.key_by_hash(&key.hash()).map(|r| r.account_id))
        });
    });
    group.bench_function("limiter check", |b| {
        b.iter(|| black_box(limiter.check(black_box(limited), &policy).allowed));
    });
    group.bench_function("provider key (cache hit)", |b| {
        b.iter(|| {
            black_box(
                cache
                    .get(black_box(&provider), &master_keys)
                    .map(|u| Arc::strong_count(&u)),
            )
        });
    });
    group.bench_function("provider key (vault decrypt)", |b| {
        b.iter(|| {
            black_box(
                ring.open(black_box(&sealed))
                    .map(|s| s.expose_secret().len()),
            )
        });
    });
    group.bench_function("header rewrite (clone + rewrite)", |b| {
        b.iter(|| {
            let mut copy = black_box(&headers).clone();
            rewrite_request_headers(&mut copy, &upstream);
            black_box(copy)
        });
    });
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn`; a private module keeps it out of
// `missing_docs` without allowing the lint for the whole file.
mod group {
    criterion::criterion_group!(benches, super::hot_path);
}
criterion_main!(group::benches);
