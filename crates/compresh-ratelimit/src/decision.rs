//! The result of a check and the response headers derived from it.

use std::time::Duration;

/// `X-RateLimit-Limit` (lowercase, as [`http::HeaderName`] stores names).
///
/// [`http::HeaderName`]: https://docs.rs/http/1/http/header/struct.HeaderName.html
pub const X_RATELIMIT_LIMIT: &str = "x-ratelimit-limit";
/// `X-RateLimit-Remaining`.
pub const X_RATELIMIT_REMAINING: &str = "x-ratelimit-remaining";
/// `X-RateLimit-Reset` (Unix seconds).
pub const X_RATELIMIT_RESET: &str = "x-ratelimit-reset";
/// `RateLimit-Policy` (IETF draft `httpapi-ratelimit-headers`).
pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
/// `RateLimit` (IETF draft `httpapi-ratelimit-headers`).
pub const RATELIMIT: &str = "ratelimit";
/// `Retry-After` (seconds).
pub const RETRY_AFTER: &str = "retry-after";

/// The outcome of one check: whether the request may proceed, and the values for its headers.
///
/// A denial is a value, not an error: the caller answers 429 with [`Decision::headers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The policy's limit per period (what `X-RateLimit-Limit` shows).
    pub limit: u32,
    /// Whole requests available right now, after this one.
    pub remaining: u32,
    /// Unix seconds (rounded up) when the key's bucket is full again.
    pub reset: u64,
    /// Time until the bucket is full again.
    pub reset_after: Duration,
    /// On denial: time until one request is allowed. `None` when allowed.
    pub retry_after: Option<Duration>,
    /// The policy's period in whole seconds, rounded up (for `RateLimit-Policy` `w=`).
    pub window_secs: u64,
}

impl Decision {
    /// Header (name, value) pairs for the response, names in lowercase:
    /// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (Unix seconds),
    /// `ratelimit-policy` (`"default";q=2000;w=60`), `ratelimit` (`"default";r=1999;t=1`, `t` =
    /// seconds until reset, rounded up) and, only when denied, `retry-after` (whole seconds,
    /// rounded up, at least 1).
    ///
    /// ```
    /// use std::time::Duration;
    /// use compresh_ratelimit::Decision;
    ///
    /// let decision = Decision {
    ///     allowed: true,
    ///     limit: 2000,
    ///     remaining: 1999,
    ///     reset: 1_700_000_001,
    ///     reset_after: Duration::from_millis(30),
    ///     retry_after: None,
    ///     window_secs: 60,
    /// };
    /// let headers = decision.headers();
    /// assert_eq!(headers[0], ("x-ratelimit-limit", "2000".to_owned()));
    /// assert_eq!(headers[4], ("ratelimit", "\"default\";r=1999;t=1".to_owned()));
    /// assert_eq!(headers.len(), 5);
    /// ```
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(6);
        headers.push((X_RATELIMIT_LIMIT, self.limit.to_string()));
        headers.push((X_RATELIMIT_REMAINING, self.remaining.to_string()));
        headers.push((X_RATELIMIT_RESET, self.reset.to_string()));
        headers.push((
            RATELIMIT_POLICY,
            format!("\"default\";q={};w={}", self.limit, self.window_secs),
        ));
        headers.push((
            RATELIMIT,
            format!(
                "\"default\";r={};t={}",
                self.remaining,
                ceil_secs(self.reset_after)
            ),
        ));
        if let Some(secs) = self.retry_after_secs() {
            headers.push((RETRY_AFTER, secs.to_string()));
        }
        headers
    }

    /// The `Retry-After` value: whole seconds until one request is allowed, rounded up and at
    /// least 1; `None` when the request was allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|after| ceil_secs(after).max(1))
    }
}

/// Whole seconds in `duration`, rounded up.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Decision {
        Decision {
            allowed: true,
            limit: 2000,
            remaining: 1999,
            reset: 1_700_000_001,
            reset_after: Duration::from_millis(30),
            retry_after: None,
            window_secs: 60,
        }
    }

    #[test]
    fn allowed_headers_exact() {
        assert_eq!(
            allowed().headers(),
            vec![
                ("x-ratelimit-limit", "2000".to_owned()),
                ("x-ratelimit-remaining", "1999".to_owned()),
                ("x-ratelimit-reset", "1700000001".to_owned()),
                ("ratelimit-policy", "\"default\";q=2000;w=60".to_owned()),
                ("ratelimit", "\"default\";r=1999;t=1".to_owned()),
            ]
        );
        assert_eq!(allowed().retry_after_secs(), None);
    }

    #[test]
    fn denied_headers_include_retry_after() {
        let denied = Decision {
            allowed: false,
            remaining: 0,
            reset_after: Duration::from_secs(60),
            retry_after: Some(Duration::from_millis(30)),
            reset: 1_700_000_060,
            ..allowed()
        };
        let headers = denied.headers();
        assert_eq!(headers.len(), 6);
        assert_eq!(headers[1], ("x-ratelimit-remaining", "0".to_owned()));
        assert_eq!(headers[4], ("ratelimit", "\"default\";r=0;t=60".to_owned()));
        assert_eq!(headers[5], ("retry-after", "1".to_owned()));
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        let with = |after: Duration| Decision {
            allowed: false,
            retry_after: Some(after),
            ..allowed()
        };
        assert_eq!(with(Duration::ZERO).retry_after_secs(), Some(1));
        assert_eq!(with(Duration::from_nanos(1)).retry_after_secs(), Some(1));
        assert_eq!(with(Duration::from_secs(2)).retry_after_secs(), Some(2));
        assert_eq!(
            with(Duration::from_millis(2_001)).retry_after_secs(),
            Some(3)
        );
    }

    #[test]
    fn ceil_secs_edges() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(1)), 1);
        assert_eq!(ceil_secs(Duration::new(1, 1)), 2);
    }
}
