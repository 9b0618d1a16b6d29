//! TLS client configuration (webpki roots plus operator-supplied CAs), reading certificate
//! files, and the connector that bounds TCP connect + TLS handshake by one timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use http::Uri;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::ForwardError;

/// Parses a certificate file's contents: one or more PEM `CERTIFICATE` blocks (other PEM blocks,
/// e.g. a bundled key, are skipped), or a single DER certificate.
///
/// The result is the DER of each certificate, in file order, ready for
/// [`ForwardConfig::extra_root_certificates`](crate::ForwardConfig::extra_root_certificates).
/// Each one is checked to be usable as a trust anchor, so a caller can refuse a bad file before
/// doing anything else (the [`Forwarder`](crate::Forwarder) checks again when built).
///
/// # Errors
///
/// [`ForwardError::Client`] when the input is PEM without any `CERTIFICATE` block, a block is not
/// terminated or not valid base64, the input is neither PEM nor DER, or a certificate cannot be
/// parsed.
pub fn parse_certificates(contents: &[u8]) -> Result<Vec<Vec<u8>>, ForwardError> {
    let certificates = split_certificates(contents)?;
    // Building a root store parses each certificate the way the TLS client will.
    trust_anchors(&certificates)?;
    Ok(certificates)
}

fn split_certificates(contents: &[u8]) -> Result<Vec<Vec<u8>>, ForwardError> {
    let invalid = |what: &str| ForwardError::Client(format!("certificate file: {what}"));
    // A DER certificate is an ASN.1 SEQUENCE (0x30); PEM is text starting with a label or
    // comment lines, never with that byte.
    if contents.first() == Some(&0x30) {
        return Ok(vec![contents.to_vec()]);
    }
    let text = std::str::from_utf8(contents).map_err(|_| invalid("neither PEM nor DER"))?;
    let mut certificates = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
        else {
            // Text around the blocks (e.g. `subject=` lines of a CA bundle) is allowed by RFC 7468.
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut base64_text = String::new();
        let mut terminated = false;
        for line in lines.by_ref() {
            if line == end {
                terminated = true;
                break;
            }
            base64_text.push_str(line);
        }
        if !terminated {
            return Err(invalid(&format!("{label} block without its END line")));
        }
        if label != "CERTIFICATE" {
            continue;
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(base64_text.as_bytes())
            .map_err(|_| invalid("a CERTIFICATE block is not valid base64"))?;
        certificates.push(der);
    }
    if certificates.is_empty() {
        return Err(invalid("no CERTIFICATE block and not DER"));
    }
    Ok(certificates)
}

/// The rustls client configuration: `ring`, safe default protocol versions, the Mozilla roots
/// plus `extra_roots` (DER), no client certificate. ALPN is left empty: hyper-rustls sets it.
pub(crate) fn client_config(extra_roots: &[Vec<u8>]) -> Result<ClientConfig, ForwardError> {
    let mut roots = trust_anchors(extra_roots)?;
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| ForwardError::Client(format!("TLS configuration: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(config)
}

/// A root store holding exactly `certificates` (DER).
fn trust_anchors(certificates: &[Vec<u8>]) -> Result<RootCertStore, ForwardError> {
    let mut roots = RootCertStore::empty();
    for (index, der) in certificates.iter().enumerate() {
        roots
            .add(CertificateDer::from(der.as_slice()))
            .map_err(|e| ForwardError::Client(format!("root certificate #{}: {e}", index + 1)))?;
    }
    Ok(roots)
}

/// Wraps the HTTPS connector so that one deadline covers name resolution, the TCP connect and the
/// TLS handshake. `HttpConnector`'s own timeout stops at TCP, so a server that accepts but never
/// finishes the handshake would otherwise hold the request until the response timeout (a 504
/// minutes later instead of a prompt 503).
#[derive(Clone)]
pub(crate) struct TimeoutConnector {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

impl TimeoutConnector {
    pub(crate) fn new(inner: HttpsConnector<HttpConnector>, timeout: Duration) -> Self {
        TimeoutConnector { inner, timeout }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

impl Service<Uri> for TimeoutConnector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result,
                // `TimedOut` is what `classify` reads as `UnreachableReason::ConnectTimeout`, the
                // same kind `HttpConnector` uses for its TCP-only timeout.
                Err(_elapsed) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connect (TCP and TLS handshake) timed out",
                )
                .into()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut out = format!("-----BEGIN {label}-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).unwrap());
            out.push('\n');
        }
        out.push_str(&format!("-----END {label}-----\n"));
        out
    }

    #[test]
    fn der_input_is_one_certificate() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        assert_eq!(split_certificates(&der).unwrap(), vec![der.clone()]);
        // ... which must also parse as a certificate.
        let err = parse_certificates(&der).unwrap_err();
        assert!(
            matches!(&err, ForwardError::Client(m) if m.contains("#1")),
            "{err:?}"
        );
    }

    #[test]
    fn pem_bundle_keeps_certificates_in_order_and_skips_other_blocks() {
        let a = vec![0x30, 1, 2, 3];
        let b = vec![0x30, 4, 5, 6, 7, 8, 9];
        let key = vec![0x30, 0xff];
        let text = format!(
            "subject=CN=Internal CA\r\n{}\n{}{}",
            pem("CERTIFICATE", &a),
            pem("PRIVATE KEY", &key),
            pem("CERTIFICATE", &b).replace('\n', "\r\n"),
        );
        assert_eq!(split_certificates(text.as_bytes()).unwrap(), vec![a, b]);
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        for input in [
            String::new(),
            "hello".to_owned(),
            pem("PRIVATE KEY", &[0x30, 1]),
            "-----BEGIN CERTIFICATE-----\nMIIB\n".to_owned(),
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_owned(),
        ] {
            assert!(
                matches!(
                    parse_certificates(input.as_bytes()),
                    Err(ForwardError::Client(_))
                ),
                "{input:?} should be rejected"
            );
        }
        assert!(parse_certificates(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn invalid_extra_root_is_a_client_error() {
        let err = client_config(&[vec![0x30, 0x03, 0x02, 0x01, 0x01]]).unwrap_err();
        assert!(
            matches!(&err, ForwardError::Client(m) if m.contains("#1")),
            "{err:?}"
        );
        assert!(client_config(&[]).is_ok());
    }
}
