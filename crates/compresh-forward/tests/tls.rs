//! HTTPS and HTTP/2 upstreams: a local TLS server (certificate from a CA generated at test time,
//! ALPN `h2` + `http/1.1`), trusted through `ForwardConfig::extra_root_certificates`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use compresh_forward::{
    parse_certificates, ForwardConfig, ForwardError, Forwarder, ProviderKind, UnreachableReason,
    Upstream,
};
use compresh_vault::ProviderSecret;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

mod common;

use common::{assert_unreachable, chat_body, read_exactly, WAIT};

const PROVIDER_KEY: &str = "sk-provider-secret-tls-77";
const CLIENT_KEY: &str = "comp_live_client_key_tls_1";
/// A CA and a server certificate for `localhost` and `127.0.0.1` issued by it.
struct TestPki {
    ca_der: Vec<u8>,
    server_chain: Vec<CertificateDer<'static>>,
    server_key_der: Vec<u8>,
}

impl TestPki {
    fn generate() -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Compresh Test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();
        TestPki {
            ca_der: ca.der().to_vec(),
            server_chain: vec![server.der().clone()],
            server_key_der: server_key.serialize_der(),
        }
    }
}

/// What the TLS server saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    version: Version,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct ServerState {
    connections: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// When set, the next request is answered with an SSE body fed from this channel.
    stream: Mutex<Option<mpsc::Receiver<Bytes>>>,
}

/// An HTTPS server on 127.0.0.1:0 speaking HTTP/1.1 and HTTP/2 (ALPN), answering `{"ok":true}`
/// or a fed SSE stream.
struct TlsServer {
    port: u16,
    state: Arc<ServerState>,
}

impl TlsServer {
    async fn start(pki: &TestPki) -> TlsServer {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone())),
        )
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(ServerState::default());
        let accept_state = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let state = Arc::clone(&accept_state);
                tokio::spawn(async move {
                    // A client that rejects our certificate aborts the handshake: not an error
                    // of the server under test.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| handle(Arc::clone(&state), request));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsServer { port, state }
    }

    fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The next request gets an SSE answer whose chunks are the ones sent on the returned
    /// channel; dropping the sender ends the stream.
    fn stream_next(&self) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(4);
        *self.state.stream.lock().unwrap() = Some(rx);
        tx
    }
}

async fn handle(
    state: Arc<ServerState>,
    request: Request<Incoming>,
) -> Result<Response<ServerBody>, Infallible> {
    let (head, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    state.seen.lock().unwrap().push(Seen {
        version: head.version,
        path_and_query: head
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_default(),
        headers: head.headers,
        body,
    });
    let stream = state.stream.lock().unwrap().take();
    let response = match stream {
        Some(rx) => Response::builder()
            .header("content-type", "text/event-stream")
            .body(ServerBody::Stream(rx)),
        None => Response::builder()
            .header("content-type", "application/json")
            .body(ServerBody::Full(Full::new(Bytes::from_static(
                br#"{"ok":true}"#,
            )))),
    };
    Ok(response.unwrap())
}

/// A fixed body, or one that yields each chunk as the test sends it.
enum ServerBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            ServerBody::Full(full) => Pin::new(full).poll_frame(cx),
            ServerBody::Stream(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| Ok(Frame::data(c)))),
        }
    }
}

fn forwarder_trusting(ca_der: &[u8]) -> Forwarder {
    Forwarder::new(ForwardConfig {
        extra_root_certificates: vec![ca_der.to_vec()],
        ..ForwardConfig::default()
    })
    .unwrap()
}

fn openai(base_url: &str) -> Upstream {
    Upstream::new(
        "tls-openai",
        ProviderKind::OpenAi,
        Some(base_url),
        Some(ProviderSecret::new(PROVIDER_KEY.to_owned())),
    )
    .unwrap()
}

fn head(method: Method, path_and_query: &str) -> Parts {
    Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

async fn forward_ok(fwd: &Forwarder, up: &Upstream, method: Method, pq: &str) -> Bytes {
    let body = if method == Method::GET {
        Bytes::new()
    } else {
        chat_body(false)
    };
    let response = fwd.forward(up, head(method, pq), body).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn https_upstream_gets_the_provider_key_over_http2() {
    let pki = TestPki::generate();
    let server = TlsServer::start(&pki).await;
    let fwd = forwarder_trusting(&pki.ca_der);
    let up = openai(&format!("https://localhost:{}/v1", server.port));

    let answer = forward_ok(&fwd, &up, Method::POST, "/v1/chat/completions?x=1").await;
    assert_eq!(answer, Bytes::from_static(br#"{"ok":true}"#));

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    assert_eq!(seen.version, Version::HTTP_2, "ALPN should pick h2");
    assert_eq!(seen.path_and_query, "/v1/chat/completions?x=1");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {PROVIDER_KEY}")
    );
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(
        !seen
            .headers
            .values()
            .any(|v| v.as_bytes().windows(5).any(|w| w == b"comp_")),
        "{:?}",
        seen.headers
    );
    // The authority travels as :authority; a Host header, if any, must match it (RFC 9113
    // 8.3.1).
    let authority = format!("localhost:{}", server.port);
    assert!(
        seen.headers
            .get_all("host")
            .iter()
            .all(|h| h == authority.as_str()),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.body, chat_body(false));
}

#[tokio::test]
async fn sse_streams_incrementally_over_http2() {
    let pki = TestPki::generate();
    let server = TlsServer::start(&pki).await;
    let fwd = forwarder_trusting(&pki.ca_der);
    let up = openai(&format!("https://localhost:{}/v1", server.port));

    let feed = server.stream_next();
    let chunks = [
        Bytes::from_static(b"data: {\"n\":1}\n\n"),
        Bytes::from_static(b"data: {\"n\":2}\n\n"),
        Bytes::from_static(b"data: [DONE]\n\n"),
    ];
    feed.send(chunks[0].clone()).await.unwrap();
    let response = fwd
        .forward(
            &up,
            head(Method::POST, "/v1/chat/completions"),
            chat_body(true),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(server.seen()[0].version, Version::HTTP_2);
    let mut body = response.into_body();

    // Each chunk reaches the client before the next one exists on the server.
    read_exactly(&mut body, &chunks[0]).await;
    feed.send(chunks[1].clone()).await.unwrap();
    read_exactly(&mut body, &chunks[1]).await;
    feed.send(chunks[2].clone()).await.unwrap();
    read_exactly(&mut body, &chunks[2]).await;
    drop(feed);
    // The stream ends: h2 may deliver END_STREAM as one last empty DATA frame.
    loop {
        match tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
            None => break,
            Some(frame) => {
                let data = frame.unwrap().into_data().unwrap_or_default();
                assert!(
                    data.is_empty(),
                    "unexpected data after the last chunk: {data:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn http2_connection_is_reused_sequentially_and_concurrently() {
    let pki = TestPki::generate();
    let server = TlsServer::start(&pki).await;
    let fwd = forwarder_trusting(&pki.ca_der);
    let up = openai(&format!("https://localhost:{}/v1", server.port));

    for _ in 0..3 {
        forward_ok(&fwd, &up, Method::GET, "/v1/models").await;
    }
    // Once the h2 connection is pooled, concurrent requests are multiplexed on it.
    let concurrent = (0..4).map(|_| {
        let fwd = fwd.clone();
        let up = up.clone();
        tokio::spawn(async move { forward_ok(&fwd, &up, Method::GET, "/v1/models").await })
    });
    for task in concurrent.collect::<Vec<_>>() {
        task.await.unwrap();
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 7);
    assert!(seen.iter().all(|s| s.version == Version::HTTP_2));
    assert_eq!(
        server.connections(),
        1,
        "one TCP connection for all requests"
    );
}

#[tokio::test]
async fn the_ca_can_be_given_as_pem() {
    let pki = TestPki::generate();
    let server = TlsServer::start(&pki).await;
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64_lines(&pki.ca_der)
    );
    let roots = parse_certificates(pem.as_bytes()).unwrap();
    assert_eq!(roots, vec![pki.ca_der.clone()]);
    let fwd = Forwarder::new(ForwardConfig {
        extra_root_certificates: roots,
        ..ForwardConfig::default()
    })
    .unwrap();
    // By IP address this time: the certificate carries 127.0.0.1 as an IP SAN.
    let up = openai(&format!("https://127.0.0.1:{}/v1", server.port));
    forward_ok(&fwd, &up, Method::GET, "/v1/models").await;
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn untrusted_certificate_is_503_tls() {
    let pki = TestPki::generate();
    let server = TlsServer::start(&pki).await;
    let base = format!("https://localhost:{}/v1", server.port);
    // Neither the Mozilla roots alone nor another CA vouch for the server's certificate.
    let other_ca = TestPki::generate().ca_der;
    for fwd in [
        Forwarder::new(ForwardConfig::default()).unwrap(),
        forwarder_trusting(&other_ca),
    ] {
        let err = fwd
            .forward(
                &openai(&base),
                head(Method::GET, "/v1/models"),
                Bytes::new(),
            )
            .await
            .unwrap_err();
        assert_unreachable(&err, Some("tls-openai"), UnreachableReason::Tls);
        assert_eq!(err.code(), "upstream_unreachable");
        assert_eq!(
            err.message(),
            "Could not reach provider 'tls-openai': TLS handshake failed."
        );
    }
    assert!(server.seen().is_empty(), "no request crossed the handshake");
}

/// A server that accepts TCP connections and never says a word: the TLS handshake hangs.
#[tokio::test]
async fn hanging_tls_handshake_is_503_within_the_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, mut held_rx) = mpsc::unbounded_channel::<TcpStream>();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            // Keep the socket open (silent) until the test ends.
            let _ = held_tx.send(socket);
        }
    });
    let fwd = Forwarder::new(ForwardConfig {
        connect_timeout: Duration::from_millis(300),
        // Without a handshake deadline the request would end here, as a 504.
        response_timeout: Duration::from_secs(5),
        ..ForwardConfig::default()
    })
    .unwrap();
    let up = openai(&format!("https://{addr}/v1"));
    let err = tokio::time::timeout(
        WAIT,
        fwd.forward(&up, head(Method::GET, "/v1/models"), Bytes::new()),
    )
    .await
    .expect("the forward call ends")
    .unwrap_err();
    assert_unreachable(&err, None, UnreachableReason::ConnectTimeout);
    assert_eq!(err.code(), "upstream_unreachable");
    // The TCP connection was made: it is the handshake that timed out.
    assert!(held_rx.try_recv().is_ok());
}

#[test]
fn an_invalid_extra_root_fails_the_build() {
    let err = Forwarder::new(ForwardConfig {
        extra_root_certificates: vec![b"not a certificate".to_vec()],
        ..ForwardConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, ForwardError::Client(_)), "{err:?}");
}

fn base64_lines(der: &[u8]) -> String {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    text.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}
