//! The HTTP listener: accept, serve HTTP/1.1 and HTTP/2, shut down gracefully.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use compresh_forward::UpstreamAffinity;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::gateway::Gateway;

/// The client's socket address, attached to every request as an extension (the dashboard
/// throttles logins per client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// Default time in-flight requests and streams get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

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
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
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
                // This connection's own upstream connection, driven by its task (below).
                let affinity = UpstreamAffinity::new();
                let requests_affinity = affinity.clone();
                let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ClientAddr(peer));
                    request.extensions_mut().insert(requests_affinity.clone());
                    let gateway = Arc::clone(&gateway);
                    async move { Ok::<_, Infallible>(gateway.handle(request).await) }
                });
                let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = affinity.drive(connection).await {
                        tracing::debug!("connection ended with an error: {error}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
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
