//! End-to-end harness: the real gateway server type on `127.0.0.1:0` with a fresh data
//! directory, pointed at the Rust mock provider, plus a small HTTP client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use compresh::bootstrap::{first_start, DataDir};
use compresh::gateway::{Gateway, GatewayConfig};
use compresh::ops::{self, ProviderRequest};
use compresh::server::RunningServer;
use compresh_mock::MockProvider;
use compresh_vault::ProviderSecret;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub mod wire;

/// The OpenAI provider key the harness stores (must never leak anywhere).
pub const OPENAI_SECRET: &str = "sk-test-OPENAI-provider-secret-0123456789";
/// The Anthropic provider key the harness stores.
pub const ANTHROPIC_SECRET: &str = "sk-ant-test-ANTHROPIC-provider-secret-987654";

/// A running gateway with its data directory and mock provider.
pub struct TestGateway {
    /// Keeps the data directory alive.
    pub dir: TempDir,
    /// The opened data directory (store + master keys) the server uses.
    pub data: DataDir,
    /// The mock provider all providers point at.
    pub mock: MockProvider,
    /// The key created on first start.
    pub api_key: String,
    /// The gateway the server serves (its metrics stay readable after a shutdown began).
    pub gateway: Arc<Gateway>,
    addr: SocketAddr,
    server: Option<RunningServer>,
    /// A graceful shutdown begun by [`TestGateway::begin_shutdown`].
    stopping: Option<JoinHandle<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response read completely.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Assert `reply` is a gateway error `{"error":{"message","type","code"}}` with this status.
pub fn assert_error(reply: &Reply, status: StatusCode, error_type: &str, code: &str) {
    assert_status(reply, status);
    let json = reply.json();
    assert_eq!(json["error"]["type"], error_type, "{json}");
    assert_eq!(json["error"]["code"], code, "{json}");
    assert!(json["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(reply.header("content-type"), Some("application/json"));
}

/// Assert a gateway `404` (unknown route, account or key): the documented error shape.
pub fn assert_not_found(reply: &Reply) {
    assert_error(
        reply,
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "not_found",
    );
}

/// Assert the status, showing the body when it differs.
pub fn assert_status(reply: &Reply, status: StatusCode) {
    assert_eq!(
        reply.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
}

impl TestGateway {
    /// Start with the default configuration.
    pub async fn start() -> Self {
        Self::start_with(GatewayConfig::default()).await
    }

    /// Start with a configuration of the test's choosing. With `COMPRESH_E2E_NO_RAW_LANE` set
    /// the gateway serves every connection with hyper, so the whole suite checks that path too
    /// (`.ci/run` runs it both ways).
    pub async fn start_with(mut config: GatewayConfig) -> Self {
        if std::env::var_os("COMPRESH_E2E_NO_RAW_LANE").is_some() {
            config.raw_lane = false;
        }
        Self::start_exactly(config).await
    }

    /// [`TestGateway::start_with`] the default configuration and these upstream settings.
    pub async fn start_with_forward(forward: compresh_forward::ForwardConfig) -> Self {
        Self::start_with(GatewayConfig {
            forward,
            ..GatewayConfig::default()
        })
        .await
    }

    /// [`TestGateway::start_with`] whatever the environment says (for tests that compare the
    /// two paths).
    pub async fn start_exactly(config: GatewayConfig) -> Self {
        let mock = MockProvider::start().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let data = DataDir::open(dir.path(), None).expect("open data dir");
        let first = first_start(&data, Some(OPENAI_SECRET.to_owned()), None)
            .expect("first start")
            .expect("store was empty");
        // Point the providers at the mock (the first start used the real default base URLs).
        set_provider(
            &data,
            "openai",
            "openai",
            Some(&mock.openai_base_url()),
            OPENAI_SECRET,
        );
        set_provider(
            &data,
            "anthropic",
            "anthropic",
            Some(&mock.base_url()),
            ANTHROPIC_SECRET,
        );
        let gateway = Gateway::new(data.store.clone(), Arc::clone(&data.master_keys), config)
            .expect("gateway");
        let gateway = Arc::new(gateway);
        let server = RunningServer::start(
            Arc::clone(&gateway),
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Duration::from_secs(10),
        )
        .await
        .expect("bind");
        Self {
            dir,
            data,
            mock,
            api_key: first.api_key.expose_secret().to_owned(),
            gateway,
            addr: server.addr(),
            server: Some(server),
            stopping: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The server's address (no longer accepting once a shutdown began).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Send a request and return the response with its body unread.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Incoming> {
        let mut request = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).expect("request");
        self.client
            .request(request)
            .await
            .expect("gateway answered")
    }

    /// Send a request and read the whole response.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let response = self.send_raw(method, path, headers, body).await;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// POST a chat completion with a bearer key.
    pub async fn chat(&self, key: &str, body: &str) -> Reply {
        let auth = format!("Bearer {key}");
        self.send(
            Method::POST,
            "/v1/chat/completions",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_owned(),
        )
        .await
    }

    /// Create another key on the default account with the given rpm.
    pub fn create_key(&self, rpm: Option<u32>) -> (String, String) {
        let (key, record) = ops::create_key(
            &self.data.store,
            ops::KeyRequest {
                account: "default".to_owned(),
                name: "test".to_owned(),
                rpm,
                ..ops::KeyRequest::default()
            },
        )
        .expect("create key");
        (key.expose_secret().to_owned(), record.id.to_string())
    }

    /// Open the same data directory again, as the CLI (another connection) would.
    pub fn second_handle(&self) -> DataDir {
        DataDir::open(self.dir.path(), None).expect("second open")
    }

    /// Begin a graceful shutdown without waiting for it: the server stops accepting and
    /// lets in-flight requests finish; [`TestGateway::shutdown`] waits for the end.
    pub fn begin_shutdown(&mut self) {
        if let Some(server) = self.server.take() {
            self.stopping = Some(tokio::spawn(server.shutdown()));
        }
    }

    /// Gracefully stop the server (unless a shutdown was begun already) and wait for it.
    pub async fn shutdown(&mut self) {
        self.begin_shutdown();
        if let Some(stopping) = self.stopping.take() {
            stopping.await.expect("the server shut down");
        }
    }
}

/// Store a provider through the same operation the CLI uses.
pub fn set_provider(data: &DataDir, name: &str, kind: &str, base_url: Option<&str>, secret: &str) {
    ops::set_provider(
        &data.store,
        &data.master_keys,
        ProviderRequest {
            account: "default".to_owned(),
            name: name.to_owned(),
            kind: Some(kind.to_owned()),
            base_url: base_url.map(str::to_owned),
            secret: (!secret.is_empty()).then(|| ProviderSecret::new(secret.to_owned())),
        },
    )
    .expect("set provider");
}

/// Wait until `check` holds, polling; panics with `what` after `timeout`.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until an async check holds.
pub async fn eventually_async<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
