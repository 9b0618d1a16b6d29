//! HTTP/1.1 by hand on `TcpStream`s, for tests that pin what crosses the wire: a client
//! ([`Conn`]) that writes requests as given and parses responses itself (status line, framing,
//! header lines, whether the connection stays open), and a provider ([`RawUpstream`]) that
//! answers with scripted bytes, for framings a hyper server never sends.

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::{set_provider, Reply, TestGateway, OPENAI_SECRET};

/// Upper bound for every read: never reached when the server works.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How a response body was delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `content-length`.
    Length,
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Read until the server closed the connection.
    Close,
    /// No body by definition (1xx, 204, 304).
    Empty,
}

/// A response as read off the socket: the [`Reply`] plus what only the wire shows.
#[derive(Debug)]
pub struct Wire {
    /// The status line's protocol, e.g. `HTTP/1.1`.
    pub version: String,
    /// How the body was delimited.
    pub framing: Framing,
    /// Status, headers and the (de-chunked) body.
    pub reply: Reply,
}

impl Deref for Wire {
    type Target = Reply;

    fn deref(&self) -> &Reply {
        &self.reply
    }
}

/// A request as a [`RawUpstream`] (or [`Conn::read_request`]) read it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// The request line, e.g. `POST /v1/chat/completions HTTP/1.1`.
    pub start: String,
    /// The headers (names lowercased by `HeaderMap`; see `head` for the bytes as sent).
    pub headers: HeaderMap,
    /// The head exactly as sent, request line to the empty line.
    pub head: Bytes,
    /// The body (by `content-length`).
    pub body: Bytes,
}

/// One connection, either side; `buf` holds bytes read past the last message (pipelined
/// answers, or the next request).
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Bytes read and not yet consumed.
    pub buf: Vec<u8>,
}

impl Conn {
    /// Connects to `addr` (with `TCP_NODELAY`).
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Conn::new(stream)
    }

    /// Wraps an accepted or connected stream.
    pub fn new(stream: TcpStream) -> Conn {
        // Small writes must leave as written, not be merged by Nagle.
        stream.set_nodelay(true).expect("nodelay");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all of `bytes`.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// Writes `bytes` and reads one response.
    pub async fn request(&mut self, bytes: &[u8]) -> Wire {
        self.write(bytes).await;
        self.read_response().await
    }

    /// Reads more bytes into `buf`; 0 at end of stream. Panics after [`READ_TIMEOUT`].
    pub async fn fill(&mut self) -> usize {
        tokio::time::timeout(READ_TIMEOUT, self.fill_unbounded())
            .await
            .expect("the peer sent something or closed within the timeout")
            .expect("read")
    }

    async fn fill_unbounded(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(16 * 1024);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Takes `n` bytes, reading as needed.
    pub async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await > 0, "closed with {n} bytes expected");
        }
        self.buf.drain(..n).collect()
    }

    /// Takes one CRLF-terminated line, without the CRLF.
    pub async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let mut line: Vec<u8> = self.buf.drain(..at + 2).collect();
                line.truncate(at);
                return line;
            }
            assert!(self.fill().await > 0, "closed inside a line");
        }
    }

    /// Reads a message head: its start line and headers (names are case-insensitive).
    pub async fn read_head(&mut self) -> (String, HeaderMap) {
        let (start, headers, _head) = self.read_head_bytes().await;
        (start, headers)
    }

    /// [`Conn::read_head`], plus the head's bytes as sent.
    async fn read_head_bytes(&mut self) -> (String, HeaderMap, Vec<u8>) {
        let mut head = Vec::new();
        let start = self.line().await;
        head.extend_from_slice(&start);
        head.extend_from_slice(b"\r\n");
        let start = String::from_utf8(start).expect("start line is text");
        let mut headers = HeaderMap::new();
        loop {
            let line = self.line().await;
            head.extend_from_slice(&line);
            head.extend_from_slice(b"\r\n");
            if line.is_empty() {
                return (start, headers, head);
            }
            let colon = line.iter().position(|&b| b == b':').expect("name: value");
            let name = HeaderName::from_bytes(&line[..colon]).expect("header name");
            let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).expect("value");
            headers.append(name, value);
        }
    }

    /// Reads one response; its body by `content-length`, chunked decoding, or until close (so
    /// not for answers to `HEAD`).
    pub async fn read_response(&mut self) -> Wire {
        let (start, headers) = self.read_head().await;
        let mut parts = start.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: StatusCode = parts
            .next()
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {start:?}"));
        assert!(version.starts_with("HTTP/1."), "{start:?}");
        let header = |name: &str| headers.get(name).map(|v| v.to_str().expect("text"));
        let (framing, body) = if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            (Framing::Empty, Vec::new())
        } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            assert!(
                header("content-length").is_none(),
                "both framings: {headers:?}"
            );
            (Framing::Chunked, self.dechunk().await)
        } else if let Some(length) = header("content-length") {
            let length = length.parse().expect("numeric content-length");
            (Framing::Length, self.take(length).await)
        } else {
            while self.fill().await > 0 {}
            (Framing::Close, std::mem::take(&mut self.buf))
        };
        Wire {
            version,
            framing,
            reply: Reply {
                status,
                headers,
                body: Bytes::from(body),
            },
        }
    }

    /// Decodes a chunked body, up to and including its trailer section.
    pub async fn dechunk(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line = String::from_utf8(self.line().await).expect("chunk size line");
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).expect("hex chunk size");
            if size == 0 {
                while !self.line().await.is_empty() {}
                return body;
            }
            body.extend(self.take(size).await);
            assert_eq!(self.take(2).await, b"\r\n", "chunk data ends in CRLF");
        }
    }

    /// Reads one request (as a provider would); bodies by `content-length` only. Waits for its
    /// first byte as long as it takes (a provider waits for the next request on a kept-alive
    /// connection); `None` when the peer closes first.
    pub async fn read_request(&mut self) -> Option<RawRequest> {
        if self.buf.is_empty() && !matches!(self.fill_unbounded().await, Ok(read) if read > 0) {
            return None;
        }
        let (start, headers, head) = self.read_head_bytes().await;
        let length = headers
            .get("content-length")
            .map_or(0, |v| v.to_str().unwrap().parse().unwrap());
        let body = self.take(length).await;
        Some(RawRequest {
            start,
            headers,
            head: Bytes::from(head),
            body: Bytes::from(body),
        })
    }

    /// Asserts the server closes the connection (end of stream or reset) with nothing more sent.
    pub async fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut chunk = [0; 1024];
        let read = tokio::time::timeout(READ_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("the server closed the connection within the timeout");
        match read {
            Ok(0) => {}
            Ok(n) => panic!(
                "expected the connection to close, got {:?}",
                String::from_utf8_lossy(&chunk[..n])
            ),
            Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
        }
    }
}

/// The position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// An HTTP/1.1 request with a `host`, the given headers and, for a body or a POST, its length.
pub fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: compresh.test\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

/// `POST /v1/chat/completions` with `key` as a bearer token, JSON, and `extra` headers.
pub fn chat(key: &str, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    request("POST", "/v1/chat/completions", &headers, body)
}

/// What a [`RawUpstream`] does with each request it reads.
#[derive(Debug, Clone)]
pub enum RawAnswer {
    /// Writes these bytes, then reads the connection's next request.
    KeepAlive(Vec<u8>),
    /// Writes these bytes, then closes the connection.
    ThenClose(Vec<u8>),
    /// Writes these bytes (a partial answer, say), then nothing more: holds the connection
    /// until the peer closes it.
    ThenHold(Vec<u8>),
    /// Never answers; holds the connection until the peer closes it.
    Never,
    /// Waits this long after each request, then writes these bytes and reads the connection's
    /// next request. A peer that closes the connection during the wait ends it unanswered
    /// ([`RawUpstream::wait_left_unanswered`]).
    Delayed(Duration, Vec<u8>),
}

/// A provider on a raw socket: every connection's requests are recorded and answered by a
/// script, written `piece` bytes at a time with short pauses. Serves until the test ends.
pub struct RawUpstream {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<RawRequest>>>,
    /// Connections the peer closed while a [`RawAnswer::Delayed`] answer was pending.
    left_unanswered: watch::Sender<usize>,
}

impl RawUpstream {
    /// Starts answering every request with `answer`.
    pub async fn start(answer: RawAnswer, piece: usize) -> RawUpstream {
        RawUpstream::start_checked(answer, piece, |_| {}).await
    }

    /// [`RawUpstream::start`], with `check` run on every request before it is answered (a
    /// failed check ends that connection unanswered).
    pub async fn start_checked(
        answer: RawAnswer,
        piece: usize,
        check: fn(&RawRequest),
    ) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let left_unanswered = watch::Sender::new(0);
        let left = left_unanswered.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let seen = Arc::clone(&seen);
                let left = left.clone();
                tokio::spawn(async move {
                    let conn = Conn::new(stream);
                    if serve_raw(conn, answer, piece, check, seen).await == Served::LeftUnanswered {
                        left.send_modify(|count| *count += 1);
                    }
                });
            }
        });
        RawUpstream {
            addr,
            requests,
            left_unanswered,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request read so far, in order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until `count` connections were closed by the peer while a
    /// [`RawAnswer::Delayed`] answer was pending, or `timeout` passes; whether that happened.
    pub async fn wait_left_unanswered(&self, count: usize, timeout: Duration) -> bool {
        let mut left = self.left_unanswered.subscribe();
        let reached = tokio::time::timeout(timeout, left.wait_for(|left| *left >= count)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

/// How [`serve_raw`] ended a connection.
#[derive(Debug, PartialEq, Eq)]
enum Served {
    /// Answered what it read, then closed (or saw the peer close).
    Done,
    /// The peer closed it while a delayed answer was pending.
    LeftUnanswered,
}

async fn serve_raw(
    mut conn: Conn,
    answer: RawAnswer,
    piece: usize,
    check: fn(&RawRequest),
    seen: Arc<Mutex<Vec<RawRequest>>>,
) -> Served {
    while let Some(request) = conn.read_request().await {
        check(&request);
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        let bytes = match &answer {
            RawAnswer::KeepAlive(bytes)
            | RawAnswer::ThenClose(bytes)
            | RawAnswer::ThenHold(bytes)
            | RawAnswer::Delayed(_, bytes) => bytes,
            RawAnswer::Never => &Vec::new(),
        };
        if let RawAnswer::Delayed(delay, _) = &answer {
            let answer_at = tokio::time::Instant::now() + *delay;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(answer_at) => break,
                    // Bytes of a pipelined request stay in `buf`; a close (or a reset) ends the
                    // connection unanswered.
                    read = conn.fill_unbounded() => {
                        if !matches!(read, Ok(read) if read > 0) {
                            return Served::LeftUnanswered;
                        }
                    }
                }
            }
        }
        for (i, part) in bytes.chunks(piece.max(1)).enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if conn.stream.write_all(part).await.is_err() {
                return Served::Done;
            }
        }
        match answer {
            RawAnswer::KeepAlive(_) | RawAnswer::Delayed(..) => {}
            RawAnswer::ThenClose(_) => {
                let _ = conn.stream.shutdown().await;
                return Served::Done;
            }
            RawAnswer::ThenHold(_) | RawAnswer::Never => {
                // Until the peer gives up (end of stream or an error).
                while matches!(conn.fill_unbounded().await, Ok(read) if read > 0) {}
                return Served::Done;
            }
        }
    }
    Served::Done
}

/// A provider on a raw socket for `POST /v1/chat/completions` with the harness's OpenAI key:
/// each connection reads one request, gets `response` written `piece` bytes at a time with
/// short pauses, and is closed.
pub async fn raw_upstream(response: Vec<u8>, piece: usize) -> SocketAddr {
    fn check(request: &RawRequest) {
        assert!(
            request.start.starts_with("POST /v1/chat/completions "),
            "{}",
            request.start
        );
        assert_eq!(
            request.headers.get("authorization").unwrap(),
            &format!("Bearer {OPENAI_SECRET}")
        );
    }
    RawUpstream::start_checked(RawAnswer::ThenClose(response), piece, check)
        .await
        .addr()
}

/// Points the `openai` provider at `addr`.
pub fn use_upstream(gw: &TestGateway, addr: SocketAddr) {
    set_provider(
        &gw.data,
        "openai",
        "openai",
        Some(&format!("http://{addr}/v1")),
        OPENAI_SECRET,
    );
}
