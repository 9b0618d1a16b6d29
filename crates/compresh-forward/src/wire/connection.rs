//! One plain-HTTP/1.1 upstream connection and the body reader over it.

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::Authority;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::chunked::{ChunkedDecoder, Decoded};
use super::polling::{AnswerPolling, AnswerWaits};
use super::response::{parse_response_head, Framing, Malformed, Parsed, ResponseHead};
use crate::error::unreachable_reason;
use crate::{ForwardConfig, ForwardError, UnreachableReason, Upstream};

/// A response head larger than this is refused: hyper's client limit (its read buffer's
/// default maximum), so that both paths accept the same answers.
const MAX_HEAD: usize = 8192 + 4096 * 100;
const READ_CHUNK: usize = 16 * 1024;

/// A plain-HTTP/1.1 connection to one upstream, carrying one request at a time.
///
/// The gateway's raw lane keeps one per client connection, so that a request and its answer
/// never leave the task serving the client (as [`UpstreamAffinity`](crate::UpstreamAffinity)
/// does for the hyper path).
#[derive(Debug)]
pub struct WireConnection {
    stream: TcpStream,
    authority: Authority,
    /// Bytes read and not yet handed out: a head, body bytes, or nothing between exchanges.
    buffer: BytesMut,
    /// When the last answer was read to its end (for the idle timeout).
    idle_since: Instant,
    /// The last answer was read to its end and allows another request.
    reusable: bool,
    polling: AnswerPolling,
    /// The last answer's first bytes were found by polling rather than by a wake-up.
    answer_polled: bool,
}

impl WireConnection {
    /// Connects to `upstream`'s authority (plain TCP; the caller checked
    /// [`Upstream::is_plain_http`]), with `config`'s connect timeout and answer polling; `waits`
    /// counts the answers awaited on all connections that share the CPU.
    ///
    /// # Errors
    /// [`ForwardError::Unreachable`] when the connection cannot be made within the connect
    /// timeout.
    pub(crate) async fn connect(
        upstream: &Upstream,
        config: &ForwardConfig,
        waits: AnswerWaits,
    ) -> Result<Self, ForwardError> {
        let timeout = config.connect_timeout;
        let authority = upstream.authority().clone();
        let unreachable = |reason| ForwardError::Unreachable {
            provider: upstream.name().to_owned(),
            reason,
        };
        let address = match authority.port_u16() {
            Some(_) => authority.as_str().to_owned(),
            None => format!("{}:80", authority.host()),
        };
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::warn!(
                    provider = upstream.name(),
                    "upstream connect failed: {error}"
                );
                let reason = match error.kind() {
                    // tokio reports a failed lookup as `Other` with the resolver's message.
                    io::ErrorKind::Other if error.get_ref().is_some() => UnreachableReason::Dns,
                    _ => unreachable_reason(&error),
                };
                return Err(unreachable(reason));
            }
            Err(_elapsed) => return Err(unreachable(UnreachableReason::ConnectTimeout)),
        };
        // Streaming answers are many small writes from the provider; requests are one write.
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            authority,
            buffer: BytesMut::with_capacity(READ_CHUNK),
            idle_since: Instant::now(),
            reusable: true,
            polling: AnswerPolling::new(config.answer_poll, waits),
            answer_polled: false,
        })
    }

    /// Whether the next request to `upstream` can use this connection: the same authority, the
    /// last answer read to its end on a kept-alive connection, idle for less than
    /// `idle_timeout`, and not closed by the provider in the meantime.
    pub fn reusable_for(&self, upstream: &Upstream, idle_timeout: Duration) -> bool {
        if !self.reusable
            || self.authority != *upstream.authority()
            || self.idle_since.elapsed() >= idle_timeout
        {
            return false;
        }
        // A closed (or chatty) idle connection is readable; an open quiet one is not. One
        // `recv` at most: its `WouldBlock` clears tokio's cached readiness, and later probes of a
        // still-quiet connection make no system call.
        let mut probe = [0; 1];
        matches!(self.stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
    }

    /// When the connection's idle time began: the end of the last answer read (or the connect).
    pub fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// Sends a complete request (head and body). The answer's head follows through
    /// [`WireConnection::read_head`]; in between, the caller can do work that does not need the
    /// answer while the provider works on it.
    ///
    /// # Errors
    /// [`ForwardError::UpstreamFailed`] when the request cannot be written. Nothing is ever
    /// sent twice.
    pub async fn send(&mut self, request: &[u8], provider: &str) -> Result<(), ForwardError> {
        self.reusable = false;
        self.buffer.clear();
        self.stream
            .write_all(request)
            .await
            .map_err(|error| failed(provider, &error))
    }

    /// Reads the head of the answer to the request [`WireConnection::send`] wrote; interim
    /// (`1xx`) answers are skipped. The body follows through [`WireConnection::body`].
    ///
    /// The caller bounds the wait with its response timeout.
    ///
    /// # Errors
    /// [`ForwardError::UpstreamFailed`] when the connection breaks before a complete head
    /// arrives or the head cannot be relayed.
    pub async fn read_head(&mut self, provider: &str) -> Result<ResponseHead, ForwardError> {
        let mut answer_started = self.buffer.is_empty();
        loop {
            match parse_response_head(&self.buffer) {
                Ok(Parsed::Head(head)) => return Ok(head),
                Ok(Parsed::Interim(length)) => {
                    self.buffer.advance(length);
                    continue;
                }
                Ok(Parsed::Partial) if self.buffer.len() < MAX_HEAD => {}
                Ok(Parsed::Partial) => return Err(failed(provider, &"response head too large")),
                Err(Malformed::Syntax) => return Err(failed(provider, &"malformed response head")),
                Err(Malformed::Length) => return Err(failed(provider, &"invalid content-length")),
                Err(Malformed::Upgrade) => {
                    return Err(failed(provider, &"unrequested protocol switch"));
                }
            }
            let filled = if std::mem::take(&mut answer_started) {
                self.await_answer().await
            } else {
                self.fill().await
            };
            match filled {
                Ok(0) => {
                    return Err(failed(
                        provider,
                        &"connection closed before the response head",
                    ))
                }
                Ok(_) => {}
                Err(error) => return Err(failed(provider, &error)),
            }
        }
    }

    /// The reader of the body after `head` (which [`WireConnection::read_head`] returned);
    /// drops the head from the buffer.
    pub fn body(&mut self, head: &ResponseHead) -> BodyReader {
        self.buffer.advance(head.head_len);
        BodyReader {
            state: match head.framing {
                Framing::Empty => State::Done,
                Framing::Length(length) => State::Length(length),
                Framing::Chunked => State::Chunked(ChunkedDecoder::new()),
                Framing::UntilClose => State::UntilClose,
            },
            reusable: head.reusable,
        }
    }

    /// Whether the last answer's first bytes were found by polling
    /// ([`ForwardConfig::answer_poll`]) rather than after the task was woken.
    pub fn answer_was_polled(&self) -> bool {
        self.answer_polled
    }

    /// The bytes of `head` as read (valid until the body is read).
    pub fn head_bytes(&self) -> &[u8] {
        &self.buffer
    }

    /// Reads the answer's first bytes, polling for them first when the policy says so.
    async fn await_answer(&mut self) -> io::Result<usize> {
        if self.polling.is_off() {
            // The default: no clock reads or shared counts for a feature not in use.
            return self.fill().await;
        }
        let waiting_since = Instant::now();
        let awaited = self.polling.begin_wait();
        let polled = if awaited.alone() {
            self.poll_for_answer(waiting_since).await
        } else {
            None
        };
        self.answer_polled = polled.is_some();
        let read = match polled {
            Some(read) => read,
            None => self.fill().await,
        };
        self.polling.observe(waiting_since.elapsed());
        read
    }

    /// Polls for readable bytes until the polling window from `waiting_since` closes; `None`
    /// when it closed first.
    async fn poll_for_answer(&mut self, waiting_since: Instant) -> Option<io::Result<usize>> {
        let window = self.polling.window();
        if window.is_zero() {
            return None;
        }
        self.buffer.reserve(READ_CHUNK);
        loop {
            match self.stream.try_read_buf(&mut self.buffer) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                read => return Some(read),
            }
            if waiting_since.elapsed() >= window {
                return None;
            }
            // The runtime runs the other ready tasks, then, with only deferred ones left, polls
            // the I/O driver without blocking: that refreshes this socket's readiness (without
            // which `try_read_buf` makes no system call) and never halts the CPU.
            tokio::task::yield_now().await;
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.buffer.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.buffer).await
    }
}

/// The error of a request that broke off before its answer's head (logged with its cause,
/// which the client never sees).
fn failed(provider: &str, why: &dyn std::fmt::Display) -> ForwardError {
    tracing::warn!(provider, "upstream request failed: {why}");
    ForwardError::UpstreamFailed {
        provider: provider.to_owned(),
    }
}

/// Hands out a body's payload as it arrives, without copying it.
#[derive(Debug)]
pub struct BodyReader {
    state: State,
    reusable: bool,
}

#[derive(Debug)]
enum State {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
    Done,
}

/// What [`BodyReader::buffered`] found.
#[derive(Debug)]
pub enum Piece {
    /// Payload bytes.
    Data(Bytes),
    /// The body is complete.
    End,
    /// Nothing more is buffered: call [`BodyReader::read`].
    NeedRead,
}

impl BodyReader {
    /// The next payload already buffered, without waiting.
    ///
    /// # Errors
    /// The chunked framing is malformed (`InvalidData`).
    pub fn buffered(&mut self, connection: &mut WireConnection) -> io::Result<Piece> {
        let buffer = &mut connection.buffer;
        let piece = match &mut self.state {
            State::Done => Piece::End,
            State::Length(0) => {
                self.state = State::Done;
                Piece::End
            }
            State::Length(remaining) => {
                if buffer.is_empty() {
                    return Ok(Piece::NeedRead);
                }
                let take = buffer
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                *remaining -= take as u64;
                Piece::Data(buffer.split_to(take).freeze())
            }
            State::UntilClose => {
                if buffer.is_empty() {
                    return Ok(Piece::NeedRead);
                }
                Piece::Data(buffer.split().freeze())
            }
            State::Chunked(decoder) => loop {
                let (consumed, decoded) = decoder
                    .decode(buffer)
                    .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                match decoded {
                    Decoded::Data(range) => {
                        break Piece::Data(buffer.split_to(consumed).freeze().slice(range));
                    }
                    Decoded::Done => {
                        buffer.advance(consumed);
                        self.state = State::Done;
                        break Piece::End;
                    }
                    Decoded::NeedMore => {
                        buffer.advance(consumed);
                        if consumed == 0 {
                            return Ok(Piece::NeedRead);
                        }
                    }
                }
            },
        };
        if matches!(piece, Piece::End) {
            // Bytes after the end are no answer to anything: do not reuse the connection.
            connection.reusable = self.reusable && connection.buffer.is_empty();
            connection.idle_since = Instant::now();
            // A large answer's buffer is not kept while the connection idles.
            if connection.buffer.capacity() > 4 * READ_CHUNK {
                connection.buffer = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        Ok(piece)
    }

    /// Reads more of the body from the connection; `Ok(false)` when the provider closed it
    /// (the end of an [`Framing::UntilClose`] body).
    ///
    /// # Errors
    /// Reading failed, or the connection closed before a length-delimited or chunked body
    /// ended (`UnexpectedEof`).
    pub async fn read(&mut self, connection: &mut WireConnection) -> io::Result<bool> {
        if connection.fill().await? > 0 {
            return Ok(true);
        }
        match self.state {
            State::UntilClose => {
                self.state = State::Done;
                Ok(false)
            }
            State::Done => Ok(false),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the provider closed the connection before the body ended",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::WireConnection;
    use crate::wire::polling::AnswerWaits;
    use crate::{ForwardConfig, ProviderKind, Upstream};

    const REQUEST: &[u8] =
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n";

    /// A provider that answers each request on its connection after `delay`.
    async fn provider(delay: Duration) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0; 1024];
            while stream.read(&mut request).await.unwrap_or(0) > 0 {
                tokio::time::sleep(delay).await;
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                stream.write_all(answer).await.unwrap();
            }
        });
        let base_url = format!("http://{address}/v1");
        Upstream::new(
            "local",
            ProviderKind::OpenAiCompatible,
            Some(&base_url),
            None,
        )
        .unwrap()
    }

    async fn connect(upstream: &Upstream, poll: Duration) -> WireConnection {
        connect_sharing(upstream, poll, AnswerWaits::default()).await
    }

    async fn connect_sharing(
        upstream: &Upstream,
        poll: Duration,
        waits: AnswerWaits,
    ) -> WireConnection {
        let config = ForwardConfig {
            answer_poll: poll,
            ..ForwardConfig::default()
        };
        WireConnection::connect(upstream, &config, waits)
            .await
            .unwrap()
    }

    /// Sends one request and reads the answer's head: whether polling found it.
    async fn exchange(connection: &mut WireConnection) -> bool {
        connection.send(REQUEST, "local").await.unwrap();
        let head = connection.read_head("local").await.unwrap();
        assert_eq!(head.status, 200);
        connection.answer_polled
    }

    #[tokio::test]
    async fn a_prompt_answer_is_found_by_polling() {
        let upstream = provider(Duration::ZERO).await;
        // A window far longer than the answer takes, even on a loaded machine.
        let mut connection = connect(&upstream, Duration::from_millis(200)).await;
        for _ in 0..3 {
            assert!(exchange(&mut connection).await);
        }
    }

    #[tokio::test]
    async fn an_answer_awaited_beside_another_is_not_polled() {
        let waits = AnswerWaits::default();
        let window = Duration::from_millis(200);
        let slow = provider(Duration::from_millis(100)).await;
        let prompt = provider(Duration::ZERO).await;
        let mut first = connect_sharing(&slow, window, waits.clone()).await;
        let mut second = connect_sharing(&prompt, window, waits).await;
        // `join!` starts the slow exchange first; the prompt one begins while it is awaited.
        let (_, second_polled) = tokio::join!(exchange(&mut first), exchange(&mut second));
        assert!(!second_polled);
        // Awaited alone, the same prompt answer is polled for.
        assert!(exchange(&mut second).await);
    }

    #[tokio::test]
    async fn without_a_window_the_task_waits_for_the_answer() {
        let upstream = provider(Duration::ZERO).await;
        let mut connection = connect(&upstream, Duration::ZERO).await;
        for _ in 0..3 {
            assert!(!exchange(&mut connection).await);
        }
    }

    #[tokio::test]
    async fn a_slow_answer_is_awaited_and_ends_the_polling() {
        let upstream = provider(Duration::from_millis(30)).await;
        let mut connection = connect(&upstream, Duration::from_millis(1)).await;
        assert!(!exchange(&mut connection).await);
        assert_eq!(connection.polling.window(), Duration::ZERO);
        assert!(!exchange(&mut connection).await);
    }
}
