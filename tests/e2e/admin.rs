//! The admin API (`/admin/v1/...`), `GET /v1/usage` and key rotation with a grace period, end to
//! end: every operation through HTTP, and its effect on the proxy path.

use std::time::Duration;

use bytes::Bytes;
use compresh::admin::AdminToken;
use compresh::gateway::{unix_now, GatewayConfig};
use compresh_e2e::{
    assert_error, assert_not_found, assert_status, eventually_async, Reply, TestGateway,
    OPENAI_SECRET,
};
use compresh_keys::KeyId;
use compresh_store::UsageRecord;
use http::{Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "test-admin-token-0123456789abcdef";
const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

async fn start() -> TestGateway {
    TestGateway::start_with(GatewayConfig {
        admin_token: Some(AdminToken::new(TOKEN).expect("token")),
        ..GatewayConfig::default()
    })
    .await
}

async fn admin(gw: &TestGateway, method: Method, path: &str, body: Option<Value>) -> Reply {
    let auth = format!("Bearer {TOKEN}");
    let body = body.map_or_else(Bytes::new, |body| Bytes::from(body.to_string()));
    gw.send(
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
}

fn contains(reply: &Reply, needle: &str) -> bool {
    reply
        .body
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn admin_api_is_404_when_no_token_is_configured() {
    let gw = TestGateway::start().await;
    for path in ["/admin/v1/accounts", "/admin", "/admin/v1/nope"] {
        let reply = admin(&gw, Method::GET, path, None).await;
        assert_not_found(&reply);
    }
}

#[tokio::test]
async fn admin_api_needs_the_admin_token() {
    let gw = start().await;
    let missing = gw
        .send(Method::GET, "/admin/v1/accounts", &[], Bytes::new())
        .await;
    assert_error(
        &missing,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "missing_admin_token",
    );

    let comp_key = format!("Bearer {}", gw.api_key);
    let wrong_token = format!("Bearer {TOKEN}x");
    let basic = "Basic YWRtaW46YWRtaW4=".to_owned();
    for auth in [
        wrong_token.as_str(),
        comp_key.as_str(),
        basic.as_str(),
        "Bearer ",
    ] {
        // Unknown routes too: nothing about the API is revealed without the token.
        for path in ["/admin/v1/accounts", "/admin/v1/no-such-route"] {
            let reply = gw
                .send(Method::GET, path, &[("authorization", auth)], Bytes::new())
                .await;
            assert_error(
                &reply,
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_admin_token",
            );
            assert!(!contains(&reply, TOKEN));
        }
    }
    // The token is for the admin API only, not a key for the proxy.
    let reply = gw
        .send(
            Method::POST,
            "/v1/chat/completions",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            CHAT.to_owned(),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
    );

    let ok = admin(&gw, Method::GET, "/admin/v1/accounts", None).await;
    assert_status(&ok, StatusCode::OK);
    let unknown = admin(&gw, Method::GET, "/admin/v1/no-such-route", None).await;
    assert_not_found(&unknown);
    let wrong_method = admin(&gw, Method::DELETE, "/admin/v1/accounts", None).await;
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
    );
    assert!(
        gw.mock.requests().is_empty(),
        "nothing may reach the provider"
    );
}

#[tokio::test]
async fn accounts_and_providers_through_the_api_drive_the_proxy() {
    let gw = start().await;
    let created = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts",
        Some(json!({"name": "acme", "plan": "pro"})),
    )
    .await;
    assert_status(&created, StatusCode::CREATED);
    assert_eq!(created.json()["name"], "acme");
    assert_eq!(created.json()["plan"], "pro");
    assert_eq!(created.json()["active"], true);

    let again = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts",
        Some(json!({"name": "acme"})),
    )
    .await;
    assert_error(
        &again,
        StatusCode::CONFLICT,
        "invalid_request_error",
        "already_exists",
    );
    let bad_plan = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts",
        Some(json!({"name": "other", "plan": "gold"})),
    )
    .await;
    assert_error(
        &bad_plan,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    let bad_json = gw
        .send(
            Method::POST,
            "/admin/v1/accounts",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            "{nope",
        )
        .await;
    assert_error(
        &bad_json,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_json",
    );

    let list = admin(&gw, Method::GET, "/admin/v1/accounts", None).await;
    assert_status(&list, StatusCode::OK);
    let names: Vec<String> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["default", "acme"]);

    // A key and a provider for the new account, both through the API.
    let key = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts/acme/keys",
        Some(json!({})),
    )
    .await;
    assert_status(&key, StatusCode::CREATED);
    let acme_key = key.json()["key"].as_str().unwrap().to_owned();
    let acme_secret = "sk-acme-provider-secret-via-admin-api-42";
    let set = admin(
        &gw,
        Method::PUT,
        "/admin/v1/accounts/acme/providers/openai",
        Some(json!({"kind": "openai", "base_url": gw.mock.openai_base_url(), "api_key": acme_secret})),
    )
    .await;
    assert_status(&set, StatusCode::OK);
    assert_eq!(set.json()["name"], "openai");
    assert_eq!(set.json()["key_hint"], "…i-42");
    assert!(!contains(&set, acme_secret));

    let chat = gw.chat(&acme_key, CHAT).await;
    assert_status(&chat, StatusCode::OK);
    let seen = gw.mock.last_request().unwrap();
    assert_eq!(
        seen.headers.get("authorization").unwrap(),
        &format!("Bearer {acme_secret}"),
        "the provider key set through the API is the one used"
    );

    let listed = admin(&gw, Method::GET, "/admin/v1/accounts/acme/providers", None).await;
    assert_status(&listed, StatusCode::OK);
    assert_eq!(listed.json()["data"][0]["kind"], "openai");
    assert!(!contains(&listed, acme_secret));
    assert!(listed.json()["data"][0].get("ciphertext").is_none());
    let default_listed = admin(
        &gw,
        Method::GET,
        "/admin/v1/accounts/default/providers",
        None,
    )
    .await;
    assert!(!contains(&default_listed, OPENAI_SECRET));

    // Bad provider input: 400, and the error never echoes the body's secret.
    let bad_kind = admin(
        &gw,
        Method::PUT,
        "/admin/v1/accounts/acme/providers/x",
        Some(json!({"kind": "gopher", "api_key": acme_secret})),
    )
    .await;
    assert_error(
        &bad_kind,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    let bad_shape = admin(
        &gw,
        Method::PUT,
        "/admin/v1/accounts/acme/providers/openai",
        Some(json!({"api_key": acme_secret, "kind": 5, "extra": acme_secret})),
    )
    .await;
    assert_error(
        &bad_shape,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_json",
    );
    assert!(!contains(&bad_shape, acme_secret));
    let no_account = admin(
        &gw,
        Method::PUT,
        "/admin/v1/accounts/ghost/providers/openai",
        Some(json!({"api_key": acme_secret})),
    )
    .await;
    assert_not_found(&no_account);

    // Deactivate / activate.
    let off = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts/acme/deactivate",
        None,
    )
    .await;
    assert_status(&off, StatusCode::OK);
    assert_eq!(off.json()["active"], false);
    let chat = gw.chat(&acme_key, CHAT).await;
    assert_error(
        &chat,
        StatusCode::FORBIDDEN,
        "permission_error",
        "account_deactivated",
    );
    let on = admin(&gw, Method::POST, "/admin/v1/accounts/acme/activate", None).await;
    assert_eq!(on.json()["active"], true);
    assert_status(&gw.chat(&acme_key, CHAT).await, StatusCode::OK);
    let ghost = admin(&gw, Method::POST, "/admin/v1/accounts/ghost/activate", None).await;
    assert_not_found(&ghost);

    // Remove the provider: the account's keys can no longer use it.
    let removed = admin(
        &gw,
        Method::DELETE,
        "/admin/v1/accounts/acme/providers/openai",
        None,
    )
    .await;
    assert_status(&removed, StatusCode::OK);
    let chat = gw.chat(&acme_key, CHAT).await;
    assert_error(
        &chat,
        StatusCode::FORBIDDEN,
        "permission_error",
        "provider_not_configured",
    );
    let again = admin(
        &gw,
        Method::DELETE,
        "/admin/v1/accounts/acme/providers/openai",
        None,
    )
    .await;
    assert_not_found(&again);
}

#[tokio::test]
async fn keys_through_the_api_drive_the_proxy() {
    let gw = start().await;
    let created = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts/default/keys",
        Some(json!({"name": "ci", "environment": "staging", "allowed_models": ["gpt-4o*"]})),
    )
    .await;
    assert_status(&created, StatusCode::CREATED);
    let json = created.json();
    let key = json["key"].as_str().unwrap().to_owned();
    let id = json["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("comp_"));
    assert_eq!(json["name"], "ci");
    assert_eq!(json["environment"], "staging");
    assert_eq!(json["status"], "active");
    assert!(json.get("hash").is_none());
    assert_status(&gw.chat(&key, CHAT).await, StatusCode::OK);
    let other_model = gw.chat(&key, r#"{"model":"o1","messages":[]}"#).await;
    assert_error(
        &other_model,
        StatusCode::FORBIDDEN,
        "permission_error",
        "model_not_allowed",
    );

    // Listed with its hint, never with the key.
    let list = admin(&gw, Method::GET, "/admin/v1/accounts/default/keys", None).await;
    assert_status(&list, StatusCode::OK);
    let listed = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .expect("new key listed");
    assert_eq!(listed["hint"], json["hint"]);
    assert!(!contains(&list, &key));
    assert!(!contains(&list, &gw.api_key));

    // rpm: 1 per minute, then back to the plan's rate.
    let rpm = admin(
        &gw,
        Method::PUT,
        &format!("/admin/v1/keys/{id}/rpm"),
        Some(json!({"rpm": 1})),
    )
    .await;
    assert_status(&rpm, StatusCode::OK);
    assert_eq!(rpm.json()["rpm"], 1);
    let limited = gw.chat(&key, CHAT).await;
    assert_error(
        &limited,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limit_error",
        "rate_limit_exceeded",
    );
    assert_eq!(limited.header("x-ratelimit-limit"), Some("1"));
    let cleared = admin(
        &gw,
        Method::PUT,
        &format!("/admin/v1/keys/{id}/rpm"),
        Some(json!({"rpm": null})),
    )
    .await;
    assert_eq!(cleared.json()["rpm"], Value::Null);
    assert_status(&gw.chat(&key, CHAT).await, StatusCode::OK);
    let zero = admin(
        &gw,
        Method::PUT,
        &format!("/admin/v1/keys/{id}/rpm"),
        Some(json!({"rpm": 0})),
    )
    .await;
    assert_error(
        &zero,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    let empty = admin(&gw, Method::PUT, &format!("/admin/v1/keys/{id}/rpm"), None).await;
    assert_error(
        &empty,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_json",
    );

    // Revoke.
    let revoked = admin(
        &gw,
        Method::POST,
        &format!("/admin/v1/keys/{id}/revoke"),
        None,
    )
    .await;
    assert_status(&revoked, StatusCode::OK);
    assert_eq!(revoked.json()["status"], "revoked");
    let chat = gw.chat(&key, CHAT).await;
    assert_error(
        &chat,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "revoked_api_key",
    );
    assert_status(&gw.chat(&gw.api_key, CHAT).await, StatusCode::OK);

    // Unknown and malformed ids, unknown accounts.
    let unknown = KeyId::generate();
    let reply = admin(
        &gw,
        Method::POST,
        &format!("/admin/v1/keys/{unknown}/revoke"),
        None,
    )
    .await;
    assert_not_found(&reply);
    let reply = admin(&gw, Method::POST, "/admin/v1/keys/not-a-key/revoke", None).await;
    assert_error(
        &reply,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    let reply = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts/ghost/keys",
        Some(json!({})),
    )
    .await;
    assert_not_found(&reply);
    let reply = admin(&gw, Method::GET, "/admin/v1/accounts/ghost/keys", None).await;
    assert_not_found(&reply);
}

#[tokio::test]
async fn rotation_through_the_api_keeps_the_old_key_for_the_grace_period() {
    let gw = start().await;
    let created = admin(
        &gw,
        Method::POST,
        "/admin/v1/accounts/default/keys",
        Some(json!({"name": "rotating", "rpm": 50, "allowed_providers": ["openai"]})),
    )
    .await;
    let old_key = created.json()["key"].as_str().unwrap().to_owned();
    let old_id = created.json()["id"].as_str().unwrap().to_owned();

    let before = unix_now();
    let rotated = admin(
        &gw,
        Method::POST,
        &format!("/admin/v1/keys/{old_id}/rotate"),
        Some(json!({"grace_secs": 3})),
    )
    .await;
    assert_status(&rotated, StatusCode::CREATED);
    let json = rotated.json();
    let new_key = json["key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert_ne!(json["id"], old_id.as_str());
    assert_eq!(json["replaces"], old_id.as_str());
    assert_eq!(json["name"], "rotating", "settings carry over");
    assert_eq!(json["rpm"], 50);
    assert_eq!(json["allowed_providers"], json!(["openai"]));
    let expires = json["old_key_expires_at"].as_i64().unwrap();
    assert!(
        (before + 3..=unix_now() + 3).contains(&expires),
        "{expires}"
    );

    // Both work right after the rotation; the old one is listed as expiring, pointing at the new.
    assert_status(&gw.chat(&new_key, CHAT).await, StatusCode::OK);
    let old_works = gw.chat(&old_key, CHAT).await;
    assert!(
        old_works.status == StatusCode::OK || unix_now() >= expires,
        "old key refused inside its grace period: {}",
        String::from_utf8_lossy(&old_works.body)
    );
    let list = admin(&gw, Method::GET, "/admin/v1/accounts/default/keys", None).await;
    let old = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == old_id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(old["replaced_by"], json["id"]);

    // After the grace period: 401 expired_api_key for the old key, the new key keeps working.
    eventually_async("old key expires", Duration::from_secs(15), || async {
        gw.chat(&old_key, CHAT).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    let expired = gw.chat(&old_key, CHAT).await;
    assert_error(
        &expired,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "expired_api_key",
    );
    assert_status(&gw.chat(&new_key, CHAT).await, StatusCode::OK);

    // An expired key cannot be rotated again; the default grace is 24 h.
    let again = admin(
        &gw,
        Method::POST,
        &format!("/admin/v1/keys/{old_id}/rotate"),
        None,
    )
    .await;
    assert_error(
        &again,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    let new_id = json["id"].as_str().unwrap();
    let before = unix_now();
    let default_grace = admin(
        &gw,
        Method::POST,
        &format!("/admin/v1/keys/{new_id}/rotate"),
        None,
    )
    .await;
    assert_status(&default_grace, StatusCode::CREATED);
    let expires = default_grace.json()["old_key_expires_at"].as_i64().unwrap();
    assert!(
        (before + 86_400..=unix_now() + 86_400).contains(&expires),
        "{expires}"
    );
}

#[tokio::test]
async fn master_key_rotation_through_the_api_keeps_requests_working() {
    let gw = start().await;
    assert_status(&gw.chat(&gw.api_key, CHAT).await, StatusCode::OK);
    let rotated = admin(&gw, Method::POST, "/admin/v1/master-key/rotate", None).await;
    assert_status(&rotated, StatusCode::OK);
    let report = rotated.json();
    assert_eq!(report["new_version"], 2);
    assert_eq!(report["rewrapped"], 2, "openai and anthropic re-encrypted");
    assert_eq!(report["retired"], json!([1]));
    for provider in gw.data.store.all_providers().unwrap() {
        assert_eq!(provider.key_version, 2);
    }
    let chat = gw.chat(&gw.api_key, CHAT).await;
    assert_status(&chat, StatusCode::OK);
    assert_eq!(
        gw.mock
            .last_request()
            .unwrap()
            .headers
            .get("authorization")
            .unwrap(),
        &format!("Bearer {OPENAI_SECRET}")
    );
    assert!(!contains(&rotated, OPENAI_SECRET));
}

/// 2024-03-01 12:00 UTC and the next day: days no live request falls on, so rows recorded by the
/// gateway itself during the test cannot change these numbers.
const MARCH_1: i64 = 1_709_294_400;
const MARCH_2: i64 = MARCH_1 + 86_400;

fn usage_row(
    at: i64,
    key_id: &str,
    account_id: i64,
    status: u16,
    tokens: (u64, u64),
) -> UsageRecord {
    UsageRecord {
        at,
        key_id: key_id.parse().unwrap(),
        account_id,
        provider: "openai".to_owned(),
        model: Some("gpt-4o-mini".to_owned()),
        status,
        latency_ms: 12,
        input_tokens: Some(tokens.0),
        output_tokens: Some(tokens.1),
        rate_limited: status == 429,
    }
}

#[tokio::test]
async fn usage_by_admin_and_by_the_key_holder() {
    let gw = start().await;
    let (key, key_id) = gw.create_key(Some(2));
    let (_, other_id) = gw.create_key(None);
    let account_id = gw.data.store.account_by_name("default").unwrap().id;
    gw.data
        .store
        .record_usage(&[
            usage_row(MARCH_1, &key_id, account_id, 200, (10, 5)),
            usage_row(MARCH_1 + 60, &key_id, account_id, 500, (0, 0)),
            usage_row(MARCH_1 + 120, &key_id, account_id, 429, (0, 0)),
            usage_row(MARCH_2, &key_id, account_id, 200, (7, 3)),
            usage_row(MARCH_1, &other_id, account_id, 200, (100, 50)),
        ])
        .unwrap();

    // Admin: by key and day range.
    let reply = admin(
        &gw,
        Method::GET,
        &format!("/admin/v1/usage?key_id={key_id}&from=2024-03-01&to=2024-03-01"),
        None,
    )
    .await;
    assert_status(&reply, StatusCode::OK);
    let rows = reply.json()["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["day"], "2024-03-01");
    assert_eq!(rows[0]["requests"], 3);
    assert_eq!(rows[0]["errors"], 1);
    assert_eq!(rows[0]["rate_limited"], 1);
    assert_eq!(rows[0]["input_tokens"], 10);
    assert_eq!(rows[0]["output_tokens"], 5);
    // By account: both keys, both days.
    let reply = admin(
        &gw,
        Method::GET,
        "/admin/v1/usage?account=default&from=2024-03-01&to=2024-03-02",
        None,
    )
    .await;
    let rows = reply.json()["data"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|row| row["account_id"] == account_id));
    // Bad input.
    for (query, status, code) in [
        ("from=2024-3-01", StatusCode::BAD_REQUEST, "invalid_request"),
        (
            "form=2024-03-01",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        ("account=ghost", StatusCode::NOT_FOUND, "not_found"),
        ("key_id=nope", StatusCode::BAD_REQUEST, "invalid_request"),
    ] {
        let reply = admin(&gw, Method::GET, &format!("/admin/v1/usage?{query}"), None).await;
        assert_error(&reply, status, "invalid_request_error", code);
    }

    // The key holder: only its own key, with its plan and limit; reading does not use the limit.
    let auth = format!("Bearer {key}");
    for _ in 0..3 {
        let reply = gw
            .send(
                Method::GET,
                "/v1/usage?from=2024-03-01&to=2024-03-02",
                &[("authorization", &auth)],
                Bytes::new(),
            )
            .await;
        assert_status(&reply, StatusCode::OK);
        let json = reply.json();
        assert_eq!(json["key_id"], key_id.as_str());
        assert_eq!(json["account"], "default");
        assert_eq!(json["plan"], "free");
        assert_eq!(json["rate_limit"]["limit"], 2);
        assert_eq!(json["rate_limit"]["period_secs"], 60);
        assert_eq!(json["rate_limit"]["source"], "key");
        assert_eq!(json["rate_limit"]["remaining"], 2);
        assert_eq!(json["total"]["requests"], 4);
        assert_eq!(json["total"]["input_tokens"], 17);
        let days: Vec<&str> = json["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["day"].as_str().unwrap())
            .collect();
        assert_eq!(days, ["2024-03-01", "2024-03-02"]);
        assert!(!contains(&reply, &other_id));
        assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
        assert_eq!(reply.header("x-ratelimit-remaining"), Some("2"));
        assert!(reply.header("x-compresh-session-id").is_some());
    }
    // Both requests of the minute are still there after three usage reads.
    assert_status(&gw.chat(&key, CHAT).await, StatusCode::OK);
    assert_status(&gw.chat(&key, CHAT).await, StatusCode::OK);
    assert_eq!(
        gw.chat(&key, CHAT).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // When exhausted, the usage read still answers and shows it.
    let reply = gw
        .send(
            Method::GET,
            "/v1/usage?from=2024-03-02&to=2024-03-02",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_status(&reply, StatusCode::OK);
    assert_eq!(reply.json()["rate_limit"]["remaining"], 0);
    assert_eq!(reply.json()["data"].as_array().unwrap().len(), 1);

    let missing = gw.send(Method::GET, "/v1/usage", &[], Bytes::new()).await;
    assert_error(
        &missing,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "missing_api_key",
    );
    let admin_token = gw
        .send(
            Method::GET,
            "/v1/usage",
            &[("authorization", &format!("Bearer {TOKEN}"))],
            Bytes::new(),
        )
        .await;
    assert_error(
        &admin_token,
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "invalid_api_key",
    );
    let bad = gw
        .send(
            Method::GET,
            "/v1/usage?key_id=x",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
    assert_error(
        &bad,
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "invalid_request",
    );
    assert!(
        gw.mock
            .requests()
            .iter()
            .all(|r| !r.path_and_query.contains("usage")),
        "usage reads are answered by the gateway, never forwarded"
    );
}
