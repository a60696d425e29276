//! The route matcher and path normalization on arbitrary requests against
//! a fixed table with every kind of Istio match (prefix, exact, regex,
//! headers, query parameters, method, authority, case-insensitive URI,
//! withoutHeaders). Input: first byte picks the normalization mode, then
//! `METHOD TARGET` and `name: value` lines.
//!
//! Checks: no panic; normalization is idempotent, keeps the query and
//! leaves no `.`/`..` segment.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strait::proxy::head::ReqHead;
use strait::serve::http::normalize::{normalize, PathNormalization};
use strait::runtime::route::MatchContext;
use strait::runtime::Table;

const VIP: &str = "10.96.0.10:9080";

const MESH: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: api, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: api}
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-1, namespace: default, labels: {app: api, version: v1}}
status: {podIP: 10.1.0.5}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403}
  - match: [{uri: {exact: /exact}, method: {exact: POST}}]
    route: [{destination: {host: api}}]
  - match: [{uri: {regex: "^/r/[a-z]+/(x|y)$"}, ignoreUriCase: true}]
    route: [{destination: {host: api}}]
  - match: [{headers: {x-user: {exact: jason}, x-re: {regex: "a.*b"}}}]
    route: [{destination: {host: api}}]
  - match: [{queryParams: {q: {prefix: abc}}}]
    route: [{destination: {host: api}}]
  - match: [{authority: {prefix: api}, withoutHeaders: {x-no: {}}}]
    route: [{destination: {host: api}}]
  - match: [{uri: {prefix: /public/}}]
    route: [{destination: {host: api}}]
"#;

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        let loaded = strait_config::load::load_str(MESH, "fuzz.yaml");
        assert!(!loaded.has_errors(), "{:?}", loaded.diagnostics);
        let (snap, _) = strait_config::compile(&loaded.resources);
        strait::runtime::compile::compile(&snap).expect("table builds")
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
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            req = req.header(n.trim(), v.trim());
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
    if strait::serve::http::normalize_path(&mut head, mode).is_err() {
        return;
    }
    let vip: SocketAddr = VIP.parse().unwrap();
    let Some(svc) = table().service(vip) else {
        panic!("the service is in the table");
    };
    let ctx = MatchContext {
        port: 9080,
        source: None,
        scheme: "http",
    };
    let _ = svc.routes.select_http(&head, &ctx);
});
