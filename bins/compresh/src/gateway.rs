//! The request path: authenticate, limit, authorise, forward, decorate, log.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use compresh_forward::{ForwardConfig, Forwarder, UpstreamAffinity};
use compresh_keys::{extract_key_with, KeyError, KeyHash, KeyId};
use compresh_ratelimit::{Decision, KeyedLimiter, Tiers};
use compresh_store::{ApiKeyRecord, Store};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::admin::AdminToken;
use crate::body::{BodyError, GatewayBody};
use crate::error::{json_response, GatewayError};
use crate::master_keys::MasterKeys;
use crate::metrics::Metrics;
use crate::ops::rpm_override;
use crate::restrictions::{model_allowed, provider_allowed};
use crate::upstreams::UpstreamCache;
use crate::usage::{
    plan_stream, Observe, ObservedBody, StreamPlan, UsageConfig, UsageDraft, UsageRecorder,
};

/// Default request body limit: 32 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

const SESSION_HEADER: HeaderName = HeaderName::from_static("x-session-id");
const PROVIDER_HEADER: HeaderName = HeaderName::from_static("x-compresh-provider");
const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
pub(crate) const SESSION_ID_OUT: HeaderName = HeaderName::from_static("x-compresh-session-id");
pub(crate) const OVERHEAD_OUT: HeaderName = HeaderName::from_static("x-compresh-proxy-overhead-ms");

/// Settings of the request path.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest accepted request body in bytes (413 beyond).
    pub body_limit: usize,
    /// Upstream client settings.
    pub forward: ForwardConfig,
    /// Plan → rate-limit policy.
    pub tiers: Tiers,
    /// Usage writer settings (queue size, batching, retries).
    pub usage: UsageConfig,
    /// Admin API token (`COMPRESH_ADMIN_TOKEN`); `None` disables `/admin/...` (404).
    pub admin_token: Option<AdminToken>,
    /// Web dashboard settings (sign-up mode, session lifetime, login throttling).
    pub dashboard: crate::dashboard::DashboardConfig,
    /// Serve plain-HTTP-provider traffic on the raw HTTP/1.1 lane (see `lane`); `false` serves
    /// every connection with hyper.
    pub raw_lane: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            body_limit: DEFAULT_BODY_LIMIT,
            forward: ForwardConfig::default(),
            tiers: Tiers::default(),
            usage: UsageConfig::default(),
            admin_token: None,
            dashboard: crate::dashboard::DashboardConfig::default(),
            raw_lane: true,
        }
    }
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    store: Store,
    master_keys: Arc<MasterKeys>,
    limiter: KeyedLimiter<String>,
    tiers: Tiers,
    forwarder: Forwarder,
    upstreams: UpstreamCache,
    metrics: Arc<Metrics>,
    usage: UsageRecorder,
    body_limit: usize,
    admin_token: Option<AdminToken>,
    dashboard: crate::dashboard::Dashboard,
    raw_lane: bool,
}

/// What the access log line says about one request; filled in as the request proceeds.
#[derive(Default)]
struct RequestRecord {
    /// Set by routes answered without `usage_key` (`/v1/usage`); see [`RequestRecord::key_id`].
    key_id: Option<String>,
    account: Option<String>,
    /// Borrowed for the built-in routes, so most requests allocate nothing for it.
    provider: Option<Cow<'static, str>>,
    upstream_status: Option<u16>,
    upstream_time: Duration,
    decision: Option<Decision>,
    /// Key id and account id of an authenticated request, for its usage record.
    usage_key: Option<(KeyId, i64)>,
    /// The requested model.
    model: Option<String>,
    /// The provider is configured for the account, so its name is a bounded metrics label.
    provider_configured: bool,
    /// `include_usage` was added to the forwarded request: strip it from the answer.
    strip_usage: bool,
}

impl RequestRecord {
    /// The key id for the access log: the proxied request's usage key (not copied a second
    /// time), or what another route set.
    fn key_id(&self) -> Option<&str> {
        match &self.usage_key {
            Some((key_id, _)) => Some(key_id.as_str()),
            None => self.key_id.as_deref(),
        }
    }
}

impl Gateway {
    /// Compose the gateway from an open store and key ring.
    ///
    /// # Errors
    /// The upstream client could not be built.
    pub fn new(
        store: Store,
        master_keys: Arc<MasterKeys>,
        config: GatewayConfig,
    ) -> Result<Self, compresh_forward::ForwardError> {
        let dashboard = crate::dashboard::Dashboard::new(
            store.clone(),
            Arc::clone(&master_keys),
            config.tiers.clone(),
            config.dashboard,
        );
        let metrics = Arc::new(Metrics::default());
        let usage = UsageRecorder::start(store.clone(), Arc::clone(&metrics), config.usage.clone());
        Ok(Self {
            metrics,
            usage,
            dashboard,
            store,
            master_keys,
            limiter: KeyedLimiter::new(),
            tiers: config.tiers,
            forwarder: Forwarder::new(config.forward)?,
            upstreams: UpstreamCache::default(),
            body_limit: config.body_limit,
            admin_token: config.admin_token,
            raw_lane: config.raw_lane,
        })
    }

    /// The store this gateway reads.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The gateway's metrics (also served at `GET /metrics`).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Flush usage: stop the background writer after it has written every queued row. Call it
    /// after connections have drained; rows of bodies still open afterwards are dropped (and
    /// counted in `compresh_usage_rows_dropped_total`).
    pub async fn shutdown(&self) {
        self.usage.shutdown().await;
    }

    /// The master key ring (for admin operations).
    pub fn master_keys(&self) -> &Arc<MasterKeys> {
        &self.master_keys
    }

    /// The admin token, when the admin API is enabled.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    pub(crate) fn upstreams(&self) -> &UpstreamCache {
        &self.upstreams
    }

    pub(crate) fn forwarder(&self) -> &Forwarder {
        &self.forwarder
    }

    pub(crate) fn usage(&self) -> &UsageRecorder {
        &self.usage
    }

    /// Whether proxied HTTP/1.1 requests are served on the raw lane (`GatewayConfig::raw_lane`).
    pub fn raw_lane(&self) -> bool {
        self.raw_lane
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.body_limit
    }

    pub(crate) fn limiter(&self) -> &KeyedLimiter<String> {
        &self.limiter
    }

    pub(crate) fn tiers(&self) -> &Tiers {
        &self.tiers
    }

    /// Serve one request. Never fails: every failure is a JSON error response.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<GatewayBody> {
        let started = Instant::now();
        let method = request.method().clone();
        // A clone of the `Uri` shares the request line's bytes (a reference count), where
        // `path().to_owned()` copied them into a new `String`.
        let uri = request.uri().clone();
        let path = uri.path();
        let mut record = RequestRecord::default();
        let response = match (&method, path) {
            (&Method::GET, "/health" | "/v1/health") => health(),
            (&Method::GET, "/metrics") => self.metrics.response(),
            (_, p) if p == "/admin" || p.starts_with("/admin/") => {
                crate::admin::handle(self, request).await
            }
            (_, p) if p == "/dashboard" || p.starts_with("/dashboard/") => {
                self.dashboard.handle(request).await
            }
            (&Method::GET, "/v1/usage") => {
                let usage = crate::key_usage::handle(self, &request, started).await;
                (record.key_id, record.account) = (usage.key_id, usage.account);
                usage.response
            }
            (_, p) if p.starts_with("/v1/") => self.proxy(request, started, &mut record).await,
            _ => GatewayError::not_found(format!("no route for {method} {path}")).into_response(),
        };
        // Logged before `observe`, which takes the record apart for the usage row instead of
        // copying its strings (it does not change the status). One clock reading for both.
        let elapsed = started.elapsed();
        crate::logging::access(&crate::logging::AccessLine {
            method: method.as_str(),
            path,
            status: response.status().as_u16(),
            key_id: record.key_id().unwrap_or("-"),
            account: record.account.as_deref().unwrap_or("-"),
            provider: record.provider.as_deref().unwrap_or("-"),
            upstream_status: record.upstream_status.unwrap_or(0),
            latency_ms: elapsed.as_millis() as u64,
        });
        self.observe(path, started, elapsed, record, response)
    }

    async fn proxy(
        &self,
        request: Request<Incoming>,
        started: Instant,
        record: &mut RequestRecord,
    ) -> Response<GatewayBody> {
        let (client_session, provider_header) = optional_headers(request.headers());
        let session_id = session_id_from(client_session);
        let provider_header = provider_header.cloned();
        let mut response = match self
            .authorise_and_forward(request, provider_header, record)
            .await
        {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        let headers = response.headers_mut();
        if let Some(decision) = &record.decision {
            insert_rate_limit_headers(headers, decision);
        }
        headers.insert(SESSION_ID_OUT, session_id);
        let overhead = started.elapsed().saturating_sub(record.upstream_time);
        headers.insert(OVERHEAD_OUT, millis_value(overhead.as_millis() as u64));
        response
    }

    async fn authorise_and_forward(
        &self,
        request: Request<Incoming>,
        provider_header: Option<HeaderValue>,
        record: &mut RequestRecord,
    ) -> Result<Response<GatewayBody>, GatewayError> {
        let snapshot = self.store.snapshot();
        let key = authenticate(request.headers(), &snapshot, unix_now())?;
        record.usage_key = Some((key.id.clone(), key.account_id));
        let account = snapshot.account(key.account_id).ok_or_else(|| {
            tracing::error!(key_id = %key.id, "key without account in snapshot");
            GatewayError::internal()
        })?;
        record.account = Some(account.name.clone());
        if !account.active {
            return Err(GatewayError::forbidden(
                "account_deactivated",
                "the account of this API key is deactivated",
            ));
        }

        let policy = self.tiers.policy_for(&account.plan, rpm_override(key));
        let decision = self.limiter.check(key.id.as_str(), &policy);
        let allowed = decision.allowed;
        let retry_after = decision.retry_after_secs().unwrap_or(1);
        record.decision = Some(decision);
        if !allowed {
            self.metrics.count_rate_limited();
            return Err(GatewayError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
                format!(
                    "rate limit of {} requests per {}s exceeded for this API key; retry after {retry_after}s",
                    policy.limit(),
                    policy.period().as_secs()
                ),
            ));
        }

        let provider_name = chosen_provider(provider_header.as_ref(), request.uri().path())?;
        // Free for the built-in names; only an `X-Compresh-Provider` name is copied.
        record.provider = Some(provider_name.clone());
        if !provider_allowed(key, &provider_name) {
            return Err(GatewayError::forbidden(
                "provider_not_allowed",
                format!("this API key may not use the provider '{provider_name}'"),
            ));
        }
        let provider = snapshot
            .provider(key.account_id, &provider_name)
            .ok_or_else(|| {
                GatewayError::forbidden(
                    "provider_not_configured",
                    format!("the provider '{provider_name}' is not configured for this account"),
                )
            })?;
        record.provider_configured = true;

        let (mut parts, body) = request.into_parts();
        let body = self.read_body(&parts.headers, body).await?;
        record.model = request_model(&parts.method, &body)?;
        if !model_allowed(key, record.model.as_deref()) {
            return Err(model_not_allowed(record.model.as_deref()));
        }

        let body = self.ask_for_usage(&parts, &provider.kind, body, record);
        let upstream = self.upstreams.get(provider, &self.master_keys)?;
        let sent = Instant::now();
        // The client connection's own upstream connection (see `server.rs`), if any.
        // Taken out, not cloned: the forwarded request carries none of the client's extensions.
        let affinity = parts.extensions.remove::<UpstreamAffinity>();
        let forwarded = self
            .forwarder
            .forward_with(affinity.as_ref(), &upstream, parts, body)
            .await;
        record.upstream_time = sent.elapsed();
        self.metrics.observe_upstream(record.upstream_time);
        let response = forwarded.map_err(|error| {
            tracing::warn!(provider = %provider_name, code = error.code(), "upstream failure: {error}");
            GatewayError::from(error)
        })?;
        record.upstream_status = Some(response.status().as_u16());
        Ok(response.map(|body| body.map_err(|e| Box::new(e) as BodyError).boxed_unsync()))
    }

    /// OpenAI-style streams report usage only when asked: ask on the client's behalf (the
    /// answer is stripped of what that adds, see [`crate::usage`]).
    fn ask_for_usage(
        &self,
        parts: &http::request::Parts,
        kind: &str,
        body: Bytes,
        record: &mut RequestRecord,
    ) -> Bytes {
        match ask_for_usage(kind, &parts.method, parts.uri.path(), &body) {
            Some(rewritten) => {
                record.strip_usage = true;
                self.metrics.count_usage_injected();
                rewritten
            }
            None => body,
        }
    }

    /// Count the request in the metrics and, for `/v1/` routes, wrap the body so its end sends
    /// the usage record (authenticated requests only) and leaves the active-streams gauge.
    fn observe(
        &self,
        path: &str,
        started: Instant,
        elapsed: Duration,
        record: RequestRecord,
        response: Response<GatewayBody>,
    ) -> Response<GatewayBody> {
        let provider = record
            .provider
            .as_deref()
            .filter(|_| record.provider_configured);
        self.metrics
            .count_request(path, provider, response.status());
        if !path.starts_with("/v1/") {
            return response;
        }
        self.metrics
            .observe_overhead(elapsed.saturating_sub(record.upstream_time));
        let rate_limited = record
            .decision
            .as_ref()
            .is_some_and(|decision| !decision.allowed);
        let draft = record.usage_key.map(|(key_id, account_id)| {
            let draft = UsageDraft {
                at: unix_now(),
                key_id,
                account_id,
                provider: record
                    .provider
                    .map_or_else(|| "-".to_owned(), Cow::into_owned),
                model: record.model,
                status: response.status().as_u16(),
                rate_limited,
                started,
            };
            (draft, self.usage.sink().clone())
        });
        let observe = Observe::for_response(response.headers(), record.strip_usage);
        let (mut parts, body) = response.into_parts();
        if observe == Observe::StripSse {
            parts.headers.remove(header::CONTENT_LENGTH);
        }
        let body = ObservedBody::new(body, observe, draft, Arc::clone(&self.metrics));
        Response::from_parts(parts, body.boxed_unsync())
    }

    async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Bytes, GatewayError> {
        let too_large = || {
            GatewayError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!(
                    "request body exceeds the limit of {} bytes",
                    self.body_limit
                ),
            )
        };
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.body_limit as u64) {
            return Err(too_large());
        }
        match crate::body::read_limited(body, self.body_limit).await {
            Ok(bytes) => Ok(bytes),
            Err(crate::body::ReadError::TooLarge) => Err(too_large()),
            Err(crate::body::ReadError::Body(_)) => Err(GatewayError::invalid_request(
                "body_read_failed",
                "the request body could not be read",
            )),
        }
    }
}

/// The body with `include_usage` added, when the gateway asks for usage on the client's behalf
/// (see [`Gateway::ask_for_usage`]).
pub(crate) fn ask_for_usage(kind: &str, method: &Method, path: &str, body: &[u8]) -> Option<Bytes> {
    if kind == "anthropic" || method != Method::POST || path != "/v1/chat/completions" {
        return None;
    }
    match plan_stream(body) {
        StreamPlan::Injected(rewritten) => Some(rewritten),
        StreamPlan::ClientAsked | StreamPlan::Unchanged => None,
    }
}

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The headers of [`Decision::headers`], written straight into `headers`: the same names and
/// values without the intermediate `Vec` of `String`s and the name lookups (every response
/// carries them).
pub(crate) fn insert_rate_limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    for (name, value) in rate_limit_headers(decision) {
        headers.insert(name, value);
    }
}

/// The fixed parts of the IETF `RateLimit-Policy` / `RateLimit` values, around the numbers.
const POLICY_QUOTA: &[u8] = b"\"default\";q=";
const POLICY_WINDOW: &[u8] = b";w=";
const RATELIMIT_REMAINING: &[u8] = b"\"default\";r=";
const RATELIMIT_RESET_IN: &[u8] = b";t=";

/// Whole seconds until the window resets, rounded up (`RateLimit`'s `t`).
fn reset_in_secs(decision: &Decision) -> u64 {
    let reset_after = decision.reset_after();
    reset_after.as_secs() + u64::from(reset_after.subsec_nanos() > 0)
}

/// [`rate_limit_headers`] as `name: value` lines appended to `out`, for the raw lane, which
/// writes its answer heads as bytes: no `HeaderValue`s, no allocation.
pub(crate) fn write_rate_limit_headers(out: &mut Vec<u8>, decision: &Decision) {
    fn name(out: &mut Vec<u8>, name: &HeaderName) {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
    }
    fn number(out: &mut Vec<u8>, value: u64) {
        let mut digits = [0; 20];
        out.extend_from_slice(crate::logging::u64_digits(&mut digits, value));
    }
    let limit = u64::from(decision.limit());
    let remaining = u64::from(decision.remaining());
    let numeric = [
        (&X_RATELIMIT_LIMIT, Some(limit)),
        (&X_RATELIMIT_REMAINING, Some(remaining)),
        (&X_RATELIMIT_RESET, Some(decision.reset())),
        (&header::RETRY_AFTER, decision.retry_after_secs()),
    ];
    for (header, value) in numeric {
        if let Some(value) = value {
            name(out, header);
            number(out, value);
            out.extend_from_slice(b"\r\n");
        }
    }
    name(out, &RATELIMIT_POLICY);
    out.extend_from_slice(POLICY_QUOTA);
    number(out, limit);
    out.extend_from_slice(POLICY_WINDOW);
    number(out, decision.window_secs());
    out.extend_from_slice(b"\r\n");
    name(out, &RATELIMIT);
    out.extend_from_slice(RATELIMIT_REMAINING);
    number(out, remaining);
    out.extend_from_slice(RATELIMIT_RESET_IN);
    number(out, reset_in_secs(decision));
    out.extend_from_slice(b"\r\n");
}

/// The rate-limit headers of `decision`, `Retry-After` included when it was refused.
pub(crate) fn rate_limit_headers(
    decision: &Decision,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> {
    let limit = decision.limit();
    let remaining = decision.remaining();
    let reset_in = reset_in_secs(decision);
    let reset = decision.reset();
    // `x-ratelimit-limit` and `ratelimit-policy` depend only on the policy and
    // `x-ratelimit-reset` changes about once a second: each was an allocation and a formatting
    // per response, now a reference-count increment while this thread's last value still
    // holds.
    let (limit_value, policy_value, reset_value) = RATE_LIMIT_VALUES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let window = decision.window_secs();
        let policy = match &cache.policy {
            Some((key, limit_value, policy_value)) if *key == (limit, window) => {
                (limit_value.clone(), policy_value.clone())
            }
            _ => {
                let mut text = TextValue::new();
                text.push(POLICY_QUOTA);
                text.push_u64(limit.into());
                text.push(POLICY_WINDOW);
                text.push_u64(window);
                let policy_value = text.into_value();
                let limit_value = HeaderValue::from(limit);
                cache.policy = Some(((limit, window), limit_value.clone(), policy_value.clone()));
                (limit_value, policy_value)
            }
        };
        let reset_value = match &cache.reset {
            Some((secs, value)) if *secs == reset => value.clone(),
            _ => {
                let value = HeaderValue::from(reset);
                cache.reset = Some((reset, value.clone()));
                value
            }
        };
        (policy.0, policy.1, reset_value)
    });
    // `"default";r=<remaining>;t=<reset_in>` holds the digits of `x-ratelimit-remaining`: both
    // values share one buffer (one allocation instead of two).
    let mut text = TextValue::new();
    text.push(RATELIMIT_REMAINING);
    let digits_at = text.len;
    text.push_u64(remaining.into());
    let digits_end = text.len;
    text.push(RATELIMIT_RESET_IN);
    text.push_u64(reset_in);
    let (ratelimit_value, remaining_value) = text.into_values(digits_at..digits_end);
    let retry_after = decision
        .retry_after_secs()
        .map(|secs| (header::RETRY_AFTER, HeaderValue::from(secs)));
    [
        (X_RATELIMIT_LIMIT, limit_value),
        (X_RATELIMIT_REMAINING, remaining_value),
        (X_RATELIMIT_RESET, reset_value),
        (RATELIMIT_POLICY, policy_value),
        (RATELIMIT, ratelimit_value),
    ]
    .into_iter()
    .chain(retry_after)
}

/// `ms` as a header value; below 100 (nearly always, for the gateway's own time) a static
/// one, which costs no allocation.
pub(crate) fn millis_value(ms: u64) -> HeaderValue {
    /// `"00" "01" … "99"`, from which the digits of 0..100 are sliced.
    static PAIRS: [u8; 200] = crate::logging::DIGIT_PAIRS;
    let digits: &'static [u8] = match ms {
        0..=9 => &PAIRS[2 * ms as usize + 1..][..1],
        10..=99 => &PAIRS[2 * ms as usize..][..2],
        _ => return HeaderValue::from(ms),
    };
    // Digits only: always a valid header value.
    HeaderValue::from_maybe_shared(Bytes::from_static(digits))
        .unwrap_or_else(|_| HeaderValue::from(ms))
}

/// This thread's last policy-only values (keyed by limit and window) and `x-ratelimit-reset`
/// value (keyed by its Unix second), see [`insert_rate_limit_headers`].
#[derive(Default)]
struct RateLimitValues {
    policy: Option<((u32, u64), HeaderValue, HeaderValue)>,
    reset: Option<(u64, HeaderValue)>,
}

thread_local! {
    static RATE_LIMIT_VALUES: std::cell::RefCell<RateLimitValues> =
        std::cell::RefCell::new(RateLimitValues::default());
}

/// A short header value (digits and ASCII punctuation) built in place: turned into a `Bytes`
/// that owns it (one allocation, no copy), whose slices are further values sharing it.
struct TextValue {
    /// The longest value written: `"default";r=` (12), a `u32` (10), `;t=` (3), a `u64` (20);
    /// `push` panics beyond, which these fixed formats cannot reach.
    bytes: [u8; 48],
    len: usize,
}

impl AsRef<[u8]> for TextValue {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl TextValue {
    fn new() -> Self {
        Self {
            bytes: [0; 48],
            len: 0,
        }
    }

    fn push(&mut self, text: &[u8]) {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text);
        self.len += text.len();
    }

    fn push_u64(&mut self, value: u64) {
        let mut digits = [0; 20];
        self.push(crate::logging::u64_digits(&mut digits, value));
    }

    fn into_value(self) -> HeaderValue {
        header_value(Bytes::from_owner(self))
    }

    /// The whole text, and its `part`.
    fn into_values(self, part: std::ops::Range<usize>) -> (HeaderValue, HeaderValue) {
        let bytes = Bytes::from_owner(self);
        let part = bytes.slice(part);
        (header_value(bytes), header_value(part))
    }
}

/// Digits and ASCII punctuation only (what [`TextValue`] holds): always a valid header value.
fn header_value(bytes: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes).unwrap_or(HeaderValue::from_static(""))
}

fn health() -> Response<GatewayBody> {
    let body = serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")});
    json_response(StatusCode::OK, Bytes::from(body.to_string()))
}

pub(crate) fn authenticate<'a>(
    headers: &HeaderMap,
    snapshot: &'a compresh_store::Snapshot,
    now: i64,
) -> Result<&'a ApiKeyRecord, GatewayError> {
    // `x-api-key` is looked up only when `Authorization` does not carry the key: one hash and
    // probe less for every `Bearer` request.
    authenticate_with(
        headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        || headers.get(X_API_KEY).map(HeaderValue::as_bytes),
        snapshot,
        now,
    )
}

/// [`authenticate`] from the raw `Authorization` value and, when that carries no key, the
/// `x-api-key` value.
fn authenticate_with<'a, 'h>(
    authorization: Option<&'h [u8]>,
    x_api_key: impl FnOnce() -> Option<&'h [u8]>,
    snapshot: &'a compresh_store::Snapshot,
    now: i64,
) -> Result<&'a ApiKeyRecord, GatewayError> {
    let key = extract_key_with(authorization, x_api_key).map_err(|error| match error {
        KeyError::Missing => GatewayError::unauthenticated(
            "missing_api_key",
            "no API key: send Authorization: Bearer comp_... or x-api-key: comp_...",
        ),
        KeyError::UnsupportedScheme => GatewayError::unauthenticated(
            "invalid_api_key",
            "unsupported Authorization scheme: use Authorization: Bearer comp_...",
        ),
        // The key crate's messages already say "malformed API key: ..." and never quote the
        // input.
        other => GatewayError::unauthenticated("invalid_api_key", other.to_string()),
    })?;
    key_record(&key.hash(), snapshot, now)
}

/// The record of the key hashing to `hash`, if it exists and is usable at `now`.
pub(crate) fn key_record<'a>(
    hash: &KeyHash,
    snapshot: &'a compresh_store::Snapshot,
    now: i64,
) -> Result<&'a ApiKeyRecord, GatewayError> {
    let record = snapshot
        .key_by_hash(hash)
        .ok_or_else(|| GatewayError::unauthenticated("invalid_api_key", "unknown API key"))?;
    if record.revoked_at.is_some() {
        return Err(GatewayError::unauthenticated(
            "revoked_api_key",
            "this API key has been revoked",
        ));
    }
    if !record.is_usable_at(now) {
        return Err(GatewayError::unauthenticated(
            "expired_api_key",
            "this API key has expired (it was rotated and its grace period is over)",
        ));
    }
    Ok(record)
}

/// The client's `X-Session-Id` and `X-Compresh-Provider`, found in one pass over the request
/// headers: most requests carry neither, and looking up an absent name hashes it byte by byte
/// (two lookups cost more than comparing the names of a request's few headers).
fn optional_headers(headers: &HeaderMap) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
    let (mut session, mut provider) = (None, None);
    // The first value of a name comes first, as `get` returns it.
    for (name, value) in headers {
        if *name == SESSION_HEADER {
            session = session.or(Some(value));
        } else if *name == PROVIDER_HEADER {
            provider = provider.or(Some(value));
        }
    }
    (session, provider)
}

pub(crate) fn chosen_provider(
    provider_header: Option<&HeaderValue>,
    path: &str,
) -> Result<Cow<'static, str>, GatewayError> {
    if let Some(value) = provider_header {
        let name = value.to_str().map_err(|_| {
            GatewayError::invalid_request(
                "invalid_provider_header",
                "X-Compresh-Provider must be a provider name",
            )
        })?;
        return Ok(Cow::Owned(name.trim().to_owned()));
    }
    Ok(Cow::Borrowed(
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            "anthropic"
        } else {
            "openai"
        },
    ))
}

/// The answer to a request for a model its key may not use.
pub(crate) fn model_not_allowed(model: Option<&str>) -> GatewayError {
    GatewayError::forbidden(
        "model_not_allowed",
        match model {
            Some(model) => format!("this API key may not use the model '{model}'"),
            None => {
                "this API key is restricted to certain models; name one in \"model\"".to_owned()
            }
        },
    )
}

/// Checks the body is a JSON object and returns its `model`; GET-style requests have no body.
pub(crate) fn request_model(method: &Method, body: &[u8]) -> Result<Option<String>, GatewayError> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow, default)]
        model: Option<Cow<'a, str>>,
    }
    if body.is_empty() && (method == Method::GET || method == Method::DELETE) {
        return Ok(None);
    }
    if let Some(model) = crate::request_json::model(body) {
        return Ok(model.map(str::to_owned));
    }
    let probe: Probe<'_> = serde_json::from_slice(body).map_err(|error| {
        GatewayError::invalid_request(
            "invalid_json",
            format!(
                "the request body must be a JSON object (error at line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })?;
    // serde's derive also reads a struct from a sequence (`["gpt-4o"]`): only objects are
    // requests.
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(GatewayError::invalid_request(
            "invalid_json",
            "the request body must be a JSON object",
        ));
    }
    Ok(probe.model.map(Cow::into_owned))
}

pub(crate) fn session_id(headers: &HeaderMap) -> HeaderValue {
    session_id_from(headers.get(SESSION_HEADER))
}

/// The client's session id if it sent a usable one, else a new random one.
pub(crate) fn session_id_from(client: Option<&HeaderValue>) -> HeaderValue {
    client
        .filter(|value| !value.is_empty() && value.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            let id: u128 = rand::random();
            let mut text = Vec::with_capacity(37);
            text.extend_from_slice(b"sess_");
            // `{id:032x}` without `format!`: 32 lowercase hex digits, most significant first.
            text.extend(
                (0..32)
                    .rev()
                    .map(|nibble| b"0123456789abcdef"[((id >> (nibble * 4)) & 0xf) as usize]),
            );
            // A hex string is always a valid header value.
            HeaderValue::from_maybe_shared(Bytes::from(text))
                .unwrap_or(HeaderValue::from_static("sess_"))
        })
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_is_read_from_json_objects_only() {
        let model = request_model(&Method::POST, br#"{"model":"gpt-4o","messages":[]}"#).unwrap();
        assert_eq!(model.as_deref(), Some("gpt-4o"));
        assert_eq!(
            request_model(&Method::POST, br#"{"messages":[]}"#).unwrap(),
            None
        );
        let error = request_model(&Method::POST, b"not json").unwrap_err();
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        assert!(request_model(&Method::POST, b"").is_err());
        assert_eq!(request_model(&Method::GET, b"").unwrap(), None);
        for not_an_object in [&b"[]"[..], b" [\"gpt-4o\"]", b"\"gpt-4o\"", b"42", b"null"] {
            let error = request_model(&Method::POST, not_an_object).unwrap_err();
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn escaped_model_names_are_decoded() {
        let model = request_model(&Method::POST, br#"{"model":"gpt-\u0034o"}"#).unwrap();
        assert_eq!(model.as_deref(), Some("gpt-4o"));
    }

    /// Both the `HeaderMap` of hyper's path and the raw lane's header lines.
    #[test]
    fn rate_limit_headers_match_the_decision() {
        let per_minute =
            compresh_ratelimit::Policy::per_minute(std::num::NonZeroU32::new(2_000).unwrap());
        let other = compresh_ratelimit::Policy::new(
            std::num::NonZeroU32::new(u32::MAX).unwrap(),
            Duration::from_millis(3_600_500),
        )
        .unwrap();
        // Policies and seconds alternate, repeat and change, so this thread's cached values are
        // both reused and replaced.
        let same_limit_longer = compresh_ratelimit::Policy::new(
            std::num::NonZeroU32::new(2_000).unwrap(),
            Duration::from_secs(120),
        )
        .unwrap();
        for policy in [per_minute, per_minute, other, per_minute, same_limit_longer] {
            for (allowed, reset_after, unix_now) in [
                (
                    true,
                    Duration::from_millis(30),
                    Duration::from_secs(1_700_000_000),
                ),
                (
                    true,
                    Duration::from_millis(30),
                    Duration::from_secs(1_700_000_000),
                ),
                (
                    true,
                    Duration::from_secs(2),
                    Duration::new(1_700_000_000, 5),
                ),
                (
                    false,
                    Duration::new(59, 1),
                    Duration::from_secs(1_700_000_001),
                ),
                (true, Duration::ZERO, Duration::from_secs(u64::MAX / 2)),
            ] {
                let decision = Decision::new(allowed, &policy, reset_after, unix_now);
                let mut headers = HeaderMap::new();
                insert_rate_limit_headers(&mut headers, &decision);
                let expected = decision.headers();
                // The raw lane's lines carry the same headers.
                let mut written = Vec::new();
                write_rate_limit_headers(&mut written, &decision);
                let mut lines: Vec<String> = String::from_utf8(written)
                    .unwrap()
                    .split_terminator("\r\n")
                    .map(str::to_owned)
                    .collect();
                let mut expected_lines: Vec<String> = expected
                    .iter()
                    .map(|(name, value)| format!("{name}: {value}"))
                    .collect();
                lines.sort();
                expected_lines.sort();
                assert_eq!(lines, expected_lines);
                assert_eq!(headers.len(), expected.len());
                for (name, value) in expected {
                    assert_eq!(headers[name], value, "{name}");
                }
            }
        }
    }

    #[test]
    fn overhead_values_are_the_decimal_millis() {
        for ms in (0..=1_000).chain([u64::MAX]) {
            assert_eq!(millis_value(ms), HeaderValue::from(ms), "{ms}");
        }
    }

    #[test]
    fn session_id_is_kept_or_generated() {
        let mut headers = HeaderMap::new();
        let generated = session_id(&headers);
        assert!(generated.to_str().unwrap().starts_with("sess_"));
        let hex = &generated.to_str().unwrap()["sess_".len()..];
        assert_eq!(hex.len(), 32);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_ne!(session_id(&headers), generated);
        headers.insert(SESSION_HEADER, HeaderValue::from_static("abc"));
        assert_eq!(session_id(&headers), "abc");
    }

    #[test]
    fn optional_headers_are_the_first_values() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        headers.insert("x-stainless-lang", HeaderValue::from_static("python"));
        assert_eq!(optional_headers(&headers), (None, None));
        headers.append(PROVIDER_HEADER, HeaderValue::from_static("local"));
        headers.append(PROVIDER_HEADER, HeaderValue::from_static("other"));
        headers.append(SESSION_HEADER, HeaderValue::from_static("s1"));
        headers.append(SESSION_HEADER, HeaderValue::from_static("s2"));
        let (session, provider) = optional_headers(&headers);
        assert_eq!(session, headers.get(SESSION_HEADER));
        assert_eq!(provider, headers.get(PROVIDER_HEADER));
        assert_eq!(session.unwrap(), "s1");
        assert_eq!(provider.unwrap(), "local");
        assert_eq!(chosen_provider(provider, "/v1/messages").unwrap(), "local");
        assert_eq!(chosen_provider(None, "/v1/messages").unwrap(), "anthropic");
        assert_eq!(
            chosen_provider(None, "/v1/messages/batches").unwrap(),
            "anthropic"
        );
        assert_eq!(
            chosen_provider(None, "/v1/chat/completions").unwrap(),
            "openai"
        );
    }
}
