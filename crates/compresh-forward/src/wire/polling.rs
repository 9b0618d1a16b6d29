//! When to poll for an upstream's answer instead of sleeping until it arrives.
//!
//! A task that awaits a socket parks its thread, and with nothing else to run the CPU idles. On
//! a virtual machine an idle vCPU halts (an exit to the hypervisor), so the answer's arrival
//! has to wake it through the host: tens of microseconds per request for a proxy, whose CPU
//! idles while the provider works. Polling the socket for a short window keeps the CPU running
//! and saves that wake-up, at the cost of the polled time in CPU. It pays only for an upstream
//! that answers within microseconds (a local server, a cache, a benchmark's mock) and a gateway
//! with a core of its own: on a shared core the polling takes CPU time from the upstream
//! itself, which then answers later (`benches/RESULTS.md`, fifteenth pass). So it is off unless
//! configured ([`ForwardConfig::answer_poll`](crate::ForwardConfig::answer_poll)), and even then
//! it stops for an upstream whose answers typically take longer than the window, and polls
//! only for an answer awaited alone: while other requests are in flight the CPU has their work
//! to do, and polling would only add to it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The answers awaited on every lane connection of one [`Forwarder`](crate::Forwarder).
#[derive(Debug, Clone, Default)]
pub(crate) struct AnswerWaits(Arc<AtomicUsize>);

impl AnswerWaits {
    /// Counts an answer as awaited until the returned guard drops (also when the request's
    /// future is dropped before the answer).
    pub(crate) fn begin(&self) -> AwaitedAnswer {
        let others = self.0.fetch_add(1, Ordering::Relaxed);
        AwaitedAnswer {
            waits: self.clone(),
            alone: others == 0,
        }
    }
}

/// One awaited answer, counted while it lives.
#[derive(Debug)]
pub(crate) struct AwaitedAnswer {
    waits: AnswerWaits,
    alone: bool,
}

impl AwaitedAnswer {
    /// No other answer was awaited when this one began.
    pub(crate) fn alone(&self) -> bool {
        self.alone
    }
}

impl Drop for AwaitedAnswer {
    fn drop(&mut self) {
        self.waits.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection's polling policy: poll for up to `limit` while the upstream's answers
/// typically start within it.
#[derive(Debug, Clone)]
pub(crate) struct AnswerPolling {
    limit: Duration,
    /// A moving average of how long answers took to start arriving; `None` before the first.
    typical_wait: Option<Duration>,
    waits: AnswerWaits,
}

impl AnswerPolling {
    pub(crate) fn new(limit: Duration, waits: AnswerWaits) -> Self {
        Self {
            limit,
            typical_wait: None,
            waits,
        }
    }

    /// Polling was not configured.
    pub(crate) fn is_off(&self) -> bool {
        self.limit.is_zero()
    }

    /// Counts an answer as awaited (see [`AnswerWaits::begin`]).
    pub(crate) fn begin_wait(&self) -> AwaitedAnswer {
        self.waits.begin()
    }

    /// How long to poll for the next answer before parking: the limit, unless answers have
    /// typically taken longer than it (polling would only burn the window and then park anyway).
    pub(crate) fn window(&self) -> Duration {
        match self.typical_wait {
            Some(typical) if typical > self.limit => Duration::ZERO,
            _ => self.limit,
        }
    }

    /// Records how long an answer took to start arriving.
    ///
    /// The average weighs the newest wait by a quarter: a single slow answer from a fast
    /// upstream (its garbage collection, a cold cache) pauses polling for a few requests, not for
    /// good, and a provider across the internet (milliseconds at least) stops it after one.
    pub(crate) fn observe(&mut self, waited: Duration) {
        self.typical_wait = Some(match self.typical_wait {
            None => waited,
            Some(typical) => typical - typical / 4 + waited / 4,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_micros(200);

    #[test]
    fn polls_until_it_knows_better_and_not_at_all_when_off() {
        assert_eq!(
            AnswerPolling::new(LIMIT, AnswerWaits::default()).window(),
            LIMIT
        );
        let mut off = AnswerPolling::new(Duration::ZERO, AnswerWaits::default());
        off.observe(Duration::from_micros(10));
        assert_eq!(off.window(), Duration::ZERO);
    }

    #[test]
    fn an_answer_is_alone_when_no_other_is_awaited() {
        let waits = AnswerWaits::default();
        let first = waits.begin();
        assert!(first.alone());
        let second = waits.begin();
        assert!(!second.alone());
        drop(first);
        drop(second);
        assert!(waits.begin().alone());
    }

    #[test]
    fn a_fast_upstream_keeps_being_polled() {
        let mut polling = AnswerPolling::new(LIMIT, AnswerWaits::default());
        for _ in 0..100 {
            polling.observe(Duration::from_micros(60));
            assert_eq!(polling.window(), LIMIT);
        }
    }

    #[test]
    fn a_slow_upstream_stops_polling_after_its_first_answer() {
        let mut polling = AnswerPolling::new(LIMIT, AnswerWaits::default());
        polling.observe(Duration::from_millis(300));
        assert_eq!(polling.window(), Duration::ZERO);
        // A fast error answer now and then (a 400 in 40 µs) does not turn it back on.
        polling.observe(Duration::from_micros(40));
        assert_eq!(polling.window(), Duration::ZERO);
    }

    #[test]
    fn one_slow_answer_from_a_fast_upstream_pauses_polling_for_a_few_requests() {
        let mut polling = AnswerPolling::new(LIMIT, AnswerWaits::default());
        for _ in 0..10 {
            polling.observe(Duration::from_micros(60));
        }
        polling.observe(Duration::from_millis(2));
        assert_eq!(polling.window(), Duration::ZERO);
        let mut paused = 0;
        while polling.window().is_zero() {
            polling.observe(Duration::from_micros(60));
            paused += 1;
            assert!(paused < 20, "polling never resumed");
        }
        assert!(paused >= 3, "resumed after {paused} fast answers");
    }
}
