//! [`Gate`]: the test's handle on a [`crate::MockResponse::GatedStream`].

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

/// Controls a [`crate::MockResponse::GatedStream`] and observes what happened to it.
///
/// The first chunk is sent without waiting; every [`Gate::release`] lets exactly one more chunk
/// out (releases given before the stream starts are remembered). When the response body is
/// dropped — the client went away, the connection closed, a write failed, or the stream simply
/// finished and hyper let go of it — the gate turns *closed*.
///
/// A gate belongs to one stream: do not reuse it for two queued responses.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    /// One permit per released chunk.
    permits: Semaphore,
    /// `true` once the body was dropped; a watch so waiters cannot miss the transition.
    closed: watch::Sender<bool>,
    /// Chunks handed to hyper for writing.
    sent: AtomicUsize,
}

impl Gate {
    /// A new gate: nothing released, not closed, no chunk sent.
    pub fn new() -> Gate {
        Gate {
            inner: Arc::new(Inner {
                permits: Semaphore::new(0),
                closed: watch::Sender::new(false),
                sent: AtomicUsize::new(0),
            }),
        }
    }

    /// Allows one more chunk (after the first, which needs no release) to be sent.
    pub fn release(&self) {
        self.inner.permits.add_permits(1);
    }

    /// Whether the stream body was dropped (peer gone, write failed, connection closed, or the
    /// stream ended and was released by hyper).
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// Waits until the gate is closed or `timeout` passes; returns [`Gate::is_closed`].
    pub async fn wait_closed(&self, timeout: Duration) -> bool {
        let mut rx = self.inner.closed.subscribe();
        // `wait_for` only fails if the sender is gone, and `self` owns it.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|closed| *closed)).await;
        self.is_closed()
    }

    /// How many chunks the body has handed to hyper so far.
    pub fn chunks_sent(&self) -> usize {
        self.inner.sent.load(Ordering::SeqCst)
    }

    /// Waits for one release; `false` if the semaphore was closed (never happens: nobody closes it).
    pub(crate) async fn acquire(&self) -> bool {
        match self.inner.permits.acquire().await {
            Ok(permit) => {
                permit.forget();
                true
            }
            Err(_) => false,
        }
    }

    pub(crate) fn mark_sent(&self) {
        self.inner.sent.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn mark_closed(&self) {
        self.inner.closed.send_replace(true);
    }
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("chunks_sent", &self.chunks_sent())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn releases_are_counted_and_remembered() {
        let gate = Gate::new();
        gate.release();
        gate.release();
        assert!(gate.acquire().await);
        assert!(gate.acquire().await);
        assert_eq!(gate.inner.permits.available_permits(), 0);
    }

    #[tokio::test]
    async fn closing_is_seen_by_clones_and_waiters() {
        let gate = Gate::new();
        let clone = gate.clone();
        assert!(!gate.is_closed());
        assert!(!gate.wait_closed(Duration::from_millis(1)).await);
        let waiter = tokio::spawn(async move { clone.wait_closed(Duration::from_secs(30)).await });
        gate.mark_closed();
        assert!(waiter.await.unwrap());
        assert!(gate.is_closed());
    }

    #[test]
    fn sent_counter_and_debug() {
        let gate = Gate::new();
        gate.mark_sent();
        gate.mark_sent();
        assert_eq!(gate.chunks_sent(), 2);
        assert_eq!(
            format!("{gate:?}"),
            "Gate { chunks_sent: 2, closed: false }"
        );
    }
}
