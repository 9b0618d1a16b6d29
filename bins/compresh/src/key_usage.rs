//! `GET /v1/usage`: a key holder reads its own key's usage, plan and rate-limit state with the
//! same `comp_` key it sends requests with.
//!
//! The read peeks at the limiter instead of counting a request, so checking how much is left
//! does not use any of it; the usual rate-limit headers describe the state at that moment
//! (`X-RateLimit-Remaining` is what a request now could still use).

use std::time::Instant;

use bytes::Bytes;
use compresh_ratelimit::Decision;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::admin::{usage_json, usage_query};
use crate::body::GatewayBody;
use crate::error::{json_response, GatewayError};
use crate::gateway::{
    authenticate, insert_rate_limit_headers, session_id, unix_now, Gateway, OVERHEAD_OUT,
    SESSION_ID_OUT,
};
use crate::ops::{self, rpm_override, UsageQuery};

/// The answer, plus what the access log line should say about the caller.
pub struct KeyUsage {
    /// The response to send.
    pub response: Response<GatewayBody>,
    /// The caller's key id, once authenticated.
    pub key_id: Option<String>,
    /// The caller's account name, once authenticated.
    pub account: Option<String>,
}

/// Serve `GET /v1/usage` (optional `from` / `to`, `YYYY-MM-DD`, inclusive).
pub async fn handle(gateway: &Gateway, request: &Request<Incoming>, started: Instant) -> KeyUsage {
    let mut caller = Caller::default();
    let mut response = match answer(gateway, request, &mut caller).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    let headers = response.headers_mut();
    if let Some(decision) = &caller.decision {
        insert_rate_limit_headers(headers, decision);
    }
    headers.insert(SESSION_ID_OUT, session_id(request.headers()));
    headers.insert(
        OVERHEAD_OUT,
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    KeyUsage {
        response,
        key_id: caller.key_id,
        account: caller.account,
    }
}

/// What is known about the caller so far.
#[derive(Default)]
struct Caller {
    key_id: Option<String>,
    account: Option<String>,
    decision: Option<Decision>,
}

async fn answer(
    gateway: &Gateway,
    request: &Request<Incoming>,
    caller: &mut Caller,
) -> Result<Response<GatewayBody>, GatewayError> {
    let snapshot = gateway.store().snapshot();
    let key = authenticate(request.headers(), &snapshot, unix_now())?;
    caller.key_id = Some(key.id.to_string());
    let account = snapshot.account(key.account_id).ok_or_else(|| {
        tracing::error!(key_id = %key.id, "key without account in snapshot");
        GatewayError::internal()
    })?;
    caller.account = Some(account.name.clone());
    if !account.active {
        return Err(GatewayError::forbidden(
            "account_deactivated",
            "the account of this API key is deactivated",
        ));
    }
    let policy = gateway.tiers().policy_for(&account.plan, rpm_override(key));
    let decision = gateway.limiter().peek(key.id.as_str(), &policy);
    caller.decision = Some(decision.clone());

    let params = usage_query(request.uri().query(), &["from", "to"])?;
    let query = UsageQuery {
        account: None,
        key_id: Some(key.id.to_string()),
        from: params.get("from"),
        to: params.get("to"),
    };
    let store = gateway.store().clone();
    // An SQLite read: off the async workers.
    let rows = tokio::task::spawn_blocking(move || ops::usage(&store, &query))
        .await
        .map_err(|error| {
            tracing::error!("usage read panicked or was cancelled: {error}");
            GatewayError::internal()
        })??;
    let total = |field: fn(&compresh_store::DailyUsage) -> u64| rows.iter().map(field).sum::<u64>();
    let body = json!({
        "object": "usage",
        "key_id": key.id.as_str(),
        "key_name": key.name,
        "account": account.name,
        "plan": account.plan,
        "rate_limit": {
            "limit": policy.limit(),
            "period_secs": policy.period().as_secs(),
            "source": if key.rpm.is_some() { "key" } else { "plan" },
            "remaining": decision.remaining(),
            "reset": decision.reset(),
        },
        "from": params.get("from"),
        "to": params.get("to"),
        "total": {
            "requests": total(|row| row.requests),
            "errors": total(|row| row.errors),
            "rate_limited": total(|row| row.rate_limited),
            "input_tokens": total(|row| row.input_tokens),
            "output_tokens": total(|row| row.output_tokens),
        },
        "data": rows.iter().map(usage_json).collect::<Vec<_>>(),
    });
    Ok(json_response(StatusCode::OK, Bytes::from(body.to_string())))
}
