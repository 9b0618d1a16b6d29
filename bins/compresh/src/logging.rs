//! Log output: human text or JSON lines on stderr, filtered by `RUST_LOG`.
//!
//! Lines are not written to stderr by the thread that logs them. A request used to pay one
//! `write(2)` for its access line (about 9 % of the gateway's CPU at load, see
//! `benches/RESULTS.md`); now the line is appended to a shared in-memory buffer and a
//! background thread writes the buffer out in one `write` [`FLUSH_INTERVAL`] after the batch's
//! first line, or sooner when it fills up. While lines keep coming the thread wakes once per
//! interval, by its own timer; only a line that finds it idle (nothing logged for a whole
//! interval) wakes it, so under load loggers make no system call for it at all.
//!
//! - **No line is lost**: when stderr cannot keep up and the buffer holds [`MAX_BUFFERED`]
//!   bytes, loggers wait for room (what a blocking `write` to stderr did before) instead of
//!   dropping lines. [`LogGuard`] writes everything buffered when it is dropped, so a graceful
//!   exit keeps every line; after that, lines go straight to stderr.
//! - Colour codes only when stderr is a terminal (log files and collectors get plain text).
//! - The access line (one per request) is formatted by hand ([`access`]) when colours are off:
//!   byte for byte what `tracing_subscriber` writes for the same event (a test compares the
//!   two), at a fraction of the cost — its field visitor and `core::fmt` were ~11 % of the
//!   gateway's instructions per request. `RUST_LOG` still decides whether the line is written.

use std::cell::{Cell, RefCell};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer.clone());
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Colours stay with tracing_subscriber (a terminal is not the hot path); plain lines are
    // formatted by `access` into the same writer.
    if installed.is_ok() && !ansi {
        let _ = ACCESS_OUTPUT.set((format, writer));
    }
    guard
}

/// The fields of one access-log line (target `compresh::access`, message `request`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccessLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub key_id: &'a str,
    pub account: &'a str,
    pub provider: &'a str,
    pub upstream_status: u16,
    pub latency_ms: u64,
}

/// Where `access` writes its hand-formatted lines; unset (tests, a terminal) means through
/// `tracing` as any other event.
static ACCESS_OUTPUT: OnceLock<(LogFormat, BackgroundWriter)> = OnceLock::new();

thread_local! {
    /// The line being formatted; reused so a request allocates nothing for its log line.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(256));
}

/// Log one request: at INFO, target `compresh::access`, if `RUST_LOG` lets it through.
pub(crate) fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: "compresh::access", tracing::Level::INFO) {
        return;
    }
    let Some((format, writer)) = ACCESS_OUTPUT.get() else {
        line.emit();
        return;
    };
    LINE.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        buffer.clear();
        line.format(&mut buffer, *format, SystemTime::now());
        // `LineWriter` never fails short of stderr itself failing, like any log line.
        let _ = writer.make_writer().write_all(&buffer);
        if buffer.capacity() > 64 * 1024 {
            // One huge path must not keep its buffer for the thread's lifetime.
            *buffer = Vec::with_capacity(256);
        }
    });
}

impl AccessLine<'_> {
    /// The same line as a `tracing` event (what `format` reproduces).
    fn emit(&self) {
        tracing::info!(
            target: "compresh::access",
            method = %self.method,
            path = %self.path,
            status = self.status,
            key_id = self.key_id,
            account = self.account,
            provider = self.provider,
            upstream_status = self.upstream_status,
            latency_ms = self.latency_ms,
            "request"
        );
    }

    /// Append the line as `tracing_subscriber`'s `fmt` (full text, no colours) or its JSON
    /// (`flatten_event`) would write it at `now`.
    fn format(&self, out: &mut Vec<u8>, format: LogFormat, now: SystemTime) {
        match format {
            LogFormat::Text => {
                push_timestamp(out, now);
                out.extend_from_slice(b"  INFO compresh::access: request method=");
                out.extend_from_slice(self.method.as_bytes());
                out.extend_from_slice(b" path=");
                out.extend_from_slice(self.path.as_bytes());
                out.extend_from_slice(b" status=");
                push_u64(out, self.status.into());
                out.extend_from_slice(b" key_id=");
                push_debug_str(out, self.key_id);
                out.extend_from_slice(b" account=");
                push_debug_str(out, self.account);
                out.extend_from_slice(b" provider=");
                push_debug_str(out, self.provider);
                out.extend_from_slice(b" upstream_status=");
                push_u64(out, self.upstream_status.into());
                out.extend_from_slice(b" latency_ms=");
                push_u64(out, self.latency_ms);
            }
            LogFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                push_timestamp(out, now);
                out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
                push_json_str(out, self.method);
                out.extend_from_slice(b",\"path\":");
                push_json_str(out, self.path);
                out.extend_from_slice(b",\"status\":");
                push_u64(out, self.status.into());
                out.extend_from_slice(b",\"key_id\":");
                push_json_str(out, self.key_id);
                out.extend_from_slice(b",\"account\":");
                push_json_str(out, self.account);
                out.extend_from_slice(b",\"provider\":");
                push_json_str(out, self.provider);
                out.extend_from_slice(b",\"upstream_status\":");
                push_u64(out, self.upstream_status.into());
                out.extend_from_slice(b",\"latency_ms\":");
                push_u64(out, self.latency_ms);
                out.extend_from_slice(b",\"target\":\"compresh::access\"}");
            }
        }
        out.push(b'\n');
    }
}

/// Decimal digits of `value` (what `{value}` writes), without `core::fmt`.
pub(crate) fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    out.extend_from_slice(u64_digits(&mut digits, value));
}

/// Decimal digits of `value`, written at the end of `digits` (20 digits hold any `u64`).
pub(crate) fn u64_digits(digits: &mut [u8; 20], mut value: u64) -> &[u8] {
    // Two digits per division (a 10-digit unix time took ~130 instructions one at a time;
    // every response carries several such numbers).
    let mut at = digits.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        digits[at..at + 2].copy_from_slice(&DIGIT_PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        digits[at] = b'0' + value as u8;
    }
    &digits[at..]
}

/// `"00" "01" … "99"`: the decimal digits of 0..100, two bytes each.
pub(crate) const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// `{:02}` / `{:04}` / `{:06}` of a non-negative number below `10^width`.
fn push_padded(out: &mut Vec<u8>, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width - 1);
    while divisor > 0 {
        out.push(b'0' + ((value / divisor) % 10) as u8);
        divisor /= 10;
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), as `tracing_subscriber`'s `SystemTime`.
fn push_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    // The date and time of day change once a second, the line is written per request: reuse
    // this thread's last one (they were ~3/4 of this function's cost).
    let (cached_secs, cached) = LAST_SECOND.with(Cell::get);
    if cached_secs == secs {
        out.extend_from_slice(&cached);
    } else {
        let start = out.len();
        push_date_time(out, secs);
        if let Ok(text) = <[u8; 19]>::try_from(&out[start..]) {
            LAST_SECOND.with(|last| last.set((secs, text)));
        }
    }
    out.push(b'.');
    let micros = since.subsec_micros() as usize;
    for pair in [micros / 10_000, micros / 100 % 100, micros % 100] {
        out.extend_from_slice(&DIGIT_PAIRS[2 * pair..2 * pair + 2]);
    }
    out.push(b'Z');
}

thread_local! {
    /// `(unix seconds, "YYYY-MM-DDTHH:MM:SS")` of the last timestamp this thread wrote
    /// (`u64::MAX`: none yet). Years beyond 9999 are longer than 19 bytes and not cached.
    static LAST_SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` after the Unix epoch.
fn push_date_time(out: &mut Vec<u8>, secs: u64) {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    if (0..=9999).contains(&year) {
        push_padded(out, year as u64, 4);
    } else {
        // Not reachable from a clock after 1970 for 8,000 years; keep it correct anyway.
        let _ = write!(out, "{year}");
    }
    out.push(b'-');
    push_padded(out, month.into(), 2);
    out.push(b'-');
    push_padded(out, day.into(), 2);
    out.push(b'T');
    push_padded(out, of_day / 3600, 2);
    out.push(b':');
    push_padded(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_padded(out, of_day % 60, 2);
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `{:?}` of a string (what the text format writes for `&str` fields): quoted, escaped.
fn push_debug_str(out: &mut Vec<u8>, value: &str) {
    if is_plain(value.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = write!(out, "{value:?}");
    }
}

/// Whether `bytes` are printable ASCII without `"` and `\` (which `{:?}` writes unchanged).
/// Eight bytes per step (three fields of every access line go through it); the word tests
/// never miss such a byte, and a false alarm would only send the string to `{:?}`, which
/// writes a plain string unchanged anyway.
fn is_plain(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let plain_byte = |b: &u8| (0x20..0x7f).contains(b) && *b != b'"' && *b != b'\\';
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut array = [0; 8];
        array.copy_from_slice(word);
        let x = u64::from_le_bytes(array);
        // Bit twiddling hacks: a byte below 0x20, above 0x7e, equal to `"` or to `\`.
        let below = x.wrapping_sub(ONES * 0x20) & !x;
        // 0x7f + 1 sets the high bit; bytes from 0x80 have it in `x` already.
        let above = x.wrapping_add(ONES) | x;
        let has_zero = |y: u64| y.wrapping_sub(ONES) & !y;
        let quote = has_zero(x ^ (ONES * u64::from(b'"')));
        let backslash = has_zero(x ^ (ONES * u64::from(b'\\')));
        if (below | above | quote | backslash) & HIGH != 0 {
            return false;
        }
    }
    words.remainder().iter().all(plain_byte)
}

/// A JSON string, escaped as serde_json (which the JSON format uses) escapes it.
fn push_json_str(out: &mut Vec<u8>, value: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
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
    /// The writer sleeps until a first line arrives (the last interval brought none), so
    /// the logger that adds one must wake it; otherwise it is on its timer.
    idle: bool,
    /// Times the writer went idle; tests read it.
    idle_spells: u64,
}

impl BackgroundWriter {
    /// Start the writer thread over `output` (called on the writer thread for every batch).
    /// If the thread cannot be started, lines are written directly, as before.
    pub fn spawn<W, F>(output: F) -> (Self, LogGuard)
    where
        W: Write,
        F: Fn() -> W + Send + 'static,
    {
        Self::spawn_every(output, FLUSH_INTERVAL)
    }

    /// [`BackgroundWriter::spawn`] with the batch interval as a parameter (tests shorten it).
    fn spawn_every<W, F>(output: F, interval: Duration) -> (Self, LogGuard)
    where
        W: Write,
        F: Fn() -> W + Send + 'static,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buffer: Vec::with_capacity(WAKE_AT),
                stopped: false,
                stopping: false,
                idle: false,
                idle_spells: 0,
            }),
            wake: Condvar::new(),
            room: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("compresh-log".to_owned())
            .spawn(move || for_thread.run(output, interval));
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

    fn run<W: Write>(&self, output: impl Fn() -> W, interval: Duration) {
        let mut spare = Vec::with_capacity(WAKE_AT);
        // The last interval brought lines: more are likely, so the next wait is on the timer
        // alone. Waking for a batch's first line as well cost a second wake-up per batch
        // (and the logger a `futex` call) under steady load.
        let mut lines_flowing = false;
        loop {
            let done = {
                let mut state = self.lock();
                // Idle: sleep until a first line arrives (no periodic wake-ups) ...
                if !lines_flowing && state.buffer.is_empty() && !state.stopping {
                    state.idle = true;
                    state.idle_spells += 1;
                    while state.buffer.is_empty() && !state.stopping {
                        state = self
                            .wake
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    state.idle = false;
                }
                // ... then let lines gather for a while, so one `write` carries many.
                if state.buffer.len() < WAKE_AT && !state.stopping {
                    state = self
                        .wake
                        .wait_timeout(state, interval)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                std::mem::swap(&mut state.buffer, &mut spare);
                lines_flowing = !spare.is_empty();
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
        // Wake the writer for a first line when it is idle (otherwise its timer is running)
        // and when the buffer is big enough to write now; otherwise it wakes by itself.
        if (before == 0 && state.idle) || (before < WAKE_AT && state.buffer.len() >= WAKE_AT) {
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
    use crate::test_log::Sink;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    #[test]
    fn is_plain_matches_the_byte_rule() {
        let plain_byte = |b: u8| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
        for len in [1, 7, 8, 9, 16, 17] {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut text = vec![b'k'; len];
                    text[at] = byte;
                    assert_eq!(is_plain(&text), plain_byte(byte), "{len} {at} {byte}");
                }
            }
        }
        assert!(is_plain(b""));
        assert!(is_plain(b"key_0123456789abcdef acme-corp (prod) ~!"));
    }

    #[test]
    fn push_u64_writes_what_display_writes() {
        let mut powers: Vec<u64> = (0..20).map(|e| 10u64.pow(e)).collect();
        powers.extend(
            powers
                .clone()
                .iter()
                .flat_map(|p| [p - 1, p + 1, p.saturating_mul(5)]),
        );
        for value in powers
            .into_iter()
            .chain([0, 1_700_000_000, u64::MAX, u64::MAX - 1])
        {
            let mut out = b"x".to_vec();
            push_u64(&mut out, value);
            assert_eq!(out, format!("x{value}").into_bytes());
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
    fn steady_lines_keep_the_writer_on_its_timer() {
        let sink = Sink::default();
        let out = sink.clone();
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&batches);
        // Long enough that a busy test machine rarely pauses this thread for a whole interval.
        let interval = Duration::from_millis(50);
        let intervals = 30;
        let (writer, guard) = BackgroundWriter::spawn_every(
            move || {
                counted.fetch_add(1, Ordering::Relaxed);
                out.clone()
            },
            interval,
        );
        let started = Instant::now();
        let mut lines = 0;
        while started.elapsed() < intervals * interval {
            writer.make_writer().write_all(b"line\n").unwrap();
            lines += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        let idle_spells = writer.shared.lock().idle_spells;
        let batches = batches.load(Ordering::Relaxed);
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().len(), lines * b"line\n".len());
        assert!(batches >= 10, "{batches} batches");
        // Batched, not a write per line: a line that finds the writer on its timer leaves it
        // asleep, so a batch takes at least an interval.
        assert!(
            batches <= 2 * intervals as usize + 2,
            "{batches} batches for {lines} lines"
        );
        // Waking for each batch's first line, every batch began with an idle spell. A pause
        // of a whole interval between two lines (a busy test machine) may add a few.
        assert!(
            idle_spells * 4 <= batches as u64,
            "{idle_spells} idle spells for {batches} batches"
        );
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
    /// What `tracing_subscriber` writes for `line`, configured as `init` configures it.
    fn through_tracing(line: &AccessLine<'_>, format: LogFormat) -> String {
        let sink = Sink::default();
        let out = sink.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || out.clone());
        let dispatch = match format {
            LogFormat::Text => tracing::Dispatch::new(builder.finish()),
            LogFormat::Json => tracing::Dispatch::new(builder.json().flatten_event(true).finish()),
        };
        tracing::dispatcher::with_default(&dispatch, || line.emit());
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        written
    }

    #[test]
    fn access_lines_are_formatted_as_tracing_subscriber_formats_them() {
        let lines = [
            AccessLine {
                method: "POST",
                path: "/v1/chat/completions",
                status: 200,
                key_id: "key_fWM21gNkmUOx",
                account: "default",
                provider: "openai",
                upstream_status: 200,
                latency_ms: 27,
            },
            AccessLine {
                method: "GET",
                path: "/v1/x\"y\\z%22",
                status: 401,
                key_id: "-",
                account: "caf\u{e9} \"quoted\" back\\slash\ttab \u{1f600} \u{7}",
                provider: "\u{200b}zero-width",
                upstream_status: 0,
                latency_ms: u64::MAX,
            },
        ];
        for format in [LogFormat::Text, LogFormat::Json] {
            for line in &lines {
                let expected = through_tracing(line, format);
                let mut ours = Vec::new();
                line.format(&mut ours, format, SystemTime::now());
                let ours = String::from_utf8(ours).unwrap();
                // Everything but the timestamp (the first 27 characters, or the first JSON
                // member's value) must match byte for byte.
                let strip = |text: &str| match format {
                    LogFormat::Text => text[27..].to_owned(),
                    LogFormat::Json => text[..14].to_owned() + &text[41..],
                };
                assert_eq!(strip(&ours), strip(&expected), "{format:?}");
                assert_eq!(ours.len(), expected.len());
            }
        }
    }

    #[test]
    fn timestamps_match_tracing_subscriber() {
        for (secs, micros, expected) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.000005Z"),
            (1_700_000_000, 999_999, "2023-11-14T22:13:20.999999Z"),
            (4_107_542_399, 123_456, "2100-02-28T23:59:59.123456Z"),
            (253_402_300_799, 1, "9999-12-31T23:59:59.000001Z"),
        ] {
            // Twice: the second line reuses the cached date and time of day.
            for micros in [micros, (micros + 1) % 1_000_000] {
                let at = UNIX_EPOCH + Duration::new(secs, micros * 1000);
                let mut ours = b"x".to_vec();
                push_timestamp(&mut ours, at);
                let expected = format!("x{}{micros:06}Z", &expected[..20]);
                assert_eq!(String::from_utf8(ours).unwrap(), expected);
            }
        }
        // Past year 9999 the date is longer; it is written right and not cached.
        for _ in 0..2 {
            let mut ours = Vec::new();
            push_timestamp(&mut ours, UNIX_EPOCH + Duration::from_secs(253_402_300_800));
            assert_eq!(ours, b"10000-01-01T00:00:00.000000Z");
        }
    }
}
