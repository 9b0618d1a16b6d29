//! Decrypted upstreams, cached per provider row until its ciphertext or settings change.
//!
//! Decrypting on every request would cost an HMAC and an AES pass; the cache keeps the
//! [`Upstream`] (whose secret is zeroized when the last request using it finishes) and is checked
//! against the snapshot's row on every use, so a rotated provider key is used on the next request.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

use compresh_forward::{ProviderKind, Upstream};
use compresh_store::ProviderRecord;
use compresh_vault::Sealed;

use crate::error::GatewayError;
use crate::master_keys::MasterKeys;

struct Cached {
    record: ProviderRecord,
    upstream: Arc<Upstream>,
}

/// Provider row id → decrypted upstream.
#[derive(Default)]
pub struct UpstreamCache {
    /// foldhash, not SipHash: the ids are the store's row ids, never chosen by a client.
    entries: RwLock<HashMap<i64, Cached, foldhash::fast::RandomState>>,
}

impl UpstreamCache {
    /// The upstream for `record`, decrypting only when the row changed since last time.
    ///
    /// # Errors
    /// 500 when the row cannot be decrypted or is misconfigured (details are logged here).
    pub fn get(
        &self,
        record: &ProviderRecord,
        keys: &MasterKeys,
    ) -> Result<Arc<Upstream>, GatewayError> {
        {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            if let Some(cached) = entries.get(&record.id) {
                if cached.record == *record {
                    return Ok(Arc::clone(&cached.upstream));
                }
            }
        }
        let upstream = Arc::new(build(record, keys)?);
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                record.id,
                Cached {
                    record: record.clone(),
                    upstream: Arc::clone(&upstream),
                },
            );
        Ok(upstream)
    }
}

fn build(record: &ProviderRecord, keys: &MasterKeys) -> Result<Upstream, GatewayError> {
    let misconfigured = |reason: String| {
        tracing::error!(provider = %record.name, account_id = record.account_id, %reason, "provider unusable");
        GatewayError::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "provider_misconfigured",
            format!(
                "the provider '{}' of this account cannot be used; the operator has been told why",
                record.name
            ),
        )
    };
    let kind = ProviderKind::from_str(&record.kind)
        .map_err(|_| misconfigured(format!("unknown kind '{}'", record.kind)))?;
    let secret = if record.ciphertext.is_empty() {
        None
    } else {
        let sealed = Sealed {
            version: record.key_version,
            token: record.ciphertext.clone(),
        };
        Some(
            keys.open(&sealed)
                .map_err(|error| misconfigured(format!("its provider key: {error}")))?,
        )
    };
    Upstream::new(&record.name, kind, record.base_url.as_deref(), secret)
        .map_err(|error| misconfigured(error.message()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use compresh_vault::{KeyRing, MasterSecret, ProviderSecret};

    use super::*;
    use crate::test_log::logged;

    const PROVIDER_KEY: &str = "sk-live-do-not-print-me";

    fn master_keys() -> MasterKeys {
        let ring = KeyRing::new(1, MasterSecret::generate());
        let (keys, _) = MasterKeys::load(Path::new("/nonexistent"), Some(&ring.to_text())).unwrap();
        keys
    }

    fn record(sealed: &Sealed) -> ProviderRecord {
        ProviderRecord {
            id: 7,
            account_id: 1,
            name: "openai".to_owned(),
            kind: "openai".to_owned(),
            base_url: None,
            ciphertext: sealed.token.clone(),
            key_version: sealed.version,
            hint: "…e-me".to_owned(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_provider_key_sealed_under_another_master_key_is_a_500_that_shows_no_secret() {
        let sealed = master_keys()
            .ring()
            .seal(&ProviderSecret::new(PROVIDER_KEY.to_owned()))
            .unwrap();
        let record = record(&sealed);
        let (result, log) = logged(|| UpstreamCache::default().get(&record, &master_keys()));

        let error = result.expect_err("another master key cannot open it");
        assert_eq!(error.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.code(), "provider_misconfigured");
        let body = error.body_json();
        assert!(body.contains("'openai'"), "{body}");
        // The operator learns why from the log, once; neither side sees the key or its token.
        assert!(log.contains("provider unusable"), "{log}");
        assert_eq!(log.matches("decryption failed").count(), 1, "{log}");
        for text in [&body, &log] {
            assert!(!text.contains(PROVIDER_KEY), "{text}");
            assert!(!text.contains(&sealed.token), "{text}");
        }
    }

    #[test]
    fn an_unchanged_row_is_decrypted_once_and_a_rotated_key_is_used_at_once() {
        let keys = master_keys();
        let seal = |secret: &str| {
            keys.ring()
                .seal(&ProviderSecret::new(secret.to_owned()))
                .unwrap()
        };
        let bearer = |upstream: &Upstream| {
            let (_, value) = upstream.credential().expect("an OpenAI key is sent");
            value.to_str().unwrap().to_owned()
        };
        let cache = UpstreamCache::default();
        let row = record(&seal(PROVIDER_KEY));
        let first = cache.get(&row, &keys).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(&row, &keys).unwrap()));
        assert_eq!(bearer(&first), format!("Bearer {PROVIDER_KEY}"));

        let rotated_row = record(&seal("sk-rotated"));
        let rotated = cache.get(&rotated_row, &keys).unwrap();
        assert_eq!(bearer(&rotated), "Bearer sk-rotated");
        assert!(Arc::ptr_eq(
            &rotated,
            &cache.get(&rotated_row, &keys).unwrap()
        ));
    }
}
