//! Response head parsing (RFC 9112 §4, §6.3) with `httparse`.
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::spans::{header_value, uninit_headers, Spans};

/// Most response headers accepted (hyper's client default is 100).
pub const MAX_HEADERS: usize = 100;

/// How the response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status code.
    pub status: StatusCode,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: Version,
    /// Headers as received (framing headers included).
    pub headers: HeaderMap,
    /// Body delimitation.
    pub body: BodyKind,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Why a response head is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Not HTTP/1.x, too many headers, bad bytes.
    #[error("invalid HTTP/1 response from upstream: {0}")]
    Syntax(#[from] httparse::Error),
    /// Conflicting or non-numeric `Content-Length`.
    #[error("invalid content-length in upstream response")]
    ContentLength,
    /// A header name or value `http` rejects.
    #[error("invalid header in upstream response")]
    Header,
}

/// Parses a complete head at the start of `buf` and removes it; `Ok(None)`
/// when more bytes are needed. `head_request`: the request was `HEAD`.
pub fn parse(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, ParseError> {
    let mut raw = uninit_headers::<MAX_HEADERS>();
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut raw)?
    {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Ok(None),
    };
    let status = StatusCode::from_u16(resp.code.unwrap_or(0)).map_err(|_| ParseError::Header)?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Offsets into `buf`, so the values can share one frozen allocation.
    let base = buf.as_ptr() as usize;
    let mut spans = Spans::<MAX_HEADERS>::new();
    let n = resp.headers.len();
    for h in resp.headers.iter() {
        spans.push(base, h);
    }
    let bytes: Bytes = buf.split_to(len).freeze();
    // Room for `x-envoy-upstream-service-time` without growing the map.
    let mut headers = HeaderMap::with_capacity(n + 1);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding = false;
    let mut close = version == Version::HTTP_10;
    for (name, value) in spans.iter() {
        let name = HeaderName::from_bytes(&bytes[name]).map_err(|_| ParseError::Header)?;
        let value = header_value(&bytes, value);
        if name == http::header::CONTENT_LENGTH {
            let v: u64 = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(ParseError::ContentLength)?;
            if length.is_some_and(|l| l != v) {
                return Err(ParseError::ContentLength);
            }
            length = Some(v);
        } else if name == http::header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only the last coding decides (RFC 9112 §6.3).
            chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == http::header::CONNECTION {
            close = connection_has(&value, b"close")
                || (version == Version::HTTP_10 && !connection_has(&value, b"keep-alive"));
        }
        headers.append(name, value);
    }
    let body = if head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        BodyKind::Empty
    } else if transfer_encoding {
        if chunked {
            BodyKind::Chunked
        } else {
            BodyKind::UntilClose
        }
    } else {
        match length {
            Some(0) => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
            None => BodyKind::UntilClose,
        }
    };
    Ok(Some(Head {
        status,
        version,
        headers,
        keep_alive: !close && body != BodyKind::UntilClose,
        body,
    }))
}

fn connection_has(v: &HeaderValue, token: &[u8]) -> bool {
    super::request::connection_has(v.as_bytes(), token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str, head_request: bool) -> (Head, BytesMut) {
        let mut b = BytesMut::from(s);
        let h = parse(&mut b, head_request).unwrap().unwrap();
        (h, b)
    }

    #[test]
    fn length_chunked_close_and_rest_kept() {
        let (h, rest) = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: b\r\n\r\nhello",
            false,
        );
        assert_eq!(h.status, 200);
        assert_eq!(h.body, BodyKind::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(&rest[..], b"hello");

        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert_eq!(h.body, BodyKind::Chunked);
        let (h, _) = head("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(h.body, BodyKind::UntilClose);
        assert!(!h.keep_alive);
        let (h, _) = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true);
        assert_eq!(h.body, BodyKind::Empty);
        let (h, _) = head("HTTP/1.1 204 No Content\r\n\r\n", false);
        assert_eq!(h.body, BodyKind::Empty);
        assert!(h.keep_alive);
        let (h, _) = head(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(!h.keep_alive);
        let (h, _) = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false);
        assert!(!h.keep_alive);
        let (h, _) = head(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\ncontent-length: 0\r\n\r\n",
            false,
        );
        assert!(h.keep_alive);
    }

    #[test]
    fn partial_and_invalid() {
        let mut b = BytesMut::from("HTTP/1.1 200 OK\r\ncontent-le");
        assert!(parse(&mut b, false).unwrap().is_none());
        let mut b =
            BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n");
        assert!(matches!(
            parse(&mut b, false),
            Err(ParseError::ContentLength)
        ));
        let mut b = BytesMut::from("SSH-2.0-OpenSSH\r\n\r\n");
        assert!(parse(&mut b, false).is_err());
    }
}
