//! Request head encoding (RFC 9112 §3): origin form, the request's headers
//! as given, and the body framing the proxy chose.
use bytes::BufMut;
use http::Method;

use crate::head::ReqHeaders;

/// How the request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (no framing header added).
    Empty,
    /// `Content-Length: n` (already among the headers, or added).
    Length(u64),
    /// `Transfer-Encoding: chunked`, added by the proxy.
    Chunked,
}

/// Chooses the framing for a body of `exact` length (`None` = unknown)
/// given the headers that will be sent.
pub fn framing(headers: &ReqHeaders, exact: Option<u64>, end_stream: bool) -> Framing {
    if end_stream && exact.is_none_or(|n| n == 0) {
        // A client-sent `content-length: 0` stays among the headers.
        return Framing::Empty;
    }
    match exact {
        Some(n) => Framing::Length(n),
        None => match content_length(headers) {
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        },
    }
}

fn content_length(h: &ReqHeaders) -> Option<u64> {
    h.get_str(&http::header::CONTENT_LENGTH)?.parse().ok()
}

/// Appends `METHOD path HTTP/1.1`, the headers, any framing header the
/// headers lack, and the blank line to `out`.
pub fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    headers: &ReqHeaders,
    framing: Framing,
) {
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(if path_and_query.is_empty() {
        b"/"
    } else {
        path_and_query.as_bytes()
    });
    out.put_slice(b" HTTP/1.1\r\n");
    headers.encode(out);
    match framing {
        Framing::Length(n) if !headers.contains_key(&http::header::CONTENT_LENGTH) => {
            out.put_slice(b"content-length: ");
            out.put_slice(itoa::Buffer::new().format(n).as_bytes());
            out.put_slice(b"\r\n");
        }
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.put_slice(b"\r\n");
}

/// Appends `name: value CRLF`.
pub fn header_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Whether a `Connection` header value lists `token` (ASCII case
/// insensitive, RFC 9110 §7.6.1).
pub fn connection_has(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Appends one chunk (`size CRLF data CRLF`) of a chunked body.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// The last chunk and the (empty) trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_in_origin_form_with_added_length() {
        let mut h = http::HeaderMap::new();
        h.insert("host", "reviews:9080".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        let h = ReqHeaders::Map(h);
        let mut out = Vec::new();
        encode_head(&mut out, &Method::POST, "/r?x=1", &h, Framing::Length(12));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /r?x=1 HTTP/1.1\r\nhost: reviews:9080\r\nx-a: 1\r\nx-a: 2\r\ncontent-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn framing_choice() {
        let mut h = ReqHeaders::default();
        assert_eq!(framing(&h, None, true), Framing::Empty);
        assert_eq!(framing(&h, Some(5), false), Framing::Length(5));
        assert_eq!(framing(&h, None, false), Framing::Chunked);
        h.insert(http::header::CONTENT_LENGTH, "7".parse().unwrap());
        assert_eq!(framing(&h, None, false), Framing::Length(7));
        let mut out = Vec::new();
        encode_chunk(&mut out, b"hello world!");
        assert_eq!(out, b"c\r\nhello world!\r\n");
    }
}
