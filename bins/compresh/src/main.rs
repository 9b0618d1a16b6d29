//! The `compresh` binary; everything lives in the library.

/// mimalloc instead of glibc's malloc: the request path allocates and frees many small
/// buffers (header maps, body chunks, log lines) on one thread, and glibc's malloc/free were
/// ~11 % of the gateway's CPU per request (benches/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    compresh::cli::main()
}
