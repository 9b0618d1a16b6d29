//! Operations on accounts, keys and providers: one implementation shared by the CLI and the
//! admin API, so both validate and behave identically.

use std::num::NonZeroU32;
use std::str::FromStr;

use compresh_forward::{ProviderKind, Upstream};
use compresh_keys::{ApiKey, KeyId};
use compresh_store::{
    Account, ApiKeyRecord, DailyUsage, NewApiKey, NewProvider, ProviderRecord, Store, StoreError,
    UnixTime, UsageFilter,
};
use compresh_vault::{ProviderSecret, Sealed, VaultError};

use crate::master_keys::{MasterKeySource, MasterKeys};

/// Plans an account may be on.
pub const PLANS: &[&str] = &["free", "pro"];

/// Why an operation failed; every message is safe to show to the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpsError {
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Encryption or the key ring failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// The caller's input is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

impl OpsError {
    fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// Create an account.
///
/// # Errors
/// Unknown plan, empty name, or a name already taken.
pub fn create_account(store: &Store, name: &str, plan: &str) -> Result<Account, OpsError> {
    validate_name("account name", name)?;
    validate_plan(plan)?;
    Ok(store.create_account(name, plan)?)
}

/// Activate or deactivate an account; a deactivated account's keys get 403.
///
/// # Errors
/// Unknown account.
pub fn set_account_active(store: &Store, name: &str, active: bool) -> Result<Account, OpsError> {
    Ok(store.set_account_active(name, active)?)
}

/// What a new key may do.
#[derive(Debug, Clone, Default)]
pub struct KeyRequest {
    /// Account name.
    pub account: String,
    /// Human label (dev/staging/prod ...).
    pub name: String,
    /// Environment tag.
    pub environment: Option<String>,
    /// Requests per minute instead of the plan's.
    pub rpm: Option<u32>,
    /// Provider names the key may use (empty: all).
    pub allowed_providers: Vec<String>,
    /// Model globs the key may use (empty: all).
    pub allowed_models: Vec<String>,
    /// When the key stops working.
    pub expires_at: Option<UnixTime>,
}

/// Create a key: the returned [`ApiKey`] is the only time the secret exists outside the client.
///
/// # Errors
/// Unknown account, zero rpm, or a store failure.
pub fn create_key(store: &Store, request: KeyRequest) -> Result<(ApiKey, ApiKeyRecord), OpsError> {
    let account = store.account_by_name(&request.account)?;
    if request.rpm == Some(0) {
        return Err(OpsError::invalid("--rpm must be at least 1"));
    }
    let key = ApiKey::generate();
    let record = store.insert_key(NewApiKey {
        id: KeyId::generate(),
        account_id: account.id,
        name: request.name,
        environment: request.environment,
        hint: key.hint(),
        hash: key.hash(),
        rpm: request.rpm,
        allowed_providers: request.allowed_providers,
        allowed_models: request.allowed_models,
        expires_at: request.expires_at,
    })?;
    Ok((key, record))
}

/// Parse a key id as given on a command line or in a URL.
///
/// # Errors
/// Not a key id.
pub fn parse_key_id(text: &str) -> Result<KeyId, OpsError> {
    KeyId::from_str(text.trim())
        .map_err(|_| OpsError::invalid(format!("'{}' is not a key id (key_...)", text.trim())))
}

/// Revoke a key: rejected with 401 from the next request on (within a second in other processes).
///
/// # Errors
/// Unknown key id.
pub fn revoke_key(store: &Store, id: &str) -> Result<ApiKeyRecord, OpsError> {
    Ok(store.revoke_key(&parse_key_id(id)?)?)
}

/// Change a key's requests-per-minute override (`None`: back to the plan's).
///
/// # Errors
/// Unknown key id or zero.
pub fn set_key_rpm(store: &Store, id: &str, rpm: Option<u32>) -> Result<ApiKeyRecord, OpsError> {
    if rpm == Some(0) {
        return Err(OpsError::invalid("rpm must be at least 1"));
    }
    Ok(store.set_key_rpm(&parse_key_id(id)?, rpm)?)
}

/// Issue a successor of a key with the same settings; the old key keeps working for `grace`.
///
/// # Errors
/// Unknown or already revoked key.
pub fn rotate_key(
    store: &Store,
    id: &str,
    grace_secs: u64,
    now: UnixTime,
) -> Result<(ApiKey, ApiKeyRecord), OpsError> {
    let old = store.key_by_id(&parse_key_id(id)?)?;
    if !old.is_usable_at(now) {
        return Err(OpsError::invalid(format!(
            "key {} is revoked or expired and cannot be rotated",
            old.id
        )));
    }
    let key = ApiKey::generate();
    let record = store.insert_key(NewApiKey {
        id: KeyId::generate(),
        account_id: old.account_id,
        name: old.name.clone(),
        environment: old.environment.clone(),
        hint: key.hint(),
        hash: key.hash(),
        rpm: old.rpm,
        allowed_providers: old.allowed_providers.clone(),
        allowed_models: old.allowed_models.clone(),
        expires_at: old.expires_at,
    })?;
    let grace_end = now.saturating_add(i64::try_from(grace_secs).unwrap_or(i64::MAX));
    let keep_until = old.expires_at.map_or(grace_end, |at| at.min(grace_end));
    store.set_key_expiry(&old.id, Some(keep_until))?;
    store.set_key_replaced_by(&old.id, &record.id)?;
    Ok((key, record))
}

/// A provider to configure.
#[derive(Debug)]
pub struct ProviderRequest {
    /// Account name.
    pub account: String,
    /// Provider name used in `X-Compresh-Provider` (and `openai`/`anthropic` for the defaults).
    pub name: String,
    /// Kind; defaults to the name when that is `openai` or `anthropic`.
    pub kind: Option<String>,
    /// Base URL; required for `openai-compatible`.
    pub base_url: Option<String>,
    /// The provider's key; optional for `openai-compatible`.
    pub secret: Option<ProviderSecret>,
}

/// Encrypt and store a provider key (replacing any previous one of that name).
///
/// # Errors
/// Unknown account or kind, a missing base URL or key, or a vault failure.
pub fn set_provider(
    store: &Store,
    keys: &MasterKeys,
    request: ProviderRequest,
) -> Result<ProviderRecord, OpsError> {
    validate_name("provider name", &request.name)?;
    let account = store.account_by_name(&request.account)?;
    let kind_text = match request.kind.as_deref() {
        Some(kind) => kind.to_owned(),
        None if request.name == "openai" || request.name == "anthropic" => request.name.clone(),
        None => {
            return Err(OpsError::invalid(format!(
                "--kind is required for provider '{}' (openai, anthropic or openai-compatible)",
                request.name
            )))
        }
    };
    let kind = ProviderKind::from_str(&kind_text).map_err(|_| {
        OpsError::invalid(format!(
            "unknown provider kind '{kind_text}' (openai, anthropic or openai-compatible)"
        ))
    })?;
    let secret = request
        .secret
        .filter(|secret| !secret.expose_secret().is_empty());
    // Validation only: builds the same upstream the gateway will build, without any network.
    Upstream::new(
        &request.name,
        kind,
        request.base_url.as_deref(),
        secret.clone(),
    )
    .map_err(|error| OpsError::invalid(error.message()))?;
    let (ciphertext, key_version, hint) = match &secret {
        Some(secret) => {
            let sealed = keys.ring().seal(secret)?;
            (sealed.token, sealed.version, secret.hint())
        }
        None => (String::new(), keys.ring().newest_version(), String::new()),
    };
    Ok(store.upsert_provider(NewProvider {
        account_id: account.id,
        name: request.name,
        kind: kind.as_str().to_owned(),
        base_url: request.base_url,
        ciphertext,
        key_version,
        hint,
    })?)
}

/// Remove a provider from an account.
///
/// # Errors
/// Unknown account or provider.
pub fn remove_provider(store: &Store, account: &str, name: &str) -> Result<(), OpsError> {
    let account = store.account_by_name(account)?;
    Ok(store.remove_provider(account.id, name)?)
}

/// What a master-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// The version now used for new ciphertexts.
    pub new_version: u32,
    /// Provider keys re-encrypted to it.
    pub rewrapped: usize,
    /// Old versions removed from the key file.
    pub retired: Vec<u32>,
}

/// Add a new master key version, re-encrypt every provider key to it, then retire the old
/// versions. The key file is written before any row changes, so a crash in between leaves every
/// row readable.
///
/// # Errors
/// The ring came from `COMPRESH_MASTER_KEY` (rotate that by hand), or a vault/store failure.
pub fn rotate_master_key(store: &Store, keys: &MasterKeys) -> Result<RotationReport, OpsError> {
    let MasterKeySource::File(path) = keys.source() else {
        return Err(OpsError::invalid(
            "the master key comes from COMPRESH_MASTER_KEY; rotation needs the key file \
             (unset COMPRESH_MASTER_KEY and use DATA_DIR/master.key)",
        ));
    };
    let mut ring = compresh_vault::KeyRing::load_file(path)?;
    let new_version = ring.rotate();
    ring.save_file(path)?;
    let mut rewrapped = 0;
    for provider in store.all_providers()? {
        if provider.ciphertext.is_empty() || provider.key_version == new_version {
            continue;
        }
        let sealed = Sealed {
            version: provider.key_version,
            token: provider.ciphertext.clone(),
        };
        let fresh = ring.rewrap(&sealed)?;
        if store.replace_provider_ciphertext(
            provider.id,
            provider.key_version,
            &fresh.token,
            fresh.version,
        )? {
            rewrapped += 1;
        }
    }
    let still_used: Vec<u32> = store
        .all_providers()?
        .iter()
        .filter(|provider| !provider.ciphertext.is_empty())
        .map(|provider| provider.key_version)
        .collect();
    let mut retired = Vec::new();
    for version in ring.versions() {
        if version != new_version && !still_used.contains(&version) {
            ring.retire(version)?;
            retired.push(version);
        }
    }
    ring.save_file(path)?;
    keys.replace(ring);
    Ok(RotationReport {
        new_version,
        rewrapped,
        retired,
    })
}

/// Every account, oldest first.
///
/// # Errors
/// A store failure.
pub fn list_accounts(store: &Store) -> Result<Vec<Account>, OpsError> {
    Ok(store.list_accounts()?)
}

/// The keys of an account (records only: hashes and hints, never a key).
///
/// # Errors
/// Unknown account.
pub fn list_keys(store: &Store, account: &str) -> Result<Vec<ApiKeyRecord>, OpsError> {
    let account = store.account_by_name(account)?;
    Ok(store.list_keys(account.id)?)
}

/// The providers of an account (records carry only ciphertext and a hint of the key).
///
/// # Errors
/// Unknown account.
pub fn list_providers(store: &Store, account: &str) -> Result<Vec<ProviderRecord>, OpsError> {
    let account = store.account_by_name(account)?;
    Ok(store.list_providers(account.id)?)
}

/// How a key stands at `now`: `revoked`, `expired`, `expiring` (has an expiry, e.g. a rotated
/// key in its grace period) or `active`.
pub fn key_status(key: &ApiKeyRecord, now: UnixTime) -> &'static str {
    if key.revoked_at.is_some() {
        "revoked"
    } else if !key.is_usable_at(now) {
        "expired"
    } else if key.expires_at.is_some() {
        "expiring"
    } else {
        "active"
    }
}

/// Grace period of a rotated key when none is given: 24 hours.
pub const DEFAULT_ROTATION_GRACE_SECS: u64 = 86_400;

/// Which daily usage rows to read; `None` means no restriction.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    /// Account name.
    pub account: Option<String>,
    /// Key id (`key_...`).
    pub key_id: Option<String>,
    /// First UTC day, `YYYY-MM-DD`, inclusive.
    pub from: Option<String>,
    /// Last UTC day, `YYYY-MM-DD`, inclusive.
    pub to: Option<String>,
}

/// Per-key, per-UTC-day usage rows, ordered by day then key id.
///
/// # Errors
/// Unknown account or key, a malformed key id or day, or a store failure.
pub fn usage(store: &Store, query: &UsageQuery) -> Result<Vec<DailyUsage>, OpsError> {
    let account_id = match &query.account {
        Some(name) => Some(store.account_by_name(name)?.id),
        None => None,
    };
    let key_id = match &query.key_id {
        // Looked up so that a mistyped id is a 404 rather than an empty answer.
        Some(id) => Some(store.key_by_id(&parse_key_id(id)?)?.id),
        None => None,
    };
    Ok(store.usage_daily(&UsageFilter {
        account_id,
        key_id,
        from_day: query.from.clone(),
        to_day: query.to.clone(),
    })?)
}

/// Create a dashboard user for an existing account; the password is hashed with argon2id.
///
/// # Errors
/// Malformed email, a password shorter than 10 characters, unknown account or a taken email.
pub fn create_user(
    store: &Store,
    email: &str,
    password: &str,
    account: &str,
) -> Result<compresh_store::User, OpsError> {
    let email = validate_email(email)?;
    let account = store.account_by_name(account)?;
    let hash = crate::dashboard::password::hash_password(password).map_err(OpsError::Invalid)?;
    Ok(store.create_user(&email, &hash, account.id)?)
}

/// Open sign-up: a new account on plan `free`, named after the email's local part (made unique
/// with a numeric suffix), and its first user.
///
/// # Errors
/// Malformed email, short password, or an email that already has a user.
pub fn sign_up(
    store: &Store,
    email: &str,
    password: &str,
) -> Result<(Account, compresh_store::User), OpsError> {
    let email = validate_email(email)?;
    if store.user_by_email(&email)?.is_some() {
        return Err(OpsError::invalid("a user with this email already exists"));
    }
    // Hash before creating anything, so a rejected password leaves no account behind.
    let hash = crate::dashboard::password::hash_password(password).map_err(OpsError::Invalid)?;
    let base = account_name_for(&email);
    let mut account = None;
    for n in 1..=1000 {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        match store.create_account(&name, "free") {
            Ok(created) => {
                account = Some(created);
                break;
            }
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(other) => return Err(other.into()),
        }
    }
    let account =
        account.ok_or_else(|| OpsError::invalid("no free account name for this email"))?;
    let user = store.create_user(&email, &hash, account.id)?;
    Ok((account, user))
}

/// A valid account name from an email's local part: lowercase letters, digits, `-`, `_`, `.`.
fn account_name_for(email: &str) -> String {
    let local = email.split('@').next().unwrap_or_default();
    let mut name: String = local
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(48)
        .collect();
    if name.is_empty() {
        name.push_str("user");
    }
    name
}

/// Lowercased, trimmed email with one `@`, something on both sides, no spaces or controls.
fn validate_email(email: &str) -> Result<String, OpsError> {
    let email = email.trim().to_lowercase();
    let acceptable = email.len() <= 254
        && email.split('@').count() == 2
        && email.split('@').all(|part| !part.is_empty())
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if acceptable {
        Ok(email)
    } else {
        Err(OpsError::invalid("that is not an email address"))
    }
}

/// The per-minute override as the limiter wants it.
pub fn rpm_override(record: &ApiKeyRecord) -> Option<NonZeroU32> {
    record.rpm.and_then(NonZeroU32::new)
}

fn validate_plan(plan: &str) -> Result<(), OpsError> {
    if PLANS.contains(&plan) {
        Ok(())
    } else {
        Err(OpsError::invalid(format!(
            "unknown plan '{plan}' (one of: {})",
            PLANS.join(", ")
        )))
    }
}

fn validate_name(what: &str, name: &str) -> Result<(), OpsError> {
    let acceptable = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if acceptable {
        Ok(())
    } else {
        Err(OpsError::invalid(format!(
            "{what} must be 1-64 characters of letters, digits, '-', '_' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("account name", "prod-eu_1.a").is_ok());
        assert!(validate_name("account name", "").is_err());
        assert!(validate_name("account name", "a b").is_err());
        assert!(validate_name("account name", "<script>").is_err());
    }

    #[test]
    fn emails_and_sign_up_account_names() {
        assert_eq!(
            validate_email(" Ann@Example.com ").unwrap(),
            "ann@example.com"
        );
        assert!(validate_email("no-at-sign").is_err());
        assert!(validate_email("a@b@c").is_err());
        assert!(validate_email("@b").is_err());
        assert!(validate_email("a b@c").is_err());
        assert_eq!(account_name_for("john.doe+x@example.com"), "john.doex");
        assert_eq!(account_name_for("<>@example.com"), "user");
    }

    #[test]
    fn sign_up_makes_account_names_unique() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let (first, user) = sign_up(&store, "Sam@a.example", "long enough pw").unwrap();
        assert_eq!((first.name.as_str(), first.plan.as_str()), ("sam", "free"));
        assert_eq!(user.account_id, first.id);
        let (second, _) = sign_up(&store, "sam@b.example", "long enough pw").unwrap();
        assert_eq!(second.name, "sam-2");
        assert!(sign_up(&store, "SAM@a.example", "long enough pw").is_err());
        assert!(sign_up(&store, "new@a.example", "short").is_err());
        assert!(
            store.account_by_name("new").is_err(),
            "no account for a rejected password"
        );
        let user = create_user(&store, "ops@a.example", "long enough pw", "sam").unwrap();
        assert_eq!(user.account_id, first.id);
        assert!(create_user(&store, "x@a.example", "long enough pw", "nope").is_err());
    }

    #[test]
    fn plans_are_validated() {
        assert!(validate_plan("free").is_ok());
        assert!(validate_plan("pro").is_ok());
        assert!(validate_plan("gold").is_err());
    }
}
