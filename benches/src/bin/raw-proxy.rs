//! `raw-proxy`: a reverse proxy written straight on tokio's sockets with `httparse`, no hyper and
//! no `http` header maps. `benches/load.sh` measures it as a second floor, under `hyper-proxy`:
//! hyper-proxy minus this is the cost of hyper's HTTP/1 layer; this minus nginx is the cost of
//! tokio and the kernel's socket work.
//!
//! One task per client connection owns that connection and an upstream connection of its own
//! (one current-thread runtime, like Compresh on a small machine). Each request head is parsed
//! and written again (hop-by-hop headers dropped, `Host` set to the upstream), the body copied
//! by `Content-Length`; the answer's head is parsed and written again and its body copied by
//! `Content-Length` or chunk by chunk. That is what nginx's `proxy_pass` does for this traffic
//! and no more. It handles only what the benchmark sends (HTTP/1.1 keep-alive, `Content-Length`
//! request bodies); anything else closes the connection.
//!
//! ```text
//! raw-proxy --upstream 127.0.0.1:9000 [--listen 127.0.0.1:0]
//! ```
//! Prints `listening on http://ADDR` once bound.

use std::io;

use bytes::{Buf, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
#[command(about = "Reverse proxy on raw tokio sockets and httparse: a floor below hyper")]
struct Args {
    /// Upstream `HOST:PORT` (plain HTTP).
    #[arg(long)]
    upstream: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

const MAX_HEADERS: usize = 64;

fn main() -> io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> io::Result<()> {
    let listener = TcpListener::bind(&args.listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        let upstream = args.upstream.clone();
        tokio::spawn(async move {
            // A connection that breaks ends here; the load tool counts the failed request.
            let _ = proxy_connection(client, &upstream).await;
        });
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "host",
    ]
    .iter()
    .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// How the answer's body ends.
enum Framing {
    Length(usize),
    Chunked,
}

async fn proxy_connection(mut client: TcpStream, upstream_addr: &str) -> io::Result<()> {
    let mut upstream = TcpStream::connect(upstream_addr).await?;
    upstream.set_nodelay(true)?;
    let mut from_client = BytesMut::with_capacity(8192);
    let mut from_upstream = BytesMut::with_capacity(8192);
    let mut out = Vec::with_capacity(8192);
    loop {
        let (head_len, body_len) = loop {
            if let Some(parsed) = request_head(&from_client, upstream_addr, &mut out)? {
                break parsed;
            }
            if client.read_buf(&mut from_client).await? == 0 {
                return Ok(());
            }
        };
        while from_client.len() < head_len + body_len {
            if client.read_buf(&mut from_client).await? == 0 {
                return Ok(());
            }
        }
        out.extend_from_slice(&from_client[head_len..head_len + body_len]);
        from_client.advance(head_len + body_len);
        upstream.write_all(&out).await?;

        let (head_len, framing) = loop {
            if let Some(parsed) = response_head(&from_upstream, &mut out)? {
                break parsed;
            }
            if upstream.read_buf(&mut from_upstream).await? == 0 {
                return Err(invalid("upstream closed"));
            }
        };
        from_upstream.advance(head_len);
        match framing {
            Framing::Length(len) => {
                while from_upstream.len() < len {
                    if upstream.read_buf(&mut from_upstream).await? == 0 {
                        return Err(invalid("upstream closed"));
                    }
                }
                out.extend_from_slice(&from_upstream[..len]);
                from_upstream.advance(len);
                client.write_all(&out).await?;
            }
            Framing::Chunked => {
                client.write_all(&out).await?;
                loop {
                    let (complete, finished) = complete_chunks(&from_upstream)?;
                    if complete > 0 {
                        client.write_all(&from_upstream[..complete]).await?;
                        from_upstream.advance(complete);
                    }
                    if finished {
                        break;
                    }
                    if upstream.read_buf(&mut from_upstream).await? == 0 {
                        return Err(invalid("upstream closed mid-stream"));
                    }
                }
            }
        }
    }
}

/// Parses a request head; on success writes the head to send upstream into `out` and returns
/// the head's length and the body's.
fn request_head(
    buf: &[u8],
    upstream_addr: &str,
    out: &mut Vec<u8>,
) -> io::Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let Some(head_len) = complete_head(request.parse(buf), "bad request head")? else {
        return Ok(None);
    };
    out.clear();
    out.extend_from_slice(request.method.unwrap_or("GET").as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(upstream_addr.as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut body_len = 0;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("chunked request bodies are not handled"));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            body_len = parse_decimal(header.value)?;
        }
        if is_hop_by_hop(header.name) {
            continue;
        }
        push_header(out, header);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some((head_len, body_len)))
}

/// Parses a response head; on success writes the head to send to the client into `out`.
fn response_head(buf: &[u8], out: &mut Vec<u8>) -> io::Result<Option<(usize, Framing)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let Some(head_len) = complete_head(response.parse(buf), "bad response head")? else {
        return Ok(None);
    };
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    let code = response.code.unwrap_or(502);
    out.extend_from_slice(&[
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(response.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut framing = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            framing = Some(Framing::Length(parse_decimal(header.value)?));
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Some(Framing::Chunked);
        }
        if is_hop_by_hop(header.name) {
            continue;
        }
        push_header(out, header);
    }
    out.extend_from_slice(b"\r\n");
    let framing = framing.ok_or_else(|| invalid("answers without a length are not handled"))?;
    Ok(Some((head_len, framing)))
}

/// The head's length once it is complete, `None` while more bytes are needed.
fn complete_head(parsed: httparse::Result<usize>, what: &str) -> io::Result<Option<usize>> {
    match parsed.map_err(|_| invalid(what))? {
        httparse::Status::Complete(len) => Ok(Some(len)),
        httparse::Status::Partial => Ok(None),
    }
}

fn push_header(out: &mut Vec<u8>, header: &httparse::Header<'_>) {
    out.extend_from_slice(header.name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(header.value);
    out.extend_from_slice(b"\r\n");
}

fn parse_decimal(value: &[u8]) -> io::Result<usize> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| invalid("bad length"))
}

/// The length of the whole chunks at the start of `buf`, and whether the last chunk (size 0,
/// no trailers) is among them.
fn complete_chunks(buf: &[u8]) -> io::Result<(usize, bool)> {
    let mut at = 0;
    loop {
        let Some(line_end) = buf[at..].windows(2).position(|pair| pair == b"\r\n") else {
            return Ok((at, false));
        };
        let size_text = &buf[at..at + line_end];
        let size_text = size_text
            .split(|&byte| byte == b';')
            .next()
            .unwrap_or_default();
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|text| usize::from_str_radix(text.trim(), 16).ok())
            .ok_or_else(|| invalid("bad chunk size"))?;
        let end = at + line_end + 2 + size + 2;
        if buf.len() < end {
            return Ok((at, false));
        }
        at = end;
        if size == 0 {
            return Ok((at, true));
        }
    }
}
