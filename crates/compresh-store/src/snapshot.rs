//! The immutable, in-memory view used by the request path.

use std::collections::HashMap;

use compresh_keys::{KeyHash, KeyId};
use rusqlite::Connection;

use crate::error::StoreError;
use crate::model::{Account, ApiKeyRecord, ProviderRecord};
use crate::rows;

/// The request path's lookup maps hash with foldhash instead of SipHash (SipHash was ~2 %
/// of a request's instructions). Flooding protection is not needed here: the keys are
/// SHA-256 digests, database ids and operator-configured provider names, and a client can only
/// look keys up, never insert them, so it cannot build colliding chains.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Everything the gateway needs per request, loaded at once and never
/// mutated: lookups are hash-map reads, no SQL.
///
/// Obtain it with [`Store::snapshot`](crate::Store::snapshot); hold the `Arc`
/// for the duration of one request so that all lookups see the same state.
#[derive(Debug, Default)]
pub struct Snapshot {
    generation: u64,
    change_seq: i64,
    accounts: FastMap<i64, Account>,
    keys: FastMap<KeyHash, ApiKeyRecord>,
    key_hash_by_id: HashMap<KeyId, KeyHash>,
    providers: FastMap<i64, FastMap<String, ProviderRecord>>,
}

impl Snapshot {
    /// The key with this hash, including revoked and expired keys (check
    /// [`ApiKeyRecord::is_usable_at`]).
    pub fn key_by_hash(&self, hash: &KeyHash) -> Option<&ApiKeyRecord> {
        self.keys.get(hash)
    }

    /// The key with this id, including revoked and expired keys.
    pub fn key_by_id(&self, id: &KeyId) -> Option<&ApiKeyRecord> {
        self.key_hash_by_id.get(id).and_then(|h| self.keys.get(h))
    }

    /// The account with this id, active or not.
    pub fn account(&self, account_id: i64) -> Option<&Account> {
        self.accounts.get(&account_id)
    }

    /// The provider key named `name` of an account.
    pub fn provider(&self, account_id: i64, name: &str) -> Option<&ProviderRecord> {
        self.providers.get(&account_id)?.get(name)
    }

    /// Every provider key of an account, in no particular order.
    pub fn providers_of(&self, account_id: i64) -> impl Iterator<Item = &ProviderRecord> + '_ {
        self.providers
            .get(&account_id)
            .into_iter()
            .flat_map(HashMap::values)
    }

    /// Number of keys in the snapshot.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// Increases by one on every reload of this store's snapshot (starts at 1
    /// after `open`).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn change_seq(&self) -> i64 {
        self.change_seq
    }

    pub(crate) fn with_generation(mut self, generation: u64) -> Self {
        self.generation = generation;
        self
    }

    /// Loads a consistent snapshot in one read transaction. Its generation is
    /// 0 until the store installs it.
    pub(crate) fn load(conn: &Connection) -> Result<Snapshot, StoreError> {
        // One transaction: in WAL mode all reads below see the same commit.
        let tx = conn.unchecked_transaction()?;
        let change_seq = rows::change_seq(&tx)?;
        let accounts = rows::accounts(&tx)?
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        let mut keys = FastMap::default();
        let mut key_hash_by_id = HashMap::new();
        for k in rows::keys(&tx, None)? {
            key_hash_by_id.insert(k.id.clone(), k.hash);
            keys.insert(k.hash, k);
        }
        let mut providers: FastMap<i64, FastMap<String, ProviderRecord>> = FastMap::default();
        for p in rows::providers(&tx, None)? {
            providers
                .entry(p.account_id)
                .or_default()
                .insert(p.name.clone(), p);
        }
        tx.finish()?;
        Ok(Snapshot {
            generation: 0,
            change_seq,
            accounts,
            keys,
            key_hash_by_id,
            providers,
        })
    }
}
