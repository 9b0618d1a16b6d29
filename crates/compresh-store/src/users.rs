//! Dashboard users and their login sessions.
//!
//! Neither table feeds the request-path snapshot, so every write here goes through
//! `write_no_refresh` and no trigger bumps `change_seq`: logging in never reloads the snapshot.

use std::fmt;

use rusqlite::{params, OptionalExtension, Row};

use crate::error::{is_foreign_key_violation, is_unique_violation, StoreError};
use crate::store::Store;
use crate::time::now;
use crate::UnixTime;

const USER_COLS: &str = "id, email, password_hash, account_id, created_at";
const SESSION_COLS: &str = "token_hash, user_id, csrf_hash, created_at, expires_at";

/// A dashboard user: an email and a password hash, belonging to one account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Lowercased email, unique.
    pub email: String,
    /// Password hash as a PHC string (e.g. `$argon2id$...`); never the password.
    pub password_hash: String,
    /// The account the user manages.
    pub account_id: i64,
    /// Creation time.
    pub created_at: UnixTime,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not the password, but there is no reason to spread it into logs either.
        f.debug_struct("User")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("account_id", &self.account_id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A login session, stored by the hash of its token (the token itself lives only in the
/// browser's cookie).
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Hex SHA-256 of the session token.
    pub token_hash: String,
    /// The logged-in user.
    pub user_id: i64,
    /// Hex SHA-256 of the session's CSRF token.
    pub csrf_hash: String,
    /// Creation time.
    pub created_at: UnixTime,
    /// The session is invalid from this second on.
    pub expires_at: UnixTime,
}

impl Session {
    /// True if the session has not expired at `now`.
    pub fn is_valid_at(&self, now: UnixTime) -> bool {
        now < self.expires_at
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hashes of bearer tokens: redacted anyway, so a log line never helps an attacker.
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates a user; the email is stored lowercased and must be unique.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] (`what = "user"`) if the email is taken;
    /// [`StoreError::NotFound`] if the account does not exist.
    pub fn create_user(
        &self,
        email: &str,
        password_hash: &str,
        account_id: i64,
    ) -> Result<User, StoreError> {
        let email = email.trim().to_lowercase();
        self.write_no_refresh(|tx| {
            let sql = format!(
                "INSERT INTO users (email, password_hash, account_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4) RETURNING {USER_COLS}"
            );
            tx.query_row(&sql, params![email, password_hash, account_id, now()], user)
                .map_err(|e| {
                    if is_unique_violation(&e) {
                        StoreError::AlreadyExists {
                            what: "user",
                            name: email.clone(),
                        }
                    } else if is_foreign_key_violation(&e) {
                        StoreError::NotFound {
                            what: "account",
                            name: account_id.to_string(),
                        }
                    } else {
                        e.into()
                    }
                })
        })
    }

    /// The user with this email (compared lowercased), if any.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let email = email.trim().to_lowercase();
        self.read(|conn| {
            let sql = format!("SELECT {USER_COLS} FROM users WHERE email = ?1");
            Ok(conn.query_row(&sql, [email], user).optional()?)
        })
    }

    /// The user with this id, if any.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn user_by_id(&self, id: i64) -> Result<Option<User>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {USER_COLS} FROM users WHERE id = ?1");
            Ok(conn.query_row(&sql, [id], user).optional()?)
        })
    }

    /// Stores a new session.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the user does not exist; [`StoreError::AlreadyExists`] if
    /// the token hash is taken (a random 256-bit token: practically never).
    pub fn create_session(
        &self,
        token_hash: &str,
        user_id: i64,
        csrf_hash: &str,
        expires_at: UnixTime,
    ) -> Result<Session, StoreError> {
        self.write_no_refresh(|tx| {
            let sql = format!(
                "INSERT INTO sessions (token_hash, user_id, csrf_hash, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING {SESSION_COLS}"
            );
            tx.query_row(
                &sql,
                params![token_hash, user_id, csrf_hash, now(), expires_at],
                session,
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::AlreadyExists {
                        what: "session",
                        name: "(redacted)".to_owned(),
                    }
                } else if is_foreign_key_violation(&e) {
                    StoreError::NotFound {
                        what: "user",
                        name: user_id.to_string(),
                    }
                } else {
                    e.into()
                }
            })
        })
    }

    /// The session with this token hash, expired or not (check [`Session::is_valid_at`]).
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the query fails.
    pub fn session_by_token_hash(&self, token_hash: &str) -> Result<Option<Session>, StoreError> {
        self.read(|conn| {
            let sql = format!("SELECT {SESSION_COLS} FROM sessions WHERE token_hash = ?1");
            Ok(conn.query_row(&sql, [token_hash], session).optional()?)
        })
    }

    /// Deletes a session (logout). Returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the delete fails.
    pub fn delete_session(&self, token_hash: &str) -> Result<bool, StoreError> {
        self.write_no_refresh(|tx| {
            Ok(tx.execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])? > 0)
        })
    }

    /// Deletes every session expired at `now`; returns how many.
    ///
    /// # Errors
    /// [`StoreError::Locked`] or [`StoreError::Sqlite`] if the delete fails.
    pub fn purge_expired_sessions(&self, now: UnixTime) -> Result<usize, StoreError> {
        self.write_no_refresh(|tx| {
            Ok(tx.execute("DELETE FROM sessions WHERE expires_at <= ?1", [now])?)
        })
    }
}

fn user(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        password_hash: r.get(2)?,
        account_id: r.get(3)?,
        created_at: r.get(4)?,
    })
}

fn session(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        token_hash: r.get(0)?,
        user_id: r.get(1)?,
        csrf_hash: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::open;

    #[test]
    fn users_are_unique_by_lowercased_email() {
        let (_dir, store) = open();
        let account = store.create_account("acme", "free").unwrap();
        let user = store
            .create_user(" Ann@Example.COM ", "$argon2id$x", account.id)
            .unwrap();
        assert_eq!(user.email, "ann@example.com");
        assert_eq!(user.account_id, account.id);
        assert!(matches!(
            store.create_user("ann@example.com", "h", account.id),
            Err(StoreError::AlreadyExists { what: "user", .. })
        ));
        assert_eq!(
            store.user_by_email("ANN@example.com").unwrap(),
            Some(user.clone())
        );
        assert_eq!(store.user_by_id(user.id).unwrap(), Some(user.clone()));
        assert_eq!(store.user_by_email("bob@example.com").unwrap(), None);
        assert!(matches!(
            store.create_user("c@d", "h", 999),
            Err(StoreError::NotFound {
                what: "account",
                ..
            })
        ));
        assert!(!format!("{user:?}").contains("argon2"));
    }

    #[test]
    fn sessions_round_trip_expire_and_do_not_reload_the_snapshot() {
        let (_dir, store) = open();
        let account = store.create_account("acme", "free").unwrap();
        let user = store.create_user("a@b.c", "h", account.id).unwrap();
        let generation = store.snapshot().generation();

        let session = store.create_session("aa11", user.id, "cc22", 100).unwrap();
        assert_eq!(session.user_id, user.id);
        assert!(session.is_valid_at(99));
        assert!(!session.is_valid_at(100));
        assert_eq!(
            store.session_by_token_hash("aa11").unwrap(),
            Some(session.clone())
        );
        assert!(!format!("{session:?}").contains("aa11"));
        assert!(matches!(
            store.create_session("bb", 999, "cc", 100),
            Err(StoreError::NotFound { what: "user", .. })
        ));

        store.create_session("later", user.id, "cc", 500).unwrap();
        assert_eq!(store.purge_expired_sessions(100).unwrap(), 1);
        assert_eq!(store.session_by_token_hash("aa11").unwrap(), None);
        assert!(store.session_by_token_hash("later").unwrap().is_some());

        assert!(store.delete_session("later").unwrap());
        assert!(!store.delete_session("later").unwrap());
        assert_eq!(store.session_by_token_hash("later").unwrap(), None);
        assert_eq!(store.snapshot().generation(), generation);
    }
}
