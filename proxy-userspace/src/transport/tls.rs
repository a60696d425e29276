//! TLS passthrough support: read the SNI from a ClientHello without
//! consuming it, like Envoy's `tls_inspector` listener filter.
use std::time::Duration;

use tls_parser::{
    parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage, TlsMessageHandshake,
};
use tokio::net::TcpStream;

/// Largest TLS record plus its 5-byte header (RFC 8446 §5.1).
const MAX_RECORD: usize = 5 + 16384;

/// The server name of a complete TLS record holding a ClientHello, lowercased.
/// `None` when the record is not a ClientHello or has no `server_name`.
pub fn sni_from_record(record: &[u8]) -> Option<String> {
    let (_, plain) = parse_tls_plaintext(record).ok()?;
    for msg in plain.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg {
            let (_, exts) = parse_tls_extensions(hello.ext?).ok()?;
            for ext in exts {
                if let TlsExtension::SNI(names) = ext {
                    let (_, name) = names.first()?;
                    return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                }
            }
        }
    }
    None
}

/// Peeks the first TLS record of `stream` (waiting up to `timeout` for all
/// of it) and returns its SNI.
pub async fn peek_sni(stream: &TcpStream, timeout: Duration) -> Option<String> {
    let mut buf = vec![0u8; MAX_RECORD];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = tokio::time::timeout_at(deadline, stream.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n < 5 {
            if n == 0 {
                return None;
            }
        } else {
            let want = 5 + u16::from_be_bytes([buf[3], buf[4]]) as usize;
            if n >= want {
                return sni_from_record(&buf[..want]);
            }
        }
        tokio::time::timeout_at(deadline, stream.readable())
            .await
            .ok()?
            .ok()?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
