//! The route matcher (Istio `HTTPMatchRequest` / `StringMatch` as Envoy
//! applies them) and path normalization, on arbitrary requests, from
//! `strait-codec` alone. Input: the first byte picks the normalization
//! mode, then `METHOD TARGET` and `name: value` lines.
//!
//! Checks, beyond "no panic":
//! - normalization is idempotent, keeps the query and leaves no `.`/`..`
//!   segment (the traversal that would let `/public/../admin` reach an
//!   `/admin` backend through a `/public/` rule);
//! - every `StringMatch` kind agrees with its definition on the request's
//!   own strings used as patterns: exact is equality, prefix is
//!   `starts_with`, a regex is anchored to the whole value (an escaped
//!   literal matches only itself), `ignoreUriCase` is ASCII
//!   case-insensitive;
//! - a fixed table with every kind of match (prefix, exact + method,
//!   case-insensitive regex, headers, query, authority, withoutHeaders)
//!   evaluates without panicking and its prefix rules agree with the path.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strait_codec::head::ReqHead;
use strait_codec::matching::{query_param, HttpMatch, MatchContext, StringMatch};
use strait_codec::normalize::{normalize, normalize_head, PathNormalization};

fn sm(kind: &str, v: &str) -> StringMatch {
    match kind {
        "exact" => StringMatch::Exact(v.into()),
        "prefix" => StringMatch::Prefix(v.into()),
        _ => StringMatch::regex(v).expect("valid regex"),
    }
}

/// The rules of `fuzz/corpus/route_match` (as Istio YAML in the README).
fn table() -> &'static [HttpMatch] {
    static T: OnceLock<Vec<HttpMatch>> = OnceLock::new();
    T.get_or_init(|| {
        vec![
            HttpMatch {
                uri: Some(sm("prefix", "/admin")),
                ..Default::default()
            },
            HttpMatch {
                uri: Some(sm("exact", "/exact")),
                method: Some(sm("exact", "POST")),
                ..Default::default()
            },
            HttpMatch {
                uri: Some(sm("regex", "/r/[a-z]+/(x|y)")),
                ignore_uri_case: true,
                ..Default::default()
            },
            HttpMatch {
                headers: vec![
                    ("x-user".parse().unwrap(), sm("exact", "jason")),
                    ("x-re".parse().unwrap(), sm("regex", "a.*b")),
                ],
                ..Default::default()
            },
            HttpMatch {
                query_params: vec![("q".into(), sm("prefix", "abc"))],
                ..Default::default()
            },
            HttpMatch {
                authority: Some(sm("prefix", "api")),
                without_headers: vec![("x-no".parse().unwrap(), StringMatch::Present)],
                ..Default::default()
            },
            HttpMatch {
                uri: Some(sm("prefix", "/public/")),
                port: Some(9080),
                ..Default::default()
            },
        ]
    })
}

fn mode(b: u8) -> PathNormalization {
    match b % 4 {
        0 => PathNormalization::None,
        1 => PathNormalization::Base,
        2 => PathNormalization::MergeSlashes,
        _ => PathNormalization::DecodeAndMergeSlashes,
    }
}

/// `StringMatch` against its definition, `pattern` against `value`.
fn check_string_match(pattern: &str, value: &str) {
    assert_eq!(
        StringMatch::Exact(pattern.into()).matches(value),
        pattern == value
    );
    assert_eq!(
        StringMatch::Prefix(pattern.into()).matches(value),
        value.starts_with(pattern)
    );
    assert!(StringMatch::Present.matches(value));
    let literal = StringMatch::regex(&regex::escape(pattern)).expect("escaped literal compiles");
    assert_eq!(
        literal.matches(value),
        pattern == value,
        "anchored regex: {pattern:?} vs {value:?}"
    );
    // Any regex the fuzzer writes either fails to compile or matches
    // without panicking.
    if let Ok(re) = StringMatch::regex(pattern) {
        let _ = re.matches(value);
    }
}

fn check_ignore_case(pattern: &str, head: &ReqHead, ctx: &MatchContext<'_>) {
    let path = head.uri.path();
    let exact = HttpMatch {
        uri: Some(StringMatch::Exact(pattern.into())),
        ignore_uri_case: true,
        ..Default::default()
    };
    assert_eq!(exact.matches(head, ctx), path.eq_ignore_ascii_case(pattern));
    let prefix = HttpMatch {
        uri: Some(StringMatch::Prefix(pattern.into())),
        ignore_uri_case: true,
        ..Default::default()
    };
    let want = path.len() >= pattern.len()
        && path.as_bytes()[..pattern.len()].eq_ignore_ascii_case(pattern.as_bytes());
    assert_eq!(prefix.matches(head, ctx), want);
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let mode = mode(m);
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let mut req = http::Request::builder().method(method).uri(target);
    let mut pairs = Vec::new();
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            req = req.header(n.trim(), v.trim());
            pairs.push((n.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let Ok(req) = req.body(()) else {
        return;
    };
    let (parts, ()) = req.into_parts();
    let mut head: ReqHead = parts.into();

    if let Some(pq) = head.uri.path_and_query() {
        let before = pq.as_str().to_owned();
        if let Ok(out) = normalize(&before, mode) {
            let norm = out.unwrap_or_else(|| before.clone());
            assert_eq!(
                normalize(&norm, mode),
                Ok(None),
                "idempotent: {before:?} -> {norm:?}"
            );
            let (path, query) = norm.split_once('?').unwrap_or((&norm, ""));
            if mode != PathNormalization::None {
                assert!(path.starts_with('/'), "{norm:?}");
                assert!(
                    !path.split('/').any(|s| s == "." || s == ".."),
                    "{before:?} -> {norm:?}"
                );
                let q = before.split_once('?').map_or("", |(_, q)| q);
                assert_eq!(query, q);
            }
        }
    }
    if normalize_head(&mut head, mode).is_err() {
        return;
    }
    let ctx = MatchContext {
        port: 9080,
        source: None,
        scheme: "http",
    };
    let path = head.uri.path().to_owned();
    for (i, rule) in table().iter().enumerate() {
        let hit = rule.matches(&head, &ctx);
        match i {
            0 => assert_eq!(hit, path.starts_with("/admin")),
            6 => assert_eq!(hit, path.starts_with("/public/")),
            _ => {}
        }
    }
    // The request's own strings as patterns against each other.
    for (n, v) in &pairs {
        check_string_match(n, v);
        check_string_match(v, &path);
        check_ignore_case(v, &head, &ctx);
    }
    check_string_match(&path, &path);
    check_ignore_case(&path.to_ascii_uppercase(), &head, &ctx);
    // A query parameter found is one `name=value` (or bare `name`) pair of
    // the query.
    let query = head.uri.query().unwrap_or("");
    for (n, _) in &pairs {
        if let Some(v) = query_param(query, n) {
            assert!(
                query
                    .split('&')
                    .any(|kv| kv == format!("{n}={v}") || (v.is_empty() && kv == n)),
                "{n:?} = {v:?} in {query:?}"
            );
        }
    }
});
