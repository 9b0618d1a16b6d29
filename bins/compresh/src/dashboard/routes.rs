//! Request handling: routing, the session check, and one function per form.

use bytes::Bytes;
use compresh_store::{Account, ApiKeyRecord, Session, UsageFilter, User};
use compresh_vault::ProviderSecret;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use zeroize::Zeroizing;

use super::form::{cookie, Form, FORM_LIMIT};
use super::pages::{self, Chrome, KeyLimit, Notice};
use super::password::{dummy_hash, verify_password};
use super::session::{
    csrf_for, csrf_matches, is_https, random_token, set_cookie, token_hash, tokens_equal,
    LOGIN_CSRF_COOKIE, SESSION_COOKIE,
};
use super::{Dashboard, SignupMode};
use crate::body::{full, GatewayBody};
use crate::gateway::unix_now;
use crate::ops::{self, KeyRequest, OpsError, ProviderRequest};
use crate::server::ClientAddr;

const STYLE_CSS: &str = include_str!("assets/style.css");
const COPY_JS: &str = include_str!("assets/copy.js");

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const LOGIN: &str = "/dashboard/login";
const KEYS: &str = "/dashboard/settings/api-keys";
const PROVIDERS: &str = "/dashboard/settings/provider-keys";
const USAGE: &str = "/dashboard/usage";

/// Days shown on the usage page.
const USAGE_DAYS: i64 = 14;

type Page = Response<GatewayBody>;

/// A logged-in request: who, for which account, with which session.
struct Ctx {
    user: User,
    account: Account,
    session: Session,
    csrf: String,
}

impl Ctx {
    fn chrome(&self, active: &'static str) -> Chrome<'_> {
        Chrome {
            email: &self.user.email,
            account: &self.account.name,
            csrf: &self.csrf,
            active,
        }
    }
}

impl Dashboard {
    /// Serve a request under `/dashboard`. Every response carries the security headers.
    pub async fn handle(&self, request: http::Request<Incoming>) -> Page {
        let (parts, body) = request.into_parts();
        let mut response = self.route(&parts, body).await;
        let headers = response.headers_mut();
        for (name, value) in [
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        response
    }

    async fn route(&self, parts: &Parts, body: Incoming) -> Page {
        let path = parts.uri.path();
        match (&parts.method, path) {
            (&Method::GET, "/dashboard/assets/style.css") => {
                asset(STYLE_CSS, "text/css; charset=utf-8")
            }
            (&Method::GET, "/dashboard/assets/copy.js") => {
                asset(COPY_JS, "text/javascript; charset=utf-8")
            }
            (&Method::GET, LOGIN) => {
                if self.session(&parts.headers).is_some() {
                    return redirect(KEYS);
                }
                self.login_form(parts, StatusCode::OK, "", None)
            }
            (&Method::POST, LOGIN) => match read_form(body).await {
                Ok(form) => self.login(parts, &form).await,
                Err(page) => page,
            },
            (&Method::GET, "/dashboard/signup") => {
                if self.config.signup == SignupMode::Closed {
                    return signup_closed();
                }
                self.signup_form(parts, StatusCode::OK, "", None)
            }
            (&Method::POST, "/dashboard/signup") => match read_form(body).await {
                Ok(form) => self.signup(parts, &form).await,
                Err(page) => page,
            },
            _ => self.authenticated(parts, body).await,
        }
    }

    /// Everything behind the login: no valid session → 303 to the login page.
    async fn authenticated(&self, parts: &Parts, body: Incoming) -> Page {
        let Some(ctx) = self.session(&parts.headers) else {
            return redirect(LOGIN);
        };
        let path = parts.uri.path();
        match parts.method {
            Method::GET | Method::HEAD => match path {
                "/dashboard" | "/dashboard/" => redirect(KEYS),
                KEYS => self.keys_page(&ctx, StatusCode::OK, &Notice::None),
                PROVIDERS => self.providers_page(&ctx, StatusCode::OK, &Notice::None),
                USAGE => self.usage_page(&ctx),
                _ => not_found(Some(&ctx.chrome(""))),
            },
            Method::POST => {
                let form = match read_form(body).await {
                    Ok(form) => form,
                    Err(page) => return page,
                };
                if !csrf_matches(form.get("csrf"), &ctx.session.csrf_hash) {
                    return csrf_refused(Some(&ctx.chrome("")));
                }
                match path {
                    "/dashboard/logout" => self.logout(parts, &ctx),
                    KEYS => self.create_key(&ctx, &form),
                    "/dashboard/settings/api-keys/revoke" => self.revoke_key(&ctx, &form),
                    "/dashboard/settings/api-keys/rotate" => self.rotate_key(&ctx, &form),
                    PROVIDERS => self.set_provider(&ctx, &form),
                    "/dashboard/settings/provider-keys/remove" => self.remove_provider(&ctx, &form),
                    _ => not_found(Some(&ctx.chrome(""))),
                }
            }
            _ => html(
                StatusCode::METHOD_NOT_ALLOWED,
                pages::message(
                    "Method not allowed",
                    "Use the links and forms of the dashboard.",
                    None,
                ),
            ),
        }
    }

    /// The valid session named by the cookie, with its user and account.
    fn session(&self, headers: &HeaderMap) -> Option<Ctx> {
        let token = cookie(headers, SESSION_COOKIE).filter(|token| !token.is_empty())?;
        let hash = token_hash(token);
        let session = self
            .store
            .session_by_token_hash(&hash)
            .inspect_err(|error| tracing::error!("dashboard session lookup failed: {error}"))
            .ok()??;
        if !session.is_valid_at(unix_now()) {
            let _ = self.store.delete_session(&hash);
            return None;
        }
        let user = self.store.user_by_id(session.user_id).ok()??;
        let account = self.store.snapshot().account(user.account_id).cloned()?;
        Some(Ctx {
            user,
            account,
            session,
            csrf: csrf_for(token),
        })
    }

    // ----- logged out -----------------------------------------------------

    fn login_form(
        &self,
        parts: &Parts,
        status: StatusCode,
        email: &str,
        error: Option<&str>,
    ) -> Page {
        let (csrf, fresh) = login_csrf(&parts.headers);
        let page = pages::login(&csrf, email, error, self.config.signup == SignupMode::Open);
        with_login_csrf(html(status, page), parts, &csrf, fresh)
    }

    fn signup_form(
        &self,
        parts: &Parts,
        status: StatusCode,
        email: &str,
        error: Option<&str>,
    ) -> Page {
        let (csrf, fresh) = login_csrf(&parts.headers);
        with_login_csrf(
            html(status, pages::signup(&csrf, email, error)),
            parts,
            &csrf,
            fresh,
        )
    }

    /// Per-minute limits per email and per client address; `Some(429 page)` when over either.
    fn throttle(&self, parts: &Parts, email: Option<&str>) -> Option<Page> {
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map_or_else(|| "unknown".to_owned(), |addr| addr.0.ip().to_string());
        let mut keys = vec![format!("login-ip:{client}")];
        if let Some(email) = email {
            keys.push(format!("login-email:{}", email.trim().to_lowercase()));
        }
        // Check every key, so an attempt counts against all of its budgets.
        let decisions: Vec<_> = keys
            .iter()
            .map(|key| self.login_limiter.check(key.as_str(), &self.login_policy))
            .collect();
        let denied = decisions
            .iter()
            .filter(|d| !d.allowed)
            .filter_map(|d| d.retry_after_secs())
            .max();
        let any_denied = decisions.iter().any(|d| !d.allowed);
        if !any_denied {
            return None;
        }
        let retry = denied.unwrap_or(60);
        let mut page = html(
            StatusCode::TOO_MANY_REQUESTS,
            pages::message(
                "Too many attempts",
                &format!("Too many login attempts. Try again in {retry} seconds."),
                None,
            ),
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        Some(page)
    }

    async fn login(&self, parts: &Parts, form: &Form) -> Page {
        if !tokens_equal(form.get("csrf"), cookie(&parts.headers, LOGIN_CSRF_COOKIE)) {
            return csrf_refused(None);
        }
        let email = form.text("email").to_lowercase();
        if let Some(page) = self.throttle(parts, Some(&email)) {
            return page;
        }
        let user = match self.store.user_by_email(&email) {
            Ok(user) => user,
            Err(error) => return internal(&error),
        };
        let password = Zeroizing::new(form.get("password").unwrap_or_default().to_owned());
        // Unknown emails verify against a dummy hash: same work, same time as a wrong password.
        let stored = user.as_ref().map_or_else(
            || dummy_hash().to_owned(),
            |user| user.password_hash.clone(),
        );
        let verified = tokio::task::spawn_blocking(move || verify_password(&password, &stored))
            .await
            .unwrap_or(false);
        match user {
            Some(user) if verified => self.start_session(parts, &user),
            _ => self.login_form(
                parts,
                StatusCode::UNAUTHORIZED,
                &email,
                Some("Wrong email or password."),
            ),
        }
    }

    async fn signup(&self, parts: &Parts, form: &Form) -> Page {
        if self.config.signup == SignupMode::Closed {
            return signup_closed();
        }
        if !tokens_equal(form.get("csrf"), cookie(&parts.headers, LOGIN_CSRF_COOKIE)) {
            return csrf_refused(None);
        }
        if let Some(page) = self.throttle(parts, None) {
            return page;
        }
        let email = form.text("email").to_owned();
        let password = Zeroizing::new(form.get("password").unwrap_or_default().to_owned());
        let store = self.store.clone();
        let email_for_op = email.clone();
        let created =
            tokio::task::spawn_blocking(move || ops::sign_up(&store, &email_for_op, &password))
                .await
                .map_err(|_| OpsError::Invalid("sign-up failed".to_owned()))
                .and_then(|result| result);
        match created {
            Ok((_account, user)) => self.start_session(parts, &user),
            Err(OpsError::Invalid(message)) => {
                self.signup_form(parts, StatusCode::BAD_REQUEST, &email, Some(&message))
            }
            Err(error) => internal(&error),
        }
    }

    fn start_session(&self, parts: &Parts, user: &User) -> Page {
        let now = unix_now();
        // Housekeeping on the (rare) login path keeps the table small without a timer.
        let _ = self.store.purge_expired_sessions(now);
        let token = Zeroizing::new(random_token());
        let ttl = self.config.session_ttl.as_secs();
        let expires = now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
        if let Err(error) = self.store.create_session(
            &token_hash(&token),
            user.id,
            &token_hash(&csrf_for(&token)),
            expires,
        ) {
            return internal(&error);
        }
        let secure = is_https(&parts.uri, &parts.headers);
        let mut page = redirect(KEYS);
        add_cookie(&mut page, &set_cookie(SESSION_COOKIE, &token, ttl, secure));
        add_cookie(&mut page, &set_cookie(LOGIN_CSRF_COOKIE, "", 0, secure));
        page
    }

    fn logout(&self, parts: &Parts, ctx: &Ctx) -> Page {
        if let Err(error) = self.store.delete_session(&ctx.session.token_hash) {
            return internal(&error);
        }
        let mut page = redirect(LOGIN);
        add_cookie(
            &mut page,
            &set_cookie(SESSION_COOKIE, "", 0, is_https(&parts.uri, &parts.headers)),
        );
        page
    }

    // ----- API keys -------------------------------------------------------

    fn keys_page(&self, ctx: &Ctx, status: StatusCode, note: &Notice<'_>) -> Page {
        match self.store.list_keys(ctx.account.id) {
            Ok(keys) => html(
                status,
                pages::api_keys(&ctx.chrome(KEYS), &keys, unix_now(), note),
            ),
            Err(error) => internal(&error),
        }
    }

    fn create_key(&self, ctx: &Ctx, form: &Form) -> Page {
        let name = form.text("name");
        let environment = form.text("environment");
        if name.is_empty() || name.chars().count() > 100 {
            let note = Notice::Error("Give the key a name of 1 to 100 characters.");
            return self.keys_page(ctx, StatusCode::BAD_REQUEST, &note);
        }
        if !pages::ENVIRONMENTS.contains(&environment) {
            let note = Notice::Error("Choose the environment dev, staging or prod.");
            return self.keys_page(ctx, StatusCode::BAD_REQUEST, &note);
        }
        let request = KeyRequest {
            account: ctx.account.name.clone(),
            name: name.to_owned(),
            environment: Some(environment.to_owned()),
            ..KeyRequest::default()
        };
        match ops::create_key(&self.store, request) {
            Ok((key, _record)) => {
                let note = Notice::NewKey {
                    what: "created",
                    secret: key.expose_secret(),
                };
                self.keys_page(ctx, StatusCode::OK, &note)
            }
            Err(error) => self.ops_failed(ctx, &error),
        }
    }

    /// The key named by the form, if it belongs to the user's account (others' keys are
    /// indistinguishable from missing ones).
    fn owned_key(&self, ctx: &Ctx, form: &Form) -> Option<ApiKeyRecord> {
        let id = ops::parse_key_id(form.text("key_id")).ok()?;
        self.store
            .key_by_id(&id)
            .ok()
            .filter(|key| key.account_id == ctx.account.id)
    }

    fn revoke_key(&self, ctx: &Ctx, form: &Form) -> Page {
        let Some(key) = self.owned_key(ctx, form) else {
            return not_found(Some(&ctx.chrome(KEYS)));
        };
        if form.get("confirm") != Some("yes") {
            return html(
                StatusCode::OK,
                pages::confirm_revoke(&ctx.chrome(KEYS), &key),
            );
        }
        match ops::revoke_key(&self.store, key.id.as_str()) {
            Ok(_) => {
                let text = format!("Key '{}' revoked; it is refused from now on.", key.name);
                self.keys_page(ctx, StatusCode::OK, &Notice::Ok(&text))
            }
            Err(error) => self.ops_failed(ctx, &error),
        }
    }

    fn rotate_key(&self, ctx: &Ctx, form: &Form) -> Page {
        let Some(key) = self.owned_key(ctx, form) else {
            return not_found(Some(&ctx.chrome(KEYS)));
        };
        let grace = form.text("grace");
        let Some(grace) = pages::GRACE_CHOICES
            .iter()
            .find(|(value, _)| *value == grace)
            .and_then(|(value, _)| value.parse::<u64>().ok())
        else {
            let note = Notice::Error("Choose one of the offered grace periods.");
            return self.keys_page(ctx, StatusCode::BAD_REQUEST, &note);
        };
        match ops::rotate_key(&self.store, key.id.as_str(), grace, unix_now()) {
            Ok((new_key, _record)) => {
                let note = Notice::NewKey {
                    what: "rotated",
                    secret: new_key.expose_secret(),
                };
                self.keys_page(ctx, StatusCode::OK, &note)
            }
            Err(error) => self.ops_failed(ctx, &error),
        }
    }

    fn ops_failed(&self, ctx: &Ctx, error: &OpsError) -> Page {
        match error {
            OpsError::Invalid(message) => {
                self.keys_page(ctx, StatusCode::BAD_REQUEST, &Notice::Error(message))
            }
            other => internal(other),
        }
    }

    // ----- provider keys --------------------------------------------------

    fn providers_page(&self, ctx: &Ctx, status: StatusCode, note: &Notice<'_>) -> Page {
        match self.store.list_providers(ctx.account.id) {
            Ok(providers) => html(
                status,
                pages::provider_keys(&ctx.chrome(PROVIDERS), &providers, note),
            ),
            Err(error) => internal(&error),
        }
    }

    fn set_provider(&self, ctx: &Ctx, form: &Form) -> Page {
        let kind = form.text("kind");
        if !pages::PROVIDER_KINDS.iter().any(|(k, _)| *k == kind) {
            let note = Notice::Error("Choose OpenAI, Anthropic or an OpenAI-compatible server.");
            return self.providers_page(ctx, StatusCode::BAD_REQUEST, &note);
        }
        let name = if kind == "openai-compatible" {
            form.text("name")
        } else {
            kind
        };
        let base_url = Some(form.text("base_url")).filter(|url| !url.is_empty());
        let secret = Some(form.text("secret"))
            .filter(|secret| !secret.is_empty())
            .map(|secret| ProviderSecret::new(secret.to_owned()));
        if kind != "openai-compatible" && secret.is_none() {
            let note = Notice::Error("Enter the provider's API key.");
            return self.providers_page(ctx, StatusCode::BAD_REQUEST, &note);
        }
        let request = ProviderRequest {
            account: ctx.account.name.clone(),
            name: name.to_owned(),
            kind: Some(kind.to_owned()),
            base_url: base_url.map(str::to_owned),
            secret,
        };
        match ops::set_provider(&self.store, &self.master_keys, request) {
            Ok(record) => {
                let text = format!("Provider key '{}' saved.", record.name);
                self.providers_page(ctx, StatusCode::OK, &Notice::Ok(&text))
            }
            Err(OpsError::Invalid(message)) => {
                self.providers_page(ctx, StatusCode::BAD_REQUEST, &Notice::Error(&message))
            }
            Err(error) => internal(&error),
        }
    }

    fn remove_provider(&self, ctx: &Ctx, form: &Form) -> Page {
        let name = form.text("name");
        match ops::remove_provider(&self.store, &ctx.account.name, name) {
            Ok(()) => {
                let text = format!("Provider key '{name}' removed.");
                self.providers_page(ctx, StatusCode::OK, &Notice::Ok(&text))
            }
            Err(OpsError::Store(compresh_store::StoreError::NotFound { .. })) => {
                not_found(Some(&ctx.chrome(PROVIDERS)))
            }
            Err(error) => internal(&error),
        }
    }

    // ----- usage ----------------------------------------------------------

    fn usage_page(&self, ctx: &Ctx) -> Page {
        let now = unix_now();
        let days: Vec<String> = (0..USAGE_DAYS)
            .rev()
            .map(|ago| compresh_store::utc_day(now - ago * 86_400))
            .collect();
        let filter = UsageFilter {
            account_id: Some(ctx.account.id),
            from_day: days.first().cloned(),
            ..UsageFilter::default()
        };
        let (rows, keys) = match (
            self.store.usage_daily(&filter),
            self.store.list_keys(ctx.account.id),
        ) {
            (Ok(rows), Ok(keys)) => (rows, keys),
            (Err(error), _) | (_, Err(error)) => return internal(&error),
        };
        let plan = &ctx.account.plan;
        let limits: Vec<KeyLimit<'_>> = keys
            .iter()
            .filter(|key| key.is_usable_at(now))
            .map(|key| KeyLimit {
                key,
                rpm: self.tiers.policy_for(plan, ops::rpm_override(key)).limit(),
                own: key.rpm.is_some(),
            })
            .collect();
        // Names for rows of keys that are no longer usable, too.
        let named: Vec<KeyLimit<'_>> = keys
            .iter()
            .filter(|key| !key.is_usable_at(now))
            .map(|key| KeyLimit {
                key,
                rpm: 0,
                own: false,
            })
            .collect();
        let plan_rpm = self.tiers.policy_for(plan, None).limit();
        let page = pages::usage(
            &ctx.chrome(USAGE),
            plan,
            plan_rpm,
            &limits,
            &named,
            &days,
            &rows,
        );
        html(StatusCode::OK, page)
    }
}

// ----- responses --------------------------------------------------------------

async fn read_form(body: Incoming) -> Result<Form, Page> {
    match Limited::new(body, FORM_LIMIT).collect().await {
        Ok(collected) => {
            let bytes = Zeroizing::new(collected.to_bytes().to_vec());
            Ok(Form::parse(&bytes))
        }
        Err(_) => Err(html(
            StatusCode::PAYLOAD_TOO_LARGE,
            pages::message("Form too large", "The form could not be read.", None),
        )),
    }
}

fn html(status: StatusCode, page: String) -> Page {
    let mut response = Response::new(full(Bytes::from(page)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn asset(text: &'static str, content_type: &'static str) -> Page {
    let mut response = Response::new(full(Bytes::from_static(text.as_bytes())));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn redirect(location: &'static str) -> Page {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    response
}

fn add_cookie(page: &mut Page, cookie: &str) {
    // Cookie values are base64url tokens and fixed attributes: always valid header text.
    if let Ok(value) = HeaderValue::from_str(cookie) {
        page.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The double-submit token of the logged-out forms: the browser's cookie, or a fresh one.
fn login_csrf(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, LOGIN_CSRF_COOKIE).filter(|token| token.len() == 43) {
        Some(token) => (token.to_owned(), false),
        None => (random_token(), true),
    }
}

fn with_login_csrf(mut page: Page, parts: &Parts, csrf: &str, fresh: bool) -> Page {
    if fresh {
        let secure = is_https(&parts.uri, &parts.headers);
        add_cookie(
            &mut page,
            &set_cookie(LOGIN_CSRF_COOKIE, csrf, 3600, secure),
        );
    }
    page
}

fn not_found(chrome: Option<&Chrome<'_>>) -> Page {
    html(
        StatusCode::NOT_FOUND,
        pages::message("Not found", "There is nothing here.", chrome),
    )
}

fn csrf_refused(chrome: Option<&Chrome<'_>>) -> Page {
    html(
        StatusCode::FORBIDDEN,
        pages::message(
            "Request refused",
            "The form was missing its security token or it did not match. Reload the page and try again.",
            chrome,
        ),
    )
}

fn signup_closed() -> Page {
    html(
        StatusCode::NOT_FOUND,
        pages::message(
            "Sign-up is closed",
            "Ask the operator of this gateway for an account.",
            None,
        ),
    )
}

fn internal(error: &dyn std::fmt::Display) -> Page {
    // Store and ops errors name records, never secrets; the page says nothing specific.
    tracing::error!("dashboard request failed: {error}");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        pages::message(
            "Something went wrong",
            "The gateway could not complete this request.",
            None,
        ),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dashboard::DashboardConfig;
    use crate::master_keys::MasterKeys;

    fn dashboard() -> (tempfile::TempDir, Dashboard, User) {
        let dir = tempfile::tempdir().unwrap();
        let store = compresh_store::Store::open(&dir.path().join("s.db")).unwrap();
        let (keys, _) = MasterKeys::load(dir.path(), None).unwrap();
        let account = store.create_account("acme", "free").unwrap();
        let user = store.create_user("a@b.example", "h", account.id).unwrap();
        let dashboard = Dashboard::new(
            store,
            Arc::new(keys),
            compresh_ratelimit::Tiers::default(),
            DashboardConfig::default(),
        );
        (dir, dashboard, user)
    }

    fn with_cookie(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("{SESSION_COOKIE}={token}");
        headers.insert(header::COOKIE, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn sessions_are_found_by_token_until_they_expire() {
        let (_dir, dashboard, user) = dashboard();
        let now = unix_now();
        let live = random_token();
        let csrf_hash = token_hash(&csrf_for(&live));
        dashboard
            .store
            .create_session(&token_hash(&live), user.id, &csrf_hash, now + 60)
            .unwrap();
        let ctx = dashboard
            .session(&with_cookie(&live))
            .expect("live session");
        assert_eq!(ctx.user.id, user.id);
        assert_eq!(ctx.account.name, "acme");
        assert!(csrf_matches(Some(&ctx.csrf), &ctx.session.csrf_hash));

        let expired = random_token();
        let hash = token_hash(&expired);
        dashboard
            .store
            .create_session(&hash, user.id, "x", now - 1)
            .unwrap();
        assert!(dashboard.session(&with_cookie(&expired)).is_none());
        // An expired session is deleted when it is presented.
        assert_eq!(dashboard.store.session_by_token_hash(&hash).unwrap(), None);
        assert!(dashboard.session(&with_cookie("")).is_none());
        assert!(dashboard.session(&HeaderMap::new()).is_none());
        // The store holds the hash, so the hash itself is no credential.
        assert!(dashboard
            .session(&with_cookie(&token_hash(&live)))
            .is_none());
    }
}
