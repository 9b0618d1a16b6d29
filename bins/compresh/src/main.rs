//! The `compresh` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    compresh::cli::main()
}
