//! A second `Store` on the same file (what the CLI does) is seen by the first
//! within a second, without any call on the first store.

use std::time::{Duration, Instant};

use compresh_keys::{ApiKey, KeyId};
use compresh_store::{NewApiKey, Snapshot, Store, UsageRecord};

/// Polls `store.snapshot()` until `done` holds; fails after `limit`.
fn wait_for(store: &Store, limit: Duration, done: impl Fn(&Snapshot) -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done(&store.snapshot()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn changes_by_another_store_reach_the_snapshot_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compresh.db");
    let server = Store::open(&path).unwrap();
    let cli = Store::open(&path).unwrap();

    let account = cli.create_account("acme", "free").unwrap();
    assert!(
        wait_for(&server, Duration::from_secs(1), |s| s
            .account(account.id)
            .is_some()),
        "account not visible to the server within 1 s"
    );

    let key = ApiKey::generate();
    let id = KeyId::generate();
    cli.insert_key(NewApiKey {
        id: id.clone(),
        account_id: account.id,
        name: "ci".to_owned(),
        environment: None,
        hint: key.hint(),
        hash: key.hash(),
        rpm: None,
        allowed_providers: vec![],
        allowed_models: vec![],
        expires_at: None,
    })
    .unwrap();
    assert!(wait_for(&server, Duration::from_secs(1), |s| s
        .key_by_hash(&key.hash())
        .is_some()));

    cli.revoke_key(&id).unwrap();
    assert!(wait_for(&server, Duration::from_secs(1), |s| s
        .key_by_hash(&key.hash())
        .is_some_and(|k| !k.is_usable_at(0))));
}

#[test]
fn usage_writes_by_another_store_do_not_reload_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compresh.db");
    let server = Store::open(&path).unwrap();
    let account = server.create_account("acme", "free").unwrap();
    let other = Store::open(&path).unwrap();
    let generation = server.snapshot().generation();

    let id = KeyId::generate();
    other
        .record_usage(&[UsageRecord {
            at: 0,
            key_id: id.clone(),
            account_id: account.id,
            provider: "openai".to_owned(),
            model: None,
            status: 200,
            latency_ms: 1,
            input_tokens: None,
            output_tokens: None,
            rate_limited: false,
        }])
        .unwrap();
    other.touch_keys(&[(id.clone(), 5)]).unwrap();
    // The server's own usage writes are seen by its watcher connection as
    // database changes too; they must not reload either.
    server
        .record_usage(&[UsageRecord {
            at: 1,
            key_id: id.clone(),
            account_id: account.id,
            provider: "openai".to_owned(),
            model: Some("gpt-4o".to_owned()),
            status: 500,
            latency_ms: 2,
            input_tokens: Some(3),
            output_tokens: Some(4),
            rate_limited: false,
        }])
        .unwrap();
    server.touch_keys(&[(id, 6)]).unwrap();
    assert_eq!(server.snapshot().generation(), generation);
    // Then a real change, as a marker: once it is visible, the watcher has
    // certainly processed the usage commits before it.
    let marker = other.create_account("marker", "free").unwrap();
    assert!(wait_for(&server, Duration::from_secs(1), |s| s
        .account(marker.id)
        .is_some()));
    assert_eq!(server.snapshot().generation(), generation + 1);
}
