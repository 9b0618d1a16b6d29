//! Schema migrations and the checks done before touching a database file.

use std::io::Read;
use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use crate::error::{is_not_a_database, StoreError};

/// `PRAGMA application_id` of every Compresh store (`"CMPH"` in ASCII).
pub const APPLICATION_ID: i32 = 0x434D_5048;

/// Migrations, in order; migration `i` takes the schema from version `i` to
/// `i + 1`. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // v1: initial schema.
    r"
CREATE TABLE accounts (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    plan        TEXT    NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id                 TEXT    PRIMARY KEY,
    account_id         INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name               TEXT    NOT NULL,
    environment        TEXT,
    hint               TEXT    NOT NULL,
    hash               TEXT    NOT NULL UNIQUE,
    created_at         INTEGER NOT NULL,
    last_used_at       INTEGER,
    revoked_at         INTEGER,
    expires_at         INTEGER,
    rpm                INTEGER,
    allowed_providers  TEXT    NOT NULL DEFAULT '[]',
    allowed_models     TEXT    NOT NULL DEFAULT '[]',
    replaced_by        TEXT
);
CREATE INDEX api_keys_account ON api_keys(account_id);
CREATE TABLE providers (
    id           INTEGER PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    base_url     TEXT,
    ciphertext   TEXT    NOT NULL,
    key_version  INTEGER NOT NULL,
    hint         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    UNIQUE (account_id, name)
);
CREATE TABLE usage_events (
    id             INTEGER PRIMARY KEY,
    at             INTEGER NOT NULL,
    key_id         TEXT    NOT NULL,
    account_id     INTEGER NOT NULL,
    provider       TEXT    NOT NULL,
    model          TEXT,
    status         INTEGER NOT NULL,
    latency_ms     INTEGER NOT NULL,
    input_tokens   INTEGER,
    output_tokens  INTEGER,
    rate_limited   INTEGER NOT NULL
);
CREATE INDEX usage_events_at ON usage_events(at);
CREATE TABLE usage_daily (
    day            TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    account_id     INTEGER NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    errors         INTEGER NOT NULL DEFAULT 0,
    rate_limited   INTEGER NOT NULL DEFAULT 0,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_id)
) WITHOUT ROWID;
CREATE INDEX usage_daily_account ON usage_daily(account_id, day);

-- Bumped by triggers on every change that the request-path snapshot depends
-- on. Usage writes and last_used_at updates do not bump it, so they never
-- cause a snapshot reload.
CREATE TABLE change_seq (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO change_seq (id, seq) VALUES (1, 0);
CREATE TRIGGER accounts_ins AFTER INSERT ON accounts BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER accounts_upd AFTER UPDATE ON accounts BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER accounts_del AFTER DELETE ON accounts BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER api_keys_ins AFTER INSERT ON api_keys BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER api_keys_upd AFTER UPDATE OF
    id, account_id, name, environment, hint, hash, created_at, revoked_at, expires_at, rpm,
    allowed_providers, allowed_models, replaced_by
    ON api_keys BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER api_keys_del AFTER DELETE ON api_keys BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER providers_ins AFTER INSERT ON providers BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER providers_upd AFTER UPDATE ON providers BEGIN UPDATE change_seq SET seq = seq + 1; END;
CREATE TRIGGER providers_del AFTER DELETE ON providers BEGIN UPDATE change_seq SET seq = seq + 1; END;
",
    // v2: dashboard users and sessions. No change_seq triggers: the request-path snapshot does
    // not depend on them, so logins never cause snapshot reloads.
    r"
CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    email          TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,
    account_id     INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at     INTEGER NOT NULL
);
CREATE INDEX users_account ON users(account_id);
CREATE TABLE sessions (
    token_hash  TEXT    PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    csrf_hash   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions(user_id);
CREATE INDEX sessions_expires ON sessions(expires_at);
",
    // v3: no index on usage_events(at). Nothing queries the raw rows by time (reports read
    // usage_daily), and keeping the index sorted was a second B-tree insert per row: ~1.8 k
    // of ~8.6 k instructions per written row (callgrind, examples/usage_write.rs). Rows are
    // appended in the order the writer receives them (when a request ends; `at` is when it
    // started), so `id` order is `at` order to within a request's duration: to read a time
    // range, bound it by `id` (binary search on `at`, widened by the longest request) or scan;
    // an operator who queries raw rows by time often can add an index of their own.
    r"
DROP INDEX IF EXISTS usage_events_at;
",
];

/// Newest schema version this binary knows (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The 16-byte magic string at the start of every SQLite 3 file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Rejects an existing, non-empty file that does not start with the SQLite
/// magic, without letting SQLite open (and possibly touch) it.
pub(crate) fn check_header(path: &Path) -> Result<(), StoreError> {
    let io_err = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // A new store: the directory must exist for SQLite to create it.
            return match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => {
                    Err(io_err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "parent directory does not exist",
                    )))
                }
                _ => Ok(()),
            };
        }
        Err(e) => return Err(io_err(e)),
    };
    let mut header = Vec::with_capacity(16);
    file.by_ref()
        .take(16)
        .read_to_end(&mut header)
        .map_err(io_err)?;
    if header.is_empty() || header.as_slice() == SQLITE_MAGIC {
        // Empty files are what SQLite itself treats as a new database.
        Ok(())
    } else {
        Err(StoreError::NotADatabase {
            path: path.to_path_buf(),
        })
    }
}

/// What a database file turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// Nothing in it yet.
    Fresh,
    /// A Compresh store at this schema version.
    Ours(i64),
}

/// Classifies the database without writing to it.
fn inspect(conn: &Connection, path: &Path) -> Result<Kind, StoreError> {
    let app_id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if app_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(Kind::Ours(version))
    } else if app_id == 0 && version == 0 && objects == 0 {
        Ok(Kind::Fresh)
    } else {
        Err(StoreError::ForeignDatabase {
            path: path.to_path_buf(),
        })
    }
}

/// Maps errors of the open sequence: `SQLITE_NOTADB` names the file,
/// busy/locked becomes [`StoreError::Locked`].
pub(crate) fn open_error(path: &Path) -> impl Fn(StoreError) -> StoreError + '_ {
    move |e| match e {
        StoreError::Sqlite(ref s) if is_not_a_database(s) => StoreError::NotADatabase {
            path: path.to_path_buf(),
        },
        other => other.classify(),
    }
}

/// Validates, switches to WAL and migrates. Writes nothing unless the file is
/// empty or a Compresh store: every fault is detected under a write lock
/// before the first write.
pub(crate) fn prepare(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    prepare_inner(conn, path).map_err(open_error(path))
}

fn prepare_inner(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    // 1. Inspect under a write lock (BEGIN IMMEDIATE waits for the busy
    //    timeout, so a writer elsewhere shows up here as `Locked`). Read-only.
    {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        inspect(&tx, path)?;
        tx.rollback()?;
    }
    // 2. WAL lets the gateway read while a CLI writes. Not allowed inside a
    //    transaction, hence between the two.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(%mode, "could not switch the store to WAL mode");
    }
    // 3. Migrate in one transaction, re-inspecting since another process may
    //    have initialised the file in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let from = match inspect(&tx, path)? {
        Kind::Fresh => 0,
        Kind::Ours(v) => v,
    };
    if from < SCHEMA_VERSION {
        for (i, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(from).unwrap_or(0))
        {
            tracing::info!(to = i + 1, "applying store migration");
            tx.execute_batch(sql)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> (tempfile::TempDir, std::path::PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let conn = Connection::open(&path).unwrap();
        (dir, path, conn)
    }

    #[test]
    fn migrates_a_fresh_file_and_is_idempotent() {
        let (_dir, path, mut conn) = fresh();
        prepare(&mut conn, &path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let app: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .unwrap();
        assert_eq!((v, app), (SCHEMA_VERSION, APPLICATION_ID));
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        // Second run: nothing to do, no error (tables already exist).
        prepare(&mut conn, &path).unwrap();
    }

    #[test]
    fn triggers_ignore_usage_and_last_used() {
        let (_dir, path, mut conn) = fresh();
        prepare(&mut conn, &path).unwrap();
        let seq = |c: &Connection| -> i64 {
            c.query_row("SELECT seq FROM change_seq", [], |r| r.get(0))
                .unwrap()
        };
        conn.execute(
            "INSERT INTO accounts (name, plan, created_at) VALUES ('a', 'free', 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO api_keys (id, account_id, name, hint, hash, created_at) VALUES ('k', 1, 'n', 'h', 'ab', 1)",
            [],
        )
        .unwrap();
        let before = seq(&conn);
        assert_eq!(before, 2);
        conn.execute("UPDATE api_keys SET last_used_at = 5", [])
            .unwrap();
        conn.execute(
            "INSERT INTO usage_daily (day, key_id, account_id) VALUES ('2024-01-01', 'k', 1)",
            [],
        )
        .unwrap();
        assert_eq!(seq(&conn), before);
        conn.execute("UPDATE api_keys SET revoked_at = 5", [])
            .unwrap();
        assert_eq!(seq(&conn), before + 1);
    }

    #[test]
    fn migration_2_applies_on_a_v1_file_without_touching_change_seq() {
        let (_dir, path, mut conn) = fresh();
        // A file exactly as a v1 binary left it, with data in it.
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO accounts (name, plan, created_at) VALUES ('a', 'free', 1)",
            [],
        )
        .unwrap();
        prepare(&mut conn, &path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let seq = |c: &Connection| -> i64 {
            c.query_row("SELECT seq FROM change_seq", [], |r| r.get(0))
                .unwrap()
        };
        let before = seq(&conn);
        conn.execute(
            "INSERT INTO users (email, password_hash, account_id, created_at) VALUES ('x@y', 'h', 1, 1)",
            [],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf_hash, created_at, expires_at) VALUES ('t', 1, 'c', 1, 2)",
            [],
        )
        .unwrap();
        conn.execute("DELETE FROM sessions", []).unwrap();
        assert_eq!(seq(&conn), before);
    }

    #[test]
    fn migration_3_drops_the_usage_time_index_and_keeps_the_rows() {
        let (_dir, path, mut conn) = fresh();
        // A file exactly as a v2 binary left it, with usage rows in it.
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.execute_batch(MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        let row = "INSERT INTO usage_events (at, key_id, account_id, provider, model, status, \
                   latency_ms, input_tokens, output_tokens, rate_limited) \
                   VALUES (?1, 'key_0123456789Az', 1, 'openai', 'gpt-4o', 200, 3, 1, 2, 0)";
        for at in [10, 20, 30] {
            conn.execute(row, [at]).unwrap();
        }
        let index = |c: &Connection| -> i64 {
            c.query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'usage_events_at'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(index(&conn), 1);

        prepare(&mut conn, &path).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!((v, SCHEMA_VERSION), (3, 3));
        assert_eq!(index(&conn), 0);
        let ats: Vec<i64> = conn
            .prepare("SELECT at FROM usage_events ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(ats, [10, 20, 30]);
        // New rows go on after the old ones.
        conn.execute(row, [40]).unwrap();
        let last: i64 = conn
            .query_row(
                "SELECT at FROM usage_events ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(last, 40);
    }

    #[test]
    fn header_check() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new.db");
        check_header(&missing).unwrap();
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").unwrap();
        check_header(&empty).unwrap();
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, b"hello, not sqlite at all").unwrap();
        assert!(matches!(
            check_header(&junk),
            Err(StoreError::NotADatabase { .. })
        ));
        let nodir = dir.path().join("nope").join("x.db");
        assert!(matches!(check_header(&nodir), Err(StoreError::Io { .. })));
    }
}
