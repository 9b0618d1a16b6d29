//! Compresh persistence: accounts, API keys (hashes only), provider keys
//! (vault ciphertext only), usage, and dashboard users and sessions
//! (password hashes and session-token hashes only), in one SQLite file.
//!
//! Two kinds of users share the file: the gateway, which must answer "which
//! key is this hash, which account, which provider key?" on every request
//! without touching the disk, and the CLI, which edits accounts and keys —
//! possibly while the gateway runs.
//!
//! # Quick start
//!
//! ```
//! use compresh_keys::{ApiKey, KeyId};
//! use compresh_store::{NewApiKey, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::open(&dir.path().join("compresh.db"))?;
//!
//! let account = store.create_account("acme", "pro")?;
//! let key = ApiKey::generate(); // show key.expose_secret() to the user once
//! store.insert_key(NewApiKey {
//!     id: KeyId::generate(),
//!     account_id: account.id,
//!     name: "ci".to_owned(),
//!     environment: Some("prod".to_owned()),
//!     hint: key.hint(),
//!     hash: key.hash(),
//!     rpm: Some(60),
//!     allowed_providers: vec![],
//!     allowed_models: vec![],
//!     expires_at: None,
//! })?;
//!
//! // Request path: no SQL, just a map lookup in the current snapshot.
//! let snapshot = store.snapshot();
//! let record = snapshot.key_by_hash(&key.hash()).expect("just inserted");
//! assert_eq!(record.account_id, account.id);
//! assert!(record.is_usable_at(0));
//! assert_eq!(snapshot.account(account.id).map(|a| a.plan.as_str()), Some("pro"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Design decisions
//!
//! - **Snapshot for reads, SQL for writes.** The request path reads an
//!   immutable [`Snapshot`] behind an `Arc`; taking it is one `Arc` clone
//!   under a read lock. Every [`Store`] method that changes accounts, keys or
//!   provider keys reloads the snapshot before returning, so the very next
//!   request sees the change. Usage writes ([`Store::record_usage`],
//!   [`Store::touch_keys`]) never reload; a background writer that shares
//!   the CPUs with a latency-sensitive server can use
//!   [`Store::record_usage_paced`] to give the CPU up every few rows.
//! - **Changes from other processes within a second.** `open` starts a
//!   watcher thread with its own connection that polls (default every
//!   200 ms) a one-row `change_seq` counter, which triggers bump on every
//!   change the snapshot depends on (not on usage writes), and reloads when
//!   it differs from the snapshot's.
//!   The thread holds only a `Weak` reference and stops when the last
//!   `Store` clone is dropped (dropping joins it).
//! - **SQLite settings.** WAL (readers never block on the CLI writer),
//!   `busy_timeout` 5 s (configurable via [`StoreOptions`]), foreign keys on,
//!   `synchronous = NORMAL`, writes in `BEGIN IMMEDIATE` transactions so the
//!   busy timeout applies to lock upgrades too.
//! - **Refuse, never repair.** `open` checks, before any write: the SQLite
//!   magic bytes ([`StoreError::NotADatabase`]), `PRAGMA application_id`
//!   ([`APPLICATION_ID`]; another application's database is
//!   [`StoreError::ForeignDatabase`]), and `PRAGMA user_version` against the
//!   migrations compiled in ([`StoreError::SchemaTooNew`]). A lock held past
//!   the busy timeout is [`StoreError::Locked`]. A rejected file is left
//!   byte-for-byte unchanged. Migrations are applied in one transaction.
//! - **No secrets at rest.** API keys are stored as the hex of their
//!   [`KeyHash`](compresh_keys::KeyHash); provider keys only as the vault's
//!   ciphertext. Restrictions (allowed providers/models) are JSON arrays.
//! - **Time.** Unix seconds ([`UnixTime`]) from the system clock, taken
//!   inside the store; usage is aggregated per key per UTC day
//!   ([`utc_day`]), computed without a date library.

mod error;
mod model;
mod rows;
mod schema;
mod snapshot;
mod store;
mod time;
mod users;

pub use error::StoreError;
pub use model::{
    Account, ApiKeyRecord, DailyUsage, NewApiKey, NewProvider, ProviderRecord, UsageFilter,
    UsageRecord,
};
pub use schema::{APPLICATION_ID, SCHEMA_VERSION};
pub use snapshot::Snapshot;
pub use store::{Store, StoreOptions};
pub use time::utc_day;
pub use users::{Session, User};

/// Seconds since the Unix epoch (UTC).
pub type UnixTime = i64;
