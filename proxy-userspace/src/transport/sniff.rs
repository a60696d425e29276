//! Protocol detection for ports whose protocol is not declared, like Istio's
//! `http_inspector` / `tls_inspector` listener filters: peek at the first
//! bytes without consuming them.
use std::time::Duration;

use tokio::net::TcpStream;

/// What the first bytes of a connection look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line (`GET / HTTP/1.1`).
    Http1,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`), i.e. prior knowledge.
    Http2,
    /// A TLS handshake record (ClientHello); [`super::tls::sni`] reads it.
    Tls,
    /// Anything else: opaque TCP.
    Opaque,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// Classifies a prefix of the stream. Returns `None` while more bytes are
/// needed to decide.
pub fn classify(buf: &[u8]) -> Option<Sniffed> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        // TLS record type handshake, then version 3.x.
        return match buf.get(1) {
            None => None,
            Some(3) => Some(Sniffed::Tls),
            Some(_) => Some(Sniffed::Opaque),
        };
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Sniffed::Http2)
        } else {
            None
        };
    }
    let mut undecided = false;
    for m in METHODS {
        let k = buf.len().min(m.len());
        if buf[..k] == m[..k] {
            if k == m.len() {
                return Some(Sniffed::Http1);
            }
            undecided = true;
        }
    }
    if undecided {
        None
    } else {
        Some(Sniffed::Opaque)
    }
}

/// Peeks until [`classify`] decides, the client sends nothing for `timeout`
/// (server-first protocols such as MySQL: opaque, as Istio's
/// `protocol_detection_timeout` of 5 s... here configurable), or EOF.
pub async fn sniff(stream: &TcpStream, timeout: Duration) -> std::io::Result<Sniffed> {
    let mut buf = [0u8; 32];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(Sniffed::Opaque),
        };
        if n == 0 {
            return Ok(Sniffed::Opaque);
        }
        if let Some(s) = classify(&buf[..n]) {
            return Ok(s);
        }
        if n == buf.len() {
            return Ok(Sniffed::Opaque);
        }
        // Not enough bytes yet: wait for more without busy-looping.
        stream.readable().await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// [`sniff`] for a stream that cannot be peeked (an HBONE tunnel's inner
/// stream): reads until [`classify`] decides, the client sends nothing for
/// `timeout` (opaque), EOF (opaque) or 32 bytes. Returns the bytes read,
/// which the caller puts back in front of the stream (e.g. with
/// `strait_codec::h1::prefixed::Prefixed`).
///
/// Errors: a read error of `stream`.
pub async fn sniff_read<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    timeout: Duration,
) -> std::io::Result<(Sniffed, bytes::Bytes)> {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(32);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut chunk = [0u8; 32];
        let want = 32 - buf.len();
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..want])).await {
            Ok(r) => r?,
            Err(_) => return Ok((Sniffed::Opaque, buf.freeze())),
        };
        if n == 0 {
            return Ok((Sniffed::Opaque, buf.freeze()));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(s) = classify(&buf) {
            return Ok((s, buf.freeze()));
        }
        if buf.len() == 32 {
            return Ok((Sniffed::Opaque, buf.freeze()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sniff_read_returns_what_it_read() {
        let (mut c, mut s) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        c.write_all(b"GE").await.unwrap();
        let h =
            tokio::spawn(async move { sniff_read(&mut s, Duration::from_secs(10)).await.unwrap() });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
        let (what, read) = h.await.unwrap();
        assert_eq!(what, Sniffed::Http1);
        assert!(b"GET / HTTP/1.1\r\n".starts_with(&read), "{read:?}");
        assert!(read.starts_with(b"GET "));
        // A server-first protocol: nothing within the timeout, opaque.
        let (_c, mut s) = tokio::io::duplex(64);
        let (what, read) = sniff_read(&mut s, Duration::from_millis(50)).await.unwrap();
        assert_eq!((what, read.len()), (Sniffed::Opaque, 0));
    }

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Sniffed::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Sniffed::Http2));
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(&[0x16, 3, 1, 0, 5]), Some(Sniffed::Tls));
        assert_eq!(classify(b"\x00\x00mysql"), Some(Sniffed::Opaque));
        assert_eq!(classify(b"HELLO"), Some(Sniffed::Opaque));
    }
}
