//! The `compresh` command line: `serve` and the administration commands.
//!
//! Administration commands open the data directory directly, so they work whether or not a
//! server runs on it; a running server sees their changes within a second.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use compresh_forward::ForwardConfig;
use compresh_keys::ApiKey;
use compresh_vault::ProviderSecret;

use crate::admin::{AdminToken, AdminTokenError};
use crate::bootstrap::{first_start, DataDir, DEFAULT_ACCOUNT};
use crate::gateway::{unix_now, Gateway, GatewayConfig, DEFAULT_BODY_LIMIT};
use crate::logging::{self, LogFormat};
use crate::ops::{self, KeyRequest, ProviderRequest};
use crate::server::{self, DEFAULT_SHUTDOWN_GRACE};

/// Compresh: an LLM API gateway in front of OpenAI, Anthropic and OpenAI-compatible servers.
#[derive(Debug, Parser)]
#[command(name = "compresh", version, about)]
pub struct Cli {
    /// Directory holding the SQLite store and the master key file.
    #[arg(
        long,
        global = true,
        env = "COMPRESH_DATA_DIR",
        default_value = "./compresh-data"
    )]
    pub data_dir: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage an account's provider keys (the key itself is read from stdin).
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Manage the master key that encrypts provider keys.
    #[command(subcommand, name = "master-key")]
    MasterKey(MasterKeyCommand),
    /// Manage web dashboard users (the password is read from stdin).
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Subcommand)]
enum UsersCommand {
    /// Create a dashboard user for an account; the password (at least 10 characters) is read
    /// from stdin, never argv.
    Create {
        email: String,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "COMPRESH_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = DEFAULT_BODY_LIMIT)]
    body_limit: usize,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_GRACE.as_secs())]
    shutdown_grace: u64,
    /// Seconds to wait for a provider connection (DNS, TCP and TLS handshake together).
    #[arg(long, default_value_t = ForwardConfig::default().connect_timeout.as_secs())]
    connect_timeout: u64,
    /// Seconds to wait for a provider's response headers.
    #[arg(long, default_value_t = ForwardConfig::default().response_timeout.as_secs())]
    response_timeout: u64,
    /// Microseconds to poll for a plain-HTTP provider's answer before sleeping until it
    /// arrives (at most 1000; 0, the default, turns it off). For a gateway on cores of its own
    /// in front of an upstream that answers within microseconds: it saves an idle CPU's
    /// wake-up per request, tens of µs on a virtual machine, and costs the polled time in CPU.
    /// It stops by itself for an upstream whose answers take longer. On a core shared with
    /// the upstream it makes answers slower (benches/RESULTS.md).
    #[arg(long, env = "COMPRESH_UPSTREAM_POLL_US", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1000))]
    upstream_poll_us: u64,
    /// CA certificate(s) to trust for provider connections in addition to the public roots
    /// (PEM, possibly several, or DER), e.g. an internal CA of a self-hosted server.
    #[arg(long, value_name = "PATH")]
    upstream_ca_file: Option<PathBuf>,
    /// Also serve `GET /metrics` on this address (it is always on the main listener too).
    #[arg(long, env = "COMPRESH_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Dashboard sign-up: `open` lets anyone create an account, `closed` only
    /// `compresh users create`.
    #[arg(long, env = "COMPRESH_SIGNUP", value_enum, default_value_t = crate::dashboard::SignupMode::Closed)]
    signup: crate::dashboard::SignupMode,
    /// Runtime worker threads. Default: one per CPU, but one on a machine with at most two
    /// CPUs (there a second worker mostly adds cross-thread wake-ups; see benches/RESULTS.md).
    /// With one, the server runs on a single-threaded runtime.
    #[arg(long, env = "COMPRESH_WORKER_THREADS")]
    worker_threads: Option<std::num::NonZeroUsize>,
    /// Serve every connection with hyper: turns off the raw HTTP/1.1 lane for plain-HTTP
    /// providers (for comparison, or if the lane misbehaves).
    #[arg(long, env = "COMPRESH_NO_RAW_LANE", value_parser = clap::builder::BoolishValueParser::new())]
    no_raw_lane: bool,
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create an account.
    Create {
        name: String,
        #[arg(long, default_value = "free")]
        plan: String,
    },
    /// List accounts.
    List,
    /// Deactivate an account: its keys get 403.
    Deactivate { name: String },
    /// Reactivate an account.
    Activate { name: String },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; prints only the key on stdout (it is never shown again).
    Create {
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
        #[arg(long, default_value = "default")]
        name: String,
        /// Environment tag (dev, staging, prod ...).
        #[arg(long)]
        env: Option<String>,
        /// Requests per minute for this key instead of the plan's.
        #[arg(long)]
        rpm: Option<u32>,
        /// Provider the key may use (repeatable; default: all).
        #[arg(long = "allow-provider")]
        allow_providers: Vec<String>,
        /// Model glob the key may use (repeatable; default: all).
        #[arg(long = "allow-model")]
        allow_models: Vec<String>,
    },
    /// List keys (hints only).
    List {
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
    /// Revoke a key.
    Revoke { key_id: String },
    /// Set (or with --clear remove) a key's requests-per-minute override.
    SetRpm {
        key_id: String,
        #[arg(required_unless_present = "clear")]
        rpm: Option<u32>,
        #[arg(long)]
        clear: bool,
    },
    /// Issue a successor key; the old one keeps working for the grace period.
    Rotate {
        key_id: String,
        /// How long the old key keeps working (e.g. 90s, 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        grace: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum ProvidersCommand {
    /// Set or replace a provider key (read from stdin).
    Set {
        name: String,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
        /// openai, anthropic or openai-compatible (default: the name, for openai/anthropic).
        #[arg(long)]
        kind: Option<String>,
        /// Base URL (required for openai-compatible).
        #[arg(long)]
        base_url: Option<String>,
    },
    /// List providers (hints only).
    List {
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
    /// Remove a provider.
    Remove {
        name: String,
        #[arg(long, default_value = DEFAULT_ACCOUNT)]
        account: String,
    },
}

#[derive(Debug, Subcommand)]
enum MasterKeyCommand {
    /// Add a new master key version and re-encrypt every provider key with it.
    Rotate,
}

/// Parse a duration like `90s`, `30m`, `24h`, `7d` (a bare number is seconds).
///
/// # Errors
/// Anything else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let value: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 90s, 30m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{text}' is not a duration like 90s, 30m, 24h or 7d"
            ))
        }
    };
    Ok(Duration::from_secs(value.saturating_mul(seconds)))
}

/// Parse the process arguments and run; returns the exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let master_key_env = std::env::var("COMPRESH_MASTER_KEY").ok();
    match cli.command {
        Command::Serve(args) => {
            // Dropped when `serve` returns (also on error): writes every buffered log line,
            // before `main` prints an error or the process exits.
            let _log_guard = logging::init(cli.log_format);
            let data = DataDir::open(&cli.data_dir, master_key_env.as_deref())?;
            serve(data, args)
        }
        command => {
            let data = DataDir::open(&cli.data_dir, master_key_env.as_deref())?;
            admin(&data, command)
        }
    }
}

fn serve(data: DataDir, args: ServeArgs) -> anyhow::Result<()> {
    // Checked first: a refused token stops the start before a first start prints its key.
    let admin_token = admin_token_from_env()?;
    let extra_root_certificates = match &args.upstream_ca_file {
        Some(path) => read_upstream_ca(path)?,
        None => Vec::new(),
    };
    if let Some(first) = first_start(
        &data,
        std::env::var("OPENAI_API_KEY").ok(),
        std::env::var("ANTHROPIC_API_KEY").ok(),
    )? {
        print_banner(&first.api_key, &first.providers);
    }
    if admin_token.is_some() {
        tracing::info!("admin API enabled under /admin/v1/");
    }
    let config = GatewayConfig {
        body_limit: args.body_limit,
        forward: ForwardConfig {
            connect_timeout: Duration::from_secs(args.connect_timeout),
            response_timeout: Duration::from_secs(args.response_timeout),
            extra_root_certificates,
            answer_poll: Duration::from_micros(args.upstream_poll_us),
            ..ForwardConfig::default()
        },
        admin_token,
        raw_lane: !args.no_raw_lane,
        dashboard: crate::dashboard::DashboardConfig {
            signup: args.signup,
            ..crate::dashboard::DashboardConfig::default()
        },
        ..GatewayConfig::default()
    };
    let gateway = Arc::new(Gateway::new(data.store, data.master_keys, config)?);
    let workers = args
        .worker_threads
        .map_or_else(default_worker_threads, std::num::NonZeroUsize::get);
    // One worker: a current-thread runtime. The same single thread serves every connection,
    // minus the multi-thread scheduler's bookkeeping (~1.4 k instructions per request,
    // callgrind) and with the accept loop on that thread instead of a second one.
    let runtime = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "compresh listening");
        println!("compresh listening on http://{addr}");
        let _ = std::io::stdout().flush();
        // Dropping `_metrics_stop` after the server returns stops the metrics listener.
        let _metrics_stop = match args.metrics_listen {
            Some(metrics_addr) => {
                let (bound, stop) = crate::metrics::spawn_metrics_listener(
                    Arc::clone(gateway.metrics()),
                    metrics_addr,
                )
                .await?;
                tracing::info!(addr = %bound, "metrics listening");
                println!("compresh metrics on http://{bound}/metrics");
                Some(stop)
            }
            None => None,
        };
        server::serve(
            gateway,
            listener,
            shutdown_signal(),
            Duration::from_secs(args.shutdown_grace),
        )
        .await;
        anyhow::Ok(())
    })
}

/// One worker per CPU, except on one or two CPUs: a request's server and upstream connection
/// tasks then stay on one thread instead of waking each other across two, which measured
/// 10-25 % less CPU per request at equal or higher throughput on a 2-CPU machine that also runs
/// the provider and the clients (`benches/RESULTS.md`).
fn default_worker_threads() -> usize {
    match std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get) {
        0..=2 => 1,
        cpus => cpus,
    }
}

/// Reads and checks `--upstream-ca-file` (PEM or DER). Called before the first start, so a bad
/// file stops `serve` before a first-start key is printed.
fn read_upstream_ca(path: &std::path::Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let contents = std::fs::read(path).map_err(|error| {
        anyhow::anyhow!("cannot read --upstream-ca-file {}: {error}", path.display())
    })?;
    compresh_forward::parse_certificates(&contents)
        .map_err(|error| anyhow::anyhow!("--upstream-ca-file {}: {error}", path.display()))
}

/// `COMPRESH_ADMIN_TOKEN` (environment only: argv is visible to other users); unset disables
/// the admin API, a weak value refuses to start.
fn admin_token_from_env() -> anyhow::Result<Option<AdminToken>> {
    let mut text = match std::env::var("COMPRESH_ADMIN_TOKEN") {
        Ok(text) => text,
        Err(std::env::VarError::NotPresent) => return Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(AdminTokenError::NotVisibleAscii.into())
        }
    };
    let token = AdminToken::new(&text);
    // Only the digest is kept; wipe this copy of the plaintext.
    zeroize::Zeroize::zeroize(&mut text);
    Ok(Some(token?))
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!("cannot listen for SIGTERM: {error}");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn print_banner(key: &ApiKey, providers: &[String]) {
    let configured = if providers.is_empty() {
        "none yet: `compresh providers set openai < key.txt`".to_owned()
    } else {
        providers.join(", ")
    };
    println!(
        "\n==================== Compresh: first start ====================\n\
         Your API key (shown once, store it now):\n\n    {}\n\n\
         Account: {DEFAULT_ACCOUNT}   Providers: {configured}\n\
         Use it as the api_key of the OpenAI or Anthropic SDK with\n\
         base_url http://<listen address>/v1\n\
         ===============================================================\n",
        key.expose_secret()
    );
    let _ = std::io::stdout().flush();
}

fn admin(data: &DataDir, command: Command) -> anyhow::Result<()> {
    let store = &data.store;
    match command {
        Command::Serve(_) => unreachable!("handled by run"),
        Command::Accounts(command) => match command {
            AccountsCommand::Create { name, plan } => {
                let account = ops::create_account(store, &name, &plan)?;
                eprintln!("created account {} (plan {})", account.name, account.plan);
            }
            AccountsCommand::List => {
                println!("{:<24} {:<6} {:<8} CREATED", "NAME", "PLAN", "ACTIVE");
                for account in ops::list_accounts(store)? {
                    println!(
                        "{:<24} {:<6} {:<8} {}",
                        account.name,
                        account.plan,
                        if account.active { "yes" } else { "no" },
                        account.created_at
                    );
                }
            }
            AccountsCommand::Deactivate { name } => {
                ops::set_account_active(store, &name, false)?;
                eprintln!("deactivated account {name}");
            }
            AccountsCommand::Activate { name } => {
                ops::set_account_active(store, &name, true)?;
                eprintln!("activated account {name}");
            }
        },
        Command::Keys(command) => keys(data, command)?,
        Command::Providers(command) => providers(data, command)?,
        Command::Users(UsersCommand::Create { email, account }) => {
            let password = read_password_from_stdin()?;
            let user = ops::create_user(store, &email, &password, &account)?;
            eprintln!(
                "created dashboard user {} for account {account}",
                user.email
            );
        }
        Command::MasterKey(MasterKeyCommand::Rotate) => {
            let report = ops::rotate_master_key(store, &data.master_keys)?;
            eprintln!(
                "master key v{} in use; {} provider key(s) re-encrypted; retired versions: {:?}",
                report.new_version, report.rewrapped, report.retired
            );
        }
    }
    Ok(())
}

fn keys(data: &DataDir, command: KeysCommand) -> anyhow::Result<()> {
    let store = &data.store;
    match command {
        KeysCommand::Create {
            account,
            name,
            env,
            rpm,
            allow_providers,
            allow_models,
        } => {
            let (key, record) = ops::create_key(
                store,
                KeyRequest {
                    account,
                    name,
                    environment: env,
                    rpm,
                    allowed_providers: allow_providers,
                    allowed_models: allow_models,
                    expires_at: None,
                },
            )?;
            println!("{}", key.expose_secret());
            eprintln!(
                "created key {} ({}) — this is the only time it is shown",
                record.id, record.hint
            );
        }
        KeysCommand::List { account } => {
            let keys = ops::list_keys(store, &account)?;
            println!(
                "{:<17} {:<16} {:<10} {:<11} {:<6} {:<8} LAST USED",
                "ID", "NAME", "ENV", "HINT", "RPM", "STATUS"
            );
            let now = unix_now();
            for key in keys {
                println!(
                    "{:<17} {:<16} {:<10} {:<11} {:<6} {:<8} {}",
                    key.id.as_str(),
                    key.name,
                    key.environment.as_deref().unwrap_or("-"),
                    key.hint,
                    key.rpm.map_or("plan".to_owned(), |rpm| rpm.to_string()),
                    ops::key_status(&key, now),
                    key.last_used_at
                        .map_or("never".to_owned(), |at| at.to_string())
                );
            }
        }
        KeysCommand::Revoke { key_id } => {
            let record = ops::revoke_key(store, &key_id)?;
            eprintln!("revoked key {}", record.id);
        }
        KeysCommand::SetRpm { key_id, rpm, clear } => {
            let record = ops::set_key_rpm(store, &key_id, if clear { None } else { rpm })?;
            eprintln!(
                "key {} now limited to {}",
                record.id,
                record
                    .rpm
                    .map_or("its plan's rate".to_owned(), |rpm| format!(
                        "{rpm} requests/minute"
                    ))
            );
        }
        KeysCommand::Rotate { key_id, grace } => {
            let (key, record) = ops::rotate_key(store, &key_id, grace.as_secs(), unix_now())?;
            println!("{}", key.expose_secret());
            eprintln!(
                "created key {} replacing {key_id}; the old key works for {}s more",
                record.id,
                grace.as_secs()
            );
        }
    }
    Ok(())
}

fn providers(data: &DataDir, command: ProvidersCommand) -> anyhow::Result<()> {
    let store = &data.store;
    match command {
        ProvidersCommand::Set {
            name,
            account,
            kind,
            base_url,
        } => {
            let secret = read_secret_from_stdin()?;
            let record = ops::set_provider(
                store,
                &data.master_keys,
                ProviderRequest {
                    account,
                    name,
                    kind,
                    base_url,
                    secret,
                },
            )?;
            eprintln!(
                "provider {} ({}) set; key {}",
                record.name,
                record.kind,
                if record.hint.is_empty() {
                    "none"
                } else {
                    &record.hint
                }
            );
        }
        ProvidersCommand::List { account } => {
            let providers = ops::list_providers(store, &account)?;
            println!(
                "{:<16} {:<18} {:<10} {:<40} UPDATED",
                "NAME", "KIND", "KEY", "BASE URL"
            );
            for provider in providers {
                println!(
                    "{:<16} {:<18} {:<10} {:<40} {}",
                    provider.name,
                    provider.kind,
                    if provider.hint.is_empty() {
                        "-"
                    } else {
                        &provider.hint
                    },
                    provider.base_url.as_deref().unwrap_or("(default)"),
                    provider.updated_at
                );
            }
        }
        ProvidersCommand::Remove { name, account } => {
            ops::remove_provider(store, &account, &name)?;
            eprintln!("removed provider {name}");
        }
    }
    Ok(())
}

/// A dashboard password from stdin (one line; the trailing newline is not part of it).
fn read_password_from_stdin() -> anyhow::Result<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|error| anyhow::anyhow!("cannot read the password from stdin: {error}"))?;
    Ok(zeroize::Zeroizing::new(
        text.trim_end_matches(['\n', '\r']).to_owned(),
    ))
}

/// The provider key comes from stdin so it never appears in argv (visible to other users).
fn read_secret_from_stdin() -> anyhow::Result<Option<ProviderSecret>> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|error| anyhow::anyhow!("cannot read the provider key from stdin: {error}"))?;
    let secret = text.trim();
    let result = (!secret.is_empty()).then(|| ProviderSecret::new(secret.to_owned()));
    // The secret now lives only in ProviderSecret; wipe the read buffer.
    zeroize::Zeroize::zeroize(&mut text);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn upstream_ca_file_is_read_as_pem_or_der_and_garbage_is_refused() {
        /// A throwaway CA certificate (`openssl req -x509`, P-256, valid until 2126); public.
        const CA_PEM: &str = "subject=CN=Compresh CLI Test CA
-----BEGIN CERTIFICATE-----
MIIBljCCATugAwIBAgIUc1Gx0yegYhNBIGTEZ5z+wjLV050wCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwUQ29tcHJlc2ggQ0xJIFRlc3QgQ0EwIBcNMjYxMTI3MTA1MzA5
WhgPMjEyNjExMDMxMDUzMDlaMB8xHTAbBgNVBAMMFENvbXByZXNoIENMSSBUZXN0
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEU/cuupS9P9pltmNkGl+Z1rr7
KebtoCijoSXgiPXdfW8uaGEj3L2zOFJf8Zy73EE9dbvQK2CoHCdk5IoHxf1lGKNT
MFEwHQYDVR0OBBYEFL0V2WZzjP953CWXF1htRxA4REy7MB8GA1UdIwQYMBaAFL0V
2WZzjP953CWXF1htRxA4REy7MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
SQAwRgIhAKS9WfuvIgGJXvX0PQkAZvdzSVulaTBYJoMOZpsgcjhZAiEAsZxoC3Qy
0F8OJydl3UiE+B3xah1PN26qV7w2uL5kcOw=
-----END CERTIFICATE-----
";
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, CA_PEM).unwrap();
        let certificates = read_upstream_ca(&pem).unwrap();
        assert_eq!(certificates.len(), 1);
        // The same certificate as DER.
        let der = dir.path().join("ca.der");
        std::fs::write(&der, &certificates[0]).unwrap();
        assert_eq!(read_upstream_ca(&der).unwrap(), certificates);
        // What the forwarder accepts.
        let forward = ForwardConfig {
            extra_root_certificates: certificates,
            ..ForwardConfig::default()
        };
        assert!(compresh_forward::Forwarder::new(forward).is_ok());

        let bad_der = dir.path().join("bad.der");
        std::fs::write(&bad_der, [0x30, 0x03, 0x02, 0x01, 0x01]).unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        for path in [bad_der, garbage, dir.path().join("missing.pem")] {
            let err = read_upstream_ca(&path).unwrap_err().to_string();
            assert!(err.contains(&*path.to_string_lossy()), "{err}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
