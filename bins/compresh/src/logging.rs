//! Log output: human text or JSON lines on stderr, filtered by `RUST_LOG`.
//!
//! Lines are not written to stderr by the thread that logs them. A request used to pay one
//! `write(2)` for its access line (about 9 % of the gateway's CPU at load, see
//! `benches/RESULTS.md`); now the line is appended to a shared in-memory buffer and a
//! background thread writes the buffer out in one `write` [`FLUSH_INTERVAL`] after the batch's
//! first line, or sooner when it fills up. Only the first line of a batch wakes the thread; the
//! rest make no system call.
//!
//! - **No line is lost**: when stderr cannot keep up and the buffer holds [`MAX_BUFFERED`]
//!   bytes, loggers wait for room (what a blocking `write` to stderr did before) instead of
//!   dropping lines. [`LogGuard`] writes everything buffered when it is dropped, so a graceful
//!   exit keeps every line; after that, lines go straight to stderr.
//! - Colour codes only when stderr is a terminal (log files and collectors get plain text).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How long a logged line may wait in memory before the background thread writes it.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Buffered bytes at which the logging thread wakes the writer instead of waiting for the
/// interval.
pub const WAKE_AT: usize = 64 * 1024;
/// Buffered bytes at which loggers wait for the writer (back-pressure, never loss).
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber (once; later calls are ignored) with a background writer to
/// stderr. Keep the returned guard alive while serving: dropping it writes every buffered line.
pub fn init(format: LogFormat) -> LogGuard {
    let (writer, guard) = BackgroundWriter::spawn(std::io::stderr);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    guard
}

/// A [`MakeWriter`] whose writers append to a buffer that a background thread writes out.
#[derive(Clone)]
pub struct BackgroundWriter {
    shared: Arc<Shared>,
}

/// Stops the background thread when dropped, after it has written everything buffered.
#[must_use = "dropping the guard stops the log writer; keep it alive while serving"]
pub struct LogGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the writer should run now (buffer past `WAKE_AT`, or stopping).
    wake: Condvar,
    /// Signalled when the writer has taken the buffer (room for waiting loggers).
    room: Condvar,
}

struct State {
    buffer: Vec<u8>,
    /// The writer thread is gone: loggers write directly.
    stopped: bool,
    /// Asked to stop: write what is left and exit.
    stopping: bool,
}

impl BackgroundWriter {
    /// Start the writer thread over `output` (called on the writer thread for every batch).
    /// If the thread cannot be started, lines are written directly, as before.
    pub fn spawn<W, F>(output: F) -> (Self, LogGuard)
    where
        W: Write,
        F: Fn() -> W + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Vec::with_capacity(WAKE_AT),
                stopped: false,
                stopping: false,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("compresh-log".to_owned())
            .spawn(move || for_thread.run(output));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                shared.lock().stopped = true;
                eprintln!("log writer thread cannot start ({error}); logging synchronously");
                None
            }
        };
        (
            Self {
                shared: Arc::clone(&shared),
            },
            LogGuard { shared, thread },
        )
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a byte buffer, which is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run<W: Write>(&self, output: impl Fn() -> W) {
        let mut spare = Vec::with_capacity(WAKE_AT);
        loop {
            let done = {
                let mut state = self.lock();
                // Idle: sleep until a first line arrives (no periodic wake-ups) ...
                while state.buffer.is_empty() && !state.stopping {
                    state = self
                        .wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                // ... then let lines gather for a while, so one `write` carries many.
                if state.buffer.len() < WAKE_AT && !state.stopping {
                    state = self
                        .wake
                        .wait_timeout(state, FLUSH_INTERVAL)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                std::mem::swap(&mut state.buffer, &mut spare);
                // Stopping: loop until a swap finds nothing left, then hand over to direct
                // writes under the same lock, so lines stay in order.
                let done = state.stopping && spare.is_empty();
                if done {
                    state.stopped = true;
                }
                self.room.notify_all();
                done
            };
            if !spare.is_empty() {
                // Nowhere to report a failing stderr; the line is gone either way.
                let mut out = output();
                let _ = out.write_all(&spare);
                let _ = out.flush();
                spare.clear();
                if spare.capacity() > MAX_BUFFERED {
                    spare.shrink_to(WAKE_AT);
                }
            }
            if done {
                return;
            }
        }
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Whatever happened to the thread, later lines must not wait for it.
        self.shared.lock().stopped = true;
        self.shared.room.notify_all();
    }
}

/// One event's writer: appends to the shared buffer.
pub struct LineWriter {
    shared: Arc<Shared>,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while !state.stopped && state.buffer.len() >= MAX_BUFFERED {
            self.shared.wake.notify_one();
            state = self
                .shared
                .room
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.stopped {
            drop(state);
            return std::io::stderr().write(bytes);
        }
        let before = state.buffer.len();
        state.buffer.extend_from_slice(bytes);
        // Wake the writer for the first line of a batch (it sleeps while the buffer is empty)
        // and when the buffer is big enough to write now; otherwise it wakes by itself.
        if before == 0 || (before < WAKE_AT && state.buffer.len() >= WAKE_AT) {
            self.shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // Lines are flushed by the writer thread; waiting here would put the write back on
        // the request path.
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BackgroundWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            shared: Arc::clone(&self.shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into shared memory, standing in for stderr.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dropping_the_guard_writes_every_line_in_order() {
        let sink = Sink::default();
        let out = sink.clone();
        let (writer, guard) = BackgroundWriter::spawn(move || out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..5_000 {
                        let line = format!("thread {t} line {i}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        for t in 0..4 {
            let lines: Vec<&str> = written
                .lines()
                .filter(|line| line.starts_with(&format!("thread {t} ")))
                .collect();
            let expected: Vec<String> =
                (0..5_000).map(|i| format!("thread {t} line {i}")).collect();
            assert_eq!(lines, expected, "thread {t}");
        }
        assert_eq!(written.lines().count(), 20_000);
    }

    #[test]
    fn lines_are_written_without_the_guard_being_dropped() {
        let sink = Sink::default();
        let out = sink.clone();
        let (writer, _guard) = BackgroundWriter::spawn(move || out.clone());
        writer.make_writer().write_all(b"hello\n").unwrap();
        // The writer thread writes within FLUSH_INTERVAL; poll instead of asserting a time.
        while sink.0.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hello\n");
    }

    #[test]
    fn more_than_the_buffer_limit_is_written_not_dropped() {
        let sink = Sink::default();
        let out = sink.clone();
        let (writer, guard) = BackgroundWriter::spawn(move || out.clone());
        let line = vec![b'x'; 1023];
        let lines = 3 * MAX_BUFFERED / 1024;
        for _ in 0..lines {
            let mut w = writer.make_writer();
            w.write_all(&line).unwrap();
            w.write_all(b"\n").unwrap();
        }
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().len(), lines * 1024);
    }
}
