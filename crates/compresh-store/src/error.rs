//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
///
/// Messages name the file or the record, never a secret: the store only ever
/// holds key hashes and provider-key ciphertext.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file exists but is not an SQLite database (e.g. random bytes).
    #[error("{} is not an SQLite database", path.display())]
    NotADatabase {
        /// The offending file.
        path: PathBuf,
    },
    /// The file is a valid SQLite database that belongs to another application.
    #[error("{} is an SQLite database of another application (not a Compresh store)", path.display())]
    ForeignDatabase {
        /// The offending file.
        path: PathBuf,
    },
    /// The database was written by a newer Compresh with a schema this binary does not know.
    #[error("database schema version {found} is newer than the newest this binary supports ({supported}); upgrade Compresh")]
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// Newest schema version this binary knows.
        supported: i64,
    },
    /// Another connection held a lock on the database for longer than the busy timeout.
    #[error("database is locked by another connection (busy timeout exceeded)")]
    Locked,
    /// The named record does not exist.
    #[error("{what} {name:?} not found")]
    NotFound {
        /// Kind of record (`"account"`, `"api key"`, `"provider"`).
        what: &'static str,
        /// Its name or id.
        name: String,
    },
    /// A record with the same unique name or id already exists.
    #[error("{what} {name:?} already exists")]
    AlreadyExists {
        /// Kind of record.
        what: &'static str,
        /// Its name or id.
        name: String,
    },
    /// A file-system operation on the database path failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Any other SQLite error.
    #[error("sqlite error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored row could not be decoded (bad JSON, bad hash, bad key id, ...).
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// A caller-supplied argument is malformed (e.g. a day that is not `YYYY-MM-DD`).
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// What was being parsed.
        what: &'static str,
        /// The rejected value.
        value: String,
    },
}

impl StoreError {
    /// Maps SQLite's "busy"/"locked" results to [`StoreError::Locked`] and
    /// leaves everything else alone.
    pub(crate) fn classify(self) -> Self {
        match self {
            StoreError::Sqlite(e) if is_busy(&e) => StoreError::Locked,
            other => other,
        }
    }
}

/// True for `SQLITE_BUSY` / `SQLITE_LOCKED` (and their extended codes).
pub(crate) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// True for `SQLITE_NOTADB`.
pub(crate) fn is_not_a_database(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase)
}

/// True for a UNIQUE / PRIMARY KEY constraint violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// True for a FOREIGN KEY constraint violation.
pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn busy_and_locked_become_locked() {
        assert!(matches!(
            StoreError::from(failure(rusqlite::ffi::SQLITE_BUSY)).classify(),
            StoreError::Locked
        ));
        assert!(matches!(
            StoreError::from(failure(rusqlite::ffi::SQLITE_LOCKED)).classify(),
            StoreError::Locked
        ));
        assert!(matches!(
            StoreError::from(failure(rusqlite::ffi::SQLITE_IOERR)).classify(),
            StoreError::Sqlite(_)
        ));
    }

    #[test]
    fn constraint_kinds_are_told_apart() {
        let unique = failure(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE);
        let fk = failure(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY);
        assert!(is_unique_violation(&unique) && !is_foreign_key_violation(&unique));
        assert!(is_foreign_key_violation(&fk) && !is_unique_violation(&fk));
        assert!(is_not_a_database(&failure(rusqlite::ffi::SQLITE_NOTADB)));
    }

    #[test]
    fn messages_name_the_problem() {
        let e = StoreError::SchemaTooNew {
            found: 9,
            supported: 1,
        };
        assert!(e.to_string().contains("9") && e.to_string().contains("newer"));
        let e = StoreError::NotADatabase {
            path: PathBuf::from("/x/y.db"),
        };
        assert_eq!(e.to_string(), "/x/y.db is not an SQLite database");
    }
}
