//! The admin API: `/admin/v1/...`, JSON over the same [`ops`](crate::ops) functions the CLI
//! calls, so both validate and behave identically.
//!
//! It exists only when an [`AdminToken`] is configured (`COMPRESH_ADMIN_TOKEN`); otherwise every
//! `/admin/...` path is an ordinary 404. Callers authenticate with `Authorization: Bearer
//! <token>`; the gateway keeps only the token's SHA-256 digest and compares digests in constant
//! time, so neither the comparison's timing nor a memory dump gives the token away.
//!
//! | Method | Path | Body → answer |
//! |---|---|---|
//! | GET | `/admin/v1/accounts` | → `{"data":[account]}` |
//! | POST | `/admin/v1/accounts` | `{name, plan?}` → 201 account |
//! | POST | `/admin/v1/accounts/{name}/activate` \| `deactivate` | → account |
//! | GET | `/admin/v1/accounts/{name}/keys` | → `{"data":[key]}` |
//! | POST | `/admin/v1/accounts/{name}/keys` | `{name?, environment?, rpm?, allowed_providers?, allowed_models?, expires_at?}` → 201 `{"key":"comp_...", ...key}` |
//! | POST | `/admin/v1/keys/{id}/revoke` | → key |
//! | PUT | `/admin/v1/keys/{id}/rpm` | `{"rpm": N \| null}` → key |
//! | POST | `/admin/v1/keys/{id}/rotate` | `{grace_secs?}` → 201 `{"key":"comp_...", ...new key, "replaces", "old_key_expires_at"}` |
//! | GET | `/admin/v1/accounts/{name}/providers` | → `{"data":[provider]}` (hints only) |
//! | PUT | `/admin/v1/accounts/{name}/providers/{provider}` | `{kind?, base_url?, api_key?}` → provider |
//! | DELETE | `/admin/v1/accounts/{name}/providers/{provider}` | → `{"removed": true}` |
//! | POST | `/admin/v1/master-key/rotate` | → `{new_version, rewrapped, retired}` |
//! | GET | `/admin/v1/usage?account=&key_id=&from=&to=` | → `{"data":[daily row]}` |

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use compresh_store::{Account, ApiKeyRecord, DailyUsage, ProviderRecord, Store};
use compresh_vault::ProviderSecret;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use crate::body::GatewayBody;
use crate::error::{json_response, GatewayError};
use crate::gateway::{unix_now, Gateway};
use crate::master_keys::MasterKeys;
use crate::ops::{self, KeyRequest, ProviderRequest, UsageQuery};

/// Shortest admin token accepted at start-up.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;

/// Admin request bodies are a few fields; anything larger is a mistake or an attack.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The admin token, held only as its SHA-256 digest. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

/// Why a configured admin token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AdminTokenError {
    /// Fewer than [`MIN_ADMIN_TOKEN_LEN`] characters.
    #[error(
        "COMPRESH_ADMIN_TOKEN is too short: use at least {MIN_ADMIN_TOKEN_LEN} characters \
         (e.g. `openssl rand -hex 32`)"
    )]
    TooShort,
    /// Contains whitespace or characters that cannot be sent in an HTTP header.
    #[error(
        "COMPRESH_ADMIN_TOKEN may only contain visible ASCII characters (no spaces), since it is \
         sent as `Authorization: Bearer <token>`"
    )]
    NotVisibleAscii,
}

impl AdminToken {
    /// Accept `token` as the admin token.
    ///
    /// # Errors
    /// Shorter than [`MIN_ADMIN_TOKEN_LEN`] characters, or not visible ASCII.
    pub fn new(token: &str) -> Result<Self, AdminTokenError> {
        if token.chars().count() < MIN_ADMIN_TOKEN_LEN {
            return Err(AdminTokenError::TooShort);
        }
        if !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(AdminTokenError::NotVisibleAscii);
        }
        Ok(Self {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is the token. Comparing fixed-size digests in constant time reveals
    /// neither the token's length nor how much of a guess was right.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        bool::from(digest.ct_eq(&self.digest))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Serve one `/admin/...` request. Never fails: every failure is a JSON error response.
pub async fn handle(gateway: &Gateway, request: Request<Incoming>) -> Response<GatewayBody> {
    let Some(token) = gateway.admin_token() else {
        // Disabled: indistinguishable from any other unknown path.
        return GatewayError::not_found(format!(
            "no route for {} {}",
            request.method(),
            request.uri().path()
        ))
        .into_response();
    };
    match serve(gateway, token, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn serve(
    gateway: &Gateway,
    token: &AdminToken,
    request: Request<Incoming>,
) -> Result<Response<GatewayBody>, GatewayError> {
    // Authenticate before routing, so an unauthenticated caller learns nothing about routes.
    authorize(token, request.headers())?;
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path
        .strip_prefix("/admin/v1/")
        .map(|rest| rest.trim_end_matches('/').split('/').collect())
        .unwrap_or_default();
    let route = Route::parse(request.method(), &segments)
        .ok_or_else(|| unknown_route(request.method(), &path, &segments))?;
    let query = request.uri().query().map(str::to_owned);
    let body = read_body(request.into_body()).await?;
    let store = gateway.store().clone();
    let keys = Arc::clone(gateway.master_keys());
    // Operations run SQLite statements (and a key-file write for master-key rotation): keep them
    // off the async workers.
    tokio::task::spawn_blocking(move || route.run(&store, &keys, body, query.as_deref()))
        .await
        .map_err(|error| {
            tracing::error!("admin operation panicked or was cancelled: {error}");
            GatewayError::internal()
        })?
}

fn authorize(token: &AdminToken, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(GatewayError::unauthenticated(
            "missing_admin_token",
            "the admin API needs Authorization: Bearer <admin token>",
        ));
    };
    let presented = bearer(value.as_bytes()).ok_or_else(|| {
        GatewayError::unauthenticated(
            "invalid_admin_token",
            "the admin API needs Authorization: Bearer <admin token>",
        )
    })?;
    if token.matches(presented) {
        Ok(())
    } else {
        Err(GatewayError::unauthenticated(
            "invalid_admin_token",
            "wrong admin token",
        ))
    }
}

/// The credential of `Bearer <credential>` (scheme case-insensitive, surrounding spaces ignored).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first()?.is_ascii_whitespace() {
        return None;
    }
    Some(rest.trim_ascii())
}

fn unknown_route(method: &Method, path: &str, segments: &[&str]) -> GatewayError {
    if Route::known_path(segments) {
        GatewayError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            format!("{method} is not supported on {path}"),
        )
    } else {
        GatewayError::not_found(format!("no admin route for {method} {path}"))
    }
}

/// The body as bytes (empty when none was sent).
async fn read_body(body: Incoming) -> Result<Vec<u8>, GatewayError> {
    match Limited::new(body, ADMIN_BODY_LIMIT).collect().await {
        // Owned bytes so the caller can wipe a provider key out of them after parsing.
        Ok(collected) => Ok(Vec::from(collected.to_bytes())),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(GatewayError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "request_too_large",
            format!("admin request bodies are limited to {ADMIN_BODY_LIMIT} bytes"),
        )),
        Err(_) => Err(GatewayError::invalid_request(
            "body_read_failed",
            "the request body could not be read",
        )),
    }
}

enum Route {
    ListAccounts,
    CreateAccount,
    SetAccountActive { account: String, active: bool },
    ListKeys { account: String },
    CreateKey { account: String },
    RevokeKey { id: String },
    SetKeyRpm { id: String },
    RotateKey { id: String },
    ListProviders { account: String },
    SetProvider { account: String, name: String },
    RemoveProvider { account: String, name: String },
    RotateMasterKey,
    Usage,
}

impl Route {
    fn parse(method: &Method, segments: &[&str]) -> Option<Self> {
        let owned = |text: &&str| (*text).to_owned();
        Some(match (method, segments) {
            (&Method::GET, ["accounts"]) => Self::ListAccounts,
            (&Method::POST, ["accounts"]) => Self::CreateAccount,
            (&Method::POST, ["accounts", account, action @ ("activate" | "deactivate")]) => {
                Self::SetAccountActive {
                    account: owned(account),
                    active: *action == "activate",
                }
            }
            (&Method::GET, ["accounts", account, "keys"]) => Self::ListKeys {
                account: owned(account),
            },
            (&Method::POST, ["accounts", account, "keys"]) => Self::CreateKey {
                account: owned(account),
            },
            (&Method::POST, ["keys", id, "revoke"]) => Self::RevokeKey { id: owned(id) },
            (&Method::PUT, ["keys", id, "rpm"]) => Self::SetKeyRpm { id: owned(id) },
            (&Method::POST, ["keys", id, "rotate"]) => Self::RotateKey { id: owned(id) },
            (&Method::GET, ["accounts", account, "providers"]) => Self::ListProviders {
                account: owned(account),
            },
            (&Method::PUT, ["accounts", account, "providers", name]) => Self::SetProvider {
                account: owned(account),
                name: owned(name),
            },
            (&Method::DELETE, ["accounts", account, "providers", name]) => Self::RemoveProvider {
                account: owned(account),
                name: owned(name),
            },
            (&Method::POST, ["master-key", "rotate"]) => Self::RotateMasterKey,
            (&Method::GET, ["usage"]) => Self::Usage,
            _ => return None,
        })
    }

    /// Whether some method is served on this path (405 rather than 404 for the others).
    fn known_path(segments: &[&str]) -> bool {
        matches!(
            segments,
            ["accounts"]
                | [
                    "accounts",
                    _,
                    "activate" | "deactivate" | "keys" | "providers"
                ]
                | ["accounts", _, "providers", _]
                | ["keys", _, "revoke" | "rpm" | "rotate"]
                | ["master-key", "rotate"]
                | ["usage"]
        )
    }

    fn run(
        self,
        store: &Store,
        keys: &MasterKeys,
        mut body: Vec<u8>,
        query: Option<&str>,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let now = unix_now();
        match self {
            Self::ListAccounts => {
                let accounts = ops::list_accounts(store)?;
                Ok(ok(list(accounts.iter().map(account_json))))
            }
            Self::CreateAccount => {
                let request: CreateAccount = parse_body(&body)?;
                let account = ops::create_account(store, &request.name, &request.plan)?;
                Ok(reply(StatusCode::CREATED, &account_json(&account)))
            }
            Self::SetAccountActive { account, active } => {
                expect_no_body(&body)?;
                let account = ops::set_account_active(store, &account, active)?;
                Ok(ok(account_json(&account)))
            }
            Self::ListKeys { account } => {
                let records = ops::list_keys(store, &account)?;
                Ok(ok(list(records.iter().map(|key| key_json(key, now)))))
            }
            Self::CreateKey { account } => {
                let request: CreateKey = parse_body(&body)?;
                let (key, record) = ops::create_key(
                    store,
                    KeyRequest {
                        account,
                        name: request.name,
                        environment: request.environment,
                        rpm: request.rpm,
                        allowed_providers: request.allowed_providers,
                        allowed_models: request.allowed_models,
                        expires_at: request.expires_at,
                    },
                )?;
                let mut answer = key_json(&record, now);
                answer["key"] = Value::from(key.expose_secret());
                Ok(reply(StatusCode::CREATED, &answer))
            }
            Self::RevokeKey { id } => {
                expect_no_body(&body)?;
                Ok(ok(key_json(&ops::revoke_key(store, &id)?, now)))
            }
            Self::SetKeyRpm { id } => {
                let request: SetRpm = parse_body(&body)?;
                Ok(ok(key_json(
                    &ops::set_key_rpm(store, &id, request.rpm)?,
                    now,
                )))
            }
            Self::RotateKey { id } => {
                let request: RotateKey = parse_body(&body)?;
                let grace = request
                    .grace_secs
                    .unwrap_or(ops::DEFAULT_ROTATION_GRACE_SECS);
                let (key, record) = ops::rotate_key(store, &id, grace, now)?;
                let mut answer = key_json(&record, now);
                answer["key"] = Value::from(key.expose_secret());
                answer["replaces"] = Value::from(id.trim());
                // What the rotation set on the old key (an earlier expiry may have won).
                answer["old_key_expires_at"] = ops::parse_key_id(&id)
                    .ok()
                    .and_then(|old| store.key_by_id(&old).ok())
                    .and_then(|old| old.expires_at)
                    .map_or(Value::Null, Value::from);
                Ok(reply(StatusCode::CREATED, &answer))
            }
            Self::ListProviders { account } => {
                let providers = ops::list_providers(store, &account)?;
                Ok(ok(list(providers.iter().map(provider_json))))
            }
            Self::SetProvider { account, name } => {
                let parsed = serde_json::from_slice::<SetProvider>(if body.is_empty() {
                    b"{}"
                } else {
                    &body
                });
                // The body held the provider key: wipe our copy whatever the outcome.
                body.zeroize();
                // No serde detail here: its messages can quote a value from the body.
                let request = parsed.map_err(|error| {
                    GatewayError::invalid_request(
                        "invalid_json",
                        format!(
                            "the body must be a JSON object with optional string fields kind, \
                             base_url and api_key (error at line {}, column {})",
                            error.line(),
                            error.column()
                        ),
                    )
                })?;
                let record = ops::set_provider(
                    store,
                    keys,
                    ProviderRequest {
                        account,
                        name,
                        kind: request.kind,
                        base_url: request.base_url,
                        secret: request.api_key.map(ProviderSecret::new),
                    },
                )?;
                Ok(ok(provider_json(&record)))
            }
            Self::RemoveProvider { account, name } => {
                expect_no_body(&body)?;
                ops::remove_provider(store, &account, &name)?;
                Ok(ok(
                    json!({"removed": true, "account": account, "name": name}),
                ))
            }
            Self::RotateMasterKey => {
                expect_no_body(&body)?;
                let report = ops::rotate_master_key(store, keys)?;
                Ok(ok(json!({
                    "new_version": report.new_version,
                    "rewrapped": report.rewrapped,
                    "retired": report.retired,
                })))
            }
            Self::Usage => {
                expect_no_body(&body)?;
                let query = usage_query(query, &["account", "key_id", "from", "to"])?;
                let rows = ops::usage(
                    store,
                    &UsageQuery {
                        account: query.get("account"),
                        key_id: query.get("key_id"),
                        from: query.get("from"),
                        to: query.get("to"),
                    },
                )?;
                Ok(ok(list(rows.iter().map(usage_json))))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
    #[serde(default = "default_plan")]
    plan: String,
}

fn default_plan() -> String {
    "free".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default = "default_key_name")]
    name: String,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    rpm: Option<u32>,
    #[serde(default)]
    allowed_providers: Vec<String>,
    #[serde(default)]
    allowed_models: Vec<String>,
    #[serde(default)]
    expires_at: Option<i64>,
}

fn default_key_name() -> String {
    "default".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRpm {
    /// Required, but may be `null` (back to the plan's rate): an empty body must not clear it.
    #[serde(deserialize_with = "present_or_null")]
    rpm: Option<u32>,
}

fn present_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    Option::<u32>::deserialize(deserializer)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateKey {
    #[serde(default)]
    grace_secs: Option<u64>,
}

/// No `Debug`: it holds a provider key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetProvider {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

/// Parse a JSON body; an empty body counts as `{}` so optional-only bodies may be omitted.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|error| {
        GatewayError::invalid_request("invalid_json", format!("invalid request body: {error}"))
    })
}

fn expect_no_body(body: &[u8]) -> Result<(), GatewayError> {
    if body.trim_ascii().is_empty() || body.trim_ascii() == b"{}" {
        Ok(())
    } else {
        Err(GatewayError::invalid_request(
            "unexpected_body",
            "this operation takes no request body",
        ))
    }
}

/// Query parameters of a usage request; anything not in `allowed` (or given twice) is a 400,
/// so a typo such as `form=` cannot silently widen the answer.
pub(crate) fn usage_query(query: Option<&str>, allowed: &[&str]) -> Result<Params, GatewayError> {
    let mut params = Params(Vec::new());
    let mut seen: Vec<String> = Vec::new();
    for pair in query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let value = percent_decode(value)?;
        if !allowed.contains(&name.as_str()) {
            return Err(GatewayError::invalid_request(
                "invalid_request",
                format!(
                    "unknown query parameter '{name}' (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        if seen.contains(&name) {
            return Err(GatewayError::invalid_request(
                "invalid_request",
                format!("query parameter '{name}' given twice"),
            ));
        }
        seen.push(name.clone());
        if !value.is_empty() {
            params.0.push((name, value));
        }
    }
    Ok(params)
}

/// Decoded query parameters.
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// The value of `name`, if given and not empty.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    }
}

fn percent_decode(text: &str) -> Result<String, GatewayError> {
    let invalid = || {
        GatewayError::invalid_request("invalid_request", "malformed percent-encoding in the query")
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = bytes.get(index + 1..index + 3).ok_or_else(invalid)?;
                let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

fn ok(value: Value) -> Response<GatewayBody> {
    reply(StatusCode::OK, &value)
}

fn reply(status: StatusCode, value: &Value) -> Response<GatewayBody> {
    json_response(status, Bytes::from(value.to_string()))
}

fn list(items: impl Iterator<Item = Value>) -> Value {
    json!({"object": "list", "data": items.collect::<Vec<_>>()})
}

fn account_json(account: &Account) -> Value {
    json!({
        "id": account.id,
        "name": account.name,
        "plan": account.plan,
        "active": account.active,
        "created_at": account.created_at,
    })
}

/// A key's record as the API shows it: never the key, nor its hash.
fn key_json(key: &ApiKeyRecord, now: i64) -> Value {
    json!({
        "id": key.id.as_str(),
        "account_id": key.account_id,
        "name": key.name,
        "environment": key.environment,
        "hint": key.hint,
        "status": ops::key_status(key, now),
        "rpm": key.rpm,
        "allowed_providers": key.allowed_providers,
        "allowed_models": key.allowed_models,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "expires_at": key.expires_at,
        "replaced_by": key.replaced_by.as_ref().map(|id| id.as_str().to_owned()),
    })
}

/// A provider as the API shows it: the key's hint, never the key or its ciphertext.
fn provider_json(provider: &ProviderRecord) -> Value {
    json!({
        "account_id": provider.account_id,
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "key_hint": (!provider.hint.is_empty()).then_some(&provider.hint),
        "key_version": provider.key_version,
        "created_at": provider.created_at,
        "updated_at": provider.updated_at,
    })
}

/// One daily usage row.
pub(crate) fn usage_json(row: &DailyUsage) -> Value {
    json!({
        "day": row.day,
        "key_id": row.key_id.as_str(),
        "account_id": row.account_id,
        "requests": row.requests,
        "errors": row.errors,
        "rate_limited": row.rate_limited,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_or_unsendable_tokens_are_refused() {
        assert_eq!(
            AdminToken::new("fifteen-chars!!").unwrap_err(),
            AdminTokenError::TooShort
        );
        assert_eq!(AdminToken::new("").unwrap_err(), AdminTokenError::TooShort);
        assert_eq!(
            AdminToken::new("sixteen chars ok").unwrap_err(),
            AdminTokenError::NotVisibleAscii
        );
        assert!(AdminToken::new("sixteen-chars-ok").is_ok());
    }

    #[test]
    fn token_matches_only_itself_and_debug_hides_it() {
        let token = AdminToken::new("correct-horse-battery").unwrap();
        assert!(token.matches(b"correct-horse-battery"));
        assert!(!token.matches(b"correct-horse-batter"));
        assert!(!token.matches(b"correct-horse-battery "));
        assert!(!token.matches(b""));
        let debug = format!("{token:?}");
        assert!(!debug.contains("horse"), "{debug}");
    }

    #[test]
    fn bearer_credentials_are_extracted() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearerabc"), None);
        assert_eq!(bearer(b"Bearer"), None);
    }

    #[test]
    fn routes_are_parsed_and_unknown_methods_told_apart() {
        assert!(matches!(
            Route::parse(&Method::POST, &["accounts", "acme", "deactivate"]),
            Some(Route::SetAccountActive { active: false, .. })
        ));
        assert!(matches!(
            Route::parse(&Method::PUT, &["accounts", "acme", "providers", "openai"]),
            Some(Route::SetProvider { .. })
        ));
        assert!(Route::parse(&Method::DELETE, &["accounts"]).is_none());
        assert!(Route::known_path(&["accounts"]));
        assert!(!Route::known_path(&["accounts", "acme", "nothing"]));
    }

    #[test]
    fn usage_queries_are_strict() {
        let params = usage_query(
            Some("from=2024-03-01&to=2024%2D03%2D02&account="),
            &["account", "from", "to"],
        )
        .unwrap();
        assert_eq!(params.get("from").as_deref(), Some("2024-03-01"));
        assert_eq!(params.get("to").as_deref(), Some("2024-03-02"));
        assert_eq!(params.get("account"), None);
        assert!(usage_query(Some("form=2024-03-01"), &["from"]).is_err());
        assert!(usage_query(Some("from=a&from=b"), &["from"]).is_err());
        assert!(usage_query(Some("from=&from=b"), &["from"]).is_err());
        assert!(usage_query(Some("from=%zz"), &["from"]).is_err());
    }

    #[test]
    fn rpm_must_be_given_even_when_null() {
        assert!(parse_body::<SetRpm>(b"").is_err());
        assert_eq!(parse_body::<SetRpm>(br#"{"rpm":null}"#).unwrap().rpm, None);
        assert_eq!(parse_body::<SetRpm>(br#"{"rpm":5}"#).unwrap().rpm, Some(5));
        assert!(parse_body::<SetRpm>(br#"{"rpm":5,"x":1}"#).is_err());
    }
}
