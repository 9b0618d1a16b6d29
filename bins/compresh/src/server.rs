//! The HTTP listener: accept, serve HTTP/1.1 and HTTP/2, shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compresh_forward::UpstreamAffinity;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::gateway::Gateway;
use crate::lane::{self, Ended, Rewind};

/// The client's socket address, attached to every request as an extension (the dashboard
/// throttles logins per client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Default time in-flight requests and streams get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How often the accept loop's otherwise idle timer fires. While any timer is due sooner than a
/// request's, arming the request's timeout (600 s by default) leaves the parked runtime alone.
/// With no timer armed, tokio wakes its own driver (an `eventfd` write, and one more turn of
/// the event loop) every time a request arms its response timeout, which is once per request
/// whenever the gateway is not busy enough to have another request in flight.
const TIMER_ANCHOR_PERIOD: Duration = Duration::from_secs(1);

/// Serve until `shutdown` resolves; then stop accepting, let in-flight requests (streams
/// included) finish for up to `grace`, and return.
pub async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    // Tells lane connections to close between requests (hyper's are told by `graceful`).
    let (lane_shutdown, lane_shutdown_seen) = watch::channel(false);
    let timer_anchor = tokio::time::sleep(TIMER_ANCHOR_PERIOD);
    tokio::pin!(shutdown, timer_anchor);
    loop {
        tokio::select! {
            () = &mut timer_anchor => {
                timer_anchor.as_mut().reset(tokio::time::Instant::now() + TIMER_ANCHOR_PERIOD);
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept failed: {error}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let gateway = Arc::clone(&gateway);
                let builder = builder.clone();
                // Held for the connection's whole life: `graceful.shutdown()` waits for it.
                let watcher = graceful.watcher();
                let lane_shutdown = lane_shutdown_seen.clone();
                tokio::spawn(async move {
                    let (stream, replay) = if gateway.raw_lane() {
                        match lane::serve(Arc::clone(&gateway), stream, lane_shutdown.clone()).await {
                            Ok(Ended::Handover(stream, replay)) => (stream, replay),
                            Ok(Ended::Closed) => return,
                            Err(error) => {
                                tracing::debug!("connection ended with an error: {error}");
                                return;
                            }
                        }
                    } else {
                        (stream, Bytes::new())
                    };
                    let io = Rewind::new(replay, stream);
                    let closing = *lane_shutdown.borrow();
                    serve_with_hyper(builder, gateway, io, peer, watcher, closing).await;
                });
            }
            () = &mut shutdown => break,
        }
    }
    let _ = lane_shutdown.send(true);
    drop(listener);
    tracing::info!(
        "shutting down: waiting up to {}s for in-flight requests",
        grace.as_secs()
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections finished"),
        () = tokio::time::sleep(grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    // Finished requests have queued their usage rows; write them all before returning.
    gateway.shutdown().await;
}

/// Serves a connection with hyper (HTTP/1.1 or HTTP/2), the lane's bytes replayed first.
/// `closing`: the server is already shutting down. hyper's graceful shutdown would then drop a
/// connection whose first request it has not read yet, the one the lane just handed over;
/// instead the connection serves the requests it has with keep-alive off, and `watcher` only
/// keeps the shutdown waiting for it.
async fn serve_with_hyper(
    mut builder: auto::Builder<TokioExecutor>,
    gateway: Arc<Gateway>,
    io: Rewind<TcpStream>,
    peer: SocketAddr,
    watcher: Watcher,
    closing: bool,
) {
    // This connection's own upstream connection, driven by its task (below).
    let affinity = UpstreamAffinity::new();
    let requests_affinity = affinity.clone();
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        request.extensions_mut().insert(requests_affinity.clone());
        let gateway = Arc::clone(&gateway);
        async move { Ok::<_, Infallible>(gateway.handle(request).await) }
    });
    let ended = if closing {
        builder.http1().keep_alive(false);
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let ended = affinity.drive(connection.into_owned()).await;
        drop(watcher);
        ended
    } else {
        let connection = builder.serve_connection(TokioIo::new(io), service);
        affinity.drive(watcher.watch(connection.into_owned())).await
    };
    if let Err(error) = ended {
        tracing::debug!("connection ended with an error: {error}");
    }
}

/// A server running on a background task (used by `serve` and by tests).
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// Bind `listen` (port 0 picks a free one) and serve `gateway` on it.
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn start(
        gateway: Arc<Gateway>,
        listen: SocketAddr,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(
            gateway,
            listener,
            async {
                let _ = stopped.await;
            },
            grace,
        ));
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Begin a graceful shutdown and wait until it completes.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
