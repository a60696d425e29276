//! [`ask_custom`], the CUSTOM-policy bookkeeping the route path and the
//! inbound policy listener share, against authorizers on loopback: what
//! the client gets, what the access log records, what goes upstream.
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// An authorizer on loopback answering every check with `response` (raw
/// HTTP/1.1, the connection closed after it).
async fn authorizer(response: &'static str) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Provider `name` at `addr`, passing `x-authz` upstream on allow.
fn provider(name: &str, addr: SocketAddr) -> Arc<ExtAuthz> {
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n    extensionProviders:\n    - name: {name}\n      envoyExtAuthzHttp:\n        service: \"{}\"\n        port: {}\n        headersToUpstreamOnAllow: [x-authz]\n",
        addr.ip(),
        addr.port()
    );
    let loaded = strait_config::load::load_str(&yaml, "mesh.yaml");
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let (snap, _) = strait_config::compile(&loaded.resources);
    Arc::new(ExtAuthz::build(name, &snap).unwrap())
}

async fn ask(
    providers: Vec<Arc<ExtAuthz>>,
    rec: &mut AccessLogRecord,
) -> Result<Vec<(HeaderName, HeaderValue)>, Response<ProxyBody>> {
    let ask = providers
        .into_iter()
        .map(|p| (p, Arc::from("ns/custom-policy")))
        .collect();
    let check = CustomCheck {
        on_behalf_of: "127.0.0.1".parse().unwrap(),
        method: &Method::GET,
        path_and_query: "/admin?x=1",
        host: "web",
        headers: &HeaderMap::new(),
        peer: "127.0.0.1:40000".parse().unwrap(),
        at: "inbound",
    };
    ask_custom(ask, check, rec).await
}

const ALLOW: &str = "HTTP/1.1 200 OK\r\nx-authz: yes\r\ncontent-length: 0\r\n\r\n";
const DENY: &str = "HTTP/1.1 403 Forbidden\r\nx-why: no\r\ncontent-length: 6\r\n\r\ndenied";

#[tokio::test]
async fn a_denying_authorizer_answers_the_client_and_is_logged_as_uaex_denied() {
    let x = provider("deny", authorizer(DENY).await);
    let mut rec = AccessLogRecord::default();
    let reply = ask(vec![x], &mut rec).await.unwrap_err();
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    let body = reply.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"denied");
    assert!(rec
        .response_flags
        .contains(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE));
    assert_eq!(rec.response_code_details, Some("ext_authz_denied"));
}

#[tokio::test]
async fn an_unreachable_authorizer_denies_with_status_on_error_and_ext_authz_error() {
    // A port nothing listens on: the check fails, `statusOnError` (403).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut rec = AccessLogRecord::default();
    let reply = ask(vec![provider("gone", addr)], &mut rec)
        .await
        .unwrap_err();
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert!(rec
        .response_flags
        .contains(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE));
    assert_eq!(rec.response_code_details, Some("ext_authz_error"));
}

#[tokio::test]
async fn allowing_authorizers_pass_their_upstream_headers_and_log_nothing() {
    let a = provider("a", authorizer(ALLOW).await);
    let b = provider("b", authorizer(ALLOW).await);
    let mut rec = AccessLogRecord::default();
    let up = ask(vec![a, b], &mut rec).await.unwrap();
    let x_authz: Vec<_> = up.iter().filter(|(n, _)| n == "x-authz").collect();
    assert_eq!(x_authz.len(), 2, "{up:?}");
    assert!(x_authz.iter().all(|(_, v)| v == "yes"));
    assert!(!rec
        .response_flags
        .contains(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE));
    assert_eq!(rec.response_code_details, None);
}

#[tokio::test]
async fn the_first_deny_wins_after_an_allow() {
    let a = provider("a", authorizer(ALLOW).await);
    let d = provider("d", authorizer(DENY).await);
    let mut rec = AccessLogRecord::default();
    let reply = ask(vec![a, d], &mut rec).await.unwrap_err();
    assert_eq!(reply.status(), StatusCode::FORBIDDEN);
    assert_eq!(reply.headers()["x-why"], "no");
    assert_eq!(rec.response_code_details, Some("ext_authz_denied"));
}
