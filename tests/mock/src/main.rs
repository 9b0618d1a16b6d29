//! `mock-provider`: the Compresh mock LLM provider as a standalone server, for load benchmarks.
//!
//! ```text
//! mock-provider [--listen ADDR] [--chunks N] [--gap-ms M]
//! ```
//!
//! Prints `listening on http://ADDR` on stdout once bound, then serves until killed. Request
//! recording is off: nobody can read the log from outside, and it would grow without bound.

use std::fmt::Display;
use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use compresh_mock::{MockConfig, MockProvider};

const USAGE: &str = "usage: mock-provider [--listen ADDR] [--chunks N] [--gap-ms M]";

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args(std::env::args().skip(1)) {
        Ok(Some(config)) => config,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("mock-provider: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listen = config.listen;
    let mock = match MockProvider::try_start_with(config).await {
        Ok(mock) => mock,
        Err(error) => {
            eprintln!("mock-provider: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    mock.set_recording(false);
    println!("listening on http://{}", mock.addr());
    // The benchmark reads this line through a pipe, where stdout would otherwise buffer.
    let _ = std::io::stdout().flush();
    if tokio::signal::ctrl_c().await.is_err() {
        // No signal handler available: serve until killed.
        std::future::pending::<()>().await;
    }
    ExitCode::SUCCESS
}

/// `Ok(None)` for `--help`; `Err` names the bad argument.
fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<MockConfig>, String> {
    let mut config = MockConfig::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, mut inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .take()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--listen" => config.listen = parse_value(&flag, &value()?)?,
            "--chunks" => config.stream_chunks = parse_value(&flag, &value()?)?,
            "--gap-ms" => config.stream_gap = Duration::from_millis(parse_value(&flag, &value()?)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(config))
}

fn parse_value<T>(flag: &str, value: &str) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<MockConfig>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        assert_eq!(parse(&[]), Ok(Some(MockConfig::default())));
    }

    #[test]
    fn all_flags_in_both_spellings() {
        let config = parse(&[
            "--listen",
            "127.0.0.1:8088",
            "--chunks=10",
            "--gap-ms",
            "25",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:8088".parse().unwrap());
        assert_eq!(config.stream_chunks, 10);
        assert_eq!(config.stream_gap, Duration::from_millis(25));
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(parse(&["--help"]), Ok(None));
        assert!(parse(&["--chunks"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--chunks", "x"]).unwrap_err().contains("--chunks"));
        assert!(parse(&["--listen", "nowhere"])
            .unwrap_err()
            .contains("--listen"));
        assert!(parse(&["--bogus", "1"])
            .unwrap_err()
            .contains("unknown argument"));
    }
}
