//! [`MockBody`]: the one response body type the mock serves.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::gate::Gate;

/// A response body: a whole buffer, a paced list of frames, or a gated channel.
///
/// A hand-written enum instead of a boxed body keeps the benchmark path allocation-light, and
/// lets the gated variant notice (in `Drop`) that hyper let go of it.
pub(crate) struct MockBody {
    kind: Kind,
}

enum Kind {
    /// A complete body; exact size, so hyper sends `content-length`.
    Full(Option<Bytes>),
    /// One data frame per element, `gap` apart; unknown size, so hyper uses chunked encoding.
    Frames {
        frames: VecDeque<Bytes>,
        gap: Duration,
        sleep: Option<Pin<Box<Sleep>>>,
    },
    /// Frames fed by a task that waits on the gate; dropping the receiver tells that task to stop.
    Gated {
        rx: mpsc::Receiver<Bytes>,
        gate: Gate,
    },
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> MockBody {
        MockBody {
            kind: Kind::Full(Some(bytes.into())),
        }
    }

    pub(crate) fn frames(frames: Vec<Bytes>, gap: Duration) -> MockBody {
        MockBody {
            kind: Kind::Frames {
                frames: frames.into(),
                gap,
                sleep: None,
            },
        }
    }

    pub(crate) fn gated(rx: mpsc::Receiver<Bytes>, gate: Gate) -> MockBody {
        MockBody {
            kind: Kind::Gated { rx, gate },
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // Every field is `Unpin` (the sleep is boxed), so plain `&mut` access is fine.
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Frames { frames, gap, sleep } => {
                if let Some(timer) = sleep.as_mut() {
                    ready!(timer.as_mut().poll(cx));
                    *sleep = None;
                }
                let Some(frame) = frames.pop_front() else {
                    return Poll::Ready(None);
                };
                if !gap.is_zero() && !frames.is_empty() {
                    *sleep = Some(Box::pin(tokio::time::sleep(*gap)));
                }
                Poll::Ready(Some(Ok(Frame::data(frame))))
            }
            Kind::Gated { rx, gate } => match ready!(rx.poll_recv(cx)) {
                Some(chunk) => {
                    gate.mark_sent();
                    Poll::Ready(Some(Ok(Frame::data(chunk))))
                }
                None => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Frames { frames, .. } => frames.is_empty(),
            Kind::Gated { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Frames { .. } | Kind::Gated { .. } => SizeHint::default(),
        }
    }
}

impl Drop for MockBody {
    fn drop(&mut self) {
        if let Kind::Gated { gate, .. } = &self.kind {
            gate.mark_closed();
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn full_body_is_one_frame_with_exact_size() {
        let mut body = MockBody::full(Bytes::from_static(b"hello"));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert!(!body.is_end_stream());
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "hello");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        assert_eq!(body.size_hint().exact(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn frames_come_one_by_one_with_the_gap_between() {
        let gap = Duration::from_secs(5);
        let start = tokio::time::Instant::now();
        let mut body = MockBody::frames(vec![Bytes::from("a"), Bytes::from("b")], gap);
        assert_eq!(body.size_hint().exact(), None);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "a");
        assert_eq!(start.elapsed(), Duration::ZERO);
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second, "b");
        // The paused clock auto-advances exactly to the sleep's deadline.
        assert_eq!(start.elapsed(), gap);
        assert!(body.frame().await.is_none());
        assert_eq!(start.elapsed(), gap, "no gap after the last frame");
    }

    #[tokio::test]
    async fn gated_body_counts_frames_and_closes_the_gate_on_drop() {
        let gate = Gate::new();
        let (tx, rx) = mpsc::channel(1);
        let mut body = MockBody::gated(rx, gate.clone());
        tx.send(Bytes::from("x")).await.unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "x");
        assert_eq!(gate.chunks_sent(), 1);
        assert!(!gate.is_closed());
        drop(body);
        assert!(gate.is_closed());
        assert!(tx.is_closed(), "the feeding task can see the drop");
    }
}
