//! The web dashboard over HTTP, as a browser would use it: cookies, forms, redirects, the CSRF
//! token, escaping, and keys created in the dashboard working (and then not) on the proxy.

use std::collections::BTreeMap;
use std::time::Duration;

use compresh::dashboard::SignupMode;
use compresh::gateway::GatewayConfig;
use compresh::ops;
use compresh_e2e::{eventually, Reply, TestGateway};
use compresh_store::{UsageFilter, UsageRecord};
use http::{Method, StatusCode};

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
const EMAIL: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery staple";
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A cookie jar over the test gateway.
struct Browser<'a> {
    gw: &'a TestGateway,
    cookies: BTreeMap<String, String>,
    extra: Vec<(&'static str, &'static str)>,
}

impl<'a> Browser<'a> {
    fn new(gw: &'a TestGateway) -> Self {
        Self {
            gw,
            cookies: BTreeMap::new(),
            extra: Vec::new(),
        }
    }

    async fn request(&mut self, method: Method, path: &str, body: String) -> Reply {
        let cookie = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if !cookie.is_empty() {
            headers.push(("cookie", cookie.as_str()));
        }
        headers.extend(self.extra.iter().copied());
        let reply = self.gw.send(method, path, &headers, body).await;
        assert_security_headers(&reply);
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, _) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        reply
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.request(Method::GET, path, String::new()).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = fields
            .iter()
            .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        self.request(Method::POST, path, body).await
    }

    async fn login(&mut self, email: &str, password: &str) -> Reply {
        let page = self.get("/dashboard/login").await;
        let csrf = csrf_of(&page);
        self.post(
            "/dashboard/login",
            &[("csrf", &csrf), ("email", email), ("password", password)],
        )
        .await
    }

    /// The CSRF token embedded in a logged-in page.
    async fn csrf(&mut self) -> String {
        let page = self.get("/dashboard/settings/api-keys").await;
        assert_eq!(page.status, StatusCode::OK);
        csrf_of(&page)
    }
}

fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> Option<&'t str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn csrf_of(reply: &Reply) -> String {
    between(&text(reply), "name=\"csrf\" value=\"", "\"")
        .unwrap_or_else(|| panic!("no csrf field in: {}", text(reply)))
        .to_owned()
}

fn new_key_of(reply: &Reply) -> String {
    between(&text(reply), "<code id=\"new-key\">", "</code>")
        .unwrap_or_else(|| panic!("no new key in: {}", text(reply)))
        .to_owned()
}

fn assert_security_headers(reply: &Reply) {
    assert_eq!(reply.header("content-security-policy"), Some(CSP));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
}

fn assert_redirect(reply: &Reply, to: &str) {
    assert_eq!(reply.status, StatusCode::SEE_OTHER, "{}", text(reply));
    assert_eq!(reply.header("location"), Some(to));
}

async fn gateway_with_user() -> TestGateway {
    let gw = TestGateway::start().await;
    ops::create_user(&gw.data.store, EMAIL, PASSWORD, "default").expect("create user");
    gw
}

#[tokio::test]
async fn logged_out_access_redirects_to_login() {
    let gw = gateway_with_user().await;
    let mut browser = Browser::new(&gw);
    for path in [
        "/dashboard",
        "/dashboard/",
        "/dashboard/settings/api-keys",
        "/dashboard/settings/provider-keys",
        "/dashboard/usage",
        "/dashboard/anything",
    ] {
        assert_redirect(&browser.get(path).await, "/dashboard/login");
    }
    let post = browser
        .post("/dashboard/settings/api-keys", &[("name", "x")])
        .await;
    assert_redirect(&post, "/dashboard/login");
    // A made-up session cookie is no session.
    browser
        .cookies
        .insert("compresh_session".into(), "forged".into());
    assert_redirect(&browser.get("/dashboard/usage").await, "/dashboard/login");

    let login = browser.get("/dashboard/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert_eq!(
        login.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(text(&login).contains("type=\"password\""));
    let css = browser.get("/dashboard/assets/style.css").await;
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    // Closed sign-up by default.
    assert_eq!(
        browser.get("/dashboard/signup").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn login_sets_a_strict_cookie_and_logout_ends_the_session() {
    let gw = gateway_with_user().await;
    let mut browser = Browser::new(&gw);
    let wrong = browser.login(EMAIL, "not the password at all").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(text(&wrong).contains("Wrong email or password"));
    let unknown = browser.login("nobody@example.com", PASSWORD).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(!browser.cookies.contains_key("compresh_session"));

    // The login form itself is CSRF-protected.
    let no_csrf = browser
        .post(
            "/dashboard/login",
            &[("email", EMAIL), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);

    let ok = browser.login("Owner@Example.com", PASSWORD).await;
    assert_redirect(&ok, "/dashboard/settings/api-keys");
    let cookie = ok
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("compresh_session="))
        .expect("session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(cookie.contains("Path=/"));
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag");
    let token = browser.cookies["compresh_session"].clone();
    assert!(token.len() >= 43);

    let page = browser.get("/dashboard/settings/api-keys").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(text(&page).contains(EMAIL));
    assert_redirect(
        &browser.get("/dashboard").await,
        "/dashboard/settings/api-keys",
    );

    // Logout needs the CSRF token too.
    let refused = browser.post("/dashboard/logout", &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let csrf = browser.csrf().await;
    let out = browser.post("/dashboard/logout", &[("csrf", &csrf)]).await;
    assert_redirect(&out, "/dashboard/login");
    // Replaying the old cookie does not work: the session is gone from the store.
    browser.cookies.insert("compresh_session".into(), token);
    assert_redirect(
        &browser.get("/dashboard/settings/api-keys").await,
        "/dashboard/login",
    );
}

#[tokio::test]
async fn session_cookie_is_secure_behind_tls() {
    let gw = gateway_with_user().await;
    let mut browser = Browser::new(&gw);
    browser.extra.push(("x-forwarded-proto", "https"));
    let ok = browser.login(EMAIL, PASSWORD).await;
    assert_redirect(&ok, "/dashboard/settings/api-keys");
    assert!(ok.headers.get_all("set-cookie").iter().any(|c| c
        .to_str()
        .unwrap()
        .starts_with("compresh_session=")
        && c.to_str().unwrap().contains("; Secure")));
}

#[tokio::test]
async fn keys_created_in_the_dashboard_work_until_revoked() {
    let gw = gateway_with_user().await;
    let mut browser = Browser::new(&gw);
    assert_redirect(
        &browser.login(EMAIL, PASSWORD).await,
        "/dashboard/settings/api-keys",
    );
    let account = gw.data.store.account_by_name("default").unwrap();
    let keys_before = gw.data.store.list_keys(account.id).unwrap().len();

    // CSRF-less and wrong-token POSTs are refused and change nothing.
    let no_token = browser
        .post(
            "/dashboard/settings/api-keys",
            &[("name", "x"), ("environment", "dev")],
        )
        .await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);
    let wrong_token = browser
        .post(
            "/dashboard/settings/api-keys",
            &[("csrf", "AAAA"), ("name", "x"), ("environment", "dev")],
        )
        .await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    assert_eq!(
        gw.data.store.list_keys(account.id).unwrap().len(),
        keys_before
    );

    // Create a key whose name is markup: it renders as text.
    let csrf = browser.csrf().await;
    let xss = "<script>alert(1)</script>";
    let created = browser
        .post(
            "/dashboard/settings/api-keys",
            &[("csrf", &csrf), ("name", xss), ("environment", "prod")],
        )
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", text(&created));
    let page = text(&created);
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!page.contains(xss));
    assert!(page.contains("you won't see this again"));
    let secret = new_key_of(&created);
    assert!(secret.starts_with("comp_"), "{secret}");

    // Shown once: the list afterwards has only the hint.
    let list = text(&browser.get("/dashboard/settings/api-keys").await);
    assert!(!list.contains(&secret));
    assert!(!list.contains(xss));
    assert!(list.contains("prod"));

    let reply = gw.chat(&secret, CHAT).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", text(&reply));

    // The usage page shows the request (the recorder flushes within about a second).
    let record = gw
        .data
        .store
        .list_keys(account.id)
        .unwrap()
        .into_iter()
        .find(|k| k.name == xss)
        .unwrap();
    let store = gw.data.store.clone();
    let key_id = record.id.clone();
    eventually("usage row of the new key", Duration::from_secs(10), || {
        store
            .usage_daily(&UsageFilter {
                key_id: Some(key_id.clone()),
                ..UsageFilter::default()
            })
            .is_ok_and(|rows| rows.iter().any(|r| r.requests >= 1))
    })
    .await;
    let usage = text(&browser.get("/dashboard/usage").await);
    assert!(usage.contains(record.id.as_str()), "{usage}");
    assert!(usage.contains("<svg"));
    assert!(usage.contains("Plan:</strong> free"));

    // Revoke: the first POST only asks for confirmation.
    let csrf = browser.csrf().await;
    let confirm = browser
        .post(
            "/dashboard/settings/api-keys/revoke",
            &[("csrf", &csrf), ("key_id", record.id.as_str())],
        )
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(text(&confirm).contains("name=\"confirm\""));
    assert_eq!(gw.chat(&secret, CHAT).await.status, StatusCode::OK);
    let revoked = browser
        .post(
            "/dashboard/settings/api-keys/revoke",
            &[
                ("csrf", &csrf),
                ("key_id", record.id.as_str()),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert!(text(&revoked).contains("revoked"));
    let refused = gw.chat(&secret, CHAT).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.json()["error"]["code"], "revoked_api_key");
}

#[tokio::test]
async fn keys_of_other_accounts_cannot_be_touched_and_rotation_shows_the_new_key() {
    let gw = gateway_with_user().await;
    let other = ops::create_account(&gw.data.store, "other", "free").unwrap();
    let (_, foreign) = ops::create_key(
        &gw.data.store,
        ops::KeyRequest {
            account: other.name.clone(),
            name: "theirs".into(),
            ..ops::KeyRequest::default()
        },
    )
    .unwrap();
    let mut browser = Browser::new(&gw);
    browser.login(EMAIL, PASSWORD).await;
    let csrf = browser.csrf().await;
    let reply = browser
        .post(
            "/dashboard/settings/api-keys/revoke",
            &[
                ("csrf", &csrf),
                ("key_id", foreign.id.as_str()),
                ("confirm", "yes"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(gw
        .data
        .store
        .key_by_id(&foreign.id)
        .unwrap()
        .revoked_at
        .is_none());

    // Rotate the first-start key with no grace: the new one works, the old one stops.
    let account = gw.data.store.account_by_name("default").unwrap();
    let old = gw.data.store.list_keys(account.id).unwrap().remove(0);
    let rotated = browser
        .post(
            "/dashboard/settings/api-keys/rotate",
            &[("csrf", &csrf), ("key_id", old.id.as_str()), ("grace", "0")],
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", text(&rotated));
    let new_secret = new_key_of(&rotated);
    assert_eq!(gw.chat(&new_secret, CHAT).await.status, StatusCode::OK);
    assert_eq!(
        gw.chat(&gw.api_key, CHAT).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn provider_keys_show_only_their_hint() {
    let gw = gateway_with_user().await;
    let mut browser = Browser::new(&gw);
    browser.login(EMAIL, PASSWORD).await;
    let csrf = browser.csrf().await;
    let secret = "sk-dashboard-SECRET-value-7890wxyz";
    let base = gw.mock.openai_base_url();
    let saved = browser
        .post(
            "/dashboard/settings/provider-keys",
            &[
                ("csrf", &csrf),
                ("kind", "openai"),
                ("base_url", &base),
                ("secret", secret),
            ],
        )
        .await;
    assert_eq!(saved.status, StatusCode::OK, "{}", text(&saved));
    let page = text(&browser.get("/dashboard/settings/provider-keys").await);
    assert!(!page.contains(secret));
    assert!(!page.contains("SECRET-value"));
    assert!(page.contains("wxyz"), "the hint is shown: {page}");
    // The next request uses the new key.
    assert_eq!(gw.chat(&gw.api_key, CHAT).await.status, StatusCode::OK);
    let sent = gw.mock.last_request().expect("forwarded");
    assert_eq!(
        sent.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {secret}").as_str())
    );

    // Validation errors come back as a message, not a 500.
    let bad = browser
        .post(
            "/dashboard/settings/provider-keys",
            &[
                ("csrf", &csrf),
                ("kind", "openai-compatible"),
                ("name", "local"),
            ],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", text(&bad));

    let removed = browser
        .post(
            "/dashboard/settings/provider-keys/remove",
            &[("csrf", &csrf), ("name", "anthropic")],
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    let account = gw.data.store.account_by_name("default").unwrap();
    let names: Vec<String> = gw
        .data
        .store
        .list_providers(account.id)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, vec!["openai".to_owned()]);
}

#[tokio::test]
async fn usage_page_shows_tokens_429s_and_limits() {
    let gw = gateway_with_user().await;
    let account = gw.data.store.account_by_name("default").unwrap();
    let key = gw.data.store.list_keys(account.id).unwrap().remove(0);
    gw.data.store.set_key_rpm(&key.id, Some(77)).unwrap();
    let now = compresh::gateway::unix_now();
    let row = |status: u16, limited: bool| UsageRecord {
        at: now,
        key_id: key.id.clone(),
        account_id: account.id,
        provider: "openai".into(),
        model: Some("gpt-4o-mini".into()),
        status,
        latency_ms: 5,
        input_tokens: (!limited).then_some(1234),
        output_tokens: (!limited).then_some(5678),
        rate_limited: limited,
    };
    gw.data
        .store
        .record_usage(&[row(200, false), row(429, true)])
        .unwrap();
    let mut browser = Browser::new(&gw);
    browser.login(EMAIL, PASSWORD).await;
    let page = text(&browser.get("/dashboard/usage").await);
    for expected in [
        ">1,234<",
        ">5,678<",
        "1 served, 1 rate limited",
        ">77<",
        "key override",
        "Plan:</strong> free",
    ] {
        assert!(page.contains(expected), "missing {expected}: {page}");
    }
}

#[tokio::test]
async fn open_sign_up_creates_a_free_account_and_logs_in() {
    let mut config = GatewayConfig::default();
    config.dashboard.signup = SignupMode::Open;
    let gw = TestGateway::start_with(config).await;
    let mut browser = Browser::new(&gw);
    let form = browser.get("/dashboard/signup").await;
    assert_eq!(form.status, StatusCode::OK);
    let csrf = csrf_of(&form);
    let short = browser
        .post(
            "/dashboard/signup",
            &[
                ("csrf", &csrf),
                ("email", "new@x.example"),
                ("password", "short"),
            ],
        )
        .await;
    assert_eq!(short.status, StatusCode::BAD_REQUEST);
    assert!(text(&short).contains("at least 10"));
    let done = browser
        .post(
            "/dashboard/signup",
            &[
                ("csrf", &csrf),
                ("email", "New@X.example"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_redirect(&done, "/dashboard/settings/api-keys");
    let account = gw.data.store.account_by_name("new").expect("account");
    assert_eq!(account.plan, "free");
    let user = gw
        .data
        .store
        .user_by_email("new@x.example")
        .unwrap()
        .unwrap();
    assert_eq!(user.account_id, account.id);
    assert!(user.password_hash.starts_with("$argon2id$"));
    let page = text(&browser.get("/dashboard/settings/api-keys").await);
    assert!(page.contains("new@x.example") && page.contains("No keys yet"));
}

#[tokio::test]
async fn login_attempts_are_throttled_per_email() {
    let gw = gateway_with_user().await;
    let mut browser = Browser::new(&gw);
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(browser.login(EMAIL, "wrong password!!").await.status);
    }
    assert!(statuses[..10]
        .iter()
        .all(|s| *s == StatusCode::UNAUTHORIZED));
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    // Even the right password is refused while throttled.
    let reply = browser.login(EMAIL, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(reply.header("retry-after").is_some());
}
