//! The [`Store`]: SQLite persistence plus the shared, auto-refreshed snapshot.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use compresh_keys::KeyId;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{is_foreign_key_violation, is_unique_violation, StoreError};
use crate::model::{
    Account, ApiKeyRecord, DailyUsage, NewApiKey, NewProvider, ProviderRecord, UsageFilter,
    UsageRecord,
};
use crate::rows::{self, ACCOUNT_COLS, KEY_COLS, PROVIDER_COLS};
use crate::snapshot::Snapshot;
use crate::time::{is_day, now, utc_day};
use crate::{schema, UnixTime};

/// Tunables of [`Store::open_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// How long a statement waits for another connection's lock before
    /// failing with [`StoreError::Locked`]. Default 5 s.
    pub busy_timeout: Duration,
    /// How often the background watcher checks for changes made by other
    /// processes. Default 200 ms.
    pub watch_interval: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            watch_interval: Duration::from_millis(200),
        }
    }
}

/// Handle to an open store. Cheap to clone; all clones share one connection,
/// one snapshot and one watcher thread, which stops when the last clone is
/// dropped.
///
/// Errors common to every method: [`StoreError::Locked`] when another
/// connection (e.g. a CLI) holds the write lock past the busy timeout,
/// [`StoreError::Sqlite`] for other database failures and
/// [`StoreError::Corrupt`] when a stored row cannot be decoded. A method that
/// changes accounts, keys or provider keys commits first and then reloads the
/// snapshot; if that reload fails the error is returned although the change
/// is committed (the watcher retries the reload).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The connection for all statements issued through `Store` methods.
    conn: Mutex<Connection>,
    /// Current snapshot; readers only clone the `Arc` under the read lock.
    current: RwLock<Arc<Snapshot>>,
    /// Serialises load+install so that a later load (which sees a newer
    /// commit) is always installed after an earlier one.
    /// Lock order: `conn` before `reload`.
    reload: Mutex<()>,
    watcher: Mutex<Option<Watcher>>,
}

struct Watcher {
    /// Dropping it wakes the watcher thread, which then exits.
    stop: mpsc::Sender<()>,
    handle: JoinHandle<()>,
}

impl Store {
    /// Opens (creating if missing) the store at `path` with default options.
    ///
    /// # Errors
    /// See [`Store::open_with`].
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with(path, StoreOptions::default())
    }

    /// Opens (creating if missing) the store at `path`: checks the file,
    /// switches it to WAL, applies pending migrations in one transaction,
    /// loads the first snapshot and starts the change watcher.
    ///
    /// A file that fails a check is left byte-for-byte unchanged.
    ///
    /// # Errors
    /// [`StoreError::NotADatabase`] for a file that is not SQLite,
    /// [`StoreError::ForeignDatabase`] for another application's database,
    /// [`StoreError::SchemaTooNew`] for a store written by a newer Compresh,
    /// [`StoreError::Locked`] if another connection holds a write lock past
    /// `options.busy_timeout`, [`StoreError::Io`] if the file or its
    /// directory cannot be accessed, [`StoreError::Sqlite`] otherwise.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        schema::check_header(path)?;
        let on_err = schema::open_error(path);
        let mut conn = open_connection(path, &options).map_err(&on_err)?;
        schema::prepare(&mut conn, path)?;
        let first = Snapshot::load(&conn).map_err(&on_err)?.with_generation(1);
        let watch_conn = open_connection(path, &options).map_err(&on_err)?;
        watch_conn.pragma_update(None, "query_only", true)?;

        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            current: RwLock::new(Arc::new(first)),
            reload: Mutex::new(()),
            watcher: Mutex::new(None),
        });
        let (stop, stopped) = mpsc::channel();
        let weak = Arc::downgrade(&inner);
        let interval = options.watch_interval;
        let handle = thread::Builder::new()
            .name("compresh-store-watch".to_owned())
            .spawn(move || watch(&weak, &watch_conn, &stopped, interval))
            .map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        *lock(&inner.watcher) = Some(Watcher { stop, handle });
        tracing::debug!(path = %path.display(), "store opened");
        Ok(Store { inner })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current snapshot. Costs one `Arc` clone under a read lock; no SQL.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.inner.snapshot()
    }

    /// Reloads the snapshot from the database now (also picks up
    /// `last_used_at` changes, which never trigger a reload by themselves).
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the read fails;
    /// [`StoreError::Corrupt`] if a row cannot be decoded. The previous
    /// snapshot stays in place.
    pub fn refresh(&self) -> Result<(), StoreError> {
        let conn = lock(&self.inner.conn);
        self.inner.reload_with(&conn).map_err(StoreError::classify)
    }

    // ----- accounts -------------------------------------------------------

    /// Creates an active account.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if the name is taken; see [`Store`] for
    /// the errors common to all methods.
    pub fn create_account(&self, name: &str, plan: &str) -> Result<Account, StoreError> {
        self.write(|tx| {
            let sql = format!(
                "INSERT INTO accounts (name, plan, active, created_at) VALUES (?1, ?2, 1, ?3) \
                 RETURNING {ACCOUNT_COLS}"
            );
            tx.query_row(&sql, params![name, plan, now()], rows::account)
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::AlreadyExists {
                            what: "account",
                            name: name.to_owned(),
                        }
                    } else {
                        e.into()
                    }
                })
        })
    }

    /// The account named `name`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is none.
    pub fn account_by_name(&self, name: &str) -> Result<Account, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE name = ?1");
            conn.query_row(&sql, [name], rows::account)
                .optional()?
                .ok_or_else(|| not_found("account", name))
        })
    }

    /// All accounts, ordered by id.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(rows::accounts)
    }

    /// Activates or deactivates an account.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such account.
    pub fn set_account_active(&self, name: &str, active: bool) -> Result<Account, StoreError> {
        self.update_account(name, "active = ?2", active)
    }

    /// Changes an account's plan.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such account.
    pub fn set_account_plan(&self, name: &str, plan: &str) -> Result<Account, StoreError> {
        self.update_account(name, "plan = ?2", plan)
    }

    fn update_account(
        &self,
        name: &str,
        set: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<Account, StoreError> {
        self.write(|tx| {
            let sql = format!("UPDATE accounts SET {set} WHERE name = ?1 RETURNING {ACCOUNT_COLS}");
            tx.query_row(&sql, params![name, value], rows::account)
                .optional()?
                .ok_or_else(|| not_found("account", name))
        })
    }

    // ----- API keys -------------------------------------------------------

    /// Stores a new API key (its hash, never the key).
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] if the id (`what = "api key"`) or the
    /// hash (`what = "api key hash"`) is taken; [`StoreError::NotFound`] if
    /// the account does not exist.
    pub fn insert_key(&self, key: NewApiKey) -> Result<ApiKeyRecord, StoreError> {
        self.write(|tx| {
            let sql = format!(
                "INSERT INTO api_keys (id, account_id, name, environment, hint, hash, created_at, \
                 expires_at, rpm, allowed_providers, allowed_models) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING {KEY_COLS}"
            );
            let raw = tx
                .query_row(
                    &sql,
                    params![
                        key.id.as_str(),
                        key.account_id,
                        key.name,
                        key.environment,
                        key.hint,
                        key.hash.to_hex(),
                        now(),
                        key.expires_at,
                        key.rpm,
                        rows::encode_list(&key.allowed_providers),
                        rows::encode_list(&key.allowed_models),
                    ],
                    rows::raw_key,
                )
                .map_err(|e| insert_key_error(e, &key))?;
            raw.decode()
        })
    }

    /// The key with this id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is none.
    pub fn key_by_id(&self, id: &KeyId) -> Result<ApiKeyRecord, StoreError> {
        self.read(|conn| key_by_id(conn, id))
    }

    /// All keys of an account (revoked ones included), oldest first. An
    /// unknown account has no keys.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn list_keys(&self, account_id: i64) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|conn| rows::keys(conn, Some(account_id)))
    }

    /// Revokes a key now. Idempotent: a second call keeps the first
    /// revocation time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such key.
    pub fn revoke_key(&self, id: &KeyId) -> Result<ApiKeyRecord, StoreError> {
        self.update_key(id, "revoked_at = COALESCE(revoked_at, ?2)", now())
    }

    /// Sets (or clears, with `None`) the key's requests-per-minute limit.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such key.
    pub fn set_key_rpm(&self, id: &KeyId, rpm: Option<u32>) -> Result<ApiKeyRecord, StoreError> {
        self.update_key(id, "rpm = ?2", rpm)
    }

    /// Sets (or clears) the key's expiry time.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such key.
    pub fn set_key_expiry(
        &self,
        id: &KeyId,
        expires_at: Option<UnixTime>,
    ) -> Result<ApiKeyRecord, StoreError> {
        self.update_key(id, "expires_at = ?2", expires_at)
    }

    /// Records that key `id` was replaced by `new_id` (rotation).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if either key does not exist.
    pub fn set_key_replaced_by(&self, id: &KeyId, new_id: &KeyId) -> Result<(), StoreError> {
        self.write(|tx| {
            key_by_id(tx, new_id)?;
            let n = tx.execute(
                "UPDATE api_keys SET replaced_by = ?2 WHERE id = ?1",
                params![id.as_str(), new_id.as_str()],
            )?;
            if n == 0 {
                return Err(not_found("api key", id.as_str()));
            }
            Ok(())
        })
    }

    /// Batch update of `last_used_at` (keeps the max); unknown ids are
    /// ignored. Does not refresh the in-process snapshot, and does not make
    /// other processes reload theirs.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`]; nothing is written
    /// then.
    pub fn touch_keys(&self, used: &[(KeyId, UnixTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        self.write_no_refresh(|tx| {
            let mut stmt = tx.prepare_cached(TOUCH_KEY_SQL)?;
            for (id, at) in used {
                stmt.execute(params![id.as_str(), at])?;
            }
            Ok(())
        })
    }

    fn update_key(
        &self,
        id: &KeyId,
        set: &str,
        value: impl rusqlite::ToSql,
    ) -> Result<ApiKeyRecord, StoreError> {
        self.write(|tx| {
            let sql = format!("UPDATE api_keys SET {set} WHERE id = ?1 RETURNING {KEY_COLS}");
            tx.query_row(&sql, params![id.as_str(), value], rows::raw_key)
                .optional()?
                .ok_or_else(|| not_found("api key", id.as_str()))?
                .decode()
        })
    }

    // ----- provider keys --------------------------------------------------

    /// Inserts or replaces the provider key `(account_id, name)`; a
    /// replacement keeps `id` and `created_at` and sets `updated_at`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the account does not exist.
    pub fn upsert_provider(&self, provider: NewProvider) -> Result<ProviderRecord, StoreError> {
        self.write(|tx| {
            let sql = format!(
                "INSERT INTO providers (account_id, name, kind, base_url, ciphertext, key_version, \
                 hint, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) \
                 ON CONFLICT (account_id, name) DO UPDATE SET kind = excluded.kind, \
                 base_url = excluded.base_url, ciphertext = excluded.ciphertext, \
                 key_version = excluded.key_version, hint = excluded.hint, \
                 updated_at = excluded.updated_at \
                 RETURNING {PROVIDER_COLS}"
            );
            tx.query_row(
                &sql,
                params![
                    provider.account_id,
                    provider.name,
                    provider.kind,
                    provider.base_url,
                    provider.ciphertext,
                    provider.key_version,
                    provider.hint,
                    now(),
                ],
                rows::provider,
            )
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    not_found("account", &provider.account_id.to_string())
                } else {
                    e.into()
                }
            })
        })
    }

    /// Provider keys of one account, ordered by name.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn list_providers(&self, account_id: i64) -> Result<Vec<ProviderRecord>, StoreError> {
        self.read(|conn| rows::providers(conn, Some(account_id)))
    }

    /// Every provider key of every account (used by master-key rotation).
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn all_providers(&self) -> Result<Vec<ProviderRecord>, StoreError> {
        self.read(|conn| rows::providers(conn, None))
    }

    /// Deletes the provider key `(account_id, name)`.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if there is no such provider key.
    pub fn remove_provider(&self, account_id: i64, name: &str) -> Result<(), StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM providers WHERE account_id = ?1 AND name = ?2",
                params![account_id, name],
            )?;
            if n == 0 {
                return Err(not_found("provider", &format!("{account_id}/{name}")));
            }
            Ok(())
        })
    }

    /// Compare-and-set used by master-key rotation: replaces the ciphertext
    /// of provider row `id` only if it still has `old_version`. Returns
    /// whether it did.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the update fails.
    pub fn replace_provider_ciphertext(
        &self,
        id: i64,
        old_version: u32,
        ciphertext: &str,
        new_version: u32,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE providers SET ciphertext = ?3, key_version = ?4, updated_at = ?5 \
                 WHERE id = ?1 AND key_version = ?2",
                params![id, old_version, ciphertext, new_version, now()],
            )?;
            Ok(n > 0)
        })
    }

    // ----- usage ----------------------------------------------------------

    /// In one transaction, inserts the raw rows, adds them to the per-key,
    /// per-UTC-day aggregates and moves each key's `last_used_at` forward to
    /// its newest row (unknown key ids are ignored there, as in
    /// [`Store::touch_keys`]). Does not refresh the snapshot. All or nothing:
    /// after an error nothing of the batch is written, so the caller can
    /// retry the same rows without counting them twice.
    ///
    /// Cost per row is what matters here (one call per batch of requests):
    /// the raw rows go in with multi-row `INSERT`s of [`USAGE_INSERT_CHUNKS`]
    /// rows (one statement run per chunk, not per row), and the rows are
    /// summed per key and day in memory first, so a batch costs one aggregate
    /// upsert per key and day and one `last_used_at` update per key.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`]; nothing is written
    /// then.
    pub fn record_usage(&self, rows: &[UsageRecord]) -> Result<(), StoreError> {
        self.record_usage_paced(rows, || {})
    }

    /// [`Store::record_usage`] that calls `between_chunks` after each multi-row `INSERT`
    /// (a few rows: [`USAGE_INSERT_CHUNKS`]), inside the transaction.
    ///
    /// For a background writer that shares the machine with latency-sensitive threads:
    /// passing [`std::thread::yield_now`] turns one long run of CPU per batch into short
    /// ones the scheduler can interleave with them. A thread that has just been picked to
    /// run is not preempted by a wake-up until its time slice (~1 ms and more) is used up,
    /// so without pauses a batch delays whatever wakes up behind it by the whole batch.
    /// Same result, errors and all-or-nothing guarantee as [`Store::record_usage`].
    ///
    /// # Errors
    /// As [`Store::record_usage`].
    pub fn record_usage_paced(
        &self,
        rows: &[UsageRecord],
        mut between_chunks: impl FnMut(),
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write_no_refresh(|tx| {
            let sqls = usage_insert_sqls();
            let mut rest = rows;
            while !rest.is_empty() {
                let (size, sql) = sqls
                    .iter()
                    .find(|(size, _)| *size <= rest.len())
                    // Unreachable: the last size is 1 and `rest` is not empty.
                    .unwrap_or(&sqls[sqls.len() - 1]);
                let (chunk, tail) = rest.split_at(*size);
                let mut insert = tx.prepare_cached(sql)?;
                // Placeholders are numbered 1.. across the rows of the chunk.
                for (first, r) in (1..).step_by(USAGE_COLUMNS).zip(chunk) {
                    insert.raw_bind_parameter(first, r.at)?;
                    insert.raw_bind_parameter(first + 1, r.key_id.as_str())?;
                    insert.raw_bind_parameter(first + 2, r.account_id)?;
                    insert.raw_bind_parameter(first + 3, r.provider.as_str())?;
                    insert.raw_bind_parameter(first + 4, r.model.as_deref())?;
                    insert.raw_bind_parameter(first + 5, r.status)?;
                    insert.raw_bind_parameter(first + 6, r.latency_ms)?;
                    insert.raw_bind_parameter(first + 7, r.input_tokens)?;
                    insert.raw_bind_parameter(first + 8, r.output_tokens)?;
                    insert.raw_bind_parameter(first + 9, r.rate_limited)?;
                }
                insert.raw_execute()?;
                rest = tail;
                between_chunks();
            }
            let mut daily = tx.prepare_cached(
                "INSERT INTO usage_daily (day, key_id, account_id, requests, errors, \
                 rate_limited, input_tokens, output_tokens) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (day, key_id) DO UPDATE SET \
                 requests = requests + excluded.requests, errors = errors + excluded.errors, \
                 rate_limited = rate_limited + excluded.rate_limited, \
                 input_tokens = input_tokens + excluded.input_tokens, \
                 output_tokens = output_tokens + excluded.output_tokens",
            )?;
            // (UTC day number, key id) -> (account, [requests, errors, rate limited,
            // input tokens, output tokens]); ordered so upserts run in a stable order.
            let mut sums: BTreeMap<(i64, &str), (i64, [u64; 5])> = BTreeMap::new();
            // Key id -> newest row.
            let mut last_used: BTreeMap<&str, UnixTime> = BTreeMap::new();
            for r in rows {
                let error = r.status >= 400 && !r.rate_limited;
                let (_, sum) = sums
                    .entry((r.at.div_euclid(86_400), r.key_id.as_str()))
                    .or_insert((r.account_id, [0; 5]));
                let add = [
                    1,
                    u64::from(error),
                    u64::from(r.rate_limited),
                    r.input_tokens.unwrap_or(0),
                    r.output_tokens.unwrap_or(0),
                ];
                for (total, add) in sum.iter_mut().zip(add) {
                    *total = total.saturating_add(add);
                }
                let used = last_used.entry(r.key_id.as_str()).or_insert(r.at);
                *used = (*used).max(r.at);
            }
            for ((day, key_id), (account_id, sum)) in sums {
                daily.execute(params![
                    utc_day(day * 86_400),
                    key_id,
                    account_id,
                    sum[0],
                    sum[1],
                    sum[2],
                    sum[3],
                    sum[4],
                ])?;
            }
            let mut touch = tx.prepare_cached(TOUCH_KEY_SQL)?;
            for (key_id, at) in last_used {
                touch.execute(params![key_id, at])?;
            }
            Ok(())
        })
    }

    /// Daily aggregates matching `filter`, ordered by day then key id.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] if a day bound is not `YYYY-MM-DD`;
    /// [`StoreError::Corrupt`] if a stored key id is malformed.
    pub fn usage_daily(&self, filter: &UsageFilter) -> Result<Vec<DailyUsage>, StoreError> {
        for day in [&filter.from_day, &filter.to_day].into_iter().flatten() {
            if !is_day(day) {
                return Err(StoreError::Invalid {
                    what: "day (expected YYYY-MM-DD)",
                    value: day.clone(),
                });
            }
        }
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT day, key_id, account_id, requests, errors, rate_limited, input_tokens, \
                 output_tokens FROM usage_daily \
                 WHERE (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR key_id = ?2) \
                 AND (?3 IS NULL OR day >= ?3) AND (?4 IS NULL OR day <= ?4) \
                 ORDER BY day, key_id",
            )?;
            let found = stmt
                .query_map(
                    params![
                        filter.account_id,
                        filter.key_id.as_ref().map(KeyId::as_str),
                        filter.from_day,
                        filter.to_day,
                    ],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            [r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?],
                        ))
                    },
                )?
                .collect::<rusqlite::Result<Vec<(String, String, i64, [u64; 5])>>>()?;
            found
                .into_iter()
                .map(
                    |(
                        day,
                        key_id,
                        account_id,
                        [requests, errors, rate_limited, input_tokens, output_tokens],
                    )| {
                        let key_id = key_id.parse().map_err(|_| {
                            StoreError::Corrupt(format!("usage row of {day}: bad key id"))
                        })?;
                        Ok(DailyUsage {
                            day,
                            key_id,
                            account_id,
                            requests,
                            errors,
                            rate_limited,
                            input_tokens,
                            output_tokens,
                        })
                    },
                )
                .collect()
        })
    }

    // ----- plumbing -------------------------------------------------------

    /// Runs `f` on the shared connection, outside any explicit transaction.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = lock(&self.inner.conn);
        f(&conn).map_err(StoreError::classify)
    }

    /// Runs `f` in an IMMEDIATE transaction, commits, then refreshes the
    /// snapshot if the change counter moved (so the next request sees it).
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.inner.conn);
        let out = in_transaction(&mut conn, f)?;
        self.inner
            .reload_if_changed(&conn)
            .map_err(StoreError::classify)?;
        Ok(out)
    }

    /// Like [`Store::write`] but never refreshes (usage, `last_used_at`).
    pub(crate) fn write_no_refresh<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = lock(&self.inner.conn);
        in_transaction(&mut conn, f)
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("generation", &self.inner.snapshot().generation())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Loads a snapshot through `conn` and installs it with the next generation.
    fn reload_with(&self, conn: &Connection) -> Result<(), StoreError> {
        let _serial = lock(&self.reload);
        self.install(Snapshot::load(conn)?);
        Ok(())
    }

    /// Reloads only if the change counter in the database differs from the
    /// snapshot's. Checked under the reload lock, so a change seen by both
    /// the writer and the watcher causes exactly one reload.
    fn reload_if_changed(&self, conn: &Connection) -> Result<(), StoreError> {
        let _serial = lock(&self.reload);
        if rows::change_seq(conn)? != self.snapshot().change_seq() {
            self.install(Snapshot::load(conn)?);
        }
        Ok(())
    }

    /// Installs `loaded` as the current snapshot with the next generation.
    /// Callers hold the reload lock.
    fn install(&self, loaded: Snapshot) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let generation = current.generation() + 1;
        *current = Arc::new(loaded.with_generation(generation));
        drop(current);
        tracing::debug!(generation, "store snapshot reloaded");
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let watcher = self
            .watcher
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(Watcher { stop, handle }) = watcher {
            drop(stop);
            // The watcher itself may hold the last reference for a moment; it
            // cannot join itself, and it exits right after this drop anyway.
            if handle.thread().id() != thread::current().id() && handle.join().is_err() {
                tracing::warn!("store watcher thread panicked");
            }
        }
    }
}

/// Body of the watcher thread: every `interval`, if the change counter differs from the
/// snapshot's, reload. Exits when the store is gone.
///
/// It reads the counter (one cached statement) without asking `PRAGMA data_version` first:
/// the gateway's own usage writes change `data_version` every few hundred ms under load, so
/// the pragma saved nothing. At 1000 requests/s a tick cost ~145 µs of CPU with both
/// statements prepared anew each time and ~97 µs with them cached; dropping the pragma
/// changed nothing measurable, but is one statement less (benches/RESULTS.md, twelfth pass).
fn watch(weak: &Weak<Inner>, conn: &Connection, stopped: &mpsc::Receiver<()>, interval: Duration) {
    loop {
        match stopped.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = weak.upgrade() else {
            return;
        };
        // A failed reload leaves the snapshot's counter behind, so the next tick retries.
        if let Err(e) = inner.reload_if_changed(conn) {
            tracing::warn!(error = %e, "store watcher could not reload; will retry");
        }
    }
}

/// Moves one key's `last_used_at` forward (never back).
const TOUCH_KEY_SQL: &str = "UPDATE api_keys SET last_used_at = ?2 \
     WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)";

/// Values bound per `usage_events` row.
const USAGE_COLUMNS: usize = 10;

/// Rows per multi-row `INSERT INTO usage_events`, largest first; must end with 1. A batch is
/// split greedily into these chunks, each size one cached statement. One statement run per
/// chunk instead of per row saves SQLite's per-execution work (VDBE start-up, cursor
/// open/close, statement reset and halt). Measured with `examples/usage_write.rs` (callgrind,
/// batches of 64), instructions per row of the whole example: one row per statement 9.2 k,
/// chunks of 32/8/1 6.8 k; of `record_usage` alone: 32/8/1 5.7 k, 16/4/1 5.9 k, 8/4/1 6.2 k. The largest
/// chunk is also the longest stretch a paced writer ([`Store::record_usage_paced`]) runs
/// between pauses: 8 rows is ~20 µs, short enough that a batch no longer shows up in the
/// gateway's p99 latency (`benches/RESULTS.md`, sixth pass), for 0.5 k more per row than 32.
pub(crate) const USAGE_INSERT_CHUNKS: [usize; 3] = [8, 4, 1];

/// `(rows, SQL)` of each size in [`USAGE_INSERT_CHUNKS`], built once: the SQL text is also the
/// statement cache's key, so formatting it per batch would cost more than the lookup.
fn usage_insert_sqls() -> &'static [(usize, String); USAGE_INSERT_CHUNKS.len()] {
    static SQLS: OnceLock<[(usize, String); USAGE_INSERT_CHUNKS.len()]> = OnceLock::new();
    SQLS.get_or_init(|| {
        USAGE_INSERT_CHUNKS.map(|rows| {
            let row = format!("({})", ["?"; USAGE_COLUMNS].join(","));
            let sql = format!(
                "INSERT INTO usage_events (at, key_id, account_id, provider, model, status, \
                 latency_ms, input_tokens, output_tokens, rate_limited) VALUES {}",
                vec![row; rows].join(",")
            );
            (rows, sql)
        })
    })
}

fn open_connection(path: &Path, options: &StoreOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(options.busy_timeout)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // NORMAL is durable across application crashes in WAL mode; only an OS
    // crash can lose the last transactions, never corrupt the file.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = |conn: &mut Connection| {
        // IMMEDIATE takes the write lock up front, so the busy timeout applies
        // (a deferred transaction upgrading to write can fail immediately).
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    };
    run(conn).map_err(StoreError::classify)
}

fn key_by_id(conn: &Connection, id: &KeyId) -> Result<ApiKeyRecord, StoreError> {
    let sql = format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1");
    conn.query_row(&sql, [id.as_str()], rows::raw_key)
        .optional()?
        .ok_or_else(|| not_found("api key", id.as_str()))?
        .decode()
}

fn insert_key_error(e: rusqlite::Error, key: &NewApiKey) -> StoreError {
    if is_unique_violation(&e) {
        let what = if e.to_string().contains("api_keys.hash") {
            "api key hash"
        } else {
            "api key"
        };
        StoreError::AlreadyExists {
            what,
            name: key.id.to_string(),
        }
    } else if is_foreign_key_violation(&e) {
        not_found("account", &key.account_id.to_string())
    } else {
        e.into()
    }
}

fn not_found(what: &'static str, name: &str) -> StoreError {
    StoreError::NotFound {
        what,
        name: name.to_owned(),
    }
}

/// Locks a mutex, ignoring poisoning: a panic mid-transaction rolls the
/// transaction back on unwind, so the connection is still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
pub(crate) mod tests {
    use compresh_keys::{ApiKey, KeyHash};

    use super::*;

    /// A fresh store in a temporary directory (kept alive by the returned guard).
    pub(crate) fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        (dir, store)
    }

    fn new_key(account_id: i64) -> (ApiKey, NewApiKey) {
        let key = ApiKey::generate();
        let new = NewApiKey {
            id: KeyId::generate(),
            account_id,
            name: "ci".to_owned(),
            environment: Some("prod".to_owned()),
            hint: key.hint(),
            hash: key.hash(),
            rpm: Some(60),
            allowed_providers: vec!["openai".to_owned()],
            allowed_models: vec!["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()],
            expires_at: Some(2_000_000_000),
        };
        (key, new)
    }

    fn new_provider(account_id: i64, name: &str, ciphertext: &str) -> NewProvider {
        NewProvider {
            account_id,
            name: name.to_owned(),
            kind: "openai".to_owned(),
            base_url: None,
            ciphertext: ciphertext.to_owned(),
            key_version: 1,
            hint: "sk-…abcd".to_owned(),
        }
    }

    fn usage(at: UnixTime, key: &KeyId, account_id: i64, status: u16) -> UsageRecord {
        UsageRecord {
            at,
            key_id: key.clone(),
            account_id,
            provider: "openai".to_owned(),
            model: Some("gpt-4o".to_owned()),
            status,
            latency_ms: 120,
            input_tokens: Some(10),
            output_tokens: Some(5),
            rate_limited: false,
        }
    }

    #[test]
    fn accounts_crud() {
        let (_dir, store) = open();
        let before = now();
        let a = store.create_account("acme", "free").unwrap();
        assert_eq!(
            (a.name.as_str(), a.plan.as_str(), a.active),
            ("acme", "free", true)
        );
        assert!(a.created_at >= before && a.created_at <= now());
        let b = store.create_account("beta", "pro").unwrap();
        assert_ne!(a.id, b.id);

        assert!(matches!(
            store.create_account("acme", "pro"),
            Err(StoreError::AlreadyExists { what: "account", ref name }) if name == "acme"
        ));
        assert_eq!(store.account_by_name("acme").unwrap(), a);
        assert!(matches!(
            store.account_by_name("nope"),
            Err(StoreError::NotFound {
                what: "account",
                ..
            })
        ));
        assert_eq!(store.list_accounts().unwrap(), vec![a.clone(), b]);

        let off = store.set_account_active("acme", false).unwrap();
        assert!(!off.active);
        assert_eq!(store.account_by_name("acme").unwrap(), off);
        let pro = store.set_account_plan("acme", "pro").unwrap();
        assert_eq!(
            (pro.plan.as_str(), pro.active, pro.id),
            ("pro", false, a.id)
        );
        assert!(matches!(
            store.set_account_plan("nope", "pro"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.set_account_active("nope", true),
            Err(StoreError::NotFound { .. })
        ));
    }

    #[test]
    fn keys_crud() {
        let (_dir, store) = open();
        let acct = store.create_account("acme", "free").unwrap();
        let (key, new) = new_key(acct.id);
        let rec = store.insert_key(new.clone()).unwrap();
        assert_eq!(rec.id, new.id);
        assert_eq!(rec.hash, key.hash());
        assert_eq!(rec.allowed_models, new.allowed_models);
        assert_eq!(rec.allowed_providers, new.allowed_providers);
        assert_eq!((rec.rpm, rec.expires_at), (Some(60), Some(2_000_000_000)));
        assert_eq!(
            (rec.last_used_at, rec.revoked_at, rec.replaced_by.clone()),
            (None, None, None)
        );
        assert_eq!(store.key_by_id(&new.id).unwrap(), rec);

        // Duplicate id, duplicate hash, unknown account.
        let mut same_id = new_key(acct.id).1;
        same_id.id = new.id.clone();
        assert!(matches!(
            store.insert_key(same_id),
            Err(StoreError::AlreadyExists {
                what: "api key",
                ..
            })
        ));
        let mut same_hash = new_key(acct.id).1;
        same_hash.hash = key.hash();
        assert!(matches!(
            store.insert_key(same_hash),
            Err(StoreError::AlreadyExists {
                what: "api key hash",
                ..
            })
        ));
        assert!(matches!(
            store.insert_key(new_key(999).1),
            Err(StoreError::NotFound { what: "account", ref name }) if name == "999"
        ));

        let (_, second) = new_key(acct.id);
        let second = store.insert_key(second).unwrap();
        let listed = store.list_keys(acct.id).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&rec) && listed.contains(&second));
        assert!(store.list_keys(999).unwrap().is_empty());

        let r = store.set_key_rpm(&rec.id, None).unwrap();
        assert_eq!(r.rpm, None);
        let r = store.set_key_rpm(&rec.id, Some(u32::MAX)).unwrap();
        assert_eq!(r.rpm, Some(u32::MAX));
        let r = store.set_key_expiry(&rec.id, None).unwrap();
        assert_eq!(r.expires_at, None);

        let revoked = store.revoke_key(&rec.id).unwrap();
        let first = revoked.revoked_at.unwrap();
        // Idempotent: a later revoke keeps the first time (forced older to be sure).
        store
            .write(|tx| {
                tx.execute(
                    "UPDATE api_keys SET revoked_at = 5 WHERE id = ?1",
                    [rec.id.as_str()],
                )?;
                Ok(())
            })
            .unwrap();
        assert_eq!(store.revoke_key(&rec.id).unwrap().revoked_at, Some(5));
        assert!(first > 0);

        store.set_key_replaced_by(&rec.id, &second.id).unwrap();
        assert_eq!(
            store.key_by_id(&rec.id).unwrap().replaced_by,
            Some(second.id.clone())
        );
        let ghost = KeyId::generate();
        assert!(matches!(
            store.set_key_replaced_by(&rec.id, &ghost),
            Err(StoreError::NotFound {
                what: "api key",
                ..
            })
        ));
        assert!(matches!(
            store.set_key_replaced_by(&ghost, &rec.id),
            Err(StoreError::NotFound {
                what: "api key",
                ..
            })
        ));
        for result in [
            store.key_by_id(&ghost),
            store.revoke_key(&ghost),
            store.set_key_rpm(&ghost, Some(1)),
            store.set_key_expiry(&ghost, Some(1)),
        ] {
            assert!(matches!(
                result,
                Err(StoreError::NotFound {
                    what: "api key",
                    ..
                })
            ));
        }
    }

    #[test]
    fn touch_keys_keeps_max_and_does_not_reload() {
        let (_dir, store) = open();
        let acct = store.create_account("acme", "free").unwrap();
        let rec = store.insert_key(new_key(acct.id).1).unwrap();
        let generation = store.snapshot().generation();
        store
            .touch_keys(&[
                (rec.id.clone(), 100),
                (rec.id.clone(), 50),
                (KeyId::generate(), 7),
            ])
            .unwrap();
        assert_eq!(store.key_by_id(&rec.id).unwrap().last_used_at, Some(100));
        store.touch_keys(&[(rec.id.clone(), 90)]).unwrap();
        assert_eq!(store.key_by_id(&rec.id).unwrap().last_used_at, Some(100));
        store.touch_keys(&[(rec.id.clone(), 150)]).unwrap();
        assert_eq!(store.key_by_id(&rec.id).unwrap().last_used_at, Some(150));
        assert_eq!(store.snapshot().generation(), generation);
        assert_eq!(
            store.snapshot().key_by_id(&rec.id).unwrap().last_used_at,
            None
        );
        // An explicit refresh picks it up.
        store.refresh().unwrap();
        assert_eq!(store.snapshot().generation(), generation + 1);
        assert_eq!(
            store.snapshot().key_by_id(&rec.id).unwrap().last_used_at,
            Some(150)
        );
    }

    #[test]
    fn providers_crud() {
        let (_dir, store) = open();
        let acct = store.create_account("acme", "free").unwrap();
        let p = store
            .upsert_provider(new_provider(acct.id, "openai", "ct-1"))
            .unwrap();
        assert_eq!(
            (p.name.as_str(), p.ciphertext.as_str(), p.key_version),
            ("openai", "ct-1", 1)
        );
        assert_eq!(p.created_at, p.updated_at);

        // Replace: same id and created_at, new content.
        store
            .write(|tx| {
                tx.execute("UPDATE providers SET created_at = 1, updated_at = 1", [])?;
                Ok(())
            })
            .unwrap();
        let mut changed = new_provider(acct.id, "openai", "ct-2");
        changed.base_url = Some("https://example.invalid/v1".to_owned());
        changed.kind = "openai-compatible".to_owned();
        let q = store.upsert_provider(changed).unwrap();
        assert_eq!((q.id, q.created_at), (p.id, 1));
        assert!(q.updated_at > 1);
        assert_eq!(q.ciphertext, "ct-2");
        assert_eq!(q.base_url.as_deref(), Some("https://example.invalid/v1"));
        assert_eq!(q.kind, "openai-compatible");

        let other = store.create_account("beta", "free").unwrap();
        let r = store
            .upsert_provider(new_provider(other.id, "openai", "ct-3"))
            .unwrap();
        let a = store
            .upsert_provider(new_provider(acct.id, "anthropic", "ct-4"))
            .unwrap();
        assert_eq!(
            store.list_providers(acct.id).unwrap(),
            vec![a.clone(), q.clone()]
        );
        assert_eq!(
            store.all_providers().unwrap(),
            vec![a.clone(), q.clone(), r]
        );
        assert!(matches!(
            store.upsert_provider(new_provider(999, "x", "ct")),
            Err(StoreError::NotFound {
                what: "account",
                ..
            })
        ));

        // Compare-and-set.
        assert!(!store
            .replace_provider_ciphertext(q.id, 7, "ct-x", 8)
            .unwrap());
        assert!(store
            .replace_provider_ciphertext(q.id, 1, "ct-v2", 2)
            .unwrap());
        assert!(!store
            .replace_provider_ciphertext(q.id, 1, "ct-again", 3)
            .unwrap());
        let now_q = store
            .snapshot()
            .provider(acct.id, "openai")
            .cloned()
            .unwrap();
        assert_eq!((now_q.ciphertext.as_str(), now_q.key_version), ("ct-v2", 2));

        store.remove_provider(acct.id, "openai").unwrap();
        assert_eq!(store.list_providers(acct.id).unwrap(), vec![a]);
        assert!(matches!(
            store.remove_provider(acct.id, "openai"),
            Err(StoreError::NotFound { what: "provider", ref name }) if name == &format!("{}/openai", acct.id)
        ));
        assert!(store.snapshot().provider(acct.id, "openai").is_none());
    }

    #[test]
    fn snapshot_sees_in_process_changes_immediately() {
        let (_dir, store) = open();
        let g0 = store.snapshot().generation();
        assert_eq!(g0, 1);
        let old = store.snapshot();
        let acct = store.create_account("acme", "free").unwrap();
        let (key, new) = new_key(acct.id);
        let id = new.id.clone();
        store.insert_key(new).unwrap();
        store
            .upsert_provider(new_provider(acct.id, "openai", "ct"))
            .unwrap();

        let snap = store.snapshot();
        assert!(snap.generation() > g0);
        assert_eq!(snap.account(acct.id), Some(&acct));
        assert_eq!(snap.key_by_hash(&key.hash()).map(|k| &k.id), Some(&id));
        assert_eq!(snap.key_by_id(&id).map(|k| k.hash), Some(key.hash()));
        assert_eq!(
            snap.provider(acct.id, "openai")
                .map(|p| p.ciphertext.as_str()),
            Some("ct")
        );
        assert_eq!(snap.providers_of(acct.id).count(), 1);
        assert_eq!(snap.key_count(), 1);
        assert!(snap.provider(acct.id, "anthropic").is_none());
        assert!(snap.key_by_hash(&KeyHash::from_bytes([0; 32])).is_none());
        // The old Arc is untouched (immutable snapshots).
        assert!(old.account(acct.id).is_none());

        // Revoked keys stay visible, flagged unusable.
        store.revoke_key(&id).unwrap();
        let k = store.snapshot().key_by_hash(&key.hash()).cloned().unwrap();
        assert!(k.revoked_at.is_some() && !k.is_usable_at(0));
        store.set_account_active("acme", false).unwrap();
        assert!(!store.snapshot().account(acct.id).unwrap().active);
    }

    #[test]
    fn usage_does_not_reload_and_aggregates_per_key_per_day() {
        let (_dir, store) = open();
        let acct = store.create_account("acme", "free").unwrap();
        let other = store.create_account("beta", "free").unwrap();
        let k1 = store.insert_key(new_key(acct.id).1).unwrap().id;
        let k2 = store.insert_key(new_key(other.id).1).unwrap().id;
        let generation = store.snapshot().generation();

        let day1 = 1_709_164_800; // 2024-02-29T00:00:00Z
        let mut limited = usage(day1 + 5, &k1, acct.id, 429);
        limited.rate_limited = true;
        limited.input_tokens = None;
        limited.output_tokens = None;
        let rows = [
            usage(day1, &k1, acct.id, 200),
            usage(day1 + 86_399, &k1, acct.id, 502),
            limited,
            usage(day1 + 86_400, &k1, acct.id, 200), // 2024-03-01
            usage(day1 + 10, &k2, other.id, 200),
        ];
        store.record_usage(&rows[..2]).unwrap();
        store.record_usage(&rows[2..]).unwrap();
        store.record_usage(&[]).unwrap();
        assert_eq!(store.snapshot().generation(), generation);

        let all = store.usage_daily(&UsageFilter::default()).unwrap();
        let day = |d: &str, k: &KeyId, a: i64, counts: [u64; 5]| DailyUsage {
            day: d.to_owned(),
            key_id: k.clone(),
            account_id: a,
            requests: counts[0],
            errors: counts[1],
            rate_limited: counts[2],
            input_tokens: counts[3],
            output_tokens: counts[4],
        };
        let k1_day1 = day("2024-02-29", &k1, acct.id, [3, 1, 1, 20, 10]);
        let k2_day1 = day("2024-02-29", &k2, other.id, [1, 0, 0, 10, 5]);
        let k1_day2 = day("2024-03-01", &k1, acct.id, [1, 0, 0, 10, 5]);
        let mut expected_day1 = vec![k1_day1.clone(), k2_day1.clone()];
        expected_day1.sort_by(|a, b| a.key_id.as_str().cmp(b.key_id.as_str()));
        let mut expected = expected_day1.clone();
        expected.push(k1_day2.clone());
        assert_eq!(all, expected);

        let by_account = UsageFilter {
            account_id: Some(acct.id),
            ..UsageFilter::default()
        };
        assert_eq!(
            store.usage_daily(&by_account).unwrap(),
            vec![k1_day1.clone(), k1_day2.clone()]
        );
        let by_key = UsageFilter {
            key_id: Some(k2.clone()),
            ..UsageFilter::default()
        };
        assert_eq!(store.usage_daily(&by_key).unwrap(), vec![k2_day1]);
        let one_day = UsageFilter {
            from_day: Some("2024-03-01".to_owned()),
            to_day: Some("2024-03-01".to_owned()),
            ..UsageFilter::default()
        };
        assert_eq!(store.usage_daily(&one_day).unwrap(), vec![k1_day2]);
        let until = UsageFilter {
            to_day: Some("2024-02-29".to_owned()),
            ..UsageFilter::default()
        };
        assert_eq!(store.usage_daily(&until).unwrap(), expected_day1);
        let bad = UsageFilter {
            from_day: Some("29/02/2024".to_owned()),
            ..UsageFilter::default()
        };
        assert!(matches!(
            store.usage_daily(&bad),
            Err(StoreError::Invalid { .. })
        ));

        // Raw rows are kept too.
        let raw: i64 = store
            .read(|c| Ok(c.query_row("SELECT count(*) FROM usage_events", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(raw, 5);
    }

    /// All columns of a usage row but its id (`UsageRecord` has no `PartialEq`).
    type RawUsage = (
        UnixTime,
        String,
        i64,
        String,
        Option<String>,
        u16,
        u32,
        Option<u64>,
        Option<u64>,
        bool,
    );

    fn raw(r: &UsageRecord) -> RawUsage {
        (
            r.at,
            r.key_id.as_str().to_owned(),
            r.account_id,
            r.provider.clone(),
            r.model.clone(),
            r.status,
            r.latency_ms,
            r.input_tokens,
            r.output_tokens,
            r.rate_limited,
        )
    }

    /// Every `usage_events` row of the store, in rowid (insertion) order.
    fn raw_usage(store: &Store) -> Vec<RawUsage> {
        store
            .read(|c| {
                let mut stmt = c.prepare(
                    "SELECT at, key_id, account_id, provider, model, status, latency_ms, \
                     input_tokens, output_tokens, rate_limited FROM usage_events ORDER BY id",
                )?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            r.get(0)?,
                            r.get(1)?,
                            r.get(2)?,
                            r.get(3)?,
                            r.get(4)?,
                            r.get(5)?,
                            r.get(6)?,
                            r.get(7)?,
                            r.get(8)?,
                            r.get(9)?,
                        ))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .unwrap()
    }

    #[test]
    fn a_paced_usage_write_pauses_after_each_chunk_and_stays_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store = Store::open(&path).unwrap();
        let acct = store.create_account("acme", "free").unwrap();
        let key = store.insert_key(new_key(acct.id).1).unwrap().id;
        let batch: Vec<UsageRecord> = (0..21)
            .map(|i| usage(5_000 + i, &key, acct.id, 200))
            .collect();
        let reader = Connection::open(&path).unwrap();
        let visible = || -> i64 {
            reader
                .query_row("SELECT count(*) FROM usage_events", [], |r| r.get(0))
                .unwrap()
        };
        let mut seen_during_pauses = Vec::new();
        store
            .record_usage_paced(&batch, || seen_during_pauses.push(visible()))
            .unwrap();
        // 21 rows = chunks of 8, 8, 4 and 1; another connection sees none of them until the
        // commit.
        assert_eq!(seen_during_pauses, [0, 0, 0, 0]);
        assert_eq!(visible(), 21);
        assert_eq!(raw_usage(&store), batch.iter().map(raw).collect::<Vec<_>>());
        let daily = store.usage_daily(&UsageFilter::default()).unwrap();
        assert_eq!(daily[0].requests, 21);
        assert_eq!(store.key_by_id(&key).unwrap().last_used_at, Some(5_020));
    }

    #[test]
    fn usage_batches_of_every_chunk_shape_store_each_row_exactly_once() {
        let (_dir, store) = open();
        let acct = store.create_account("acme", "free").unwrap();
        let key = store.insert_key(new_key(acct.id).1).unwrap().id;
        // Sizes around each multi-row chunk size (8, 4, 1) and the writer's batch (64).
        let sizes = [1, 3, 4, 5, 7, 8, 9, 12, 13, 41, 63, 64, 65, 100];
        assert_eq!(USAGE_INSERT_CHUNKS, [8, 4, 1], "update the sizes above");
        let mut expected = Vec::new();
        let mut n = 0_u32;
        for size in sizes {
            let batch: Vec<UsageRecord> = (0..size)
                .map(|_| {
                    n += 1;
                    // Every column differs from row to row, NULLs included, so a value bound
                    // to the wrong placeholder or row shows up.
                    UsageRecord {
                        at: 1_700_000_000 + i64::from(n),
                        key_id: key.clone(),
                        account_id: acct.id,
                        provider: format!("p{n}"),
                        model: (n % 3 != 0).then(|| format!("m{n}")),
                        status: 200 + u16::try_from(n % 300).unwrap(),
                        latency_ms: n * 7,
                        input_tokens: (n % 2 == 0).then_some(u64::from(n) * 11),
                        output_tokens: (n % 5 != 0).then_some(u64::from(n) * 13),
                        rate_limited: n % 4 == 0,
                    }
                })
                .collect();
            store.record_usage(&batch).unwrap();
            expected.extend(batch.iter().map(raw));
        }
        assert_eq!(raw_usage(&store), expected);
        let total = store.usage_daily(&UsageFilter::default()).unwrap();
        let requests: u64 = total.iter().map(|d| d.requests).sum();
        assert_eq!(requests, u64::from(n));
        assert_eq!(
            store.key_by_id(&key).unwrap().last_used_at,
            Some(1_700_000_000 + i64::from(n))
        );
    }

    #[test]
    fn record_usage_moves_last_used_at_forward_only() {
        let (_dir, store) = open();
        let acct = store.create_account("acme", "free").unwrap();
        let k1 = store.insert_key(new_key(acct.id).1).unwrap().id;
        let k2 = store.insert_key(new_key(acct.id).1).unwrap().id;
        let unknown = KeyId::generate();
        let generation = store.snapshot().generation();
        store
            .record_usage(&[
                usage(100, &k1, acct.id, 200),
                usage(300, &k1, acct.id, 200),
                usage(200, &k1, acct.id, 500),
                usage(50, &unknown, acct.id, 200),
            ])
            .unwrap();
        let last = |k: &KeyId| store.key_by_id(k).unwrap().last_used_at;
        assert_eq!((last(&k1), last(&k2)), (Some(300), None));
        store
            .record_usage(&[usage(250, &k1, acct.id, 200), usage(70, &k2, acct.id, 200)])
            .unwrap();
        assert_eq!((last(&k1), last(&k2)), (Some(300), Some(70)));
        // Like touch_keys: no snapshot reload for last_used_at.
        assert_eq!(store.snapshot().generation(), generation);
    }

    #[test]
    fn a_failed_usage_write_leaves_nothing_and_its_retry_counts_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let options = StoreOptions {
            busy_timeout: Duration::from_millis(20),
            ..StoreOptions::default()
        };
        let store = Store::open_with(&path, options).unwrap();
        let acct = store.create_account("acme", "free").unwrap();
        let key = store.insert_key(new_key(acct.id).1).unwrap().id;
        let batch: Vec<UsageRecord> = (0..41)
            .map(|i| usage(1_000 + i, &key, acct.id, 200))
            .collect();

        let blocker = Connection::open(&path).unwrap();
        blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        assert!(matches!(
            store.record_usage(&batch),
            Err(StoreError::Locked)
        ));
        blocker.execute_batch("ROLLBACK").unwrap();

        assert_eq!(raw_usage(&store), Vec::new());
        assert_eq!(store.key_by_id(&key).unwrap().last_used_at, None);
        store.record_usage(&batch).unwrap();
        assert_eq!(raw_usage(&store), batch.iter().map(raw).collect::<Vec<_>>());
        let daily = store.usage_daily(&UsageFilter::default()).unwrap();
        assert_eq!(daily.len(), 1);
        assert_eq!(daily[0].requests, 41);
        assert_eq!(store.key_by_id(&key).unwrap().last_used_at, Some(1_040));
    }

    #[test]
    fn watcher_stops_when_last_clone_drops() {
        let (_dir, store) = open();
        let clone = store.clone();
        let weak = Arc::downgrade(&store.inner);
        drop(store);
        assert!(weak.upgrade().is_some());
        drop(clone);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn debug_shows_path_and_generation() {
        let (dir, store) = open();
        let text = format!("{store:?}");
        assert!(text.contains("generation: 1"), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert_eq!(store.path(), dir.path().join("s.db"));
    }
}
