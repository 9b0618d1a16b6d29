//! Prometheus metrics: lock-free counters on the request path, rendered by hand in the text
//! exposition format 0.0.4 at `GET /metrics`.
//!
//! Design decisions:
//! - **Atomics only on the hot path.** Every counter is an `AtomicU64` in a fixed-size table;
//!   recording a request is a few relaxed `fetch_add`s. Provider names (configured by operators,
//!   so bounded) are interned into [`MAX_PROVIDERS`] write-once slots found by a linear scan of
//!   atomic loads; beyond that they share the `other` slot.
//! - **Bounded label sets.** Routes come from a fixed list (anything else is `other`), statuses
//!   are reduced to their class (`2xx`…), and a client-chosen provider name only becomes a label
//!   once it is a configured provider of the account (see the gateway). No key, key id or secret
//!   is ever a label.
//! - No metrics crate: the format is a few lines of text and the build stays small.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::{full, GatewayBody};

/// How many distinct provider names get their own label value.
pub const MAX_PROVIDERS: usize = 64;

/// Route label values; a path not listed here is counted as `other`.
const ROUTES: [&str; 10] = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/models",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/responses",
    "/health",
    "/metrics",
    "/v1/usage",
    "other",
];
const OTHER_ROUTE: usize = ROUTES.len() - 1;
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Provider slot for requests that reached no configured provider.
const NO_PROVIDER: &str = "none";
/// Provider slot once [`MAX_PROVIDERS`] names are taken.
const OTHER_PROVIDER: &str = "other";

/// Histogram bucket upper bounds in seconds (the `+Inf` bucket is implicit).
const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// All gateway metrics. Shared by the request path, the usage writer and the scrape handler.
pub struct Metrics {
    providers: [OnceLock<Box<str>>; MAX_PROVIDERS],
    /// `[provider slot][route][class]`; slot `MAX_PROVIDERS` is `none`, `MAX_PROVIDERS + 1` is
    /// `other`.
    requests: Box<[[[AtomicU64; CLASSES.len()]; ROUTES.len()]]>,
    overhead: Histogram,
    upstream: Histogram,
    rate_limited: AtomicU64,
    active_streams: AtomicI64,
    usage_queue_depth: AtomicI64,
    usage_rows_written: AtomicU64,
    usage_write_failures: AtomicU64,
    usage_rows_dropped: AtomicU64,
    usage_injected: AtomicU64,
    lane_requests: AtomicU64,
    lane_handovers: AtomicU64,
    polled_answers: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            providers: std::array::from_fn(|_| OnceLock::new()),
            requests: (0..MAX_PROVIDERS + 2)
                .map(|_| std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))))
                .collect(),
            overhead: Histogram::default(),
            upstream: Histogram::default(),
            rate_limited: AtomicU64::new(0),
            active_streams: AtomicI64::new(0),
            usage_queue_depth: AtomicI64::new(0),
            usage_rows_written: AtomicU64::new(0),
            usage_write_failures: AtomicU64::new(0),
            usage_rows_dropped: AtomicU64::new(0),
            usage_injected: AtomicU64::new(0),
            lane_requests: AtomicU64::new(0),
            lane_handovers: AtomicU64::new(0),
            polled_answers: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Count one answered request. `provider` is `None` when no configured provider was involved.
    pub fn count_request(&self, path: &str, provider: Option<&str>, status: StatusCode) {
        let route = ROUTES
            .iter()
            .position(|route| *route == path)
            .unwrap_or(OTHER_ROUTE);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        let slot = provider.map_or(MAX_PROVIDERS, |name| self.provider_slot(name));
        self.requests[slot][route][class].fetch_add(1, Ordering::Relaxed);
    }

    /// Time the gateway itself spent on a request (total minus waiting for the provider).
    pub fn observe_overhead(&self, elapsed: Duration) {
        self.overhead.observe(elapsed);
    }

    /// Time from sending a request upstream to the provider's response headers.
    pub fn observe_upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed);
    }

    /// A request rejected by the rate limiter.
    pub fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    /// A response body started (+1) or finished/was dropped (-1).
    pub fn add_active_streams(&self, delta: i64) {
        self.active_streams.fetch_add(delta, Ordering::Relaxed);
    }

    /// Usage rows waiting in the writer's queue (+ on enqueue, - on dequeue).
    pub fn add_usage_queue_depth(&self, delta: i64) {
        self.usage_queue_depth.fetch_add(delta, Ordering::Relaxed);
    }

    /// Usage rows committed to the store.
    pub fn add_usage_rows_written(&self, rows: u64) {
        self.usage_rows_written.fetch_add(rows, Ordering::Relaxed);
    }

    /// A failed usage write attempt (it is retried).
    pub fn count_usage_write_failure(&self) {
        self.usage_write_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Usage rows that could not be queued or written and are lost.
    pub fn add_usage_rows_dropped(&self, rows: u64) {
        self.usage_rows_dropped.fetch_add(rows, Ordering::Relaxed);
    }

    /// A stream request into which `stream_options.include_usage` was injected.
    pub fn count_usage_injected(&self) {
        self.usage_injected.fetch_add(1, Ordering::Relaxed);
    }

    /// A request served on the raw HTTP/1.1 lane.
    pub fn count_lane_request(&self) {
        self.lane_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection the raw lane handed to hyper.
    pub fn count_lane_handover(&self) {
        self.lane_handovers.fetch_add(1, Ordering::Relaxed);
    }

    /// A provider's answer found by polling (`--upstream-poll-us`) rather than after a wake-up.
    pub fn count_polled_answer(&self) {
        self.polled_answers.fetch_add(1, Ordering::Relaxed);
    }

    /// Usage rows written so far (for tests and the writer's own logging).
    pub fn usage_rows_written(&self) -> u64 {
        self.usage_rows_written.load(Ordering::Relaxed)
    }

    /// Failed usage write attempts so far.
    pub fn usage_write_failures(&self) -> u64 {
        self.usage_write_failures.load(Ordering::Relaxed)
    }

    /// Bodies currently being sent.
    pub fn active_streams(&self) -> i64 {
        self.active_streams.load(Ordering::Relaxed)
    }

    /// The metrics in Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        out.push_str(
            "# HELP compresh_requests_total Requests answered, by route, provider and status class.\n\
             # TYPE compresh_requests_total counter\n",
        );
        for (slot, routes) in self.requests.iter().enumerate() {
            let provider = match slot {
                MAX_PROVIDERS => NO_PROVIDER,
                s if s == MAX_PROVIDERS + 1 => OTHER_PROVIDER,
                s => match self.providers[s].get() {
                    Some(name) => name,
                    None => continue,
                },
            };
            for (route, classes) in routes.iter().enumerate() {
                for (class, counter) in classes.iter().enumerate() {
                    let value = counter.load(Ordering::Relaxed);
                    if value == 0 {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "compresh_requests_total{{route=\"{}\",provider=\"{}\",status_class=\"{}\"}} {value}",
                        ROUTES[route],
                        escape_label(provider),
                        CLASSES[class]
                    );
                }
            }
        }
        self.overhead.render(
            &mut out,
            "compresh_gateway_overhead_seconds",
            "Time spent in the gateway per request, excluding the wait for the provider.",
        );
        self.upstream.render(
            &mut out,
            "compresh_upstream_latency_seconds",
            "Time from forwarding a request to the provider's response headers.",
        );
        let scalars: [(&str, &str, &str, i64); 10] = [
            (
                "compresh_rate_limited_total",
                "counter",
                "Requests rejected by the rate limiter.",
                to_i64(self.rate_limited.load(Ordering::Relaxed)),
            ),
            (
                "compresh_active_streams",
                "gauge",
                "Response bodies currently being sent.",
                self.active_streams.load(Ordering::Relaxed),
            ),
            (
                "compresh_usage_queue_depth",
                "gauge",
                "Usage rows waiting for the background writer.",
                self.usage_queue_depth.load(Ordering::Relaxed).max(0),
            ),
            (
                "compresh_usage_rows_written_total",
                "counter",
                "Usage rows committed to the store.",
                to_i64(self.usage_rows_written.load(Ordering::Relaxed)),
            ),
            (
                "compresh_usage_write_failures_total",
                "counter",
                "Failed usage write attempts (each is retried).",
                to_i64(self.usage_write_failures.load(Ordering::Relaxed)),
            ),
            (
                "compresh_usage_rows_dropped_total",
                "counter",
                "Usage rows lost because the queue was full or the writer had stopped.",
                to_i64(self.usage_rows_dropped.load(Ordering::Relaxed)),
            ),
            (
                "compresh_usage_include_injected_total",
                "counter",
                "Streams for which stream_options.include_usage was added to the request.",
                to_i64(self.usage_injected.load(Ordering::Relaxed)),
            ),
            (
                "compresh_lane_requests_total",
                "counter",
                "Requests served on the raw HTTP/1.1 lane (plain-HTTP providers).",
                to_i64(self.lane_requests.load(Ordering::Relaxed)),
            ),
            (
                "compresh_lane_handovers_total",
                "counter",
                "Connections the raw lane handed to hyper (another route, protocol or answer).",
                to_i64(self.lane_handovers.load(Ordering::Relaxed)),
            ),
            (
                "compresh_upstream_answers_polled_total",
                "counter",
                "Provider answers on the raw lane found by polling (--upstream-poll-us) rather than after a wake-up.",
                to_i64(self.polled_answers.load(Ordering::Relaxed)),
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        }
        out
    }

    /// The scrape response.
    pub fn response(&self) -> Response<GatewayBody> {
        let mut response = Response::new(full(Bytes::from(self.render())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    fn provider_slot(&self, name: &str) -> usize {
        // One ordered walk that either finds the name or claims the first free slot, so two
        // threads racing to add the same name end up in the same slot.
        for (index, slot) in self.providers.iter().enumerate() {
            match slot.get() {
                Some(taken) if **taken == *name => return index,
                Some(_) => {}
                None => {
                    let _ = slot.set(name.into());
                    if slot.get().is_some_and(|taken| **taken == *name) {
                        return index;
                    }
                }
            }
        }
        MAX_PROVIDERS + 1
    }
}

/// Serve only `GET /metrics` on `listener` until `shutdown` resolves (for
/// `serve --metrics-listen`, so scrapes can stay off the public listener).
pub async fn serve_metrics(
    metrics: std::sync::Arc<Metrics>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let metrics = std::sync::Arc::clone(&metrics);
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = std::sync::Arc::clone(&metrics);
                    async move {
                        let response = if request.uri().path() == "/metrics" {
                            metrics.response()
                        } else {
                            crate::error::GatewayError::not_found("only /metrics is served here")
                                .into_response()
                        };
                        Ok::<_, Infallible>(response)
                    }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            () = &mut shutdown => break,
        }
    }
}

/// Bind `addr` and serve metrics on a background task until the returned sender is dropped or
/// fired.
///
/// # Errors
/// The address cannot be bound.
pub async fn spawn_metrics_listener(
    metrics: std::sync::Arc<Metrics>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_metrics(metrics, listener, async {
        let _ = stopped.await;
    }));
    Ok((bound, stop))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A fixed-bucket histogram of durations in seconds; buckets are stored per bucket (not
/// cumulative) and summed when rendered.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let index = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cumulative = 0u64;
        for (index, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match BUCKETS.get(index) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        // The count is the +Inf bucket so the two can never disagree within one scrape.
        let _ = write!(out, "{name}_sum {sum}\n{name}_count {cumulative}\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(prefix))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse().ok())
    }

    #[test]
    fn every_sample_line_is_name_labels_value() {
        let metrics = Metrics::default();
        metrics.count_request("/v1/chat/completions", Some("openai"), StatusCode::OK);
        metrics.count_request("/v1/whatever/123", None, StatusCode::NOT_FOUND);
        metrics.observe_overhead(Duration::from_micros(50));
        metrics.observe_upstream(Duration::from_secs(100));
        let text = metrics.render();
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name_end = series.find('{').unwrap_or(series.len());
            assert!(series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'));
        }
        assert_eq!(
            value_of(
                &text,
                "compresh_requests_total{route=\"/v1/chat/completions\",provider=\"openai\",status_class=\"2xx\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                &text,
                "compresh_requests_total{route=\"other\",provider=\"none\",status_class=\"4xx\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value_of(
                &text,
                "compresh_gateway_overhead_seconds_bucket{le=\"0.0001\"}"
            ),
            Some(1.0)
        );
        assert_eq!(
            value_of(&text, "compresh_upstream_latency_seconds_bucket{le=\"60\"}"),
            Some(0.0)
        );
        assert_eq!(
            value_of(
                &text,
                "compresh_upstream_latency_seconds_bucket{le=\"+Inf\"}"
            ),
            Some(1.0)
        );
    }

    #[test]
    fn provider_slots_are_reused_and_bounded() {
        let metrics = Metrics::default();
        assert_eq!(metrics.provider_slot("a"), 0);
        assert_eq!(metrics.provider_slot("b"), 1);
        assert_eq!(metrics.provider_slot("a"), 0);
        for i in 0..MAX_PROVIDERS {
            metrics.provider_slot(&format!("p{i}"));
        }
        assert_eq!(metrics.provider_slot("one-too-many"), MAX_PROVIDERS + 1);
        metrics.count_request("/v1/models", Some("one-too-many"), StatusCode::OK);
        assert!(metrics
            .render()
            .contains("provider=\"other\",status_class=\"2xx\"} 1"));
    }

    #[tokio::test]
    async fn separate_listener_serves_only_metrics() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let metrics = std::sync::Arc::new(Metrics::default());
        metrics.count_rate_limited();
        let (addr, stop) = spawn_metrics_listener(metrics, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        let get = |path: &'static str| async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut reply = String::new();
            tcp.read_to_string(&mut reply).await.unwrap();
            reply
        };
        let reply = get("/metrics").await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(
            reply.contains("\ncompresh_rate_limited_total 1\n"),
            "{reply}"
        );
        assert!(get("/v1/chat/completions")
            .await
            .starts_with("HTTP/1.1 404"));
        drop(stop);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
