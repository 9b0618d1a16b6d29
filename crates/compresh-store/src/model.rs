//! Plain records stored and returned by the store.

use compresh_keys::{KeyHash, KeyId};

use crate::UnixTime;

/// A customer account. Keys and provider keys belong to an account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Row id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Plan name (free text interpreted by the gateway).
    pub plan: String,
    /// Inactive accounts are rejected by the gateway.
    pub active: bool,
    /// Creation time.
    pub created_at: UnixTime,
}

/// A stored API key: metadata and the hash of the key, never the key itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public key id.
    pub id: KeyId,
    /// Owning account.
    pub account_id: i64,
    /// Human-readable name.
    pub name: String,
    /// Optional environment label (e.g. `"prod"`).
    pub environment: Option<String>,
    /// Short non-secret hint shown in listings.
    pub hint: String,
    /// Hash of the secret key.
    pub hash: KeyHash,
    /// Creation time.
    pub created_at: UnixTime,
    /// Last time the key was used (batched; may lag behind).
    pub last_used_at: Option<UnixTime>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<UnixTime>,
    /// Expiry time, if any.
    pub expires_at: Option<UnixTime>,
    /// Per-key requests-per-minute limit; `None` = the plan's default.
    pub rpm: Option<u32>,
    /// Providers this key may use; empty = all.
    pub allowed_providers: Vec<String>,
    /// Models this key may use; empty = all.
    pub allowed_models: Vec<String>,
    /// Set by rotation to the key that replaced this one (informational).
    pub replaced_by: Option<KeyId>,
}

impl ApiKeyRecord {
    /// True if the key is neither revoked nor expired at `now`.
    ///
    /// A key is expired from the second `expires_at` on; a revoked key is
    /// unusable regardless of when it was revoked.
    pub fn is_usable_at(&self, now: UnixTime) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|exp| now < exp)
    }
}

/// A key to insert with [`Store::insert_key`](crate::Store::insert_key).
#[derive(Clone, Debug)]
pub struct NewApiKey {
    /// Public key id (unique).
    pub id: KeyId,
    /// Owning account (must exist).
    pub account_id: i64,
    /// Human-readable name.
    pub name: String,
    /// Optional environment label.
    pub environment: Option<String>,
    /// Short non-secret hint.
    pub hint: String,
    /// Hash of the secret key (unique).
    pub hash: KeyHash,
    /// Per-key requests-per-minute limit.
    pub rpm: Option<u32>,
    /// Allowed providers; empty = all.
    pub allowed_providers: Vec<String>,
    /// Allowed models; empty = all.
    pub allowed_models: Vec<String>,
    /// Expiry time, if any.
    pub expires_at: Option<UnixTime>,
}

/// A provider key of an account: encrypted, never in plaintext.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderRecord {
    /// Row id.
    pub id: i64,
    /// Owning account.
    pub account_id: i64,
    /// Name, unique per account (e.g. `"openai"`).
    pub name: String,
    /// Provider kind (e.g. `"openai"`, `"anthropic"`, `"openai-compatible"`).
    pub kind: String,
    /// Base URL override.
    pub base_url: Option<String>,
    /// Vault ciphertext (Fernet token) of the provider key.
    pub ciphertext: String,
    /// Version of the master key that sealed `ciphertext`.
    pub key_version: u32,
    /// Short non-secret hint (e.g. last four characters).
    pub hint: String,
    /// Creation time (kept by upserts).
    pub created_at: UnixTime,
    /// Last update time.
    pub updated_at: UnixTime,
}

/// A provider key to insert or replace with [`Store::upsert_provider`](crate::Store::upsert_provider).
#[derive(Clone, Debug)]
pub struct NewProvider {
    /// Owning account (must exist).
    pub account_id: i64,
    /// Name, unique per account.
    pub name: String,
    /// Provider kind.
    pub kind: String,
    /// Base URL override.
    pub base_url: Option<String>,
    /// Vault ciphertext of the provider key.
    pub ciphertext: String,
    /// Master-key version that produced `ciphertext`.
    pub key_version: u32,
    /// Short non-secret hint.
    pub hint: String,
}

/// One forwarded (or rejected) request, for [`Store::record_usage`](crate::Store::record_usage).
#[derive(Clone, Debug)]
pub struct UsageRecord {
    /// When the request happened.
    pub at: UnixTime,
    /// Key that made it.
    pub key_id: KeyId,
    /// Account of the key.
    pub account_id: i64,
    /// Provider name.
    pub provider: String,
    /// Model, if known.
    pub model: Option<String>,
    /// HTTP status returned to the client.
    pub status: u16,
    /// Total latency.
    pub latency_ms: u32,
    /// Prompt tokens, if reported.
    pub input_tokens: Option<u64>,
    /// Completion tokens, if reported.
    pub output_tokens: Option<u64>,
    /// True if the gateway rejected the request by rate limit.
    pub rate_limited: bool,
}

/// Selects rows for [`Store::usage_daily`](crate::Store::usage_daily); `None` = no restriction.
#[derive(Clone, Debug, Default)]
pub struct UsageFilter {
    /// Only this account.
    pub account_id: Option<i64>,
    /// Only this key.
    pub key_id: Option<KeyId>,
    /// First day (`"YYYY-MM-DD"`, inclusive).
    pub from_day: Option<String>,
    /// Last day (`"YYYY-MM-DD"`, inclusive).
    pub to_day: Option<String>,
}

/// Usage of one key on one UTC day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyUsage {
    /// UTC day, `"YYYY-MM-DD"`.
    pub day: String,
    /// The key.
    pub key_id: KeyId,
    /// Its account.
    pub account_id: i64,
    /// Number of requests (all outcomes).
    pub requests: u64,
    /// Requests answered with status >= 400, not counting rate-limited ones.
    pub errors: u64,
    /// Requests rejected by the rate limiter.
    pub rate_limited: u64,
    /// Sum of reported input tokens.
    pub input_tokens: u64,
    /// Sum of reported output tokens.
    pub output_tokens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(revoked_at: Option<UnixTime>, expires_at: Option<UnixTime>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: KeyId::generate(),
            account_id: 1,
            name: "k".to_owned(),
            environment: None,
            hint: "comp_…abcd".to_owned(),
            hash: KeyHash::from_bytes([1; 32]),
            created_at: 0,
            last_used_at: None,
            revoked_at,
            expires_at,
            rpm: None,
            allowed_providers: vec![],
            allowed_models: vec![],
            replaced_by: None,
        }
    }

    #[test]
    fn usable_unless_revoked_or_expired() {
        assert!(record(None, None).is_usable_at(i64::MAX));
        assert!(!record(Some(10), None).is_usable_at(5));
        assert!(!record(Some(10), None).is_usable_at(50));
        let expiring = record(None, Some(100));
        assert!(expiring.is_usable_at(99));
        assert!(!expiring.is_usable_at(100));
        assert!(!expiring.is_usable_at(101));
    }
}
