//! The web dashboard under `/dashboard`: sign-up, log-in, API keys, provider keys and usage,
//! server-rendered HTML served by the gateway itself.
//!
//! - **No JavaScript build, nothing from another origin.** Pages are strings built in
//!   [`pages`], every interpolation escaped by [`html::esc`]; one stylesheet and one tiny script
//!   (the copy button) are embedded with `include_str!`. A strict Content-Security-Policy forbids
//!   everything else, inline scripts and styles included.
//! - **Sessions** ([`session`]): a random 256-bit token in an `HttpOnly`, `SameSite=Strict`
//!   cookie (`Secure` behind TLS), stored as its SHA-256 with an expiry; logout deletes it.
//! - **CSRF**: every form carries a per-session token, checked in constant time on every POST
//!   (403 otherwise). The logged-out forms use a double-submitted random cookie instead.
//! - **Login throttling**: 10 attempts per minute per email and per client address, with the
//!   gateway's own limiter; unknown emails cost as much time as wrong passwords.
//! - **One implementation of each operation**: keys and providers change through [`crate::ops`],
//!   exactly as with the CLI.

pub mod form;
pub mod html;
pub mod pages;
pub mod password;
mod routes;
pub mod session;

use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use compresh_ratelimit::{KeyedLimiter, MonotonicClock, Policy, Tiers};
use compresh_store::Store;

use crate::master_keys::MasterKeys;

/// Whether anyone may create an account from the login page (`COMPRESH_SIGNUP`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupMode {
    /// Anyone can sign up; each sign-up creates a new account on plan `free`.
    Open,
    /// Only operators create users (`compresh users create`).
    #[default]
    Closed,
}

impl FromStr for SignupMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(Self::Open),
            "closed" | "" => Ok(Self::Closed),
            other => Err(format!(
                "COMPRESH_SIGNUP must be open or closed, not '{other}'"
            )),
        }
    }
}

/// Settings of the dashboard.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Open or closed sign-up.
    pub signup: SignupMode,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Login (and sign-up) attempts per minute per email and per client address.
    pub login_attempts_per_minute: NonZeroU32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            signup: SignupMode::Closed,
            session_ttl: Duration::from_secs(12 * 3600),
            login_attempts_per_minute: NonZeroU32::MIN.saturating_add(9),
        }
    }
}

/// The dashboard's state, owned by the [`Gateway`](crate::gateway::Gateway).
pub struct Dashboard {
    store: Store,
    master_keys: Arc<MasterKeys>,
    tiers: Tiers,
    config: DashboardConfig,
    /// Keyed by attacker-chosen emails and addresses, so it hashes with SipHash (HashDoS-resistant)
    /// rather than the request path's faster hasher.
    login_limiter: KeyedLimiter<String, MonotonicClock, std::collections::hash_map::RandomState>,
    login_policy: Policy,
}

impl Dashboard {
    /// A dashboard over the gateway's store and key ring.
    pub fn new(
        store: Store,
        master_keys: Arc<MasterKeys>,
        tiers: Tiers,
        config: DashboardConfig,
    ) -> Self {
        let login_policy = Policy::per_minute(config.login_attempts_per_minute);
        Self {
            store,
            master_keys,
            tiers,
            config,
            login_limiter: KeyedLimiter::with_clock_and_hasher(
                MonotonicClock::new(),
                std::collections::hash_map::RandomState::new(),
            ),
            login_policy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signup_mode_parses() {
        assert_eq!("open".parse(), Ok(SignupMode::Open));
        assert_eq!("Closed".parse(), Ok(SignupMode::Closed));
        assert!("maybe".parse::<SignupMode>().is_err());
        assert_eq!(SignupMode::default(), SignupMode::Closed);
        assert_eq!(
            DashboardConfig::default().login_attempts_per_minute.get(),
            10
        );
    }
}
