//! Writes usage rows the way the gateway's usage writer does (batches of 64, one key, one
//! provider and model), for measuring the per-row cost of `Store::record_usage` (rows,
//! aggregates and `last_used_at`) with an instruction counter:
//!
//! ```sh
//! cargo build --release -p compresh-store --example usage_write
//! valgrind --tool=callgrind target/release/examples/usage_write 20000
//! callgrind_annotate --inclusive=yes callgrind.out.* | grep record_usage
//! ```
//!
//! Divide the inclusive counts by the row count (the first argument, default 20000). The
//! second argument is the batch size (default 256, the writer's default `batch_rows`).

use compresh_keys::{ApiKey, KeyId};
use compresh_store::{NewApiKey, Store, UsageRecord};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = arg(1, 20_000);
    let batch_rows = arg(2, 256).max(1);
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("s.db"))?;
    let account = store.create_account("bench", "free")?;
    let key = ApiKey::generate();
    let id = KeyId::generate();
    store.insert_key(NewApiKey {
        id: id.clone(),
        account_id: account.id,
        name: "bench".to_owned(),
        environment: None,
        hint: key.hint(),
        hash: key.hash(),
        expires_at: None,
        rpm: None,
        allowed_providers: Vec::new(),
        allowed_models: Vec::new(),
    })?;
    let start = 1_700_000_000;
    let mut batch = Vec::with_capacity(batch_rows);
    for i in 0..rows {
        batch.push(UsageRecord {
            // 200 requests a second.
            at: start + i64::try_from(i / 200)?,
            key_id: id.clone(),
            account_id: account.id,
            provider: "openai".to_owned(),
            model: Some("gpt-4o-mini".to_owned()),
            status: 200,
            latency_ms: 3,
            input_tokens: Some(12),
            output_tokens: Some(9),
            rate_limited: false,
        });
        if batch.len() == batch_rows || i + 1 == rows {
            store.record_usage(&batch)?;
            batch.clear();
        }
    }
    println!("wrote {rows} rows");
    Ok(())
}
