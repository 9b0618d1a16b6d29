//! The real `compresh` binary: first start, the CLI while a server runs on the same data
//! directory, logs, and SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use compresh_mock::{Gate, MockProvider, MockResponse};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIN: &str = env!("CARGO_BIN_EXE_compresh");
const OPENAI_SECRET: &str = "sk-binary-test-OPENAI-SECRET-424242";
const MESSAGE_CONTENT: &str = "tell-nobody-this-prompt-text";

struct Server {
    child: Child,
    base: String,
    api_key: Option<String>,
    stderr: mpsc::Receiver<String>,
}

fn cli(data_dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("COMPRESH_MASTER_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run compresh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn start_server(data_dir: &Path, extra_env: &[(&str, &str)]) -> Server {
    let mut command = Command::new(BIN);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-grace",
            "20",
        ])
        .env_remove("COMPRESH_MASTER_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawn compresh serve");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut api_key = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let trimmed = line.trim();
            if trimmed.starts_with("comp_") {
                api_key = Some(trimmed.to_owned());
            }
            if let Some(base) = trimmed.strip_prefix("compresh listening on ") {
                let _ = tx.send((base.to_owned(), api_key.clone()));
            }
        }
    });
    let (base, api_key) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the server printed its address");
    Server {
        child,
        base,
        api_key,
        stderr: err_rx,
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn post(base: &str, path: &str, key: &str, body: &str) -> (StatusCode, Bytes) {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// `compresh providers set openai` to the mock, with the provider key on stdin.
fn point_openai_at(data_dir: &Path, mock: &MockProvider) {
    let out = cli(
        data_dir,
        &[
            "providers",
            "set",
            "openai",
            "--base-url",
            &mock.openai_base_url(),
        ],
        &format!("{OPENAI_SECRET}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chat_body() -> String {
    format!(r#"{{"model":"gpt-4o","messages":[{{"role":"user","content":"{MESSAGE_CONTENT}"}}]}}"#)
}

async fn wait_for_status(base: &str, key: &str, want: StatusCode) {
    for _ in 0..100 {
        if post(base, "/v1/chat/completions", key, &chat_body())
            .await
            .0
            == want
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    panic!("never got {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_cli_during_a_run_logs_and_shutdown() {
    let mock = MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start_server(&data, &[("OPENAI_API_KEY", OPENAI_SECRET)]);
    let first_key = server.api_key.clone().expect("the banner showed a key");
    assert_eq!(first_key.len(), 32);
    let base = server.base.clone();

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "master.key is private");
    }

    // Point openai at the mock from the CLI while the server runs (key from stdin).
    point_openai_at(&data, &mock);
    wait_for_status(&base, &first_key, StatusCode::OK).await;
    let seen = mock.last_request().unwrap();
    assert_eq!(
        seen.headers.get("authorization").unwrap(),
        &format!("Bearer {OPENAI_SECRET}")
    );

    // keys create prints the key alone on stdout.
    let out = cli(
        &data,
        &["keys", "create", "--name", "ci", "--rpm", "100"],
        "",
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let second_key = lines[0].to_owned();
    assert!(second_key.starts_with("comp_") && second_key.len() == 32);
    // Created by another process: the server sees it within a second.
    wait_for_status(&base, &second_key, StatusCode::OK).await;

    // keys list shows hints, never keys.
    let out = cli(&data, &["keys", "list"], "");
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(!listing.contains(&second_key) && !listing.contains(&first_key));
    let key_id = listing
        .lines()
        .find(|line| line.contains(" ci "))
        .and_then(|line| line.split_whitespace().next())
        .expect("the ci key is listed")
        .to_owned();
    assert!(
        listing.contains(&second_key[28..]),
        "the hint shows the last 4 characters"
    );

    // providers list shows the hint only.
    let out = cli(&data, &["providers", "list"], "");
    let providers = String::from_utf8(out.stdout).unwrap();
    assert!(providers.contains("openai") && !providers.contains(OPENAI_SECRET));

    // Master key rotation while running: requests keep working.
    let out = cli(&data, &["master-key", "rotate"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_status(&base, &first_key, StatusCode::OK).await;
    let (status, _) = post(&base, "/v1/chat/completions", &first_key, &chat_body()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "provider key readable after master-key rotation"
    );

    // Revocation from the CLI while running.
    let out = cli(&data, &["keys", "revoke", &key_id], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_status(&base, &second_key, StatusCode::UNAUTHORIZED).await;

    // A CLI error is one clear line and a non-zero exit.
    let out = cli(&data, &["accounts", "create", "default"], "");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("default"));

    // SIGTERM with a stream in flight: the stream finishes, then the process exits 0.
    let gate = Gate::new();
    mock.enqueue(MockResponse::GatedStream {
        chunks: vec![Bytes::from("data: a\n\n"), Bytes::from("data: [DONE]\n\n")],
        gate: gate.clone(),
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/v1/chat/completions"))
        .header("authorization", format!("Bearer {first_key}"))
        .body(Full::new(Bytes::from(
            r#"{"model":"gpt-4o","stream":true}"#,
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    terminate(&server.child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    gate.release();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, Bytes::from("data: a\n\ndata: [DONE]\n\n"));
    let (status, logs) = server.stop_after_signal();
    assert!(status.success(), "exit status {status}");

    // One access line per request, with the key id; never a secret or message content.
    assert!(logs.contains("\"key_id\""), "{logs}");
    assert!(logs.contains("\"status\":401"));
    for secret in [
        OPENAI_SECRET,
        first_key.as_str(),
        second_key.as_str(),
        MESSAGE_CONTENT,
    ] {
        assert!(!logs.contains(secret), "logs leaked {secret}");
    }
    // Nor the files in the data directory.
    for entry in std::fs::read_dir(&data).unwrap() {
        let mut bytes = Vec::new();
        std::fs::File::open(entry.unwrap().path())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        for secret in [OPENAI_SECRET, first_key.as_str(), second_key.as_str()] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
    }
}

/// One worker runs on a current-thread runtime, more on a multi-thread one: both forward a
/// request (a stream too) and stop cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_and_several_workers_both_serve_and_stop() {
    let mock = MockProvider::start().await;
    for workers in ["1", "3"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = start_server(&data, &[("COMPRESH_WORKER_THREADS", workers)]);
        let key = server.api_key.clone().expect("the banner showed a key");
        point_openai_at(&data, &mock);
        wait_for_status(&server.base, &key, StatusCode::OK).await;
        let (status, body) = post(
            &server.base,
            "/v1/chat/completions",
            &key,
            r#"{"model":"gpt-4o","stream":true,"messages":[]}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "workers={workers}");
        assert!(body.ends_with(b"data: [DONE]\n\n"), "workers={workers}");
        terminate(&server.child);
        let (status, _) = server.stop_after_signal();
        assert!(status.success(), "workers={workers}: exit status {status}");
    }
}

impl Server {
    fn stop_after_signal(mut self) -> (std::process::ExitStatus, String) {
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let logs: Vec<String> = self.stderr.try_iter().collect();
        (status, logs.join("\n"))
    }
}

#[test]
fn a_corrupt_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    std::fs::create_dir_all(data).unwrap();
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(data.join("compresh.db"), &garbage).unwrap();
    let out = cli(data, &["accounts", "list"], "");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("compresh.db"), "{err}");
    assert_eq!(std::fs::read(data.join("compresh.db")).unwrap(), garbage);
}

#[test]
fn provider_keys_come_from_stdin_not_argv() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        dir.path(),
        &["accounts", "create", "team", "--plan", "pro"],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(
        dir.path(),
        &["providers", "set", "openai", "--account", "team"],
        "",
    );
    assert!(!out.status.success(), "openai needs a key on stdin");
    let out = cli(
        dir.path(),
        &[
            "providers",
            "set",
            "local",
            "--account",
            "team",
            "--kind",
            "openai-compatible",
            "--base-url",
            "http://127.0.0.1:9/v1",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(dir.path(), &["accounts", "list"], "");
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains("team") && listing.contains("pro"));
}

#[test]
fn a_short_admin_token_stops_the_start_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let token = "short-secret-1";
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("COMPRESH_MASTER_KEY")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("COMPRESH_ADMIN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn compresh serve");
    // A deadline, not a speed check: if the token were accepted the server would run forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("compresh serve started with a too-short admin token");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("COMPRESH_ADMIN_TOKEN") && stderr.contains("16"),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stderr.contains(token) && !stdout.contains(token));
    assert!(
        !stdout.contains("comp_"),
        "no first-start key was issued: {stdout}"
    );
}
