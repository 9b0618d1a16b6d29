//! `Store::open` refuses bad files with a precise error and leaves them unchanged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use compresh_store::{Store, StoreError, StoreOptions, APPLICATION_ID, SCHEMA_VERSION};
use rusqlite::Connection;

fn temp() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compresh.db");
    (dir, path)
}

fn fast() -> StoreOptions {
    StoreOptions {
        busy_timeout: Duration::from_millis(100),
        ..StoreOptions::default()
    }
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

/// A valid store with one account, closed (so fully checkpointed).
fn make_store(path: &Path) {
    let store = Store::open(path).unwrap();
    store.create_account("acme", "free").unwrap();
}

#[test]
fn random_bytes_are_not_a_database() {
    let (_dir, path) = temp();
    // Deterministic "random" bytes (xorshift), 8 KiB.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let junk: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::NotADatabase { path: ref p } if p == &path),
        "{err:?}"
    );
    assert!(err.to_string().contains("not an SQLite database"));
    assert_eq!(bytes(&path), junk);
}

#[test]
fn sqlite_header_with_garbage_body_is_not_a_database() {
    let (_dir, path) = temp();
    let mut junk = b"SQLite format 3\0".to_vec();
    junk.extend(std::iter::repeat_n(0xA5_u8, 4096 - 16));
    std::fs::write(&path, &junk).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::NotADatabase { .. } | StoreError::Sqlite(_)),
        "{err:?}"
    );
    assert_eq!(bytes(&path), junk);
}

#[test]
fn another_applications_database_is_foreign() {
    let (_dir, path) = temp();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA application_id = 1234; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);
             INSERT INTO notes (body) VALUES ('hello');",
        )
        .unwrap();
    }
    let before = bytes(&path);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::ForeignDatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("another application"));
    assert_eq!(bytes(&path), before);
}

#[test]
fn database_without_application_id_but_with_tables_is_foreign() {
    let (_dir, path) = temp();
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE accounts (id INTEGER PRIMARY KEY);")
            .unwrap();
    }
    let before = bytes(&path);
    assert!(matches!(
        Store::open(&path),
        Err(StoreError::ForeignDatabase { .. })
    ));
    assert_eq!(bytes(&path), before);
}

#[test]
fn newer_schema_is_refused() {
    let (_dir, path) = temp();
    make_store(&path);
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let before = bytes(&path);
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported }
            if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(bytes(&path), before);
}

#[test]
fn write_locked_database_is_locked() {
    let (_dir, path) = temp();
    make_store(&path);
    let before = bytes(&path);
    for behavior in ["BEGIN IMMEDIATE", "BEGIN EXCLUSIVE"] {
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch(behavior).unwrap();
        let err = Store::open_with(&path, fast()).unwrap_err();
        assert!(matches!(err, StoreError::Locked), "{behavior}: {err:?}");
        assert!(err.to_string().contains("locked"));
        holder.execute_batch("ROLLBACK").unwrap();
        drop(holder);
        assert_eq!(bytes(&path), before, "{behavior}");
    }
    // Once the lock is released the store opens and the data is intact.
    let store = Store::open_with(&path, fast()).unwrap();
    assert_eq!(store.account_by_name("acme").unwrap().name, "acme");
}

#[test]
fn exclusive_lock_on_a_fresh_rollback_journal_file_is_locked() {
    let (_dir, path) = temp();
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(matches!(
        Store::open_with(&path, fast()),
        Err(StoreError::Locked)
    ));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    Store::open_with(&path, fast()).unwrap();
}

#[test]
fn writes_report_locked_when_another_writer_holds_the_lock() {
    let (_dir, path) = temp();
    let store = Store::open_with(&path, fast()).unwrap();
    let holder = Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(matches!(
        store.create_account("acme", "free"),
        Err(StoreError::Locked)
    ));
    // Reads are not blocked by a writer in WAL mode.
    assert!(store.list_accounts().unwrap().is_empty());
    holder.execute_batch("ROLLBACK").unwrap();
    store.create_account("acme", "free").unwrap();
}

#[test]
fn a_new_file_gets_wal_application_id_and_schema_version() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(
        (app, version, mode.as_str()),
        (APPLICATION_ID, SCHEMA_VERSION, "wal")
    );
    drop(store);
    // Reopening an existing store works and keeps the data.
    let store = Store::open(&path).unwrap();
    store.create_account("acme", "free").unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.list_accounts().unwrap().len(), 1);
}

#[test]
fn an_empty_existing_file_becomes_a_store() {
    let (_dir, path) = temp();
    std::fs::write(&path, b"").unwrap();
    Store::open(&path)
        .unwrap()
        .create_account("a", "b")
        .unwrap();
}

#[test]
fn a_missing_directory_is_an_io_error() {
    let (dir, _) = temp();
    let path = dir.path().join("missing").join("compresh.db");
    assert!(matches!(Store::open(&path), Err(StoreError::Io { .. })));
    assert!(!path.exists());
}
