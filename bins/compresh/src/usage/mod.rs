//! Usage accounting: one [`UsageRecord`] per authenticated request, with the tokens the provider
//! reported, written to the store off the request path.
//!
//! - [`ObservedBody`] wraps the response body. Frames pass through as they arrive; a JSON answer
//!   is scanned as it passes and only its `usage` value is parsed, in place ([`scan`]); an SSE
//!   stream is read line by line keeping only the partial trailing line. When the body ends or
//!   is dropped (the client went away) the record is handed to the [`UsageSink`] with whatever
//!   was seen.
//! - For OpenAI-style streams the gateway asks the provider for usage
//!   ([`plan_stream`]); the body then strips the usage-only chunk and the `"usage":null` fields
//!   that asking adds, so the client gets the bytes it would have got without the question.
//! - [`UsageRecorder`] is the bounded queue and the batching background writer.

mod json;
mod recorder;
mod scan;
mod sse;
mod tokens;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use compresh_keys::KeyId;
use compresh_store::{UnixTime, UsageRecord};
use http::{header, HeaderMap};
use http_body::{Body, Frame, SizeHint};

use self::scan::UsageScanner;
use crate::body::{BodyError, GatewayBody};
use crate::metrics::Metrics;

pub use recorder::{UsageConfig, UsageRecorder, UsageSink};
pub use sse::{SseObserver, SseStripper};
pub use tokens::{plan_stream, StreamPlan, Tokens};

/// What is known about a request before its answer is sent.
#[derive(Debug, Clone)]
pub struct UsageDraft {
    /// When the request arrived.
    pub at: UnixTime,
    /// The key that made it.
    pub key_id: KeyId,
    /// Its account.
    pub account_id: i64,
    /// Provider name (`-` if the request never got that far).
    pub provider: String,
    /// Requested model.
    pub model: Option<String>,
    /// Status sent to the client.
    pub status: u16,
    /// Rejected by the rate limiter.
    pub rate_limited: bool,
    /// For the total latency, measured when the body ends.
    pub started: Instant,
}

/// How the body is read for tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observe {
    /// Not at all.
    Nothing,
    /// A JSON answer, scanned for its `usage` as it passes.
    Json,
    /// An SSE stream, read as it passes.
    Sse,
    /// An OpenAI-style SSE stream whose usage the gateway asked for: read and strip.
    StripSse,
}

impl Observe {
    /// Choose by the response's content type; `stripping` when include_usage was injected.
    pub fn for_response(headers: &HeaderMap, stripping: bool) -> Self {
        Self::for_content_type(
            headers
                .get(header::CONTENT_TYPE)
                .map(|value| value.as_bytes()),
            stripping,
        )
    }

    /// [`Observe::for_response`] from the `Content-Type` value alone.
    pub fn for_content_type(content_type: Option<&[u8]>, stripping: bool) -> Self {
        let content_type = content_type
            .and_then(|value| std::str::from_utf8(value).ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            if stripping {
                Observe::StripSse
            } else {
                Observe::Sse
            }
        } else if content_type.contains("json") {
            Observe::Json
        } else {
            Observe::Nothing
        }
    }
}

enum Mode {
    Nothing,
    Json(UsageScanner),
    Sse(SseObserver),
    Strip(SseStripper),
}

/// Reads an answer's bytes for tokens as they pass and sends the usage record at the end: the
/// part of [`ObservedBody`] that does not depend on how the body is carried (the raw lane feeds
/// it bytes itself).
pub struct Observation {
    mode: Mode,
    tokens: Tokens,
    /// `None` for requests without a valid key: nothing is recorded.
    record: Option<(UsageDraft, UsageSink)>,
    metrics: Arc<Metrics>,
    /// The record was sent and the active-streams gauge decremented.
    finished: bool,
}

impl Observation {
    /// Counts as an active stream until [`Observation::finish`] or drop.
    pub fn new(
        observe: Observe,
        record: Option<(UsageDraft, UsageSink)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        metrics.add_active_streams(1);
        let mode = match observe {
            _ if record.is_none() => Mode::Nothing,
            Observe::Nothing => Mode::Nothing,
            Observe::Json => Mode::Json(UsageScanner::default()),
            Observe::Sse => Mode::Sse(SseObserver::default()),
            Observe::StripSse => Mode::Strip(SseStripper::default()),
        };
        Self {
            mode,
            tokens: Tokens::default(),
            record,
            metrics,
            finished: false,
        }
    }

    /// Whether [`Observation::observe`] may change the bytes (and so their length).
    pub fn rewrites(&self) -> bool {
        matches!(self.mode, Mode::Strip(_))
    }

    /// Reads `data`; returns what the client gets of it (all of it unless stripping, which may
    /// hold back a partial event).
    pub fn observe(&mut self, data: Bytes) -> Bytes {
        match &mut self.mode {
            Mode::Nothing => data,
            Mode::Json(scanner) => {
                scanner.push(&data);
                data
            }
            Mode::Sse(observer) => {
                observer.push(&data, &mut self.tokens);
                data
            }
            Mode::Strip(stripper) => stripper.push(&data, &mut self.tokens),
        }
    }

    /// The body ended: what stripping still held back, for the client.
    pub fn end(&mut self) -> Bytes {
        match &mut self.mode {
            Mode::Strip(stripper) => stripper.finish(&mut self.tokens),
            _ => Bytes::new(),
        }
    }

    /// Send the record (once) with what was seen, and leave the active-streams gauge.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        self.metrics.add_active_streams(-1);
        let Some((draft, sink)) = self.record.take() else {
            return;
        };
        if let Mode::Json(scanner) = &self.mode {
            scanner.finish(&mut self.tokens);
        }
        let latency = draft.started.elapsed().as_millis();
        sink.send(UsageRecord {
            at: draft.at,
            key_id: draft.key_id,
            account_id: draft.account_id,
            provider: draft.provider,
            model: draft.model,
            status: draft.status,
            latency_ms: u32::try_from(latency).unwrap_or(u32::MAX),
            input_tokens: self.tokens.input,
            output_tokens: self.tokens.output,
            rate_limited: draft.rate_limited,
        });
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The response body wrapper that observes tokens and sends the usage record at the end.
pub struct ObservedBody {
    inner: GatewayBody,
    observation: Observation,
    /// No more frames will be returned.
    ended: bool,
}

impl ObservedBody {
    /// Wrap `inner`; counts as an active stream until it ends or is dropped.
    pub fn new(
        inner: GatewayBody,
        observe: Observe,
        record: Option<(UsageDraft, UsageSink)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            observation: Observation::new(observe, record, metrics),
            ended: false,
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            let data = this.observation.observe(data);
                            if data.is_empty() && this.observation.rewrites() {
                                // Everything so far was held back or stripped; read on.
                                continue;
                            }
                            Frame::data(data)
                        }
                        Err(other) => other,
                    };
                    if !this.observation.rewrites() && this.inner.is_end_stream() {
                        // hyper may not poll again once the body says it is done.
                        this.ended = true;
                        this.observation.finish();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Some(Err(error)) => {
                    this.ended = true;
                    this.observation.finish();
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    this.ended = true;
                    let rest = this.observation.end();
                    this.observation.finish();
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || (!self.observation.rewrites() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.observation.rewrites() {
            // Stripping changes the length.
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}
