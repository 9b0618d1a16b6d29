//! Row <-> record conversion and the queries shared by the store and the
//! snapshot loader.

use compresh_keys::{KeyHash, KeyId};
use rusqlite::{Connection, Row};

use crate::error::StoreError;
use crate::model::{Account, ApiKeyRecord, ProviderRecord};

pub(crate) const ACCOUNT_COLS: &str = "id, name, plan, active, created_at";
pub(crate) const KEY_COLS: &str = "id, account_id, name, environment, hint, hash, created_at, \
     last_used_at, revoked_at, expires_at, rpm, allowed_providers, allowed_models, replaced_by";
pub(crate) const PROVIDER_COLS: &str = "id, account_id, name, kind, base_url, ciphertext, \
     key_version, hint, created_at, updated_at";

pub(crate) fn account(row: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: row.get(0)?,
        name: row.get(1)?,
        plan: row.get(2)?,
        active: row.get(3)?,
        created_at: row.get(4)?,
    })
}

pub(crate) fn provider(row: &Row<'_>) -> rusqlite::Result<ProviderRecord> {
    Ok(ProviderRecord {
        id: row.get(0)?,
        account_id: row.get(1)?,
        name: row.get(2)?,
        kind: row.get(3)?,
        base_url: row.get(4)?,
        ciphertext: row.get(5)?,
        key_version: row.get(6)?,
        hint: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

/// A key row as stored: text columns not yet decoded into typed values.
pub(crate) struct RawKey {
    id: String,
    account_id: i64,
    name: String,
    environment: Option<String>,
    hint: String,
    hash: String,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    rpm: Option<u32>,
    allowed_providers: String,
    allowed_models: String,
    replaced_by: Option<String>,
}

pub(crate) fn raw_key(row: &Row<'_>) -> rusqlite::Result<RawKey> {
    Ok(RawKey {
        id: row.get(0)?,
        account_id: row.get(1)?,
        name: row.get(2)?,
        environment: row.get(3)?,
        hint: row.get(4)?,
        hash: row.get(5)?,
        created_at: row.get(6)?,
        last_used_at: row.get(7)?,
        revoked_at: row.get(8)?,
        expires_at: row.get(9)?,
        rpm: row.get(10)?,
        allowed_providers: row.get(11)?,
        allowed_models: row.get(12)?,
        replaced_by: row.get(13)?,
    })
}

impl RawKey {
    /// Decodes the text columns; a bad value is reported as [`StoreError::Corrupt`]
    /// naming the key id and the column (never the value of the hash).
    pub(crate) fn decode(self) -> Result<ApiKeyRecord, StoreError> {
        let corrupt = |col: &str| StoreError::Corrupt(format!("api key {:?}: bad {col}", self.id));
        let id: KeyId = self.id.parse().map_err(|_| corrupt("id"))?;
        let hash = KeyHash::from_hex(&self.hash).map_err(|_| corrupt("hash"))?;
        let allowed_providers =
            decode_list(&self.allowed_providers).ok_or_else(|| corrupt("allowed_providers"))?;
        let allowed_models =
            decode_list(&self.allowed_models).ok_or_else(|| corrupt("allowed_models"))?;
        let replaced_by = match &self.replaced_by {
            Some(s) => Some(s.parse::<KeyId>().map_err(|_| corrupt("replaced_by"))?),
            None => None,
        };
        Ok(ApiKeyRecord {
            id,
            account_id: self.account_id,
            name: self.name,
            environment: self.environment,
            hint: self.hint,
            hash,
            created_at: self.created_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
            expires_at: self.expires_at,
            rpm: self.rpm,
            allowed_providers,
            allowed_models,
            replaced_by,
        })
    }
}

/// Restrictions are stored as a JSON array of strings.
pub(crate) fn encode_list(list: &[String]) -> String {
    serde_json::Value::from(list.to_vec()).to_string()
}

fn decode_list(s: &str) -> Option<Vec<String>> {
    serde_json::from_str(s).ok()
}

/// Reads every key (of one account if `account_id` is given), ordered by creation.
pub(crate) fn keys(
    conn: &Connection,
    account_id: Option<i64>,
) -> Result<Vec<ApiKeyRecord>, StoreError> {
    let sql = format!(
        "SELECT {KEY_COLS} FROM api_keys WHERE (?1 IS NULL OR account_id = ?1) ORDER BY created_at, id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let raws = stmt
        .query_map([account_id], raw_key)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    raws.into_iter().map(RawKey::decode).collect()
}

/// Reads every account ordered by id.
pub(crate) fn accounts(conn: &Connection) -> Result<Vec<Account>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY id"))?;
    let rows = stmt
        .query_map([], account)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Reads every provider (of one account if given), ordered by account then name.
pub(crate) fn providers(
    conn: &Connection,
    account_id: Option<i64>,
) -> Result<Vec<ProviderRecord>, StoreError> {
    let sql = format!(
        "SELECT {PROVIDER_COLS} FROM providers WHERE (?1 IS NULL OR account_id = ?1) ORDER BY account_id, name"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt
        .query_map([account_id], provider)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The current value of the change counter bumped by the schema's triggers.
pub(crate) fn change_seq(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .prepare_cached("SELECT seq FROM change_seq WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_through_json() {
        let list = vec!["openai".to_owned(), "we\"ird,name".to_owned()];
        assert_eq!(decode_list(&encode_list(&list)), Some(list));
        assert_eq!(encode_list(&[]), "[]");
        assert_eq!(decode_list("[]"), Some(vec![]));
        assert_eq!(decode_list("not json"), None);
        assert_eq!(decode_list("[1,2]"), None);
    }
}
