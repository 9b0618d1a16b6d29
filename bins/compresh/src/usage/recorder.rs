//! The background usage writer: a bounded queue in front of one task that batches rows into
//! the store off the request path.
//!
//! When the gateway is built outside a runtime (as `serve` does), the writer gets its own
//! thread, writes the store from that thread, and runs it at a lower scheduling priority
//! ([`WRITER_NICE`]): a batch's SQLite transaction is CPU that should not compete with the
//! request path for a core. On a 2-CPU machine the lower priority alone made no measurable
//! difference to the gateway's p99: a thread the scheduler has just picked keeps the CPU for
//! its slice even when a higher-priority thread wakes up, so every batch still delayed the
//! requests (and the provider's and clients' threads) that woke up behind it, once per batch
//! (every 16 ms at 4000 requests/s with 64-row batches). Smaller batches helped; yielding every
//! few rows inside the batch's transaction removed most of the rest
//! (`Store::record_usage_paced`; measured in `benches/RESULTS.md`, sixth pass).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use compresh_store::{Store, UsageRecord};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::gateway::unix_now;
use crate::metrics::Metrics;

/// The writer thread's nice value (0 is normal, 19 the lowest priority). It only yields the
/// CPU to the request path when both want it; an idle CPU still runs it at full speed. Not so
/// low that the writer falls behind when the machine is saturated (~6 k instructions per row,
/// callgrind).
pub const WRITER_NICE: i32 = 10;

/// Tunables of the usage writer.
#[derive(Debug, Clone)]
pub struct UsageConfig {
    /// Rows the queue holds; beyond that rows are dropped (counted and logged), never waited for.
    pub queue_capacity: usize,
    /// A batch is written once it has this many rows ...
    pub batch_rows: usize,
    /// ... or this long after its first row arrived. Bounds what a crash can lose.
    pub flush_interval: Duration,
    /// First retry delay after a failed write; doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// At shutdown, how long a failing store is retried before the remaining rows are given up
    /// (and reported).
    pub shutdown_retry: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 16_384,
            // Most of a batch's CPU is per batch, not per row: waking the writer, the
            // transaction's locks and commit, the daily upserts, a cold cache. At 4000
            // requests/s the writer thread ran 102-113 ms per 5 s with 64-row batches and
            // 49-50 ms with 256 (schedstat; benches/RESULTS.md, seventh pass). Before batches
            // were paced (`Store::record_usage_paced`), big ones showed in the p99 (at 4000 rps:
            // 795-1327 µs with 512 rows, 614-1130 with 64); paced, 64 and 256 rows gave the
            // same p99 within the rounds' spread.
            batch_rows: 256,
            flush_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            shutdown_retry: Duration::from_secs(10),
        }
    }
}

/// The request path's side of the writer: hands rows over without waiting, and without waking
/// the writer for every row (see `Writer::run`).
#[derive(Clone)]
pub struct UsageSink {
    sender: mpsc::Sender<UsageRecord>,
    metrics: Arc<Metrics>,
    last_drop_log: Arc<AtomicU64>,
    /// Signalled once `full_at` rows are queued, so a full batch is written before its flush
    /// interval is over.
    batch_full: Arc<Notify>,
    /// `batch_rows - 1`: the waiting writer already holds the batch's first row.
    full_at: usize,
}

impl UsageSink {
    /// Queue one row. Never blocks: a full (or closed) queue drops the row, counts it in
    /// `compresh_usage_rows_dropped_total` and logs at most once a second.
    pub fn send(&self, record: UsageRecord) {
        match self.sender.try_send(record) {
            Ok(()) => {
                self.metrics.add_usage_queue_depth(1);
                // Queued rows = capacity used; an atomic load. Below a batch, no wake-up.
                let queued = self.sender.max_capacity() - self.sender.capacity();
                if queued >= self.full_at {
                    self.batch_full.notify_one();
                }
            }
            Err(error) => {
                self.metrics.add_usage_rows_dropped(1);
                let now = u64::try_from(unix_now()).unwrap_or(0);
                if self.last_drop_log.swap(now, Ordering::Relaxed) != now {
                    let why = match error {
                        mpsc::error::TrySendError::Full(_) => "the usage queue is full",
                        mpsc::error::TrySendError::Closed(_) => "the usage writer has stopped",
                    };
                    tracing::error!("usage row dropped: {why}");
                }
            }
        }
    }
}

/// Owns the writer task; [`UsageRecorder::shutdown`] flushes everything queued.
pub struct UsageRecorder {
    sink: UsageSink,
    /// `true` asks the writer to stop; dropping it does too.
    stop: watch::Sender<bool>,
    done: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl UsageRecorder {
    /// Start the writer. Runs on the current Tokio runtime if there is one, else on its own
    /// thread with a small runtime (so a gateway can be built before the server's runtime).
    pub fn start(store: Store, metrics: Arc<Metrics>, config: UsageConfig) -> Self {
        let (sender, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let (stop, stopped) = watch::channel(false);
        let (finished, done) = oneshot::channel();
        let batch_full = Arc::new(Notify::new());
        let full_at = config.batch_rows.saturating_sub(1).max(1);
        let runtime = tokio::runtime::Handle::try_current();
        let writer = Writer {
            store,
            metrics: Arc::clone(&metrics),
            config,
            stopped,
            batch_full: Arc::clone(&batch_full),
            own_thread: runtime.is_err(),
        };
        let task = async move {
            writer.run(receiver).await;
            let _ = finished.send(());
        };
        match runtime {
            Ok(handle) => {
                handle.spawn(task);
            }
            Err(_) => {
                let spawned = std::thread::Builder::new()
                    .name("compresh-usage".to_owned())
                    .spawn(move || {
                        lower_priority();
                        match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(runtime) => runtime.block_on(task),
                            Err(error) => tracing::error!("usage writer cannot start: {error}"),
                        }
                    });
                if let Err(error) = spawned {
                    tracing::error!("usage writer cannot start: {error}");
                }
            }
        }
        Self {
            sink: UsageSink {
                sender,
                metrics,
                last_drop_log: Arc::new(AtomicU64::new(0)),
                batch_full,
                full_at,
            },
            stop,
            done: tokio::sync::Mutex::new(Some(done)),
        }
    }

    /// A handle for the request path.
    pub fn sink(&self) -> &UsageSink {
        &self.sink
    }

    /// Stop accepting rows, write everything queued, and return when it is in the store (or
    /// given up after [`UsageConfig::shutdown_retry`], which is logged and counted). Rows sent
    /// afterwards are dropped and counted. Calling it again returns at once.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let done = self.done.lock().await.take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

struct Writer {
    store: Store,
    metrics: Arc<Metrics>,
    config: UsageConfig,
    stopped: watch::Receiver<bool>,
    /// Notified by the sinks when a full batch is queued.
    batch_full: Arc<Notify>,
    /// The writer has a thread (and runtime) of its own: store writes run on it directly, at
    /// its lower priority, instead of on a shared blocking thread.
    own_thread: bool,
}

/// Lower the calling thread's priority to [`WRITER_NICE`]. On Linux a nice value belongs to a
/// thread (`setpriority(PRIO_PROCESS, 0)` is the calling thread). Failure only costs latency.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(None, WRITER_NICE) {
        tracing::debug!("usage writer keeps normal priority: {error}");
    }
}

/// How a write with retries ended.
enum Outcome {
    Written,
    /// Shutdown was requested while waiting to retry; the rows are still in the batch.
    Stopping,
    /// The shutdown deadline passed; the rows are still in the batch.
    GaveUp,
}

impl Writer {
    /// One wake-up per batch, not per row: after a batch's first row the writer does not poll
    /// the queue (so a sink's send finds no waker to wake) until the flush interval is over or
    /// a sink signals a full batch; then it drains the queue. Waking per row cost a
    /// cross-thread wake-up (the writer runs on its own thread when the gateway is built
    /// outside a runtime, as `serve` does) and a timer re-arm for every request.
    async fn run(self, mut receiver: mpsc::Receiver<UsageRecord>) {
        let batch_rows = self.config.batch_rows.max(1);
        let mut batch: Vec<UsageRecord> = Vec::with_capacity(self.config.batch_rows);
        let mut stopped = self.stopped.clone();
        'running: loop {
            // Wait for the first row of a batch (or the stop signal) ...
            tokio::select! {
                biased;
                _ = stopped.wait_for(|stop| *stop) => break 'running,
                row = receiver.recv() => match row {
                    Some(row) => self.take(row, &mut batch),
                    None => break 'running,
                },
            }
            // ... then let it fill for at most the flush interval, or until a sink says a full
            // batch is queued (a stale signal from the previous batch only makes this batch
            // smaller) ...
            if batch.len() < batch_rows {
                let deadline = tokio::time::Instant::now() + self.config.flush_interval;
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|stop| *stop) => break 'running,
                    () = self.batch_full.notified() => {}
                    () = tokio::time::sleep_until(deadline) => {}
                }
            }
            // ... and take what is queued, up to a batch, in one call without waiting: a
            // `try_recv` per row cost ~0.2 k instructions a row (it gives the row's queue slot
            // back under the channel's semaphore lock); this gives them back once. The no-op
            // waker only exists to poll without waiting: nothing needs waking, the loop comes
            // back to `recv` by itself.
            if batch.len() < batch_rows {
                let queued = batch.len();
                let mut cx = Context::from_waker(Waker::noop());
                let closed = matches!(
                    receiver.poll_recv_many(&mut cx, &mut batch, batch_rows - queued),
                    // 0 with a non-zero limit: closed and drained.
                    Poll::Ready(0)
                );
                self.taken(batch.len() - queued);
                if closed {
                    break 'running;
                }
            }
            match self.write_with_retry(&mut batch, None).await {
                Outcome::Written => {}
                Outcome::Stopping | Outcome::GaveUp => break 'running,
            }
        }
        // Shutdown: refuse new rows, drain what is queued, write it all.
        receiver.close();
        while let Some(row) = receiver.recv().await {
            self.take(row, &mut batch);
        }
        let give_up = tokio::time::Instant::now() + self.config.shutdown_retry;
        if !batch.is_empty() {
            if let Outcome::GaveUp | Outcome::Stopping =
                self.write_with_retry(&mut batch, Some(give_up)).await
            {
                self.metrics.add_usage_rows_dropped(batch.len() as u64);
                tracing::error!(
                    rows = batch.len(),
                    "shutdown: usage rows could not be written and are lost"
                );
            }
        }
        tracing::debug!(
            written = self.metrics.usage_rows_written(),
            "usage writer stopped"
        );
    }

    fn take(&self, row: UsageRecord, batch: &mut Vec<UsageRecord>) {
        self.taken(1);
        batch.push(row);
    }

    /// `rows` left the queue.
    fn taken(&self, rows: usize) {
        self.metrics
            .add_usage_queue_depth(-i64::try_from(rows).unwrap_or(i64::MAX));
    }

    /// Write `batch` (rows, aggregates and `last_used_at`; then clear it), retrying with
    /// backoff. Without `give_up`, retries until written or shutdown is requested; with it,
    /// until then.
    async fn write_with_retry(
        &self,
        batch: &mut Vec<UsageRecord>,
        give_up: Option<tokio::time::Instant>,
    ) -> Outcome {
        let mut stopped = self.stopped.clone();
        let mut backoff = self.config.initial_backoff;
        loop {
            match self.write_once(batch).await {
                Ok(()) => return Outcome::Written,
                Err(error) => {
                    self.metrics.count_usage_write_failure();
                    tracing::error!(
                        rows = batch.len(),
                        retry_in_ms = backoff.as_millis() as u64,
                        "usage write failed, will retry: {error}"
                    );
                }
            }
            match give_up {
                Some(at) => {
                    if tokio::time::Instant::now() + backoff > at {
                        return Outcome::GaveUp;
                    }
                    tokio::time::sleep(backoff).await;
                }
                None => tokio::select! {
                    _ = stopped.wait_for(|stop| *stop) => return Outcome::Stopping,
                    () = tokio::time::sleep(backoff) => {}
                },
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Run a store call: on this thread when it is the writer's own (nothing else runs on its
    /// runtime), else on a blocking thread. A panic is returned as an error either way.
    async fn blocking<T: Send + 'static>(
        &self,
        call: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        if self.own_thread {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(call))
                .map_err(|_| "the store call panicked".to_owned())
        } else {
            tokio::task::spawn_blocking(call)
                .await
                .map_err(|error| error.to_string())
        }
    }

    /// One attempt: one transaction for the rows, their aggregates and `last_used_at`
    /// ([`Store::record_usage`]), so a failed attempt wrote nothing and the retry cannot count
    /// a row twice. (`last_used_at` used to be a second transaction per batch, with its own
    /// commit, and a `HashMap` of key ids cloned per row.)
    async fn write_once(&self, batch: &mut Vec<UsageRecord>) -> Result<(), String> {
        let store = self.store.clone();
        let rows = std::mem::take(batch);
        let count = rows.len();
        let joined = self
            .blocking(move || {
                // A pause every few rows: see `Store::record_usage_paced`. A yield with nothing
                // else waiting for the CPU returns at once.
                let result = store.record_usage_paced(&rows, std::thread::yield_now);
                (rows, result)
            })
            .await;
        match joined {
            Ok((mut rows, Ok(()))) => {
                self.metrics.add_usage_rows_written(count as u64);
                // Hand the allocation back: the next batch fills it without growing it again.
                rows.clear();
                *batch = rows;
                Ok(())
            }
            Ok((rows, Err(error))) => {
                *batch = rows;
                Err(error.to_string())
            }
            Err(error) => {
                // The rows went down with the panicking task; say so instead of pretending.
                self.metrics.add_usage_rows_dropped(count as u64);
                Err(format!(
                    "usage write task failed, {count} rows lost: {error}"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use compresh_keys::KeyId;
    use compresh_store::UsageFilter;

    use super::*;

    #[tokio::test]
    async fn bursts_of_rows_are_each_written_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let account = store.create_account("acme", "free").unwrap();
        let key = KeyId::generate();
        let metrics = Arc::new(Metrics::default());
        let recorder = UsageRecorder::start(
            store.clone(),
            Arc::clone(&metrics),
            UsageConfig {
                // Odd batch size, so batches end mid-burst and bursts end mid-batch.
                batch_rows: 7,
                flush_interval: Duration::from_millis(5),
                ..UsageConfig::default()
            },
        );
        let mut sent = 0_u64;
        for burst in 0..12_u64 {
            for _ in 0..burst * 3 + 1 {
                recorder.sink().send(UsageRecord {
                    at: 1_700_000_000,
                    key_id: key.clone(),
                    account_id: account.id,
                    provider: "openai".to_owned(),
                    model: None,
                    status: 200,
                    latency_ms: 1,
                    input_tokens: Some(sent),
                    output_tokens: None,
                    rate_limited: false,
                });
                sent += 1;
            }
            // Let the writer take some of them (or not: the outcome must not depend on it).
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        recorder.shutdown().await;

        assert_eq!(metrics.usage_rows_written(), sent);
        let daily = store.usage_daily(&UsageFilter::default()).unwrap();
        assert_eq!(daily.len(), 1);
        assert_eq!(daily[0].requests, sent);
        // Each row once: the tokens are 0..sent.
        assert_eq!(daily[0].input_tokens, sent * (sent - 1) / 2);
        assert!(
            metrics
                .render()
                .contains("\ncompresh_usage_queue_depth 0\n"),
            "queue depth back to 0"
        );
    }
}
