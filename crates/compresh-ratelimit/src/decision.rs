//! The result of a check and the response headers derived from it.

use std::fmt;
use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::policy::Policy;

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
///
/// Only [`allowed`](Self::allowed) is computed on the check itself; the other values are derived
/// on demand from the raw GCRA state the decision carries (the policy, the time until the bucket
/// is full and the Unix time of the reading), so a caller that only needs the verdict pays for
/// no divisions.
#[derive(Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    policy: Policy,
    /// `TAT − now`: nanoseconds until the key's bucket is full again.
    reset_after_ns: u64,
    /// Unix time, in nanoseconds, of the clock reading the decision was made at.
    unix_now_nanos: u128,
}

impl Decision {
    /// A decision from GCRA state: whether the request was allowed, the policy it was checked
    /// against, the time until the key's bucket is full again (`TAT − now`, after counting this
    /// request) and the Unix time of the check. For other backends (e.g. Redis) implementing
    /// [`RateLimiter`](crate::RateLimiter).
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    /// use compresh_ratelimit::{Decision, Policy};
    ///
    /// let policy = Policy::per_minute(NonZeroU32::new(2_000).unwrap());
    /// let unix_now = Duration::from_secs(1_700_000_000);
    /// // The first request of a fresh key: one emission interval (30 ms) of debt.
    /// let decision = Decision::new(true, &policy, Duration::from_millis(30), unix_now);
    /// assert_eq!(decision.remaining(), 1_999);
    /// assert_eq!(decision.reset(), 1_700_000_001);
    /// let headers = decision.headers();
    /// assert_eq!(headers[0], ("x-ratelimit-limit", "2000".to_owned()));
    /// assert_eq!(headers[4], ("ratelimit", "\"default\";r=1999;t=1".to_owned()));
    /// assert_eq!(headers.len(), 5);
    /// ```
    pub fn new(allowed: bool, policy: &Policy, reset_after: Duration, unix_now: Duration) -> Self {
        Self::from_nanos(
            allowed,
            policy,
            duration_to_nanos(reset_after),
            unix_now.as_nanos(),
        )
    }

    /// The hot-path constructor: raw nanoseconds, no conversions.
    #[inline]
    pub(crate) fn from_nanos(
        allowed: bool,
        policy: &Policy,
        reset_after_ns: u64,
        unix_now_nanos: u128,
    ) -> Self {
        Self {
            allowed,
            policy: *policy,
            reset_after_ns,
            unix_now_nanos,
        }
    }

    /// The policy's limit per period (what `X-RateLimit-Limit` shows).
    pub fn limit(&self) -> u32 {
        self.policy.limit()
    }

    /// Whole requests available right now, after this one (for [`peek`], including the one a
    /// request would use).
    ///
    /// [`peek`]: crate::KeyedLimiter::peek
    pub fn remaining(&self) -> u32 {
        // How many emission intervals fit between TAT and the full-bucket horizon `now + T ×
        // burst`.
        let available = self
            .policy
            .capacity_ns()
            .saturating_sub(self.reset_after_ns)
            / self.policy.emission_ns();
        u32::try_from(available).unwrap_or(u32::MAX)
    }

    /// Unix seconds (rounded up) when the key's bucket is full again.
    pub fn reset(&self) -> u64 {
        ceil_div_secs(self.unix_now_nanos + u128::from(self.reset_after_ns))
    }

    /// Time until the bucket is full again.
    pub fn reset_after(&self) -> Duration {
        Duration::from_nanos(self.reset_after_ns)
    }

    /// On denial: time until one request is allowed. `None` when allowed.
    pub fn retry_after(&self) -> Option<Duration> {
        // Denied means TAT − now > τ, so this is positive.
        (!self.allowed).then(|| {
            Duration::from_nanos(
                self.reset_after_ns
                    .saturating_sub(self.policy.tolerance_ns()),
            )
        })
    }

    /// The policy's period in whole seconds, rounded up (for `RateLimit-Policy` `w=`).
    pub fn window_secs(&self) -> u64 {
        ceil_secs(self.policy.period())
    }

    /// Header (name, value) pairs for the response, names in lowercase:
    /// `x-ratelimit-limit`, `x-ratelimit-remaining`, `x-ratelimit-reset` (Unix seconds),
    /// `ratelimit-policy` (`"default";q=2000;w=60`), `ratelimit` (`"default";r=1999;t=1`, `t` =
    /// seconds until reset, rounded up) and, only when denied, `retry-after` (whole seconds,
    /// rounded up, at least 1). See [`Decision::new`] for an example.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let limit = self.limit();
        let remaining = self.remaining();
        let mut headers = Vec::with_capacity(6);
        headers.push((X_RATELIMIT_LIMIT, limit.to_string()));
        headers.push((X_RATELIMIT_REMAINING, remaining.to_string()));
        headers.push((X_RATELIMIT_RESET, self.reset().to_string()));
        headers.push((
            RATELIMIT_POLICY,
            format!("\"default\";q={limit};w={}", self.window_secs()),
        ));
        headers.push((
            RATELIMIT,
            format!(
                "\"default\";r={remaining};t={}",
                ceil_secs(self.reset_after())
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
        self.retry_after().map(|after| ceil_secs(after).max(1))
    }
}

impl fmt::Debug for Decision {
    /// Shows the derived values, as a caller sees them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("allowed", &self.allowed)
            .field("limit", &self.limit())
            .field("remaining", &self.remaining())
            .field("reset", &self.reset())
            .field("reset_after", &self.reset_after())
            .field("retry_after", &self.retry_after())
            .field("window_secs", &self.window_secs())
            .finish()
    }
}

/// Unix nanoseconds → whole seconds, rounded up.
#[inline]
pub(crate) fn ceil_div_secs(nanos: u128) -> u64 {
    const NANOS_PER_SEC: u64 = 1_000_000_000;
    // Fast path in u64 (good until 2554); u128 division is a library call.
    match u64::try_from(nanos) {
        Ok(nanos) => nanos.div_ceil(NANOS_PER_SEC),
        Err(_) => u64::try_from(nanos.div_ceil(u128::from(NANOS_PER_SEC))).unwrap_or(u64::MAX),
    }
}

/// Whole seconds in `duration`, rounded up.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    const UNIX_NOW: Duration = Duration::from_secs(1_700_000_000);

    fn policy() -> Policy {
        Policy::per_minute(NonZeroU32::new(2_000).unwrap())
    }

    fn allowed() -> Decision {
        Decision::new(true, &policy(), Duration::from_millis(30), UNIX_NOW)
    }

    fn denied(retry_after: Duration) -> Decision {
        // Denied means TAT − now = τ + retry_after, with τ = 1,999 × 30 ms.
        let tolerance = Duration::from_millis(30 * 1_999);
        Decision::new(false, &policy(), tolerance + retry_after, UNIX_NOW)
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
        assert_eq!(allowed().retry_after(), None);
    }

    #[test]
    fn derived_values() {
        let decision = allowed();
        assert_eq!(decision.limit(), 2_000);
        assert_eq!(decision.remaining(), 1_999);
        assert_eq!(decision.reset(), 1_700_000_001);
        assert_eq!(decision.reset_after(), Duration::from_millis(30));
        assert_eq!(decision.window_secs(), 60);
        assert_eq!(
            format!("{decision:?}"),
            "Decision { allowed: true, limit: 2000, remaining: 1999, reset: 1700000001, \
             reset_after: 30ms, retry_after: None, window_secs: 60 }"
        );
        // A debt larger than the bucket (after a policy downgrade) leaves nothing.
        let over = Decision::new(false, &policy(), Duration::from_secs(90), UNIX_NOW);
        assert_eq!(over.remaining(), 0);
        assert_eq!(over.reset(), 1_700_000_090);
    }

    #[test]
    fn denied_headers_include_retry_after() {
        let denied = denied(Duration::from_millis(30));
        assert_eq!(denied.retry_after(), Some(Duration::from_millis(30)));
        let headers = denied.headers();
        assert_eq!(headers.len(), 6);
        assert_eq!(headers[1], ("x-ratelimit-remaining", "0".to_owned()));
        assert_eq!(headers[2], ("x-ratelimit-reset", "1700000060".to_owned()));
        assert_eq!(headers[4], ("ratelimit", "\"default\";r=0;t=60".to_owned()));
        assert_eq!(headers[5], ("retry-after", "1".to_owned()));
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(denied(Duration::ZERO).retry_after_secs(), Some(1));
        assert_eq!(denied(Duration::from_nanos(1)).retry_after_secs(), Some(1));
        assert_eq!(denied(Duration::from_secs(2)).retry_after_secs(), Some(2));
        assert_eq!(
            denied(Duration::from_millis(2_001)).retry_after_secs(),
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

    #[test]
    fn ceil_div_secs_edges() {
        assert_eq!(ceil_div_secs(0), 0);
        assert_eq!(ceil_div_secs(1), 1);
        assert_eq!(ceil_div_secs(1_000_000_000), 1);
        assert_eq!(ceil_div_secs(1_000_000_001), 2);
        assert_eq!(ceil_div_secs(u128::from(u64::MAX) + 1), 18_446_744_074);
    }
}
