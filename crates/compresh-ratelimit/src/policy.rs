//! Policies (`limit` per `period` with a `burst`) and named plan tiers.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use crate::RateLimitError;

/// Compresh's default: 2,000 requests per minute.
pub const DEFAULT_REQUESTS_PER_MINUTE: NonZeroU32 = match NonZeroU32::new(2_000) {
    Some(limit) => limit,
    None => panic!("2,000 is not zero"),
};

const MINUTE_NANOS: u64 = 60_000_000_000;

/// `limit` requests per `period`, of which up to `burst` may arrive at one instant.
///
/// Requests are spaced by the emission interval `T = period / limit`, in whole nanoseconds
/// (rounded down, so a policy never allows fewer than `limit` per `period`). The default burst is
/// `limit`: a fresh key may spend a whole period's allowance at once, then one more every `T`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    limit: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
    /// `period / limit` in nanoseconds; at least 1 by construction.
    emission_ns: u64,
}

impl Policy {
    /// `limit` requests per `period`, burst = `limit`.
    ///
    /// # Errors
    ///
    /// [`RateLimitError::InvalidPolicy`] if `period` is zero, shorter than `limit` nanoseconds
    /// (the emission interval would round to zero), or longer than `u64::MAX` nanoseconds.
    pub fn new(limit: NonZeroU32, period: Duration) -> Result<Policy, RateLimitError> {
        let period_ns = period.as_nanos();
        if period_ns == 0 {
            return Err(RateLimitError::InvalidPolicy(
                "period must be greater than zero",
            ));
        }
        let Ok(period_ns) = u64::try_from(period_ns) else {
            return Err(RateLimitError::InvalidPolicy(
                "period must be at most u64::MAX nanoseconds (about 584 years)",
            ));
        };
        if period_ns < u64::from(limit.get()) {
            return Err(RateLimitError::InvalidPolicy(
                "period must be at least `limit` nanoseconds",
            ));
        }
        Ok(Policy {
            limit,
            period,
            burst: limit,
            emission_ns: period_ns / u64::from(limit.get()),
        })
    }

    /// `limit` requests per minute, burst = `limit`.
    pub fn per_minute(limit: NonZeroU32) -> Policy {
        // A minute is 6e10 ns > u32::MAX, so every limit satisfies `new`'s checks.
        Policy {
            limit,
            period: Duration::from_secs(60),
            burst: limit,
            emission_ns: MINUTE_NANOS / u64::from(limit.get()),
        }
    }

    /// The same rate with a different burst (requests allowed at one instant on a fresh key).
    pub fn with_burst(self, burst: NonZeroU32) -> Policy {
        Policy { burst, ..self }
    }

    /// Requests per period (what `X-RateLimit-Limit` shows).
    pub fn limit(&self) -> u32 {
        self.limit.get()
    }

    /// The period `limit` applies to.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Requests allowed at one instant on a fresh key.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// The emission interval `T = period / limit` (whole nanoseconds, rounded down).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_ns)
    }

    /// `T` in nanoseconds (never zero).
    #[inline]
    pub(crate) fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    /// GCRA tolerance `τ = T × (burst − 1)` in nanoseconds.
    #[inline]
    pub(crate) fn tolerance_ns(&self) -> u64 {
        self.emission_ns
            .saturating_mul(u64::from(self.burst.get() - 1))
    }

    /// `T × burst`: the time a full bucket represents.
    #[inline]
    pub(crate) fn capacity_ns(&self) -> u64 {
        self.emission_ns.saturating_mul(u64::from(self.burst.get()))
    }
}

impl Default for Policy {
    /// 2,000 requests per minute.
    fn default() -> Self {
        Policy::per_minute(DEFAULT_REQUESTS_PER_MINUTE)
    }
}

/// Named plans mapped to policies. Unknown plans get the default policy.
///
/// ```
/// use std::num::NonZeroU32;
/// use compresh_ratelimit::{Policy, Tiers};
///
/// let tiers = Tiers::default()
///     .with_plan("enterprise", Policy::per_minute(NonZeroU32::new(10_000).unwrap()));
/// assert_eq!(tiers.policy_for("enterprise", None).limit(), 10_000);
/// assert_eq!(tiers.policy_for("no-such-plan", None).limit(), 2_000);
/// // A per-account override (requests per minute) wins over the plan.
/// assert_eq!(tiers.policy_for("free", NonZeroU32::new(50)).limit(), 50);
/// ```
#[derive(Clone, Debug)]
pub struct Tiers {
    default: Policy,
    plans: HashMap<String, Policy>,
}

impl Tiers {
    /// No named plans; every plan gets `default`.
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            plans: HashMap::new(),
        }
    }

    /// Adds (or replaces) the plan `name` (matched exactly, case-sensitively).
    pub fn with_plan(mut self, name: &str, policy: Policy) -> Self {
        self.plans.insert(name.to_owned(), policy);
        self
    }

    /// The policy for `plan`; `rpm_override` (that many requests per minute, burst the same)
    /// takes precedence; an unknown plan gets the default policy.
    pub fn policy_for(&self, plan: &str, rpm_override: Option<NonZeroU32>) -> Policy {
        if let Some(rpm) = rpm_override {
            return Policy::per_minute(rpm);
        }
        self.plans.get(plan).copied().unwrap_or(self.default)
    }

    /// The policy for unknown plans.
    pub fn default_policy(&self) -> Policy {
        self.default
    }
}

impl Default for Tiers {
    /// Plans `free` and `pro` and the default policy: 2,000 requests per minute.
    fn default() -> Self {
        let policy = Policy::default();
        Tiers::new(policy)
            .with_plan("free", policy)
            .with_plan("pro", policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn per_minute_2000_is_30ms_and_burst_defaults_to_limit() {
        let policy = Policy::per_minute(nz(2_000));
        assert_eq!(policy.limit(), 2_000);
        assert_eq!(policy.burst(), 2_000);
        assert_eq!(policy.period(), Duration::from_secs(60));
        assert_eq!(policy.emission_interval(), Duration::from_millis(30));
        assert_eq!(policy.tolerance_ns(), 30_000_000 * 1_999);
        assert_eq!(policy, Policy::default());
        assert_eq!(
            Policy::new(nz(2_000), Duration::from_secs(60)).unwrap(),
            policy
        );
    }

    #[test]
    fn with_burst_changes_only_the_burst() {
        let policy = Policy::per_minute(nz(60)).with_burst(nz(5));
        assert_eq!(policy.burst(), 5);
        assert_eq!(policy.limit(), 60);
        assert_eq!(policy.emission_interval(), Duration::from_secs(1));
        assert_eq!(policy.tolerance_ns(), 4_000_000_000);
        assert_eq!(policy.capacity_ns(), 5_000_000_000);
    }

    #[test]
    fn emission_interval_rounds_down() {
        let policy = Policy::new(nz(3), Duration::from_nanos(10)).unwrap();
        assert_eq!(policy.emission_interval(), Duration::from_nanos(3));
    }

    #[test]
    fn invalid_policies_are_rejected() {
        assert_eq!(
            Policy::new(nz(1), Duration::ZERO).unwrap_err(),
            RateLimitError::InvalidPolicy("period must be greater than zero")
        );
        assert!(matches!(
            Policy::new(nz(11), Duration::from_nanos(10)),
            Err(RateLimitError::InvalidPolicy(_))
        ));
        assert!(matches!(
            Policy::new(nz(1), Duration::MAX),
            Err(RateLimitError::InvalidPolicy(_))
        ));
        // The boundary itself is valid: T = 1 ns.
        let edge = Policy::new(nz(10), Duration::from_nanos(10)).unwrap();
        assert_eq!(edge.emission_interval(), Duration::from_nanos(1));
        let message = Policy::new(nz(1), Duration::ZERO).unwrap_err().to_string();
        assert_eq!(
            message,
            "invalid rate-limit policy: period must be greater than zero"
        );
    }

    #[test]
    fn tiers_defaults() {
        let tiers = Tiers::default();
        for plan in ["free", "pro", "unknown", ""] {
            assert_eq!(tiers.policy_for(plan, None), Policy::per_minute(nz(2_000)));
        }
        assert_eq!(tiers.default_policy().limit(), 2_000);
    }

    #[test]
    fn tiers_plans_and_override() {
        let gold = Policy::new(nz(100), Duration::from_secs(1)).unwrap();
        let tiers = Tiers::new(Policy::per_minute(nz(10))).with_plan("gold", gold);
        assert_eq!(tiers.policy_for("gold", None), gold);
        assert_eq!(tiers.policy_for("Gold", None).limit(), 10);
        assert_eq!(tiers.policy_for("pro", None).limit(), 10);
        let overridden = tiers.policy_for("gold", Some(nz(7)));
        assert_eq!(overridden, Policy::per_minute(nz(7)));
        assert_eq!(overridden.burst(), 7);
        let replaced = tiers.with_plan("gold", Policy::per_minute(nz(3)));
        assert_eq!(replaced.policy_for("gold", None).limit(), 3);
    }
}
