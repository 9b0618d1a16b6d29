//! Session tokens, their CSRF tokens and the cookies that carry them.
//!
//! The browser holds a random 256-bit token; the store holds only its SHA-256. Each session's
//! CSRF token is derived from the session token (so pages can embed it without the store keeping
//! anything reversible), and the store keeps the CSRF token's SHA-256 to check submitted forms.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The session cookie.
pub const SESSION_COOKIE: &str = "compresh_session";
/// Cookie holding the CSRF token of the logged-out forms (login, sign-up).
pub const LOGIN_CSRF_COOKIE: &str = "compresh_login_csrf";

/// A fresh random token: 32 bytes, base64url without padding.
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Hex SHA-256, the form in which tokens are stored.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The CSRF token of the session whose cookie token is `session_token`.
pub fn csrf_for(session_token: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"compresh-dashboard-csrf-v1\0");
    hasher.update(session_token.as_bytes());
    URL_SAFE_NO_PAD.encode(hasher.finalize())
}

/// Constant-time check of a submitted CSRF token against the stored hash.
pub fn csrf_matches(submitted: Option<&str>, stored_hash: &str) -> bool {
    let Some(submitted) = submitted.filter(|token| !token.is_empty()) else {
        return false;
    };
    token_hash(submitted)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Constant-time equality of two tokens (the double-submitted login CSRF token).
pub fn tokens_equal(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) if !a.is_empty() => a.as_bytes().ct_eq(b.as_bytes()).into(),
        _ => false,
    }
}

/// True if the browser reached us over HTTPS (directly or through a proxy that says so); the
/// cookie then gets `Secure`.
pub fn is_https(uri: &http::Uri, headers: &HeaderMap) -> bool {
    uri.scheme_str() == Some("https")
        || headers
            .get("x-forwarded-proto")
            .and_then(|value| value.to_str().ok())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_stored_hashed() {
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token());
        let hash = token_hash(&token);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&token));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn csrf_tokens_are_per_session_and_checked() {
        let session = random_token();
        let csrf = csrf_for(&session);
        let stored = token_hash(&csrf);
        assert!(csrf_matches(Some(&csrf), &stored));
        assert!(!csrf_matches(None, &stored));
        assert!(!csrf_matches(Some(""), &stored));
        assert!(!csrf_matches(Some(&csrf_for(&random_token())), &stored));
        assert!(!csrf_matches(Some(&session), &stored));
        assert!(tokens_equal(Some("x1"), Some("x1")));
        assert!(!tokens_equal(Some("x1"), Some("x2")));
        assert!(!tokens_equal(Some(""), Some("")));
        assert!(!tokens_equal(None, Some("x")));
    }

    #[test]
    fn cookies_are_strict_http_only_and_secure_behind_tls() {
        let cookie = set_cookie(SESSION_COOKIE, "t", 60, false);
        assert_eq!(
            cookie,
            "compresh_session=t; Path=/; HttpOnly; SameSite=Strict; Max-Age=60"
        );
        assert!(set_cookie(SESSION_COOKIE, "t", 60, true).ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        let uri: http::Uri = "/dashboard".parse().unwrap();
        assert!(!is_https(&uri, &headers));
        headers.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(is_https(&uri, &headers));
        assert!(is_https(&"https://h/".parse().unwrap(), &HeaderMap::new()));
    }
}
