//! The raw HTTP/1.1 lane: proxied requests served on the socket, without hyper.
//!
//! hyper's HTTP/1 server and client cost about 17 µs of CPU per proxied request on the benchmark
//! machine, more than the gateway's own work (`benches/RESULTS.md`, eighth pass). For the
//! traffic that dominates a gateway (a `POST /v1/...` with a `Content-Length` body, kept alive,
//! to a plain-`http://` provider such as a local OpenAI-compatible server) the lane parses the
//! request in place with `httparse`, runs the same checks as [`Gateway::handle`], writes the
//! upstream request from the client's own header lines ([`compresh_forward::wire`]) and relays
//! the answer piece by piece, observing usage on the way.
//!
//! The lane serves a request only when it can answer it exactly as hyper's path would. Anything
//! else goes to hyper before the gateway's state has changed: another method or route,
//! HTTP/1.0, `Expect`, `Upgrade`, chunked request bodies, `Connection: close`, a target with
//! a fragment or unusual characters, an HTTP/2 preface, a malformed head, a failed check
//! (hyper's path then answers 401/403/400/429/413 as it always has), an `https://` provider.
//! The key is checked on the head, so only a request with a usable key gets its body read
//! here. The bytes read so far are replayed to hyper ([`rewind::Rewind`]), which serves the
//! connection from then on. The commit point is the rate limiter: once it has counted the
//! request, the lane answers it itself, including the gateway's own errors (503 unreachable,
//! 504 timeout, 502 upstream failure). Like hyper, it drops a request whose client leaves
//! before the answer's head, and says `Connection: close` once the server is shutting down.

mod relay;
mod request;
mod rewind;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use self::request::{parse, Parse};
pub(crate) use self::rewind::Rewind;
use crate::gateway::Gateway;

/// A request head still incomplete after this many bytes goes to hyper (whose limit is about
/// 400 KiB); a larger one that arrives complete is served.
const MAX_LANE_HEAD: usize = 64 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// How a lane connection ended.
pub(crate) enum Ended {
    /// The client closed it, or the server is shutting down.
    Closed,
    /// hyper serves the rest: the client's stream and the bytes already read from it.
    Handover(TcpStream, Bytes),
}

/// Serves `client` until it closes, the server shuts down (`shutdown` turns true: the
/// connection closes between requests), or a request must go to hyper.
///
/// # Errors
/// Reading or writing the client failed, or the provider's answer broke off after its head;
/// the connection is closed (a partial answer cannot be taken back).
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    client: TcpStream,
    shutdown: watch::Receiver<bool>,
) -> io::Result<Ended> {
    let mut connection = relay::Connection::new(&gateway, client, shutdown.clone());
    let mut inbound = BytesMut::with_capacity(READ_CHUNK);
    // One waiter for the connection's life: a new `changed()` per request took and released the
    // channel's waiter-list lock every time (about 1 % of the lane's CPU in `perf`).
    let shutdown = signalled(shutdown);
    // Closes the upstream connection of a client that stays idle, as hyper's affinity does
    // after `pool_idle_timeout`. Armed once and moved on only when it fires early (requests
    // came in between): re-arming a timer for every request cost more than an idle socket.
    // (A zero timeout already refuses every reuse; a timer of zero would spin.)
    let idle_timeout = gateway.forwarder().config().pool_idle_timeout;
    let expires = !idle_timeout.is_zero();
    let upstream_expiry = tokio::time::sleep(idle_timeout);
    tokio::pin!(shutdown, upstream_expiry);
    loop {
        let request = loop {
            match parse(&inbound, gateway.body_limit()) {
                Parse::Lane(request) => break request,
                Parse::Handover => return Ok(connection.hand_over(inbound)),
                Parse::Partial if inbound.len() > MAX_LANE_HEAD => {
                    return Ok(connection.hand_over(inbound));
                }
                Parse::Partial => {}
            }
            // Between requests (nothing pipelined) a shutdown closes the connection, as hyper's
            // graceful shutdown does for idle keep-alive connections.
            let idle = inbound.is_empty();
            inbound.reserve(READ_CHUNK);
            tokio::select! {
                // A request already on its way is read (and answered) first.
                biased;
                read = connection.client().read_buf(&mut inbound) => {
                    if read? == 0 {
                        return Ok(Ended::Closed);
                    }
                }
                () = &mut shutdown, if idle => return Ok(Ended::Closed),
                () = &mut upstream_expiry, if idle && expires => {
                    let now = Instant::now();
                    let expiry = connection.upstream_idle_since().map(|since| since + idle_timeout);
                    let next = match expiry {
                        Some(expiry) if expiry > now => expiry,
                        expired => {
                            if expired.is_some() {
                                connection.close_upstream();
                            }
                            now + idle_timeout
                        }
                    };
                    upstream_expiry.as_mut().reset(next.into());
                }
            }
        };
        let started = Instant::now();
        let Some(committed) = connection.commit(&inbound[..request.head_len], &request, started)
        else {
            return Ok(connection.hand_over(inbound));
        };
        let total = request.head_len + request.body_len;
        while inbound.len() < total {
            // Grown as the body arrives: a declared length alone reserves no memory.
            inbound.reserve((total - inbound.len()).min(MAX_LANE_HEAD));
            if connection.client().read_buf(&mut inbound).await? == 0 {
                // Counted by the limiter but never complete: nothing to answer, as on hyper's
                // path, whose answer to the broken body would find the client gone too.
                return Ok(Ended::Closed);
            }
        }
        connection.serve(&mut inbound, &request, committed).await?;
        if connection.closing() {
            return Ok(Ended::Closed);
        }
        // A large request's buffer is not kept for the connection's idle life.
        if inbound.is_empty() && inbound.capacity() > MAX_LANE_HEAD {
            inbound = BytesMut::with_capacity(READ_CHUNK);
        }
    }
}

/// Resolves once `shutdown` is (or turns) true; never if its sender is gone without that.
async fn signalled(mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
