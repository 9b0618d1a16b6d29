//! `hyper-proxy`: the smallest reverse proxy built from the same parts as Compresh (a hyper 1
//! HTTP/1 server, hyper-util's pooled client, one tokio thread), with none of its work: no auth,
//! limiter, header rewrite, body reading, usage or log. `benches/load.sh` measures it next to
//! Compresh and nginx as a floor: Compresh minus this is the cost of what Compresh does; this
//! minus nginx is the cost of the hyper/tokio design itself.
//!
//! `--per-connection` swaps the pooled client for the design a leaner Compresh core could use:
//! one task per client connection drives both that connection and an upstream connection of
//! its own (`hyper::client::conn::http1`), so a request never crosses tasks. Not run by
//! `load.sh`; `benches/RESULTS.md` (fourth pass) has the A/B against the pooled floor.
//!
//! ```text
//! hyper-proxy --upstream 127.0.0.1:9000 [--listen 127.0.0.1:0] [--per-connection]
//! ```
//! Prints `listening on http://ADDR` once bound.

use std::cell::RefCell;
use std::convert::Infallible;
use std::rc::Rc;

use clap::Parser;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about = "Minimal hyper reverse proxy: the floor for benches/load.sh")]
struct Args {
    /// Upstream `HOST:PORT` (plain HTTP).
    #[arg(long)]
    upstream: Authority,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// One task per client connection, driving its own upstream connection (no pool).
    #[arg(long)]
    per_connection: bool,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.per_connection {
        tokio::task::LocalSet::new().block_on(&runtime, serve_per_connection(args))
    } else {
        runtime.block_on(serve(args))
    }
}

/// Binds the listen address and announces it the way `load.sh` waits for.
async fn bind(args: &Args) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(&args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

async fn serve(args: Args) -> std::io::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
    let listener = bind(&args).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let client = client.clone();
        let upstream = args.upstream.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |request| forward(client.clone(), upstream.clone(), request));
            // A client that goes away mid-request is not an error worth reporting here.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    client: Client<HttpConnector, Incoming>,
    upstream: Authority,
    mut request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(upstream);
    let Ok(uri) = Uri::from_parts(parts) else {
        return Ok(status(StatusCode::BAD_REQUEST));
    };
    *request.uri_mut() = uri;
    Ok(match client.request(request).await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => status(StatusCode::BAD_GATEWAY),
    })
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = code;
    response
}

async fn serve_per_connection(args: Args) -> std::io::Result<()> {
    let listener = bind(&args).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let upstream = args.upstream.clone();
        tokio::task::spawn_local(async move {
            // Failures end this client connection only; the benchmark counts them as errors.
            let Ok(upstream) = TcpStream::connect(upstream.as_str()).await else {
                return;
            };
            let _ = upstream.set_nodelay(true);
            let Ok((sender, upstream_connection)) =
                hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await
            else {
                return;
            };
            // HTTP/1 without pipelining: one request at a time per client connection, so one
            // upstream connection serves it and the sender is never borrowed across an await.
            let sender: Rc<RefCell<SendRequest<Incoming>>> = Rc::new(RefCell::new(sender));
            let service = service_fn(move |request: Request<Incoming>| {
                let sender = Rc::clone(&sender);
                async move {
                    // Wait until the previous answer is fully read off the upstream connection.
                    let ready = std::future::poll_fn(|cx| sender.borrow_mut().poll_ready(cx)).await;
                    let sending = ready.map(|()| sender.borrow_mut().send_request(request));
                    Ok::<_, Infallible>(match sending {
                        Ok(sending) => match sending.await {
                            Ok(response) => response.map(BodyExt::boxed),
                            Err(_) => status(StatusCode::BAD_GATEWAY),
                        },
                        Err(_) => status(StatusCode::BAD_GATEWAY),
                    })
                }
            });
            let client_connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // Both connections are polled by this one task.
            tokio::select! {
                _ = client_connection => {}
                _ = upstream_connection => {}
            }
        });
    }
}
