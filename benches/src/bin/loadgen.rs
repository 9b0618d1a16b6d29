//! `loadgen`: a small open-loop, constant-rate HTTP/1.1 load generator for the proxy-overhead
//! benchmark (`benches/load.sh`).
//!
//! ```text
//! loadgen --url http://127.0.0.1:8080/v1/chat/completions --key comp_... --rate 1000 --duration 10
//! loadgen --url ... --max --duration 10          # closed loop: maximum throughput
//! loadgen --url ... --rate 200 --stream          # SSE stream; also reports time to first byte
//! ```
//!
//! Open loop (`--rate`): a dedicated scheduler thread releases request `k` at `start + k/rate`
//! (std `thread::sleep`, ~50–100 µs precision, unlike tokio's 1 ms timer), whatever the responses
//! do; keep-alive connections take released requests from one queue. Latency is measured from
//! the *scheduled* time, so a slow response that holds requests up is charged to every request
//! it delays (no coordinated omission). Closed loop (`--max`): every connection sends back to
//! back; latency from the actual send.
//!
//! Prints one line of `key=value` pairs on stdout (times in microseconds) for scripts to parse.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{header, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

use compresh_benches::Histogram;

/// The chat request every target receives (an OpenAI SDK call, ~200 bytes).
const CHAT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}"#;
const STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"stream":true}"#;
/// A request that takes longer than this counts as an error (and its connection is replaced).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// After the last scheduled send, how long queued requests may still be sent and answered.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// Open-loop constant-rate (or closed-loop max-throughput) HTTP/1.1 load generator.
#[derive(Parser, Debug)]
#[command(name = "loadgen")]
struct Args {
    /// Target URL, `http://HOST:PORT/PATH` (plain HTTP only).
    #[arg(long)]
    url: String,
    /// Sent as `Authorization: Bearer KEY`.
    #[arg(long, env = "LOADGEN_KEY", hide_env_values = true)]
    key: Option<String>,
    /// Requests per second, open loop.
    #[arg(long, conflicts_with = "max", required_unless_present = "max")]
    rate: Option<f64>,
    /// Closed loop: every connection sends back to back (maximum throughput).
    #[arg(long)]
    max: bool,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before measuring (connections and pools warm up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Runtime threads of the client (1 = one thread, so it takes one core at most).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Ask for an SSE stream (`"stream": true`) and report time to first body byte.
    #[arg(long)]
    stream: bool,
    /// Label printed first on the result line.
    #[arg(long, default_value = "run")]
    label: String,
    /// Also write every measured request to FILE, one line each: its scheduled send time (µs
    /// after the schedule's start) and its latency (µs), in scheduled order. For finding out
    /// *when* the slow requests happen (`benches/stalls.py`).
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
}

/// Where requests go and what they look like.
struct Target {
    addr: SocketAddr,
    host: HeaderValue,
    path: String,
    authorization: Option<HeaderValue>,
    body: Bytes,
}

/// One connection's tallies, merged at the end.
#[derive(Default)]
struct Tally {
    latency: Histogram,
    ttfb: Histogram,
    ok: u64,
    errors: u64,
    last_done: Option<Instant>,
    /// (scheduled, latency) of each measured request, when `--trace` asks for them.
    trace: Option<Vec<(Instant, Duration)>>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let target = match target(&args) {
        Ok(target) => Arc::new(target),
        Err(message) => {
            eprintln!("loadgen: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("loadgen: cannot start the runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(&args, target));
    match result {
        Ok(line) => {
            // A closed pipe (`loadgen ... | head`) is not worth a panic.
            let _ = writeln!(std::io::stdout(), "{line}");
            std::process::ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("loadgen: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn target(args: &Args) -> Result<Target, String> {
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority} resolves to nothing"))?;
    let host = HeaderValue::from_str(authority).map_err(|_| "bad host in URL")?;
    let authorization = match &args.key {
        Some(key) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| "the key is not a valid header value")?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let positive = |x: f64| x.is_finite() && x > 0.0;
    if args.connections == 0
        || !positive(args.duration)
        || !(positive(args.warmup) || args.warmup == 0.0)
    {
        return Err("--connections and --duration must be positive, --warmup not negative".into());
    }
    if args.rate.is_some_and(|rate| !positive(rate)) {
        return Err("--rate must be positive".into());
    }
    Ok(Target {
        addr,
        host,
        path: path.to_owned(),
        authorization,
        body: Bytes::from_static(if args.stream { STREAM_BODY } else { CHAT_BODY }.as_bytes()),
    })
}

/// The request an OpenAI Python SDK sends (headers included), so header handling costs what it
/// costs in production.
fn request(target: &Target) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(target.path.as_str())
        .header(header::HOST, target.host.clone())
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "OpenAI/Python 1.54.0")
        .header("x-stainless-lang", "python")
        .header("x-stainless-package-version", "1.54.0")
        .header("x-stainless-os", "Linux")
        .header("x-stainless-arch", "x64")
        .header("x-stainless-runtime", "CPython")
        .header("x-stainless-runtime-version", "3.12.3")
        .header("x-stainless-retry-count", "0");
    if let Some(authorization) = &target.authorization {
        builder = builder.header(header::AUTHORIZATION, authorization.clone());
    }
    // Cannot fail: every part above is a valid, pre-validated value.
    builder
        .body(Full::new(target.body.clone()))
        .expect("request parts are valid")
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// What one request measured: time to the first body frame and to the end, from `sent`.
struct Timing {
    first_byte: Instant,
    done: Instant,
}

/// Send one request and read the whole answer. `Err` for transport failures and non-2xx.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    target: &Target,
) -> Result<Timing, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request(target))
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let mut body = response.into_body();
    let mut first_byte = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if first_byte.is_none() && frame.data_ref().is_some_and(|data| !data.is_empty()) {
            first_byte = Some(Instant::now());
        }
    }
    let done = Instant::now();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    Ok(Timing {
        first_byte: first_byte.unwrap_or(done),
        done,
    })
}

/// One keep-alive connection's loop: take the next request, send it, record it.
async fn worker(
    target: Arc<Target>,
    queue: Option<Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>>,
    measure_from: Instant,
    stop_at: Instant,
    stop: Arc<AtomicBool>,
    trace: bool,
) -> Tally {
    let mut tally = Tally {
        trace: trace.then(Vec::new),
        ..Tally::default()
    };
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    loop {
        // Open loop: the scheduled time of the next request; closed loop: now.
        let scheduled = match &queue {
            Some(queue) => {
                let next = tokio::time::timeout_at(stop_at.into(), async {
                    queue.lock().await.recv().await
                });
                match next.await {
                    Ok(Some(scheduled)) => scheduled,
                    // Schedule finished, or the drain grace is over.
                    Ok(None) | Err(_) => break,
                }
            }
            None => {
                if Instant::now() >= stop_at {
                    break;
                }
                Instant::now()
            }
        };
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let measured = scheduled >= measure_from;
        // A server may close a keep-alive connection after a response (nginx does after
        // `keepalive_requests`); that is not a failed request: reconnect before sending.
        if let Some(open) = sender.as_mut() {
            if open.is_closed() || open.ready().await.is_err() {
                sender = None;
            }
        }
        if sender.is_none() {
            match connect(target.addr).await {
                Ok(connected) => sender = Some(connected),
                Err(message) => {
                    if measured {
                        tally.errors += 1;
                    }
                    eprintln!("loadgen: {message}");
                    // Target down: do not spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(connection) = sender.as_mut() else {
            continue;
        };
        let outcome = tokio::time::timeout(REQUEST_TIMEOUT, exchange(connection, &target)).await;
        match outcome {
            Ok(Ok(timing)) => {
                if measured {
                    tally.ok += 1;
                    let latency = timing.done.duration_since(scheduled);
                    tally.latency.record(latency);
                    if let Some(trace) = &mut tally.trace {
                        trace.push((scheduled, latency));
                    }
                    tally
                        .ttfb
                        .record(timing.first_byte.duration_since(scheduled));
                    tally.last_done = Some(timing.done);
                }
            }
            Ok(Err(message)) => {
                if measured {
                    tally.errors += 1;
                }
                if !message.starts_with("status") {
                    sender = None;
                }
            }
            Err(_timeout) => {
                if measured {
                    tally.errors += 1;
                }
                sender = None;
            }
        }
    }
    tally
}

/// `--trace`: the measured requests in scheduled order, `<scheduled µs> <latency µs>` a line.
fn write_trace(
    path: &std::path::Path,
    start: Instant,
    trace: &mut [(Instant, Duration)],
) -> Result<(), String> {
    trace.sort_unstable_by_key(|(scheduled, _)| *scheduled);
    let mut out = String::with_capacity(trace.len() * 16);
    for (scheduled, latency) in trace.iter() {
        // Writing into a String cannot fail.
        let _ = std::fmt::Write::write_fmt(
            &mut out,
            format_args!(
                "{} {}\n",
                scheduled.duration_since(start).as_micros(),
                latency.as_micros()
            ),
        );
    }
    std::fs::write(path, out).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn run(args: &Args, target: Arc<Target>) -> Result<String, String> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    // Connect first so the schedule does not start with connection set-up.
    connect(target.addr).await?;
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let stop = Arc::new(AtomicBool::new(false));

    let (queue, scheduler, stop_at) = match args.rate {
        Some(rate) => {
            let (tx, rx) = mpsc::unbounded_channel();
            let total = ((args.warmup + args.duration) * rate).round() as u64;
            let interval = 1.0 / rate;
            let scheduler = std::thread::spawn(move || {
                for k in 0..total {
                    let at = start + Duration::from_secs_f64(k as f64 * interval);
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    if tx.send(at).is_err() {
                        break;
                    }
                }
            });
            (
                Some(Arc::new(Mutex::new(rx))),
                Some(scheduler),
                end + DRAIN_GRACE,
            )
        }
        None => (None, None, end),
    };

    tokio::time::sleep_until(start.into()).await;
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(worker(
                Arc::clone(&target),
                queue.clone(),
                measure_from,
                stop_at,
                Arc::clone(&stop),
                args.trace.is_some(),
            ))
        })
        .collect();
    let mut total = Tally {
        trace: args.trace.as_ref().map(|_| Vec::new()),
        ..Tally::default()
    };
    for worker in workers {
        let tally = worker.await.map_err(|e| format!("worker failed: {e}"))?;
        total.latency.merge(&tally.latency);
        total.ttfb.merge(&tally.ttfb);
        total.ok += tally.ok;
        total.errors += tally.errors;
        total.last_done = total.last_done.max(tally.last_done);
        if let (Some(all), Some(trace)) = (&mut total.trace, tally.trace) {
            all.extend(trace);
        }
    }
    stop.store(true, Ordering::Relaxed);
    // Requests still queued when the drain grace ran out were never answered: errors.
    let mut unsent = 0;
    if let Some(queue) = &queue {
        let mut rx = queue.lock().await;
        rx.close();
        while let Ok(scheduled) = rx.try_recv() {
            if scheduled >= measure_from {
                unsent += 1;
            }
        }
    }
    if let Some(scheduler) = scheduler {
        let _ = scheduler.join();
    }
    total.errors += unsent;
    if let (Some(path), Some(trace)) = (&args.trace, &mut total.trace) {
        write_trace(path, start, trace)?;
    }

    // Achieved rate: answers over the measured window (to the last answer, if later).
    let window = total.last_done.map_or(duration, |last| {
        last.duration_since(measure_from).max(duration)
    });
    let achieved = total.ok as f64 / window.as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut line = format!(
        "label={} mode={} target_rps={} achieved_rps={achieved:.0} ok={} errors={} \
         p50_us={:.0} p90_us={:.0} p99_us={:.0} max_us={:.0} mean_us={:.0}",
        args.label,
        if args.max { "max" } else { "rate" },
        args.rate
            .map_or_else(|| "max".to_owned(), |rate| format!("{rate}")),
        total.ok,
        total.errors,
        us(total.latency.percentile(50.0)),
        us(total.latency.percentile(90.0)),
        us(total.latency.percentile(99.0)),
        us(total.latency.max()),
        us(total.latency.mean()),
    );
    if args.stream {
        line.push_str(&format!(
            " ttfb_p50_us={:.0} ttfb_p99_us={:.0}",
            us(total.ttfb.percentile(50.0)),
            us(total.ttfb.percentile(99.0)),
        ));
    }
    Ok(line)
}
