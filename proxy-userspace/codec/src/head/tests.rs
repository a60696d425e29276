use super::*;
use crate::h1::spans::{span, uninit_headers};

/// The raw headers of `head` (a whole HTTP/1.1 request head).
fn raw(head: &'static [u8]) -> ReqHeaders {
    let buf = bytes::Bytes::from_static(head);
    let mut slots = uninit_headers::<16>();
    let mut req = httparse::Request::new(&mut []);
    let n = req.parse_with_uninit_headers(&buf, &mut slots).unwrap();
    assert!(n.is_complete());
    let base = buf.as_ptr() as usize;
    let spans = req.headers.iter().map(|h| span(base, h)).collect();
    ReqHeaders::Raw(RawHeaders::new(buf.clone(), spans))
}

fn encoded(h: &ReqHeaders) -> String {
    let mut out = Vec::new();
    h.encode(&mut out);
    String::from_utf8(out).unwrap()
}

fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

#[test]
fn lookups_ignore_case_and_return_the_first_value() {
    let h = raw(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\nx-bin: \xff\r\n\r\n");
    assert_eq!(h.get_str(&http::header::HOST), Some("a"));
    assert_eq!(h.get_str(&name("x-a")), Some("1"));
    assert!(h.contains_key(&name("x-bin")));
    // Not visible ASCII: like `HeaderValue::to_str`, no string.
    assert_eq!(h.get_str(&name("x-bin")), None);
    assert_eq!(h.get_bytes(&name("x-bin")), Some(&b"\xff"[..]));
    assert!(!h.contains_key(&name("x-c")));
    assert_eq!(h.get_value(&name("x-a")).unwrap(), "1");
}

#[test]
fn canonical_lines_are_copied_as_they_came_with_additions_after() {
    let mut h = raw(b"GET / HTTP/1.1\r\nhost: a\r\naccept: */*\r\n\r\n");
    h.insert(name("x-request-id"), HeaderValue::from_static("r1"));
    assert!(matches!(h, ReqHeaders::Raw(_)));
    assert_eq!(
        encoded(&h),
        "host: a\r\naccept: */*\r\nx-request-id: r1\r\n"
    );
    assert_eq!(h.get_str(&name("x-request-id")), Some("r1"));
}

#[test]
fn other_lines_are_rewritten_with_lower_case_names() {
    let h = raw(b"GET / HTTP/1.1\r\nHost:a\r\nUser-Agent:   curl  \r\n\r\n");
    assert_eq!(encoded(&h), "host: a\r\nuser-agent: curl\r\n");
}

#[test]
fn replacing_a_client_header_turns_raw_into_a_map() {
    let mut h = raw(b"GET / HTTP/1.1\r\nhost: a\r\nx-a: 1\r\nx-a: 2\r\n\r\n");
    h.insert(http::header::HOST, HeaderValue::from_static("b"));
    let ReqHeaders::Map(m) = &h else {
        panic!("still raw");
    };
    assert_eq!(m.get_all(http::header::HOST).iter().count(), 1);
    assert_eq!(m["host"], "b");
    assert_eq!(m.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
}

#[test]
fn removed_headers_are_not_sent_or_found() {
    let mut h = raw(b"GET / HTTP/1.1\r\nhost: a\r\nx-a: 1\r\nx-b: 2\r\nx-a: 3\r\n\r\n");
    h.remove(&name("x-a"));
    assert!(!h.contains_key(&name("x-a")));
    assert_eq!(encoded(&h), "host: a\r\nx-b: 2\r\n");
    let m = h.to_map();
    assert_eq!(m.len(), 2);
    assert!(m.get("x-a").is_none());
}

#[test]
fn hop_by_hop_headers_are_stripped_from_the_raw_form() {
    let mut h = raw(
        b"GET / HTTP/1.1\r\nhost: a\r\nConnection: keep-alive, x-z\r\nKeep-Alive: 5\r\nte: trailers\r\nupgrade: ws\r\n\r\n",
    );
    h.strip_hop_by_hop(false);
    assert_eq!(encoded(&h), "host: a\r\nte: trailers\r\n");

    let mut h = raw(b"GET / HTTP/1.1\r\nconnection: upgrade\r\nupgrade: ws\r\nte: gzip\r\n\r\n");
    h.strip_hop_by_hop(true);
    assert_eq!(encoded(&h), "connection: upgrade\r\nupgrade: ws\r\n");
}

#[test]
fn map_keeps_order_and_additions() {
    let mut h = raw(b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\ncookie: s=\"v\"; b=2\r\n\r\n");
    h.insert(name("x-forwarded-proto"), HeaderValue::from_static("http"));
    let found = h.find_map_all(&http::header::COOKIE, |v| {
        std::str::from_utf8(v).ok()?.contains("s=").then_some(v)
    });
    assert_eq!(found, Some(&b"s=\"v\"; b=2"[..]));
    let m = h.into_map();
    let names: Vec<_> = m.keys().map(|k| k.as_str()).collect();
    assert_eq!(names, ["host", "cookie", "x-forwarded-proto"]);
    assert_eq!(m.get_all("cookie").iter().count(), 2);
}
