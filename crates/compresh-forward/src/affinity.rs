//! Per-client-connection upstream connections ("affinity") for plain-HTTP upstreams.
//!
//! The pooled client hands every request to the pool, a dispatch channel and the connection
//! task that owns the upstream socket, and hands the response body back the same way. For a
//! plain `http://` upstream (a local OpenAI-compatible server, a sidecar) the gateway can do
//! without all of that: each client connection keeps one HTTP/1 upstream connection of its own,
//! and the task that serves the client connection also polls that upstream connection (see
//! [`UpstreamAffinity::drive`]), so a request never crosses tasks.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type AffineConnection = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

/// The upstream connection of one client connection: at most one HTTP/1 connection to one
/// plain-HTTP upstream, polled by the client connection's own task.
///
/// The server creates one per accepted client connection, runs the connection's future through
/// [`UpstreamAffinity::drive`], and passes a clone to
/// [`Forwarder::forward_with`](crate::Forwarder::forward_with) for each request of that
/// connection. Cheap to clone (an `Arc`); clones share the connection.
///
/// A request uses the affine connection only when it is idle and ready *now* and connected to
/// the same upstream; otherwise (an HTTP/2 client sending requests concurrently, a second
/// upstream, `https://`) it goes through the shared pool, so no request ever waits behind
/// another one. When the upstream closes the connection the next request connects again; when
/// the client connection ends, or no request used the connection for a whole
/// [`pool_idle_timeout`](crate::ForwardConfig::pool_idle_timeout), it is closed.
#[derive(Clone)]
pub struct UpstreamAffinity {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The driver task's waker, shared by the two flag wakers below.
    task: Arc<Mutex<Option<Waker>>>,
    /// What the upstream connection is polled with: marks it as having work and wakes the
    /// driver, so the driver polls it only when something happened on it.
    connection: FlagWaker,
    /// The same for the idle timer.
    timer: FlagWaker,
}

#[derive(Default)]
struct State {
    slot: Slot,
    /// The client connection has ended: no connection is installed any more.
    ended: bool,
}

/// A waker that records that it was woken, then wakes the driver task.
struct FlagWaker {
    flag: Arc<FlagWake>,
    waker: Waker,
}

impl FlagWaker {
    fn new(task: &Arc<Mutex<Option<Waker>>>) -> FlagWaker {
        let flag = Arc::new(FlagWake {
            woken: AtomicBool::new(false),
            task: Arc::clone(task),
        });
        FlagWaker {
            waker: Waker::from(Arc::clone(&flag)),
            flag,
        }
    }

    /// Whether it was woken since the last call; a wake-up after this call marks it again.
    fn take(&self) -> bool {
        self.flag.woken.swap(false, Ordering::AcqRel)
    }
}

struct FlagWake {
    /// Set by every wake-up (for the connection: socket readiness, a queued request, the
    /// response body wanting more), cleared by the driver right before it polls.
    woken: AtomicBool,
    task: Arc<Mutex<Option<Waker>>>,
}

impl Wake for FlagWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = &*task {
            task.wake_by_ref();
        }
    }
}

#[derive(Default)]
enum Slot {
    #[default]
    Empty,
    /// A request is connecting; concurrent requests use the pool meanwhile.
    Connecting,
    /// Boxed: the connection is large, and this is one allocation per upstream connection.
    Open(Box<Open>),
}

struct Open {
    /// The upstream this connection goes to (always plain HTTP).
    target: Authority,
    sender: SendRequest<Full<Bytes>>,
    connection: AffineConnection,
    /// Closed when idle for a whole period of this (the pool's idle timeout).
    idle_timeout: Duration,
    /// A request was sent since the idle timer last looked.
    used: bool,
}

/// How a request fared on the affine path.
pub(crate) enum Affine {
    /// The upstream answered, or the request failed in a way the pool would not fix.
    Done(Result<Response<Incoming>, Failure>),
    /// The affine connection was not usable, or the request came back unsent: send it through
    /// the pool (its URI is absolute again).
    UsePool(Request<Full<Bytes>>),
}

/// Why a request got no response headers, classified by the forwarder.
pub(crate) enum Failure {
    /// The pooled client failed (its error says whether connecting or the exchange failed).
    Pool(hyper_util::client::legacy::Error),
    /// Resolving or connecting failed (or took longer than the connect timeout).
    Connect(BoxError),
    /// The connection broke before the response headers arrived.
    Upstream(hyper::Error),
}

impl UpstreamAffinity {
    /// A handle without a connection; the first plain-HTTP request connects.
    pub fn new() -> UpstreamAffinity {
        let task = Arc::new(Mutex::new(None));
        UpstreamAffinity {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                connection: FlagWaker::new(&task),
                timer: FlagWaker::new(&task),
                task,
            }),
        }
    }

    /// Runs `connection` (the client connection's future) and, on the same task, the upstream
    /// connection installed by its requests. Returns `connection`'s output; the upstream
    /// connection is closed then (or when this future is dropped).
    ///
    /// Wrap the whole connection future, graceful-shutdown watcher included: in-flight
    /// responses keep streaming until the client connection finishes.
    pub fn drive<F: Future>(self, connection: F) -> Drive<F> {
        Drive {
            // Boxed once per client connection, so `Drive` is `Unpin` without unsafe projection.
            connection: Box::pin(connection),
            affinity: self,
            task: None,
            idle: None,
        }
    }

    /// Sends `request` (absolute `http://` URI of `target`) on this client connection's
    /// upstream connection, connecting one if there is none.
    pub(crate) async fn send(
        &self,
        connector: &HttpConnector,
        connect_timeout: Duration,
        idle_timeout: Duration,
        target: &Authority,
        mut request: Request<Full<Bytes>>,
    ) -> Affine {
        let absolute = request.uri().clone();
        // hyper's connection writes the URI as given; an origin server expects origin-form.
        *request.uri_mut() = origin_form(&absolute);
        enum Decision<F> {
            Sent(F),
            Connect(Request<Full<Bytes>>),
            Pool(Request<Full<Bytes>>),
        }
        let decision = {
            let mut guard = self.lock();
            let state = &mut *guard;
            match &mut state.slot {
                _ if state.ended => Decision::Pool(request),
                Slot::Open(open) if open.target == *target && open.sender.is_ready() => {
                    // Enqueued here, under the lock: nobody else can take this turn.
                    open.used = true;
                    Decision::Sent(open.sender.try_send_request(request))
                }
                Slot::Open(open) if open.sender.is_closed() => {
                    // Closed but not yet reaped by the driver: replace it.
                    state.slot = Slot::Connecting;
                    Decision::Connect(request)
                }
                // Busy (HTTP/2 client, concurrent requests), connecting, or another upstream.
                Slot::Open(_) | Slot::Connecting => Decision::Pool(request),
                Slot::Empty => {
                    state.slot = Slot::Connecting;
                    Decision::Connect(request)
                }
            }
        };
        let sending = match decision {
            Decision::Sent(sending) => sending,
            Decision::Pool(request) => return Affine::UsePool(with_uri(request, absolute)),
            Decision::Connect(request) => {
                let connecting = ConnectingGuard(self);
                let (sender, connection) =
                    match connect(connector.clone(), connect_timeout, absolute.clone()).await {
                        Ok(connected) => connected,
                        Err(failure) => return Affine::Done(Err(failure)),
                    };
                let sending = {
                    let mut state = self.lock();
                    if state.ended {
                        // The client connection is gone; this request still gets its answer.
                        drop(state);
                        return Affine::UsePool(with_uri(request, absolute));
                    }
                    let mut open = Box::new(Open {
                        target: target.clone(),
                        sender,
                        connection,
                        idle_timeout,
                        used: true,
                    });
                    // A fresh connection takes its first request before it is polled.
                    let sending = open.sender.try_send_request(request);
                    state.slot = Slot::Open(open);
                    sending
                };
                drop(connecting);
                // The driver must poll the new connection (woken outside the lock).
                self.shared.connection.waker.wake_by_ref();
                sending
            }
        };
        match sending.await {
            Ok(response) => Affine::Done(Ok(response)),
            Err(mut error) => match error.take_message() {
                // Never written to the socket (the provider closed the idle connection as we
                // sent): safe to send once more, through the pool.
                Some(request) => {
                    tracing::debug!("affine upstream connection closed before sending; retrying");
                    Affine::UsePool(with_uri(request, absolute))
                }
                None => Affine::Done(Err(Failure::Upstream(error.into_error()))),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while polling the connection leaves nothing half-updated that matters: the
        // worst case is a connection the next request finds closed.
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for UpstreamAffinity {
    fn default() -> UpstreamAffinity {
        UpstreamAffinity::new()
    }
}

impl fmt::Debug for UpstreamAffinity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        let slot = match &state.slot {
            Slot::Empty => "empty",
            Slot::Connecting => "connecting",
            Slot::Open(_) => "open",
        };
        f.debug_struct("UpstreamAffinity")
            .field("slot", &slot)
            .field("ended", &state.ended)
            .finish()
    }
}

/// The future returned by [`UpstreamAffinity::drive`]: polls the client connection, then the
/// upstream connection, on one task.
#[must_use = "futures do nothing unless polled"]
pub struct Drive<F> {
    connection: Pin<Box<F>>,
    affinity: UpstreamAffinity,
    /// The task waker last handed to the flag wakers (compared, not locked, per poll).
    task: Option<Waker>,
    /// Looks at the upstream connection once per idle timeout; armed with the first one.
    idle: Option<Pin<Box<Sleep>>>,
}

impl<F: Future> Future for Drive<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if !this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()))
        {
            let task = cx.waker().clone();
            *this
                .affinity
                .shared
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            this.task = Some(task);
        }
        // Upstream first, so that what it delivers (response headers, body data) is taken by
        // the client side in this same poll rather than in another turn of the task.
        this.poll_upstream();
        let output = this.connection.as_mut().poll(cx);
        if output.is_pending() {
            // A request queued during the client side's poll is written now.
            this.poll_upstream();
            this.poll_idle();
        } else {
            this.affinity.close();
        }
        output
    }
}

impl<F> Drive<F> {
    /// Polls the upstream connection if it was woken since the last poll.
    fn poll_upstream(&mut self) {
        let shared = &*self.affinity.shared;
        if !shared.connection.take() {
            return;
        }
        let mut cx = Context::from_waker(&shared.connection.waker);
        let mut state = self.affinity.lock();
        let Slot::Open(open) = &mut state.slot else {
            return;
        };
        if let Poll::Ready(result) = Pin::new(&mut open.connection).poll(&mut cx) {
            // The provider closed it (idle keep-alive ends, a body dropped early) or it broke:
            // the next request connects again.
            if let Err(error) = result {
                tracing::debug!("affine upstream connection ended: {error}");
            }
            state.slot = Slot::Empty;
        } else if self.idle.is_none() {
            self.idle = Some(Box::pin(tokio::time::sleep(open.idle_timeout)));
            // Registered with the timer by `poll_idle`.
            shared.timer.waker.wake_by_ref();
        }
    }

    /// Closes the upstream connection once no request used it for a whole idle timeout, like
    /// the pool does with its idle connections (so after one to two timeouts of idleness).
    fn poll_idle(&mut self) {
        let shared = &*self.affinity.shared;
        if !shared.timer.take() {
            return;
        }
        let Some(idle) = self.idle.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(&shared.timer.waker);
        if idle.as_mut().poll(&mut cx).is_pending() {
            return;
        }
        let mut state = self.affinity.lock();
        let again = match &mut state.slot {
            // Used, or an exchange still in flight (a long stream): look again a period later.
            Slot::Open(open) if open.used || !open.sender.is_ready() => {
                open.used = false;
                Some(open.idle_timeout)
            }
            Slot::Open(_) => {
                tracing::debug!("closing idle affine upstream connection");
                state.slot = Slot::Empty;
                None
            }
            Slot::Empty | Slot::Connecting => None,
        };
        drop(state);
        match again {
            Some(timeout) => {
                idle.as_mut().reset(Instant::now() + timeout);
                // Registers the new deadline; it cannot have passed yet.
                let _ = idle.as_mut().poll(&mut cx);
            }
            // The next connection arms a new timer.
            None => self.idle = None,
        }
    }
}

impl<F> Drop for Drive<F> {
    /// Also when the client connection is dropped unfinished (end of the grace period).
    fn drop(&mut self) {
        self.affinity.close();
    }
}

impl<F> fmt::Debug for Drive<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drive")
            .field("affinity", &self.affinity)
            .finish_non_exhaustive()
    }
}

impl UpstreamAffinity {
    /// The client connection ended: close the upstream connection, install none again.
    fn close(&self) {
        let mut state = self.lock();
        state.ended = true;
        // Dropping the connection closes its socket.
        state.slot = Slot::Empty;
        drop(state);
        // Stray clones of the handle must not keep the finished task's waker.
        *self
            .shared
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// Frees the `Connecting` slot when connecting fails or the request is abandoned (timeout,
/// client gone) before the connection is installed.
struct ConnectingGuard<'a>(&'a UpstreamAffinity);

impl Drop for ConnectingGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        if matches!(state.slot, Slot::Connecting) {
            state.slot = Slot::Empty;
        }
    }
}

/// TCP connect (with `TCP_NODELAY`, set on the connector) and the HTTP/1 handshake; the connect
/// timeout covers name resolution too, like the pool's connector.
async fn connect(
    mut connector: HttpConnector,
    timeout: Duration,
    uri: Uri,
) -> Result<(SendRequest<Full<Bytes>>, AffineConnection), Failure> {
    let io = match tokio::time::timeout(timeout, connector.call(uri)).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => return Err(Failure::Connect(error.into())),
        // `TimedOut` is what the classification reads as a connect timeout.
        Err(_elapsed) => {
            return Err(Failure::Connect(
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into(),
            ))
        }
    };
    http1::handshake(io).await.map_err(Failure::Upstream)
}

/// `/path?query` of an absolute URI (`target_uri` always has a path).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path_and_query) => Uri::from(path_and_query.clone()),
        None => Uri::from_static("/"),
    }
}

fn with_uri(mut request: Request<Full<Bytes>>, uri: Uri) -> Request<Full<Bytes>> {
    *request.uri_mut() = uri;
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query() {
        let uri: Uri = "http://127.0.0.1:8000/v1/chat/completions?x=1"
            .parse()
            .unwrap();
        assert_eq!(origin_form(&uri), "/v1/chat/completions?x=1");
        let bare: Uri = "http://127.0.0.1:8000".parse().unwrap();
        assert_eq!(origin_form(&bare), "/");
    }

    #[test]
    fn handle_is_send_sync_and_debug_shows_the_state_only() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<UpstreamAffinity>();
        let affinity = UpstreamAffinity::new();
        assert_eq!(
            format!("{affinity:?}"),
            "UpstreamAffinity { slot: \"empty\", ended: false }"
        );
    }

    #[tokio::test]
    async fn the_driver_returns_the_connection_output_and_ends_the_handle() {
        let affinity = UpstreamAffinity::new();
        let output = affinity.clone().drive(async { 42 }).await;
        assert_eq!(output, 42);
        assert!(affinity.lock().ended);
    }
}
