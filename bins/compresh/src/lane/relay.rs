//! One lane request: the checks, the commit, the upstream exchange and the relayed answer.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use compresh_forward::wire::{
    push_decimal, write_header, write_request_head, BodyReader, Framing, Piece, ResponseHead,
    WireConnection,
};
use compresh_forward::{ForwardError, Upstream};
use compresh_keys::{extract_key_with, ApiKey, KeyHash, KeyId};
use compresh_ratelimit::Decision;
use compresh_store::Snapshot;
use http::{HeaderValue, Method, StatusCode, Uri};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Sleep;

use super::request::LaneRequest;
use super::Ended;
use crate::error::GatewayError;
use crate::gateway::{
    ask_for_usage, chosen_provider, key_record, millis_value, model_not_allowed, request_model,
    session_id_from, unix_now, write_rate_limit_headers, Gateway, OVERHEAD_OUT, SESSION_ID_OUT,
};
use crate::ops::rpm_override;
use crate::restrictions::{model_allowed, provider_allowed};
use crate::usage::{Observation, Observe, UsageDraft};

/// Capacity of the write buffer kept between requests.
const OUT_KEPT: usize = 8 * 1024;

/// A client connection on the lane and its own upstream connection.
pub(super) struct Connection<'g> {
    gateway: &'g Gateway,
    client: TcpStream,
    /// Kept between requests while the provider keeps it alive.
    upstream: Option<WireConnection>,
    /// The bytes being written next (upstream request, or answer head and body).
    out: Vec<u8>,
    /// The key this connection presented last, and its hash: clients send the same key with
    /// every request of a connection, and SHA-256 was about 3,400 instructions of each.
    last_key: Option<(ApiKey, KeyHash)>,
    /// Turns true when the server shuts down: answers from then on say `Connection: close`
    /// and end the connection, as hyper's do.
    shutdown: watch::Receiver<bool>,
    /// The last answer said `Connection: close`.
    closing: bool,
    /// Bounds the wait for the provider's answer ([`answer_deadline`]).
    response_timer: Pin<Box<Sleep>>,
    /// The current request's answer parts that are the gateway's own.
    parts: AnswerParts,
}

/// What a committed request's answer takes from the gateway, not from the provider. Built while
/// the provider works (once the upstream request is sent), so that it no longer delays the
/// answer after its head arrives: about 2 k instructions, mostly the rate-limit headers, the
/// session id and the usage row's copies of the key, provider and model.
#[derive(Default)]
struct AnswerParts {
    /// The rate-limit and session-id header lines.
    headers: Vec<u8>,
    /// The request's usage row, but for its status and time (the answer's); `None` until
    /// prepared for the current request, and again once the answer took it.
    draft: Option<UsageDraft>,
}

impl AnswerParts {
    /// Builds the parts for `committed` unless they are built already.
    fn prepare(&mut self, committed: &Committed) {
        if self.draft.is_some() {
            return;
        }
        self.headers.clear();
        write_rate_limit_headers(&mut self.headers, &committed.decision);
        let session = session_id_from(committed.client_session.as_ref());
        write_header(
            &mut self.headers,
            SESSION_ID_OUT.as_str().as_bytes(),
            session.as_bytes(),
        );
        self.draft = Some(UsageDraft {
            at: 0,
            key_id: committed.key_id.clone(),
            account_id: committed.account_id,
            provider: committed.provider.clone().into_owned(),
            model: committed.model.clone(),
            status: 0,
            rate_limited: false,
            started: committed.started,
        });
    }
}

/// A request that passed the checks on its head and was counted by the limiter.
pub(super) struct Committed {
    /// The snapshot its key was found in, and the key's hash (for the checks on the body).
    snapshot: Arc<Snapshot>,
    key_hash: KeyHash,
    key_id: KeyId,
    account_id: i64,
    account: String,
    provider: Cow<'static, str>,
    /// The provider's kind (`openai`, `anthropic`, ...).
    provider_kind: String,
    /// Read from the body.
    model: Option<String>,
    upstream: Arc<Upstream>,
    /// The upstream URI of the request.
    target: Uri,
    decision: Decision,
    /// The client's session id, if it sent a usable one.
    client_session: Option<HeaderValue>,
    strip_usage: bool,
    started: Instant,
}

/// The answer to a committed request, as far as its head.
struct Answered {
    status: u16,
    upstream_status: u16,
    upstream_time: Duration,
    /// From the request's arrival to its answer's head.
    elapsed: Duration,
}

impl Answered {
    /// The gateway's own share of `elapsed`.
    fn overhead(&self) -> Duration {
        self.elapsed.saturating_sub(self.upstream_time)
    }
}

impl<'g> Connection<'g> {
    pub(super) fn new(
        gateway: &'g Gateway,
        client: TcpStream,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            gateway,
            client,
            upstream: None,
            out: Vec::with_capacity(OUT_KEPT),
            last_key: None,
            shutdown,
            closing: false,
            response_timer: Box::pin(tokio::time::sleep(
                gateway.forwarder().config().response_timeout,
            )),
            parts: AnswerParts::default(),
        }
    }

    /// The connection ends after this answer: it said `Connection: close`, or the server began
    /// shutting down while it was sent (hyper then closes after the answer in flight, and
    /// serves no pipelined request).
    pub(super) fn closing(&self) -> bool {
        self.closing || *self.shutdown.borrow()
    }

    /// Since when the kept upstream connection has been idle; `None` without one.
    pub(super) fn upstream_idle_since(&self) -> Option<Instant> {
        self.upstream.as_ref().map(WireConnection::idle_since)
    }

    /// Closes the kept upstream connection (the next request connects anew).
    pub(super) fn close_upstream(&mut self) {
        self.upstream = None;
    }

    pub(super) fn client(&mut self) -> &mut TcpStream {
        &mut self.client
    }

    pub(super) fn hand_over(self, inbound: BytesMut) -> Ended {
        self.gateway.metrics().count_lane_handover();
        Ended::Handover(self.client, inbound.freeze())
    }

    /// The hash of the request's key, from the last request's when it is the same key.
    fn key_hash(&mut self, message: &[u8], request: &LaneRequest) -> Option<KeyHash> {
        let value = |range: &Option<std::ops::Range<usize>>| range.clone().map(|r| &message[r]);
        let presented =
            extract_key_with(value(&request.authorization), || value(&request.x_api_key)).ok()?;
        Some(match &self.last_key {
            Some((last, hash)) if *last == presented => *hash,
            _ => {
                let hash = presented.hash();
                self.last_key = Some((presented, hash));
                hash
            }
        })
    }

    /// Runs [`Gateway::handle`]'s checks that need only the head (the request's head is at the
    /// front of `head`), then the rate limiter; `None` (hand over) when any fails or the limiter
    /// refuses, and nothing has changed then. hyper's path runs the limiter before reading the
    /// body as well, so a refused or unauthenticated request never gets its body read here.
    /// The checks hyper's path runs after the limiter come first here: when one fails, hyper's
    /// path gives the same answer (its limiter counts the request, then the check fails).
    pub(super) fn commit(
        &mut self,
        head: &[u8],
        request: &LaneRequest,
        started: Instant,
    ) -> Option<Committed> {
        let gateway = self.gateway;
        let hash = self.key_hash(head, request)?;
        let value = |range: &Option<std::ops::Range<usize>>| range.clone().map(|r| &head[r]);
        let snapshot = gateway.store().snapshot();
        let key = key_record(&hash, &snapshot, unix_now()).ok()?;
        let account = snapshot.account(key.account_id)?;
        if !account.active {
            return None;
        }
        let provider_header = match value(&request.provider) {
            Some(bytes) => Some(HeaderValue::from_bytes(bytes).ok()?),
            None => None,
        };
        let target = std::str::from_utf8(&head[request.target.clone()]).ok()?;
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let provider_name = chosen_provider(provider_header.as_ref(), path).ok()?;
        if !provider_allowed(key, &provider_name) {
            return None;
        }
        let provider = snapshot.provider(key.account_id, &provider_name)?;
        let upstream = gateway
            .upstreams()
            .get(provider, gateway.master_keys())
            .ok()?;
        if !upstream.is_plain_http() {
            return None;
        }
        let target = upstream.target_uri(target).ok()?;

        let policy = gateway.tiers().policy_for(&account.plan, rpm_override(key));
        let decision = gateway.limiter().check(key.id.as_str(), &policy);
        if !decision.allowed {
            return None;
        }
        // Committed: from here on the lane answers, whatever happens.
        gateway.metrics().count_lane_request();
        let client_session =
            value(&request.session).and_then(|bytes| HeaderValue::from_bytes(bytes).ok());
        let key_id = key.id.clone();
        let account_id = key.account_id;
        let account = account.name.clone();
        let provider_kind = provider.kind.clone();
        Some(Committed {
            snapshot,
            key_hash: hash,
            key_id,
            account_id,
            account,
            provider: provider_name,
            provider_kind,
            model: None,
            upstream,
            target,
            decision,
            client_session,
            strip_usage: false,
            started,
        })
    }

    /// Serves the committed request at the front of `inbound` (complete, body included) and
    /// removes it.
    pub(super) async fn serve(
        &mut self,
        inbound: &mut BytesMut,
        request: &LaneRequest,
        mut committed: Committed,
    ) -> io::Result<()> {
        let total = request.head_len + request.body_len;
        let message = &inbound[..total];
        // httparse checked the request target is text.
        let target = std::str::from_utf8(&message[request.target.clone()]).unwrap_or("/");
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let body = &message[request.head_len..];
        self.parts.draft = None;
        let result = match self.check_body(&mut committed, path, body) {
            Ok(forwarded_body) => {
                let body = forwarded_body.as_deref().unwrap_or(body);
                self.write_upstream_request(&committed, message, request, body);
                match self.forward_and_answer(&committed, path).await {
                    Ok(()) => Ok(()),
                    Err(RelayFailure::Gateway(error, upstream_time)) => {
                        tracing::warn!(provider = %committed.provider, code = error.code(), "upstream failure: {error}");
                        self.answer_error(&committed, path, error.into(), upstream_time)
                            .await
                    }
                    Err(RelayFailure::Io(error)) => Err(error),
                }
            }
            Err(error) => {
                self.answer_error(&committed, path, error, Duration::ZERO)
                    .await
            }
        };
        inbound.advance(total);
        // The upstream request of a large body is not kept for the connection's idle life.
        if self.out.capacity() > OUT_KEPT {
            self.out = Vec::with_capacity(OUT_KEPT);
        }
        result
    }

    /// The checks of hyper's path that need the body (it runs them after the limiter too);
    /// the body to forward when the gateway asks for usage on the client's behalf.
    fn check_body(
        &self,
        committed: &mut Committed,
        path: &str,
        body: &[u8],
    ) -> Result<Option<Bytes>, GatewayError> {
        committed.model = request_model(&Method::POST, body)?;
        // The snapshot the key was checked in holds it.
        let key = committed.snapshot.key_by_hash(&committed.key_hash);
        if key.is_some_and(|key| !model_allowed(key, committed.model.as_deref())) {
            return Err(model_not_allowed(committed.model.as_deref()));
        }
        let forwarded = ask_for_usage(&committed.provider_kind, &Method::POST, path, body);
        if forwarded.is_some() {
            committed.strip_usage = true;
            self.gateway.metrics().count_usage_injected();
        }
        Ok(forwarded)
    }

    /// Writes the upstream request (head and body) into `self.out`.
    fn write_upstream_request(
        &mut self,
        committed: &Committed,
        message: &[u8],
        request: &LaneRequest,
        body: &[u8],
    ) {
        self.out.clear();
        let path_and_query = committed
            .target
            .path_and_query()
            .map_or("/", |pq| pq.as_str());
        let headers = request
            .headers
            .iter()
            .map(|(name, value)| (&message[name.clone()], &message[value.clone()]));
        write_request_head(
            &mut self.out,
            "POST",
            path_and_query,
            headers,
            &committed.upstream,
            body.len(),
        );
        self.out.extend_from_slice(body);
    }

    /// Sends `self.out` upstream and relays the answer to the client.
    async fn forward_and_answer(
        &mut self,
        committed: &Committed,
        path: &str,
    ) -> Result<(), RelayFailure> {
        let forwarder = self.gateway.forwarder();
        let config = forwarder.config();
        let upstream = &*committed.upstream;
        let sent = Instant::now();
        let reused = self
            .upstream
            .take()
            .filter(|connection| connection.reusable_for(upstream, config.pool_idle_timeout));
        let request = &self.out;
        let parts = &mut self.parts;
        // A connection that failed or timed out is dropped with this future.
        let exchange = async move {
            let mut connection = match reused {
                Some(connection) => connection,
                None => forwarder.connect_wire(upstream).await?,
            };
            connection.send(request, upstream.name()).await?;
            parts.prepare(committed);
            let head = connection.read_head(upstream.name()).await?;
            Ok::<_, ForwardError>((connection, head))
        };
        // A client that leaves before the answer's head takes its request with it, as on hyper's
        // path (which drops the request's future): the provider's connection closes with the
        // exchange, and nothing is counted or recorded.
        let deadline = tokio::time::Instant::from_std(sent) + config.response_timeout;
        let answer = tokio::select! {
            biased;
            answer = exchange => Ok(answer),
            () = answer_deadline(self.response_timer.as_mut(), deadline) => Err(()),
            () = client_left(&self.client) => {
                return Err(RelayFailure::Io(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "the client went away before the answer",
                )));
            }
        };
        let (mut connection, head) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return Err(RelayFailure::Gateway(error, sent.elapsed())),
            Err(_elapsed) => {
                tracing::warn!(
                    provider = upstream.name(),
                    timeout_ms =
                        u64::try_from(config.response_timeout.as_millis()).unwrap_or(u64::MAX),
                    "upstream response timed out"
                );
                let error = ForwardError::Timeout {
                    provider: upstream.name().to_owned(),
                    after: config.response_timeout,
                };
                return Err(RelayFailure::Gateway(error, sent.elapsed()));
            }
        };
        let head_at = Instant::now();
        if connection.answer_was_polled() {
            self.gateway.metrics().count_polled_answer();
        }
        let upstream_time = head_at.saturating_duration_since(sent);
        let content_type = head
            .content_type
            .clone()
            .map(|range| &connection.head_bytes()[range]);
        let observe = Observe::for_content_type(content_type, committed.strip_usage);
        let mut observation = self.observation(committed, observe, head.status);
        // Measured at the head, as on hyper's path (a stream's length changes neither figure),
        // but counted and logged once the first bytes of the answer are out (all of them for
        // an answer that arrived in one read): that work no longer delays it.
        let answered = Answered {
            status: head.status,
            upstream_status: head.status,
            upstream_time,
            elapsed: head_at.saturating_duration_since(committed.started),
        };
        let chunked = self.write_answer_head(&head, &connection, &observation, &answered);
        let mut body = connection.body(&head);
        let mut unaccounted = Some(&answered);
        let relayed = self
            .relay_body(
                &mut connection,
                &mut body,
                &mut observation,
                chunked,
                (committed, path, &mut unaccounted),
            )
            .await;
        if let Some(answered) = unaccounted {
            self.account(committed, path, answered);
        }
        relayed.map_err(RelayFailure::Io)?;
        observation.finish();
        self.upstream = Some(connection);
        Ok(())
    }

    /// Writes the client's answer head into `self.out`: the provider's status and end-to-end
    /// headers, then the gateway's own (which replace the provider's of the same name, as
    /// `HeaderMap::insert` does on hyper's path). Returns whether the body goes chunked.
    fn write_answer_head(
        &mut self,
        head: &ResponseHead,
        connection: &WireConnection,
        observation: &Observation,
        answered: &Answered,
    ) -> bool {
        let out = &mut self.out;
        out.clear();
        let bytes = connection.head_bytes();
        write_status_line_with(out, head.status, &bytes[head.reason.clone()]);
        for (name, value) in &head.headers {
            let name = &bytes[name.clone()];
            if !set_by_gateway(name) {
                write_header(out, name, &bytes[value.clone()]);
            }
        }
        if !head.has_date {
            write_date(out);
        }
        let chunked = match head.framing {
            Framing::Empty if head.status == 204 || head.status == 304 => false,
            Framing::Empty => {
                out.extend_from_slice(b"content-length: 0\r\n");
                false
            }
            Framing::Length(length) if !observation.rewrites() => {
                match &head.content_length {
                    Some(value) => write_header(out, b"content-length", &bytes[value.clone()]),
                    None => {
                        out.extend_from_slice(b"content-length: ");
                        push_decimal(out, length);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                false
            }
            Framing::Length(_) | Framing::Chunked | Framing::UntilClose => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                true
            }
        };
        write_gateway_headers(out, &self.parts.headers, answered.overhead());
        self.closing = write_close_when_shutting_down(out, &self.shutdown);
        out.extend_from_slice(b"\r\n");
        chunked
    }

    /// Relays the body after the head in `self.out`, writing once per read from the provider;
    /// accounts for the answer (`unaccounted`) after the first write.
    async fn relay_body(
        &mut self,
        connection: &mut WireConnection,
        body: &mut BodyReader,
        observation: &mut Observation,
        chunked: bool,
        (committed, path, unaccounted): (&Committed, &str, &mut Option<&Answered>),
    ) -> io::Result<()> {
        // Watched while the provider is quiet: a client that goes away mid-stream ends the
        // relay (and the provider's stream) at once, as hyper notices it on its read side.
        // Bytes from the client (a pipelined request) stop the watch; they stay unread.
        let mut watch_client = true;
        // The last piece of bytes that reach the client unchanged is read for usage after it is
        // written: the scan (about 4 k instructions for a 1 KB answer, which is usually one
        // piece) no longer delays it. It is read whether or not the write succeeded, so the
        // usage row is the one hyper's path records (it observes a piece before writing it).
        let after_writing = !observation.rewrites();
        let mut unread: Option<Bytes> = None;
        loop {
            let piece = match body.buffered(connection) {
                Ok(piece) => piece,
                Err(error) => {
                    observe_unread(observation, &mut unread);
                    break Err(error);
                }
            };
            match piece {
                Piece::Data(data) => {
                    if after_writing {
                        push_payload(&mut self.out, &data, chunked);
                        // Pieces are read in order: an earlier one still unread goes first.
                        if let Some(earlier) = unread.replace(data) {
                            observation.observe(earlier);
                        }
                    } else {
                        let data = observation.observe(data);
                        push_payload(&mut self.out, &data, chunked);
                    }
                }
                Piece::End => {
                    // Only a rewriting observation holds bytes back, and it reads every piece
                    // before it is written: nothing is in `unread` then.
                    let rest = observation.end();
                    push_payload(&mut self.out, &rest, chunked);
                    if chunked {
                        self.out.extend_from_slice(b"0\r\n\r\n");
                    }
                    let written = self.client.write_all(&self.out).await;
                    observe_unread(observation, &mut unread);
                    break written;
                }
                Piece::NeedRead => {
                    if !self.out.is_empty() {
                        let written = self.client.write_all(&self.out).await;
                        self.out.clear();
                        observe_unread(observation, &mut unread);
                        if let Err(error) = written {
                            break Err(error);
                        }
                        if let Some(answered) = unaccounted.take() {
                            self.account(committed, path, answered);
                        }
                    }
                    tokio::select! {
                        read = body.read(connection) => {
                            if let Err(error) = read {
                                break Err(error);
                            }
                        }
                        gone = client_gone(&self.client), if watch_client => {
                            if gone {
                                break Err(io::Error::new(
                                    io::ErrorKind::ConnectionAborted,
                                    "the client went away mid-answer",
                                ));
                            }
                            watch_client = false;
                        }
                    }
                }
            }
        }
    }

    /// Answers a committed request with the gateway's error, as hyper's path does.
    async fn answer_error(
        &mut self,
        committed: &Committed,
        path: &str,
        error: GatewayError,
        upstream_time: Duration,
    ) -> io::Result<()> {
        let body = Bytes::from(error.body_json());
        let status = error.status().as_u16();
        let mut observation = self.observation(committed, Observe::Json, status);
        let answered = Answered {
            status,
            upstream_status: 0,
            upstream_time,
            elapsed: committed.started.elapsed(),
        };
        let out = &mut self.out;
        out.clear();
        write_status_line(out, status);
        write_header(out, b"content-type", b"application/json");
        write_date(out);
        out.extend_from_slice(b"content-length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
        write_gateway_headers(out, &self.parts.headers, answered.overhead());
        self.closing = write_close_when_shutting_down(out, &self.shutdown);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&observation.observe(body));
        observation.finish();
        let written = self.client.write_all(&self.out).await;
        self.account(committed, path, &answered);
        written
    }

    /// The usage observation of the answer whose head has `status`; takes the prepared draft.
    fn observation(&mut self, committed: &Committed, observe: Observe, status: u16) -> Observation {
        let gateway = self.gateway;
        self.parts.prepare(committed);
        let mut draft = self.parts.draft.take().expect("prepared above");
        // When the answer's head arrived, as on hyper's path.
        draft.at = unix_now();
        draft.status = status;
        let sink = gateway.usage().sink().clone();
        Observation::new(observe, Some((draft, sink)), Arc::clone(gateway.metrics()))
    }

    /// The metrics and the access line, as [`Gateway::handle`] writes them.
    fn account(&self, committed: &Committed, path: &str, answered: &Answered) {
        let metrics = self.gateway.metrics();
        let elapsed = answered.elapsed;
        metrics.observe_upstream(answered.upstream_time);
        crate::logging::access(&crate::logging::AccessLine {
            method: "POST",
            path,
            status: answered.status,
            key_id: committed.key_id.as_str(),
            account: &committed.account,
            provider: &committed.provider,
            upstream_status: answered.upstream_status,
            latency_ms: elapsed.as_millis() as u64,
        });
        let status = StatusCode::from_u16(answered.status).unwrap_or(StatusCode::BAD_GATEWAY);
        metrics.count_request(path, Some(&committed.provider), status);
        metrics.observe_overhead(answered.overhead());
    }
}

/// Reads the piece already written to the client for usage.
fn observe_unread(observation: &mut Observation, unread: &mut Option<Bytes>) {
    if let Some(data) = unread.take() {
        observation.observe(data);
    }
}

/// Waits until the client's side is readable: `true` when it closed (or failed), `false` when
/// it sent bytes (left in the socket for the next request).
async fn client_gone(client: &TcpStream) -> bool {
    let mut probe = [0; 1];
    !matches!(client.peek(&mut probe).await, Ok(read) if read > 0)
}

/// Resolves when the client closes its side; never when it sends bytes instead (a pipelined
/// request: nothing to watch for then).
async fn client_left(client: &TcpStream) {
    if !client_gone(client).await {
        std::future::pending::<()>().await;
    }
}

/// Resolves at `deadline`. The connection's one `timer` is never later than any of its
/// requests' deadlines (it starts with the connection, requests only come later) and is moved
/// only when it fires before the current one: a timer armed and disarmed per request cost
/// about 1 k instructions of each (registering in tokio's timer wheel under its lock).
async fn answer_deadline(mut timer: Pin<&mut Sleep>, deadline: tokio::time::Instant) {
    loop {
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().await;
        if tokio::time::Instant::now() >= deadline {
            return;
        }
        timer.as_mut().reset(deadline);
    }
}

/// Why a committed request got no answer from the provider.
enum RelayFailure {
    /// The gateway answers with this error (and the time spent waiting upstream).
    Gateway(ForwardError, Duration),
    /// The answer broke off after its head: the connection must close.
    Io(io::Error),
}

/// The status line of a gateway error: the canonical reason, as hyper writes it.
fn write_status_line(out: &mut Vec<u8>, status: u16) {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("<none>");
    write_status_line_with(out, status, reason.as_bytes());
}

/// hyper's client keeps a provider's reason phrase and its server writes it back, so the
/// provider's reason is relayed as sent (the canonical one in nearly every answer).
fn write_status_line_with(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// The rate-limit headers, the session id (both prepared: [`AnswerParts`]) and the overhead, as
/// [`Gateway::handle`] sets them.
fn write_gateway_headers(out: &mut Vec<u8>, prepared: &[u8], overhead: Duration) {
    out.extend_from_slice(prepared);
    let overhead = millis_value(overhead.as_millis() as u64);
    write_header(out, OVERHEAD_OUT.as_str().as_bytes(), overhead.as_bytes());
}

/// `Connection: close` once the server is shutting down; whether it was written.
fn write_close_when_shutting_down(out: &mut Vec<u8>, shutdown: &watch::Receiver<bool>) -> bool {
    let closing = *shutdown.borrow();
    if closing {
        write_header(out, b"connection", b"close");
    }
    closing
}

/// The names [`write_gateway_headers`] sets on an allowed request.
fn set_by_gateway(name: &[u8]) -> bool {
    const NAMES: [&[u8]; 7] = [
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
        b"ratelimit-policy",
        b"ratelimit",
        b"x-compresh-session-id",
        b"x-compresh-proxy-overhead-ms",
    ];
    NAMES.iter().any(|known| name.eq_ignore_ascii_case(known))
}

fn push_payload(out: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if data.is_empty() {
        return;
    }
    if chunked {
        push_hex(out, data.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(data);
    }
}

fn push_hex(out: &mut Vec<u8>, value: usize) {
    let digits = (usize::BITS - value.leading_zeros()).div_ceil(4).max(1);
    for shift in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(value >> (shift * 4)) & 0xf]);
    }
}

/// A `Date` header, formatted once per second per thread (hyper adds one when the provider
/// sent none).
fn write_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    DATE.with(|date| {
        let mut date = date.borrow_mut();
        if date.0 != second {
            *date = (second, httpdate::fmt_http_date(now));
        }
        write_header(out, b"date", date.1.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (value, text) in [(0, "0"), (9, "9"), (10, "a"), (255, "ff"), (4096, "1000")] {
            let mut out = Vec::new();
            push_hex(&mut out, value);
            assert_eq!(out, text.as_bytes());
        }
    }

    #[test]
    fn gateway_names_replace_the_providers() {
        assert!(set_by_gateway(b"X-RateLimit-Limit"));
        assert!(set_by_gateway(b"ratelimit"));
        assert!(!set_by_gateway(b"x-ratelimit-limit-requests"));
        assert!(!set_by_gateway(b"retry-after"));
    }

    #[test]
    fn status_lines_use_the_canonical_reason() {
        let mut out = Vec::new();
        write_status_line(&mut out, 429);
        assert_eq!(out, b"HTTP/1.1 429 Too Many Requests\r\n");
        out.clear();
        write_status_line(&mut out, 599);
        assert_eq!(out, b"HTTP/1.1 599 <none>\r\n");
    }
}
