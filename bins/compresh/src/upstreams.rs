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
                .map_err(|error| misconfigured(format!("decryption failed: {error}")))?,
        )
    };
    Upstream::new(&record.name, kind, record.base_url.as_deref(), secret)
        .map_err(|error| misconfigured(error.message()))
}
