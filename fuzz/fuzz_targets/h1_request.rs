//! Strait's own HTTP/1.1 server codec on arbitrary bytes (the start of a
//! client connection), plus the upstream response parser on the same
//! bytes. Beyond "never panics", what the serving loop accepts must be
//! unambiguous framing (RFC 9112 §6.3): no `Transfer-Encoding`, at most one
//! `Content-Length`, made of digits only and equal to the body it took.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait_codec::h1::parse::{parse_one, ParseOutcome, MAX_HEAD};

fuzz_target!(|data: &[u8]| {
    match parse_one(data) {
        ParseOutcome::Request {
            headers,
            body,
            consumed,
            path,
            ..
        } => {
            assert!(consumed <= data.len());
            // A head the loop serves fits Envoy's 60 KiB limit.
            assert!(consumed - body <= MAX_HEAD, "head of {} bytes", consumed - body);
            assert!(path.starts_with('/'), "origin form only: {path:?}");
            let mut lengths = headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-length"));
            match lengths.next() {
                Some((_, v)) => {
                    assert!(v.iter().all(u8::is_ascii_digit), "{v:?}");
                    let n: usize = std::str::from_utf8(v).unwrap().parse().unwrap();
                    assert_eq!(n, body);
                }
                None => assert_eq!(body, 0),
            }
            assert!(lengths.next().is_none(), "one content-length");
            assert!(!headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding")));
        }
        ParseOutcome::NeedMore => {}
        ParseOutcome::NeedBody => {}
        ParseOutcome::Handoff => {}
        ParseOutcome::Reject(r) => {
            assert!(r.status.is_client_error());
        }
    }
    // The same bytes as an upstream's response.
    let mut buf = bytes::BytesMut::from(data);
    let _ = strait_codec::h1::response::parse(&mut buf, false);
});
