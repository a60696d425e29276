//! Hostile HTTP/1.1 clients against the outbound listener (issue 14):
//! request smuggling through `Content-Length` / `Transfer-Encoding`,
//! malformed chunked bodies that must not eject a healthy backend, path
//! traversal past a route, oversized heads, `CONNECT`, slow and idle
//! clients, and the connection cap. Raw sockets write the exact bytes;
//! a byte-recording backend shows what got through.
mod support;

use std::time::{Duration, Instant};

use strait::serve::{PathNormalization, ProxySettings};
use support::client::Client;
use support::MeshBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Generous: the machine running the tests may be loaded.
const WAIT: Duration = Duration::from_secs(15);

/// Sends `req` on a new connection and reads until the proxy closes it
/// (or `done` holds for what arrived).
async fn raw(addr: std::net::SocketAddr, req: &[u8], done: impl Fn(&str) -> bool) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_on(&mut s, req, done).await
}

async fn raw_on(s: &mut TcpStream, req: &[u8], done: impl Fn(&str) -> bool) -> String {
    s.write_all(req).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut b = [0u8; 8192];
            let n = s.read(&mut b).await.unwrap_or(0);
            got.extend_from_slice(&b[..n]);
            if n == 0 || done(&String::from_utf8_lossy(&got)) {
                return;
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("reply in time");
    String::from_utf8_lossy(&got).into_owned()
}

fn until_eof(_: &str) -> bool {
    false
}

/// A response head and its `ok` body from the raw backend.
fn one_ok(t: &str) -> bool {
    t.contains("\r\n\r\nok")
}

const ADMIN_403: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api]
  http:
  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403, body: {string: "admin is closed"}}
  - match: [{uri: {prefix: /public/}}, {uri: {prefix: /ok}}]
    route: [{destination: {host: api}}]
"#;

async fn raw_mesh() -> support::Mesh {
    let mut b = MeshBuilder::new();
    b.raw_http_service("api", 9080, "http", &[("api-v1", &[])])
        .await;
    b.yaml(ADMIN_403);
    b.start().await
}

#[tokio::test]
async fn smuggled_content_lengths_are_refused_before_the_backend() {
    let mesh = raw_mesh().await;
    let front = mesh.fronts["api"];
    let backend = &mesh.service("api").raw_backends["api-v1"];
    // The body of the first is a whole second request for a path the
    // route table answers 403: a backend taking `content-length: 0` would
    // run it.
    let smuggled = "GET /admin/x HTTP/1.1\r\nhost: api\r\n\r\n";
    let cases = [
        format!(
            "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: 0\r\ncontent-length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        ),
        "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: +5\r\n\r\nhello".into(),
        "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: 5x\r\n\r\nhello".into(),
        "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: -1\r\n\r\nhello".into(),
        "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: 5, 6\r\n\r\nhello".into(),
        "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: 99999999999999999999999\r\n\r\nhello".into(),
        format!(
            "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
        ),
        format!(
            "POST /public/a HTTP/1.1\r\nhost: api\r\ntransfer-encoding: chunked\r\ncontent-length: 40\r\n\r\n0\r\n\r\n{smuggled}"
        ),
    ];
    for req in &cases {
        let out = raw(front, req.as_bytes(), until_eof).await;
        assert!(
            out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{req:?} -> {out}"
        );
        assert!(
            out.to_ascii_lowercase().contains("connection: close"),
            "{out}"
        );
    }
    assert_eq!(backend.received(), "", "nothing reached the backend");
    let logs = mesh.logs().await;
    let dpe: Vec<_> = logs
        .iter()
        .filter(|l| l.response_code == 400 && l.response_flags.to_string() == "DPE")
        .collect();
    assert_eq!(dpe.len(), cases.len(), "{logs:?}");

    // The same value twice is one length (Envoy coalesces it); the
    // backend gets the request once, with one content-length.
    let out = raw(
        front,
        b"POST /ok HTTP/1.1\r\nhost: api\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
        one_ok,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    let got = backend.received().to_ascii_lowercase();
    assert_eq!(got.matches("content-length: 5\r\n").count(), 1, "{got}");
    assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn smuggling_after_the_hyper_handoff_is_refused_too() {
    let mesh = raw_mesh().await;
    let front = mesh.fronts["api"];
    let backend = &mesh.service("api").raw_backends["api-v1"];
    // HTTP/1.0 keep-alive: the connection goes to hyper, which then
    // parses every later request on it.
    let mut s = TcpStream::connect(front).await.unwrap();
    let out = raw_on(
        &mut s,
        b"GET /ok HTTP/1.0\r\nhost: api\r\nconnection: keep-alive\r\n\r\n",
        one_ok,
    )
    .await;
    assert!(out.starts_with("HTTP/1.0 200 OK\r\n"), "{out}");
    assert_eq!(backend.requests(), 1);
    let smuggled = "GET /admin/x HTTP/1.1\r\nhost: api\r\n\r\n";
    let req = format!(
        "POST /public/a HTTP/1.1\r\nhost: api\r\ncontent-length: 0\r\ncontent-length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let out = raw_on(&mut s, req.as_bytes(), until_eof).await;
    // hyper answers in the version the connection started with.
    assert!(out.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{out}");
    // A 100 KB header line there: 431, as on Strait's own loop.
    let mut s = TcpStream::connect(front).await.unwrap();
    raw_on(
        &mut s,
        b"GET /ok HTTP/1.0\r\nhost: api\r\nconnection: keep-alive\r\n\r\n",
        one_ok,
    )
    .await;
    let mut big = b"GET /ok HTTP/1.1\r\nhost: api\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let out = raw_on(&mut s, &big, |t| t.contains("\r\n\r\n")).await;
    assert!(out.starts_with("HTTP/1.0 431 "), "{out}");
    assert_eq!(backend.requests(), 2, "{}", backend.received());
}

#[tokio::test]
async fn oversized_head_gets_431_and_connect_gets_404() {
    let mesh = raw_mesh().await;
    let front = mesh.fronts["api"];
    let backend = &mesh.service("api").raw_backends["api-v1"];
    let mut big = b"GET /ok HTTP/1.1\r\nhost: api\r\nx-big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let out = raw(front, &big, until_eof).await;
    assert!(
        out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{out}"
    );
    // Many headers adding up to more than 60 KiB: the same.
    let mut many = b"GET /ok HTTP/1.1\r\nhost: api\r\n".to_vec();
    for i in 0..90 {
        many.extend_from_slice(format!("x-h{i}: ").as_bytes());
        many.extend(std::iter::repeat_n(b'b', 800));
        many.extend_from_slice(b"\r\n");
    }
    many.extend_from_slice(b"\r\n");
    let out = raw(front, &many, until_eof).await;
    assert!(out.starts_with("HTTP/1.1 431 "), "{out}");
    // Just under the limit still goes through.
    let mut fits = b"GET /ok HTTP/1.1\r\nhost: api\r\nx-big: ".to_vec();
    fits.extend(std::iter::repeat_n(b'a', 50 * 1024));
    fits.extend_from_slice(b"\r\n\r\n");
    let out = raw(front, &fits, one_ok).await;
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert_eq!(backend.requests(), 1);

    // CONNECT: no route matches it (Envoy: 404 `NR`), nothing forwarded.
    let out = raw(
        front,
        b"CONNECT api:9080 HTTP/1.1\r\nhost: api:9080\r\n\r\n",
        |t| t.contains("\r\n\r\n"),
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 404 Not Found\r\n"), "{out}");
    assert_eq!(backend.requests(), 1, "{}", backend.received());
    let logs = mesh.logs().await;
    assert!(
        logs.iter().any(|l| l.response_code == 404
            && l.method == Some(http::Method::CONNECT)
            && l.response_flags.to_string() == "NR"),
        "{logs:?}"
    );
    assert!(
        logs.iter()
            .any(|l| l.response_code == 431 && l.response_flags.to_string() == "DPE"),
        "{logs:?}"
    );
}

#[tokio::test]
async fn malformed_chunked_bodies_do_not_eject_the_backend() {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", &[("ratings-v1", &[])])
        .await;
    b.yaml(
        &support::yaml::destination_rule("ratings", r#"
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100}
"#),
    );
    let mesh = b.start().await;
    let front = mesh.fronts["ratings"];
    for bad in [
        &b"POST / HTTP/1.1\r\nhost: ratings\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nhost: ratings\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n"[..],
        &b"POST / HTTP/1.1\r\nhost: ratings\r\ntransfer-encoding: chunked\r\n\r\nffffffffffffffffff\r\nhello\r\n"[..],
    ] {
        let out = raw(front, bad, |t| t.contains("\r\n\r\n")).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }
    // The backend was not ejected: a good request is served.
    let c = Client::http1();
    let r = c.get(&mesh.url("ratings", "/"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let logs = mesh.logs().await;
    let flags: Vec<_> = logs
        .iter()
        .map(|l| (l.response_code, l.response_flags.to_string()))
        .collect();
    assert_eq!(
        flags,
        [
            (400, "DPE".to_string()),
            (400, "DPE".to_string()),
            (400, "DPE".to_string()),
            (200, "-".to_string())
        ],
        "{logs:?}"
    );
}

#[tokio::test]
async fn paths_are_normalized_before_route_matching() {
    let mut b = MeshBuilder::new();
    b.service("api", 9080, "http", &[("api-v1", &[])]).await;
    b.yaml(ADMIN_403);
    let mesh = b.start().await;
    let front = mesh.fronts["api"];
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nhost: api\r\n\r\n");
    let done = |t: &str| {
        t.contains("\r\n\r\n")
            && (t.contains("admin is closed")
                || t.contains("api-v1")
                || t.starts_with("HTTP/1.1 400"))
    };
    for path in [
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/%2E%2E/admin/x",
        "/public/./../admin/x",
        "/public/..%2fadmin/x/../x",
        "/public\\..\\admin/x",
    ] {
        let out = raw(front, get(path).as_bytes(), done).await;
        if path.contains("%2f") {
            // `%2F` is not a separator under BASE: one odd segment, a
            // public path.
            assert!(out.starts_with("HTTP/1.1 200 "), "{path} -> {out}");
        } else {
            assert!(out.starts_with("HTTP/1.1 403 "), "{path} -> {out}");
        }
    }
    let backend = mesh.backend("api", "api-v1");
    let out = raw(
        front,
        get("/public/./a/../b%7e%41?q=/../x").as_bytes(),
        done,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(backend.seen().last().unwrap().path, "/public/b~A?q=/../x");
    // An encoded NUL is refused.
    let out = raw(front, get("/public/a%00b").as_bytes(), done).await;
    assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

    // The other modes of `meshConfig.pathNormalization`.
    mesh.proxy
        .set_path_normalization(PathNormalization::MergeSlashes);
    raw(front, get("/public//a///b").as_bytes(), done).await;
    assert_eq!(backend.seen().last().unwrap().path, "/public/a/b");
    mesh.proxy
        .set_path_normalization(PathNormalization::DecodeAndMergeSlashes);
    let out = raw(front, get("/public/..%2fadmin/x").as_bytes(), done).await;
    assert!(out.starts_with("HTTP/1.1 403 "), "{out}");
    mesh.proxy.set_path_normalization(PathNormalization::None);
    let out = raw(front, get("/public/../admin/x").as_bytes(), done).await;
    assert!(
        out.starts_with("HTTP/1.1 200 "),
        "NONE leaves the path: {out}"
    );
    assert_eq!(backend.seen().last().unwrap().path, "/public/../admin/x");
}

fn quick_settings() -> ProxySettings {
    ProxySettings {
        request_headers_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(2),
        ..ProxySettings::default()
    }
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_cut_off() {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", &[("ratings-v1", &[])])
        .await;
    b.settings(quick_settings());
    let mesh = b.start().await;
    let front = mesh.fronts["ratings"];

    // Slowloris: a header line every 300 ms, never the end of the head.
    let start = Instant::now();
    let mut s = TcpStream::connect(front).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: ratings\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut i = 0;
    loop {
        assert!(start.elapsed() < WAIT, "never cut off");
        let mut b = [0u8; 1024];
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&b[..n]),
            Err(_) => {
                i += 1;
                if s.write_all(format!("x-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let out = String::from_utf8_lossy(&got);
    assert!(out.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{out}");

    // Served once, then idle: closed after the idle timeout, not before
    // half of it.
    let mut s = TcpStream::connect(front).await.unwrap();
    let out = raw_on(&mut s, b"GET / HTTP/1.1\r\nhost: ratings\r\n\r\n", |t| {
        t.contains("ratings-v1")
    })
    .await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let idle_from = Instant::now();
    let mut b = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut b))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a reply");
    assert!(
        idle_from.elapsed() >= Duration::from_secs(1),
        "closed too early"
    );

    // A connection that keeps sending requests is not idle.
    let mut s = TcpStream::connect(front).await.unwrap();
    for _ in 0..4 {
        let out = raw_on(&mut s, b"GET / HTTP/1.1\r\nhost: ratings\r\n\r\n", |t| {
            t.contains("ratings-v1")
        })
        .await;
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    let logs = mesh.logs().await;
    assert!(
        logs.iter()
            .any(|l| l.response_code == 408
                && l.response_code_details == Some("request_header_timeout")),
        "{logs:?}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_get_the_overload_reply() {
    let mut b = MeshBuilder::new();
    b.service("ratings", 9080, "http", &[("ratings-v1", &[])])
        .await;
    b.settings(ProxySettings {
        max_connections: 2,
        ..ProxySettings::default()
    });
    let mesh = b.start().await;
    let front = mesh.fronts["ratings"];
    let req = b"GET / HTTP/1.1\r\nhost: ratings\r\n\r\n";
    let mut a = TcpStream::connect(front).await.unwrap();
    let mut c = TcpStream::connect(front).await.unwrap();
    for s in [&mut a, &mut c] {
        let out = raw_on(s, req, |t| t.contains("ratings-v1")).await;
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    }
    assert_eq!(mesh.proxy.connections(), 2);
    let out = raw(front, req, until_eof).await;
    assert!(
        out.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
            && out.ends_with("envoy overloaded"),
        "{out}"
    );
    // One closes: room again.
    drop(a);
    let start = Instant::now();
    while mesh.proxy.connections() > 1 {
        assert!(start.elapsed() < WAIT, "the closed connection is released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = raw(front, req, |t| t.contains("ratings-v1")).await;
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    let logs = mesh.logs().await;
    assert!(
        logs.iter()
            .any(|l| l.response_code == 503 && l.response_flags.to_string() == "OL"),
        "{logs:?}"
    );
}

#[tokio::test]
async fn authorization_policy_sees_the_normalized_path() {
    let mut b = MeshBuilder::new();
    b.service("api", 9080, "http", &[("api-v1", &[])]).await;
    let deny = support::yaml::deny_policy("no-admin", "api", r#"paths: ["/admin/*"]"#);
    b.yaml(&deny);
    let mesh = b.start().await;
    let front = mesh.fronts["api"];
    let done = |t: &str| t.contains("\r\n\r\n") && (t.contains("RBAC") || t.contains("api-v1"));
    for path in [
        "/admin/x",
        "/public/../admin/x",
        "/public/%2e%2e/admin/x",
        "/public/./../admin/x",
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nhost: api\r\n\r\n");
        let out = raw(front, req.as_bytes(), done).await;
        assert!(out.starts_with("HTTP/1.1 403 "), "{path} -> {out}");
        assert!(out.contains("RBAC: access denied"), "{path} -> {out}");
    }
    let out = raw(front, b"GET /public/x HTTP/1.1\r\nhost: api\r\n\r\n", done).await;
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(mesh.backend("api", "api-v1").hits(), 1);
}
