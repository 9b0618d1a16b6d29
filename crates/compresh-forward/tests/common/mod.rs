//! Helpers shared by the forward crate's integration tests.

use std::time::Duration;

use bytes::Bytes;
use compresh_forward::{ForwardError, UnreachableReason};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// Upper bound for anything a test waits on; generous, never a timing assertion.
pub const WAIT: Duration = Duration::from_secs(10);

/// An OpenAI chat-completion request body.
pub fn chat_body(stream: bool) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"gpt-4o-mini","stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    ))
}

/// Reads data frames until exactly `expected.len()` bytes arrived (hyper may split a chunk).
pub async fn read_exactly(body: &mut Incoming, expected: &[u8]) {
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let frame = tokio::time::timeout(WAIT, body.frame())
            .await
            .expect("frame within the wait bound")
            .expect("body not finished")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    assert_eq!(got, expected);
}

/// Asserts that `err` is a 503 `Unreachable` for `reason`, and for `provider` when one is given.
pub fn assert_unreachable(err: &ForwardError, provider: Option<&str>, reason: UnreachableReason) {
    match err {
        ForwardError::Unreachable {
            provider: actual_provider,
            reason: actual_reason,
        } => {
            assert_eq!(*actual_reason, reason, "{err:?}");
            if let Some(provider) = provider {
                assert_eq!(actual_provider, provider, "{err:?}");
            }
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// Asserts that `err` is a 502 `UpstreamFailed` for `provider`.
// Not every test binary that includes this module calls it.
#[allow(dead_code)]
pub fn assert_upstream_failed(err: &ForwardError, provider: &str) {
    assert!(
        matches!(err, ForwardError::UpstreamFailed { provider: actual } if actual == provider),
        "{err:?}"
    );
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}
