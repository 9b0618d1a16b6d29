//! The response body type the gateway serves: either bytes of its own or a provider's stream.

use bytes::{Bytes, BytesMut};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

/// Errors a body can yield while streaming (a provider connection failing mid-stream).
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway produces.
pub type GatewayBody = UnsyncBoxBody<Bytes, BodyError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> GatewayBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Why [`read_limited`] could not read a body.
#[derive(Debug)]
pub enum ReadError<E> {
    /// The body is longer than the limit.
    TooLarge,
    /// The body failed (the client's connection broke).
    Body(E),
}

/// Read a whole body of at most `limit` bytes into one `Bytes`.
///
/// A request body that arrives as one frame (the usual case for a chat request) is returned as
/// that frame, without a copy or an allocation; `Limited` + `collect()` allocated a frame
/// queue and a trailers map per request for it. Trailers are ignored.
///
/// # Errors
///
/// [`ReadError::TooLarge`] past `limit` (checked against the size hint first, then as the
/// frames arrive, so at most `limit` bytes are held); [`ReadError::Body`] if the body fails.
pub async fn read_limited<B>(mut body: B, limit: usize) -> Result<Bytes, ReadError<B::Error>>
where
    B: Body<Data = Bytes> + Unpin,
{
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge);
    }
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(ReadError::Body)?.into_data() else {
            continue;
        };
        len += data.len();
        if len > limit {
            return Err(ReadError::TooLarge);
        }
        if let Some(joined) = joined.as_mut() {
            joined.extend_from_slice(&data);
        } else if first.is_empty() {
            first = data;
        } else if !data.is_empty() {
            // A second frame: from here on, one buffer sized for the whole body if the
            // length is known.
            let expected = body.size_hint().exact().unwrap_or(0);
            let capacity = usize::try_from(expected)
                .unwrap_or(limit)
                .min(limit)
                .max(len);
            let mut buffer = BytesMut::with_capacity(capacity);
            buffer.extend_from_slice(&first);
            buffer.extend_from_slice(&data);
            joined = Some(buffer);
        }
    }
    Ok(joined.map_or(first, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http_body::Frame;

    use super::*;

    /// A body that yields the given frames (or errors), one per poll.
    struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.0.pop_front())
        }
    }

    fn frames(parts: &[&'static [u8]]) -> Frames {
        Frames(
            parts
                .iter()
                .map(|part| Ok(Frame::data(Bytes::from_static(part))))
                .collect(),
        )
    }

    #[tokio::test]
    async fn one_frame_is_returned_without_a_copy() {
        static BODY: &[u8] = b"{\"model\":\"m\"}";
        let bytes = read_limited(frames(&[BODY]), 100).await.unwrap();
        assert_eq!(bytes.as_ptr(), BODY.as_ptr(), "the frame itself");
        assert_eq!(&bytes[..], BODY);
    }

    #[tokio::test]
    async fn frames_are_joined_in_order_and_empty_ones_skipped() {
        let bytes = read_limited(frames(&[b"", b"ab", b"", b"c", b"def"]), 6)
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"abcdef");
        let mut with_trailers = frames(&[b"ab"]);
        with_trailers
            .0
            .push_back(Ok(Frame::trailers(http::HeaderMap::new())));
        with_trailers
            .0
            .push_back(Ok(Frame::data(Bytes::from_static(b"c"))));
        assert_eq!(&read_limited(with_trailers, 6).await.unwrap()[..], b"abc");
        assert!(read_limited(frames(&[]), 0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn longer_than_the_limit_is_refused() {
        assert_eq!(
            &read_limited(frames(&[b"abc", b"de"]), 5).await.unwrap()[..],
            b"abcde"
        );
        assert!(matches!(
            read_limited(frames(&[b"abc", b"def"]), 5).await,
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            read_limited(frames(&[b"abcdef"]), 5).await,
            Err(ReadError::TooLarge)
        ));
        // Refused from the size hint, before reading.
        assert!(matches!(
            read_limited(Full::new(Bytes::from_static(b"abcdef")), 5).await,
            Err(ReadError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn body_errors_are_passed_on() {
        let mut failing = frames(&[b"ab"]);
        failing.0.push_back(Err("broken pipe"));
        assert!(matches!(
            read_limited(failing, 100).await,
            Err(ReadError::Body("broken pipe"))
        ));
    }
}
